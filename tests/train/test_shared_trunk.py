"""The shared-trunk SAC (train.sac): what it computes, how it saves and loads, and the checkpoints before it."""

from __future__ import annotations

import d3rlpy
import numpy as np
import pytest
import torch
from d3rlpy.algos import SAC, SACConfig
from train_data import TINY

from bench.plain_sac import PlainSAC
from data_schema.features import STATE_DIM
from data_schema.schema import ACTION_SIZE
from train.agent import create_agent, load_agent, observation_shape, save_agent
from train.config import TrainConfig
from train.encoder import BevStateEncoderFactory, downsample_bev
from train.export import export_torchscript
from train.replay import ReplayBatch
from train.sac import SharedEncoderSAC

CONFIG = TrainConfig(**TINY)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _batch(n: int, seed: int) -> ReplayBatch:
    """A replay-shaped batch: uint8 frames, float32 everything else, some terminal transitions."""
    rng = np.random.default_rng(seed)
    s = CONFIG.bev_size
    batch = ReplayBatch.empty(n, s, STATE_DIM)
    for obs in (batch.observations, batch.next_observations):
        obs[0][:] = rng.integers(0, 256, obs[0].shape)
        obs[1][:] = rng.normal(size=obs[1].shape)
    batch.actions[:] = rng.uniform(-1, 1, (n, ACTION_SIZE))
    batch.next_actions[:] = 0
    batch.rewards[:] = rng.normal(size=(n, 1))
    batch.terminals[:] = rng.random((n, 1)) < 0.3
    return batch


def _observation(n: int, seed: int) -> list[np.ndarray]:
    batch = _batch(n, seed)
    return [batch.observations[0].astype(np.float32), batch.observations[1]]


def _trunks(agent: SAC) -> tuple[set[int], set[int]]:
    """Identities of the trunks in the actor + critics, and in the target critics."""
    modules = agent.impl.modules
    online = {id(modules.policy._encoder.trunk)} | {id(q.encoder.trunk) for q in modules.q_funcs}
    return online, {id(q.encoder.trunk) for q in modules.targ_q_funcs}


def test_the_update_is_sac_written_in_plain_pytorch():
    """From the same weights and seed, d3rlpy's update with the shared trunk and the bench's plain-PyTorch SAC
    (critic loss through the trunk, actor on detached features, Polyak-averaged target trunk) agree."""
    agent = create_agent(CONFIG)
    plain = PlainSAC(CONFIG)
    plain.copy_weights(agent)
    for i in range(3):
        batch = _batch(16, i)
        torch.manual_seed(i)
        expected = plain.update(batch)
        torch.manual_seed(i)
        assert agent.update(batch) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    obs = _observation(5, 99)
    with torch.no_grad():
        mu, _ = plain.actor(plain.trunk(torch.from_numpy(obs[0]) / 255.0, torch.from_numpy(obs[1])))
    assert np.allclose(agent.predict(obs), torch.tanh(mu).numpy(), atol=1e-6)


def test_saved_agent_loads_with_d3rlpy_and_keeps_one_shared_trunk(tmp_path):
    agent = create_agent(CONFIG)
    for i in range(2):
        agent.update(_batch(16, i))
    online, target = _trunks(agent)
    assert len(online) == 1 and len(target) == 1 and online != target
    save_agent(agent, tmp_path / "a.d3")
    loaded = d3rlpy.load_learnable(str(tmp_path / "a.d3"))
    assert isinstance(loaded, SharedEncoderSAC)
    online, target = _trunks(loaded)
    assert len(online) == 1 and len(target) == 1 and online != target
    obs = _observation(6, 7)
    assert np.array_equal(agent.predict(obs), loaded.predict(obs))
    # training goes on identically: same optimiser states, same shared trunk
    batch = _batch(16, 3)
    torch.manual_seed(1)
    expected = agent.update(batch)
    torch.manual_seed(1)
    assert loaded.update(batch) == pytest.approx(expected, rel=1e-5)
    # and the loaded agent's export acts as it does
    module = torch.jit.load(str(export_torchscript(loaded, tmp_path / "policy.pt", example_bev_px=32)))
    bev = torch.from_numpy(_batch(6, 8).observations[0]).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # 32x32
    state = torch.from_numpy(obs[1])
    with torch.no_grad():
        got = module(bev, state).numpy()
    assert np.allclose(got, loaded.predict([downsample_bev(bev, CONFIG.bev_size).numpy(), obs[1]]), atol=1e-6)


def test_a_checkpoint_from_before_the_shared_trunk_still_loads(tmp_path):
    """Runs saved a plain d3rlpy SAC with one trunk per network (same encoder factory); they load as that SAC."""
    factory = BevStateEncoderFactory(list(CONFIG.cnn_channels), CONFIG.state_units, CONFIG.feature_size, list(CONFIG.hidden_units))
    old = SACConfig(batch_size=CONFIG.batch_size, actor_encoder_factory=factory, critic_encoder_factory=factory).create(device="cpu")
    old.create_impl(observation_shape(CONFIG), ACTION_SIZE)
    old.update(_batch(16, 0))
    save_agent(old, tmp_path / "old.d3")
    loaded = load_agent(tmp_path / "old.d3")
    assert type(loaded) is SAC
    online, _ = _trunks(loaded)
    assert len(online) == 1 + CONFIG.n_critics  # the actor and each critic have a trunk of their own
    obs = _observation(4, 1)
    assert np.array_equal(old.predict(obs), loaded.predict(obs))
    loaded.update(_batch(16, 1))  # and it still trains on replay batches
