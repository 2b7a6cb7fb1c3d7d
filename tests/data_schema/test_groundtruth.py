"""Ground truth from ``agents``: the corridor test, time to collision, frame hazards and gate quality."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from data_schema.groundtruth import (
    Corridor,
    GateQuality,
    HazardRule,
    agent_motion,
    agent_table,
    critical_in_corridor,
    hazard_sources,
    hazards,
    nearest_per_row,
    time_to_collision,
)
from data_schema.schema import AGENT_TYPE

from episode_tables import episode_table


def agent(kind: str, x: float, y: float, yaw: float = 0.0, length: float = 0.5, width: float = 0.5, speed: float = 1.0) -> dict:
    return {"kind": kind, "x": x, "y": y, "yaw": yaw, "speed": speed, "length": length, "width": width}


def column(*rows: list[dict]) -> pa.Array:
    return pa.array(list(rows), type=pa.list_(AGENT_TYPE))


def reference_in_corridor(agents: list[dict], corridor: Corridor) -> bool:
    """An independent row-by-row statement of the rule: the rotated footprint's corners' bounding box
    overlaps the open corridor rectangle."""
    for a in agents:
        if a["kind"] not in corridor.kinds:
            continue
        c, s = math.cos(a["yaw"]), math.sin(a["yaw"])
        corners = [(a["x"] + c * dx - s * dy, a["y"] + s * dx + c * dy) for dx in (-a["length"] / 2, a["length"] / 2) for dy in (-a["width"] / 2, a["width"] / 2)]
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        if max(xs) > 0 and min(xs) < corridor.length and max(ys) > -corridor.half_width and min(ys) < corridor.half_width:
            return True
    return False


WIDE = Corridor(length=25.0, half_width=3.0)


@pytest.mark.parametrize(
    ("agents", "expected"),
    [
        ([], False),
        ([agent("pedestrian", 10.0, 0.5)], True),
        ([agent("pedestrian", 10.0, -2.9)], True),
        ([agent("pedestrian", 10.0, 5.0)], False),  # on the far sidewalk
        ([agent("pedestrian", -4.0, 0.0)], False),  # behind the ego
        ([agent("pedestrian", 26.0, 0.0)], False),  # beyond the corridor
        ([agent("vehicle", 8.0, 0.0, length=4.5, width=1.8)], False),  # not a critical kind
        ([agent("static", 8.0, 0.0)], False),
        ([agent("cyclist", 12.0, 3.3, length=1.8, width=0.8)], True),  # centre outside, body inside
        ([agent("cyclist", 12.0, 3.3, yaw=math.pi / 2, length=1.8, width=0.8)], True),  # crossing, reaches in
        ([agent("cyclist", 12.0, 4.0, length=1.8, width=0.8)], False),
        ([agent("motorcycle", 26.0, 0.0, length=2.2, width=0.8)], True),  # rear end inside the far edge
        ([agent("vehicle", 5.0, 0.0, length=4.5), agent("pedestrian", 40.0, 0.0), agent("cyclist", 3.0, -1.0)], True),
    ],
)
def test_critical_in_corridor(agents, expected):
    assert critical_in_corridor(column(agents), WIDE).tolist() == [expected]
    assert reference_in_corridor(agents, WIDE) is expected


def test_corridor_settings_change_the_answer():
    walker = column([agent("pedestrian", 10.0, 4.0)])
    assert not critical_in_corridor(walker, Corridor())[0]
    assert critical_in_corridor(walker, Corridor(half_width=4.5))[0]
    assert not critical_in_corridor(walker, Corridor(half_width=4.5, length=8.0))[0]
    assert not critical_in_corridor(walker, Corridor(half_width=4.5, kinds=("cyclist",)))[0]


def test_column_rule_agrees_with_the_row_by_row_reference_on_random_scenes():
    rng = np.random.default_rng(7)
    kinds = ["vehicle", "pedestrian", "cyclist", "motorcycle", "static"]
    rows = [
        [
            agent(str(rng.choice(kinds)), float(rng.uniform(-15, 40)), float(rng.uniform(-8, 8)),
                  yaw=float(rng.uniform(-math.pi, math.pi)), length=float(rng.uniform(0.4, 5.0)), width=float(rng.uniform(0.4, 2.0)))
            for _ in range(int(rng.integers(0, 6)))
        ]
        for _ in range(300)
    ]  # fmt: skip
    agents = column(*rows)
    corridor = Corridor()
    expected = np.array([reference_in_corridor(r, corridor) for r in agents.to_pylist()])  # float32 as stored
    assert 0.05 < expected.mean() < 0.95  # the sample exercises both answers
    np.testing.assert_array_equal(critical_in_corridor(agents, corridor), expected)
    chunked = pa.chunked_array([agents.slice(0, 100), agents.slice(100)])
    np.testing.assert_array_equal(critical_in_corridor(chunked, corridor), expected)
    np.testing.assert_array_equal(critical_in_corridor(agents.slice(37, 50), corridor), expected[37:87])
    assert critical_in_corridor(column([], []), corridor).tolist() == [False, False]


def test_bad_corridors_are_refused():
    with pytest.raises(ValueError, match="positive"):
        Corridor(length=0.0)
    with pytest.raises(ValueError, match="dragon"):
        Corridor(kinds=("pedestrian", "dragon"))


# --- time to collision ----------------------------------------------------------------------------------------


def ttc(agents: list[dict], ego_speed: float) -> np.ndarray:
    _, fields = agent_table(column(agents))
    return time_to_collision(fields, np.full(len(agents), ego_speed))


def test_time_to_collision_for_following_crossing_and_passing_agents():
    # a stopped car 20 m ahead (rear bumper at 17.75 m), ego at 5 m/s, ego front at 2.25 m: 15.5 m in 3.1 s
    assert ttc([agent("vehicle", 20.0, 0.0, length=4.5, width=1.8, speed=0.0)], 5.0)[0] == pytest.approx(3.1)
    # a pedestrian crossing from the right at 1.5 m/s, 10 m ahead and 3 m to the right, ego stopped:
    # it reaches the ego's box (|y| < 0.95 + 0.25) after (3 - 1.2) / 1.5 = 1.2 s, but x = 10 is outside it
    assert ttc([agent("pedestrian", 10.0, -3.0, yaw=math.pi / 2, speed=1.5)], 0.0)[0] == math.inf
    # ... with the ego at 8 m/s the gap in x (10 - 2.25 - 0.25 = 7.5 m) closes at 0.94 s, the lateral gap
    # opens at 1.2 s and closes at 2.8 s: x is inside from 0.94 s to 1.56 s, y from 1.2 s: they meet at 1.2 s
    assert ttc([agent("pedestrian", 10.0, -3.0, yaw=math.pi / 2, speed=1.5)], 8.0)[0] == pytest.approx(1.2)
    # a car ahead driving away faster than the ego never closes; one behind closing in does
    assert ttc([agent("vehicle", 20.0, 0.0, length=4.5, speed=10.0)], 5.0)[0] == math.inf
    assert ttc([agent("vehicle", -12.0, 0.0, length=4.5, speed=7.0)], 5.0)[0] == pytest.approx((12.0 - 4.5) / 2.0)
    # no relative motion along an axis on which they are apart: they never meet (both stopped, or side by side)
    assert ttc([agent("cyclist", 12.0, -2.0, speed=0.0)], 0.0)[0] == math.inf
    assert ttc([agent("vehicle", 0.0, 3.5, length=4.5, width=1.8, speed=5.0)], 5.0)[0] == math.inf
    # overlapping already; beyond the horizon
    assert ttc([agent("pedestrian", 1.0, 0.0)], 0.0)[0] == 0.0
    assert ttc([agent("vehicle", 200.0, 0.0, speed=0.0)], 5.0)[0] == math.inf


# --- frame hazards --------------------------------------------------------------------------------------------


def test_hazards_name_critical_agents_close_vehicles_and_coming_events():
    scenes = [
        [agent("pedestrian", 8.0, 0.0)],  # critical agent ahead
        [agent("vehicle", 9.0, 0.0, length=4.5, width=1.8)],  # a car 9 m ahead at 8 m/s: gap 8 + 8 = 16 m
        [agent("vehicle", 30.0, 0.0, length=4.5, width=1.8)],  # far enough
        [],
        [],
        [],  # the collision row
    ]
    table = episode_table("e", 6, t=[0.0, 0.1, 0.2, 0.3, 1.25, 1.4], speed=8.0, agents=scenes, collision=[False] * 5 + [True])
    found = hazards(table)
    assert found["critical_agent"].tolist() == [True, False, False, False, False, False]
    assert found["vehicle_close"].tolist() == [False, True, False, False, False, False]
    # within 1 s before the collision at t = 1.4: t >= 0.4
    assert found["event_soon"].tolist() == [False, False, False, False, True, True]
    assert found["any"].tolist() == [True, True, False, False, True, True]
    # the braking distance follows the speed
    slow = hazards(table.set_column(table.schema.get_field_index("speed"), "speed", pa.array([1.0] * 6, pa.float32())))
    assert slow["vehicle_close"].tolist() == [False] * 6
    assert hazards(table, HazardRule(event_horizon_s=0.05))["event_soon"].tolist() == [False] * 5 + [True]


def test_hazards_follow_each_episode_whatever_the_row_order():
    a = episode_table("a", 2, collision=[False, True])
    b = episode_table("b", 2)
    table = pa.concat_tables([b.slice(1), a.slice(0, 1), b.slice(0, 1), a.slice(1)])
    assert table.column("episode_id").to_pylist() == ["b", "a", "b", "a"]
    assert hazards(table)["event_soon"].tolist() == [False, True, False, True]


# --- gate quality ---------------------------------------------------------------------------------------------


def test_gate_quality_counts_and_rates():
    quality = GateQuality.of([True, True, False, False, True], [True, False, True, False, True]) + GateQuality.of(False, False)
    assert (quality.tp, quality.fp, quality.fn, quality.tn) == (2, 1, 1, 2)
    assert quality.recall == pytest.approx(2 / 3)
    assert quality.precision == pytest.approx(2 / 3)
    assert quality.share_gated == pytest.approx(3 / 6)
    total = quality + GateQuality(tp=1, fp=0, fn=0, tn=3)
    assert total.frames == 10 and total.recall == pytest.approx(3 / 4) and total.share_gated == pytest.approx(0.4)
    assert total.as_dict()["precision"] == pytest.approx(3 / 4)


def test_gate_quality_undefined_rates_are_none_and_lengths_must_match():
    quality = GateQuality()
    assert quality.recall is None and quality.precision is None and quality.share_gated is None
    quality = GateQuality.of(np.zeros(4, bool), np.zeros(4, bool))
    assert quality.recall is None and quality.precision is None and quality.share_gated == 0.0
    with pytest.raises(ValueError, match="3 gate values but 2 truth values"):
        GateQuality.of([True, False, True], [True, False])


# --- hazard sources and motion --------------------------------------------------------------------------------


def test_agent_motion_reads_the_heading_in_the_ego_frame():
    _, fields = agent_table(column([
        agent("pedestrian", 8.0, 2.0, yaw=-math.pi / 2, speed=1.2),  # walking towards -y: from the left
        agent("pedestrian", 8.0, -2.0, yaw=math.pi / 2 - 0.3, speed=1.2),  # towards +y: from the right
        agent("cyclist", 8.0, 0.0, yaw=0.2, speed=4.0),
        agent("vehicle", 20.0, 0.0, yaw=math.pi, speed=8.0),
        agent("vehicle", 10.0, 0.0, yaw=math.pi / 2, speed=0.1),  # turned across the lane but standing
    ]))  # fmt: skip
    assert agent_motion(fields).tolist() == ["crossing_from_left", "crossing_from_right", "same_way", "oncoming", "standing"]


def test_hazard_sources_name_the_nearest_agent_and_the_coming_event_behind_each_hazard():
    scenes = [
        [agent("pedestrian", 14.0, 0.5), agent("vehicle", 9.0, 0.0, length=4.5, width=1.8), agent("cyclist", 6.0, -1.0, length=1.8)],
        [agent("pedestrian", 14.0, 4.0)],  # on the sidewalk: no hazard
        [],
        [],
    ]
    table = episode_table("e", 4, t=[0.0, 0.1, 0.5, 1.2], speed=8.0, agents=scenes, off_road=[False, False, False, True])
    sources = hazard_sources(table)
    # agents are numbered across rows: row 0 holds 0..2, row 1 holds 3
    assert sources.critical.tolist() == [2, -1, -1, -1]  # the cyclist at 6 m is nearer than the pedestrian at 14 m
    assert sources.vehicle.tolist() == [1, -1, -1, -1]
    assert sources.event_row.tolist() == [-1, -1, 3, 3]  # within 1 s of the off-road row at t = 1.2: t >= 0.2
    # gaps from the front bumper (2.25 m ahead of the centre) to each footprint's near side
    np.testing.assert_allclose(sources.gap_m[:3], [14.0 - 0.25 - 2.25, 9.0 - 2.25 - 2.25, 6.0 - 0.9 - 2.25], atol=1e-5)
    assert {k: v.tolist() for k, v in sources.kinds().items()} == {k: v.tolist() for k, v in hazards(table).items()}
    assert sources.critical_kind().tolist() == ["cyclist", "", "", ""]


def test_nearest_per_row_breaks_ties_by_agent_order():
    parents = np.array([0, 0, 0, 2, 2])
    chosen = np.array([True, True, False, True, True])
    assert nearest_per_row(parents, chosen, np.array([5.0, 5.0, 1.0, 3.0, 2.0]), 4).tolist() == [0, -1, 4, -1]
