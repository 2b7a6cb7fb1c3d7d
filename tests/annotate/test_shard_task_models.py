"""The shard task with its real models: the VLM dynamic pathway (tiny Qwen3-VL, a scripted server) and the YOLO gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from annotate import model_cache
from annotate.gate import CameraGate
from annotate.label_set import ModelIds, build_spec, prepare
from annotate.model_weights import file_digest
from annotate.run import RunOptions, annotate_dataset
from annotate.caches import vlm_cache_folder
from annotate.shard_task import ShardTask, VlmTransportError, annotate_shard
from annotate.vlm import cache_key
from annotate_fixtures import fast_config, raw_episode
from data_schema import Dataset, decode_image
from vlm_fixtures import TEST_PROMPT, VALID_ANSWER, tiny_qwen3_vl, tiny_qwen3_vl_answering  # noqa: F401

PEDESTRIAN_AHEAD = {"kind": "pedestrian", "x": 10.0, "y": 0.0, "yaw": 0.0, "speed": 1.0, "length": 0.5, "width": 0.5}
PEDESTRIAN_AWAY = {"kind": "pedestrian", "x": -15.0, "y": 8.0, "yaw": 0.0, "speed": 1.0, "length": 0.5, "width": 0.5}


def scene(gated_steps: set[int], steps: int) -> list[list[dict]]:
    return [[PEDESTRIAN_AHEAD if t in gated_steps else PEDESTRIAN_AWAY] for t in range(steps)]


def label_one(dataset: Dataset, config, name: str = "vlm", gate_weights: str | None = None):
    pathway = model_cache.static_pathway(config.clip)
    labels, h = prepare(dataset, name, build_spec(config, ModelIds(pathway.model_id, pathway.weights_id, gate_weights)), replace=False)
    stats = annotate_shard(ShardTask(dataset.url, dataset.shards()[0], name, h, config))
    return labels.read_shard(dataset.shards()[0]), stats


@pytest.fixture
def early_hazard(tmp_path):
    """One episode whose pedestrian is ahead at steps 1-3: windows of gated frames need padding at the start.

    The frames are noise like those the tiny VLM was taught on, so that it answers validly.
    """
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    dataset = Dataset.create(str(tmp_path / "ds"))
    dataset.write_episode_shard("s00", raw_episode("ep0", 6, seed=0, agents=scene({1, 2, 3}, 6), bev_frames=frames))
    return dataset


def vlm_config(model, *extra: str):
    return fast_config("vlm.backend=transformers", f"vlm.model={model}", f"vlm.prompt={TEST_PROMPT}", "vlm.device=cpu", *extra)


def test_gated_frames_get_vlm_answers_windows_padded_at_the_episode_start_and_the_dynamic_term(early_hazard, tiny_qwen3_vl_answering):
    config = vlm_config(tiny_qwen3_vl_answering)
    got, stats = label_one(early_hazard, config)
    gated = [False, True, True, True, False, False]
    assert got.column("gate").to_pylist() == gated
    assert stats.vlm_calls == 3 and stats.vlm_ok == 3 and stats.vlm_cache_hits == 0

    description = VALID_ANSWER["description"]
    assert got.column("vlm_text").to_pylist() == [description if g else None for g in gated]
    assert got.column("vlm_ok").to_pylist() == [True if g else None for g in gated]
    assert [json.loads(j) if j else None for j in got.column("vlm_json").to_pylist()] == [VALID_ANSWER if g else None for g in gated]

    # windows: K+1 = 4 BEV frames ending at the gated step, the first frame repeated before the episode start
    bev = early_hazard.read_shard("s00", ["bev"]).column("bev").to_pylist()
    expected = {cache_key(config.vlm, [bev[max(s - 3 + j, 0)] for j in range(4)]) for s in (1, 2, 3)}
    cached = pq.read_table(f"{vlm_cache_folder(early_hazard, config, 'fp32')}/s00.parquet")  # transformers on a CPU
    assert set(cached.column("key").to_pylist()) == expected and all(cached.column("ok").to_pylist())

    pathway = model_cache.static_pathway(config.clip)
    images = pathway.encode_images([decode_image(b) for b in bev])
    texts = pathway.encode_texts([config.prompts.positive_dynamic, description])
    expected_dynamic = np.where(gated, images @ texts[0] - images @ texts[1], 0.0)
    np.testing.assert_allclose(got.column("r_dynamic").to_numpy(), expected_dynamic, atol=1e-5)
    assert np.count_nonzero(got.column("r_dynamic").to_numpy()) == 3
    # the similarities are stored, so --reward-from-components can reweigh the dynamic term
    np.testing.assert_allclose(got.column("sim_dyn_pos").to_numpy(zero_copy_only=False)[1:4], (images @ texts[0])[1:4], atol=1e-5)
    assert got.column("sim_dyn_desc").to_pylist()[0] is None and got.column("sim_dyn_desc").null_count == 3


def test_new_prompts_reuse_the_vlm_answers(early_hazard, tiny_qwen3_vl_answering):
    first, _ = label_one(early_hazard, vlm_config(tiny_qwen3_vl_answering), "a")
    again, stats = label_one(early_hazard, vlm_config(tiny_qwen3_vl_answering, "prompts.positive=An empty road"), "b")
    assert stats.vlm_calls == 0 and stats.vlm_cache_hits == 3 and stats.images_encoded == 0
    assert again.column("vlm_json").equals(first.column("vlm_json"))
    assert not again.column("r_static").equals(first.column("r_static"))


def test_a_malformed_answer_is_recorded_with_its_raw_text_and_leaves_no_dynamic_term(early_hazard, tiny_qwen3_vl):
    config = vlm_config(tiny_qwen3_vl, "vlm.retries=0", "vlm.max_new_tokens=16", "vlm.structured_output=false")
    got, stats = label_one(early_hazard, config)
    assert stats.vlm_calls == 3 and stats.vlm_ok == 0
    assert got.column("vlm_ok").to_pylist() == [None, False, False, False, None, None]
    assert got.column("vlm_text").to_pylist() == [None] * 6
    records = [json.loads(j) for j in got.column("vlm_json").to_pylist()[1:4]]
    assert all(r["error"] and isinstance(r["raw"], str) and r["attempts"] == 1 for r in records)
    assert got.column("r_dynamic").to_pylist() == [0.0] * 6
    _, again = label_one(early_hazard, config, "again")
    assert again.vlm_calls == 0 and again.vlm_cache_hits == 3  # a model's bad answer is an answer: cached


def test_with_constrained_decoding_even_the_random_model_answers_and_every_gated_frame_gets_a_dynamic_term(early_hazard, tiny_qwen3_vl):
    got, stats = label_one(early_hazard, vlm_config(tiny_qwen3_vl, "vlm.retries=0", "vlm.max_new_tokens=400"))
    gated = [False, True, True, True, False, False]
    assert stats.vlm_calls == 3 and stats.vlm_ok == 3
    assert got.column("vlm_ok").to_pylist() == [True if g else None for g in gated]
    assert (got.column("r_dynamic").to_numpy() != 0).tolist() == gated


@pytest.fixture
def camera_dataset(tmp_path, street_photos, empty_road_frame):
    """Front-camera frames: an empty road, then the people of bus.jpg and zidane.jpg, then the road again."""
    frames = [empty_road_frame, street_photos["bus.jpg"], street_photos["zidane.jpg"], empty_road_frame]
    dataset = Dataset.create(str(tmp_path / "cam"))
    dataset.write_episode_shard("s00", raw_episode("ep0", 4, seed=0, camera_frames=frames, agents=scene({1, 2}, 4)))
    return dataset, frames


def test_camera_gate_runs_yolo_on_camera_frames_and_is_scored_against_the_scene(camera_dataset, yolov8n_weights):
    dataset, frames = camera_dataset
    config = fast_config("gate.source=camera", f"gate.weights={yolov8n_weights}", "gate.device=cpu", "gate.imgsz=320")
    got, stats = label_one(dataset, config, "cam", gate_weights=file_digest(yolov8n_weights))
    gate = CameraGate(config.gate)
    detections = gate.detect([decode_image(b) for b in dataset.read_shard("s00", ["camera"]).column("camera").to_pylist()])
    assert got.column("gate").to_pylist() == [gate.fires(d) for d in detections] == [False, True, True, False]
    assert set(got.column("gate_source").to_pylist()) == {"camera"}
    recorded = got.column("detections").to_pylist()
    assert [len(r) for r in recorded] == [len(d) for d in detections] and {d["cls"] for d in recorded[1]} >= {"person"}
    q = stats.gate_quality
    assert (q.tp, q.fp, q.fn, q.tn) == (2, 0, 0, 2)


def test_a_run_on_a_camera_dataset_puts_the_yolo_weights_hash_in_the_spec(camera_dataset, yolov8n_weights, tmp_path):
    dataset, _ = camera_dataset
    config = fast_config("gate.source=camera", f"gate.weights={yolov8n_weights}", "gate.device=cpu", "gate.imgsz=320")
    summary = annotate_dataset(dataset.url, config, RunOptions("cam-run", workers=1, processes=False, progress=False))
    assert summary.done == 1 and summary.gate_quality.recall == 1.0 and summary.gate_quality.precision == 1.0
    spec = dataset.label_set("cam-run").document()["spec"]
    assert spec["gate"]["weights_id"] == file_digest(yolov8n_weights) and "weights" not in spec["gate"]
    scene_only = Dataset.create(str(tmp_path / "no-camera"))
    scene_only.write_episode_shard("s00", raw_episode("ep0", 4, seed=0, agents=scene({1}, 4)))
    summary = annotate_dataset(scene_only.url, config, RunOptions("cam-run", workers=1, processes=False, progress=False))
    labels = scene_only.label_set("cam-run")
    assert "weights_id" not in labels.document()["spec"]["gate"]
    assert set(labels.read_shard("s00").column("gate_source").to_pylist()) == {"scene"}


@pytest.fixture
def chat_server():
    """The VLM tests' scripted OpenAI-compatible server (tests/annotate/vlm_chat_server.py) on loopback."""
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("vlm_chat_server.py"))], stdout=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_vlm_transport_failure_leaves_the_shard_unlabelled_and_the_rerun_asks_only_for_what_is_missing(early_hazard, chat_server):
    valid = {"content": json.dumps(VALID_ANSWER)}
    httpx.post(f"{chat_server}/control", json={"queue": [valid], "default": {"status": 503}}, timeout=10).raise_for_status()
    config = fast_config("vlm.backend=openai", "vlm.model=scripted", f"vlm.base_url={chat_server}/v1", f"vlm.prompt={TEST_PROMPT}",
                         "vlm.max_http_retries=0", "vlm.concurrency=1", "vlm.timeout_s=10")
    with pytest.raises(VlmTransportError, match="2 of 3 VLM request"):
        label_one(early_hazard, config, "remote")
    assert early_hazard.label_set("remote").shards() == []

    httpx.post(f"{chat_server}/control", json={"default": valid}, timeout=10).raise_for_status()
    got, stats = label_one(early_hazard, config, "remote")
    assert stats.vlm_calls == 2 and stats.vlm_cache_hits == 1 and stats.vlm_ok == 3
    assert got.column("vlm_ok").to_pylist() == [None, True, True, True, None, None]
