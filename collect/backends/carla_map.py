"""CARLA map geometry that needs no server: the lane graph, BEV geometry, route planning, lane lookups.

Everything here runs on a ``carla.Map``, which the wheel builds offline from OpenDRIVE text
(``carla.Map(name, xodr_text)``); the live backend hands it ``world.get_map()``. The ``agents`` route planner is
not in the wheel, so routing is our own search over the lane sections (``carla_routing``). Lanes are read per
lane section (``carla_lanes``) and looked up at the pose's height and heading (``carla_locate``); coordinates are
converted to ours by ``carla_convert``.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import carla
import numpy as np

from collect.backends.carla_convert import location, pose_from_transform, xy_from_location
from collect.backends.carla_lanes import LaneKey, LaneRead, LaneSegment, read_lanes
from collect.backends.carla_locate import LaneIndex, LaneMatch
from collect.backends.carla_routing import LaneGraph, RouteSearch, RoutingConfig
from collect.route import Route
from collect.scene import Lane, MapGeometry, Pose, offset_polyline
from collect.stop_lines import stop_line_across


# -- crosswalks and stop lines -------------------------------------------------------------------------------


def _crosswalk_corner_counts(xodr: str) -> list[int]:
    """Corners of each crosswalk outline in an OpenDRIVE document, in document order."""
    root = ET.fromstring(xodr)
    counts = []
    for obj in root.iter("object"):
        if obj.get("type") == "crosswalk":
            counts.append(sum(1 for c in obj.iter() if c.tag in ("cornerLocal", "cornerRoad")))
    return counts


def split_polygons(points: list[tuple[float, float]], corner_counts: list[int], map_name: str = "") -> tuple[np.ndarray, ...]:
    """Back-to-back polygon corners as polygons: closed ones end where their first corner repeats;
    open ones (no corner ever repeats) are cut by ``corner_counts``."""
    polygons: list[np.ndarray] = []
    current: list[tuple[float, float]] = []
    for p in points:
        if len(current) >= 3 and math.dist(p, current[0]) < 1e-3:
            polygons.append(np.array(current))
            current = []
        else:
            current.append(p)
    if polygons:
        return tuple(polygons)
    if sum(corner_counts) != len(points) or min(corner_counts, default=0) < 3:
        warnings.warn(f"map {map_name!r}: cannot split {len(points)} crosswalk corners into polygons; crosswalks are not drawn", stacklevel=2)
        return ()
    bounds = np.cumsum([0] + list(corner_counts))
    return tuple(np.array(points[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))


def crosswalk_polygons(cmap: carla.Map) -> tuple[np.ndarray, ...]:
    """Crosswalk polygons ``(M, 2)`` in world coordinates.

    ``Map.get_crosswalks()`` returns every polygon's corners back to back, documented as closed (the first
    corner repeated). OpenDRIVE written by other tools (netconvert) leaves outlines open; then the corner counts
    come from the OpenDRIVE text itself.
    """
    points = [xy_from_location(loc) for loc in cmap.get_crosswalks()]
    if not points:
        return ()
    return split_polygons(points, _crosswalk_corner_counts(cmap.to_opendrive()), cmap.name)


def stop_line(wp: carla.Waypoint) -> np.ndarray:
    """The stop line ``(2, 2)`` across the lane at a traffic light's stop waypoint."""
    pose = pose_from_transform(wp.transform)
    return stop_line_across(pose.x, pose.y, pose.yaw, wp.lane_width)


# -- the road network -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoadNetworkConfig:
    resolution_m: float = 1.0  # spacing of lane-centre points along the road
    routing: RoutingConfig = field(default_factory=RoutingConfig)

    def __post_init__(self) -> None:
        if not self.resolution_m > 0:
            raise ValueError(f"RoadNetworkConfig.resolution_m must be > 0, got {self.resolution_m!r}")


class RouteNotFound(ValueError):
    pass


@dataclass(frozen=True)
class SampledRoute:
    """A route to drive, the pose it starts at and the height of the road there (where to spawn)."""

    route: Route
    start: Pose
    start_z: float


def _marked_runs(points: np.ndarray, marked: np.ndarray) -> list[np.ndarray]:
    """The stretches of ``points`` where ``marked`` holds, as polylines of at least two points."""
    runs, start = [], None
    for i, flag in enumerate(list(marked) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= 2:
                runs.append(points[start:i])
            start = None
    return runs


def _markings(reads: Iterable[LaneRead]) -> tuple[np.ndarray, ...]:
    """Painted lane edges, where the map says a marking runs (see ``carla_lanes.LaneRead``)."""
    lines = []
    for read in reads:
        lane = read.segment
        for side, marked in ((1.0, read.marked_left), (-1.0, read.marked_right)):
            lines.extend(_marked_runs(offset_polyline(lane.points, side * lane.widths / 2), marked))
    return tuple(lines)


class RoadNetwork:
    """The driving lanes of a ``carla.Map`` as a graph of lane sections, plus the static picture of the map."""

    def __init__(self, cmap: carla.Map, config: RoadNetworkConfig | None = None) -> None:
        self.map = cmap
        self.config = config or RoadNetworkConfig()
        reads = read_lanes(cmap, self.config.resolution_m)
        self.lanes: dict[LaneKey, LaneSegment] = {r.segment.key: r.segment for r in reads if r.lane_type == "driving"}
        if not self.lanes:
            raise ValueError(f"map {cmap.name!r} has no driving lanes")
        self._index = LaneIndex(self.lanes.values())
        self._graph = LaneGraph(self.lanes, self.config.routing)
        self._reads = reads
        self._geometry: MapGeometry | None = None

    # -- BEV geometry --------------------------------------------------------------------------------------

    def geometry(self) -> MapGeometry:
        """The map's static layer; built once, and the same object every call, so the BEV caches its raster."""
        if self._geometry is None:
            lanes = tuple(Lane(seg.points, seg.widths) for seg in self.lanes.values())
            walks = tuple(Lane(r.segment.points, r.segment.widths) for r in self._reads if r.lane_type == "sidewalk")
            self._geometry = MapGeometry(self.map.name, lanes, walks, crosswalk_polygons(self.map), _markings(self._reads))
            self._reads = []  # only the picture needed them
        return self._geometry

    # -- where a pose lies ---------------------------------------------------------------------------------

    def locate(
        self, x: float, y: float, z: float | None = None, yaw: float | None = None, prefer: Iterable[LaneKey] = ()
    ) -> LaneMatch:
        """The driving lane a pose lies on: at its height (when given), agreeing with its heading (when given),
        one of ``prefer`` (a route's lanes) where lanes overlap; far from every lane, the nearest one."""
        return self._index.match(x, y, z, yaw, prefer)

    def on_road(self, pose: Pose, z: float) -> bool:
        """Whether the pose lies on a driving lane at height ``z`` (the map's own test, which honours height)."""
        return self.map.get_waypoint(location(pose.x, pose.y, z), project_to_road=False, lane_type=carla.LaneType.Driving) is not None

    def lane_pose(self, key: LaneKey, s: float) -> Pose:
        """The pose on a lane's centre at arc length ``s``, heading along the lane."""
        seg = self.lanes[key]
        a, b = seg.point_at(s - 0.5), seg.point_at(s + 0.5)
        p = seg.point_at(s)
        return Pose(float(p[0]), float(p[1]), math.atan2(b[1] - a[1], b[0] - a[0]))

    # -- routing -------------------------------------------------------------------------------------------

    def search(self, start: tuple[LaneKey, float], goal: tuple[LaneKey, float]) -> RouteSearch:
        """The route search between two lane positions (its legs, cost and the states it expanded)."""
        return self._graph.search(start, goal)

    def plan(self, start: Sequence[float], goal: Sequence[float]) -> Route:
        """The shortest route between two places, each ``(x, y)``, ``(x, y, z)`` or ``(x, y, z, yaw)``: snapped to
        the lane at that height and heading (see ``locate``), so give both where roads cross or overlap."""
        ends = []
        for name, place in (("start", start), ("goal", goal)):
            if not 2 <= len(place) <= 4:
                raise ValueError(f"plan: {name} must be (x, y), (x, y, z) or (x, y, z, yaw), got {tuple(place)}")
            match = self.locate(*(float(v) for v in place))
            ends.append((match.key, match.s))
        found = self.search(ends[0], ends[1])
        if not found.legs:
            raise RouteNotFound(
                f"map {self.map.name!r}: no route from {tuple(start)} (lane {ends[0][0]}) to {tuple(goal)} (lane {ends[1][0]})"
            )
        return Route(self._graph.polyline(found.legs))

    def sample_route(self, rng: np.random.Generator, min_length: float = 150.0, max_length: float = 400.0, tries: int = 50) -> SampledRoute:
        """A random route whose length lies in ``[min_length, max_length]``.

        Starts lie on lanes outside junctions, a few metres in, so a vehicle can be spawned there. The goal is
        drawn among the places one search from the start reaches within ``max_length``, so no try is spent
        on a goal that cannot be reached (on a highway, most of the map).
        """
        if not 0 < min_length < max_length:
            raise ValueError(f"need 0 < min_length < max_length, got {min_length}, {max_length}")
        starts = [k for k, seg in self.lanes.items() if not seg.is_junction and seg.length > 10.0]
        if not starts:
            raise RouteNotFound(f"map {self.map.name!r}: no lane outside a junction longer than 10 m to start from")
        for _ in range(tries):
            start_key = starts[int(rng.integers(len(starts)))]
            start_s = float(rng.uniform(5.0, self.lanes[start_key].length - 5.0))
            # stretches of reached lanes whose cost from the start lies within the bounds (a route is no longer
            # than its cost, which adds lane-change penalties; checked below)
            stretches = []
            for (key, entered, _), cost in sorted(self._graph.reachable((start_key, start_s), max_length).items()):
                lo, hi = entered + max(min_length - cost, 0.0), min(self.lanes[key].length, entered + max_length - cost)
                if hi > lo:
                    stretches.append((key, lo, hi))
            if not stretches:
                continue
            goal_key, lo, hi = stretches[int(rng.integers(len(stretches)))]
            found = self.search((start_key, start_s), (goal_key, float(rng.uniform(lo, hi))))
            if not found.legs:
                continue
            route = Route(self._graph.polyline(found.legs))
            if min_length <= route.length <= max_length:
                return SampledRoute(route, self.lane_pose(start_key, start_s), self.lanes[start_key].height_at(start_s))
        raise RouteNotFound(f"map {self.map.name!r}: no route of {min_length:.0f}-{max_length:.0f} m found in {tries} tries")
