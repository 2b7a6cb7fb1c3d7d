"""Small datasets for the train tests, written through data_schema like collect and annotate write them.

Every row is recognisable from its arrays alone: its BEV is a constant colour and its ``speed`` both encode
``(episode number, step)``, so a test can tell which row an observation, next observation or reward came from.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from data_schema import LABEL_SCHEMA, ROUTE_AHEAD_POINTS, Dataset, encode_png
from data_schema.schema import AGENT_TYPE

FRAME = 32  # stored BEV side in the test datasets (the real rasteriser's is larger; replay downsamples either)
LABEL_HASH = "test-hash-0001"


def frame_value(episode: int, step: int) -> int:
    return (episode * 50 + step * 3) % 256


def raw_episode(episode: int, steps: int, end: str = "terminated", prefix: str = "ep") -> pa.Table:
    """An episode of ``steps`` actions (``steps + 1`` rows) ending ``terminated`` or ``truncated``."""
    rows = steps + 1
    last = [False] * steps + [True]
    value = [frame_value(episode, s) for s in range(rows)]
    frames = [encode_png(np.full((FRAME, FRAME, 3), v, np.uint8)) for v in value]
    speed = np.array([episode * 1000 + s for s in range(rows)], np.float32)
    x = np.cumsum(np.full(rows, 0.5))
    return pa.table(
        {
            "episode_id": [f"{prefix}{episode:03d}"] * rows,
            "step": pa.array(range(rows), pa.int32()),
            "t": [0.1 * i for i in range(rows)],
            "backend": ["sumo"] * rows,
            "map": ["town"] * rows,
            "seed": [episode] * rows,
            "policy": ["random"] * rows,
            "bev": frames,
            "camera": pa.array([None] * rows, pa.binary()),
            "x": x,
            "y": np.zeros(rows),
            "yaw": np.zeros(rows, np.float32),
            "speed": speed,
            "steer": np.zeros(rows, np.float32),
            "throttle": np.full(rows, 0.5, np.float32),
            "brake": np.zeros(rows, np.float32),
            "lateral_offset": np.zeros(rows, np.float32),
            "heading_error": np.zeros(rows, np.float32),
            "route_progress": x.astype(np.float32),
            "route_completion": np.linspace(0, 0.5, rows, dtype=np.float32),
            "distance_to_goal": (100 - x).astype(np.float32),
            "route_ahead": [np.zeros((ROUTE_AHEAD_POINTS, 2), np.float32).tolist()] * rows,
            "agents": pa.array([[]] * rows, pa.list_(AGENT_TYPE)),
            "action": [[0.01 * s, -0.01 * s] for s in range(steps)] + [None],
            "collision": [False] * steps + [end == "terminated"],
            "collision_with": pa.array([None] * steps + ["vehicle" if end == "terminated" else None], pa.string()),
            "off_road": [False] * rows,
            "red_light": [False] * rows,
            "stuck": [False] * rows,
            "terminated": [False] * steps + [end == "terminated"],
            "truncated": [False] * steps + [end == "truncated"],
            "is_last": last,
        }
    )


def reward_of(episode: int, step: int) -> float:
    """The label reward of a row: distinct per row so a test can tell which row a reward came from."""
    return float(episode) + step / 1000.0


def label_table(raw: pa.Table) -> pa.Table:
    n = raw.num_rows
    episodes = [int(e[-3:]) for e in raw.column("episode_id").to_pylist()]
    steps = raw.column("step").to_pylist()
    values = {f.name: np.zeros(n, np.float32) for f in LABEL_SCHEMA if f.type == pa.float32()}
    values["reward"] = np.array([reward_of(e, s) for e, s in zip(episodes, steps)], np.float32)
    return pa.table(
        {
            "episode_id": raw.column("episode_id"),
            "step": raw.column("step"),
            **values,
            "gate": [False] * n,
            "gate_source": ["scene"] * n,
            "detections": pa.array([[]] * n, LABEL_SCHEMA.field("detections").type),
            "vlm_text": pa.array([None] * n, pa.string()),
            "vlm_json": pa.array([None] * n, pa.string()),
            "vlm_ok": pa.array([None] * n, pa.bool_()),
        }
    )


def write_dataset(root: str, shards: dict[str, list[pa.Table]], labelled: set[str] | None = None, label_set: str = "test") -> Dataset:
    """Raw shards named as given, each holding its episodes, and label shards for ``labelled`` (default all)."""
    ds = Dataset.create(root)
    labels = ds.label_set(label_set)
    if not labels.exists():
        labels.write_spec({"hash": LABEL_HASH, "spec": {"reward": {}}})
    for shard, episodes in shards.items():
        raw = pa.concat_tables(episodes)
        ds.write_episode_shard(shard, raw)
        if labelled is None or shard in labelled:
            labels.write_shard(shard, label_table(raw), LABEL_HASH)
    return ds


#: TrainConfig overrides for tiny, fast networks.
TINY = dict(cnn_channels=(4, 8), feature_size=16, state_units=8, hidden_units=(16,), bev_size=16, batch_size=8, learning_starts=0)
