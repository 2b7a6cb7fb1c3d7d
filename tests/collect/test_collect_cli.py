"""``pipeline collect`` and ``pipeline info`` end to end on the real SUMO backend: in-process and as commands."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from collect.collector import plan_shards
from data_schema import SCHEMA_VERSION, Dataset
from pipeline.commands.collect import collect, info

REPO = Path(__file__).resolve().parents[2]


def run(command, *args: str):
    return CliRunner().invoke(command, list(args))


def episode_ids(url: str) -> list[str]:
    """Episode ids of every complete shard, one entry per episode occurrence (duplicates stay visible)."""
    ids = []
    for _, table in Dataset.open(url).iter_steps(["step"]):
        ids += [eid for eid, step in zip(table.column("episode_id").to_pylist(), table.column("step").to_pylist()) if step == 0]
    return ids


def check_rlds(url: str) -> None:
    """Every episode: steps 0..n-1, exactly one is_last row (the final one), null action exactly there."""
    df = Dataset.open(url).read_steps(["step", "is_last", "action"]).to_pandas()
    for eid, rows in df.groupby("episode_id"):
        assert list(rows["step"]) == list(range(len(rows))), eid
        assert rows["is_last"].tolist() == [False] * (len(rows) - 1) + [True], eid
        assert rows["action"].isna().tolist() == [False] * (len(rows) - 1) + [True], eid


def test_collect_writes_resumes_and_info_reports(tmp_path) -> None:
    url = str(tmp_path / "ds")
    common = ["--max-steps", "15", "--run-id", "cli", "--episodes-per-shard", "2", "--seed", "3"]
    first = run(collect, url, "--episodes", "3", *common)
    assert first.exit_code == 0, first.output
    assert "run cli: 3 episodes collected, 0 already present" in first.output
    ds = Dataset.open(url)
    assert len(ds.shards()) == 2
    assert sorted(episode_ids(url)) == ["cli-000000", "cli-000001", "cli-000002"]

    more = run(collect, url, "--episodes", "5", *common)
    assert more.exit_code == 0, more.output
    assert "3 of 5 episodes are in the dataset already" in more.output
    assert "2 episodes collected, 3 already present" in more.output
    ids = episode_ids(url)
    assert sorted(ids) == [f"cli-{i:06d}" for i in range(5)]  # each exactly once
    assert len(Dataset.open(url).shards()) == 3

    again = run(collect, url, "--episodes", "5", *common)
    assert again.exit_code == 0 and "0 episodes collected, 5 already present" in again.output
    assert sorted(episode_ids(url)) == sorted(ids)
    check_rlds(url)
    seeds = Dataset.open(url).episodes().set_index("episode_id")["seed"]
    assert all(seeds[f"cli-{i:06d}"] == 3 + i for i in range(5))

    steps = Dataset.open(url).read_steps(["step"]).num_rows
    shown = run(info, url)
    assert shown.exit_code == 0, shown.output
    assert "episodes        5" in shown.output and f"steps           {steps}" in shown.output
    assert "shards          3" in shown.output and f"schema version  {SCHEMA_VERSION}" in shown.output
    assert "label sets      none" in shown.output
    as_json = json.loads(run(info, url, "--json").output)
    assert as_json["episodes"] == 5 and as_json["steps"] == steps and as_json["bytes"] > 0


def test_default_run_id_resumes_the_same_command(tmp_path) -> None:
    url = str(tmp_path / "ds")
    args = [url, "--episodes", "1", "--max-steps", "5"]
    first = run(collect, *args)
    second = run(collect, *args)
    other_seed = run(collect, *args, "--seed", "1")
    assert first.exit_code == second.exit_code == other_seed.exit_code == 0, first.output + second.output + other_seed.output
    run_id = first.output.split("run ", 1)[1].split(":", 1)[0]
    assert f"run {run_id}: 0 episodes collected, 1 already present" in second.output
    assert f"run {run_id}:" not in other_seed.output and "1 episodes collected" in other_seed.output
    assert len(set(episode_ids(url))) == 2


def test_default_run_id_depends_on_what_is_simulated_not_where_or_how_it_is_reached(tmp_path) -> None:
    from collect.backends.carla import CarlaConfig
    from collect.backends.sumo import DEFAULT_NET, SumoConfig
    from collect.collector import _run_key, default_run_id
    from collect.env import EnvSpec

    copied = tmp_path / "elsewhere" / "town.net.xml"
    copied.parent.mkdir()
    copied.write_bytes(DEFAULT_NET.read_bytes())
    here = default_run_id(EnvSpec(backend=SumoConfig()), "expert", 0)
    assert default_run_id(EnvSpec(backend=SumoConfig(net_file=copied)), "expert", 0) == here
    assert default_run_id(EnvSpec(backend=SumoConfig(cars=3)), "expert", 0) != here
    assert default_run_id(EnvSpec(backend=SumoConfig(), scenarios=("free",)), "expert", 0) == here
    staged = default_run_id(EnvSpec(backend=SumoConfig(), scenarios=("ped_crossing", "free")), "expert", 0)
    assert staged != here and staged != default_run_id(EnvSpec(backend=SumoConfig(), scenarios=("free", "ped_crossing")), "expert", 0)
    assert "scenarios" not in _run_key(EnvSpec()) and _run_key(EnvSpec(scenarios=("red_light",)))["scenarios"] == ["red_light"]
    carla = default_run_id(EnvSpec("carla", CarlaConfig()), "expert", 0)
    assert default_run_id(EnvSpec("carla", CarlaConfig(host="10.0.0.2", port=3000, timeout_s=60.0, tm_port=9000)), "expert", 0) == carla
    assert default_run_id(EnvSpec("carla", CarlaConfig(town="Town05")), "expert", 0) != carla


def test_a_run_cleans_only_its_own_leftovers(tmp_path) -> None:
    url = str(tmp_path / "ds")
    episodes = Path(Dataset.create(url).episodes_path)
    episodes.mkdir(exist_ok=True)
    mine = episodes / "20260101T000000-cli-e000000.parquet.0123abcd.tmp"
    other_runs = episodes / "20260101T000000-a-cli-e000000.parquet.4567cdef.tmp"  # a concurrent run whose id ends like ours
    for path in (mine, other_runs):
        path.write_bytes(b"partial")
    assert run(collect, url, "--episodes", "1", "--max-steps", "5", "--run-id", "cli").exit_code == 0
    assert not mine.exists() and other_runs.exists()


def test_scenarios_are_assigned_in_turn_recorded_per_episode_and_resume(tmp_path) -> None:
    url = str(tmp_path / "ds")
    scenarios = ["--scenario", "lead_brake", "--scenario", "free"]
    first = run(collect, url, "--episodes", "3", "--max-steps", "8", "--episodes-per-shard", "1", *scenarios)
    assert first.exit_code == 0, first.output
    run_id = first.output.split("run ", 1)[1].split(":", 1)[0]
    more = run(collect, url, "--episodes", "4", "--max-steps", "8", "--episodes-per-shard", "1", *scenarios)
    assert more.exit_code == 0, more.output
    assert f"run {run_id}: 1 episodes collected, 3 already present" in more.output
    episodes = Dataset.open(url).episodes().set_index("episode_id")
    assert {eid: episodes.loc[eid, "scenario"] for eid in episodes.index} == {
        f"{run_id}-{i:06d}": ("lead_brake", "free")[i % 2] for i in range(4)
    }
    steps = Dataset.open(url).read_steps(["scenario"]).to_pandas()
    assert steps.groupby("episode_id")["scenario"].nunique().eq(1).all()  # every row of an episode says it
    # another choice of scenarios is another run; under the same explicit run id it is refused
    other = run(collect, url, "--episodes", "1", "--max-steps", "8", "--scenario", "lead_brake")
    assert other.exit_code == 0 and f"run {run_id}:" not in other.output
    clash = run(collect, url, "--episodes", "4", "--max-steps", "8", "--run-id", run_id, "--scenario", "free")
    assert clash.exit_code != 0 and "ran scenario 'lead_brake'" in clash.output and "--run-id" in clash.output


def test_rerun_with_other_settings_under_one_run_id_is_refused(tmp_path) -> None:
    url = str(tmp_path / "ds")
    assert run(collect, url, "--episodes", "1", "--max-steps", "5", "--run-id", "r1").exit_code == 0
    clash = run(collect, url, "--episodes", "2", "--max-steps", "5", "--run-id", "r1", "--policy", "random")
    assert clash.exit_code != 0
    assert "run 'r1' was collected with policy 'expert'" in clash.output and "--run-id" in clash.output
    assert "Traceback" not in clash.output
    assert episode_ids(url) == ["r1-000000"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--episodes", "1", "--policy", "nope"], "unknown policy 'nope'"),
        (["--episodes", "1", "--policy", "expert", "--run-id", "bad/id"], "invalid run id"),
        (["--episodes", "-1"], "-1 is not in the range"),
        (["--episodes", "1", "--scenario", "zebra"], "'zebra' is not one of"),
        (["--episodes", "1", "--sim", "carla", "--scenario", "red_light"], "staged on the SUMO town only"),
    ],
)
def test_bad_options_give_clear_errors(tmp_path, args: list[str], message: str) -> None:
    result = run(collect, str(tmp_path / "ds"), *args)
    assert result.exit_code != 0
    assert message in result.output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback


def test_info_on_a_directory_that_is_no_dataset(tmp_path) -> None:
    result = run(info, str(tmp_path))
    assert result.exit_code != 0 and "dataset.json: not found" in result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_carla_without_a_server_fails_fast_with_the_backend_message(tmp_path) -> None:
    pytest.importorskip("carla")
    started = time.monotonic()
    result = run(collect, str(tmp_path / "ds"), "--sim", "carla", "--episodes", "1", "--port", str(free_port()), "--timeout", "1")
    assert result.exit_code == 1
    assert "no CARLA server answered" in result.output and "Traceback" not in result.output
    assert Dataset.open(str(tmp_path / "ds")).shards() == []
    assert time.monotonic() - started < 30


def test_plan_shards_keeps_every_worker_busy() -> None:
    assert plan_shards([0, 1, 2, 3, 4], episodes_per_shard=8, workers=2) == [[0, 1, 2], [3, 4]]
    assert plan_shards([1, 4, 5, 9], episodes_per_shard=1, workers=2) == [[1], [4], [5], [9]]
    assert plan_shards([], episodes_per_shard=4, workers=3) == []


# -- as real commands ----------------------------------------------------------------------------------------


def pipeline_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


@pytest.mark.slow
def test_collect_with_workers_as_a_subprocess(tmp_path) -> None:
    url = str(tmp_path / "ds")
    done = subprocess.run(
        pipeline_command("collect", url, "--episodes", "4", "--max-steps", "10", "--workers", "2", "--run-id", "w"),
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "run w: 4 episodes collected" in done.stdout
    assert sorted(episode_ids(url)) == [f"w-{i:06d}" for i in range(4)]
    assert len(Dataset.open(url).shards()) == 2  # one shard per worker
    check_rlds(url)
    shown = subprocess.run(pipeline_command("info", url, "--json"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["episodes"] == 4


@pytest.mark.slow
def test_killed_collector_leaves_no_partial_shard_and_rerun_completes(tmp_path) -> None:
    """SIGKILL the collector (workers included) while a shard is being written, then rerun the same command."""
    url = str(tmp_path / "ds")
    episodes_dir = tmp_path / "ds" / "episodes"
    command = pipeline_command(
        "collect", url, "--episodes", "8", "--max-steps", "30", "--episodes-per-shard", "1", "--workers", "2", "--run-id", "k"
    )
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    killed_mid_write = False
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            names = os.listdir(episodes_dir) if episodes_dir.exists() else []
            if any(n.endswith(".parquet") for n in names) and any(n.endswith(".tmp") for n in names):
                os.killpg(proc.pid, signal.SIGSTOP)  # freeze every process of the run mid-write ...
                if any(n.endswith(".tmp") for n in os.listdir(episodes_dir)):
                    os.killpg(proc.pid, signal.SIGKILL)  # ... and kill it while the tmp file is open
                    killed_mid_write = True
                    break
                os.killpg(proc.pid, signal.SIGCONT)
    finally:
        if proc.poll() is None and not killed_mid_write:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert killed_mid_write, "never caught the collector while it was writing a shard"

    leftovers = [n for n in os.listdir(episodes_dir) if n.endswith(".tmp")]
    assert leftovers and all("-k-e" in n for n in leftovers)
    complete = Dataset.open(url).shards()
    assert complete and not any(s.endswith(".tmp") for s in complete)
    for shard in complete:
        Dataset.open(url).read_shard(shard)  # every visible shard is whole
    before = episode_ids(url)
    assert len(before) == len(set(before)) < 8

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{8 - len(before)} episodes collected, {len(before)} already present" in rerun.stdout
    assert "leftover tmp file" in rerun.stdout
    assert not [n for n in os.listdir(episodes_dir) if n.endswith(".tmp")]
    after = episode_ids(url)
    assert sorted(after) == [f"k-{i:06d}" for i in range(8)]  # every episode exactly once
    check_rlds(url)
