"""Held-out validation rows whose text the training data already holds, inside a longer text or as itself.

Some data sets are built from overlapping texts. SST-2's 67,349 training rows are phrases cut from a few
thousand parsed sentences, so a random 10% holdout is mostly phrases whose sentence stays in training (88%
of them at seeds 0, 1 and 2). The model has then read their words with their sentiment, so these rows score
better than new text does: the validation accuracy looks higher than it is, the best checkpoint is picked on
them, and the temperature fitted on them comes out too cold for new sentences.

:func:`contained` finds such rows; the holdout (``validation_overlap="move"``, the default) moves them into
training, where they do what they can do: teach. Texts are compared as :func:`lorafit.datacheck.normalize`
has them (case-folded, whitespace collapsed). A single text counts as contained when it occurs inside a
training text on word boundaries (between spaces or at either end); a ``(text, text_pair)`` pair only when
the same pair occurs in training. Searching inside every training text costs about (distinct validation
texts) x (characters of training text); above ``SEARCH_BUDGET`` only equal texts are looked for, and the
result says so.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lorafit.data import Text

SEARCH_BUDGET = 5e10
"""Characters compared at most (distinct validation texts x length of the joined training texts) when looking
inside training texts: SST-2's holdout is 2.3e10 (5-8 s on one core of a busy machine); beyond it, equal texts
only."""


@dataclass
class Overlap:
    """Which validation rows the training data holds."""

    mask: np.ndarray
    """One bool per validation row: its text occurs in the training data."""
    inside: bool
    """Whether texts were looked for inside training texts (else only equal texts were found)."""
    pairs: bool = False
    """Whether the texts are ``(text, text_pair)`` pairs, which are only ever compared whole."""

    def __len__(self) -> int:
        return int(self.mask.sum())

    def describe(self, held: int, moved: int) -> str:
        """The sentence that tells the user what the holdout did with ``moved`` of its ``held`` rows."""
        found = ("equal to or inside" if self.inside else "equal to" if self.pairs
                 else "equal to (too much data to look inside longer texts)")
        done = (f"moved them to training, {held - moved} left for validation" if moved else
                "kept them, as no validation rows would be left")
        return (f"{len(self)} of {held} validation rows hold a text {found} a training text; {done} "
                "(--validation-overlap keep: keep them held out)")


def contained(train_texts: list[Text], val_texts: list[Text]) -> Overlap:
    """Which of ``val_texts`` occur in ``train_texts`` (see the module docstring).

    Example:
        >>> overlap = contained(["a truly great film", "dull"], ["great film", "Dull ", "great films", "film a"])
        >>> overlap.mask.tolist(), overlap.inside
        ([True, True, False, False], True)
    """
    from lorafit.datacheck import normalize

    train = {normalize(text) for text in train_texts}
    val = [normalize(text) for text in val_texts]
    distinct = set(val)
    pairs = any(isinstance(text, tuple) for text in train)
    joined = 0 if pairs else sum(len(text) + 3 for text in train)
    if pairs or len(distinct) * joined > SEARCH_BUDGET:
        return Overlap(np.array([text in train for text in val], dtype=bool), inside=False, pairs=pairs)
    haystack = "\n" + "\n".join(f" {text} " for text in train) + "\n"
    found = {text: text in train or f" {text} " in haystack for text in distinct}
    return Overlap(np.array([found[text] for text in val], dtype=bool), inside=True)


def move_contained(texts: list[Text], train_index: np.ndarray,
                   val_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, Overlap]:
    """The holdout ``(train_index, val_index)`` over ``texts`` with the contained validation rows moved to
    training; unchanged when every validation row is contained (nothing would be left to validate on)."""
    overlap = contained([texts[i] for i in train_index], [texts[i] for i in val_index])
    if not len(overlap) or overlap.mask.all():
        return train_index, val_index, overlap
    moved = val_index[overlap.mask]
    return np.sort(np.concatenate([train_index, moved])), val_index[~overlap.mask], overlap
