"""examples/audit_labels.ipynb runs top to bottom on a small dataset, and its cells assert what they show."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from data_schema import Dataset

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "audit_labels.ipynb"


@pytest.mark.slow
def test_notebook_executes_and_shows_its_figures(audit_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_DATASET", audit_dataset.url)
    monkeypatch.delenv("AUDIT_LABEL_SET", raising=False)
    monkeypatch.delenv("AUDIT_COMPARE_WITH", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    asserting = [c for c in notebook.cells if c.cell_type == "code" and "assert " in c.source]
    assert len(asserting) >= 5  # open, join, filters, grid, timeline, compare each check what they show
    NotebookClient(notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 3  # frame grid, episode timeline, most changed frames
    text = "".join(o.get("text", "") for o in outputs)
    assert "gated 20 of 240 (8.3%)" in text and "invalid VLM answers: 2" in text
    assert any("reward correlation" in o.get("data", {}).get("text/html", "") or "frames in 2 shard(s)" in o.get("data", {}).get("text/html", "") for o in outputs)
