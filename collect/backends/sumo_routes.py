"""Ego routes on the SUMO network: random drives through the town, and the short routes scenarios ask for."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collect.backends.config import SumoConfig
from collect.backends.sumo_map import SumoNet
from collect.route import Route
from collect.scenarios import Layout

#: A scenario's conflict point stays this far from the end of its street, clear of the crosswalks there.
END_MARGIN_M = 8.0


@dataclass(frozen=True)
class EgoRoute:
    """A sampled route: the edges to drive, where on the first edge to start, the centre-line polyline."""

    edges: tuple[str, ...]
    start_pos: float
    route: Route


def walk(net: SumoNet, rng: np.random.Generator, start: str, n_edges: int) -> list[str]:
    """``start`` and up to ``n_edges`` edges after it, each a random successor of the one before."""
    edges = [start]
    for _ in range(n_edges):
        succ = net.successors[edges[-1]]
        if not succ:
            break
        edges.append(succ[rng.integers(len(succ))].to_edge)
    return edges


def _cut(net: SumoNet, edges: list[str], start: float, length: float) -> Route:
    """The centre line along ``edges`` from arc length ``start`` for ``length`` m, resampled every metre and
    keeping the lane vertices so that corners stay exact."""
    poly = net.route_polyline(edges)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(poly, axis=0), axis=1))])
    s = np.union1d(np.linspace(start, start + length, int(length) + 1), arc[(arc > start) & (arc < start + length)])
    return Route(np.stack([np.interp(s, arc, poly[:, 0]), np.interp(s, arc, poly[:, 1])], axis=1))


def sample_route(net: SumoNet, config: SumoConfig, rng: np.random.Generator) -> EgoRoute:
    """A random drive over the network with at least ``min_turns`` turns, cut to a length in bounds."""
    edges_all = sorted(net.edge_driving_lane)
    min_start = config.vehicle.length + 1.0
    for _ in range(1000):
        target = rng.uniform(config.route_min_m, config.route_max_m)
        edges = [edges_all[rng.integers(len(edges_all))]]
        first = net.lanes[net.edge_driving_lane[edges[0]]]
        start = float(rng.uniform(min_start, max(min_start, first.length - 20.0)))
        while True:
            length = Route(net.route_polyline(edges)).length - start
            if length >= target:
                break
            succ = net.successors[edges[-1]]
            if not succ:
                break
            edges.append(succ[rng.integers(len(succ))].to_edge)
        if length < config.route_min_m or net.turn_count(edges) < config.min_turns:
            continue
        return EgoRoute(edges=tuple(edges), start_pos=start, route=_cut(net, edges, start, target))
    raise RuntimeError(f"{config.net_file}: found no route of {config.route_min_m}-{config.route_max_m} m with {config.min_turns} turns")


def staged_route(net: SumoNet, config: SumoConfig, layout: Layout, rng: np.random.Generator) -> EgoRoute:
    """A route whose first street holds the scenario's conflict point ``layout.conflict_m`` ahead of the start
    (for a signal: exactly its stop line, the street's end), running ``layout.after_m`` beyond it."""
    min_start = config.vehicle.length + 1.0
    length = layout.conflict_m + layout.after_m
    if layout.at_signal:
        firsts = sorted({stop.edge for stop in net.stop_lines if net.lanes[stop.lane].length - layout.conflict_m >= min_start})
    else:
        firsts = sorted(e for e, lane in net.edge_driving_lane.items() if net.lanes[lane].length - layout.conflict_m - END_MARGIN_M >= min_start)
    if not firsts:
        kind = "signalised street" if layout.at_signal else "street"
        raise ValueError(f"{config.net_file}: no {kind} is long enough for a conflict point {layout.conflict_m:.0f} m from the start")
    for _ in range(1000):
        edges = [firsts[rng.integers(len(firsts))]]
        lane_length = net.lanes[net.edge_driving_lane[edges[0]]].length
        if layout.at_signal:
            start = lane_length - layout.conflict_m
        else:
            start = float(rng.uniform(min_start, lane_length - layout.conflict_m - END_MARGIN_M))
        while Route(net.route_polyline(edges)).length - start < length and net.successors[edges[-1]]:
            succ = net.successors[edges[-1]]
            edges.append(succ[rng.integers(len(succ))].to_edge)
        if Route(net.route_polyline(edges)).length - start >= length:
            return EgoRoute(edges=tuple(edges), start_pos=start, route=_cut(net, edges, start, length))
    raise RuntimeError(f"{config.net_file}: found no route running {length:.0f} m from a street fit for the scenario")


def extended_path(net: SumoNet, ego: EgoRoute, edges: list[str], beyond_m: float) -> Route:
    """The ego's route run on ``beyond_m`` past its goal along ``edges`` (which start with the route's own),
    for scenario road users that drive on; arc lengths equal the route's. Shorter where ``edges`` end."""
    available = Route(net.route_polyline(edges)).length - ego.start_pos
    return _cut(net, edges, ego.start_pos, min(ego.route.length + beyond_m, available))
