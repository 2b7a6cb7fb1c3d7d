"""Simulator backends: ``sumo`` (embedded default) and ``carla`` (needs a running server).

Their settings import cheaply; a backend itself imports its simulator (libsumo, one instance per process, or
the optional carla wheel), so it is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from collect.backends.config import DEFAULT_NET, CarlaConfig, CarlaUnavailable, SumoConfig

_SESSIONS = {"SumoBackend": "collect.backends.sumo", "CarlaBackend": "collect.backends.carla"}


def __getattr__(name: str) -> Any:
    """``SumoBackend`` / ``CarlaBackend`` on first use: each imports its simulator."""
    if name in _SESSIONS:
        return getattr(importlib.import_module(_SESSIONS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_NET", "CarlaBackend", "CarlaConfig", "CarlaUnavailable", "SumoBackend", "SumoConfig"]
