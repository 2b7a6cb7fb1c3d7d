"""What the dataset refuses to trust: duplicated episodes, non-finite values, damaged pages and frames, edited
label sets, hostile names, two writers of one run, bad manifests and a full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from train_data import LABEL_HASH, raw_episode, write_dataset

from data_schema import Dataset, DatasetError, SchemaError
from data_schema.errors import DuplicateEpisodeError, RunLockedError, StorageError
from data_schema.naming import check_name, check_run_id
from data_schema.schema import RAW_STEP_SCHEMA, with_metadata
from data_schema.storage import atomic_path

TESTS = Path(__file__).resolve().parents[1]


def write_unchecked(ds: Dataset, shard: str, table: pa.Table) -> None:
    """A raw shard written as code before these checks wrote it: no validation, no page checksums."""
    table = table.cast(RAW_STEP_SCHEMA).replace_schema_metadata(with_metadata(RAW_STEP_SCHEMA, "episodes").metadata)
    Path(ds.episodes_path).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, ds.shard_path(shard), compression="zstd")


def with_value(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values, table.schema.field(column).type))


# -- an episode in two shards ---------------------------------------------------------------------------------


def test_an_episode_in_two_shards_is_refused_by_every_spanning_read_naming_both(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 4)], "b": [raw_episode(2, 3)]})
    ds.write_episode_shard("c", raw_episode(1, 4))  # episode 1 again: a collector that ran twice
    ds.label_set("test").write_shard("c", ds.label_set("test").read_shard("a"), LABEL_HASH)
    for read in (ds.info, ds.episodes, ds.read_steps, lambda: ds.join("test"), lambda: Dataset.open(ds.path).episode_index()):
        with pytest.raises(DuplicateEpisodeError, match=r"episode 'ep001' is in two raw shards, a and c"):
            read()
    assert len(ds.join("test", shards=["a", "b"])) == 9  # reads that do not span the duplicate are fine


# -- non-finite values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "column, value",
    [
        ("speed", float("nan")),
        ("x", float("inf")),
        ("route_ahead", [[float("nan"), 0.0]] + [[0.0, 0.0]] * 7),
        ("agents", [{"kind": "pedestrian", "x": float("nan"), "y": 0.0, "yaw": 0.0, "speed": 1.0, "length": 0.5, "width": 0.5}]),
        ("action", [0.1, float("nan")]),
    ],
)
def test_non_finite_raw_values_are_refused_on_write_naming_column_episode_and_step(tmp_path, column, value):
    ds = Dataset.create(str(tmp_path / "ds"))
    bad = with_value(raw_episode(7, 5), column, 2, value)
    with pytest.raises(SchemaError, match=rf"column '{column}': NaN or infinite value at episode 'ep007', step 2"):
        ds.write_episode_shard("s", bad)
    assert ds.shards() == []


def test_non_finite_values_in_an_old_shard_are_named_on_read(tmp_path):
    ds = Dataset.create(str(tmp_path / "ds"))
    agent = {"kind": "pedestrian", "x": float("nan"), "y": 0.0, "yaw": 0.0, "speed": 1.0, "length": 0.5, "width": 0.5}
    write_unchecked(ds, "old", with_value(raw_episode(3, 6), "agents", 4, [agent]))
    expected = rf"{ds.shard_path('old')}, column 'agents': NaN or infinite value at episode 'ep003', step 4"
    with pytest.raises(SchemaError, match=expected):
        ds.read_shard("old", ["agents"])  # keys not asked for: read to name the row
    assert ds.read_shard("old", ["speed"]).num_rows == 7  # the finite columns stay readable


# -- damaged bytes ------------------------------------------------------------------------------------------------


def flip_a_byte_in_column(path: str, column: str, value_check) -> None:
    """Flip one byte inside ``column``'s pages such that a reader without checksums would return changed values."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(j) for j in range(meta.num_columns) if meta.column(j).path_in_schema == column)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    original = Path(path).read_bytes()
    for offset in range(start + chunk.total_compressed_size - 1, start, -1):
        data = bytearray(original)
        data[offset] ^= 0x01
        Path(path).write_bytes(bytes(data))
        try:
            changed = value_check(pq.read_table(path, columns=[column]).column(column))
        except (OSError, pa.ArrowInvalid):
            continue
        if changed:
            return
    raise AssertionError("no byte of the column changes its values silently")


def test_a_flipped_byte_in_a_shard_is_detected_not_read_as_data(tmp_path):
    ds = Dataset.create(str(tmp_path / "ds"))
    table = raw_episode(1, 200)
    ds.write_episode_shard("s", table)
    flip_a_byte_in_column(ds.shard_path("s"), "x", lambda x: not x.equals(table.column("x")))
    with pytest.raises(SchemaError, match=r"s\.parquet: corrupt or truncated Parquet file \(.*checksum"):
        ds.read_shard("s", ["x"])


def test_undecodable_frames_are_named_by_shard_episode_and_step(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), {"a": [with_value(raw_episode(1, 4), "bev", 3, b"\x89PNG junk")]})
    with pytest.raises(SchemaError, match=r"a\.parquet, column 'bev': episode 'ep001', step 3: not a decodable PNG/JPEG image"):
        ds.join("test", columns=["bev"], decode=True)


# -- label sets ----------------------------------------------------------------------------------------------------


def test_an_edited_label_set_json_is_refused_naming_the_file(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 3)]})
    labels = ds.label_set("test")
    document = labels.document()
    document["spec"]["reward"] = {"penalty": -100.0}  # the hash still names the spec the labels came from
    labels.write_document(document)
    with pytest.raises(DatasetError, match=r"labels/test/label_set.json: the spec does not match its hash"):
        labels.info()
    with pytest.raises(DatasetError, match="does not match its hash"):
        ds.join("test")


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage"])
def test_a_label_set_json_that_is_not_json_is_a_clear_error(tmp_path, content):
    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 3)]})
    Path(ds.label_set("test").info_path).write_bytes(content)
    with pytest.raises(DatasetError, match=r"label_set.json: not valid JSON"):
        ds.label_set("test").info()


# -- names and manifests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ok\n", "../x", "a/b", ".hidden", "x.tmp", ""])
def test_names_are_matched_in_full(name):
    with pytest.raises(DatasetError, match="invalid shard name"):
        check_name("shard", name)
    if not name.endswith(".tmp"):  # a run id may end so; its shard names never do
        with pytest.raises(ValueError, match="invalid run id"):
            check_run_id(name)


def test_shard_names_from_outside_never_become_paths(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 3)]})
    for hostile in ("../../x/evil", "a\n"):
        with pytest.raises(DatasetError, match="invalid shard name"):
            ds.read_shard(hostile)
        with pytest.raises(DatasetError, match="invalid shard name"):
            ds.label_set("test").read_shard(hostile)


def test_a_dataset_path_that_is_a_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    for make in (Dataset.open, Dataset.create):
        with pytest.raises(DatasetError, match="notes.txt: is a file, not a dataset directory"):
            make(str(path))


@pytest.mark.parametrize("version, shown", [("1", "schema_version '1'"), (None, "schema_version None"), ("missing", "no schema_version"), (True, "schema_version True")])
def test_a_schema_version_that_is_no_positive_integer_is_a_clear_error(tmp_path, version, shown):
    ds = Dataset.create(str(tmp_path / "ds"))
    manifest = ds.manifest()
    if version == "missing":
        del manifest["schema_version"]
    else:
        manifest["schema_version"] = version
    Path(ds.path, "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=rf"dataset.json: {shown}; expected a positive integer"):
        Dataset.open(ds.path)


# -- writers ---------------------------------------------------------------------------------------------------------


def test_a_shard_that_appears_while_another_is_written_under_its_name_is_never_replaced(tmp_path, monkeypatch):
    ds = Dataset.create(str(tmp_path / "ds"))
    path = Path(ds.shard_path("s"))
    real_write = pq.write_table

    def racing_write(table, where, **kwargs):
        real_write(table, where, **kwargs)
        path.write_bytes(b"the other writer's shard")  # lands between the existence check and the rename

    monkeypatch.setattr(pq, "write_table", racing_write)
    with pytest.raises(DatasetError, match="raw shards are immutable and this one exists already"):
        ds.write_episode_shard("s", raw_episode(1, 3))
    assert path.read_bytes() == b"the other writer's shard"
    assert [p.name for p in path.parent.iterdir()] == ["s.parquet"]  # and no tmp file is left


def test_a_second_writer_of_a_run_fails_at_once_naming_the_holder(tmp_path):
    ds = Dataset.create(str(tmp_path / "ds"))
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from data_schema import Dataset
            with Dataset.open({ds.path!r}).run_lock("r1"):
                print("held", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(TESTS.parent)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"run 'r1' is being written by another process \(pid {holder.pid} on "):
            with ds.run_lock("r1"):
                pass
        with ds.run_lock("r2"):  # other runs are not held up
            pass
    finally:
        holder.kill()
        holder.wait()
    with ds.run_lock("r1"):  # the kernel dropped the dead holder's lock
        pass


def test_a_run_waits_for_survivors_holding_its_fence(tmp_path):
    ds = Dataset.create(str(tmp_path / "ds"))
    lock = ds.run_lock("r")
    lock.survivor_wait_s = 0.5
    lock.folder.mkdir(parents=True, exist_ok=True)
    survivor = subprocess.Popen(
        [sys.executable, "-c", f"from data_schema.run_lock import join_run; import time; join_run({str(lock.fence)!r}); print('in', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(TESTS.parent)},
    )  # fmt: skip
    try:
        assert survivor.stdout.readline().strip() == "in"
        with pytest.raises(RunLockedError, match="worker processes of an earlier run are still alive"):
            with lock:
                pass
    finally:
        survivor.kill()
        survivor.wait()
    with lock:
        pass


def test_a_failed_write_names_the_file_and_leaves_nothing_partial(tmp_path):
    target = tmp_path / "out" / "file.bin"
    with pytest.raises(StorageError, match=rf"{target}: cannot write \(No space left on device\)"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(28, "No space left on device")
    assert list(target.parent.iterdir()) == []


def test_skip_bad_leaves_unreadable_shards_out_of_spanning_reads_and_lists_them(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 3)], "b": [raw_episode(2, 4)], "c": [raw_episode(3, 2)]})
    Path(ds.shard_path("b")).write_bytes(b"PAR1 not really")
    with pytest.raises(SchemaError, match=r"b\.parquet"):
        Dataset.open(ds.path).info()
    tolerant = Dataset.open(ds.path, skip_bad=True)
    info = tolerant.info()
    assert (info["shards"], info["episodes"], info["steps"]) == (2, 2, 7)
    assert list(info["bad_shards"]) == ["b"] and "b.parquet" in info["bad_shards"]["b"]
    assert sorted(tolerant.join("test")["episode_id"].unique()) == ["ep001", "ep003"]
    assert [s for s, _ in tolerant.iter_steps(["speed"])] == ["a", "c"]
