"""Small datasets for the train tests, written through data_schema like collect and annotate write them.

Every row is recognisable from its arrays alone: its BEV is a constant colour and its ``speed`` both encode
``(episode number, step)``, so a test can tell which row an observation, next observation or reward came from.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from data_schema import Dataset, encode_png
from data_schema.label_sets import spec_hash
from episode_tables import episode_table, label_table

FRAME = 32  # stored BEV side in the test datasets (the real rasteriser's is larger; replay downsamples either)
LABEL_SPEC: dict = {"reward": {}}
LABEL_HASH = spec_hash(LABEL_SPEC)


def frame_value(episode: int, step: int) -> int:
    return (episode * 50 + step * 3) % 256


def raw_episode(episode: int, steps: int, end: str = "terminated", prefix: str = "ep") -> pa.Table:
    """An episode of ``steps`` actions (``steps + 1`` rows) ending ``terminated`` or ``truncated``."""
    rows = steps + 1
    ending = [False] * steps + [True]
    x = np.cumsum(np.full(rows, 0.5))
    return episode_table(
        f"{prefix}{episode:03d}",
        rows,
        seed=episode,
        bev=[encode_png(np.full((FRAME, FRAME, 3), frame_value(episode, s), np.uint8)) for s in range(rows)],
        x=x,
        speed=[episode * 1000 + s for s in range(rows)],
        throttle=0.5,
        route_progress=x,
        route_completion=np.linspace(0, 0.5, rows),
        distance_to_goal=100 - x,
        action=[[0.01 * s, -0.01 * s] for s in range(steps)] + [None],
        collision=ending if end == "terminated" else False,
        collision_with=[None] * steps + ["vehicle" if end == "terminated" else None],
        terminated=ending if end == "terminated" else False,
        truncated=ending if end == "truncated" else False,
    )


def reward_of(episode: int, step: int) -> float:
    """The label reward of a row: distinct per row so a test can tell which row a reward came from."""
    return float(episode) + step / 1000.0


def labels_of(raw: pa.Table) -> pa.Table:
    """Labels whose reward tells which row they belong to (see :func:`reward_of`)."""
    episodes = [int(e[-3:]) for e in raw.column("episode_id").to_pylist()]
    return label_table(raw, reward=[reward_of(e, s) for e, s in zip(episodes, raw.column("step").to_pylist())])


def write_dataset(root: str, shards: dict[str, list[pa.Table]], labelled: set[str] | None = None, label_set: str = "test") -> Dataset:
    """Raw shards named as given, each holding its episodes, and label shards for ``labelled`` (default all)."""
    ds = Dataset.create(root)
    labels = ds.label_set(label_set)
    if not labels.exists():
        labels.write_document({"name": label_set, "hash": LABEL_HASH, "spec": LABEL_SPEC})
    for shard, episodes in shards.items():
        raw = pa.concat_tables(episodes)
        ds.write_episode_shard(shard, raw)
        if labelled is None or shard in labelled:
            labels.write_shard(shard, labels_of(raw), LABEL_HASH)
    return ds


#: TrainConfig overrides for tiny, fast networks.
TINY = dict(cnn_channels=(4, 8), feature_size=16, state_units=8, hidden_units=(16,), bev_size=16, batch_size=8, learning_starts=0)
