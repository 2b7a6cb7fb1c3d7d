"""Annotation: CLIP static pathway, YOLO gate, VLM dynamic pathway and reward synthesis over raw shards.

It stands beside collect and train on ``data_schema`` and imports neither. One idempotent dask task per raw
shard (``shard_task``) writes one label shard; ``run`` orchestrates them, ``label_set`` names and versions
what they write, ``caches`` keeps reusable model outputs, ``config`` loads the settings. ``captions``,
``clip_data``, ``clip_finetune`` and ``clip_eval`` teach the static pathway a dataset's own BEV frames from
the simulator's ground truth and measure it.
"""

from annotate.captions import captions
from annotate.clip_data import ClipFrames, EpisodeSplit
from annotate.clip_eval import BEV_PROMPTS, PromptPair, evaluate_clip
from annotate.clip_finetune import FinetuneConfig, finetune, read_card
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
    "BEV_PROMPTS",
    "CameraGate",
    "ClipConfig",
    "ClipFrames",
    "ClusterError",
    "ConfigError",
    "Detection",
    "EpisodeSplit",
    "FinetuneConfig",
    "GateConfig",
    "LabelSetConflict",
    "ModelIds",
    "PromptPair",
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
    "captions",
    "evaluate_clip",
    "finetune",
    "load_config",
    "make_vlm_backend",
    "prepare",
    "read_card",
]
