"""The driving environment: a simulator backend, the BEV rasteriser and the rules that end an episode.

Backends only report what happened (collisions, leaving the road, route metrics); deciding that an episode
is over lives here so that every backend ends episodes by the same rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from collect.backend import Backend, Observation, RouteState
from collect.bev import BevConfig, BevRasteriser
from collect.scenarios import FREE, SCENARIOS, check_scenarios, scenario_for
from collect.scene import Scene

#: Why an episode ended (``EnvStep.outcome``).
OUTCOMES = ("collision", "off_road", "stuck", "goal", "step_limit")


class Rasteriser(Protocol):
    def render(self, scene: Scene) -> np.ndarray: ...


@dataclass(frozen=True)
class EpisodeLimits:
    """When an episode ends.

    Stuck means less than ``stuck_progress_m`` of route progress for ``stuck_seconds`` of sim time: long
    enough to wait out a red light (the bundled town cycles in 40 s) without ending a good episode.
    """

    max_steps: int = 1000  # actions per episode before truncation
    stuck_seconds: float = 40.0
    stuck_progress_m: float = 1.0
    goal_radius_m: float = 3.0  # reached when this close to the route's end, along the route and in a line ...
    goal_completion: float = 0.995  # ... or when this much of the route is done

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"EpisodeLimits.max_steps must be >= 1, got {self.max_steps}")
        if self.stuck_seconds <= 0:
            raise ValueError(f"EpisodeLimits.stuck_seconds must be > 0, got {self.stuck_seconds}")
        if self.stuck_progress_m <= 0:
            raise ValueError(f"EpisodeLimits.stuck_progress_m must be > 0, got {self.stuck_progress_m}")
        if self.goal_radius_m < 0:
            raise ValueError(f"EpisodeLimits.goal_radius_m must be >= 0, got {self.goal_radius_m}")
        if not 0 < self.goal_completion <= 1:
            raise ValueError(f"EpisodeLimits.goal_completion must be in (0, 1], got {self.goal_completion}")


@dataclass(frozen=True)
class EnvStep:
    """An observation, its rendered BEV and how the episode stands there."""

    obs: Observation
    bev: np.ndarray
    step: int  # actions taken so far in this episode
    outcome: str | None = None  # one of OUTCOMES once the episode is over

    @property
    def terminated(self) -> bool:
        return self.outcome is not None and self.outcome != "step_limit"

    @property
    def truncated(self) -> bool:
        return self.outcome == "step_limit"

    @property
    def stuck(self) -> bool:
        return self.outcome == "stuck"

    @property
    def done(self) -> bool:
        return self.outcome is not None


def reached_goal(route: RouteState, limits: EpisodeLimits) -> bool:
    """Near the goal *along the route*: a route may pass close to its own end long before reaching it."""
    if route.completion >= limits.goal_completion:
        return True
    if route.completion <= 0:
        return False
    remaining = route.progress * (1.0 - route.completion) / route.completion
    return remaining <= limits.goal_radius_m and route.distance_to_goal <= limits.goal_radius_m


class StuckDetector:
    """Stuck: less than ``stuck_progress_m`` of route progress within ``stuck_seconds`` of sim time."""

    def __init__(self, limits: EpisodeLimits) -> None:
        self.limits = limits
        self._progress = 0.0
        self._t = 0.0

    def reset(self, progress: float, t: float) -> None:
        self._progress, self._t = progress, t

    def update(self, progress: float, t: float) -> bool:
        if progress >= self._progress + self.limits.stuck_progress_m:
            self.reset(progress, t)
            return False
        return t - self._t >= self.limits.stuck_seconds


class DrivingEnv:
    """Episodes on one backend: ``reset(seed, scenario)``, then ``step(action)`` until ``EnvStep.done``.

    ``scenarios`` are the ones a run over this env plays, episode ``i`` the ``scenario_for(scenarios, i)``.
    A scenario's episode also ends at its ``max_seconds`` (as a step limit), if that comes first.
    """

    def __init__(
        self, backend: Backend, rasteriser: Rasteriser, limits: EpisodeLimits = EpisodeLimits(), scenarios: tuple[str, ...] = (FREE,)
    ) -> None:
        self.backend = backend
        self.rasteriser = rasteriser
        self.limits = limits
        self.scenarios = check_scenarios(scenarios)
        self._stuck = StuckDetector(limits)
        self._step = 0
        self._max_steps = limits.max_steps
        self._done = True

    def scenario_for(self, index: int) -> str:
        """The scenario of episode ``index`` of a run on this env."""
        return scenario_for(self.scenarios, index)

    def reset(self, seed: int, scenario: str = FREE) -> EnvStep:
        check_scenarios([scenario])
        # only a staged scenario is passed on: a backend that stages none (CARLA) keeps its reset(seed)
        obs = self.backend.reset(seed) if scenario == FREE else self.backend.reset(seed, scenario)
        max_seconds = SCENARIOS[scenario].max_seconds
        self._max_steps = self.limits.max_steps
        if max_seconds is not None:
            self._max_steps = min(self._max_steps, math.ceil(max_seconds / self.backend.dt - 1e-9))
        self._step = 0
        self._done = False
        self._stuck.reset(obs.route.progress, obs.t)
        return EnvStep(obs, self.rasteriser.render(obs.scene), 0)

    def step(self, action: np.ndarray) -> EnvStep:
        if self._done:
            raise RuntimeError("DrivingEnv.step called on a finished episode; call reset(seed) first")
        obs = self.backend.step(np.asarray(action, dtype=np.float64))
        self._step += 1
        outcome = self._outcome(obs)
        self._done = outcome is not None
        return EnvStep(obs, self.rasteriser.render(obs.scene), self._step, outcome)

    def _outcome(self, obs: Observation) -> str | None:
        """The first rule that ends the episode, in order of precedence (a crash at the goal is a crash)."""
        stuck = self._stuck.update(obs.route.progress, obs.t)
        if obs.events.collision:
            return "collision"
        if obs.events.off_road:
            return "off_road"
        if reached_goal(obs.route, self.limits):
            return "goal"
        if stuck:
            return "stuck"
        if self._step >= self._max_steps:
            return "step_limit"
        return None

    def close(self) -> None:
        self.backend.close()


SIMULATORS = ("sumo", "carla")


@dataclass(frozen=True)
class EnvSpec:
    """Everything that builds a ``DrivingEnv``: picklable, so worker processes build their own simulator.

    ``backend`` is the simulator's own config (``SumoConfig`` / ``CarlaConfig``); None means its defaults.
    ``scenarios`` are what a run plays (``collect.scenarios``), episode ``i`` the ``i mod k``-th; only SUMO
    stages scenarios other than ``free``.
    """

    sim: str = "sumo"
    backend: Any = None
    bev: BevConfig = field(default_factory=BevConfig)
    limits: EpisodeLimits = field(default_factory=EpisodeLimits)
    scenarios: tuple[str, ...] = (FREE,)

    def __post_init__(self) -> None:
        if self.sim not in SIMULATORS:
            raise ValueError(f"EnvSpec.sim must be one of {SIMULATORS}, got {self.sim!r}")
        object.__setattr__(self, "scenarios", check_scenarios(self.scenarios))
        staged = sorted({s for s in self.scenarios if s != FREE})
        if self.sim != "sumo" and staged:
            raise ValueError(f"scenario {staged[0]!r} is staged on the SUMO town only; --sim {self.sim} runs scenario 'free'")

    def build(self) -> DrivingEnv:
        """Start the simulator (imported here: the CARLA client is optional, libsumo is one per process)."""
        if self.sim == "sumo":
            from collect.backends.sumo import SumoBackend

            backend: Backend = SumoBackend(self.backend)
        else:
            from collect.backends.carla import CarlaBackend

            backend = CarlaBackend(self.backend)
        return DrivingEnv(backend, BevRasteriser(self.bev), self.limits, self.scenarios)
