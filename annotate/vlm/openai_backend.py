"""An OpenAI-compatible chat-completions server (``vllm serve MODEL``) over HTTP.

Requests run in a bounded thread pool (``concurrency``); connection errors, timeouts, 408/429 and 5xx
are retried with exponential back-off (``max_http_retries``), then recorded as a transient failure of
that window. Other 4xx answers mean the request itself is wrong (model name, key, options): they raise.
Serve the model with room for a whole window, e.g.
``vllm serve Qwen/Qwen3-VL-8B-Instruct --limit-mm-per-prompt '{"image": 4}'`` for K = 3.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from annotate.vlm.answer import ANSWER_SCHEMA, ANSWER_SCHEMA_NAME, VlmAnswer
from annotate.vlm.backend import ConfiguredVlm, Reply, assess_with_retries
from annotate.vlm.config import VlmConfig
from annotate.vlm.prompt import check_windows, fill_images, frame_data_url

#: Longest single back-off, whatever ``Retry-After`` or the exponent say.
MAX_BACKOFF_S = 30.0
_RETRIED_STATUS = frozenset({408, 429})


class VlmServerError(RuntimeError):
    """The server refused the request for a reason retrying cannot fix (bad model name, key, options)."""


def build_request(config: VlmConfig, messages: list[dict[str, Any]], frame_urls: Sequence[str]) -> dict[str, Any]:
    """The chat-completions body: image placeholders filled with the window's data URLs, in order."""
    body: dict[str, Any] = {
        "model": config.model,
        "messages": fill_images(messages, frame_urls),
        "max_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "seed": config.seed,
    }
    if config.structured_output:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": ANSWER_SCHEMA_NAME, "schema": ANSWER_SCHEMA, "strict": True},
        }
    return body


def backoff_delay(config: VlmConfig, retry: int, retry_after: str | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (0-based): the server's Retry-After, else doubling."""
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), MAX_BACKOFF_S)
        except ValueError:
            pass
    return min(config.backoff_s * 2**retry, MAX_BACKOFF_S)


class OpenAiVlm(ConfiguredVlm):
    """Talks to one OpenAI-compatible endpoint; checks at construction that it answers."""

    #: The endpoint's precision is not known here: its answers are kept apart from those of in-process models.
    precision_id = "server"

    def __init__(self, config: VlmConfig) -> None:
        self.config = config
        headers = {}
        if config.api_key_env is not None:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ValueError(f"VlmConfig.api_key_env: environment variable {config.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency),
        )
        self._check_server()

    def assess(self, windows: Sequence[Sequence[bytes]]) -> list[VlmAnswer]:
        check_windows(windows, self.config)
        urls = [[frame_data_url(frame, self.config.max_image_side) for frame in window] for window in windows]

        def generate(indices: Sequence[int], messages: Sequence[list[dict[str, Any]]]) -> list[Reply]:
            bodies = [build_request(self.config, m, urls[i]) for i, m in zip(indices, messages)]
            with ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="vlm-http") as pool:
                return list(pool.map(self._post, bodies))

        return assess_with_retries(len(windows), self.config, generate)

    def close(self) -> None:
        self._client.close()

    def _check_server(self) -> None:
        try:
            response = self._client.get("/models", timeout=min(self.config.timeout_s, 10.0))
        except httpx.HTTPError as error:
            raise ConnectionError(
                f"VlmConfig.base_url: no OpenAI-compatible server answers at {self.config.base_url} ({error!r}); "
                "start one, e.g. `vllm serve MODEL`"
            ) from error
        if response.status_code in (401, 403):
            raise VlmServerError(f"{self.config.base_url}/models: HTTP {response.status_code}: check VlmConfig.api_key_env")

    def _post(self, body: dict[str, Any]) -> Reply:
        error = "no request sent"
        retry_after: str | None = None
        for retry in range(self.config.max_http_retries + 1):
            if retry:
                time.sleep(backoff_delay(self.config, retry - 1, retry_after))
            retry_after = None
            try:
                response = self._client.post("/chat/completions", json=body)
            except httpx.TimeoutException:
                error = f"timed out after {self.config.timeout_s} s"
                continue
            except httpx.TransportError as transport_error:
                error = f"connection failed: {transport_error!r}"
                continue
            if response.status_code == 200:
                return _reply_text(response)
            detail = response.text[:300]
            if response.status_code in _RETRIED_STATUS or response.status_code >= 500:
                error = f"HTTP {response.status_code}: {detail}"
                retry_after = response.headers.get("retry-after")
                continue
            raise VlmServerError(
                f"{self.config.base_url}/chat/completions refused the request for model {self.config.model!r}: "
                f"HTTP {response.status_code}: {detail}"
            )
        return Reply(None, f"{error} (after {self.config.max_http_retries + 1} tries)")


def _reply_text(response: httpx.Response) -> Reply:
    """The first choice's message content; a reply without one is a malformed answer, not a crash."""
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return Reply(response.text[:2000])
    return Reply(content if isinstance(content, str) else "")
