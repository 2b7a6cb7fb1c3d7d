"""Configuration of ``pipeline annotate``: frozen dataclasses, loaded from YAML or TOML plus ``--set`` overrides.

Layers, later ones win: the documented defaults shipped as ``annotate/default_config.yaml``, the user's
file, then ``--set section.key=value`` options, loaded by ``data_schema.settings`` (the loader train uses
too), so a typo or a bad value fails before any model loads, with an error naming the key and its source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from data_schema.settings import ConfigError, apply_override, build, check_layer, merge, read_file, to_mapping

from annotate.gate import GateConfig
from data_schema.reward import RewardConfig
from annotate.static_pathway import ClipConfig
from annotate.vlm.config import VlmConfig

__all__ = ["AnnotateConfig", "ConfigError", "PromptsConfig", "default_mapping", "load_config", "to_mapping"]

DEFAULT_CONFIG_FILE = "default_config.yaml"


@dataclass(frozen=True)
class PromptsConfig:
    """Language goals of both pathways (VLM-RL defaults); their weights are reward parameters
    (``data_schema.reward.RewardConfig``), so ``--reward-from-components`` can change them."""

    positive: str = "The road is clear with no car accidents"
    negative: str = "Two cars have collided with each other on the road"
    positive_dynamic: str = "The road ahead is clear with no obstacles"

    def __post_init__(self) -> None:
        for name in ("positive", "negative", "positive_dynamic"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} must not be empty")


@dataclass(frozen=True)
class AnnotateConfig:
    """Everything ``pipeline annotate`` needs besides the dataset and the label-set name."""

    clip: ClipConfig = field(default_factory=ClipConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    gate: GateConfig = field(default_factory=lambda: GateConfig(weights="yolov8n.pt"))
    #: Gate source for shards without camera frames when ``gate.source`` is camera: scene or none.
    gate_fallback: str = "scene"
    vlm: VlmConfig = field(default_factory=VlmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    #: Extra attempts for a shard task that raised (a worker that died is rescheduled by dask regardless).
    task_retries: int = 2

    def __post_init__(self) -> None:
        if self.gate_fallback not in ("scene", "none"):
            raise ValueError(f"gate_fallback must be 'scene' or 'none', got {self.gate_fallback!r}")
        if not 0 <= self.task_retries <= 10:
            raise ValueError(f"task_retries must be within 0..10, got {self.task_retries}")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> AnnotateConfig:
    """The shipped defaults, overlaid by the file at ``path`` (YAML or TOML), then by ``key=value`` overrides."""
    data = default_mapping()
    if path is not None:
        layer = read_file(path)
        check_layer(AnnotateConfig, layer, str(path))  # unknown keys and wrong types name the file
        data = merge(data, layer)
    for item in overrides:
        data = apply_override(AnnotateConfig, data, item)
    origin = [str(path)] if path is not None else []
    origin += ["--set"] if overrides else []
    return build(AnnotateConfig, data, " + ".join(origin) or DEFAULT_CONFIG_FILE)


def default_mapping() -> dict[str, Any]:
    text = resources.files("annotate").joinpath(DEFAULT_CONFIG_FILE).read_text()
    return yaml.safe_load(text) or {}

