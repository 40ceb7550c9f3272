"""Held-out rows whose text the training part already holds (SST-2's phrases inside its sentences): found on word
boundaries after normalisation, pairs only when equal, equal texts only above the search budget; the holdout
moves them to training by default, says so, and keeps them with ``validation_overlap="keep"``."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_TRAIN
from helpers import Infos, run_main, write_table
from lorafit import Classifier, ConfigError
from lorafit import overlap as overlap_module
from lorafit.cli import app
from lorafit.config import DataConfig
from lorafit.overlap import contained, move_contained

runner = CliRunner()


def test_a_text_counts_as_contained_inside_a_training_text_on_word_boundaries() -> None:
    train = ["The film is a  charming delight", "slow", "an utter mess ."]
    val = ["charming delight", "THE FILM", "slow", "an utter mess .", "harming", "film is charming", "mess", "delights"]
    found = contained(train, val)
    assert found.inside and found.mask.tolist() == [True, True, True, True, False, False, True, False]
    assert len(found) == 5


def test_pairs_count_only_when_the_same_pair_is_in_training() -> None:
    train = [("a man plays guitar", "a person makes music"), ("it rains", "the street is wet")]
    val = [("A man  plays guitar", "a person makes music"), ("man plays", "person makes"), ("it rains", "it pours")]
    found = contained(train, val)
    assert not found.inside and found.mask.tolist() == [True, False, False]
    assert "equal to a training text;" in found.describe(held=3, moved=1)  # pairs are compared whole, not cut


def test_above_the_search_budget_only_equal_texts_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlap_module, "SEARCH_BUDGET", 10)
    found = contained(["a charming delight", "slow"], ["charming delight", "Slow", "fast"])
    assert not found.inside and found.mask.tolist() == [False, True, False]
    assert "too much data" in found.describe(held=3, moved=1)


def test_move_contained_moves_exactly_the_contained_rows() -> None:
    texts = ["a great film", "great", "dull and slow", "slow", "a fine cast", "new words here"]
    train, val, found = move_contained(texts, np.array([0, 2]), np.array([1, 3, 4, 5]))
    assert val.tolist() == [4, 5] and train.tolist() == [0, 1, 2, 3] and len(found) == 2
    # every held-out row contained: nothing would be left to validate on, so the split stays as it was
    train, val, found = move_contained(texts, np.array([0, 2, 4, 5]), np.array([1, 3]))
    assert val.tolist() == [1, 3] and train.tolist() == [0, 2, 4, 5] and found.mask.all()
    assert "kept them" in found.describe(held=2, moved=0)


def _phrases(n_sentences: int, seed: int) -> tuple[list[str], list[str]]:
    """SST-2 in small: whole sentences of class words plus phrases cut from them, same label."""
    rng = random.Random(seed)
    vocab = {"pos": ["good", "great", "fine", "lovely", "warm", "bright", "funny", "smart"],
             "neg": ["bad", "dull", "slow", "weak", "cold", "flat", "silly", "messy"]}
    texts, labels = [], []
    for label, words in vocab.items():
        for _ in range(n_sentences):
            sentence = [rng.choice(words) for _ in range(7)]
            texts.append(" ".join(sentence)), labels.append(label)
            for _ in range(3):
                start = rng.randrange(5)
                texts.append(" ".join(sentence[start:start + rng.randint(2, 3)])), labels.append(label)
    return texts, labels


def test_the_holdout_moves_contained_rows_to_training_and_says_so(tiny_model: str) -> None:
    texts, labels = _phrases(20, seed=3)  # 80 rows per class: 8 held out of each
    infos = Infos()
    moved = Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1}).fit(texts, labels, callback=infos)
    kept = Classifier(model=tiny_model, validation_overlap="keep", **{**TINY_TRAIN, "epochs": 1}).fit(texts, labels)
    assert kept.data_summary["validation"]["rows"] == 16
    rows = moved.data_summary["validation"]["rows"]
    assert 0 < rows < 16 and moved.data_summary["train"]["rows"] == len(texts) - rows
    (message,) = [m for m in infos.messages if "validation rows hold a text" in m]
    assert message.startswith(f"{16 - rows} of 16 validation rows") and f"{rows} left for validation" in message
    assert f"less {16 - rows} rows already in training texts" in moved.data_summary["validation"]["source"]
    assert moved.manifest()["data_config"]["validation_overlap"] == "move"


def test_bad_validation_overlap_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="validation_overlap must be 'move' or 'keep', got 'drop'"):
        DataConfig(validation_overlap="drop")


def test_cli_validation_overlap_reaches_the_run_and_bad_values_are_one_line_errors(
        tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    texts, labels = _phrases(20, seed=3)
    data = write_table(tmp_path / "train.csv", {"text": texts, "label": labels})
    common = ["train", str(data), "--model", tiny_model, "--no-progress", "--precision", "fp32", "--epochs", "1",
              "--min-steps", "0"]
    code, err = run_main(capsys, [*common, "--out", str(tmp_path / "run"), "--validation-overlap", "keep"])
    assert code == 0, err
    manifest = json.loads((tmp_path / "run" / "lorafit.json").read_text())
    assert manifest["data_config"]["validation_overlap"] == "keep" and manifest["data"]["validation"]["rows"] == 16
    inspect = runner.invoke(app, ["inspect", str(data), "--model", tiny_model])  # says what train would say
    assert inspect.exit_code == 0, inspect.output
    flat = " ".join(inspect.output.split())
    assert "of 16 validation rows hold a text equal to or inside a training text; moved them" in flat
    assert flat.index("moved them") < flat.index("rows per label")
    code, err = run_main(capsys, [*common, "--out", str(tmp_path / "bad"), "--validation-overlap", "drop"])
    assert code == 1 and "validation_overlap must be 'move' or 'keep', got 'drop'" in " ".join(err.split())
    assert "Traceback" not in err
    assert not (tmp_path / "bad").exists()
