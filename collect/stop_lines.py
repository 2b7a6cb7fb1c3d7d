"""Stop lines: how a backend draws one across a lane, and the one rule for running a red light.

Every backend builds its stop lines with ``stop_line_across`` and reports ``red_light`` with
``ran_red_light``, so the same move over the same line is the same event whatever the simulator.
The rule: the ego's front bumper crosses the line in the lane's direction of travel. A line is stored left
end first, as seen driving along its lane, so the side traffic comes from is known from the line alone.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from collect.scene import Pose, TrafficLight

#: A front bumper within this distance of a stop line is on it (m): floating-point noise, not a position.
ON_LINE_M = 1e-6


def stop_line_across(x: float, y: float, yaw: float, width: float) -> np.ndarray:
    """The stop line ``(2, 2)`` across a lane of ``width`` at ``(x, y)`` for traffic heading ``yaw``, left end first."""
    half = np.array([-math.sin(yaw), math.cos(yaw)]) * width / 2
    centre = np.array([x, y], dtype=np.float64)
    return np.stack([centre + half, centre - half])


def front_bumper(pose: Pose, length: float) -> np.ndarray:
    """The middle of the front of a vehicle of ``length`` whose footprint centre is ``pose``."""
    return np.array([pose.x + math.cos(pose.yaw) * length / 2, pose.y + math.sin(pose.yaw) * length / 2])


def _ahead_of(line: np.ndarray, p: np.ndarray) -> float:
    """Signed distance of ``p`` from the line's infinite extension, positive on the side traffic drives to."""
    a, b = line[0], line[1]
    d = b - a
    return float(d[0] * (p[1] - a[1]) - d[1] * (p[0] - a[0])) / max(math.hypot(d[0], d[1]), 1e-12)


def crossed_stop_line(p0: np.ndarray, p1: np.ndarray, line: np.ndarray) -> bool:
    """Whether a front bumper moving ``p0 -> p1`` crossed ``line`` in its lane's direction of travel.

    The move counts when it starts behind the line (by more than ``ON_LINE_M``) and ends on it or past it,
    within the line's ends. So a crossing counts once: on the move that reaches the line, never again on the
    move that leaves it; and a move backwards over the line is no crossing.
    """
    line = np.asarray(line, dtype=np.float64)
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    before, after = _ahead_of(line, p0), _ahead_of(line, p1)
    if not (before < -ON_LINE_M and after >= -ON_LINE_M):
        return False
    # where the move meets the line, as a fraction of the line from its left end
    hit = p0 + (p1 - p0) * (before / (before - after))
    d = line[1] - line[0]
    along = float(np.dot(hit - line[0], d)) / max(float(np.dot(d, d)), 1e-12)
    reach = ON_LINE_M / max(math.hypot(d[0], d[1]), 1e-12)
    return -reach <= along <= 1.0 + reach


def ran_red_light(before: Pose, after: Pose, length: float, lights: Iterable[TrafficLight]) -> bool:
    """Whether the ego (footprint centre ``before -> after``, ``length`` long) crossed a stop line on red."""
    p0, p1 = front_bumper(before, length), front_bumper(after, length)
    return any(light.state == "r" and crossed_stop_line(p0, p1, light.stop_line) for light in lights)
