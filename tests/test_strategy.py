"""The data-size strategy of ``layers_to_transform="auto"`` and ``epochs="auto"`` (lorafit.strategy)."""
from __future__ import annotations

import json

import pytest

from conftest import TINY_TRAIN
from helpers import Infos, make_texts

import lorafit.strategy as strategy
from lorafit import Classifier
from lorafit.strategy import LARGE_DATA_EPOCHS, LARGE_DATA_ROWS, MEDIUM_DATA_ROWS, SMALL_DATA_EPOCHS, auto_layers, \
    describe, resolve_epochs


@pytest.mark.parametrize("blocks, rows, expected", [
    (6, MEDIUM_DATA_ROWS - 1, [4, 5]), (6, MEDIUM_DATA_ROWS, [5]), (6, LARGE_DATA_ROWS - 1, [5]),
    (6, LARGE_DATA_ROWS, [0, 1, 2, 3, 4, 5]), (12, 100, [8, 9, 10, 11]), (12, MEDIUM_DATA_ROWS, [10, 11]),
    (2, 0, [1]), (2, MEDIUM_DATA_ROWS, [1]), (1, LARGE_DATA_ROWS, [0])])
def test_auto_layers(blocks: int, rows: int, expected: list[int]) -> None:
    assert auto_layers(blocks, rows) == expected


def test_epochs() -> None:
    assert resolve_epochs("auto", LARGE_DATA_ROWS - 1) == SMALL_DATA_EPOCHS == 2
    assert resolve_epochs("auto", LARGE_DATA_ROWS) == LARGE_DATA_EPOCHS == 1
    assert resolve_epochs(3, LARGE_DATA_ROWS) == 3  # a number is taken as given


def test_describe_names_only_what_auto_changed() -> None:
    assert describe("auto", "auto", MEDIUM_DATA_ROWS - 1) is None  # small data: the usual strategy, no message
    medium = describe("auto", "auto", LARGE_DATA_ROWS - 1)
    assert medium == ("medium data (29,999 training rows, 5,000 to 29,999): LoRA on the top sixth of the blocks "
                      "(set --layers-to-transform to choose otherwise)")  # the epochs are the usual ones
    assert describe([5], "auto", MEDIUM_DATA_ROWS) is None
    assert describe([4, 5], 3, LARGE_DATA_ROWS) is None  # nothing left to auto
    both = describe("auto", "auto", 45_000)
    assert "45,000 training rows" in both and "LoRA on every block and 1 epoch" in both and "--epochs" in both
    assert "every block" not in describe([4, 5], "auto", 45_000)


def test_large_data_trains_every_block_for_one_epoch(tiny_model: str, tmp_path, monkeypatch) -> None:
    texts, labels = make_texts(10, seed=0)  # 30 rows; 27 train after the validation split
    monkeypatch.setattr(strategy, "LARGE_DATA_ROWS", 20)
    infos = Infos()
    settings = {**TINY_TRAIN, "epochs": "auto", "validation_fraction": 0.1, "label_examples": 0}
    clf = Classifier(model=tiny_model, **settings).fit(texts, labels, callback=infos)
    assert clf.metrics_["epochs"] == 1 and clf.metrics_["cached_layers"] == 0
    assert clf.model.lora_settings.layers_to_transform == [0, 1]  # the tiny model's two blocks
    assert any("large data (27 training rows" in m and "every block and 1 epoch" in m for m in infos.messages)
    clf.save(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "lorafit.json").read_text())["train_config"]["epochs"] == "auto"
    assert "epochs=1 (auto)" in (tmp_path / "run" / "README.md").read_text()

    monkeypatch.setattr(strategy, "LARGE_DATA_ROWS", 28)  # one row more than there are: small data
    infos = Infos()
    clf = Classifier(model=tiny_model, **settings).fit(texts, labels, callback=infos)
    assert clf.metrics_["epochs"] == 2 and clf.metrics_["cached_layers"] == 1
    assert not any("large data" in m or "medium data" in m for m in infos.messages)

    monkeypatch.setattr(strategy, "MEDIUM_DATA_ROWS", 27)  # medium data: the top sixth (the top one of two blocks)
    infos = Infos()
    clf = Classifier(model=tiny_model, **settings).fit(texts, labels, callback=infos)
    assert clf.metrics_["epochs"] == 2 and clf.model.lora_settings.layers_to_transform == [1]
    assert any(m.startswith("medium data (27 training rows") for m in infos.messages)
