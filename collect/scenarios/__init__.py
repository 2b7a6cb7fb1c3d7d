"""Scenarios on the SUMO town: named, seeded, short routes on which a hazard is timed to meet the ego.

``free`` is the town's own traffic on a random route (the default, what collection did before scenarios). The
others stage one hazard each, timed by the ego's actual approach (its distance and time to the conflict point
along its route), with distances, speeds and sides drawn from the episode's seed:

* ``ped_crossing``: a pedestrian steps off either sidewalk and crosses the ego's lane ahead;
* ``ped_behind_parked``: the same from the right, out from behind a car parked at the kerb that hides it;
* ``cyclist_crossing``: a cyclist rides across the street from either side;
* ``lead_brake``: the car ahead in the ego's lane brakes hard to a stop;
* ``red_light``: the signal ahead turns yellow, then red, as the ego approaches.

A run names one or more scenarios; episode ``i`` runs ``scenario_for(scenarios, i)``, the ``i mod k``-th, so
the same command always gives episode ``i`` the same scenario and resumes.
"""

from __future__ import annotations

from typing import Sequence, Union

from collect.scenarios.directors import Cue, Director, Stage, Street, make_director
from collect.scenarios.params import ACTOR_SIZE, CrossingScenario, FreeTraffic, Layout, LeadBrakeScenario, RedLightScenario

Scenario = Union[FreeTraffic, CrossingScenario, LeadBrakeScenario, RedLightScenario]

FREE = "free"

#: The named scenarios; a run names them with ``--scenario``.
SCENARIOS: dict[str, Scenario] = {
    FREE: FreeTraffic(),
    "ped_crossing": CrossingScenario(),
    "ped_behind_parked": CrossingScenario(sides=("right",), parked_car=True, kerb_gap_m=(0.1, 0.5), lead_s=(0.3, 1.2)),
    "cyclist_crossing": CrossingScenario(actor="cyclist", speed=(3.0, 4.5), kerb_gap_m=(4.0, 8.0), lead_s=(-0.2, 0.5)),
    "lead_brake": LeadBrakeScenario(),
    "red_light": RedLightScenario(),
}


def check_scenarios(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, once each is a known scenario; a name may repeat to give it more episodes."""
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names:
        raise ValueError(f"scenarios: name at least one of {', '.join(SCENARIOS)}")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario {unknown[0]!r}: use one of {', '.join(SCENARIOS)}")
    return names


def scenario_for(scenarios: Sequence[str], index: int) -> str:
    """The scenario of episode ``index`` of a run over ``scenarios``: the ``index mod k``-th."""
    return scenarios[index % len(scenarios)]


__all__ = [
    "ACTOR_SIZE",
    "FREE",
    "SCENARIOS",
    "CrossingScenario",
    "Cue",
    "Director",
    "FreeTraffic",
    "Layout",
    "LeadBrakeScenario",
    "RedLightScenario",
    "Scenario",
    "Stage",
    "Street",
    "check_scenarios",
    "make_director",
    "scenario_for",
]
