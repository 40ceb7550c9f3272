"""Writing embeddings chunk by chunk to ``.npy`` or ``.parquet`` (atomically, input order kept).

``.npy``: one float32 matrix ``(rows, dim)``, loadable with ``numpy.load`` (or ``mmap_mode="r"``).
``.parquet``: columns ``text`` and ``embedding`` (a fixed-size list of float32 per row); for a model on
text pairs, ``text_pair`` after ``text``.
Neither needs all vectors in memory: ``.npy`` rows go to a scratch file first (the header needs the
row count), Parquet rows go out one row group per chunk.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lorafit.data import is_pairs
from lorafit.errors import DataError
from lorafit.rundir import atomic_file

SUFFIXES = (".npy", ".parquet")


def check_embedding_output(path: str | Path) -> Path:
    """Refuse an output name lorafit cannot write embeddings to, before any work is done."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"--output must end in .npy or .parquet, got {path.name}")
    return path


def write_embeddings(path: str | Path, chunks: Iterable[tuple[list[str], np.ndarray]]) -> tuple[int, int]:
    """Write ``(texts, vectors)`` chunks to ``path``; returns ``(rows, dimension)``.

    Example:
        >>> write_embeddings("vectors.npy", [(["hi"], np.ones((1, 4), np.float32))])  # doctest: +SKIP
        (1, 4)
    """
    path = check_embedding_output(path)
    with atomic_file(path) as tmp:
        if path.suffix.lower() == ".npy":
            return _write_npy(tmp, chunks)
        return _write_parquet(tmp, chunks)


def _write_npy(target: Path, chunks: Iterable[tuple[list[str], np.ndarray]]) -> tuple[int, int]:
    rows, dim = 0, 0
    with tempfile.TemporaryFile(dir=target.parent) as scratch:
        for _, vectors in chunks:
            vectors = np.ascontiguousarray(vectors, dtype="<f4")
            rows, dim = rows + len(vectors), vectors.shape[1]
            scratch.write(vectors.tobytes())
        scratch.seek(0)
        with target.open("wb") as handle:
            header = {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
            np.lib.format.write_array_header_1_0(handle, header)
            shutil.copyfileobj(scratch, handle, 1 << 20)
    return rows, dim


def _write_parquet(target: Path, chunks: Iterable[tuple[list[str], np.ndarray]]) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, dim, writer = 0, 0, None
    try:
        for texts, vectors in chunks:
            dim = vectors.shape[1]
            flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
            columns = {"text": [a for a, _ in texts], "text_pair": [b for _, b in texts]} if is_pairs(texts) \
                else {"text": texts}
            table = pa.table({**{k: pa.array(v, pa.string()) for k, v in columns.items()},
                              "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)})
            if writer is None:
                writer = pq.ParquetWriter(str(target), table.schema)
            writer.write_table(table)
            rows += len(texts)
        if writer is None:  # no rows: still a valid, empty file
            schema = pa.schema([("text", pa.string()), ("embedding", pa.list_(pa.float32()))])
            writer = pq.ParquetWriter(str(target), schema)
    finally:
        if writer is not None:
            writer.close()
    return rows, dim
