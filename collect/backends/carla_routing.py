"""Route search over the lane sections of a map: A* whose states grow with the road graph, not with lane changes.

A state is a lane section, the arc length at which the route entered it and the lane changes made since the
route came into that section. Following the lane into the next section enters that one at 0 with no changes; a
lane change moves to an adjacent same-direction lane of the same section, starting at the first point at or
after the entry where the markings allow it and landing ``change_length`` further on. A section of n lanes
allows at most n - 1 changes (more only weave), so a lane has at most n states besides those of the route's
start: the search is bounded by lanes times lanes per section, whatever the sections' lengths. A lane change
costs its diagonal plus a penalty, so a route changes lanes only where that saves distance or is needed. The
heuristic, the straight-line distance to the goal, never overestimates (no drive is shorter than a straight
line), so the route found is the cheapest.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from collect.backends.carla_lanes import LaneKey, LaneSegment


@dataclass(frozen=True)
class RoutingConfig:
    change_length_m: float = 10.0  # distance travelled along the road while moving one lane over
    change_penalty_m: float = 5.0  # extra cost that keeps routes from changing lanes needlessly

    def __post_init__(self) -> None:
        if not self.change_length_m > 0:
            raise ValueError(f"RoutingConfig.change_length_m must be > 0, got {self.change_length_m!r}")
        if not self.change_penalty_m >= 0:
            raise ValueError(f"RoutingConfig.change_penalty_m must be >= 0, got {self.change_penalty_m!r}")


@dataclass(frozen=True)
class Leg:
    """Drive lane ``key`` from arc length ``enter`` to ``leave``; the next leg starts where the route goes on
    (the next section's start, or the point a lane change lands on)."""

    key: LaneKey
    enter: float
    leave: float


@dataclass(frozen=True)
class RouteSearch:
    legs: tuple[Leg, ...]  # empty when the goal cannot be reached
    cost: float
    expanded: int  # states taken off the queue: the work the search did


State = tuple[LaneKey, float, int]  # lane, arc length entered at, lane changes since entering the section


def _land(lanes: Mapping[LaneKey, LaneSegment], key: LaneKey, s: float) -> tuple[LaneKey, float] | None:
    """Arc length ``s`` counted on from the start of lane ``key``, carried into the following section while that
    section is the only way on (a lane change that straddles a section boundary); None where it ends nowhere."""
    while s > lanes[key].length:
        following = lanes[key].successors
        if len(following) != 1 or following[0] not in lanes:
            return None
        s -= lanes[key].length
        key = following[0]
    return key, s


class LaneGraph:
    """The lanes of a map as a graph of search states; one per map, it keeps what it learns of section widths."""

    def __init__(self, lanes: Mapping[LaneKey, LaneSegment], config: RoutingConfig = RoutingConfig()) -> None:
        self.lanes = lanes
        self.config = config
        self._width: dict[LaneKey, int] = {}

    def section_width(self, key: LaneKey) -> int:
        """How many same-direction lanes ``key``'s section has: the lanes lane changes join it to."""
        if key not in self._width:
            group, todo = {key}, [key]
            while todo:
                for lc in self.lanes[todo.pop()].lane_changes:
                    if lc.target in self.lanes and lc.target not in group:
                        group.add(lc.target)
                        todo.append(lc.target)
            self._width.update(dict.fromkeys(group, len(group)))
        return self._width[key]

    def moves(self, state: State) -> list[tuple[float, State, Leg]]:
        """(cost, next state, the leg driven) for every way on from ``state``."""
        key, entered, changes = state
        lane = self.lanes[key]
        moves = []
        for nxt in lane.successors:
            if nxt in self.lanes:
                moves.append((lane.length - entered, (nxt, 0.0, 0), Leg(key, entered, lane.length)))
        if changes >= self.section_width(key) - 1:
            return moves
        for lc in lane.lane_changes:
            if lc.target not in self.lanes:
                continue
            i = int(np.searchsorted(lc.allowed_s, entered - 1e-9))
            if i == len(lc.allowed_s):
                continue
            at = float(lc.allowed_s[i])
            target = self.lanes[lc.target]
            landed = _land(self.lanes, lc.target, at * target.length / max(lane.length, 1e-9) + self.config.change_length_m)
            if landed is None:
                continue
            diagonal = math.dist(lane.point_at(at), self.lanes[landed[0]].point_at(landed[1]))
            after = changes + 1 if landed[0] == lc.target else 0
            moves.append((at - entered + diagonal + self.config.change_penalty_m, (landed[0], landed[1], after), Leg(key, entered, at)))
        return moves

    def search(self, start: tuple[LaneKey, float], goal: tuple[LaneKey, float]) -> RouteSearch:
        """The cheapest way from ``start`` to ``goal`` (each a lane and an arc length along it), by A*."""
        goal_key, goal_s = goal
        gx, gy = self.lanes[goal_key].point_at(goal_s)

        def h(state: State) -> float:
            x, y = self.lanes[state[0]].point_at(state[1])
            return math.hypot(x - gx, y - gy)

        first: State = (start[0], start[1], 0)
        best: dict[State, float] = {first: 0.0}
        came: dict[State, tuple[State, Leg] | None] = {first: None}
        queue: list[tuple[float, int, State]] = [(h(first), 0, first)]
        pushed, expanded = 1, 0
        finish: tuple[float, State] | None = None  # (cost, state the goal is reached from)
        while queue:
            f, _, state = heapq.heappop(queue)
            if finish is not None and f >= finish[0]:
                break
            g = best[state]
            if f > g + h(state) + 1e-9:
                continue  # a stale entry: this state was reached more cheaply since
            expanded += 1
            if state[0] == goal_key and state[1] <= goal_s + 1e-9:
                total = g + goal_s - state[1]
                if finish is None or total < finish[0]:
                    finish = (total, state)
            for step, nxt, leg in self.moves(state):
                cost = g + step
                if cost < best.get(nxt, math.inf) - 1e-9:
                    best[nxt], came[nxt] = cost, (state, leg)
                    heapq.heappush(queue, (cost + h(nxt), pushed, nxt))
                    pushed += 1
        if finish is None:
            return RouteSearch((), math.inf, expanded)
        total, state = finish
        legs = [Leg(state[0], state[1], goal_s)]
        while came[state] is not None:
            state, leg = came[state]
            legs.append(leg)
        return RouteSearch(tuple(reversed(legs)), total, expanded)

    def reachable(self, start: tuple[LaneKey, float], limit: float) -> dict[State, float]:
        """Every state reachable from ``start`` at a cost up to ``limit``, with that cost (Dijkstra)."""
        first: State = (start[0], start[1], 0)
        best: dict[State, float] = {first: 0.0}
        queue: list[tuple[float, int, State]] = [(0.0, 0, first)]
        pushed = 1
        done: dict[State, float] = {}
        while queue:
            g, _, state = heapq.heappop(queue)
            if state in done or g > limit:
                continue
            done[state] = g
            for step, nxt, _ in self.moves(state):
                if g + step < best.get(nxt, math.inf) - 1e-9:
                    best[nxt] = g + step
                    heapq.heappush(queue, (g + step, pushed, nxt))
                    pushed += 1
        return done

    def polyline(self, legs: tuple[Leg, ...]) -> np.ndarray:
        """The centre line the legs drive, lane changes as straight diagonals."""
        return np.concatenate([self.lanes[leg.key].between(leg.enter, max(leg.leave, leg.enter)) for leg in legs], axis=0)
