"""The fine-tune's data: the episode split, one caption sentence per sample, word dropout, hazard oversampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotate.captions import Sentence
from annotate.clip_data import ClipFrames, EpisodeSplit, SentencePool
from annotate.clip_finetune import STATE_FILE, FinetuneConfig, _load_state, _state_identity, epoch_order
from data_schema.errors import DatasetError


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


def test_sentence_ids_are_those_of_the_rows_captions_in_either_orientation():
    captions = [
        [Sentence("clear", "The road ahead is clear.", "The road ahead is clear.")],
        [Sentence("agent_crossing", "A cyclist crosses from the left.", "A cyclist crosses from the right."), Sentence("slow_down", "The car has to brake.", "The car has to brake.")],
        [Sentence("left_road", "The car has left the road.", "The car has left the road.")],
    ]
    pool = SentencePool.of(captions, fake_tokenizer, leave_out=())
    ids = {text: i for i, text in enumerate(pool.texts)}
    named = lambda *texts: [ids[t] for t in sorted(texts, key=ids.get)]  # noqa: E731
    assert pool.sentence_ids(np.array([1])).tolist() == named("A cyclist crosses from the left.", "A cyclist crosses from the right.", "The car has to brake.")
    assert pool.sentence_ids(np.array([2, 0, 2])).tolist() == named("The car has left the road.", "The road ahead is clear.")


def test_pool_idf_counts_sentences_as_the_captions_use_them():
    captions = [[Sentence("clear", "The road is clear.", "The road is clear.")]] * 3 + [[Sentence("slow_down", "The car must brake.", "The car must brake.")]]
    idf = SentencePool.of(captions, fake_tokenizer, leave_out=()).idf
    assert idf["the"] == 0.0 and idf["clear"] == pytest.approx(np.log(4 / 3)) and idf["brake"] == pytest.approx(np.log(4))


def test_pool_draws_word_dropped_sentences_through_its_tokenizer():
    captions = [[Sentence("clear", "The road ahead is clear.", "The road ahead is clear.")]]
    seen: list[str] = []
    pool = SentencePool.of(captions, lambda texts: seen.extend(texts) or fake_tokenizer(texts), leave_out=())
    seen.clear()
    rng = np.random.default_rng(1)
    tokens = pool.draw(np.zeros(200, dtype=int), rng, word_dropout=0.5)
    assert tokens.shape == (200, 2) and len(seen) == 200
    assert set(seen) > {"The road ahead is clear."} and all(set(t.split()) <= {"The", "road", "ahead", "is", "clear."} for t in seen)
    seen.clear()
    assert pool.draw(np.zeros(5, dtype=int), rng).tolist() == [[24, ord("T")]] * 5 and not seen  # no dropout: the stored tokens


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


def test_an_interrupted_run_from_before_word_dropout_resumes_as_trained_without_it(tmp_path):
    data = ClipFrames("ds", ["s"], np.array(["e"] * 4), np.arange(4), [[]] * 4, {"any": np.array([True, False, False, False])}, np.array([False, False, True, True]))
    identity = _state_identity(FinetuneConfig(word_dropout=0.0), data)
    del identity["settings"]["word_dropout"]
    torch.save({"identity": identity, "history": {"train_loss": [1.0]}}, tmp_path / STATE_FILE)
    assert _load_state(tmp_path, FinetuneConfig(word_dropout=0.0), data)["history"] == {"train_loss": [1.0]}
    with pytest.raises(DatasetError, match="other settings"):
        _load_state(tmp_path, FinetuneConfig(word_dropout=0.5), data)
