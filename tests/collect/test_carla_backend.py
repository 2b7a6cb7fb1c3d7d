"""The CARLA backend without a server: its settings, and failing fast with a useful message."""

from __future__ import annotations

import socket
import time

import pytest

carla = pytest.importorskip("carla")

from collect.backends.carla import CarlaBackend, CarlaConfig, CarlaUnavailable  # noqa: E402


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
