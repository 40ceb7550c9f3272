"""Resident-memory housekeeping on glibc: give freed heap pages back to the OS.

Batches of varying length allocate tensors of varying size; glibc keeps the freed blocks in its
heaps, so resident memory creeps up over a run although little is in use. ``malloc_trim`` returns
those pages. It is a no-op where glibc is absent (macOS, Windows, musl).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number for the size above which blocks get their own ``mmap``."""

MMAP_THRESHOLD = 4 * 1024 * 1024
"""Blocks above this many bytes are mapped on their own and unmapped when freed. glibc starts at 128 KiB
and raises the threshold (up to 32 MiB) as the program frees big blocks, after which the big transient
tensors of evaluation and caching come from the heap, where the holes they leave keep resident memory
high. Pinned at 4 MiB: those go back to the OS, while a training step's smaller tensors stay on the
heap (at 128 KiB every step paid for fresh pages: BANKING77's loop took 1.85x as long; BENCHMARKS.md)."""


def bound_heap(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at ``threshold`` bytes: tensors above it are returned to the OS the
    moment they are freed instead of fragmenting the heap. Returns whether glibc took it (False elsewhere).
    Setting ``MALLOC_MMAP_THRESHOLD_`` in the environment does the same before the process starts."""
    libc = _libc()
    return bool(libc is not None and hasattr(libc, "mallopt") and libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1)


def release_free_memory() -> None:
    """Return freed heap memory to the operating system (glibc ``malloc_trim(0)``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
