"""Typed Arrow tables from rows of plain values (None and non-finite numbers become nulls)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sslsearch import storage


def _number(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def typed_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, pa.DataType]],
    metadata: Mapping[str, str] | None = None,
) -> pa.Table:
    arrays = []
    for name, typ in columns:
        vals: list[Any] = [r.get(name) for r in rows]
        if pa.types.is_integer(typ):
            vals = [None if (x := _number(v)) is None else int(x) for v in vals]
        elif pa.types.is_floating(typ):
            vals = [_number(v) for v in vals]
        elif pa.types.is_boolean(typ):
            vals = [None if v is None else bool(v) for v in vals]
        else:
            vals = [None if v is None else str(v) for v in vals]
        arrays.append(pa.array(vals, type=typ))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(list(columns)))
    if metadata:
        table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    return table


def read_parquet(path: str) -> pa.Table:
    """A parquet file from storage (local or remote), read whole in this thread.

    Not ``pq.read_table(io.BytesIO(...))``: its dataset reader pre-buffers on Arrow's I/O
    threads, which can still hold the Python file object when the interpreter exits; such a
    thread then dies taking the GIL and the process aborts with a C++ stack trace and a
    non-zero exit code after everything was written (seen at the end of a search)."""
    return pq.ParquetFile(pa.BufferReader(storage.read_bytes(path))).read()


def read_rows(path: str) -> list[dict[str, Any]]:
    """The rows of a parquet file from storage, as plain values."""
    return list(read_parquet(path).to_pylist())
