"""Linear memory: bounds-checked typed access, the host heap allocators, gene layouts."""

from __future__ import annotations

from .allocator import Allocator, BumpAllocator, FreeListAllocator
from .genes import GeneField, GeneLayout, gene_layout
from .guest_alloc import GuestAllocator, allocator_strategy
from .memory import PAGE_SIZE, WasmMemory

__all__ = [
    "PAGE_SIZE",
    "Allocator",
    "BumpAllocator",
    "FreeListAllocator",
    "GeneField",
    "GeneLayout",
    "GuestAllocator",
    "WasmMemory",
    "allocator_strategy",
    "gene_layout",
]
