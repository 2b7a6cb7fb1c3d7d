"""Encoding and decoding of the image columns (``bev`` PNG, ``camera`` JPEG)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an HxWx3 uint8 RGB array (lossless: BEV frames are re-scored bit-exactly).

    Written directly (no row filters, zlib level 1) because it runs once per collected step: about 3x faster
    than Pillow's encoder and no larger on flat-coloured BEV frames.
    """
    rgb = _check_rgb(rgb)
    height, width, _ = rgb.shape
    scanlines = np.zeros((height, width * 3 + 1), dtype=np.uint8)  # a leading 0 per row: filter type None
    scanlines[:, 1:] = rgb.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 1)) + _chunk(b"IEND", b"")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_check_rgb(rgb)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """An HxWx3 uint8 RGB array from PNG or JPEG bytes."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def decode_pil(data: bytes) -> Image.Image:
    """A PIL RGB image from PNG or JPEG bytes (for resizing or drawing before use)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)
