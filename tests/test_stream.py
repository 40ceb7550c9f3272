"""Streaming: files read in chunks (every format), predictions and embeddings written as they come, in order."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from helpers import make_texts, write_table
from lorafit import Classifier
from lorafit.cli import app
from lorafit.data import read_text_chunks
from lorafit.errors import DataError
from lorafit.predict_io import iter_predictions

runner = CliRunner()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    found, _ = make_texts(9, seed=21)
    return found[:12] + ["", 'she said, "pizza"', "NA", "line one\nline two", "pizza " * 300] + found[12:]


@pytest.fixture(scope="module")
def loaded(run_dir: Path) -> Classifier:
    return Classifier.load(run_dir)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_chunks_cover_the_file_in_order(texts: list[str], tmp_path: Path, suffix: str) -> None:
    path = write_table(tmp_path / f"in{suffix}", {"id": list(range(len(texts))), "text": texts})
    chunks = list(read_text_chunks(path, "text", rows=4))
    assert [t for chunk, _ in chunks for t in chunk] == texts
    assert all(len(chunk) <= 4 for chunk, _ in chunks) and len(chunks) == -(-len(texts) // 4)
    shares = [done for _, done in chunks]
    assert shares == sorted(shares) and shares[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_chunked_reading_names_a_missing_column(tmp_path: Path, suffix: str) -> None:
    path = write_table(tmp_path / f"in{suffix}", {"sentence": ["a", "b"]})
    with pytest.raises(DataError, match="column 'text' not found.*sentence.*--text-column"):
        list(read_text_chunks(path, "text"))


def test_chunked_reading_refuses_empty_and_undecodable_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        list(read_text_chunks(tmp_path / "empty.csv"))
    (tmp_path / "header.csv").write_text("text\n")
    with pytest.raises(DataError, match="no data rows"):
        list(read_text_chunks(tmp_path / "header.csv"))
    (tmp_path / "latin.csv").write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        list(read_text_chunks(tmp_path / "latin.csv"))


def test_streamed_predictions_equal_whole_file_predictions(loaded: Classifier, texts: list[str]) -> None:
    chunks = [texts[i:i + 5] for i in range(0, len(texts), 5)]
    records = list(iter_predictions(loaded, chunks))
    assert [r["text"] for r in records] == texts
    assert [r["label"] for r in records] == loaded.predict(texts)
    scores = loaded.predict_proba(texts).max(1)
    np.testing.assert_allclose([r["score"] for r in records], scores, atol=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_streams_a_file_in_chunks_to_jsonl(run_dir: Path, loaded: Classifier, texts: list[str], tmp_path: Path,
                                               suffix: str) -> None:
    source = write_table(tmp_path / f"in{suffix}", {"text": texts})
    target = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", str(run_dir), "--input", str(source), "--output", str(target),
                                 "--chunk-rows", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == texts and [r["label"] for r in records] == loaded.predict(texts)
    assert f"wrote {len(texts)} predictions" in result.stderr and "rows/s" in result.stderr


def test_cli_streams_to_stdout_with_progress_on(run_dir: Path, texts: list[str], tmp_path: Path) -> None:
    source = write_table(tmp_path / "in.jsonl", {"text": texts})
    result = runner.invoke(app, ["predict", str(run_dir), "--input", str(source), "--chunk-rows", "4"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == texts
    assert f"classified {len(texts)} texts" in result.stderr


def test_cli_progress_bar_reports_rows(run_dir: Path, texts: list[str], tmp_path: Path) -> None:
    source = write_table(tmp_path / "in.csv", {"text": texts})
    result = runner.invoke(app, ["predict", str(run_dir), "--input", str(source), "--output",
                                 str(tmp_path / "o.csv"), "--chunk-rows", "4"])
    assert result.exit_code == 0, result.output
    assert "predicting" in result.stderr and f"{len(texts)} rows" in result.stderr


def test_a_bad_row_midway_leaves_no_output(run_dir: Path, tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"pizza {i}"}) for i in range(40)] + ["{not json"]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", str(run_dir), "--input", str(tmp_path / "in.jsonl"), "--output",
                                 str(target), "--chunk-rows", "8", "--no-progress"])
    assert result.exit_code != 0 and isinstance(result.exception, DataError)
    assert not target.exists() and list(tmp_path.iterdir()) == [tmp_path / "in.jsonl"]


# -------------------------------------------------------------------------------------------- embed
def test_embed_normalizes_by_default(loaded: Classifier, texts: list[str]) -> None:
    vectors, raw = loaded.embed(texts), loaded.embed(texts, normalize=False)
    assert vectors.shape == (len(texts), 32) and raw.shape == vectors.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), vectors, atol=1e-5)


def test_cli_embed_to_npy(run_dir: Path, loaded: Classifier, texts: list[str], tmp_path: Path) -> None:
    source = write_table(tmp_path / "in.csv", {"text": texts})
    target = tmp_path / "vectors.npy"
    result = runner.invoke(app, ["embed", str(run_dir), "--input", str(source), "--output", str(target),
                                 "--chunk-rows", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(target), loaded.embed(texts), atol=1e-5)
    assert f"wrote {len(texts)} vectors of dimension 32" in result.stderr


def test_cli_embed_to_parquet_without_normalizing(run_dir: Path, loaded: Classifier, texts: list[str],
                                                  tmp_path: Path) -> None:
    source = write_table(tmp_path / "in.parquet", {"text": texts})
    target = tmp_path / "vectors.parquet"
    result = runner.invoke(app, ["embed", str(run_dir), "--input", str(source), "--output", str(target),
                                 "--chunk-rows", "5", "--no-normalize", "--no-progress"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(target)
    assert frame["text"].tolist() == texts
    np.testing.assert_allclose(np.stack(frame["embedding"].to_numpy()), loaded.embed(texts, normalize=False),
                               atol=1e-5)


def test_cli_embed_refuses_an_unknown_output_suffix(run_dir: Path, tmp_path: Path) -> None:
    source = write_table(tmp_path / "in.csv", {"text": ["pizza"]})
    result = runner.invoke(app, ["embed", str(run_dir), "--input", str(source), "--output", str(tmp_path / "v.txt")])
    assert result.exit_code != 0 and ".npy or .parquet" in str(result.exception)
    assert not (tmp_path / "v.txt").exists()
