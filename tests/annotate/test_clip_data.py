"""The fine-tune's data: the episode split, one caption sentence per sample, hazard oversampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotate.captions import Sentence
from annotate.clip_data import ClipFrames, EpisodeSplit, SentencePool
from annotate.clip_finetune import FinetuneConfig, epoch_order


def test_split_holds_out_a_share_of_each_policys_episodes_by_id_alone():
    episodes = np.array([f"run-a-{i:06d}" for i in range(10)] + [f"run-b-{i:06d}" for i in range(5)] + ["run-c-000000"])
    policies = np.array(["expert"] * 10 + ["random"] * 5 + ["lonely"])
    rows = np.repeat(np.arange(len(episodes)), 3)  # three frames per episode
    held = EpisodeSplit(0.2).heldout(episodes[rows], policies[rows])
    by_episode = dict(zip(episodes[rows], held))
    assert sum(by_episode[e] for e in episodes[:10]) == 2 and sum(by_episode[e] for e in episodes[10:15]) == 1
    assert not by_episode["run-c-000000"]  # a policy's only episode stays in training
    assert all(len(set(held[rows == i])) == 1 for i in range(len(episodes)))  # whole episodes
    shuffled = np.random.default_rng(0).permutation(len(rows))
    again = EpisodeSplit(0.2).heldout(episodes[rows][shuffled], policies[rows][shuffled])
    np.testing.assert_array_equal(again, held[shuffled])  # a function of the ids, not of row order
    assert not np.array_equal(EpisodeSplit(0.2, seed=1).heldout(episodes[rows], policies[rows]), held)
    with pytest.raises(ValueError, match="heldout_share"):
        EpisodeSplit(1.0)


def fake_tokenizer(texts: list[str]) -> torch.Tensor:
    """Each text as its length and first letter: enough to tell the pool's sentences apart."""
    return torch.tensor([[len(t), ord(t[0])] for t in texts])


def test_sentence_pool_draws_only_the_rows_own_sentences_without_the_left_out_slots():
    captions = [
        [Sentence("clear", "The road ahead is clear.", "The road ahead is clear."), Sentence("drive_on", "It is safe to drive on.", "It is safe to drive on."),
         Sentence("driving", "The car drives 20 km/h.", "The car drives 20 km/h.")],
        [Sentence("agent_crossing", "A cyclist crosses from the left.", "A cyclist crosses from the right."), Sentence("slow_down", "The car has to brake.", "The car has to brake.")],
    ]
    pool = SentencePool.of(captions, fake_tokenizer, leave_out=("driving",))
    assert pool.tokens.shape[0] == 5 and pool.count.tolist() == [2, 2]
    allowed = {0: {(24, ord("T")), (23, ord("I"))}, 1: {(32, ord("A")), (21, ord("T"))}}
    rng = np.random.default_rng(0)
    seen = {0: set(), 1: set()}
    for _ in range(50):
        rows = np.array([0, 1, 1, 0])
        for row, token in zip(rows, pool.draw(rows, rng).tolist()):
            assert tuple(token) in allowed[row]
            seen[row].add(tuple(token))
    assert seen == allowed  # every sentence gets drawn
    mirrored = pool.draw(np.array([1] * 40), rng, np.ones(40, bool)).tolist()
    assert {tuple(t) for t in mirrored} == {(33, ord("A")), (21, ord("T"))}  # "...from the right." and the side-free one
    with pytest.raises(ValueError, match="without a sentence"):
        SentencePool.of(captions, fake_tokenizer, leave_out=("agent_crossing", "slow_down"))


def test_epoch_order_oversamples_hazard_frames_from_the_training_episodes_only():
    danger = np.zeros(200, bool)
    danger[::10] = True  # 10 % of frames
    heldout = np.zeros(200, bool)
    heldout[150:] = True
    data = ClipFrames("ds", [], np.array(["e"] * 200), np.arange(200), [[]] * 200, {"any": danger}, heldout)
    order = epoch_order(data, FinetuneConfig(hazard_share=0.4), epoch=0)
    assert len(order) == 150 and not heldout[order].any()
    assert danger[order].mean() == pytest.approx(0.4, abs=0.01)
    np.testing.assert_array_equal(order, epoch_order(data, FinetuneConfig(hazard_share=0.4), epoch=0))
    assert not np.array_equal(order, epoch_order(data, FinetuneConfig(hazard_share=0.4), epoch=1))
    natural = epoch_order(data, FinetuneConfig(hazard_share=None), epoch=0)
    assert sorted(natural.tolist()) == list(range(150))
