"""Where the ``vudo`` command reads Spirits from: a file, a bundled ``example:NAME``, stdin
(``-``) or an ``http(s)://`` URL (downloaded with a size cap, optionally pinned by SHA-256).

Every source ends up as bytes compiled through vudo's compile cache, so a downloaded module is
cached like any other; a download pinned with ``--sha256`` is also kept on disk by its hash and
not fetched again.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import wasmtime

from .._spirit import compile_source, read_wasm
from ..errors import LinkError, LoadError
from ._errors import UsageFailure

__all__ = [
    "DEFAULT_MAX_DOWNLOAD",
    "EXAMPLE_PREFIX",
    "SpiritSource",
    "examples_dir",
    "list_examples",
    "open_source",
    "read_module",
    "relabel",
    "resolve_source",
]

#: Prefix naming an example bundled with vudo, e.g. ``example:calculator``.
EXAMPLE_PREFIX = "example:"
#: Largest module read from stdin or downloaded, in bytes (``--max-download`` changes it).
DEFAULT_MAX_DOWNLOAD = 64 * 1024 * 1024
_WASM_MAGIC = b"\0asm"
_URL_SCHEMES = ("http://", "https://")
_DOWNLOAD_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class SpiritSource:
    """A Spirit's module as the user named it: a file, or bytes read from stdin or a URL."""

    #: What the user typed (``counter.wasm``, ``-``, ``https://...``), used in messages.
    label: str
    #: The default Spirit name (the file name without its suffix; ``stdin`` for ``-``).
    name: str
    #: The file, when the source is one.
    path: Path | None = None
    #: The bytes (wasm or WAT text), when read from stdin or downloaded.
    data: bytes | None = None
    #: The module's SHA-256 when it was checked against ``--sha256``.
    sha256: str | None = None


# ------------------------------------------------------------------------------------------
# Files and bundled examples
# ------------------------------------------------------------------------------------------
def examples_dir() -> Path:
    """The directory of the examples bundled with the package (``vudo/examples``)."""
    return Path(str(importlib.resources.files("vudo") / "examples"))


def list_examples(suffixes: Sequence[str]) -> list[str]:
    """Names of the bundled examples with one of ``suffixes``."""
    root = examples_dir()
    if not root.is_dir():
        return []
    return sorted({p.stem for p in root.iterdir() if p.suffix in suffixes})


def resolve_source(text: str, suffixes: Sequence[str] = (".wasm", ".wat")) -> Path:
    """The file named by ``text``: a path, or ``example:NAME`` for a bundled example."""
    if text.startswith(EXAMPLE_PREFIX):
        name = text[len(EXAMPLE_PREFIX):]
        root = examples_dir()
        candidates = [root / name] if Path(name).suffix in suffixes else []
        candidates += [root / f"{name}{suffix}" for suffix in suffixes]
        for candidate in candidates:
            if name and "/" not in name and "\\" not in name and candidate.is_file():
                return candidate
        known = ", ".join(EXAMPLE_PREFIX + n for n in list_examples(suffixes)) or "(none)"
        raise UsageFailure(f"no bundled example {name!r}; examples: {known}")
    path = Path(text)
    if not path.exists():
        raise UsageFailure(f"{text}: no such file")
    if path.is_dir():
        raise UsageFailure(f"{text}: is a directory, not a file")
    return path


# ------------------------------------------------------------------------------------------
# Any source: file, example, stdin, URL
# ------------------------------------------------------------------------------------------
def open_source(
    text: str, *, sha256: str | None = None, max_bytes: int = DEFAULT_MAX_DOWNLOAD,
    stdin: BinaryIO | None = None,
) -> SpiritSource:
    """The Spirit named by ``text``: a path, ``example:NAME``, ``-`` (stdin) or a URL.

    ``sha256`` pins the module's bytes (any source); ``max_bytes`` caps stdin and downloads.
    Raises :class:`UsageFailure` for anything unusable.
    """
    want = _check_digest(sha256)
    if text == "-":
        data = _read_capped(stdin if stdin is not None else sys.stdin.buffer, max_bytes, "stdin")
        if not data:
            raise UsageFailure("-: nothing on stdin (pipe a .wasm or .wat module into vudo)")
        source = SpiritSource("-", "stdin", data=data)
    elif text.lower().startswith(_URL_SCHEMES):
        source = _download(text, want, max_bytes)
    else:
        path = resolve_source(text)
        source = SpiritSource(text, path.stem, path=path)
    if want is None:
        return source
    got = hashlib.sha256(source.data if source.data is not None else _read_file(source)).hexdigest()
    if got != want:
        raise UsageFailure(f"{text}: SHA-256 is {got}, expected {want} (--sha256)")
    return SpiritSource(source.label, source.name, source.path, source.data, got)


def _check_digest(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.strip().lower().removeprefix("sha256:")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UsageFailure(f"--sha256 {sha256!r} is not a SHA-256 (64 hexadecimal digits)")
    return digest


def _read_file(source: SpiritSource) -> bytes:
    assert source.path is not None
    try:
        return source.path.read_bytes()
    except OSError as exc:
        raise UsageFailure(f"{source.label}: {exc.strerror or exc}") from None


def _read_capped(stream: BinaryIO, max_bytes: int, label: str) -> bytes:
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UsageFailure(f"{label}: more than {max_bytes} bytes (--max-download)")
    return data


def _download_dir() -> Path | None:
    env = os.environ.get("VUDO_CACHE_DIR")
    if env is not None:
        return Path(env) / "downloads" if env else None
    import platformdirs

    return Path(platformdirs.user_cache_dir("vudo")) / "downloads"


def _download(url: str, sha256: str | None, max_bytes: int) -> SpiritSource:
    import httpx  # only when a URL is given: it costs ~100 ms to import

    name = Path(httpx.URL(url).path).stem or "spirit"
    cache = _download_dir()
    cached = cache / f"{sha256}.wasm" if cache is not None and sha256 else None
    if cached is not None and cached.is_file():
        data = cached.read_bytes()
        if hashlib.sha256(data).hexdigest() == sha256:
            return SpiritSource(url, name, data=data)
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=_DOWNLOAD_TIMEOUT) as r:
            if r.status_code != 200:
                raise UsageFailure(f"{url}: HTTP {r.status_code} {r.reason_phrase}")
            declared = r.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise UsageFailure(
                    f"{url}: {declared} bytes, more than {max_bytes} bytes (--max-download)"
                )
            chunks: list[bytes] = []
            total = 0
            for chunk in r.iter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise UsageFailure(f"{url}: more than {max_bytes} bytes (--max-download)")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise UsageFailure(f"{url}: download failed: {exc or type(exc).__name__}") from None
    data = b"".join(chunks)
    if cached is not None and hashlib.sha256(data).hexdigest() == sha256:
        try:  # best effort: a read-only cache only costs the next download
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(cached)
        except OSError:
            pass
    return SpiritSource(url, name, data=data)


# ------------------------------------------------------------------------------------------
# Compiling
# ------------------------------------------------------------------------------------------
def read_module(source: Path | SpiritSource) -> tuple[bytes, wasmtime.Module]:
    """Read a ``.wasm`` module or WAT text and compile it (through the compile cache).

    Never instantiates. Raises :class:`UsageFailure` for a source that is not a usable module.
    """
    if isinstance(source, Path):
        source = SpiritSource(str(source), source.stem, path=source)
    try:
        if source.data is None:
            assert source.path is not None
            wasm = read_wasm(source.path)[0]
        elif source.data.startswith(_WASM_MAGIC):
            wasm = source.data
        else:
            text = source.data.decode("utf-8", "replace")
            if "(module" not in text:
                raise LoadError(source.label, "not a WebAssembly module or WAT text")
            wasm = read_wasm(text)[0]
        return wasm, compile_source(wasm)[0]
    except LoadError as exc:
        raise UsageFailure(f"{source.label}: {exc.cause}") from None


def relabel(exc: LoadError, label: str) -> LoadError:
    """The same load error, naming ``label`` (the file) instead of the compiled module."""
    new: LoadError = (
        LinkError(label, exc.unresolved)
        if isinstance(exc, LinkError)
        else LoadError(label, exc.cause)
    )
    new.__cause__ = exc.__cause__
    return new
