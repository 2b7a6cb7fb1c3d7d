"""Ground truth for scoring the gate: a vulnerable road user in a corridor ahead of the ego, from ``agents``.

The simulator's agents are stored in the ego frame (x forward, y left), so the test is a box check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

CRITICAL_KINDS = ("pedestrian", "cyclist", "motorcycle")


@dataclass(frozen=True)
class Corridor:
    """The area ahead of the ego where a critical agent should fire the gate."""

    length: float = 20.0
    half_width: float = 2.0
    kinds: tuple[str, ...] = CRITICAL_KINDS

    def __post_init__(self) -> None:
        if self.length <= 0 or self.half_width <= 0:
            raise ValueError(f"corridor length and half_width must be > 0, got {self.length}, {self.half_width}")
        if not self.kinds:
            raise ValueError("corridor kinds must not be empty")


def critical_in_corridor(agents: Iterable[Any] | None, corridor: Corridor = Corridor()) -> bool:
    """Whether any agent of a critical kind has its centre inside the corridor (0 < x <= length, |y| <= half_width)."""
    if agents is None:
        return False
    return any(
        a["kind"] in corridor.kinds and 0.0 < float(a["x"]) <= corridor.length and abs(float(a["y"])) <= corridor.half_width
        for a in agents
    )


def ground_truth(agents_column: Iterable[Any], corridor: Corridor = Corridor()) -> np.ndarray:
    """``critical_in_corridor`` for every row of an ``agents`` column, as a bool array."""
    return np.fromiter((critical_in_corridor(a, corridor) for a in agents_column), dtype=bool)
