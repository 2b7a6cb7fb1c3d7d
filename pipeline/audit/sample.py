"""The frames an audit report is computed from: a bounded, seeded sample of whole episodes.

Labelled shards are read in a seeded random order, whole episodes at a time, until ``max_frames`` frames are
held; each shard is reduced on reading to compact scalar columns, its agents to ground-truth flags
(``data_schema.groundtruth`` with the label set's own gate corridor): ``critical`` for the gate, and one
``hazard_<kind>`` column per hazard kind for the reward's validity. The sample says what it read.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from data_schema.dataset import Dataset
from data_schema.groundtruth import HAZARD_COLUMNS, HAZARD_KINDS, Corridor, HazardRule, hazards
from data_schema.label_sets import LabelSetInfo
from data_schema.query import PROGRESS_MIN_SHARDS, SHARD_COLUMN, iter_frames, labelled_shards
from data_schema.schema import KEY_COLUMNS
from pipeline.audit.config import ReportConfig

__all__ = ["HAZARD_PREFIX", "SAMPLE_COLUMNS", "Sample", "approaching", "describe_corridor", "event_types", "sample_frames", "truth_corridor"]

#: Raw and label columns the report reads for every sampled frame (no images, no VLM JSON; agents are
#: read as Arrow and reduced to the ground-truth flag ``critical`` at once).
SAMPLE_COLUMNS = (
    "t", "speed", "collision", "collision_with", "off_road", "stuck", "red_light", "terminated", "truncated", "is_last",
    "sim_pos", "sim_neg", "r_static", "gate", "gate_source", "detections", "vlm_text", "vlm_ok", "r_dynamic",
    "semantic", "desired_speed", "f_speed", "f_center", "f_angle", "f_stability", "penalty", "reward",
)  # fmt: skip
EVENT_TYPES = ("collision", "off-road", "stuck", "normal")
#: Sampled frames carry ``hazard_<kind>`` for every ``HAZARD_KINDS`` entry.
HAZARD_PREFIX = "hazard_"
#: Steps before a terminal event whose rewards show how the labels saw it coming.
APPROACH_STEPS = 10


@dataclass(frozen=True)
class Sample:
    """The frames a report is computed from and how they were chosen."""

    frames: pd.DataFrame
    detection_classes: dict[str, int]
    raw_shards: int
    labelled_shards: int
    labelled_frames: int
    shards_read: list[str]
    seed: int
    max_frames: int
    truth: str

    @property
    def complete(self) -> bool:
        return len(self.frames) == self.labelled_frames

    def describe(self) -> str:
        episodes = self.frames["episode_id"].nunique() if len(self.frames) else 0
        if self.complete:
            return f"All {len(self.frames):,} labelled frames ({episodes:,} episode(s) in {self.labelled_shards} shard(s)) were read."
        return (
            f"Sampled {len(self.frames):,} of {self.labelled_frames:,} labelled frames ({len(self.frames) / max(self.labelled_frames, 1):.1%}): "
            f"{episodes:,} whole episode(s) from {len(self.shards_read)} of {self.labelled_shards} labelled shard(s), "
            f"shards and episodes taken in a random order (seed {self.seed}) up to --max-frames {self.max_frames:,}."
        )


def sample_frames(dataset: Dataset, label_set: str, config: ReportConfig = ReportConfig(), progress: bool = True) -> Sample:
    """Read compact rows of whole episodes from randomly ordered shards until ``config.max_frames`` are held."""
    shards = labelled_shards(dataset, label_set)
    labels = dataset.label_set(label_set)
    sizes = {s: _num_rows(dataset, labels.shard_path(s)) for s in shards}
    truth = truth_corridor(labels.info(), config.corridor_length, config.corridor_half_width)
    rng = np.random.default_rng(config.seed)
    order = [shards[i] for i in rng.permutation(len(shards))]
    kept: list[pd.DataFrame] = []
    classes: collections.Counter[str] = collections.Counter()
    held = 0
    read: list[str] = []
    bar = tqdm(total=config.max_frames, desc=f"sampling {label_set}", unit="frame", disable=not progress or len(order) < PROGRESS_MIN_SHARDS, leave=False)
    for df in iter_frames(dataset, label_set, columns=SAMPLE_COLUMNS, shards=order, progress=False):
        if held >= config.max_frames:
            break
        shard = df[SHARD_COLUMN].iloc[0] if len(df) else None
        df = _take_episodes(df, config.max_frames - held, rng, first=not kept)
        if df.empty:
            break  # no whole episode fits what is left of the budget: more shards would not change that
        found = dict(dataset.readable([shard], lambda s: dataset.read_shard(s, list(HAZARD_COLUMNS))))
        if shard not in found:
            continue  # unreadable ground truth (skip_bad): the shard is listed in dataset.bad_shards
        read.append(shard)
        raw = found[shard]
        truth_frame = pd.DataFrame({k: raw.column(k).to_numpy() for k in KEY_COLUMNS})
        for kind, flags in hazards(raw, HazardRule(corridor=truth)).items():
            truth_frame[HAZARD_PREFIX + kind] = flags
        truth_frame["critical"] = truth_frame[HAZARD_PREFIX + "critical_agent"]
        df = df.merge(truth_frame, on=list(KEY_COLUMNS), how="left", validate="one_to_one")
        classes.update(det["cls"] for dets in df["detections"] for det in dets)
        kept.append(df)
        held += len(df)
        bar.update(len(df))
    bar.close()
    empty = [*SAMPLE_COLUMNS, SHARD_COLUMN, "critical", *(HAZARD_PREFIX + k for k in HAZARD_KINDS)]
    frames = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=empty)
    frames["event"] = event_types(frames)
    frames["approach"] = approaching(frames, APPROACH_STEPS)
    return Sample(
        frames, dict(classes), len(dataset.shards()), len(shards), sum(sizes.values()), read, config.seed, config.max_frames, describe_corridor(truth)
    )


def event_types(df: pd.DataFrame) -> pd.Series:
    """The terminal event of each row: collision, off-road, stuck (in that precedence) or normal."""
    if df.empty:
        return pd.Series([], dtype=object)
    kinds = np.select(
        [df["collision"].to_numpy(bool), df["off_road"].to_numpy(bool), df["stuck"].to_numpy(bool)],
        list(EVENT_TYPES[:3]),
        default="normal",
    )
    return pd.Series(kinds, index=df.index)


def approaching(df: pd.DataFrame, steps: int) -> pd.Series:
    """For each row, the terminal event its episode reaches within ``steps`` steps after it, else "normal"."""
    out = pd.Series("normal", index=df.index, dtype=object)
    events = df[df["event"] != "normal"]
    for _, hit in events.iterrows():
        before = (df["episode_id"] == hit["episode_id"]) & (df["step"] < hit["step"]) & (df["step"] >= hit["step"] - steps)
        out[before & (out == "normal")] = hit["event"]
    out[df["event"] != "normal"] = "(event row)"
    return out

def truth_corridor(info: LabelSetInfo, length: float | None = None, half_width: float | None = None) -> Corridor:
    """The ground-truth corridor of a label set (the one its gate was scored against), then the overrides.

    Label sets annotated with a camera gate still record the corridor; settings a spec lacks take defaults.
    """
    corridor = info.corridor
    return Corridor(
        corridor.length if length is None else length, corridor.half_width if half_width is None else half_width, corridor.kinds
    )


def describe_corridor(corridor: Corridor) -> str:
    return (
        f"a {'/'.join(corridor.kinds)} whose footprint reaches into the corridor {corridor.length:g} m ahead "
        f"and {corridor.half_width:g} m either side of the ego's centre line"
    )


def _take_episodes(df: pd.DataFrame, budget: int, rng: np.random.Generator, first: bool) -> pd.DataFrame:
    """Whole episodes of ``df`` in random order that fit ``budget``; the first shard always yields something."""
    sizes = df.groupby("episode_id", sort=False).size()
    if sizes.sum() <= budget:
        return df
    keep, total = [], 0
    for episode in sizes.index[rng.permutation(len(sizes))]:
        if total + sizes[episode] <= budget:
            keep.append(episode)
            total += sizes[episode]
    if not keep and first:
        episode = sizes.index[0]
        return df[df["episode_id"] == episode].sort_values("step").head(budget).reset_index(drop=True)
    return df[df["episode_id"].isin(keep)].reset_index(drop=True)


def _num_rows(ds: Dataset, path: str) -> int:
    with ds.fs.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows
