"""What the VLM should answer for a gated window: the answer built from the simulator's ground truth.

The window holds K+1 frames ending at the gated frame; its answer describes the current moment, so it is
built from the last row (agents' speeds and headings already give their motion; agents carry no identity
across rows to track). With ``m`` the frame's main hazard (:func:`data_schema.risk.main_hazards`: the agent
of highest risk, the nearer one on a tie):

* ``risk`` = ``m``'s :class:`~data_schema.risk.RiskRule` risk rounded to two decimals (0 without one):
  ``max(r_ttc, r_gap)`` with ``r_ttc = clip((5 s - ttc) / 4 s, 0, 1)`` from the time to collision at
  constant velocities, and ``r_gap = clip(1 - gap / 20 m, 0, 1)`` for a pedestrian, cyclist or motorcycle in
  the ego's lane band, ``gap`` the free distance ahead of the ego's front bumper;
* ``hazard`` = ``risk >= hazard_risk`` (0.5);
* ``action`` = ``stop`` from ``stop_risk`` (0.75); a hazard below it is ``yield`` to a pedestrian, cyclist or
  motorcycle and ``slow_down`` for anything else; ``slow_down`` from ``slow_risk`` (0.25); else ``continue``;
* ``description`` = one sentence naming ``m``'s kind, what it does and where it is: "A pedestrian is
  crossing from the right 6 m ahead.", "A car is stopped 8 m ahead on the left."; where nothing is risky,
  the nearest road user in the lane ahead ("A car is stopped 3 m ahead.", risk 0), else "The road ahead is
  clear.". Distances are the free metres between the ego's bumper and the agent, rounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from data_schema.groundtruth import footprint_reach
from data_schema.risk import RiskRule, agent_gaps, agent_motion, main_hazards

__all__ = ["AGENT_NOUNS", "CLEAR_ROAD", "TargetRule", "answer_targets"]

CLEAR_ROAD = "The road ahead is clear."
_NOUNS = {"vehicle": "car", "pedestrian": "pedestrian", "cyclist": "cyclist", "motorcycle": "motorcycle", "static": "obstacle"}
#: The nouns a description names a road user by.
AGENT_NOUNS = tuple(_NOUNS.values())
_DOING = {
    "crossing_from_left": "is crossing from the left",
    "crossing_from_right": "is crossing from the right",
    "same_direction": "is going the same way",
    "oncoming": "is oncoming",
}
_STOPPED = {"pedestrian": "is standing", "static": "lies"}


@dataclass(frozen=True)
class TargetRule:
    """How ground truth becomes an answer (see the module docstring); thresholds are on the rounded risk."""

    risk: RiskRule = RiskRule()
    hazard_risk: float = 0.5
    stop_risk: float = 0.75
    slow_risk: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.slow_risk <= self.hazard_risk <= self.stop_risk <= 1:
            raise ValueError(
                f"TargetRule: need 0 < slow_risk <= hazard_risk <= stop_risk <= 1, got "
                f"{self.slow_risk} / {self.hazard_risk} / {self.stop_risk}"
            )


def answer_targets(table: pa.Table, rows: Sequence[int], rule: TargetRule = TargetRule()) -> list[dict[str, Any]]:
    """The target answer (the keys of ``ANSWER_SCHEMA``) of the window ending at each of ``rows``.

    ``table`` needs ``speed`` and ``agents``; ``rows`` index it.
    """
    rows = np.asarray(rows, dtype=np.int64)
    picked = table.select(["speed", "agents"]).take(pa.array(rows, pa.int64()))
    main = main_hazards(picked.column("agents"), picked.column("speed").to_numpy(), rule.risk)
    fields = main.fields
    motion = agent_motion(fields, rule.risk.stopped_speed)
    ahead, behind = agent_gaps(fields, rule.risk.ego)
    _, reach_y = footprint_reach(fields["yaw"], fields["length"], fields["width"])
    targets = []
    for agent, raw_risk in zip(main.agent.tolist(), main.risk.tolist()):
        risk = round(raw_risk, 2)
        if agent < 0:
            targets.append({"hazard": False, "risk": 0.0, "description": CLEAR_ROAD, "action": "continue"})
            continue
        kind = str(fields["kind"][agent])
        if risk >= rule.stop_risk:
            action = "stop"
        elif risk >= rule.hazard_risk:
            action = "yield" if kind in rule.risk.corridor.kinds else "slow_down"
        elif risk >= rule.slow_risk:
            action = "slow_down"
        else:
            action = "continue"
        in_lane = abs(float(fields["y"][agent])) - float(reach_y[agent]) < rule.risk.corridor.half_width
        side = "" if in_lane else (" on the left" if fields["y"][agent] > 0 else " on the right")
        where = _where(float(ahead[agent]), float(behind[agent]))
        description = f"{_article(_NOUNS[kind])} {_doing(kind, str(motion[agent]))} {where}{side}."
        targets.append({"hazard": risk >= rule.hazard_risk, "risk": risk, "description": description, "action": action})
    return targets


def _doing(kind: str, motion: str) -> str:
    if motion == "stopped":
        return _STOPPED.get(kind, "is stopped")
    return _DOING[motion]


def _where(ahead: float, behind: float) -> str:
    if ahead > 0:
        return f"{_metres(ahead)} m ahead"
    if behind > 0:
        return f"{_metres(behind)} m behind"
    return "beside the car"


def _metres(gap: float) -> int:
    """Whole metres, halves rounded up (as people read them), at least 1."""
    return max(1, math.floor(gap + 0.5))


def _article(noun: str) -> str:
    article = "An" if noun[0] in "aeiou" else "A"
    return f"{article} {noun}"
