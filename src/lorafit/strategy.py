"""The training strategy chosen by data size when ``layers_to_transform`` and ``epochs`` are ``"auto"``.

Three sizes, counted in training rows (after the validation split):

- small (under ``MEDIUM_DATA_ROWS``): LoRA on the top third of the encoder's blocks (the frozen blocks below
  are computed once and cached) for ``SMALL_DATA_EPOCHS`` passes (``min_steps`` may add passes). With 8
  examples per class of BANKING77 (616 rows) the top third reached 84.71% over five seeds against 84.22% for
  the top block alone (``bench/few_shot.py``, BENCHMARKS.md, "LoRA on the top block").
- medium (from ``MEDIUM_DATA_ROWS``): LoRA on the top sixth (at least one block: the top one of MiniLM-L6's
  six), ``SMALL_DATA_EPOCHS`` passes. On BANKING77 (9,003 rows) the top block alone matched the top third's
  accuracy (93.15% against 93.20% over ten seeds) at about half the cost per step (same section).
- large (from ``LARGE_DATA_ROWS``): LoRA on every block for ``LARGE_DATA_EPOCHS`` pass. A training step on every
  block costs about three times one on the top third, so on large data the two cost roughly the same (1.33x the
  wall time in the one pair measured side by side), and there the lower blocks are worth it: on SST-2 (60,614
  training rows) every block for one epoch reached 88.30% / 88.99% on GLUE validation at seeds 0 / 1, against
  87.27% / 86.81% for the top third over two epochs (``bench/run_lorafit.py``, BENCHMARKS.md).

The thresholds lie between the data sets measured; they are not tuned. Both settings take explicit values that
override the choice, and training prints the choice on medium and large data.
"""
from __future__ import annotations

MEDIUM_DATA_ROWS = 5_000
"""Training rows from which ``auto`` puts LoRA on the top sixth of the blocks instead of the top third."""
LARGE_DATA_ROWS = 30_000
"""Training rows from which ``auto`` puts LoRA on every block and trains one epoch."""
SMALL_DATA_EPOCHS = 2
LARGE_DATA_EPOCHS = 1


def is_large(rows: int) -> bool:
    """Whether ``rows`` training rows get the large-data strategy."""
    return rows >= LARGE_DATA_ROWS


def data_size(rows: int) -> str:
    """``"small"``, ``"medium"`` or ``"large"``: the strategy ``rows`` training rows get."""
    if is_large(rows):
        return "large"
    return "medium" if rows >= MEDIUM_DATA_ROWS else "small"


_BLOCKS = {"small": (3, "the top third of the blocks"), "medium": (6, "the top sixth of the blocks"),
           "large": (1, "every block")}
"""Per data size: the divisor of the block count that ``auto`` trains (at least one block), and its name."""


def auto_layers(blocks: int, rows: int) -> list[int]:
    """The blocks ``layers_to_transform="auto"`` gives LoRA at ``rows`` training rows: the top third (at
    least one) on small data, the top sixth (at least one) on medium data, every block on large data."""
    share, _ = _BLOCKS[data_size(rows)]
    top = max(1, -(-blocks // share))
    return list(range(blocks - top, blocks))


def resolve_epochs(setting: int | str, rows: int) -> int:
    """The epochs ``epochs`` asks for (before ``min_steps``): ``"auto"`` by data size, else the number itself."""
    if setting != "auto":
        return int(setting)
    return LARGE_DATA_EPOCHS if is_large(rows) else SMALL_DATA_EPOCHS


def describe(layers_setting: object, epochs_setting: object, rows: int) -> str | None:
    """A line naming what ``auto`` chose on medium or large data and how to override it (None on small data,
    where nothing differs from the usual strategy, or when nothing it chose is ``auto``)."""
    size = data_size(rows)
    if size == "small":
        return None
    epochs = epochs_setting if size == "large" else None  # medium data trains the usual epochs
    chosen = [(what, option) for what, option, setting in (
        (f"LoRA on {_BLOCKS[size][1]}", "--layers-to-transform", layers_setting),
        (f"{LARGE_DATA_EPOCHS} epoch", "--epochs", epochs)) if setting == "auto"]
    if not chosen:
        return None
    bound = f"at least {LARGE_DATA_ROWS:,}" if size == "large" else f"{MEDIUM_DATA_ROWS:,} to {LARGE_DATA_ROWS - 1:,}"
    return (f"{size} data ({rows:,} training rows, {bound}): {' and '.join(what for what, _ in chosen)} "
            f"(set {' / '.join(option for _, option in chosen)} to choose otherwise)")
