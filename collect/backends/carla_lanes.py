"""The lanes of a ``carla.Map``, read once, one lane section at a time.

A lane of OpenDRIVE runs through every section of its road, but its id, width, markings and links may change at
each section boundary; CARLA's waypoints name a lane by ``(road_id, section_id, lane_id)``. So a lane here is
one lane of one section: its centre points are sampled over exactly that section's stretch of road (walking a
waypoint "to the lane's end" runs on to the end of the road and overlaps the next section), with their heights,
widths, the lane changes its markings allow and the sections that follow it. Sections and lanes are listed
from the map's own OpenDRIVE text, so lanes no waypoint generator returns (sidewalks round junction corners,
lanes without links) are found too.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import carla
import numpy as np

from collect.backends.carla_convert import xy_from_location

LaneKey = tuple[int, int, int]  # (road_id, section_id, lane_id): one lane of one road section
_INSIDE = 1e-4  # m: how far inside its section a lane's first and last point are taken (boundaries belong to the next)
_TYPES = {"driving": carla.LaneType.Driving, "sidewalk": carla.LaneType.Sidewalk}


def lane_key(wp: carla.Waypoint) -> LaneKey:
    return (wp.road_id, wp.section_id, wp.lane_id)


@dataclass(frozen=True)
class LaneChange:
    """Moving into the adjacent same-direction lane ``target`` may start at the arc lengths ``allowed_s``."""

    target: LaneKey
    allowed_s: np.ndarray  # sorted arc lengths along the lane the change starts from


@dataclass(frozen=True)
class LaneSegment:
    """One lane of one road section, in its direction of travel."""

    key: LaneKey
    points: np.ndarray  # (N, 2) world, lane centre
    z: np.ndarray  # (N,) height of the road surface at each point
    s: np.ndarray  # (N,) arc length along ``points``
    widths: np.ndarray  # (N,)
    successors: tuple[LaneKey, ...] = ()
    lane_changes: tuple[LaneChange, ...] = ()
    is_junction: bool = False

    @property
    def length(self) -> float:
        return float(self.s[-1])

    @property
    def width(self) -> float:
        return float(np.median(self.widths))

    def point_at(self, s: float) -> np.ndarray:
        """The centre point at arc length ``s`` (clamped to the lane); scalar arithmetic, as the route search
        calls it for every state."""
        i, w = self._locate(s)
        return self.points[i] + w * (self.points[i + 1] - self.points[i])

    def height_at(self, s: float) -> float:
        i, w = self._locate(s)
        return float(self.z[i] + w * (self.z[i + 1] - self.z[i]))

    def _locate(self, s: float) -> tuple[int, float]:
        """The segment holding arc length ``s`` and the fraction of it before ``s``."""
        s = min(max(float(s), 0.0), float(self.s[-1]))
        i = min(int(np.searchsorted(self.s, s, side="right")) - 1, len(self.s) - 2)
        return i, (s - float(self.s[i])) / max(float(self.s[i + 1] - self.s[i]), 1e-12)

    def between(self, s0: float, s1: float) -> np.ndarray:
        """The centre polyline from arc length ``s0`` to ``s1`` (``s0 <= s1``), end points interpolated."""
        inner = self.points[(self.s > s0) & (self.s < s1)]
        return np.concatenate([self.point_at(s0)[None], inner, self.point_at(s1)[None]], axis=0)


@dataclass(frozen=True)
class SectionSpan:
    """Where a road's lane section lies along the road, and which lanes of which types it has."""

    road: int
    section: int
    s0: float
    s1: float
    lanes: tuple[tuple[int, str], ...]  # (lane id, OpenDRIVE type)


def section_spans(xodr: str) -> list[SectionSpan]:
    """Every lane section of an OpenDRIVE document; its index within the road is CARLA's ``section_id``."""
    spans = []
    for road in ET.fromstring(xodr).iter("road"):
        road_id, length = int(road.get("id")), float(road.get("length"))
        sections = road.findall("./lanes/laneSection")
        starts = [float(section.get("s", 0.0)) for section in sections] + [length]
        for i, section in enumerate(sections):
            lanes = tuple(
                (int(lane.get("id")), lane.get("type", "none"))
                for side in ("left", "right")
                for lane in section.findall(f"./{side}/lane")
            )
            spans.append(SectionSpan(road_id, i, starts[i], starts[i + 1], lanes))
    return spans


def _waypoints(cmap: carla.Map, span: SectionSpan, lane: int, resolution: float) -> list[carla.Waypoint]:
    """Waypoints of one lane every ``resolution`` metres of road over its section, in order of increasing s."""
    if span.s1 - span.s0 <= 2 * _INSIDE:
        return []
    count = max(2, int(math.ceil((span.s1 - span.s0) / resolution)) + 1)
    found = []
    for s in np.linspace(span.s0 + _INSIDE, span.s1 - _INSIDE, count):
        wp = cmap.get_waypoint_xodr(span.road, lane, float(s))
        if wp is not None and wp.section_id == span.section and wp.lane_id == lane:
            found.append(wp)
    return found


def _travels_down(waypoints: list[carla.Waypoint]) -> bool:
    """Whether traffic on the lane drives towards decreasing s (CARLA knows: left lanes of right-hand traffic)."""
    middle = waypoints[len(waypoints) // 2]
    ahead = [w for w in middle.next(0.5) if lane_key(w) == lane_key(middle)]
    if ahead:
        return ahead[0].s < middle.s
    behind = [w for w in middle.previous(0.5) if lane_key(w) == lane_key(middle)]
    if behind:
        return behind[0].s > middle.s
    return middle.lane_id > 0  # a stub too short to tell: the OpenDRIVE convention for right-hand traffic


def _arc_length(points: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


def _lane_changes(waypoints: list[carla.Waypoint], s: np.ndarray) -> tuple[LaneChange, ...]:
    allowed: dict[LaneKey, list[float]] = {}
    for wp, arc in zip(waypoints, s):
        for flag, neighbour in ((carla.LaneChange.Left, wp.get_left_lane()), (carla.LaneChange.Right, wp.get_right_lane())):
            if (
                neighbour is not None
                and wp.lane_change & flag
                and neighbour.lane_type == carla.LaneType.Driving
                and neighbour.lane_id * wp.lane_id > 0
            ):
                allowed.setdefault(lane_key(neighbour), []).append(float(arc))
    return tuple(LaneChange(target, np.array(arcs)) for target, arcs in sorted(allowed.items()))


def _successors(last: carla.Waypoint) -> tuple[LaneKey, ...]:
    """The driving lanes a vehicle enters at the end of ``last``'s lane section."""
    keys = {lane_key(w) for w in last.next(4 * _INSIDE + 0.01) if w.lane_type == carla.LaneType.Driving}
    keys.discard(lane_key(last))
    return tuple(sorted(keys))


def _painted(marking: carla.LaneMarking, beyond: carla.Waypoint | None) -> bool:
    """Whether a lane edge is drawn as paint: the map marks it, and it is no kerb (a sidewalk beyond it shows the
    edge already, and a line there would eat the sidewalk's pixels)."""
    return marking.type != carla.LaneMarkingType.NONE and (beyond is None or beyond.lane_type != carla.LaneType.Sidewalk)


@dataclass(frozen=True)
class LaneRead:
    """A lane section as read, with what the BEV needs beyond the graph: where its edges are painted."""

    segment: LaneSegment
    lane_type: str  # "driving" or "sidewalk"
    marked_left: np.ndarray  # (N,) bool: paint runs along the left edge at this point (driving lanes outside junctions)
    marked_right: np.ndarray


def read_lanes(cmap: carla.Map, resolution: float) -> list[LaneRead]:
    """Every driving and sidewalk lane of every section of ``cmap``, sampled every ``resolution`` m of road."""
    out = []
    for span in section_spans(cmap.to_opendrive()):
        for lane_id, kind in span.lanes:
            if kind not in _TYPES:
                continue
            waypoints = _waypoints(cmap, span, lane_id, resolution)
            if len(waypoints) < 2 or waypoints[0].lane_type != _TYPES[kind]:
                continue
            driving = kind == "driving"
            if driving and _travels_down(waypoints):
                waypoints.reverse()
            locations = [w.transform.location for w in waypoints]
            points = np.array([xy_from_location(loc) for loc in locations], dtype=np.float64)
            keep = np.concatenate([[True], np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-6])
            waypoints = [w for w, k in zip(waypoints, keep) if k]
            points = points[keep]
            if len(points) < 2:
                continue
            s = _arc_length(points)
            segment = LaneSegment(
                key=(span.road, span.section, lane_id),
                points=points,
                z=np.array([loc.z for loc, k in zip(locations, keep) if k], dtype=np.float64),
                s=s,
                widths=np.array([w.lane_width for w in waypoints], dtype=np.float64),
                successors=_successors(waypoints[-1]) if driving else (),
                lane_changes=_lane_changes(waypoints, s) if driving else (),
                is_junction=bool(waypoints[0].is_junction),
            )
            drawn = driving and not segment.is_junction  # the BEV paints no lines inside junctions
            marked_left = np.array([drawn and _painted(w.left_lane_marking, w.get_left_lane()) for w in waypoints])
            marked_right = np.array([drawn and _painted(w.right_lane_marking, w.get_right_lane()) for w in waypoints])
            out.append(LaneRead(segment, kind, marked_left, marked_right))
    return out
