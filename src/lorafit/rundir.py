"""The run directory format: atomic write, manifest read, format-version check."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lorafit.errors import RunDirError

FORMAT_VERSION = 1
MANIFEST = "lorafit.json"
METRICS = "metrics.json"
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
REQUIRED = (MANIFEST, ADAPTER_CONFIG, ADAPTER_WEIGHTS, "tokenizer_config.json")
HEAD_WEIGHT = "base_model.model.classifier.weight"
"""The head's weight as peft saves it (``modules_to_save`` around ``classifier``): one row per label."""


def check_writable(target: str | Path, overwrite: bool, marker: str = MANIFEST) -> Path:
    """Refuse an existing target unless ``overwrite``; call before training so no work is lost.

    Only a directory holding ``marker`` (a run directory's ``lorafit.json``, an export's own file) is replaced.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise RunDirError(f"{target} exists already; pass --overwrite to replace it, or choose another --out")
    if target.exists() and not target.is_dir():
        raise RunDirError(f"{target} exists and is not a directory; remove it or choose another --out")
    if target.is_dir() and any(target.iterdir()) and not (target / marker).is_file():
        kind, kinds = ("run directory", "run directories") if marker == MANIFEST else ("export", "exports")
        raise RunDirError(f"{target} is not a lorafit {kind} (no {marker}); --overwrite only replaces "
                          f"{kinds}: remove it yourself or choose another --out")
    return target


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(target: str | Path, fill: Callable[[Path], None], overwrite: bool = False,
                     marker: str = MANIFEST) -> Path:
    """Call ``fill(tmp)`` on a temporary sibling of ``target``, then rename it into place.

    A crash or Ctrl-C during ``fill`` leaves ``target`` untouched (and removes the temporary directory).
    """
    target = check_writable(target, overwrite, marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        fill(tmp)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed onto ``path`` when the block ends without error.

    The file appears whole or not at all; an error or Ctrl-C removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def predict_length_of(manifest: dict) -> int:
    """The tokens per text a run predicts with: its ``predict_max_length``; a run written before that setting
    existed predicted with its ``max_length``, and still does."""
    return int(manifest.get("predict_max_length", manifest["max_length"]))


def read_manifest(run_dir: str | Path) -> dict:
    """Read and check ``lorafit.json``; clear errors for a missing, foreign, incomplete or newer directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        raise RunDirError(f"{run_dir} is not a lorafit run directory (no {MANIFEST}); "
                          "pass the --out directory of a `lorafit train` run")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{manifest_path} is not valid JSON ({exc}); the run directory is damaged") from None
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise RunDirError(f"{manifest_path} has no integer format_version; the run directory is damaged")
    if version > FORMAT_VERSION:
        raise RunDirError(f"{run_dir} has run-directory format {version}, newer than this lorafit reads "
                          f"({FORMAT_VERSION}); upgrade lorafit: pip install -U lorafit")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise RunDirError(f"{run_dir} is incomplete: missing {', '.join(missing)}")
    return manifest


def read_metrics(run_dir: str | Path) -> dict:
    """``metrics.json`` of a run directory, or an empty dict when absent."""
    path = Path(run_dir) / METRICS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def adapter_shapes(run_dir: str | Path, labels: int) -> dict[str, tuple[int, ...]]:
    """The tensor shapes in ``adapter_model.safetensors``, after checking that the file and its config are whole
    and that the head has one row per label of ``lorafit.json``; a RunDirError naming the file otherwise.

    Only the safetensors header is read here (no pickle is ever loaded).
    """
    from safetensors import SafetensorError, safe_open

    run_dir = Path(run_dir)
    try:
        json.loads((run_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{run_dir / ADAPTER_CONFIG} is not valid JSON ({exc}); the run directory is damaged") from None
    path = run_dir / ADAPTER_WEIGHTS
    try:
        with safe_open(str(path), framework="pt") as weights:
            shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunDirError(f"{path} is truncated or damaged ({exc}); the run directory cannot be used: "
                          "copy it again or retrain") from None
    head = shapes.get(HEAD_WEIGHT)
    if head is None:
        raise RunDirError(f"{path} has no classification head ({HEAD_WEIGHT}); it was not written by lorafit")
    if head[0] != labels:
        raise RunDirError(f"{path} has a head for {head[0]} labels, but {run_dir / MANIFEST} lists {labels}; "
                          "the files come from different runs")
    return shapes
