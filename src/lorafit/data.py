"""Reading labeled files, mapping labels to ids, and the stratified validation split.

Files are read by extension (CSV, TSV, JSONL, Parquet). Texts are kept exactly as written: the
strings ``NA`` or ``null`` are texts, not missing values.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lorafit.errors import DataError

if TYPE_CHECKING:
    from lorafit.tasks import SingleLabel

logger = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}
CHUNK_ROWS = 8192
"""Rows read at a time when a file is streamed (``lorafit predict --input``, ``lorafit embed``)."""
_INTEGER = re.compile(r"^-?\d+$")

Text = str | tuple[str, str]
"""One input: a text, or a ``(text, text_pair)`` pair for tasks over two texts (NLI, paraphrase, relevance)."""


def file_format(path: str | Path) -> str:
    """The format of ``path`` from its extension, or a DataError naming the ones lorafit reads."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"unknown file format '{suffix or '(no extension)'}' for {path}; "
                        f"lorafit reads {', '.join(sorted(FORMATS))} files: rename or convert the file")
    return FORMATS[suffix]


_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xef\xbb\xbf", "utf-8"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
"""Byte-order marks and the encodings they announce (UTF-32 first: its LE mark starts like UTF-16's)."""
_LINE_BREAK = re.compile("\r\n?|\n")


def decode(path: Path, raw: bytes) -> str:
    """The text of a CSV/TSV/JSONL file: UTF-8, or UTF-8/16/32 announced by a byte-order mark (which is dropped).

    Anything else (latin-1, cp1252, UTF-16 without a mark) is a DataError naming the line and the fix.
    NUL characters are removed, counted and reported in a warning.
    """
    encoding, start = "utf-8", 0
    for bom, name in _BOMS:
        if raw.startswith(bom):
            encoding, start = name, len(bom)
            break
    try:
        text = raw[start:].decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, start + exc.start) + 1
        if start == 0 and raw[:4000].count(b"\x00") > len(raw[:4000]) // 4:
            hint = "it looks like UTF-16 without a byte-order mark; re-save it as UTF-8"
        else:
            hint = "re-save it as UTF-8, e.g. iconv -f cp1252 -t utf-8 (or -f latin1)"
        raise DataError(f"{path} is not valid {encoding.upper()}: byte {exc.object[exc.start:exc.start + 1]!r} on "
                        f"line {line} (offset {start + exc.start}); {hint}") from None
    nuls = text.count("\x00")
    if nuls:
        lines = text.count("\n", 0, text.index("\x00")) + 1
        logger.warning("removed %d NUL character(s) from %s (the first on line %d)", nuls, path.name, lines)
        text = text.replace("\x00", "")
    return text


def _check_header(path: Path, text: str, sep: str) -> None:
    """Refuse an empty or duplicated column name in a CSV/TSV header (pandas would rename it silently)."""
    try:
        header = next(csv.reader(io.StringIO(text[:1 << 20]), delimiter=sep), [])
    except csv.Error:
        return  # pandas reports malformed input itself
    _refuse_duplicates(path, header)


def _refuse_duplicates(path: Path, names: list[str]) -> None:
    seen: set[str] = set()
    duplicates = [name for name in names if name in seen or seen.add(name)]
    if duplicates:
        raise DataError(f"{path} has duplicate column name(s) {', '.join(map(repr, sorted(set(duplicates))))}; "
                        "rename them so each column has its own name")


def _read_delimited(path: Path, text: str, sep: str) -> pd.DataFrame:
    """CSV/TSV text as strings; a row with more fields than the header is a DataError naming its record."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)  # pandas would drop the extra fields
        try:
            return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, engine="c",
                               index_col=False)
        except pd.errors.ParserWarning:
            raise DataError(f"{path}: {_first_long_record(text, sep)} has more fields than the header; quote "
                            "texts that contain the separator") from None


def _first_long_record(text: str, sep: str) -> str:
    """"record N" for the first CSV record wider than the header (for the error message)."""
    try:
        rows = csv.reader(io.StringIO(text), delimiter=sep)
        width = len(next(rows))
        return f"record {next(i for i, row in enumerate(rows, 2) if len(row) > width)}"
    except (csv.Error, StopIteration):
        return "a record"


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    """One JSON object per line; blank lines are skipped; a bad line is a DataError with its number."""
    records = []
    for number, line in enumerate(_LINE_BREAK.split(text), 1):
        if not line.strip():
            continue
        try:
            value = _DECODER.decode(line)
        except ValueError as exc:
            message = getattr(exc, "msg", str(exc))
            where = f" at column {exc.colno}" if hasattr(exc, "colno") else ""
            raise DataError(f"{path} line {number} is not valid JSON ({message}{where}); each line must hold "
                            "one JSON object") from None
        if not isinstance(value, dict):
            raise DataError(f"{path} line {number} holds a JSON {type(value).__name__}, not an object; each line "
                            'must be an object such as {"text": "...", "label": "..."}')
        records.append(value)
    return pd.DataFrame.from_records(records)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        keys = [k for k, _ in pairs]
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return value


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file; a damaged one is a DataError whatever pyarrow or pandas raise about it (the fuzz run
    in bench/fuzz_readers.py met ArrowException, invalid UTF-8 in string columns and KeyError from corrupted
    pandas metadata)."""
    import pyarrow.parquet as pq

    try:
        _refuse_duplicates(path, pq.read_schema(path).names)
        table = pq.read_table(path)
        table.validate(full=True)  # invalid UTF-8 in a string column would otherwise surface later
        return table.to_pandas()
    except DataError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not read {path} as PARQUET ({type(exc).__name__}: {first}); the file is damaged "
                        "or not Parquet") from None


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)
"""One decoder for every line (``json.loads`` with a hook builds a new one per call)."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV/JSONL/Parquet file into a DataFrame of strings (missing cells become '').

    CSV/TSV/JSONL text is decoded by :func:`decode`; line endings may be ``\\n``, ``\\r\\n`` or ``\\r``,
    mixed. Duplicate column names, unterminated quotes and ragged rows are DataErrors.
    """
    path = Path(path)
    fmt = _check_file(path)
    with _reading(path, fmt):
        if fmt in ("csv", "tsv"):
            sep = "," if fmt == "csv" else "\t"
            text = decode(path, path.read_bytes())
            _check_header(path, text, sep)
            frame = _read_delimited(path, text, sep)
        elif fmt == "jsonl":
            frame = _read_jsonl(path, decode(path, path.read_bytes()))
        else:
            frame = _read_parquet(path)
    if frame.empty:
        raise _no_rows(path, list(frame.columns))
    return frame


def _check_file(path: Path) -> str:
    """The format of ``path``, after refusing a missing, foreign or empty file."""
    fmt = file_format(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}" + ("; it is a directory" if path.is_dir() else ""))
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; it needs a header and at least one row")
    return fmt


def _no_rows(path: Path, columns: list) -> DataError:
    return DataError(f"{path} has no data rows (columns: {', '.join(map(str, columns)) or 'none'})")


@contextlib.contextmanager
def _reading(path: Path, fmt: str) -> Iterator[None]:
    """Turn the readers' decoding and parsing errors into DataErrors that name the file and the fix."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                        f"{exc.start}); re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        if isinstance(exc, DataError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not read {path} as {fmt.upper()}: {first}") from None


def read_text_chunks(path: str | Path, text_column: str = "text", rows: int = CHUNK_ROWS,
                     text_pair_column: str | None = None) -> Iterator[tuple[list[Text], float]]:
    """The texts of a file, ``rows`` at a time in file order, each chunk with the share of the file read.

    With ``text_pair_column``, each item is a ``(text, text_pair)`` pair read from the two columns.

    Only one chunk is in memory at a time, so files larger than memory stream through (as UTF-8, a UTF-8
    byte-order mark allowed; :func:`read_table` also takes UTF-16/32 with a mark). Errors (missing column,
    bad UTF-8, a malformed line) are DataErrors, raised when the reader reaches them.

    Example:
        >>> for texts, done in read_text_chunks("big.csv"): ...  # doctest: +SKIP
    """
    path = Path(path)
    fmt = _check_file(path)
    if fmt == "parquet":
        yield from _parquet_chunks(path, text_column, rows, text_pair_column)
        return
    size, seen = path.stat().st_size, 0
    with path.open("rb") as handle, _reading(path, fmt):
        if fmt in ("csv", "tsv"):
            reader = pd.read_csv(handle, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False,
                                 encoding="utf-8-sig", chunksize=rows)
        else:
            reader = pd.read_json(handle, lines=True, dtype=False, encoding="utf-8", chunksize=rows)
        columns: list = []
        for frame in reader:
            columns = list(frame.columns)
            if frame.empty:
                continue
            seen += len(frame)
            yield _texts(frame, path, text_column, text_pair_column), min(1.0, handle.tell() / size)
    if not seen:
        raise _no_rows(path, columns)


def _parquet_chunks(path: Path, text_column: str, rows: int,
                    text_pair_column: str | None) -> Iterator[tuple[list[Text], float]]:
    import pyarrow.parquet as pq

    with _reading(path, "parquet"):
        parquet = pq.ParquetFile(path)
        columns, total = parquet.schema_arrow.names, parquet.metadata.num_rows
        wanted = [(text_column, "--text-column")] + ([(text_pair_column, "--text-pair-column")]
                                                      if text_pair_column else [])
        for name, flag in wanted:
            if name not in columns:
                raise DataError(f"column '{name}' not found in {path.name}; columns are: {', '.join(columns)}; "
                                f"pass {flag}")
        if not total:
            raise _no_rows(path, columns)
        done = 0
        for batch in parquet.iter_batches(batch_size=rows, columns=[name for name, _ in wanted]):
            texts = [_as_text(v) for v in batch.column(0).to_pylist()]
            if text_pair_column:
                texts = pair_up(texts, [_as_text(v) for v in batch.column(1).to_pylist()])
            done += len(texts)
            yield texts, done / total


def _column(frame: pd.DataFrame, name: str, path: Path, flag: str) -> list[str]:
    if name not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise DataError(f"column '{name}' not found in {path.name}; columns are: {columns}; pass {flag}")
    return [_as_text(v) for v in frame[name].tolist()]


def _texts(frame: pd.DataFrame, path: Path, text_column: str, text_pair_column: str | None) -> list[Text]:
    """The texts of ``frame``, or ``(text, text_pair)`` pairs with ``text_pair_column``."""
    texts = _column(frame, text_column, path, "--text-column")
    if text_pair_column is None:
        return texts
    return pair_up(texts, _column(frame, text_pair_column, path, "--text-pair-column"))


def pair_up(texts: list[str], text_pairs: list[str]) -> list[tuple[str, str]]:
    """``[(text, text_pair), ...]`` from two lists of the same length."""
    return list(zip(texts, text_pairs, strict=True))


def check_texts(texts: object, name: str = "texts") -> list[Text]:
    """``texts`` as a list of strings, or of ``(text, text_pair)`` tuples (from tuples, lists or array rows of
    two strings); a single string, a mix of both kinds, or anything else is a TypeError that says so.

    Example:
        >>> check_texts([("a premise", "a hypothesis")])
        [('a premise', 'a hypothesis')]
    """
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, got a single string; wrap it in a list: [text]")
    texts = [tuple(t) if isinstance(t, (tuple, list, np.ndarray)) else t for t in texts]  # type: ignore[union-attr]
    pairs = sum(isinstance(t, tuple) for t in texts)
    if pairs:
        return _pair_items(texts, pairs, name)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must all be strings; got {len(bad)} of type {', '.join(sorted(set(bad)))}")
    return texts


def _pair_items(texts: list, pairs: int, name: str) -> list[tuple[str, str]]:
    if pairs != len(texts):
        raise TypeError(f"{name} mixes {len(texts) - pairs} single text(s) with {pairs} (text, text_pair) pair(s); "
                        "give all single strings or all pairs")
    bad = [t for t in texts if len(t) != 2 or not all(isinstance(x, str) for x in t)]
    if bad:
        raise TypeError(f"{name} as pairs must each be two strings (text, text_pair); got {len(bad)} other "
                        f"item(s), e.g. {bad[0]!r:.80}")
    return [(str(a), str(b)) for a, b in texts]


def is_pairs(texts: list[Text]) -> bool:
    """Whether ``texts`` holds ``(text, text_pair)`` pairs (checked on the first item; see :func:`check_texts`)."""
    return bool(texts) and isinstance(texts[0], tuple)


def check_pairs(texts: list[Text], pairs: bool, name: str = "texts") -> None:
    """Refuse single texts for a model trained on pairs, and pairs for one trained on single texts."""
    if not texts or is_pairs(texts) == pairs:
        return
    if pairs:
        raise DataError(f"this model was trained on text pairs, so {name} must be (text, text_pair) pairs, e.g. "
                        '[("a premise", "a hypothesis")]; got single texts (on the command line: --text-pair or '
                        "--text-pair-column; in a request: text_pairs)")
    raise DataError(f"this model was trained on single texts, so {name} must be a list of strings; got "
                    "(text, text_pair) pairs: train on pairs (text_pair_column / --text-pair-column) to classify them")


def _as_text(value: object) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):  # a JSONL or Parquet list (multi-label cells)
        return json.dumps([_as_text(v) for v in value], ensure_ascii=False)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class LabeledData:
    """Texts (or ``(text, text_pair)`` pairs) and their labels as read from one file, with what was dropped."""

    texts: list[Text]
    labels: list[str]
    source: str
    dropped_empty: int = 0
    """Rows dropped because the text (or, for pairs, either text) was empty or whitespace only."""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray | list[int]) -> "LabeledData":
        return LabeledData([self.texts[i] for i in index], [self.labels[i] for i in index], self.source)


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """The texts of an (unlabeled) file, in file order. Empty texts are kept (they get a prediction)."""
    path = Path(path)
    return _column(read_table(path), text_column, path, "--text-column")


def read_labeled(path: str | Path, text_column: str = "text", label_column: str = "label",
                 empty_texts: str = "drop", text_pair_column: str | None = None,
                 task: "SingleLabel | None" = None) -> LabeledData:
    """Read a labeled file. Rows with empty texts are dropped with a warning (or refused), never silently.

    With ``text_pair_column`` the texts are ``(text, text_pair)`` pairs, and a row is empty when either is.
    ``task`` (a :mod:`lorafit.tasks` task; default single-label) checks the label cells and says whether an
    empty one is a row without labels (multi-label) or an error.

    Example:
        >>> data = read_labeled("examples/banking77/train.csv")  # doctest: +SKIP
        >>> data.texts[0], data.labels[0]  # doctest: +SKIP
    """
    path = Path(path)
    frame = read_table(path)
    texts = _texts(frame, path, text_column, text_pair_column)
    labels = _column(frame, label_column, path, "--label-column")
    allows_empty = task is not None and task.allows_empty_labels
    missing_label = [] if allows_empty else [i for i, label in enumerate(labels) if not label.strip()]
    if missing_label:
        rows = ", ".join(str(i + 2) for i in missing_label[:5])
        raise DataError(f"{len(missing_label)} row(s) of {path.name} have an empty '{label_column}' "
                        f"(file lines {rows}{', ...' if len(missing_label) > 5 else ''}); fill or remove them")
    if task is not None:
        task.check_cells(labels, path.name, first_line=2)
    empty = [i for i, text in enumerate(texts) if not all(part.strip() for part in _parts(text))]
    what = f"'{text_column}' or '{text_pair_column}'" if text_pair_column else "text"
    if empty and empty_texts == "error":
        raise DataError(f"{len(empty)} row(s) of {path.name} have an empty or whitespace-only {what} "
                        f"(first at file line {empty[0] + 2}); remove them or pass --empty-texts drop")
    if empty:
        logger.warning("dropped %d row(s) of %s with an empty or whitespace-only %s", len(empty), path.name, what)
        if len(empty) == len(texts):
            raise DataError(f"every row of {path.name} has an empty or whitespace-only {what}" if text_pair_column
                            else f"every text in {path.name} is empty or whitespace only")
        keep = sorted(set(range(len(texts))) - set(empty))
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    return LabeledData(texts, [label.strip() for label in labels], str(path), dropped_empty=len(empty))


def _parts(text: Text) -> tuple[str, ...]:
    return text if isinstance(text, tuple) else (text,)


def label_order(labels: list[str]) -> list[str]:
    """Distinct labels in a stable order: numerically if all are integers, else alphabetically."""
    distinct = set(labels)
    if all(_INTEGER.match(label) for label in distinct):
        return sorted(distinct, key=lambda label: (int(label), label))
    return sorted(distinct)


def check_trainable(data: LabeledData) -> None:
    """Refuse training data with fewer than two classes."""
    classes = set(data.labels)
    if len(classes) < 2:
        raise DataError(f"{Path(data.source).name} has a single class ({next(iter(classes))!r}); "
                        "a classifier needs at least two labels")


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): ``fraction`` of every class, at least one row each, seeded.

    Example:
        >>> tr, va = stratified_split(["a"] * 10 + ["b"] * 10, 0.2, seed=0)
        >>> len(va)
        4
    """
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    too_small = sorted(c for c, rows in by_class.items() if len(rows) < 2)
    if too_small:
        shown = ", ".join(repr(c) for c in too_small[:10])
        raise DataError(f"class(es) {shown} have a single example, too few to split off validation data; "
                        "add examples, remove the class, or pass a --validation file")
    val: list[int] = []
    for label in sorted(by_class):
        rows = np.array(by_class[label])
        rng.shuffle(rows)
        take = min(len(rows) - 1, max(1, int(round(fraction * len(rows)))))
        val.extend(rows[:take].tolist())
    val_index = np.array(sorted(val), dtype=np.int64)
    train_index = np.setdiff1d(np.arange(len(labels)), val_index)
    return train_index, val_index


def random_split(rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): a seeded random ``fraction`` of the rows (at least one, never all), for
    tasks without classes to stratify by (regression, multi-label).

    Example:
        >>> tr, va = random_split(20, 0.2, seed=0)
        >>> len(tr), len(va)
        (16, 4)
    """
    if rows < 2:
        raise DataError(f"{rows} row(s) are too few to split off validation data; add rows or pass a --validation file")
    take = min(rows - 1, max(1, int(round(fraction * rows))))
    val_index = np.sort(np.random.default_rng(seed).permutation(rows)[:take])
    return np.setdiff1d(np.arange(rows), val_index), val_index


@dataclass
class Encoded:
    """Tokenised texts without padding; ``lengths`` drive length-bucketed batching."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None = None
    truncated: int = 0
    """How many texts were longer than ``max_length`` and were cut."""
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer, texts: list[Text], **options: object) -> dict:
    """``tokenizer`` over texts, or over ``(text, text_pair)`` pairs as pairs (``[CLS] a [SEP] b [SEP]`` with
    token type ids 0 then 1 for BERT-like models; ``truncation=True`` cuts the longer text first)."""
    if is_pairs(texts):
        return tokenizer([a for a, _ in texts], [b for _, b in texts], **options)
    return tokenizer(list(texts), **options)


def tokenize(tokenizer, texts: list[Text], max_length: int) -> Encoded:
    """Tokenise once, unpadded; texts (or pairs) longer than ``max_length`` are truncated and counted."""
    if isinstance(texts, str):
        raise TypeError("expected a list of texts, got a single string; wrap it in a list: [text]")
    probe = encode(tokenizer, texts, truncation=True, max_length=max_length + 1)
    ids = probe["input_ids"]
    types = probe.get("token_type_ids")
    long_rows = [i for i, row in enumerate(ids) if len(row) > max_length]
    if long_rows:
        cut = encode(tokenizer, [texts[i] for i in long_rows], truncation=True, max_length=max_length)
        for j, i in enumerate(long_rows):
            ids[i] = cut["input_ids"][j]
            if types is not None:
                types[i] = cut["token_type_ids"][j]
    return Encoded(ids, types, truncated=len(long_rows))
