"""Errors a reader or writer raises on bad input: each names the file and, where known, the column."""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset, shard or label set on disk is missing, malformed or incompatible."""


class SchemaError(DatasetError):
    """A shard does not match the schema this code reads."""

    def __init__(self, path: str, message: str, column: str | None = None) -> None:
        self.path = path
        self.column = column
        where = f"{path}" + (f", column '{column}'" if column else "")
        super().__init__(f"{where}: {message}")
