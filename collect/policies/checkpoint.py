"""A trained policy run from its exported TorchScript file: the collector never imports training code.

The file's ``forward(bev: uint8[1, 3, H, W], state: float32[1, STATE_DIM]) -> float32[1, 2]`` gets the BEV
as rendered and the state vector of ``data_schema.features`` (see ``collect.policies.base.Policy``).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from collect.backend import Observation
from collect.policies.base import observation_state
from data_schema.features import STATE_DIM


def checkpoint_hash(path: str | Path) -> str:
    """Short content hash of a checkpoint file: the ``policy`` column names exactly which weights drove."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


class TorchScriptPolicy:
    """Runs a TorchScript policy on CPU, one observation at a time."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"policy checkpoint {path}: no such file")
        self.path = path
        self.name = f"ts-{checkpoint_hash(path)}"
        try:
            with warnings.catch_warnings():
                # TorchScript is the export contract (base.Policy); torch 2.14 warns that it is deprecated
                warnings.simplefilter("ignore", FutureWarning)
                self._module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as e:
            raise ValueError(f"policy checkpoint {path}: not a TorchScript file ({str(e).splitlines()[0]})") from e
        self._module.eval()

    def reset(self, seed: int) -> None:
        """Deterministic policy: nothing to reseed."""

    def act(self, obs: Observation, bev: np.ndarray) -> np.ndarray:
        state = observation_state(obs)
        bev_t = torch.from_numpy(np.ascontiguousarray(bev.transpose(2, 0, 1)))[None]
        state_t = torch.from_numpy(state.reshape(1, STATE_DIM))
        with torch.inference_mode():
            out = self._module(bev_t, state_t)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, 2):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"policy checkpoint {self.path}: forward returned {shape}, expected a float tensor of shape (1, 2)")
        action = out.detach().to(torch.float32).numpy().reshape(2)
        if not np.isfinite(action).all():
            raise ValueError(f"policy checkpoint {self.path}: forward returned a non-finite action {action.tolist()}")
        return np.clip(action, -1.0, 1.0)
