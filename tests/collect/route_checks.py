"""Independent yardsticks for planned routes on a ``carla.Map``: the shortest path over CARLA's own waypoint graph,
and the defects a route must not have (gaps, driving a stretch twice).

The reference knows nothing of our lane sections: it walks ``Waypoint.next`` a metre at a time and changes lanes
wherever the waypoint's ``lane_change`` flag allows, landing a lane-change length further on in the next lane.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import carla
import numpy as np

from collect.route import Route


def _xy(wp: carla.Waypoint) -> tuple[float, float]:
    return wp.transform.location.x, -wp.transform.location.y


def _lane(wp: carla.Waypoint) -> tuple[int, int, int]:
    return wp.road_id, wp.section_id, wp.lane_id


def _heading(wp: carla.Waypoint) -> float:
    return -math.radians(wp.transform.rotation.yaw)


def reference_length(start: carla.Waypoint, goal: carla.Waypoint, step: float = 1.0, change: float = 10.0) -> float:
    """Length (m, in the ground plane) of the shortest drive from ``start`` to ``goal`` over the waypoint graph;
    inf when there is none."""
    gx, gy = _xy(goal)
    best = {(_lane(start), round(start.s, 2)): 0.0}
    queue: list[tuple[float, int, carla.Waypoint]] = [(0.0, 0, start)]
    pushed = 1
    while queue:
        d, _, wp = heapq.heappop(queue)
        if d > best[(_lane(wp), round(wp.s, 2))] + 1e-9:
            continue
        x, y = _xy(wp)
        h = _heading(wp)
        if _lane(wp) == _lane(goal) and math.hypot(gx - x, gy - y) <= step + 1e-6 and (gx - x) * math.cos(h) + (gy - y) * math.sin(h) >= -1e-6:
            return d + math.hypot(gx - x, gy - y)
        moves = list(wp.next(step))
        for flag, side in ((carla.LaneChange.Left, wp.get_left_lane()), (carla.LaneChange.Right, wp.get_right_lane())):
            if side is not None and wp.lane_change & flag and side.lane_type == carla.LaneType.Driving and side.lane_id * wp.lane_id > 0:
                moves.extend(side.next(change))
        for nxt in moves:
            nx, ny = _xy(nxt)
            cost = d + math.hypot(nx - x, ny - y)
            key = (_lane(nxt), round(nxt.s, 2))
            if cost < best.get(key, math.inf) - 1e-9:
                best[key] = cost
                heapq.heappush(queue, (cost, pushed, nxt))
                pushed += 1
    return math.inf


@dataclass(frozen=True)
class RouteDefects:
    longest_step: float  # m between consecutive route points
    revisits: int  # route points that come back within 0.5 m of a point driven earlier (more than 20 m before)


def route_defects(route: Route) -> RouteDefects:
    points = route.points
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    revisits = 0
    for i in range(len(points)):
        earlier = arc < arc[i] - 20.0
        if earlier.any() and np.min(np.linalg.norm(points[earlier] - points[i], axis=1)) < 0.5:
            revisits += 1
    return RouteDefects(float(steps.max()), revisits)


def waypoint_place(wp: carla.Waypoint) -> tuple[float, float, float, float]:
    """A waypoint as a place for ``RoadNetwork.plan``: (x, y, z, yaw) in our frame."""
    x, y = _xy(wp)
    return x, y, wp.transform.location.z, _heading(wp)
