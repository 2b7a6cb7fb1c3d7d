"""OpenDRIVE maps written for the CARLA map tests, each isolating one feature of real CARLA towns.

    python tests/collect/opendrive_maps.py      # rewrites tests/collect/maps/*.xodr (committed)

- ``sections``: one straight 100 m road cut into three lane sections (lane changes allowed in the first and
  last only), two lanes one way and one the other;
- ``bridge``: a road crossing 8 m above another one, with ramps up and down; the two never connect;
- ``highway``: a 2 km four-lane dual carriageway in roads of several lane sections, joined by two junctions:
  an off-ramp leaves the right lane in the first, an on-ramp joins it in the second;
- ``junction``: a four-way junction whose twelve connectors overlap, with sidewalks along every road and
  sidewalk-only connectors round the corners (as CARLA's towns have).

The OpenDRIVE frame is ours (x east, y north, heading counter-clockwise); CARLA flips y when it loads a map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

MAPS = Path(__file__).resolve().parent / "maps"
LANE_WIDTH = 3.5
SIDEWALK_WIDTH = 2.0


def _road_mark(kind: str) -> str:
    """A lane border's marking; CARLA reads the lane-change permission from ``laneChange`` (absent: both ways)."""
    change = "both" if kind == "broken" else "none"
    return f'<roadMark sOffset="0" type="{kind}" weight="standard" color="standard" width="0.15" laneChange="{change}"/>'


@dataclass(frozen=True)
class LaneDef:
    id: int
    type: str = "driving"
    width: float = LANE_WIDTH
    mark: str = "broken"  # marking along the lane's outer edge: broken, solid or none
    pred: int | None = None
    succ: int | None = None

    def xml(self) -> str:
        links = "".join(
            f'<{kind} id="{lane}"/>' for kind, lane in (("predecessor", self.pred), ("successor", self.succ)) if lane is not None
        )
        mark = _road_mark(self.mark)
        return (
            f'<lane id="{self.id}" type="{self.type}" level="false"><link>{links}</link>'
            f'<width sOffset="0" a="{self.width}" b="0" c="0" d="0"/>{mark}</lane>'
        )


@dataclass(frozen=True)
class SectionDef:
    s: float
    left: tuple[LaneDef, ...] = ()  # ids 1, 2, ... from the centre outwards
    right: tuple[LaneDef, ...] = ()  # ids -1, -2, ...
    centre_mark: str = "solid"

    def xml(self) -> str:
        left = "".join(lane.xml() for lane in sorted(self.left, key=lambda lane: -lane.id))
        right = "".join(lane.xml() for lane in sorted(self.right, key=lambda lane: -lane.id))
        centre = f'<lane id="0" type="none" level="false"><link/>{_road_mark(self.centre_mark)}</lane>'
        return (
            f'<laneSection s="{self.s}">' + (f"<left>{left}</left>" if left else "") + f"<center>{centre}</center>"
            + (f"<right>{right}</right>" if right else "") + "</laneSection>"
        )  # fmt: skip


@dataclass(frozen=True)
class Geometry:
    """A reference-line piece: a line (curvature 0) or an arc, from ``(x, y)`` heading ``hdg``."""

    x: float
    y: float
    hdg: float
    length: float
    curvature: float = 0.0

    def end(self) -> tuple[float, float, float]:
        if self.curvature == 0.0:
            return self.x + self.length * math.cos(self.hdg), self.y + self.length * math.sin(self.hdg), self.hdg
        r, h1 = 1.0 / self.curvature, self.hdg + self.curvature * self.length
        return self.x + r * (math.sin(h1) - math.sin(self.hdg)), self.y - r * (math.cos(h1) - math.cos(self.hdg)), h1

    def xml(self, s: float) -> str:
        shape = "<line/>" if self.curvature == 0.0 else f'<arc curvature="{self.curvature!r}"/>'
        return f'<geometry s="{s!r}" x="{self.x!r}" y="{self.y!r}" hdg="{self.hdg!r}" length="{self.length!r}">{shape}</geometry>'


def arc_ending_at(x: float, y: float, hdg: float, length: float, curvature: float) -> Geometry:
    """The arc of ``length`` and ``curvature`` that ends at ``(x, y)`` heading ``hdg``."""
    back = Geometry(x, y, hdg + math.pi, length, -curvature).end()  # driven backwards, a right bend turns left
    return Geometry(back[0], back[1], back[2] - math.pi, length, curvature)


@dataclass(frozen=True)
class RoadDef:
    id: int
    geometry: tuple[Geometry, ...]
    sections: tuple[SectionDef, ...]
    junction: int = -1
    pred: tuple[str, int, str] | None = None  # (road/junction, id, contact point; "" for a junction)
    succ: tuple[str, int, str] | None = None
    elevation: tuple[tuple[float, float, float, float, float], ...] = ((0.0, 0.0, 0.0, 0.0, 0.0),)  # s, a, b, c, d

    @property
    def length(self) -> float:
        return sum(g.length for g in self.geometry)

    def height_at(self, s: float) -> float:
        """The road's elevation at ``s``, from its own profile (a yardstick independent of CARLA)."""
        s0, a, b, c, d = max((e for e in self.elevation if e[0] <= s), key=lambda e: e[0])
        ds = s - s0
        return a + b * ds + c * ds**2 + d * ds**3

    def xml(self) -> str:
        link = ""
        for kind, target in (("predecessor", self.pred), ("successor", self.succ)):
            if target is not None:
                element, ident, contact = target
                contact_attr = f' contactPoint="{contact}"' if contact else ""
                link += f'<{kind} elementType="{element}" elementId="{ident}"{contact_attr}/>'
        s, plan = 0.0, ""
        for g in self.geometry:
            plan += g.xml(s)
            s += g.length
        elevation = "".join(f'<elevation s="{e[0]!r}" a="{e[1]!r}" b="{e[2]!r}" c="{e[3]!r}" d="{e[4]!r}"/>' for e in self.elevation)
        return (
            f'<road name="r{self.id}" length="{self.length!r}" id="{self.id}" junction="{self.junction}"><link>{link}</link>'
            f"<planView>{plan}</planView><elevationProfile>{elevation}</elevationProfile><lateralProfile/>"
            f"<lanes>{''.join(section.xml() for section in self.sections)}</lanes></road>"
        )


@dataclass(frozen=True)
class Connection:
    incoming: int
    connecting: int
    contact: str
    lanes: tuple[tuple[int, int], ...]  # (incoming lane, connecting lane)

    def xml(self, i: int) -> str:
        links = "".join(f'<laneLink from="{a}" to="{b}"/>' for a, b in self.lanes)
        return f'<connection id="{i}" incomingRoad="{self.incoming}" connectingRoad="{self.connecting}" contactPoint="{self.contact}">{links}</connection>'


@dataclass
class MapDef:
    name: str
    roads: list[RoadDef] = field(default_factory=list)
    junctions: dict[int, list[Connection]] = field(default_factory=dict)

    def xml(self) -> str:
        junctions = "".join(
            f'<junction id="{j}" name="j{j}">' + "".join(c.xml(i) for i, c in enumerate(conns)) + "</junction>"
            for j, conns in sorted(self.junctions.items())
        )
        header = f'<header revMajor="1" revMinor="4" name="{self.name}" version="1.00" north="0" south="0" east="0" west="0"/>'
        body = "\n".join(road.xml() for road in self.roads)
        return f'<?xml version="1.0" standalone="yes"?>\n<OpenDRIVE>\n{header}\n{body}\n{junctions}\n</OpenDRIVE>\n'


def _two_way(left: int, right: int, sidewalks: bool, mark: str = "broken", s: float = 0.0, linked: bool = False) -> SectionDef:
    """A section with ``right`` lanes along the road and ``left`` against it, the outermost lane solid-edged."""

    def side(n: int, sign: int) -> tuple[LaneDef, ...]:
        lanes = []
        for k in range(1, n + 1):
            edge = "solid" if k == n else mark
            lanes.append(LaneDef(sign * k, mark=edge, pred=sign * k if linked else None, succ=sign * k if linked else None))
        if sidewalks:
            k = n + 1
            lanes.append(LaneDef(sign * k, "sidewalk", SIDEWALK_WIDTH, "none", sign * k if linked else None, sign * k if linked else None))
        return tuple(lanes)

    return SectionDef(s, side(left, 1), side(right, -1))


# -- the maps ----------------------------------------------------------------------------------------------------


def sections_map() -> MapDef:
    """Three lane sections on one straight road; the middle one has a solid line between its two lanes."""
    cuts = (0.0, 40.0, 70.0)
    sections = []
    for i, s in enumerate(cuts):
        section = _two_way(1, 2, sidewalks=True, mark="solid" if i == 1 else "broken", s=s, linked=True)
        first, last = i == 0, i == len(cuts) - 1
        unlink = {"pred": None} if first else {}
        unlink |= {"succ": None} if last else {}
        if unlink:
            section = SectionDef(
                s,
                tuple(LaneDef(**{**lane.__dict__, **unlink}) for lane in section.left),
                tuple(LaneDef(**{**lane.__dict__, **unlink}) for lane in section.right),
            )
        sections.append(section)
    return MapDef("sections", [RoadDef(1, (Geometry(0.0, 0.0, 0.0, 100.0),), tuple(sections))])


def _smooth_step(s0: float, s1: float, z0: float, z1: float) -> tuple[float, float, float, float, float]:
    """The cubic from ``z0`` at ``s0`` to ``z1`` at ``s1`` with level ends, as an OpenDRIVE elevation record."""
    length, rise = s1 - s0, z1 - z0
    return (s0, z0, 0.0, 3.0 * rise / length**2, -2.0 * rise / length**3)


def bridge_map() -> MapDef:
    """Road 2 runs north over road 1 on an 8 m high bridge; ramps of 30 m lead up and down."""
    lower = RoadDef(1, (Geometry(-100.0, 0.0, 0.0, 200.0),), (_two_way(1, 1, sidewalks=True),))
    profile = (
        (0.0, 0.0, 0.0, 0.0, 0.0),
        _smooth_step(40.0, 70.0, 0.0, 8.0),
        (70.0, 8.0, 0.0, 0.0, 0.0),
        _smooth_step(130.0, 160.0, 8.0, 0.0),
        (160.0, 0.0, 0.0, 0.0, 0.0),
    )
    upper = RoadDef(2, (Geometry(0.0, -100.0, math.pi / 2, 200.0),), (_two_way(1, 1, sidewalks=True),), elevation=profile)
    return MapDef("bridge", [lower, upper])


HIGHWAY_LANES = 4
_RAMP_CURVATURE = -1.0 / 200.0  # the ramps bend right, away from the carriageway


def _carriageway(road: int, x0: float, length: float, cuts: int, pred: tuple | None, succ: tuple | None) -> RoadDef:
    """A straight stretch of the dual carriageway in ``cuts`` lane sections (lanes linked section to section)."""
    step = length / cuts
    sections = []
    for i in range(cuts):
        section = _two_way(HIGHWAY_LANES, HIGHWAY_LANES, sidewalks=False, s=i * step, linked=True)
        sections.append(
            SectionDef(
                i * step,
                tuple(LaneDef(**{**lane.__dict__, "pred": lane.pred if i else None, "succ": lane.succ if i < cuts - 1 else None}) for lane in section.left),
                tuple(LaneDef(**{**lane.__dict__, "pred": lane.pred if i else None, "succ": lane.succ if i < cuts - 1 else None}) for lane in section.right),
            )
        )
    return RoadDef(road, (Geometry(x0, 0.0, 0.0, length),), tuple(sections), pred=pred, succ=succ)


def _through(road: int, junction: int, x0: float, length: float, eastbound: bool, before: int, after: int) -> RoadDef:
    """A junction connector carrying all lanes of one direction straight through."""
    lanes = tuple(LaneDef(-k, mark="solid" if k == HIGHWAY_LANES else "broken", pred=-k if eastbound else k, succ=-k if eastbound else k) for k in range(1, HIGHWAY_LANES + 1))
    geometry = Geometry(x0, 0.0, 0.0, length) if eastbound else Geometry(x0 + length, 0.0, math.pi, length)
    contact_in, contact_out = ("end", "start") if eastbound else ("start", "end")
    return RoadDef(road, (geometry,), (SectionDef(0.0, (), lanes),), junction, ("road", before, contact_in), ("road", after, contact_out))


def highway_map() -> MapDef:
    """Roads 1 (600 m), 2 (760 m) and 4 (560 m) in sections of 150-190 m, junctions 10 and 20 between them."""
    outer = -(HIGHWAY_LANES - 0.5) * LANE_WIDTH  # centre of the rightmost eastbound lane
    road1 = _carriageway(1, 0.0, 600.0, 4, None, ("junction", 10, ""))
    road2 = _carriageway(2, 640.0, 760.0, 4, ("junction", 10, ""), ("junction", 20, ""))
    road4 = _carriageway(4, 1440.0, 560.0, 4, ("junction", 20, ""), None)
    # off-ramp: a connector from the rightmost lane bending away, then a ramp road of 200 m
    off = Geometry(600.0, outer + LANE_WIDTH / 2, 0.0, 40.0, _RAMP_CURVATURE)
    ramp_out = Geometry(*off.end(), 200.0, _RAMP_CURVATURE)
    off_lane = (LaneDef(-1, mark="solid", pred=-HIGHWAY_LANES, succ=-1),)
    off_connector = RoadDef(13, (off,), (SectionDef(0.0, (), off_lane),), 10, ("road", 1, "end"), ("road", 3, "start"))
    road3 = RoadDef(3, (ramp_out,), (SectionDef(0.0, (), (LaneDef(-1, mark="solid"),)),), pred=("junction", 10, ""))
    # on-ramp: a ramp road of 200 m ending where a connector bends into the rightmost lane
    on = arc_ending_at(1440.0, outer + LANE_WIDTH / 2, 0.0, 40.0, _RAMP_CURVATURE)
    ramp_in = arc_ending_at(on.x, on.y, on.hdg, 200.0, _RAMP_CURVATURE)
    road5 = RoadDef(5, (ramp_in,), (SectionDef(0.0, (), (LaneDef(-1, mark="solid"),)),), succ=("junction", 20, ""))
    on_lane = (LaneDef(-1, mark="solid", pred=-1, succ=-HIGHWAY_LANES),)
    on_connector = RoadDef(25, (on,), (SectionDef(0.0, (), on_lane),), 20, ("road", 5, "end"), ("road", 4, "start"))
    through = [
        _through(11, 10, 600.0, 40.0, True, 1, 2),
        _through(12, 10, 600.0, 40.0, False, 2, 1),
        _through(21, 20, 1400.0, 40.0, True, 2, 4),
        _through(22, 20, 1400.0, 40.0, False, 4, 2),
    ]
    east = tuple((-k, -k) for k in range(1, HIGHWAY_LANES + 1))
    west = tuple((k, -k) for k in range(1, HIGHWAY_LANES + 1))
    junctions = {
        10: [Connection(1, 11, "start", east), Connection(2, 12, "start", west), Connection(1, 13, "start", ((-HIGHWAY_LANES, -1),))],
        20: [Connection(2, 21, "start", east), Connection(4, 22, "start", west), Connection(5, 25, "start", ((-1, -1),))],
    }
    return MapDef("highway", [road1, road2, road3, road4, road5, off_connector, on_connector, *through], junctions)


JUNCTION_HALF = 10.0  # m from the junction centre to where each road starts
JUNCTION_ID = 900  # CARLA mislinks a junction whose id is also a road's id
_ARMS = (0.0, math.pi / 2, math.pi, -math.pi / 2)  # east, north, west, south


def _unit(angle: float) -> tuple[float, float]:
    return math.cos(angle), math.sin(angle)


def junction_map() -> MapDef:
    """Four 100 m arms round a junction at the origin: straight, left and right connectors from every arm."""
    roads, connections = [], []
    for k, angle in enumerate(_ARMS):
        ux, uy = _unit(angle)
        roads.append(
            RoadDef(k + 1, (Geometry(JUNCTION_HALF * ux, JUNCTION_HALF * uy, angle, 100.0),), (_two_way(1, 1, sidewalks=True),), pred=("junction", JUNCTION_ID, ""))
        )
    road_id = 100
    for i, a_in in enumerate(_ARMS):
        for j, a_out in enumerate(_ARMS):
            if i == j:
                continue
            turn = math.remainder(a_out - (a_in + math.pi), 2 * math.pi)
            x, y = JUNCTION_HALF * _unit(a_in)[0], JUNCTION_HALF * _unit(a_in)[1]
            if abs(turn) < 1e-9:
                geometry = Geometry(x, y, a_in + math.pi, 2 * JUNCTION_HALF)
            else:
                curvature = math.copysign(1.0 / JUNCTION_HALF, turn)
                geometry = Geometry(x, y, a_in + math.pi, JUNCTION_HALF * math.pi / 2, curvature)
            lane = LaneDef(-1, mark="none", pred=1, succ=-1)
            roads.append(RoadDef(road_id, (geometry,), (SectionDef(0.0, (), (lane,), centre_mark="none"),), JUNCTION_ID, ("road", i + 1, "start"), ("road", j + 1, "start")))
            connections.append(Connection(i + 1, road_id, "start", ((1, -1),)))
            road_id += 1
    # a sidewalk round each corner: from arm k's left sidewalk to the right sidewalk of the arm counter-clockwise
    kerb = LANE_WIDTH  # the sidewalk's inner edge lies one lane width from the arm's centre line
    radius = JUNCTION_HALF - kerb
    for k, angle in enumerate(_ARMS):
        ux, uy = _unit(angle)
        lx, ly = _unit(angle + math.pi / 2)
        start = Geometry(JUNCTION_HALF * ux + kerb * lx, JUNCTION_HALF * uy + kerb * ly, angle + math.pi, radius * math.pi / 2, -1.0 / radius)
        walk = LaneDef(-1, "sidewalk", SIDEWALK_WIDTH, "none", pred=2, succ=-2)
        nxt = (k + 1) % len(_ARMS) + 1
        roads.append(RoadDef(road_id, (start,), (SectionDef(0.0, (), (walk,), centre_mark="none"),), JUNCTION_ID, ("road", k + 1, "start"), ("road", nxt, "start")))
        connections.append(Connection(k + 1, road_id, "start", ((2, -1),)))
        road_id += 1
    return MapDef("junction", roads, {JUNCTION_ID: connections})


BUILDERS = {"sections": sections_map, "bridge": bridge_map, "highway": highway_map, "junction": junction_map}


def xodr(name: str) -> str:
    """The OpenDRIVE text of map ``name`` as the builder writes it."""
    return BUILDERS[name]().xml()


if __name__ == "__main__":
    MAPS.mkdir(exist_ok=True)
    for name in BUILDERS:
        (MAPS / f"{name}.xodr").write_text(xodr(name))
        print(f"wrote {MAPS / name}.xodr")
