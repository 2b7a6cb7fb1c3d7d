"""The gate: its settings, and YOLO on real photos with the official yolov8n weights (the scene corridor and
gate quality are tested with data_schema.groundtruth)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from annotate.gate import CameraGate, Detection, GateConfig
from annotate.model_weights import WeightsError
from data_schema.schema import DETECTION_TYPE

from model_fixtures import ultralytics_asset


@pytest.fixture(scope="module")
def camera_gate(yolov8n_weights) -> CameraGate:
    return CameraGate(GateConfig(weights=str(yolov8n_weights), imgsz=640, batch_size=2))


# --- configuration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"source": "lidar"}, "gate.source"),
        ({"source": "camera", "weights": None}, "gate.weights"),
        ({"source": "scene", "confidence": 1.5}, "gate.confidence"),
        ({"source": "scene", "imgsz": 500}, "gate.imgsz"),
        ({"source": "scene", "critical_kinds": ("pedestrian", "dragon")}, "gate.critical_kinds"),
        ({"source": "scene", "corridor_half_width": 0.0}, "corridor_half_width: corridor length and half width must be positive"),
        ({"source": "scene", "classes": ()}, "gate.classes"),
    ],
)
def test_config_rejects_bad_values_naming_the_option(kwargs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        GateConfig(**kwargs)


def test_missing_weights_file_names_the_path_and_option(tmp_path):
    missing = tmp_path / "nowhere" / "yolov8n.pt"
    with pytest.raises(WeightsError, match=r"YOLO weights not found: .*nowhere/yolov8n\.pt.*--yolo-weights"):
        CameraGate(GateConfig(weights=str(missing)))


def test_unknown_class_lists_the_model_classes(yolov8n_weights):
    with pytest.raises(ValueError, match=r"\['unicorn'\] not in the classes of yolov8n\.pt.*person"):
        CameraGate(GateConfig(weights=str(yolov8n_weights), classes=("person", "unicorn")))


# --- camera gate on real photos ---------------------------------------------------------------------------


def test_yolo_gates_people_photos_and_not_an_empty_road(camera_gate, street_photos, empty_road_frame):
    frames = [street_photos["bus.jpg"], empty_road_frame, street_photos["zidane.jpg"]]
    detections = camera_gate.detect(frames)

    assert len(detections) == 3
    bus, road, zidane = detections
    assert sum(d.cls == "person" for d in bus) >= 3
    assert sum(d.cls == "person" for d in zidane) >= 2
    assert road == []
    assert [camera_gate.fires(d) for d in detections] == [True, False, True]
    for frame, found in zip(frames, detections, strict=True):
        height, width = frame.shape[:2]
        for d in found:
            assert d.cls in camera_gate.config.classes and d.confidence >= camera_gate.config.confidence
            x0, y0, x1, y1 = d.box
            assert -1 <= x0 < x1 <= width + 1 and -1 <= y0 < y1 <= height + 1


def test_detect_on_rgb_arrays_equals_ultralytics_on_the_file(camera_gate, street_photos, yolov8n_weights):
    """Same boxes as ultralytics reading the JPEG itself: proves frames reach YOLO in its BGR order."""
    from ultralytics import YOLO

    ours = camera_gate.detect([street_photos["bus.jpg"]])[0]
    reference = YOLO(str(yolov8n_weights)).predict(
        str(ultralytics_asset("bus.jpg")), conf=0.35, classes=[0, 1, 3], imgsz=640, verbose=False
    )[0]

    ref_boxes = reference.boxes.xyxy.numpy()
    assert len(ours) == len(ref_boxes) >= 3
    np.testing.assert_allclose([d.box for d in ours], ref_boxes, atol=1.5)
    np.testing.assert_allclose([d.confidence for d in ours], reference.boxes.conf.numpy(), atol=0.005)


def test_fires_needs_critical_class_confidence_and_size(camera_gate):
    config = camera_gate.config  # person/bicycle/motorcycle, confidence 0.35, min_box_px 12
    tall = (10.0, 10.0, 30.0, 60.0)
    assert camera_gate.fires([Detection("person", 0.9, tall)])
    assert camera_gate.fires([Detection("car", 0.9, tall), Detection("bicycle", config.confidence, tall)])
    assert not camera_gate.fires([])
    assert not camera_gate.fires([Detection("car", 0.99, tall)])
    assert not camera_gate.fires([Detection("person", 0.34, tall)])
    assert not camera_gate.fires([Detection("person", 0.9, (10.0, 10.0, 30.0, 21.0))])  # 11 px tall


def test_detection_records_fit_the_label_schema(camera_gate, street_photos):
    found = camera_gate.detect([street_photos["zidane.jpg"]])[0]
    column = pa.array([[d.to_record() for d in found]], type=pa.list_(DETECTION_TYPE))
    assert column.type == pa.list_(DETECTION_TYPE)
    back = column.to_pylist()[0]
    assert [b["cls"] for b in back] == [d.cls for d in found]
    np.testing.assert_allclose([b["box"] for b in back], [d.box for d in found], rtol=1e-6)


def test_detect_rejects_non_rgb_frames(camera_gate):
    with pytest.raises(ValueError, match="image 1 must be HxWx3 uint8"):
        camera_gate.detect([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
