"""Word dropout: the fine-tune's dropped words, and texts read as the mean of their dropout views."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from annotate.clip_finetune import RANDOM_INIT_TEXT_VIEWS, TEXT_VIEW_DROPOUT, FinetuneConfig
from annotate.word_dropout import DRAW_VERSION, TextViews, drop_words

#: The first 16 hex digits of the sha256 of draw version 1's copies in ``test_the_draw_of_copies_is_pinned``.
PINNED_DRAW = "0a88c09e4c716454"


def test_word_dropout_keeps_an_ordered_subset_of_the_words_at_the_asked_rate():
    text = "A cyclist is crossing the road 8 m ahead, from the left."
    words = text.split()
    rng = np.random.default_rng(0)
    kept = 0
    for _ in range(2000):
        out = drop_words(text, 0.3, rng, {}).split()  # no word rarer than another: each goes with p
        assert out, "one word always survives"
        it = iter(words)
        assert all(word in it for word in out)  # a subsequence: order kept, nothing invented
        kept += len(out)
    assert kept / (2000 * len(words)) == pytest.approx(0.7, abs=0.02)
    assert drop_words(text, 0.0, rng, {}) == text
    assert all(len(drop_words(text, 0.999, rng, {}).split()) == 1 for _ in range(50))
    with pytest.raises(ValueError, match="word_dropout"):
        FinetuneConfig(word_dropout=1.0)


def test_weighted_word_dropout_drops_common_words_more_and_keeps_the_rarest():
    idf = {"the": 0.1, "road": 1.0, "is": 0.2, "clear": 3.0}
    rng = np.random.default_rng(0)
    outs = [drop_words("The road is clear.", 0.3, rng, idf).split() for _ in range(4000)]
    assert all(out[-1] == "clear." for out in outs)  # the rarest word always stays
    dropped = {w: np.mean([w not in out for out in outs]) for w in ("The", "road", "is")}
    gap = np.array([2.9, 2.0, 2.8])
    np.testing.assert_allclose(list(dropped.values()), 0.3 * gap / np.r_[gap, 0.0].mean(), atol=0.03)
    assert np.mean([4 - len(out) for out in outs]) / 4 == pytest.approx(0.3, abs=0.02)  # p of the words on average


def test_empty_text_has_no_word_to_drop():
    assert drop_words("", 0.5, np.random.default_rng(0), {}) == ""
    assert TextViews(4, 0.5).expand([""]) == [""] * 4


def test_views_are_a_pure_function_of_each_text_whatever_the_batch():
    views = TextViews(16, 0.6)
    texts = ["A cyclist is crossing the road 8 m ahead.", "The lane ahead is empty."]
    together = views.expand(texts)
    assert together == views.expand(texts[:1]) + views.expand(texts[1:])
    assert together == TextViews(16, 0.6).expand(texts)
    assert len(together) == 32 and len(set(together[:16])) > 4  # copies differ from each other
    assert TextViews().expand(texts) == texts


def test_views_drop_each_word_at_the_asked_rate_and_keep_the_order():
    text = "a b c d e f g h i j k l m n o p q r s t"
    views = TextViews(4000, 0.8).expand([text])
    for view in views:
        assert view, "one word always survives"
        it = iter(text.split())
        assert all(word in it for word in view.split())
    assert np.mean([len(view.split()) for view in views]) / 20 == pytest.approx(0.2, abs=0.01)


def test_pool_is_the_normalised_mean_of_each_texts_copies():
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(4, 5))
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    copies = np.array([0, 1, 1, 2, 3, 3])  # two texts of three copies, one copy of the first twice
    pooled = TextViews(3, 0.5).pool(torch.from_numpy(distinct), torch.from_numpy(copies)).numpy()
    for i, rows in enumerate((distinct[[0, 1, 1]], distinct[[2, 3, 3]])):
        mean = rows.mean(axis=0)
        np.testing.assert_allclose(pooled[i], mean / np.linalg.norm(mean), atol=1e-12)
    np.testing.assert_array_equal(TextViews().pool(torch.from_numpy(distinct), torch.tensor([2, 0])).numpy(), distinct[[2, 0]])


def test_copies_depend_on_the_words_as_the_tokenizer_reads_them_not_on_spacing_or_case():
    views = TextViews(32, 0.8)
    copies = views.expand(["The road ahead is clear."])
    assert [c.lower() for c in views.expand(["the  road ahead is CLEAR. "])] == [c.lower() for c in copies]
    assert views.expand(["The road ahead is clear!"]) != copies


def test_the_draw_of_copies_is_pinned():
    """Checkpoints name their weights by file hash, and the copies are part of how they read text: a change to
    the draw must bump ``DRAW_VERSION`` (and this test), never silently re-read an existing checkpoint."""
    copies = TextViews(8, 0.8).expand(["A cyclist is crossing the road 8 m ahead."])
    digest = hashlib.sha256("\n".join(copies).encode()).hexdigest()[:16]
    assert (DRAW_VERSION, digest) == ("1", PINNED_DRAW), copies


def test_metadata_round_trip_and_bad_values_name_the_source():
    views = TextViews(256, 0.8)
    assert TextViews.from_metadata(views.metadata(), "m.safetensors") == views
    assert TextViews.from_metadata(None, "m.safetensors") == TextViews()
    assert TextViews.from_metadata({"format": "pt"}, "m.safetensors") == TextViews()
    with pytest.raises(ValueError, match=r"m\.safetensors: bad text views"):
        TextViews.from_metadata({**views.metadata(), "text_views": "many"}, "m.safetensors")
    with pytest.raises(ValueError, match=r"m\.safetensors: bad text views .*dropout"):
        TextViews.from_metadata({**views.metadata(), "text_view_dropout": "1.5"}, "m.safetensors")
    with pytest.raises(ValueError, match=r"m\.safetensors: text views drawn by version '0'"):
        TextViews.from_metadata({**views.metadata(), "text_view_draw": "0"}, "m.safetensors")


@pytest.mark.parametrize(("count", "dropout", "match"), [(0, 0.0, "count"), (8, 1.0, "dropout"), (8, 0.0, "need a dropout"), (1, 0.5, "as written")])
def test_views_reject_settings_that_mean_nothing(count, dropout, match):
    with pytest.raises(ValueError, match=match):
        TextViews(count, dropout)


def test_a_finetune_reads_through_views_from_random_weights_and_as_written_from_pretrained_ones():
    assert FinetuneConfig().views == TextViews(RANDOM_INIT_TEXT_VIEWS, TEXT_VIEW_DROPOUT)
    assert FinetuneConfig(init="laion2b_s34b_b79k").views == TextViews()
    assert FinetuneConfig(init="laion2b_s34b_b79k", text_views=64).views == TextViews(64, TEXT_VIEW_DROPOUT)
    assert FinetuneConfig(text_views=1).settings()["text_view_dropout"] == 0.0  # one view: the text as written
    with pytest.raises(ValueError, match="text_views / text_view_dropout: .*dropout"):
        FinetuneConfig(text_view_dropout=1.0)
