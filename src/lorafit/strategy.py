"""The training strategy chosen by data size when ``layers_to_transform`` and ``epochs`` are ``"auto"``.

Up to ``LARGE_DATA_ROWS`` training rows: LoRA on the top third of the encoder's blocks (the frozen blocks below
are computed once and cached) for ``SMALL_DATA_EPOCHS`` passes. From ``LARGE_DATA_ROWS`` rows on: LoRA on every
block for ``LARGE_DATA_EPOCHS`` pass. A training step on every block costs about three times one on the top
third, so on large data the two strategies cost roughly the same (1.33x the wall time in the one pair measured
side by side), and there the lower blocks are worth it: on SST-2 (60,614 training rows) every block for one
epoch reached 88.30% / 88.99% on GLUE validation at seeds 0 / 1, against 87.27% / 86.81% for the top third over
two epochs (``bench/run_lorafit.py``, BENCHMARKS.md). On BANKING77 (9,003 rows) every block was within noise
of the top third at three times the cost per step. The threshold lies between the two data sets measured; it
is not tuned. Both settings take explicit values that override the choice.
"""
from __future__ import annotations

LARGE_DATA_ROWS = 30_000
"""Training rows from which ``auto`` puts LoRA on every block and trains one epoch."""
SMALL_DATA_EPOCHS = 2
LARGE_DATA_EPOCHS = 1


def is_large(rows: int) -> bool:
    """Whether ``rows`` training rows get the large-data strategy."""
    return rows >= LARGE_DATA_ROWS


def auto_layers(blocks: int, rows: int) -> list[int]:
    """The blocks ``layers_to_transform="auto"`` gives LoRA: every one on large data, else the top third
    (at least one)."""
    top = blocks if is_large(rows) else max(1, -(-blocks // 3))
    return list(range(blocks - top, blocks))


def resolve_epochs(setting: int | str, rows: int) -> int:
    """The epochs ``epochs`` asks for (before ``min_steps``): ``"auto"`` by data size, else the number itself."""
    if setting != "auto":
        return int(setting)
    return LARGE_DATA_EPOCHS if is_large(rows) else SMALL_DATA_EPOCHS


def describe(layers_setting: object, epochs_setting: object, rows: int) -> str | None:
    """A line naming what ``auto`` chose on large data and how to override it (None when nothing differs
    from the small-data strategy or nothing is ``auto``)."""
    chosen = [what for what, setting in (("LoRA on every block", layers_setting),
                                         (f"{LARGE_DATA_EPOCHS} epoch", epochs_setting)) if setting == "auto"]
    if not chosen or not is_large(rows):
        return None
    return (f"large data ({rows:,} training rows, at least {LARGE_DATA_ROWS:,}): {' and '.join(chosen)} "
            f"(set --layers-to-transform / --epochs to choose otherwise)")
