"""Scenario hazards against the expert and its variants: how often each behaviour meets and hits each hazard.

Run it as a module from the repository root (as a script, this file would shadow the ``collect`` package):

    python -m bench.scenarios [--seeds 10] [--scenario NAME ...] [--policy NAME ...] [--quiet]

Every (scenario, policy) pair drives the same seeds ``0 .. seeds-1`` through ``DrivingEnv`` (the episode rules
of collection, a scenario's 30 s limit included) on the SUMO town with its default background traffic
(``--quiet``: none). Per pair it prints, out of the episodes:

  set off    episodes whose hazard was set off (the director fired: the ego approached the conflict point)
  hit        collisions with the scenario's own road user (the crossing pedestrian or cyclist, the lead car,
             the parked car)
  other      collisions with background traffic
  red        episodes that crossed a stop line on red
  goal       episodes that reached the route's end
  s/ep       mean simulated seconds per episode; steps/s: wall-clock rate of the whole pair (noisy: the
             machine is shared; compare rows of one run, not runs)

Collisions with the scenario's road user are told apart from others by footprint: the collision's kind and
the scripted road user of that kind nearest the ego.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter

from collect import SCENARIOS, Agent, DrivingEnv, EnvSpec, Scene, SumoConfig, drive, make_policy
from collect.policies import VARIANTS

DEFAULT_POLICIES = ("expert", *VARIANTS)


def hit_the_hazard(env: DrivingEnv, scene: Scene, kind: str) -> bool:
    """Whether the ego's collision (with an agent of ``kind``, in ``scene``) was with the scenario's own road
    user: that one is the nearest agent of the kind."""
    staged = list(env.backend.stage.agents.values()) if env.backend.stage is not None else []

    def distance(agent: Agent) -> float:
        return math.hypot(agent.x - scene.ego.x, agent.y - scene.ego.y)

    nearest = min((a for a in scene.agents if a.kind == kind), key=distance, default=None)
    return nearest is not None and any(a.kind == kind and distance(a) <= distance(nearest) + 1e-6 for a in staged)


def run_pair(scenario: str, policy_name: str, seeds: int, config: SumoConfig) -> dict[str, float]:
    env = EnvSpec(backend=config, scenarios=(scenario,)).build()
    policy = make_policy(policy_name, 0)
    counts: Counter = Counter()
    seconds = steps = 0.0
    started = time.perf_counter()
    try:
        for seed in range(seeds):
            red = False
            for current, _ in drive(env, policy, seed, scenario):
                red |= current.obs.events.red_light
            stage = env.backend.stage
            counts["set off"] += stage is not None and stage.director.triggered_at is not None
            if current.outcome == "collision":
                counts["hit" if hit_the_hazard(env, current.obs.scene, current.obs.events.collision_with) else "other"] += 1
            counts["red"] += red
            counts["goal"] += current.outcome == "goal"
            seconds += current.obs.t
            steps += current.step
    finally:
        env.close()
    return {**counts, "s/ep": seconds / seeds, "steps/s": steps / (time.perf_counter() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--scenario", action="append", choices=[s for s in SCENARIOS if s != "free"])
    parser.add_argument("--policy", action="append")
    parser.add_argument("--quiet", action="store_true", help="no background traffic")
    args = parser.parse_args()
    config = SumoConfig(cars=0, motorcycles=0, cyclists=0, pedestrians=0) if args.quiet else SumoConfig()
    scenarios = args.scenario or [s for s in SCENARIOS if s != "free"]
    policies = args.policy or list(DEFAULT_POLICIES)
    columns = ("set off", "hit", "other", "red", "goal")
    print(f"{args.seeds} seeds per row, background traffic {'off' if args.quiet else 'on (SumoConfig defaults)'}")
    print(f"{'scenario':<18}{'policy':<24}" + "".join(f"{c:>9}" for c in columns) + f"{'s/ep':>8}{'steps/s':>9}")
    for scenario in scenarios:
        for policy in policies:
            row = run_pair(scenario, policy, args.seeds, config)
            cells = "".join(f"{int(row.get(c, 0)):>9}" for c in columns)
            print(f"{scenario:<18}{policy:<24}{cells}{row['s/ep']:>8.1f}{row['steps/s']:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
