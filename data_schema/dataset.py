"""The dataset handle: layout on disk, shard listing, reads with column selection, label sets and joins.

::

    <root>/dataset.json                          format, schema_version, created, created_by
    <root>/episodes/<shard>.parquet              raw steps; written once, never changed
    <root>/labels/<label_set>/label_set.json     the label set's spec and provenance
    <root>/labels/<label_set>/<shard>.parquet    one label shard per raw shard, same name
    <root>/cache/<kind>/<key>/<shard>.parquet    reusable model outputs
    <root>/locks/<run_id>.lock                   held by the one process writing a run (``data_schema.run_lock``)

Nothing here loads a whole dataset unless asked: ``iter_steps`` and ``iter_joined`` go shard by shard.

Every read that spans shards first checks that no episode is in two of them (:meth:`Dataset.episode_index`):
a collector that ran twice must not make an episode count, label or replay twice. A handle opened with
``skip_bad`` leaves out raw shards it cannot read (corrupt, non-finite values) from those reads, and lists
them in ``bad_shards``; without it, such a shard is an error naming it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import pandas as pd
import pyarrow as pa

from data_schema import shards
from data_schema.errors import DatasetError, DuplicateEpisodeError, SchemaError
from data_schema.images import decode_column
from data_schema.label_sets import SHARD_SUFFIX, LabelSet
from data_schema.naming import check_name, run_shards
from data_schema.run_lock import RunLock
from data_schema.schema import FORMAT_NAME, IMAGE_COLUMNS, KEY_COLUMNS, LABEL_SCHEMA, RAW_STEP_SCHEMA, SCHEMA_VERSION
from data_schema.storage import atomic_write_bytes, filesystem, is_local, remove_leftovers

__all__ = ["Dataset"]

T = TypeVar("T")


class Dataset:
    """A dataset rooted at a local path or an fsspec URL.

    ``skip_bad``: spanning reads leave out raw shards that cannot be read, recording why in ``bad_shards``.
    """

    def __init__(self, url: str, skip_bad: bool = False) -> None:
        self.url = url
        self.fs, self.path = filesystem(url)
        self.skip_bad = skip_bad
        self.bad_shards: dict[str, str] = {}
        self._keys: dict[str, tuple[tuple[str, ...], int]] = {}  # raw shard -> (its episode ids, rows): shards never change

    def __repr__(self) -> str:
        return f"Dataset({self.url!r})"

    # -- creation and opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, url: str, created_by: str = "drive-vlm-rl", skip_bad: bool = False) -> "Dataset":
        """Open ``url``, creating an empty dataset there if it has none yet."""
        ds = cls(url, skip_bad)
        ds._check_directory()
        if ds.fs.exists(ds._manifest_path):
            ds._check_manifest()
            return ds
        if ds.fs.exists(ds.path) and ds.fs.ls(ds.path, detail=False):
            raise DatasetError(f"{ds.url}: exists, is not empty and has no dataset.json; refusing to write into it")
        manifest = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "created_by": created_by,
            "host": socket.gethostname(),
        }
        atomic_write_bytes(ds.fs, ds._manifest_path, json.dumps(manifest, indent=2).encode())
        return ds

    @classmethod
    def open(cls, url: str, skip_bad: bool = False) -> "Dataset":
        ds = cls(url, skip_bad)
        ds._check_directory()
        ds._check_manifest()
        return ds

    def _check_directory(self) -> None:
        if self.fs.isfile(self.path):
            raise DatasetError(f"{self.url}: is a file, not a dataset directory")

    @property
    def _manifest_path(self) -> str:
        return f"{self.path}/dataset.json"

    def manifest(self) -> dict[str, Any]:
        try:
            with self.fs.open(self._manifest_path, "r") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise DatasetError(f"{self._manifest_path}: not found; is {self.url} a dataset? (`pipeline collect` creates one)") from None
        except ValueError as e:  # invalid JSON or not UTF-8 text
            raise DatasetError(f"{self._manifest_path}: not valid JSON ({e})") from e
        except OSError as e:
            raise DatasetError(f"{self._manifest_path}: cannot read ({e.strerror or e})") from e
        if not isinstance(manifest, dict):
            raise DatasetError(f"{self._manifest_path}: expected a JSON object, got {type(manifest).__name__}")
        return manifest

    def _check_manifest(self) -> None:
        manifest = self.manifest()
        if manifest.get("format") != FORMAT_NAME:
            raise DatasetError(f"{self._manifest_path}: format {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
        version = manifest.get("schema_version")
        if type(version) is not int or version < 1:
            found = "no schema_version" if "schema_version" not in manifest else f"schema_version {version!r}"
            raise DatasetError(f"{self._manifest_path}: {found}; expected a positive integer (this code reads {SCHEMA_VERSION})")
        if version > SCHEMA_VERSION:
            raise DatasetError(f"{self._manifest_path}: schema_version {version} is newer than {SCHEMA_VERSION}; upgrade drive-vlm-rl")

    # -- raw episode shards --------------------------------------------------------------------------------

    @property
    def episodes_path(self) -> str:
        return f"{self.path}/episodes"

    def shard_path(self, shard: str) -> str:
        """The file of raw shard ``shard``; a name that is not a shard name (``../x``) never becomes a path."""
        return f"{self.episodes_path}/{check_name('shard', shard)}{SHARD_SUFFIX}"

    def _list_shards(self, directory: str) -> list[str]:
        if not self.fs.exists(directory):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(directory, detail=False)]
        return sorted(n[: -len(SHARD_SUFFIX)] for n in names if n.endswith(SHARD_SUFFIX))

    def shards(self) -> list[str]:
        """Names of complete raw shards, oldest first."""
        return self._list_shards(self.episodes_path)

    def run_shards(self, run_id: str) -> list[str]:
        """Complete raw shards of run ``run_id``, oldest first."""
        return run_shards(self.shards(), run_id)

    def write_episode_shard(self, shard: str, table: pa.Table) -> None:
        """Write a new raw shard; raw shards are immutable, so an existing name is an error."""
        path = self.shard_path(shard)
        try:
            shards.write_shard(self.fs, path, table, "episodes", exclusive=True)
        except FileExistsError:
            raise DatasetError(f"{path}: raw shards are immutable and this one exists already") from None

    def read_shard(self, shard: str, columns: Sequence[str] | None = None) -> pa.Table:
        return shards.read_shard(self.fs, self.shard_path(shard), "episodes", columns)

    def readable(self, shard_names: Iterable[str], read: Callable[[str], T]) -> Iterator[tuple[str, T]]:
        """``(shard, read(shard))`` for each shard. A bad shard (SchemaError: corrupt, non-finite values,
        undecodable images) is an error; with ``skip_bad`` it is left out and recorded in ``bad_shards``."""
        for shard in shard_names:
            if shard in self.bad_shards:
                continue
            try:
                value = read(shard)
            except SchemaError as error:
                if not self.skip_bad:
                    raise
                self.bad_shards[shard] = str(error)
                continue
            yield shard, value

    def episode_index(self, shard_names: Sequence[str] | None = None) -> dict[str, str]:
        """Episode id -> the raw shard holding it, over ``shard_names`` (default all).

        An episode in two shards is a DuplicateEpisodeError naming both (a collector that ran twice at once,
        or whose killed workers went on writing): readers that span shards check this first. Each shard's
        episode ids are read once per handle.
        """
        index: dict[str, str] = {}
        for shard, (episodes, _) in self.readable(self.shards() if shard_names is None else shard_names, self._shard_keys):
            for episode in episodes:
                first = index.setdefault(episode, shard)
                if first != shard:
                    raise DuplicateEpisodeError(
                        f"{self.episodes_path}: episode {episode!r} is in two raw shards, {first} and {shard}; a collector "
                        f"wrote it twice. Remove one of the two files (compare them first), then rerun"
                    )
        return index

    def _shard_keys(self, shard: str) -> tuple[tuple[str, ...], int]:
        if shard not in self._keys:
            ids = self.read_shard(shard, ["episode_id"]).column("episode_id")
            self._keys[shard] = (tuple(pa.compute.unique(ids).to_pylist()), len(ids))
        return self._keys[shard]

    def iter_steps(self, columns: Sequence[str] | None = None, shards: Sequence[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
        """``(shard, table)`` for each raw shard, reading only ``columns`` (all when None)."""
        todo = list(shards) if shards is not None else self.shards()
        if len(todo) > 1:
            self.episode_index(todo)
        yield from self.readable(todo, lambda shard: self.read_shard(shard, _with_keys(columns)))

    def read_steps(self, columns: Sequence[str] | None = None, shards: Sequence[str] | None = None) -> pa.Table:
        """Raw steps of the chosen shards as one Arrow table. Images are skipped unless named in ``columns``."""
        if columns is None:
            columns = [c for c in RAW_STEP_SCHEMA.names if c not in IMAGE_COLUMNS]
        tables = [t for _, t in self.iter_steps(columns, shards)]
        if not tables:
            return RAW_STEP_SCHEMA.empty_table().select(_with_keys(columns))
        return pa.concat_tables(tables)

    def episodes(self) -> pd.DataFrame:
        """One row per episode: shard, steps, policy, scenario, seed, how it ended."""
        endings = ["collision", "off_road", "stuck", "terminated", "truncated", "route_completion"]
        cols = ["episode_id", "step", "policy", "scenario", "seed", *endings, "is_last"]
        frames = []
        for shard, table in self.iter_steps(cols):
            df = table.to_pandas()
            last = df[df["is_last"]].set_index("episode_id")
            agg = df.groupby("episode_id", sort=False).agg(
                steps=("step", "size"), policy=("policy", "first"), scenario=("scenario", "first"), seed=("seed", "first")
            )
            agg["shard"] = shard
            for c in endings:
                agg[c] = last[c]
            frames.append(agg.reset_index())
        if not frames:
            return pd.DataFrame(columns=["episode_id", "steps", "policy", "scenario", "seed", "shard", *endings])
        return pd.concat(frames, ignore_index=True)

    def remove_leftovers(self, owner: str | re.Pattern[str] = "") -> list[str]:
        return remove_leftovers(self.fs, self.episodes_path, owner)

    def run_lock(self, run_id: str) -> RunLock:
        """The lock the one writer of run ``run_id`` holds (``with ds.run_lock(run_id): ...``); see
        ``data_schema.run_lock``. Non-local datasets lock in this machine's temporary directory."""
        if is_local(self.fs):
            folder = Path(self.path) / "locks"
        else:
            key = hashlib.sha256(self.fs.unstrip_protocol(self.path).encode()).hexdigest()[:16]
            folder = Path(tempfile.gettempdir()) / "drive-vlm-rl-locks" / key
        return RunLock(folder, run_id)

    # -- label sets ----------------------------------------------------------------------------------------

    def label_sets(self) -> list[str]:
        root = f"{self.path}/labels"
        if not self.fs.exists(root):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(root, detail=False)]
        return sorted(n for n in names if self.fs.exists(f"{root}/{n}/label_set.json"))

    def label_set(self, name: str) -> LabelSet:
        return LabelSet(self, check_name("label set", name))

    def cache_path(self, kind: str, key: str) -> str:
        return f"{self.path}/cache/{check_name('cache kind', kind)}/{check_name('cache key', key)}"

    # -- joins for notebooks and training --------------------------------------------------------------------

    def iter_joined(
        self,
        label_set: str,
        columns: Sequence[str] | None = None,
        label_columns: Sequence[str] | None = None,
        shards: Sequence[str] | None = None,
        decode: bool = False,
        missing: str = "skip",
    ) -> Iterator[pd.DataFrame]:
        """Raw steps joined with a label set on (episode_id, step), one DataFrame per shard.

        ``missing`` says what to do with raw shards the label set has not labelled yet: ``skip`` them (a
        warning names them) or ``error``. Image columns stay encoded bytes unless ``decode`` is set.
        """
        for _, df in self.iter_joined_shards(label_set, columns, label_columns, shards, decode, missing):
            yield df

    def iter_joined_shards(
        self,
        label_set: str,
        columns: Sequence[str] | None = None,
        label_columns: Sequence[str] | None = None,
        shards: Sequence[str] | None = None,
        decode: bool = False,
        missing: str = "skip",
    ) -> Iterator[tuple[str, pd.DataFrame]]:
        """``(shard, rows)`` of ``iter_joined``: with ``skip_bad``, the shards read are not all those asked for."""
        labels = self.label_set(label_set)
        label_hash = labels.hash
        todo = labels.select(shards if shards is not None else self.shards(), missing, label_hash)
        if len(todo) > 1:
            self.episode_index(todo)
        if columns is None:
            columns = [c for c in RAW_STEP_SCHEMA.names if c not in IMAGE_COLUMNS]
        label_columns = list(label_columns) if label_columns is not None else [c for c in LABEL_SCHEMA.names if c not in KEY_COLUMNS]

        def read(shard: str) -> pd.DataFrame:
            raw = self.read_shard(shard, _with_keys(columns)).to_pandas()
            lab = labels.read_shard(shard, _with_keys(label_columns), label_hash).to_pandas()
            if len(raw) != len(lab):
                raise DatasetError(f"{labels.shard_path(shard)}: {len(lab)} label rows for {len(raw)} raw rows")
            df = raw.merge(lab, on=list(KEY_COLUMNS), how="inner", validate="one_to_one", suffixes=("", "_label"))
            if decode:
                for c in IMAGE_COLUMNS:
                    if c in df.columns:
                        df[c] = decode_column(df[c].tolist(), df["episode_id"], df["step"], self.shard_path(shard), c)
            return df

        yield from self.readable(todo, read)

    def join(self, label_set: str, **kwargs: Any) -> pd.DataFrame:
        """All joined rows as one DataFrame; see ``iter_joined`` for the arguments."""
        frames = list(self.iter_joined(label_set, **kwargs))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # -- summary -------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Counts and sizes for ``pipeline info``; with ``skip_bad``, ``bad_shards`` lists the shards left out."""
        shard_names = self.shards()
        index = self.episode_index(shard_names)
        good = [s for s in shard_names if s not in self.bad_shards]
        size = sum(self.fs.du(p) for p in (self.episodes_path, f"{self.path}/labels", f"{self.path}/cache") if self.fs.exists(p))
        return {
            "url": self.url,
            "schema_version": self.manifest()["schema_version"],
            "shards": len(good),
            "episodes": len(index),
            "steps": sum(self._shard_keys(s)[1] for s in good),
            "label_sets": {name: len(self.label_set(name).labelled(good)) for name in self.label_sets()},
            "bytes": int(size),
            "bad_shards": {s: self.bad_shards[s] for s in shard_names if s in self.bad_shards},
        }


def _with_keys(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    return list(KEY_COLUMNS) + [c for c in columns if c not in KEY_COLUMNS]
