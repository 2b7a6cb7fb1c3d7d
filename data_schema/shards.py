"""Reading and writing single Parquet shards with schema checks that name the file and column."""

from __future__ import annotations

import io
from typing import Sequence

import fsspec
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
    return pa.Table.from_arrays(columns, schema=schema)


def write_shard(
    fs: fsspec.AbstractFileSystem, path: str, table: pa.Table, kind: str, label_set_hash: str | None = None
) -> None:
    """Validate ``table`` against the ``kind`` schema and write it atomically as a Parquet shard."""
    table = conform(table, kind, path)
    table = table.replace_schema_metadata(with_metadata(table.schema, kind, label_set_hash).metadata)

    def write(f: io.BufferedIOBase) -> None:
        dictionary = ["backend", "map", "policy", "scenario", "gate_source"]
        pq.write_table(table, f, compression="zstd", row_group_size=4096, use_dictionary=dictionary)

    atomic_write(fs, path, write)


def _open(fs: fsspec.AbstractFileSystem, path: str):
    """Local shards open as native Arrow files: pyarrow 23 can abort at interpreter exit after threaded reads
    through Python file objects (apache/arrow#50482), so those are read single-threaded."""
    return pa.OSFile(path, "rb") if is_local(fs) else fs.open(path, "rb")


def shard_metadata(fs: fsspec.AbstractFileSystem, path: str) -> dict[bytes, bytes]:
    """The Parquet key-value metadata of a shard (reads only the footer)."""
    try:
        with _open(fs, path) as f:
            return pq.read_schema(f).metadata or {}
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such shard") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(path, f"not a readable Parquet file ({e}); delete it and rerun the stage that wrote it") from e


def check_metadata(path: str, meta: dict[bytes, bytes], kind: str) -> int:
    """The shard's schema version, once its metadata says it is a shard of ``kind`` this code can read."""
    version = meta.get(META_SCHEMA_VERSION)
    if version is None:
        raise SchemaError(path, "no schema_version in its metadata: not written by this pipeline")
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
            parquet = pq.ParquetFile(f)
            meta = parquet.schema_arrow.metadata or {}
            version = check_metadata(path, meta, kind)
            if label_set_hash is not None and meta.get(META_LABEL_SET_HASH, b"").decode() != label_set_hash:
                found = meta.get(META_LABEL_SET_HASH, b"<none>").decode()
                raise SchemaError(path, f"stale label shard: label-set hash {found}, expected {label_set_hash}")
            wanted = list(columns) if columns is not None else schema.names
            present = parquet.schema_arrow.names
            defaults = _filled(path, kind, version, [c for c in wanted if c not in present])
            table = parquet.read(columns=[c for c in wanted if c in present], use_threads=is_local(fs))
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
