"""Settings of the VLM dynamic pathway, validated when built so a bad option fails before any model loads."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

BACKENDS = ("none", "transformers", "openai", "vllm")
DTYPES = ("auto", "float32", "float16", "bfloat16")
MAX_WINDOW = 16

DEFAULT_PROMPT = (
    "You are the safety monitor of an autonomous car. The images are consecutive frames from the car, "
    "oldest first; the last image is the current moment. Judge whether anything in the scene (pedestrians, "
    "cyclists, vehicles, obstacles) puts the car at risk in the next few seconds. Answer with one JSON object "
    'and nothing else: {"hazard": true or false, "risk": a number from 0 (safe) to 1 (collision imminent), '
    '"description": one sentence describing the main risk, or the clear road when there is none, '
    '"action": one of "continue", "slow_down", "stop", "yield"}.'
)

_TYPES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "int | None": (int, type(None)),
    "str | None": (str, type(None)),
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class VlmConfig:
    """What the VLM is, what it is asked, how it samples, and how each backend reaches it.

    ``window`` is K: every request carries K+1 frames, oldest first, ending at the gated frame.
    ``retries`` counts extra attempts after a malformed answer. Transport options (``base_url`` ...
    ``backoff_s``) apply to ``openai``; ``tensor_parallel_size`` ... ``dtype`` to ``vllm``;
    ``device`` and ``batch_size`` to ``transformers``.
    """

    backend: str = "none"
    model: str = ""
    prompt: str = DEFAULT_PROMPT
    window: int = 3
    max_new_tokens: int = 160
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    retries: int = 2
    #: Frames larger than this (longest side, pixels) are downscaled before they are sent; None keeps them.
    max_image_side: int | None = None
    # transformers
    device: str = "auto"
    batch_size: int = 8
    # openai (an OpenAI-compatible server such as `vllm serve`)
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = None
    #: Constrain decoding to the answer's JSON schema: xgrammar in ``transformers``, structured outputs in
    #: ``vllm``, ``response_format`` for ``openai`` (turn off for servers that reject it).
    structured_output: bool = True
    concurrency: int = 4
    timeout_s: float = 120.0
    max_http_retries: int = 3
    backoff_s: float = 0.5
    # vllm (in-process)
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = 16384
    dtype: str = "auto"

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            allowed = _TYPES[field.type]
            _check(
                isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool)),
                field.name,
                f"must be of type {field.type}, got {value!r}",
            )
        _check(self.backend in BACKENDS, "backend", f"must be one of {list(BACKENDS)}, got {self.backend!r}")
        _check(self.backend == "none" or bool(self.model.strip()), "model", f"is required for backend {self.backend!r}")
        _check(bool(self.prompt.strip()), "prompt", "must not be empty")
        _check(0 <= self.window <= MAX_WINDOW, "window", f"must be within 0..{MAX_WINDOW}, got {self.window}")
        _check(self.max_new_tokens >= 16, "max_new_tokens", f"must be at least 16, got {self.max_new_tokens}")
        _check(self.temperature >= 0.0, "temperature", f"must be >= 0, got {self.temperature}")
        _check(0.0 < self.top_p <= 1.0, "top_p", f"must be within (0, 1], got {self.top_p}")
        _check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        _check(0 <= self.retries <= 10, "retries", f"must be within 0..10, got {self.retries}")
        _check(
            self.max_image_side is None or self.max_image_side >= 32,
            "max_image_side",
            f"must be None or at least 32, got {self.max_image_side}",
        )
        _check(_DEVICE.fullmatch(self.device) is not None, "device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(
            self.base_url.startswith(("http://", "https://")),
            "base_url",
            f"must start with http:// or https://, got {self.base_url!r}",
        )
        _check(
            self.api_key_env is None or _ENV_NAME.fullmatch(self.api_key_env) is not None,
            "api_key_env",
            f"must name an environment variable, got {self.api_key_env!r}",
        )
        _check(self.concurrency >= 1, "concurrency", f"must be >= 1, got {self.concurrency}")
        _check(self.timeout_s > 0, "timeout_s", f"must be > 0, got {self.timeout_s}")
        _check(0 <= self.max_http_retries <= 20, "max_http_retries", f"must be within 0..20, got {self.max_http_retries}")
        _check(self.backoff_s >= 0, "backoff_s", f"must be >= 0, got {self.backoff_s}")
        _check(self.tensor_parallel_size >= 1, "tensor_parallel_size", f"must be >= 1, got {self.tensor_parallel_size}")
        _check(
            0.0 < self.gpu_memory_utilization <= 1.0,
            "gpu_memory_utilization",
            f"must be within (0, 1], got {self.gpu_memory_utilization}",
        )
        _check(
            self.max_model_len is None or self.max_model_len >= 256,
            "max_model_len",
            f"must be None or at least 256, got {self.max_model_len}",
        )
        _check(self.dtype in DTYPES, "dtype", f"must be one of {list(DTYPES)}, got {self.dtype!r}")

    @property
    def frames_per_window(self) -> int:
        return self.window + 1


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"VlmConfig.{field} {message}")
