"""Fault injection through the real commands: a collector killed with its workers running, two collectors of
one run, a flipped byte, NaN fields, a full filesystem, an edited label set, hostile run state.

Each trial checks that nothing is lost, duplicated or mixed, and that every failure is a message naming the
file (no traceback). Trials that need a SUMO collection are marked slow (they run in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from train_data import TINY, raw_episode, write_dataset

from data_schema import Dataset
from data_schema.schema import RAW_STEP_SCHEMA, with_metadata
from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY_ARGS = [a for key, value in TINY.items() for a in ("--set", f"{key}={list(value) if isinstance(value, tuple) else value}")]
#: Random-weight CLIP, scene gate, no VLM: annotate in seconds on a CPU.
FAST_ANNOTATE = [
    "--in-process", "--workers", "1", "--set", "clip.model=ViT-S-32-alt", "--set", "clip.pretrained=none",
    "--set", "clip.device=cpu", "--set", "gate.source=scene", "--set", "vlm.backend=none",
]  # fmt: skip

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result


def pipeline(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def episode_occurrences(url: str) -> list[str]:
    """Episode ids of every complete shard, one entry per occurrence (a duplicate shows twice)."""
    ds = Dataset.open(url)
    return sorted(e for shard in ds.shards() for e in set(ds.read_shard(shard, ["episode_id"]).column("episode_id").to_pylist()))


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- collect -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers die with the collector through Linux's PR_SET_PDEATHSIG")
def test_killed_collector_takes_its_workers_with_it_and_the_rerun_has_each_episode_once(tmp_path):
    url = str(tmp_path / "ds")
    command = pipeline("collect", url, "--episodes", "6", "--max-steps", "150", "--episodes-per-shard", "1", "--workers", "2", "--run-id", "k")
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    episodes = tmp_path / "ds" / "episodes"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (episodes.exists() and any(p.suffix == ".parquet" for p in episodes.iterdir())):
            assert proc.poll() is None, "the collector ended before any shard was written"
            time.sleep(0.05)
        workers = children_of(proc.pid)
        assert workers, "no worker processes found"
        os.kill(proc.pid, signal.SIGKILL)  # the collector only, as `kill -9 PID` does: not its process group
        proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(alive(p) for p in workers):
            time.sleep(0.1)
        survivors = [p for p in workers if alive(p)]
        assert not survivors, f"worker(s) {survivors} outlived the killed collector"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the test's process group
    before = episode_occurrences(url)
    assert len(before) == len(set(before)) < 6
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert episode_occurrences(url) == [f"k-{i:06d}" for i in range(6)]  # every episode exactly once
    assert json.loads(invoke("info", url, "--json").output)["episodes"] == 6


@pytest.mark.slow
def test_a_second_collector_of_the_same_run_fails_at_once_naming_the_first(tmp_path):
    url = str(tmp_path / "ds")
    args = ["collect", url, "--episodes", "3", "--max-steps", "60", "--run-id", "twice"]
    first = subprocess.Popen(pipeline(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "ds" / "locks" / "twice.lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (lock.exists() and f"pid {first.pid} " in lock.read_text()):
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    started = time.monotonic()
    second = invoke(*args)
    assert second.exit_code == 1 and time.monotonic() - started < 10
    assert f"run 'twice' is being written by another process (pid {first.pid} on " in second.output, second.output
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert episode_occurrences(url) == [f"twice-{i:06d}" for i in range(3)]


@pytest.fixture
def small_filesystem(tmp_path):
    """A 64 KiB tmpfs, where the machine lets this process mount one (root); skipped elsewhere."""
    target = tmp_path / "small"
    target.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.mark.slow
def test_a_full_filesystem_is_a_message_naming_the_file_and_leaves_nothing_partial(small_filesystem):
    url = str(small_filesystem / "ds")
    result = invoke("collect", url, "--episodes", "2", "--max-steps", "40", "--run-id", "full")
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and ".parquet: cannot write" in result.output, result.output
    assert Dataset.open(url).shards() == [] and not list((small_filesystem / "ds" / "episodes").glob("*.tmp"))


# -- damaged and hostile data ----------------------------------------------------------------------------------


def flip_byte(path: str, column: str) -> None:
    """Flip one byte of ``column``'s last page's data (not its header; every reader of a shard reads ``episode_id``)."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(j) for j in range(meta.num_columns) if meta.column(j).path_in_schema == column)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(Path(path).read_bytes())
    data[start + chunk.total_compressed_size - 3] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def three_shards(root: Path) -> Dataset:
    return write_dataset(str(root), {"a": [raw_episode(1, 6)], "b": [raw_episode(2, 6)], "c": [raw_episode(3, 6)]})


def test_a_flipped_byte_in_a_raw_shard_is_named_and_skip_bad_goes_on_without_it(tmp_path):
    ds = three_shards(tmp_path / "ds")
    flip_byte(ds.shard_path("b"), "episode_id")

    stopped = invoke("info", ds.path)
    assert stopped.exit_code == 1 and "b.parquet" in stopped.output
    shown = invoke("info", ds.path, "--skip-bad")
    assert shown.exit_code == 0 and "episodes        2" in shown.output and "skipped unreadable shard b:" in shown.output

    labelled = invoke("annotate", ds.path, "--label-set", "fresh", *FAST_ANNOTATE, "--skip-bad")
    assert labelled.exit_code == 0, labelled.output
    assert "2 shard(s) labelled, 0 skipped, 0 failed, 1 unreadable, of 3" in labelled.output
    assert "SKIPPED unreadable b:" in labelled.output and ds.label_set("fresh").labelled() == ["a", "c"]

    trained = invoke("train", ds.path, "--label-set", "fresh", "--out", str(tmp_path / "run"), "--offline", "--steps", "2", *TINY_ARGS, "--skip-bad")
    assert trained.exit_code == 0, trained.output
    assert "replay: 12 transitions from 2 shard(s)" in trained.output

    report = tmp_path / "audit.html"
    audited = invoke("audit", ds.path, "--label-set", "test", "--out", str(report), "--skip-bad", "--timelines", "0")
    assert audited.exit_code == 0, audited.output
    assert "skipped unreadable shard b:" in audited.output and "Unreadable shards" in report.read_text()
    assert invoke("audit", ds.path, "--label-set", "test", "--out", str(tmp_path / "x.html")).exit_code == 1


def test_nan_fields_in_old_raw_data_are_named_by_every_reader_that_meets_them(tmp_path):
    ds = three_shards(tmp_path / "ds")
    table = raw_episode(2, 6)
    agents = table.column("agents").to_pylist()
    agents[4] = [{"kind": "pedestrian", "x": float("nan"), "y": 0.0, "yaw": 0.0, "speed": 1.0, "length": 0.5, "width": 0.5}]
    table = table.set_column(table.schema.get_field_index("agents"), "agents", pa.array(agents, RAW_STEP_SCHEMA.field("agents").type))
    table = table.replace_schema_metadata(with_metadata(RAW_STEP_SCHEMA, "episodes").metadata)
    pq.write_table(table, ds.shard_path("b"))  # as a writer without the finiteness check wrote it
    where = "b.parquet, column 'agents': NaN or infinite value at episode 'ep002', step 4"
    audited = invoke("audit", ds.path, "--label-set", "test", "--out", str(tmp_path / "a.html"))
    assert audited.exit_code == 1 and where in audited.output, audited.output
    labelled = invoke("annotate", ds.path, "--label-set", "fresh", *FAST_ANNOTATE)
    assert labelled.exit_code == 1 and where in labelled.output, labelled.output
    skipped = invoke("audit", ds.path, "--label-set", "test", "--out", str(tmp_path / "b.html"), "--skip-bad", "--timelines", "0")
    assert skipped.exit_code == 0 and f"skipped unreadable shard b: {ds.episodes_path}/{where}" in skipped.output, skipped.output


def test_an_edited_label_set_json_is_refused_by_the_commands_that_read_it(tmp_path):
    ds = three_shards(tmp_path / "ds")
    labels = ds.label_set("test")
    document = labels.document()
    document["spec"]["reward"]["penalty"] = -1000.0  # the stored labels were not computed with this
    labels.write_document(document)
    message = "labels/test/label_set.json: the spec does not match its hash"
    trained = invoke("train", ds.path, "--label-set", "test", "--out", str(tmp_path / "run"), "--offline", "--steps", "2", "--reward-from-components", *TINY_ARGS)
    assert trained.exit_code == 1 and message in trained.output and not (tmp_path / "run").exists()
    audited = invoke("audit", ds.path, "--label-set", "test", "--out", str(tmp_path / "a.html"))
    assert audited.exit_code == 1 and message in audited.output


def test_hostile_paths_in_run_state_are_refused(tmp_path):
    ds = three_shards(tmp_path / "ds")
    outside = tmp_path / "x"
    write_dataset(str(outside), {"evil": [raw_episode(9, 3)]})  # a shard that "../../x/episodes/evil" would reach
    run = tmp_path / "run"
    common = ["train", ds.path, "--label-set", "test", "--out", str(run), "--offline", *TINY_ARGS, "--set", "checkpoint_every=1"]
    assert invoke(*common, "--steps", "1").exit_code == 0
    state = json.loads((run / "state.json").read_text())
    for field, value in (("consumed", ["../../x/episodes/evil"]), ("checkpoint", "../../x/dataset.json")):
        (run / "state.json").write_text(json.dumps({**state, field: value}))
        resumed = invoke(*common, "--steps", "2", "--resume")
        assert resumed.exit_code == 1 and "state.json" in resumed.output, resumed.output
        exported = invoke("export", str(run))
        assert exported.exit_code == 1 and "state.json" in exported.output
    assert not (run / "policy.pt").exists()
