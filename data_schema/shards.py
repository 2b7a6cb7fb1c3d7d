"""Reading and writing single Parquet shards with schema checks that name the file and column.

Shards are written with Parquet page checksums (CRC32) and read with their verification on, so a flipped
bit in a stored page is a SchemaError naming the shard instead of a changed value. Raw rows must hold
finite numbers: a NaN or infinite value (at any depth: agents, route points, actions) is refused on write,
and named on read (shard, column, episode, step) in shards written before that rule.
"""

from __future__ import annotations

import io
from typing import Sequence

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_schema.errors import DatasetError, SchemaError
from data_schema.schema import (
    ACTION_SIZE,
    ADDED_COLUMNS,
    META_KIND,
    META_LABEL_SET_HASH,
    META_SCHEMA_VERSION,
    SCHEMA_VERSION,
    SCHEMAS,
    with_metadata,
)
from data_schema.storage import atomic_write, is_local


def conform(table: pa.Table, kind: str, path: str) -> pa.Table:
    """``table`` cast to the ``kind`` schema in its column order, or a SchemaError naming what is wrong."""
    schema = SCHEMAS[kind]
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise SchemaError(path, f"missing column(s) {missing}", column=missing[0])
    columns = []
    for field in schema:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            raise SchemaError(path, f"{column.null_count} null value(s) in a non-nullable column", column=field.name)
        try:
            columns.append(column.cast(field.type) if column.type != field.type else column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise SchemaError(path, f"type {column.type} cannot be read as {field.type}: {e}", column=field.name) from e
    if kind == "episodes":
        sizes = pc.list_value_length(columns[schema.get_field_index("action")])
        if pc.any(pc.not_equal(sizes, ACTION_SIZE)).as_py():
            raise SchemaError(path, f"every non-null action must hold {ACTION_SIZE} values (steer, throttle/brake)", column="action")
    table = pa.Table.from_arrays(columns, schema=schema)
    bad = first_nonfinite(table) if kind == "episodes" else None
    if bad is not None:
        raise nonfinite_error(path, *bad, table)
    return table


def holds_floats(kind: pa.DataType) -> bool:
    """Whether values of ``kind`` contain floating-point numbers at any depth."""
    if pa.types.is_floating(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return holds_floats(kind.value_type)
    return pa.types.is_struct(kind) and any(holds_floats(kind.field(i).type) for i in range(kind.num_fields))


def all_finite(array: pa.Array | pa.ChunkedArray) -> bool:
    """Whether every float in ``array``, at any depth, is finite (nulls count as finite): the fast path."""
    kind = array.type
    if not holds_floats(kind):
        return True
    if isinstance(array, pa.ChunkedArray):
        return all(all_finite(chunk) for chunk in array.chunks)
    if pa.types.is_floating(kind):
        return pc.all(pc.is_finite(array)).as_py() is not False
    if pa.types.is_struct(kind):
        return all(all_finite(pc.struct_field(array, [i])) for i in range(kind.num_fields))
    return all_finite(pc.list_flatten(array))


def nonfinite_rows(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per element of ``array``: whether it holds a NaN or infinite float at any depth (lists, structs)."""
    if isinstance(array, pa.ChunkedArray):
        parts = [nonfinite_rows(chunk) for chunk in array.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
    kind = array.type
    out = np.zeros(len(array), dtype=bool)
    if not holds_floats(kind):
        return out
    if pa.types.is_floating(kind):
        return pc.fill_null(pc.invert(pc.is_finite(array)), False).to_numpy(zero_copy_only=False)
    if pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            out |= nonfinite_rows(pc.struct_field(array, [i]))
        return out
    bad = nonfinite_rows(pc.list_flatten(array))
    if bad.any():
        out[pc.list_parent_indices(array).to_numpy()[bad]] = True
    return out


def first_nonfinite(table: pa.Table) -> tuple[str, np.ndarray] | None:
    """The first column of ``table`` holding a NaN or infinite value, and the rows that do; None when all are finite."""
    for name in table.column_names:
        if not all_finite(table.column(name)):
            return name, np.flatnonzero(nonfinite_rows(table.column(name)))
    return None


def nonfinite_error(path: str, column: str, rows: np.ndarray, keys: pa.Table) -> SchemaError:
    """The error naming shard, column, episode and step of a non-finite value (``keys``: the rows' episode_id, step)."""
    row = int(rows[0])
    episode, step = keys.column("episode_id")[row].as_py(), keys.column("step")[row].as_py()
    return SchemaError(
        path, f"NaN or infinite value at episode {episode!r}, step {step} ({len(rows)} row(s) in all); raw rows must hold "
        "finite numbers", column=column,
    )  # fmt: skip


#: Parquet writer settings of every shard: page checksums let a reader detect a damaged page.
WRITE_OPTIONS = dict(compression="zstd", write_page_checksum=True)


def write_shard(
    fs: fsspec.AbstractFileSystem, path: str, table: pa.Table, kind: str, label_set_hash: str | None = None, exclusive: bool = False
) -> None:
    """Validate ``table`` against the ``kind`` schema and write it atomically as a Parquet shard
    (``exclusive``: never replacing an existing file)."""
    table = conform(table, kind, path)
    table = table.replace_schema_metadata(with_metadata(table.schema, kind, label_set_hash).metadata)

    def write(f: io.BufferedIOBase) -> None:
        dictionary = ["backend", "map", "policy", "scenario", "gate_source"]
        pq.write_table(table, f, row_group_size=4096, use_dictionary=dictionary, **WRITE_OPTIONS)

    atomic_write(fs, path, write, exclusive)


def open_parquet(f) -> pq.ParquetFile:
    """A Parquet file whose pages are checked against their checksums as they are read."""
    return pq.ParquetFile(f, page_checksum_verification=True)


def _open(fs: fsspec.AbstractFileSystem, path: str):
    """Local shards open as native Arrow files: pyarrow 23 can abort at interpreter exit after threaded reads
    through Python file objects (apache/arrow#50482), so those are read single-threaded."""
    return pa.OSFile(path, "rb") if is_local(fs) else fs.open(path, "rb")


def parquet_metadata(fs: fsspec.AbstractFileSystem, path: str) -> pq.FileMetaData:
    """The Parquet footer of a shard (row counts, statistics, key-value metadata); reads nothing else."""
    try:
        with _open(fs, path) as f:
            return pq.ParquetFile(f).metadata
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such shard") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(path, f"not a readable Parquet file ({e}); delete it and rerun the stage that wrote it") from e


def shard_metadata(fs: fsspec.AbstractFileSystem, path: str) -> dict[bytes, bytes]:
    """The Parquet key-value metadata of a shard (reads only the footer)."""
    return parquet_metadata(fs, path).metadata or {}


def check_metadata(path: str, meta: dict[bytes, bytes], kind: str) -> int:
    """The shard's schema version, once its metadata says it is a shard of ``kind`` this code can read."""
    version = meta.get(META_SCHEMA_VERSION)
    if version is None:
        raise SchemaError(path, "no schema_version in its metadata: not written by this pipeline")
    if not version.isdigit():
        raise SchemaError(path, f"schema_version {version!r} in its metadata is not an integer")
    if int(version) > SCHEMA_VERSION:
        raise SchemaError(
            path, f"written with schema_version {int(version)}, newer than {SCHEMA_VERSION} that this code reads; upgrade drive-vlm-rl"
        )
    if meta.get(META_KIND, kind.encode()) != kind.encode():
        raise SchemaError(path, f"holds {meta[META_KIND].decode()} rows, expected {kind}")
    return int(version)


def _filled(path: str, kind: str, version: int, missing: Sequence[str]) -> dict[str, object]:
    """Default values for the ``missing`` columns of a shard of ``version``: columns added after it get their
    ``ADDED_COLUMNS`` default; any other missing column is an error naming it."""
    added = ADDED_COLUMNS[kind]
    for name in missing:
        if name not in added or version >= added[name].version:
            raise SchemaError(path, "column missing from the shard", column=name)
    return {name: added[name].default for name in missing}


def read_shard(
    fs: fsspec.AbstractFileSystem,
    path: str,
    kind: str,
    columns: Sequence[str] | None = None,
    label_set_hash: str | None = None,
) -> pa.Table:
    """Read selected columns of a shard, checking version, kind, columns, types and (for labels) the hash."""
    schema = SCHEMAS[kind]
    if columns is not None:
        unknown = [c for c in columns if c not in schema.names]
        if unknown:
            raise SchemaError(path, f"no such column; known columns: {schema.names}", column=unknown[0])
    try:
        with _open(fs, path) as f:
            parquet = open_parquet(f)
            meta = parquet.schema_arrow.metadata or {}
            version = check_metadata(path, meta, kind)
            if label_set_hash is not None and meta.get(META_LABEL_SET_HASH, b"").decode() != label_set_hash:
                found = meta.get(META_LABEL_SET_HASH, b"<none>").decode()
                raise SchemaError(path, f"stale label shard: label-set hash {found}, expected {label_set_hash}")
            wanted = list(columns) if columns is not None else schema.names
            present = parquet.schema_arrow.names
            defaults = _filled(path, kind, version, [c for c in wanted if c not in present])
            table = parquet.read(columns=[c for c in wanted if c in present], use_threads=is_local(fs))
            bad = first_nonfinite(table) if kind == "episodes" else None
            if bad is not None:
                keys = table if {"episode_id", "step"} <= set(table.column_names) else parquet.read(columns=["episode_id", "step"], use_threads=False)
                raise nonfinite_error(path, *bad, keys)
    except SchemaError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such shard") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(path, f"corrupt or truncated Parquet file ({e}); delete it and rerun the stage that wrote it") from e
    for name in wanted:
        if name in defaults:
            continue
        expected = schema.field(name).type
        if table.schema.field(name).type != expected:
            raise SchemaError(path, f"type {table.schema.field(name).type}, expected {expected}", column=name)
    if defaults:
        columns = [table.column(c) if c not in defaults else pa.repeat(pa.scalar(defaults[c], schema.field(c).type), table.num_rows) for c in wanted]
        table = pa.Table.from_arrays(columns, schema=pa.schema([schema.field(c) for c in wanted], metadata=table.schema.metadata))
    return table
