"""The CARLA backend without a server: failing fast with a useful message, and its conversions of CARLA data."""

from __future__ import annotations

import math
import socket
import time

import numpy as np
import pytest

carla = pytest.importorskip("carla")

from collect.backends.carla import (  # noqa: E402
    CarlaBackend,
    CarlaConfig,
    CarlaUnavailable,
    agent_from_state,
    agent_kind,
    rgb_from_bgra,
)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_server_fails_within_the_timeout_and_says_how_to_start_one() -> None:
    port = _unused_port()
    config = CarlaConfig(host="127.0.0.1", port=port, tm_port=_unused_port(), timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(CarlaUnavailable) as info:
        CarlaBackend(config)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert f"./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}" in message
    assert "within 1 s" in message
    assert elapsed < 1.0 + 5.0  # the client's own timeout, not a hang


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"port": 0}, "port"),
        ({"port": 2000, "tm_port": 2001}, "collides"),
        ({"dt": 0.2}, "dt must be <= 0.1"),
        ({"timeout_s": 0.0}, "timeout_s"),
        ({"walkers": -1}, "walkers"),
        ({"walker_cross_fraction": 1.5}, "walker_cross_fraction"),
        ({"route_min_m": 300.0, "route_max_m": 200.0}, "route_max_m"),
        ({"host": ""}, "host"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CarlaConfig(**kwargs)


def test_config_without_camera() -> None:
    assert not CarlaConfig(camera_width=0).camera
    assert CarlaConfig().camera


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
