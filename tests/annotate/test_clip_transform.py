"""The batched CLIP preprocessing is bit-identical to open_clip's own per-image PIL transform."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from annotate.clip_transform import ClipImageTransform, resample_taps

SIZES = [(128, 128), (224, 224), (96, 300), (300, 400), (37, 53), (300, 224), (500, 20), (3, 301)]


def frames(height: int, width: int, seed: int) -> np.ndarray:
    """Noise plus flat blocks and hard edges: every resampling tap and both clip limits matter."""
    rng = np.random.default_rng(seed)
    batch = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    batch[1, : height // 2] = 255
    batch[1, height // 2 :, : width // 3] = 0
    batch[2] = np.where(rng.random((height, width, 1)) < 0.5, 0, 255).astype(np.uint8)
    return batch


@pytest.mark.parametrize(
    ("resize_on", "resize_mode"),
    [("pil", "shortest"), ("pil", "squash"), ("tensor", "shortest"), ("tensor", "squash"), ("auto", "longest")],
)
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_batched_transform_equals_open_clip_pil_transform(resize_on, resize_mode, interpolation):
    cfg = {
        "size": 224,
        "mode": "RGB",
        "mean": open_clip.OPENAI_DATASET_MEAN,
        "std": open_clip.OPENAI_DATASET_STD,
        "interpolation": interpolation,
        "resize_mode": resize_mode,
        "fill_color": 0,
    }
    reference = open_clip.image_transform(
        224, is_train=False, mean=cfg["mean"], std=cfg["std"], resize_mode=resize_mode, interpolation=interpolation
    )
    transform = ClipImageTransform(cfg, reference, resize_on=resize_on)
    assert transform.batched == (resize_mode != "longest")
    for seed, (height, width) in enumerate(SIZES):
        batch = frames(height, width, seed)
        ours = transform(batch, torch.device("cpu"))
        expected = torch.stack([reference(Image.fromarray(frame)) for frame in batch])
        assert ours.dtype == torch.float32 and ours.shape == expected.shape == (3, 3, 224, 224)
        if resize_on == "tensor":  # the tensor resize itself produced it, not the per-image fallback
            assert (transform.pass_order(height, width) is not None) == transform.batched
        torch.testing.assert_close(ours, expected, rtol=0, atol=0, msg=f"{resize_on} {resize_mode} {height}x{width}")


def test_non_square_target_uses_open_clip_fallback():
    reference = open_clip.image_transform((192, 256), is_train=False)
    transform = ClipImageTransform({"size": (192, 256), "mean": 0.5, "std": 0.5}, reference)
    assert not transform.batched
    batch = frames(100, 160, 3)
    expected = torch.stack([reference(Image.fromarray(frame)) for frame in batch])
    torch.testing.assert_close(transform(batch, torch.device("cpu")), expected, rtol=0, atol=0)


@pytest.mark.parametrize(("in_size", "out_size"), [(128, 224), (1280, 224), (224, 224), (7, 3)])
def test_resample_taps_are_normalised_fixed_point_weights(in_size, out_size):
    index, weight = resample_taps(in_size, out_size, "bicubic")
    assert index.shape == weight.shape and index.shape[0] == out_size
    assert index.min() >= 0 and index.max() < in_size
    # each output pixel's weights sum to 1.0 in 22-bit fixed point, up to per-tap rounding
    np.testing.assert_allclose(weight.sum(axis=1), 1 << 22, atol=weight.shape[1])
