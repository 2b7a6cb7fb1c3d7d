"""open_clip's evaluation transform applied to a whole batch of uint8 frames at once.

open_clip preprocesses one PIL image at a time (resize, centre crop, to tensor, normalise); its small
per-image tensor ops cost more than the resize itself. Here the resize and crop produce a uint8 batch and the
conversion and normalisation run once per batch, with the same float32 operations, so the output is
bit-identical to ``torch.stack([preprocess(PIL.Image.fromarray(f)) for f in frames])``.

The resize runs where it is cheapest. On the CPU that is Pillow itself (SIMD fixed-point code). On a GPU
the frames are uploaded as uint8 and resized there by replaying Pillow's fixed-point resampling on tensors
(same filter coefficients, same 22-bit rounding, two separable passes each clipped to uint8; only the output
pixels that survive the centre crop are computed). Configurations neither path covers use open_clip's own
per-image transform.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

#: Pillow's fixed-point precision for 8-bit resampling (src/libImaging/Resample.c).
_PRECISION_BITS = 32 - 8 - 2

_FILTER_SUPPORT = {"bicubic": 2.0, "bilinear": 1.0}


def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


_FILTERS = {"bicubic": _bicubic, "bilinear": _bilinear}


@lru_cache(maxsize=64)
def resample_taps(in_size: int, out_size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's taps for resizing one axis: source indices and int fixed-point weights, each ``(out, k)``.

    Computed in Python floats in Pillow's evaluation order (sequential sums), so every weight rounds to the
    same integer as in Pillow. Unused tap slots point at the first source pixel with weight 0.
    """
    filt = _FILTERS[interpolation]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    inv_filterscale = 1.0 / filterscale
    support = _FILTER_SUPPORT[interpolation] * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    index = np.zeros((out_size, ksize), dtype=np.int64)
    weight = np.zeros((out_size, ksize), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        taps = [filt((x + xmin - center + 0.5) * inv_filterscale) for x in range(xmax)]
        total = 0.0
        for w in taps:
            total += w
        for x, w in enumerate(taps):
            w = w / total if total != 0.0 else w
            weight[xx, x] = int(w * (1 << _PRECISION_BITS) + (-0.5 if w < 0 else 0.5))
            index[xx, x] = xmin + x
        index[xx, xmax:] = xmin
    return index, weight


def _resample(pixels: torch.Tensor, index: np.ndarray, weight: np.ndarray, dim: int) -> torch.Tensor:
    """One resampling pass along ``dim`` (-1 width, -2 height), rounded and clipped like Pillow.

    int32 accumulation as in Pillow, whose coefficient precision is chosen so that it cannot overflow.
    """
    pixels = pixels.to(torch.int32)
    idx = torch.from_numpy(index).to(pixels.device)
    wts = torch.from_numpy(weight).to(device=pixels.device, dtype=torch.int32)
    if dim == -2:
        wts = wts.unsqueeze(-1)
    acc = torch.full((), 1 << (_PRECISION_BITS - 1), dtype=torch.int32, device=pixels.device)
    for tap in range(idx.shape[1]):
        acc = acc + pixels.index_select(dim, idx[:, tap]) * wts.select(1, tap)
    return torch.bitwise_right_shift(acc, _PRECISION_BITS).clamp_(0, 255)


def _shortest_edge_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's output size for ``Resize(size)`` (shorter edge to ``size``, aspect kept, truncated)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


class ClipImageTransform:
    """open_clip's eval preprocessing for batches of equal-sized HxWx3 uint8 RGB frames.

    ``preprocess_cfg`` is ``model.visual.preprocess_cfg``; ``fallback`` is open_clip's PIL transform.
    ``resize_on``: ``pil``, ``tensor`` or ``auto`` (Pillow for CPU devices, tensors otherwise).
    Pillow picks the order of its two passes by a cost heuristic that changes between releases, so for each
    input size the tensor path calibrates the order once against ``fallback`` on a noise frame (which tells
    the orders apart); if neither order reproduces it bit for bit, frames of that size use ``fallback``.
    """

    def __init__(
        self, preprocess_cfg: Mapping, fallback: Callable[[Image.Image], torch.Tensor], resize_on: str = "auto"
    ) -> None:
        if resize_on not in ("auto", "pil", "tensor"):
            raise ValueError(f"resize_on: expected auto, pil or tensor, got {resize_on!r}")
        size = preprocess_cfg.get("size", 224)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.resize_mode = preprocess_cfg.get("resize_mode") or "shortest"
        interpolation = preprocess_cfg.get("interpolation") or "bicubic"
        self.interpolation = "bilinear" if interpolation == "bilinear" else "bicubic"
        mean = preprocess_cfg.get("mean")
        std = preprocess_cfg.get("std")
        self.mean = tuple(mean) if isinstance(mean, (list, tuple)) else (mean,) * 3
        self.std = tuple(std) if isinstance(std, (list, tuple)) else (std,) * 3
        self.fallback = fallback
        self.resize_on = resize_on
        square = self.size[0] == self.size[1]
        self.batched = self.resize_mode == "squash" or (self.resize_mode == "shortest" and square)
        self._orders: dict[tuple[int, int], str | None] = {}

    def __call__(self, frames: np.ndarray, device: torch.device) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 → ``(N, 3, h, w)`` float32 on ``device``, normalised for the model."""
        if not self.batched:
            return self._fallback(frames).to(device)
        if self.resize_on == "pil" or (self.resize_on == "auto" and device.type == "cpu"):
            return self.normalise_resized(self._pil_resize(frames), device)
        order = self.pass_order(frames.shape[1], frames.shape[2])
        if order is None:
            return self._fallback(frames).to(device)
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(device, non_blocking=True)
        return self._normalise(self._tensor_resize(pixels.permute(0, 3, 1, 2), order))

    def resize(self, frames: np.ndarray) -> np.ndarray | None:
        """``(N, h, w, 3)`` uint8: the frames resized and cropped to the model's input, for a caller that keeps
        them (a fine-tuner reading every frame once per epoch) and normalises batches with ``normalise_resized``;
        None where only the per-image fallback applies."""
        return self._pil_resize(frames) if self.batched else None

    def normalise_resized(self, resized: np.ndarray, device: torch.device) -> torch.Tensor:
        """What ``__call__`` returns for the frames ``resize`` gave ``resized``."""
        return self._normalise(torch.from_numpy(np.ascontiguousarray(resized)).to(device).permute(0, 3, 1, 2))

    def pass_order(self, height: int, width: int) -> str | None:
        """``hv`` or ``vh``: the tensor pass order that reproduces Pillow for this input size; None: fallback."""
        if not self.batched:
            return None
        if (height, width) not in self._orders:
            probe = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
            expected = self._fallback(probe)
            pixels = torch.from_numpy(probe).permute(0, 3, 1, 2)
            matching = [
                order
                for order in ("hv", "vh")
                if torch.equal(self._normalise(self._tensor_resize(pixels, order)), expected)
            ]
            if not matching:
                log.warning("batched CLIP preprocessing differs from Pillow on %dx%d frames; using PIL", height, width)
            self._orders[(height, width)] = matching[0] if matching else None
        return self._orders[(height, width)]

    def _geometry(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Resized height and width (before the crop) and the crop's top-left corner, as torchvision computes them."""
        out_h, out_w = self.size
        if self.resize_mode == "squash":
            return out_h, out_w, 0, 0
        new_h, new_w = _shortest_edge_size(height, width, out_h)
        return new_h, new_w, int(round((new_h - out_h) / 2.0)), int(round((new_w - out_w) / 2.0))

    def _pil_resize(self, frames: np.ndarray) -> np.ndarray:
        """Resize and crop each frame with Pillow exactly as torchvision's ``Resize`` + ``CenterCrop`` do."""
        new_h, new_w, top, left = self._geometry(frames.shape[1], frames.shape[2])
        out_h, out_w = self.size
        resample = Image.Resampling.BILINEAR if self.interpolation == "bilinear" else Image.Resampling.BICUBIC
        out = np.empty((len(frames), out_h, out_w, 3), dtype=np.uint8)
        for i, frame in enumerate(frames):
            if (new_h, new_w) != frame.shape[:2]:
                frame = np.asarray(Image.fromarray(frame).resize((new_w, new_h), resample))
            out[i] = frame[top : top + out_h, left : left + out_w]
        return out

    def _tensor_resize(self, pixels: torch.Tensor, order: str) -> torch.Tensor:
        """NCHW uint8 → resized and cropped NCHW (uint8 values), the two passes in ``order``."""
        height, width = pixels.shape[-2:]
        new_h, new_w, top, left = self._geometry(height, width)
        out_h, out_w = self.size
        passes = {"h": (width, new_w, left, out_w, -1), "v": (height, new_h, top, out_h, -2)}
        for axis in order:
            in_size, new_size, start, length, dim = passes[axis]
            if new_size == in_size:
                pixels = pixels.narrow(dim, start, length)
            else:
                index, weight = resample_taps(in_size, new_size, self.interpolation)
                crop = slice(start, start + length)
                pixels = _resample(pixels, index[crop], weight[crop], dim)
        return pixels

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """ToTensor's ``/255`` and Normalize's ``(x - mean) / std``, in float32 like theirs, on a whole batch."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
        return pixels.to(torch.float32).div_(255).sub_(mean).div_(std)

    def _fallback(self, frames: np.ndarray) -> torch.Tensor:
        return torch.stack([self.fallback(Image.fromarray(frame)) for frame in frames])
