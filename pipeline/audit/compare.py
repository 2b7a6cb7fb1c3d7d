"""Compare two label sets of one dataset: what changed per column, how rewards correlate, which frames moved most.

Reads one raw shard's pair of label shards at a time and keeps only running sums and the current top-N
changed frames, so it works on datasets of any size. Both label sets must label a shard for it to count;
shards labelled by only one are listed, not compared.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from matplotlib.figure import Figure
from tqdm import tqdm

from data_schema.dataset import Dataset
from data_schema.errors import DatasetError
from data_schema.query import PROGRESS_MIN_SHARDS, SHARD_COLUMN, attach_images
from data_schema.schema import KEY_COLUMNS, LABEL_SCHEMA
from pipeline.audit.html import png_img, table
from pipeline.audit.show import figure_png, show_frames

#: Columns compared by default: every label column.
LABEL_COLUMNS = tuple(c for c in LABEL_SCHEMA.names if c not in KEY_COLUMNS)


@dataclass
class _ColumnStats:
    """Running sums for one column. ``mean_a``/``mean_b`` are the mean value (number), the share true (bool)
    or the mean length (list, e.g. detections per frame); differences are kept for numbers only."""

    kind: str
    n: int = 0
    changed: int = 0
    sum_a: float = 0.0
    sum_b: float = 0.0
    sum_diff: float = 0.0
    sum_abs_diff: float = 0.0
    max_abs_diff: float = 0.0

    def row(self) -> dict[str, Any]:
        mean = (lambda s: s / self.n if self.n else math.nan)  # noqa: E731
        out = {"kind": self.kind, "frames": self.n, "changed": self.changed, "share_changed": mean(self.changed)}
        if self.kind in ("number", "bool", "list"):
            out.update(mean_a=mean(self.sum_a), mean_b=mean(self.sum_b))
        if self.kind == "number":
            out.update(mean_diff=mean(self.sum_diff), mean_abs_diff=mean(self.sum_abs_diff), max_abs_diff=self.max_abs_diff)
        return out


@dataclass
class _Correlation:
    """Pearson correlation from running sums (float64), exact for any number of shards."""

    n: int = 0
    sa: float = 0.0
    sb: float = 0.0
    saa: float = 0.0
    sbb: float = 0.0
    sab: float = 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = a.astype(np.float64), b.astype(np.float64)
        self.n += len(a)
        self.sa += a.sum()
        self.sb += b.sum()
        self.saa += (a * a).sum()
        self.sbb += (b * b).sum()
        self.sab += (a * b).sum()

    def value(self) -> float:
        if self.n < 2:
            return math.nan
        cov = self.sab - self.sa * self.sb / self.n
        var = (self.saa - self.sa**2 / self.n) * (self.sbb - self.sb**2 / self.n)
        return float(cov / math.sqrt(var)) if var > 0 else math.nan


@dataclass(frozen=True)
class LabelDiff:
    """The result of ``compare``: a per-column summary, the reward correlation and the most changed frames."""

    dataset: str
    a: str
    b: str
    frames: int
    shards: list[str]
    only_in_one: list[str]
    summary: pd.DataFrame
    reward_corr: float
    top_changed: pd.DataFrame
    hashes: tuple[str, str] = field(default=("", ""))

    def text(self) -> str:
        """A plain-text report for the terminal."""
        lines = [
            f"{self.dataset}: label set {self.a!r} ({self.hashes[0]}) vs {self.b!r} ({self.hashes[1]})",
            f"{self.frames} frame(s) in {len(self.shards)} shard(s) compared"
            + (f"; {len(self.only_in_one)} shard(s) labelled by only one set, not compared" if self.only_in_one else ""),
            f"reward correlation (Pearson): {self.reward_corr:.4f}",
            "",
            self.summary.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-"),
            "",
            f"frames whose reward changed most (top {len(self.top_changed)}):",
            self.top_changed.drop(columns=[SHARD_COLUMN]).to_string(index=False, float_format=lambda v: f"{v:.4g}")
            if not self.top_changed.empty
            else "(no frame changed)",
        ]
        return "\n".join(lines)

    def show(self, dataset: Dataset | str | None = None, image: str = "bev", n: int = 8, ncols: int = 4) -> Figure:
        """The top ``n`` changed frames as a grid, titled with reward in a, in b and the change."""
        top = self.top_changed.head(n)
        if image not in top.columns:
            top = attach_images(dataset if dataset is not None else self.dataset, top, [image])
        return show_frames(top, image=image, scores=("reward_a", "reward_b", "delta"), caption="vlm_text_b", ncols=ncols, max_frames=n)

    def to_html(self, dataset: Dataset | str | None = None, image: str = "bev", n: int = 8) -> str:
        """An HTML fragment: the summary tables and (when ``image`` is set) the changed frames as an embedded PNG."""
        parts = [
            f"<p>{html.escape(self.a)} vs {html.escape(self.b)}: {self.frames} frames in {len(self.shards)} shard(s); "
            f"reward correlation {self.reward_corr:.4f}</p>",
            table(self.summary),
            table(self.top_changed.drop(columns=[SHARD_COLUMN]), index=False),
        ]
        if image and not self.top_changed.empty:
            parts.append(png_img(figure_png(self.show(dataset, image=image, n=n)), f"frames whose reward changed most ({image})"))
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html(image="")


def compare(
    dataset: Dataset | str,
    a: str,
    b: str,
    columns: Sequence[str] | None = None,
    top: int = 12,
    atol: float = 1e-6,
    shards: Sequence[str] | None = None,
    progress: bool = True,
) -> LabelDiff:
    """Compare label sets ``a`` and ``b`` frame by frame on the shards both have labelled.

    A numeric value counts as changed when it differs by more than ``atol``; other values when not equal
    (null equals only null). ``top`` frames with the largest absolute reward change are kept with both
    rewards, semantic scores and VLM descriptions.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(str(dataset))
    set_a, set_b = ds.label_set(a), ds.label_set(b)
    hashes = (set_a.hash, set_b.hash)
    columns = list(columns) if columns is not None else list(LABEL_COLUMNS)
    unknown = [c for c in columns if c not in LABEL_COLUMNS]
    if unknown:
        raise KeyError(f"unknown label column(s) {unknown}; label columns: {list(LABEL_COLUMNS)}")
    read = list(dict.fromkeys([*columns, "reward", "semantic", "vlm_text"]))
    wanted = list(shards) if shards is not None else ds.shards()
    done_a, done_b = set(set_a.shards()), set(set_b.shards())
    both = [s for s in wanted if s in done_a and s in done_b]
    only = [s for s in wanted if (s in done_a) != (s in done_b)]
    stats = {c: _ColumnStats(_kind(LABEL_SCHEMA.field(c).type)) for c in columns}
    corr = _Correlation()
    best = pd.DataFrame()
    frames = 0
    for shard in tqdm(both, desc=f"comparing {a} / {b}", unit="shard", disable=not progress or len(both) < PROGRESS_MIN_SHARDS, leave=False):
        ta, tb = set_a.read_shard(shard, [*KEY_COLUMNS, *read], hashes[0]), set_b.read_shard(shard, [*KEY_COLUMNS, *read], hashes[1])
        ta, tb = _aligned(ta, tb, set_b.shard_path(shard))
        frames += ta.num_rows
        for c in columns:
            _accumulate(stats[c], ta.column(c), tb.column(c), atol)
        ra, rb = ta.column("reward").to_numpy(), tb.column("reward").to_numpy()
        corr.add(ra, rb)
        delta = rb.astype(np.float64) - ra.astype(np.float64)
        order = np.argsort(-np.abs(delta), kind="stable")[:top]
        order = order[np.abs(delta[order]) > atol]
        if len(order):
            chunk = pd.DataFrame(
                {
                    "episode_id": ta.column("episode_id").take(order).to_pylist(),
                    "step": ta.column("step").take(order).to_numpy(),
                    SHARD_COLUMN: shard,
                    "reward_a": ra[order],
                    "reward_b": rb[order],
                    "delta": delta[order],
                    "semantic_a": ta.column("semantic").to_numpy()[order],
                    "semantic_b": tb.column("semantic").to_numpy()[order],
                    "vlm_text_a": ta.column("vlm_text").take(order).to_pylist(),
                    "vlm_text_b": tb.column("vlm_text").take(order).to_pylist(),
                }
            )
            merged = pd.concat([best, chunk], ignore_index=True) if not best.empty else chunk
            best = merged.reindex(merged["delta"].abs().sort_values(ascending=False, kind="stable").index).head(top)
    summary = pd.DataFrame([dict(column=c, **stats[c].row()) for c in columns]).set_index("column")
    return LabelDiff(
        dataset=ds.url,
        a=a,
        b=b,
        frames=frames,
        shards=both,
        only_in_one=only,
        summary=summary,
        reward_corr=corr.value(),
        top_changed=best.reset_index(drop=True) if not best.empty else _empty_top(),
        hashes=hashes,
    )


def _aligned(ta: pa.Table, tb: pa.Table, path: str) -> tuple[pa.Table, pa.Table]:
    """Both label shards in the same (episode_id, step) order; they must hold the same keys."""
    ta = ta.sort_by([(k, "ascending") for k in KEY_COLUMNS])
    tb = tb.sort_by([(k, "ascending") for k in KEY_COLUMNS])
    same = ta.num_rows == tb.num_rows and all(ta.column(k).equals(tb.column(k)) for k in KEY_COLUMNS)
    if not same:
        raise DatasetError(f"{path}: its (episode_id, step) keys differ from the other label set's shard; relabel it")
    return ta, tb


def _kind(dtype: pa.DataType) -> str:
    if pa.types.is_floating(dtype) or pa.types.is_integer(dtype):
        return "number"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_list(dtype):
        return "list"
    return "text"


def _accumulate(s: _ColumnStats, a: pa.ChunkedArray, b: pa.ChunkedArray, atol: float) -> None:
    s.n += len(a)
    if s.kind == "number":
        x, y = a.to_numpy().astype(np.float64), b.to_numpy().astype(np.float64)
        diff = y - x
        both_nan = np.isnan(x) & np.isnan(y)
        s.changed += int((~both_nan & ~(np.abs(diff) <= atol)).sum())
        s.sum_a += float(np.nansum(x))
        s.sum_b += float(np.nansum(y))
        s.sum_diff += float(np.nansum(diff))
        s.sum_abs_diff += float(np.nansum(np.abs(diff)))
        if len(diff) and not np.all(np.isnan(diff)):
            s.max_abs_diff = max(s.max_abs_diff, float(np.nanmax(np.abs(diff))))
        return
    va, vb = a.to_pylist(), b.to_pylist()
    s.changed += sum(x != y for x, y in zip(va, vb))
    if s.kind == "bool":
        s.sum_a += sum(bool(x) for x in va)
        s.sum_b += sum(bool(y) for y in vb)
    elif s.kind == "list":
        s.sum_a += sum(len(x or ()) for x in va)
        s.sum_b += sum(len(y or ()) for y in vb)


def _empty_top() -> pd.DataFrame:
    return pd.DataFrame(
        columns=["episode_id", "step", SHARD_COLUMN, "reward_a", "reward_b", "delta", "semantic_a", "semantic_b", "vlm_text_a", "vlm_text_b"]
    )
