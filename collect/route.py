"""Route geometry shared by every backend: progress, lateral offset, heading error, points ahead.

A route is the lane-centre polyline the ego should follow. Metrics are computed against it rather than
against whatever lane the ego happens to be on, so that SUMO and CARLA report the same quantities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data_schema.schema import ROUTE_AHEAD_POINTS, ROUTE_AHEAD_SPACING_M
from collect.scene import Pose


def wrap_angle(a: float) -> float:
    """``a`` wrapped to [-pi, pi)."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def to_ego_frame(points: np.ndarray, pose: Pose) -> np.ndarray:
    """World points ``(N, 2)`` in the ego frame (x forward, y left)."""
    c, s = np.cos(pose.yaw), np.sin(pose.yaw)
    d = np.asarray(points, dtype=np.float64) - (pose.x, pose.y)
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)


@dataclass(frozen=True)
class RouteState:
    """The ego measured against its route, as every backend reports it."""

    progress: float  # arc length of the closest route point (m)
    completion: float  # progress over route length, 0..1
    distance_to_goal: float  # straight-line distance to the route's end (m)
    lateral_offset: float  # signed distance from the route, left positive (m)
    heading_error: float  # ego yaw minus route heading, wrapped (rad)
    ahead: np.ndarray  # (ROUTE_AHEAD_POINTS, 2) route points ahead, ego frame


@dataclass(frozen=True)
class RouteProjection:
    progress: float  # arc length of the closest point (m)
    lateral_offset: float  # signed distance from the route, left positive (m)
    heading_error: float  # ego yaw minus route heading, wrapped (rad)


class Route:
    """A polyline with arc length; consecutive duplicate points are dropped."""

    def __init__(self, points: np.ndarray) -> None:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"route points must be (N, 2), got {points.shape}")
        keep = np.concatenate([[True], np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-6])
        self.points = points[keep]
        if len(self.points) < 2:
            raise ValueError("a route needs at least two distinct points")
        seg = np.diff(self.points, axis=0)
        self._seg = seg
        self._seg_len = np.linalg.norm(seg, axis=1)
        self._s = np.concatenate([[0.0], np.cumsum(self._seg_len)])
        self._heading = np.arctan2(seg[:, 1], seg[:, 0])

    @property
    def length(self) -> float:
        return float(self._s[-1])

    @property
    def goal(self) -> np.ndarray:
        return self.points[-1]

    def project(self, pose: Pose, hint: float | None = None, window: float = 30.0) -> RouteProjection:
        """Closest point of the route to the ego; ``hint`` (last progress) keeps loops from jumping ahead."""
        p = np.array([pose.x, pose.y])
        rel = p - self.points[:-1]
        t = np.clip(np.einsum("ij,ij->i", rel, self._seg) / np.maximum(self._seg_len**2, 1e-12), 0.0, 1.0)
        closest = self.points[:-1] + t[:, None] * self._seg
        dist = np.linalg.norm(p - closest, axis=1)
        if hint is not None:
            near = np.abs(self._s[:-1] + t * self._seg_len - hint) <= window
            if near.any():
                dist = np.where(near, dist, np.inf)
        i = int(np.argmin(dist))
        cross = self._seg[i, 0] * rel[i, 1] - self._seg[i, 1] * rel[i, 0]
        offset = float(np.sign(cross) * dist[i]) if dist[i] > 0 else 0.0
        progress = float(self._s[i] + t[i] * self._seg_len[i])
        return RouteProjection(progress, offset, float(wrap_angle(pose.yaw - self._heading[i])))

    def point_at(self, s: float) -> np.ndarray:
        """The route point at arc length ``s`` (clamped to the route)."""
        s = float(np.clip(s, 0.0, self.length))
        return np.array([np.interp(s, self._s, self.points[:, 0]), np.interp(s, self._s, self.points[:, 1])])

    def heading_at(self, s: float) -> float:
        i = int(np.clip(np.searchsorted(self._s, s, side="right") - 1, 0, len(self._heading) - 1))
        return float(self._heading[i])

    def ahead(self, pose: Pose, progress: float, n: int = ROUTE_AHEAD_POINTS, spacing: float = ROUTE_AHEAD_SPACING_M) -> np.ndarray:
        """``n`` route points ahead of ``progress`` every ``spacing`` metres, in the ego frame ``(n, 2)``."""
        s = progress + spacing * np.arange(1, n + 1)
        world = np.stack([np.interp(s, self._s, self.points[:, 0]), np.interp(s, self._s, self.points[:, 1])], axis=1)
        return to_ego_frame(world, pose).astype(np.float32)

    def remaining(self, progress: float) -> np.ndarray:
        """The polyline from ``progress`` to the end (for drawing)."""
        i = int(np.searchsorted(self._s, progress, side="right"))
        return np.concatenate([self.point_at(progress)[None], self.points[i:]], axis=0)


def route_state(route: Route, pose: Pose, hint: float | None) -> RouteState:
    """The ego at ``pose`` measured against ``route``; ``hint`` is the last progress (see ``Route.project``)."""
    proj = route.project(pose, hint=hint)
    goal = route.goal
    return RouteState(
        progress=proj.progress,
        completion=min(proj.progress / route.length, 1.0),
        distance_to_goal=float(math.hypot(goal[0] - pose.x, goal[1] - pose.y)),
        lateral_offset=proj.lateral_offset,
        heading_error=proj.heading_error,
        ahead=route.ahead(pose, proj.progress),
    )
