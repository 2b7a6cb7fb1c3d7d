"""The caches of annotate's model outputs in a dataset: reusable across label sets, never trusted beyond their key.

::

    cache/clip_image/<model_id>-<weights_id>-<precision>/<shard>.parquet   image embeddings per (view, episode, step, frame digest)
    cache/vlm/<settings_id>-<precision>/<shard>.parquet                    VLM answers keyed by ``annotate.vlm.cache_key``

The image-embedding cache lets a new prompt set re-score a shard without running the image encoder; the
answer cache lets a rerun ask the VLM only for windows it has not answered. Keys hold what determines the
value: the model, its weights (or settings) and the precision it ran at (the folder), and the frame's content (a digest
of its bytes, so a frame that changed on disk is encoded again, never matched by its position). Both are
written atomically (with page checksums) and merged; an unreadable or outdated cache file is rebuilt,
never an error.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_schema import Dataset
from data_schema.shards import WRITE_OPTIONS, open_parquet
from data_schema.storage import atomic_write

from annotate.config import AnnotateConfig
from annotate.vlm import VlmAnswer, settings_id

__all__ = [
    "EmbeddingKey", "embedding_cache_folder", "frame_digest", "read_embedding_cache", "read_vlm_cache", "vlm_cache_folder",
    "write_embedding_cache", "write_vlm_cache",
]  # fmt: skip

#: An image embedding's key in its shard's cache file: (view, episode_id, step, frame digest).
EmbeddingKey = tuple[str, str, int, str]

EMBEDDING_CACHE_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("view", pa.string(), nullable=False),
        pa.field("frame_digest", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
    ]
)
VLM_CACHE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("answer_json", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("error", pa.string()),
    ]
)


def read_vlm_cache(dataset: Dataset, path: str) -> dict[str, VlmAnswer]:
    table = _read_cache(dataset, path, VLM_CACHE_SCHEMA)
    if table is None:
        return {}
    return {
        row["key"]: VlmAnswer(row["ok"], row["description"], row["answer_json"], row["raw"], row["attempts"], row["error"])
        for row in table.to_pylist()
    }


def write_vlm_cache(dataset: Dataset, path: str, answers: dict[str, VlmAnswer]) -> None:
    rows = [
        {"key": k, "ok": a.ok, "description": a.description, "answer_json": a.answer_json, "raw": a.raw, "attempts": a.attempts, "error": a.error}
        for k, a in answers.items()
    ]
    _write_cache(dataset, path, pa.Table.from_pylist(rows, schema=VLM_CACHE_SCHEMA))


def frame_digest(frame: bytes) -> str:
    """A digest of an encoded frame's bytes: the content part of its embedding's key."""
    return hashlib.blake2b(frame, digest_size=16).hexdigest()


def read_embedding_cache(dataset: Dataset, path: str) -> tuple[list[EmbeddingKey], np.ndarray]:
    table = _read_cache(dataset, path, EMBEDDING_CACHE_SCHEMA)
    if table is None or table.num_rows == 0:
        return [], np.zeros((0, 0), dtype=np.float32)
    names = ("view", "episode_id", "step", "frame_digest")
    keys = list(zip(*(table.column(name).to_pylist() for name in names)))
    flat = table.column("embedding").combine_chunks()
    matrix = flat.flatten().to_numpy().reshape(table.num_rows, -1)
    return keys, matrix.astype(np.float32, copy=False)


def write_embedding_cache(dataset: Dataset, path: str, keys: list[EmbeddingKey], matrix: np.ndarray) -> None:
    dim = matrix.shape[1]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), dim)
    table = pa.table(
        {
            "episode_id": [k[1] for k in keys],
            "step": pa.array([k[2] for k in keys], pa.int32()),
            "view": [k[0] for k in keys],
            "frame_digest": [k[3] for k in keys],
            "embedding": embedding.cast(pa.list_(pa.float32())),
        },
        schema=EMBEDDING_CACHE_SCHEMA,
    )
    _write_cache(dataset, path, table)


def _read_cache(dataset: Dataset, path: str, schema: pa.Schema) -> pa.Table | None:
    """A cache file, or None when absent, unreadable or of another layout (it is then rebuilt)."""
    if not dataset.fs.exists(path):
        return None
    try:
        with dataset.fs.open(path, "rb") as f:
            table = open_parquet(f).read()
        return table.select(schema.names).cast(schema)
    except (pa.ArrowException, OSError, KeyError, ValueError):
        return None


def _write_cache(dataset: Dataset, path: str, table: pa.Table) -> None:
    atomic_write(dataset.fs, path, lambda f: pq.write_table(table, f, **WRITE_OPTIONS))


def embedding_cache_folder(dataset: Dataset, model_id: str, weights_id: str, precision: str) -> str:
    """``cache/clip_image/<model_id>-<weights_id>-<precision>``, keeping the characters a cache key allows
    (a long weights id is shortened, never the precision that ends the key)."""
    model = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{model_id}-{weights_id}").lstrip("._-") or "model"
    return dataset.cache_path("clip_image", f"{model[: 127 - len(precision)]}-{precision}")


def vlm_cache_folder(dataset: Dataset, config: AnnotateConfig, precision: str) -> str:
    """``cache/vlm/<settings_id>-<precision>``: answers reusable by any backend asking the same model the same way
    at the same precision (a backend's ``precision_id``)."""
    return dataset.cache_path("vlm", f"{settings_id(config.vlm)}-{precision}")
