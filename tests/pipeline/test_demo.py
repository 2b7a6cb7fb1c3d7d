"""The README's main job, `pipeline demo`, end to end at a tiny size."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from data_schema import Dataset
from pipeline.cli import main


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", str(out), "--episodes", "1", "--rounds", "1", "--steps-per-round", "60", "--eval-episodes", "1", "--max-steps", "40"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output
    # 40-step episodes meet too few pedestrians ahead to tune the VLM on: the demo says so and goes on
    assert "VLM: not tuned" in result.output and "needs at least 2 episodes with gated frames" in result.output

    dataset = Dataset.open(str(out / "dataset"))
    policies = set(dataset.read_steps(["policy"]).column("policy").to_pylist())
    assert {"expert", "random"} <= policies and any(p.startswith("sac-") for p in policies)
    labels = dataset.label_set("demo")
    assert set(labels.shards()) == set(dataset.shards())
    assert labels.document()["spec"]["clip"]["weights_id"] == "random-seed0"

    evaluation = json.loads(next((out / "run").glob("evaluation-*.json")).read_text())
    assert set(evaluation["results"]) == {"random", "expert", str(out / "run")}
    assert all(r["episodes"] == 1 for r in evaluation["results"].values())
    assert list((out / "run" / "checkpoints").glob("*.d3"))
