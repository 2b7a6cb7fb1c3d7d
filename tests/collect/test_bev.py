"""The BEV rasteriser: orientation, colours by kind, minimum sizes, map layers, caching and determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from collect.bev import BevConfig, BevPalette, BevRasteriser
from collect.scene import Agent, Lane, MapGeometry, Pose, Scene, TrafficLight

PALETTE = BevPalette()


def _straight_road() -> MapGeometry:
    """An east-west street: eastbound lane at y = 0, westbound at y = 3.5, a sidewalk on the south side,
    and a 3 m x 7 m zebra crossing at x = 20..23."""
    east = Lane(np.array([[-200.0, 0.0], [200.0, 0.0]]), 3.5)
    west = Lane(np.array([[200.0, 3.5], [-200.0, 3.5]]), 3.5)
    walk = Lane(np.array([[-200.0, -2.75], [200.0, -2.75]]), 2.0)
    crossing = np.array([[20.0, -1.75], [23.0, -1.75], [23.0, 5.25], [20.0, 5.25]])
    markings = tuple(np.array([[-200.0, y], [200.0, y]]) for y in (-1.75, 1.75, 5.25))  # kerbs and centre line
    return MapGeometry("street", (east, west), (walk,), (crossing,), markings)


STREET = _straight_road()


def _scene(ego: Pose = Pose(0.0, 0.0, 0.0), agents: tuple[Agent, ...] = (), **kwargs) -> Scene:
    return Scene(map=kwargs.pop("map", STREET), ego=ego, ego_length=4.5, ego_width=1.9, agents=agents, **kwargs)


def _ego_frame(ego: Pose, forward: float, left: float) -> tuple[float, float]:
    """The world point ``forward`` ahead of and ``left`` to the left of the ego."""
    c, s = math.cos(ego.yaw), math.sin(ego.yaw)
    return ego.x + forward * c - left * s, ego.y + forward * s + left * c


def _pixel(frame: np.ndarray, rasteriser: BevRasteriser, scene: Scene, x: float, y: float) -> list[int]:
    u, v = rasteriser.frame_affine(scene) @ (x, y, 1.0)
    return frame[int(round(v)), int(round(u))].tolist()


def test_frame_shape_and_type() -> None:
    frame = BevRasteriser(BevConfig(size_px=96)).render(_scene())
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8 and frame.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("yaw", [0.0, 0.7, math.pi / 2, -2.0, math.pi])
def test_heading_up_and_left_is_left(yaw: float) -> None:
    """Whatever the ego's heading, what lies ahead is drawn above it and what lies to its left, left of it."""
    ego = Pose(5.0, 1.0, yaw)
    ahead = Agent("vehicle", *_ego_frame(ego, 12.0, 0.0), yaw, 0.0, 4.5, 1.9)
    left = Agent("cyclist", *_ego_frame(ego, 0.0, 8.0), yaw, 0.0, 1.8, 0.6)
    rasteriser = BevRasteriser()
    frame = rasteriser.render(_scene(ego, (ahead, left), map=MapGeometry("empty", (Lane(np.array([[500.0, 500.0], [501.0, 500.0]]), 1.0),))))
    centre = (128 - 1) / 2
    vehicle_rows, vehicle_cols = np.nonzero(np.all(frame == PALETTE.vehicle, axis=2))
    assert vehicle_rows.mean() == pytest.approx(centre - 12.0 / 0.5, abs=0.6)
    assert vehicle_cols.mean() == pytest.approx(centre, abs=0.6)
    # an agent aligned with the ego is drawn upright: taller than wide
    assert np.ptp(vehicle_rows) > np.ptp(vehicle_cols)
    cyclist_rows, cyclist_cols = np.nonzero(np.all(frame == PALETTE.cyclist, axis=2))
    assert cyclist_cols.mean() == pytest.approx(centre - 8.0 / 0.5, abs=0.6)
    assert cyclist_rows.mean() == pytest.approx(centre, abs=0.6)


def test_agents_turned_relative_to_the_ego_are_drawn_turned() -> None:
    ego = Pose(0.0, 0.0, 0.3)
    crossing = Agent("vehicle", *_ego_frame(ego, 15.0, 0.0), ego.yaw + math.pi / 2, 5.0, 4.5, 1.9)
    frame = BevRasteriser().render(_scene(ego, (crossing,)))
    rows, cols = np.nonzero(np.all(frame == PALETTE.vehicle, axis=2))
    assert np.ptp(cols) > np.ptp(rows)  # crossing the ego's path: wider than tall


def test_every_kind_has_its_own_colour_and_pedestrians_stay_visible() -> None:
    kinds = ("vehicle", "pedestrian", "cyclist", "motorcycle", "static")
    colours = {PALETTE.agent(k) for k in kinds} | {PALETTE.ego, PALETTE.road, PALETTE.sidewalk, PALETTE.background}
    assert len(colours) == len(kinds) + 4
    ego = Pose(0.0, 0.0, 0.0)
    agents = tuple(
        Agent(kind, *_ego_frame(ego, 6.0 + 5.0 * i, 0.0), 0.0, 1.0, 0.3, 0.3)  # all tiny: 0.3 m at 0.5 m/px
        for i, kind in enumerate(kinds)
    )
    rasteriser = BevRasteriser(BevConfig(min_agent_px=3.0))
    scene = _scene(ego, agents)
    frame = rasteriser.render(scene)
    for agent in agents:
        assert _pixel(frame, rasteriser, scene, agent.x, agent.y) == list(PALETTE.agent(agent.kind))
        count = int(np.all(frame == PALETTE.agent(agent.kind), axis=2).sum())
        assert count >= 4, f"{agent.kind} drawn with {count} px"
    with pytest.raises(ValueError, match="unknown agent kind 'tram'"):
        rasteriser.render(_scene(ego, (Agent("tram", 5.0, 0.0, 0.0, 0.0, 10.0, 2.5),)))


def test_pedestrian_is_drawn_over_a_vehicle_it_overlaps() -> None:
    ego = Pose(0.0, 0.0, 0.0)
    person = Agent("pedestrian", 10.0, 0.0, 0.0, 1.0, 0.5, 0.5)
    car = Agent("vehicle", 10.0, 0.0, 0.0, 0.0, 4.5, 1.9)
    rasteriser = BevRasteriser()
    scene = _scene(ego, (person, car))
    assert _pixel(rasteriser.render(scene), rasteriser, scene, 10.0, 0.0) == list(PALETTE.pedestrian)


def test_a_road_user_touching_the_ego_is_drawn_over_it() -> None:
    """At the moment of a collision the frame must show what the ego hit, not hide it under the ego."""
    ego = Pose(0.0, 0.0, 0.0)
    person = Agent("pedestrian", 1.5, 0.3, 0.0, 1.0, 0.5, 0.5)  # inside the ego's 4.5 x 1.9 m footprint
    rasteriser = BevRasteriser()
    scene = _scene(ego, (person,))
    assert _pixel(rasteriser.render(scene), rasteriser, scene, 1.5, 0.3) == list(PALETTE.pedestrian)
    assert _pixel(rasteriser.render(scene), rasteriser, scene, -1.5, 0.0) == list(PALETTE.ego)


def test_map_layers_road_sidewalk_crosswalk_and_off_road() -> None:
    rasteriser = BevRasteriser()
    scene = _scene(Pose(0.0, 0.0, 0.0))
    frame = rasteriser.render(scene)
    assert _pixel(frame, rasteriser, scene, 10.0, 1.0) == list(PALETTE.road)  # 1 m left of the lane centre
    assert _pixel(frame, rasteriser, scene, 10.0, -3.0) == list(PALETTE.sidewalk)
    assert _pixel(frame, rasteriser, scene, 10.0, 15.0) == list(PALETTE.background)
    assert _pixel(frame, rasteriser, scene, -10.0, -12.0) == list(PALETTE.background)
    # the zebra: stripes and gaps alternate across the road inside the crossing
    column = [tuple(_pixel(frame, rasteriser, scene, 21.5, y)) for y in np.arange(-1.5, 5.0, 0.5)]
    assert PALETTE.crosswalk in column and PALETTE.road in column
    # lane edges are marked, lane centres are not: the line between the lanes is brighter than the road beside it
    marked = np.array(_pixel(frame, rasteriser, scene, 10.0, 1.75))
    assert np.all(marked > PALETTE.road) and np.all(marked <= PALETTE.lane_marking)
    assert _pixel(frame, rasteriser, scene, 10.0, 0.0) == list(PALETTE.road)
    # in a colour well apart from the sidewalk's
    assert np.abs(np.array(PALETTE.lane_marking) - PALETTE.sidewalk).sum() > 150


def test_route_and_stop_lines_coloured_by_state() -> None:
    rasteriser = BevRasteriser()
    route = np.array([[0.0, 0.0], [40.0, 0.0]])
    line = np.array([[15.0, -1.75], [15.0, 1.75]])
    for state, colour in (("r", PALETTE.light_red), ("y", PALETTE.light_yellow), ("g", PALETTE.light_green)):
        scene = _scene(route=route, traffic_lights=(TrafficLight(line, state),))
        frame = rasteriser.render(scene)
        assert _pixel(frame, rasteriser, scene, 15.0, -1.0) == list(colour)
        assert _pixel(frame, rasteriser, scene, 8.0, 0.0) == list(PALETTE.route)
    with pytest.raises(ValueError, match="traffic-light state 'x'"):
        rasteriser.render(_scene(traffic_lights=(TrafficLight(line, "x"),)))


def test_ego_centred_by_default_and_moved_down_by_the_offset() -> None:
    for offset in (0, 32):
        frame = BevRasteriser(BevConfig(ego_offset_px=offset)).render(_scene())
        rows, cols = np.nonzero(np.all(frame == PALETTE.ego, axis=2))
        assert rows.mean() == pytest.approx(63.5 + offset, abs=0.5)
        assert cols.mean() == pytest.approx(63.5, abs=0.5)
        assert np.ptp(rows) + 1 == pytest.approx(4.5 / 0.5, abs=1)  # ego length along the image's vertical


def test_a_new_map_object_is_rasterised_anew() -> None:
    """The static raster is cached per map object; a different map must not show the old picture."""
    rasteriser = BevRasteriser()
    frame = rasteriser.render(_scene())
    moved = MapGeometry("north", (Lane(np.array([[-200.0, 30.0], [200.0, 30.0]]), 3.5),))
    other = rasteriser.render(_scene(map=moved))
    point = (10.0, 1.0)
    scene = _scene()
    assert _pixel(frame, rasteriser, scene, *point) == list(PALETTE.road)
    assert _pixel(other, rasteriser, scene, *point) == list(PALETTE.background)
    assert np.array_equal(rasteriser.render(_scene()), frame)


def test_deterministic_across_rasterisers() -> None:
    agents = (Agent("vehicle", 9.3, 0.4, 0.2, 3.0, 4.4, 1.8), Agent("pedestrian", 21.0, 2.0, 1.4, 1.2, 0.5, 0.5))
    scene = _scene(Pose(1.37, 0.21, 0.05), agents, route=np.array([[1.0, 0.0], [60.0, 0.0]]))
    a = BevRasteriser().render(scene)
    b = BevRasteriser().render(scene)
    assert np.array_equal(a, b)
    shifted = BevRasteriser().render(_scene(Pose(1.87, 0.21, 0.05), agents))
    assert not np.array_equal(a, shifted)


def test_a_map_too_large_for_the_raster_cap_is_a_clear_error() -> None:
    huge = MapGeometry("huge", (Lane(np.array([[0.0, 0.0], [10000.0, 0.0]]), 3.5),))
    with pytest.raises(ValueError, match="map 'huge' spans 10000 x 0 m.*raise metres_per_px or max_world_px"):
        BevRasteriser().render(_scene(map=huge))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size_px": 8}, "size_px"),
        ({"metres_per_px": 0.0}, "metres_per_px"),
        ({"ego_offset_px": 64}, "ego_offset_px"),
        ({"min_agent_px": 0.5}, "min_agent_px"),
        ({"route_width_m": -1.0}, "route_width_m"),
        ({"max_world_px": 10}, "max_world_px"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BevConfig(**kwargs)


def test_palette_rejects_bad_colours() -> None:
    with pytest.raises(ValueError, match=r"BevPalette.road must be an \(r, g, b\)"):
        BevPalette(road=(300, 0, 0))
    with pytest.raises(ValueError, match="BevPalette.ego"):
        BevPalette(ego=(1, 2))  # type: ignore[arg-type]
