"""A whole CarlaBackend session against a scripted stand-in for the CARLA server (``carla_stand_in``).

The test checks our side of the contract: spawning, sign conventions, observations, events and clean-up.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

carla = pytest.importorskip("carla")

from carla_stand_in import TOWN, Actor, Blueprint, Client, TrafficLight, server, stand_in_config  # noqa: E402, F401
from collect.backends.carla import CarlaBackend  # noqa: E402
from collect.backends.carla_convert import location, pose_from_transform  # noqa: E402


# -- the session ---------------------------------------------------------------------------------------------------


def test_session_sets_up_synchronous_world_and_cleans_up(server: type[Client]) -> None:
    backend = CarlaBackend(stand_in_config(scene_radius_m=1000.0))
    world = server.instances[0].world
    assert world.settings.synchronous_mode and world.settings.fixed_delta_seconds == pytest.approx(0.05)
    assert server.instances[0].tm.sync is True
    obs = backend.reset(seed=4)
    tm = server.instances[0].tm
    assert tm.seed == 4 and len(tm.autopilot) == 3 and all(port == 8123 for _, port in tm.autopilot)
    kinds = sorted(a.type_id.split(".")[0] for a in world.actors.values())
    assert kinds == ["controller"] * 2 + ["sensor"] * 2 + ["vehicle"] * 4 + ["walker"] * 2
    controllers = [a for a in world.actors.values() if a.type_id == "controller.ai.walker"]
    for controller in controllers:
        assert controller.parent.type_id.startswith("walker.")
        assert [c[0] for c in controller.calls] == ["start", "go_to_location", "set_max_speed"]
        assert controller.calls[2][1] == pytest.approx(1.3)  # the blueprint's walking speed
    assert obs.t == 0.0 and obs.route.progress == pytest.approx(0.0, abs=0.5)
    assert obs.camera.shape == (4, 8, 3) and obs.camera[0, 0].tolist() == [0, 0, 255]  # BGRA blue -> RGB blue
    assert obs.scene.map is backend.geometry and len(obs.scene.map.lanes) == 102
    assert not obs.events.off_road and not obs.events.collision
    # every other road user is in the scene, in our frame: pedestrians at their spawn spots, vehicles by kind
    pedestrians = sorted((a.x, a.y) for a in obs.scene.agents if a.kind == "pedestrian")
    assert pedestrians == [pytest.approx((40.0, -4.5)), pytest.approx((45.0, -4.5))]
    others = [a for a in obs.scene.agents if a.kind != "pedestrian"]
    assert len(others) == 3 and {a.kind for a in others} <= {"vehicle", "cyclist"}
    assert all(a.length == pytest.approx(4.6) and a.width == pytest.approx(2.0) for a in others)
    backend.reset(seed=5)  # a new episode replaces every actor of the last one
    assert len(world.actors) == 10
    backend.close()
    assert world.actors == {}
    assert not world.settings.synchronous_mode and server.instances[0].tm.sync is False
    backend.close()  # idempotent


def test_driving_follows_our_sign_conventions(server: type[Client]) -> None:
    backend = CarlaBackend(stand_in_config(vehicles=0, walkers=0))
    obs = backend.reset(seed=1)
    start = obs.scene.ego
    for _ in range(20):
        obs = backend.step(np.array([0.0, 1.0]))
    assert obs.t == pytest.approx(20 * 0.05)
    assert obs.speed > 1.0 and obs.controls.throttle == 1.0
    moved = np.array([obs.scene.ego.x - start.x, obs.scene.ego.y - start.y])
    heading = np.array([math.cos(start.yaw), math.sin(start.yaw)])
    assert moved @ heading == pytest.approx(np.linalg.norm(moved), rel=1e-3)  # straight ahead in our frame
    assert obs.route.progress > 0.5
    yaw = obs.scene.ego.yaw
    for _ in range(5):
        obs = backend.step(np.array([0.8, 0.0]))  # our positive steer: turn left
    assert math.sin(obs.scene.ego.yaw - yaw) > 0.01  # counter-clockwise
    assert obs.controls.steer == pytest.approx(0.8)
    backend.close()


def test_collisions_are_reported_with_the_other_actors_kind(server: type[Client]) -> None:
    backend = CarlaBackend(stand_in_config(vehicles=0, walkers=1))
    backend.reset(seed=2)
    world = server.instances[0].world
    walker = next(a for a in world.actors.values() if a.type_id.startswith("walker."))
    world.hit = walker
    obs = backend.step(np.array([0.0, 0.0]))
    assert obs.events.collision and obs.events.collision_with == "pedestrian"
    assert not backend.step(np.array([0.0, 0.0])).events.collision
    world.hit = Actor(world, 1, Blueprint("static.prop.streetbarrier"), carla.Transform(), None)
    assert backend.step(np.array([0.0, 0.0])).events.collision_with == "static"
    backend.close()


def test_running_a_red_light_is_an_event_and_the_stop_line_is_in_the_scene(server: type[Client]) -> None:
    backend = CarlaBackend(stand_in_config(vehicles=0, walkers=0))
    world = server.instances[0].world
    obs = backend.reset(seed=3)
    ego = obs.scene.ego
    # a red light whose stop line lies 3 m ahead, across the ego's lane
    ahead = location(ego.x + 3.0 * math.cos(ego.yaw), ego.y + 3.0 * math.sin(ego.yaw))
    light = TrafficLight(TOWN.get_waypoint(ahead))
    world.lights.append(light)
    obs = backend.reset(seed=3)
    assert [tl.state for tl in obs.scene.traffic_lights] == ["r"]
    stop = pose_from_transform(light.stop.transform)
    assert obs.scene.traffic_lights[0].stop_line.mean(axis=0) == pytest.approx([stop.x, stop.y])
    red = []
    for _ in range(40):
        obs = backend.step(np.array([0.0, 1.0]))
        red.append(obs.events.red_light)
    assert sum(red) == 1  # exactly the step that crossed the line
    light.state = carla.TrafficLightState.Green
    assert backend.reset(seed=3).scene.traffic_lights[0].state == "g"
    backend.close()


def test_step_rejects_malformed_actions(server: type[Client]) -> None:
    backend = CarlaBackend(stand_in_config(vehicles=0, walkers=0))
    backend.reset(seed=1)
    for action in ([np.nan, 0.0], [0.0, np.inf], [0.0, 2.0], [0.0, 0.0, 0.0]):
        with pytest.raises(ValueError, match="action must be 2 finite numbers"):
            backend.step(np.array(action))
    backend.close()


def test_step_before_reset_is_an_error(server: type[Client]) -> None:
    backend = CarlaBackend(stand_in_config())
    with pytest.raises(RuntimeError, match="before reset"):
        backend.step(np.zeros(2))
    backend.close()


def test_unknown_town_names_the_available_ones(server: type[Client], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Client, "get_available_maps", lambda self: ["/Game/Carla/Maps/Town01", "/Game/Carla/Maps/Town02"], raising=False)
    with pytest.raises(ValueError, match=r"CarlaConfig.town 'Town99' is not on the server; available: \['Town01', 'Town02'\]"):
        CarlaBackend(stand_in_config(town="Town99"))
