"""The data CLIP is fine-tuned and evaluated on: BEV frames of a dataset with their captions and hazards,
split into training and held-out episodes.

The split is by episode, so held-out frames never share an episode with a training frame, and it is a pure
function of the episode ids: ``pipeline clip eval`` recomputes the fine-tuner's held-out set from the same
dataset and settings. Within each policy (expert and random episodes differ in how often hazards happen),
episodes are ranked by a hash of their id and the first ``heldout_share`` of them are held out.

Everything is checked on the cheap columns before a single frame is decoded: a dataset without agents (no
ground truth to caption) or without any frame that has a hazard (nothing to tell apart) is refused with a
message saying so.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from annotate.captions import CAPTION_COLUMNS, Sentence, captions
from annotate.word_dropout import drop_words, words
from data_schema.dataset import Dataset
from data_schema.errors import DatasetError
from data_schema.groundtruth import HAZARD_KINDS, HazardRule, hazard_sources
from data_schema.images import decode_image

__all__ = ["ClipFrames", "EpisodeSplit", "SentencePool", "load_frames", "scan"]


@dataclass(frozen=True)
class EpisodeSplit:
    """Which episodes are held out: per policy, ``heldout_share`` of them ranked by a seeded hash of their id
    (at least one of every policy with two or more episodes, never all)."""

    heldout_share: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.heldout_share < 1.0:
            raise ValueError(f"heldout_share must be within (0, 1), got {self.heldout_share}")

    def heldout(self, episode_ids: np.ndarray, policies: np.ndarray) -> np.ndarray:
        """Per row (one row per frame), whether its episode is held out."""
        episode_ids = np.asarray(episode_ids, dtype=object)
        first = {}
        for episode, policy in zip(episode_ids, policies):
            first.setdefault(episode, policy)
        chosen: set[str] = set()
        for policy in sorted(set(first.values())):
            episodes = sorted((e for e, p in first.items() if p == policy), key=self._rank)
            n = len(episodes)
            take = min(max(round(self.heldout_share * n), 1 if n >= 2 else 0), n - 1)
            chosen.update(episodes[:take])
        return np.array([e in chosen for e in episode_ids], dtype=bool)

    def _rank(self, episode: str) -> str:
        return hashlib.sha256(f"{self.seed}\x00{episode}".encode()).hexdigest()


@dataclass
class ClipFrames:
    """Frames of a dataset with what the fine-tuner and the evaluation need, one entry per raw row.

    ``frames`` is filled by :func:`load_frames` (``(N, H, W, 3)`` uint8 BEVs as stored); :func:`scan` leaves it
    None. ``captions`` holds each row's sentences; ``hazards`` one bool array per ``HAZARD_KINDS`` entry.
    """

    dataset: str
    shards: list[str]
    episode_id: np.ndarray
    step: np.ndarray
    captions: list[list[Sentence]]
    hazards: dict[str, np.ndarray]
    heldout: np.ndarray
    frames: np.ndarray | None = None
    #: Per row, the kind of the nearest critical road user in the corridor ("" without one); None if not known.
    critical_kind: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.step)

    @property
    def train(self) -> np.ndarray:
        return np.flatnonzero(~self.heldout)

    @property
    def test(self) -> np.ndarray:
        return np.flatnonzero(self.heldout)

    def identity(self) -> dict[str, object]:
        """What the card records of the data: dataset, shards, and the episodes on each side of the split."""
        episodes = np.unique(self.episode_id)
        held = np.unique(self.episode_id[self.heldout])
        return {
            "url": self.dataset,
            "shards": len(self.shards),
            "shards_hash": _digest(self.shards),
            "frames": len(self),
            "episodes": len(episodes),
            "heldout_episodes": len(held),
            "heldout_episodes_hash": _digest(sorted(held)),
            "heldout_frames": int(self.heldout.sum()),
            "hazard_share": {kind: float(np.mean(flags)) for kind, flags in self.hazards.items()},
        }


@dataclass(frozen=True)
class SentencePool:
    """Every distinct caption sentence tokenised once, and which of them each row's caption holds.

    A fine-tune draws one sentence per sample rather than the whole caption: the language goals the static
    pathway scores frames against are single sentences, and a text tower trained on whole captions maps a lone
    sentence unpredictably. ``flat[start[r] : start[r] + count[r]]`` are row ``r``'s sentence ids and
    ``flat_mirrored`` the same sentences for the frame mirrored left to right.
    """

    texts: tuple[str, ...]
    tokenizer: Callable[[list[str]], torch.Tensor]
    tokens: torch.Tensor
    flat: np.ndarray
    flat_mirrored: np.ndarray
    start: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, captions: list[list[Sentence]], tokenizer, leave_out: tuple[str, ...]) -> "SentencePool":
        ids: dict[str, int] = {}
        kept = [[s for s in caption if s.slot not in leave_out] for caption in captions]
        count = np.array([len(row) for row in kept], dtype=np.int64)
        if (count == 0).any():
            raise ValueError(f"leave_out {list(leave_out)} leaves some captions without a sentence to train on")
        flat = np.array([ids.setdefault(s.text, len(ids)) for row in kept for s in row], dtype=np.int64)
        flat_mirrored = np.array([ids.setdefault(s.mirrored, len(ids)) for row in kept for s in row], dtype=np.int64)
        start = np.r_[0, np.cumsum(count)[:-1]].astype(np.int64)
        texts = tuple(sorted(ids, key=ids.get))
        return cls(texts, tokenizer, tokenizer(list(texts)), flat, flat_mirrored, start, count)

    def draw(self, rows: np.ndarray, rng: np.random.Generator, mirrored: np.ndarray | None = None, word_dropout: float = 0.0) -> torch.Tensor:
        """Tokens of one sentence of each row's caption, drawn uniformly; of its mirrored form where ``mirrored``;
        with about ``word_dropout`` of its words dropped (see :func:`annotate.word_dropout.drop_words`)."""
        pick = self.start[rows] + (rng.random(len(rows)) * self.count[rows]).astype(np.int64)
        ids = self.flat[pick] if mirrored is None else np.where(mirrored, self.flat_mirrored[pick], self.flat[pick])
        if word_dropout == 0.0:
            return self.tokens[ids]
        return self.tokenizer([drop_words(self.texts[i], word_dropout, rng, self.idf) for i in ids])

    def sentence_ids(self, rows: np.ndarray) -> np.ndarray:
        """The distinct ids of the sentences the captions of ``rows`` hold, in either orientation."""
        counts = self.count[rows]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        positions = np.repeat(self.start[rows], counts) + offsets
        return np.unique(np.r_[self.flat[positions], self.flat_mirrored[positions]])

    @cached_property
    def idf(self) -> dict[str, float]:
        """Inverse document frequency of each word over the sentences as the captions use them."""
        df: dict[str, int] = {}
        uses = np.bincount(np.r_[self.flat, self.flat_mirrored], minlength=len(self.texts))
        for text, n in zip(self.texts, uses):
            for word in set(words(text)):
                df[word] = df.get(word, 0) + int(n)
        return {w: math.log(uses.sum() / n) for w, n in df.items()}


def scan(dataset: Dataset, split: EpisodeSplit, rule: HazardRule = HazardRule(), progress: bool = False) -> ClipFrames:
    """Captions, hazards and the split of every row, from the cheap columns only; refuses data that cannot
    be fine-tuned or evaluated on, before any frame is decoded."""
    shards = dataset.shards()
    if not shards:
        raise DatasetError(f"{dataset.url}: no raw episode shards (run `pipeline collect` first)")
    tables = []
    for shard in tqdm(shards, desc="reading ground truth", unit="shard", disable=not progress, leave=False):
        tables.append(dataset.read_shard(shard, [*CAPTION_COLUMNS, "policy"]))
    table = pa.concat_tables(tables)
    if pa.compute.sum(pa.compute.list_value_length(table.column("agents"))).as_py() in (None, 0):
        raise DatasetError(
            f"{dataset.url}: no frame has any agents (the simulator's ground truth), so there is nothing to caption "
            "or to evaluate against; collect with a backend that records agents"
        )
    sources = hazard_sources(table, rule)
    found = sources.kinds()
    if not found["any"].any():
        raise DatasetError(
            f"{dataset.url}: none of its {table.num_rows} frames has a hazard (a road user in the corridor, a vehicle "
            "within braking distance, a collision or leaving the road), so CLIP would learn nothing about danger; "
            "collect episodes with the random policy too"
        )
    episode_id = table.column("episode_id").to_numpy(zero_copy_only=False)
    heldout = split.heldout(episode_id, table.column("policy").to_numpy(zero_copy_only=False))
    return ClipFrames(
        dataset.url, shards, episode_id, table.column("step").to_numpy(), captions(table, rule),
        {kind: found[kind] for kind in HAZARD_KINDS}, heldout, critical_kind=sources.critical_kind(),
    )  # fmt: skip


def load_frames(dataset: Dataset, data: ClipFrames, progress: bool = False) -> ClipFrames:
    """``data`` with its BEV frames decoded, in the same row order as :func:`scan` read them."""
    frames = []
    for shard in tqdm(data.shards, desc="decoding BEV frames", unit="shard", disable=not progress, leave=False):
        column = dataset.read_shard(shard, ["bev"]).column("bev")
        frames.extend(decode_image(png) for png in column.to_pylist())
    data.frames = np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
    return data


def _digest(names: list[str]) -> str:
    return "sha256-" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
