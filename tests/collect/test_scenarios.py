"""Scenarios on the SUMO town: each one's hazard happens on several seeds, seen in the recorded rows.

Episodes run through ``DrivingEnv`` and ``run_episode``, the collector's own path, and are checked on the rows
it would write (ego-frame ``agents``, route progress, events). Background traffic is off where a check must
tell the scenario's road users from the town's; the expert-versus-reckless test keeps the town's traffic on.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from collect import SCENARIOS, EnvSpec, SumoConfig, check_scenarios, make_policy, run_episode, scenario_for
from collect.scenarios import CrossingScenario, LeadBrakeScenario, RedLightScenario, make_director
from data_schema.groundtruth import Corridor, agent_table, critical_in_corridor

QUIET = SumoConfig(cars=0, motorcycles=0, cyclists=0, pedestrians=0)
SEEDS = (0, 1, 2)
EGO_LENGTH = QUIET.vehicle.length


def play(scenario: str, policy="expert", seed: int = 0, config: SumoConfig = QUIET):
    """One episode's recorded rows, how it ended, and the director that staged it."""
    env = EnvSpec(backend=config, scenarios=(scenario,)).build()
    try:
        policy = make_policy(policy, seed) if isinstance(policy, str) else policy
        table, outcome = run_episode(env, policy, f"{scenario}-{seed}", seed, scenario)
        return table, outcome, env.backend.stage.director
    finally:
        env.close()


def agents_of(table: pa.Table, kind: str) -> dict[str, np.ndarray]:
    """Per row, the one agent of ``kind`` (ego frame), NaN in rows without it; the scenes hold at most one."""
    rows, fields = agent_table(table.column("agents"))
    mine = fields["kind"] == kind
    assert np.bincount(rows[mine], minlength=table.num_rows).max() <= 1
    out = {name: np.full(table.num_rows, np.nan) for name in ("x", "y", "yaw", "speed", "length", "width")}
    for name in out:
        out[name][rows[mine]] = fields[name][mine]
    return out


# ---- the registry and its rules ---------------------------------------------------------------------------


def test_scenarios_are_named_and_assigned_to_episodes_in_turn() -> None:
    assert set(SCENARIOS) == {"free", "ped_crossing", "ped_behind_parked", "cyclist_crossing", "lead_brake", "red_light"}
    runs = ("ped_crossing", "free", "ped_crossing")
    assert [scenario_for(runs, i) for i in range(7)] == [runs[i % 3] for i in range(7)]
    assert check_scenarios("lead_brake") == ("lead_brake",)
    with pytest.raises(ValueError, match="unknown scenario 'pedestrian'"):
        check_scenarios(["free", "pedestrian"])
    with pytest.raises(ValueError, match="at least one"):
        check_scenarios([])
    with pytest.raises(ValueError, match="staged on the SUMO town only"):
        EnvSpec(sim="carla", scenarios=("free", "red_light"))
    assert EnvSpec(sim="carla", scenarios=("free",)).scenarios == ("free",)


@pytest.mark.parametrize(
    "make,field",
    [
        (lambda: CrossingScenario(actor="dog"), "actor"),
        (lambda: CrossingScenario(speed=(2.0, 1.0)), "speed"),
        (lambda: CrossingScenario(sides=("up",)), "sides"),
        (lambda: CrossingScenario(parked_car=True), "sides must be"),
        (lambda: LeadBrakeScenario(decel=(8.0,)), "decel"),
        (lambda: LeadBrakeScenario(max_gap_m=(20.0, 10.0)), "max_gap_m"),
        (lambda: LeadBrakeScenario(creep_speed=9.0), "creep_speed"),
        (lambda: RedLightScenario(max_seconds=0.0), "max_seconds"),
    ],
)
def test_parameters_are_validated_naming_the_field(make, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()


def test_the_same_seed_stages_the_same_episode_and_seeds_vary_it() -> None:
    first, _, director = play("ped_crossing", seed=4)
    again, _, same = play("ped_crossing", seed=4)
    assert first.equals(again) and (director.conflict_m, director.side) == (same.conflict_m, same.side)
    draws = [make_director(SCENARIOS["ped_crossing"], np.random.default_rng(seed)) for seed in range(8)]
    assert len({(d.conflict_m, d.speed, d.lead_s) for d in draws}) == 8 and {d.side for d in draws} == {"left", "right"}
    assert make_director(SCENARIOS["free"], np.random.default_rng(0)) is None


# ---- crossings: pedestrian, cyclist, pedestrian behind a parked car -------------------------------------------


@pytest.mark.parametrize("scenario,kind", [("ped_crossing", "pedestrian"), ("cyclist_crossing", "cyclist"), ("ped_behind_parked", "pedestrian")])
@pytest.mark.parametrize("seed", SEEDS)
def test_the_road_user_crosses_the_egos_lane_in_front_of_it(scenario: str, kind: str, seed: int) -> None:
    table, outcome, director = play(scenario, seed=seed)
    assert set(table.column("scenario").to_pylist()) == {scenario}
    assert outcome != "collision" and director.triggered_at is not None  # the expert yields; the hazard came
    in_lane = critical_in_corridor(table.column("agents"), Corridor(length=30.0, half_width=1.75, kinds=(kind,)))
    first = int(np.argmax(in_lane))
    assert in_lane.any()
    # it enters the lane ahead of the ego, before the ego reaches the conflict point
    progress = table.column("route_progress").to_numpy()
    assert progress[first] + EGO_LENGTH / 2 < director.conflict_m
    actor = agents_of(table, kind)
    assert actor["x"][first] > EGO_LENGTH / 2
    # geometry: it starts beside the street on its side and crosses the whole of the ego's path ahead of it
    start = actor["y"][~np.isnan(actor["y"])][0]
    assert math.copysign(1.0, start) == (1.0 if director.side == "left" else -1.0) and abs(start) > 1.75
    ahead = actor["y"][actor["x"] > EGO_LENGTH / 2]
    assert np.nanmin(ahead) < -QUIET.vehicle.width / 2 and np.nanmax(ahead) > QUIET.vehicle.width / 2
    assert np.nanmax(actor["speed"]) == pytest.approx(director.speed, rel=1e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_parked_car_hides_the_pedestrian_until_it_steps_out(seed: int) -> None:
    table, _, director = play("ped_behind_parked", seed=seed)
    ped, car = agents_of(table, "pedestrian"), agents_of(table, "vehicle")
    assert np.nanmax(car["speed"]) == 0.0 and np.all(car["y"][car["x"] > 0] < -1.75)  # parked on the right, at the kerb
    eye = np.array([EGO_LENGTH / 2, 0.0])  # the middle of the windscreen, near enough
    rows = np.flatnonzero(~np.isnan(ped["x"]) & ~np.isnan(car["x"]) & (ped["x"] > eye[0]))
    hidden = np.array([_blocks(eye, np.array([ped["x"][i], ped["y"][i]]), car, i) for i in rows])
    assert hidden[0]
    # hidden in every frame in which it is still beside the road on its kerb, ...
    assert hidden[ped["y"][rows] < -1.75].all()
    # ... and it comes into view only on stepping out, with the ego a few seconds from the conflict point at most
    shown = rows[int(np.argmin(hidden))]
    assert ped["speed"][shown] > 0 and ped["y"][shown] > -1.75
    speed = max(float(table.column("speed").to_numpy()[shown]), 1.0)
    assert (director.conflict_m - table.column("route_progress").to_numpy()[shown] - EGO_LENGTH / 2) / speed < 4.0


def _blocks(eye: np.ndarray, target: np.ndarray, car: dict[str, np.ndarray], i: int) -> bool:
    """Whether the segment eye -> target passes through the car's footprint in row ``i`` (slab test in the car's frame)."""
    c, s = math.cos(car["yaw"][i]), math.sin(car["yaw"][i])
    to_car = np.array([[c, s], [-s, c]])
    a, b = to_car @ (eye - (car["x"][i], car["y"][i])), to_car @ (target - (car["x"][i], car["y"][i]))
    lo, hi = 0.0, 1.0
    for axis, half in ((0, car["length"][i] / 2), (1, car["width"][i] / 2)):
        d = b[axis] - a[axis]
        if abs(d) < 1e-12:
            if abs(a[axis]) > half:
                return False
            continue
        t0, t1 = sorted(((-half - a[axis]) / d, (half - a[axis]) / d))
        lo, hi = max(lo, t0), min(hi, t1)
    return lo <= hi


def test_a_driver_who_does_not_yield_hits_the_pedestrian_the_expert_does_not() -> None:
    """With the town's traffic on: the expert-reckless ignores pedestrians and cyclists, otherwise it is the expert."""
    traffic = SumoConfig()
    reckless = [play("ped_crossing", "expert-reckless", seed, traffic) for seed in SEEDS]
    expert = [play("ped_crossing", "expert", seed, traffic) for seed in SEEDS]
    hits = [outcome == "collision" and t.column("collision_with")[-1].as_py() == "pedestrian" for t, outcome, _ in reckless]
    assert sum(hits) >= 2
    assert not any(t.column("collision").to_numpy().any() for t, _, _ in expert)
    assert {t.column("policy")[0].as_py() for t, _, _ in reckless} == {"expert-reckless"}


# ---- a lead car braking hard ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_the_lead_car_brakes_hard_and_the_gap_closes(seed: int) -> None:
    table, outcome, director = play("lead_brake", seed=seed)
    assert outcome != "collision" and director.triggered_at is not None
    lead = agents_of(table, "vehicle")
    t = table.column("t").to_numpy()
    braking = np.flatnonzero(np.isclose(t, director.triggered_at, atol=1e-6))[0]
    window = slice(braking - 1, braking + 3)  # from the last row at speed, 0.3 s of braking
    decel = (lead["speed"][window][0] - lead["speed"][window][-1]) / (t[window][-1] - t[window][0])
    assert decel == pytest.approx(director.decel, rel=0.05) and decel >= 5.0
    assert np.all(np.abs(lead["y"][window]) < 0.5) and np.all(lead["x"][window] > 0)  # in the ego's lane, ahead
    gap = lead["x"] - lead["length"] / 2 - EGO_LENGTH / 2
    stopped = braking + int(np.argmax(lead["speed"][braking:] == 0.0))
    assert gap[stopped] < gap[braking] - 1.0  # the ego closed in while the lead braked
    assert gap[braking] <= director.max_gap_m + 1.5 and lead["speed"][braking - 1] > 3.0  # ego close behind, at speed


def test_a_driver_who_does_not_brake_for_cars_runs_into_the_lead() -> None:
    outcomes = [play("lead_brake", "expert-ignores-cars", seed) for seed in SEEDS]
    assert all(outcome == "collision" and t.column("collision_with")[-1].as_py() == "vehicle" for t, outcome, _ in outcomes)


# ---- a light turning red ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_the_light_turns_red_before_the_ego_reaches_the_stop_line(seed: int) -> None:
    env = EnvSpec(backend=QUIET, scenarios=("red_light",)).build()
    try:
        policy = make_policy("expert")
        current = env.reset(seed, "red_light")
        director = env.backend.stage.director
        line = env.backend.current_route.route.point_at(director.stop_line_m)
        states, fronts = [], []
        while not current.done:
            scene = current.obs.scene
            light = min(scene.traffic_lights, key=lambda tl: float(np.linalg.norm(tl.stop_line.mean(axis=0) - line)))
            states.append(light.state)
            fronts.append(current.obs.route.progress + EGO_LENGTH / 2)
            assert not current.obs.events.red_light
            current = env.step(policy.act(current.obs, current.bev))
    finally:
        env.close()
    states, fronts = np.array(states), np.array(fronts)
    red = int(np.argmax(states == "r"))
    assert states[0] == "g" and (states == "y").any() and (states == "r").any()
    assert fronts[red] < director.stop_line_m  # red while the ego is still short of the line
    assert fronts.max() > director.stop_line_m  # ... and the ego goes on once it is green again
    assert len(states) <= math.ceil(SCENARIOS["red_light"].max_seconds / QUIET.dt) + 1


def test_a_driver_who_ignores_lights_crosses_on_red() -> None:
    crossed = [play("red_light", "expert-ignores-lights", seed)[0].column("red_light").to_numpy().any() for seed in SEEDS]
    assert all(crossed)
