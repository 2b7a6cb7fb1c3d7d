"""The backend protocol, the malformed-answer retry loop every backend shares, and answer cache keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from annotate.vlm.answer import ANSWER_SCHEMA, VlmAnswer, answer_from_text
from annotate.vlm.config import VlmConfig
from annotate.vlm.prompt import build_messages

#: Bumped when the request layout (messages, retry wording) changes, so cached answers are not reused.
REQUEST_FORMAT_VERSION = 1


class VlmBackend(Protocol):
    """Assesses windows of K+1 encoded frames (oldest first) with one VLM."""

    config: VlmConfig

    @property
    def model_id(self) -> str: ...

    def settings_id(self) -> str:
        """Hash of everything but the frames that determines an answer: see :func:`settings_id`."""
        ...

    @property
    def precision_id(self) -> str:
        """The precision the model runs at here (``fp32``, ``bf16``, a vLLM dtype, or ``server``: whatever the
        endpoint runs). Answers at one precision differ from another's, so the answer cache and the label-set
        spec are keyed on it, beside :func:`settings_id`."""
        ...

    def assess(self, windows: Sequence[Sequence[bytes]]) -> list[VlmAnswer]:
        """One answer per window, in order. Bad answers come back with ok=False; bad frames raise ValueError."""
        ...

    def close(self) -> None:
        """Release the model or connections."""
        ...


class ConfiguredVlm:
    """What every backend derives from its config alone: the model id and the settings hash of its answers."""

    config: VlmConfig

    @property
    def model_id(self) -> str:
        return self.config.model

    def settings_id(self) -> str:
        return settings_id(self.config)


@dataclass(frozen=True)
class Reply:
    """One request's outcome: the model's text, or (text None) why the transport gave none."""

    text: str | None
    error: str | None = None


#: Sends requests (window index, messages) and returns one Reply per request, in order.
Generate = Callable[[Sequence[int], Sequence[list[dict[str, Any]]]], list[Reply]]


def settings_id(config: VlmConfig) -> str:
    """sha256 over model, prompt, sampling, window, retries and the answer schema.

    Transport settings (backend kind, URL, concurrency, batch size, device) are left out on purpose:
    the same model asked the same way gives an answer that any backend may reuse.
    """
    spec = {
        "request_format": REQUEST_FORMAT_VERSION,
        "answer_schema": ANSWER_SCHEMA,
        "model": config.model,
        "prompt": config.prompt,
        "window": config.window,
        "max_new_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "seed": config.seed,
        "retries": config.retries,
        "max_image_side": config.max_image_side,
        "structured_output": config.structured_output,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def cache_key(config: VlmConfig, frames: Sequence[bytes]) -> str:
    """sha256 of the settings and the window's frame bytes in order: the key of one cached answer."""
    if len(frames) != config.frames_per_window:
        raise ValueError(f"cache_key: expected {config.frames_per_window} frames, got {len(frames)}")
    digest = hashlib.sha256(settings_id(config).encode())
    for frame in frames:
        digest.update(hashlib.sha256(bytes(frame)).digest())
    return digest.hexdigest()


def assess_with_retries(n_windows: int, config: VlmConfig, generate: Generate) -> list[VlmAnswer]:
    """Ask for every window, then ask again (up to ``config.retries`` times) for those answered badly.

    Each round is one batch, so batched engines stay busy. A transport failure ends that window's
    attempts at once: it is recorded (``transient``), not retried here, since the backend has already
    retried the transport.
    """
    results: list[VlmAnswer | None] = [None] * n_windows
    errors: dict[int, str] = {}
    pending = list(range(n_windows))
    last_attempt = config.retries + 1
    for attempt in range(1, last_attempt + 1):
        if not pending:
            break
        messages = [build_messages(config, errors.get(i)) for i in pending]
        replies = generate(pending, messages)
        if len(replies) != len(pending):
            raise RuntimeError(f"backend returned {len(replies)} replies for {len(pending)} requests")
        retry: list[int] = []
        for index, reply in zip(pending, replies):
            if reply.text is None:
                results[index] = answer_from_text(None, attempt, reply.error, transient=True)
                continue
            answer = answer_from_text(reply.text, attempt)
            if answer.ok or attempt == last_attempt:
                results[index] = answer
            else:
                errors[index] = answer.error or "invalid answer"
                retry.append(index)
        pending = retry
    done = [answer for answer in results if answer is not None]
    if len(done) != n_windows:
        raise RuntimeError(f"{n_windows - len(done)} windows were left without an answer")
    return done
