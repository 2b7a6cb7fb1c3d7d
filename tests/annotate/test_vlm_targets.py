"""Ground-truth answers for hand-built windows: each figure is worked out by hand from the rule in targets.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from annotate.vlm import check_answer
from annotate.vlm.answer import canonical_json
from annotate.vlm.targets import CLEAR_ROAD, TargetRule, answer_targets
from data_schema.risk import RiskRule
from episode_tables import episode_table


def pedestrian(x: float, y: float, yaw: float = 0.0, speed: float = 0.0) -> dict:
    return {"kind": "pedestrian", "x": x, "y": y, "yaw": yaw, "speed": speed, "length": 0.5, "width": 0.5}


def car(x: float, y: float = 0.0, yaw: float = 0.0, speed: float = 0.0) -> dict:
    return {"kind": "vehicle", "x": x, "y": y, "yaw": yaw, "speed": speed, "length": 4.5, "width": 1.8}


def window_target(agents: list[list[dict]], speed: float, rule: TargetRule = TargetRule()) -> dict:
    """The target of a 4-frame window (the last row is the gated frame)."""
    table = episode_table("e", len(agents), agents=agents, speed=speed)
    (target,) = answer_targets(table, [len(agents) - 1], rule)
    answer, error = check_answer(canonical_json(target))  # a target is itself a valid answer
    assert error is None and answer == target
    return target


def test_a_pedestrian_crossing_in_front_of_a_moving_car():
    # walking to the ego's left at 1.4 m/s, 0.14 m per 0.1 s frame; ego at 6 m/s
    frames = [[pedestrian(10.25 + 0.6 * (3 - i), -1.5 - 0.14 * (3 - i), math.pi / 2, 1.4)] for i in range(4)]
    # last frame: the ego's box grown by the walker's reach is 2.5 m x 1.2 m; x closes from 10.25 at 6 m/s:
    # inside from (10.25 - 2.5) / 6 = 1.2917 s; y from (1.5 - 1.2) / 1.4 = 0.2143 s until 2.7 / 1.4 = 1.9286 s.
    # ttc 1.2917 s -> (5 - 1.2917) / 4 = 0.927; the gap 10.25 - 0.25 - 2.25 = 7.75 m -> 1 - 7.75 / 20 = 0.61
    assert window_target(frames, 6.0) == {
        "hazard": True, "risk": 0.93, "description": "A pedestrian is crossing from the right 8 m ahead.", "action": "stop",
    }  # fmt: skip


def test_a_pedestrian_crossing_in_front_of_a_stopped_car_is_yielded_to():
    frames = [[pedestrian(8.25, -1.5 - 0.14 * (3 - i), math.pi / 2, 1.4)] for i in range(4)]
    # ego stopped: no closing speed along x, so no ttc; the gap 8.25 - 2.5 = 5.75 m gives 1 - 5.75 / 20 = 0.71
    assert window_target(frames, 0.0) == {
        "hazard": True, "risk": 0.71, "description": "A pedestrian is crossing from the right 6 m ahead.", "action": "yield",
    }  # fmt: skip


def test_a_clear_road():
    # a car driving away in the other lane, a pedestrian standing on the far kerb: nothing in the lane ahead
    frames = [[car(30.0 + i, 3.5, speed=8.0), pedestrian(12.0 - 0.5 * i, 6.0)] for i in range(4)]
    assert window_target(frames, 5.0) == {"hazard": False, "risk": 0.0, "description": CLEAR_ROAD, "action": "continue"}
    assert window_target([[]] * 4, 5.0)["description"] == CLEAR_ROAD


def test_a_stopped_car_ahead():
    # ego at 6 m/s towards a car stopped 16.5 m ahead: its rear is 12 m from the ego's bumper, ttc 2 s -> 0.75
    frames = [[car(16.5 + 0.6 * (3 - i))] for i in range(4)]
    assert window_target(frames, 6.0) == {"hazard": True, "risk": 0.75, "description": "A car is stopped 12 m ahead.", "action": "stop"}
    # at 3 m/s: ttc 4 s -> 0.25, no hazard yet
    assert window_target(frames, 3.0) == {"hazard": False, "risk": 0.25, "description": "A car is stopped 12 m ahead.", "action": "slow_down"}
    # waiting behind it: no risk, but it is what lies ahead
    assert window_target(frames, 0.0) == {"hazard": False, "risk": 0.0, "description": "A car is stopped 12 m ahead.", "action": "continue"}


def test_a_vehicle_hazard_is_slowed_for_not_yielded_to_and_thresholds_are_the_rules():
    frames = [[car(16.5)]] * 4  # ttc 12 m / 4.4 m/s = 2.73 s -> 0.57
    assert window_target(frames, 4.4)["action"] == "slow_down"
    assert window_target(frames, 4.4, TargetRule(stop_risk=0.55))["action"] == "stop"
    assert window_target(frames, 4.4, TargetRule(risk=RiskRule(ttc_far_s=3.0)))["risk"] == pytest.approx(0.14)
    with pytest.raises(ValueError, match="slow_risk <= hazard_risk <= stop_risk"):
        TargetRule(hazard_risk=0.9, stop_risk=0.8)


def test_only_the_asked_rows_are_answered_in_their_order():
    table = episode_table("e", 3, agents=[[], [pedestrian(5.0, 0.0)], []], speed=0.0)  # a 2.5 m gap: half-up, 3 m
    targets = answer_targets(table, np.array([1, 0]))
    assert [t["description"] for t in targets] == ["A pedestrian is standing 3 m ahead.", CLEAR_ROAD]
