"""The episode runner and the rollout writer on the real SUMO backend: RLDS rows, end rules, shards."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyarrow as pa
import pytest

from collect.backends.sumo import SumoConfig
from collect.env import DrivingEnv, EnvSpec, EpisodeLimits, StuckDetector, reached_goal
from collect.episode_rows import EpisodeRows, StepFlags
from collect.policies import make_policy
from collect.route import RouteState, wrap_angle
from collect.rollout import RolloutWriter, run_episode
from data_schema import Dataset, decode_image

MAX_STEPS = 40


@pytest.fixture(scope="module")
def env() -> DrivingEnv:
    """One SUMO per process (libsumo): shared by the module, closed at its end."""
    env = EnvSpec(backend=SumoConfig(), limits=EpisodeLimits(max_steps=MAX_STEPS)).build()
    yield env
    env.close()


class ConstantPolicy:
    """A fixed action, e.g. full brake (the ego never moves) or full lock (it leaves the road)."""

    def __init__(self, action: tuple[float, float]) -> None:
        self.name = f"constant-{action[0]:+.1f}-{action[1]:+.1f}"
        self.action = np.array(action, dtype=np.float32)

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs, bev) -> np.ndarray:
        return self.action


def with_limits(env: DrivingEnv, **limits) -> DrivingEnv:
    """The module's simulator under other episode limits."""
    return DrivingEnv(env.backend, env.rasteriser, EpisodeLimits(**limits))


def test_shard_rows_follow_the_rlds_layout(env: DrivingEnv, tmp_path) -> None:
    dataset = Dataset.create(str(tmp_path / "ds"))
    writer = RolloutWriter(dataset, env, make_policy("expert"), run_id="t", base_seed=10)
    summary = writer.collect_shard([3, 4])

    assert dataset.shards() == [summary.shard]
    assert summary.shard.endswith("-t-e000003")
    table = dataset.read_shard(summary.shard)
    df = table.to_pandas()
    assert list(df["episode_id"].unique()) == ["t-000003", "t-000004"]
    for ep, rows in df.groupby("episode_id", sort=False):
        index = int(ep.rsplit("-", 1)[1])
        ep_summary = next(e for e in summary.episodes if e.episode_id == ep)
        assert list(rows["step"]) == list(range(len(rows)))
        assert len(rows) == ep_summary.steps + 1 <= MAX_STEPS + 1
        assert (rows["seed"] == 10 + index).all() and (rows["policy"] == "expert").all()
        assert (rows["backend"] == "sumo").all() and rows["map"].nunique() == 1
        last = rows.iloc[-1]
        assert rows["is_last"].tolist() == [False] * (len(rows) - 1) + [True]
        assert last["action"] is None
        assert all(len(a) == 2 and np.all(np.abs(a) <= 1) for a in rows["action"].iloc[:-1])
        # end flags only on the final row, exactly one of terminated / truncated there
        for flag in ("terminated", "truncated", "stuck"):
            assert not rows[flag].iloc[:-1].any()
        assert last["terminated"] != last["truncated"]
        assert last["truncated"] == (ep_summary.outcome == "step_limit") == (len(rows) == MAX_STEPS + 1)
        assert (rows["t"].diff().dropna() > 0).all()
        assert rows["camera"].isna().all()  # SUMO has no camera
    bev = decode_image(df["bev"].iloc[0])
    assert bev.shape == (env.rasteriser.config.size_px, env.rasteriser.config.size_px, 3)


def test_rows_hold_the_observations_in_the_ego_frame(env: DrivingEnv) -> None:
    policy = make_policy("expert")
    rows = EpisodeRows("e", 0, policy.name, env.backend.name, env.backend.map_name)
    current = env.reset(2)
    observed, actions, bevs = [], [], []
    for _ in range(15):
        action = policy.act(current.obs, current.bev)
        rows.add(current.obs, current.bev, action)
        observed.append(current.obs)
        actions.append(action)
        bevs.append(current.bev)
        current = env.step(action)
    rows.add(current.obs, current.bev, None, StepFlags(is_last=True, truncated=True))
    table = rows.table().to_pylist()

    assert sum(len(obs.scene.agents) for obs in observed) > 0, "seed 2 should have agents around the ego"
    for row, obs, action, bev in zip(table, observed, actions, bevs):
        ego = obs.scene.ego
        assert row["x"] == ego.x and row["y"] == ego.y
        assert row["speed"] == pytest.approx(obs.speed) and row["route_progress"] == pytest.approx(obs.route.progress)
        assert np.allclose(row["route_ahead"], obs.route.ahead)
        assert np.allclose(row["action"], action)
        assert np.array_equal(decode_image(row["bev"]), bev)  # PNG is lossless
        assert len(row["agents"]) == len(obs.scene.agents)
        c, s = math.cos(ego.yaw), math.sin(ego.yaw)
        for stored, agent in zip(row["agents"], obs.scene.agents):
            # back from the ego frame (x forward, y left) to the world
            assert ego.x + c * stored["x"] - s * stored["y"] == pytest.approx(agent.x, abs=1e-3)
            assert ego.y + s * stored["x"] + c * stored["y"] == pytest.approx(agent.y, abs=1e-3)
            assert wrap_angle(ego.yaw + stored["yaw"]) == pytest.approx(wrap_angle(agent.yaw), abs=1e-4)
            assert abs(stored["yaw"]) <= math.pi + 1e-6  # float32 of -pi
            assert stored["kind"] == agent.kind and stored["length"] == pytest.approx(agent.length)
    assert table[-1]["is_last"] and table[-1]["action"] is None and table[-1]["truncated"]


def test_rows_reject_an_action_on_the_last_row_and_rows_after_it(env: DrivingEnv) -> None:
    current = env.reset(0)
    rows = EpisodeRows("e", 0, "p", "sumo", "m")
    with pytest.raises(ValueError, match="null exactly on the is_last row"):
        rows.add(current.obs, current.bev, np.zeros(2), StepFlags(is_last=True))
    rows.add(current.obs, current.bev, np.zeros(2))
    with pytest.raises(ValueError, match="no final"):
        rows.table()
    rows.add(current.obs, current.bev, None, StepFlags(is_last=True))
    with pytest.raises(ValueError, match="after the final"):
        rows.add(current.obs, current.bev, None, StepFlags(is_last=True))


def test_camera_frames_are_stored_as_jpeg(env: DrivingEnv) -> None:
    """Backends with a camera (CARLA) get their frames into ``camera``; SUMO's null stays null."""
    current = env.reset(0)
    rng = np.random.default_rng(0)
    frame = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 48, axis=0).repeat(3, axis=2)
    frame[:8, :8] = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    rows = EpisodeRows("cam", 0, "p", "carla", "m")
    rows.add(dataclasses.replace(current.obs, camera=frame), current.bev, np.zeros(2))
    rows.add(current.obs, current.bev, None, StepFlags(is_last=True, truncated=True))
    cameras = rows.table().column("camera").to_pylist()
    assert cameras[0][:2] == b"\xff\xd8" and cameras[1] is None  # JPEG start-of-image marker
    decoded = decode_image(cameras[0])
    assert decoded.shape == frame.shape
    assert np.abs(decoded[20:, 16:].astype(int) - frame[20:, 16:]).mean() < 3  # lossy, but the same picture


def test_same_seed_gives_the_same_episode(env: DrivingEnv) -> None:
    policy = make_policy("random", seed=0)
    first, outcome1 = run_episode(env, policy, "a", 7)
    run_episode(env, policy, "b", 8)
    second, outcome2 = run_episode(env, policy, "a", 7)
    assert outcome1 == outcome2
    assert first.equals(second)


def test_braking_in_place_ends_as_stuck(env: DrivingEnv) -> None:
    table, outcome = run_episode(with_limits(env, max_steps=200, stuck_seconds=3.0), ConstantPolicy((0.0, -1.0)), "s", 1)
    last = table.slice(table.num_rows - 1).to_pylist()[0]
    assert outcome == "stuck"
    assert last["stuck"] and last["terminated"] and not last["truncated"]
    assert table.num_rows - 1 == pytest.approx(3.0 / env.backend.dt, abs=1)


def test_leaving_the_road_terminates(env: DrivingEnv) -> None:
    table, outcome = run_episode(with_limits(env, max_steps=300), ConstantPolicy((1.0, 1.0)), "o", 3)
    last = table.slice(table.num_rows - 1).to_pylist()[0]
    assert outcome in ("off_road", "collision")
    assert last["terminated"] and (last["off_road"] or last["collision"])
    assert not pa.compute.any(table.slice(0, table.num_rows - 1).column("off_road")).as_py()


def test_expert_reaches_an_early_goal(env: DrivingEnv) -> None:
    table, outcome = run_episode(with_limits(env, max_steps=400, goal_completion=0.1), make_policy("expert"), "g", 4)
    completion = table.column("route_completion").to_pylist()
    assert outcome == "goal"
    assert completion[-1] >= 0.1 > max(completion[:-1])


def test_step_after_the_end_is_an_error(env: DrivingEnv) -> None:
    env = with_limits(env, max_steps=1)
    env.reset(0)
    assert env.step(np.zeros(2)).truncated
    with pytest.raises(RuntimeError, match="finished episode"):
        env.step(np.zeros(2))


def _route(progress: float, completion: float, distance: float) -> RouteState:
    return RouteState(progress, completion, distance, 0.0, 0.0, np.zeros((8, 2), np.float32))


def test_goal_is_measured_along_the_route() -> None:
    limits = EpisodeLimits(goal_radius_m=3.0, goal_completion=0.995)
    # a loop route passes 1 m from its own end after 10 m of 200
    assert not reached_goal(_route(10.0, 0.05, 1.0), limits)
    assert reached_goal(_route(198.0, 0.99, 2.5), limits)
    assert not reached_goal(_route(190.0, 0.95, 2.5), limits)
    assert reached_goal(_route(199.5, 0.9975, 8.0), limits)
    assert not reached_goal(_route(0.0, 0.0, 0.5), limits)


def test_waiting_at_a_red_light_is_not_stuck() -> None:
    detector = StuckDetector(EpisodeLimits(stuck_seconds=40.0, stuck_progress_m=1.0))
    detector.reset(0.0, 0.0)
    t, progress = 0.0, 0.0
    for _ in range(350):  # 35 s standing, creeping 0.05 m in all
        t += 0.1
        progress += 0.05 / 350
        assert not detector.update(progress, t)
    for _ in range(20):  # drives off
        t += 0.1
        progress += 0.5
        assert not detector.update(progress, t)
    stuck_at = None
    for i in range(500):
        t += 0.1
        if detector.update(progress, t):
            stuck_at = i + 1
            break
    assert stuck_at == pytest.approx(400, abs=1)


@pytest.mark.parametrize(
    "field, value", [("max_steps", 0), ("stuck_seconds", 0.0), ("stuck_progress_m", -1.0), ("goal_completion", 1.5)]
)
def test_limits_are_validated(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"EpisodeLimits.{field}"):
        EpisodeLimits(**{field: value})


def test_env_spec_rejects_an_unknown_simulator() -> None:
    with pytest.raises(ValueError, match="EnvSpec.sim"):
        EnvSpec(sim="gazebo")


def test_collect_steps_writes_whole_episodes_until_the_budget(env: DrivingEnv, tmp_path) -> None:
    dataset = Dataset.create(str(tmp_path / "ds"))
    writer = RolloutWriter(dataset, with_limits(env, max_steps=25), make_policy("expert"), run_id="online", base_seed=100)
    shards = writer.collect_steps(min_steps=60, first_episode=5, episodes_per_shard=2)
    episodes = [e for s in shards for e in s.episodes]
    assert [e.index for e in episodes] == list(range(5, 5 + len(episodes)))
    assert sum(e.steps for e in episodes) >= 60 > sum(e.steps for e in episodes[:-1])
    assert all(len(s.episodes) <= 2 for s in shards)
    assert sorted(dataset.shards()) == sorted(s.shard for s in shards)
    steps = dataset.read_steps(["seed", "is_last"])
    assert steps.num_rows == sum(e.steps + 1 for e in episodes)
    assert sorted(set(steps.column("seed").to_pylist())) == [100 + e.index for e in episodes]
