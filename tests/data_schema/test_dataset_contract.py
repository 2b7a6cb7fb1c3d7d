"""The dataset contract: schema round trip, atomic writes, clear errors on bad shards, joins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_schema import (
    RAW_STEP_SCHEMA,
    ROUTE_AHEAD_POINTS,
    SCHEMA_VERSION,
    Dataset,
    DatasetError,
    SchemaError,
    decode_image,
    encode_png,
)
from data_schema.features import STATE_DIM, state_matrix, state_vector
from data_schema.label_sets import spec_hash
from data_schema.schema import META_SCHEMA_VERSION
from episode_tables import episode_table, label_table

TESTS = Path(__file__).resolve().parents[1]


def raw_episode(episode_id: str, steps: int, seed: int = 0) -> pa.Table:
    """A schema-complete episode with distinct per-step values and a small BEV image per row."""
    rng = np.random.default_rng(seed)
    pedestrian = {"kind": "pedestrian", "x": 5.0, "y": 0.5, "yaw": 0.0, "speed": 1.2, "length": 0.5, "width": 0.5}
    return episode_table(
        episode_id,
        steps,
        seed=seed,
        bev=[encode_png(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(steps)],
        x=rng.normal(size=steps),
        y=rng.normal(size=steps),
        yaw=rng.normal(size=steps),
        speed=rng.uniform(0, 8, steps),
        steer=rng.uniform(-1, 1, steps),
        throttle=rng.uniform(0, 1, steps),
        lateral_offset=rng.normal(size=steps),
        heading_error=rng.normal(size=steps),
        route_ahead=[rng.normal(size=(ROUTE_AHEAD_POINTS, 2)).tolist() for _ in range(steps)],
        agents=[[pedestrian]] * steps,
        action=[[0.1, 0.5]] * (steps - 1) + [None],
    )


def labels_for(raw: pa.Table, reward_offset: float = 0.0) -> pa.Table:
    return label_table(raw, reward=np.arange(raw.num_rows) + reward_offset)


@pytest.fixture
def dataset(tmp_path) -> Dataset:
    ds = Dataset.create(str(tmp_path / "ds"))
    ds.write_episode_shard("s0", pa.concat_tables([raw_episode("a", 5, 1), raw_episode("b", 3, 2)]))
    ds.write_episode_shard("s1", raw_episode("c", 4, 3))
    return ds


def test_round_trip_preserves_every_column(tmp_path):
    ds = Dataset.create(str(tmp_path / "ds"))
    original = raw_episode("ep", 6, seed=5)
    ds.write_episode_shard("shard", original)
    back = ds.read_shard("shard")
    assert back.schema.equals(RAW_STEP_SCHEMA, check_metadata=False)
    assert back.to_pylist() == original.to_pylist()
    ds.write_episode_shard("inferred", pa.table(original.to_pydict()))  # plain Python types are cast on write
    assert ds.read_shard("inferred").to_pylist() == original.to_pylist()
    assert pq.read_schema(ds.shard_path("shard")).metadata[META_SCHEMA_VERSION] == str(SCHEMA_VERSION).encode()


def test_listing_counts_and_column_selection(dataset):
    assert dataset.shards() == ["s0", "s1"]
    episodes = dataset.episodes()
    assert sorted(episodes.episode_id) == ["a", "b", "c"]
    assert dict(zip(episodes.episode_id, episodes.steps)) == {"a": 5, "b": 3, "c": 4}
    steps = dataset.read_steps(["speed"])
    assert steps.column_names == ["episode_id", "step", "speed"]
    assert steps.num_rows == 12
    assert "bev" not in dataset.read_steps().column_names
    info = dataset.info()
    assert (info["episodes"], info["steps"], info["shards"], info["schema_version"]) == (3, 12, 2, SCHEMA_VERSION)


def test_an_empty_dataset_lists_episodes_with_the_same_columns(dataset, tmp_path):
    empty = Dataset.create(str(tmp_path / "empty")).episodes()
    assert empty.empty and list(empty.columns) == list(dataset.episodes().columns)


def test_raw_shards_are_immutable(dataset):
    with pytest.raises(DatasetError, match="immutable"):
        dataset.write_episode_shard("s1", raw_episode("d", 2))


def test_missing_column_is_rejected_at_write_naming_it(tmp_path):
    ds = Dataset.create(str(tmp_path / "ds"))
    with pytest.raises(SchemaError, match="column 'speed'") as err:
        ds.write_episode_shard("bad", raw_episode("e", 3).drop_columns(["speed"]))
    assert "bad.parquet" in str(err.value)
    assert ds.shards() == []


def test_null_in_non_nullable_column_is_rejected(tmp_path):
    ds = Dataset.create(str(tmp_path / "ds"))
    table = raw_episode("e", 3)
    table = table.set_column(table.schema.get_field_index("speed"), "speed", pa.array([1.0, None, 2.0], pa.float32()))
    with pytest.raises(SchemaError, match="column 'speed'"):
        ds.write_episode_shard("bad", table)


def test_truncated_shard_gives_clear_error(dataset):
    path = dataset.shard_path("s1")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(SchemaError, match=r"s1\.parquet.*corrupt or truncated"):
        dataset.read_shard("s1")


def test_garbage_shard_gives_clear_error(dataset):
    with open(dataset.shard_path("s1"), "wb") as f:
        f.write(b"not parquet at all")
    with pytest.raises(SchemaError, match=r"s1\.parquet"):
        list(dataset.iter_steps(["speed"]))


def test_newer_schema_version_and_missing_column_are_named(dataset):
    table = dataset.read_shard("s1")
    newer = table.replace_schema_metadata({META_SCHEMA_VERSION: str(SCHEMA_VERSION + 1).encode(), b"drive_vlm_rl.kind": b"episodes"})
    pq.write_table(newer, dataset.shard_path("s1"))
    with pytest.raises(SchemaError, match=f"schema_version {SCHEMA_VERSION + 1}, newer than {SCHEMA_VERSION}"):
        dataset.read_shard("s1")

    stripped = table.drop_columns(["heading_error"])
    pq.write_table(stripped, dataset.shard_path("s1"))
    with pytest.raises(SchemaError, match=r"s1\.parquet, column 'heading_error'"):
        dataset.read_shard("s1")


def test_raw_shards_of_schema_version_1_read_the_added_scenario_column_as_free(dataset):
    """Version 2 added the raw column ``scenario``: a version-1 shard lacks it and reads as the free town."""
    table = dataset.read_shard("s1")
    v1 = table.drop_columns(["scenario"]).replace_schema_metadata({META_SCHEMA_VERSION: b"1", b"drive_vlm_rl.kind": b"episodes"})
    pq.write_table(v1, dataset.shard_path("s1"))
    back = dataset.read_shard("s1")
    assert back.column_names == RAW_STEP_SCHEMA.names
    assert back.column("scenario").to_pylist() == ["free"] * table.num_rows
    assert back.drop_columns(["scenario"]).equals(table.drop_columns(["scenario"]))
    assert dataset.read_shard("s1", ["scenario"]).column("scenario").to_pylist() == ["free"] * table.num_rows
    assert dataset.read_shard("s1", ["speed"]).column_names == ["speed"]
    assert set(dataset.episodes().set_index("episode_id")["scenario"]) == {"free"}

    # a shard of the version that added the column must have it
    pq.write_table(v1.replace_schema_metadata({META_SCHEMA_VERSION: b"2", b"drive_vlm_rl.kind": b"episodes"}), dataset.shard_path("s1"))
    with pytest.raises(SchemaError, match=r"s1\.parquet, column 'scenario'"):
        dataset.read_shard("s1")


def test_the_added_column_is_required_on_write(tmp_path):
    ds = Dataset.create(str(tmp_path / "ds"))
    with pytest.raises(SchemaError, match="column 'scenario'"):
        ds.write_episode_shard("old", raw_episode("e", 3).drop_columns(["scenario"]))


def test_unknown_column_request_is_named(dataset):
    with pytest.raises(SchemaError, match="column 'sped'"):
        dataset.read_shard("s0", ["sped"])


def test_newer_dataset_manifest_is_refused(tmp_path):
    ds = Dataset.create(str(tmp_path / "ds"))
    (tmp_path / "ds" / "dataset.json").write_text('{"format": "drive-vlm-rl", "schema_version": 9}')
    with pytest.raises(DatasetError, match="schema_version 9"):
        Dataset.open(ds.url)


def test_open_non_dataset_names_the_manifest(tmp_path):
    with pytest.raises(DatasetError, match="dataset.json: not found"):
        Dataset.open(str(tmp_path / "nothing"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        Dataset.create(str(tmp_path / "full"))


def test_killed_writer_leaves_no_visible_shard(tmp_path):
    """A real process killed with SIGKILL while its write is in flight leaves at most a *.tmp file."""
    root = tmp_path / "ds"
    Dataset.create(str(root))
    script = textwrap.dedent(
        f"""
        import os, signal
        import pyarrow.parquet as pq
        from data_schema import Dataset
        from episode_tables import episode_table
        real_write = pq.write_table
        def write_then_die(table, where, **kw):
            real_write(table, where, **kw)
            where.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        pq.write_table = write_then_die
        Dataset.open({str(root)!r}).write_episode_shard("run1-e000000", episode_table("x", 50))
        """
    )
    path = os.pathsep.join([str(TESTS), str(TESTS.parent)])
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": path})
    assert proc.returncode == -9
    ds = Dataset.open(str(root))
    assert ds.shards() == []
    leftovers = [p for p in os.listdir(root / "episodes") if p.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith("run1-e000000.parquet.")
    assert ds.remove_leftovers(owner="other-run") == []
    assert len(ds.remove_leftovers(owner="run1")) == 1
    assert os.listdir(root / "episodes") == []


def label_document(name: str, version: str) -> dict:
    """A label_set.json whose spec (and so its hash) is told apart by ``version``."""
    spec = {"version": version}
    return {"name": name, "hash": spec_hash(spec), "spec": spec}


def label_set_with(ds: Dataset, name: str, shards: dict[str, float], version: str = "h1"):
    labels = ds.label_set(name)
    document = label_document(name, version)
    labels.write_document(document)
    label_hash = document["hash"]
    for shard, offset in shards.items():
        labels.write_shard(shard, labels_for(ds.read_shard(shard), offset), label_hash)
    return labels


def test_join_returns_exactly_the_labelled_rows(dataset):
    label_set_with(dataset, "v1", {"s0": 0.0, "s1": 100.0})
    df = dataset.join("v1", columns=["speed"], label_columns=["reward"])
    assert list(df.columns) == ["episode_id", "step", "speed", "reward"]
    assert len(df) == 12
    assert df.set_index(["episode_id", "step"]).loc[("c", 2), "reward"] == 102.0
    assert df.set_index(["episode_id", "step"]).loc[("a", 4), "reward"] == 4.0


def test_join_skips_unlabelled_shards_with_a_warning_or_errors(dataset):
    label_set_with(dataset, "v1", {"s0": 0.0})
    with pytest.warns(UserWarning, match="1 of 2"):
        df = dataset.join("v1", columns=["speed"], label_columns=["reward"])
    assert set(df.episode_id) == {"a", "b"}
    with pytest.raises(DatasetError, match="no label shard with the current hash for raw shard"):
        dataset.join("v1", missing="error")


def test_stale_label_shard_is_never_mixed_in(dataset):
    labels = label_set_with(dataset, "v1", {"s0": 0.0, "s1": 0.0}, version="old")
    labels.write_document(label_document("v1", "new"))
    old, new = label_document("v1", "old")["hash"], label_document("v1", "new")["hash"]
    assert labels.shard_hash("s0") == old
    assert labels.labelled() == []
    with pytest.raises(SchemaError, match=f"stale label shard: label-set hash {old}, expected {new}"):
        labels.read_shard("s0")
    with pytest.warns(UserWarning, match="2 of 2"):
        assert dataset.join("v1").empty
    with pytest.raises(DatasetError, match="current hash"):
        dataset.join("v1", missing="error")


def test_images_decoded_only_when_asked(dataset):
    label_set_with(dataset, "v1", {"s0": 0.0, "s1": 0.0})
    encoded = dataset.join("v1", columns=["bev"], label_columns=["reward"])
    assert isinstance(encoded.bev.iloc[0], bytes)
    decoded = dataset.join("v1", columns=["bev"], label_columns=["reward"], decode=True)
    frame = decoded.bev.iloc[0]
    assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, decode_image(encoded.bev.iloc[0]))


def test_fsspec_url_works_like_a_path(tmp_path):
    ds = Dataset.create(f"file://{tmp_path}/ds")
    ds.write_episode_shard("s0", raw_episode("a", 3))
    assert Dataset.open(str(tmp_path / "ds")).read_steps(["speed"]).num_rows == 3
    memory = Dataset.create("memory://bucket/ds")
    memory.write_episode_shard("s0", raw_episode("m", 4))
    assert Dataset.open("memory://bucket/ds").episodes().steps.tolist() == [4]


def test_invalid_names_are_refused(dataset):
    with pytest.raises(DatasetError, match="invalid label set name"):
        dataset.label_set("../escape")
    with pytest.raises(DatasetError, match="invalid shard name"):
        dataset.write_episode_shard("a/b", raw_episode("z", 2))


def test_state_matrix_matches_state_vector():
    table = raw_episode("s", 4, seed=9)
    matrix = state_matrix(table)
    assert matrix.shape == (4, STATE_DIM)
    row = table.slice(2, 1).to_pylist()[0]
    expected = state_vector(row["speed"], row["steer"], row["throttle"], row["brake"], row["lateral_offset"], row["heading_error"], np.array(row["route_ahead"]))
    np.testing.assert_allclose(matrix[2], expected, rtol=1e-6)


def test_action_must_hold_two_values(tmp_path):
    ds = Dataset.create(str(tmp_path / "ds"))
    table = raw_episode("e", 3)
    bad = pa.array([[0.1, 0.2, 0.3], [0.0, 0.0], None], pa.list_(pa.float32()))
    with pytest.raises(SchemaError, match="column 'action'"):
        ds.write_episode_shard("bad", table.set_column(table.schema.get_field_index("action"), "action", bad))


@pytest.mark.parametrize("shape", [(128, 128, 3), (5, 7, 3), (1, 1, 3)])
def test_png_encoding_is_lossless_and_standard(shape):
    from PIL import Image
    import io

    rgb = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(rgb)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (shape[1], shape[0])
        assert np.array_equal(np.asarray(image), rgb)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        encode_png(rgb.astype(np.float32))


def test_missing_label_shard_is_named(dataset):
    labels = label_set_with(dataset, "v1", {"s0": 0.0})
    with pytest.raises(DatasetError, match=r"s1\.parquet: no such shard"):
        labels.read_shard("s1")
