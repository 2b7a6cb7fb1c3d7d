"""The expert and random policies: decisions on hand-built observations, and whole SUMO episodes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from collect.backend import Controls, Events, Observation
from collect.backends.sumo import SumoBackend, SumoConfig
from collect.policies import BUILTIN, VARIANTS, NoisyConfig, NoisyExpert, make_policy
from collect.policies.expert import ExpertConfig, ExpertPolicy
from collect.policies.random import RandomConfig, RandomPolicy
from collect.route import Route, route_state
from collect.scene import Agent, Lane, MapGeometry, Pose, Scene, TrafficLight

EMPTY_MAP = MapGeometry(name="empty", lanes=(Lane(centre=np.array([[-50.0, 0.0], [200.0, 0.0]]), width=3.5),))


def observe(
    route_points: np.ndarray,
    speed: float,
    agents: tuple[Agent, ...] = (),
    lights: tuple[TrafficLight, ...] = (),
    geometry: MapGeometry = EMPTY_MAP,
) -> Observation:
    """An observation of an ego at the origin heading +x, with the route as given (world = ego frame)."""
    route = Route(route_points)
    pose = Pose(0.0, 0.0, 0.0)
    state = route_state(route, pose, hint=None)
    scene = Scene(map=geometry, ego=pose, ego_length=4.5, ego_width=1.9, agents=agents, traffic_lights=lights, route=route.remaining(state.progress))
    return Observation(t=0.0, speed=speed, controls=Controls(), route=state, scene=scene, events=Events())


STRAIGHT = np.array([[0.0, 0.0], [150.0, 0.0]])


def left_turn(straight: float, radius: float = 8.0) -> np.ndarray:
    """From (0, 0) straight along +x, then a quarter circle to the left, then on along +y."""
    a = np.linspace(0, math.pi / 2, 30)
    arc = np.stack([straight + radius * np.sin(a), radius * (1 - np.cos(a))], axis=1)
    return np.vstack([[0.0, 0.0], arc, [straight + radius, radius + 60.0]]) if straight > 0 else np.vstack([arc, [radius, radius + 60.0]])


def car(x: float, y: float, speed: float = 0.0, yaw: float = 0.0) -> Agent:
    return Agent("vehicle", x, y, yaw, speed, 4.5, 1.8)


def walker(x: float, y: float, speed: float = 0.0, yaw: float = 0.0) -> Agent:
    return Agent("pedestrian", x, y, yaw, speed, 0.3, 0.5)


def light(x: float, state: str) -> TrafficLight:
    return TrafficLight(stop_line=np.array([[x, 1.75], [x, -1.75]]), state=state)


EXPERT = ExpertPolicy()


def test_accelerates_on_a_clear_straight_road_and_holds_the_target_speed() -> None:
    steer, accel = EXPERT.act(observe(STRAIGHT, 0.0))
    assert accel > 0.5 and steer == pytest.approx(0.0, abs=1e-6)
    _, cruise = EXPERT.act(observe(STRAIGHT, EXPERT.config.target_speed))
    assert 0.0 <= cruise < 0.2  # only what resistance needs
    _, over = EXPERT.act(observe(STRAIGHT, EXPERT.config.target_speed + 3.0))
    assert over < 0.0


def test_steers_into_the_turn_and_slows_before_it() -> None:
    on_arc = left_turn(0.0) - (EXPERT.config.vehicle.wheelbase / 2, 0.0)  # the 8 m arc begins at the rear axle
    steer, _ = EXPERT.act(observe(on_arc, 4.0))
    # pure pursuit on a circle commands the circle's own curvature: atan(wheelbase / radius)
    assert steer * EXPERT.config.vehicle.max_steer == pytest.approx(math.atan(EXPERT.config.vehicle.wheelbase / 8.0), rel=0.25)
    # 8 m radius at 2 m/s^2 allows 4 m/s: from 6.9 m/s that takes 5.3 m at 3 m/s^2
    _, accel = EXPERT.act(observe(left_turn(3.0), EXPERT.config.target_speed))
    assert accel < 0.0
    _, accel = EXPERT.act(observe(left_turn(20.0), EXPERT.config.target_speed))
    assert accel >= 0.0
    assert EXPERT.act(observe(on_arc * (1, -1), 4.0))[0] == pytest.approx(-steer)


def test_stops_for_a_stationary_car_ahead_and_ignores_one_in_the_other_lane() -> None:
    _, accel = EXPERT.act(observe(STRAIGHT, 6.0, agents=(car(15.0, 0.0),)))
    # its back is 12.75 m ahead: stopping 3 m short of it from 6 m/s takes 2.4 m/s^2, 0.3 of full brake
    assert accel == pytest.approx(-2.4 / EXPERT.config.vehicle.max_brake, abs=0.02)
    _, accel = EXPERT.act(observe(STRAIGHT, 6.0, agents=(car(15.0, 3.5, speed=6.0, yaw=math.pi),)))
    assert accel > -0.05
    _, held = EXPERT.act(observe(STRAIGHT, 0.0, agents=(car(7.5, 0.0),)))
    assert held == -1.0  # already at the stop gap: hold the brake


def test_yields_to_a_pedestrian_walking_into_the_path_but_not_one_walking_away() -> None:
    towards = walker(12.0, -3.5, speed=1.4, yaw=math.pi / 2)  # reaches the lane within the prediction horizon
    away = walker(12.0, -3.5, speed=1.4, yaw=-math.pi / 2)
    assert EXPERT.act(observe(STRAIGHT, 6.0, agents=(towards,)))[1] < -0.3
    assert EXPERT.act(observe(STRAIGHT, 6.0, agents=(away,)))[1] > -0.05


def test_stops_for_red_and_late_yellow_runs_green() -> None:
    # stop 1 m before the line at 15 m: the front bumper has 11.75 m to go, 6 m/s needs 1.53 m/s^2
    red = EXPERT.act(observe(STRAIGHT, 6.0, lights=(light(15.0, "r"),)))[1]
    assert red == pytest.approx(-36.0 / (2 * 11.75) / EXPERT.config.vehicle.max_brake, abs=0.02)
    assert EXPERT.act(observe(STRAIGHT, 6.0, lights=(light(15.0, "g"),)))[1] > -0.05
    # yellow: stop when there is room, carry on when stopping would need more than comfortable braking
    assert EXPERT.act(observe(STRAIGHT, 6.0, lights=(light(12.0, "y"),)))[1] < 0.0
    assert EXPERT.act(observe(STRAIGHT, 6.0, lights=(light(5.0, "y"),)))[1] > -0.05
    # a light for the crossing street (its stop line is off our path) does not concern us
    crossing = TrafficLight(stop_line=np.array([[20.0, 8.0], [23.5, 8.0]]), state="r")
    assert EXPERT.act(observe(STRAIGHT, 6.0, lights=(crossing,)))[1] > -0.05
    ignoring = ExpertPolicy(ExpertConfig(obey_lights=False))
    assert ignoring.act(observe(STRAIGHT, 6.0, lights=(light(15.0, "r"),)))[1] > -0.05
    assert EXPERT.act(observe(STRAIGHT, 0.0, lights=(light(3.4, "r"),)))[1] == -1.0  # waiting at the line


def zebra_at(x: float) -> MapGeometry:
    zebra = np.array([[x, -3.5], [x + 3.0, -3.5], [x + 3.0, 3.5], [x, 3.5]])
    return MapGeometry(name="zebra", lanes=EMPTY_MAP.lanes, crosswalks=(zebra,))


def test_creeps_towards_a_crosswalk_with_a_pedestrian_at_the_kerb() -> None:
    v = EXPERT.config.target_speed
    assert EXPERT.act(observe(STRAIGHT, v, agents=(walker(9.5, -4.5),), geometry=zebra_at(8.0)))[1] < -0.1
    assert EXPERT.act(observe(STRAIGHT, v, geometry=zebra_at(8.0)))[1] >= 0.0
    # close to it at creeping speed it carries on: a standing pedestrian is waiting for us to pass
    assert EXPERT.act(observe(STRAIGHT, 2.0, agents=(walker(5.0, -4.5),), geometry=zebra_at(3.5)))[1] > -0.05
    # but one stepping onto it stops us
    stepping = walker(5.0, -4.0, speed=1.4, yaw=math.pi / 2)
    assert EXPERT.act(observe(STRAIGHT, 2.0, agents=(stepping,), geometry=zebra_at(3.5)))[1] < -0.3


def test_expert_config_validates() -> None:
    with pytest.raises(ValueError, match="target_speed"):
        ExpertConfig(target_speed=0.0)
    with pytest.raises(ValueError, match="lookahead_max"):
        ExpertConfig(lookahead_min=5.0, lookahead_max=4.0)


def test_variants_are_the_expert_with_one_flaw_each() -> None:
    """By name through make_policy, recorded under their own name; each differs from the expert where its flaw is."""
    variants = {name: make_policy(name, seed=1) for name in VARIANTS}
    assert {name: p.name for name, p in variants.items()} == {name: name for name in VARIANTS}
    assert set(VARIANTS) <= set(BUILTIN)
    crossing = walker(12.0, -3.5, speed=1.4, yaw=math.pi / 2)
    cyclist = Agent("cyclist", 12.0, -4.5, math.pi / 2, 4.0, 1.6, 0.65)
    lead = car(15.0, 0.0)
    for agent in (crossing, cyclist):
        assert EXPERT.act(observe(STRAIGHT, 6.0, agents=(agent,)))[1] < -0.3
        assert variants["expert-reckless"].act(observe(STRAIGHT, 6.0, agents=(agent,)))[1] > -0.05
    assert variants["expert-reckless"].act(observe(STRAIGHT, 6.0, agents=(lead,)))[1] < -0.2  # it still brakes for cars
    assert variants["expert-ignores-cars"].act(observe(STRAIGHT, 6.0, agents=(lead,)))[1] > -0.05
    assert variants["expert-ignores-cars"].act(observe(STRAIGHT, 6.0, agents=(crossing,)))[1] < -0.3
    assert variants["expert-ignores-lights"].act(observe(STRAIGHT, 6.0, lights=(light(15.0, "r"),)))[1] > -0.05
    cruise = EXPERT.config.target_speed
    assert EXPERT.act(observe(STRAIGHT, cruise + 1.0))[1] < 0.0 < variants["expert-fast"].act(observe(STRAIGHT, cruise + 1.0))[1]
    with pytest.raises(ValueError, match="ignore"):
        ExpertConfig(ignore=("dog",))


def test_the_noisy_expert_adds_seeded_gaussian_noise_within_the_action_range() -> None:
    obs = observe(STRAIGHT, 3.0)
    clean = EXPERT.act(obs)
    noisy = NoisyExpert(NoisyConfig(steer_sigma=0.2, accel_sigma=0.5), seed=7)
    first = np.array([noisy.act(obs) for _ in range(2000)])
    noisy.reset(7)
    assert np.array_equal(np.array([noisy.act(obs) for _ in range(2000)]), first)
    noisy.reset(8)
    assert not np.array_equal(np.array([noisy.act(obs) for _ in range(2000)]), first)
    assert first.min() >= -1.0 and first.max() <= 1.0
    inside = np.all(np.abs(first) < 1.0, axis=1)  # away from the clipped edges the noise is as configured
    assert np.median(first[inside, 0]) == pytest.approx(clean[0], abs=0.02)
    assert np.std(first[:, 0]) == pytest.approx(0.2, rel=0.1)
    with pytest.raises(ValueError, match="accel_sigma"):
        NoisyConfig(accel_sigma=-0.1)


def test_random_policy_is_seeded_smooth_and_bounded() -> None:
    obs = observe(STRAIGHT, 0.0)
    a, b = RandomPolicy(seed=3), RandomPolicy(seed=3)
    seq_a = np.array([a.act(obs) for _ in range(200)])
    seq_b = np.array([b.act(obs) for _ in range(200)])
    assert np.array_equal(seq_a, seq_b)
    a.reset(4)
    assert not np.array_equal(np.array([a.act(obs) for _ in range(200)]), seq_a)
    assert seq_a.min() >= -1.0 and seq_a.max() <= 1.0
    # smooth: consecutive actions move much less than independent draws would
    assert np.abs(np.diff(seq_a, axis=0)).mean() < 0.35
    assert seq_a[:, 1].mean() > 0.0  # biased to move forward
    assert RandomPolicy().name == "random" and EXPERT.name == "expert"
    with pytest.raises(ValueError, match="theta"):
        RandomConfig(theta=0.0)


# ---- whole episodes on SUMO -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sumo() -> SumoBackend:
    backend = SumoBackend(SumoConfig())
    yield backend
    backend.close()


@pytest.mark.parametrize("seed", [3])
def test_expert_completes_its_route_in_traffic_without_incident(sumo: SumoBackend, seed: int) -> None:
    """Seed 3: 176 m with two turns and the traffic light at B1, among cars, cyclists and pedestrians."""
    policy = ExpertPolicy()
    obs = sumo.reset(seed)
    min_gap = math.inf
    for _ in range(1500):
        obs = sumo.step(policy.act(obs))
        assert not (obs.events.collision or obs.events.off_road or obs.events.red_light), obs.events
        assert abs(obs.route.lateral_offset) < 1.0
        for a in obs.scene.agents:
            min_gap = min(min_gap, math.hypot(a.x - obs.scene.ego.x, a.y - obs.scene.ego.y))
        if obs.route.completion >= 0.99:
            break
    assert obs.route.completion >= 0.95
    assert min_gap < 15.0  # it met traffic on the way, so the run tested yielding, not an empty town
