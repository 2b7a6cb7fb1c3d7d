"""The algorithms a run can learn with: d3rlpy's, on one encoder, one replay and one checkpoint format.

Every algorithm here takes the same ``(bev, state)`` observations through ``BevStateEncoderFactory``, learns
from the same ``ReplayBuffer`` mini-batches, saves with ``save_agent`` / loads with ``load_agent``
(``d3rlpy.load_learnable``) and exports through ``train.export`` (its ``impl.policy``'s squashed mean).
Hyperparameters the algorithms share come from ``TrainConfig``; the rest keep d3rlpy's defaults, which
follow each paper:

* ``sac``: soft actor-critic (Haarnoja et al., 2018), online or offline, its actor and critics on one shared
  trunk run once per batch (``train.sac``);
* ``iql``: implicit Q-learning (Kostrikov et al., 2021), expectile 0.7, inverse temperature 3;
* ``td3+bc``: TD3 with a behaviour-cloning term (Fujimoto & Gu, 2021), alpha 2.5;
* ``cql``: conservative Q-learning on SAC (Kumar et al., 2020), conservative weight 5;
* ``bc``: behaviour cloning, a deterministic policy regressed on the dataset's actions (rewards unused).

Only ``sac`` samples exploratory actions, so online rounds train SAC; the others are offline algorithms.
"""

from __future__ import annotations

from typing import Callable

from d3rlpy.algos import BC, CQL, IQL, SAC, TD3PlusBC, BCConfig, CQLConfig, IQLConfig, TD3PlusBCConfig
from d3rlpy.base import LearnableConfig
from d3rlpy.models.encoders import EncoderFactory

from train.sac import SharedEncoderSACConfig

__all__ = ["ALGORITHMS", "OFFLINE_ONLY", "Agent", "algorithm_config"]

#: Learner classes a checkpoint may hold (``train.sac.SharedEncoderSAC`` is a SAC).
Agent = SAC | IQL | TD3PlusBC | CQL | BC
#: Algorithms that learn from a fixed dataset only.
OFFLINE_ONLY = ("iql", "td3+bc", "cql", "bc")


def _shared(c, encoder: EncoderFactory) -> dict:
    """Settings every actor-critic here takes from the TrainConfig ``c``."""
    return dict(
        batch_size=c.batch_size, gamma=c.gamma, tau=c.tau, n_critics=c.n_critics, actor_learning_rate=c.actor_lr,
        critic_learning_rate=c.critic_lr, actor_encoder_factory=encoder, critic_encoder_factory=encoder,
    )  # fmt: skip


def _entropy(c) -> dict:
    """The temperature settings of the algorithms that tune an entropy bonus (SAC, CQL)."""
    return dict(temp_learning_rate=c.temp_lr, initial_temperature=c.initial_temperature)


def _sac(c, encoder: EncoderFactory) -> LearnableConfig:
    return SharedEncoderSACConfig(**_shared(c, encoder), **_entropy(c))


def _iql(c, encoder: EncoderFactory) -> LearnableConfig:
    return IQLConfig(**_shared(c, encoder), value_encoder_factory=encoder)


def _td3_plus_bc(c, encoder: EncoderFactory) -> LearnableConfig:
    return TD3PlusBCConfig(**_shared(c, encoder))


def _cql(c, encoder: EncoderFactory) -> LearnableConfig:
    return CQLConfig(**_shared(c, encoder), **_entropy(c))


def _bc(c, encoder: EncoderFactory) -> LearnableConfig:
    return BCConfig(batch_size=c.batch_size, learning_rate=c.actor_lr, policy_type="deterministic", encoder_factory=encoder)


#: Name -> the d3rlpy config of the algorithm for a TrainConfig and the encoder factory.
_BUILDERS: dict[str, Callable[..., LearnableConfig]] = {"sac": _sac, "iql": _iql, "td3+bc": _td3_plus_bc, "cql": _cql, "bc": _bc}
ALGORITHMS = tuple(_BUILDERS)


def algorithm_config(config, encoder: EncoderFactory) -> LearnableConfig:
    """The d3rlpy config of ``config.algo`` (a ``TrainConfig``) with ``encoder`` for every network."""
    return _BUILDERS[config.algo](config, encoder)
