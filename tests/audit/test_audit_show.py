"""pipeline.audit.show: frame grids draw the right frames and boxes; timelines mark the events."""

from __future__ import annotations

import matplotlib.patches
import numpy as np
import pytest

from data_schema import Dataset
from data_schema import query as q
from pipeline.audit.show import GATE_COLOUR, plot_timeline, show_frames


def test_grid_draws_each_frame_with_its_scores_and_detection_boxes(audit_dataset: Dataset) -> None:
    df = q.frames(audit_dataset, "clg-v1", columns=["semantic", "reward", "vlm_text", "detections"], where=q.gated(), limit=5, images=["camera"])
    fig = show_frames(df, image="camera", ncols=3)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 5
    for ax, (_, row) in zip(axes, df.iterrows()):
        assert f"{row.episode_id} · step {row.step}" in ax.get_title(loc="left")
        assert f"semantic {row.semantic:.3g}" in ax.get_title(loc="left")
        boxes = [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]
        assert len(boxes) == len(row.detections) == 1
        x0, y0, x1, y1 = row.detections[0]["box"]
        assert boxes[0].get_xy() == pytest.approx((x0, y0)) and boxes[0].get_width() == pytest.approx(x1 - x0)
        assert ax.spines["top"].get_edgecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb(GATE_COLOUR))
    # BEV frames: boxes are in camera pixels, so none are drawn by default
    bev = show_frames(q.attach_images(audit_dataset, df, ["bev"]), image="bev")
    assert not any(p for ax in bev.axes for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle))
    # the caption is the VLM text, shown as-is (no mathtext parsing of model output)
    assert df.vlm_text.iloc[0].split(";")[0] in axes[0].get_xlabel()


def test_grid_without_images_says_how_to_get_them(audit_dataset: Dataset) -> None:
    df = q.frames(audit_dataset, "clg-v1", columns=["semantic"], limit=2)
    with pytest.raises(KeyError, match=r"frames\(\.\.\., images=\['bev'\]\)"):
        show_frames(df)


def test_timeline_marks_events_gate_and_penalty(audit_dataset: Dataset) -> None:
    ep = q.episode(audit_dataset, "clg-v1", "ep000")
    fig = plot_timeline(ep)
    ax_speed, ax_score, ax_gate = fig.axes[:3]
    lines = {line.get_label(): line for line in ax_score.get_lines()}
    reward = lines["reward"].get_ydata()
    assert np.isnan(reward[-1]) and np.isfinite(reward[:-1]).all()  # the -10 penalty row is a marker, not a line point
    assert ax_score.get_ylim()[0] > -1
    event_x = {line.get_xdata()[0] for line in ax_gate.get_lines() if line.get_label() in ("collision", "red light")}
    assert event_x == {10, 39}  # red light at step 10, the collision on the last row
    gate_span = ax_gate.collections[0].get_paths()[0].vertices
    assert gate_span[:, 1].max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="expected one episode"):
        plot_timeline(q.frames(audit_dataset, "clg-v1", where=q.in_episode("ep000", "ep001")))
