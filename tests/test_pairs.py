"""Sentence pairs: tasks over two texts (NLI, paraphrase, relevance) with ``--text-pair-column`` / ``(a, b)`` pairs.

Pairs are tokenized as pairs (``tokenizer(text, text_pair)``: [CLS] a [SEP] b [SEP], token type ids 0 then 1),
and every way into a model (the Python API, the CLI, the service, the exports, plain transformers + peft)
takes them and gives the same probabilities. Bad values of the new options are clear errors.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import TINY_TRAIN
from helpers import make_texts, run_main, write_table
from lorafit import Classifier
from lorafit.batching import collate
from lorafit.cli import app
from lorafit.config import DataConfig
from lorafit.data import read_labeled, read_text_chunks, tokenize
from lorafit.datacheck import check_data
from lorafit.errors import ConfigError, DataError

runner = CliRunner()
PAIRS = [("pizza and bread today", "we heard a new song"), ("the team score a goal", "the team score a goal"),
         ("cheese", ""), ("the old guitar", "pizza " * 300)]  # an empty second text, and one cut to max_length


def make_pairs(n: int, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    """``n`` pairs of synthetic texts, labeled ``same`` when both are about the same topic, else ``different``."""
    texts, topics = make_texts(max(4, n // 3 + 1), seed=seed)
    rng = random.Random(seed)
    pairs, labels = [], []
    for i in range(n):
        a = i % len(texts)
        b = a if i % 2 else rng.randrange(len(texts))
        b = next(j for j in range(len(texts)) if topics[j] == topics[a] and j != a) if i % 2 else b
        pairs.append((texts[a], texts[b]))
        labels.append("same" if topics[a] == topics[b] else "different")
    return pairs, labels


def _frame(pairs: list[tuple[str, str]], labels: list[str]) -> dict[str, list]:
    return {"premise": [a for a, _ in pairs], "hypothesis": [b for _, b in pairs], "label": labels}


def _train_args(data: Path, out: Path, model: str, *extra: str) -> list[str]:
    return ["train", str(data), "--out", str(out), "--model", model, "--no-progress", "--precision", "fp32",
            "--epochs", "3", "--min-steps", "0", "--batch-size", "16", "--learning-rate", "5e-3",
            "--text-column", "premise", "--text-pair-column", "hypothesis", *extra]




@pytest.fixture(scope="module")
def pair_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_table(tmp_path_factory.mktemp("pairs") / "train.csv", _frame(*make_pairs(90, seed=0)))


@pytest.fixture(scope="module")
def pair_run(pair_csv: Path, tiny_model: str) -> Path:
    """A run on pairs written by ``lorafit train --text-column premise --text-pair-column hypothesis``."""
    out = pair_csv.parent / "run"
    result = runner.invoke(app, _train_args(pair_csv, out, tiny_model, "--validation-fraction", "0.2"))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def pair_clf(pair_run: Path) -> Classifier:
    return Classifier.load(pair_run)


# ------------------------------------------------------------------------------------- tokenizing
def test_pairs_are_tokenized_as_the_tokenizer_encodes_pairs(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    encoded = tokenize(tokenizer, PAIRS, max_length=24)
    own = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], truncation="longest_first", max_length=24)
    assert encoded.input_ids == own["input_ids"] and encoded.token_type_ids == own["token_type_ids"]
    first = encoded.input_ids[0]
    sep = tokenizer.sep_token_id
    assert first[0] == tokenizer.cls_token_id and first.count(sep) == 2 and first[-1] == sep
    boundary = first.index(sep) + 1
    assert set(encoded.token_type_ids[0][:boundary]) == {0} and set(encoded.token_type_ids[0][boundary:]) == {1}
    assert encoded.truncated == 1 and len(encoded.input_ids[3]) == 24
    assert tokenizer.decode(encoded.input_ids[3]).startswith("[CLS] the old guitar [SEP] pizza")  # longest cut first
    batch = collate(encoded, np.array([0, 2]), tokenizer.pad_token_id)
    assert batch["token_type_ids"][0, boundary:len(first)].eq(1).all() and batch["token_type_ids"][0, :boundary].eq(0).all()


# ------------------------------------------------------------------------------------ reading data
def test_read_labeled_reads_pairs_and_drops_empty_second_texts(tmp_path: Path, caplog) -> None:
    pairs, labels = make_pairs(12, seed=1)
    pairs[4] = (pairs[4][0], "  ")
    path = write_table(tmp_path / "pairs.jsonl", _frame(pairs, labels))
    data = read_labeled(path, "premise", text_pair_column="hypothesis")
    assert len(data) == 11 and data.dropped_empty == 1 and data.texts[0] == pairs[0]
    assert "'premise' or 'hypothesis'" in caplog.text
    with pytest.raises(DataError, match="empty or whitespace-only 'premise' or 'hypothesis'.*line 6"):
        read_labeled(path, "premise", empty_texts="error", text_pair_column="hypothesis")
    with pytest.raises(DataError, match="column 'second' not found.*pass --text-pair-column"):
        read_labeled(path, "premise", text_pair_column="second")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_streamed_files_give_pairs(tmp_path: Path, suffix: str) -> None:
    pairs, labels = make_pairs(10, seed=2)
    path = write_table(tmp_path / f"in{suffix}", _frame(pairs, labels))
    chunks = list(read_text_chunks(path, "premise", rows=4, text_pair_column="hypothesis"))
    assert [p for texts, _ in chunks for p in texts] == pairs and chunks[-1][1] == 1.0
    with pytest.raises(DataError, match="column 'nope' not found.*--text-pair-column"):
        list(read_text_chunks(path, "premise", text_pair_column="nope"))


@pytest.mark.parametrize("value, match", [("", "text_pair_column must not be empty"),
                                          ("text", "also the text_column"), ("label", "also the label_column")])
def test_bad_text_pair_columns_are_config_errors(value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DataConfig(text_pair_column=value)


def test_data_checks_compare_and_measure_whole_pairs(tiny_model_dir: Path) -> None:
    from lorafit.data import LabeledData
    from transformers import AutoTokenizer

    train = LabeledData([("a b", "c"), ("A  b", "C"), ("a b", "d"), ("x", "y")], ["s", "s", "d", "d"], "t")
    test = LabeledData([("a b", "c "), ("a b", "z")], ["s", "d"], "test")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    check = check_data(train, {"test": test}, tokenizer, "auto", 128)
    assert check.duplicates == 1 and check.conflicting == 0  # ("a b", "d") differs in its second text
    assert check.splits[1].overlap_with_train == 1 and check.text_pairs
    assert any("repeat a pair" in w and "('a b', 'c')" in w for w in check.warnings)
    long = LabeledData([("pizza " * 20, "song " * 20)] * 3 + [("a", "b")], ["s", "s", "d", "d"], "t")
    assert check_data(long, {}, tokenizer, "auto", 128).max_length == 48  # 43 tokens: both texts and 3 specials


# ------------------------------------------------------------------------------------ Python API
def test_classifier_fits_and_predicts_pairs(tiny_model: str) -> None:
    pairs, labels = make_pairs(60, seed=3)
    clf = Classifier(model=tiny_model, validation_fraction=0, **{**TINY_TRAIN, "epochs": 1}).fit(pairs, labels)
    assert clf.pairs_ and clf.predict_proba(PAIRS).shape == (4, 2) and len(clf.predict(PAIRS)) == 4
    as_lists = clf.predict_proba(np.array([list(p) for p in PAIRS], dtype=object))
    np.testing.assert_allclose(as_lists, clf.predict_proba(PAIRS))
    swapped = clf.predict_proba([(b, a) for a, b in PAIRS[:2]])
    assert not np.allclose(swapped, clf.predict_proba(PAIRS[:2]))  # the order of the two texts matters
    assert clf.embed(PAIRS).shape[0] == 4 and clf.evaluate(pairs[:10], labels[:10])["accuracy"] >= 0
    with pytest.raises(DataError, match=r"trained on text pairs.*\(text, text_pair\) pairs.*got single texts"):
        clf.predict(["one text"])
    with pytest.raises(TypeError, match="mixes 1 single text"):
        clf.predict([("a", "b"), "c"])
    with pytest.raises(TypeError, match="two strings"):
        clf.predict([("a", "b", "c")])


def test_a_single_text_model_refuses_pairs(trained) -> None:
    with pytest.raises(DataError, match="trained on single texts.*got \\(text, text_pair\\) pairs"):
        trained.predict_proba(PAIRS)


def test_fit_refuses_mismatched_shapes(tiny_model: str) -> None:
    pairs, labels = make_pairs(30, seed=4)
    texts = [a for a, _ in pairs]
    with pytest.raises(DataError, match="validation texts must be \\(text, text_pair\\) pairs"):
        Classifier(model=tiny_model, **TINY_TRAIN).fit(pairs, labels, validation=(texts, labels))
    with pytest.raises(ConfigError, match="text_pair_column is 'hypothesis'.*single strings"):
        Classifier(model=tiny_model, text_pair_column="hypothesis", **TINY_TRAIN).fit(texts, labels)


def test_fingerprint_tells_pairs_apart() -> None:
    from lorafit.checkpoint import fingerprint

    one = fingerprint({}, [("a", "b"), ("c", "d")], ["x", "y"], None, None, "h")["data_hash"]
    assert one != fingerprint({}, [("a", "c"), ("b", "d")], ["x", "y"], None, None, "h")["data_hash"]


# --------------------------------------------------------------------------------- run directory
def test_the_run_records_the_pair_column_and_reloads(pair_run: Path, pair_clf: Classifier) -> None:
    manifest = json.loads((pair_run / "lorafit.json").read_text())
    assert manifest["text_pairs"] is True and manifest["text_pair_column"] == "hypothesis"
    assert manifest["text_column"] == "premise" and pair_clf.pairs_
    card = (pair_run / "README.md").read_text()
    assert "`premise` and `hypothesis`" in card and '["first text"], ["second text"]' in card
    stored = pd.read_csv(pair_run / "report" / "validation_predictions.csv")
    assert list(stored.columns[:2]) == ["text", "text_pair"]
    from lorafit.report import rebuild_run_report

    page = rebuild_run_report(pair_run).read_text()
    assert "premise + hypothesis" in page


def test_plain_transformers_and_peft_reproduce_a_pair_run(pair_run: Path, pair_clf: Classifier) -> None:
    from test_plain_peft import plain_predict_proba

    probs, _ = plain_predict_proba(str(pair_run), [a for a, _ in PAIRS], [b for _, b in PAIRS])
    np.testing.assert_allclose(probs, pair_clf.predict_proba(PAIRS), atol=1e-5)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_evaluate_predict_embed_and_inspect_pairs(pair_run: Path, pair_csv: Path, pair_clf: Classifier,
                                                       tiny_model: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(pair_run), str(pair_csv), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data"]["rows"] == 90
    out = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["predict", str(pair_run), "--input", str(pair_csv), "--output", str(out),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out, keep_default_na=False)
    frame = pd.read_csv(pair_csv, keep_default_na=False)
    assert list(written.columns[:3]) == ["text", "text_pair", "label"]
    assert written["text_pair"].tolist() == frame["hypothesis"].tolist()
    expected = pair_clf.predict_proba(list(zip(frame["premise"], frame["hypothesis"])))
    np.testing.assert_allclose(written[[f"p_{c}" for c in pair_clf.classes_]].to_numpy(), expected, atol=1e-5)
    result = runner.invoke(app, ["predict", str(pair_run), PAIRS[0][0], PAIRS[1][0], "--text-pair", PAIRS[0][1],
                                 "--text-pair", PAIRS[1][1]])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0 and [(r["text"], r["text_pair"]) for r in records] == PAIRS[:2]
    np.testing.assert_allclose([r["score"] for r in records], pair_clf.predict_proba(PAIRS[:2]).max(1), atol=1e-6)
    vectors = tmp_path / "vectors.parquet"
    result = runner.invoke(app, ["embed", str(pair_run), "--input", str(pair_csv), "--output", str(vectors),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(vectors)["text_pair"].tolist() == frame["hypothesis"].tolist()
    result = runner.invoke(app, ["inspect", str(pair_csv), "--model", tiny_model, "--text-column", "premise",
                                 "--text-pair-column", "hypothesis"])
    assert result.exit_code == 0 and "token lengths" in result.output


def test_cli_refuses_bad_pair_options(pair_run: Path, run_dir: Path, pair_csv: Path, tiny_model: str,
                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run_main(capsys, ["predict", str(pair_run), "only one text"])
    assert code == 1 and "trained on text pairs" in err and "--text-pair" in err
    code, err = run_main(capsys, ["predict", str(pair_run), "a", "b", "--text-pair", "c"])
    assert code == 1 and "got 2 text(s) but 1 --text-pair" in err
    code, err = run_main(capsys, ["predict", str(pair_run), "--input", str(pair_csv), "--text-pair", "c"])
    assert code == 1 and "--text-pair goes with TEXT arguments" in err
    code, err = run_main(capsys, ["predict", str(run_dir), "pizza", "--text-pair", "song"])
    assert code == 1 and "trained on single texts" in err
    code, err = run_main(capsys, ["evaluate", str(pair_run), str(pair_csv), "--text-pair-column", " "])
    assert code == 1 and "--text-pair-column must name a column" in err
    code, err = run_main(capsys, ["evaluate", str(pair_run), str(pair_csv), "--text-pair-column", "second"])
    assert code == 1 and "column 'second' not found" in err
    for bad, message in (("", "text_pair_column must not be empty"), ("premise", "also the text_column")):
        code, err = run_main(capsys, _train_args(pair_csv, tmp_path / "never", tiny_model)[:-2]
                          + ["--text-pair-column", bad])
        assert code == 1 and message in err and not (tmp_path / "never").exists()


# -------------------------------------------------------------------------------------------- serve
def test_the_service_classifies_pairs(pair_run: Path, pair_clf: Classifier, run_dir: Path) -> None:
    from lorafit.config import ServeLimits
    from lorafit.registry import load_runs
    from lorafit.serve import create_app

    app_ = create_app(load_runs([("nli", pair_run), ("topics", run_dir)]), ServeLimits(max_chars=2000))
    with TestClient(app_) as client:
        listed = {m["name"]: m["text_pairs"] for m in client.get("/v1/models").json()["models"]}
        assert listed == {"nli": True, "topics": False}
        body = {"texts": [a for a, _ in PAIRS], "text_pairs": [b for _, b in PAIRS], "model": "nli"}
        response = client.post("/v1/classify", json=body)
        assert response.status_code == 200, response.text
        probs = [[r["probabilities"][c] for c in pair_clf.classes_] for r in response.json()["results"]]
        np.testing.assert_allclose(probs, pair_clf.predict_proba(PAIRS), atol=1e-5)
        refusals = [({"texts": ["a"], "model": "nli"}, "send the second texts in text_pairs"),
                    ({"texts": ["a", "b"], "text_pairs": ["c"], "model": "nli"}, "texts has 2 item(s) but text_pairs has 1"),
                    ({"texts": ["a"], "text_pairs": ["c" * 2001], "model": "nli"}, "text_pairs[0] is too long"),
                    ({"texts": ["a"], "text_pairs": ["c"], "model": "topics"}, "leave out text_pairs"),
                    ({"texts": ["a"], "text_pairs": "c", "model": "nli"}, "text_pairs")]
        for request, message in refusals:
            response = client.post("/v1/classify", json=request)
            assert response.status_code == 422 and message in response.json()["detail"], response.text


# ------------------------------------------------------------------------------------------- export
def test_exports_of_a_pair_run_match_the_adapter_model(pair_run: Path, pair_clf: Classifier, tmp_path: Path) -> None:
    from transformers import pipeline

    from lorafit.export import export_merged, export_onnx
    from lorafit.exported import load_predictor

    reference = pair_clf.predict_proba(PAIRS)
    merged, onnx = export_merged(pair_run, tmp_path / "merged"), export_onnx(pair_run, tmp_path / "onnx")
    for path in (merged, onnx):
        predictor = load_predictor(path)
        assert predictor.pairs_ and predictor.text_pair_column == "hypothesis"
        np.testing.assert_allclose(predictor.predict_proba(PAIRS), reference, atol=1e-4)
        with pytest.raises(DataError, match="trained on text pairs"):
            predictor.predict_proba(["one text"])
    # transformers encodes one pair with an empty text_pair as a single text (a batch of pairs keeps the
    # empty second segment, as lorafit and plain code do), so the pipeline is compared on the other pairs
    shown = [i for i, (_, b) in enumerate(PAIRS) if b]
    classify = pipeline("text-classification", model=str(merged), trust_remote_code=True)
    results = classify([{"text": PAIRS[i][0], "text_pair": PAIRS[i][1]} for i in shown], top_k=None, truncation=True)
    probs = [[{r["label"]: r["score"] for r in result}[c] for c in pair_clf.classes_] for result in results]
    np.testing.assert_allclose(probs, reference[shown], atol=1e-4)
    result = runner.invoke(app, ["predict", str(onnx), PAIRS[0][0], "--text-pair", PAIRS[0][1]])
    assert result.exit_code == 0 and json.loads(result.stdout)["text_pair"] == PAIRS[0][1]


def test_the_page_shows_a_second_box_for_a_pair_model(browser_page, pair_run: Path, pair_clf: Classifier,
                                                       run_dir: Path) -> None:
    from lorafit.registry import load_runs
    from lorafit.serve import create_app
    from test_serve_page import bars, start_server

    url, server, thread = start_server(create_app(load_runs([("nli", pair_run), ("topics", run_dir)])))
    try:
        page = browser_page.page
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        assert page.is_visible("#text-pair")  # the first model takes pairs
        page.fill("#text", PAIRS[0][0])
        page.fill("#text-pair", PAIRS[0][1])
        page.click("#classify")
        page.wait_for_selector(".bar-row")
        shown = dict(bars(browser_page))
        expected = pair_clf.predict_proba(PAIRS[:1])[0]
        assert [shown[c] for c in pair_clf.classes_] == pytest.approx(100 * expected, abs=0.06)
        page.select_option("#model", "topics")
        assert not page.is_visible("#text-pair") and browser_page.errors == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)
