"""Where a pose lies among a map's lanes: the nearest lane that agrees with it, at its height.

Lanes cross and overlap: a bridge passes over a road, a junction's connectors lie on top of one another. So the
lane of a pose is chosen in order: a lane at the pose's height (within ``LEVEL_M``), one that contains it, one of
the lanes the caller prefers (a route's own), one whose direction agrees with the pose's heading; among equals,
the nearest, a heading error counting ``HEADING_M_PER_RAD`` metres per radian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from collect.backends.carla_lanes import LaneKey, LaneSegment
from collect.scene import tangents

LEVEL_M = 2.5  # a road surface this far above or below the pose is another level (bridges clear 4.5 m or more)
INSIDE_MARGIN_M = 0.5  # a pose this far beyond a lane's edge still counts as in it
HEADING_M_PER_RAD = 2.0
_CELL_M = 8.0


@dataclass(frozen=True)
class LaneMatch:
    """A pose against the centre of the lane it lies on."""

    key: LaneKey
    s: float  # arc length of the closest centre point
    lateral_offset: float  # m, left of the centre positive
    heading_error: float  # pose yaw minus lane heading, wrapped (0 when no yaw was given)
    distance: float  # m, to the centre line in the ground plane
    dz: float  # pose height minus the road's there (0 when no height was given)


class LaneIndex:
    """Every centre-line segment of the given lanes in a uniform grid, for lookups in microseconds."""

    def __init__(self, lanes: Iterable[LaneSegment]) -> None:
        self.keys: list[LaneKey] = []
        a, b, s0, z0, z1, h0, h1, w0, w1, owner = ([] for _ in range(10))
        for i, lane in enumerate(lanes):
            self.keys.append(lane.key)
            t = tangents(lane.points)
            headings = np.unwrap(np.arctan2(t[:, 1], t[:, 0]))
            a.append(lane.points[:-1])
            b.append(lane.points[1:])
            s0.append(lane.s[:-1])
            z0.append(lane.z[:-1])
            z1.append(lane.z[1:])
            h0.append(headings[:-1])
            h1.append(headings[1:])
            w0.append(lane.widths[:-1] / 2)
            w1.append(lane.widths[1:] / 2)
            owner.append(np.full(len(lane.points) - 1, i))
        if not self.keys:
            raise ValueError("LaneIndex needs at least one lane")
        self._number = {key: i for i, key in enumerate(self.keys)}
        self._a = np.concatenate(a)
        self._d = np.concatenate(b) - self._a
        self._len2 = np.maximum(np.einsum("ij,ij->i", self._d, self._d), 1e-12)
        self._s0, self._z0, self._z1 = np.concatenate(s0), np.concatenate(z0), np.concatenate(z1)
        self._h0, self._h1 = np.concatenate(h0), np.concatenate(h1)
        self._half0, self._half1 = np.concatenate(w0), np.concatenate(w1)
        self._owner = np.concatenate(owner)
        reach = float(max(self._half0.max(), self._half1.max())) + INSIDE_MARGIN_M
        lo = np.minimum(self._a, self._a + self._d) - reach
        hi = np.maximum(self._a, self._a + self._d) + reach
        cells: dict[tuple[int, int], list[int]] = {}
        for j, (l, h) in enumerate(zip(np.floor(lo / _CELL_M).astype(int), np.floor(hi / _CELL_M).astype(int))):
            for cx in range(l[0], h[0] + 1):
                for cy in range(l[1], h[1] + 1):
                    cells.setdefault((cx, cy), []).append(j)
        self._cells = {cell: np.array(found) for cell, found in cells.items()}
        self._all = np.arange(len(self._a))

    def match(self, x: float, y: float, z: float | None = None, yaw: float | None = None, prefer: Iterable[LaneKey] = ()) -> LaneMatch:
        """The lane of a pose (see the module's order of preference); far from every lane, the nearest one."""
        near = self._cells.get((math.floor(x / _CELL_M), math.floor(y / _CELL_M)))
        j = self._all if near is None else near
        p = np.array([x, y])
        rel = p - self._a[j]
        t = np.clip(np.einsum("ij,ij->i", rel, self._d[j]) / self._len2[j], 0.0, 1.0)
        off = rel - t[:, None] * self._d[j]
        dist = np.hypot(off[:, 0], off[:, 1])
        rank = np.zeros(len(j))
        score = dist.copy()
        dz = np.zeros(len(j))
        if z is not None:
            dz = z - (self._z0[j] + t * (self._z1[j] - self._z0[j]))
            rank += 8 * (np.abs(dz) > LEVEL_M)
            score += np.abs(dz)
        rank += 4 * (dist > self._half0[j] + t * (self._half1[j] - self._half0[j]) + INSIDE_MARGIN_M)
        preferred = [self._number[k] for k in prefer if k in self._number]
        if preferred:
            rank += 2 * ~np.isin(self._owner[j], preferred)
        heading = self._h0[j] + t * (self._h1[j] - self._h0[j])
        error = np.zeros(len(j))
        if yaw is not None:
            error = (yaw - heading + np.pi) % (2 * np.pi) - np.pi
            rank += np.abs(error) > np.pi / 2
            score += HEADING_M_PER_RAD * np.abs(error)
        best = int(np.lexsort((score, rank))[0])
        k = int(j[best])
        cross = self._d[k, 0] * rel[best, 1] - self._d[k, 1] * rel[best, 0]
        return LaneMatch(
            key=self.keys[self._owner[k]],
            s=float(self._s0[k] + t[best] * math.sqrt(self._len2[k])),
            lateral_offset=float(math.copysign(dist[best], cross)) if dist[best] > 0 else 0.0,
            heading_error=float(error[best]),
            distance=float(dist[best]),
            dz=float(dz[best]),
        )
