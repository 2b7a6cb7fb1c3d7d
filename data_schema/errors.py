"""Errors a reader or writer raises on bad input: each names the file and, where known, the column."""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset, shard or label set on disk is missing, malformed or incompatible."""


class SchemaError(DatasetError):
    """A shard does not match the schema this code reads, or cannot be read at all (corrupt, non-finite
    values, undecodable images): the shard is bad, and ``--skip-bad`` readers leave it out."""

    def __init__(self, path: str, message: str, column: str | None = None) -> None:
        self.path = path
        self.column = column
        self.reason = message
        where = f"{path}" + (f", column '{column}'" if column else "")
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # keeps the fields when a worker process sends the error to its parent
        return type(self), (self.path, self.reason, self.column)


class StorageError(DatasetError):
    """A write failed (disk full, no permission, read-only filesystem); nothing partial was left behind."""


class DuplicateEpisodeError(DatasetError):
    """One episode is in two raw shards: the dataset would count, label and replay it twice."""


class RunLockedError(DatasetError):
    """Another live writer holds the run id."""
