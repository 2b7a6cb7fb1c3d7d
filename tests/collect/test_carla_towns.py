"""CARLA map code on what real towns have and the bundled town lacks, each feature isolated in an OpenDRIVE map
of ``tests/collect/maps`` (written by ``opendrive_maps.py``): roads of several lane sections, a bridge over a road,
a four-lane highway with ramps, a junction whose connectors overlap; and the BEV drawn from such a map.

Routes are held to yardsticks that know nothing of our lane graph (``route_checks``): CARLA's own waypoint graph
for the shortest length, the route's own points for gaps and stretches driven twice.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest

carla = pytest.importorskip("carla")

from bev_checks import SIDEWALK, agreement, drawn_classes  # noqa: E402
from carla_stand_in import install, stand_in_config  # noqa: E402
from opendrive_maps import BUILDERS, JUNCTION_HALF, LANE_WIDTH, MAPS, SIDEWALK_WIDTH, bridge_map, xodr  # noqa: E402
from route_checks import reference_length, route_defects, waypoint_place  # noqa: E402

import carla_stand_in  # noqa: E402
from collect.backends.carla import CarlaBackend  # noqa: E402
from collect.backends.carla_lanes import lane_key  # noqa: E402
from collect.backends.carla_map import RoadNetwork, RouteNotFound  # noqa: E402
from collect.bev import BevConfig, BevPalette, BevRasteriser  # noqa: E402
from collect.scene import Pose, Scene  # noqa: E402

CHANGE_M = 10.0  # RoutingConfig's lane-change length, which the reference uses too
LONGEST_STEP = math.hypot(CHANGE_M, LANE_WIDTH) + 0.01  # no route point is farther from the last than a lane change


@lru_cache(maxsize=None)
def network(name: str) -> RoadNetwork:
    return RoadNetwork(carla.Map(name, (MAPS / f"{name}.xodr").read_text()))


def check_route(net: RoadNetwork, a: carla.Waypoint, b: carla.Waypoint, step: float = 1.0) -> float:
    """Plan from waypoint ``a`` to ``b``; the route must be continuous, drive no stretch twice and be no longer
    than the reference over waypoints ``step`` apart. Returns the route's length."""
    route = net.plan(waypoint_place(a), waypoint_place(b))
    reference = reference_length(a, b, step=step, change=CHANGE_M)
    defects = route_defects(route)
    where = f"{lane_key(a)} s={a.s:.1f} -> {lane_key(b)} s={b.s:.1f}"
    assert defects.longest_step <= LONGEST_STEP, where
    assert defects.revisits == 0, where
    assert route.length <= reference + 0.05, f"{where}: {route.length:.2f} m, the waypoint graph's shortest is {reference:.2f} m"
    return route.length


def test_committed_maps_are_what_their_builder_writes() -> None:
    for name in BUILDERS:
        assert (MAPS / f"{name}.xodr").read_text() == xodr(name), f"rerun python tests/collect/opendrive_maps.py ({name})"


# -- lane sections -------------------------------------------------------------------------------------------------


def test_each_lane_section_is_its_own_stretch_of_road() -> None:
    net = network("sections")
    cuts = {0: (0.0, 40.0), 1: (40.0, 70.0), 2: (70.0, 100.0)}
    assert sorted(net.lanes) == sorted((1, section, lane) for section in cuts for lane in (-2, -1, 1))
    for (_, section, lane), seg in net.lanes.items():
        lo, hi = cuts[section]
        assert seg.points[:, 0].min() >= lo - 1e-3 and seg.points[:, 0].max() <= hi + 1e-3
        assert seg.length == pytest.approx(hi - lo, abs=1e-3)
        # right lanes run east, the left lane west, each into the next section the way it drives
        nxt = section + 1 if lane < 0 else section - 1
        assert seg.successors == (((1, nxt, lane),) if nxt in cuts else ())


def test_a_road_of_three_sections_is_driven_once_from_end_to_end() -> None:
    net = network("sections")
    route = net.plan((10.0, -1.75), (90.0, -1.75))
    assert route.length == pytest.approx(80.0, abs=0.01)
    assert np.all(np.diff(route.points[:, 0]) > 0)  # always forwards
    assert net.plan((90.0, 1.75), (10.0, 1.75)).length == pytest.approx(80.0, abs=0.01)
    # the middle section's solid line forbids changing lanes there: the move happens in the first one
    change = net.plan((10.0, -1.75), (65.0, -5.25))
    past = change.points[change.points[:, 0] >= 40.0 + CHANGE_M]
    assert np.allclose(past[:, 1], -5.25, atol=1e-3)
    assert change.length == pytest.approx(55.0 + math.hypot(CHANGE_M, LANE_WIDTH) - CHANGE_M, abs=0.05)


def test_routes_across_sections_are_never_longer_than_the_waypoint_graphs() -> None:
    net = network("sections")
    waypoints = net.map.generate_waypoints(3.0)
    rng = np.random.default_rng(0)
    checked = 0
    for i, j in rng.integers(len(waypoints), size=(120, 2)):
        a, b = waypoints[int(i)], waypoints[int(j)]
        if lane_key(a) != lane_key(b) and math.isfinite(reference_length(a, b, change=CHANGE_M)):
            check_route(net, a, b)
            checked += 1
    assert checked >= 15


# -- a bridge over a road --------------------------------------------------------------------------------------------


def test_lookups_on_a_bridge_use_the_height() -> None:
    net = network("bridge")
    for wp in net.map.generate_waypoints(2.0):
        x, y, z, yaw = waypoint_place(wp)
        match = net.locate(x, y, z, yaw)
        assert match.key == lane_key(wp), (lane_key(wp), wp.s)
        assert abs(match.lateral_offset) <= 0.05 and abs(match.heading_error) <= 0.02
        assert net.on_road(Pose(x, y, yaw), z)
    # one spot, two levels: the bridge 8 m up, the road underneath
    assert net.locate(1.75, 0.5, 8.0).key[0] == 2
    assert net.locate(1.75, 0.5, 0.0).key[0] == 1


def test_routes_over_the_bridge_end_on_it_and_start_where_the_lane_is() -> None:
    net = network("bridge")
    up = net.plan((1.75, -90.0, 0.0, math.pi / 2), (1.75, 0.0, 8.0, math.pi / 2))
    assert up.length == pytest.approx(90.0, abs=0.01)
    assert up.points[-1] == pytest.approx([1.75, 0.0], abs=1e-3)
    under = net.plan((-90.0, -1.75, 0.0, 0.0), (1.75, -1.75, 0.0, 0.0))
    assert under.length == pytest.approx(91.75, abs=0.01)
    bridge = bridge_map().roads[1]
    rng = np.random.default_rng(0)
    for _ in range(20):
        sampled = net.sample_route(rng, 30.0, 150.0)
        start = sampled.start
        on_bridge_road = abs(abs(start.x) - 1.75) < 1e-3 and abs(math.cos(start.yaw)) < 1e-3
        expected = bridge.height_at(start.y + 100.0) if on_bridge_road else 0.0
        assert sampled.start_z == pytest.approx(expected, abs=0.02)  # lanes are sampled every metre, the ramps are cubic


def test_the_live_backend_spawns_on_the_bridge_not_under_it(monkeypatch: pytest.MonkeyPatch) -> None:
    bridge = carla.Map("bridge", (MAPS / "bridge.xodr").read_text())
    monkeypatch.setattr(carla_stand_in, "TOWN", bridge)
    server = install(monkeypatch)
    backend = CarlaBackend(stand_in_config(town="bridge", vehicles=0, walkers=0, route_min_m=30.0, route_max_m=150.0))
    world = server.instances[0].world
    road2 = bridge_map().roads[1]
    over_the_road = 0
    for seed in range(40):
        obs = backend.reset(seed)
        ego = next(a for a in world.actors.values() if a.type_id.startswith("vehicle."))
        pose = obs.scene.ego
        on_road2 = abs(math.cos(pose.yaw)) < 1e-3
        lane_z = road2.height_at(pose.y + 100.0) if on_road2 else 0.0
        assert ego.transform.location.z == pytest.approx(lane_z + 0.5, abs=0.02), seed
        assert not obs.events.off_road
        over_the_road += on_road2 and abs(pose.y) < LANE_WIDTH + SIDEWALK_WIDTH
    backend.close()
    assert over_the_road >= 1  # some start lay right above the lower road


# -- a four-lane highway with ramps ----------------------------------------------------------------------------------


def _highway_pairs(n: int, seed: int) -> list[tuple[carla.Waypoint, carla.Waypoint]]:
    """Seeded pairs, each reachable: eastbound from road 1 to anywhere further on, westbound back from road 4."""
    cmap = network("highway").map
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        if i % 2 == 0:
            start = cmap.get_waypoint_xodr(1, -int(rng.integers(1, 5)), float(rng.uniform(5, 590)))
            road, lanes = [(2, (-1, -2, -3, -4)), (4, (-1, -2, -3, -4)), (3, (-1,))][int(rng.integers(3))]
            goal = cmap.get_waypoint_xodr(road, lanes[int(rng.integers(len(lanes)))], float(rng.uniform(5, 190)))
        else:
            start = cmap.get_waypoint_xodr(4, int(rng.integers(1, 5)), float(rng.uniform(5, 550)))
            goal = cmap.get_waypoint_xodr(1, int(rng.integers(1, 5)), float(rng.uniform(5, 590)))
        pairs.append((start, goal))
    return pairs


def test_highway_routes_are_shortest_continuous_and_the_search_stays_small() -> None:
    net = network("highway")
    widest = 4  # lanes per direction: a lane section never has more search states than this
    for a, b in _highway_pairs(8, seed=1):
        check_route(net, a, b, step=2.0)
        start, goal = (net.locate(*waypoint_place(w)) for w in (a, b))
        assert net.search((start.key, start.s), (goal.key, goal.s)).expanded <= widest * len(net.lanes)
    # from the fast lane to the exit: three lane changes, then the ramp
    fast = net.map.get_waypoint_xodr(1, -1, 100.0)
    exit_ = net.map.get_waypoint_xodr(3, -1, 100.0)
    assert check_route(net, fast, exit_, step=2.0) < 900.0
    # the other carriageway cannot be reached without a U-turn: the whole graph is searched, and still bounded
    west = net.map.get_waypoint_xodr(1, 2, 300.0)
    with pytest.raises(RouteNotFound):
        net.plan(waypoint_place(fast), waypoint_place(west))
    here, there = net.locate(*waypoint_place(fast)), net.locate(*waypoint_place(west))
    assert net.search((here.key, here.s), (there.key, there.s)).expanded <= widest * len(net.lanes)
    # what every reset does: a random route of 150-400 m, drawn among the places the start can reach
    rng = np.random.default_rng(3)
    for _ in range(5):
        sampled = net.sample_route(rng, 150.0, 400.0)
        assert 150.0 <= sampled.route.length <= 400.0
        defects = route_defects(sampled.route)
        assert defects.longest_step <= LONGEST_STEP and defects.revisits == 0


def test_lookups_on_the_highway_match_the_waypoints_own_lane() -> None:
    net = network("highway")
    for wp in net.map.generate_waypoints(5.0):
        if wp.is_junction:
            continue
        match = net.locate(*waypoint_place(wp))
        assert abs(match.lateral_offset) <= 0.05 and abs(match.heading_error) <= 0.02, (lane_key(wp), wp.s)


# -- a junction whose connectors overlap -----------------------------------------------------------------------------


def test_junction_lookups_pick_the_connector_the_pose_drives_on() -> None:
    net = network("junction")
    inside = 0
    for wp in net.map.generate_waypoints(1.0):
        if not wp.is_junction:
            continue
        inside += 1
        match = net.locate(*waypoint_place(wp))
        # another connector is right only where it coincides with the waypoint's own (where connectors fork)
        assert match.key == lane_key(wp) or (match.distance <= 0.05 and abs(match.heading_error) <= 0.02), (lane_key(wp), wp.s)
    assert inside > 150
    # where the three connectors from the east arm fork, a route's own connector is the one found
    fork = net.map.get_waypoint_xodr(1, 1, 0.2)
    x, y, z, yaw = waypoint_place(fork)
    connectors = [key for key in net.lanes if key[0] >= 100 and np.linalg.norm(net.lanes[key].points[0] - (x, y)) < 1.0]
    assert len(connectors) == 3
    for key in connectors:
        assert net.locate(x - 0.3, y, z, yaw, prefer=[key]).key == key


def test_routes_through_the_junction_are_shortest() -> None:
    net = network("junction")
    cmap = net.map
    for i in range(1, 5):
        for j in range(1, 5):
            if i != j:
                check_route(net, cmap.get_waypoint_xodr(i, 1, 50.0), cmap.get_waypoint_xodr(j, -1, 50.0))
    # starting on a connector, at its own pose: the route follows that connector, not one crossing it
    for wp in cmap.generate_waypoints(4.0):
        if wp.is_junction:
            for out in wp.next(30.0):
                check_route(net, wp, out)


def test_bev_draws_corner_sidewalks_and_lane_edges_as_the_map_has_them(capsys: pytest.CaptureFixture) -> None:
    net = network("junction")
    config = BevConfig(size_px=128, metres_per_px=0.5)
    found = agreement(net.map, net.geometry(), [(0.0, 0.0)], config)
    with capsys.disabled():
        print(
            f"\nBEV of the junction map: {found.share:.4f} of {found.pixels} px agree with the map's lane type, "
            f"{found.interior_share:.4f} away from lane edges; sidewalk recall {found.sidewalk_recall:.4f}"
        )
    assert found.interior_share >= 0.99 and found.share >= 0.9 and found.sidewalk_recall >= 0.7
    rasteriser = BevRasteriser(config)
    scene = Scene(map=net.geometry(), ego=Pose(0.0, 0.0, math.pi / 2), ego_length=0.01, ego_width=0.01)
    frame = rasteriser.render(scene)
    classes = drawn_classes(frame, config)

    def at(x: float, y: float) -> tuple[np.ndarray, int]:
        u, v = rasteriser.frame_affine(scene) @ (x, y, 1.0)
        return frame[int(round(v)), int(round(u))], int(classes[int(round(v)), int(round(u))])

    # the middle of each corner's sidewalk (an arc round the corner, a connector of the junction's own)
    corner = JUNCTION_HALF - (JUNCTION_HALF - LANE_WIDTH - SIDEWALK_WIDTH / 2) / math.sqrt(2)
    for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
        assert at(sx * corner, sy * corner)[1] == SIDEWALK
    # a marking on the centre line between the two lanes of an arm, none along a lane's centre
    palette = BevPalette()
    line, _ = at(30.0, 0.0)
    assert np.all(line > palette.road)
    assert at(30.0, -LANE_WIDTH / 2)[0].tolist() == list(palette.road)
