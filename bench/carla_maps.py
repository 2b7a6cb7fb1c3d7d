"""CARLA map code on the OpenDRIVE test maps of tests/collect/maps (lane sections, a bridge, a four-lane highway
with ramps, a junction with overlapping connectors): route quality, planning time, lookups, BEV agreement.

    python -m bench.carla_maps [--pairs 40] [--seed 0]

Per map it plans routes between seeded pairs of driving waypoints and prints: how many pairs have a route,
the longest step of any route (a lane change is the longest allowed), points driven twice, the largest ratio of
route length to the shortest path over CARLA's own waypoint graph (``tests/collect/route_checks.py``), and the
planning CPU time per route (pairs without a route included: those search the whole graph) with the most states
the search expanded, against the reference search's time in the same run; then ``sample_route``, which every
episode's reset calls, per call. Times are CPU seconds of this process, steady on a busy machine.
Then, at every driving waypoint outside junctions (at any height), the lookup's lateral offset and heading error
at the waypoint's own pose, and inside junctions how often the lookup picks another lane than the waypoint's.
Last, the share of BEV pixels whose colour agrees with the map's own lane type there (junction map).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import carla
import numpy as np

from collect.backends.carla_lanes import lane_key
from collect.backends.carla_map import RoadNetwork, RouteNotFound
from collect.bev import BevConfig

TESTS = Path(__file__).resolve().parent.parent / "tests" / "collect"
sys.path.insert(0, str(TESTS))  # the maps' reference yardsticks live beside the tests that use them

from bev_checks import agreement  # noqa: E402
from route_checks import reference_length, route_defects, waypoint_place  # noqa: E402

MAPS = {"sections": (20.0, 80.0), "bridge": (30.0, 150.0), "highway": (150.0, 400.0), "junction": (30.0, 150.0)}  # route lengths


def load(name: str) -> tuple[carla.Map, RoadNetwork, float]:
    cmap = carla.Map(name, (TESTS / "maps" / f"{name}.xodr").read_text())
    started = time.process_time()
    network = RoadNetwork(cmap)
    return cmap, network, time.process_time() - started


def routes(cmap: carla.Map, network: RoadNetwork, pairs: int, seed: int) -> dict[str, float]:
    waypoints = cmap.generate_waypoints(3.0)
    rng = np.random.default_rng(seed)
    found = longest = revisits = 0
    worst_ratio, plan_s, ref_s, expanded = 0.0, [], [], []
    for _ in range(pairs):
        a, b = (waypoints[int(i)] for i in rng.integers(len(waypoints), size=2))
        t0 = time.process_time()
        try:
            route = network.plan(waypoint_place(a), waypoint_place(b))
        except (RouteNotFound, ValueError):
            route = None
        plan_s.append(time.process_time() - t0)
        t0 = time.process_time()
        reference = reference_length(a, b)
        ref_s.append(time.process_time() - t0)
        if route is None:
            if math.isfinite(reference):
                print(f"  no route where the reference has one: {lane_key(a)} -> {lane_key(b)}")
            continue
        start, goal = (network.locate(*waypoint_place(w)) for w in (a, b))
        expanded.append(network.search((start.key, start.s), (goal.key, goal.s)).expanded)
        found += 1
        defects = route_defects(route)
        longest = max(longest, defects.longest_step)
        revisits += defects.revisits
        worst_ratio = max(worst_ratio, route.length / reference if reference > 0 else 1.0)
    sample_s = []
    for _ in range(20):
        t0 = time.process_time()
        network.sample_route(rng, *MAPS[cmap.name])
        sample_s.append(time.process_time() - t0)
    return {
        "pairs": pairs, "routes": found, "longest_step_m": longest, "revisits": revisits, "max_route/reference": worst_ratio,
        "plan_ms_mean": 1e3 * float(np.mean(plan_s)), "plan_ms_max": 1e3 * float(np.max(plan_s)),
        "reference_ms_mean": 1e3 * float(np.mean(ref_s)), "plan/reference_time": float(np.sum(plan_s) / np.sum(ref_s)),
        "expanded_max": max(expanded, default=0), "lane_sections": len(network.lanes),
        "sample_route_ms_mean": 1e3 * float(np.mean(sample_s)), "sample_route_ms_max": 1e3 * float(np.max(sample_s)),
    }  # fmt: skip


def lookups(cmap: carla.Map, network: RoadNetwork) -> dict[str, float]:
    """At every driving waypoint's own pose: outside junctions the worst offset and heading error of the lane
    found; inside, how often the lane found is another than the waypoint's where the two do not coincide."""
    offset = heading = 0.0
    outside = inside = elsewhere = 0
    for wp in cmap.generate_waypoints(1.0):
        match = network.locate(*waypoint_place(wp))
        if wp.is_junction:
            inside += 1
            elsewhere += match.key != lane_key(wp) and (match.distance > 0.05 or abs(match.heading_error) > 0.02)
        else:
            outside += 1
            offset = max(offset, abs(match.lateral_offset))
            heading = max(heading, abs(match.heading_error))
    return {"waypoints_outside_junctions": outside, "max_offset_m": offset, "max_heading_rad": heading,
            "junction_waypoints": inside, "junction_other_lane": elsewhere}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in MAPS:
        cmap, network, build_s = load(name)
        print(f"{name}: {len(network.lanes)} lane sections, read in {build_s * 1e3:.0f} ms")
        for label, figures in (("routes", routes(cmap, network, args.pairs, args.seed)), ("lookups", lookups(cmap, network))):
            print(f"  {label}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
        if name == "junction":
            centres = [(0.0, 0.0), (40.0, 0.0), (0.0, 40.0), (-40.0, 0.0), (0.0, -40.0)]
            found = agreement(cmap, network.geometry(), centres, BevConfig(size_px=256, metres_per_px=0.25))
            print(
                f"  BEV ({found.pixels} px): {found.share:.4f} of pixels agree with the map's lane type, {found.interior_share:.4f} "
                f"away from lane edges; {found.sidewalk_recall:.4f} of sidewalk pixels drawn as sidewalk"
            )


if __name__ == "__main__":
    main()
