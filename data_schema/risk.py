"""How dangerous each agent is to the ego, how it moves relative to the ego, and the main hazard of a frame.

Ground truth for the reward models' targets (the VLM's risk answers): built on :mod:`data_schema.groundtruth`'s
footprints, corridor and time to collision, in the same ego frame (x forward, y left, metres; yaw relative
to the ego's heading). Vectorised over the flattened agents of a shard (:func:`~data_schema.groundtruth.agent_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from data_schema.groundtruth import Corridor, EgoBox, agent_table, footprint_reach, time_to_collision

__all__ = ["MOTIONS", "MainHazards", "RiskRule", "agent_gaps", "agent_motion", "agent_risk", "main_hazards"]

#: How an agent moves relative to the ego (see :func:`agent_motion`).
MOTIONS = ("stopped", "crossing_from_left", "crossing_from_right", "same_direction", "oncoming")


@dataclass(frozen=True)
class RiskRule:
    """The risk of one agent, 0 (none) to 1 (collision imminent): the larger of a time term and a distance term.

    * ``r_ttc = clip((ttc_far_s - ttc) / (ttc_far_s - ttc_near_s), 0, 1)``, ``ttc`` the time to collision
      at constant velocities (:func:`~data_schema.groundtruth.time_to_collision`, ``inf`` when they never
      meet): 1 at ``ttc <= ttc_near_s``, 0 from ``ttc_far_s`` on;
    * ``r_gap = clip(1 - gap / gap_far_m, 0, 1)`` for a road user of ``corridor.kinds`` in the ego's lane
      band (ahead of the ego's rear, ``|y|`` within ``corridor.half_width`` of its footprint), else 0;
      ``gap`` is the free distance from the ego's front bumper to the agent's near edge.

    The distance term is what keeps a pedestrian standing in the lane risky while nobody moves (``ttc`` is
    infinite then); vehicles are left to the time term, so a queue at a red light is no hazard.
    """

    corridor: Corridor = Corridor()
    ego: EgoBox = EgoBox()
    ttc_near_s: float = 1.0
    ttc_far_s: float = 5.0
    gap_far_m: float = 20.0
    #: Below this speed (m/s) an agent counts as stopped.
    stopped_speed: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.ttc_near_s < self.ttc_far_s:
            raise ValueError(f"RiskRule: need 0 <= ttc_near_s < ttc_far_s, got {self.ttc_near_s} / {self.ttc_far_s}")
        if not self.gap_far_m > 0:
            raise ValueError(f"RiskRule.gap_far_m must be > 0 metres, got {self.gap_far_m}")
        if not self.stopped_speed >= 0:
            raise ValueError(f"RiskRule.stopped_speed must be >= 0 m/s, got {self.stopped_speed}")


def agent_gaps(fields: dict[str, np.ndarray], ego: EgoBox = EgoBox()) -> tuple[np.ndarray, np.ndarray]:
    """Per agent: free metres ``(ahead, behind)`` between the ego's bumpers and the agent's footprint along x;
    both are <= 0 for an agent beside the ego."""
    reach_x, _ = footprint_reach(fields["yaw"], fields["length"], fields["width"])
    x = np.asarray(fields["x"], np.float64)
    return x - reach_x - ego.length / 2, -x - reach_x - ego.length / 2


def agent_risk(fields: dict[str, np.ndarray], ego_speed: np.ndarray, rule: RiskRule = RiskRule()) -> np.ndarray:
    """Per agent: its :class:`RiskRule` risk; ``ego_speed`` is given per agent (the ego's speed in its row)."""
    ttc = time_to_collision(fields, ego_speed, rule.ego, horizon_s=rule.ttc_far_s)
    r_ttc = np.clip((rule.ttc_far_s - ttc) / (rule.ttc_far_s - rule.ttc_near_s), 0.0, 1.0)
    reach_x, reach_y = footprint_reach(fields["yaw"], fields["length"], fields["width"])
    in_lane = (
        np.isin(fields["kind"], list(rule.corridor.kinds))
        & (np.asarray(fields["x"]) + reach_x > -rule.ego.length / 2)
        & (np.abs(fields["y"]) - reach_y < rule.corridor.half_width)
    )
    ahead, _ = agent_gaps(fields, rule.ego)
    r_gap = np.where(in_lane, np.clip(1.0 - np.maximum(ahead, 0.0) / rule.gap_far_m, 0.0, 1.0), 0.0)
    return np.maximum(r_ttc, r_gap)


def agent_motion(fields: dict[str, np.ndarray], stopped_speed: float = RiskRule.stopped_speed) -> np.ndarray:
    """Per agent, one of :data:`MOTIONS`: stopped below ``stopped_speed``; crossing when it heads more across
    the ego's path than along it (from the right when it moves to the ego's left, +y); else going the same
    way or oncoming."""
    yaw = np.asarray(fields["yaw"], np.float64)
    crossing = np.abs(np.sin(yaw)) > np.abs(np.cos(yaw))
    motion = np.where(
        crossing,
        np.where(np.sin(yaw) > 0, "crossing_from_right", "crossing_from_left"),
        np.where(np.cos(yaw) > 0, "same_direction", "oncoming"),
    )
    return np.where(np.asarray(fields["speed"]) < stopped_speed, "stopped", motion).astype(object)


@dataclass(frozen=True)
class MainHazards:
    """Per row of a table: ``agent`` indexes :func:`~data_schema.groundtruth.agent_table`'s flattened agents
    (``fields``): the riskiest agent (the nearer one on a tie); where none has any risk, the nearest road user
    in the ego's lane band within the corridor ahead (risk 0, but what a driver sees); -1 where there is
    neither. ``risk`` is that agent's risk (0 for -1)."""

    agent: np.ndarray
    risk: np.ndarray
    fields: dict[str, np.ndarray]


def main_hazards(agents: pa.Array | pa.ChunkedArray, ego_speed: np.ndarray, rule: RiskRule = RiskRule()) -> MainHazards:
    """The main hazard of every row, from its agents and the ego's speed (m/s, one per row)."""
    parents, fields = agent_table(agents)
    n = len(agents)
    ego_speed = np.asarray(ego_speed, np.float64)
    if len(ego_speed) != n:
        raise ValueError(f"main_hazards: {len(ego_speed)} ego speeds for {n} rows")
    risk = agent_risk(fields, ego_speed[parents], rule)
    distance = np.hypot(np.asarray(fields["x"], np.float64), np.asarray(fields["y"], np.float64))
    _, reach_y = footprint_reach(fields["yaw"], fields["length"], fields["width"])
    ahead, _ = agent_gaps(fields, rule.ego)
    in_view = (ahead > 0) & (ahead < rule.corridor.length) & (np.abs(fields["y"]) - reach_y < rule.corridor.half_width)
    # Rank each row's agents: any risk first, then by risk, then in the lane ahead, then by distance.
    order = np.lexsort((distance, ~in_view, -risk, parents))
    first = order[np.r_[True, parents[order][1:] != parents[order][:-1]]] if len(order) else order
    chosen = first[(risk[first] > 0) | in_view[first]]
    agent = np.full(n, -1, dtype=np.int64)
    top = np.zeros(n)
    agent[parents[chosen]] = chosen
    top[parents[chosen]] = risk[chosen]
    return MainHazards(agent, top, fields)
