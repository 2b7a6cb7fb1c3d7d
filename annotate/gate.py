"""The gate: which frames are safety-critical enough to send to the VLM.

Two sources. ``camera`` runs an ultralytics YOLO detector on the front camera and fires on a critical class
(person, bicycle, motorcycle) above a confidence and box-size threshold. ``scene`` reads the simulator's
ground-truth agents and fires when a critical agent's footprint reaches into a corridor ahead of the ego
(``data_schema.groundtruth``); that same corridor test is the ground truth a camera gate is scored against.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_schema.groundtruth import Corridor

from annotate.model_weights import cache_dir, existing_file, file_digest, resolve_device

__all__ = ["CameraGate", "Detection", "GATE_SOURCES", "GateConfig"]

GATE_SOURCES = ("camera", "scene", "none")


@dataclass(frozen=True)
class GateConfig:
    """Gate settings; every field enters the label-set hash.

    Camera source: ``weights`` is a local ultralytics ``.pt`` file (never downloaded at run time), ``classes``
    are names in that model, ``min_box_px`` is the least box height in pixels of the camera frame.
    Scene source: agents of ``critical_kinds`` whose footprint reaches into the rectangle ``0 <= x <=
    corridor_length``, ``|y| <= corridor_half_width`` of the ego frame (x forward, y left, metres).
    """

    source: str = "camera"
    classes: tuple[str, ...] = ("person", "bicycle", "motorcycle")
    confidence: float = 0.35
    min_box_px: float = 12.0
    weights: str | None = None
    imgsz: int = 640
    batch_size: int = 16
    device: str = "auto"
    critical_kinds: tuple[str, ...] = ("pedestrian", "cyclist", "motorcycle")
    corridor_length: float = 25.0
    corridor_half_width: float = 1.75  # the ego's lane (3.5 m wide): critical means in our path, not on the kerb

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "critical_kinds", tuple(self.critical_kinds))
        if self.source not in GATE_SOURCES:
            raise ValueError(f"gate.source: '{self.source}' is not one of {', '.join(GATE_SOURCES)}")
        if self.source == "camera" and not self.weights:
            raise ValueError("gate.weights: the camera gate needs a YOLO weights file (e.g. --yolo-weights yolov8n.pt)")
        if not self.classes or not all(isinstance(c, str) and c for c in self.classes):
            raise ValueError(f"gate.classes: expected non-empty class names, got {self.classes!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"gate.confidence: expected a value in [0, 1], got {self.confidence}")
        if self.min_box_px < 0:
            raise ValueError(f"gate.min_box_px: expected >= 0, got {self.min_box_px}")
        if self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"gate.imgsz: expected a multiple of 32 (YOLO stride), got {self.imgsz}")
        if self.batch_size < 1:
            raise ValueError(f"gate.batch_size: expected a positive integer, got {self.batch_size}")
        try:
            self.corridor
        except ValueError as error:
            raise ValueError(f"gate.critical_kinds / corridor_length / corridor_half_width: {error}") from None

    @property
    def corridor(self) -> Corridor:
        """The scene source's corridor, also the ground truth a camera gate is scored against."""
        return Corridor(self.corridor_length, self.corridor_half_width, self.critical_kinds)


@dataclass(frozen=True)
class Detection:
    """One detected object; ``box`` is (x0, y0, x1, y1) in pixels of the gated image (``DETECTION_TYPE``)."""

    cls: str
    confidence: float
    box: tuple[float, float, float, float]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_record(self) -> dict[str, Any]:
        """The row value for the ``detections`` label column."""
        return {"cls": self.cls, "confidence": float(self.confidence), "box": [float(v) for v in self.box]}


class CameraGate:
    """An ultralytics YOLO detector loaded once, run on batches of camera frames."""

    def __init__(self, config: GateConfig) -> None:
        if config.source != "camera":
            raise ValueError(f"CameraGate needs gate.source 'camera', got '{config.source}'")
        self.config = config
        path = existing_file(config.weights, "YOLO weights", "gate.weights / --yolo-weights")
        self.weights_id = file_digest(path)
        device = resolve_device(config.device)
        self._device = "cpu" if device.type == "cpu" else str(device)
        self._precision = {"quantize": 16} if device.type == "cuda" else {}
        YOLO = _import_yolo()
        # Ultralytics checkpoints are pickled modules: load only weight files the user chose, never dataset bytes.
        self._model = YOLO(str(path), task="detect")
        names: dict[int, str] = self._model.names
        by_name = {name: index for index, name in names.items()}
        unknown = [c for c in config.classes if c not in by_name]
        if unknown:
            raise ValueError(
                f"gate.classes: {unknown} not in the classes of {path.name} ({', '.join(names.values())})"
            )
        self._class_ids = [by_name[c] for c in config.classes]
        self._names = names

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Critical-class detections above the confidence threshold, per HxWx3 uint8 RGB frame."""
        frames = [_check_frame(image, i) for i, image in enumerate(images)]
        found: list[list[Detection]] = []
        for start in range(0, len(frames), self.config.batch_size):
            # ultralytics reads numpy frames as OpenCV BGR
            batch = [np.ascontiguousarray(frame[..., ::-1]) for frame in frames[start : start + self.config.batch_size]]
            results = self._model.predict(
                batch,
                imgsz=self.config.imgsz,
                conf=self.config.confidence,
                classes=self._class_ids,
                device=self._device,
                **self._precision,
                batch=len(batch),
                verbose=False,
            )
            for result in results:
                boxes = result.boxes
                xyxy = boxes.xyxy.cpu().numpy().astype(float)
                conf = boxes.conf.cpu().numpy().astype(float)
                cls = boxes.cls.cpu().numpy().astype(int)
                found.append(
                    [
                        Detection(self._names[c], float(p), tuple(float(v) for v in box))
                        for box, p, c in zip(xyxy, conf, cls, strict=True)
                    ]
                )
        return found

    def fires(self, detections: Sequence[Detection]) -> bool:
        """Whether any detection is a critical class, confident enough and tall enough."""
        return any(
            d.cls in self.config.classes
            and d.confidence >= self.config.confidence
            and d.height >= self.config.min_box_px
            for d in detections
        )


def _check_frame(image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"detect: image {index} must be HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
    return image


def _import_yolo():
    """ultralytics.YOLO, imported with its settings in a writable folder and its online checks off.

    ultralytics reads these variables once, on first import, so they are set before it.
    """
    if "ultralytics" not in sys.modules:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir() / "ultralytics"))
        os.makedirs(os.environ["YOLO_CONFIG_DIR"], exist_ok=True)
    from ultralytics import YOLO

    return YOLO
