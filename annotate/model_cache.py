"""Models loaded once per worker process and reused by every shard task that runs there.

A dask worker runs many shard tasks; loading CLIP, YOLO or a VLM per task would cost more than the
work. Each kind of model is kept in a module-level slot keyed by its config: a task with the same config
reuses it, another config replaces it (so a long-lived worker holds at most one model of each kind).
Text embeddings of the prompts are cached the same way, once per label set and process.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Sequence

import numpy as np

from annotate.config import to_mapping
from annotate.gate import CameraGate, GateConfig
from annotate.static_pathway import ClipConfig, StaticPathway
from annotate.vlm import VlmBackend, VlmConfig, make_vlm_backend

_lock = threading.RLock()  # text_embeddings loads the pathway while holding it
_slots: dict[str, tuple[str, Any]] = {}
_loads: dict[str, int] = {}


def _key(config: Any) -> str:
    return json.dumps(to_mapping(config), sort_keys=True)


def _cached(kind: str, key: str, factory: Callable[[], Any]) -> Any:
    with _lock:
        slot = _slots.get(kind)
        if slot is not None and slot[0] == key:
            return slot[1]
        if slot is not None:
            _close(slot[1])
            del _slots[kind]
        value = factory()
        _slots[kind] = (key, value)
        _loads[kind] = _loads.get(kind, 0) + 1
        return value


def static_pathway(config: ClipConfig) -> StaticPathway:
    return _cached("clip", _key(config), lambda: StaticPathway(config))


def camera_gate(config: GateConfig) -> CameraGate:
    return _cached("gate", _key(config), lambda: CameraGate(config))


def vlm_backend(config: VlmConfig) -> VlmBackend | None:
    if config.backend == "none":
        return None
    return _cached("vlm", _key(config), lambda: make_vlm_backend(config))


def text_embeddings(config: ClipConfig, texts: Sequence[str]) -> np.ndarray:
    """``(len(texts), D)`` embeddings of fixed prompts, computed once per process and prompt set."""
    texts = list(texts)
    key = _key(config) + json.dumps(texts)
    return _cached("prompts", key, lambda: static_pathway(config).encode_texts(texts))


def loads() -> int:
    """How many models (CLIP, YOLO, VLM) this process has loaded so far."""
    return sum(n for kind, n in _loads.items() if kind != "prompts")


def clear() -> None:
    """Drop every cached model (tests; a worker never needs it)."""
    with _lock:
        for _, value in _slots.values():
            _close(value)
        _slots.clear()


def _close(value: Any) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        close()
