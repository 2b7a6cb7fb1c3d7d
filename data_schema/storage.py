"""Filesystem access through fsspec, with atomic writes: a reader never sees a partial file.

Local files are written to ``<name>.<token>.tmp``, fsynced and renamed into place. Object stores have no
rename; there the final ``put`` of a whole object is itself atomic, so the tmp step is skipped.

An ``exclusive`` write publishes with a hard link instead of a rename, so it fails rather than replace a file
that appeared meanwhile (raw shards are immutable; an exists-then-rename check would race). A failed write
(disk full, no permission) is a ``StorageError`` naming the file, and leaves no tmp file behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import uuid
from pathlib import Path
from typing import Callable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from data_schema.errors import StorageError

TMP_SUFFIX = ".tmp"


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and the path inside it for a local path or URL."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path.rstrip("/") if path != "/" else path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


@contextlib.contextmanager
def atomic_path(path: str | Path, exclusive: bool = False) -> Iterator[Path]:
    """A tmp file name beside the local file ``path``, for writers that need a name (d3rlpy, TorchScript):
    when the block ends without an error, the tmp file is fsynced and renamed into place and the directory
    fsynced; otherwise it is removed. A kill at any moment leaves the old file or the new one, never a mix.
    ``exclusive``: refuse (FileExistsError) to replace a file already at ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        with _naming(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            _publish(tmp, path, exclusive)
    finally:
        tmp.unlink(missing_ok=True)
    with _naming(path):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _publish(tmp: Path, path: Path, exclusive: bool) -> None:
    if exclusive:
        os.link(tmp, path)  # FileExistsError when a file appeared at ``path``: never replaced
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def _naming(path: str | Path) -> Iterator[None]:
    """OSErrors of the block (other than an existing file) as a StorageError naming ``path``."""
    try:
        yield
    except FileExistsError:
        raise
    except OSError as error:
        raise _write_error(path, error) from error


def _write_error(path: str | Path, error: OSError) -> StorageError:
    return StorageError(f"{path}: cannot write ({error.strerror or error}); nothing partial was kept")


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, write: Callable[[io.BufferedIOBase], None], exclusive: bool = False) -> None:
    """Write ``path`` through ``write(fileobj)`` so that it appears complete or not at all.

    ``exclusive`` refuses (FileExistsError) to replace an existing file; on object stores, which have no
    create-if-absent, it is checked just before the put (a narrow race there; local files have none).
    """
    if not is_local(fs):
        buffer = io.BytesIO()
        write(buffer)
        with _naming(path):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            if exclusive and fs.exists(path):
                raise FileExistsError(path)
            fs.pipe_file(path, buffer.getvalue())
        return
    with atomic_path(path, exclusive) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    atomic_write(fs, path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """A local text file (run settings, state, logs) written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_leftovers(fs: fsspec.AbstractFileSystem, directory: str, owner: str | re.Pattern[str] = "") -> list[str]:
    """Delete ``*.tmp`` files a crashed writer left in ``directory``; return what was removed.

    ``owner`` restricts the clean-up to tmp files whose name contains it, or that a pattern matches from the
    start, so that one writer never deletes the in-progress file of another writer on the same dataset.
    """
    if not fs.exists(directory):
        return []
    names = {p: p.rsplit("/", 1)[-1] for p in fs.ls(directory, detail=False) if p.endswith(TMP_SUFFIX)}
    removed = [p for p, name in names.items() if (owner.match(name) if isinstance(owner, re.Pattern) else owner in name)]
    for p in removed:
        fs.rm(p)
    return removed
