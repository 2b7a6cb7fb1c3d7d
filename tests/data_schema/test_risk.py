"""Per-agent risk, motion relative to the ego, and the main hazard of a frame."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from data_schema.groundtruth import agent_table
from data_schema.risk import RiskRule, agent_gaps, agent_motion, agent_risk, main_hazards
from data_schema.schema import AGENT_TYPE


def agent(kind: str, x: float, y: float, yaw: float = 0.0, speed: float = 0.0, length: float = 0.5, width: float = 0.5) -> dict:
    return {"kind": kind, "x": x, "y": y, "yaw": yaw, "speed": speed, "length": length, "width": width}


def fields_of(*agents: dict) -> dict[str, np.ndarray]:
    return agent_table(pa.array([list(agents)], type=pa.list_(AGENT_TYPE)))[1]


def test_risk_is_the_larger_of_the_time_and_the_distance_terms():
    fields = fields_of(
        # a car stopped 12 m ahead of the bumper (rear at 14.25 m), ego at 6 m/s: ttc 2 s -> (5 - 2) / 4
        agent("vehicle", 16.5, 0.0, length=4.5, width=1.8),
        # a pedestrian standing in the lane 5 m ahead of the bumper: no ttc while... the ego moves at 6 m/s, so
        # ttc = 5 / 6 s < 1 s: the time term saturates
        agent("pedestrian", 7.5, 0.5),
        # the same pedestrian on the kerb beyond the lane band: nothing
        agent("pedestrian", 7.5, 4.0),
    )
    risk = agent_risk(fields, np.full(3, 6.0))
    assert risk == pytest.approx([0.75, 1.0, 0.0])
    # stopped ego: the car is no risk at all, the pedestrian in the lane keeps its distance term 1 - 5 / 20
    assert agent_risk(fields, np.zeros(3)) == pytest.approx([0.0, 0.75, 0.0])
    # the rule's knobs move it
    assert agent_risk(fields, np.zeros(3), RiskRule(gap_far_m=10.0)) == pytest.approx([0.0, 0.5, 0.0])


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="ttc_near_s < ttc_far_s"):
        RiskRule(ttc_near_s=3.0, ttc_far_s=2.0)
    with pytest.raises(ValueError, match="gap_far_m"):
        RiskRule(gap_far_m=0.0)


def test_motion_relative_to_the_ego():
    fields = fields_of(
        agent("pedestrian", 8.0, -3.0, yaw=math.pi / 2, speed=1.4),  # walks to the ego's left: from the right
        agent("pedestrian", 8.0, 3.0, yaw=-math.pi / 2, speed=1.4),
        agent("vehicle", 20.0, 0.0, yaw=0.1, speed=5.0),
        agent("vehicle", 20.0, 3.5, yaw=math.pi, speed=5.0),
        agent("cyclist", 9.0, 0.0, yaw=math.pi / 2, speed=0.2),  # across the road, but still
    )
    assert agent_motion(fields).tolist() == ["crossing_from_right", "crossing_from_left", "same_direction", "oncoming", "stopped"]


def test_gaps_ahead_and_behind_the_bumpers():
    ahead, behind = agent_gaps(fields_of(agent("vehicle", 10.0, 0.0, length=4.5), agent("vehicle", -9.0, 0.0, length=4.5)))
    assert ahead.tolist() == pytest.approx([10.0 - 2.25 - 2.25, -9.0 - 2.25 - 2.25])
    assert behind.tolist() == pytest.approx([-10.0 - 2.25 - 2.25, 9.0 - 2.25 - 2.25])


def test_main_hazard_per_row():
    rows = pa.array(
        [
            [agent("pedestrian", 18.0, 0.0), agent("pedestrian", 9.0, 0.0)],  # the nearer one is riskier
            [agent("vehicle", 40.0, 3.5, speed=5.0, yaw=math.pi)],  # far away in the other lane: nothing
            [],
            [agent("vehicle", 6.0, 0.0, length=4.5, width=1.8)],  # a queue at a light: no risk, but in the lane ahead
        ],
        type=pa.list_(AGENT_TYPE),
    )
    main = main_hazards(rows, np.zeros(4))
    assert main.agent.tolist() == [1, -1, -1, 3]
    assert main.risk.tolist() == pytest.approx([1 - (9.0 - 0.25 - 2.25) / 20, 0.0, 0.0, 0.0])
    assert main.fields["kind"][3] == "vehicle"
    with pytest.raises(ValueError, match="3 ego speeds for 4 rows"):
        main_hazards(rows, np.zeros(3))
