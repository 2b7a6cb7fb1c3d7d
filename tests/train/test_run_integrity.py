"""What training refuses to trust: run state naming paths outside the run, checkpoint files that are not this
pipeline's, edited label sets, bad settings, duplicated or unreadable shards; and what a failed start leaves."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner
from train_data import TINY, labels_of, raw_episode, write_dataset

from data_schema import Dataset, DatasetError, SchemaError
from data_schema.errors import DuplicateEpisodeError
from pipeline.cli import main
from train import ReplayBuffer, TrainConfig, create_agent, ingest, load_agent, measure_latency, save_agent
from train.checkpoints import CheckpointError
from train.export import export_torchscript
from train.replay import STORED_REWARD, read_shard_transitions
from train.run_dir import RunDir

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

TINY_ARGS = [a for key, value in TINY.items() for a in ("--set", f"{key}={list(value) if isinstance(value, tuple) else value}")]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def offline(ds: Dataset, out: Path, *extra: str):
    return invoke("train", ds.path, "--label-set", "test", "--out", str(out), "--offline", "--steps", "2", *TINY_ARGS, *extra)


class Payload:
    """Unpickling this runs a shell command: what a hostile "checkpoint" would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"torch": b"", "config": "{}", "version": Payload(marker)}))
    return path


# -- checkpoints -------------------------------------------------------------------------------------------------


def test_a_pickle_that_is_not_a_checkpoint_is_refused_before_any_of_it_runs(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(CheckpointError, match=r"evil.d3: not a d3rlpy checkpoint of plain data \(it references posix.system\)"):
        load_agent(hostile_checkpoint(tmp_path / "evil.d3", marker))
    assert not marker.exists()
    (tmp_path / "junk.d3").write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="junk.d3: not a d3rlpy checkpoint"):
        load_agent(tmp_path / "junk.d3")


def test_a_checkpoint_round_trips_through_the_plain_data_reader(tmp_path):
    agent = create_agent(TrainConfig(**TINY))
    save_agent(agent, tmp_path / "a.d3")
    loaded = load_agent(tmp_path / "a.d3")
    x = [np.random.default_rng(0).integers(0, 255, (2, 3, 16, 16)).astype(np.float32), np.zeros((2, 21), np.float32)]
    np.testing.assert_array_equal(agent.predict(x), loaded.predict(x))


def test_export_and_evaluate_refuse_a_hostile_file_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    evil = hostile_checkpoint(tmp_path / "evil.d3", marker)
    for command in (("export", str(evil)), ("evaluate", str(evil), "--episodes", "1")):
        result = invoke(*command)
        assert result.exit_code != 0 and "not a d3rlpy checkpoint of plain data" in result.output, result.output
        assert "Traceback" not in result.output
    assert not marker.exists()


# -- run state -------------------------------------------------------------------------------------------------


def trained_run(small_dataset: Dataset, out: Path) -> RunDir:
    result = offline(small_dataset, out, "--set", "checkpoint_every=1")
    assert result.exit_code == 0, result.output
    return RunDir(out)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("consumed", ["../../x/evil"], "invalid shard name '../../x/evil'"),
        ("checkpoint", "../../../etc/passwd", "is not a checkpoint name of this run"),
        ("checkpoint", "round-000002.d3/../../x", "is not a checkpoint name of this run"),
        ("grad_steps", "many", "grad_steps: expected an integer"),
    ],
)
def test_run_state_naming_paths_outside_the_run_is_refused(small_dataset, tmp_path, field, value, message):
    run = trained_run(small_dataset, tmp_path / "run")
    state = json.loads((run.path / "state.json").read_text())
    state[field] = value
    (run.path / "state.json").write_text(json.dumps(state))
    resumed = offline(small_dataset, run.path, "--resume")
    assert resumed.exit_code != 0 and "state.json" in resumed.output and message in resumed.output, resumed.output
    exported = invoke("export", str(run.path))
    assert exported.exit_code != 0 and message in exported.output


def test_a_replaced_checkpoint_is_refused_by_its_recorded_hash(small_dataset, tmp_path):
    run = trained_run(small_dataset, tmp_path / "run")
    other = trained_run(small_dataset, tmp_path / "other")
    checkpoint = run.latest_checkpoint()
    checkpoint.write_bytes(other.latest_checkpoint().read_bytes() + b"\0")
    result = invoke("export", str(run.path))
    assert result.exit_code != 0 and "differs from the sha256 state.json recorded" in result.output, result.output


# -- starting a run ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (("--set", "batch_size=abc"), "--set: batch_size: expected an integer, got 'abc'"),
        (("--set", "batch_size=2.5"), "--set: batch_size: expected an integer, got 2.5"),
        (("--set", "gamma=.nan"), "--set: gamma: expected a finite number, got nan"),
        (("--lr", "nan"), "actor_lr: expected a finite number, got nan"),
        (("--set", "bach_size=3"), "unknown key 'bach_size'"),
        (("--reward-from-components", "--reward", "penalty=lots"), "--reward: penalty: expected a finite number"),
    ],
)
def test_bad_settings_are_refused_by_name_before_anything_is_written(small_dataset, tmp_path, args, message):
    result = offline(small_dataset, tmp_path / "run", *args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert isinstance(result.exception, SystemExit) and not (tmp_path / "run").exists()


def test_a_failed_start_leaves_no_run_json_and_the_corrected_command_runs(small_dataset, tmp_path):
    out = tmp_path / "run"
    missing = invoke("train", small_dataset.path, "--label-set", "nope", "--out", str(out), "--offline", "--steps", "2", *TINY_ARGS)
    assert missing.exit_code != 0 and "label set 'nope' does not exist" in missing.output
    assert not (out / "run.json").exists()
    assert offline(small_dataset, out).exit_code == 0
    assert offline(small_dataset, out, "--resume").exit_code == 0


def test_a_run_failing_before_its_first_checkpoint_leaves_no_run_json(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 3)], "b": [raw_episode(2, 3)], "c": [raw_episode(1, 3)]})
    failed = offline(ds, tmp_path / "run")
    assert failed.exit_code != 0 and "episode 'ep001' is in two raw shards, a and c" in failed.output
    assert not (tmp_path / "run" / "run.json").exists()
    Path(ds.shard_path("c")).unlink()
    assert offline(ds, tmp_path / "run").exit_code == 0  # the corrected dataset trains under the same command


def test_an_edited_label_set_is_refused_for_recomputed_rewards_and_leaves_no_run(small_dataset, tmp_path):
    labels = small_dataset.label_set("test")
    document = labels.document()
    document["spec"]["reward"] = {"penalty": -100.0}
    labels.write_document(document)
    result = offline(small_dataset, tmp_path / "run", "--reward-from-components")
    assert result.exit_code != 0 and "label_set.json: the spec does not match its hash" in result.output, result.output
    assert not (tmp_path / "run").exists()


# -- replay -------------------------------------------------------------------------------------------------------


def test_replay_names_the_shard_episode_and_step_of_an_undecodable_frame(tmp_path):
    table = raw_episode(4, 5)
    frames = table.column("bev").to_pylist()
    frames[3] = b"\x89PNG\r\n\x1a\n garbage"
    table = table.set_column(table.schema.get_field_index("bev"), "bev", pa.array(frames, pa.binary()))
    ds = write_dataset(str(tmp_path / "ds"), {"s": [table]})
    with pytest.raises(SchemaError, match=r"s\.parquet, column 'bev': episode 'ep004', step 3: not a decodable PNG/JPEG image"):
        read_shard_transitions(ds, ds.label_set("test"), "s", 16)


def test_replay_refuses_an_episode_it_holds_already(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 3)], "b": [raw_episode(2, 3)], "c": [raw_episode(1, 3)]})
    buffer = ReplayBuffer(100)
    config = TrainConfig(**TINY)
    assert ingest(buffer, ds, ds.label_set("test"), ["a", "b"], config, STORED_REWARD) == {"a": 3, "b": 3}
    with pytest.raises(DuplicateEpisodeError, match="episode 'ep001' is in two raw shards, a and c"):
        ingest(buffer, ds, ds.label_set("test"), ["c"], config, STORED_REWARD, held=["a", "b"])
    assert len(buffer) == 6


def test_offline_training_skips_bad_shards_when_asked_and_says_what_is_unlabelled(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 4)], "b": [raw_episode(2, 4)], "c": [raw_episode(3, 4)]}, labelled={"a", "b"})
    Path(ds.shard_path("b")).write_bytes(b"PAR1 damaged")
    stopped = offline(ds, tmp_path / "r1")
    assert stopped.exit_code != 0 and "b.parquet" in stopped.output and "Traceback" not in stopped.output
    result = offline(ds, tmp_path / "r2", "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "1 of 3 raw shard(s) have no current labels in label set 'test'" in result.output
    assert "skipped unreadable shard b: " in result.output and "replay: 4 transitions from 1 shard(s)" in result.output
    assert RunDir(tmp_path / "r2").state().consumed == ["a"]


def test_old_raw_data_with_nan_is_refused_by_replay_naming_where(tmp_path):
    import pyarrow.parquet as pq

    from data_schema.schema import RAW_STEP_SCHEMA, with_metadata

    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 4)]})
    table = raw_episode(2, 4)
    ahead = table.column("route_ahead").to_pylist()
    ahead[1][3][0] = float("nan")
    table = table.set_column(table.schema.get_field_index("route_ahead"), "route_ahead", pa.array(ahead, RAW_STEP_SCHEMA.field("route_ahead").type))
    pq.write_table(table.replace_schema_metadata(with_metadata(RAW_STEP_SCHEMA, "episodes").metadata), ds.shard_path("old"))
    ds.label_set("test").write_shard("old", labels_of(table), ds.label_set("test").hash)
    with pytest.raises(SchemaError, match=r"old\.parquet, column 'route_ahead': NaN or infinite value at episode 'ep002', step 1"):
        read_shard_transitions(ds, ds.label_set("test"), "old", 16)


# -- export --------------------------------------------------------------------------------------------------------


def test_latency_p90_is_never_below_the_median(tmp_path):
    torch.manual_seed(0)
    path = export_torchscript(create_agent(TrainConfig(**TINY)), tmp_path / "p.pt", example_bev_px=32)
    for runs in (1, 2, 3):
        figures = measure_latency(path, bev_px=32, runs=runs, warmup=0)
        assert figures["p90_ms"] >= figures["median_ms"] > 0, figures
