"""Schema-complete raw-step and label tables for the tests.

Every column has a plain default; a fixture passes only the columns its tests are about. A schema change is
then made here once instead of in every package's fixtures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from data_schema import LABEL_SCHEMA, RAW_STEP_SCHEMA, ROUTE_AHEAD_POINTS, encode_png

_SCALARS = (str, bytes, int, float, bool, np.generic, type(None))
_BLANK_BEV = encode_png(np.zeros((16, 16, 3), np.uint8))


def episode_table(episode_id: str, rows: int, **columns: Any) -> pa.Table:
    """One whole episode of ``rows`` rows: the last row ends it (terminated, null action) unless overridden.

    A scalar value fills its column; any other value must hold one entry per row.
    """
    last = [False] * (rows - 1) + [True]
    defaults: dict[str, Any] = {
        "episode_id": episode_id,
        "step": np.arange(rows),
        "t": 0.1 * np.arange(rows),
        "backend": "sumo",
        "map": "town",
        "seed": 0,
        "policy": "random",
        "scenario": "free",
        "bev": _BLANK_BEV,
        "camera": None,
        "x": np.arange(rows, dtype=np.float64),
        "y": 0.0,
        "yaw": 0.0,
        "speed": 0.0,
        "steer": 0.0,
        "throttle": 0.0,
        "brake": 0.0,
        "lateral_offset": 0.0,
        "heading_error": 0.0,
        "route_progress": np.arange(rows, dtype=np.float64),
        "route_completion": np.linspace(0.0, 1.0, rows),
        "distance_to_goal": np.arange(rows, 0, -1, dtype=np.float64),
        "route_ahead": [np.zeros((ROUTE_AHEAD_POINTS, 2)).tolist()] * rows,
        "agents": [[]] * rows,
        "action": [[0.0, 0.0]] * (rows - 1) + [None],
        "collision": False,
        "collision_with": None,
        "off_road": False,
        "red_light": False,
        "stuck": False,
        "terminated": last,
        "truncated": False,
        "is_last": last,
    }
    return _table(RAW_STEP_SCHEMA, rows, {**defaults, **_known(RAW_STEP_SCHEMA, columns)})


def label_table(raw: pa.Table, **columns: Any) -> pa.Table:
    """Labels keyed like ``raw``'s rows: zero scores, no gate, no VLM answer, unless overridden."""
    rows = raw.num_rows
    defaults: dict[str, Any] = {f.name: 0.0 for f in LABEL_SCHEMA if f.type == pa.float32()}
    defaults |= {
        "episode_id": raw.column("episode_id"),
        "step": raw.column("step"),
        "gate": False,
        "gate_source": "scene",
        "detections": [[]] * rows,
        "vlm_text": None,
        "vlm_json": None,
        "vlm_ok": None,
        "sim_dyn_pos": None,
        "sim_dyn_desc": None,
    }
    return _table(LABEL_SCHEMA, rows, {**defaults, **_known(LABEL_SCHEMA, columns)})


def _known(schema: pa.Schema, columns: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(columns) - set(schema.names))
    if unknown:
        raise KeyError(f"not schema columns: {unknown}")
    return columns


def _table(schema: pa.Schema, rows: int, values: dict[str, Any]) -> pa.Table:
    arrays = []
    for field in schema:
        value = values[field.name]
        if isinstance(value, _SCALARS):
            value = [value] * rows
        arrays.append(value if isinstance(value, pa.ChunkedArray) else pa.array(value, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
