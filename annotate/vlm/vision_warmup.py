"""Warm-up of a VLM's vision tower on the windows' answers, before supervised fine-tuning.

Trained only through the answer tokens, the tiny model's randomly initialised vision tower never learns to
tell one BEV frame from another: a 600-step fine-tune has the same held-out loss with another window's frames
as with its own (``bench/vlm_frames.py``). The warm-up gives the tower a direct signal: a linear probe reads
a window's merged image tokens (all K+1 frames, concatenated) and is trained, with the tower, to predict the
fields of the window's answer: hazard, risk, action, and the kind and distance of the road user its
description names. (A probe on the tokens' mean, what untrained attention reads, left the tower unable to
carry the hazard: held-out accuracy below the majority class.) The fine-tune then trains the language model on the tower frozen, so the features it
learns to read are not washed out by the weak signal that reaches them through the text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from annotate.vlm.answer import ACTIONS
from annotate.vlm.prompt import decode_frame
from annotate.vlm.sft_data import GatedWindow
from annotate.vlm.targets import AGENT_NOUNS

__all__ = ["ProbeScores", "probe_summary", "probe_targets", "vision_tower", "warm_up_vision"]

#: Kinds the probe tells apart: no road user named ("the road ahead is clear"), then the description's nouns.
_KINDS = ("none", *AGENT_NOUNS)
#: Distances beyond this many metres count as this far: the risk rule stops caring at 20 m.
_FAR_M = 30.0
_DISTANCE = re.compile(r"(\d+) m (?:ahead|behind)")


@dataclass(frozen=True)
class ProbeScores:
    """How well the warmed-up tower's probe reads held-out windows: what the language model can build on."""

    windows: int
    hazard_accuracy: float
    hazard_majority: float
    risk_correlation: float
    seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def probe_summary(scores: dict[str, Any]) -> str:
    """One line on a warm-up's probe scores (``ProbeScores.as_dict``, as a fine-tune record keeps them)."""
    return (
        f"vision warm-up ({scores['seconds']:.0f} s): its probe reads held-out hazard with accuracy {scores['hazard_accuracy']:.3f} "
        f"(majority {scores['hazard_majority']:.3f}), risk with correlation {scores['risk_correlation']:.3f}"
    )


def probe_targets(answer: dict[str, Any]) -> tuple[float, float, int, int, float]:
    """``(hazard, risk, action index, kind index, distance / 30 m)`` of an answer; the kind is the road user the
    description names first (its subject), the distance its "N m ahead/behind" (30 m when it names none)."""
    description = answer["description"].lower()
    named = [(found.start(), i) for i, noun in enumerate(_KINDS[1:], 1) if (found := re.search(rf"\b{noun}\b", description))]
    kind = min(named)[1] if named else 0
    found = _DISTANCE.search(description)
    distance = min(float(found.group(1)), _FAR_M) if found else _FAR_M
    return float(answer["hazard"]), float(answer["risk"]), ACTIONS.index(answer["action"]), kind, distance / _FAR_M


def vision_tower(model: Any) -> nn.Module:
    """The vision encoder of a Qwen-VL style model (``model.model.visual``)."""
    tower = getattr(getattr(model, "model", None), "visual", None)
    if tower is None:
        raise ValueError(f"{type(model).__name__} has no vision tower at model.visual; the vision warm-up is for Qwen-VL models")
    return tower


def warm_up_vision(
    model: Any,
    processor: Any,
    train: Sequence[GatedWindow],
    held_out: Sequence[GatedWindow],
    steps: int,
    batch_size: int,
    seed: int,
    max_side: int | None,
    learning_rate: float = 1e-3,
    progress: bool = True,
) -> ProbeScores:
    """Train ``model``'s vision tower with a linear probe on ``train`` for ``steps``, then freeze the tower and
    score the probe on ``held_out``. Batches are a seeded function of the step, so a rerun gives the same tower."""
    tower = vision_tower(model)
    device = next(tower.parameters()).device
    inputs = _WindowPixels(processor, max_side, device)
    width = inputs.tokens(train[0]) * model.config.text_config.hidden_size
    probe = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 + len(ACTIONS) + len(_KINDS) + 1))
    with torch.no_grad():  # seeded here, not by the global generator: the same run gives the same tower
        probe[1].weight.copy_(torch.randn(probe[1].weight.shape, generator=torch.Generator().manual_seed(seed)) * width**-0.5)
        probe[1].bias.zero_()
    probe = probe.to(device)
    parameters = [*tower.parameters(), *probe.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    tower.train()
    started = time.perf_counter()
    for step in tqdm(range(steps), desc="vision warm-up", unit="step", disable=not progress):
        picked = np.random.default_rng([seed, step]).choice(len(train), min(batch_size, len(train)), replace=False)
        windows = [train[int(i)] for i in picked]
        loss = _probe_loss(probe(inputs.features(model, windows)), _targets(windows, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
    tower.eval()
    tower.requires_grad_(False)
    return _score(model, probe, inputs, held_out, batch_size, time.perf_counter() - started)


class _WindowPixels:
    """The image-processor inputs of windows, made per batch (all windows' pixels would not fit in memory)."""

    def __init__(self, processor: Any, max_side: int | None, device: torch.device) -> None:
        self.image_processor = processor.image_processor
        self.max_side = max_side
        self.device = device

    def tokens(self, window: GatedWindow) -> int:
        """Merged image tokens of one window: what the probe reads."""
        _, grid = self._pixels([window])
        return int(grid.prod(-1).sum()) // getattr(self.image_processor, "merge_size", 2) ** 2

    def features(self, model: Any, windows: Sequence[GatedWindow]) -> torch.Tensor:
        """``(windows, tokens * hidden)``: each window's merged image tokens, frames in order, concatenated."""
        pixels, grid = self._pixels(windows)
        if not bool((grid == grid[0]).all()):
            raise ValueError("the vision warm-up needs frames of one size: windows gave different numbers of image tokens")
        tokens = torch.cat(model.model.get_image_features(pixel_values=pixels, image_grid_thw=grid).pooler_output)
        return tokens.reshape(len(windows), -1)

    def _pixels(self, windows: Sequence[GatedWindow]) -> tuple[torch.Tensor, torch.Tensor]:
        frames = [decode_frame(frame, self.max_side) for window in windows for frame in window.frames]
        batch = self.image_processor(images=frames, return_tensors="pt")
        return batch["pixel_values"].to(self.device), batch["image_grid_thw"].to(self.device)


def _targets(windows: Sequence[GatedWindow], device: torch.device) -> torch.Tensor:
    return torch.tensor([probe_targets(window.target) for window in windows], dtype=torch.float32, device=device)


def _probe_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hazard and action/kind by cross-entropy, risk and distance (both in 0..1) by squared error on a sigmoid;
    the squared errors are weighted 4x to stand beside the cross-entropies."""
    actions = 2 + len(ACTIONS)
    return (
        F.binary_cross_entropy_with_logits(out[:, 0], target[:, 0])
        + 4 * F.mse_loss(torch.sigmoid(out[:, 1]), target[:, 1])
        + F.cross_entropy(out[:, 2:actions], target[:, 2].long())
        + F.cross_entropy(out[:, actions:-1], target[:, 3].long())
        + 4 * F.mse_loss(torch.sigmoid(out[:, -1]), target[:, 4])
    )


def _score(model: Any, probe: nn.Module, inputs: _WindowPixels, held_out: Sequence[GatedWindow], batch_size: int, seconds: float) -> ProbeScores:
    outs = []
    with torch.inference_mode():
        for start in range(0, len(held_out), batch_size):
            outs.append(probe(inputs.features(model, held_out[start : start + batch_size]))[:, :2].cpu())
    out = torch.cat(outs).numpy()
    truth = np.array([probe_targets(window.target)[:2] for window in held_out])
    predicted_risk = 1 / (1 + np.exp(-out[:, 1]))
    correlation = float(np.corrcoef(predicted_risk, truth[:, 1])[0, 1]) if truth[:, 1].std() > 0 and predicted_risk.std() > 0 else float("nan")
    share = float(truth[:, 0].mean())
    return ProbeScores(
        windows=len(held_out),
        hazard_accuracy=float(((out[:, 0] > 0) == (truth[:, 0] > 0.5)).mean()),
        hazard_majority=max(share, 1 - share),
        risk_correlation=correlation,
        seconds=seconds,
    )

