"""Encoding and decoding of the image columns (``bev`` PNG, ``camera`` JPEG).

Image bytes come from shards, which may be damaged: a frame that does not decode is an ``ImageError``, and
readers that know where it came from turn it into a SchemaError naming the shard, column, episode and step
(:func:`naming_frames`), so the shard can be found, and skipped by ``--skip-bad`` readers.
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin

from data_schema.errors import DatasetError, SchemaError

#: The decoder of each image format the schema stores, by its first two bytes.
_OPENERS = {b"\x89P": PngImagePlugin.PngImageFile, b"\xff\xd8": JpegImagePlugin.JpegImageFile}
#: What PIL raises on damaged bytes: unknown format, truncated data, bad chunk CRCs, corrupt zlib streams.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zlib.error, Image.DecompressionBombError)


class ImageError(DatasetError):
    """Bytes that do not decode as a PNG or JPEG image; ``row`` is the frame's position as the caller gave it."""

    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.row = row


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


def decode_image(data: bytes, row: int | None = None) -> np.ndarray:
    """An HxWx3 uint8 RGB array from PNG or JPEG bytes; ``row`` is carried by the ImageError of bad bytes."""
    return np.asarray(decode_pil(data, row))


def decode_pil(data: bytes, row: int | None = None) -> Image.Image:
    """A PIL RGB image from PNG or JPEG bytes (for resizing or drawing before use).

    The two formats of the schema are decoded by their own PIL plugins, not by ``Image.open``: that tries
    every format PIL knows on damaged bytes, and ultralytics patches it to install a HEIF plugin then.
    """
    opener = _OPENERS.get(bytes(data[:2]))
    if opener is None:
        raise ImageError(f"not a decodable PNG/JPEG image (starts with {bytes(data[:8])!r})", row)
    try:
        with opener(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except _DECODE_ERRORS as error:
        raise ImageError(f"not a decodable PNG/JPEG image ({type(error).__name__}: {error})", row) from error


@contextlib.contextmanager
def naming_frames(path: str, column: str | Sequence[str], episode_ids: Sequence[str], steps: Sequence[int]) -> Iterator[None]:
    """ImageErrors of the block whose ``row`` indexes ``episode_ids``/``steps`` (and ``column`` when frames of
    several columns are decoded together) as SchemaErrors naming the shard ``path``, column, episode and step."""
    try:
        yield
    except ImageError as error:
        if error.row is None:
            raise
        row = error.row
        name = column if isinstance(column, str) else list(column)[row]
        raise SchemaError(path, f"episode {list(episode_ids)[row]!r}, step {int(list(steps)[row])}: {error}", column=name) from error


def decode_column(blobs: Sequence[bytes | None], episode_ids: Sequence[str], steps: Sequence[int], path: str, column: str) -> list[np.ndarray | None]:
    """Decoded frames of one image column of shard ``path`` (None stays None); a bad frame is named."""
    with naming_frames(path, column, episode_ids, steps):
        return [decode_image(b, i) if b is not None else None for i, b in enumerate(blobs)]


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)
