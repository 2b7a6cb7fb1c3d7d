"""The vision warm-up that teaches the tiny VLM's tower to read frames before the fine-tune (annotate/vlm/vision_warmup.py)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from annotate.vlm.answer import ACTIONS
from annotate.vlm.sft_data import gated_windows
from annotate.vlm.targets import TargetRule
from annotate.vlm.vision_warmup import probe_targets, vision_tower, warm_up_vision
from annotate_fixtures import raw_episode
from data_schema import Dataset
from data_schema.groundtruth import Corridor
from vlm_fixtures import build_test_model

KINDS = ("none", "car", "pedestrian", "cyclist", "motorcycle", "obstacle")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"hazard": True, "risk": 0.95, "description": "A pedestrian is crossing from the right 6 m ahead.", "action": "stop"},
         (1.0, 0.95, ACTIONS.index("stop"), KINDS.index("pedestrian"), 6 / 30)),
        ({"hazard": False, "risk": 0.0, "description": "The road ahead is clear.", "action": "continue"},
         (0.0, 0.0, ACTIONS.index("continue"), KINDS.index("none"), 1.0)),
        ({"hazard": False, "risk": 0.3, "description": "A car is stopped 42 m ahead on the left.", "action": "slow_down"},
         (0.0, 0.3, ACTIONS.index("slow_down"), KINDS.index("car"), 1.0)),
        # the subject, not "the car" it stands beside
        ({"hazard": True, "risk": 0.6, "description": "A cyclist is going the same way beside the car.", "action": "yield"},
         (1.0, 0.6, ACTIONS.index("yield"), KINDS.index("cyclist"), 1.0)),
        ({"hazard": False, "risk": 0.1, "description": "An obstacle lies 3 m behind.", "action": "continue"},
         (0.0, 0.1, ACTIONS.index("continue"), KINDS.index("obstacle"), 0.1)),
    ],
)  # fmt: skip
def test_probe_targets_are_the_answers_fields(answer, expected):
    assert probe_targets(answer) == pytest.approx(expected)


@pytest.fixture(scope="module")
def near_and_far(tmp_path_factory):
    """Windows of a standing car with a pedestrian in its lane either near (hazard) or 18 m ahead (no hazard):
    only where the frames draw the pedestrian tells them apart. And a random tiny model."""
    dataset = Dataset.create(str(tmp_path_factory.mktemp("near-far") / "ds"))
    for e in range(4):
        gap = 3.0 if e % 2 == 0 else 18.0
        agents = [[{"kind": "pedestrian", "x": gap + 4, "y": 0.0, "yaw": 0.0, "speed": 0.0, "length": 0.5, "width": 0.5}]] * 8
        episode = raw_episode(f"ep{e}", 8, seed=e, agents=agents)
        standing = pa.array(np.zeros(8), episode.schema.field("speed").type)
        dataset.write_episode_shard(f"s{e}", episode.set_column(episode.schema.get_field_index("speed"), "speed", standing))
    windows = gated_windows(dataset, 3, Corridor(), TargetRule())
    assert sorted({w.target["hazard"] for w in windows}) == [False, True]
    return windows, build_test_model(tmp_path_factory.mktemp("tiny") / "model")


def warm_up(model_dir, windows, steps=150):
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    before = {k: v.clone() for k, v in vision_tower(model).state_dict().items()}
    scores = warm_up_vision(model, AutoProcessor.from_pretrained(model_dir), windows, windows, steps, 8, seed=0, max_side=None,
                            learning_rate=3e-3, progress=False)  # fmt: skip
    return model, before, scores


def test_the_warm_up_teaches_the_tower_to_tell_frames_apart_then_freezes_it(near_and_far):
    windows, model_dir = near_and_far
    model, before, scores = warm_up(model_dir, windows)
    tower = vision_tower(model).state_dict()
    assert any(not torch.equal(before[k], tower[k]) for k in tower)
    assert not any(p.requires_grad for p in vision_tower(model).parameters())
    assert any(p.requires_grad for p in model.model.language_model.parameters())
    # the probe reads the windows it was trained on: hazard from where the pedestrian is drawn
    assert scores.windows == len(windows) and scores.hazard_majority == pytest.approx(0.5)
    assert scores.hazard_accuracy > 0.9 and scores.risk_correlation > 0.9


def test_the_same_warm_up_gives_the_same_tower(near_and_far):
    """What lets a killed fine-tune redo the warm-up and end as an unbroken one."""
    windows, model_dir = near_and_far
    first, _, _ = warm_up(model_dir, windows, steps=3)
    second, _, _ = warm_up(model_dir, windows, steps=3)
    a, b = vision_tower(first).state_dict(), vision_tower(second).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)



def test_frames_of_different_sizes_are_refused(near_and_far):
    windows, model_dir = near_and_far
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, format="PNG")
    small = dataclasses.replace(windows[0], frames=(buffer.getvalue(),) * len(windows[0].frames))
    with pytest.raises(ValueError, match="frames of one size"):
        warm_up(model_dir, [*windows[:3], small] * 2, steps=2)
