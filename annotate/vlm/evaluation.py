"""How well a VLM answers gated windows, against the ground-truth answers (``pipeline vlm eval``).

Every window counts: a malformed answer is wrong on hazard and action. Risk error and correlation are over
the valid answers (their count is reported). ``hazard_majority`` is the accuracy of always giving the most
common hazard value, the figure to beat.
"""

from __future__ import annotations

import io
import json
import time
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_schema.images import decode_pil
from data_schema.storage import atomic_path

from annotate.vlm.answer import VlmAnswer
from annotate.vlm.backend import VlmBackend
from annotate.vlm.sft_data import GatedWindow

__all__ = ["VlmEvaluation", "evaluate", "examples_png"]

#: Windows per ``assess`` call: one progress-bar tick.
_CHUNK = 32


@dataclass(frozen=True)
class VlmEvaluation:
    windows: int
    valid_share: float
    hazard_accuracy: float
    hazard_majority: float
    risk_mae: float | None
    risk_correlation: float | None
    risk_valid: int
    action_accuracy: float
    description_exact: float
    answers_per_s: float
    seconds: float
    structured_output: bool

    def as_dict(self) -> dict[str, float | int | bool | None]:
        return asdict(self)

    def lines(self) -> list[str]:
        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        return [
            f"windows: {self.windows} (constrained decoding {'on' if self.structured_output else 'off'})",
            f"valid answers: {self.valid_share:.1%}",
            f"hazard accuracy: {self.hazard_accuracy:.3f} (always the majority answer: {self.hazard_majority:.3f})",
            f"risk: MAE {fmt(self.risk_mae)}, correlation {fmt(self.risk_correlation)} over {self.risk_valid} valid answers",
            f"action accuracy: {self.action_accuracy:.3f}; description exactly as the target: {self.description_exact:.3f}",
            f"answers/s: {self.answers_per_s:.2f} ({self.seconds:.1f} s)",
        ]


def evaluate(
    windows: Sequence[GatedWindow], backend: VlmBackend, progress: bool = True
) -> tuple[VlmEvaluation, list[VlmAnswer]]:
    """Ask ``backend`` about every window and score its answers against the windows' targets."""
    if not windows:
        raise ValueError("no gated windows to evaluate")
    answers: list[VlmAnswer] = []
    start = time.perf_counter()
    with tqdm(total=len(windows), desc="vlm eval", unit="window", disable=not progress) as bar:
        for lo in range(0, len(windows), _CHUNK):
            chunk = windows[lo : lo + _CHUNK]
            answers.extend(backend.assess([list(w.frames) for w in chunk]))
            bar.update(len(chunk))
    seconds = time.perf_counter() - start
    parsed = [json.loads(a.answer_json) if a.ok and a.answer_json else None for a in answers]
    targets = [w.target for w in windows]
    valid = [(p, t) for p, t in zip(parsed, targets) if p is not None]
    hazards = np.array([t["hazard"] for t in targets])
    predicted = np.array([p["risk"] for p, _ in valid], dtype=np.float64)
    truth = np.array([t["risk"] for _, t in valid], dtype=np.float64)
    correlation = None
    if len(valid) >= 2 and predicted.std() > 0 and truth.std() > 0:
        correlation = float(np.corrcoef(predicted, truth)[0, 1])
    n = len(windows)
    evaluation = VlmEvaluation(
        windows=n,
        valid_share=len(valid) / n,
        hazard_accuracy=sum(p["hazard"] == t["hazard"] for p, t in valid) / n,
        hazard_majority=float(max(hazards.mean(), 1 - hazards.mean())),
        risk_mae=float(np.abs(predicted - truth).mean()) if valid else None,
        risk_correlation=correlation,
        risk_valid=len(valid),
        action_accuracy=sum(p["action"] == t["action"] for p, t in valid) / n,
        description_exact=sum(p["description"] == t["description"] for p, t in valid) / n,
        answers_per_s=n / seconds if seconds > 0 else float("inf"),
        seconds=seconds,
        structured_output=bool(backend.config.structured_output),
    )
    return evaluation, answers


def examples_png(path: Path, windows: Sequence[GatedWindow], answers: Sequence[VlmAnswer], count: int = 6) -> Path:
    """A figure of ``count`` windows spread over the target risk: the frames, the answer and the target."""
    # matplotlib is imported here: only the figure needs it, and it is slow to import.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort([w.target["risk"] for w in windows], kind="stable")
    picks = [int(order[i]) for i in np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int)]
    frames = len(windows[0].frames)
    figure, axes = plt.subplots(len(picks), frames + 1, figsize=(2.0 * frames + 5.5, 2.1 * len(picks)), squeeze=False,
                                gridspec_kw={"width_ratios": [1] * frames + [2.8]})  # fmt: skip
    for row, index in enumerate(picks):
        window, answer = windows[index], answers[index]
        for column, frame in enumerate(window.frames):
            axis = axes[row][column]
            axis.imshow(decode_pil(bytes(frame)))
            axis.set_axis_off()
            if row == 0:
                axis.set_title("current" if column == frames - 1 else f"t-{frames - 1 - column}", fontsize=8)
        said = answer.answer_json if answer.ok else f"INVALID ({answer.error})"
        said = said.encode("ascii", "backslashreplace").decode("ascii")  # model text may hold any character
        text = f"answer: {said}\n\ntarget: {json.dumps(window.target)}\n\n{window.episode_id} step {window.step}"
        panel = axes[row][frames]
        panel.set_axis_off()
        panel.text(0, 0.5, "\n".join(textwrap.fill(line, 60) for line in text.splitlines()), fontsize=7, va="center", family="monospace")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path
