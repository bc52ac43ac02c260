"""The effects package's shape: lazy heavy imports and the deprecated ``vudo.effects`` alias."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import vudo
from vudo import _effects


def _modules_after(code: str) -> set[str]:
    """The names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(out.split())


def test_import_vudo_loads_neither_httpx_nor_sqlite3() -> None:
    loaded = _modules_after("import vudo")
    assert "vudo._effects" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("httpx", "sqlite3", "_sqlite3")}


def test_http_and_db_modules_load_on_first_use() -> None:
    code = (
        "from vudo import StandardEffectHandler, Permissions\n"
        "class S:\n"
        "    name = 's'; terminated = False; permissions = Permissions.allow(database=':memory:')\n"
        "    def deliver(self, f, p): return True\n"
        "    def terminate(self, c): pass\n"
        "h = StandardEffectHandler()\n"
        "assert h.emit(S(), 30, b'SELECT 1') == 0\n"
        "h.close()"
    )
    loaded = _modules_after(code)
    assert "sqlite3" in loaded
    assert "httpx" not in loaded


@pytest.mark.parametrize("name", ["Permissions", "StandardEffectHandler", "encode_result",
                                  "decode_result", "effect_sender", "DEFAULT_FS_MAX_READ",
                                  "EffectTarget", "DefaultEffectHandler"])
def test_old_module_path_still_works_with_a_deprecation_warning(name: str) -> None:
    import vudo.effects as old

    with pytest.warns(DeprecationWarning, match=rf"vudo\.effects is deprecated.*{name}"):
        value = getattr(old, name)
    assert value is getattr(_effects, name)


def test_old_module_import_itself_is_silent_and_unknown_names_fail() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import vudo.effects as old
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        old.nope  # noqa: B018


def test_providers_reexports_the_handler_protocol() -> None:
    from vudo import providers

    assert providers.DefaultEffectHandler is _effects.DefaultEffectHandler
    assert providers.EffectHandler is _effects.EffectHandler
    assert vudo.StandardEffectHandler is _effects.StandardEffectHandler
