"""What ``vudo seance`` shows while a session runs: a progress bar that appears only for
sessions longer than a moment, or (``--watch``) a live table of the Spirits.

Both draw on stderr, and only when stdout and stderr are the same terminal: rich then prints the
session's own lines (and the Spirits' text) above the display, so a line is never glued to it.
Everything shown is sampled on the thread running the session (a Spirit's store is not
thread-safe); the refresh thread only draws those samples.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .._session import Seance
from ._broker import CountingBroker

__all__ = ["PROGRESS_DELAY", "Bar", "Watch", "on_terminal"]

#: Seconds a session runs before its progress bar appears.
PROGRESS_DELAY = 0.5


def on_terminal() -> bool:
    """Whether stdout and stderr are both terminals (a live display can share them)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


class Bar:
    """A progress bar on stderr, started only once the session has run ``delay`` seconds.

    It starts (and refreshes) from the session's own thread, between steps and rounds, so it
    never draws while a line is being written.
    """

    def __init__(self, enabled: bool, total: int, delay: float = PROGRESS_DELAY) -> None:
        self.enabled = enabled and on_terminal()
        self.total = total
        self.delay = delay
        self.progress: Progress | None = None
        self._started_at = time.monotonic()
        self._description = "starting"
        self._done = 0

    def _maybe_start(self) -> None:
        if self.progress is not None or not self.enabled:
            return
        if time.monotonic() - self._started_at < self.delay:
            return
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True,
            auto_refresh=False, redirect_stdout=True, redirect_stderr=True,
        )
        self.task = self.progress.add_task(self._description, total=self.total,
                                           completed=self._done)
        self.progress.start()

    def describe(self, text: str) -> None:
        """Show what runs now."""
        self._description = text
        self._maybe_start()
        if self.progress is not None:
            self.progress.update(self.task, description=text, refresh=True)

    def advance(self) -> None:
        """One more step done."""
        self._done += 1
        self._maybe_start()
        if self.progress is not None:
            self.progress.update(self.task, advance=1, refresh=True)

    def __enter__(self) -> Bar:
        self._started_at = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


@dataclass(slots=True)
class _Sample:
    state: str = "idle"
    calls: int = 0
    failures: int = 0
    inbox: int = 0
    sent: int = 0
    memory: int | None = None


class Watch(Bar):
    """``--watch``: a live table of every Spirit (state, calls, failures, inbox depth,
    messages sent per second, memory), redrawn four times a second while the session runs.

    Off a terminal it prints the last table once, to stderr, when the session ends.
    """

    def __init__(self, seance: Seance, broker: CountingBroker, total: int) -> None:
        super().__init__(False, total)
        self.seance = seance
        self.broker = broker
        self._lock = threading.Lock()
        self._samples: dict[str, _Sample] = {}
        self._rates: dict[str, float] = {}
        self._last: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self._step = "starting"
        self.live: Live | None = None
        self._drawn = 0.0

    # ------------------------------------------------------------------ sampling
    def sample(self, running: str | None = None) -> None:
        """Read every Spirit's counters (on the session's thread); ``running`` is calling."""
        samples: dict[str, _Sample] = {}
        for name in self.seance.spirits():
            spirit = self.seance.get_spirit(name)
            stats = self.seance.stats(name)
            state = "running" if name == running else ("ended" if spirit.terminated else "idle")
            memory = spirit.memory.size if spirit.has_memory and name != running else None
            previous = self._samples.get(name)
            if memory is None and previous is not None:
                memory = previous.memory
            samples[name] = _Sample(state, stats.calls, stats.failures, self.seance.pending(name),
                                    self.broker.sent.get(name, 0), memory)
        now = time.monotonic()
        with self._lock:
            then, sent_then = self._last
            if now - then >= 0.5:
                self._rates = {n: (s.sent - sent_then.get(n, 0)) / (now - then)
                               for n, s in samples.items()}
                self._last = (now, {n: s.sent for n, s in samples.items()})
            self._samples = samples
        # Draw now too (at most ten times a second): a call about to run shows as running even
        # when the refresh thread is slow to get the CPU.
        if self.live is not None and now - self._drawn >= 0.1:
            self._drawn = now
            self.live.refresh()

    def describe(self, text: str) -> None:
        """Show what runs now, and sample the Spirits."""
        self._step = text
        self.sample()

    def advance(self) -> None:
        """One more step done."""
        self._done += 1
        self.sample()

    # ------------------------------------------------------------------ drawing
    def render(self) -> RenderableType:
        """The table as it stands."""
        table = Table(show_edge=False, title_justify="left",
                      title=f"{self._done}/{self.total} steps - {self._step}")
        for column in ("Spirit", "state", "calls", "failures", "inbox", "msg/s", "memory"):
            table.add_column(column, justify="left" if column in ("Spirit", "state") else "right")
        with self._lock:
            samples, rates = dict(self._samples), dict(self._rates)
        for name, s in samples.items():
            memory = "-" if s.memory is None else f"{s.memory / 1024:.0f} KiB"
            table.add_row(Text(name), s.state, str(s.calls), str(s.failures), str(s.inbox),
                          f"{rates.get(name, 0.0):.1f}", memory)
        return Group(table)

    def __enter__(self) -> Watch:
        self.sample()
        if on_terminal():
            self.live = Live(get_renderable=self.render, console=Console(file=sys.stderr),
                             refresh_per_second=4, redirect_stdout=True, redirect_stderr=True)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample()
        if self.live is not None:
            self.live.stop()
            return
        console = Console(file=sys.stderr, width=100, no_color=True, highlight=False)
        console.print(self.render())
