"""The experiment spec: what ``pipeline experiment SPEC.yaml`` compares, as frozen dataclasses.

A spec names one raw dataset (collected from scenarios and behaviours, or given), the reward models the
label sets use, the reward *variants* to compare (each with and without the collision penalty), the
algorithm and its budget, the seeds, and how each policy is evaluated. Everything is checked when the spec
is loaded (``data_schema.settings`` types every key, the checks below the rest), so a typo in a variant
or an algorithm fails before any work starts, naming the key.

Variants are presets of label-set settings (``pipeline annotate --set`` items), after DriveVLM-RL's table:

* ``hand-built``: no semantics, desired speed = target (``reward.pathways=[]``);
* ``clg-only``: VLM-RL's reward as published: the static pathway alone, its penalty events (speeding and
  leaving the lane centre too) and its unsigned stability term;
* ``full``: DriveVLM-RL's static + dynamic pathways (the VLM describes gated frames);

a spec may add its own variants, each based on one of these with more settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotate import load_config
from data_schema.settings import ConfigError, build, read_file, to_mapping
from train import ALGORITHMS

__all__ = [
    "AlgorithmSpec", "CollectSpec", "DatasetSpec", "EvaluationSpec", "ExperimentSpec", "ModelsSpec", "PRESETS", "VariantSpec",
    "load_spec",
]  # fmt: skip

#: Label-set settings of each preset variant, on top of the spec's shared ``annotate`` settings.
PRESETS: dict[str, tuple[str, ...]] = {
    "hand-built": ("reward.pathways=[]", "vlm.backend=none"),
    "clg-only": (
        "reward.pathways=[static]",
        "reward.penalize=[collision, off_road, stuck, speeding, off_center]",
        "reward.stability_signed=false",
        "vlm.backend=none",
    ),
    "full": ("reward.pathways=[static, dynamic]",),
}


@dataclass(frozen=True)
class CollectSpec:
    """One ``pipeline collect`` run into the experiment's dataset."""

    policy: str = "expert"
    episodes: int = 10
    seed: int = 0
    scenarios: tuple[str, ...] = ("free",)
    max_steps: int = 300

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.max_steps < 1 or self.seed < 0:
            raise ValueError("collect: episodes and max_steps must be >= 1 and seed >= 0")
        if not self.scenarios:
            raise ValueError("collect: scenarios must name at least one scenario")


@dataclass(frozen=True)
class DatasetSpec:
    """The shared raw dataset: an existing one (``path``), or collected into ``OUT/dataset`` by ``collect``."""

    path: str = ""
    collect: tuple[CollectSpec, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.path) == bool(self.collect):
            raise ValueError("dataset: give either path (an existing dataset) or collect (runs that build one)")


@dataclass(frozen=True)
class ModelsSpec:
    """The reward models. By default the experiment fine-tunes a BEV CLIP and a tiny VLM on its own dataset's
    ground truth (``clip_finetune`` / ``vlm_finetune``: settings of ``pipeline clip finetune`` / ``pipeline vlm
    finetune`` as ``KEY=VALUE`` items); ``clip_checkpoint`` (with its ``clip_model``) or ``vlm_model`` (a model
    directory) use given weights instead."""

    clip_checkpoint: str = ""
    clip_model: str = ""
    clip_finetune: tuple[str, ...] = ()
    vlm_model: str = ""
    vlm_finetune: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.clip_checkpoint) != bool(self.clip_model):
            raise ValueError("models: clip_checkpoint and clip_model go together (the architecture of the given weights)")
        if self.clip_checkpoint and self.clip_finetune or self.vlm_model and self.vlm_finetune:
            raise ValueError("models: give a model or fine-tune settings for it, not both")


@dataclass(frozen=True)
class VariantSpec:
    """A reward variant: a preset plus more label-set settings."""

    name: str
    preset: str = ""
    annotate: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"variants: {self.name!r}: unknown preset {self.preset!r}; presets are {sorted(PRESETS)}")

    @property
    def settings(self) -> tuple[str, ...]:
        return PRESETS[self.preset] + self.annotate


@dataclass(frozen=True)
class AlgorithmSpec:
    """How each cell trains. Offline (default): ``name`` (any of ``train.ALGORITHMS``) for ``steps`` gradient
    updates on the shared dataset's label set. Online (``online: true``, SAC only): ``steps`` environment steps
    in rounds, each cell collecting into its own dataset, annotated in the background with its variant's
    settings (``pipeline train`` without ``--offline``); the rounds are the evaluation checkpoints."""

    name: str = "td3+bc"
    steps: int = 2000
    online: bool = False
    train: tuple[str, ...] = ()  # more TrainConfig settings, as `pipeline train --set` items

    def __post_init__(self) -> None:
        if self.name not in ALGORITHMS:
            raise ValueError(f"algorithm.name: unknown algorithm {self.name!r}; known: {list(ALGORITHMS)}")
        if self.online and self.name != "sac":
            raise ValueError(f"algorithm.name: online rounds train sac (it samples its own exploration), not {self.name!r}")
        if self.steps < 1:
            raise ValueError("algorithm.steps must be >= 1")


@dataclass(frozen=True)
class EvaluationSpec:
    """Held-out evaluation of every policy: episodes per scenario, seeds apart from the dataset's."""

    scenarios: tuple[str, ...] = ("free",)
    episodes: int = 5
    seed: int = 100_000
    max_steps: int = 300
    checkpoints: int = 2  # evaluations along training (the learning curve); the last is the final policy

    def __post_init__(self) -> None:
        if not self.scenarios or self.episodes < 1 or self.max_steps < 1 or self.checkpoints < 1:
            raise ValueError("evaluation: scenarios must be named; episodes, max_steps and checkpoints must be >= 1")


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    dataset: DatasetSpec
    variants: tuple[VariantSpec, ...]
    models: ModelsSpec = field(default_factory=ModelsSpec)
    annotate: tuple[str, ...] = ()  # label-set settings every variant shares (gate, CLIP, VLM sampling, ...)
    penalties: tuple[float, ...] = (-10.0, 0.0)
    algorithm: AlgorithmSpec = field(default_factory=AlgorithmSpec)
    seeds: tuple[int, ...] = (0, 1, 2)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    workers: int = 2  # dask worker processes, one cell each at a time

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"variants: need at least one, with distinct names; got {names}")
        if not self.penalties or any(p > 0 for p in self.penalties) or len(set(self.penalties)) != len(self.penalties):
            raise ValueError(f"penalties: distinct values <= 0 (0 is the no-penalty ablation); got {list(self.penalties)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds: distinct values >= 0; got {list(self.seeds)}")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")

    @property
    def uses_vlm(self) -> bool:
        """Whether any variant's reward has the dynamic pathway (else no VLM is tuned or run)."""
        return any("dynamic" in load_config(None, [*self.annotate, *v.settings]).reward.pathways for v in self.variants)

    def digest(self) -> str:
        """A content hash of the spec: a rerun with another spec in the same --out is refused."""
        return hashlib.sha256(json.dumps(to_mapping(self), sort_keys=True).encode()).hexdigest()[:16]


def load_spec(path: str | Path) -> ExperimentSpec:
    """The spec in a YAML or TOML file; variants are written as preset names or ``{name, preset, annotate}``."""
    data = read_file(path)
    variants = data.get("variants")
    if isinstance(variants, list):
        data = {**data, "variants": [_variant(v, str(path)) for v in variants]}
    return build(ExperimentSpec, data, str(path))


def _variant(entry: Any, source: str) -> Any:
    if isinstance(entry, str):
        return {"name": entry, "preset": entry}
    if isinstance(entry, dict) and "name" in entry:
        return {"preset": entry["name"], **entry}
    raise ConfigError(f"{source}: variants: each entry is a preset name or a mapping with a name, got {entry!r}")
