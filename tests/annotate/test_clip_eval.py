"""evaluate_clip on planted embeddings: the theta range and text-to-image retrieval say what the scores hold."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.captions import Sentence
from annotate.clip_data import ClipFrames
from annotate.clip_eval import PromptPair, evaluate_clip
from annotate.word_dropout import TextViews

CLEAR, CROSSING = "The road ahead is clear.", "A pedestrian is crossing the lane in front of the car."
PAIR = PromptPair("planted", CLEAR, CROSSING)


class PlantedPathway:
    """A static pathway whose frames are row numbers and whose embeddings are planted: clear frames near one
    axis, dangerous ones near the other, the two prompts on those axes. It knows only the prompts' words and,
    as a CLIP fine-tuned from random weights does, leaves the others out of a text."""

    def __init__(self, images: np.ndarray):
        self.images = images
        self.texts = {CLEAR: np.array([1.0, 0.0]), CROSSING: np.array([0.0, 1.0])}
        self.vocabulary = set(f"{CLEAR} {CROSSING}".split())
        self.text_views = TextViews()

    def encode_images(self, frames: list) -> np.ndarray:
        return self.images[np.asarray(frames, dtype=int)]

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.texts[" ".join(w for w in t.split() if w in self.vocabulary)] for t in texts])

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in dict.fromkeys(text.split()) if w not in self.vocabulary]


def frames(danger: np.ndarray) -> ClipFrames:
    captions = [[Sentence("agent_crossing" if d else "clear", CROSSING if d else CLEAR, CROSSING if d else CLEAR)] for d in danger]
    n = len(danger)
    return ClipFrames("planted", [], np.array(["e"] * n), np.arange(n), captions, {"any": danger}, np.ones(n, bool), np.arange(n))


def planted(separation: float, n: int = 256, seed: int = 0) -> tuple[PlantedPathway, np.ndarray]:
    rng = np.random.default_rng(seed)
    danger = rng.random(n) < 0.25
    axis = np.where(danger[:, None], [0.0, 1.0], [1.0, 0.0])
    images = separation * axis + rng.normal(0, 0.3, (n, 2))
    return PlantedPathway(images), danger


def test_theta_spans_the_quartiles_of_each_class_and_retrieval_finds_the_frames_a_sentence_describes():
    pathway, danger = planted(separation=3.0)
    result = evaluate_clip(pathway, frames(danger), np.arange(len(danger)), (PAIR,))
    score = result.scores["planted"]
    summary = result.summary["prompts"]["planted"]
    assert summary["auroc"]["any"] == 1.0
    assert summary["theta"] == {"theta_min": pytest.approx(np.quantile(score[danger], 0.75)), "theta_max": pytest.approx(np.quantile(score[~danger], 0.25))}
    assert summary["unknown_words"] == []
    retrieval = result.summary["retrieval"]
    assert retrieval["top1"] == 1.0 and retrieval["top5"] == 1.0
    share = danger.mean()
    assert retrieval["chance_top1"] == pytest.approx(share**2 + (1 - share) ** 2, abs=0.05)  # a sentence's share of its group


def test_the_summary_names_the_words_a_pathway_leaves_out_and_scores_the_rest():
    pathway, danger = planted(separation=3.0)
    padded = PromptPair("padded", "Surely The road ahead is clear.", "A pedestrian suddenly is crossing the lane in front of the car.")
    result = evaluate_clip(pathway, frames(danger), np.arange(len(danger)), (PAIR, padded))
    assert result.summary["prompts"]["padded"]["unknown_words"] == ["Surely", "suddenly"]
    np.testing.assert_array_equal(result.scores["padded"], result.scores["planted"])


def test_theta_falls_back_to_the_medians_and_is_none_where_danger_does_not_rank_lower():
    pathway, danger = planted(separation=0.25, seed=1)
    result = evaluate_clip(pathway, frames(danger), np.arange(len(danger)), (PAIR,))
    score = result.scores["planted"]
    assert np.quantile(score[danger], 0.75) > np.quantile(score[~danger], 0.25)  # the quartiles cross
    assert result.summary["prompts"]["planted"]["theta"] == {"theta_min": pytest.approx(np.median(score[danger])), "theta_max": pytest.approx(np.median(score[~danger]))}

    swapped = evaluate_clip(pathway, frames(danger), np.arange(len(danger)), (PromptPair("swapped", CROSSING, CLEAR),))
    assert swapped.summary["prompts"]["swapped"]["theta"] is None
    assert swapped.summary["prompts"]["swapped"]["auroc"]["any"] < 0.5



def test_auroc_by_road_user_judges_a_prompt_on_the_kind_it_names():
    """Planted: the score ranks pedestrian frames below safe ones, cyclist frames among them. Per road user the
    AUROC says so (against an independent count of ordered pairs); over all dangerous frames it is in between."""
    rng = np.random.default_rng(3)
    kind = rng.choice(np.array(["", "pedestrian", "cyclist"]), size=300, p=[0.6, 0.25, 0.15])
    danger = kind != ""
    score = rng.normal(0, 1, 300) - 2.0 * (kind == "pedestrian")
    pathway = PlantedPathway(np.stack([score, np.zeros(300)], axis=1))
    data = frames(danger)
    data.critical_kind = kind
    result = evaluate_clip(pathway, data, np.arange(300), (PAIR,))
    by_user = result.summary["prompts"]["planted"]["auroc_by_road_user"]
    assert set(by_user) == {"pedestrian", "cyclist"}
    assert result.summary["road_user_frames"] == {"cyclist": int((kind == "cyclist").sum()), "pedestrian": int((kind == "pedestrian").sum())}

    def ordered_pairs(named: str) -> float:  # share of (dangerous, safe) pairs where the dangerous frame scores lower
        low, safe = score[kind == named], score[~danger]
        return float(((low[:, None] < safe[None, :]) + 0.5 * (low[:, None] == safe[None, :])).mean())

    assert by_user["pedestrian"] == pytest.approx(ordered_pairs("pedestrian")) and by_user["pedestrian"] > 0.85
    assert by_user["cyclist"] == pytest.approx(ordered_pairs("cyclist")) and abs(by_user["cyclist"] - 0.5) < 0.15
    assert by_user["cyclist"] < result.summary["prompts"]["planted"]["auroc"]["any"] < by_user["pedestrian"]
