"""A small but realistic dataset for the audit tests, written through the real data_schema contract.

Two raw shards of three episodes each, with PNG BEV frames, JPEG camera frames, ground-truth agents,
the episode endings that matter for auditing (collision, off-road, stuck, goal, step limit), and two label
sets: ``clg-v1`` computed with the design's reward formulas from a scene gate with planted misses, and
``clg-v2`` equal to it except for rewards changed on a few known frames (``PLANTED``).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from data_schema import LABEL_SCHEMA, RAW_STEP_SCHEMA, Dataset, encode_jpeg, encode_png
from data_schema.label_sets import spec_hash

STEPS = 40
ENDINGS = ("collision", "off_road", "stuck", "goal", "truncated", "normal")
CAMERA_W, CAMERA_H, FOCAL = 128, 96, 80.0
BEV_PX = 64
#: Frames whose reward clg-v2 changes, with the change (episode index, step, delta).
PLANTED = ((1, 12, 0.9), (3, 30, -0.8), (5, 5, 0.7))
#: Frames where a pedestrian is in the corridor but the gate of clg-v1 does not fire (episode index, step).
GATE_MISSES = ((0, 20),)
#: Raw text of an invalid VLM answer: model output is data, and a report must show it, never run it.
INVALID_TEXT = "{not json <script>console.error('vlm text ran as code')</script>"
#: Every clg-v2 reward also moves by at most this much, so that the planted changes must stand out of noise.
NOISE = 1e-3


def spec_of(version: str) -> dict:
    """The label-set spec of ``clg-<version>``: the two differ in their (notional) prompt."""
    return {"schema_version": 1, "prompts": {"positive": f"clear road {version}"}, "gate": GATE_SPEC,
            "reward": {"penalty": -10.0, "target_speed_kmh": 25.0}}  # fmt: skip


def spec_document(name: str, spec: dict) -> dict:
    """A label_set.json shaped like the one ``pipeline annotate`` writes (its hash is the spec's)."""
    return {
        "name": name,
        "hash": spec_hash(spec),
        "spec": spec,
        "provenance": {"created": "2025-01-01T00:00:00+00:00", "updated": "2025-01-01T00:10:00+00:00",
                       "code_version": "0.1.0+gtest", "hosts": ["test-host"], "counts": {"shards": 2, "frames": 240}},
    }  # fmt: skip


#: The gate section of the label-set spec: the corridor the report scores the gate against.
GATE_SPEC = {"source": "scene", "corridor_length": 20.0, "corridor_half_width": 2.0, "critical_kinds": ["pedestrian", "cyclist", "motorcycle"]}
HASH_V1, HASH_V2 = spec_hash(spec_of("v1")), spec_hash(spec_of("v2"))


def episode_id(i: int) -> str:
    return f"ep{i:03d}"


def pedestrian_at(i: int, step: int) -> tuple[float, float] | None:
    """Where (ego frame) a pedestrian crosses ahead in even episodes: steps 15..25, 3 m to 12 m ahead."""
    if i % 2 or not 15 <= step <= 25:
        return None
    return 14.0 - 0.5 * (step - 15), 3.0 - 0.6 * (step - 15)


def in_corridor(x: float, y: float) -> bool:
    """The scene gate of clg-v1 (before its planted misses); matches GATE_SPEC for a 0.5 m pedestrian here."""
    return 0.0 < x < 20.0 and abs(y) < 2.0


def bev_frame(ped: tuple[float, float] | None, rng: np.random.Generator) -> bytes:
    img = np.full((BEV_PX, BEV_PX, 3), 40, np.uint8)
    img[:, 24:40] = 90 + rng.integers(0, 5)
    img[28:40, 29:35] = (230, 230, 230)
    if ped is not None:
        r, c = int(32 - ped[0] * 2), int(32 - ped[1] * 2)
        img[max(r - 2, 0) : r + 2, max(c - 2, 0) : c + 2] = (255, 60, 60)
    return encode_png(img)


def camera_box(ped: tuple[float, float]) -> list[float]:
    x, y = ped
    u, h = CAMERA_W / 2 - FOCAL * y / x, FOCAL * 1.7 / x
    return [u - h / 6, CAMERA_H / 2 + FOCAL * 1.2 / x - h, u + h / 6, CAMERA_H / 2 + FOCAL * 1.2 / x]


def camera_frame(ped: tuple[float, float] | None) -> bytes:
    img = np.zeros((CAMERA_H, CAMERA_W, 3), np.uint8)
    img[: CAMERA_H // 2] = (120, 160, 220)
    img[CAMERA_H // 2 :] = (80, 80, 80)
    if ped is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in camera_box(ped))
        img[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = (200, 40, 40)
    return encode_jpeg(img)


def episode_rows(i: int, rng: np.random.Generator) -> list[dict]:
    ending = ENDINGS[i % len(ENDINGS)]
    rows = []
    for step in range(STEPS):
        last = step == STEPS - 1
        ped = pedestrian_at(i, step)
        speed = 0.0 if ending == "stuck" and step > 20 else 5.0 + math.sin(step / 5)
        agents = [{"kind": "vehicle", "x": 25.0, "y": 3.5, "yaw": math.pi, "speed": 6.0, "length": 4.5, "width": 1.9}]
        if ped is not None:
            agents.append({"kind": "pedestrian", "x": ped[0], "y": ped[1], "yaw": -1.57, "speed": 1.2, "length": 0.5, "width": 0.5})
        rows.append(
            {
                "episode_id": episode_id(i),
                "step": step,
                "t": step * 0.1,
                "backend": "sumo",
                "map": "town",
                "seed": i,
                "policy": "expert",
                "scenario": "free",
                "bev": bev_frame(ped, rng),
                "camera": camera_frame(ped),
                "x": float(step * 0.5),
                "y": 0.0,
                "yaw": 0.0,
                "speed": speed,
                "steer": 0.0,
                "throttle": 0.3,
                "brake": 0.0,
                "lateral_offset": 2.5 if ending == "off_road" and last else 0.1 * math.sin(step),
                "heading_error": 0.02,
                "route_progress": step * 0.5,
                "route_completion": step / (STEPS - 1),
                "distance_to_goal": (STEPS - 1 - step) * 0.5,
                "route_ahead": [[4.0 * (k + 1), 0.0] for k in range(8)],
                "agents": agents,
                "action": None if last else [0.0, 0.3],
                "collision": ending == "collision" and last,
                "collision_with": "pedestrian" if ending == "collision" and last else None,
                "off_road": ending == "off_road" and last,
                "red_light": step == 10,
                "stuck": ending == "stuck" and last,
                "terminated": last and ending in ("collision", "off_road", "stuck", "goal"),
                "truncated": last and ending == "truncated",
                "is_last": last,
            }
        )
    return rows


def label_rows(raw: list[dict], i: int) -> list[dict]:
    """Labels of one episode with the design's synthesis formulas; the gate is a scene gate with misses."""
    rows = []
    offsets = []
    for row in raw:
        step = row["step"]
        ped = pedestrian_at(i, step)
        gate = ped is not None and in_corridor(*ped) and (i, step) not in GATE_MISSES
        sim_pos = 0.25 + 0.01 * math.cos(step)
        sim_neg = sim_pos + (0.02 if ped is not None else -0.01)
        r_static = sim_pos - sim_neg
        ok = gate and step % 4 != 0
        r_dynamic = -0.02 if gate else 0.0
        semantic = (min(max(r_static + r_dynamic, -0.03), 0.0) + 0.03) / 0.03
        desired = semantic * 25 / 3.6
        offsets.append(row["lateral_offset"])
        f_speed = 1 - abs(row["speed"] - desired) / (25 / 3.6)
        f_center = max(1 - abs(row["lateral_offset"]) / 3.0, 0.0)
        f_angle = max(1 - abs(row["heading_error"]) / (math.pi / 2), 0.0)
        f_stability = max(1 - float(np.std(offsets[-30:])) / 0.4, 0.0)
        bad = row["collision"] or row["off_road"] or row["stuck"]
        rows.append(
            {
                "episode_id": row["episode_id"],
                "step": step,
                "sim_pos": sim_pos,
                "sim_neg": sim_neg,
                "r_static": r_static,
                "gate": gate,
                "gate_source": "scene",
                "detections": [{"cls": "person", "confidence": 0.8, "box": camera_box(ped)}] if gate else [],
                "vlm_text": ("A pedestrian is crossing the road ahead; slow down." if ok else INVALID_TEXT)
                if gate
                else None,
                "vlm_json": '{"hazard": true, "risk": 0.8}' if ok else None,
                "vlm_ok": ok if gate else None,
                "r_dynamic": r_dynamic,
                "semantic": semantic,
                "desired_speed": desired,
                "f_speed": f_speed,
                "f_center": f_center,
                "f_angle": f_angle,
                "f_stability": f_stability,
                "penalty": -10.0 if bad else 0.0,
                "reward": -10.0 if bad else f_speed * f_center * f_angle * f_stability,
            }
        )
    return rows


def noise(step: int) -> float:
    return NOISE * math.sin(step)


def build(root: str, episodes_per_shard: int = 3, shards: int = 2) -> Dataset:
    ds = Dataset.create(root, created_by="tests/audit")
    rng = np.random.default_rng(0)
    v1, v2 = ds.label_set("clg-v1"), ds.label_set("clg-v2")
    v1.write_document(spec_document("clg-v1", spec_of("v1")))
    v2.write_document(spec_document("clg-v2", spec_of("v2")))
    planted = {(episode_id(i), s): d for i, s, d in PLANTED}
    for k in range(shards):
        raw, labels = [], []
        for i in range(k * episodes_per_shard, (k + 1) * episodes_per_shard):
            rows = episode_rows(i, rng)
            raw += rows
            labels += label_rows(rows, i)
        shard = f"20250101T000000-test-e{k * episodes_per_shard:06d}"
        ds.write_episode_shard(shard, pa.Table.from_pylist(raw, schema=RAW_STEP_SCHEMA))
        v1.write_shard(shard, pa.Table.from_pylist(labels, schema=LABEL_SCHEMA), HASH_V1)
        changed = [{**r, "reward": r["reward"] + planted.get((r["episode_id"], r["step"]), 0.0) + noise(r["step"])} for r in labels]
        v2.write_shard(shard, pa.Table.from_pylist(changed, schema=LABEL_SCHEMA), HASH_V2)
    return ds


@pytest.fixture(scope="session")
def audit_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return build(str(tmp_path_factory.mktemp("audit") / "ds"))
