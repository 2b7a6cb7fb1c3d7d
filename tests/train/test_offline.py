"""`pipeline train --offline`, `pipeline export` and the run directory, through the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from train_data import TINY

from pipeline.cli import main
from train.agent import load_agent
from train.run_dir import RunDir

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

TINY_ARGS = [a for key, value in TINY.items() for a in ("--set", f"{key}={list(value) if isinstance(value, tuple) else value}")]


def _train(*args: str) -> str:
    result = CliRunner().invoke(main, ["train", *args, *TINY_ARGS], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_offline_run_checkpoints_resumes_and_exports(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    common = [small_dataset.path, "--label-set", "test", "--out", str(run_dir), "--offline", "--set", "checkpoint_every=3"]
    _train(*common, "--steps", "6")
    state = RunDir(run_dir).state()
    assert (state.round, state.grad_steps, state.consumed) == (2, 6, ["s0", "s1"])  # s2 has no labels
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["grad_steps"].tolist() == [3, 6] and (metrics["buffer_size"] == 18).all()
    assert list((run_dir / "tb").iterdir())

    refused = CliRunner().invoke(main, ["train", *common, "--steps", "6"])
    assert refused.exit_code != 0 and "--resume" in refused.output
    changed = CliRunner().invoke(main, ["train", *common, "--steps", "9", "--resume", "--batch-size", "4"])
    assert changed.exit_code != 0 and "batch_size" in changed.output

    _train(*common, "--steps", "9", "--resume")
    state = RunDir(run_dir).state()
    assert (state.round, state.grad_steps) == (3, 9)
    assert pd.read_csv(run_dir / "metrics.csv")["grad_steps"].tolist() == [3, 6, 9]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["round-000002.d3", "round-000003.d3"]

    result = CliRunner().invoke(main, ["export", str(run_dir), "--latency-runs", "5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads((run_dir / "policy.json").read_text())
    assert info["latency"]["cpu"]["median_ms"] > 0 and info["checkpoint"].endswith("round-000003.d3")
    agent = load_agent(run_dir / "checkpoints" / "round-000003.d3")
    module = torch.jit.load(str(run_dir / "policy.pt"))
    bev = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    state_in = torch.randn(3, 21)
    assert torch.allclose(module(bev, state_in), torch.from_numpy(agent.predict([bev.numpy(), state_in.numpy()])), atol=1e-6)


@pytest.mark.parametrize("algo", ["iql", "td3+bc", "cql", "bc"])
def test_every_offline_algorithm_trains_checkpoints_and_exports_its_policy(small_dataset, tmp_path, algo):
    run_dir = tmp_path / "run"
    _train(small_dataset.path, "--label-set", "test", "--out", str(run_dir), "--offline", "--algo", algo, "--steps", "4",
           "--set", "checkpoint_every=2")  # fmt: skip
    assert json.loads((run_dir / "run.json").read_text())["config"]["algo"] == algo
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["grad_steps"].tolist() == [2, 4] and metrics["actor_loss" if algo != "bc" else "loss"].notna().all()
    agent = load_agent(RunDir(run_dir).latest_checkpoint())
    assert type(agent).__name__ == {"iql": "IQL", "td3+bc": "TD3PlusBC", "cql": "CQL", "bc": "BC"}[algo]
    result = CliRunner().invoke(main, ["export", str(run_dir), "--latency-runs", "3"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    module = torch.jit.load(str(run_dir / "policy.pt"))
    bev, state_in = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8), torch.randn(3, 21)
    assert torch.allclose(module(bev, state_in), torch.from_numpy(agent.predict([bev.numpy(), state_in.numpy()])), atol=1e-6)


def test_an_offline_algorithm_is_refused_online(small_dataset, tmp_path):
    result = CliRunner().invoke(main, ["train", small_dataset.path, "--label-set", "test", "--out", str(tmp_path / "r"), "--algo", "iql"])
    assert result.exit_code != 0 and "iql learns from a fixed dataset" in result.output
    assert not (tmp_path / "r" / "run.json").exists()


def test_offline_reward_overrides_need_components(small_dataset, tmp_path):
    args = [small_dataset.path, "--label-set", "test", "--out", str(tmp_path / "r"), "--offline", "--steps", "1", *TINY_ARGS]
    result = CliRunner().invoke(main, ["train", *args, "--reward", "penalty=0"])
    assert result.exit_code != 0 and "--reward-from-components" in result.output
    result = CliRunner().invoke(main, ["train", *args, "--reward-from-components", "--reward", "penalty=0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "run.json").read_text())["reward_overrides"] == {"penalty": 0}
    resumed = CliRunner().invoke(main, ["train", *args, "--resume", "--reward-from-components", "--reward", "penalty=-5"])
    assert resumed.exit_code != 0 and "['reward_overrides'] differ from the run's" in resumed.output, resumed.output
    assert json.loads((tmp_path / "r" / "run.json").read_text())["reward_overrides"] == {"penalty": 0}


def test_learning_that_could_never_start_is_refused(small_dataset, tmp_path):
    args = [small_dataset.path, "--label-set", "test", "--out", str(tmp_path / "r"), "--offline", "--steps", "1"]
    result = CliRunner().invoke(main, ["train", *args, "--buffer-limit", "100", "--learning-starts", "101"])
    assert result.exit_code != 0 and "learning_starts 101 exceeds buffer_limit 100" in result.output, result.output


def test_a_label_set_without_shards_is_a_clear_error(tmp_path):
    from train_data import raw_episode, write_dataset

    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 3)]}, labelled=set())
    result = CliRunner().invoke(main, ["train", ds.path, "--label-set", "test", "--out", str(tmp_path / "r"), "--offline", *TINY_ARGS])
    assert result.exit_code != 0 and "no labelled transitions" in result.output
    result = CliRunner().invoke(main, ["train", ds.path, "--label-set", "nope", "--out", str(tmp_path / "r2"), "--offline"])
    assert result.exit_code != 0 and "label set 'nope' does not exist" in result.output
