"""CARLA map geometry, routing and metrics, run offline on ``carla.Map`` built from OpenDRIVE text."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

carla = pytest.importorskip("carla")

from collect.backends import carla_map as cm  # noqa: E402
from collect.backends.carla_convert import location  # noqa: E402
from collect.route import route_state  # noqa: E402
from collect.scene import Pose  # noqa: E402
from collect.stop_lines import crossed_stop_line  # noqa: E402
from collect.town.build_town import NET, XODR  # noqa: E402

# one straight 200 m road, two driving lanes in the same direction, broken marking between them
TWO_LANES_XODR = """<?xml version="1.0" standalone="yes"?>
<OpenDRIVE>
  <header revMajor="1" revMinor="4" name="two_lanes" version="1.00" north="0" south="0" east="0" west="0"/>
  <road name="straight" length="200.0" id="1" junction="-1">
    <link/>
    <planView><geometry s="0.0" x="0.0" y="0.0" hdg="0.0" length="200.0"><line/></geometry></planView>
    <elevationProfile><elevation s="0" a="0" b="0" c="0" d="0"/></elevationProfile>
    <lateralProfile/>
    <lanes>
      <laneSection s="0">
        <center><lane id="0" type="none" level="false"><link/>
          <roadMark sOffset="0" type="solid" weight="standard" color="standard" width="0.13"/></lane></center>
        <right>
          <lane id="-1" type="driving" level="false"><link/><width sOffset="0" a="3.5" b="0" c="0" d="0"/>
            <roadMark sOffset="0" type="broken" weight="standard" color="standard" width="0.13"/></lane>
          <lane id="-2" type="driving" level="false"><link/><width sOffset="0" a="3.5" b="0" c="0" d="0"/>
            <roadMark sOffset="0" type="solid" weight="standard" color="standard" width="0.13"/></lane>
        </right>
      </laneSection>
    </lanes>
  </road>
</OpenDRIVE>
"""


@pytest.fixture(scope="module")
def town() -> cm.RoadNetwork:
    return cm.RoadNetwork(carla.Map("town", XODR.read_text()))


@pytest.fixture(scope="module")
def two_lanes() -> cm.RoadNetwork:
    return cm.RoadNetwork(carla.Map("two_lanes", TWO_LANES_XODR))


def _sumo_lanes(pedestrian: bool) -> list[tuple[np.ndarray, float]]:
    """Shapes and widths of the bundled SUMO net's plain (non-internal) lanes: sidewalks or driving lanes."""
    lanes = []
    for edge in ET.parse(NET).getroot().iter("edge"):
        if edge.get("function"):
            continue
        for lane in edge.iter("lane"):
            if (lane.get("allow") == "pedestrian") == pedestrian:
                shape = np.array([[float(v) for v in p.split(",")] for p in lane.get("shape").split()])
                lanes.append((shape, float(lane.get("width"))))
    return lanes


def test_carla_lanes_coincide_with_the_sumo_net_they_were_exported_from(town: cm.RoadNetwork) -> None:
    """An independent check of the y flip: every SUMO driving lane has a CARLA lane on it, same direction."""
    sumo = _sumo_lanes(pedestrian=False)
    assert len(sumo) == 34  # 17 two-way streets of the 4 x 3 grid
    carla_lanes = [seg for seg in town.lanes.values() if not seg.is_junction]
    for shape, width in sumo:
        start, end = shape[0], shape[-1]
        match = [seg for seg in carla_lanes if np.linalg.norm(seg.points[0] - start) < 0.05 and np.linalg.norm(seg.points[-1] - end) < 0.05]
        assert len(match) == 1, f"no CARLA lane from {start} to {end}"
        assert match[0].width == pytest.approx(width)


def test_geometry_has_lanes_sidewalks_and_zebra_crossings(town: cm.RoadNetwork) -> None:
    geometry = town.geometry()
    assert geometry is town.geometry()  # one object per map: the BEV caches its raster by identity
    assert len(geometry.lanes) == len(town.lanes) == 102  # 34 street lanes + junction connections
    assert {float(w) for lane in geometry.lanes for w in lane.width} == {3.5}  # widths per point
    assert {float(w) for lane in geometry.sidewalks for w in lane.width} == {2.0}
    # each street sidewalk of the SUMO net is a CARLA sidewalk lane
    sumo_walks = _sumo_lanes(pedestrian=True)
    for shape, _ in sumo_walks:
        assert any(np.linalg.norm(w.centre[[0, -1]] - shape[[0, -1]], axis=1).max() < 0.05 for w in geometry.sidewalks)
    # 3 m x 7 m zebra crossings at the junctions
    assert len(geometry.crosswalks) == 30
    for polygon in geometry.crosswalks:
        x, y = polygon[:, 0], polygon[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        assert len(polygon) == 4 and area == pytest.approx(21.0, abs=0.1)
    xmin, ymin, xmax, ymax = geometry.bounds()
    assert (xmin, ymin, xmax, ymax) == pytest.approx((-4.5, -4.5, 274.5, 184.5), abs=0.5)


def test_crosswalk_polygons_split_closed_and_open_outlines() -> None:
    square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    far = [(10.0, 0.0), (12.0, 0.0), (12.0, 3.0)]
    closed = cm.split_polygons(square + square[:1] + far + far[:1], corner_counts=[])
    assert [len(p) for p in closed] == [4, 3]
    opened = cm.split_polygons(square + far, corner_counts=[4, 3])
    assert [p.tolist() for p in opened] == [[list(p) for p in square], [list(p) for p in far]]
    with pytest.warns(UserWarning, match="crosswalk"):
        assert cm.split_polygons(square + far, corner_counts=[4, 4], map_name="m") == ()


# -- routing ------------------------------------------------------------------------------------------------


def test_route_between_far_corners_follows_the_streets(town: cm.RoadNetwork) -> None:
    start, goal = np.array([45.0, -1.75]), np.array([271.75, 135.0])  # eastbound to northbound
    route = town.plan(tuple(start), tuple(goal))
    straight = np.linalg.norm(goal - start)
    manhattan = np.abs(goal - start).sum()
    assert straight < route.length <= manhattan + 10.0
    assert np.linalg.norm(route.points[0] - start) < 0.1  # start and goal lie on lane centres already
    assert np.linalg.norm(route.points[-1] - goal) < 0.1
    steps = np.linalg.norm(np.diff(route.points, axis=0), axis=1)
    assert steps.max() < 1.5  # no gaps: about the network resolution (more on the outside of curves)
    assert all(town.on_road(Pose(x, y, 0.0), 0.0) for x, y in route.points)
    progress = [route.project(Pose(x, y, 0.0)).progress for x, y in route.points[::25]]
    assert np.all(np.diff(progress) > 0)


def test_route_in_the_lane_direction_only(town: cm.RoadNetwork) -> None:
    # (45, -1.75) lies on the eastbound lane of the bottom street: going 20 m west means driving around a block
    ahead = town.plan((45.0, -1.75), (65.0, -1.75))
    behind = town.plan((45.0, -1.75), (25.0, -1.75))
    assert ahead.length == pytest.approx(20.0, abs=0.01)
    assert behind.length > 300.0


def test_route_changes_lane_where_the_marking_allows(two_lanes: cm.RoadNetwork) -> None:
    assert [lc.target for lc in two_lanes.lanes[(1, 0, -1)].lane_changes] == [(1, 0, -2)]
    route = two_lanes.plan((10.0, -1.75), (190.0, -5.25))
    assert route.points[0] == pytest.approx([10.0, -1.75])
    assert route.points[-1] == pytest.approx([190.0, -5.25])
    assert 180.0 < route.length < 182.0  # 180 m plus the diagonal of one lane change
    with pytest.raises(cm.RouteNotFound, match=r"no route from \(190.0, -1.75\)"):
        two_lanes.plan((190.0, -1.75), (10.0, -1.75))  # a dead end: no way back


def test_sampled_routes_are_deterministic_and_within_bounds(town: cm.RoadNetwork) -> None:
    a, b, c = (town.sample_route(np.random.default_rng(seed), 150.0, 300.0) for seed in (7, 7, 8))
    (a_route, a_start), (b_route, b_start), c_route = (a.route, a.start), (b.route, b.start), c.route
    assert a.start_z == 0.0  # the height of the lane it starts on: the bundled town is flat
    assert np.array_equal(a_route.points, b_route.points) and a_start == b_start
    assert not np.array_equal(a_route.points, c_route.points)
    assert 150.0 <= a_route.length <= 300.0
    assert np.linalg.norm(a_route.points[0] - (a_start.x, a_start.y)) < 1e-6
    assert abs(a_route.project(a_start).heading_error) < 0.05
    with pytest.raises(ValueError, match="min_length < max_length"):
        town.sample_route(np.random.default_rng(0), 300.0, 100.0)


# -- metrics ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, y, heading",
    [(45.0, -1.75, 0.0), (45.0, 1.75, math.pi), (1.75, 45.0, math.pi / 2), (-1.75, 45.0, -math.pi / 2)],
    ids=["east", "west", "north", "south"],
)
def test_route_metrics_signs(town: cm.RoadNetwork, x: float, y: float, heading: float) -> None:
    """The metrics of a planned route, as the live backend reports them: an independent check of the y flip."""
    forward, left = np.array([math.cos(heading), math.sin(heading)]), np.array([-math.sin(heading), math.cos(heading)])
    route = town.plan(tuple(np.array([x, y]) - 10.0 * forward), tuple(np.array([x, y]) + 10.0 * forward))
    centre = route_state(route, Pose(x, y, heading), hint=None)
    assert centre.lateral_offset == pytest.approx(0.0, abs=1e-3)
    assert centre.heading_error == pytest.approx(0.0, abs=1e-3)
    assert town.on_road(Pose(x, y, heading), 0.0)
    shifted = route_state(route, Pose(x + 0.8 * left[0], y + 0.8 * left[1], heading), hint=None)
    assert shifted.lateral_offset == pytest.approx(0.8, abs=1e-3)
    shifted = route_state(route, Pose(x - 0.6 * left[0], y - 0.6 * left[1], heading), hint=None)
    assert shifted.lateral_offset == pytest.approx(-0.6, abs=1e-3)
    turned = route_state(route, Pose(x, y, heading + 0.2), hint=None)
    assert turned.heading_error == pytest.approx(0.2, abs=1e-3)


def test_off_road_in_a_block_and_on_a_sidewalk(town: cm.RoadNetwork) -> None:
    assert not town.on_road(Pose(45.0, 45.0, 0.0), 0.0)  # the middle of a block
    assert not town.on_road(Pose(45.0, -4.5, 0.0), 0.0)  # the sidewalk beside the eastbound lane
    assert town.on_road(Pose(45.0, -3.0, 0.0), 0.0)  # still on the lane, near its edge


def test_stop_line_spans_the_lane_and_crossing_detects_passing_it(town: cm.RoadNetwork) -> None:
    wp = town.map.get_waypoint(location(80.0, -1.75))
    line = cm.stop_line(wp)
    assert line.mean(axis=0) == pytest.approx([80.0, -1.75], abs=1e-3)
    assert np.linalg.norm(line[1] - line[0]) == pytest.approx(3.5)
    assert line[:, 0] == pytest.approx([80.0, 80.0])  # across an eastbound lane
    assert crossed_stop_line(np.array([79.5, -1.5]), np.array([80.5, -1.6]), line)
    assert not crossed_stop_line(np.array([78.0, -1.5]), np.array([79.9, -1.6]), line)
    assert not crossed_stop_line(np.array([79.5, 3.0]), np.array([80.5, 3.0]), line)  # the other lane
    # landing exactly on the line is the crossing; leaving it again is not a second one
    on_line = np.array([80.0, -1.75])
    assert crossed_stop_line(np.array([79.5, -1.75]), on_line, line)
    assert not crossed_stop_line(on_line, np.array([80.5, -1.75]), line)
    assert not crossed_stop_line(on_line, on_line, line)
