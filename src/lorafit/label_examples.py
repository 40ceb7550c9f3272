"""Training examples made from the label names: ``"this sentence is card arrival"`` for ``card_arrival``.

SetFit's templated-dataset idea (``setfit.get_templated_dataset``): with a few examples per class, a
text that says what a label means gives the model that label's name as one more example. They are
added to the training rows only, after the data checks, so validation, test and the checks see only
the user's rows. :func:`lorafit.config.resolve_label_examples` decides how many.

Example:
    >>> label_text("card_arrival", "this sentence is {}")
    'this sentence is card arrival'
"""
from __future__ import annotations

from lorafit.data import LabeledData


def label_text(label: str, template: str) -> str:
    """``template`` with its ``{}`` replaced by ``label``, underscores read as spaces."""
    return template.replace("{}", label.replace("_", " "))


def add_label_examples(data: LabeledData, classes: list[str], count: int, template: str) -> LabeledData:
    """``data`` with ``count`` label examples of every class in ``classes`` appended (class by class).

    Example:
        >>> data = add_label_examples(LabeledData(["hi"], ["a"], "train.csv"), ["a", "b"], 1, "about {}")
        >>> data.texts, data.labels
        (['hi', 'about a', 'about b'], ['a', 'a', 'b'])
    """
    labels = [label for label in classes for _ in range(count)]
    return LabeledData(data.texts + [label_text(label, template) for label in labels], data.labels + labels,
                       data.source, dropped_empty=data.dropped_empty)


def announcement(count: int, classes: list[str], template: str, setting: int | str) -> str:
    """What the CLI prints when label examples were added."""
    why = "label_examples=auto: few-shot data" if setting == "auto" else f"label_examples={setting}"
    return (f"added {count} example(s) per label made from the label names, such as "
            f"{label_text(classes[0], template)!r} ({why}); --label-examples 0 turns this off")
