"""SAC (d3rlpy) whose actor and critics share one observation trunk, computed once per batch of frames.

d3rlpy's SAC gives the actor and each critic an encoder of its own, and every update then runs the pixel
trunk eight times forward and five times backward (actor, both critics, both targets, and the critics again
inside the actor loss): at batch 256 nearly all of an update's time. Here, as in DrQ-v2 (Yarats et al. 2021,
arXiv 2107.09645) and SAC-AE (Yarats et al. 2019, arXiv 1910.01741), one ``BevStateTrunk`` feeds the actor's
and each critic's MLP head:

* the trunk is trained by the critic loss only; the actor reads its features detached, the features of the
  same forward pass the critic loss used (DrQ-v2's ``update_actor(obs.detach())``);
* the target critics keep a target trunk, the Polyak average of the trunk like every other critic weight,
  so the bootstrap target is SAC's: ``min_i Q_targ_i(s', a') - alpha log pi(a'|s')`` with ``a' ~ pi(s')``;
* per update that is one trunk forward and backward on ``s`` and two forwards without gradients on ``s'``
  (trunk for the policy, target trunk for the target), on BEV frames scaled once per batch.

The losses, the temperature update, the ensemble reductions and the checkpoint format are d3rlpy's own
(``SACImpl``); only where the trunk runs changes. ``SharedEncoderSAC.update`` also moves a batch to the
device once: uint8 frames (a quarter of float32's bytes), through pinned memory on CUDA.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from d3rlpy.algos import SAC, SACConfig
from d3rlpy.algos.qlearning.torch.sac_impl import SACImpl, SACModules
from d3rlpy.base import DeviceArg, register_learnable
from d3rlpy.dataset import TransitionMiniBatch
from d3rlpy.models.builders import create_continuous_q_function, create_normal_policy, create_parameter
from d3rlpy.models.encoders import EncoderFactory
from d3rlpy.models.torch import build_squashed_gaussian_distribution, get_parameter
from d3rlpy.torch_utility import TorchMiniBatch
from d3rlpy.types import Shape
from torch import nn

from train.encoder import BevStateEncoderFactory, BevStateTrunk, TrunkFeatures, scale_bev
from train.replay import ReplayBatch

__all__ = ["SharedEncoderSAC", "SharedEncoderSACConfig", "SharedEncoderSACImpl"]


@dataclasses.dataclass(frozen=True)
class TrunkBatch(TorchMiniBatch):
    """A mini-batch whose observations are trunk features; ``target_next_observations`` are the target
    trunk's features of the next observations."""

    target_next_observations: TrunkFeatures | None = None


class SharedEncoderSACImpl(SACImpl):
    """d3rlpy's ``SACImpl`` with the trunk run once per batch of frames (see the module docstring)."""

    def __init__(self, *args, trunk: BevStateTrunk, targ_trunk: BevStateTrunk, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._trunk = trunk
        self._targ_trunk = targ_trunk

    def inner_update(self, batch: TorchMiniBatch, grad_step: int) -> dict[str, float]:
        (bev, state), (next_bev, next_state) = batch.observations, batch.next_observations
        next_bev = scale_bev(next_bev)
        observations = TrunkFeatures(self._trunk(scale_bev(bev), state))
        with torch.no_grad():
            next_observations = TrunkFeatures(self._trunk(next_bev, next_state))
            target_next = TrunkFeatures(self._targ_trunk(next_bev, next_state))
        critic_batch = TrunkBatch(
            **{f.name: getattr(batch, f.name) for f in dataclasses.fields(TorchMiniBatch)}
            | {"observations": observations, "next_observations": next_observations, "target_next_observations": target_next}
        )
        metrics = self.update_critic(critic_batch)
        # the actor's loss must not train the trunk: it reads the critic pass's features, detached
        metrics.update(self.update_actor(dataclasses.replace(critic_batch, observations=TrunkFeatures(observations.features.detach()))))
        self.update_critic_target()
        return metrics

    def compute_target(self, batch: TorchMiniBatch) -> torch.Tensor:
        """SAC's target (``SACImpl.compute_target``) with the target critics on the target trunk's features."""
        assert isinstance(batch, TrunkBatch) and batch.target_next_observations is not None
        with torch.no_grad():
            dist = build_squashed_gaussian_distribution(self._modules.policy(batch.next_observations))
            action, log_prob = dist.sample_with_log_prob()
            entropy = get_parameter(self._modules.log_temp).exp() * log_prob
            target = self._targ_q_func_forwarder.compute_target(batch.target_next_observations, action, reduction="min")
            return target - entropy


@dataclasses.dataclass()
class SharedEncoderSACConfig(SACConfig):
    """d3rlpy's ``SACConfig`` (every field means what it means there) for a ``SharedEncoderSAC``.

    ``actor_encoder_factory`` and ``critic_encoder_factory`` must be the same ``BevStateEncoderFactory``:
    the actor and the critics share its trunk.
    """

    def create(self, device: DeviceArg = False, enable_ddp: bool = False) -> "SharedEncoderSAC":
        return SharedEncoderSAC(self, device, enable_ddp)

    @staticmethod
    def get_type() -> str:
        return "shared_encoder_sac"


class _WithTrunk(EncoderFactory):
    """Hands d3rlpy's network builders encoders around one given trunk (never serialised)."""

    def __init__(self, factory: BevStateEncoderFactory, trunk: BevStateTrunk) -> None:
        self.factory = factory
        self.trunk = trunk

    def create(self, observation_shape: Shape) -> nn.Module:  # type: ignore[override]
        return self.factory.create(observation_shape, trunk=self.trunk)

    def create_with_action(  # type: ignore[override]
        self, observation_shape: Shape, action_size: int, discrete_action: bool = False
    ) -> nn.Module:
        return self.factory.create_with_action(observation_shape, action_size, discrete_action, trunk=self.trunk)

    @staticmethod
    def get_type() -> str:
        return "bev_state_with_trunk"


class SharedEncoderSAC(SAC):
    """A d3rlpy ``SAC`` (``isinstance`` holds; save, load, predict and sample_action are d3rlpy's) whose
    networks share one trunk; see the module docstring."""

    _config: SharedEncoderSACConfig

    def inner_create_impl(self, observation_shape: Shape, action_size: int) -> None:
        config = self._config
        factory = config.critic_encoder_factory
        if not isinstance(factory, BevStateEncoderFactory) or config.actor_encoder_factory != factory:
            raise ValueError("SharedEncoderSACConfig needs the same BevStateEncoderFactory as actor and critic encoder factory")
        if config.observation_scaler or config.action_scaler or config.reward_scaler:
            raise ValueError("SharedEncoderSACConfig takes no scalers: its update moves batches to the device as they are")
        trunk = factory.create_trunk(observation_shape).to(self._device)
        targ_trunk = factory.create_trunk(observation_shape).to(self._device)  # set to the trunk's weights by the impl
        policy = create_normal_policy(
            observation_shape, action_size, _WithTrunk(factory, trunk), device=self._device, enable_ddp=self._enable_ddp
        )
        q_funcs, q_func_forwarder = create_continuous_q_function(
            observation_shape, action_size, _WithTrunk(factory, trunk), config.q_func_factory,
            n_ensembles=config.n_critics, device=self._device, enable_ddp=self._enable_ddp,
        )  # fmt: skip
        targ_q_funcs, targ_q_func_forwarder = create_continuous_q_function(
            observation_shape, action_size, _WithTrunk(factory, targ_trunk), config.q_func_factory,
            n_ensembles=config.n_critics, device=self._device, enable_ddp=self._enable_ddp,
        )  # fmt: skip
        log_temp = create_parameter((1, 1), math.log(config.initial_temperature), device=self._device, enable_ddp=self._enable_ddp)

        shared = set(trunk.parameters())
        actor_parameters = nn.ParameterList([p for p in policy.parameters() if p not in shared])
        actor_optim = config.actor_optim_factory.create(
            [("actor", actor_parameters)], lr=config.actor_learning_rate, compiled=self.compiled
        )
        critic_optim = config.critic_optim_factory.create(q_funcs.named_modules(), lr=config.critic_learning_rate, compiled=self.compiled)
        temp_optim = (
            config.temp_optim_factory.create(log_temp.named_modules(), lr=config.temp_learning_rate, compiled=self.compiled)
            if config.temp_learning_rate > 0
            else None
        )
        modules = SACModules(
            policy=policy, q_funcs=q_funcs, targ_q_funcs=targ_q_funcs, log_temp=log_temp, actor_optim=actor_optim,
            critic_optim=critic_optim, temp_optim=temp_optim,
        )  # fmt: skip
        self._impl = SharedEncoderSACImpl(
            observation_shape=observation_shape, action_size=action_size, modules=modules, q_func_forwarder=q_func_forwarder,
            targ_q_func_forwarder=targ_q_func_forwarder, gamma=config.gamma, tau=config.tau, compiled=self.compiled,
            device=self._device, trunk=trunk, targ_trunk=targ_trunk,
        )  # fmt: skip

    def update(self, batch: ReplayBatch | TransitionMiniBatch) -> dict[str, float]:
        """One SAC update on a mini-batch (d3rlpy's ``update``), moved to the device by ``_to_device``."""
        assert self._impl is not None, "create_impl first"
        loss = self._impl.update(_to_device(batch, self._device), self._grad_step)
        self._grad_step += 1
        return loss


def _tensor(array: np.ndarray, device: str) -> torch.Tensor:
    """``array`` on ``device`` in its own dtype (uint8 frames stay uint8), through pinned memory on CUDA."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.startswith("cuda"):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _to_device(batch: ReplayBatch | TransitionMiniBatch, device: str) -> TorchMiniBatch:
    """A replay mini-batch as d3rlpy's ``TorchMiniBatch`` on ``device``: one copy per array, frames kept uint8
    (the trunk scales them on the device, once per batch)."""

    def floats(array: np.ndarray) -> torch.Tensor:
        return _tensor(np.asarray(array, dtype=np.float32), device)

    def observation(x: np.ndarray | list[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(x, (list, tuple)):
            return [_tensor(a, device) if a.dtype == np.uint8 else floats(a) for a in x]
        return _tensor(x, device) if x.dtype == np.uint8 else floats(x)

    rewards = floats(batch.rewards)
    return TorchMiniBatch(
        observations=observation(batch.observations),
        actions=floats(batch.actions),
        rewards=rewards,
        next_observations=observation(batch.next_observations),
        next_actions=floats(batch.next_actions),
        returns_to_go=torch.zeros_like(rewards),
        terminals=floats(batch.terminals),
        intervals=floats(batch.intervals),
        device=device,
        numpy_batch=batch,
    )


register_learnable(SharedEncoderSACConfig)
