"""Several processes working as one (``torchrun`` / ``accelerate launch``): who they are, who writes, who waits.

A launcher starts the same command in every process and tells each its rank through the environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``). Accelerate's :class:`~accelerate.PartialState` turns that into a
process group (gloo on CPUs, NCCL on GPUs); everything here goes through it. Without a launcher there is
one process, and none of these functions starts a process group or communicates.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from lorafit.errors import ConfigError


def world_size() -> int:
    """Processes started together by the launcher (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` / ``accelerate launch``."""
    return world_size() > 1


def check_gpus() -> None:
    """Refuse, with a message, more processes on this machine than it has GPUs: under NCCL each process takes
    the GPU of its local rank, and CUDA's own answer ("invalid device ordinal") names neither cause nor fix."""
    if not launched() or not torch.cuda.is_available():
        return
    local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0")) + 1)
    gpus = torch.cuda.device_count()
    if local > gpus:  # every process on this machine says so, not only those without a GPU
        raise ConfigError(f"{local} processes were started on this machine but it has {gpus} CUDA GPU(s), and "
                          "each process trains on a GPU of its own; start at most one process per GPU "
                          f"(--nproc_per_node {gpus}), or hide the GPUs (CUDA_VISIBLE_DEVICES=) to run every "
                          "process on the CPU")


def state():
    """Accelerate's process state (it joins the process group the first time; later calls share it)."""
    from accelerate import PartialState

    check_gpus()
    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    """This process's index among all processes (0 without a launcher), as the launcher set it."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def is_main() -> bool:
    """Whether this process writes files and shows progress: rank 0, or the only process."""
    return rank() == 0


def device() -> torch.device:
    """The device this process computes on: its own GPU under NCCL, else the CPU."""
    return state().device if launched() else torch.device("cpu")


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if launched():
        state().wait_for_everyone()


def broadcast(value: object) -> object:
    """Rank 0's ``value``, on every process (``value`` itself in a single process)."""
    if not launched():
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def shard(rows: int, part: int, parts: int) -> np.ndarray:
    """Indices of part ``part`` of ``parts`` near-equal contiguous slices of ``range(rows)`` (in order)."""
    return np.array_split(np.arange(rows), parts)[part]


def gather(value: object) -> list:
    """Every process's ``value``, in rank order, on every process (``[value]`` in a single process)."""
    if not launched():
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def gather_rows(values: np.ndarray) -> np.ndarray:
    """Every process's rows of ``values``, concatenated in rank order, on every process.

    With :func:`shard` slices this puts rows back in their original order.
    """
    if not launched():
        return values
    parts = [part for part in gather(values) if len(part)]  # an empty slice may have no columns
    return np.concatenate(parts, axis=0) if parts else values
