"""The label-set audit report: one self-contained HTML file (``pipeline audit``).

It reads a bounded sample: labelled shards in a seeded random order, whole episodes, until ``max_frames``
frames are held, each shard reduced on reading to compact scalar columns (agents become one ground-truth
flag). Images are read only for the few frames shown. The report says what it sampled.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from tqdm import tqdm

from data_schema.dataset import Dataset
from data_schema.schema import KEY_COLUMNS
from data_schema.query import PROGRESS_MIN_SHARDS, SHARD_COLUMN, attach_images, iter_frames, labelled_shards
from data_schema.storage import atomic_write_bytes, filesystem
from pipeline.audit.config import ReportConfig
from pipeline.audit.groundtruth import describe, ground_truth, truth_config
from pipeline.audit.html import page, paragraph, png_img, preformatted, section, table
from pipeline.audit.show import figure_png, penalty_rows, plot_timeline, show_frames

#: Raw and label columns the report reads for every sampled frame (no images, no VLM JSON; agents are
#: read as Arrow and reduced to the ground-truth flag ``critical`` at once).
SAMPLE_COLUMNS = (
    "t", "speed", "collision", "collision_with", "off_road", "stuck", "red_light", "terminated", "truncated", "is_last",
    "sim_pos", "sim_neg", "r_static", "gate", "gate_source", "detections", "vlm_text", "vlm_ok", "r_dynamic",
    "semantic", "desired_speed", "f_speed", "f_center", "f_angle", "f_stability", "penalty", "reward",
)  # fmt: skip
HISTOGRAM_COLUMNS = (
    "sim_pos", "sim_neg", "r_static", "r_dynamic", "semantic", "desired_speed", "reward",
    "f_speed", "f_center", "f_angle", "f_stability",
)  # fmt: skip
EVENT_TYPES = ("collision", "off-road", "stuck", "normal")
#: Thresholds of the report's findings: a saturated semantic score, too few valid VLM answers, a weak gate.
SATURATED_SHARE = 0.95
MIN_VALID_SHARE = 0.9
MIN_RECALL = 0.9
MIN_PRECISION = 0.5
#: Steps before a terminal event whose rewards show how the labels saw it coming.
APPROACH_STEPS = 10


@dataclass(frozen=True)
class Sample:
    """The frames a report is computed from and how they were chosen."""

    frames: pd.DataFrame
    detection_classes: dict[str, int]
    raw_shards: int
    labelled_shards: int
    labelled_frames: int
    shards_read: list[str]
    seed: int
    max_frames: int
    truth: str

    @property
    def complete(self) -> bool:
        return len(self.frames) == self.labelled_frames

    def describe(self) -> str:
        episodes = self.frames["episode_id"].nunique() if len(self.frames) else 0
        if self.complete:
            return f"All {len(self.frames):,} labelled frames ({episodes:,} episode(s) in {self.labelled_shards} shard(s)) were read."
        return (
            f"Sampled {len(self.frames):,} of {self.labelled_frames:,} labelled frames ({len(self.frames) / max(self.labelled_frames, 1):.1%}): "
            f"{episodes:,} whole episode(s) from {len(self.shards_read)} of {self.labelled_shards} labelled shard(s), "
            f"shards and episodes taken in a random order (seed {self.seed}) up to --max-frames {self.max_frames:,}."
        )


def sample_frames(dataset: Dataset, label_set: str, config: ReportConfig = ReportConfig(), progress: bool = True) -> Sample:
    """Read compact rows of whole episodes from randomly ordered shards until ``config.max_frames`` are held."""
    shards = labelled_shards(dataset, label_set)
    labels = dataset.label_set(label_set)
    sizes = {s: _num_rows(dataset, labels.shard_path(s)) for s in shards}
    truth = truth_config(labels.spec(), config.corridor_length, config.corridor_half_width)
    rng = np.random.default_rng(config.seed)
    order = [shards[i] for i in rng.permutation(len(shards))]
    kept: list[pd.DataFrame] = []
    classes: collections.Counter[str] = collections.Counter()
    held = 0
    read: list[str] = []
    bar = tqdm(total=config.max_frames, desc=f"sampling {label_set}", unit="frame", disable=not progress or len(order) < PROGRESS_MIN_SHARDS, leave=False)
    for df in iter_frames(dataset, label_set, columns=SAMPLE_COLUMNS, shards=order, progress=False):
        if held >= config.max_frames:
            break
        shard = df[SHARD_COLUMN].iloc[0] if len(df) else None
        df = _take_episodes(df, config.max_frames - held, rng, first=not kept)
        if df.empty:
            break  # no whole episode fits what is left of the budget: more shards would not change that
        read.append(shard)
        agents = dataset.read_shard(shard, [*KEY_COLUMNS, "agents"])
        critical = pd.DataFrame({k: agents.column(k).to_numpy() for k in KEY_COLUMNS})
        critical["critical"] = ground_truth(agents.column("agents"), truth)
        df = df.merge(critical, on=list(KEY_COLUMNS), how="left", validate="one_to_one")
        classes.update(det["cls"] for dets in df["detections"] for det in dets)
        kept.append(df)
        held += len(df)
        bar.update(len(df))
    bar.close()
    frames = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=[*SAMPLE_COLUMNS, SHARD_COLUMN, "critical"])
    frames["event"] = event_types(frames)
    frames["approach"] = approaching(frames, APPROACH_STEPS)
    return Sample(
        frames, dict(classes), len(dataset.shards()), len(shards), sum(sizes.values()), read, config.seed, config.max_frames, describe(truth)
    )


def event_types(df: pd.DataFrame) -> pd.Series:
    """The terminal event of each row: collision, off-road, stuck (in that precedence) or normal."""
    if df.empty:
        return pd.Series([], dtype=object)
    kinds = np.select(
        [df["collision"].to_numpy(bool), df["off_road"].to_numpy(bool), df["stuck"].to_numpy(bool)],
        list(EVENT_TYPES[:3]),
        default="normal",
    )
    return pd.Series(kinds, index=df.index)


def approaching(df: pd.DataFrame, steps: int) -> pd.Series:
    """For each row, the terminal event its episode reaches within ``steps`` steps after it, else "normal"."""
    out = pd.Series("normal", index=df.index, dtype=object)
    events = df[df["event"] != "normal"]
    for _, hit in events.iterrows():
        before = (df["episode_id"] == hit["episode_id"]) & (df["step"] < hit["step"]) & (df["step"] >= hit["step"] - steps)
        out[before & (out == "normal")] = hit["event"]
    out[df["event"] != "normal"] = "(event row)"
    return out


def build_report(dataset: Dataset | str, label_set: str, config: ReportConfig = ReportConfig(), progress: bool = True) -> tuple[str, dict[str, Any]]:
    """The report's HTML and a summary of its figures (frames, gate share, recall, VLM validity, ...)."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(str(dataset))
    document = ds.label_set(label_set).spec()
    sample = sample_frames(ds, label_set, config, progress)
    df = sample.frames
    gate = gate_quality(df)
    vlm = vlm_validity(df)
    notes = findings(df, document, gate, vlm) if not df.empty else []
    summary = {"frames": len(df), "labelled_frames": sample.labelled_frames, "shards_read": len(sample.shards_read), **gate, **vlm, "findings": notes}
    sections = [
        _provenance(ds, label_set, document, sample),
        section("Sample", paragraph(sample.describe(), "note")),
    ]
    if df.empty:
        sections.append(paragraph("The label set has no labelled frames yet: nothing to audit.", "warn"))
    else:
        sections += [
            section("Findings", *([paragraph(n, "warn") for n in notes] or [paragraph("Nothing stands out.", "note")])),
            _scores(df),
            _gate(df, gate, sample.detection_classes, sample.truth),
            _vlm(df, vlm, _vlm_enabled(document)),
            _events(df),
            _worst(ds, df, config.worst),
            _timelines(df, config.timelines),
        ]
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return page(f"Label audit: {label_set}", f"{ds.url} · generated {stamp}", sections), summary


def write_report(dataset: Dataset | str, label_set: str, out: str, config: ReportConfig = ReportConfig(), progress: bool = True) -> dict[str, Any]:
    """Build the report and write it to ``out`` (path or fsspec URL) atomically; returns its summary."""
    text, summary = build_report(dataset, label_set, config, progress)
    fs, path = filesystem(out)
    atomic_write_bytes(fs, path, text.encode("utf-8"))
    return summary


def findings(df: pd.DataFrame, document: dict[str, Any], gate: dict[str, Any], vlm: dict[str, Any]) -> list[str]:
    """Plain-language warnings about labels that look wrong: what an auditor should look at first."""
    notes = []
    semantic = df["semantic"].to_numpy(float)
    at_zero, at_one = float(np.mean(semantic <= 0.0)), float(np.mean(semantic >= 1.0))
    if max(at_zero, at_one) >= SATURATED_SHARE:
        reward = document.get("spec", {}).get("reward", {})
        total = df["r_static"].to_numpy(float) + df["r_dynamic"].to_numpy(float)
        notes.append(
            f"The semantic score is saturated: {at_zero:.0%} of frames at 0 and {at_one:.0%} at 1. r_static + r_dynamic spans "
            f"[{total.min():.4g}, {total.max():.4g}] against theta [{reward.get('theta_min', '?')}, {reward.get('theta_max', '?')}], "
            "so the desired speed carries no information: check the CLIP weights, the prompts and the theta range."
        )
    if not _vlm_enabled(document):
        notes.append("The VLM pathway is off in this label set (vlm.enabled false): gated frames get no description and r_dynamic is 0.")
    elif not math.isnan(vlm["vlm_valid_share"]) and vlm["vlm_valid_share"] < MIN_VALID_SHARE:
        notes.append(f"Only {vlm['vlm_valid_share']:.0%} of the VLM's answers were valid ({vlm['vlm_invalid']} invalid): see the raw texts below.")
    if gate["critical"] and gate["recall"] < MIN_RECALL:
        notes.append(f"The gate missed {gate['missed']} of {gate['critical']} frames with a critical road user in the corridor (recall {gate['recall']:.0%}).")
    if gate["gated"] and gate["precision"] < MIN_PRECISION:
        notes.append(f"{gate['false_positives']} of {gate['gated']} gated frames had no critical road user in the corridor (precision {gate['precision']:.0%}).")
    return notes


def _vlm_enabled(document: dict[str, Any]) -> bool:
    return bool(document.get("spec", {}).get("vlm", {}).get("enabled", True))


def gate_quality(df: pd.DataFrame) -> dict[str, Any]:
    """Gate share, and recall / precision against the ground truth (``critical``)."""
    gate, truth = df["gate"].to_numpy(bool), df["critical"].to_numpy(bool)
    tp, fp, fn = int((gate & truth).sum()), int((gate & ~truth).sum()), int((~gate & truth).sum())
    return {
        "gated": int(gate.sum()),
        "gate_share": float(gate.mean()) if len(gate) else float("nan"),
        "critical": int(truth.sum()),
        "true_positives": tp,
        "false_positives": fp,
        "missed": fn,
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
    }


def vlm_validity(df: pd.DataFrame) -> dict[str, Any]:
    """Counts of VLM answers on gated frames: valid, invalid, none recorded."""
    gated = df[df["gate"].astype(bool)]
    ok = gated["vlm_ok"].astype("boolean")
    valid, invalid = int((ok == True).sum()), int((ok == False).sum())  # noqa: E712
    return {
        "vlm_valid": valid,
        "vlm_invalid": invalid,
        "vlm_missing": int(ok.isna().sum()),
        "vlm_valid_share": valid / (valid + invalid) if valid + invalid else float("nan"),
    }


# -- sections ----------------------------------------------------------------------------------------------


def _provenance(ds: Dataset, label_set: str, document: dict[str, Any], sample: Sample) -> str:
    manifest = ds.manifest()
    provenance = document.get("provenance", {})
    rows = [
        ("dataset", ds.url),
        ("format / schema", f"{manifest.get('format')} v{manifest.get('schema_version')}"),
        ("created", f"{manifest.get('created', '?')} by {manifest.get('created_by', '?')} on {manifest.get('host', '?')}"),
        ("raw shards", f"{sample.raw_shards:,}"),
        ("label sets", ", ".join(ds.label_sets())),
        ("label set", label_set),
        ("hash", str(document.get("hash", "?"))),
        ("labelled", f"{sample.labelled_shards:,} of {sample.raw_shards:,} raw shards, {sample.labelled_frames:,} frames"),
        ("label set created", f"{provenance.get('created', '?')} (updated {provenance.get('updated', '?')})"),
        ("code version", str(provenance.get("code_version", "?"))),
        ("hosts", ", ".join(map(str, provenance.get("hosts", []))) or "?"),
    ]
    info = table(pd.DataFrame(rows, columns=["", "value"]), index=False, key_value=True)
    warn = (
        paragraph(f"{sample.raw_shards - sample.labelled_shards} raw shard(s) have no labels in this set yet; they are not in this report.", "warn")
        if sample.labelled_shards < sample.raw_shards
        else ""
    )
    spec = f"<details><summary>label_set.json</summary>{preformatted(json.dumps(document, indent=2, sort_keys=True))}</details>"
    return section("Provenance", info, warn, spec)


def _scores(df: pd.DataFrame) -> str:
    columns = [c for c in HISTOGRAM_COLUMNS if c in df.columns]
    ncols = 4
    fig = Figure(figsize=(13, 2.6 * -(-len(columns) // ncols)), layout="constrained")
    axes = fig.subplots(-(-len(columns) // ncols), ncols, squeeze=False).ravel()
    penalised = penalty_rows(df)
    for ax, column in zip(axes, columns):
        values = df[column].to_numpy(float)
        note = ""
        if column == "r_dynamic":
            values, note = values[df["gate"].to_numpy(bool)], " (gated frames)"
        elif column == "reward":
            values, note = values[~penalised], f" ({int(penalised.sum())} penalty rows left out)"
        values = values[np.isfinite(values)]
        if len(values):
            ax.hist(values, bins=40, color="#4c78a8")
        ax.set_title(column + note, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(columns) :]:
        ax.set_axis_off()
    stats = df[columns].astype(float).describe(percentiles=[0.05, 0.5, 0.95]).T
    return section("Scores", png_img(figure_png(fig), "distribution of each score over the sampled frames"), table(stats))


def _gate(df: pd.DataFrame, quality: dict[str, Any], classes: dict[str, int], truth_text: str) -> str:
    truth = f"Ground truth (the simulator's agents): {truth_text}."
    counts = pd.DataFrame(
        [
            ("frames", len(df)),
            ("gated (sent to the VLM)", quality["gated"]),
            ("gate share", quality["gate_share"]),
            ("critical agent in corridor (ground truth)", quality["critical"]),
            ("gated and critical", quality["true_positives"]),
            ("gated, nothing critical", quality["false_positives"]),
            ("critical, not gated (missed)", quality["missed"]),
            ("recall", quality["recall"]),
            ("precision", quality["precision"]),
        ],
        columns=["gate", "value"],
    )
    sources = df["gate_source"].value_counts().rename_axis("gate source").reset_index(name="frames")
    parts = [paragraph(truth), table(counts, index=False), table(sources, index=False)]
    if classes:
        parts.append(table(pd.DataFrame(sorted(classes.items(), key=lambda kv: -kv[1]), columns=["detected class", "boxes"]), index=False))
    missed = df[df["critical"] & ~df["gate"].astype(bool)]
    if len(missed):
        parts.append("<h3>Missed frames (first 10)</h3>" + table(missed[["episode_id", "step", "speed", "semantic"]].head(10), index=False))
    return section("Gate", *parts)


def _vlm(df: pd.DataFrame, validity: dict[str, Any], enabled: bool) -> str:
    if not enabled:
        return section("VLM answers", paragraph("The VLM pathway is off in this label set: there are no answers to audit.", "note"))
    counts = pd.DataFrame(
        [
            ("valid answers", validity["vlm_valid"]),
            ("invalid answers (vlm_ok = false)", validity["vlm_invalid"]),
            ("gated frames without an answer", validity["vlm_missing"]),
            ("valid share", validity["vlm_valid_share"]),
        ],
        columns=["VLM on gated frames", "value"],
    )
    parts = [table(counts, index=False)]
    gated = df[df["gate"].astype(bool)]
    ok = gated["vlm_ok"].astype("boolean")
    invalid = gated[(ok == False).fillna(False)]  # noqa: E712
    if len(invalid):
        shown = invalid[["episode_id", "step", "vlm_text"]].head(10).assign(vlm_text=lambda d: d["vlm_text"].map(_clip_text))
        parts.append("<h3>Invalid answers (raw text, first 10)</h3>" + table(shown, index=False))
    valid = gated[(ok == True).fillna(False)]  # noqa: E712
    if len(valid):
        common = valid["vlm_text"].map(_clip_text).value_counts().head(10).rename_axis("description").reset_index(name="frames")
        parts.append("<h3>Most frequent risk descriptions</h3>" + table(common, index=False))
    return section("VLM answers", *parts)


def _events(df: pd.DataFrame) -> str:
    groups = df.groupby("event")
    stats = groups["reward"].describe()[["count", "mean", "std", "min", "50%", "max"]]
    stats["mean semantic"] = groups["semantic"].mean()
    stats = stats.reindex([e for e in EVENT_TYPES if e in stats.index])
    lead = df[df["approach"].isin(EVENT_TYPES[:3])].groupby("approach")[["reward", "semantic", "speed"]].mean()
    stats[f"reward, {APPROACH_STEPS} steps before"] = lead["reward"]
    stats[f"semantic, {APPROACH_STEPS} steps before"] = lead["semantic"]
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.subplots()
    groups_shown = [(f"{e}\n({APPROACH_STEPS} steps before)", df.loc[df["approach"] == e, "reward"]) for e in EVENT_TYPES[:3]]
    groups_shown.append(("normal", df.loc[df["approach"] == "normal", "reward"]))
    groups_shown = [(name, v.to_numpy(float)) for name, v in groups_shown if len(v)]
    ax.boxplot([v for _, v in groups_shown], tick_labels=[name for name, _ in groups_shown])
    ax.set_ylabel("reward")
    ax.tick_params(labelsize=8)
    ax.set_title("reward of the steps leading to each event type vs normal driving", fontsize=9)
    explain = paragraph(
        f"Rows are typed by the event observed on arriving at them; the event row itself carries the penalty. "
        f"The last columns and the plot show the {APPROACH_STEPS} steps before each event: rewards that stay high there "
        "mean the labels did not see the event coming. Normal: rows neither an event nor just before one."
    )
    return section("Reward by event type", explain, table(stats.rename_axis("event")), png_img(figure_png(fig), "reward before events vs normal driving"))


def _worst(ds: Dataset, df: pd.DataFrame, n: int) -> str:
    if n == 0:
        return ""
    worst = df.sort_values(["semantic", "reward"], kind="stable").head(n)
    worst = attach_images(ds, worst, ["bev", "camera"])
    parts = [
        paragraph(f"The {len(worst)} frames with the lowest semantic score (0 = dangerous); yellow border: gated; caption: the VLM's description."),
        png_img(figure_png(show_frames(worst, image="bev", max_frames=n)), "lowest-scored frames, BEV"),
    ]
    if worst["camera"].notna().any():
        parts.append(png_img(figure_png(show_frames(worst, image="camera", max_frames=n)), "lowest-scored frames, front camera with gate detections"))
    parts.append(table(worst[["episode_id", "step", "event", "semantic", "reward", "gate", "vlm_ok"]], index=False))
    return section("Lowest-scored frames", *parts)


def _timelines(df: pd.DataFrame, n: int) -> str:
    if n == 0:
        return ""
    chosen = pick_episodes(df, n)
    figures = [png_img(figure_png(plot_timeline(df[df["episode_id"] == e])), f"episode {e}") for e in chosen]
    return section("Episode timelines", paragraph("Episodes with a collision, off-road or stuck ending first, then those with the most gated frames."), *figures)


def pick_episodes(df: pd.DataFrame, n: int) -> list[str]:
    """Up to ``n`` episodes worth looking at: one per terminal event type, then the most gated."""
    chosen: list[str] = []
    for event in EVENT_TYPES[:3]:
        hits = df.loc[df["event"] == event, "episode_id"]
        if len(hits) and hits.iloc[0] not in chosen:
            chosen.append(hits.iloc[0])
    by_gate = df.groupby("episode_id", sort=False)["gate"].sum().sort_values(ascending=False, kind="stable")
    chosen += [e for e in by_gate.index if e not in chosen]
    return chosen[:n]


def _take_episodes(df: pd.DataFrame, budget: int, rng: np.random.Generator, first: bool) -> pd.DataFrame:
    """Whole episodes of ``df`` in random order that fit ``budget``; the first shard always yields something."""
    sizes = df.groupby("episode_id", sort=False).size()
    if sizes.sum() <= budget:
        return df
    keep, total = [], 0
    for episode in sizes.index[rng.permutation(len(sizes))]:
        if total + sizes[episode] <= budget:
            keep.append(episode)
            total += sizes[episode]
    if not keep and first:
        episode = sizes.index[0]
        return df[df["episode_id"] == episode].sort_values("step").head(budget).reset_index(drop=True)
    return df[df["episode_id"].isin(keep)].reset_index(drop=True)


def _num_rows(ds: Dataset, path: str) -> int:
    with ds.fs.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows


def _clip_text(text: Any, limit: int = 240) -> str:
    text = " ".join(str(text).split()) if text is not None else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"

