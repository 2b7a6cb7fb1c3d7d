"""An experiment's results: the cells' evaluations gathered into one table (mean ± std over seeds), learning
curves and bar charts as PNG, and a self-contained HTML page.

Every figure is computed from the cells' ``result.json`` files, so the table can be checked against them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from data_schema.settings import to_mapping
from data_schema.storage import atomic_path, atomic_write_text
from pipeline.audit.html import page, paragraph, png_img, preformatted, section, table
from pipeline.audit.show import figure_png

__all__ = ["METRICS", "cell_frame", "summary_table", "write_results"]

#: (column, short name) of the VLM-RL metrics (and DriveVLM-RL's TCF) the table reports.
METRICS = (
    ("collision_rate", "CR"),
    ("route_completion", "RC"),
    ("success_rate", "SR"),
    ("avg_speed_kmh", "AS km/h"),
    ("total_distance_m", "TD m"),
    ("collision_speed_kmh", "CS km/h"),
    ("collisions_per_km", "CPK"),
    ("collisions_per_1000_steps", "TCF"),
)
KEYS = ["variant", "penalty"]


def cell_frame(cells: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell: its variant, penalty, seed and final metrics."""
    rows = [{"variant": c["variant"], "penalty": c["penalty"], "seed": c["seed"], "label_set": c["label_set"], **c["final"]} for c in cells]
    return pd.DataFrame(rows, columns=["variant", "penalty", "seed", "label_set", *(m for m, _ in METRICS)] + ["episodes", "steps"])


def summary_table(cells: pd.DataFrame, variants: Sequence[str], penalties: Sequence[float]) -> pd.DataFrame:
    """Mean and sample std over seeds of every metric, per (variant, penalty), in the spec's order."""
    values = cells[KEYS + [m for m, _ in METRICS]].astype({m: float for m, _ in METRICS})
    grouped = values.groupby(KEYS, sort=False)
    table_ = grouped.agg(["mean", "std"])
    table_.columns = [f"{metric}_{stat}" for metric, stat in table_.columns]
    table_["seeds"] = grouped.size()
    order = [(v, p) for p in penalties for v in variants if (v, p) in table_.index]
    return table_.loc[order].reset_index()


def markdown(summary: pd.DataFrame) -> str:
    """The table as Markdown: ``mean ± std`` per metric."""
    header = ["variant", "penalty", *(short for _, short in METRICS), "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in summary.iterrows():
        cells = [str(row["variant"]), f"{row['penalty']:g}"]
        cells += [_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m, _ in METRICS]
        lines.append("| " + " | ".join(cells + [str(int(row["seeds"]))]) + " |")
    return "\n".join(lines)


def _mean_std(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.3g} ± {std:.2g}" if np.isfinite(std) else f"{mean:.3g}"


def curves_png(cells: Sequence[dict[str, Any]], variants: Sequence[str], penalties: Sequence[float]) -> bytes:
    """Collision rate and route completion along training, mean over seeds with a ±1 std band."""
    fig = Figure(figsize=(11, 3.6 * len(penalties)), layout="constrained")
    axes = fig.subplots(len(penalties), 2, squeeze=False)
    for row, penalty in enumerate(penalties):
        for col, (metric, label) in enumerate((("collision_rate", "collision rate"), ("route_completion", "route completion"))):
            ax = axes[row][col]
            for variant in variants:
                curves = [pd.DataFrame(c["curve"]) for c in cells if c["variant"] == variant and c["penalty"] == penalty]
                if not curves:
                    continue
                joined = pd.concat(curves).groupby("grad_steps")[metric]
                mean, std = joined.mean(), joined.std().fillna(0.0)
                ax.plot(mean.index, mean.values, marker="o", label=variant)
                ax.fill_between(mean.index, mean - std, mean + std, alpha=0.15)
            ax.set_title(f"{label}, penalty {penalty:g}", fontsize=10)
            ax.set_xlabel("gradient updates")
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=8)
    return figure_png(fig)


def bars_png(summary: pd.DataFrame, variants: Sequence[str], penalties: Sequence[float]) -> bytes:
    """Collision rate and route completion per variant, one group of bars per penalty, ±1 std over seeds."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(variants), 1)
    for ax, (metric, label) in zip(axes, (("collision_rate", "collision rate"), ("route_completion", "route completion"))):
        for i, variant in enumerate(variants):
            rows = summary[summary["variant"] == variant].set_index("penalty").reindex(list(penalties))
            x = np.arange(len(penalties)) + (i - (len(variants) - 1) / 2) * width
            ax.bar(x, rows[f"{metric}_mean"], width, yerr=rows[f"{metric}_std"].fillna(0.0), capsize=3, label=variant)
        ax.set_xticks(np.arange(len(penalties)), [f"penalty {p:g}" for p in penalties])
        ax.set_title(label, fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
    return figure_png(fig)


def write_results(out: str | Path, spec: Any, cells: Sequence[dict[str, Any]], notes: Sequence[str] = ()) -> dict[str, Path]:
    """Write results.parquet / results.json / table.md / curves.png / bars.png / report.html under ``out``."""
    out = Path(out)
    variants = [v.name for v in spec.variants]
    penalties = list(spec.penalties)
    frame = cell_frame(cells)
    summary = summary_table(frame, variants, penalties)
    paths = {name: out / name for name in ("results.parquet", "results.json", "table.md", "curves.png", "bars.png", "report.html")}
    with atomic_path(paths["results.parquet"]) as tmp:
        frame.to_parquet(tmp, index=False)
    document = {"spec": spec.name, "digest": spec.digest(), "cells": list(cells), "table": json.loads(summary.to_json(orient="records"))}
    atomic_write_text(paths["results.json"], json.dumps(document, indent=2))
    text = markdown(summary)
    atomic_write_text(paths["table.md"], text + "\n")
    curves, bars = curves_png(cells, variants, penalties), bars_png(summary, variants, penalties)
    for name, png in (("curves.png", curves), ("bars.png", bars)):
        with atomic_path(paths[name]) as tmp:
            tmp.write_bytes(png)
    shown = summary.copy()
    for metric, short in METRICS:
        shown[short] = [_mean_std(m, s) for m, s in zip(shown.pop(f"{metric}_mean"), shown.pop(f"{metric}_std"))]
    html = page(
        f"Experiment: {spec.name}",
        f"{len(cells)} cells: {len(variants)} variants x {len(penalties)} penalties x {len(spec.seeds)} seeds, {spec.algorithm.name}",
        [
            section("Results (mean ± std over seeds)", table(shown, index=False), *(paragraph(n, "note") for n in notes)),
            section("Learning curves", png_img(curves, "collision rate and route completion along training")),
            section("Collision rate and route completion", png_img(bars, "final policies, mean and std over seeds")),
            section("Cells", table(frame, index=False)),
            section("Spec", paragraph(f"digest {spec.digest()}", "meta"), preformatted(yaml.safe_dump(to_mapping(spec), sort_keys=False))),
        ],
    )
    atomic_write_text(paths["report.html"], html)
    return paths
