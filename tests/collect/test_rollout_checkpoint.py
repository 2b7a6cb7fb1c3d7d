"""Policies by name, and a trained policy run from a TorchScript file built here."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from collect.backends.sumo import SumoConfig
from collect.env import DrivingEnv, EnvSpec, EpisodeLimits
from collect.policies import make_policy
from collect.policies.checkpoint import TorchScriptPolicy
from collect.rollout import RolloutWriter
from data_schema import Dataset, decode_image
from data_schema.features import STATE_DIM, state_matrix, state_vector

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")


class TinyPolicy(torch.nn.Module):
    """Steers against the lateral offset and throttles by the BEV's mean brightness: uses both inputs."""

    def forward(self, bev: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        steer = torch.tanh(-state[:, 3] + 0.5 * state[:, 4] + 0.1 * state[:, 6])
        accel = bev.to(torch.float32).mean(dim=(1, 2, 3)) / 255.0 * 4.0 - 0.1
        return torch.stack([steer, accel], dim=1)


class WrongShape(torch.nn.Module):
    def forward(self, bev: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return state[:, :3]


class NotFinite(torch.nn.Module):
    def forward(self, bev: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return state[:, :2] * float("nan")


class Overshoot(torch.nn.Module):
    def forward(self, bev: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.stack([state[:, 0] * 0.0 + 3.0, state[:, 0] * 0.0 - 7.0], dim=1)


def save_scripted(module: torch.nn.Module, path) -> str:
    torch.jit.script(module).save(str(path))
    return str(path)


def expected_action(bev: np.ndarray, state: np.ndarray) -> np.ndarray:
    steer = np.tanh(-state[3] + 0.5 * state[4] + 0.1 * state[6])
    accel = bev.astype(np.float32).mean() / 255.0 * 4.0 - 0.1
    return np.clip(np.array([steer, accel], dtype=np.float32), -1.0, 1.0)


@pytest.fixture(scope="module")
def env() -> DrivingEnv:
    env = EnvSpec(backend=SumoConfig(), limits=EpisodeLimits(max_steps=30)).build()
    yield env
    env.close()


def test_make_policy_by_name() -> None:
    assert make_policy("expert").name == "expert"
    assert make_policy("random", seed=3).name == "random"
    with pytest.raises(ValueError, match="unknown policy 'nope'.*random, expert"):
        make_policy("nope")


def test_torchscript_policy_is_named_by_its_content(tmp_path) -> None:
    path = save_scripted(TinyPolicy(), tmp_path / "policy.pt")
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:12]
    policy = make_policy(path)
    assert isinstance(policy, TorchScriptPolicy)
    assert policy.name == f"ts-{digest}"


def test_torchscript_policy_acts_on_bev_and_state(env: DrivingEnv, tmp_path) -> None:
    policy = make_policy(save_scripted(TinyPolicy(), tmp_path / "policy.pt"))
    current = env.reset(1)
    for _ in range(10):
        obs = current.obs
        state = state_vector(
            obs.speed, obs.controls.steer, obs.controls.throttle, obs.controls.brake,
            obs.route.lateral_offset, obs.route.heading_error, obs.route.ahead,
        )  # fmt: skip
        action = policy.act(obs, current.bev)
        assert action.dtype == np.float32 and action.shape == (2,)
        assert np.allclose(action, expected_action(current.bev, state), atol=1e-5)
        current = env.step(action)


def test_stored_columns_reproduce_the_policy_input(env: DrivingEnv, tmp_path) -> None:
    """The trainer rebuilds (bev, state) from the columns: it must be what the policy saw when acting."""
    path = save_scripted(TinyPolicy(), tmp_path / "policy.pt")
    policy = make_policy(path)
    dataset = Dataset.create(str(tmp_path / "ds"))
    shard = RolloutWriter(dataset, env, policy, run_id="ts").collect_shard([0]).shard
    table = dataset.read_shard(shard)
    assert set(table.column("policy").to_pylist()) == {policy.name}
    states = state_matrix(table)
    assert states.shape == (table.num_rows, STATE_DIM)
    module = torch.jit.load(path)
    for i, (bev, action) in enumerate(zip(table.column("bev").to_pylist(), table.column("action").to_pylist())):
        if action is None:
            assert i == table.num_rows - 1
            continue
        image = decode_image(bev)
        replayed = module(torch.from_numpy(image.transpose(2, 0, 1).copy())[None], torch.from_numpy(states[i : i + 1]))
        assert np.allclose(np.clip(replayed.numpy()[0], -1, 1), action, atol=1e-5)


@pytest.mark.parametrize("module, message", [(WrongShape(), r"returned \(1, 3\)"), (NotFinite(), "non-finite")])
def test_torchscript_policy_rejects_bad_outputs(env: DrivingEnv, tmp_path, module, message) -> None:
    policy = make_policy(save_scripted(module, tmp_path / "bad.pt"))
    current = env.reset(0)
    with pytest.raises(ValueError, match=message):
        policy.act(current.obs, current.bev)


def test_torchscript_policy_clips_an_overshooting_network_into_the_action_range(env: DrivingEnv, tmp_path) -> None:
    policy = make_policy(save_scripted(Overshoot(), tmp_path / "wild.pt"))
    current = env.reset(0)
    action = policy.act(current.obs, current.bev)
    assert action.tolist() == [1.0, -1.0]
    assert env.step(action).obs.controls.brake == 1.0


def test_a_file_that_is_not_torchscript_is_refused(tmp_path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a TorchScript file"):
        make_policy(str(path))
