"""How well a score ranks ground-truth danger: the AUROC that ``pipeline clip eval`` and the audit report show.

A reward model is valid to the extent that its semantic score is lower on dangerous frames than on safe
ones. The AUROC is the probability that a random dangerous frame scores as more dangerous than a random safe
one (ties count half): 1 separates perfectly, 0.5 is chance. It is a rank statistic, so it needs no
threshold and is the same under any monotone rescaling (the semantic score's theta clipping included, up to
the ties clipping creates).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["auroc", "hazard_auroc"]


def auroc(danger: Any, positive: Any) -> float | None:
    """AUROC of ``danger`` (higher = more dangerous) for the ``positive`` frames against the others.

    Mann-Whitney U from average ranks, so tied scores count half; None where either class is empty or a
    score is not finite.
    """
    danger = np.asarray(danger, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    if danger.shape != positive.shape:
        raise ValueError(f"auroc: {danger.size} scores but {positive.size} labels")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0 or not np.isfinite(danger).all():
        return None
    ranks = _average_ranks(danger)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def hazard_auroc(safety: Any, kinds: Mapping[str, Any]) -> dict[str, float | None]:
    """Per hazard kind (``data_schema.groundtruth.hazards``), the AUROC with which a *safety* score (the
    semantic score, ``r_static``: higher = safer) ranks that kind's frames below the frames free of any
    hazard. Frames with another kind of hazard are left out of a kind's comparison, so a prompt about car
    crashes is not credited for pedestrian frames; ``any`` compares every dangerous frame with the safe ones.
    """
    safety = np.asarray(safety, dtype=np.float64)
    safe = ~np.asarray(kinds["any"], dtype=bool)
    out: dict[str, float | None] = {}
    for kind, flags in kinds.items():
        flags = np.asarray(flags, dtype=bool)
        keep = flags | safe
        out[kind] = auroc(-safety[keep], flags[keep])
    return out


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of each distinct value's last copy
    return ((upper - (counts - 1) / 2.0))[inverse.reshape(-1)]
