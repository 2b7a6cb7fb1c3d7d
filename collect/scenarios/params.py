"""What each scenario is: frozen parameter sets whose ranges a seed draws from.

A scenario is a short route on which one hazard is timed to meet the ego (after CARLA's ScenarioRunner and
the NHTSA pre-crash typology). Every range ``(lo, hi)`` is drawn uniformly per episode from the episode's
seed, so the same seed gives the same episode and different seeds vary distances, speeds and sides.
Distances along the route are arc lengths from the ego's start (its footprint centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Range = tuple[float, float]

#: Sizes (length, width in m) of the scripted road users: SUMO's default pedestrian, bicycle and car, so a
#: scenario's actors look like the town's own traffic in the BEV.
ACTOR_SIZE = {"pedestrian": (0.215, 0.478), "cyclist": (1.6, 0.65), "vehicle": (5.0, 1.8)}


def _check_range(owner: str, name: str, value: Range, low: float = 0.0, high: float = np.inf) -> None:
    ok = isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
    if not ok or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"{owner}.{name} must be a range (lo, hi) with {low} <= lo <= hi <= {high}, got {value!r}")


def _check_positive(owner: str, names: tuple[str, ...], params: object) -> None:
    for name in names:
        if not getattr(params, name) > 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {getattr(params, name)!r}")


def _check_max_seconds(owner: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{owner}.max_seconds must be > 0 or None, got {value!r}")


def draw(rng: np.random.Generator, value: Range) -> float:
    """One value of a range (a degenerate range draws nothing random but still consumes one draw)."""
    return float(rng.uniform(value[0], value[1]))


@dataclass(frozen=True)
class Layout:
    """What a scenario asks of its route: the conflict point ``conflict_m`` along it, ``after_m`` of route
    beyond, and whether the conflict point is a signalised stop line (the end of the route's first street)."""

    conflict_m: float
    after_m: float
    at_signal: bool = False


@dataclass(frozen=True)
class FreeTraffic:
    """The town's own traffic on a random route, nothing staged (what collection did before scenarios)."""

    max_seconds: float | None = None


@dataclass(frozen=True)
class CrossingScenario:
    """A road user crosses the ego's street ahead, timed to reach the ego's lane just before the ego does.

    It waits ``kerb_gap_m`` beyond the kerb on a side from ``sides`` (beyond the right kerb: the ego's own
    side) and starts across at ``speed`` once the ego, at its current speed (at least ``min_speed``), is no
    more than its own crossing time plus ``lead_s`` away from the conflict point. So it reaches the ego's lane
    centre ``lead_s`` before the ego would: a driver who keeps going meets it, one who yields does not, and
    a slow ego meets it too, later. With ``parked_car`` a car is parked at the right kerb just short of the
    conflict point, hiding the road user (who then starts on the right, beside the car's front) until it
    steps out.
    """

    actor: str = "pedestrian"  # pedestrian or cyclist
    conflict_m: Range = (35.0, 55.0)
    speed: Range = (1.1, 1.7)  # m/s
    lead_s: Range = (0.0, 1.0)
    sides: tuple[str, ...] = ("right", "left")
    kerb_gap_m: Range = (0.5, 1.5)  # how far beyond the kerb it waits (on the sidewalk, for a pedestrian)
    parked_car: bool = False
    parked_gap_m: Range = (0.4, 1.0)  # between the parked car's front and the road user, along the street
    parked_overlap_m: float = 0.2  # how far the parked car reaches past the kerb into the ego's lane
    min_speed: float = 1.0  # m/s, the ego speed below which timing assumes this one (a stopped ego still meets it)
    after_m: float = 30.0
    max_seconds: float | None = 30.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if self.actor not in ("pedestrian", "cyclist"):
            raise ValueError(f"{owner}.actor must be 'pedestrian' or 'cyclist', got {self.actor!r}")
        object.__setattr__(self, "sides", tuple(self.sides))
        if not self.sides or not set(self.sides) <= {"left", "right"}:
            raise ValueError(f"{owner}.sides must be a non-empty subset of ('right', 'left'), got {self.sides!r}")
        if self.parked_car and self.sides != ("right",):
            raise ValueError(f"{owner}: a parked car stands at the right kerb, so sides must be ('right',), got {self.sides!r}")
        _check_range(owner, "conflict_m", self.conflict_m, low=10.0)
        _check_range(owner, "speed", self.speed, low=0.1)
        _check_range(owner, "lead_s", self.lead_s, low=-5.0, high=10.0)
        _check_range(owner, "kerb_gap_m", self.kerb_gap_m)
        _check_range(owner, "parked_gap_m", self.parked_gap_m)
        _check_positive(owner, ("min_speed", "after_m"), self)
        _check_max_seconds(owner, self.max_seconds)



@dataclass(frozen=True)
class LeadBrakeScenario:
    """A car ahead in the ego's lane brakes hard to a stop, waits, and drives on.

    It starts ``start_gap_m`` ahead (bumper to bumper) and drives at ``cruise``, but never lets the ego fall
    more than ``max_gap_m`` behind: beyond that it slows to the ego's pace (no slower than ``creep_speed``,
    so it never waits forever for an ego that waits for it). It brakes at ``decel`` once its centre reaches
    ``brake_at_m``: with the ego at most ``max_gap_m`` behind, however fast or slow the ego drives, and the
    closer the ego follows, the less room it has.
    """

    start_gap_m: Range = (6.0, 10.0)
    max_gap_m: Range = (10.0, 16.0)
    cruise: Range = (6.0, 8.0)  # m/s
    creep_speed: float = 1.0  # m/s
    accel: float = 2.5  # m/s^2 while following and driving off
    follow_gain: float = 0.8  # 1/s: how fast its speed corrects a gap beyond max_gap_m
    brake_at_m: Range = (35.0, 50.0)
    decel: Range = (6.0, 8.0)  # m/s^2
    stop_s: Range = (2.0, 4.0)
    after_m: float = 30.0
    max_seconds: float | None = 30.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_range(owner, "start_gap_m", self.start_gap_m, low=1.0)
        _check_range(owner, "max_gap_m", self.max_gap_m, low=1.0)
        _check_range(owner, "cruise", self.cruise, low=0.5)
        _check_range(owner, "brake_at_m", self.brake_at_m, low=10.0)
        _check_range(owner, "decel", self.decel, low=0.5)
        _check_range(owner, "stop_s", self.stop_s)
        _check_positive(owner, ("creep_speed", "accel", "follow_gain", "after_m"), self)
        if self.creep_speed > self.cruise[0]:
            raise ValueError(f"{owner}.creep_speed ({self.creep_speed}) must not exceed the lowest cruise speed {self.cruise[0]}")
        _check_max_seconds(owner, self.max_seconds)


@dataclass(frozen=True)
class RedLightScenario:
    """The signal ahead turns yellow, then red, as the ego approaches it.

    The route's first street ends at a signalised stop line ``stop_line_m`` ahead; the signal stays green
    until the ego, at its current speed (at least ``min_speed``), is ``yellow_s + red_before_s`` from the line,
    so it is red ``red_before_s`` before the ego would cross; it stays red ``red_s``, then turns green.
    """

    stop_line_m: Range = (40.0, 55.0)
    red_before_s: Range = (0.5, 2.0)
    yellow_s: float = 3.0
    red_s: Range = (8.0, 12.0)
    min_speed: float = 1.0
    after_m: float = 40.0
    max_seconds: float | None = 30.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_range(owner, "stop_line_m", self.stop_line_m, low=10.0)
        _check_range(owner, "red_before_s", self.red_before_s)
        _check_range(owner, "red_s", self.red_s, low=0.5)
        _check_positive(owner, ("yellow_s", "min_speed", "after_m"), self)
        _check_max_seconds(owner, self.max_seconds)

