"""Arrow schemas of the on-disk dataset: raw episode steps and label rows (schema_version 2).

Version 2 added the dynamic pathway's similarities ``sim_dyn_pos`` / ``sim_dyn_desc`` to label rows (version-1
label sets carry another hash and are relabelled) and the raw column ``scenario`` (version-1 raw shards read it
as ``free``: see ``ADDED_COLUMNS``).

The schemas are the contract between stages. Conventions:

* Frames: the ego frame has x forward, y left (metres); yaw is counter-clockwise in radians.
* RLDS layout: row ``t`` holds observation ``t``, the action taken from it and the events observed on
  arriving at it. Every episode ends with a row carrying the last observation, ``is_last = true`` and a
  null action. The reward of the transition ``t -> t+1`` is the label ``reward`` of row ``t+1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 2
FORMAT_NAME = "drive-vlm-rl"

#: Number of route points ahead of the ego, in the ego frame, stored per step (state vector input).
ROUTE_AHEAD_POINTS = 8
#: Spacing in metres between consecutive ``route_ahead`` points.
ROUTE_AHEAD_SPACING_M = 4.0

#: Parquet key-value metadata keys.
META_SCHEMA_VERSION = b"drive_vlm_rl.schema_version"
META_KIND = b"drive_vlm_rl.kind"
META_LABEL_SET_HASH = b"drive_vlm_rl.label_set_hash"

AGENT_KINDS = ("vehicle", "pedestrian", "cyclist", "motorcycle", "static")

AGENT_TYPE = pa.struct(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("x", pa.float32(), nullable=False),
        pa.field("y", pa.float32(), nullable=False),
        pa.field("yaw", pa.float32(), nullable=False),
        pa.field("speed", pa.float32(), nullable=False),
        pa.field("length", pa.float32(), nullable=False),
        pa.field("width", pa.float32(), nullable=False),
    ]
)

#: A variable-size list checked to hold 2 values on write: Parquet (Arrow 23) cannot round-trip a nullable
#: fixed-size list, and the last row of every episode has a null action.
ACTION_TYPE = pa.list_(pa.float32())
ACTION_SIZE = 2
POINT_TYPE = pa.list_(pa.float32(), 2)

RAW_STEP_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        # time and origin
        pa.field("t", pa.float64(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("map", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("policy", pa.string(), nullable=False),
        # the scenario the episode ran (collect.scenarios): "free" is the town's own traffic
        pa.field("scenario", pa.string(), nullable=False),
        # images
        pa.field("bev", pa.binary(), nullable=False),
        pa.field("camera", pa.binary(), nullable=True),
        # ego
        pa.field("x", pa.float64(), nullable=False),
        pa.field("y", pa.float64(), nullable=False),
        pa.field("yaw", pa.float32(), nullable=False),
        pa.field("speed", pa.float32(), nullable=False),
        pa.field("steer", pa.float32(), nullable=False),
        pa.field("throttle", pa.float32(), nullable=False),
        pa.field("brake", pa.float32(), nullable=False),
        pa.field("lateral_offset", pa.float32(), nullable=False),
        pa.field("heading_error", pa.float32(), nullable=False),
        pa.field("route_progress", pa.float32(), nullable=False),
        pa.field("route_completion", pa.float32(), nullable=False),
        pa.field("distance_to_goal", pa.float32(), nullable=False),
        pa.field("route_ahead", pa.list_(POINT_TYPE, ROUTE_AHEAD_POINTS), nullable=False),
        # scene (simulator ground truth, ego frame)
        pa.field("agents", pa.list_(AGENT_TYPE), nullable=False),
        # action taken from this observation; null on the last row
        pa.field("action", ACTION_TYPE, nullable=True),
        # events observed on arriving at this observation
        pa.field("collision", pa.bool_(), nullable=False),
        pa.field("collision_with", pa.string(), nullable=True),
        pa.field("off_road", pa.bool_(), nullable=False),
        pa.field("red_light", pa.bool_(), nullable=False),
        pa.field("stuck", pa.bool_(), nullable=False),
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("is_last", pa.bool_(), nullable=False),
    ]
)

DETECTION_TYPE = pa.struct(
    [
        pa.field("cls", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        # x0, y0, x1, y1 in pixels of the gated image
        pa.field("box", pa.list_(pa.float32(), 4), nullable=False),
    ]
)

LABEL_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        # static pathway
        pa.field("sim_pos", pa.float32(), nullable=False),
        pa.field("sim_neg", pa.float32(), nullable=False),
        pa.field("r_static", pa.float32(), nullable=False),
        # gate
        pa.field("gate", pa.bool_(), nullable=False),
        pa.field("gate_source", pa.string(), nullable=False),
        pa.field("detections", pa.list_(DETECTION_TYPE), nullable=False),
        # dynamic pathway (null where the gate did not fire)
        pa.field("vlm_text", pa.string(), nullable=True),
        pa.field("vlm_json", pa.string(), nullable=True),
        pa.field("vlm_ok", pa.bool_(), nullable=True),
        # image vs positive_dynamic and vs the description; null where nothing was described
        pa.field("sim_dyn_pos", pa.float32(), nullable=True),
        pa.field("sim_dyn_desc", pa.float32(), nullable=True),
        pa.field("r_dynamic", pa.float32(), nullable=False),
        # synthesis
        pa.field("semantic", pa.float32(), nullable=False),
        pa.field("desired_speed", pa.float32(), nullable=False),
        pa.field("f_speed", pa.float32(), nullable=False),
        pa.field("f_center", pa.float32(), nullable=False),
        pa.field("f_angle", pa.float32(), nullable=False),
        pa.field("f_stability", pa.float32(), nullable=False),
        pa.field("penalty", pa.float32(), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
    ]
)

KEY_COLUMNS = ("episode_id", "step")
#: Raw columns holding encoded images; readers leave them out unless asked for.
IMAGE_COLUMNS = ("bev", "camera")

SCHEMAS = {"episodes": RAW_STEP_SCHEMA, "labels": LABEL_SCHEMA}


@dataclass(frozen=True)
class AddedColumn:
    """A column that schema ``version`` added: shards written before it lack the column, and a reader gives
    them ``default`` in every row, so old datasets read like new ones without being rewritten."""

    version: int
    default: Any


#: Per kind, the columns added after version 1 that older shards are read with.
ADDED_COLUMNS: dict[str, dict[str, AddedColumn]] = {
    "episodes": {"scenario": AddedColumn(version=2, default="free")},
    "labels": {},
}


def with_metadata(schema: pa.Schema, kind: str, label_set_hash: str | None = None) -> pa.Schema:
    """The schema with the Parquet metadata that lets a reader check what a shard is."""
    meta = {META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(), META_KIND: kind.encode()}
    if label_set_hash is not None:
        meta[META_LABEL_SET_HASH] = label_set_hash.encode()
    return schema.with_metadata(meta)
