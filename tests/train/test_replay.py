"""Replay from raw shards + a label set: alignment, episode boundaries, missing labels, FIFO, relabelling."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from train_data import LABEL_HASH, frame_value, labels_of, raw_episode, reward_of, write_dataset

from data_schema import DatasetError, SchemaError
from data_schema.reward import RewardConfig, synthesize
from train.replay import ReplayBuffer, read_shard_transitions, reward_source

BEV = 8  # replay frame side in these tests (the stored frames are 32x32 constant colours)


def _episode_step(state_speed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Episode number and step encoded in a row's speed (state[:, 0] = speed / 10)."""
    speed = np.rint(state_speed * 10).astype(int)
    return speed // 1000, speed % 1000


@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_transitions_match_the_steps(small_dataset, codec):
    labels = small_dataset.label_set("test")
    chunk = read_shard_transitions(small_dataset, labels, "s0", BEV, codec)
    # episode 1: 5 actions ending terminated; episode 2: 4 actions ending truncated; no transition across them
    assert chunk.keys() == [("ep001", s) for s in range(5)] + [("ep002", s) for s in range(4)]
    assert chunk.rewards.tolist() == pytest.approx([reward_of(1, s + 1) for s in range(5)] + [reward_of(2, s + 1) for s in range(4)])
    assert chunk.terminals.tolist() == [False] * 4 + [True] + [False] * 4
    assert chunk.timeouts.tolist() == [False] * 8 + [True]
    buffer = ReplayBuffer(limit=100, seed=1)
    buffer.add(chunk)
    batch = buffer.sample(64)
    bev, state = batch.observations
    next_bev, next_state = batch.next_observations
    episode, step = _episode_step(state[:, 0])
    next_episode, next_step = _episode_step(next_state[:, 0])
    assert (next_episode == episode).all() and (next_step == step + 1).all()
    assert bev.shape == (64, 3, BEV, BEV) and bev.dtype == np.uint8  # the trunk scales frames on the device
    assert (bev[:, :, 0, 0] == np.array([frame_value(e, s) for e, s in zip(episode, step)])[:, None]).all()
    assert (next_bev[:, :, 3, 5] == np.array([frame_value(e, s + 1) for e, s in zip(episode, step)])[:, None]).all()
    assert batch.rewards[:, 0] == pytest.approx([reward_of(e, s + 1) for e, s in zip(episode, step)])
    assert batch.actions[:, 0] == pytest.approx(0.01 * step) and batch.actions[:, 1] == pytest.approx(-0.01 * step)
    last_of = {1: 5, 2: 4}
    assert batch.terminals[:, 0].tolist() == [float(e == 1 and s + 1 == last_of[1]) for e, s in zip(episode, step)]


def test_a_shard_without_labels_contributes_nothing(small_dataset):
    labels = small_dataset.label_set("test")
    with pytest.raises(DatasetError, match="no label shard for raw shard s2"):
        read_shard_transitions(small_dataset, labels, "s2", BEV)
    buffer = ReplayBuffer(limit=1000)
    for shard in small_dataset.shards():
        if shard in labels.shards():
            buffer.add(read_shard_transitions(small_dataset, labels, shard, BEV))
    episodes = {episode for episode, _ in buffer.keys()}
    assert episodes == {"ep001", "ep002", "ep003", "ep004"}
    assert len(buffer) == 5 + 4 + 6 + 3
    rewards = buffer.sample(256).rewards[:, 0]
    assert set(np.floor(rewards).astype(int)) <= {1, 2, 3, 4}  # every reward is a real label of episodes 1-4


def test_stale_or_mismatched_labels_are_refused(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"), {"a": [raw_episode(1, 3)], "b": [raw_episode(2, 3)]}, labelled={"a"})
    labels = ds.label_set("test")
    labels.write_shard("b", labels_of(ds.read_shard("b")), "another-hash")
    with pytest.raises(SchemaError, match="stale label shard"):
        read_shard_transitions(ds, labels, "b", BEV)
    wrong_keys = labels_of(raw_episode(9, 3))  # same row count, other episode
    labels.write_shard("b", wrong_keys, LABEL_HASH)
    with pytest.raises(DatasetError, match="keys"):
        read_shard_transitions(ds, labels, "b", BEV)


def test_broken_episodes_are_named(tmp_path):
    gap = raw_episode(1, 4)
    gap = gap.filter(pa.array([s != 2 for s in gap.column("step").to_pylist()]))
    ds = write_dataset(str(tmp_path / "ds"), {"gap": [gap]})
    with pytest.raises(DatasetError, match=r"gap\.parquet: episode ep001 skips a step"):
        read_shard_transitions(ds, ds.label_set("test"), "gap", BEV)
    cut = raw_episode(2, 4).slice(0, 4)  # no is_last row
    ds2 = write_dataset(str(tmp_path / "ds2"), {"cut": [cut]})
    with pytest.raises(DatasetError, match="does not end with exactly one is_last row"):
        read_shard_transitions(ds2, ds2.label_set("test"), "cut", BEV)


def test_fifo_evicts_the_oldest_transitions(small_dataset):
    labels = small_dataset.label_set("test")
    buffer = ReplayBuffer(limit=12)
    buffer.add(read_shard_transitions(small_dataset, labels, "s0", BEV))  # 9 transitions
    buffer.add(read_shard_transitions(small_dataset, labels, "s1", BEV))  # 9 more: 6 of s0 must go
    assert len(buffer) == 12
    assert buffer.keys() == [("ep002", 1), ("ep002", 2), ("ep002", 3)] + [("ep003", s) for s in range(6)] + [("ep004", s) for s in range(3)]
    episode, _ = _episode_step(buffer.sample(512).observations[1][:, 0])
    assert set(episode.tolist()) == {2, 3, 4}
    buffer.add(read_shard_transitions(small_dataset, labels, "s1", BEV))
    assert len(buffer) == 12 and {e for e, _ in buffer.keys()} == {"ep003", "ep004"}


def test_compressed_frames_are_smaller_and_identical(small_dataset):
    labels = small_dataset.label_set("test")
    raw = read_shard_transitions(small_dataset, labels, "s1", 16, "raw")
    packed = read_shard_transitions(small_dataset, labels, "s1", 16, "zstd")
    assert packed.nbytes < raw.nbytes
    a, b = ReplayBuffer(100, seed=3), ReplayBuffer(100, seed=3)
    a.add(raw)
    b.add(packed)
    batch_a, batch_b = a.sample(32), b.sample(32)
    assert np.array_equal(batch_a.observations[0], batch_b.observations[0])
    assert np.array_equal(batch_a.next_observations[0], batch_b.next_observations[0])


def test_rewards_recomputed_from_components(small_dataset):
    labels = small_dataset.label_set("test")
    info = labels.info()
    source = reward_source(info, from_components=True, overrides={"penalty": -3.0, "target_speed_kmh": 30.0})
    chunk = read_shard_transitions(small_dataset, labels, "s0", BEV, reward=source)
    raw = small_dataset.read_shard("s0").to_pandas()
    lab = labels.read_shard("s0").to_pandas()
    expected = synthesize({**{c: raw[c] for c in raw.columns}, **{c: lab[c] for c in ("sim_pos", "sim_neg", "sim_dyn_pos", "sim_dyn_desc")}},
                          RewardConfig(penalty=-3.0, target_speed_kmh=30.0))["reward"]  # fmt: skip
    dst = chunk.src + 1
    assert chunk.rewards == pytest.approx(expected[dst])
    assert chunk.rewards[chunk.terminals].tolist() == [-3.0]  # the collision that ends episode 1
    stored = read_shard_transitions(small_dataset, labels, "s0", BEV)
    assert not np.allclose(stored.rewards, chunk.rewards)
    with pytest.raises(ValueError, match="need --reward-from-components"):
        reward_source(info, from_components=False, overrides={"penalty": 0.0})
    with pytest.raises(ValueError, match="no_such_param: unknown key"):
        reward_source(info, from_components=True, overrides={"no_such_param": 1})
    with pytest.raises(ValueError, match="stability_window: expected an integer"):
        reward_source(info, from_components=True, overrides={"stability_window": 2.5})
    only_collisions = reward_source(info, from_components=True, overrides={"penalty": -3.0, "penalize": "collision"})  # as --reward gives it
    chunk = read_shard_transitions(small_dataset, labels, "s0", BEV, reward=only_collisions)
    assert chunk.rewards[chunk.terminals].tolist() == [-3.0]
