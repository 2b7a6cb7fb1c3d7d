"""Backend-neutral description of what the simulator shows: the static map, the moving agents, the ego.

Every backend (SUMO, CARLA) fills these types; the BEV rasteriser, the expert policy and the rollout writer
read only them, so the picture CLIP sees and the rows on disk look the same whatever the simulator.
All coordinates here are world coordinates in metres, yaw counter-clockwise in radians from +x.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Pose:
    x: float
    y: float
    yaw: float


@dataclass(frozen=True)
class Agent:
    """A road user other than the ego; ``kind`` is one of ``data_schema.schema.AGENT_KINDS``."""

    kind: str
    x: float
    y: float
    yaw: float
    speed: float
    length: float
    width: float


@dataclass(frozen=True)
class Lane:
    """A lane (or sidewalk) as a centre polyline ``(N, 2)`` and its width, one value or one per point (``(N,)``:
    lanes that widen, as turn lanes do where they open)."""

    centre: np.ndarray
    width: float | np.ndarray


def tangents(points: np.ndarray) -> np.ndarray:
    """Unit tangent ``(N, 2)`` at each point of a polyline, by central differences (exact on evenly sampled arcs)."""
    points = np.asarray(points, dtype=np.float64)
    d = np.vstack([points[1:], points[-1:]]) - np.vstack([points[:1], points[:-1]])
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def offset_polyline(points: np.ndarray, offset: float | np.ndarray) -> np.ndarray:
    """The polyline ``offset`` metres (one value, or one per point) to the left of ``points`` (N, 2); negative is
    right. Each point moves along the normal of its tangent, so arcs stay arcs."""
    t = tangents(points)
    return np.asarray(points, dtype=np.float64) + np.stack([-t[:, 1], t[:, 0]], axis=1) * np.asarray(offset, dtype=np.float64).reshape(-1, 1)


@dataclass(frozen=True)
class MapGeometry:
    """The static layer of a map, drawn once per map by the rasteriser."""

    name: str
    lanes: tuple[Lane, ...]
    sidewalks: tuple[Lane, ...] = ()
    crosswalks: tuple[np.ndarray, ...] = ()  # polygons (M, 2)
    markings: tuple[np.ndarray, ...] = ()  # painted lane edges, polylines (K, 2)

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) over every drawn element."""
        points = [lane.centre for lane in self.lanes + self.sidewalks] + list(self.crosswalks)
        stacked = np.concatenate(points, axis=0)
        return (*stacked.min(axis=0), *stacked.max(axis=0))


@dataclass(frozen=True)
class TrafficLight:
    """A stop line ``(2, 2)`` and its current state: ``r``, ``y`` or ``g``.

    The line runs from the lane's left edge to its right edge, seen driving along the lane
    (``collect.stop_lines.stop_line_across``): that order says which way traffic crosses it.
    """

    stop_line: np.ndarray
    state: str


@dataclass(frozen=True)
class Scene:
    """One frame of the world around the ego."""

    map: MapGeometry
    ego: Pose
    ego_length: float
    ego_width: float
    agents: tuple[Agent, ...] = ()
    traffic_lights: tuple[TrafficLight, ...] = ()
    route: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # remaining route polyline (N, 2)
