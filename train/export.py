"""Export of the trained policy as TorchScript, following the collector's contract, and its latency.

The file's ``forward(bev: uint8[B, 3, H, W], state: float32[B, STATE_DIM]) -> float32[B, 2]`` takes the BEV as
rendered (any size: it is area-downsampled inside, exactly as replay does) and the state vector of
``data_schema.features``, and returns the deterministic action: ``tanh`` of the policy's mean, for SAC as for
the offline algorithms. Loading it needs only torch: no d3rlpy, no training code, no CLIP, YOLO or VLM.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from data_schema.features import STATE_DIM
from data_schema.storage import atomic_path
from train.agent import bev_size_of
from train.algorithms import Agent
from train.encoder import downsample_bev

__all__ = ["DeployedPolicy", "export_torchscript", "measure_latency"]


class DeployedPolicy(nn.Module):
    """The agent's policy with the BEV downsampling in front and the squashed mean as its output."""

    def __init__(self, policy: nn.Module, bev_size: int) -> None:
        super().__init__()
        self.policy = policy
        self.bev_size = bev_size

    def forward(self, bev: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        frames = downsample_bev(bev, self.bev_size).float()
        return self.policy([frames, state]).squashed_mu


def export_torchscript(agent: Agent, path: str | Path, example_bev_px: int = 128) -> Path:
    """Trace the agent's policy on CPU and save it atomically at ``path``."""
    assert agent.impl is not None
    policy = copy.deepcopy(agent.impl.policy).to("cpu").eval()
    for parameter in policy.parameters():
        parameter.requires_grad_(False)
    module = DeployedPolicy(policy, bev_size_of(agent)).eval()
    example = (torch.zeros(1, 3, example_bev_px, example_bev_px, dtype=torch.uint8), torch.zeros(1, STATE_DIM))
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, but TorchScript is the collector's contract
        torch.jit.save(torch.jit.trace(module, example), str(tmp))
    return Path(path)


def measure_latency(path: str | Path, device: str = "cpu", bev_px: int = 128, runs: int = 200, warmup: int = 20) -> dict[str, float]:
    """Milliseconds per single-observation forward pass (median and 90th percentile), as the collector runs it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location=device).eval()
    bev = torch.randint(0, 256, (1, 3, bev_px, bev_px), dtype=torch.uint8, device=device)
    state = torch.randn(1, STATE_DIM, device=device)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            module(bev, state)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000.0)
    return {"median_ms": statistics.median(times), "p90_ms": p90(times), "runs": runs}


def p90(values: list[float]) -> float:
    """The 90th percentile, linearly interpolated between samples (never below the median, even of two)."""
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]
