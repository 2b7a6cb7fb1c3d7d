"""Driving policies by name: ``random``, ``expert``, an expert variant (``expert-reckless``, ...), or the path of an
exported TorchScript policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collect.policies.base import Policy, observation_state
from collect.policies.expert import ExpertConfig, ExpertPolicy
from collect.policies.random import RandomConfig, RandomPolicy
from collect.policies.variants import VARIANTS, NoisyConfig, NoisyExpert, make_variant

BUILTIN = ("random", "expert", *VARIANTS)


def make_policy(spec: str, seed: int = 0) -> Policy:
    """The policy ``spec`` names; ``seed`` seeds a stochastic policy's generator (episodes reseed it)."""
    if spec == "random":
        return RandomPolicy(seed=seed)
    if spec == "expert":
        return ExpertPolicy()
    if spec in VARIANTS:
        return make_variant(spec, seed)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"unknown policy {spec!r}: use one of {', '.join(BUILTIN)} or the path of a TorchScript policy file")
    from collect.policies.checkpoint import TorchScriptPolicy  # torch: heavy, loaded only for a checkpoint

    return TorchScriptPolicy(path)


def __getattr__(name: str) -> Any:
    """``TorchScriptPolicy`` on first use: importing it loads torch, which the built-in policies never need."""
    if name == "TorchScriptPolicy":
        from collect.policies.checkpoint import TorchScriptPolicy

        return TorchScriptPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTIN",
    "VARIANTS",
    "ExpertConfig",
    "ExpertPolicy",
    "NoisyConfig",
    "NoisyExpert",
    "Policy",
    "RandomConfig",
    "RandomPolicy",
    "TorchScriptPolicy",
    "make_policy",
    "observation_state",
]
