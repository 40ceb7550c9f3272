"""Training checkpoints for ``--resume``: written atomically, checked on reading, the last two kept.

A checkpoint is a directory ``step-NNNNNNNN`` inside the checkpoint directory (``RUN_DIR.partial`` for
``lorafit train --out RUN_DIR``) holding

- ``tensors.safetensors``: the trainable weights (LoRA and head), the best state so far and its
  validation logits, the optimizer's moments and the torch RNG state;
- ``state.json``: the step, the epoch and the position in it, the numpy Generator's state at the start
  of the epoch (the batch order is drawn from it again), Python's ``random`` state, the optimizer's
  parameter groups, the scheduler, early stopping, the history and the timing counters, and the
  fingerprint of the settings and the data;
- ``checksums.json``, written last: the sha256 of both files. A checkpoint without it, or whose files
  do not match it, is torn (the process died while writing it): it is skipped with a message and the
  one before it is used.

Nothing is unpickled: tensors come from safetensors, everything else from JSON.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lorafit.errors import ConfigError, RunDirError

logger = logging.getLogger(__name__)

SUFFIX = ".partial"
"""The checkpoint directory of run directory ``RUN_DIR`` is its sibling ``RUN_DIR.partial``."""
KEEP = 2
"""Complete checkpoints kept: the newest and the one before it (the fallback when the newest is torn)."""
TENSORS, STATE, CHECKSUMS = "tensors.safetensors", "state.json", "checksums.json"


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where the checkpoints of a run writing ``run_dir`` live: ``RUN_DIR.partial`` beside it."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + SUFFIX)


@dataclass
class TrainingState:
    """Everything the training loop needs to continue exactly where a checkpoint was taken."""

    step: int
    epoch: int
    """The epoch the next batch belongs to."""
    position: int
    """Batches of ``epoch`` already done."""
    epoch_rng: dict
    """The numpy Generator's state before it drew ``epoch``'s batch order."""
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    """``trainable/*``, ``best/*``, ``best_logits``, ``optimizer/*`` and ``rng/*`` tensors (``rng/rankN/*``: the
    RNG of process N > 0 under a launcher)."""
    info: dict = field(default_factory=dict)
    """JSON-ready rest: optimizer groups, scheduler, best, result counters, losses, Python RNG."""

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix/``, with the prefix removed."""
        start = len(prefix) + 1
        return {k[start:]: v for k, v in self.tensors.items() if k.startswith(prefix + "/")}


# ------------------------------------------------------------------------------------ state pieces
def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as flat tensors (``optimizer/<param>/<key>``) and its JSON-ready groups."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, state: TrainingState) -> None:
    """Restore what :func:`optimizer_tensors` saved."""
    per_param: dict[int, dict] = {}
    for name, value in state.group("optimizer").items():
        pid, key = name.split("/", 1)
        per_param.setdefault(int(pid), {})[key] = value
    for pid, values in state.info["optimizer"]["scalars"].items():
        per_param.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": per_param, "param_groups": state.info["optimizer"]["param_groups"]})


def rng_snapshot() -> tuple[dict[str, torch.Tensor], dict]:
    """torch (CPU and CUDA) RNG states as tensors, Python's ``random`` state as JSON."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = value
    version, internal, gauss = random.getstate()
    return tensors, {"version": version, "internal": list(internal), "gauss": gauss}


def rng_entries(snapshots: list[tuple[dict[str, torch.Tensor], dict]]) -> tuple[dict[str, torch.Tensor], dict]:
    """Every process's :func:`rng_snapshot` (in rank order) as checkpoint tensors and info: rank 0's under
    ``rng/`` and ``python_rng``, rank N's under ``rng/rankN/`` and ``python_rng_ranks[N]``."""
    tensors, python_rng = dict(snapshots[0][0]), snapshots[0][1]
    ranks = {}
    for rank, (more, py) in enumerate(snapshots[1:], start=1):
        tensors.update({f"rng/rank{rank}/{key[4:]}": value for key, value in more.items()})
        ranks[str(rank)] = py
    return tensors, {"python_rng": python_rng, **({"python_rng_ranks": ranks} if ranks else {})}


def restore_rng(state: TrainingState, rank: int = 0) -> None:
    """Set the torch and Python RNGs to a checkpoint's states: process ``rank``'s own where the checkpoint
    holds it, else rank 0's (a checkpoint of fewer processes, or from before per-process states)."""
    own = rank > 0 and f"rng/rank{rank}/torch" in state.tensors
    prefix = f"rng/rank{rank}" if own else "rng"
    torch.set_rng_state(state.tensors[f"{prefix}/torch"])
    cuda = [state.tensors[f"{prefix}/cuda/{i}"] for i in range(len(state.group(f"{prefix}/cuda")))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = state.info["python_rng_ranks"][str(rank)] if own else state.info["python_rng"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))


# ------------------------------------------------------------------------------------- disk format
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")


def _fill(tmp: Path, state: TrainingState) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state.tensors.items()}, str(tmp / TENSORS))
    _write_json(tmp / STATE, {"step": state.step, "epoch": state.epoch, "position": state.position,
                              "epoch_rng": state.epoch_rng, **state.info})
    for name in (TENSORS, STATE):
        _fsync(tmp / name)
    _write_json(tmp / CHECKSUMS, {name: _sha256(tmp / name) for name in (TENSORS, STATE)})
    _fsync(tmp / CHECKSUMS)
    _fsync(tmp)


def _problem(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be used, or None when it is complete and intact."""
    if not (path / CHECKSUMS).is_file():
        return f"no {CHECKSUMS}: it was never finished"
    try:
        expected = json.loads((path / CHECKSUMS).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return f"{CHECKSUMS} is damaged"
    for name in (TENSORS, STATE):
        if not (path / name).is_file():
            return f"{name} is missing"
        if _sha256(path / name) != expected.get(name):
            return f"{name} does not match its checksum"
    return None


def _read(path: Path) -> TrainingState:
    from safetensors.torch import load_file

    info = json.loads((path / STATE).read_text(encoding="utf-8"))
    step, epoch, position, epoch_rng = (info.pop(k) for k in ("step", "epoch", "position", "epoch_rng"))
    return TrainingState(step, epoch, position, epoch_rng, load_file(str(path / TENSORS)), info)


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted names of the entries where two fingerprints differ."""
    found = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key} (checkpoint: {a!r}, now: {b!r})" if not key.endswith("hash")
                         else f"{prefix}{key}")
    return found


class Checkpoints:
    """The checkpoints of one training run: when to write them, writing, and finding the newest good one.

    Example:
        >>> plan = Checkpoints("runs/banking.partial", every=200, fingerprint={"settings": {}})  # doctest: +SKIP
    """

    def __init__(self, directory: str | Path, every: int | str, fingerprint: dict, resume: bool = False,
                 inform: Callable[[str], None] | None = None) -> None:
        self.directory = Path(directory)
        self.every = every
        """Steps between checkpoints, ``"epoch"`` (at the end of each epoch) or 0 (none)."""
        self.fingerprint = fingerprint
        """The settings and the data a checkpoint was written for; resuming requires the same."""
        self.resume = resume
        self.inform = inform
        self.saved: int | None = None
        """Step of the newest checkpoint written or resumed from in this process."""

    def due(self, step: int, end_of_epoch: bool) -> bool:
        """Whether to write a checkpoint after ``step``."""
        if self.every == "epoch":
            return end_of_epoch
        return bool(self.every) and step % int(self.every) == 0

    def _say(self, message: str, warn: bool = False) -> None:
        """Tell the user (the CLI's console) or, without a listener, the log (a warning when ``warn``)."""
        if self.inform is not None:
            self.inform(message)
            logger.info(message)
        else:
            (logger.warning if warn else logger.info)(message)

    def save(self, state: TrainingState) -> Path:
        """Write ``state`` atomically (temporary directory, fsync, rename), then drop all but the last two.

        A failure (disk full, ...) is a RunDirError that says so; the previous checkpoints stay.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"step-{state.step:08d}"
        state.info["fingerprint"] = self.fingerprint
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.directory))
        try:
            _fill(tmp, state)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync(self.directory)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            kept = f"the checkpoint of step {self.saved} is kept" if self.saved else "no earlier checkpoint exists"
            reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
            raise RunDirError(f"could not write the checkpoint of step {state.step} to {self.directory}: {reason} "
                              f"({exc}); {kept}. Free some space, then run the same command with --resume"
                              ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.saved = state.step
        self._prune()
        logger.debug("checkpoint of step %d written to %s", state.step, final)
        return final

    def _complete(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("step-*") if p.is_dir())

    def _prune(self) -> None:
        for old in self._complete()[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        for tmp in self.directory.glob(".tmp-*"):  # left by a process killed while writing
            shutil.rmtree(tmp, ignore_errors=True)

    def load(self) -> TrainingState | None:
        """The newest intact checkpoint (torn ones are skipped with a message), or None when there is none.

        A checkpoint written for other settings or other data is a ConfigError naming the differences.
        """
        if not self.directory.is_dir():
            self._say(f"--resume: no checkpoints in {self.directory}; starting from the beginning")
            return None
        for path in reversed(self._complete()):
            problem = _problem(path)
            if problem:
                self._say(f"checkpoint {path} is torn or damaged ({problem}); skipped", warn=True)
                continue
            state = _read(path)
            differences = _differences(state.info.get("fingerprint", {}), self.fingerprint)
            if differences:
                raise ConfigError(f"the checkpoints in {self.directory} were written by another training command: "
                                  f"{'; '.join(differences[:6])} differ. Run the original command with --resume, "
                                  "or start over with --overwrite (which deletes the checkpoints)")
            self.saved = state.step
            self._say(f"resuming from the checkpoint of step {state.step} ({path})")
            return state
        self._say(f"--resume: no intact checkpoint in {self.directory}; starting from the beginning", warn=True)
        return None

    def remove(self) -> None:
        """Delete the checkpoint directory (the run is complete)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def check_fresh_start(directory: Path, resume: bool, overwrite: bool, remove: bool = True) -> Path:
    """Refuse to start over a run's checkpoints by mistake: ``--resume`` uses them, ``--overwrite`` deletes them
    (unless ``remove`` is False: a process other than rank 0 only checks)."""
    if directory.exists() and not resume:
        if not overwrite:
            raise RunDirError(f"{directory} holds the checkpoints of an interrupted run; pass --resume to continue "
                              "it, or --overwrite to delete them and start over")
        if remove:
            shutil.rmtree(directory)
    return directory


def fingerprint(settings: dict, texts: list, labels: list[str], val_texts: list | None,
                val_labels: list[str] | None, base_hash: str) -> dict:
    """What a checkpoint must agree with to be resumed: settings, a hash of the data, the base model hash."""
    digest = hashlib.sha256()
    for part in (texts, labels, val_texts or [], val_labels or []):
        digest.update(str(len(part)).encode())
        for item in part:
            for piece in item if isinstance(item, tuple) else (item,):  # a (text, text_pair) pair: both texts
                digest.update(piece.encode("utf-8", "surrogatepass"))
                digest.update(b"\x00")
    return {"settings": settings, "data_hash": digest.hexdigest()[:16], "rows": len(texts),
            "validation_rows": len(val_texts or []), "base_model_hash": base_hash}


def numpy_state(rng: np.random.Generator) -> dict:
    """A JSON-ready copy of a Generator's bit-generator state."""
    return json.loads(json.dumps(rng.bit_generator.state))
