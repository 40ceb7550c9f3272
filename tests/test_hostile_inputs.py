"""The readers against hostile files: encodings, BOMs, line endings, NULs, long lines, broken quoting,
duplicate columns, many rows; and property-based tests of the readers and the label mapping.

Every case ends in the right rows or a DataError that names the problem, never another exception.
"""
from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import write_table
from lorafit.data import label_order, read_labeled, read_table
from lorafit.errors import DataError

ROWS = [("café au lait", "food"), ("a “smart” quote", "music")]


def _csv(rows=ROWS, sep: str = ",", newline: str = "\n") -> str:
    return newline.join([f"text{sep}label"] + [f"{t}{sep}{label}" for t, label in rows]) + newline


def _jsonl(rows=ROWS, newline: str = "\n") -> str:
    return newline.join(json.dumps({"text": t, "label": label}, ensure_ascii=False) for t, label in rows) + newline


def _content(suffix: str, newline: str = "\n") -> str:
    return _jsonl(newline=newline) if suffix == ".jsonl" else _csv(sep="\t" if suffix == ".tsv" else ",",
                                                                   newline=newline)


def _read(path: Path, raw: bytes) -> list[tuple[str, str]]:
    path.write_bytes(raw)
    data = read_labeled(path)
    return list(zip(data.texts, data.labels))


# ------------------------------------------------------------------------------------- encodings
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_a_byte_order_mark_announces_the_encoding(tmp_path: Path, suffix: str, encoding: str) -> None:
    text = _content(suffix)
    raw = text.encode(encoding)
    if encoding == "utf-16-be":
        raw = b"\xfe\xff" + raw
    assert _read(tmp_path / f"data{suffix}", raw) == ROWS


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_legacy_encodings_are_refused_with_the_line_and_the_fix(tmp_path: Path, suffix: str, encoding: str) -> None:
    rows = [("plain", "a"), ("café", "b")] if encoding == "latin-1" else [("plain", "a"), ("“quoted”", "b")]
    text = _jsonl(rows) if suffix == ".jsonl" else _csv(rows)
    line = 2 if suffix == ".jsonl" else 3
    with pytest.raises(DataError, match=rf"not valid UTF-8: byte .* on line {line} .*iconv -f cp1252"):
        _read(tmp_path / f"data{suffix}", text.encode(encoding))


def test_utf16_without_a_mark_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="looks like UTF-16 without a byte-order mark"):
        _read(tmp_path / "data.csv", _csv().encode("utf-16-le"))


# ----------------------------------------------------------------------------- lines and characters
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_mixed_line_endings(tmp_path: Path, suffix: str) -> None:
    rows = [(f"row {i}", "a" if i % 2 else "b") for i in range(9)]
    endings = ["\n", "\r\n", "\r"]
    sep = "\t" if suffix == ".tsv" else ","
    lines = [json.dumps({"text": t, "label": label}) for t, label in rows] if suffix == ".jsonl" else \
        [f"text{sep}label"] + [f"{t}{sep}{label}" for t, label in rows]
    text = "".join(line + endings[i % 3] for i, line in enumerate(lines))
    assert _read(tmp_path / f"data{suffix}", text.encode()) == rows


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_nul_characters_are_removed_and_counted(tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture) -> None:
    raw = _content(suffix).encode().replace("café".encode(), "ca\x00f\x00é".encode())
    with caplog.at_level(logging.WARNING, logger="lorafit.data"):
        assert _read(tmp_path / f"data{suffix}", raw) == ROWS
    line = 1 if suffix == ".jsonl" else 2
    assert "removed 2 NUL character(s)" in caplog.text and f"line {line}" in caplog.text


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_a_very_long_line_is_read_whole(tmp_path: Path, suffix: str) -> None:
    long_text = "pizza song goal " * 200_000 + "end"  # a 3.2 MB line
    rows = [(long_text, "a"), ("short", "b")]
    sep = "\t" if suffix == ".tsv" else ","
    text = _jsonl(rows) if suffix == ".jsonl" else _csv(rows, sep=sep)
    assert _read(tmp_path / f"data{suffix}", text.encode()) == rows


def test_an_unterminated_quote_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="EOF inside string"):
        _read(tmp_path / "data.csv", b'text,label\n"never closed,a\nsecond,b\n')


def test_a_stray_quote_inside_a_field_is_kept(tmp_path: Path) -> None:
    assert _read(tmp_path / "data.csv", b'text,label\nsay "hi,a\nsecond,b\n') == [('say "hi', "a"), ("second", "b")]


@pytest.mark.parametrize("raw,record", [(b"text,label\nx,a,extra\ny,b\n", "record 2"),
                                        (b"text,label\nx,a\ny,b,extra\n", "line 3")])
def test_extra_fields_are_a_data_error(tmp_path: Path, raw: bytes, record: str) -> None:
    with pytest.raises(DataError, match=record):
        _read(tmp_path / "data.csv", raw)


def test_jsonl_blank_lines_are_skipped_and_bad_lines_named(tmp_path: Path) -> None:
    assert _read(tmp_path / "data.jsonl", ("\n" + _jsonl() + "\n  \n").encode()) == ROWS
    with pytest.raises(DataError, match="line 2 holds a JSON list, not an object"):
        _read(tmp_path / "data.jsonl", b'{"text": "x", "label": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match="has no data rows"):
        _read(tmp_path / "data.jsonl", b"\n\n  \n")


# ------------------------------------------------------------------------------------ columns
@pytest.mark.parametrize("suffix,raw", [(".csv", b"text,label,text\nx,a,y\n"), (".tsv", b"text\tlabel\ttext\nx\ta\ty\n"),
                                        (".jsonl", b'{"text": "x", "label": "a", "text": "y"}\n')])
def test_duplicate_column_names_are_refused(tmp_path: Path, suffix: str, raw: bytes) -> None:
    with pytest.raises(DataError, match="duplicate (column name|key).*'text'"):
        _read(tmp_path / f"data{suffix}", raw)


def test_duplicate_parquet_columns_are_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["x"]), pa.array(["a"]), pa.array(["y"])],
                                        names=["text", "label", "text"]), path)
    with pytest.raises(DataError, match="duplicate column name"):
        read_labeled(path)


def test_many_rows(tmp_path: Path) -> None:
    """300k rows read in about a second (bench/read_scaling.py measures growth up to millions)."""
    n = 300_000
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "".join(f"text number {i},{i % 7}\n" for i in range(n)))
    data = read_labeled(path)
    assert len(data) == n and data.texts[-1] == f"text number {n - 1}" and label_order(data.labels)[-1] == "6"


# --------------------------------------------------------------------------------- properties
_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1,
                max_size=40).filter(lambda t: t.strip())
_LABEL = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters="\x00"), min_size=1,
                 max_size=12).filter(lambda t: t.strip())
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(rows=st.lists(st.tuples(_TEXT, _LABEL), min_size=1, max_size=12),
       suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]))
def test_any_texts_and_labels_round_trip(tmp_path: Path, rows: list[tuple[str, str]], suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    if suffix in (".csv", ".tsv"):  # the csv module's "\r\n" records quote a lone "\r" (pandas' "\n" do not)
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, delimiter="\t" if suffix == ".tsv" else ",").writerows([("text", "label"), *rows])
    else:
        write_table(path, {"text": [t for t, _ in rows], "label": [label for _, label in rows]})
    data = read_labeled(path)
    assert data.texts == [t for t, _ in rows]
    assert data.labels == [label.strip() for _, label in rows]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300) | st.text(max_size=200).map(str.encode),
       suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]))
def test_any_bytes_give_a_table_or_a_data_error(tmp_path: Path, raw: bytes, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    path.write_bytes(raw)
    try:
        frame = read_table(path)
    except DataError as exc:
        assert str(exc)
    else:
        assert isinstance(frame, pd.DataFrame) and not frame.empty


@FAST
@given(labels=st.lists(_LABEL, min_size=1, max_size=30), seed=st.integers(0, 1000))
def test_label_order_is_a_sorted_set_independent_of_input_order(labels: list[str], seed: int) -> None:
    order = label_order(labels)
    shuffled = labels[:]
    random.Random(seed).shuffle(shuffled)
    assert order == label_order(shuffled)
    assert sorted(order) == sorted(set(labels)) and len(order) == len(set(order))


@FAST
@given(numbers=st.lists(st.integers(-10**6, 10**6), min_size=1, max_size=30))
def test_integer_labels_map_in_numeric_order(numbers: list[int]) -> None:
    order = label_order([str(n) for n in numbers])
    assert [int(x) for x in order] == sorted(set(numbers))
