"""Run the hostile corpus: every case in its own process, bounded; never a signal, never a hang.

A case whose fix belongs to another part of the project is ``xfail(strict=True)`` with the
owner in its reason, so it turns into a failure (to be unmarked) the day it is fixed.
"""

from __future__ import annotations

import pytest
from cases_corruption import CASES as CORRUPTION
from cases_crash import CASES as CRASH
from cases_hang import CASES as HANG
from cases_limits import CASES as LIMITS
from harness import Case, run_case, verdict

ALL: list[Case] = [*CRASH, *HANG, *LIMITS, *CORRUPTION]


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


def test_case_names_are_unique() -> None:
    names = [c.name for c in ALL]
    assert len(names) == len(set(names))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", [_param(c) for c in ALL])
def test_hostile_case(case: Case) -> None:
    run = run_case(case)
    problem = verdict(case, run)
    assert problem is None, f"{case.name}: {problem}\n{run.describe()}"
