"""Loas: ``Loa``, ``LoaRegistry``, ``create_loa``, ``HostFunction``, and custom host functions
called by WAT Spirits (signatures from annotations or explicit, str/bytes marshalling, async
host functions, overriding a standard host function)."""

from __future__ import annotations

import asyncio
import gc
import struct
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from _helpers_host import MEMORY_1, Mocks, load, put, wat

import vudo
from vudo import HostContext as LoaContext
from vudo import HostFunction, Loa, LoaRegistry, Spirit, create_loa, load_spirit
from vudo._host.loas import CORE_LOA, CORE_LOA_NAME
from vudo.abi import HOST_FUNCTIONS
from vudo.errors import HostFunctionError, LinkError
from vudo.testing import MockLogger, MockTimeProvider


def _fn(host: Callable[..., Any]) -> Callable[[LoaContext], Callable[..., Any]]:
    """A factory returning ``host`` whatever the context."""
    return lambda _ctx: host


def _module(imports: str, body: str = "") -> bytes:
    return wat(f"(module {imports} {MEMORY_1} {body})")


# ------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------
def test_a_new_registry_holds_exactly_the_core_loa() -> None:
    reg = LoaRegistry()
    assert len(reg) == 1
    assert reg.has(CORE_LOA_NAME)
    assert reg.get(CORE_LOA_NAME) is CORE_LOA
    assert [loa.name for loa in reg.all()] == [CORE_LOA_NAME]


def test_the_core_loa_offers_the_22_functions_of_the_table() -> None:
    offered = {
        name: (fn.params, fn.results) for name, fn in CORE_LOA.functions.items()
    }
    assert offered == {s.name: (s.param_types, s.results) for s in HOST_FUNCTIONS}


def test_register_get_has_all_unregister() -> None:
    a = create_loa("alpha", "1.0.0", {"alpha_one": _fn(lambda: None)})
    b = create_loa("beta", "2.1.0", {})
    reg = LoaRegistry()
    reg.register(a)
    reg.register(b)
    assert reg.has("alpha") and reg.has("beta")
    assert reg.get("alpha") is a
    assert reg.get("gamma") is None
    assert not reg.has("gamma")
    assert [loa.name for loa in reg.all()] == [CORE_LOA_NAME, "alpha", "beta"]
    assert [loa.name for loa in reg] == [CORE_LOA_NAME, "alpha", "beta"]
    reg.unregister("alpha")
    assert not reg.has("alpha")
    assert [loa.name for loa in reg.all()] == [CORE_LOA_NAME, "beta"]
    with pytest.raises(KeyError):
        reg.unregister("alpha")


def test_duplicate_names_are_refused() -> None:
    reg = LoaRegistry([create_loa("alpha", "1.0.0", {})])
    with pytest.raises(ValueError, match="alpha"):
        reg.register(create_loa("alpha", "9.9.9", {}))
    with pytest.raises(ValueError, match=CORE_LOA_NAME):
        reg.register(create_loa(CORE_LOA_NAME, "2.0.0", {}))
    assert reg.get("alpha") is not None and reg.get("alpha").version == "1.0.0"  # type: ignore[union-attr]
    assert reg.get(CORE_LOA_NAME) is CORE_LOA


def test_the_core_loa_cannot_be_unregistered() -> None:
    reg = LoaRegistry()
    with pytest.raises(ValueError, match="core"):
        reg.unregister(CORE_LOA_NAME)
    assert reg.get(CORE_LOA_NAME) is CORE_LOA


def test_copy_is_independent() -> None:
    reg = LoaRegistry([create_loa("alpha", "1.0.0", {})])
    clone = reg.copy()
    clone.register(create_loa("beta", "1.0.0", {}))
    clone.unregister("alpha")
    assert [loa.name for loa in reg.all()] == [CORE_LOA_NAME, "alpha"]
    assert [loa.name for loa in clone.all()] == [CORE_LOA_NAME, "beta"]


def test_loa_and_create_loa_validate_their_functions() -> None:
    hf = HostFunction("good", _fn(lambda: None))
    assert Loa("svc", "1.0.0", {"good": hf}).functions == {"good": hf}
    with pytest.raises(ValueError, match="bad"):
        Loa("svc", "1.0.0", {"bad": hf})
    with pytest.raises(TypeError, match="nope"):
        create_loa("svc", "1.0.0", {"nope": 42})  # type: ignore[dict-item]
    loa = create_loa("svc", "3.2.1", {"plain": _fn(lambda: None), "good": hf})
    assert (loa.name, loa.version) == ("svc", "3.2.1")
    assert set(loa.functions) == {"plain", "good"}
    assert loa.functions["good"] is hf
    assert loa.functions["plain"].name == "plain"
    assert all(isinstance(f, HostFunction) for f in loa.functions.values())


# ------------------------------------------------------------------------------------------
# Custom host functions in a Spirit
# ------------------------------------------------------------------------------------------
def _math_loa() -> Loa:
    def mul(a: int, b: int) -> int:
        return a * b

    def widen(a: vudo.i64) -> vudo.i64:
        return a + 2**40

    def half(x: float) -> float:
        return x / 2

    return create_loa(
        "mathx", "1.0.0", {"mathx_mul": _fn(mul), "mathx_widen": _fn(widen), "half": _fn(half)}
    )


@pytest.mark.parametrize("ns", ["mathx", "vudo", "loa", "env"])
def test_signature_from_annotations(ns: str) -> None:
    imports = f"""
      (import "{ns}" "mathx_mul" (func $mul (param i32 i32) (result i32)))
      (import "{ns}" "mathx_widen" (func $widen (param i64) (result i64)))
      (import "{ns}" "half" (func $half (param f64) (result f64)))"""
    body = """
      (func (export "mul") (param i32 i32) (result i32) (call $mul (local.get 0) (local.get 1)))
      (func (export "widen") (param i64) (result i64) (call $widen (local.get 0)))
      (func (export "half") (param f64) (result f64) (call $half (local.get 0)))"""
    spirit = load_spirit(_module(imports, body), loas=LoaRegistry([_math_loa()]))
    assert spirit.call("mul", 6, 7) == 42
    assert spirit.call("widen", 5) == 2**40 + 5
    assert spirit.call("half", 5.0) == 2.5


def test_an_int_is_i32_unless_annotated_i64() -> None:
    imports = '(import "mathx" "mathx_mul" (func (param i64 i64) (result i64)))'
    with pytest.raises(LinkError) as err:
        load_spirit(_module(imports), loas=LoaRegistry([_math_loa()]))
    [u] = err.value.unresolved
    assert (u.module, u.name) == ("mathx", "mathx_mul")
    assert u.declared == "(i64, i64) -> i64"
    assert u.offered == "(i32, i32) -> i32"


def test_custom_functions_are_not_linked_without_their_loa() -> None:
    imports = '(import "mathx" "mathx_mul" (func (param i32 i32) (result i32)))'
    with pytest.raises(LinkError) as err:
        load_spirit(_module(imports))
    assert [(u.name, u.offered) for u in err.value.unresolved] == [("mathx_mul", None)]


_TEXT_IMPORTS = """
  (import "vudo" "shout" (func $shout (param i32 i32) (result i32)))
  (import "vudo" "weigh" (func $weigh (param i32 i32) (result i32)))
  (import "vudo" "echo" (func $echo (param i32 i32) (result i32)))"""
_TEXT_BODY = """
  (func (export "shout") (param i32 i32) (result i32) (call $shout (local.get 0) (local.get 1)))
  (func (export "weigh") (param i32 i32) (result i32) (call $weigh (local.get 0) (local.get 1)))
  (func (export "echo") (param i32 i32) (result i32) (call $echo (local.get 0) (local.get 1)))
  ;; the Spirit reads the length prefix of the block the host returned
  (func (export "shout_len") (param i32 i32) (result i32)
    (i32.load (call $shout (local.get 0) (local.get 1))))"""


def _text_loa(seen: list[object]) -> Loa:
    def shout(text: str) -> str:
        seen.append(text)
        return text.upper() + "!"

    def weigh(data: bytes) -> int:
        seen.append(data)
        return len(data)

    def echo(data: bytes) -> bytes:
        return data[::-1]

    return create_loa(
        "text", "1.0.0", {"shout": _fn(shout), "weigh": _fn(weigh), "echo": _fn(echo)}
    )


def test_str_and_bytes_parameters_and_results_are_marshalled() -> None:
    seen: list[object] = []
    spirit = load_spirit(_module(_TEXT_IMPORTS, _TEXT_BODY), loas=LoaRegistry([_text_loa(seen)]))
    ptr = spirit.call("shout", *put(spirit, "héllo"))
    assert ptr != 0 and ptr % 4 == 0
    expected = "HÉLLO!".encode()
    assert spirit.memory.read_bytes(ptr, 4 + len(expected)) == (
        struct.pack("<I", len(expected)) + expected
    )
    assert spirit.memory.decode_string(ptr) == "HÉLLO!"
    assert spirit.call("shout_len", *put(spirit, "abc")) == 4

    raw = b"\x00\xff\xfe bytes"
    assert spirit.call("weigh", *put(spirit, raw)) == len(raw)
    assert seen == ["héllo", "abc", raw]  # bytes arrive untouched, str decoded
    back = spirit.call("echo", *put(spirit, raw))
    assert spirit.memory.read_bytes(back, 4 + len(raw)) == struct.pack("<I", len(raw)) + raw[::-1]


def test_explicit_signature_receives_raw_values_and_the_context() -> None:
    contexts: list[LoaContext] = []

    def factory(ctx: LoaContext) -> Callable[..., Any]:
        contexts.append(ctx)

        def host(ptr: Any, n: Any, scale: Any) -> Any:
            text = ctx.memory.read_string(ptr, n)
            ctx.logger.info(f"got {text}")
            return len(text) * scale + ctx.time.now()

        return host

    loa = create_loa("raw", "1.0.0", {
        "measure": HostFunction("measure", factory, ("i32", "i32", "i64"), ("i64",)),
    })
    imports = '(import "raw" "measure" (func $m (param i32 i32 i64) (result i64)))'
    body = """(func (export "measure") (param i32 i32 i64) (result i64)
      (call $m (local.get 0) (local.get 1) (local.get 2)))"""
    logger, clock = MockLogger(), MockTimeProvider(1_000)
    spirit = load_spirit(
        _module(imports, body), name="meter", loas=LoaRegistry([loa]), logger=logger,
        time_provider=clock,
    )
    assert spirit.call("measure", *put(spirit, "four"), 10) == 1_040
    assert logger.messages == ["[INFO] got four"]
    [ctx] = contexts
    assert ctx.spirit is spirit
    assert ctx.logger is logger and ctx.time is clock
    assert ctx.memory is spirit.memory


def test_the_context_exposes_the_spirits_providers() -> None:
    mocks = Mocks()
    grabbed: list[LoaContext] = []

    def factory(ctx: LoaContext) -> Callable[[], int]:
        grabbed.append(ctx)

        def probe() -> int:
            return 1

        return probe

    text = f"""(module (import "p" "probe" (func $probe (result i32))) {MEMORY_1}
      (func (export "probe") (result i32) (call $probe)))"""
    spirit = load_spirit(
        wat(text), loas=LoaRegistry([create_loa("p", "1", {"probe": factory})]),
        debug=True, **mocks.options(),
    )
    assert spirit.call("probe") == 1
    ctx = grabbed[-1]
    assert ctx.spirit is spirit
    assert (ctx.logger, ctx.time, ctx.random, ctx.effects, ctx.debugger) == (
        mocks.logger, mocks.time, mocks.random, mocks.effects, mocks.debug,
    )
    assert ctx.debug is True


def test_an_annotation_mismatch_or_unmappable_annotation_is_a_link_error() -> None:
    def wrong(a: int) -> int:
        return a

    def unmappable(items: list[int]) -> int:
        return len(items)

    def unannotated(a):  # type: ignore[no-untyped-def]
        return a

    loa = create_loa("odd", "1.0.0", {
        "wrong": _fn(wrong), "unmappable": _fn(unmappable), "unannotated": _fn(unannotated),
    })
    imports = """
      (import "odd" "wrong" (func (param f64) (result i32)))
      (import "odd" "unmappable" (func (param i32) (result i32)))
      (import "odd" "unannotated" (func (param i32) (result i32)))"""
    with pytest.raises(LinkError) as err:
        load_spirit(_module(imports), loas=LoaRegistry([loa]))
    by_name = {u.name: u for u in err.value.unresolved}
    assert set(by_name) == {"wrong", "unmappable", "unannotated"}
    assert by_name["wrong"].declared == "(f64) -> i32"
    assert by_name["wrong"].offered == "(i32) -> i32"
    assert "items" in str(by_name["unmappable"].offered)
    assert "annotation" in str(by_name["unannotated"].offered)


def test_a_raising_host_function_fails_the_call_and_names_it() -> None:
    def flaky(x: int) -> int:
        if x < 0:
            raise RuntimeError("negative!")
        return x

    loa = create_loa("f", "1.0.0", {"flaky": _fn(flaky)})
    text = f"""(module (import "f" "flaky" (func $f (param i32) (result i32))) {MEMORY_1}
      (func (export "go") (param i32) (result i32) (call $f (local.get 0))))"""
    spirit = load_spirit(wat(text), loas=LoaRegistry([loa]))
    with pytest.raises(HostFunctionError) as err:
        spirit.call("go", -1)
    assert "flaky" in str(err.value)
    assert err.value.spirit == "spirit"
    assert isinstance(err.value.__cause__, RuntimeError)
    assert spirit.call("go", 3) == 3  # the Spirit stays usable


def test_a_host_function_error_names_the_export_being_called() -> None:
    def boom() -> int:
        raise RuntimeError("boom")

    loa = create_loa("f", "1.0.0", {"boom": _fn(boom)})
    text = f"""(module (import "f" "boom" (func $b (result i32))) {MEMORY_1}
      (func (export "go") (result i32) (call $b)))"""
    spirit = load_spirit(wat(text), loas=LoaRegistry([loa]))
    with pytest.raises(HostFunctionError) as err:
        spirit.call("go")
    assert err.value.function == "go"


# ------------------------------------------------------------------------------------------
# Overriding a standard host function
# ------------------------------------------------------------------------------------------
def _loud_loa(seen: list[str]) -> Loa:
    def loud_print(text: str) -> None:
        seen.append(text.upper())

    return create_loa("loud", "1.0.0", {"vudo_print": _fn(loud_print)})


@pytest.mark.parametrize("ns", ["vudo", "loa", "env"])
def test_a_later_loa_overrides_a_standard_host_function(ns: str) -> None:
    seen: list[str] = []
    reg = LoaRegistry([_loud_loa(seen)])
    spirit, m = load(ns=ns, loas=reg)
    spirit.call("print", *put(spirit, "quiet"))
    assert seen == ["QUIET"]
    assert m.logger.outputs == [], "the core vudo_print ran instead of the override"
    spirit.call("println", *put(spirit, "core"))  # the other functions are still the core's
    assert m.logger.outputs == ["core\n"]


def test_an_override_is_local_to_its_registry() -> None:
    seen: list[str] = []
    reg = LoaRegistry([_loud_loa(seen)])
    plain, pm = load()
    plain.call("print", *put(plain, "normal"))
    assert pm.logger.outputs == ["normal"] and seen == []
    reg.unregister("loud")
    after, am = load(loas=reg)
    after.call("print", *put(after, "back"))
    assert am.logger.outputs == ["back"] and seen == []


# ------------------------------------------------------------------------------------------
# async host functions
# ------------------------------------------------------------------------------------------
def _async_loa() -> Loa:
    async def triple(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    async def greet(name: str) -> str:
        await asyncio.sleep(0)
        return f"hi {name}"

    return create_loa("aio", "1.0.0", {"triple": _fn(triple), "greet": _fn(greet)})


_ASYNC_MODULE = f"""(module
  (import "aio" "triple" (func $t (param i32) (result i32)))
  (import "aio" "greet" (func $g (param i32 i32) (result i32)))
  {MEMORY_1}
  (func (export "triple") (param i32) (result i32) (call $t (local.get 0)))
  (func (export "greet") (param i32 i32) (result i32) (call $g (local.get 0) (local.get 1))))"""


def test_async_host_functions_are_awaited() -> None:
    spirit = load_spirit(wat(_ASYNC_MODULE), loas=LoaRegistry([_async_loa()]))
    assert spirit.call("triple", 14) == 42
    assert spirit.memory.decode_string(spirit.call("greet", *put(spirit, "ana"))) == "hi ana"
    assert spirit.call("triple", 1) == 3  # and again: the loop is reusable


def test_async_host_functions_from_code_running_an_event_loop() -> None:
    spirit = load_spirit(wat(_ASYNC_MODULE), loas=LoaRegistry([_async_loa()]))

    async def main() -> int:
        return int(spirit.call("triple", 5))  # a plain call from inside asyncio code

    try:
        result = asyncio.run(main())
    except HostFunctionError as exc:
        failure = str(exc)
    else:
        assert result == 15
        return
    with warnings.catch_warnings():  # the coroutine that never ran
        warnings.simplefilter("ignore", RuntimeWarning)
        gc.collect()
    pytest.fail(failure)


def test_async_host_functions_in_an_async_load() -> None:
    async def main() -> int:
        spirit: Spirit = await vudo.aload_spirit(
            wat(_ASYNC_MODULE), loas=LoaRegistry([_async_loa()])
        )
        return int(await asyncio.to_thread(spirit.call, "triple", 7))

    assert asyncio.run(main()) == 21
