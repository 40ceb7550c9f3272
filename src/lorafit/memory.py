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


def release_free_memory() -> None:
    """Return freed heap memory to the operating system (glibc ``malloc_trim(0)``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
