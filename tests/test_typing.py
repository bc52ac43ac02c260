"""User code type-checks with ``mypy --strict``, and typed options catch mistakes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

GOOD = '''
from importlib.resources import files

import vudo
from vudo import Limits, Providers, Seance, SpiritConfig, load_spirit
from vudo.testing import MockLogger

config = SpiritConfig(limits=Limits(timeout=1.0, fuel=10_000_000), debug=False)
calc = load_spirit(files("vudo") / "examples" / "calculator.wat", config=config)
total: int = calc.call("add", 2, 3)
logged = load_spirit(b"\\0asm\\1\\0\\0\\0", name="empty", logger=MockLogger(),
                     limits=Limits(max_inbox=10))
with Seance(limits=Limits(fuel=1_000_000), providers=Providers(logger=MockLogger())) as s:
    spirit: vudo.Spirit = s.summon("calc", files("vudo") / "examples" / "calculator.wat",
                                   limits=Limits(timeout=2.0), trace=False)
'''

BAD = '''
from vudo import Limits, Seance, load_spirit

load_spirit("x.wat", limits="16MiB")
Seance().summon("a", "x.wat", timeout=3)
'''


def _mypy(tmp_path: Path, source: str) -> tuple[str, int]:
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(source))
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"), str(script)]
    )
    return out + err, status


def test_a_user_script_passes_mypy_strict(tmp_path: Path) -> None:
    out, status = _mypy(tmp_path, GOOD)
    assert status == 0, out


def test_wrong_option_types_and_unknown_options_fail_mypy(tmp_path: Path) -> None:
    out, status = _mypy(tmp_path, BAD)
    assert status == 1
    assert 'Argument "limits" to "load_spirit" has incompatible type "str"' in out
    assert 'Unexpected keyword argument "timeout"' in out
