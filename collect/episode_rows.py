"""One episode's observations as rows of ``data_schema.RAW_STEP_SCHEMA`` (RLDS layout).

Values are gathered column-wise in plain lists while the episode runs and turned into Arrow arrays once at
the end, so the per-step cost is a few list appends plus the image encoding. Images are encoded as they
arrive, which keeps only compressed bytes in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from collect.backend import Observation
from collect.route import to_ego_frame, wrap_angle
from collect.scenarios import FREE
from data_schema import RAW_STEP_SCHEMA, ROUTE_AHEAD_POINTS, encode_jpeg, encode_png
from data_schema.schema import ACTION_SIZE, ACTION_TYPE, AGENT_TYPE, POINT_TYPE

_FLOAT32_COLUMNS = (
    "yaw", "speed", "steer", "throttle", "brake", "lateral_offset", "heading_error",
    "route_progress", "route_completion", "distance_to_goal",
)  # fmt: skip
_BOOL_COLUMNS = ("collision", "off_road", "red_light", "stuck", "terminated", "truncated", "is_last")


@dataclass(frozen=True)
class StepFlags:
    """How the episode stands at an observation (all false except on the final row)."""

    stuck: bool = False
    terminated: bool = False
    truncated: bool = False
    is_last: bool = False


class EpisodeRows:
    """Accumulates the rows of one episode; ``table()`` returns them as an Arrow table in schema order."""

    def __init__(self, episode_id: str, seed: int, policy: str, backend: str, map_name: str, scenario: str = FREE) -> None:
        self.episode_id = episode_id
        self._constants = {"seed": seed, "policy": policy, "backend": backend, "map": map_name, "scenario": scenario}
        self._columns: dict[str, list] = {
            name: [] for name in ("t", "bev", "camera", "x", "y", "collision_with", *_FLOAT32_COLUMNS, *_BOOL_COLUMNS)
        }
        self._route_ahead: list[np.ndarray] = []
        self._actions: list[np.ndarray | None] = []
        self._agent_counts: list[int] = []
        self._agent_kinds: list[str] = []
        self._agent_values: list[np.ndarray] = []  # per step (n, 6): x, y, yaw, speed, length, width (ego frame)
        self._last_added = False

    def __len__(self) -> int:
        return len(self._actions)

    def add(self, obs: Observation, bev: np.ndarray, action: np.ndarray | None, flags: StepFlags = StepFlags()) -> None:
        """Append the row of ``obs``: ``action`` is what the policy did from it, None only on the final row."""
        if self._last_added:
            raise ValueError(f"episode {self.episode_id}: a row was added after the final (is_last) row")
        if (action is None) != flags.is_last:
            raise ValueError(f"episode {self.episode_id}: the action must be null exactly on the is_last row")
        route = obs.route
        ahead = np.asarray(route.ahead, dtype=np.float32)
        if ahead.shape != (ROUTE_AHEAD_POINTS, 2):
            raise ValueError(f"episode {self.episode_id}: route.ahead has shape {ahead.shape}, expected ({ROUTE_AHEAD_POINTS}, 2)")
        self._last_added = flags.is_last
        ego = obs.scene.ego
        col = self._columns
        col["t"].append(obs.t)
        col["bev"].append(encode_png(bev))
        col["camera"].append(encode_jpeg(obs.camera) if obs.camera is not None else None)
        col["x"].append(ego.x)
        col["y"].append(ego.y)
        col["yaw"].append(ego.yaw)
        col["speed"].append(obs.speed)
        col["steer"].append(obs.controls.steer)
        col["throttle"].append(obs.controls.throttle)
        col["brake"].append(obs.controls.brake)
        col["lateral_offset"].append(route.lateral_offset)
        col["heading_error"].append(route.heading_error)
        col["route_progress"].append(route.progress)
        col["route_completion"].append(route.completion)
        col["distance_to_goal"].append(route.distance_to_goal)
        col["collision"].append(obs.events.collision)
        col["collision_with"].append(obs.events.collision_with)
        col["off_road"].append(obs.events.off_road)
        col["red_light"].append(obs.events.red_light)
        col["stuck"].append(flags.stuck)
        col["terminated"].append(flags.terminated)
        col["truncated"].append(flags.truncated)
        col["is_last"].append(flags.is_last)
        self._route_ahead.append(ahead)
        self._actions.append(None if action is None else np.asarray(action, dtype=np.float32).reshape(ACTION_SIZE))
        self._add_agents(obs)

    def _add_agents(self, obs: Observation) -> None:
        agents = obs.scene.agents
        self._agent_counts.append(len(agents))
        if not agents:
            return
        ego = obs.scene.ego
        raw = np.array([(a.x, a.y, a.yaw, a.speed, a.length, a.width) for a in agents], dtype=np.float64)
        raw[:, :2] = to_ego_frame(raw[:, :2], ego)
        raw[:, 2] = wrap_angle(raw[:, 2] - ego.yaw)
        self._agent_kinds.extend(a.kind for a in agents)
        self._agent_values.append(raw)

    def table(self) -> pa.Table:
        """The episode's rows; the last one must have been added with ``is_last``."""
        if not self._last_added:
            raise ValueError(f"episode {self.episode_id}: no final (is_last) row yet")
        n = len(self)
        col = self._columns
        arrays: dict[str, pa.Array] = {
            "episode_id": pa.array([self.episode_id] * n, pa.string()),
            "step": pa.array(np.arange(n, dtype=np.int32)),
            "t": pa.array(np.asarray(col["t"], dtype=np.float64)),
            "backend": pa.array([self._constants["backend"]] * n, pa.string()),
            "map": pa.array([self._constants["map"]] * n, pa.string()),
            "seed": pa.array(np.full(n, self._constants["seed"], dtype=np.int64)),
            "policy": pa.array([self._constants["policy"]] * n, pa.string()),
            "scenario": pa.array([self._constants["scenario"]] * n, pa.string()),
            "bev": pa.array(col["bev"], pa.binary()),
            "camera": pa.array(col["camera"], pa.binary()),
            "x": pa.array(np.asarray(col["x"], dtype=np.float64)),
            "y": pa.array(np.asarray(col["y"], dtype=np.float64)),
            "route_ahead": self._route_ahead_array(),
            "agents": self._agents_array(),
            "action": self._action_array(),
            "collision_with": pa.array(col["collision_with"], pa.string()),
        }
        for name in _FLOAT32_COLUMNS:
            arrays[name] = pa.array(np.asarray(col[name], dtype=np.float32))
        for name in _BOOL_COLUMNS:
            arrays[name] = pa.array(np.asarray(col[name], dtype=bool))
        return pa.Table.from_arrays([arrays[name] for name in RAW_STEP_SCHEMA.names], schema=RAW_STEP_SCHEMA)

    def _route_ahead_array(self) -> pa.Array:
        flat = pa.array(np.stack(self._route_ahead).reshape(-1))
        points = pa.FixedSizeListArray.from_arrays(flat, type=POINT_TYPE)
        return pa.FixedSizeListArray.from_arrays(points, type=RAW_STEP_SCHEMA.field("route_ahead").type)

    def _action_array(self) -> pa.Array:
        missing = np.array([a is None for a in self._actions])
        sizes = np.where(missing, 0, ACTION_SIZE)
        offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
        values = [a for a in self._actions if a is not None]
        flat = pa.array(np.concatenate(values) if values else np.zeros(0, np.float32))
        return pa.ListArray.from_arrays(offsets, flat, type=ACTION_TYPE, mask=pa.array(missing))

    def _agents_array(self) -> pa.Array:
        offsets = pa.array(np.concatenate([[0], np.cumsum(self._agent_counts)]).astype(np.int32))
        values = np.concatenate(self._agent_values) if self._agent_values else np.zeros((0, 6))
        fields = [pa.array(self._agent_kinds, pa.string())]
        fields += [pa.array(values[:, i].astype(np.float32)) for i in range(6)]
        structs = pa.StructArray.from_arrays(fields, fields=list(AGENT_TYPE))
        return pa.ListArray.from_arrays(offsets, structs, type=RAW_STEP_SCHEMA.field("agents").type)
