"""The contract between stages that the top floor relies on: collect runs train's export exactly as train's
own networks see the same observation (one state vector, one BEV downsampling)."""

from __future__ import annotations

import numpy as np
from train_data import TINY

from collect.backend import Controls, Events, Observation, RouteState
from collect.policies.base import observation_state
from collect.policies.checkpoint import TorchScriptPolicy
from collect.scene import MapGeometry, Pose, Scene
from pipeline.sac_driver import SacDriver
from train import TrainConfig, create_agent, export_torchscript, policy_input

CONFIG = TrainConfig(**TINY)


def observation() -> Observation:
    route = RouteState(progress=3.0, completion=0.1, distance_to_goal=40.0, lateral_offset=0.4, heading_error=-0.1,
                       ahead=np.linspace(0, 10, 16, dtype=np.float32).reshape(8, 2))  # fmt: skip
    scene = Scene(map=MapGeometry("town", ()), ego=Pose(0.0, 0.0, 0.0), ego_length=4.5, ego_width=1.9)
    return Observation(t=1.0, speed=4.2, controls=Controls(0.1, 0.3, 0.0), route=route, scene=scene, events=Events())


def test_collector_runs_the_export_like_the_trainer(tmp_path):
    agent = create_agent(CONFIG)
    path = export_torchscript(agent, tmp_path / "policy.pt")
    obs = observation()
    bev = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    action = TorchScriptPolicy(path).act(obs, bev)
    expected = agent.predict(policy_input(bev, observation_state(obs), CONFIG.bev_size))[0]
    assert np.allclose(action, expected, atol=1e-6)


def test_the_sac_driver_explores_first_then_samples_around_the_deployed_action():
    agent = create_agent(CONFIG)
    obs, bev = observation(), np.zeros((96, 96, 3), np.uint8)
    first = SacDriver(agent, name="sac", random_steps=2, seed=5)
    again = SacDriver(agent, name="sac", random_steps=2, seed=5)
    first.reset(5)
    again.reset(5)
    # the first random_steps actions are uniform random and seeded
    assert np.array_equal([first.act(obs, bev) for _ in range(2)], [again.act(obs, bev) for _ in range(2)])
    sampled = np.array([first.act(obs, bev) for _ in range(1000)])
    assert np.abs(sampled).max() <= 1.0 and sampled.std(axis=0).min() > 0.05  # SAC's own exploration noise
    # tanh is monotonic and the noise symmetric: the samples' median is the deterministic action
    deployed = agent.predict(policy_input(bev, observation_state(obs), CONFIG.bev_size))[0]
    assert np.allclose(np.median(sampled, axis=0), deployed, atol=0.2)
