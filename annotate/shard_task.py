"""One shard task: a raw episode shard in, its label shard out (written atomically with the label-set hash).

The task is idempotent: it reads only the raw shard and the caches, writes the label shard in one atomic
step, and skips a shard that already carries the hash. A worker that dies mid-task leaves at most a
``*.tmp`` behind, and the rescheduled task produces the same shard.

It reads image embeddings and VLM answers through the caches (``annotate.caches``). A model's answer is
cached even when malformed (it is the model's answer); a transport failure (server down, timeouts) is not:
the task fails after caching the answers it did get, dask retries it, and a shard that still fails is
reported and labelled by the next run.

The task measures similarities and leaves their weighting to ``data_schema.reward.synthesize``: the static
pathway's ``sim_pos`` / ``sim_neg`` (BEV vs the language goals) on every frame, and the dynamic pathway's
``sim_dyn_pos`` / ``sim_dyn_desc`` (image vs ``positive_dynamic`` and vs the VLM's description; the image is
the camera frame, or the BEV in shards without a camera) on gated frames with a description. A frame whose
answer has none (VLM disabled, or an answer that stayed malformed after the retries) gets null there, so
``r_dynamic = 0`` like an ungated frame, rather than half a term that would reward failures.
"""

from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from data_schema import LABEL_SCHEMA, Dataset, SchemaError, decode_image
from data_schema.images import naming_frames
from data_schema.groundtruth import GateQuality, critical_in_corridor
from data_schema.reward import REWARD_RAW_COLUMNS, synthesize

from annotate import model_cache
from annotate.caches import (
    embedding_cache_folder, frame_digest, read_embedding_cache, read_vlm_cache, vlm_cache_folder, write_embedding_cache,
    write_vlm_cache,
)  # fmt: skip
from annotate.config import AnnotateConfig
from annotate.shard_frames import ShardFrames
from annotate.vlm import VlmAnswer, cache_key

__all__ = ["SHARD_TASK_COLUMNS", "ShardStats", "ShardTask", "VlmTransportError", "annotate_shard", "decoded_chunks"]

#: Raw columns a shard task reads (images stay encoded until a model needs them).
SHARD_TASK_COLUMNS = [*REWARD_RAW_COLUMNS, "bev", "camera", "agents"]
#: Frames decoded and encoded at a time: bounds memory on long shards.
DECODE_CHUNK = 256
#: Threads decoding the next chunk while a model runs on the current one (PIL releases the GIL).
DECODE_THREADS = 4


class VlmTransportError(RuntimeError):
    """The VLM could not be reached for some windows: the shard must not be labelled as if it had answered."""


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs for one shard; small and picklable."""

    dataset_url: str
    shard: str
    label_set: str
    label_set_hash: str
    config: AnnotateConfig
    force: bool = False
    #: A raw shard that cannot be read (corrupt, non-finite values, undecodable frames) is reported as "bad"
    #: and left unlabelled, instead of failing the task.
    skip_bad: bool = False


@dataclass
class ShardStats:
    """What one task did, for the run's summary and the label set's provenance."""

    shard: str
    status: str  # "done", "skipped" (labelled already) or "bad" (unreadable raw shard, with skip_bad)
    error: str = ""  # why a "bad" shard could not be read
    frames: int = 0
    gated: int = 0
    gate_source: str = ""
    gate_quality: GateQuality = field(default_factory=GateQuality)  # against the scene corridor's ground truth
    vlm_calls: int = 0
    vlm_ok: int = 0
    vlm_cache_hits: int = 0
    images_encoded: int = 0
    embedding_cache_hits: int = 0
    models_loaded: int = 0
    seconds: float = 0.0
    host: str = ""
    pid: int = 0


def annotate_shard(task: ShardTask) -> ShardStats:
    """Label one raw shard; skip it when its label shard already carries the hash (unless forced)."""
    start = time.perf_counter()
    loads_before = model_cache.loads()
    dataset = Dataset(task.dataset_url)
    labels = dataset.label_set(task.label_set)
    stats = ShardStats(task.shard, "done", host=socket.gethostname(), pid=os.getpid())
    if not task.force and labels.shard_hash(task.shard) == task.label_set_hash:
        stats.status = "skipped"
        return stats
    try:
        labels_table = _label(dataset, task, stats)
    except SchemaError as error:
        if not (task.skip_bad and error.path == dataset.shard_path(task.shard)):
            raise
        stats.status, stats.error = "bad", str(error)
        return stats
    labels.write_shard(task.shard, labels_table, task.label_set_hash)
    stats.models_loaded = model_cache.loads() - loads_before
    stats.seconds = time.perf_counter() - start
    return stats


def _label(dataset: Dataset, task: ShardTask, stats: ShardStats) -> pa.Table:
    """The label rows of the task's raw shard; a SchemaError naming the raw shard when it cannot be read."""
    table = dataset.read_shard(task.shard, SHARD_TASK_COLUMNS)
    columns = ShardFrames(table)
    stats.frames = table.num_rows
    config = task.config
    path = dataset.shard_path(task.shard)

    with naming_frames(path, "camera", columns.episode_id, columns.step):
        gate, source, detections = _gate(table, columns, config)
    stats.gate_quality = GateQuality.of(gate, critical_in_corridor(table.column("agents"), config.gate.corridor))
    stats.gate_source = source
    stats.gated = int(gate.sum())

    answers = _assess(dataset, task.shard, columns, gate, config, stats)
    described = np.array([a is not None and bool(a.description) for a in answers], dtype=bool)

    view = "camera" if columns.has_camera else "bev"
    wanted = [("bev", i) for i in range(len(columns))]
    if view == "camera":
        wanted += [("camera", int(i)) for i in np.flatnonzero(described)]
    embeddings = _embeddings(dataset, task.shard, columns, wanted, config, stats)

    prompts = config.prompts
    texts = model_cache.text_embeddings(config.clip, [prompts.positive, prompts.negative, prompts.positive_dynamic])
    sims = {"sim_pos": embeddings["bev"] @ texts[0], "sim_neg": embeddings["bev"] @ texts[1]}
    sims |= _dynamic_similarities(embeddings[view], texts[2], answers, described, config)
    reward = synthesize({**sims, **{name: table.column(name) for name in REWARD_RAW_COLUMNS}}, config.reward)
    return pa.table(
        {
            "episode_id": table.column("episode_id"),
            "step": table.column("step"),
            "gate": gate,
            "gate_source": [source] * len(columns),
            "detections": pa.array(detections, LABEL_SCHEMA.field("detections").type),
            "vlm_text": [a.description if a is not None else None for a in answers],
            "vlm_json": [_answer_json(a) for a in answers],
            "vlm_ok": [a.ok if a is not None else None for a in answers],
            **{name: pa.array(values, pa.float32(), from_pandas=True) for name, values in sims.items()},  # NaN -> null
            **reward,
        }
    )


def _gate(table: pa.Table, columns: ShardFrames, config: AnnotateConfig) -> tuple[np.ndarray, str, list[list[dict]]]:
    """Per frame: whether the gate fires and the camera detections; and the source that decided.

    The camera gate needs camera frames; a shard without them uses ``gate_fallback`` instead.
    """
    n = len(columns)
    source = config.gate.source
    if source == "camera" and not columns.has_camera:
        source = config.gate_fallback
    detections: list[list[dict]] = [[] for _ in range(n)]
    fired = np.zeros(n, dtype=bool)
    if source == "camera":
        gate_model = model_cache.camera_gate(config.gate)
        for lo, images in decoded_chunks(columns.camera):
            for i, dets in enumerate(gate_model.detect(images), start=lo):
                fired[i] = gate_model.fires(dets)
                detections[i] = [d.to_record() for d in dets]
    elif source == "scene":
        fired = critical_in_corridor(table.column("agents"), config.gate.corridor)
    return fired, source, detections


def decoded_chunks(blobs: Sequence[bytes]) -> Iterator[tuple[int, list[np.ndarray]]]:
    """``(offset, frames)`` chunks of decoded images; the next chunk decodes in threads while the caller works.
    A bad frame raises an ImageError carrying its position in ``blobs``."""
    starts = range(0, len(blobs), DECODE_CHUNK)
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        pending = [pool.submit(decode_image, b, i) for i, b in enumerate(blobs[:DECODE_CHUNK])]
        for start in starts:
            current = [future.result() for future in pending]
            nxt = start + DECODE_CHUNK
            pending = [pool.submit(decode_image, b, nxt + i) for i, b in enumerate(blobs[nxt : nxt + DECODE_CHUNK])]
            yield start, current


def _assess(
    dataset: Dataset, shard: str, columns: ShardFrames, gate: np.ndarray, config: AnnotateConfig, stats: ShardStats
) -> list[VlmAnswer | None]:
    """The VLM answer of every gated frame (None elsewhere or with the VLM off), through the answer cache."""
    answers: list[VlmAnswer | None] = [None] * len(columns)
    rows = np.flatnonzero(gate)
    if config.vlm.backend == "none" or len(rows) == 0:
        return answers
    backend = model_cache.vlm_backend(config.vlm)
    path = f"{vlm_cache_folder(dataset, config, backend.precision_id)}/{shard}.parquet"
    cached = read_vlm_cache(dataset, path)
    keys = {int(r): cache_key(config.vlm, columns.window(int(r), config.vlm.window)) for r in rows}
    missing: dict[str, int] = {}
    for row, key in keys.items():
        if key not in cached and key not in missing:
            missing[key] = row
    stats.vlm_cache_hits = sum(1 for key in keys.values() if key in cached)
    if missing:
        fresh = backend.assess([columns.window(row, config.vlm.window) for row in missing.values()])
        stats.vlm_calls = len(fresh)
        new = {key: answer for key, answer in zip(missing, fresh)}
        keep = {key: answer for key, answer in new.items() if not answer.transient}
        if keep:
            write_vlm_cache(dataset, path, {**cached, **keep})
        lost = [answer for answer in new.values() if answer.transient]
        if lost:
            raise VlmTransportError(
                f"shard {shard}: {len(lost)} of {len(new)} VLM request(s) got no answer ({lost[0].error}); the "
                f"{len(keep)} answers received are cached and the shard is left unlabelled; a rerun asks again for the others only"
            )
        cached = {**cached, **new}
    for row, key in keys.items():
        answers[row] = cached[key]
    stats.vlm_ok = sum(1 for row in keys if answers[row].ok)
    return answers


def _embeddings(
    dataset: Dataset, shard: str, columns: ShardFrames, wanted: Sequence[tuple[str, int]], config: AnnotateConfig, stats: ShardStats
) -> dict[str, np.ndarray]:
    """Normalised image embeddings per view (one row per shard row; zeros where not wanted), through the cache
    (keyed by frame content too: a frame whose bytes changed is encoded again)."""
    pathway = model_cache.static_pathway(config.clip)
    path = f"{embedding_cache_folder(dataset, pathway.model_id, pathway.weights_id, pathway.precision_id)}/{shard}.parquet"
    keys, matrix = read_embedding_cache(dataset, path)
    index = {key: i for i, key in enumerate(keys)}
    hits: list[tuple[str, int, int]] = []
    todo: list[tuple[str, int]] = []
    todo_keys: list[tuple[str, str, int, str]] = []
    for view, row in wanted:
        blob = columns.bev[row] if view == "bev" else columns.camera[row]
        key = (view, columns.episode_id[row], int(columns.step[row]), frame_digest(blob))
        i = index.get(key)
        if i is None:
            todo.append((view, row))
            todo_keys.append(key)
        else:
            hits.append((view, row, i))
    stats.embedding_cache_hits = len(hits)
    stats.images_encoded = len(todo)
    blobs = [columns.bev[row] if view == "bev" else columns.camera[row] for view, row in todo]
    rows = [row for _, row in todo]
    with naming_frames(dataset.shard_path(shard), [view for view, _ in todo], columns.episode_id[rows], columns.step[rows]):
        fresh = [np.asarray(pathway.encode_images(images), dtype=np.float32) for _, images in decoded_chunks(blobs)]
    if todo:
        encoded = np.concatenate(fresh)
        replaced = {key[:3] for key in todo_keys}  # entries of frames whose bytes changed: dropped, not kept beside the new
        kept = [i for i, key in enumerate(keys) if key[:3] not in replaced]
        position = {old: new for new, old in enumerate(kept)}
        hits = [(view, row, position[i]) for view, row, i in hits]
        keys = [keys[i] for i in kept] + todo_keys
        matrix = np.concatenate([matrix[kept], encoded]) if kept else encoded
        write_embedding_cache(dataset, path, keys, matrix)
    base = len(keys) - len(todo)
    dim = matrix.shape[1] if len(matrix) else 0
    out = {view: np.zeros((len(columns), dim), dtype=np.float32) for view in ("bev", "camera")}
    for view, row, i in hits:
        out[view][row] = matrix[i]
    for j, (view, row) in enumerate(todo):
        out[view][row] = matrix[base + j]
    return out


def _dynamic_similarities(
    images: np.ndarray, positive: np.ndarray, answers: list[VlmAnswer | None], described: np.ndarray, config: AnnotateConfig
) -> dict[str, np.ndarray]:
    """``sim_dyn_pos`` and ``sim_dyn_desc`` for frames with a description; NaN (stored as null) elsewhere."""
    pos = np.full(len(answers), np.nan)
    desc = np.full(len(answers), np.nan)
    rows = np.flatnonzero(described)
    if len(rows):
        texts = sorted({answers[i].description for i in rows})
        embedded = dict(zip(texts, model_cache.static_pathway(config.clip).encode_texts(texts)))
        pos[rows] = images[rows] @ positive
        desc[rows] = [float(images[i] @ embedded[answers[i].description]) for i in rows]
    return {"sim_dyn_pos": pos, "sim_dyn_desc": desc}


def _answer_json(answer: VlmAnswer | None) -> str | None:
    """The validated answer; for a failed one a JSON record of why, with the model's raw text."""
    if answer is None:
        return None
    if answer.ok:
        return answer.answer_json
    return json.dumps({"error": answer.error, "raw": answer.raw, "attempts": answer.attempts, "transient": answer.transient})
