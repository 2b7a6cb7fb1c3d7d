"""``pipeline labels diff`` and ``pipeline audit`` through the click group, as a user runs them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from data_schema import Dataset
from pipeline.cli import main


def test_labels_diff_prints_the_planted_frames_first_and_writes_png_and_html(audit_dataset: Dataset, tmp_path: Path) -> None:
    png, page = tmp_path / "diff.png", tmp_path / "diff.html"
    result = CliRunner().invoke(main, ["labels", "diff", audit_dataset.url, "clg-v1", "clg-v2", "--top", "3", "--png", str(png), "--html", str(page)])
    assert result.exit_code == 0, result.output
    table = result.output.split("changed most (top 3):")[1].strip().splitlines()
    assert [line.split()[:2] for line in table[1:4]] == [["ep001", "12"], ["ep003", "30"], ["ep005", "5"]]
    assert "reward correlation (Pearson)" in result.output
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 300
    assert page.read_text().count("data:image/png;base64,") == 1


def test_labels_diff_and_audit_report_bad_input_clearly(audit_dataset: Dataset, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["labels", "diff", audit_dataset.url, "clg-v1", "clg-v7"])
    assert missing.exit_code == 1 and "label set 'clg-v7' does not exist" in missing.output
    column = runner.invoke(main, ["labels", "diff", audit_dataset.url, "clg-v1", "clg-v2", "--columns", "reward,speed"])
    assert column.exit_code == 1 and "unknown label column(s) ['speed']" in column.output
    not_a_dataset = runner.invoke(main, ["audit", str(tmp_path), "--label-set", "clg-v1", "--out", str(tmp_path / "r.html")])
    assert not_a_dataset.exit_code == 1 and "dataset.json: not found" in not_a_dataset.output


def test_audit_writes_the_report_and_prints_its_figures(audit_dataset: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["audit", audit_dataset.url, "--label-set", "clg-v1", "--out", str(out), "--max-frames", "80", "--worst", "4", "--timelines", "1"])
    assert result.exit_code == 0, result.output
    assert "frames 80 of 240 labelled" in result.output and "recall" in result.output
    text = out.read_text()
    assert "Sampled 80 of 240" in text and text.count("episode ep0") >= 1
