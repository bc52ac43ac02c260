#!/usr/bin/env python3
"""Run vudo's fuzz properties (tests/test_fuzz.py) for a long time, outside CI.

Each round runs ``pytest tests/test_fuzz.py tests/test_fuzz_types.py`` with the ``long``
Hypothesis profile and a fresh random seed, until the time is up. The second file generates
random valid modules whose imports and exports use unusual value types and signatures (SIMD,
GC and typed references, multi-value, many export names) and expects them to load and run or
fail with vudo errors only. The first failing round stops the run and prints the command
that replays it (Hypothesis also keeps the failing example in ``.hypothesis/`` and tries it first
next time)::

    python scripts/fuzz.py --minutes 30
    python scripts/fuzz.py --minutes 120 --examples 50000 -k hammering
    python scripts/fuzz.py --rounds 1 --seed 1234          # replay one round

Exit status: 0 when every round passed, 1 on the first failure, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["tests/test_fuzz.py", "tests/test_fuzz_types.py"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="keep starting rounds until this much time has passed (default 10)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="stop after this many rounds even if time remains")
    parser.add_argument("--examples", type=int, default=5000,
                        help="Hypothesis examples per property per round (default 5000)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the first round (later rounds draw fresh seeds)")
    parser.add_argument("--hang-seconds", type=int, default=1800,
                        help="pytest-timeout per property: a longer property counts as a hang")
    parser.add_argument("-k", dest="keyword", default=None,
                        help="only the properties matching this pytest -k expression")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.examples <= 0 or (args.rounds is not None and args.rounds <= 0):
        parser.error("--minutes, --examples and --rounds must be positive")

    env = dict(os.environ, HYPOTHESIS_PROFILE="long", VUDO_FUZZ_EXAMPLES=str(args.examples))
    deadline = time.monotonic() + args.minutes * 60
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rounds = 0
    while True:
        cmd = [
            sys.executable, "-m", "pytest", *TARGETS, "-q", "-x", "-p", "no:cacheprovider",
            "-o", f"timeout={args.hang_seconds}", f"--hypothesis-seed={seed}",
            "--hypothesis-show-statistics",
        ]
        if args.keyword:
            cmd += ["-k", args.keyword]
        rounds += 1
        print(f"[fuzz] round {rounds}, seed {seed}, {args.examples} examples per property",
              flush=True)
        started = time.monotonic()
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        print(f"[fuzz] round {rounds} finished in {time.monotonic() - started:.0f} s "
              f"(exit {code})", flush=True)
        if code != 0:
            replay = " ".join(shlex.quote(c) for c in cmd[1:])
            print(f"[fuzz] FAILED. Replay with:\n  HYPOTHESIS_PROFILE=long "
                  f"VUDO_FUZZ_EXAMPLES={args.examples} python {replay}", flush=True)
            return 1
        if args.rounds is not None and rounds >= args.rounds:
            break
        if time.monotonic() >= deadline:
            break
        seed = random.randrange(2**32)
    print(f"[fuzz] {rounds} round(s) passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
