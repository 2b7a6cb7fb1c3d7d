"""How a scenario's hazard is timed and moved: directors that watch the ego's approach along its route and say,
every step, where the scripted road users are and what the ego's signal shows.

A director works in route coordinates (arc length along the ego's path, lateral offset from its lane centre)
and answers with world poses as scene ``Agent``s, so any backend can stage it: the backend puts real
simulator objects where the director says (SUMO: ``collect.backends.sumo_stage``). Timing reads the ego's
actual position and speed, never a fixed clock, so a hazard meets a slow ego as surely as a fast one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from collect.route import Route
from collect.scene import Agent
from collect.scenarios.params import (
    ACTOR_SIZE,
    CrossingScenario,
    FreeTraffic,
    LeadBrakeScenario,
    Layout,
    RedLightScenario,
    draw,
)


@dataclass(frozen=True)
class Street:
    """The street's cross-section at the conflict point, in metres from the ego's lane centre."""

    right_kerb: float  # to the right edge of the ego's lane (the kerb on a one-lane-each-way street)
    left_kerb: float  # to the far, left edge of the street
    sidewalk: float  # width of the sidewalk beyond each kerb


@dataclass(frozen=True)
class Stage:
    """Where a director plays: the ego's route run on past its goal (arc lengths equal the route's) and the
    street at the conflict point."""

    path: Route
    street: Street


@dataclass(frozen=True)
class Cue:
    """The scripted road users (stable key, world pose) and the ego's signal (g/y/r; None: not controlled)."""

    actors: tuple[tuple[str, Agent], ...] = ()
    light: str | None = None


class Director(Protocol):
    """One episode of a scenario: drawn from the seed, placed on a stage, then asked once per step."""

    layout: Layout
    triggered_at: float | None  # sim time the hazard was set off, None until then

    def stage(self, stage: Stage) -> None: ...

    def cue(self, t: float, ego_front_m: float, ego_speed: float) -> Cue: ...


def _pose(path: Route, s: float, lateral: float) -> tuple[float, float, float]:
    """World (x, y, heading) of the point ``lateral`` metres left of the path at arc length ``s``."""
    heading = path.heading_at(s)
    x, y = path.point_at(s) + lateral * np.array([-math.sin(heading), math.cos(heading)])
    return float(x), float(y), heading


def _time_to(distance: float, speed: float, min_speed: float) -> float:
    """Seconds the ego needs for ``distance`` at its current speed, timed as ``min_speed`` when slower."""
    return distance / max(speed, min_speed)


class CrossingDirector:
    """A pedestrian or cyclist crosses the ego's street at the conflict point (see ``CrossingScenario``)."""

    def __init__(self, params: CrossingScenario, rng: np.random.Generator) -> None:
        self.params = params
        self.conflict_m = draw(rng, params.conflict_m)
        self.speed = draw(rng, params.speed)
        self.lead_s = draw(rng, params.lead_s)
        self.side = params.sides[int(rng.integers(len(params.sides)))]
        self.kerb_gap_m = draw(rng, params.kerb_gap_m)
        self.parked_gap_m = draw(rng, params.parked_gap_m)
        self.layout = Layout(self.conflict_m, params.after_m)
        self.triggered_at: float | None = None
        self._parked: Agent | None = None

    def stage(self, stage: Stage) -> None:
        p, street = self.params, stage.street
        if self.side == "right":
            self.start, self.end = -(street.right_kerb + self.kerb_gap_m), street.left_kerb + self._beyond(street)
        else:
            self.start, self.end = street.left_kerb + self.kerb_gap_m, -(street.right_kerb + self._beyond(street))
        self.crossing_s = abs(self.start) / self.speed  # from the start to the ego's lane centre
        self._path = stage.path
        if p.parked_car:
            length, width = ACTOR_SIZE["vehicle"]
            front = self.conflict_m - self.parked_gap_m - ACTOR_SIZE[p.actor][0] / 2
            x, y, heading = _pose(stage.path, front - length / 2, -(street.right_kerb - p.parked_overlap_m + width / 2))
            self._parked = Agent("vehicle", x, y, heading, 0.0, length, width)

    def _beyond(self, street: Street) -> float:
        """How far past the far kerb the crossing ends: mid-sidewalk on foot; a cyclist rides on as far as it came."""
        return street.sidewalk / 2 if self.params.actor == "pedestrian" else self.kerb_gap_m

    def cue(self, t: float, ego_front_m: float, ego_speed: float) -> Cue:
        p = self.params
        ahead = self.conflict_m - ego_front_m
        if self.triggered_at is None and ahead > 0 and _time_to(ahead, ego_speed, p.min_speed) <= self.crossing_s + self.lead_s:
            self.triggered_at = t
        travel = abs(self.end - self.start)
        moved = 0.0 if self.triggered_at is None else min(self.speed * (t - self.triggered_at), travel)
        direction = math.copysign(1.0, self.end - self.start)
        x, y, heading = _pose(self._path, self.conflict_m, self.start + direction * moved)
        moving = self.triggered_at is not None and moved < travel
        length, width = ACTOR_SIZE[p.actor]
        actor = Agent(p.actor, x, y, heading + direction * math.pi / 2, self.speed if moving else 0.0, length, width)
        actors = (("crossing", actor),) + ((("parked", self._parked),) if self._parked is not None else ())
        return Cue(actors)


class LeadBrakeDirector:
    """A car ahead that keeps the ego close behind, brakes hard at a point, waits and drives on (``LeadBrakeScenario``)."""

    def __init__(self, params: LeadBrakeScenario, rng: np.random.Generator) -> None:
        self.params = params
        self.start_gap_m = draw(rng, params.start_gap_m)
        self.max_gap_m = draw(rng, params.max_gap_m)
        self.cruise = draw(rng, params.cruise)
        self.brake_at_m = draw(rng, params.brake_at_m)
        self.decel = draw(rng, params.decel)
        self.stop_s = draw(rng, params.stop_s)
        self.length, self.width = ACTOR_SIZE["vehicle"]
        # the conflict point is where the car comes to rest: it must lie on the route's first street
        rest = self.brake_at_m + self.cruise**2 / (2 * self.decel) + self.length / 2
        self.layout = Layout(rest, params.after_m)
        self.triggered_at: float | None = None
        self.phase = "follow"  # follow -> brake -> stopped -> drive

    def stage(self, stage: Stage) -> None:
        self._path = stage.path
        self.s: float | None = None  # centre's arc length, placed on the first cue (it needs the ego's front)
        self.v = 0.0
        self._t = 0.0
        self._stopped_at = 0.0

    def cue(self, t: float, ego_front_m: float, ego_speed: float) -> Cue:
        p = self.params
        if self.s is None:
            self.s, self._t = ego_front_m + self.start_gap_m + self.length / 2, t
        dt, self._t = t - self._t, t
        if self.phase == "follow" and self.s >= self.brake_at_m:
            self.phase, self.triggered_at = "brake", t
        if self.phase == "follow":
            # cruise, but close a gap wider than max_gap_m by going slower than the ego
            gap = self.s - self.length / 2 - ego_front_m
            wanted = self.cruise if gap <= self.max_gap_m else ego_speed + p.follow_gain * (self.max_gap_m - gap)
            wanted = float(np.clip(wanted, p.creep_speed, self.cruise))
            self.v += float(np.clip(wanted - self.v, -p.accel * dt, p.accel * dt))
        elif self.phase == "brake":
            self.v = max(0.0, self.v - self.decel * dt)
            if self.v == 0.0:
                self.phase, self._stopped_at = "stopped", t
        elif self.phase == "stopped":
            if t - self._stopped_at >= self.stop_s:
                self.phase = "drive"
        else:
            self.v = min(self.cruise, self.v + p.accel * dt)
        self.s = min(self.s + self.v * dt, self._path.length - self.length / 2)
        x, y, heading = _pose(self._path, self.s, 0.0)
        return Cue((("lead", Agent("vehicle", x, y, heading, self.v, self.length, self.width)),))


class RedLightDirector:
    """The ego's signal: green until the ego is close, then yellow and red, then green again (``RedLightScenario``)."""

    def __init__(self, params: RedLightScenario, rng: np.random.Generator) -> None:
        self.params = params
        self.stop_line_m = draw(rng, params.stop_line_m)
        self.red_before_s = draw(rng, params.red_before_s)
        self.red_s = draw(rng, params.red_s)
        self.layout = Layout(self.stop_line_m, params.after_m, at_signal=True)
        self.triggered_at: float | None = None

    def stage(self, stage: Stage) -> None:
        """The stop line is the end of the route's first street, which the backend placed at ``stop_line_m``."""

    def cue(self, t: float, ego_front_m: float, ego_speed: float) -> Cue:
        p = self.params
        ahead = self.stop_line_m - ego_front_m
        if self.triggered_at is None and ahead > 0 and _time_to(ahead, ego_speed, p.min_speed) <= p.yellow_s + self.red_before_s:
            self.triggered_at = t
        if self.triggered_at is None:
            return Cue(light="g")
        since = t - self.triggered_at
        return Cue(light="y" if since < p.yellow_s else "r" if since < p.yellow_s + self.red_s else "g")


def make_director(scenario: object, rng: np.random.Generator) -> Director | None:
    """The director of one episode of ``scenario`` (a parameter set of ``collect.scenarios``), drawn from
    ``rng``; None for the free town, which stages nothing."""
    if isinstance(scenario, FreeTraffic):
        return None
    for params, director in ((CrossingScenario, CrossingDirector), (LeadBrakeScenario, LeadBrakeDirector), (RedLightScenario, RedLightDirector)):
        if isinstance(scenario, params):
            return director(scenario, rng)
    raise TypeError(f"no director for scenario parameters {scenario!r}")
