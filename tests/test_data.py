"""lorafit.data: reading files, validating columns and texts, label order, the stratified split, tokenising."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_texts, write_table
from lorafit.data import (check_trainable, file_format, label_order, read_labeled, read_table, read_texts,
                          stratified_split, tokenize)
from lorafit.errors import DataError

ROWS = {"text": ["pizza and bread", "a song on the piano", "the team scored a goal", "cheese soup"],
        "label": ["food", "music", "sports", "food"]}


# ------------------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_read_labeled_every_format(tmp_path: Path, suffix: str) -> None:
    path = write_table(tmp_path / f"data{suffix}", ROWS)
    data = read_labeled(path)
    assert data.texts == ROWS["text"]
    assert data.labels == ROWS["label"]
    assert data.dropped_empty == 0
    assert len(data) == 4


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_integer_labels_become_strings_in_every_format(tmp_path: Path, suffix: str) -> None:
    path = write_table(tmp_path / f"data{suffix}", {"text": ["a", "b", "c"], "label": [10, 2, 1]})
    assert read_labeled(path).labels == ["10", "2", "1"]


def test_file_format_by_extension() -> None:
    assert file_format("x.CSV") == "csv"
    assert file_format("x.tab") == "tsv"
    assert file_format("dir/x.ndjson") == "jsonl"
    assert file_format("x.pq") == "parquet"


@pytest.mark.parametrize("name", ["data.xlsx", "data.txt", "data"])
def test_unknown_extension_is_refused_with_the_known_ones(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("text,label\nhello,a\n")
    with pytest.raises(DataError) as info:
        read_table(path)
    message = str(info.value)
    assert "unknown file format" in message
    assert ".csv" in message and ".jsonl" in message and ".parquet" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_labeled(tmp_path / "nope.csv")


def test_directory_with_a_data_extension(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match="directory"):
        read_labeled(tmp_path / "folder.csv")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_zero_byte_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        read_labeled(path)


@pytest.mark.parametrize("suffix,header", [(".csv", "text,label\n"), (".tsv", "text\tlabel\n")])
def test_header_only_file(tmp_path: Path, suffix: str, header: str) -> None:
    path = tmp_path / f"header{suffix}"
    path.write_text(header)
    with pytest.raises(DataError, match="no data rows") as info:
        read_labeled(path)
    assert "text" in str(info.value) and "label" in str(info.value)


def test_header_only_parquet(tmp_path: Path) -> None:
    import pandas as pd

    path = write_table(tmp_path / "header.parquet", pd.DataFrame({"text": pd.Series([], dtype=str),
                                                                   "label": pd.Series([], dtype=str)}))
    with pytest.raises(DataError, match="no data rows"):
        read_labeled(path)


def test_missing_text_column_names_columns_and_flag(tmp_path: Path) -> None:
    path = write_table(tmp_path / "train.csv", {"sentence": ["a", "b"], "label": ["x", "y"]})
    with pytest.raises(DataError) as info:
        read_labeled(path)
    message = str(info.value)
    assert "'text'" in message and "train.csv" in message
    assert "sentence, label" in message
    assert "--text-column" in message


def test_missing_label_column_names_columns_and_flag(tmp_path: Path) -> None:
    path = write_table(tmp_path / "train.jsonl", {"text": ["a", "b"], "intent": ["x", "y"]})
    with pytest.raises(DataError) as info:
        read_labeled(path)
    message = str(info.value)
    assert "'label'" in message and "text, intent" in message and "--label-column" in message


def test_custom_columns(tmp_path: Path) -> None:
    path = write_table(tmp_path / "d.tsv", {"utterance": ["pizza", "song"], "intent": ["food", "music"]})
    data = read_labeled(path, text_column="utterance", label_column="intent")
    assert data.texts == ["pizza", "song"] and data.labels == ["food", "music"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_na_like_texts_are_kept_as_text(tmp_path: Path, suffix: str) -> None:
    texts = ["NA", "null", "None", "NaN", "n/a"]
    path = write_table(tmp_path / f"d{suffix}", {"text": texts, "label": ["a", "b", "a", "b", "a"]})
    data = read_labeled(path)
    assert data.texts == texts
    assert data.dropped_empty == 0


def test_na_like_labels_are_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\npizza,NA\nsong,None\n")
    assert read_labeled(path).labels == ["NA", "None"]


def test_utf8_bom_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\ncafé,a\n".encode("utf-8-sig"))
    assert read_labeled(path).texts == ["café"]


def test_csv_quoting_keeps_commas_quotes_and_newlines(tmp_path: Path) -> None:
    texts = ['pizza, bread', 'she said "hi"', "line one\nline two", "  spaces kept  "]
    path = write_table(tmp_path / "q.csv", {"text": texts, "label": ["a", "b", "a", "b"]})
    assert read_labeled(path).texts == texts


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_empty_and_whitespace_texts_are_dropped_and_counted(tmp_path: Path, suffix: str) -> None:
    texts = ["pizza", "", "   ", "song", "\t", "goal"]
    labels = ["food", "food", "music", "music", "sports", "sports"]
    path = write_table(tmp_path / f"d{suffix}", {"text": texts, "label": labels})
    data = read_labeled(path)
    assert data.texts == ["pizza", "song", "goal"]
    assert data.labels == ["food", "music", "sports"]
    assert data.dropped_empty == 3


def test_empty_texts_refused_with_error_mode(tmp_path: Path) -> None:
    path = write_table(tmp_path / "d.csv", {"text": ["pizza", " ", "song"], "label": ["a", "a", "b"]})
    with pytest.raises(DataError) as info:
        read_labeled(path, empty_texts="error")
    assert "1 row(s)" in str(info.value) and "line 3" in str(info.value)


def test_every_text_empty_is_refused(tmp_path: Path) -> None:
    path = write_table(tmp_path / "d.csv", {"text": ["", " "], "label": ["a", "b"]})
    with pytest.raises(DataError, match="every text"):
        read_labeled(path)


def test_null_text_in_jsonl_is_an_empty_text(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": null, "label": "a"}\n{"text": "pizza", "label": "a"}\n'
                    '{"text": "song", "label": "b"}\n')
    data = read_labeled(path)
    assert data.texts == ["pizza", "song"] and data.dropped_empty == 1


def test_empty_label_is_refused_with_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\npizza,food\nsong,\ngoal,sports\n")
    with pytest.raises(DataError) as info:
        read_labeled(path)
    assert "empty 'label'" in str(info.value) and "lines 3" in str(info.value)


def test_labels_are_stripped(tmp_path: Path) -> None:
    path = write_table(tmp_path / "d.csv", {"text": ["pizza", "song"], "label": [" food ", "music "]})
    assert read_labeled(path).labels == ["food", "music"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_non_utf8_bytes_are_a_data_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin1{suffix}"
    if suffix == ".csv":
        path.write_bytes("text,label\ncaf\xe9 au lait,food\n".encode("latin-1"))
    else:
        path.write_bytes(json.dumps({"text": "x", "label": "y"}).encode() + b"\n"
                         + b'{"text": "caf\xe9", "label": "food"}\n')
    with pytest.raises(DataError) as info:
        read_labeled(path)
    assert "UTF-8" in str(info.value) or "could not read" in str(info.value)


def test_non_utf8_csv_message_tells_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncaf\xe9,food\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8.*line 2 .*offset 14.*iconv"):
        read_labeled(path)


def test_malformed_jsonl_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "pizza", "label": "a"}\n{"text": oops\n')
    with pytest.raises(DataError, match="bad.jsonl line 2 is not valid JSON .*column 10"):
        read_labeled(path)


def test_read_texts_keeps_empty_texts_and_order(tmp_path: Path) -> None:
    path = write_table(tmp_path / "u.csv", {"text": ["b", "", "a", "NA"]})
    assert read_texts(path) == ["b", "", "a", "NA"]


# -------------------------------------------------------------------------------------- label order
def test_integer_labels_in_numeric_order() -> None:
    assert label_order(["10", "2", "1"]) == ["1", "2", "10"]
    assert label_order(["-1", "3", "0", "3"]) == ["-1", "0", "3"]


def test_string_labels_sorted() -> None:
    assert label_order(["music", "food", "sports", "food"]) == ["food", "music", "sports"]


def test_mixed_labels_sorted_as_strings() -> None:
    assert label_order(["10", "2", "x"]) == ["10", "2", "x"]


def test_label_order_does_not_depend_on_set_iteration_order(monkeypatch: pytest.MonkeyPatch) -> None:
    import lorafit.data

    # Stand-in for `set` with a chosen iteration order (real sets order by string hash, which varies per
    # process); a stable label order must not depend on it.
    monkeypatch.setattr(lorafit.data, "set", lambda xs: dict.fromkeys(xs), raising=False)
    assert label_order(["1", "01", "2"]) == label_order(["01", "1", "2"])


# ---------------------------------------------------------------------------------------- trainable
def test_single_class_is_refused(tmp_path: Path) -> None:
    path = write_table(tmp_path / "one.csv", {"text": ["pizza", "bread"], "label": ["food", "food"]})
    with pytest.raises(DataError) as info:
        check_trainable(read_labeled(path))
    assert "single class" in str(info.value) and "'food'" in str(info.value) and "one.csv" in str(info.value)


def test_two_classes_are_trainable(tmp_path: Path) -> None:
    path = write_table(tmp_path / "two.csv", {"text": ["pizza", "song"], "label": ["food", "music"]})
    check_trainable(read_labeled(path))  # no exception


# ------------------------------------------------------------------------------------ stratified split
def test_split_puts_every_class_in_validation_and_respects_fraction() -> None:
    _, labels = make_texts(30, seed=0)
    labels = labels + ["rare"] * 3
    train, val = stratified_split(labels, 0.2, seed=0)
    val_counts = Counter(labels[i] for i in val)
    assert set(val_counts) == set(labels)
    assert {c: val_counts[c] for c in ("food", "music", "sports")} == {"food": 6, "music": 6, "sports": 6}
    assert val_counts["rare"] == 1
    assert set(labels[i] for i in train) == set(labels)
    assert abs(len(val) / len(labels) - 0.2) < 0.05


def test_split_is_seeded() -> None:
    _, labels = make_texts(20, seed=3)
    a = stratified_split(labels, 0.25, seed=7)
    b = stratified_split(labels, 0.25, seed=7)
    c = stratified_split(labels, 0.25, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_split_keeps_one_training_row_per_class() -> None:
    train, val = stratified_split(["a", "a", "b", "b"], 0.9, seed=0)
    assert sorted(train.tolist() + val.tolist()) == [0, 1, 2, 3]
    assert len(train) == 2 and len(val) == 2


def test_split_refuses_a_class_with_one_example() -> None:
    with pytest.raises(DataError) as info:
        stratified_split(["a", "a", "b", "lonely", "b"], 0.2, seed=0)
    assert "'lonely'" in str(info.value) and "'a'" not in str(info.value)
    assert "--validation" in str(info.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=st.lists(st.integers(min_value=2, max_value=30), min_size=2, max_size=8),
       fraction=st.floats(min_value=0.01, max_value=0.99), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_split_partitions_and_keeps_every_class_on_both_sides(counts: list[int], fraction: float, seed: int,
                                                               data: st.DataObject) -> None:
    labels = [f"class{c}" for c, n in enumerate(counts) for _ in range(n)]
    labels = data.draw(st.permutations(labels))
    train, val = stratified_split(labels, fraction, seed)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert {labels[i] for i in train} == set(labels) == {labels[i] for i in val}
    for c, n in enumerate(counts):  # per class: round(fraction * n), clipped to [1, n - 1]
        taken = sum(labels[i] == f"class{c}" for i in val)
        assert taken == min(n - 1, max(1, int(round(fraction * n))))


# ----------------------------------------------------------------------------------------- tokenize
@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_tokenize_counts_and_cuts_long_texts(tokenizer) -> None:
    long_text = " ".join(["pizza"] * 40)
    encoded = tokenize(tokenizer, ["pizza song", long_text, "goal"], max_length=8)
    assert encoded.truncated == 1
    assert encoded.lengths.tolist() == [4, 8, 3]
    assert encoded.input_ids[1][0] == tokenizer.cls_token_id and encoded.input_ids[1][-1] == tokenizer.sep_token_id
    assert encoded.token_type_ids is not None and len(encoded.token_type_ids[1]) == 8


def test_tokenize_text_of_exactly_max_length_is_not_truncated(tokenizer) -> None:
    encoded = tokenize(tokenizer, ["pizza pizza pizza pizza pizza pizza"], max_length=8)
    assert encoded.truncated == 0 and encoded.lengths.tolist() == [8]


def test_tokenize_bare_string_is_a_type_error(tokenizer) -> None:
    with pytest.raises(TypeError, match="single string"):
        tokenize(tokenizer, "pizza song", max_length=8)
