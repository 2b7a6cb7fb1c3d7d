"""Ground truth from the simulator's ``agents`` column: what makes a frame dangerous, and how well a gate sees it.

Every stage that scores something against the simulator's truth reads it from here: annotate's scene gate
and its gate-quality counts, the audit report's recall and semantic-score AUROC, the captions and VLM
targets the reward models are fine-tuned on, and the scenario checks. Ground truth trains and measures the
reward models; it is never the reward itself.

Agents are stored in the ego frame (x forward, y left, metres; yaw relative to the ego's heading), with the
ego at the origin. All functions here are vectorised over a whole shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_schema.episodes import EpisodeOrder
from data_schema.schema import AGENT_KINDS

__all__ = [
    "CRITICAL_KINDS",
    "Corridor",
    "EgoBox",
    "GateQuality",
    "HAZARD_COLUMNS",
    "HAZARD_KINDS",
    "HazardRule",
    "HazardSources",
    "MOTIONS",
    "agent_motion",
    "agent_table",
    "footprint_reach",
    "critical_in_corridor",
    "hazard_sources",
    "hazards",
    "nearest_per_row",
    "time_to_collision",
]

#: Road users whose presence ahead wakes the VLM (DriveVLM-RL's attention gate).
CRITICAL_KINDS = ("pedestrian", "cyclist", "motorcycle")
#: Frame-level hazard classes of :func:`hazards`; ``any`` is their union.
HAZARD_KINDS = ("critical_agent", "vehicle_close", "event_soon", "any")
#: Raw step columns :func:`hazards` and :func:`hazard_sources` read.
HAZARD_COLUMNS = ("episode_id", "step", "t", "speed", "agents", "collision", "off_road")
#: How a road user moves relative to the ego's heading (:func:`agent_motion`).
MOTIONS = ("standing", "crossing_from_left", "crossing_from_right", "same_way", "oncoming")


@dataclass(frozen=True)
class Corridor:
    """The rectangle ``0 <= x <= length``, ``|y| <= half_width`` ahead of the ego (its own lane by default).

    A road user of ``kinds`` whose footprint reaches into it makes a frame safety-critical: the scene gate
    fires on it and a camera gate is scored against it.
    """

    length: float = 25.0
    half_width: float = 1.75
    kinds: tuple[str, ...] = CRITICAL_KINDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if not (np.isfinite(self.length) and self.length > 0 and np.isfinite(self.half_width) and self.half_width > 0):
            raise ValueError(f"corridor length and half width must be positive metres, got {self.length} / {self.half_width}")
        unknown = sorted(set(self.kinds) - set(AGENT_KINDS))
        if not self.kinds or unknown:
            raise ValueError(f"corridor kinds: {unknown or 'empty'}; agent kinds are {', '.join(AGENT_KINDS)}")


@dataclass(frozen=True)
class EgoBox:
    """The ego's footprint around the frame's origin (the collector's default passenger car)."""

    length: float = 4.5
    width: float = 1.9


def agent_table(agents: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The agents of every row flattened: ``(row of each agent, {field: values})``, fields as numpy arrays."""
    if isinstance(agents, pa.ChunkedArray):
        agents = agents.combine_chunks()
    values = agents.flatten()
    parents = pc.list_parent_indices(agents).to_numpy() if len(values) else np.zeros(0, np.int64)
    fields = {name: values.field(name).to_numpy(zero_copy_only=False) for name in ("kind", "x", "y", "yaw", "speed", "length", "width")}
    return parents, fields


def footprint_reach(yaw: Any, length: Any, width: Any) -> tuple[np.ndarray, np.ndarray]:
    """Half extents along ego x and y of the axis-aligned box around a footprint rotated by ``yaw``."""
    cos, sin = np.abs(np.cos(yaw)), np.abs(np.sin(yaw))
    return cos * np.asarray(length) / 2 + sin * np.asarray(width) / 2, sin * np.asarray(length) / 2 + cos * np.asarray(width) / 2


def _in_corridor(fields: dict[str, np.ndarray], length: Any, half_width: float, kinds: tuple[str, ...]) -> np.ndarray:
    reach_x, reach_y = footprint_reach(fields["yaw"], fields["length"], fields["width"])
    return (
        np.isin(fields["kind"], list(kinds))
        & (fields["x"] + reach_x > 0.0)
        & (fields["x"] - reach_x < length)
        & (np.abs(fields["y"]) - reach_y < half_width)
    )


def critical_in_corridor(agents: pa.Array | pa.ChunkedArray, corridor: Corridor) -> np.ndarray:
    """Per row: does a road user of ``corridor.kinds`` reach into the corridor (the box around its rotated
    footprint overlaps it, so a cyclist whose centre is just outside but whose body is inside counts)."""
    parents, fields = agent_table(agents)
    fired = np.zeros(len(agents), dtype=bool)
    fired[parents[_in_corridor(fields, corridor.length, corridor.half_width, corridor.kinds)]] = True
    return fired


def time_to_collision(
    fields: dict[str, np.ndarray], ego_speed: np.ndarray, ego: EgoBox = EgoBox(), horizon_s: float = 10.0
) -> np.ndarray:
    """Per agent: seconds until its footprint meets the ego's if both keep their velocities; ``inf`` beyond
    ``horizon_s`` or never; 0 when they overlap already.

    ``ego_speed`` is given per agent (the speed of the ego in the agent's row). The relative motion is a ray
    against the ego's box grown by the agent's reach (slab test), so crossing, oncoming and following
    agents are all treated by the same rule.
    """
    reach_x, reach_y = footprint_reach(fields["yaw"], fields["length"], fields["width"])
    half = (ego.length / 2 + reach_x, ego.width / 2 + reach_y)
    position = (np.asarray(fields["x"], np.float64), np.asarray(fields["y"], np.float64))
    velocity = (
        fields["speed"] * np.cos(fields["yaw"]) - np.asarray(ego_speed, np.float64),
        fields["speed"] * np.sin(fields["yaw"]),
    )
    enter = np.zeros(len(position[0]))
    leave = np.full(len(position[0]), np.inf)
    for p, v, h in zip(position, velocity, half):
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = (-h - p) / v, (h - p) / v
        # No relative motion along this axis: inside the slab for ever, or never (both ends at +inf).
        still = v == 0
        t0 = np.where(still, np.where(np.abs(p) < h, -np.inf, np.inf), t0)
        t1 = np.where(still, np.inf, t1)
        enter = np.maximum(enter, np.minimum(t0, t1))
        leave = np.minimum(leave, np.maximum(t0, t1))
    ttc = np.where((enter <= leave) & (leave >= 0), enter, np.inf)
    return np.where(ttc <= horizon_s, ttc, np.inf)


def agent_motion(fields: dict[str, np.ndarray], standing_mps: float = 0.3) -> np.ndarray:
    """Per agent, one of ``MOTIONS``: standing below ``standing_mps``; crossing where its heading is closer
    to the ego's sideways axis than to its forward one (from the left: moving towards -y, to the ego's right);
    else going the ego's way or coming towards it."""
    yaw = np.asarray(fields["yaw"], np.float64)
    along, across = np.cos(yaw), np.sin(yaw)
    motion = np.where(along >= 0, "same_way", "oncoming").astype(object)
    sideways = np.abs(across) > np.abs(along)
    motion[sideways & (across < 0)] = "crossing_from_left"
    motion[sideways & (across > 0)] = "crossing_from_right"
    motion[np.asarray(fields["speed"]) < standing_mps] = "standing"
    return motion


@dataclass(frozen=True)
class HazardRule:
    """How :func:`hazards` decides that a frame is dangerous.

    * ``critical_agent``: a pedestrian, cyclist or motorcycle reaches into ``corridor``;
    * ``vehicle_close``: a vehicle reaches into the ego's lane ahead within braking distance,
      ``max(min_gap_m, speed * reaction_s + speed^2 / (2 * decel))``;
    * ``event_soon``: the episode has a collision or leaves the road within the next ``event_horizon_s``.
    """

    corridor: Corridor = Corridor()
    reaction_s: float = 1.0
    decel: float = 4.0
    min_gap_m: float = 6.0
    event_horizon_s: float = 1.0
    ego: EgoBox = EgoBox()


@dataclass(frozen=True)
class HazardSources:
    """What makes each row of a table dangerous under a :class:`HazardRule`: the road users and events that
    captions and VLM targets describe, so that they say exactly what :func:`hazards` counts.

    ``parents`` and ``fields`` are the table's :func:`agent_table`; ``gap_m`` is each agent's distance ahead
    of the ego's front bumper to the near side of its footprint (0 where they overlap along x).
    ``critical`` and ``vehicle`` hold, per row, the index into the agents of the nearest critical road user
    in the corridor and of the nearest vehicle within braking distance in the lane, or -1;
    ``event_row`` the row of the collision or off-road event within the horizon (this row or a later one of
    its episode), or -1.
    """

    parents: np.ndarray
    fields: dict[str, np.ndarray]
    gap_m: np.ndarray
    critical: np.ndarray
    vehicle: np.ndarray
    event_row: np.ndarray

    def critical_kind(self) -> np.ndarray:
        """Per row, the kind of its nearest critical road user in the corridor (``"pedestrian"``, ...), ``""`` without one."""
        out = np.full(len(self.critical), "", dtype=object)
        has = self.critical >= 0
        out[has] = np.asarray(self.fields["kind"], dtype=object)[self.critical[has]]
        return out.astype(str)

    def kinds(self) -> dict[str, np.ndarray]:
        """Per row, one bool array per ``HAZARD_KINDS`` entry."""
        critical, close, soon = self.critical >= 0, self.vehicle >= 0, self.event_row >= 0
        return {"critical_agent": critical, "vehicle_close": close, "event_soon": soon, "any": critical | close | soon}


def hazard_sources(table: pa.Table, rule: HazardRule = HazardRule()) -> HazardSources:
    """The sources of every row's hazards. Needs ``HAZARD_COLUMNS``; rows may come in any order (events are
    looked up along each episode)."""
    parents, fields = agent_table(table.column("agents"))
    speed = table.column("speed").to_numpy().astype(np.float64)
    reach_x, _ = footprint_reach(fields["yaw"], fields["length"], fields["width"])
    gap_m = np.maximum(fields["x"] - reach_x - rule.ego.length / 2, 0.0)
    braking = np.maximum(rule.min_gap_m, speed * rule.reaction_s + speed**2 / (2 * rule.decel))
    critical = _in_corridor(fields, rule.corridor.length, rule.corridor.half_width, rule.corridor.kinds)
    close = _in_corridor(fields, braking[parents], rule.corridor.half_width, ("vehicle",))
    n = table.num_rows
    return HazardSources(
        parents, fields, gap_m, nearest_per_row(parents, critical, gap_m, n), nearest_per_row(parents, close, gap_m, n), _event_rows(table, rule.event_horizon_s)
    )


def hazards(table: pa.Table, rule: HazardRule = HazardRule()) -> dict[str, np.ndarray]:
    """Per row, one bool array per ``HAZARD_KINDS`` entry (see :class:`HazardRule`)."""
    return hazard_sources(table, rule).kinds()


def nearest_per_row(parents: np.ndarray, chosen: np.ndarray, distance: np.ndarray, rows: int) -> np.ndarray:
    """Per row, the index (into the agent table) of its ``chosen`` agent with the least ``distance``, or -1;
    ties go to the agent listed first."""
    out = np.full(rows, -1, dtype=np.int64)
    index = np.flatnonzero(chosen)
    order = index[np.lexsort((index, distance[index], parents[index]))]
    first = np.r_[True, parents[order][1:] != parents[order][:-1]] if len(order) else np.zeros(0, bool)
    out[parents[order][first]] = order[first]
    return out


def _event_rows(table: pa.Table, horizon_s: float) -> np.ndarray:
    """Per row, the row of its episode's collision or off-road event in ``[t, t + horizon_s]``, else -1."""
    order = EpisodeOrder.of(table.column("episode_id").to_numpy(zero_copy_only=False), table.column("step").to_numpy())
    t = table.column("t").to_numpy()[order.order]
    event = (table.column("collision").to_numpy(zero_copy_only=False) | table.column("off_road").to_numpy(zero_copy_only=False))[order.order]
    episode = order.episode_start
    out_sorted = np.full(len(t), -1, dtype=np.int64)
    for p in np.flatnonzero(event):  # events end episodes, so there is at most one per episode: this loop is short
        first = episode[p]
        lo = np.searchsorted(t[first : p + 1], t[p] - horizon_s, side="left") + first
        out_sorted[lo : p + 1] = order.order[p]
    out = np.empty_like(out_sorted)
    out[order.order] = out_sorted
    return out


@dataclass
class GateQuality:
    """Confusion counts of a gate against ground truth, summed over frames and shards.

    Rates are None where they are undefined (no critical frames, nothing gated, no frames), everywhere.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, gated: Any, truth: Any) -> "GateQuality":
        """Counts for ``gated`` against ``truth``: bools or equal-length bool arrays."""
        gated = np.atleast_1d(np.asarray(gated, dtype=bool))
        truth = np.atleast_1d(np.asarray(truth, dtype=bool))
        if gated.shape != truth.shape:
            raise ValueError(f"GateQuality: {gated.shape[0]} gate values but {truth.shape[0]} truth values")
        return cls(
            int(np.sum(gated & truth)), int(np.sum(gated & ~truth)), int(np.sum(~gated & truth)), int(np.sum(~gated & ~truth))
        )

    def __add__(self, other: "GateQuality") -> "GateQuality":
        return GateQuality(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def frames(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def gated(self) -> int:
        return self.tp + self.fp

    @property
    def critical(self) -> int:
        return self.tp + self.fn

    @property
    def recall(self) -> float | None:
        """Share of critical frames the gate sent on."""
        return self.tp / self.critical if self.critical else None

    @property
    def precision(self) -> float | None:
        """Share of gated frames that were critical."""
        return self.tp / self.gated if self.gated else None

    @property
    def share_gated(self) -> float | None:
        """Fraction of frames sent to the VLM (its cost)."""
        return self.gated / self.frames if self.frames else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
            "recall": self.recall, "precision": self.precision, "share_gated": self.share_gated,
        }  # fmt: skip
