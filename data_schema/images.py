"""Encoding and decoding of the image columns (``bev`` PNG, ``camera`` JPEG)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an HxWx3 uint8 RGB array (lossless: BEV frames are re-scored bit-exactly)."""
    buffer = io.BytesIO()
    Image.fromarray(_check_rgb(rgb)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_check_rgb(rgb)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """An HxWx3 uint8 RGB array from PNG or JPEG bytes."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def decode_pil(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)
