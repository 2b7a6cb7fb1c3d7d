"""The VLM dynamic pathway: windows of K+1 frames in, validated hazard answers out.

``make_vlm_backend(config)`` picks the engine; every backend shares the prompt, the answer schema,
the malformed-answer retries and the cache keys, so answers are comparable across engines.
"""

from __future__ import annotations

from annotate.vlm.answer import ACTIONS, ANSWER_SCHEMA, VlmAnswer, check_answer
from annotate.vlm.backend import VlmBackend, cache_key, settings_id
from annotate.vlm.config import BACKENDS, DEFAULT_PROMPT, VlmConfig


def make_vlm_backend(config: VlmConfig) -> VlmBackend | None:
    """The backend ``config.backend`` names, ready to assess; None for ``"none"``.

    Raises on configuration errors (missing model, unreachable server, vLLM not installed).
    """
    if config.backend == "none":
        return None
    if config.backend == "transformers":
        from annotate.vlm.transformers_backend import TransformersVlm

        return TransformersVlm(config)
    if config.backend == "openai":
        from annotate.vlm.openai_backend import OpenAiVlm

        return OpenAiVlm(config)
    from annotate.vlm.vllm_backend import VllmVlm

    return VllmVlm(config)


__all__ = [
    "ACTIONS",
    "ANSWER_SCHEMA",
    "BACKENDS",
    "DEFAULT_PROMPT",
    "VlmAnswer",
    "VlmBackend",
    "VlmConfig",
    "cache_key",
    "check_answer",
    "make_vlm_backend",
    "settings_id",
]
