"""The label-set audit report: one self-contained HTML file (``pipeline audit``).

It is computed from a bounded sample of whole episodes (``pipeline.audit.sample``); images are read only
for the few frames shown. The report says what it sampled.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from data_schema.dataset import Dataset
from data_schema.groundtruth import HAZARD_KINDS, GateQuality
from data_schema.ranking import hazard_auroc
from data_schema.label_sets import LabelSetInfo
from data_schema.query import SHARD_COLUMN, attach_images
from data_schema.storage import atomic_write_bytes, filesystem
from pipeline.audit.config import ReportConfig
from pipeline.audit.html import page, paragraph, png_img, preformatted, section, table
from pipeline.audit.sample import APPROACH_STEPS, EVENT_TYPES, HAZARD_PREFIX, Sample, sample_frames
from pipeline.audit.show import figure_png, penalty_rows, plot_timeline, show_frames

__all__ = ["build_report", "findings", "gate_summary", "reward_validity", "vlm_validity", "write_report"]

HISTOGRAM_COLUMNS = (
    "sim_pos", "sim_neg", "r_static", "r_dynamic", "semantic", "desired_speed", "reward",
    "f_speed", "f_center", "f_angle", "f_stability",
)  # fmt: skip
#: Thresholds of the report's findings: a saturated semantic score, too few valid VLM answers, a weak gate.
SATURATED_SHARE = 0.95
MIN_VALID_SHARE = 0.9
MIN_RECALL = 0.9
MIN_PRECISION = 0.5
#: Below this AUROC against ground-truth hazards, the semantic score hardly ranks danger at all.
MIN_AUROC = 0.6
#: The scores whose ranking of danger the report shows: what the reward sees, and the pathways before clipping.
VALIDITY_SCORES = ("semantic", "r_static + r_dynamic")


def build_report(dataset: Dataset | str, label_set: str, config: ReportConfig = ReportConfig(), progress: bool = True) -> tuple[str, dict[str, Any]]:
    """The report's HTML and a summary of its figures (frames, gate share, recall, VLM validity, ...)."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(str(dataset))
    info = ds.label_set(label_set).info()
    sample = sample_frames(ds, label_set, config, progress)
    df = sample.frames
    gate = GateQuality.of(df["gate"].to_numpy(bool), df["critical"].to_numpy(bool))
    vlm = vlm_validity(df)
    validity = reward_validity(df)
    notes = findings(df, info, gate, vlm, validity) if not df.empty else []
    sections = [
        _provenance(ds, info, sample),
        section("Sample", paragraph(sample.describe(), "note")),
    ]
    if df.empty:
        sections.append(paragraph("The label set has no labelled frames yet: nothing to audit.", "warn"))
    else:
        sections += [
            section("Findings", *([paragraph(n, "warn") for n in notes] or [paragraph("Nothing stands out.", "note")])),
            _scores(df),
            _validity(df, validity, sample.truth),
            _gate(df, gate_summary(gate), sample.detection_classes, sample.truth),
            _vlm(df, vlm, info.vlm_enabled),
            _events(df),
            _worst(ds, df, config.worst),
            _timelines(df, config.timelines),
        ]
    if ds.bad_shards:
        listing = "\n".join(f"{shard}: {why}" for shard, why in ds.bad_shards.items())
        sections.append(section("Unreadable shards", paragraph(f"{len(ds.bad_shards)} shard(s) could not be read and are left out (--skip-bad):", "warn"), preformatted(listing)))
    summary = {
        "frames": len(df), "labelled_frames": sample.labelled_frames, "shards_read": len(sample.shards_read), **gate_summary(gate),
        **vlm, "auroc": validity["semantic"], "findings": notes, "bad_shards": dict(ds.bad_shards),
    }  # fmt: skip
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return page(f"Label audit: {label_set}", f"{ds.url} · generated {stamp}", sections), summary


def write_report(dataset: Dataset | str, label_set: str, out: str, config: ReportConfig = ReportConfig(), progress: bool = True) -> dict[str, Any]:
    """Build the report and write it to ``out`` (path or fsspec URL) atomically; returns its summary."""
    text, summary = build_report(dataset, label_set, config, progress)
    fs, path = filesystem(out)
    atomic_write_bytes(fs, path, text.encode("utf-8"))
    return summary


def findings(df: pd.DataFrame, info: LabelSetInfo, gate: GateQuality, vlm: dict[str, Any], validity: dict[str, dict[str, float | None]]) -> list[str]:
    """Plain-language warnings about labels that look wrong: what an auditor should look at first."""
    notes = []
    any_auroc = validity["semantic"]["any"]
    if any_auroc is not None and any_auroc < MIN_AUROC:
        notes.append(
            f"The semantic score hardly ranks danger: AUROC {any_auroc:.2f} against the ground-truth hazards (0.5 is chance). "
            "The static pathway may not read these frames; see `pipeline clip finetune` and `pipeline clip eval`."
        )
    semantic = df["semantic"].to_numpy(float)
    at_zero, at_one = float(np.mean(semantic <= 0.0)), float(np.mean(semantic >= 1.0))
    if max(at_zero, at_one) >= SATURATED_SHARE:
        reward = info.section("reward")
        total = df["r_static"].to_numpy(float) + df["r_dynamic"].to_numpy(float)
        notes.append(
            f"The semantic score is saturated: {at_zero:.0%} of frames at 0 and {at_one:.0%} at 1. r_static + r_dynamic spans "
            f"[{total.min():.4g}, {total.max():.4g}] against theta [{reward.get('theta_min', '?')}, {reward.get('theta_max', '?')}], "
            "so the desired speed carries no information: check the CLIP weights, the prompts and the theta range."
        )
    if not info.vlm_enabled:
        notes.append("The VLM pathway is off in this label set (vlm.enabled false): gated frames get no description and r_dynamic is 0.")
    elif not math.isnan(vlm["vlm_valid_share"]) and vlm["vlm_valid_share"] < MIN_VALID_SHARE:
        notes.append(f"Only {vlm['vlm_valid_share']:.0%} of the VLM's answers were valid ({vlm['vlm_invalid']} invalid): see the raw texts below.")
    if gate.recall is not None and gate.recall < MIN_RECALL:
        notes.append(f"The gate missed {gate.fn} of {gate.critical} frames with a critical road user in the corridor (recall {gate.recall:.0%}).")
    if gate.precision is not None and gate.precision < MIN_PRECISION:
        notes.append(f"{gate.fp} of {gate.gated} gated frames had no critical road user in the corridor (precision {gate.precision:.0%}).")
    return notes


def gate_summary(gate: GateQuality) -> dict[str, Any]:
    """The report's gate figures against the ground truth (``critical``); rates are None where undefined."""
    return {
        "gated": gate.gated, "gate_share": gate.share_gated, "critical": gate.critical, "true_positives": gate.tp,
        "false_positives": gate.fp, "missed": gate.fn, "recall": gate.recall, "precision": gate.precision,
    }  # fmt: skip


def reward_validity(df: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Per score of ``VALIDITY_SCORES``, its AUROC against each ground-truth hazard kind (``data_schema.ranking``):
    how well the score puts dangerous frames below safe ones. None where a kind has no frames."""
    kinds = {kind: df[HAZARD_PREFIX + kind].to_numpy(bool) for kind in HAZARD_KINDS}
    total = df["r_static"].to_numpy(float) + df["r_dynamic"].to_numpy(float)
    return {"semantic": hazard_auroc(df["semantic"].to_numpy(float), kinds), "r_static + r_dynamic": hazard_auroc(total, kinds)}


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


def _provenance(ds: Dataset, info: LabelSetInfo, sample: Sample) -> str:
    manifest = ds.manifest()
    provenance = info.provenance
    rows = [
        ("dataset", ds.url),
        ("format / schema", f"{manifest.get('format')} v{manifest.get('schema_version')}"),
        ("created", f"{manifest.get('created', '?')} by {manifest.get('created_by', '?')} on {manifest.get('host', '?')}"),
        ("raw shards", f"{sample.raw_shards:,}"),
        ("label sets", ", ".join(ds.label_sets())),
        ("label set", info.name),
        ("hash", info.hash),
        ("labelled", f"{sample.labelled_shards:,} of {sample.raw_shards:,} raw shards, {sample.labelled_frames:,} frames"),
        ("label set created", f"{provenance.get('created', '?')} (updated {provenance.get('updated', '?')})"),
        ("code version", str(provenance.get("code_version", "?"))),
        ("hosts", ", ".join(map(str, provenance.get("hosts", []))) or "?"),
    ]
    facts = table(pd.DataFrame(rows, columns=["", "value"]), index=False, key_value=True)
    warn = (
        paragraph(f"{sample.raw_shards - sample.labelled_shards} raw shard(s) have no labels in this set yet; they are not in this report.", "warn")
        if sample.labelled_shards < sample.raw_shards
        else ""
    )
    document = {k: v for k, v in dataclasses.asdict(info).items() if k != "path"}
    spec = f"<details><summary>label_set.json</summary>{preformatted(json.dumps(document, indent=2, sort_keys=True))}</details>"
    return section("Provenance", facts, warn, spec)


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


def _validity(df: pd.DataFrame, validity: dict[str, dict[str, float | None]], truth_text: str) -> str:
    explain = paragraph(
        "How well the scores rank the simulator's ground truth: AUROC is the probability that a frame with the hazard scores "
        "lower (more dangerous) than a frame with none, ties counting half; 1 ranks perfectly, 0.5 is chance. Hazards: "
        f"critical_agent is {truth_text}; vehicle_close a vehicle in the lane within braking distance; event_soon a collision "
        "or leaving the road within the next second; any is their union. The semantic score is clipped to the theta range, "
        "so its ties lower its AUROC below that of the unclipped sum."
    )
    counts = {kind: int(df[HAZARD_PREFIX + kind].sum()) for kind in HAZARD_KINDS}
    rows = [(score, *(validity[score][k] for k in HAZARD_KINDS)) for score in VALIDITY_SCORES]
    rows.append(("frames with the hazard", *(counts[k] for k in HAZARD_KINDS)))
    figures = pd.DataFrame(rows, columns=["AUROC", *HAZARD_KINDS])
    fig = Figure(figsize=(9, 3.0), layout="constrained")
    ax = fig.subplots()
    semantic = df["semantic"].to_numpy(float)
    safe = ~df[HAZARD_PREFIX + "any"].to_numpy(bool)
    bins = np.linspace(0.0, 1.0, 26)
    for label, mask in (("no hazard", safe), *((k, df[HAZARD_PREFIX + k].to_numpy(bool)) for k in HAZARD_KINDS if k != "any")):
        if mask.any():
            ax.hist(semantic[mask], bins=bins, density=True, histtype="step", linewidth=1.4, label=f"{label} ({mask.sum()})")
    ax.set_xlabel("semantic score (0 = dangerous, 1 = safe)")
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=8)
    return section("Reward validity", explain, table(figures, index=False), png_img(figure_png(fig), "semantic score by ground-truth hazard class"))


def _gate(df: pd.DataFrame, quality: dict[str, Any], classes: dict[str, int], truth_text: str) -> str:
    """``quality`` is ``gate_summary``'s dict."""
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
    # decoded here, shard by shard, so that a frame that does not decode is named (or its shard skipped: skip_bad)
    parts = [part for _, part in ds.readable(worst[SHARD_COLUMN].unique(), lambda s: attach_images(ds, worst[worst[SHARD_COLUMN] == s], ["bev", "camera"], decode=True))]
    if not parts:
        return section("Lowest-scored frames", paragraph("None of their frames could be read.", "warn"))
    worst = pd.concat(parts).sort_values(["semantic", "reward"], kind="stable")
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


def _clip_text(text: Any, limit: int = 240) -> str:
    text = " ".join(str(text).split()) if text is not None else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"

