"""What a driving policy is to the collector."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from collect.backend import Observation


class Policy(Protocol):
    """Maps an observation (and its rendered BEV) to an action ``[steer, throttle (>0) / brake (<0)]``.

    ``name`` is written to every row's ``policy`` column: ``random``, ``expert`` or a checkpoint hash.
    A trained policy reaches the collector as a TorchScript file exported by ``pipeline export`` whose
    ``forward(bev: uint8[B, 3, H, W], state: float32[B, STATE_DIM]) -> float32[B, 2]`` takes the BEV and the
    state vector of ``data_schema.features``; the collector never needs the training code to run it.
    """

    name: str

    def reset(self, seed: int) -> None: ...

    def act(self, obs: Observation, bev: np.ndarray) -> np.ndarray: ...
