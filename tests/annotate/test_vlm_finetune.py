"""``pipeline vlm finetune`` / ``vlm eval`` on a small dataset of a pedestrian standing in the lane at varied distances."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from annotate.shard_frames import ShardFrames
from annotate.vlm import VlmConfig, make_vlm_backend
from annotate.vlm import sft
from annotate.vlm.sft import FinetuneConfig, finetune, read_record
from annotate.vlm.sft_data import gated_windows, split_episodes
from annotate.vlm.targets import TargetRule, answer_targets
from annotate_fixtures import raw_episode
from data_schema import Dataset
from data_schema.groundtruth import Corridor
from pipeline.cli import main
from vlm_fixtures import TEST_PROMPT, TEST_SIZE

EPISODES = 8
STEPS = 12


def walker(x: float) -> dict:
    return {"kind": "pedestrian", "x": x, "y": 0.0, "yaw": 0.0, "speed": 0.0, "length": 0.5, "width": 0.5}


@pytest.fixture(scope="module")
def walker_dataset(tmp_path_factory) -> Dataset:
    """Episodes whose frames all show a pedestrian in the lane 4..21 m ahead: every frame is gated, and the
    answer (its risk, the distance in the description) is read off where the red square is drawn."""
    dataset = Dataset.create(str(tmp_path_factory.mktemp("walkers") / "ds"))
    for shard in range(EPISODES // 2):
        episodes = []
        for e in (2 * shard, 2 * shard + 1):
            agents = [[walker(4.0 + (5 * e + 3 * t) % 18)] for t in range(STEPS)]
            episodes.append(raw_episode(f"ep{e}", STEPS, seed=e, agents=agents))
        dataset.write_episode_shard(f"s{shard}", pa.concat_tables(episodes))
    return dataset


def split(dataset: Dataset):
    windows = gated_windows(dataset, 3, Corridor(), TargetRule())
    _, held_ids = split_episodes([w.episode_id for w in windows], 0.25)
    return [w for w in windows if w.episode_id not in held_ids], [w for w in windows if w.episode_id in held_ids]


def small(**changes) -> FinetuneConfig:
    return FinetuneConfig(**{"tiny": TEST_SIZE, "steps": 30, "batch_size": 4, "learning_rate": 5e-3, "warmup_steps": 5,
                             "eval_windows": 16, "vision_steps": 4, "vision_batch_size": 4, "device": "cpu", **changes})


def test_windows_are_annotates_windows_with_their_targets(walker_dataset):
    windows = gated_windows(walker_dataset, 3, Corridor(), TargetRule())
    assert len(windows) == EPISODES * STEPS
    table = walker_dataset.read_shard("s1", ["episode_id", "step", "speed", "agents", "bev", "camera"])
    frames = ShardFrames(table)
    row = 5
    (window,) = [w for w in windows if w.episode_id == frames.episode_id[row] and w.step == frames.step[row]]
    assert list(window.frames) == frames.window(row, 3)
    assert window.target == answer_targets(table, [row])[0]
    only = gated_windows(walker_dataset, 3, Corridor(), TargetRule(), episodes=["ep2"])
    assert {w.episode_id for w in only} == {"ep2"} and len(only) == STEPS


def test_episodes_split_the_same_way_every_time():
    ids = [f"ep{i}" for i in range(10)]
    train, held = split_episodes(ids * 3, 0.2)
    assert len(held) == 2 and sorted(train + held) == sorted(ids) and not set(train) & set(held)
    assert split_episodes(list(reversed(ids)), 0.2) == (train, held)
    assert split_episodes(ids, 0.2, seed=1) != (train, held)
    assert len(split_episodes(ids[:2], 0.01)[1]) == 1  # at least one held out
    with pytest.raises(ValueError, match="at least 2 episodes"):
        split_episodes(["ep0"] * 5, 0.2)


def test_finetuning_lowers_the_held_out_loss_and_the_model_answers_through_the_backend(walker_dataset, tmp_path):
    train, held = split(walker_dataset)
    out = tmp_path / "model"
    record = finetune(walker_dataset, train, held, out, small(), VlmConfig(prompt=TEST_PROMPT), {"dataset": "walkers"}, progress=False)
    assert record.held_out_loss_after < 0.5 * record.held_out_loss_before
    assert read_record(out) == record and record.request["prompt"] == TEST_PROMPT
    assert record.vision_warmup["windows"] == small().eval_windows and 0 <= record.vision_warmup["hazard_accuracy"] <= 1
    assert (out / "config.json").is_file() and not (out / "train_state").exists()
    backend = make_vlm_backend(VlmConfig(backend="transformers", model=str(out), prompt=TEST_PROMPT, device="cpu", max_new_tokens=96))
    answers = backend.assess([list(w.frames) for w in held[:4]])
    assert all(a.ok and a.attempts == 1 for a in answers)
    # the loss the record reports is what answer_loss measures on the same held-out sample
    model, processor = AutoModelForImageTextToText.from_pretrained(out), AutoProcessor.from_pretrained(out)
    sample = sft._eval_sample(held, small().eval_windows, small().seed)
    measured = sft.answer_loss(model, processor, VlmConfig(prompt=TEST_PROMPT), sample, small().batch_size)
    assert measured == pytest.approx(record.held_out_loss_after, rel=1e-3)
    # a rerun with the same settings finds the model done; other settings are refused, not mixed in
    assert finetune(walker_dataset, train, held, out, small(), VlmConfig(prompt=TEST_PROMPT), {"dataset": "walkers"}, progress=False) == record
    with pytest.raises(ValueError, match="other settings"):
        finetune(walker_dataset, train, held, out, small(steps=41), VlmConfig(prompt=TEST_PROMPT), {"dataset": "walkers"}, progress=False)


def test_a_killed_finetune_resumes_where_it_stopped_and_ends_as_an_unbroken_one(walker_dataset, tmp_path, monkeypatch):
    train, held = split(walker_dataset)
    config = small(steps=12, checkpoint_every=4)
    args = (VlmConfig(prompt=TEST_PROMPT), {"dataset": "walkers"})
    finetune(walker_dataset, train, held, tmp_path / "whole", config, *args, progress=False)

    saves = []
    real_save = sft._save_state

    def save_then_die(*a, **k):
        real_save(*a, **k)
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(sft, "_save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune(walker_dataset, train, held, tmp_path / "killed", config, *args, progress=False)
    warmed_tower = load_file(tmp_path / "killed" / "train_state" / sft._VISION_TOWER)
    monkeypatch.setattr(sft, "_save_state", real_save)
    said = []
    finetune(walker_dataset, train, held, tmp_path / "killed", config, *args, progress=False, log=said.append)
    assert said == ["resuming from step 8 of 12"]  # the warmed-up tower is loaded, not warmed up again
    whole, resumed = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "killed" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    assert all(torch.allclose(whole[k], resumed[k]) for k in whole)
    # the fine-tune after the warm-up leaves the tower as the warm-up left it
    assert all(torch.equal(resumed[f"model.visual.{k}"], v) for k, v in warmed_tower.items())


def test_lora_adapters_train_and_are_merged_into_a_plain_model(walker_dataset, tmp_path):
    train, held = split(walker_dataset)
    out = tmp_path / "lora"
    record = finetune(walker_dataset, train, held, out, small(method="lora", lora_rank=8, learning_rate=5e-3), VlmConfig(prompt=TEST_PROMPT),
                      {"dataset": "walkers"}, progress=False)  # fmt: skip
    assert record.held_out_loss_after < record.held_out_loss_before
    weights = load_file(out / "model.safetensors")
    assert not [k for k in weights if "lora" in k] and not (out / "adapter_config.json").exists()
    answers = make_vlm_backend(VlmConfig(backend="transformers", model=str(out), prompt=TEST_PROMPT, device="cpu", max_new_tokens=400)).assess(
        [list(held[0].frames)]
    )
    assert answers[0].ok


@pytest.mark.slow
def test_the_commands_finetune_then_measure(walker_dataset, tmp_path):
    out = tmp_path / "cli-model"
    runner = CliRunner()
    args = ["vlm", "finetune", walker_dataset.url, "--out", str(out), "--steps", "2", "--vision-steps", "2", "--threads", "1", "--holdout", "0.25",
            "--set", f"vlm.prompt={TEST_PROMPT}"]  # fmt: skip
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "96 gated windows; 72 from 6 training episodes, 24 from 2 held-out episodes" in result.output
    assert "already fine-tuned" in runner.invoke(main, args).output

    result = runner.invoke(main, ["vlm", "eval", walker_dataset.url, "--model", str(out), "--windows", "4", "--threads", "1",
                                  "--set", "vlm.max_new_tokens=400"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4 gated windows from held-out episodes" in result.output
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert report["windows"] == 4 and report["valid_share"] == 1.0 and report["structured_output"] is True
    assert 0 <= report["hazard_accuracy"] <= 1 and report["answers_per_s"] > 0
    with Image.open(out / "eval" / "examples.png") as png:
        assert png.size[0] > 600

    result = runner.invoke(main, ["vlm", "finetune", walker_dataset.url, "--out", str(tmp_path / "x"), "--base", str(tmp_path)])
    assert result.exit_code != 0 and "neither 'tiny' nor a saved model directory" in result.output


def test_no_gated_windows_is_a_clear_error(tmp_path):
    dataset = Dataset.create(str(tmp_path / "empty-road"))
    dataset.write_episode_shard("s0", pa.concat_tables([raw_episode(f"e{i}", 4, seed=i, agents=[[]] * 4) for i in range(2)]))
    result = CliRunner().invoke(main, ["vlm", "finetune", dataset.url, "--out", str(tmp_path / "m")])
    assert result.exit_code != 0 and "needs at least 2 episodes with gated frames, got 0" in result.output
