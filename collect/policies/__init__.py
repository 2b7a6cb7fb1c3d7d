"""Driving policies by name: ``random``, ``expert``, or the path of an exported TorchScript policy."""

from __future__ import annotations

from pathlib import Path

from collect.policies.base import Policy

BUILTIN = ("random", "expert")


def make_policy(spec: str, seed: int = 0) -> Policy:
    """The policy ``spec`` names; ``seed`` seeds a stochastic policy's generator (episodes reseed it)."""
    if spec == "random":
        from collect.policies.random import RandomPolicy

        return RandomPolicy(seed=seed)
    if spec == "expert":
        from collect.policies.expert import ExpertPolicy

        return ExpertPolicy()
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"unknown policy {spec!r}: use one of {', '.join(BUILTIN)} or the path of a TorchScript policy file")
    from collect.policies.checkpoint import TorchScriptPolicy

    return TorchScriptPolicy(path)


__all__ = ["BUILTIN", "Policy", "make_policy"]
