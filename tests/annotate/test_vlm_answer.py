"""The VLM answer schema, its parser, the config's validation, cache keys and request messages."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from vlm_fixtures import VALID_ANSWER, random_window

from annotate.vlm import ANSWER_SCHEMA, VlmConfig, cache_key, check_answer, make_vlm_backend, settings_id
from annotate.vlm.answer import answer_from_text, canonical_json
from annotate.vlm.backend import Reply, assess_with_retries
from annotate.vlm.prompt import build_messages, check_windows, decode_frame, fill_images, frame_data_url

VALID_TEXT = json.dumps(VALID_ANSWER)


@pytest.mark.parametrize(
    "text",
    [
        VALID_TEXT,
        f"```json\n{VALID_TEXT}\n```",
        f"Here is my assessment:\n{VALID_TEXT}\nStay safe.",
        f'{{"note": "not the answer"}} then {VALID_TEXT}',
        VALID_TEXT.replace("0.75", "1"),
    ],
)
def test_check_answer_accepts_valid_json_around_noise(text):
    answer, error = check_answer(text)
    assert error is None
    assert answer["description"] == VALID_ANSWER["description"]
    assert answer["action"] == "stop"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no JSON object"),
        ("the road is clear", "no JSON object"),
        ('{"hazard": true, "risk": 0.5', "no JSON object"),
        (VALID_TEXT.replace("true", '"yes"'), "hazard"),
        (VALID_TEXT.replace("0.75", "1.5"), "risk must be within 0..1"),
        (VALID_TEXT.replace("0.75", "-0.1"), "risk must be within 0..1"),
        (VALID_TEXT.replace("0.75", '"0.7"'), "risk must be a number"),
        (VALID_TEXT.replace("0.75", "true"), "risk must be a number"),
        (VALID_TEXT.replace("0.75", "NaN"), "no JSON object"),
        (VALID_TEXT.replace('"stop"', '"swerve"'), "action must be one of"),
        (VALID_TEXT.replace("A pedestrian is crossing the road ahead.", "  "), "description"),
        (VALID_TEXT.replace("A pedestrian", "x" * 400), "description"),
        (VALID_TEXT.replace('"action"', '"extra": 1, "action"'), "unexpected ['extra']"),
        (VALID_TEXT.replace(', "action": "stop"', ""), "missing ['action']"),
        ("[1, 2, 3]", "no JSON object"),
        ('{"a": __import__("os").system("true")}', "no JSON object"),
    ],
)
def test_check_answer_rejects_what_breaks_the_schema(text, why):
    answer, error = check_answer(text)
    assert answer is None and why in error


def test_answer_from_text_canonicalises_valid_answers_and_keeps_raw_of_bad_ones():
    spaced = VALID_TEXT.replace('"risk": 0.75', '"risk":   1').replace("ahead.", "ahead.  ")
    good = answer_from_text(f"```{spaced}```", attempts=2)
    assert good.ok and good.attempts == 2 and good.error is None
    assert good.description == "A pedestrian is crossing the road ahead."
    assert json.loads(good.answer_json) == {**VALID_ANSWER, "risk": 1.0}
    assert good.answer_json == canonical_json(json.loads(good.answer_json))
    bad = answer_from_text("garbage", attempts=3)
    assert (bad.ok, bad.description, bad.answer_json, bad.raw, bad.transient) == (False, None, None, "garbage", False)
    lost = answer_from_text(None, attempts=1, error="timed out", transient=True)
    assert (lost.ok, lost.raw, lost.error, lost.transient) == (False, None, "timed out", True)


def test_schema_matches_the_validator():
    assert ANSWER_SCHEMA["required"] == ["hazard", "risk", "description", "action"]
    assert ANSWER_SCHEMA["additionalProperties"] is False
    assert ANSWER_SCHEMA["properties"]["action"]["enum"] == ["continue", "slow_down", "stop", "yield"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"backend": "llama"}, "backend"),
        ({"backend": "transformers"}, "model"),
        ({"window": -1}, "window"),
        ({"window": "3"}, "window"),
        ({"retries": True}, "retries"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 4}, "max_new_tokens"),
        ({"concurrency": 0}, "concurrency"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"base_url": "localhost:8000"}, "base_url"),
        ({"api_key_env": "MY KEY"}, "api_key_env"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"dtype": "int8"}, "dtype"),
        ({"device": "gpu"}, "device"),
        ({"prompt": " "}, "prompt"),
    ],
)
def test_config_rejects_bad_options_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"VlmConfig\.{field} "):
        VlmConfig(**changes)


def test_config_defaults_and_none_backend():
    config = VlmConfig()
    assert (config.window, config.frames_per_window, config.retries, config.temperature) == (3, 4, 2, 0.0)
    assert make_vlm_backend(config) is None


def test_settings_id_covers_answer_determining_settings_only():
    base = VlmConfig(backend="openai", model="qwen")
    assert settings_id(base) == settings_id(VlmConfig(backend="vllm", model="qwen", concurrency=9, timeout_s=3))
    for changes in ({"model": "other"}, {"prompt": "Other prompt."}, {"temperature": 0.5}, {"seed": 1},
                    {"top_p": 0.9}, {"window": 2}, {"retries": 0}, {"max_new_tokens": 64}, {"max_image_side": 224}):
        assert settings_id(VlmConfig(**{"backend": "openai", "model": "qwen", **changes})) != settings_id(base), changes


def test_cache_key_depends_on_frames_their_order_and_settings():
    window = random_window(np.random.default_rng(0))
    config = VlmConfig(backend="openai", model="qwen")
    key = cache_key(config, window)
    assert len(key) == 64 and key == cache_key(config, list(window))
    assert cache_key(config, window[::-1]) != key
    assert cache_key(config, [window[0] + b"\0", *window[1:]]) != key
    assert cache_key(VlmConfig(backend="openai", model="qwen", seed=5), window) != key
    with pytest.raises(ValueError, match="expected 4 frames"):
        cache_key(config, window[:3])


def test_messages_hold_k_plus_one_image_slots_then_the_prompt_and_retry_reason():
    config = VlmConfig(window=2, prompt="Assess.")
    (message,) = build_messages(config)
    assert [part["type"] for part in message["content"]] == ["image", "image", "image", "text"]
    assert message["content"][-1]["text"] == "Assess."
    retry = build_messages(config, retry_error="action must be one of [...], got '<|image_pad|>'")
    text = retry[0]["content"][-1]["text"]
    assert text.startswith("Assess.\nA previous answer was rejected (action must be one of")
    assert "<|" not in text


def test_frames_become_data_urls_in_order_and_are_downscaled_on_request():
    window = random_window(np.random.default_rng(1), size=(48, 64))
    filled = fill_images(build_messages(VlmConfig()), [frame_data_url(f, None) for f in window])
    urls = [part["image_url"]["url"] for part in filled[0]["content"] if part["type"] == "image_url"]
    assert urls[0].startswith("data:image/png;base64,") and urls[1].startswith("data:image/jpeg;base64,")
    assert [base64.b64decode(url.split(",", 1)[1]) for url in urls] == window
    assert decode_frame(window[0], max_side=32).size == (32, 24)
    assert frame_data_url(window[1], max_side=32).startswith("data:image/png;base64,")
    assert frame_data_url(window[1], max_side=64) == urls[1]
    with pytest.raises(ValueError, match="3 frames for 4 image placeholders"):
        fill_images(build_messages(VlmConfig()), urls[:3])


def test_windows_are_checked_for_length_and_image_bytes():
    config = VlmConfig()
    window = random_window(np.random.default_rng(2))
    check_windows([window, window], config)
    with pytest.raises(ValueError, match="window 1: expected 4 frames"):
        check_windows([window, window[:2]], config)
    with pytest.raises(ValueError, match="window 0, frame 2: expected PNG or JPEG"):
        check_windows([[*window[:2], b"GIF89a...", window[3]]], config)


def test_retry_loop_retries_only_bad_answers_and_stops_at_transport_failures():
    config = VlmConfig(retries=2, prompt="Assess.")
    scripts = {0: [VALID_TEXT], 1: ["bad", "still bad", "bad again"], 2: ["bad", VALID_TEXT], 3: [None]}
    seen: list[tuple[int, str]] = []

    def generate(indices, messages):
        replies = []
        for index, message in zip(indices, messages):
            seen.append((index, message[0]["content"][-1]["text"]))
            text = scripts[index].pop(0)
            replies.append(Reply(text, None if text is not None else "timed out"))
        return replies

    answers = assess_with_retries(4, config, generate)
    assert [(a.ok, a.attempts) for a in answers] == [(True, 1), (False, 3), (True, 2), (False, 1)]
    assert answers[1].raw == "bad again" and answers[3].transient and answers[3].error == "timed out"
    assert [index for index, _ in seen] == [0, 1, 2, 3, 1, 2, 1]
    assert "A previous answer was rejected (no JSON object" in seen[4][1]
