"""Pictures for auditing labels: a grid of frames with their scores, and one episode's timeline.

Both return a ``matplotlib.figure.Figure`` built without pyplot, so the HTML report can render them in a
loop without global state, and a notebook displays them as the value of a cell.
"""

from __future__ import annotations

import io
import textwrap
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from data_schema.images import decode_image

#: Raw event columns drawn on timelines, with their marker colours.
EVENT_STYLES = {
    "collision": "tab:red",
    "off_road": "tab:orange",
    "stuck": "tab:purple",
    "red_light": "tab:brown",
}
GATE_COLOUR = "#f6c343"


def as_image(value: Any) -> np.ndarray | None:
    """An image cell (encoded bytes or a decoded array) as an HxWx3 array; None stays None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return decode_image(bytes(value))
    return np.asarray(value)


def show_frames(
    df: pd.DataFrame,
    image: str = "bev",
    scores: Sequence[str] = ("semantic", "reward"),
    caption: str | None = "vlm_text",
    boxes: bool | None = None,
    ncols: int = 4,
    max_frames: int = 24,
    width: float = 3.2,
) -> Figure:
    """A grid of the frames in ``df`` (first ``max_frames`` rows), titled with their key and ``scores``.

    ``image`` names the column holding the frames (bytes or arrays: use ``frames(..., images=[image])``).
    Gated frames get a yellow border. YOLO boxes from ``detections`` are drawn when ``boxes`` is true;
    by default only on the camera image, since a detection's box is in pixels of the gated (camera) frame.
    ``caption`` names a text column (the VLM description by default) printed under each frame.
    """
    if image not in df.columns:
        raise KeyError(
            f"the frame has no {image!r} column; read it with frames(..., images=[{image!r}]) or attach_images(ds, df, [{image!r}])"
        )
    if ncols < 1 or max_frames < 1:
        raise ValueError("ncols and max_frames must be >= 1")
    rows = df.head(max_frames)
    draw_boxes = (image == "camera") if boxes is None else boxes
    n = max(len(rows), 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    text_lines = 3 if caption else 0
    fig = Figure(figsize=(width * ncols, (width * 0.9 + 0.18 * text_lines + 0.4) * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    if rows.empty:
        axes[0].text(0.5, 0.5, "no frames", ha="center", va="center", transform=axes[0].transAxes)
        return fig
    for ax, (_, row) in zip(axes, rows.iterrows()):
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        pixels = as_image(row[image])
        if pixels is None:
            ax.text(0.5, 0.5, f"no {image} frame", ha="center", va="center", transform=ax.transAxes, color="grey")
        else:
            ax.imshow(pixels, interpolation="nearest")
            if draw_boxes and "detections" in row.index:
                _draw_detections(ax, row["detections"])
        ax.set_title(_title(row, scores), fontsize=8, loc="left", parse_math=False)
        gated = bool(row.get("gate", False))
        for spine in ax.spines.values():
            spine.set_edgecolor(GATE_COLOUR if gated else "#c8cdd4")
            spine.set_linewidth(4 if gated else 1)
        if caption and caption in row.index and isinstance(row[caption], str):
            # an x label, not free text, so that the constrained layout makes room for it
            ax.set_xlabel(_wrap(row[caption], width), fontsize=7, loc="left", parse_math=False)
    return fig


def penalty_rows(df: pd.DataFrame) -> np.ndarray:
    """Rows whose reward is an event penalty. Synthesis writes penalty 0 on other rows, where a 0 reward is a score."""
    return df["penalty"].to_numpy() != 0 if "penalty" in df.columns else np.zeros(len(df), dtype=bool)


def plot_timeline(episode: pd.DataFrame, title: str | None = None, width: float = 10.0) -> Figure:
    """One episode over its steps: speed vs desired speed, semantic and reward, gate, events marked.

    Needs ``step`` and whichever of ``speed``, ``desired_speed``, ``semantic``, ``reward``, ``gate``,
    ``vlm_ok`` and the event columns the frame has (missing ones are left out of the plot).
    """
    if episode.empty:
        raise ValueError("plot_timeline: the episode has no rows")
    if "episode_id" in episode.columns and episode["episode_id"].nunique() > 1:
        raise ValueError(f"plot_timeline: expected one episode, got {episode['episode_id'].nunique()}; filter with in_episode(...)")
    ep = episode.sort_values("step")
    steps = ep["step"].to_numpy()
    fig = Figure(figsize=(width, 6.0), layout="constrained")
    ax_speed, ax_score, ax_gate = fig.subplots(3, 1, sharex=True, height_ratios=[3, 3, 1])
    for column, style in (("speed", "-"), ("desired_speed", "--")):
        if column in ep.columns:
            ax_speed.plot(steps, ep[column].to_numpy(), style, label=column.replace("_", " "))
    ax_speed.set_ylabel("m/s")
    # penalty rows (e.g. -10) would flatten the 0..1 scores: they are marked at the bottom instead
    penalised = penalty_rows(ep)
    shown = []
    for column, colour in (("semantic", "tab:green"), ("reward", "tab:blue")):
        if column in ep.columns:
            values = ep[column].to_numpy(dtype=float)
            if column == "reward":
                values = np.where(penalised, np.nan, values)
            ax_score.plot(steps, values, color=colour, label=column)
            shown.append(values)
    finite = np.concatenate(shown)[np.isfinite(np.concatenate(shown))] if shown else np.zeros(0)
    low = min(0.0, float(finite.min())) - 0.08 if len(finite) else -0.08
    ax_score.set_ylim(low, max(1.0, float(finite.max()) if len(finite) else 1.0) + 0.05)
    if penalised.any():
        value = float(ep["penalty"].to_numpy()[penalised][0])
        ax_score.scatter(steps[penalised], np.full(penalised.sum(), low + 0.03), color="black", marker="x", zorder=3, label=f"penalty ({value:g})")
    ax_score.set_ylabel("score")
    if "gate" in ep.columns:
        gate = ep["gate"].to_numpy(dtype=bool)
        ax_gate.fill_between(steps, 0, gate.astype(float), step="mid", color=GATE_COLOUR, label="gate")
        if "vlm_ok" in ep.columns:
            failed = (ep["vlm_ok"].astype("boolean") == False).fillna(False).to_numpy(dtype=bool)  # noqa: E712
            if failed.any():
                ax_gate.scatter(steps[failed], np.full(failed.sum(), 0.5), color="tab:red", marker="v", zorder=3, label="VLM answer invalid")
    ax_gate.set_yticks([])
    ax_gate.set_ylim(0, 1.05)
    ax_gate.set_xlabel("step")
    for column, colour in EVENT_STYLES.items():
        if column not in ep.columns:
            continue
        hits = steps[ep[column].to_numpy(dtype=bool)]
        for k, s in enumerate(hits):
            for ax in (ax_speed, ax_score, ax_gate):
                ax.axvline(s, color=colour, lw=1.5, alpha=0.8, label=column.replace("_", " ") if ax is ax_gate and k == 0 else None)
    for ax in (ax_speed, ax_score, ax_gate):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    name = title or (f"episode {ep['episode_id'].iloc[0]}" if "episode_id" in ep.columns else "episode")
    fig.suptitle(name, fontsize=10, x=0.01, ha="left", parse_math=False)
    return fig


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a figure (for the HTML report and ``--png`` outputs)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _title(row: pd.Series, scores: Sequence[str]) -> str:
    head = f"{row.get('episode_id', '?')} · step {row.get('step', '?')}"
    parts = [f"{name} {row[name]:.3g}" for name in scores if name in row.index and _is_number(row[name])]
    return head + ("\n" + "  ".join(parts) if parts else "")


def _draw_detections(ax: Any, detections: Any) -> None:
    if detections is None:
        return
    for det in detections:
        x0, y0, x1, y1 = (float(v) for v in det["box"])
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, ec="lime"))
        ax.text(x0, y0, f"{det['cls']} {float(det['confidence']):.2f}", color="black", fontsize=6, va="bottom", backgroundcolor="lime", parse_math=False)


def _wrap(text: str, width: float, lines: int = 3) -> str:
    chars = max(int(width * 14), 20)
    wrapped = textwrap.wrap(" ".join(text.split()), chars)
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: chars - 1] + "…"
    return "\n".join(wrapped)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and np.isfinite(value)
