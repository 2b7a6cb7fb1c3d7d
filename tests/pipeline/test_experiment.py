"""`pipeline experiment`: the spec is checked before any work, the table is the cells' results, and a killed
experiment resumes without redoing finished cells (a real run: SUMO scenarios, annotate, offline TD3+BC)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from annotate import load_config
from data_schema import Dataset
from data_schema.naming import shard_name_pattern
from pipeline.cli import main
from pipeline.experiment import run as run_module
from pipeline.experiment.models import reward_models
from pipeline.experiment.results import METRICS, write_results
from pipeline.experiment.spec import load_spec

TINY_TRAIN = ["batch_size=8", "bev_size=16", "cnn_channels=[4, 8]", "feature_size=16", "state_units=8", "hidden_units=[16]"]
TINY_CLIP = ["epochs=1", "batch_size=8", "device=cpu", "threads=1"]
SPEC = {
    "name": "tiny",
    "dataset": {"collect": [
        {"policy": "expert", "episodes": 2, "seed": 0, "scenarios": ["ped_crossing"], "max_steps": 40},
        {"policy": "expert-reckless", "episodes": 2, "seed": 100, "scenarios": ["ped_crossing"], "max_steps": 40},
        {"policy": "random", "episodes": 2, "seed": 200, "scenarios": ["free"], "max_steps": 60},  # crashes: hazards to learn
    ]},
    "models": {"clip_finetune": TINY_CLIP},
    "annotate": ["clip.device=cpu", "gate.source=scene"],
    "variants": ["hand-built"],
    "penalties": [-10],
    "seeds": [0, 1, 2],
    "algorithm": {"name": "td3+bc", "steps": 4, "train": TINY_TRAIN},
    "evaluation": {"scenarios": ["ped_crossing"], "episodes": 1, "max_steps": 30, "checkpoints": 2},
    "workers": 2,
}  # fmt: skip


def write_spec(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**SPEC, **changes}, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"variants": ["hand-built", "fullish"]}, "unknown preset 'fullish'"),
        ({"variants": [{"name": "mine", "preset": "clip-only"}]}, "unknown preset 'clip-only'"),
        ({"algorithm": {"name": "ppo", "steps": 4}}, "unknown algorithm 'ppo'"),
        ({"algorithm": {"name": "td3+bc", "steps": 4, "online": True}}, "online rounds train sac"),
        ({"penalties": [5]}, "penalties"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"evaluation": {"episodes": 0}}, "evaluation"),
        ({"varients": ["full"]}, "varients: unknown key"),
        ({"models": {"clip_checkpoint": "weights.safetensors"}}, "clip_model"),
        ({"models": {"vlm_model": "models/vlm", "vlm_finetune": ["steps=5"]}}, "not both"),
    ],
)
def test_a_bad_spec_is_refused_before_any_work(tmp_path, changes, named):
    spec = write_spec(tmp_path / "spec.yaml", **changes)
    result = CliRunner().invoke(main, ["experiment", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and named in result.output and "spec.yaml" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_vlm_is_needed_only_when_a_variant_has_the_dynamic_pathway(tmp_path):
    assert not load_spec(write_spec(tmp_path / "a.yaml", variants=["hand-built", "clg-only"])).uses_vlm
    assert load_spec(write_spec(tmp_path / "b.yaml", variants=["hand-built", "full"])).uses_vlm
    custom = [{"name": "mine", "preset": "clg-only", "annotate": ["reward.pathways=[static, dynamic]"]}]
    assert load_spec(write_spec(tmp_path / "c.yaml", variants=custom)).uses_vlm


def test_given_models_are_used_as_they_are(tmp_path):
    models = {"clip_checkpoint": "clip.safetensors", "clip_model": "ViT-S-32-alt", "vlm_model": "models/vlm"}
    spec = load_spec(write_spec(tmp_path / "spec.yaml", models=models, variants=["full"]))
    settings = reward_models(spec, tmp_path / "out", "no-dataset-needed", echo=lambda line: None, progress=False)
    assert settings == ("clip.model=ViT-S-32-alt", "clip.pretrained=clip.safetensors", "vlm.backend=transformers", "vlm.model=models/vlm")
    assert not (tmp_path / "out").exists()  # nothing trained


@pytest.mark.slow
def test_the_models_are_tuned_on_the_experiments_dataset_once(tmp_path):
    vlm = ["steps=2", "batch_size=2", "eval_windows=2", "warmup_steps=0", "vision_steps=2", "vision_batch_size=2", "device=cpu"]
    spec = load_spec(write_spec(tmp_path / "spec.yaml", variants=["full"], models={"clip_finetune": TINY_CLIP, "vlm_finetune": vlm}))
    out = tmp_path / "out"
    dataset = run_module._dataset(spec, out, echo=lambda line: None)
    settings = reward_models(spec, out, dataset, echo=lambda line: None, progress=False)
    clip, vlm_dir = out / "models" / "clip", out / "models" / "vlm"
    assert f"clip.pretrained={clip / 'model.safetensors'}" in settings and f"vlm.model={vlm_dir}" in settings
    assert json.loads((vlm_dir / "finetune.json").read_text())["spec"]["finetune"]["steps"] == 2
    config = load_config(None, [*settings, *spec.annotate, *spec.variants[0].settings])
    assert (config.vlm.backend, config.vlm.model) == ("transformers", str(vlm_dir))  # what the label set runs
    stamps = {p: p.stat().st_mtime_ns for p in (clip / "model.safetensors", vlm_dir / "finetune.json")}
    assert reward_models(spec, out, dataset, echo=lambda line: None, progress=False) == settings
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # a rerun trains nothing


@pytest.mark.slow
def test_online_cells_collect_and_annotate_their_own_data_and_are_evaluated_each_round(tmp_path):
    algorithm = {"name": "sac", "steps": 40, "online": True, "train": [*TINY_TRAIN, "learning_starts=10", "episodes_per_shard=1"]}
    spec, out = write_spec(tmp_path / "spec.yaml", algorithm=algorithm, seeds=[0]), tmp_path / "out"
    result = CliRunner().invoke(main, ["experiment", str(spec), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    here = out / "cells" / "hand-built-p10" / "seed0"
    cell = json.loads((here / "result.json").read_text())
    state = json.loads((here / "run" / "state.json").read_text())
    assert state["round"] == 2 and state["env_steps"] >= 40 and state["grad_steps"] > 0
    assert [point["grad_steps"] for point in cell["curve"]][-1] == state["grad_steps"] and len(cell["curve"]) == 2  # one per round
    own = Dataset.open(str(here / "dataset"))
    assert own.shards() and own.label_set("hand-built-p10").labelled() == own.shards()  # annotated in the background
    assert all(shard_name_pattern("seed0").fullmatch(name) for name in own.shards())  # the cell's own run
    assert Dataset.open(str(out / "dataset")).label_sets() == []  # the shared dataset only trains the models


def _cell(variant: str, penalty: float, seed: int, rng: np.random.Generator) -> dict:
    final = {metric: float(rng.uniform(0, 1)) for metric, _ in METRICS} | {"episodes": 5, "steps": 100}
    return {"variant": variant, "penalty": penalty, "seed": seed, "label_set": f"{variant}-p{abs(penalty):g}", "algorithm": "bc",
            "curve": [{"grad_steps": 2, **final}, {"grad_steps": 4, **final}], "final": final}  # fmt: skip


def test_the_table_is_the_mean_and_std_over_seeds_of_the_cells_results(tmp_path):
    spec = load_spec(write_spec(tmp_path / "spec.yaml", variants=["hand-built", "full"], penalties=[-10, 0]))
    rng = np.random.default_rng(0)
    cells = [_cell(v, p, s, rng) for v in ("hand-built", "full") for p in (-10.0, 0.0) for s in (0, 1, 2)]
    paths = write_results(tmp_path / "out", spec, cells)
    table = json.loads(paths["results.json"].read_text())["table"]
    assert [(row["variant"], row["penalty"]) for row in table] == [("hand-built", -10), ("full", -10), ("hand-built", 0), ("full", 0)]
    for row in table:
        mine = [c["final"] for c in cells if (c["variant"], c["penalty"]) == (row["variant"], row["penalty"])]
        for metric, _ in METRICS:
            values = [m[metric] for m in mine]
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values))
            assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1))
    first = table[0]
    assert f"{first['collision_rate_mean']:.3g} ± {first['collision_rate_std']:.2g}" in paths["table.md"].read_text()
    assert all(paths[name].stat().st_size > 1000 for name in ("curves.png", "bars.png", "report.html"))


@pytest.mark.slow
def test_a_killed_experiment_resumes_without_redoing_finished_cells(tmp_path):
    spec, out = write_spec(tmp_path / "spec.yaml"), tmp_path / "out"
    command = [sys.executable, "-m", "pipeline", "experiment", str(spec), "--out", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = lambda: sorted(out.glob("cells/*/*/result.json"))  # noqa: E731
    deadline = time.monotonic() + 900
    while not results() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished = {p: (p.stat().st_mtime_ns, p.read_text()) for p in results()}
    assert 1 <= len(finished) < 3, "the first run should be killed with some cells finished and some not"

    again = CliRunner().invoke(main, ["experiment", str(spec), "--out", str(out)], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert f"cells: {len(finished)} of 3 finished already" in again.output
    assert all((p.stat().st_mtime_ns, p.read_text()) == before for p, before in finished.items())  # not redone
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert sorted(c["seed"] for c in cells) == [0, 1, 2]
    table = json.loads((out / "results.json").read_text())["table"]
    assert table[0]["collision_rate_mean"] == pytest.approx(np.mean([c["final"]["collision_rate"] for c in cells]))
    changed = write_spec(tmp_path / "other.yaml", seeds=[0, 1])
    refused = CliRunner().invoke(main, ["experiment", str(changed), "--out", str(out)])
    assert refused.exit_code != 0 and "another spec" in refused.output
