"""A SAC update written directly in PyTorch (CleanRL-style) on the agent's networks: the bench's reference.

``bench/train.py`` times it against the agent's d3rlpy update on the same batches, so the ratio is what d3rlpy
costs around the same arithmetic. The networks are the agent's: the trunk is ``train.encoder.BevStateTrunk``
itself (so both run the same layers, channels-last included), the heads are plain ``nn.Sequential`` stacks of
the same shapes, and ``copy_weights`` starts the reference from the agent's weights. The update follows
``train.sac`` step for step (d3rlpy's SAC losses, the trunk trained by the critics, the actor on detached
features, a Polyak-averaged target trunk), so from the same weights and seed both compute the same losses
(``tests/train/test_shared_trunk.py`` checks it).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from d3rlpy.models.torch import get_parameter
from torch import nn
from torch.distributions import Normal

from data_schema.features import STATE_DIM
from data_schema.schema import ACTION_SIZE
from train import TrainConfig
from train.encoder import BevStateTrunk, scale_bev
from train.replay import ReplayBatch
from train.sac import SharedEncoderSAC

__all__ = ["PlainSAC"]

LOGSTD_MIN, LOGSTD_MAX = -20.0, 2.0  # d3rlpy's NormalPolicy defaults


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class _Actor(nn.Module):
    def __init__(self, width: int, hidden: list[int]) -> None:
        super().__init__()
        self.mlp = _mlp([width, *hidden])
        self.mu = nn.Linear(hidden[-1], ACTION_SIZE)
        self.logstd = nn.Linear(hidden[-1], ACTION_SIZE)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(features)
        return self.mu(h), self.logstd(h).clamp(LOGSTD_MIN, LOGSTD_MAX)


def _critic(width: int, hidden: list[int]) -> nn.Sequential:
    return nn.Sequential(_mlp([width + ACTION_SIZE, *hidden]), nn.Linear(hidden[-1], 1))


def _sample(mu: torch.Tensor, logstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A tanh-squashed Gaussian sample and its log-probability."""
    dist = Normal(mu, logstd.exp())
    raw = dist.rsample()
    jacobian = 2 * (math.log(2) - raw - F.softplus(-2 * raw))
    return torch.tanh(raw), (dist.log_prob(raw) - jacobian).sum(dim=-1, keepdims=True)


class PlainSAC:
    """SAC on ``(bev, state)`` batches with one shared trunk; see the module docstring."""

    def __init__(self, config: TrainConfig, device: str = "cpu") -> None:
        self.device = device
        self.gamma, self.tau = config.gamma, config.tau
        hidden = list(config.hidden_units)
        self.trunk = BevStateTrunk((3, config.bev_size, config.bev_size), STATE_DIM, config.cnn_channels, config.state_units,
                                   config.feature_size).to(device)  # fmt: skip
        width = self.trunk.output_size
        self.actor = _Actor(width, hidden).to(device)
        self.critics = nn.ModuleList([_critic(width, hidden) for _ in range(config.n_critics)]).to(device)
        self.targ_trunk, self.targ_critics = copy.deepcopy(self.trunk), copy.deepcopy(self.critics)
        self.log_alpha = torch.full((1, 1), math.log(config.initial_temperature), device=device, requires_grad=True)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optim = torch.optim.Adam([*self.trunk.parameters(), *self.critics.parameters()], lr=config.critic_lr)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=config.temp_lr)

    def copy_weights(self, agent: SharedEncoderSAC) -> None:
        """Start from ``agent``'s weights (parameters in the same order, the trunk's taken out of the heads)."""
        modules = agent.impl.modules
        pairs = []
        sides = ((self.trunk, self.critics, modules.q_funcs), (self.targ_trunk, self.targ_critics, modules.targ_q_funcs))
        for trunk_copy, heads, critics in sides:
            trunk = critics[0].encoder.trunk
            shared = set(trunk.parameters())
            pairs += [(trunk_copy, list(trunk.parameters())), (heads, [p for p in critics.parameters() if p not in shared])]
        pairs.append((self.actor, [p for p in modules.policy.parameters() if p not in set(modules.q_funcs[0].encoder.trunk.parameters())]))
        with torch.no_grad():
            for module, source in pairs:
                mine = list(module.parameters())
                assert [p.shape for p in mine] == [p.shape for p in source]
                for p, q in zip(mine, source):
                    p.copy_(q)
            self.log_alpha.copy_(get_parameter(modules.log_temp))

    def _q(self, critics: nn.ModuleList, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The smallest of the critics' values."""
        x = torch.cat([features, action], dim=1)
        return torch.stack([critic(x) for critic in critics]).min(dim=0).values

    def update(self, batch: ReplayBatch) -> dict[str, float]:
        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array, device=self.device)

        (bev, state), (next_bev, next_state) = batch.observations, batch.next_observations
        state, next_state = tensor(state), tensor(next_state)
        action, reward, terminal = tensor(batch.actions), tensor(batch.rewards), tensor(batch.terminals)
        next_bev = scale_bev(tensor(next_bev))
        features = self.trunk(scale_bev(tensor(bev)), state)
        with torch.no_grad():
            next_features = self.trunk(next_bev, next_state)
            target_features = self.targ_trunk(next_bev, next_state)

        # critics (and the trunk): soft Bellman error against the target critics
        self.critic_optim.zero_grad()
        with torch.no_grad():
            next_action, next_log_prob = _sample(*self.actor(next_features))
            target = self._q(self.targ_critics, target_features, next_action) - self.log_alpha.exp() * next_log_prob
            y = reward + self.gamma * target * (1 - terminal)
        x = torch.cat([features, action], dim=1)
        critic_loss = sum(F.mse_loss(critic(x), y, reduction="none").mean() for critic in self.critics)
        critic_loss.backward()
        self.critic_optim.step()

        # actor and temperature, on the trunk's features detached
        detached = features.detach()
        mu, logstd = self.actor(detached)
        self.actor_optim.zero_grad()
        sampled, log_prob = _sample(mu, logstd)
        self.alpha_optim.zero_grad()
        temp_loss = -(self.log_alpha.exp() * (log_prob - ACTION_SIZE).detach()).mean()
        temp_loss.backward()
        self.alpha_optim.step()
        actor_loss = (self.log_alpha.exp() * log_prob - self._q(self.critics, detached, sampled)).mean()
        actor_loss.backward()
        self.actor_optim.step()

        # Polyak averaging of the target trunk and critics
        with torch.no_grad():
            online = [*self.trunk.parameters(), *self.critics.parameters()]
            target_params = [*self.targ_trunk.parameters(), *self.targ_critics.parameters()]
            for p, p_targ in zip(online, target_params):
                p_targ.mul_(1 - self.tau)
                p_targ.add_(self.tau * p)
        losses = {"critic_loss": critic_loss, "actor_loss": actor_loss, "temp": self.log_alpha.exp(), "temp_loss": temp_loss}
        return {name: value.item() for name, value in losses.items()}
