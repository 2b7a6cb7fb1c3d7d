"""The SUMO backend on the bundled town, through the real libsumo (one simulation per process)."""

from __future__ import annotations

import dataclasses
import math

import libsumo
import numpy as np
import pytest

from collect.backend import Observation
from collect.backends.sumo import DEFAULT_NET, SumoBackend, SumoConfig, boxes_overlap
from collect.backends.sumo_map import load_net
from collect.policies.expert import ExpertConfig, ExpertPolicy
from collect.policies.random import RandomPolicy
from collect.route import to_ego_frame
from data_schema.schema import AGENT_KINDS

QUIET = SumoConfig(cars=0, motorcycles=0, cyclists=0, pedestrians=0)


@pytest.fixture
def backend(request) -> SumoBackend:
    """A backend with the test's config (``@pytest.mark.parametrize('backend', [cfg], indirect=True)``)."""
    b = SumoBackend(getattr(request, "param", SumoConfig()))
    yield b
    b.close()


def snapshot(obs: Observation) -> tuple:
    """Everything an observation carries, in a comparable form."""
    s = obs.scene
    return (
        obs.t, obs.speed, obs.controls, obs.events,
        obs.route.progress, obs.route.lateral_offset, obs.route.heading_error, obs.route.ahead.tobytes(),
        s.ego, s.agents, tuple((tl.state, tl.stop_line.tobytes()) for tl in s.traffic_lights), s.route.tobytes(),
    )


def rollout(backend: SumoBackend, seed: int, steps: int) -> list[tuple]:
    policy = RandomPolicy(seed=seed)
    obs = backend.reset(seed)
    out = [snapshot(obs)]
    for _ in range(steps):
        obs = backend.step(policy.act(obs))
        out.append(snapshot(obs))
    return out


# ---- configuration and map -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"dt": 0.0}, "dt"),
        ({"cars": -1}, "cars"),
        ({"route_min_m": 300.0, "route_max_m": 200.0}, "route_min_m"),
        ({"net_file": "/nonexistent/town.net.xml"}, "net_file"),
        ({"pedestrian_impatience": 2.0}, "pedestrian_impatience"),
        ({"sumo_options": "--foo"}, "sumo_options"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SumoConfig(**kwargs)


def test_map_is_read_once_with_lanes_sidewalks_crossings_and_stop_lines() -> None:
    net = load_net(str(DEFAULT_NET))
    assert net is load_net(str(DEFAULT_NET))
    geo = net.geometry
    assert geo.name == "town"
    # 4x3 grid: 17 two-way streets -> 34 driving edges, each with a sidewalk; 30 crossings
    assert len(net.edge_driving_lane) == 34 and len(geo.sidewalks) == 34 and len(geo.crosswalks) == 30
    assert all(lane.width == pytest.approx(3.5) for lane in geo.lanes)
    # two signalised four-arm junctions: one stop line per incoming lane
    assert len(net.stop_lines) == 8 and {s.tl for s in net.stop_lines} == {"B1", "C1"}
    # lane A0A1_1 runs north along x = 1.75 (3.5 m wide); its sidewalk is at x = 4.5
    assert net.on_road(1.75, 40.0) and net.on_road(0.2, 40.0)
    assert not net.on_road(4.5, 40.0) and not net.on_road(45.0, 45.0)
    assert net.on_road(90.0, 90.0)  # the middle of junction B1
    assert net.reverse["A0A1"] == "A1A0" and len(net.reverse) == 34


def test_boxes_overlap_is_exact_for_rotated_boxes() -> None:
    def box(x: float, y: float, yaw: float) -> np.ndarray:
        c, s = math.cos(yaw), math.sin(yaw)
        corners = np.array([[2, 1], [2, -1], [-2, -1], [-2, 1]], dtype=float)
        return corners @ np.array([[c, s], [-s, c]]) + (x, y)

    assert boxes_overlap(box(0, 0, 0), box(3.9, 0, 0))
    assert not boxes_overlap(box(0, 0, 0), box(4.1, 0, 0))
    # rotated 45 degrees: the corner reaches 2.12 m, so 3.0 m apart along x they touch, 3.2 m they do not
    assert boxes_overlap(box(0, 0, 0), box(2.0 + 2.12 - 0.1, 0, math.pi / 4))
    assert not boxes_overlap(box(0, 0, math.pi / 2), box(3.2, 0, math.pi / 2))


# ---- episodes --------------------------------------------------------------------------------------------


def test_same_seed_and_actions_give_identical_observations(backend: SumoBackend) -> None:
    first = rollout(backend, 5, 60)
    other = rollout(backend, 6, 5)
    again = rollout(backend, 5, 60)
    assert first == again
    assert other[0] != first[0]
    assert any(s[5] for s in first)  # the scene had agents: the comparison covered SUMO's traffic


def test_reset_starts_on_a_sampled_route_with_a_full_scene(backend: SumoBackend) -> None:
    obs = backend.reset(1)
    cfg = backend.config
    route = backend.current_route
    assert cfg.route_min_m <= route.route.length <= cfg.route_max_m + 1e-6
    assert backend.net.turn_count(list(route.edges)) >= cfg.min_turns
    assert obs.speed == 0.0 and obs.route.progress == pytest.approx(0.0, abs=1e-6)
    assert abs(obs.route.lateral_offset) < 1e-6 and abs(obs.route.heading_error) < 1e-6
    assert obs.route.ahead.shape == (8, 2) and obs.route.ahead[0, 0] == pytest.approx(4.0, abs=0.2)
    assert obs.camera is None and obs.events == obs.events.__class__()
    scene = obs.scene
    assert scene.map is backend.net.geometry
    assert scene.route[0] == pytest.approx([scene.ego.x, scene.ego.y])
    assert {tl.state for tl in scene.traffic_lights} <= {"r", "y", "g"} and len(scene.traffic_lights) == 8
    policy = ExpertPolicy()
    kinds = set()
    for _ in range(150):
        obs = backend.step(policy.act(obs))
        kinds |= {a.kind for a in obs.scene.agents}
        for a in obs.scene.agents:
            assert math.hypot(a.x - obs.scene.ego.x, a.y - obs.scene.ego.y) <= cfg.agent_radius + 5.0
    assert kinds <= set(AGENT_KINDS) and {"vehicle", "pedestrian"} <= kinds


def test_traffic_is_spawned_per_config(backend: SumoBackend) -> None:
    backend.reset(2)
    cfg = backend.config
    vehicles = [v for v in libsumo.vehicle.getIDList() if v != "ego"]
    classes = [libsumo.vehicle.getVehicleClass(v) for v in vehicles]
    assert len(vehicles) == cfg.cars + cfg.motorcycles + cfg.cyclists
    assert classes.count("bicycle") == cfg.cyclists and classes.count("motorcycle") == cfg.motorcycles
    assert libsumo.person.getIDCount() == cfg.pedestrians


def test_pedestrians_cross_the_road_in_front_of_the_ego(backend: SumoBackend) -> None:
    """Half the pedestrians are sent across the streets of the ego's route, so the expert meets them."""
    policy = ExpertPolicy()
    obs = backend.reset(1)
    steps_with_walker_ahead = 0
    for _ in range(300):
        obs = backend.step(policy.act(obs))
        for a in obs.scene.agents:
            ahead = to_ego_frame(np.array([[a.x, a.y]]), obs.scene.ego)[0]
            if a.kind == "pedestrian" and backend.net.on_road(a.x, a.y) and 0 < ahead[0] < 25 and abs(ahead[1]) < 3:
                steps_with_walker_ahead += 1
                break
    assert steps_with_walker_ahead >= 5


def test_the_ego_in_sumo_follows_our_bicycle_model(backend: SumoBackend) -> None:
    """SUMO holds the ego where our model put it (front bumper at centre + half length), not where it would drive."""
    obs = backend.reset(3)
    for _ in range(30):
        obs = backend.step(np.array([0.0, 1.0]))
    ego = obs.scene.ego
    fx, fy = libsumo.vehicle.getPosition("ego")
    half = backend.config.vehicle.length / 2
    assert (fx, fy) == pytest.approx((ego.x + math.cos(ego.yaw) * half, ego.y + math.sin(ego.yaw) * half), abs=1e-6)
    # SUMO derives the ego's speed from the move, i.e. the mean speed over the step
    assert libsumo.vehicle.getSpeed("ego") == pytest.approx(obs.speed, abs=backend.config.vehicle.max_accel * backend.dt / 2 + 0.01)


def test_random_driving_ends_in_a_collision_or_off_road_on_some_seed(backend: SumoBackend) -> None:
    outcomes = []
    for seed in range(5):
        policy = RandomPolicy(seed=seed)
        obs = backend.reset(seed)
        for _ in range(400):
            obs = backend.step(policy.act(obs))
            if obs.events.collision or obs.events.off_road:
                break
        outcomes.append(obs.events.collision or obs.events.off_road)
    assert any(outcomes)


@pytest.mark.parametrize("backend", [QUIET], indirect=True)
def test_driving_off_the_road_is_reported(backend: SumoBackend) -> None:
    obs = backend.reset(3)
    assert not obs.events.off_road
    events = []
    for _ in range(80):
        obs = backend.step(np.array([-1.0, 0.5]))  # full right lock: over the kerb
        events.append(obs.events.off_road)
        if obs.events.off_road:
            break
    assert events[-1] and not events[0]
    assert not backend.net.on_road(obs.scene.ego.x, obs.scene.ego.y)


@pytest.mark.parametrize("backend", [QUIET], indirect=True)
def test_hitting_a_pedestrian_is_a_collision_with_a_pedestrian(backend: SumoBackend) -> None:
    obs = backend.reset(3)
    x, y = backend.current_route.route.point_at(20.0)
    backend.place_pedestrian(x, y, yaw=math.pi / 2)
    hit = None
    for i in range(100):
        obs = backend.step(np.array([0.0, 0.5]))
        walkers = [a for a in obs.scene.agents if a.kind == "pedestrian"]
        assert len(walkers) == 1 and (walkers[0].x, walkers[0].y) == pytest.approx((x, y), abs=0.2)
        if obs.events.collision:
            hit = i
            break
    assert hit is not None and obs.events.collision_with == "pedestrian"
    # the collision comes when the front bumper reaches the pedestrian, not before
    ped = to_ego_frame(np.array([[x, y]]), obs.scene.ego)[0]
    assert 0.0 < ped[0] <= backend.config.vehicle.length / 2 + 0.5


@pytest.mark.parametrize("backend", [QUIET], indirect=True)
def test_the_expert_stops_for_a_pedestrian_on_its_path(backend: SumoBackend) -> None:
    obs = backend.reset(3)
    x, y = backend.current_route.route.point_at(40.0)
    backend.place_pedestrian(x, y)
    policy = ExpertPolicy()
    for _ in range(200):
        obs = backend.step(policy.act(obs))
        assert not obs.events.collision
    assert obs.speed < 0.1
    gap = to_ego_frame(np.array([[x, y]]), obs.scene.ego)[0, 0] - backend.config.vehicle.length / 2
    assert 1.0 < gap < 6.0


@pytest.mark.parametrize("backend", [QUIET], indirect=True)
def test_hitting_a_car_is_a_collision_with_a_vehicle(backend: SumoBackend) -> None:
    """A SUMO car held still on the ego's lane ahead; the ego drives into its back."""
    obs = backend.reset(3)
    route = backend.current_route
    libsumo.route.add("parked_route", [route.edges[0]])
    pos = route.start_pos + backend.config.vehicle.length / 2 + 20.0  # front of the parked car, 20 m ahead
    libsumo.vehicle.add("parked", "parked_route", depart="now", departLane="best", departPos=f"{pos:.1f}", departSpeed="0")
    libsumo.vehicle.setSpeed("parked", 0.0)
    seen = False
    for _ in range(120):
        obs = backend.step(np.array([0.0, 0.6]))
        seen |= any(a.kind == "vehicle" for a in obs.scene.agents)
        if obs.events.collision:
            break
    assert seen and obs.events.collision and obs.events.collision_with == "vehicle"
    assert 13.0 < obs.route.progress < 16.0  # the ego's front meets the car's back (20 m - 5 m car length)


def force_red(backend: SumoBackend) -> None:
    for tl in ("B1", "C1"):
        libsumo.trafficlight.setRedYellowGreenState(tl, "r" * len(libsumo.trafficlight.getRedYellowGreenState(tl)))


@pytest.mark.parametrize("backend", [QUIET], indirect=True)
def test_crossing_a_stop_line_on_red_is_reported_and_the_expert_waits(backend: SumoBackend) -> None:
    # seed 4's route crosses junction C1's stop line about 21 m after the start
    ignoring = ExpertPolicy(ExpertConfig(obey_lights=False))
    obs = backend.reset(4)
    force_red(backend)
    red = []
    for _ in range(150):
        obs = backend.step(ignoring.act(obs))
        red.append(obs.events.red_light)
    assert sum(red) == 1  # reported once, on the step the front bumper crosses the line
    assert obs.route.progress > 30.0

    obeying = ExpertPolicy()
    obs = backend.reset(4)
    force_red(backend)
    for _ in range(300):
        obs = backend.step(obeying.act(obs))
        assert not obs.events.red_light
    assert obs.speed < 0.1 and 10.0 < obs.route.progress < 21.0
    assert [tl.state for tl in obs.scene.traffic_lights] == ["r"] * 8


def test_one_simulation_per_process_the_last_reset_takes_over() -> None:
    first, second = SumoBackend(QUIET), SumoBackend(QUIET)
    try:
        first.reset(1)
        second.reset(2)
        with pytest.raises(RuntimeError, match="one simulation per process"):
            first.step(np.zeros(2))
        second.step(np.zeros(2))
        with pytest.raises(RuntimeError, match="reset"):
            SumoBackend(QUIET).step(np.zeros(2))
    finally:
        second.close()
        first.close()


def test_step_rejects_malformed_actions(backend: SumoBackend) -> None:
    backend.reset(1)
    with pytest.raises(ValueError, match="action"):
        backend.step(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="action"):
        backend.step(np.zeros(3))
    with pytest.raises(ValueError, match="action"):
        backend.step(np.array([1.5, 0.0]))  # out of range: refused, not clipped


def test_sumo_options_override_defaults_and_bad_ones_fail_clearly() -> None:
    backend = SumoBackend(dataclasses.replace(QUIET, sumo_options=("--collision.check-junctions", "false")))
    args = backend._sumo_args(7)
    assert args.count("--collision.check-junctions") == 1 and args[args.index("--collision.check-junctions") + 1] == "false"
    assert args[args.index("--seed") + 1] == "7"
    try:
        backend.reset(1)
        with pytest.raises(ValueError, match="sumo_options"):
            SumoBackend(dataclasses.replace(QUIET, sumo_options=("--no-such-option", "1"))).reset(1)
        with pytest.raises(RuntimeError):
            backend.step(np.zeros(2))  # the failed start ended the simulation it held
        assert backend.reset(1).t == pytest.approx(backend.dt)
    finally:
        backend.close()


def test_config_is_a_frozen_dataclass() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SumoConfig().dt = 0.2  # type: ignore[misc]
