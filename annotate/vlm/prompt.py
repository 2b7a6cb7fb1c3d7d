"""Requests to the VLM in a backend-neutral form: the chat messages and the window's frames.

Messages follow the OpenAI chat layout, except that an image part is a bare ``{"type": "image"}``
placeholder: each backend fills the K+1 frames in, in order, in the form its engine takes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from PIL import Image

from annotate.vlm.config import VlmConfig
from data_schema.images import decode_pil

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
#: Longest validation error quoted back to the model in a retry.
_MAX_QUOTED_ERROR = 200


def build_messages(config: VlmConfig, retry_error: str | None = None) -> list[dict[str, Any]]:
    """The chat for one window: K+1 image placeholders then the prompt; a retry adds why the last answer failed.

    The failed answer itself is not echoed back: it may hold strings that a tokenizer reads as control
    tokens (``<|image_pad|>``), and the reason is enough to change the model's input for the retry.
    """
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(config.frames_per_window)]
    text = config.prompt
    if retry_error is not None:
        text += (
            f"\nA previous answer was rejected ({_quote(retry_error)}). "
            "Reply with only the JSON object, exactly as specified."
        )
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def fill_images(messages: list[dict[str, Any]], frame_urls: Sequence[str]) -> list[dict[str, Any]]:
    """OpenAI-format messages: the image placeholders replaced, in order, by the frames' data URLs."""
    if sum(_count_images(message) for message in messages) != len(frame_urls):
        raise ValueError(f"{len(frame_urls)} frames for {sum(map(_count_images, messages))} image placeholders")
    urls = iter(frame_urls)
    filled = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": next(urls)}} if part["type"] == "image" else part
                for part in content
            ]
        filled.append({**message, "content": content})
    return filled


def image_mime(frame: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` from the magic bytes, None for anything else."""
    if frame.startswith(_PNG_MAGIC):
        return "image/png"
    if frame.startswith(_JPEG_MAGIC):
        return "image/jpeg"
    return None


def check_windows(windows: Sequence[Sequence[bytes]], config: VlmConfig) -> None:
    """Raise ValueError naming the window and frame that is not K+1 PNG/JPEG images."""
    for w, window in enumerate(windows):
        if len(window) != config.frames_per_window:
            raise ValueError(
                f"window {w}: expected {config.frames_per_window} frames (VlmConfig.window = {config.window}, "
                f"oldest first), got {len(window)}"
            )
        for f, frame in enumerate(window):
            if not isinstance(frame, (bytes, bytearray, memoryview)) or image_mime(bytes(frame)) is None:
                raise ValueError(f"window {w}, frame {f}: expected PNG or JPEG bytes")


def decode_frame(frame: bytes, max_side: int | None) -> Image.Image:
    """An RGB image, downscaled (aspect kept) so its longest side is at most ``max_side``."""
    rgb = decode_pil(bytes(frame))
    if max_side is not None and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb


def frame_data_url(frame: bytes, max_side: int | None) -> str:
    """A ``data:`` URL of the frame; re-encoded as PNG only when it has to be downscaled."""
    frame = bytes(frame)
    mime = image_mime(frame)
    if max_side is not None:
        with Image.open(io.BytesIO(frame)) as original:
            too_large = max(original.size) > max_side
        if too_large:
            buffer = io.BytesIO()
            decode_frame(frame, max_side).save(buffer, format="PNG")
            frame, mime = buffer.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(frame).decode('ascii')}"


def _count_images(message: dict[str, Any]) -> int:
    content = message["content"]
    return sum(part["type"] == "image" for part in content) if isinstance(content, list) else 0


def _quote(error: str) -> str:
    """The error, shortened, with ``<|`` broken up so it cannot become a control token."""
    return error[:_MAX_QUOTED_ERROR].replace("<|", "< |").replace("\n", " ")
