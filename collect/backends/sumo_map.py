"""A SUMO ``.net.xml`` read once into what the SUMO backend needs: drawable geometry, the driving graph,
stop lines and a fast on-road test.

Reading the file ourselves (instead of asking libsumo lane by lane) keeps the map independent of a running
simulation, so it is parsed once per process and shared by every episode.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from collect.scene import Lane, MapGeometry, offset_polyline
from collect.stop_lines import stop_line_across

DRIVING_CLASS = "passenger"


@dataclass(frozen=True)
class LaneInfo:
    id: str
    edge: str
    shape: np.ndarray  # (N, 2) centre line
    width: float
    length: float
    driving: bool  # passenger cars may use it


@dataclass(frozen=True)
class Connection:
    """A driving connection between two normal edges; ``internal`` lists the junction lanes in order."""

    from_edge: str
    to_edge: str
    from_lane: str
    to_lane: str
    internal: tuple[str, ...]
    direction: str  # s, l, r, t, ...
    tl: str | None
    link_index: int


@dataclass(frozen=True)
class StopLine:
    """The end of a signalised driving lane: ``line`` is ``(2, 2)`` across the lane, left end first."""

    lane: str
    edge: str
    tl: str
    line: np.ndarray
    links: dict[str, int]  # to_edge -> link index in the TLS state string
    default_link: int  # the straight-on link (or the first) for drivers whose next edge is unknown


def _allows(lane: ET.Element, vclass: str) -> bool:
    allow = lane.get("allow")
    if allow is not None:
        return vclass in allow.split() or "all" in allow.split()
    disallow = lane.get("disallow")
    return disallow is None or vclass not in disallow.split()


def _shape(text: str) -> np.ndarray:
    return np.array([[float(v) for v in p.split(",")[:2]] for p in text.split()], dtype=np.float64)


def _rectangle(centre: np.ndarray, width: float) -> np.ndarray:
    """A polygon around a two-point polyline, for crossings without an outline."""
    a, b = centre[0], centre[-1]
    d = (b - a) / max(np.linalg.norm(b - a), 1e-9)
    n = np.array([-d[1], d[0]]) * width / 2
    return np.array([a + n, b + n, b - n, a - n])


class SumoNet:
    """The parsed network. Raises ``ValueError`` naming the file when it has no drivable edges."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            root = ET.parse(self.path).getroot()
        except (OSError, ET.ParseError) as exc:
            raise ValueError(f"cannot read SUMO network {self.path}: {exc}") from exc
        self.name = self.path.name.removesuffix(".net.xml")
        self.lanes: dict[str, LaneInfo] = {}
        self.edge_driving_lane: dict[str, str] = {}  # normal edge -> its rightmost driving lane
        self.edge_sidewalk: dict[str, str] = {}
        ends: dict[str, tuple[str, str]] = {}  # normal edge -> (from junction, to junction)
        sidewalks: list[Lane] = []
        crosswalks: list[np.ndarray] = []
        for edge in root.iter("edge"):
            function = edge.get("function", "normal")
            if function == "normal":
                ends[edge.get("id")] = (edge.get("from"), edge.get("to"))
            for lane in edge.iter("lane"):
                shape = _shape(lane.get("shape"))
                info = LaneInfo(
                    id=lane.get("id"),
                    edge=edge.get("id"),
                    shape=shape,
                    width=float(lane.get("width", 3.2)),
                    length=float(lane.get("length")),
                    driving=function in ("normal", "internal") and _allows(lane, DRIVING_CLASS),
                )
                self.lanes[info.id] = info
                if function == "normal":
                    if info.driving and info.edge not in self.edge_driving_lane:
                        self.edge_driving_lane[info.edge] = info.id
                    if lane.get("allow") == "pedestrian":
                        self.edge_sidewalk.setdefault(info.edge, info.id)
                        sidewalks.append(Lane(centre=shape, width=info.width))
                elif function == "crossing":
                    outline = lane.get("outlineShape")
                    crosswalks.append(_shape(outline) if outline else _rectangle(shape, info.width))
        by_ends = {v: k for k, v in ends.items()}
        #: normal edge -> the edge running the other way between the same junctions (the far side of the street)
        self.reverse: dict[str, str] = {e: by_ends[(b, a)] for e, (a, b) in ends.items() if (b, a) in by_ends}
        if not self.edge_driving_lane:
            raise ValueError(f"SUMO network {self.path} has no edge that passenger cars may drive on")

        # connections: normal -> normal via internal lanes, and internal -> internal chains
        internal_next: dict[str, str] = {}
        raw: list[ET.Element] = []
        for c in root.iter("connection"):
            src = c.get("from")
            if src.startswith(":"):
                if c.get("via"):
                    internal_next[f"{src}_{c.get('fromLane')}"] = c.get("via")
            else:
                raw.append(c)
        self.successors: dict[str, list[Connection]] = {e: [] for e in self.edge_driving_lane}
        for c in raw:
            src, dst = c.get("from"), c.get("to")
            from_lane, to_lane = f"{src}_{c.get('fromLane')}", f"{dst}_{c.get('toLane')}"
            if from_lane not in self.lanes or to_lane not in self.lanes:
                continue
            if not (self.lanes[from_lane].driving and self.lanes[to_lane].driving):
                continue
            chain: list[str] = []
            via = c.get("via")
            while via:
                chain.append(via)
                via = internal_next.get(via)
            self.successors[src].append(
                Connection(
                    from_edge=src, to_edge=dst, from_lane=from_lane, to_lane=to_lane, internal=tuple(chain),
                    direction=c.get("dir", "s"), tl=c.get("tl"), link_index=int(c.get("linkIndex", -1)),
                )
            )
        self.stop_lines = self._stop_lines()

        driving = [info for info in self.lanes.values() if info.driving]
        self.geometry = MapGeometry(
            name=self.name,
            lanes=tuple(Lane(centre=info.shape, width=info.width) for info in driving),
            sidewalks=tuple(sidewalks),
            crosswalks=tuple(crosswalks),
            markings=self._markings(driving),
        )
        # every driving-lane segment, for the vectorised on-road test
        starts, ends, half = [], [], []
        for info in driving:
            starts.append(info.shape[:-1])
            ends.append(info.shape[1:])
            half.append(np.full(len(info.shape) - 1, info.width / 2))
        self._seg_a = np.concatenate(starts)
        self._seg_d = np.concatenate(ends) - self._seg_a
        self._seg_len2 = np.maximum(np.einsum("ij,ij->i", self._seg_d, self._seg_d), 1e-12)
        self._seg_half = np.concatenate(half)

    def _markings(self, driving: list[LaneInfo]) -> tuple[np.ndarray, ...]:
        """Lane edges outside junctions, where paint would be (SUMO stores none): every left edge (a centre line or
        the line between two lanes), and the right edge unless a sidewalk lies beyond it (a kerb, not paint)."""
        lines = []
        for info in driving:
            if info.id.startswith(":"):
                continue
            lines.append(offset_polyline(info.shape, info.width / 2))
            edge, index = info.id.rsplit("_", 1)
            if self.edge_sidewalk.get(edge) != f"{edge}_{int(index) - 1}":
                lines.append(offset_polyline(info.shape, -info.width / 2))
        return tuple(lines)

    def _stop_lines(self) -> list[StopLine]:
        by_lane: dict[str, list[Connection]] = {}
        for conns in self.successors.values():
            for c in conns:
                if c.tl is not None and c.link_index >= 0:
                    by_lane.setdefault(c.from_lane, []).append(c)
        lines = []
        for lane_id, conns in sorted(by_lane.items()):
            info = self.lanes[lane_id]
            end, before = info.shape[-1], info.shape[-2]
            heading = math.atan2(end[1] - before[1], end[0] - before[0])
            straight = [c for c in conns if c.direction == "s"]
            lines.append(
                StopLine(
                    lane=lane_id, edge=info.edge, tl=conns[0].tl, line=stop_line_across(end[0], end[1], heading, info.width),
                    links={c.to_edge: c.link_index for c in conns}, default_link=(straight or conns)[0].link_index,
                )
            )
        return lines

    def on_road(self, x: float, y: float) -> bool:
        """Whether the point lies on some driving lane (normal or inside a junction)."""
        rel = np.array([x, y]) - self._seg_a
        t = np.clip(np.einsum("ij,ij->i", rel, self._seg_d) / self._seg_len2, 0.0, 1.0)
        off = rel - t[:, None] * self._seg_d
        return bool(np.any(np.einsum("ij,ij->i", off, off) <= self._seg_half**2))

    def connection(self, from_edge: str, to_edge: str) -> Connection:
        for c in self.successors.get(from_edge, ()):
            if c.to_edge == to_edge:
                return c
        raise KeyError(f"{self.path}: no driving connection {from_edge} -> {to_edge}")

    def route_polyline(self, edges: list[str]) -> np.ndarray:
        """Centre line of the driving lanes along ``edges``, junction lanes included."""
        parts = [self.lanes[self.edge_driving_lane[edges[0]]].shape]
        for a, b in zip(edges[:-1], edges[1:]):
            c = self.connection(a, b)
            parts.extend(self.lanes[lane].shape for lane in c.internal)
            parts.append(self.lanes[c.to_lane].shape)
        return np.concatenate(parts, axis=0)

    def turn_count(self, edges: list[str]) -> int:
        return sum(self.connection(a, b).direction in ("l", "r", "L", "R") for a, b in zip(edges[:-1], edges[1:]))


@lru_cache(maxsize=8)
def load_net(path: str) -> SumoNet:
    """The parsed network at ``path``, cached per process (one parse serves every episode)."""
    return SumoNet(path)


def yaw_to_sumo_angle(yaw: float) -> float:
    """Counter-clockwise radians from +x to SUMO's clockwise degrees from north."""
    return (90.0 - math.degrees(yaw)) % 360.0


def sumo_angle_to_yaw(angle: float) -> float:
    return math.atan2(math.sin(math.radians(90.0 - angle)), math.cos(math.radians(90.0 - angle)))
