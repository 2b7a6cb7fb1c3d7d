"""The SAC agent: checkpoint round trip, and the exported TorchScript policy the collector runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from train_data import TINY

from collect.backend import Controls, Events, Observation, RouteState
from collect.policies.checkpoint import TorchScriptPolicy
from collect.scene import MapGeometry, Pose, Scene
from data_schema.features import STATE_DIM
from train.agent import create_agent, load_agent, save_agent
from train.config import TrainConfig
from train.encoder import downsample_bev
from train.export import export_torchscript, measure_latency

CONFIG = TrainConfig(**TINY)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _observations(n: int, px: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, px, px), dtype=torch.uint8, generator=g), torch.randn(n, STATE_DIM, generator=g)


def _batch(n: int, seed: int):
    from d3rlpy.dataset import TransitionMiniBatch

    rng = np.random.default_rng(seed)
    s = CONFIG.bev_size

    def obs():
        return [rng.integers(0, 256, (n, 3, s, s)).astype(np.float32), rng.normal(size=(n, STATE_DIM)).astype(np.float32)]

    return TransitionMiniBatch(
        observations=obs(), actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32), rewards=rng.normal(size=(n, 1)).astype(np.float32),
        next_observations=obs(), next_actions=np.zeros((n, 2), np.float32), terminals=np.zeros((n, 1), np.float32),
        intervals=np.ones((n, 1), np.float32), transitions=[],
    )  # fmt: skip


def test_checkpoint_round_trip_restores_policy_and_optimisers(tmp_path):
    agent = create_agent(CONFIG)
    for i in range(3):
        agent.update(_batch(16, i))
    save_agent(agent, tmp_path / "a.d3")
    loaded = load_agent(tmp_path / "a.d3")
    bev, state = _observations(7, CONFIG.bev_size)
    obs = [bev.numpy(), state.numpy()]
    assert np.array_equal(agent.predict(obs), loaded.predict(obs))
    # the optimiser states came back too: the same next update gives the same losses and weights
    batch = _batch(16, 99)
    torch.manual_seed(5)
    expected = agent.update(batch)
    torch.manual_seed(5)
    got = loaded.update(batch)
    assert got == pytest.approx(expected, rel=1e-5)
    assert np.allclose(agent.predict(obs), loaded.predict(obs), atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))


def test_exported_policy_gives_the_d3rlpy_actions(tmp_path):
    agent = create_agent(CONFIG)
    agent.update(_batch(16, 0))
    path = export_torchscript(agent, tmp_path / "policy.pt", example_bev_px=32)
    module = torch.jit.load(str(path))
    for px in (32, 64):  # any rendered size: the module downsamples as replay does
        bev, state = _observations(6, px, seed=px)
        expected = agent.predict([downsample_bev(bev, CONFIG.bev_size).numpy(), state.numpy()])
        with torch.no_grad():
            got = module(bev, state).numpy()
        assert got.shape == (6, 2) and got.dtype == np.float32
        assert np.allclose(got, expected, atol=1e-6)
        assert np.abs(got).max() <= 1.0
    latency = measure_latency(path, "cpu", bev_px=32, runs=5, warmup=1)
    assert 0 < latency["median_ms"] <= latency["p90_ms"]


def test_loading_the_export_imports_no_model_library(tmp_path):
    path = export_torchscript(create_agent(CONFIG), tmp_path / "policy.pt")
    script = textwrap.dedent(
        f"""
        import json, sys, warnings, torch
        warnings.simplefilter("ignore")
        module = torch.jit.load({str(path)!r})
        out = module(torch.zeros(1, 3, 96, 96, dtype=torch.uint8), torch.zeros(1, {STATE_DIM}))
        heavy = ["open_clip", "ultralytics", "transformers", "vllm", "d3rlpy", "train", "annotate"]
        print(json.dumps({{"shape": list(out.shape), "loaded": [m for m in heavy if m in sys.modules]}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"shape": [1, 2], "loaded": []}
