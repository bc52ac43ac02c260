"""Does a module grow its memory itself? A small decoder of the code section, just for that.

host-abi.md ("Memory owned by the host", strategy 3): a Spirit that contains ``memory.grow`` and
exports no allocator may start a heap over pages the host grew. Finding ``memory.grow`` (opcode
0x40) needs more than a byte search: 0x40 is also the empty block type and any byte of an
immediate. So each function body is decoded instruction by instruction, skipping every
immediate by its encoding; that needs the immediates' layouts, not their meaning, which keeps
this far smaller than a decoder. An opcode it does not know (a newer proposal) makes the answer
"unknown" for that module, never a guess.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from typing import Any

__all__ = ["grows_memory", "module_grows_memory", "note_module"]


class _Unknown(Exception):
    """The code uses an encoding this decoder does not know."""


def _u32(data: bytes, pos: int) -> tuple[int, int]:
    """Read an unsigned LEB128 (also skips a signed one of the same length)."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _Unknown("truncated LEB128")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise _Unknown("LEB128 too long")


def _skip_leb(data: bytes, pos: int) -> int:
    return _u32(data, pos)[1]


_NO_IMMEDIATE = frozenset(
    [0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0x19, 0xD1, *range(0x45, 0xC5)]
)
_ONE_INDEX = frozenset([0x07, 0x08, 0x09, 0x0C, 0x0D, 0x10, 0x12, 0x18, 0x20, 0x21, 0x22, 0x23,
                        0x24, 0x25, 0x26, 0xD2])
_TWO_INDICES = frozenset([0x11, 0x13])
_BLOCKS = frozenset([0x02, 0x03, 0x04, 0x06])
_VALTYPES = frozenset([0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F])
# 0xFC sub-opcodes -> number of index immediates.
_FC_INDICES = {**{i: 0 for i in range(8)}, 8: 2, 9: 1, 10: 2, 11: 1, 12: 2, 13: 1, 14: 2,
               15: 1, 16: 1, 17: 1}


def _skip_memarg(data: bytes, pos: int) -> int:
    align, pos = _u32(data, pos)
    if align & 0x40:  # multi-memory: a memory index follows
        pos = _skip_leb(data, pos)
    return _skip_leb(data, pos)


def _skip_simd(data: bytes, pos: int) -> int:
    sub, pos = _u32(data, pos)
    if sub <= 11 or sub in (92, 93):
        return _skip_memarg(data, pos)
    if sub in (12, 13):  # v128.const, i8x16.shuffle
        return pos + 16
    if 21 <= sub <= 34:  # extract/replace lane
        return pos + 1
    if 84 <= sub <= 91:  # load/store lane
        return _skip_memarg(data, pos) + 1
    if sub <= 0x113:
        return pos
    raise _Unknown(f"SIMD opcode 0x{sub:x}")


def _body_grows(data: bytes, pos: int, end: int) -> bool:
    """Whether the function body in ``data[pos:end]`` contains ``memory.grow``."""
    groups, pos = _u32(data, pos)
    for _ in range(groups):  # locals: (count, valtype) pairs
        pos = _skip_leb(data, pos)
        pos += 1
    while pos < end:
        op = data[pos]
        pos += 1
        if op in _NO_IMMEDIATE:
            continue
        if op == 0x40:
            return True
        if op in _ONE_INDEX or op == 0x3F or op == 0x41 or op == 0x42:
            pos = _skip_leb(data, pos)
        elif op in _TWO_INDICES:
            pos = _skip_leb(data, _skip_leb(data, pos))
        elif 0x28 <= op <= 0x3E:
            pos = _skip_memarg(data, pos)
        elif op in _BLOCKS:
            if data[pos] == 0x40 or data[pos] in _VALTYPES:
                pos += 1
            else:
                pos = _skip_leb(data, pos)  # a type index (s33)
        elif op == 0x43:
            pos += 4
        elif op == 0x44:
            pos += 8
        elif op == 0x0E:  # br_table: vec(label) label
            count, pos = _u32(data, pos)
            for _ in range(count + 1):
                pos = _skip_leb(data, pos)
        elif op == 0x1C:  # select with types
            count, pos = _u32(data, pos)
            pos += count
        elif op == 0xD0:  # ref.null heaptype
            pos = _skip_leb(data, pos)
        elif op == 0xFC:
            sub, pos = _u32(data, pos)
            if sub not in _FC_INDICES:
                raise _Unknown(f"opcode 0xfc {sub}")
            for _ in range(_FC_INDICES[sub]):
                pos = _skip_leb(data, pos)
        elif op == 0xFD:
            pos = _skip_simd(data, pos)
        elif op == 0xFE:  # threads: atomic.fence has one byte, the rest a memarg
            sub, pos = _u32(data, pos)
            pos = pos + 1 if sub == 0x03 else _skip_memarg(data, pos)
        else:
            raise _Unknown(f"opcode 0x{op:02x}")
    return False


def grows_memory(wasm: bytes) -> bool | None:
    """Whether any function of the module executes ``memory.grow``; ``None`` if undecidable
    (not a module, or code this decoder does not know)."""
    if wasm[:8] != b"\0asm\x01\0\0\0":
        return None
    pos = 8
    try:
        while pos < len(wasm):
            section = wasm[pos]
            size, pos = _u32(wasm, pos + 1)
            end = pos + size
            if section == 10:  # code
                count, body = _u32(wasm, pos)
                for _ in range(count):
                    length, body = _u32(wasm, body)
                    if _body_grows(wasm, body, body + length):
                        return True
                    body += length
                return False
            pos = end
    except (_Unknown, IndexError):
        return None
    return False  # no code section


# Results by module: loads from the compile cache return the same wasmtime.Module for the same
# bytes, and the hash-keyed LRU spares decoding a module compiled again.
_by_module: weakref.WeakKeyDictionary[Any, bool | None] = weakref.WeakKeyDictionary()
_by_hash: OrderedDict[bytes, bool | None] = OrderedDict()
_lock = threading.Lock()
_LRU_SIZE = 256


def note_module(module: Any, wasm: bytes) -> bool | None:
    """Remember whether ``module`` (compiled from ``wasm``) grows memory; return it."""
    key = hashlib.sha256(wasm).digest()
    with _lock:
        known = key in _by_hash
        result = _by_hash.get(key)
        if known:
            _by_hash.move_to_end(key)
    if not known:
        result = grows_memory(wasm)
        with _lock:
            _by_hash[key] = result
            while len(_by_hash) > _LRU_SIZE:
                _by_hash.popitem(last=False)
    with _lock:
        _by_module[module] = result
    return result


def module_grows_memory(module: Any) -> bool | None:
    """What :func:`note_module` found for ``module``; ``None`` if it never saw its bytes."""
    with _lock:
        return _by_module.get(module)
