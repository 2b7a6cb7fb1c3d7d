"""The online loop end to end: SUMO collection, `pipeline annotate` in the background, updates, kill -9 and resume.

Annotation is the real `pipeline annotate` with the smallest open_clip ViT (random weights, no download),
the scene gate and no VLM, so these tests exercise every stage without network or GPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.compute as pc
import pytest
from train_data import TINY

from data_schema import Dataset
from pipeline.online import train_online
from pipeline.threads import online_budget
from train import RunDir, RunSpec, TrainConfig

pytestmark = pytest.mark.slow

ANNOTATE = ("clip.model=ViT-S-32-alt", "clip.pretrained=none", "clip.device=cpu", "gate.source=scene", "vlm.backend=none")
ANNOTATE_ARGS = tuple(a for s in ANNOTATE for a in ("--set", s))
ONLINE = {**TINY, "steps_per_round": 24, "max_episode_steps": 12, "updates_per_step": 0.25, "episodes_per_shard": 1}


def labelled_transitions(ds: Dataset, label_set: str) -> list[tuple[str, int]]:
    """Every transition the dataset can give with this label set, computed from the shards directly."""
    labelled = set(ds.label_set(label_set).labelled())
    keys = []
    for shard in ds.shards():
        if shard in labelled:
            table = ds.read_shard(shard, ["episode_id", "step", "is_last"]).filter(pc.invert(pc.field("is_last")))
            keys += zip(table.column("episode_id").to_pylist(), table.column("step").to_pylist())
    return keys


def check_finished_run(run: RunDir, result, rounds: int) -> None:
    spec = run.spec()
    ds = Dataset.open(spec.dataset)
    shards = ds.run_shards(spec.run_id)
    assert shards and set(shards) <= set(ds.label_set(spec.label_set).shards())  # everything collected got labelled
    expected = labelled_transitions(ds, spec.label_set)
    got = result.buffer.keys()
    assert len(got) == len(set(got)) == len(expected) and set(got) == set(expected)  # exactly, once each
    assert result.state.env_steps == len(expected)
    episodes = ds.read_steps(["episode_id", "step"]).to_pandas()
    assert not episodes.duplicated(["episode_id", "step"]).any()  # no episode id reused across shards
    assert result.state.round == rounds and RunDir(run.path).state().consumed == result.state.consumed
    metrics = pd.read_csv(run.path / "metrics.csv")
    assert metrics["round"].tolist() == list(range(1, rounds + 1))
    assert metrics["steps_collected"].min() >= ONLINE["steps_per_round"]


def test_two_rounds_end_with_exactly_the_labelled_transitions(tmp_path):
    run = RunDir(tmp_path / "run")
    config = TrainConfig(**{**ONLINE, "rounds": 2})
    spec = RunSpec(str(tmp_path / "ds"), "clg", "online", config, run_id="train-t2", annotate_args=ANNOTATE_ARGS,
                   reward_from_components=True, reward_overrides={"penalty": -5.0, "theta_min": -0.2})  # fmt: skip
    run.write_spec(spec)
    lines: list[str] = []
    result = train_online(run, echo=lines.append)
    check_finished_run(run, result, rounds=2)
    # the run log says what each part got, and the annotation passes report the same from their workers
    budget = online_budget(config.torch_threads)
    assert lines[0] == budget.describe()
    log = (tmp_path / "run" / "annotate.log").read_text()
    assert log.count(f"workers: {budget.annotation_workers}, torch threads per worker: {budget.annotation_threads}") >= 1
    # rewards were recomputed by data_schema.reward from the stored components with the overrides
    from data_schema.reward import RewardConfig, synthesize

    ds = Dataset.open(spec.dataset)
    joined = ds.join("clg", columns=["speed", "lateral_offset", "heading_error", "collision", "off_road", "stuck"])
    joined["reward"] = synthesize(joined, RewardConfig(penalty=-5.0, theta_min=-0.2))["reward"]
    expected = joined.set_index(["episode_id", "step"])["reward"]
    wanted = [expected[(episode, step + 1)] for episode, step in result.buffer.keys()]  # reward of row t+1
    assert result.buffer.rewards() == pytest.approx(wanted, abs=1e-6)
    stored = ds.join("clg", columns=["speed"]).set_index(["episode_id", "step"])["reward"]
    assert not stored.equals(expected)  # the overrides changed the rewards
    # updates follow the labels: updates_per_step per labelled transition of the run (learning_starts = 0)
    assert result.state.grad_steps == round(len(result.buffer) * ONLINE["updates_per_step"])
    assert (tmp_path / "run" / "annotate.log").read_text().count("=== pass") >= 1


def test_a_run_killed_mid_round_resumes_and_finishes(tmp_path):
    ds_path, run_path = str(tmp_path / "ds"), tmp_path / "run"
    # Ten one-episode shards a round: round 2 stays mid-way long enough to be caught even on an idle machine.
    settings = {**ONLINE, "steps_per_round": 120}
    tiny = [a for k, v in settings.items() for a in ("--set", f"{k}={list(v) if isinstance(v, tuple) else v}")]
    command = [sys.executable, "-m", "pipeline", "train", ds_path, "--label-set", "clg", "--out", str(run_path), "--rounds", "3", *tiny]
    command += [a for s in ANNOTATE for a in ("--annotate-set", s)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        run = RunDir(run_path)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:  # round 1 checkpointed, round 2 wrote a shard
            state = run.state() if run.exists() else None
            if state is not None and state.round == 1:
                ds = Dataset.open(ds_path)
                if len(ds.run_shards(run.spec().run_id)) > state.episodes:
                    break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed mid-round"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the trainer and its annotation pass, as a crashed machine would
        process.wait()
    before = run.state()
    assert before.round == 1
    ds = Dataset.open(ds_path)
    assert len(ds.run_shards(run.spec().run_id)) > before.episodes  # data of the killed round is on disk

    result = train_online(run, echo=lambda line: None)  # what `pipeline train ... --resume` runs
    check_finished_run(run, result, rounds=3)
    assert set(before.consumed) <= set(result.state.consumed)
