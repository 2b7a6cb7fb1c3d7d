"""Simulator backends: ``sumo`` (embedded default) and ``carla`` (needs a running server)."""
