"""In-process vLLM (``vllm.LLM``): batched multi-image chat with JSON-schema structured outputs.

vLLM is imported lazily and is optional (``pip install 'drive-vlm-rl[vllm]'``). The request pieces
(messages, sampling and engine arguments, the structured-output API of a vLLM version) are pure
functions, tested without vLLM; only :class:`VllmVlm` touches the engine.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from packaging.version import Version

from annotate.vlm.answer import ANSWER_SCHEMA, VlmAnswer
from annotate.vlm.backend import ConfiguredVlm, Reply, assess_with_retries
from annotate.vlm.config import VlmConfig
from annotate.vlm.prompt import check_windows, fill_images, frame_data_url

#: First vLLM with ``StructuredOutputsParams`` / ``SamplingParams(structured_outputs=...)`` (PR #22772);
#: the older ``GuidedDecodingParams`` / ``guided_decoding=`` was deprecated then and removed in 0.12.
MIN_VLLM_VERSION = Version("0.10.2")


@dataclass(frozen=True)
class StructuredOutputApi:
    """Where a vLLM version keeps its JSON-schema constraint: ``SamplingParams(keyword=module.cls(json=...))``."""

    module: str
    class_name: str
    keyword: str


def structured_output_api(vllm_version: str) -> StructuredOutputApi:
    """The structured-output API of ``vllm_version``; ImportError naming the upgrade when it is too old."""
    if Version(vllm_version) < MIN_VLLM_VERSION:
        raise ImportError(
            f"vLLM {vllm_version} is too old for the vllm backend: it needs >= {MIN_VLLM_VERSION} "
            "(StructuredOutputsParams); pip install -U 'drive-vlm-rl[vllm]'"
        )
    return StructuredOutputApi("vllm.sampling_params", "StructuredOutputsParams", "structured_outputs")


def engine_kwargs(config: VlmConfig) -> dict[str, Any]:
    """Arguments of ``vllm.LLM``: room for exactly K+1 images per prompt."""
    kwargs: dict[str, Any] = {
        "model": config.model,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "dtype": config.dtype,
        "seed": config.seed,
        "limit_mm_per_prompt": {"image": config.frames_per_window},
    }
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    return kwargs


def sampling_kwargs(config: VlmConfig) -> dict[str, Any]:
    """Arguments of ``vllm.SamplingParams`` except the structured-output constraint."""
    return {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_new_tokens,
        "seed": config.seed,
    }


def structured_outputs_kwargs(config: VlmConfig, api: StructuredOutputApi) -> dict[str, Any]:
    """The ``SamplingParams`` keyword that constrains answers to the schema; nothing when turned off."""
    if not config.structured_output:
        return {}
    params_class = getattr(importlib.import_module(api.module), api.class_name)
    return {api.keyword: params_class(json=ANSWER_SCHEMA)}


def conversations(
    messages: Sequence[list[dict[str, Any]]], frame_urls: Sequence[Sequence[str]]
) -> list[list[dict[str, Any]]]:
    """One OpenAI-format conversation per request for ``LLM.chat``, frames as data URLs in order."""
    return [fill_images(m, urls) for m, urls in zip(messages, frame_urls, strict=True)]


class VllmVlm(ConfiguredVlm):
    """One ``vllm.LLM`` on this process's GPUs; each retry round is one ``LLM.chat`` batch."""

    def __init__(self, config: VlmConfig) -> None:
        try:
            import vllm
        except ImportError as error:
            raise ImportError(
                "VlmConfig.backend 'vllm' needs vLLM installed (pip install 'drive-vlm-rl[vllm]'), "
                "or use backend 'openai' against a `vllm serve` endpoint"
            ) from error
        api = structured_output_api(vllm.__version__)
        self.config = config
        self.precision_id = config.dtype  # "auto": the model's own dtype, fixed by the model the settings name
        self._llm = vllm.LLM(**engine_kwargs(config))
        self._sampling = vllm.SamplingParams(**sampling_kwargs(config), **structured_outputs_kwargs(config, api))
        self._lock = threading.Lock()  # LLM is not thread-safe; dask worker threads share this backend

    def assess(self, windows: Sequence[Sequence[bytes]]) -> list[VlmAnswer]:
        check_windows(windows, self.config)
        urls = [[frame_data_url(frame, self.config.max_image_side) for frame in window] for window in windows]

        def generate(indices: Sequence[int], messages: Sequence[list[dict[str, Any]]]) -> list[Reply]:
            requests = conversations(messages, [urls[i] for i in indices])
            with self._lock:
                outputs = self._llm.chat(requests, self._sampling, use_tqdm=False)
            return [Reply(output.outputs[0].text) for output in outputs]

        return assess_with_retries(len(windows), self.config, generate)

    def close(self) -> None:
        del self._llm
