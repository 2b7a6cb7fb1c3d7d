"""The one rule for running a red light: the front bumper crosses a stop line in its lane's direction.

The rule is tested on its own, then through each backend's own code path with the same geometric move, so the
SUMO and CARLA backends cannot disagree on a red-light event again.
"""

from __future__ import annotations

import math
import types

import libsumo
import numpy as np
import pytest

from collect.backends.sumo import SumoBackend, SumoConfig
from collect.scene import Pose, TrafficLight
from collect.stop_lines import crossed_stop_line, front_bumper, ran_red_light, stop_line_across
from collect.vehicle import VehicleState

# the stop line of an eastbound lane 3.5 m wide, at x = 80
LINE = stop_line_across(80.0, -1.75, 0.0, 3.5)


def test_a_stop_line_runs_from_the_lanes_left_edge_to_its_right() -> None:
    assert LINE == pytest.approx(np.array([[80.0, 0.0], [80.0, -3.5]]))
    north = stop_line_across(1.75, 40.0, math.pi / 2, 3.5)
    assert north == pytest.approx(np.array([[0.0, 40.0], [3.5, 40.0]]))


@pytest.mark.parametrize(
    "p0, p1, crossed",
    [
        ((79.5, -1.5), (80.5, -1.6), True),
        ((79.5, -1.75), (80.0, -1.75), True),  # landing exactly on the line is the crossing ...
        ((80.0, -1.75), (80.5, -1.75), False),  # ... so leaving it again is not a second one
        ((80.0, -1.75), (80.0, -1.75), False),
        ((80.5, -1.75), (79.5, -1.75), False),  # backwards over the line
        ((78.0, -1.5), (79.9, -1.6), False),  # short of it
        ((79.5, 3.0), (80.5, 3.0), False),  # beside it: the lane the other way
        ((79.5, -3.6), (80.5, -3.6), False),  # just past its right end
    ],
    ids=["over", "onto", "off", "standing", "backwards", "short", "other-lane", "beside"],
)
def test_crossing_rule(p0: tuple, p1: tuple, crossed: bool) -> None:
    assert crossed_stop_line(np.array(p0), np.array(p1), LINE) is crossed


def test_the_front_bumper_runs_the_light_not_the_centre() -> None:
    # a 4.5 m car whose centre stays 1.25 m short of the line while its front crosses it
    before, after = Pose(77.5, -1.75, 0.0), Pose(78.5, -1.75, 0.0)
    assert front_bumper(after, 4.5).tolist() == pytest.approx([80.75, -1.75])
    assert ran_red_light(before, after, 4.5, [TrafficLight(LINE, "r")])
    assert not ran_red_light(before, after, 4.5, [TrafficLight(LINE, "y"), TrafficLight(LINE, "g")])
    assert not ran_red_light(before, after, 2.0, [TrafficLight(LINE, "r")])  # a shorter car's front stays short


# -- the same move through each backend ----------------------------------------------------------------------

#: where the front bumper starts, relative to a red stop line (m along the lane), and whether the move that
#: follows (forward, about a quarter to half a metre) runs the light
MOVES = [(-0.2, True), (0.0, False)]


@pytest.mark.parametrize("start, red", MOVES, ids=["behind", "on-the-line"])
def test_sumo_backend_applies_the_rule(start: float, red: bool) -> None:
    backend = SumoBackend(SumoConfig(cars=0, motorcycles=0, cyclists=0, pedestrians=0))
    try:
        backend.reset(4)
        for tl in ("B1", "C1"):
            libsumo.trafficlight.setRedYellowGreenState(tl, "r" * len(libsumo.trafficlight.getRedYellowGreenState(tl)))
        stop = next(s for s in backend.net.stop_lines if s.lane == "A1B1_1")  # eastbound, line at x = 82.5
        assert stop.line[:, 0].tolist() == [82.5, 82.5]
        half = backend.config.vehicle.length / 2
        backend._ego = VehicleState(x=82.5 + start - half, y=float(stop.line[:, 1].mean()), yaw=0.0, speed=5.0)
        obs = backend.step(np.array([0.0, 0.0]))
        assert obs.scene.ego.x + half > 82.5  # the front is past the line now
        assert obs.events.red_light is red
    finally:
        backend.close()


@pytest.mark.parametrize("start, red", MOVES, ids=["behind", "on-the-line"])
def test_carla_backend_applies_the_rule(start: float, red: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    carla = pytest.importorskip("carla")
    # the CARLA side needs the optional carla wheel; the SUMO side above runs without it
    from carla_stand_in import TrafficLight as StandInLight
    from carla_stand_in import install, stand_in_config

    from collect.backends.carla import CarlaBackend

    server = install(monkeypatch)
    backend = CarlaBackend(stand_in_config(vehicles=0, walkers=0))
    world = server.instances[0].world
    # a red light whose stop line crosses an eastbound lane at x = 80 (CARLA's y is ours negated)
    stop = types.SimpleNamespace(transform=carla.Transform(carla.Location(80.0, 1.75, 0.0), carla.Rotation(yaw=0.0)), lane_width=3.5)
    world.lights.append(StandInLight(stop))
    backend.reset(seed=3)
    ego = next(a for a in world.actors.values() if a.type_id.startswith("vehicle."))
    ego.bounding_box = carla.BoundingBox(carla.Location(0.0, 0.0, 0.8), carla.Vector3D(2.25, 1.0, 0.8))  # 4.5 m long
    ego.transform = carla.Transform(carla.Location(80.0 + start - 2.25, 1.75, 0.0), carla.Rotation(yaw=0.0))
    backend.step(np.array([0.0, -1.0]))  # observed standing there: the next move starts from this pose
    ego.speed = 5.0
    obs = backend.step(np.array([0.0, 0.0]))
    assert obs.scene.ego.x + 2.25 > 80.0
    assert obs.events.red_light is red
    backend.close()
