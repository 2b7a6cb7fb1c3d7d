"""The vllm backend's request building (no vLLM needed) and, where vLLM and a GPU exist, a real run."""

from __future__ import annotations

import base64
import importlib.util
import json

import numpy as np
import pytest
from vlm_fixtures import TEST_PROMPT, random_window, tiny_qwen3_vl  # noqa: F401

from annotate.vlm import ANSWER_SCHEMA, VlmConfig, make_vlm_backend
from annotate.vlm.prompt import build_messages, frame_data_url
from annotate.vlm.vllm_backend import (
    StructuredOutputApi,
    conversations,
    engine_kwargs,
    sampling_kwargs,
    structured_output_api,
    structured_outputs_kwargs,
)


def _vllm_gpu_missing() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'drive-vlm-rl[vllm]')"
    import torch

    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and none is available"
    return None


def test_conversations_carry_k_plus_one_frames_in_order_then_the_prompt():
    config = VlmConfig(backend="vllm", model="Qwen/Qwen3-VL-8B-Instruct", window=3, prompt=TEST_PROMPT)
    rng = np.random.default_rng(0)
    windows = [random_window(rng) for _ in range(2)]
    urls = [[frame_data_url(f, None) for f in w] for w in windows]
    requests = conversations([build_messages(config), build_messages(config, "bad")], urls)
    assert len(requests) == 2
    for request, window in zip(requests, windows):
        (message,) = request
        parts = message["content"]
        assert message["role"] == "user" and [p["type"] for p in parts] == ["image_url"] * 4 + ["text"]
        assert [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts[:4]] == window
    assert requests[0][0]["content"][-1]["text"] == TEST_PROMPT
    assert "A previous answer was rejected (bad)" in requests[1][0]["content"][-1]["text"]


def test_engine_and_sampling_arguments_follow_the_config():
    config = VlmConfig(backend="vllm", model="/models/qwen3-vl", window=2, tensor_parallel_size=2,
                       gpu_memory_utilization=0.8, max_model_len=8192, dtype="bfloat16", seed=3,
                       temperature=0.2, top_p=0.9, max_new_tokens=128)
    assert engine_kwargs(config) == {
        "model": "/models/qwen3-vl", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8, "dtype": "bfloat16",
        "seed": 3, "limit_mm_per_prompt": {"image": 3}, "max_model_len": 8192,
    }
    assert "max_model_len" not in engine_kwargs(VlmConfig(backend="vllm", model="m", max_model_len=None))
    assert sampling_kwargs(config) == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 128, "seed": 3}


@pytest.mark.parametrize("version", ["0.10.2", "0.11.0", "0.12.0", "0.13.1", "0.12.1.dev12+g0123abc"])
def test_current_vllm_versions_use_structured_outputs(version):
    assert structured_output_api(version) == StructuredOutputApi(
        "vllm.sampling_params", "StructuredOutputsParams", "structured_outputs"
    )


@pytest.mark.parametrize("version", ["0.10.1.1", "0.9.2", "0.10.2rc1"])
def test_vllm_before_structured_outputs_is_refused_with_the_upgrade(version):
    with pytest.raises(ImportError, match=r"too old.*>= 0\.10\.2"):
        structured_output_api(version)


def test_structured_output_keyword_builds_the_schema_constraint():
    # types.SimpleNamespace takes json= like StructuredOutputsParams: it shows the keyword and class wiring.
    api = StructuredOutputApi("types", "SimpleNamespace", "structured_outputs")
    kwargs = structured_outputs_kwargs(VlmConfig(backend="vllm", model="m"), api)
    assert list(kwargs) == ["structured_outputs"] and kwargs["structured_outputs"].json == ANSWER_SCHEMA
    assert structured_outputs_kwargs(VlmConfig(backend="vllm", model="m", structured_output=False), api) == {}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_vllm_is_a_clear_configuration_error():
    with pytest.raises(ImportError, match="needs vLLM installed"):
        make_vlm_backend(VlmConfig(backend="vllm", model="m"))


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(_vllm_gpu_missing() is not None, reason=str(_vllm_gpu_missing()))
def test_vllm_answers_follow_the_schema(tiny_qwen3_vl):  # noqa: F811
    backend = make_vlm_backend(VlmConfig(backend="vllm", model=str(tiny_qwen3_vl), prompt=TEST_PROMPT,
                                         max_model_len=2048, gpu_memory_utilization=0.3, max_new_tokens=96))
    answers = backend.assess([random_window(np.random.default_rng(4)) for _ in range(2)])
    # Structured outputs hold even a random model to the schema: its text starts as the JSON object
    # (an unconstrained random model emits arbitrary tokens), and is valid unless it ran out of tokens.
    for answer in answers:
        assert answer.raw is not None and answer.raw.lstrip().startswith("{")
        if answer.ok:
            assert set(json.loads(answer.answer_json)) == set(ANSWER_SCHEMA["required"])
