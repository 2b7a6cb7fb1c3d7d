"""CARLA map geometry that needs no server: BEV geometry, route planning, where a pose lies on the road.

Everything here runs on a ``carla.Map``, which the wheel builds offline from OpenDRIVE text
(``carla.Map(name, xodr_text)``); the live backend hands it ``world.get_map()``. The ``agents`` route planner is
not in the wheel, so routing is a small Dijkstra over the lane graph of ``Map.get_topology()``. Coordinates are
converted to ours by ``collect.backends.carla_convert``.
"""

from __future__ import annotations

import heapq
import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import carla
import numpy as np

from collect.backends.carla_convert import location, pose_from_transform, xy_from_location
from collect.route import Route
from collect.scene import Lane, MapGeometry, Pose
from collect.stop_lines import stop_line_across

LaneKey = tuple[int, int, int]  # (road_id, section_id, lane_id): one lane of one road section


# -- lanes, sidewalks, crosswalks ---------------------------------------------------------------------------


def _key(wp: carla.Waypoint) -> LaneKey:
    return (wp.road_id, wp.section_id, wp.lane_id)


def _polyline(waypoints: list[carla.Waypoint]) -> np.ndarray:
    return np.array([xy_from_location(w.transform.location) for w in waypoints], dtype=np.float64)


@dataclass(frozen=True)
class LaneSegment:
    """A driving lane of one road section, in its direction of travel, with its outgoing edges."""

    key: LaneKey
    points: np.ndarray  # (N, 2) world, lane centre
    s: np.ndarray  # (N,) arc length along ``points``
    width: float
    successors: tuple[LaneKey, ...]
    lane_changes: tuple[LaneKey, ...]  # adjacent same-direction lanes the markings allow moving into
    is_junction: bool

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def point_at(self, s: float) -> np.ndarray:
        s = float(np.clip(s, 0.0, self.length))
        return np.array([np.interp(s, self.s, self.points[:, 0]), np.interp(s, self.s, self.points[:, 1])])

    def between(self, s0: float, s1: float) -> np.ndarray:
        """The centre polyline from arc length ``s0`` to ``s1`` (``s0 <= s1``), end points interpolated."""
        inner = self.points[(self.s > s0) & (self.s < s1)]
        return np.concatenate([self.point_at(s0)[None], inner, self.point_at(s1)[None]], axis=0)

    def project(self, x: float, y: float) -> tuple[float, float]:
        """(arc length of the closest centre point, its distance) for a world point."""
        p = np.array([x, y])
        a, seg = self.points[:-1], np.diff(self.points, axis=0)
        seg_len2 = np.maximum(np.einsum("ij,ij->i", seg, seg), 1e-12)
        t = np.clip(np.einsum("ij,ij->i", p - a, seg) / seg_len2, 0.0, 1.0)
        dist = np.linalg.norm(a + t[:, None] * seg - p, axis=1)
        i = int(np.argmin(dist))
        return float(self.s[i] + t[i] * (self.s[i + 1] - self.s[i])), float(dist[i])


def _arc_length(points: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


def _lane_points(entry: carla.Waypoint, resolution: float) -> list[carla.Waypoint]:
    """Waypoints along a lane from ``entry`` to the lane's end (the last one lies on the end)."""
    return [entry] + list(entry.next_until_lane_end(resolution))


def _lane_start(wp: carla.Waypoint, resolution: float) -> carla.Waypoint:
    """The first waypoint of ``wp``'s lane (walking back; ``previous_until_lane_start`` crashes on dead ends)."""
    while True:
        back = [w for w in wp.previous(resolution) if _key(w) == _key(wp)]
        if not back:
            return wp
        wp = back[0]


def _lateral_sidewalks(wp: carla.Waypoint) -> list[carla.Waypoint]:
    """Sidewalk lanes beside a driving lane, found by walking outwards on both sides."""
    found = []
    for step in ("get_right_lane", "get_left_lane"):
        neighbour = getattr(wp, step)()
        for _ in range(8):  # a road section never has more lanes than this on one side
            if neighbour is None:
                break
            if neighbour.lane_type == carla.LaneType.Sidewalk:
                found.append(neighbour)
            neighbour = getattr(neighbour, step)()
    return found


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


# -- the road network: geometry, routing, metrics ------------------------------------------------------------


@dataclass(frozen=True)
class RoadNetworkConfig:
    resolution_m: float = 1.0  # spacing of lane-centre points
    lane_change_length_m: float = 10.0  # distance travelled while moving one lane over
    lane_change_penalty_m: float = 5.0  # extra cost that keeps routes from changing lanes needlessly

    def __post_init__(self) -> None:
        for name in ("resolution_m", "lane_change_length_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RoadNetworkConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.lane_change_penalty_m >= 0:
            raise ValueError(f"RoadNetworkConfig.lane_change_penalty_m must be >= 0, got {self.lane_change_penalty_m!r}")


class RouteNotFound(ValueError):
    pass


class RoadNetwork:
    """The driving lanes of a ``carla.Map`` as a graph, plus the static picture of the map for the BEV."""

    def __init__(self, cmap: carla.Map, config: RoadNetworkConfig | None = None) -> None:
        self.map = cmap
        self.config = config or RoadNetworkConfig()
        resolution = self.config.resolution_m
        entries: dict[LaneKey, carla.Waypoint] = {}
        successors: dict[LaneKey, list[LaneKey]] = {}
        for entry, exit_ in cmap.get_topology():
            # the exit is the first waypoint of the lane that follows, so it is that lane's entry
            for wp in (entry, exit_):
                entries.setdefault(_key(wp), wp)
                successors.setdefault(_key(wp), [])
            if _key(exit_) not in successors[_key(entry)]:
                successors[_key(entry)].append(_key(exit_))
        # the topology leaves out lanes with neither predecessor nor successor: find them by sampling
        for wp in cmap.generate_waypoints(resolution * 4):
            if wp.lane_type == carla.LaneType.Driving and _key(wp) not in entries:
                entries[_key(wp)] = _lane_start(wp, resolution)
                successors[_key(wp)] = []
        if not entries:
            raise ValueError(f"map {cmap.name!r} has no driving lanes")
        self.lanes: dict[LaneKey, LaneSegment] = {}
        for key, entry in sorted(entries.items()):
            waypoints = _lane_points(entry, resolution)
            points = _polyline(waypoints)
            keep = np.concatenate([[True], np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-6])
            points = points[keep]
            if len(points) < 2:
                continue
            self.lanes[key] = LaneSegment(
                key=key,
                points=points,
                s=_arc_length(points),
                width=float(np.median([w.lane_width for w in waypoints])),
                successors=tuple(k for k in successors[key] if k in entries),
                lane_changes=tuple(self._lane_change_targets(entry, entries)),
                is_junction=bool(entry.is_junction),
            )
        self._entries = entries
        self._geometry: MapGeometry | None = None

    @staticmethod
    def _lane_change_targets(entry: carla.Waypoint, entries: dict[LaneKey, carla.Waypoint]) -> list[LaneKey]:
        targets = []
        for flag, neighbour in ((carla.LaneChange.Left, entry.get_left_lane()), (carla.LaneChange.Right, entry.get_right_lane())):
            if (
                neighbour is not None
                and entry.lane_change & flag
                and neighbour.lane_type == carla.LaneType.Driving
                and neighbour.lane_id * entry.lane_id > 0
                and _key(neighbour) in entries
            ):
                targets.append(_key(neighbour))
        return targets

    # -- BEV geometry --------------------------------------------------------------------------------------

    def geometry(self) -> MapGeometry:
        """The map's static layer; built once, and the same object every call, so the BEV caches its raster."""
        if self._geometry is None:
            lanes = tuple(Lane(seg.points, seg.width) for seg in self.lanes.values())
            sidewalks: dict[LaneKey, carla.Waypoint] = {}
            for entry in self._entries.values():
                for wp in _lateral_sidewalks(entry):
                    sidewalks.setdefault(_key(wp), wp)
            walks = []
            for _, wp in sorted(sidewalks.items()):
                waypoints = _lane_points(wp, self.config.resolution_m)
                if len(waypoints) >= 2:
                    walks.append(Lane(_polyline(waypoints), float(np.median([w.lane_width for w in waypoints]))))
            self._geometry = MapGeometry(self.map.name, lanes, tuple(walks), crosswalk_polygons(self.map))
        return self._geometry

    # -- localisation and metrics --------------------------------------------------------------------------

    def locate(self, x: float, y: float) -> tuple[LaneKey, float]:
        """The driving lane nearest to a world point, and the arc length of the point along it."""
        wp = self.map.get_waypoint(location(x, y), project_to_road=True, lane_type=carla.LaneType.Driving)
        if wp is not None and _key(wp) in self.lanes:
            key = _key(wp)
            return key, self.lanes[key].project(x, y)[0]
        best = min(self.lanes.values(), key=lambda seg: seg.project(x, y)[1])
        return best.key, best.project(x, y)[0]

    def on_road(self, pose: Pose) -> bool:
        loc = location(pose.x, pose.y)
        return self.map.get_waypoint(loc, project_to_road=False, lane_type=carla.LaneType.Driving) is not None

    def lane_pose(self, key: LaneKey, s: float) -> Pose:
        """The pose on a lane's centre at arc length ``s``, heading along the lane."""
        seg = self.lanes[key]
        a, b = seg.point_at(s - 0.5), seg.point_at(s + 0.5)
        p = seg.point_at(s)
        return Pose(float(p[0]), float(p[1]), math.atan2(b[1] - a[1], b[0] - a[0]))

    # -- routing -------------------------------------------------------------------------------------------

    def plan(self, start: tuple[float, float], goal: tuple[float, float]) -> Route:
        """The shortest lane-following route between two world points (each snapped to its nearest lane)."""
        start_key, start_s = self.locate(*start)
        goal_key, goal_s = self.locate(*goal)
        path = self._search(start_key, start_s, goal_key, goal_s)
        if path is None:
            raise RouteNotFound(f"map {self.map.name!r}: no route from {tuple(start)} (lane {start_key}) to {tuple(goal)} (lane {goal_key})")
        return Route(self._polyline(path, goal_s))

    def _search(self, start_key: LaneKey, start_s: float, goal_key: LaneKey, goal_s: float) -> list[tuple[LaneKey, float]] | None:
        """Dijkstra over (lane, arc length entered at); returns the entered states in order."""
        lc_len, lc_cost = self.config.lane_change_length_m, self.config.lane_change_length_m + self.config.lane_change_penalty_m
        State = tuple[LaneKey, float]
        start: State = (start_key, start_s)
        parent: dict[State, State | None] = {start: None}
        best: dict[State, float] = {start: 0.0}
        queue: list[tuple[float, int, State]] = [(0.0, 0, start)]
        counter = 1
        settled: set[State] = set()
        goal_marker: State = (goal_key, -1.0)  # the goal reached from the state stored in parent[goal_marker]
        while queue:
            cost, _, state = heapq.heappop(queue)
            if state == goal_marker:
                path = []
                node = parent[goal_marker]
                while node is not None:
                    path.append(node)
                    node = parent[node]
                return path[::-1]
            if state in settled:
                continue
            settled.add(state)
            key, entered = state
            seg = self.lanes[key]
            moves: list[tuple[float, State]] = []
            if key == goal_key and entered <= goal_s + 1e-6:
                moves.append((goal_s - entered, goal_marker))
            for nxt in seg.successors:
                moves.append((seg.length - entered, (nxt, 0.0)))
            for side in seg.lane_changes:
                target = self.lanes[side]
                land = entered / max(seg.length, 1e-6) * target.length + lc_len
                if land < target.length:
                    moves.append((lc_cost, (side, land)))
            for step_cost, nxt_state in moves:
                total = cost + step_cost
                if nxt_state not in settled and total < best.get(nxt_state, math.inf):
                    best[nxt_state] = total
                    parent[nxt_state] = state
                    heapq.heappush(queue, (total, counter, nxt_state))
                    counter += 1
        return None

    def _polyline(self, path: list[tuple[LaneKey, float]], goal_s: float) -> np.ndarray:
        pieces = []
        for i, (key, entered) in enumerate(path):
            seg = self.lanes[key]
            if i == len(path) - 1:
                leave = goal_s
            elif path[i + 1][0] in seg.lane_changes and path[i + 1][1] > 0:
                leave = entered  # move over straight away: the next piece starts further along the other lane
            else:
                leave = seg.length
            pieces.append(seg.between(entered, max(leave, entered)))
        return np.concatenate(pieces, axis=0)

    def sample_route(self, rng: np.random.Generator, min_length: float = 150.0, max_length: float = 400.0, tries: int = 200) -> tuple[Route, Pose]:
        """A random route (and the start pose on it) whose length lies in ``[min_length, max_length]``.

        Starts lie on lanes outside junctions, a few metres in, so a vehicle can be spawned there.
        """
        if not 0 < min_length < max_length:
            raise ValueError(f"need 0 < min_length < max_length, got {min_length}, {max_length}")
        starts = [k for k, seg in self.lanes.items() if not seg.is_junction and seg.length > 10.0]
        if not starts:
            raise RouteNotFound(f"map {self.map.name!r}: no lane outside a junction longer than 10 m to start from")
        keys = sorted(self.lanes)
        for _ in range(tries):
            start_key = starts[int(rng.integers(len(starts)))]
            start_s = float(rng.uniform(5.0, self.lanes[start_key].length - 5.0))
            goal_key = keys[int(rng.integers(len(keys)))]
            goal_s = float(rng.uniform(0.0, self.lanes[goal_key].length))
            path = self._search(start_key, start_s, goal_key, goal_s)
            if path is None:
                continue
            try:
                route = Route(self._polyline(path, goal_s))
            except ValueError:  # start and goal on the same spot
                continue
            if min_length <= route.length <= max_length:
                return route, self.lane_pose(start_key, start_s)
        raise RouteNotFound(f"map {self.map.name!r}: no route of {min_length:.0f}-{max_length:.0f} m found in {tries} tries")
