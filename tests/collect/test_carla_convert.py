"""Conversions between CARLA's data and ours (``collect.backends.carla_convert``), on the real ``carla`` types."""

from __future__ import annotations

import math

import numpy as np
import pytest

carla = pytest.importorskip("carla")

from collect.backends.carla_convert import (  # noqa: E402
    agent_from_state,
    agent_kind,
    carla_from_pose,
    carla_steer,
    location,
    pose_from_carla,
    pose_from_transform,
    rgb_from_bgra,
    transform,
)
from collect.scene import Pose  # noqa: E402


@pytest.mark.parametrize("yaw", [0.0, 0.3, math.pi / 2, -2.5, math.pi - 1e-3])
def test_pose_conversion_round_trips(yaw: float) -> None:
    pose = Pose(12.5, -7.25, yaw)
    back = pose_from_transform(transform(pose, z=1.0))
    assert (back.x, back.y) == pytest.approx((pose.x, pose.y), abs=1e-4)
    assert math.cos(back.yaw - yaw) == pytest.approx(1.0, abs=1e-9)
    cx, cy, cyaw = carla_from_pose(pose)
    again = pose_from_carla(cx, cy, cyaw)
    assert (again.x, again.y, math.cos(again.yaw - yaw)) == pytest.approx((pose.x, pose.y, 1.0))


def test_conversion_flips_y_and_turns_yaw_the_other_way() -> None:
    # CARLA is left-handed: +y is to the right of +x, yaw grows clockwise seen from above
    loc = location(3.0, 4.0)
    assert (loc.x, loc.y) == (3.0, -4.0)
    pose = pose_from_carla(0.0, 0.0, 90.0)  # facing CARLA +y, i.e. our -y
    assert pose.yaw == pytest.approx(-math.pi / 2)
    assert carla_steer(0.4) == -0.4  # ours turns left when positive, CARLA's turns right


@pytest.mark.parametrize(
    "type_id, attributes, kind",
    [
        ("walker.pedestrian.0012", {}, "pedestrian"),
        ("vehicle.tesla.model3", {"base_type": "car", "number_of_wheels": "4"}, "vehicle"),
        ("vehicle.carlamotors.firetruck", {"base_type": "truck"}, "vehicle"),
        ("vehicle.diamondback.century", {"base_type": "bicycle", "number_of_wheels": "2"}, "cyclist"),
        ("vehicle.yamaha.yzf", {"base_type": "motorcycle", "number_of_wheels": "2"}, "motorcycle"),
        ("vehicle.gazelle.omafiets", {"number_of_wheels": "2"}, "cyclist"),  # a server without base_type
        ("vehicle.kawasaki.ninja", {"number_of_wheels": "2"}, "motorcycle"),
        ("static.prop.streetbarrier", {}, "static"),
        ("traffic.traffic_light", {}, "static"),
    ],
)
def test_agent_kind(type_id: str, attributes: dict, kind: str) -> None:
    assert agent_kind(type_id, attributes) == kind


def test_agent_from_state_converts_to_our_frame_at_the_box_centre() -> None:
    # CARLA yaw 90 points along CARLA +y, which is our -y; the box centre sits 0.4 m ahead of the actor origin
    tf = carla.Transform(carla.Location(x=10.0, y=5.0, z=0.3), carla.Rotation(yaw=90.0))
    box = carla.BoundingBox(carla.Location(x=0.4, y=0.0, z=0.7), carla.Vector3D(x=2.3, y=1.0, z=0.7))
    agent = agent_from_state("vehicle", tf, box, carla.Vector3D(x=0.0, y=3.0, z=0.5))
    assert (agent.x, agent.y) == pytest.approx((10.0, -5.4), abs=1e-5)
    assert agent.yaw == pytest.approx(-math.pi / 2)
    assert (agent.length, agent.width) == pytest.approx((4.6, 2.0))
    assert agent.speed == pytest.approx(3.0)  # horizontal speed only


def test_rgb_from_bgra() -> None:
    bgra = np.zeros((2, 3, 4), dtype=np.uint8)
    bgra[0, 0] = (10, 20, 30, 255)  # blue 10, green 20, red 30
    bgra[1, 2] = (200, 0, 0, 255)
    rgb = rgb_from_bgra(bgra.tobytes(), width=3, height=2)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [30, 20, 10]
    assert rgb[1, 2].tolist() == [0, 0, 200]
    with pytest.raises(ValueError, match="expected 4 x 2 x 4"):
        rgb_from_bgra(bgra.tobytes(), width=4, height=2)
