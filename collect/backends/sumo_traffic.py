"""The town's own traffic in a SUMO episode: cars, motorcycles and cyclists on long random drives, and
pedestrians of whom a share is sent across the streets of the ego's route."""

from __future__ import annotations

import libsumo
import numpy as np

from collect.backends.config import SumoConfig
from collect.backends.sumo_map import SumoNet
from collect.backends.sumo_routes import EgoRoute, walk


def spawn_traffic(net: SumoNet, config: SumoConfig, rng: np.random.Generator, ego: EgoRoute, staged: bool = False) -> None:
    """Add the background road users of ``config`` to the loaded simulation. No vehicle starts on the ego's
    first edge. ``staged`` keeps the street of a staged scenario to its own hazard: no vehicle starts on its
    far side either, and no pedestrian is sent across the ego's (short) route, where ``crossing_fraction``
    would crowd every one onto the two or three streets the route has."""
    clear = {ego.edges[0], net.reverse.get(ego.edges[0], ego.edges[0])} if staged else {ego.edges[0]}
    crossing_fraction = 0.0 if staged else config.crossing_fraction
    edges = sorted(e for e in net.edge_driving_lane if e not in clear)
    slots = [(e, pos) for e in edges for pos in np.arange(8.0, net.lanes[net.edge_driving_lane[e]].length - 8.0, 15.0)]
    order = rng.permutation(len(slots))
    kinds = ["DEFAULT_VEHTYPE"] * config.cars + ["moto"] * config.motorcycles + ["DEFAULT_BIKETYPE"] * config.cyclists
    for i, type_id in enumerate(kinds[: len(slots)]):
        edge, pos = slots[order[i]]
        rid = f"r{i}"
        libsumo.route.add(rid, walk(net, rng, edge, 60))
        libsumo.vehicle.add(f"v{i}", rid, typeID=type_id, depart="0", departLane="best", departPos=f"{pos:.2f}", departSpeed="0")
    sidewalk_edges = sorted(net.edge_sidewalk)
    for i in range(config.pedestrians):
        pid = f"p{i}"
        if rng.random() < crossing_fraction:
            # start beside the ego's route and head for the far side of that street: forces a crossing
            edge = ego.edges[rng.integers(len(ego.edges))]
            origin = edge if edge in net.edge_sidewalk else sidewalk_edges[rng.integers(len(sidewalk_edges))]
            across = net.reverse.get(origin)
            legs = [origin, across if across in net.edge_sidewalk else sidewalk_edges[rng.integers(len(sidewalk_edges))]]
        else:
            legs = [sidewalk_edges[rng.integers(len(sidewalk_edges))]]
        legs += [sidewalk_edges[rng.integers(len(sidewalk_edges))] for _ in range(4)]
        length = net.lanes[net.edge_sidewalk[legs[0]]].length
        libsumo.person.add(pid, legs[0], float(rng.uniform(0.0, length)), depart=0.0)
        added = 0
        for a, b in zip(legs[:-1], legs[1:]):
            if a == b:
                continue
            end = float(rng.uniform(0.0, net.lanes[net.edge_sidewalk[b]].length))
            for stage in libsumo.simulation.findIntermodalRoute(a, b, arrivalPos=end):
                libsumo.person.appendStage(pid, stage)
                added += 1
        if not added:
            libsumo.person.appendWaitingStage(pid, 1000.0)
