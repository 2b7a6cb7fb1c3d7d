"""The experiment's reward models: given ones as they are, or fine-tuned on the experiment's own dataset.

Without internet there are no CLIP or VLM weights, and random ones make both pathways noise, so by default an
experiment teaches a small BEV CLIP (``pipeline clip finetune``) and a tiny Qwen3-VL (``pipeline vlm
finetune``) its dataset's ground truth, once, into ``OUT/models``; a rerun finds them finished. The result is a
tuple of annotate settings that every label set starts from (a variant's own settings come after it, so the
*hand-built* and *CLG only* presets still switch the VLM off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from annotate import load_config
from annotate.clip_finetune import FinetuneConfig as ClipFinetuneConfig
from annotate.clip_finetune import finetune as finetune_clip
from annotate.clip_finetune import static_pathway_settings
from annotate.vlm.sft import FinetuneConfig as VlmFinetuneConfig
from annotate.vlm.sft import finetune_on_dataset
from data_schema import Dataset
from data_schema.settings import build, overrides
from pipeline.experiment.spec import ExperimentSpec

__all__ = ["reward_models"]

Echo = Callable[[str], None]


def reward_models(spec: ExperimentSpec, out: Path, dataset: str, echo: Echo, progress: bool) -> tuple[str, ...]:
    """The annotate settings that point every label set at the experiment's CLIP and VLM."""
    return (*_clip(spec, out / "models" / "clip", dataset, echo, progress), *_vlm(spec, out / "models" / "vlm", dataset, echo, progress))


def _clip(spec: ExperimentSpec, folder: Path, dataset: str, echo: Echo, progress: bool) -> tuple[str, ...]:
    models = spec.models
    if models.clip_checkpoint:
        echo(f"CLIP: {models.clip_model} with weights {models.clip_checkpoint}, as given")
        return (f"clip.model={models.clip_model}", f"clip.pretrained={models.clip_checkpoint}")
    config = build(ClipFinetuneConfig, overrides(ClipFinetuneConfig, models.clip_finetune, "models.clip_finetune"), "models.clip_finetune")
    echo(f"CLIP: fine-tuning {config.model} on the dataset's captioned frames into {folder} (a rerun reuses it)")
    finetune_clip(dataset, folder, config, progress=progress)
    settings = static_pathway_settings(folder)
    echo("CLIP: " + " ".join(settings))
    return settings


def _vlm(spec: ExperimentSpec, folder: Path, dataset: str, echo: Echo, progress: bool) -> tuple[str, ...]:
    models = spec.models
    if not spec.uses_vlm:
        return ()
    if models.vlm_model:
        echo(f"VLM: {models.vlm_model}, as given")
        return ("vlm.backend=transformers", f"vlm.model={models.vlm_model}")
    config = build(VlmFinetuneConfig, overrides(VlmFinetuneConfig, models.vlm_finetune, "models.vlm_finetune"), "models.vlm_finetune")
    echo(f"VLM: fine-tuning {config.base} on the dataset's gated windows into {folder} (a rerun reuses it)")
    settings = load_config(None, spec.annotate)  # the request and gate corridor every label set uses
    record = finetune_on_dataset(Dataset.open(dataset), folder, config, settings, progress=progress, log=echo)
    echo(f"VLM: held-out loss per answer token {record.held_out_loss_before:.4f} before, {record.held_out_loss_after:.4f} after")
    return ("vlm.backend=transformers", f"vlm.model={folder}", "vlm.device=cpu")
