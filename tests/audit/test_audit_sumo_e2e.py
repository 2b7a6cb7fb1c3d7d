"""End to end on real parts: SUMO rollouts, annotated twice with a random-weight CLIP and the scene gate, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audit_chromium import chromium_path, load_page

from annotate.config import load_config
from annotate.run import RunOptions, annotate_dataset
from collect.collector import collect_episodes
from collect.env import EnvSpec, EpisodeLimits
from data_schema import Dataset
from data_schema import query as q
from pipeline.audit.compare import compare
from pipeline.audit.config import ReportConfig
from pipeline.audit.report import build_report

ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "audit_report_sumo.png"
#: Random CLIP weights put r_static near -0.06; a wider theta range keeps the semantic score off its bounds.
SETTINGS = ["clip.model=ViT-S-32-alt", "clip.pretrained=none", "clip.device=cpu", "gate.source=scene", "reward.theta_min=-0.2"]


@pytest.mark.slow
def test_audit_of_a_real_sumo_dataset(tmp_path: Path) -> None:
    url = str(tmp_path / "town")
    collect_episodes(url, EnvSpec(limits=EpisodeLimits(max_steps=40)), "expert", episodes=2, seed=3, episodes_per_shard=1)
    for name, extra in (("clg-v1", []), ("clg-v2", ["prompts.positive=An empty street with no pedestrians"])):
        summary = annotate_dataset(url, load_config(None, SETTINGS + extra), RunOptions(name, processes=False, workers=1, progress=False))
        assert not summary.failed
    ds = Dataset.open(url)

    df = q.frames(ds, "clg-v1", columns=["speed", "semantic", "reward", "gate"])
    assert len(df) == ds.info()["steps"] and not df.duplicated(["episode_id", "step"]).any()

    text, summary = build_report(ds, "clg-v1", ReportConfig(worst=4, timelines=2), progress=False)
    recorded = ds.label_set("clg-v1").document()["provenance"]["last_run"]
    # the report scores the gate with annotate's own ground truth, so it agrees with what annotate recorded
    assert summary["gated"] == recorded["gated"] and summary["frames"] == recorded["frames"]
    assert summary["gate_share"] == pytest.approx(recorded["gate_share"])
    if recorded.get("gate_recall") is not None:
        assert summary["recall"] == pytest.approx(recorded["gate_recall"])
    assert "The VLM pathway is off in this label set" in " ".join(summary["findings"])
    assert not any("saturated" in n for n in summary["findings"])
    assert "25 m ahead and 1.75 m either side" in text  # the corridor of annotate's default gate settings

    diff = compare(ds, "clg-v1", "clg-v2", top=5, progress=False)
    # a new positive prompt re-scores sim_pos from the same image embeddings; the negative prompt and gate stay
    assert diff.summary.loc["sim_pos", "share_changed"] > 0.99
    assert diff.summary.loc["sim_neg", "changed"] == 0 and diff.summary.loc["gate", "changed"] == 0
    assert len(diff.top_changed) == 5 and diff.top_changed.delta.abs().is_monotonic_decreasing

    if chromium_path() is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium): report not rendered")
    page = tmp_path / "report.html"
    page.write_text(text, encoding="utf-8")
    loaded = load_page(page.as_uri(), ARTIFACT)
    assert loaded.errors == [] and all(i["complete"] and i["width"] > 0 for i in loaded.images)
    print(f"report screenshot: {ARTIFACT}\nreport summary: {json.dumps(summary, default=str)}")
