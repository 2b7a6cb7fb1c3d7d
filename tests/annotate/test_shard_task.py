"""The shard task: labels checked against an independent computation, the image-embedding cache, idempotence."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from annotate import model_cache
from annotate.label_set import ModelIds, build_spec, prepare
from data_schema.reward import synthesize
from annotate.caches import embedding_cache_folder
from annotate.shard_task import ShardTask, annotate_shard
from annotate_fixtures import fast_config, make_dataset
from data_schema import Dataset, SchemaError, decode_image

NEW_PROMPTS = ("prompts.positive=An empty road in good weather", "prompts.negative=A pedestrian is hit by a car", "reward.alpha=0.5")


def run_all(dataset: Dataset, name: str, config, force: bool = False):
    pathway = model_cache.static_pathway(config.clip)
    ids = ModelIds(pathway.model_id, pathway.weights_id, None, pathway.precision_id)
    labels, h = prepare(dataset, name, build_spec(config, ids), replace=False)
    stats = [annotate_shard(ShardTask(dataset.url, shard, name, h, config, force)) for shard in dataset.shards()]
    return labels, stats


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """A dataset labelled once from scratch with the default prompts; tests work on copies."""
    dataset = make_dataset(str(tmp_path_factory.mktemp("cold") / "ds"), shards=2, episodes_per_shard=2, steps=6)
    labels, stats = run_all(dataset, "base", fast_config())
    return dataset, labels, stats


def copy_of(dataset: Dataset, target, keep_cache: bool = True) -> Dataset:
    shutil.copytree(dataset.path, target, ignore=None if keep_cache else shutil.ignore_patterns("cache"))
    return Dataset.open(str(target))


def test_labels_match_an_independent_computation(cold):
    dataset, labels, stats = cold
    config = fast_config()
    pathway = model_cache.static_pathway(config.clip)
    texts = pathway.encode_texts([config.prompts.positive, config.prompts.negative])
    for shard in dataset.shards():
        raw = dataset.read_shard(shard)
        got = labels.read_shard(shard).to_pydict()
        images = pathway.encode_images([decode_image(b) for b in raw.column("bev").to_pylist()])
        np.testing.assert_allclose(got["sim_pos"], images @ texts[0], atol=1e-5)
        np.testing.assert_allclose(got["sim_neg"], images @ texts[1], atol=1e-5)
        np.testing.assert_allclose(got["r_static"], np.asarray(got["sim_pos"]) - np.asarray(got["sim_neg"]), atol=1e-6)
        # the fixture's pedestrian crosses 10 m ahead; inside the 3 m corridor (plus its half width) when |y| < 3.25
        expected_gate = [any(a["kind"] == "pedestrian" and a["x"] == 10.0 and abs(a["y"]) < 3.25 for a in agents) for agents in raw.column("agents").to_pylist()]
        assert got["gate"] == expected_gate and any(expected_gate) and not all(expected_gate)
        assert set(got["gate_source"]) == {"scene"} and got["detections"] == [[]] * raw.num_rows
        assert got["vlm_ok"] == [None] * raw.num_rows and got["r_dynamic"] == [0.0] * raw.num_rows
        assert got["sim_dyn_pos"] == got["sim_dyn_desc"] == [None] * raw.num_rows  # no VLM: nothing described
        nothing = np.full(raw.num_rows, np.nan)
        sims = {"sim_pos": np.asarray(got["sim_pos"]), "sim_neg": np.asarray(got["sim_neg"]), "sim_dyn_pos": nothing, "sim_dyn_desc": nothing}
        reward = synthesize({**raw.to_pydict(), **sims}, config.reward)
        for name, values in reward.items():
            np.testing.assert_allclose(got[name], values, atol=1e-6, err_msg=name)
    assert [s.images_encoded for s in stats] == [12, 12] and sum(s.gate_quality.fn for s in stats) == 0


def test_new_prompts_rescore_from_the_cache_without_the_image_encoder_and_match_a_cold_run(cold, tmp_path):
    dataset, _, _ = cold
    warm = copy_of(dataset, tmp_path / "warm")
    config = fast_config(*NEW_PROMPTS)
    pathway = model_cache.static_pathway(config.clip)
    batches, encoded = pathway.image_forward_calls, pathway.images_encoded
    labels, stats = run_all(warm, "new-prompts", config)
    assert (pathway.image_forward_calls, pathway.images_encoded) == (batches, encoded)
    assert [s.images_encoded for s in stats] == [0, 0] and [s.embedding_cache_hits for s in stats] == [12, 12]

    fresh = copy_of(dataset, tmp_path / "fresh", keep_cache=False)
    cold_labels, cold_stats = run_all(fresh, "new-prompts", config)
    assert [s.images_encoded for s in cold_stats] == [12, 12]
    for shard in dataset.shards():
        a, b = labels.read_shard(shard), cold_labels.read_shard(shard)
        for name in a.column_names:
            if pa.types.is_floating(a.schema.field(name).type):
                np.testing.assert_allclose(a.column(name).to_numpy(), b.column(name).to_numpy(), atol=1e-6, err_msg=name)
            else:
                assert a.column(name).equals(b.column(name)), name


def test_rerun_skips_a_labelled_shard_and_force_rewrites_the_same_labels(cold, tmp_path):
    dataset = copy_of(cold[0], tmp_path / "ds")
    config = fast_config()
    labels, stats = run_all(dataset, "base", config)
    assert {s.status for s in stats} == {"skipped"}
    before = labels.read_shard("s00")
    _, forced = run_all(dataset, "base", config, force=True)
    assert {s.status for s in forced} == {"done"} and labels.read_shard("s00").equals(before)


def test_a_corrupt_embedding_cache_is_rebuilt_not_trusted(cold, tmp_path):
    dataset = copy_of(cold[0], tmp_path / "ds")
    config = fast_config()
    pathway = model_cache.static_pathway(config.clip)
    cache = f"{embedding_cache_folder(dataset, pathway.model_id, pathway.weights_id, pathway.precision_id)}/s00.parquet"
    with open(cache, "wb") as f:
        f.write(b"not parquet")
    labels, stats = run_all(dataset, "base", config, force=True)
    assert stats[0].images_encoded == 12 and stats[1].images_encoded == 0
    np.testing.assert_allclose(labels.read_shard("s00").column("sim_pos").to_numpy(), cold[1].read_shard("s00").column("sim_pos").to_numpy(), atol=1e-6)


def test_frames_decoded_in_chunks_ahead_of_the_encoder_give_the_same_embeddings(cold, tmp_path, monkeypatch):
    import annotate.shard_task as shard_task

    monkeypatch.setattr(shard_task, "DECODE_CHUNK", 5)  # 12 frames per shard: chunks of 5, 5 and 2
    assert [(offset, len(frames)) for offset, frames in shard_task.decoded_chunks([b""] * 0)] == []
    dataset = copy_of(cold[0], tmp_path / "ds", keep_cache=False)
    labels, stats = run_all(dataset, "base", fast_config(), force=True)
    assert [s.images_encoded for s in stats] == [12, 12]
    for shard in dataset.shards():
        np.testing.assert_allclose(labels.read_shard(shard).column("sim_pos").to_numpy(), cold[1].read_shard(shard).column("sim_pos").to_numpy(), atol=1e-6)


def rewritten(dataset: Dataset, target, shard: str, row: int, bev: bytes) -> Dataset:
    """A copy of ``dataset`` (caches included) whose raw shard ``shard`` has ``bev`` as the frame of ``row``."""
    copy = copy_of(dataset, target)
    table = copy.read_shard(shard)
    frames = table.column("bev").to_pylist()
    frames[row] = bev
    Path(copy.shard_path(shard)).unlink()
    copy.write_episode_shard(shard, table.set_column(table.schema.get_field_index("bev"), "bev", pa.array(frames, pa.binary())))
    return copy


def test_a_frame_whose_bytes_changed_is_encoded_again_not_matched_by_its_position(cold, tmp_path):
    dataset, labels, _ = cold
    other = dataset.read_shard("s01", ["bev"]).column("bev")[0].as_py()  # a real frame, from another shard
    changed = rewritten(dataset, tmp_path / "ds", "s00", 2, other)
    relabelled, stats = run_all(changed, "base", fast_config(), force=True)
    assert [s.images_encoded for s in stats] == [1, 0] and stats[0].embedding_cache_hits == 11
    got, before = relabelled.read_shard("s00").column("sim_pos").to_numpy(), labels.read_shard("s00").column("sim_pos").to_numpy()
    assert got[2] == pytest.approx(labels.read_shard("s01").column("sim_pos").to_numpy()[0], abs=1e-6)
    np.testing.assert_allclose(np.delete(got, 2), np.delete(before, 2), atol=1e-6)
    _, again = run_all(changed, "base", fast_config(), force=True)
    assert [s.images_encoded for s in again] == [0, 0]  # the cache holds the new frame's embedding, not both


def test_embeddings_at_another_precision_are_not_reused(cold, tmp_path):
    dataset = copy_of(cold[0], tmp_path / "ds")
    _, fp32 = run_all(dataset, "auto", fast_config("clip.precision=auto"))  # auto is fp32 on a CPU: the cold run's cache
    assert [s.images_encoded for s in fp32] == [0, 0]
    labels, bf16 = run_all(dataset, "bf16", fast_config("clip.precision=bf16"))
    assert [s.images_encoded for s in bf16] == [12, 12]
    assert labels.info().spec["clip"]["precision"] == "bf16" and labels.hash != dataset.label_set("auto").hash


def test_an_undecodable_frame_is_named_and_skip_bad_leaves_its_shard_unlabelled(cold, tmp_path):
    broken = rewritten(cold[0], tmp_path / "ds", "s01", 5, b"\x89PNG\r\n\x1a\n not a frame")
    config = fast_config()
    pathway = model_cache.static_pathway(config.clip)
    labels, digest = prepare(broken, "fresh", build_spec(config, ModelIds(pathway.model_id, pathway.weights_id, None)), replace=False)
    with pytest.raises(SchemaError, match=r"s01\.parquet, column 'bev': episode '\S+', step \d+: not a decodable PNG/JPEG image"):
        annotate_shard(ShardTask(broken.url, "s01", "fresh", digest, config))
    stats = [annotate_shard(ShardTask(broken.url, s, "fresh", digest, config, skip_bad=True)) for s in broken.shards()]
    assert [s.status for s in stats] == ["done", "bad"] and "step" in stats[1].error
    assert labels.labelled() == ["s00"]
