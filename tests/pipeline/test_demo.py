"""The README's main job, `pipeline demo`, end to end at a tiny size."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from annotate.clip_eval import BEV_PROMPTS
from annotate.clip_finetune import CARD_FILE, CHECKPOINT_FILE, read_card
from annotate.model_weights import file_digest
from data_schema import Dataset
from pipeline.cli import main


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", str(out), "--episodes", "2", "--clip-epochs", "1", "--rounds", "1", "--steps-per-round", "60",
            "--eval-episodes", "1", "--max-steps", "40"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # 40-step episodes meet too few pedestrians ahead to tune the VLM on: the demo says so and goes on
    assert "VLM: not tuned" in result.output and "needs at least 2 episodes with gated frames" in result.output

    dataset = Dataset.open(str(out / "dataset"))
    policies = set(dataset.read_steps(["policy"]).column("policy").to_pylist())
    assert {"expert", "random", "expert-reckless"} <= policies and any(p.startswith("sac-") for p in policies)
    labels = dataset.label_set("demo")
    assert set(labels.shards()) == set(dataset.shards())

    # the static pathway is the BEV CLIP fine-tuned on the demo's own frames, with the card's prompts and theta
    card = read_card(out / "clip" / CARD_FILE)
    spec = labels.document()["spec"]
    assert spec["clip"]["weights_id"] == file_digest(out / "clip" / CHECKPOINT_FILE)
    assert spec["clip"]["model"] == card["model"]
    assert (spec["prompts"]["positive"], spec["prompts"]["negative"]) == (BEV_PROMPTS.positive, BEV_PROMPTS.negative)
    theta = card["heldout"]["prompts"][BEV_PROMPTS.name]["theta"]
    if theta is not None:
        assert (spec["reward"]["theta_min"], spec["reward"]["theta_max"]) == (theta["theta_min"], theta["theta_max"])
    assert "fine-tune a BEV CLIP" in result.output

    evaluation = json.loads(next((out / "run").glob("evaluation-*.json")).read_text())
    assert set(evaluation["results"]) == {"random", "expert", str(out / "run")}
    assert all(r["episodes"] == 1 for r in evaluation["results"].values())
    assert list((out / "run" / "checkpoints").glob("*.d3"))
