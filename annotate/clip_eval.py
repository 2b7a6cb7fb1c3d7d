"""How well a CLIP static pathway tells dangerous BEV frames from clear ones, by the simulator's ground truth.

For each pair of language goals, the static reward ``r_static = sim(bev, positive) - sim(bev, negative)``
(alpha = beta = 1) of every evaluated frame is ranked against the hazards of ``data_schema.groundtruth``:
AUROC per hazard kind (``data_schema.ranking``) and per kind of critical road user in the corridor (a prompt
that names only cyclists is judged on cyclist frames as well as on all), the score's quantiles on safe and
dangerous frames, and the
theta range that maps most dangerous frames to semantic 0 and most safe ones to 1. Text-to-image
retrieval (does a frame's lead sentence, its hazard or a clear road, rank first a frame it describes) says
whether the image and text towers agree beyond the hazard prompts.

The prompt pairs include phrasings the caption templates never produce (``UNSEEN_PROMPTS``, built from the
words the fine-tune trains on in new sentences) and phrasings with words the captions never use (``OUT_OF_VOCABULARY``), so
that memorised templates are not mistaken for understanding; a text tower trained from random weights can
know no word the captions did not teach it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from annotate.clip_data import ClipFrames
from annotate.config import PromptsConfig
from annotate.static_pathway import StaticPathway
from data_schema.groundtruth import HAZARD_KINDS
from data_schema.ranking import hazard_auroc

__all__ = [
    "BEV_PROMPTS",
    "ClipEvaluation",
    "DEFAULT_PROMPTS",
    "OUT_OF_VOCABULARY",
    "PromptPair",
    "UNSEEN_PROMPTS",
    "VLM_RL_PROMPTS",
    "evaluate_clip",
]


@dataclass(frozen=True)
class PromptPair:
    """A positive (safe) and a negative (dangerous) language goal of the static pathway, and where it comes from."""

    name: str
    positive: str
    negative: str
    group: str = "user"


_DEFAULTS = PromptsConfig()
#: The label set's defaults (VLM-RL's goals), which speak only of car collisions.
VLM_RL_PROMPTS = PromptPair("vlm-rl", _DEFAULTS.positive, _DEFAULTS.negative, "label-set defaults")
#: The goals ``pipeline demo`` annotates with, in the captions' words: a clear road against the advice every
#: caption of a dangerous frame carries (whatever the hazard, the car must slow down).
BEV_PROMPTS = PromptPair("bev", "The road ahead is clear.", "The car must slow down.", "demo")
#: New sentences over the words a fine-tune trains on (the captions' sentences but the slots it leaves out by
#: default, ``CONTEXT_SLOTS``): no caption template produces them (a test checks both).
UNSEEN_PROMPTS = (
    PromptPair("unseen-1", "The road in front of the car is empty.", "A pedestrian is on the road in front of the car.", "unseen phrasing"),
    PromptPair("unseen-2", "Nothing is ahead of the car.", "The car is close to a pedestrian in its lane.", "unseen phrasing"),
    PromptPair("unseen-3", "The car is on a clear road.", "A cyclist is crossing the road just ahead.", "unseen phrasing"),
    PromptPair("unseen-4", "It is safe for the car to keep its speed.", "The car has to stop for danger.", "unseen phrasing"),
)
#: Words the captions never use: beyond what a text tower trained from random weights on them can know.
OUT_OF_VOCABULARY = PromptPair(
    "out-of-vocabulary", "There is no traffic, the street is free.", "Someone is walking right in front of us.", "out of vocabulary"
)
DEFAULT_PROMPTS = (VLM_RL_PROMPTS, BEV_PROMPTS, *UNSEEN_PROMPTS, OUT_OF_VOCABULARY)
#: Frames per group in the retrieval test (the fine-tuner's default batch size).
RETRIEVAL_GROUP = 64
_QUANTILES = (0.05, 0.5, 0.95)


@dataclass
class ClipEvaluation:
    """Scores and figures of one evaluation; ``summary`` is what the card and ``clip eval --out`` store."""

    summary: dict
    scores: dict[str, np.ndarray]
    hazards: dict[str, np.ndarray]

    def histogram_png(self) -> bytes:
        """One panel per prompt pair: histograms of ``r_static`` on safe frames and on each hazard kind's frames."""
        names = list(self.scores)
        fig = Figure(figsize=(4.2 * min(len(names), 3), 3.0 * -(-len(names) // 3)), layout="constrained")
        axes = np.atleast_1d(fig.subplots(-(-len(names) // 3), min(len(names), 3), squeeze=False)).ravel()
        classes = {"safe": ~self.hazards["any"], **{k: self.hazards[k] for k in HAZARD_KINDS if k != "any"}}
        colours = {"safe": "#4c9a2a", "critical_agent": "#d62728", "vehicle_close": "#1f77b4", "event_soon": "#9467bd"}
        for ax, name in zip(axes, names):
            score = self.scores[name]
            bins = np.linspace(score.min(), score.max(), 41) if score.max() > score.min() else 10
            for label, mask in classes.items():
                if mask.any():
                    ax.hist(score[mask], bins=bins, density=True, histtype="step", linewidth=1.4, color=colours[label], label=f"{label} ({mask.sum()})")
            auroc = self.summary["prompts"][name]["auroc"]["any"]
            ax.set_title(f"{name}: AUROC any {auroc:.3f}" if auroc is not None else name, fontsize=9)
            ax.set_xlabel("r_static = sim(positive) - sim(negative)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
        for ax in axes[len(names) :]:
            ax.set_axis_off()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        return buffer.getvalue()


def evaluate_clip(pathway: StaticPathway, data: ClipFrames, rows: np.ndarray, prompts: tuple[PromptPair, ...] = DEFAULT_PROMPTS, seed: int = 0) -> ClipEvaluation:
    """Evaluate ``pathway`` on ``data``'s frames at ``rows`` (decoded by ``load_frames``)."""
    if data.frames is None:
        raise ValueError("evaluate_clip: the frames are not loaded (annotate.clip_data.load_frames)")
    rows = np.asarray(rows)
    images = pathway.encode_images(list(data.frames[rows]))
    kinds = {kind: flags[rows] for kind, flags in data.hazards.items()}
    texts = pathway.encode_texts([text for pair in prompts for text in (pair.positive, pair.negative)])
    road_users = _road_users(data, rows)
    scores, per_pair = {}, {}
    for i, pair in enumerate(prompts):
        similarity = images @ texts[2 * i : 2 * i + 2].T
        score = (similarity[:, 0] - similarity[:, 1]).astype(np.float64)
        scores[pair.name] = score
        per_pair[pair.name] = {
            "positive": pair.positive, "negative": pair.negative, "group": pair.group,
            "unknown_words": pathway.unknown_words(f"{pair.positive} {pair.negative}"),
            "auroc": hazard_auroc(score, kinds), "r_static": _quantiles(score, kinds["any"]), "theta": _theta(score, kinds["any"]),
        }  # fmt: skip
        if road_users:
            per_pair[pair.name]["auroc_by_road_user"] = {k: v for k, v in hazard_auroc(score, {"any": kinds["any"], **road_users}).items() if k != "any"}
    leads = [data.captions[r][0].text for r in rows]
    summary = {
        "frames": len(rows),
        "hazard_frames": {kind: int(flags.sum()) for kind, flags in kinds.items()},
        "road_user_frames": {kind: int(flags.sum()) for kind, flags in road_users.items()},
        "text_views": {"count": pathway.text_views.count, "dropout": pathway.text_views.dropout},
        "prompts": per_pair,
        "retrieval": _retrieval(images, leads, pathway, seed),
    }
    return ClipEvaluation(summary, scores, kinds)


def _road_users(data: ClipFrames, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per kind of critical road user in the corridor (pedestrian, cyclist, ...), its frames among ``rows``: a
    prompt that names one kind is judged on that kind's frames too."""
    if data.critical_kind is None:
        return {}
    named = data.critical_kind[rows]
    return {kind: named == kind for kind in sorted(set(named.tolist()) - {""})}


def _quantiles(score: np.ndarray, danger: np.ndarray) -> dict[str, dict[str, float] | None]:
    out: dict[str, dict[str, float] | None] = {}
    for label, mask in (("safe", ~danger), ("hazard", danger)):
        out[label] = {f"p{round(q * 100)}": float(np.quantile(score[mask], q)) for q in _QUANTILES} if mask.any() else None
    return out


def _theta(score: np.ndarray, danger: np.ndarray) -> dict[str, float] | None:
    """The theta range that makes the semantic score span [0, 1] on these frames: theta_min at the upper
    quartile of the dangerous frames' score, theta_max at the lower quartile of the safe ones' (three in four
    dangerous frames then ask for standstill, three in four safe ones for the target speed); the medians where
    the quartiles cross; None where even the medians do not rank danger below safety (no theta range makes
    the semantic score mean it)."""
    if not danger.any() or danger.all():
        return None
    for low_q, high_q in ((0.75, 0.25), (0.5, 0.5)):
        low, high = float(np.quantile(score[danger], low_q)), float(np.quantile(score[~danger], high_q))
        if low < high:
            return {"theta_min": low, "theta_max": high}
    return None


def _retrieval(images: np.ndarray, leads: list[str], pathway: StaticPathway, seed: int) -> dict[str, float | int | None]:
    """Text-to-image retrieval within seeded groups of ``RETRIEVAL_GROUP`` frames, by each frame's lead sentence
    (its hazard, or that the road is clear): how often the frame ranked first (top1), or one of the first five
    (top5), is one that sentence describes. Chance is the share of a group's frames that share the sentence."""
    n = len(images)
    if n < 2:
        return {"group": RETRIEVAL_GROUP, "top1": None, "top5": None, "chance_top1": None}
    sentence_ids = np.unique(np.asarray(leads, dtype=object), return_inverse=True)[1].reshape(-1)
    texts = pathway.encode_texts(sorted(set(leads)))[sentence_ids]
    order = np.random.default_rng(seed).permutation(n)
    hits1 = hits5 = chance = total = 0.0
    for start in range(0, n, RETRIEVAL_GROUP):
        group = order[start : start + RETRIEVAL_GROUP]
        if len(group) < 2:
            continue
        ranked = np.argsort(-(texts[group] @ images[group].T), axis=1, kind="stable")  # per caption, frames best first
        same = sentence_ids[group][ranked] == sentence_ids[group][:, None]
        hits1 += same[:, 0].sum()
        hits5 += same[:, :5].any(axis=1).sum()
        chance += (sentence_ids[group][:, None] == sentence_ids[group][None, :]).mean(axis=1).sum()
        total += len(group)
    return {"group": RETRIEVAL_GROUP, "top1": hits1 / total, "top5": hits5 / total, "chance_top1": chance / total}
