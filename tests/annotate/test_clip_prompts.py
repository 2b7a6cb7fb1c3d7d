"""The evaluation's prompt pairs: unseen phrasings are new sentences over the words a fine-tune trains on,
and the out-of-vocabulary pair really leaves the captions' vocabulary."""

from __future__ import annotations

import re

from annotate.captions import CONTEXT_SLOTS, KIND_WORDS, TEMPLATES
from annotate.clip_eval import DEFAULT_PROMPTS, OUT_OF_VOCABULARY, UNSEEN_PROMPTS


def _template_patterns() -> list[re.Pattern[str]]:
    patterns = []
    for variants in TEMPLATES.values():
        for variant in variants:
            parts = re.split(r"\{[A-Za-z_]+\}", variant)
            patterns.append(re.compile(".+".join(re.escape(p) for p in parts), re.IGNORECASE))
    return patterns


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_unseen_prompts_are_new_sentences_over_the_trained_words_and_oov_prompts_are_not():
    vocabulary = set().union(*(_words(v) for variants in TEMPLATES.values() for v in variants))
    vocabulary |= set(KIND_WORDS.values()) | {"a", "an", "left", "right"}
    # a word only the left-out slots use never reaches the text tower: to it, that word is out of vocabulary
    trained = set().union(*(_words(v) for slot, variants in TEMPLATES.items() if slot not in CONTEXT_SLOTS for v in variants))
    trained |= set(KIND_WORDS.values()) | {"a", "an", "left", "right"}
    patterns = _template_patterns()
    for pair in DEFAULT_PROMPTS:
        if pair in UNSEEN_PROMPTS or pair == OUT_OF_VOCABULARY:
            for text in (pair.positive, pair.negative):
                assert not any(p.fullmatch(text) for p in patterns), f"{text!r} is a template's sentence"
    for pair in UNSEEN_PROMPTS:
        assert _words(pair.positive) | _words(pair.negative) <= trained, pair.name
    for text in (OUT_OF_VOCABULARY.positive, OUT_OF_VOCABULARY.negative):
        assert _words(text) - vocabulary, text
