"""pipeline.audit.report: the figures are right, the file is self-contained, and it renders in Chromium."""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import io
from pathlib import Path

import numpy as np
import pytest
from audit_chromium import chromium_path, load_page
from conftest import ENDINGS, HASH_V1, INVALID_TEXT, STEPS, in_corridor, pedestrian_at
from PIL import Image

from data_schema import Dataset
from pipeline.audit.config import ReportConfig
from pipeline.audit.show import penalty_rows
from data_schema.groundtruth import GateQuality
from pipeline.audit.report import build_report, findings, reward_validity, vlm_validity, write_report
from pipeline.audit.sample import sample_frames

ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "audit_report.png"
APT_HINT = "headless Chromium is not installed; on Debian/Ubuntu: apt-get update && apt-get install -y chromium"


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def report(audit_dataset: Dataset) -> tuple[str, dict]:
    return build_report(audit_dataset, "clg-v1", ReportConfig(worst=8, timelines=3), progress=False)


def test_report_figures_match_the_planted_labels(report: tuple[str, dict]) -> None:
    text, summary = report
    # 3 episodes x 7 frames with a pedestrian in the corridor; clg-v1's gate misses one of them
    assert (summary["critical"], summary["true_positives"], summary["missed"], summary["false_positives"]) == (21, 20, 1, 0)
    assert summary["recall"] == pytest.approx(20 / 21) and summary["precision"] == 1.0
    assert summary["gate_share"] == pytest.approx(20 / 240)
    # answers on gated frames at steps divisible by 4 are invalid: step 20 of ep002 and ep004 (ep000's is missed)
    assert (summary["vlm_valid"], summary["vlm_invalid"], summary["vlm_missing"]) == (18, 2, 0)
    assert summary["frames"] == summary["labelled_frames"] == 240
    for heading in ("Provenance", "Sample", "Findings", "Scores", "Gate", "VLM answers", "Reward by event type", "Lowest-scored frames", "Episode timelines"):
        assert f"<h2>{heading}</h2>" in text
    assert HASH_V1 in text and "0.1.0+gtest" in text and "All 240 labelled frames" in text
    assert "20 m ahead and 2 m either side" in text  # the corridor of the label set's gate settings
    assert ">collision</th>" in text and ">off-road</th>" in text and ">stuck</th>" in text


def test_reward_validity_is_the_auroc_of_the_semantic_score_against_the_planted_hazards(audit_dataset: Dataset, report: tuple[str, dict]) -> None:
    labels = audit_dataset.join("clg-v1", columns=["t"], label_columns=["semantic", "r_static", "r_dynamic"])
    # the fixture's own truth: a pedestrian in the corridor, or a collision / off-road ending within the next second
    episode = labels["episode_id"].map(lambda e: int(e[2:])).to_numpy()
    step = labels["step"].to_numpy()
    critical = np.array([(p := pedestrian_at(i, s)) is not None and in_corridor(*p) for i, s in zip(episode, step)])
    last_t = (STEPS - 1) * 0.1
    ends_badly = np.array([ENDINGS[i % len(ENDINGS)] in ("collision", "off_road") for i in episode])
    soon = ends_badly & (labels["t"].to_numpy() >= last_t - 1.0)
    danger = critical | soon
    assert critical.sum() == 21 and soon.sum() == 22

    def pair_count(safety: np.ndarray, positive: np.ndarray) -> float:
        a, b = safety[positive][:, None], safety[~positive][None, :]
        return float(np.mean((a < b) + 0.5 * (a == b)))

    semantic = labels["semantic"].to_numpy(float)
    total = (labels["r_static"] + labels["r_dynamic"]).to_numpy(float)
    text, summary = report
    assert summary["auroc"]["any"] == pytest.approx(pair_count(semantic, danger))
    assert summary["auroc"]["critical_agent"] == pytest.approx(pair_count(semantic[critical | ~danger], critical[critical | ~danger]))
    assert summary["auroc"]["vehicle_close"] is None  # the fixture's car is in the other lane
    assert 0.5 < summary["auroc"]["any"] < summary["auroc"]["critical_agent"] < 1.0
    assert reward_validity(report_frames(audit_dataset))["r_static + r_dynamic"]["any"] == pytest.approx(pair_count(total, danger))
    assert "<h2>Reward validity</h2>" in text


def report_frames(ds: Dataset):
    return sample_frames(ds, "clg-v1", ReportConfig(), progress=False).frames


def test_only_event_penalties_count_as_penalty_rows(audit_dataset: Dataset) -> None:
    labels = audit_dataset.join("clg-v1", columns=["collision", "off_road", "stuck"], label_columns=["reward", "penalty"])
    events = (labels.collision | labels.off_road | labels.stuck).to_numpy()
    assert (labels.reward[~events] == 0).any()  # frames that score 0 without an event: they are not penalties
    assert np.array_equal(penalty_rows(labels), events)


def test_report_is_self_contained_and_escapes_model_text(report: tuple[str, dict]) -> None:
    text, _ = report
    parser = _Tags()
    parser.feed(text)
    assert not [t for t, _ in parser.tags if t in ("script", "iframe", "object", "embed")]
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert len(images) >= 3 + 3  # histograms, events, BEV and camera grids, timelines
    for src in images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as png:
            assert png.format == "PNG" and png.width > 100
    links = [v for _, attrs in parser.tags for k, v in attrs.items() if k in ("href", "src") and v]
    assert all(v.startswith(("data:", "#")) for v in links), [v[:60] for v in links if not v.startswith("data:")]
    assert INVALID_TEXT not in text and "{not json &lt;script&gt;console.error(" in text


def test_large_datasets_are_sampled_as_whole_episodes(audit_dataset: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    config = ReportConfig(max_frames=100, seed=1, worst=0, timelines=0)  # no images: this test is about sampling
    summary = write_report(audit_dataset, "clg-v1", str(out), config, progress=False)
    assert summary["frames"] == 2 * STEPS  # whole episodes within the budget
    assert summary["shards_read"] == 1  # a second shard has no whole episode that fits: it is not read
    assert f"Sampled {2 * STEPS} of 240 labelled frames" in out.read_text()
    again = write_report(audit_dataset, "clg-v1", str(tmp_path / "again.html"), config, progress=False)
    assert again == summary


def test_report_renders_in_headless_chromium_without_errors(report: tuple[str, dict], tmp_path: Path) -> None:
    if chromium_path() is None:
        pytest.skip(APT_HINT)
    broken = tmp_path / "broken.html"
    broken.write_text('<img src="missing.png"><script>console.error("boom")</script>')
    control = load_page(broken.as_uri(), tmp_path / "broken.png")
    assert "boom" in control.console and control.failed_requests  # the harness does catch errors

    page = tmp_path / "report.html"
    page.write_text(report[0], encoding="utf-8")
    loaded = load_page(page.as_uri(), ARTIFACT)
    assert loaded.errors == []
    assert [r for r in loaded.requests if not r.startswith(("file:", "data:"))] == []  # nothing from the network
    assert loaded.images and all(i["complete"] and i["width"] > 0 for i in loaded.images)
    assert loaded.size[1] > 3000
    with Image.open(ARTIFACT) as shot:
        assert shot.height > 3000 and len(np.unique(np.asarray(shot.convert("L").resize((64, 256))))) > 20  # not blank
    print(f"report screenshot: {ARTIFACT}")


def test_findings_flag_saturated_scores_a_disabled_vlm_and_a_weak_gate(audit_dataset: Dataset) -> None:
    sample = sample_frames(audit_dataset, "clg-v1", ReportConfig(), progress=False)
    info = audit_dataset.label_set("clg-v1").info()
    df = sample.frames

    def gate(frames):
        return GateQuality.of(frames["gate"].to_numpy(bool), frames["critical"].to_numpy(bool))

    assert findings(df, info, gate(df), vlm_validity(df), reward_validity(df)) == []  # the planted dataset is healthy
    broken = df.assign(semantic=0.0, gate=False)
    off = dataclasses.replace(info, spec={**info.spec, "vlm": {"enabled": False}})
    notes = findings(broken, off, gate(broken), vlm_validity(broken), reward_validity(broken))
    assert len(notes) == 4
    assert notes[0].startswith("The semantic score hardly ranks danger: AUROC 0.50")  # constant: every pair ties
    assert notes[1].startswith("The semantic score is saturated: 100% of frames at 0")
    assert "VLM pathway is off" in notes[2]
    assert notes[3].startswith("The gate missed 21 of 21 frames")
