"""Resident-memory housekeeping: glibc's mmap threshold is pinned for training, unless the user set it."""
from __future__ import annotations

import ctypes

import pytest

from lorafit import memory


def test_bound_heap_pins_the_mmap_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(memory, "_libc", lambda: FakeLibc())
    assert memory.bound_heap() and calls == [(memory.M_MMAP_THRESHOLD, memory.MMAP_THRESHOLD)]
    monkeypatch.setattr(memory, "_libc", lambda: None)
    assert not memory.bound_heap()  # no glibc (macOS, musl): nothing to do, no error


def test_bound_heap_works_on_this_glibc() -> None:
    libc = memory._libc()
    if libc is None or not hasattr(libc, "mallopt"):
        pytest.skip("not glibc")
    assert memory.bound_heap()
    buffer = ctypes.create_string_buffer(4 * 1024 * 1024)  # the allocator still works
    assert len(buffer) == 4 * 1024 * 1024
