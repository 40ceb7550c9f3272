"""End-to-end on the real embedded MiniLM (the default model) and a BANKING77 slice.

Ten intents x 16 training rows, 2 epochs; held-out rows of the same intents from examples/banking77/test.csv.
Chance is 10%; both the API and the CLI path must land far above it (> 80%). Run only these with ``-m e2e``,
skip them with ``-m "not e2e"``.

They run on the one torch thread the session fixture ``torch_threads`` sets: on these 2-core machines a
second OpenMP thread makes MiniLM training ~20x slower as soon as anything else uses a core.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "banking77"
INTENTS = ["activate_my_card", "age_limit", "apple_pay_or_google_pay", "atm_support", "card_arrival",
           "exchange_rate", "lost_or_stolen_card", "passcode_forgotten", "terminate_account", "top_up_failed"]
PER_INTENT = 16

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def banking_slice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    train = pd.read_csv(EXAMPLES / "train.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(EXAMPLES / "test.csv", dtype=str, keep_default_na=False)
    assert set(INTENTS) <= set(train["label"])
    rows = train[train["label"].isin(INTENTS)].groupby("label", group_keys=False).head(PER_INTENT)
    assert len(rows) == len(INTENTS) * PER_INTENT
    path = tmp_path_factory.mktemp("banking") / "train.csv"
    rows.to_csv(path, index=False)
    held_out = test[test["label"].isin(INTENTS)].reset_index(drop=True)
    assert len(held_out) == 10 * len(INTENTS)
    return path, held_out


def test_api_fine_tunes_minilm_far_above_chance(banking_slice: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    from lorafit import Classifier

    train_path, test = banking_slice
    clf = Classifier(epochs=2, batch_size=16).fit_files(train_path)
    assert clf.base["name"] == "minilm" and clf.classes_ == sorted(INTENTS)
    report = clf.evaluate(test["text"].tolist(), test["label"].tolist())
    assert report["accuracy"] > 0.8, report["accuracy"]  # 0.99 when written
    run = clf.save(tmp_path / "run")
    again = Classifier.load(run)
    probe = test["text"].tolist()[:20]
    expected = clf.predict_proba(probe)
    assert abs(again.predict_proba(probe) - expected).max() < 1e-5
    # The run reloads without lorafit, too (plain transformers + peft), on the real model.
    from test_plain_peft import plain_predict_proba

    plain, id2label = plain_predict_proba(str(run), probe)
    assert abs(plain - expected).max() < 1e-5 and list(id2label.values()) == clf.classes_


def test_cli_train_and_predict(banking_slice: tuple[Path, pd.DataFrame], tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:
    from lorafit.cli import main

    train_path, test = banking_slice
    test_path = tmp_path / "test.csv"
    test[["text"]].to_csv(test_path, index=False)
    run, predictions = tmp_path / "run", tmp_path / "predictions.jsonl"
    main(["train", str(train_path), "--out", str(run), "--no-progress", "--epochs", "2", "--batch-size", "16"])
    assert (run / "lorafit.json").is_file()
    assert json.loads((run / "lorafit.json").read_text())["base_model"]["name"] == "minilm"
    main(["predict", str(run), "--input", str(test_path), "--output", str(predictions)])
    records = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == test["text"].tolist()
    accuracy = sum(r["label"] == y for r, y in zip(records, test["label"])) / len(test)
    assert accuracy > 0.8, accuracy
    capsys.readouterr()
