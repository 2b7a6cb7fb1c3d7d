"""The transformers backend on a tiny random (and a tiny taught) Qwen3-VL, on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from vlm_fixtures import TEST_PROMPT, VALID_ANSWER, random_window, tiny_qwen3_vl, tiny_qwen3_vl_answering  # noqa: F401

from annotate.vlm import VlmConfig, make_vlm_backend


def _config(model, **changes) -> VlmConfig:
    return VlmConfig(**{"backend": "transformers", "model": str(model), "prompt": TEST_PROMPT,
                        "max_new_tokens": 16, "device": "cpu", **changes})


def test_random_model_answers_are_retried_then_recorded_not_raised(tiny_qwen3_vl):
    backend = make_vlm_backend(_config(tiny_qwen3_vl, retries=2, batch_size=2, structured_output=False))
    rng = np.random.default_rng(0)
    windows = [random_window(rng) for _ in range(3)]
    answers = backend.assess(windows)
    assert len(answers) == 3
    for answer in answers:
        assert not answer.ok and answer.attempts == 3
        assert answer.description is None and answer.answer_json is None
        assert isinstance(answer.raw, str) and answer.raw and answer.error and not answer.transient
    # Greedy decoding: the same window gets the same text again (what makes answers cacheable).
    again = backend.assess(windows[:1])
    assert again[0].raw == answers[0].raw
    assert backend.model_id == str(tiny_qwen3_vl) and len(backend.settings_id()) == 64


def test_constrained_decoding_makes_the_random_model_answer_valid_json(tiny_qwen3_vl):
    rng = np.random.default_rng(4)
    windows = [random_window(rng) for _ in range(3)]
    free = make_vlm_backend(_config(tiny_qwen3_vl, retries=0, max_new_tokens=400, structured_output=False)).assess(windows)
    assert [a.ok for a in free] == [False, False, False]
    answers = make_vlm_backend(_config(tiny_qwen3_vl, retries=0, max_new_tokens=400, batch_size=2)).assess(windows)
    for answer in answers:
        assert answer.ok and answer.attempts == 1 and answer.error is None
        # compact, in the schema's key order: the form the grammar allows and the fine-tune teaches
        assert answer.raw.startswith('{"hazard":') and json.loads(answer.raw).keys() == json.loads(answer.answer_json).keys()
        assert answer.description == json.loads(answer.raw)["description"]


def test_bad_frames_and_missing_model_raise(tiny_qwen3_vl, tmp_path):
    backend = make_vlm_backend(_config(tiny_qwen3_vl, retries=0))
    window = random_window(np.random.default_rng(1))
    with pytest.raises(ValueError, match="window 0: expected 4 frames"):
        backend.assess([window[:3]])
    with pytest.raises(FileNotFoundError, match="not a saved model directory"):
        make_vlm_backend(_config(tmp_path / "missing"))


@pytest.mark.slow
def test_taught_model_answer_is_parsed_on_the_first_attempt(tiny_qwen3_vl_answering):
    backend = make_vlm_backend(_config(tiny_qwen3_vl_answering, max_new_tokens=48, window=3))
    rng = np.random.default_rng(2)
    answers = backend.assess([random_window(rng) for _ in range(3)])
    for answer in answers:
        assert answer.ok and answer.attempts == 1 and answer.error is None
        assert json.loads(answer.answer_json) == VALID_ANSWER
        assert answer.description == VALID_ANSWER["description"]
        assert json.loads(answer.raw) == VALID_ANSWER
