"""Drive a SIGINT storm at a driver script (``tests/_native_storm.py`` and friends).

The driver prints ``ready``, runs Spirit calls until the file named by its argument exists,
then checks its Spirits still work and prints ``key=value`` counts (``interrupts`` among them).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def sigint_storm(driver: Path, stop: Path, *, seconds: float, gap: float) -> dict[str, str]:
    """SIGINT ``driver`` every ``gap`` seconds for ``seconds``; its counts once it exited.

    Fails the test when the driver hangs afterwards (with every thread's stack), crashes, or
    exits non-zero.
    """
    child = subprocess.Popen([sys.executable, str(driver), str(stop)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        end = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < end and child.poll() is None:
            child.send_signal(signal.SIGINT)
            sent += 1
            time.sleep(gap)
        stop.touch()
        try:
            out, err = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGUSR1)  # every thread's stack, to see where it hangs
            time.sleep(2)
            child.kill()
            out, err = child.communicate()
            pytest.fail(f"the storm driver hung after the storm; its stacks:\n{err[-6000:]}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # Every SIGINT reaches the driver as a KeyboardInterrupt (or is ignored between calls):
    # anything else is a failure, a negative code a crash (the ctypes fallback dies here).
    assert child.returncode == 0 and "Fatal Python error" not in err, (
        child.returncode, err[-3000:])
    counts = dict(kv.split("=") for kv in out.split())
    assert int(counts["interrupts"]) > 0 and sent > 100, out
    return counts
