"""A pytest plugin that swaps the C message bus and host heap in for the Python ones.

Run any tests with them: ``PYTHONPATH=tests python -m pytest -p nbus_swap tests/...``.
Every place that names ``MessageBus`` or ``FreeListAllocator`` at import time is patched
before the tests import vudo, so Séances, Spirits and the CLI all build the C classes.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Patch the classes (the C module must be built: it is an error otherwise)."""
    import vudo
    import vudo.allocator
    import vudo.broker
    import vudo.cli.session
    import vudo.memory
    import vudo.seance
    import vudo.spirit
    from vudo import _nbus_select

    mod = _nbus_select.native_module()
    if mod is None:
        raise pytest.UsageError("nbus_swap: vudo._nbus is not built (or VUDO_NATIVE=0)")
    for module in (vudo, vudo.broker, vudo.seance, vudo.spirit, vudo.cli.session):
        module.MessageBus = mod.MessageBus  # type: ignore[attr-defined]
    for module in (vudo, vudo.allocator, vudo.memory):
        module.FreeListAllocator = mod.FreeListAllocator  # type: ignore[attr-defined]


def pytest_report_header() -> str:
    """Say in the header which implementations run."""
    return "nbus_swap: vudo._nbus.MessageBus and FreeListAllocator swapped in"
