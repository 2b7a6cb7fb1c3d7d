"""Replay built from raw shards joined with one label set, kept compact, sampled as d3rlpy mini-batches.

A transition is ``(obs_t, action_t, reward, obs_t+1, terminal)`` from two consecutive rows of one episode:
``reward`` is the label ``reward`` of row ``t+1`` (RLDS layout, ``data_schema.schema``), ``terminal`` is row
``t+1``'s ``terminated`` (no bootstrapping past it); a ``truncated`` row ``t+1`` (step limit) is a timeout,
kept apart: the target still bootstraps from ``obs_t+1``. Transitions never span two episodes, and a raw
shard without a label shard contributes nothing: there are no placeholder rewards.

Frames are stored once per row (``obs_t+1`` of one transition is ``obs_t`` of the next), area-downsampled
to ``bev_size`` and kept either as raw uint8 arrays or zstd-compressed (``frame_codec``). A mini-batch
(``ReplayBatch``) keeps them uint8 and is filled field by field with array operations, compressed frames
decompressed straight into it. ``bench/train.py`` measures both; on the bundled town a 64x64 frame is 12 KB raw and
about 1.7 KB compressed, and PNG decoding (also measured while choosing) was 3-4x slower than zstd.
The buffer holds whole shards as chunks and evicts the oldest transitions first once it holds more than
``limit``.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from data_schema import KEY_COLUMNS, Dataset, DatasetError, LabelSet, LabelSetInfo, decode_image
from data_schema.images import naming_frames
from data_schema.features import STATE_COLUMNS, state_matrix
from data_schema.reward import COMPONENT_COLUMNS, REWARD_RAW_COLUMNS, RewardConfig, synthesize
from data_schema.schema import ACTION_SIZE
from data_schema.settings import build, to_mapping
from train.encoder import downsample_bev

__all__ = [
    "REPLAY_RAW_COLUMNS", "ReplayBatch", "ReplayBuffer", "RewardSource", "STORED_REWARD", "ShardTransitions", "read_shard_transitions",
    "reward_source",
]  # fmt: skip

_ZSTD = pa.Codec("zstd")

#: Raw columns a shard is read with (the BEV is decoded and downsampled right away).
REPLAY_RAW_COLUMNS = ("episode_id", "step", "bev", *STATE_COLUMNS, "action", "terminated", "truncated", "is_last")

#: Computes each label row's reward from the joined raw and label columns (``--reward-from-components``).
RewardFn = Callable[[pa.Table], np.ndarray]


@dataclass(frozen=True)
class RewardSource:
    """Where rewards come from: the stored label ``reward`` or a recomputation from stored components."""

    label_columns: tuple[str, ...] = ("reward",)
    raw_columns: tuple[str, ...] = ()
    compute: RewardFn | None = None

    def rewards(self, joined: pa.Table) -> np.ndarray:
        if self.compute is None:
            return joined.column("reward").to_numpy().astype(np.float32)
        return np.asarray(self.compute(joined), dtype=np.float32)


STORED_REWARD = RewardSource()


def reward_source(info: LabelSetInfo, from_components: bool, overrides: dict[str, Any]) -> RewardSource:
    """Stored label rewards, or rewards recomputed (``data_schema.reward``) from the stored components with the
    label set's own reward parameters, ``overrides`` changed."""
    if not from_components:
        if overrides:
            raise ValueError("reward overrides need --reward-from-components")
        return STORED_REWARD
    config = build(RewardConfig, {**to_mapping(info.reward), **overrides}, "--reward")
    return RewardSource(
        label_columns=COMPONENT_COLUMNS,
        raw_columns=tuple(c for c in REWARD_RAW_COLUMNS if c not in KEY_COLUMNS),
        compute=lambda joined: synthesize(joined, config)["reward"],
    )


@dataclass(frozen=True)
class ShardTransitions:
    """The transitions of one shard. Row arrays have one entry per stored row, transition arrays per transition."""

    shard: str
    bev_size: int
    episodes: tuple[str, ...]
    episode_index: np.ndarray  # int32 [R] index into ``episodes``
    steps: np.ndarray  # int32 [R]
    frames: np.ndarray  # uint8 [R, 3, S, S], or object [R] of zstd-compressed [3, S, S] frames
    states: np.ndarray  # float32 [R, STATE_DIM]
    actions: np.ndarray  # float32 [R, 2] action taken from each row (zeros on is_last rows)
    src: np.ndarray  # int32 [T] row of obs_t; obs_t+1 is row src + 1
    rewards: np.ndarray  # float32 [T]
    terminals: np.ndarray  # bool [T]
    timeouts: np.ndarray  # bool [T]

    def __len__(self) -> int:
        return len(self.src)

    @property
    def nbytes(self) -> int:
        """Memory held by this chunk, image bytes objects included."""
        arrays = (self.episode_index, self.steps, self.states, self.actions, self.src, self.rewards, self.terminals, self.timeouts)
        total = sum(a.nbytes for a in arrays)
        if self.frames.dtype == object:
            return total + self.frames.nbytes + sum(sys.getsizeof(b) for b in self.frames)
        return total + self.frames.nbytes

    def keys(self) -> list[tuple[str, int]]:
        """``(episode_id, step)`` of each transition's ``obs_t`` (for audits and tests)."""
        return [(self.episodes[e], int(s)) for e, s in zip(self.episode_index[self.src], self.steps[self.src])]


def compress_frames(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 3, S, S]`` frames as an object array of zstd-compressed bytes (lossless)."""
    out = np.empty(len(frames), dtype=object)
    for i, frame in enumerate(frames):
        out[i] = _ZSTD.compress(frame.tobytes(), asbytes=True)
    return out


def decompress_into(data: Iterable[bytes], out: np.ndarray, rows: np.ndarray) -> None:
    """Decompress frames (``compress_frames``) into ``out[rows]``, each straight into its place."""
    flat = out.reshape(len(out), -1)
    for row, frame in zip(rows, data):
        flat[row] = np.frombuffer(_ZSTD.decompress(frame, flat.shape[1]), np.uint8)


def decode_pngs(data: Iterable[bytes], first_row: int = 0) -> np.ndarray:
    """Stored PNG frames as uint8 ``[N, 3, H, W]``; a bad frame's ImageError carries its row (``first_row`` + i)."""
    return np.stack([decode_image(b, first_row + i).transpose(2, 0, 1) for i, b in enumerate(data)])


def _downsampled(bev_column: pa.ChunkedArray, bev_size: int, block: int = 256) -> np.ndarray:
    """Decode PNG frames and area-downsample them, ``block`` at a time to bound the decoded peak."""
    data = bev_column.to_pylist()
    out = np.empty((len(data), 3, bev_size, bev_size), dtype=np.uint8)
    for start in range(0, len(data), block):
        frames = torch.from_numpy(decode_pngs(data[start : start + block], start))
        out[start : start + len(frames)] = downsample_bev(frames, bev_size).numpy()
    return out


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("episode_id", "ascending"), ("step", "ascending")])


def read_shard_transitions(
    dataset: Dataset,
    labels: LabelSet,
    shard: str,
    bev_size: int,
    frame_codec: str = "raw",
    reward: RewardSource = STORED_REWARD,
) -> ShardTransitions:
    """The transitions of raw shard ``shard`` with rewards from its label shard (which must exist)."""
    raw_path, label_path = dataset.shard_path(shard), labels.shard_path(shard)
    if not dataset.fs.exists(label_path):
        raise DatasetError(f"{label_path}: no label shard for raw shard {shard}; unlabelled transitions never enter replay")
    raw_columns = list(dict.fromkeys(REPLAY_RAW_COLUMNS + reward.raw_columns))
    raw = _sorted(dataset.read_shard(shard, raw_columns))
    lab = _sorted(labels.read_shard(shard, ["episode_id", "step", *reward.label_columns]))
    if raw.num_rows != lab.num_rows:
        raise DatasetError(f"{label_path}: {lab.num_rows} label rows for {raw.num_rows} raw rows in {raw_path}")
    for key in ("episode_id", "step"):
        if not raw.column(key).equals(lab.column(key)):
            raise DatasetError(f"{label_path}: keys (episode_id, step) differ from those of {raw_path}")

    encoded = pc.dictionary_encode(raw.column("episode_id")).combine_chunks()
    episodes = tuple(encoded.dictionary.to_pylist())
    episode_index = encoded.indices.to_numpy().astype(np.int32)
    steps = raw.column("step").to_numpy().astype(np.int32)
    is_last = raw.column("is_last").to_numpy(zero_copy_only=False)
    _check_episodes(raw_path, episodes, episode_index, steps, is_last)

    action_column = raw.column("action").combine_chunks()
    has_action = action_column.is_valid().to_numpy(zero_copy_only=False)
    if (~has_action & ~is_last).any():
        row = int(np.flatnonzero(~has_action & ~is_last)[0])
        where = f"episode {episodes[episode_index[row]]}, step {steps[row]}"
        raise DatasetError(f"{raw_path}: null action on a row that is not is_last ({where})")
    actions = np.zeros((raw.num_rows, ACTION_SIZE), dtype=np.float32)
    actions[has_action] = action_column.filter(pa.array(has_action)).flatten().to_numpy().reshape(-1, ACTION_SIZE)

    joined = raw.drop_columns(["bev"])
    for name in lab.column_names[2:]:
        joined = joined.append_column(name, lab.column(name))
    row_rewards = reward.rewards(joined)
    if not np.isfinite(row_rewards).all():
        raise DatasetError(f"{label_path}: non-finite reward(s); relabel this shard")

    src = np.flatnonzero(~is_last).astype(np.int32)  # every non-last row starts a transition to the next row
    dst = src + 1
    with naming_frames(raw_path, "bev", [episodes[i] for i in episode_index], steps):
        frames = _downsampled(raw.column("bev"), bev_size)
    return ShardTransitions(
        shard=shard,
        bev_size=bev_size,
        episodes=episodes,
        episode_index=episode_index,
        steps=steps,
        frames=compress_frames(frames) if frame_codec == "zstd" else frames,
        states=state_matrix(raw).astype(np.float32),
        actions=actions,
        src=src,
        rewards=row_rewards[dst],
        terminals=raw.column("terminated").to_numpy(zero_copy_only=False)[dst].copy(),
        timeouts=raw.column("truncated").to_numpy(zero_copy_only=False)[dst].copy(),
    )


def _check_episodes(path: str, episodes: tuple[str, ...], index: np.ndarray, steps: np.ndarray, is_last: np.ndarray) -> None:
    """Rows sorted by (episode, step) must form whole episodes: steps 0, 1, ... ending with one is_last row."""
    n = len(index)
    if n == 0:
        return
    starts = np.r_[True, index[1:] != index[:-1]]
    ends = np.r_[index[1:] != index[:-1], True]
    bad_start = starts & (steps != 0)
    bad_gap = ~starts & (steps != np.r_[-1, steps[:-1]] + 1)
    bad_end = ends != is_last
    problems = ((bad_start, "does not start at step 0"), (bad_gap, "skips a step"), (bad_end, "does not end with exactly one is_last row"))
    for mask, what in problems:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            raise DatasetError(f"{path}: episode {episodes[index[row]]} {what} (near step {steps[row]}); shards hold whole episodes")


class ReplayBuffer:
    """FIFO of shard chunks with uniform sampling over the transitions it holds."""

    def __init__(self, limit: int, seed: int = 0) -> None:
        if limit < 1:
            raise ValueError(f"replay limit must be >= 1, got {limit}")
        self.limit = limit
        self._chunks: deque[ShardTransitions] = deque()
        self._first: deque[int] = deque()  # first live transition of each chunk (older ones are evicted)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return sum(len(c) - f for c, f in zip(self._chunks, self._first))

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._chunks)

    def add(self, chunk: ShardTransitions) -> None:
        self._chunks.append(chunk)
        self._first.append(0)
        excess = len(self) - self.limit
        while excess > 0:
            live = len(self._chunks[0]) - self._first[0]
            if live <= excess:
                self._chunks.popleft()
                self._first.popleft()
                excess -= live
            else:
                self._first[0] += excess
                excess = 0

    def keys(self) -> list[tuple[str, int]]:
        """``(episode_id, step)`` of every live transition's ``obs_t``, oldest first."""
        return [k for c, f in zip(self._chunks, self._first) for k in c.keys()[f:]]

    def rewards(self) -> np.ndarray:
        """The reward of every live transition, in the order of ``keys``."""
        return np.concatenate([c.rewards[f:] for c, f in zip(self._chunks, self._first)] or [np.zeros(0, np.float32)])

    def sample(self, batch_size: int) -> ReplayBatch:
        """A uniform mini-batch (with replacement) in the order drawn: tuple observations ``[bev, state]``."""
        sizes = np.array([len(c) - f for c, f in zip(self._chunks, self._first)])
        if sizes.sum() == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        ends = np.cumsum(sizes)
        flat = self._rng.integers(0, ends[-1], size=batch_size)
        which = np.searchsorted(ends, flat, side="right")
        offsets = flat - (ends - sizes)[which]
        side = self._chunks[0].bev_size
        batch = ReplayBatch.empty(batch_size, side, self._chunks[0].states.shape[1])
        for c in np.unique(which):
            rows = np.flatnonzero(which == c)
            _gather(self._chunks[c], self._first[c] + offsets[rows], batch, rows)
        return batch


@dataclass(frozen=True)
class ReplayBatch:
    """A mini-batch with the fields of d3rlpy's ``TransitionMiniBatch``, its frames kept uint8: a quarter of
    float32's bytes to fill and to move to the device, where the trunk scales them once per batch
    (``train.sac``). d3rlpy's own ``update`` takes it as it takes a TransitionMiniBatch (whose float32 check
    is why it is not one)."""

    observations: list[np.ndarray]  # [uint8 [B, 3, S, S], float32 [B, STATE_DIM]]
    actions: np.ndarray  # float32 [B, 2]
    rewards: np.ndarray  # float32 [B, 1]
    next_observations: list[np.ndarray]
    next_actions: np.ndarray  # float32 [B, 2]
    terminals: np.ndarray  # float32 [B, 1]
    intervals: np.ndarray  # float32 [B, 1], all 1

    @classmethod
    def empty(cls, batch_size: int, bev_size: int, state_dim: int) -> "ReplayBatch":
        def observation() -> list[np.ndarray]:
            return [np.empty((batch_size, 3, bev_size, bev_size), np.uint8), np.empty((batch_size, state_dim), np.float32)]

        def column(width: int) -> np.ndarray:
            return np.empty((batch_size, width), np.float32)

        return cls(observation(), column(ACTION_SIZE), column(1), observation(), column(ACTION_SIZE), column(1),
                   np.ones((batch_size, 1), np.float32))  # fmt: skip


def _gather(chunk: ShardTransitions, position: np.ndarray, batch: ReplayBatch, rows: np.ndarray) -> None:
    """Write the transitions at ``position`` of a chunk into ``rows`` of ``batch``: one array operation per
    field, the frames decompressed straight into the batch."""
    src = chunk.src[position]
    dst = src + 1
    for frames, at in ((batch.observations[0], src), (batch.next_observations[0], dst)):
        if chunk.frames.dtype == object:
            decompress_into(chunk.frames[at], frames, rows)
        else:
            frames[rows] = chunk.frames[at]
    batch.observations[1][rows] = chunk.states[src]
    batch.next_observations[1][rows] = chunk.states[dst]
    batch.actions[rows] = chunk.actions[src]
    batch.next_actions[rows] = chunk.actions[dst]
    batch.rewards[rows, 0] = chunk.rewards[position]
    batch.terminals[rows, 0] = chunk.terminals[position]
