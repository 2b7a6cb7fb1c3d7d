"""Annotation: CLIP static pathway, YOLO gate, VLM dynamic pathway and reward synthesis over raw shards.

It stands beside collect and train on ``data_schema`` and imports neither. One idempotent dask task per raw
shard (``shard_task``) writes one label shard; ``run`` orchestrates them, ``label_set`` names and versions
what they write, ``caches`` keeps reusable model outputs, ``config`` loads the settings.
"""

from annotate.config import AnnotateConfig, ConfigError, PromptsConfig, load_config
from annotate.gate import CameraGate, Detection, GateConfig
from annotate.label_set import LabelSetConflict, ModelIds, build_spec, prepare
from annotate.model_weights import WeightsError
from annotate.run import ClusterError, RunOptions, RunSummary, annotate_dataset
from annotate.shard_task import ShardTask, annotate_shard
from annotate.static_pathway import ClipConfig, StaticPathway
from annotate.vlm import VlmConfig, make_vlm_backend

__all__ = [
    "AnnotateConfig",
    "CameraGate",
    "ClipConfig",
    "ClusterError",
    "ConfigError",
    "Detection",
    "GateConfig",
    "LabelSetConflict",
    "ModelIds",
    "PromptsConfig",
    "RunOptions",
    "RunSummary",
    "ShardTask",
    "StaticPathway",
    "VlmConfig",
    "WeightsError",
    "annotate_dataset",
    "annotate_shard",
    "build_spec",
    "load_config",
    "make_vlm_backend",
    "prepare",
]
