"""The gate: YOLO on real photos with the official yolov8n weights, the scene corridor, gate quality."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from annotate.gate import (
    CameraGate,
    Detection,
    GateConfig,
    GateQuality,
    critical_in_corridor,
    scene_gate,
    scene_gate_column,
)
from annotate.model_weights import WeightsError
from data_schema.schema import AGENT_TYPE, DETECTION_TYPE

from model_fixtures import ultralytics_asset


@pytest.fixture(scope="module")
def camera_gate(yolov8n_weights) -> CameraGate:
    return CameraGate(GateConfig(weights=str(yolov8n_weights), imgsz=640, batch_size=2))


def agent(kind: str, x: float, y: float, yaw: float = 0.0, length: float = 0.5, width: float = 0.5) -> dict:
    return {"kind": kind, "x": x, "y": y, "yaw": yaw, "speed": 1.0, "length": length, "width": width}


# --- configuration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"source": "lidar"}, "gate.source"),
        ({"source": "camera", "weights": None}, "gate.weights"),
        ({"source": "scene", "confidence": 1.5}, "gate.confidence"),
        ({"source": "scene", "imgsz": 500}, "gate.imgsz"),
        ({"source": "scene", "critical_kinds": ("pedestrian", "dragon")}, "gate.critical_kinds"),
        ({"source": "scene", "corridor_half_width": 0.0}, "gate.corridor_length / corridor_half_width"),
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
    back = [Detection.from_record(r) for r in column.to_pylist()[0]]
    assert [b.cls for b in back] == [d.cls for d in found]
    np.testing.assert_allclose([b.box for b in back], [d.box for d in found], rtol=1e-6)


def test_detect_rejects_non_rgb_frames(camera_gate):
    with pytest.raises(ValueError, match="image 1 must be HxWx3 uint8"):
        camera_gate.detect([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])


# --- scene gate ---------------------------------------------------------------------------------------------

CORRIDOR = {"length": 25.0, "half_width": 3.0, "kinds": ("pedestrian", "cyclist", "motorcycle")}


@pytest.mark.parametrize(
    ("agents", "expected"),
    [
        ([], False),
        ([agent("pedestrian", 10.0, 0.5)], True),
        ([agent("pedestrian", 10.0, -2.9)], True),
        ([agent("pedestrian", 10.0, 5.0)], False),  # on the far sidewalk
        ([agent("pedestrian", -4.0, 0.0)], False),  # behind the ego
        ([agent("pedestrian", 26.0, 0.0)], False),  # beyond the corridor
        ([agent("vehicle", 8.0, 0.0, length=4.5, width=1.8)], False),  # not a critical kind
        ([agent("static", 8.0, 0.0)], False),
        ([agent("cyclist", 12.0, 3.3, length=1.8, width=0.8)], True),  # centre outside, body inside
        ([agent("cyclist", 12.0, 3.3, yaw=math.pi / 2, length=1.8, width=0.8)], True),  # crossing, reaches in
        ([agent("cyclist", 12.0, 4.0, length=1.8, width=0.8)], False),
        ([agent("motorcycle", 26.0, 0.0, length=2.2, width=0.8)], True),  # rear end inside the far edge
        ([agent("vehicle", 5.0, 0.0, length=4.5), agent("pedestrian", 40.0, 0.0), agent("cyclist", 3.0, -1.0)], True),
    ],
)
def test_critical_in_corridor(agents, expected):
    assert critical_in_corridor(agents, **CORRIDOR) is expected
    config = GateConfig(source="scene", corridor_length=25.0, corridor_half_width=3.0)
    assert scene_gate(agents, config) is expected


def test_corridor_settings_change_the_answer():
    walker = [agent("pedestrian", 10.0, 4.0)]
    assert not scene_gate(walker, GateConfig(source="scene"))
    assert scene_gate(walker, GateConfig(source="scene", corridor_half_width=4.5))
    assert not scene_gate(walker, GateConfig(source="scene", corridor_half_width=4.5, corridor_length=8.0))
    assert not scene_gate(walker, GateConfig(source="scene", corridor_half_width=4.5, critical_kinds=("cyclist",)))


def test_column_version_agrees_with_rows_on_a_raw_agents_column():
    rng = np.random.default_rng(7)
    kinds = ["vehicle", "pedestrian", "cyclist", "motorcycle", "static"]
    rows = []
    for _ in range(300):
        rows.append(
            [
                agent(
                    str(rng.choice(kinds)),
                    float(rng.uniform(-15, 40)),
                    float(rng.uniform(-8, 8)),
                    yaw=float(rng.uniform(-math.pi, math.pi)),
                    length=float(rng.uniform(0.4, 5.0)),
                    width=float(rng.uniform(0.4, 2.0)),
                )
                for _ in range(int(rng.integers(0, 6)))
            ]
        )
    column = pa.array(rows, type=pa.list_(AGENT_TYPE))
    config = GateConfig(source="scene")
    # rows read back from the float32 column, as the annotator sees them
    expected = np.array([scene_gate(r, config) for r in column.to_pylist()])
    assert 0.05 < expected.mean() < 0.95  # the sample exercises both answers

    np.testing.assert_array_equal(scene_gate_column(column, config), expected)
    chunked = pa.chunked_array([column.slice(0, 100), column.slice(100)])
    np.testing.assert_array_equal(scene_gate_column(chunked, config), expected)
    np.testing.assert_array_equal(scene_gate_column(column.slice(37, 50), config), expected[37:87])
    assert scene_gate_column(pa.array([[], []], type=pa.list_(AGENT_TYPE)), config).tolist() == [False, False]


# --- gate quality ---------------------------------------------------------------------------------------------


def test_gate_quality_counts_and_rates():
    quality = GateQuality()
    quality.update([True, True, False, False, True], [True, False, True, False, True])
    quality.update(False, False)
    assert (quality.tp, quality.fp, quality.fn, quality.tn) == (2, 1, 1, 2)
    assert quality.recall == pytest.approx(2 / 3)
    assert quality.precision == pytest.approx(2 / 3)
    assert quality.share_gated == pytest.approx(3 / 6)

    total = quality + GateQuality(tp=1, fp=0, fn=0, tn=3)
    assert total.frames == 10 and total.recall == pytest.approx(3 / 4) and total.share_gated == pytest.approx(0.4)
    assert total.as_dict()["precision"] == pytest.approx(3 / 4)


def test_gate_quality_undefined_rates_are_none_and_lengths_must_match():
    quality = GateQuality()
    assert quality.recall is None and quality.precision is None and quality.share_gated is None
    quality.update(np.zeros(4, bool), np.zeros(4, bool))
    assert quality.recall is None and quality.precision is None and quality.share_gated == 0.0
    with pytest.raises(ValueError, match="3 gate values but 2 truth values"):
        quality.update([True, False, True], [True, False])
