"""Notebook queries over raw steps joined with one label set: column selection, row filters, images on demand.

Everything goes shard by shard. A filter runs on each shard's joined rows before anything is kept, a
``sample`` keeps a uniform random subset in bounded memory, and image bytes are read (and decoded, if
asked) only for the rows that survive. So ``frames(ds, "clg-v1", where=gated())`` stays small on a large
dataset, and the images of twelve interesting frames cost twelve decodes, not a shard's worth.

Every returned frame has a ``shard`` column naming the raw shard a row came from, so that images can be
fetched later for any subset of the rows (``attach_images``).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from data_schema.dataset import Dataset
from data_schema.errors import DatasetError
from data_schema.images import decode_image, naming_frames
from data_schema.schema import IMAGE_COLUMNS, KEY_COLUMNS, LABEL_SCHEMA, RAW_STEP_SCHEMA

#: Raw columns that mark an event on arriving at a step; ``near_event`` accepts these.
EVENT_COLUMNS = ("collision", "off_road", "stuck", "red_light", "terminated", "truncated")

SHARD_COLUMN = "shard"
#: Reads of fewer shards than this finish quickly and show no progress bar (it would only clutter notebooks).
PROGRESS_MIN_SHARDS = 10

_RAW = [c for c in RAW_STEP_SCHEMA.names if c not in KEY_COLUMNS]
_LABEL = [c for c in LABEL_SCHEMA.names if c not in KEY_COLUMNS]


class Filter:
    """A row predicate over joined rows that names the columns it reads; combine with ``&``, ``|`` and ``~``.

    ``frames`` reads the named columns even when the caller did not select them, so a filter never fails
    for lack of a column it needs. Rows where the predicate is null (e.g. ``vlm_ok`` of ungated frames)
    count as not matching.
    """

    def __init__(self, name: str, columns: Iterable[str], mask: Callable[[pd.DataFrame], pd.Series]) -> None:
        self.name = name
        self.columns = frozenset(columns)
        self._mask = mask

    def __call__(self, df: pd.DataFrame) -> pd.Series:
        missing = sorted(c for c in self.columns if c not in df.columns)
        if missing:
            raise KeyError(f"filter {self.name} needs column(s) {missing} that the frame does not have")
        mask = pd.Series(self._mask(df), index=df.index)
        return mask.astype("boolean").fillna(False).astype(bool)

    def __and__(self, other: "Filter") -> "Filter":
        return Filter(f"({self.name} & {other.name})", self.columns | other.columns, lambda df: self(df) & other(df))

    def __or__(self, other: "Filter") -> "Filter":
        return Filter(f"({self.name} | {other.name})", self.columns | other.columns, lambda df: self(df) | other(df))

    def __invert__(self) -> "Filter":
        return Filter(f"~{self.name}", self.columns, lambda df: ~self(df))

    def __repr__(self) -> str:
        return f"Filter({self.name})"


def gated() -> Filter:
    """Frames the gate sent to the VLM."""
    return Filter("gated", ["gate"], lambda df: df["gate"])


def low_semantic(threshold: float = 0.2) -> Filter:
    """Frames whose semantic score (0 = dangerous, 1 = clear) is below ``threshold``."""
    return Filter(f"semantic<{threshold:g}", ["semantic"], lambda df: df["semantic"] < threshold)


def vlm_failed() -> Filter:
    """Gated frames whose VLM answer could not be parsed or was invalid (``vlm_ok == False``, not null)."""
    return Filter("vlm_failed", ["vlm_ok"], lambda df: df["vlm_ok"].astype("boolean") == False)  # noqa: E712


def in_episode(*episode_ids: str) -> Filter:
    """Frames of the given episodes."""
    if not episode_ids:
        raise ValueError("in_episode needs at least one episode id")
    wanted = set(episode_ids)
    return Filter(f"episode in {sorted(wanted)}", ["episode_id"], lambda df: df["episode_id"].isin(wanted))


def near_event(event: str = "collision", within: int = 5) -> Filter:
    """Frames at most ``within`` steps before or after a step of the same episode where ``event`` is true.

    Episodes never span shards, so evaluating this per shard sees every step it needs.
    """
    if event not in EVENT_COLUMNS:
        raise ValueError(f"near_event: unknown event {event!r}; choose one of {EVENT_COLUMNS}")
    if within < 0:
        raise ValueError(f"near_event: within must be >= 0, got {within}")

    def mask(df: pd.DataFrame) -> pd.Series:
        hits = df.loc[df[event].astype(bool), ["episode_id", "step"]]
        if hits.empty:
            return pd.Series(False, index=df.index)
        pairs = df[["episode_id", "step"]].reset_index().merge(hits, on="episode_id", suffixes=("", "_event"))
        close = pairs[(pairs["step"] - pairs["step_event"]).abs() <= within]["index"]
        return pd.Series(df.index.isin(close.unique()), index=df.index)

    return Filter(f"within {within} steps of {event}", ["episode_id", "step", event], mask)


def split_columns(columns: Iterable[str]) -> tuple[list[str], list[str]]:
    """``columns`` (raw and label names mixed) as (raw, label) lists; an unknown name is an error."""
    raw, label = [], []
    for c in columns:
        if c in KEY_COLUMNS or c == SHARD_COLUMN:
            continue
        if c in _RAW or c in IMAGE_COLUMNS:
            raw.append(c)
        elif c in _LABEL:
            label.append(c)
        else:
            raise KeyError(f"unknown column {c!r}; raw columns: {_RAW}; label columns: {_LABEL}")
    return list(dict.fromkeys(raw)), list(dict.fromkeys(label))


def labelled_shards(dataset: Dataset, label_set: str, shards: Sequence[str] | None = None) -> list[str]:
    """The raw shards (of ``shards``, default all) that ``label_set`` has labelled; warns about the rest."""
    present = dataset.shards()
    wanted = list(shards) if shards is not None else present
    unknown = sorted(set(wanted) - set(present))
    if unknown:
        raise DatasetError(f"{dataset.episodes_path}: no raw shard(s) {unknown[:5]}")
    return dataset.label_set(label_set).select(wanted)


def iter_frames(
    dataset: Dataset | str,
    label_set: str,
    columns: Sequence[str] | None = None,
    where: Filter | None = None,
    shards: Sequence[str] | None = None,
    progress: bool = True,
) -> Iterable[pd.DataFrame]:
    """Joined, filtered rows of one shard at a time (no images), each with a ``shard`` column."""
    ds = _open(dataset)
    if columns is None:
        raw, label = [c for c in _RAW if c not in IMAGE_COLUMNS], list(_LABEL)
    else:
        raw, label = split_columns(columns)
    images = [c for c in raw if c in IMAGE_COLUMNS]
    if images:
        raise ValueError(f"image columns {images} are fetched with images=..., not columns=...")
    if where is not None:
        extra_raw, extra_label = split_columns(where.columns)
        raw += [c for c in extra_raw if c not in raw]
        label += [c for c in extra_label if c not in label]
    todo = labelled_shards(ds, label_set, shards)
    # one join over all shards (it lists the label set once), yielding one frame per shard in this order
    joined = ds.iter_joined_shards(label_set, columns=raw, label_columns=label, shards=todo, missing="error")
    bar = tqdm(total=len(todo), desc=f"reading {label_set}", unit="shard", disable=not progress or len(todo) < PROGRESS_MIN_SHARDS, leave=False)
    for shard, df in joined:
        bar.update()
        if where is not None:
            df = df[where(df)].reset_index(drop=True)
        df.insert(2, SHARD_COLUMN, shard)
        yield df
    bar.close()


def frames(
    dataset: Dataset | str,
    label_set: str,
    columns: Sequence[str] | None = None,
    where: Filter | None = None,
    images: Sequence[str] = (),
    decode: bool = False,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    shards: Sequence[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Raw steps joined with ``label_set`` as one DataFrame, keyed by ``(episode_id, step)`` plus ``shard``.

    ``columns`` mixes raw and label column names (default: every non-image column). ``where`` keeps only
    matching rows; ``limit`` stops after the first N (in shard order), ``sample`` keeps N rows drawn
    uniformly at random (seeded) instead. ``images`` names image columns (``bev``, ``camera``) to add as
    encoded bytes, or as decoded HxWx3 arrays with ``decode=True``; they are read for kept rows only.
    """
    if limit is not None and sample is not None:
        raise ValueError("pass limit or sample, not both")
    for name, n in (("limit", limit), ("sample", sample)):
        if n is not None and n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    ds = _open(dataset)
    rng = np.random.default_rng(seed)
    kept: list[pd.DataFrame] = []
    count = 0
    for df in iter_frames(ds, label_set, columns, where, shards, progress):
        if sample is not None:
            df = df.assign(_draw=rng.random(len(df)))
            kept.append(df.nsmallest(sample, "_draw"))
            # bottom-k of uniform draws is a uniform sample; keep only the running best k in memory
            kept = [pd.concat(kept, ignore_index=True).nsmallest(sample, "_draw")]
            continue
        kept.append(df)
        count += len(df)
        if limit is not None and count >= limit:
            break
    out = pd.concat(kept, ignore_index=True) if kept else _empty(columns, where)
    if sample is not None and "_draw" in out.columns:
        out = out.drop(columns="_draw").sort_values([SHARD_COLUMN, *KEY_COLUMNS]).reset_index(drop=True)
    if limit is not None:
        out = out.head(limit).reset_index(drop=True)
    if images:
        out = attach_images(ds, out, images, decode=decode)
    return out


def episode(
    dataset: Dataset | str,
    label_set: str,
    episode_id: str,
    columns: Sequence[str] | None = None,
    images: Sequence[str] = (),
    decode: bool = False,
) -> pd.DataFrame:
    """All steps of one episode in step order; reads only the shard that holds it."""
    ds = _open(dataset)
    shard = find_shard(ds, episode_id)
    df = frames(ds, label_set, columns, where=in_episode(episode_id), shards=[shard], images=images, decode=decode, progress=False)
    if df.empty:
        raise DatasetError(f"label set {label_set!r} has no labels for episode {episode_id!r} (shard {shard})")
    return df.sort_values("step").reset_index(drop=True)


def find_shard(dataset: Dataset | str, episode_id: str) -> str:
    """The raw shard holding ``episode_id``, found by reading only the key column of each shard."""
    ds = _open(dataset)
    for shard in ds.shards():
        ids = ds.read_shard(shard, ["episode_id"]).column("episode_id")
        if pc.any(pc.equal(ids, episode_id)).as_py():
            return shard
    raise DatasetError(f"{ds.episodes_path}: no episode {episode_id!r} in any shard")


def attach_images(dataset: Dataset | str, df: pd.DataFrame, images: Sequence[str] = ("bev",), decode: bool = False) -> pd.DataFrame:
    """``df`` with image columns added for its rows, read shard by shard (needs ``shard``, ``episode_id``, ``step``).

    ``decode=True`` gives HxWx3 uint8 arrays instead of PNG/JPEG bytes; a missing camera frame stays None.
    """
    ds = _open(dataset)
    unknown = [c for c in images if c not in IMAGE_COLUMNS]
    if unknown:
        raise KeyError(f"unknown image column(s) {unknown}; image columns are {IMAGE_COLUMNS}")
    missing = [c for c in (SHARD_COLUMN, *KEY_COLUMNS) if c not in df.columns]
    if missing:
        raise KeyError(f"attach_images needs column(s) {missing}; rows from query.frames() carry them")
    images = [c for c in images if c not in df.columns]
    if not images or df.empty:
        out = df.copy()
        for c in images:
            out[c] = pd.Series([None] * len(df), index=df.index, dtype=object)
        return out
    parts = []
    for shard, rows in df.groupby(SHARD_COLUMN, sort=False):
        table = ds.read_shard(shard, [*KEY_COLUMNS, *images])
        keep = pc.is_in(_row_keys(table), value_set=pa.array(_frame_keys(rows)))
        parts.append(table.filter(keep).to_pandas())
    found = pd.concat(parts, ignore_index=True)
    out = df.merge(found, on=list(KEY_COLUMNS), how="left", validate="one_to_one")
    if decode:
        for c in images:
            out[c] = [_decode(ds, b, row, c) for b, (_, row) in zip(out[c], out.iterrows())]
    return out


def _decode(ds: Dataset, data: object, row: pd.Series, column: str) -> np.ndarray | None:
    """One frame decoded; a frame that does not decode is a SchemaError naming its shard, episode and step."""
    if not isinstance(data, bytes):
        return None
    path = ds.shard_path(row[SHARD_COLUMN])
    with naming_frames(path, column, [row["episode_id"]], [row["step"]]):
        return decode_image(data, 0)


def _row_keys(table: pa.Table) -> pa.Array:
    steps = pc.cast(table.column("step"), pa.string())
    return pc.binary_join_element_wise(table.column("episode_id"), steps, "\x1f")


def _frame_keys(df: pd.DataFrame) -> list[str]:
    return [f"{e}\x1f{s}" for e, s in zip(df["episode_id"], df["step"])]


def _empty(columns: Sequence[str] | None, where: Filter | None) -> pd.DataFrame:
    names = list(KEY_COLUMNS) + [SHARD_COLUMN]
    names += [c for c in (columns if columns is not None else [*_RAW, *_LABEL]) if c not in IMAGE_COLUMNS and c not in names]
    names += sorted(c for c in (where.columns if where is not None else ()) if c not in names)
    return pd.DataFrame(columns=names)


def _open(dataset: Dataset | str) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else Dataset.open(str(dataset))
