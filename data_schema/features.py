"""The policy's state vector, computed from raw step columns.

It lives with the schema because both the collector (running a trained policy) and the trainer (building
replay) must compute it identically from the same columns.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from data_schema.schema import ROUTE_AHEAD_POINTS

#: Raw columns the state vector is computed from.
STATE_COLUMNS = ("speed", "steer", "throttle", "brake", "lateral_offset", "heading_error", "route_ahead")
#: speed, last steer, last throttle-brake, lateral offset, heading error, route points ahead (x, y).
STATE_DIM = 5 + 2 * ROUTE_AHEAD_POINTS

_SPEED_SCALE = 10.0  # m/s
_OFFSET_SCALE = 2.0  # m
_ROUTE_SCALE = 20.0  # m


def state_vector(
    speed: float, steer: float, throttle: float, brake: float, lateral_offset: float, heading_error: float, route_ahead: np.ndarray
) -> np.ndarray:
    """The scaled float32 state of one step."""
    head = np.array([speed / _SPEED_SCALE, steer, throttle - brake, lateral_offset / _OFFSET_SCALE, heading_error], dtype=np.float32)
    return np.concatenate([head, np.asarray(route_ahead, dtype=np.float32).reshape(-1) / _ROUTE_SCALE])


def state_matrix(table: pa.Table) -> np.ndarray:
    """``(N, STATE_DIM)`` float32 states of every row of a table holding ``STATE_COLUMNS``."""
    col = {name: table.column(name).to_numpy().astype(np.float32) for name in STATE_COLUMNS if name != "route_ahead"}
    ahead = table.column("route_ahead").combine_chunks().flatten().flatten().to_numpy().astype(np.float32)
    head = np.stack(
        [
            col["speed"] / _SPEED_SCALE,
            col["steer"],
            col["throttle"] - col["brake"],
            col["lateral_offset"] / _OFFSET_SCALE,
            col["heading_error"],
        ],
        axis=1,
    )
    return np.concatenate([head, ahead.reshape(len(head), -1) / _ROUTE_SCALE], axis=1)
