"""Word dropout: how a fine-tune's training sentences lose words, and how a text tower trained so reads a text.

A text tower fine-tuned from random weights on a few caption templates learns what the telling words mean only
if it cannot lean on the templates' syntax, so the fine-tuner drops words from every training sentence
(:func:`drop_words`). Such a tower still reads a sentence it never saw, a language goal phrased anew, through
its word order, and that reading drifts from seed to seed and epoch to epoch while its reading of words does
not. :class:`TextViews` reads a text as the mean embedding of many copies with words dropped at random: the
expectation over which words survive, which rests on the words rather than on one order of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DRAW_VERSION", "TextViews", "drop_words", "words"]

#: Keys of the safetensors metadata a fine-tune writes its :class:`TextViews` under, and the version of how copies
#: are drawn: a checkpoint's file hash names its weights in label-set specs, so a change to the draw must come
#: with a new version, never change the embeddings of a checkpoint already written.
_COUNT_KEY = "text_views"
_DROPOUT_KEY = "text_view_dropout"
_DRAW_KEY = "text_view_draw"
DRAW_VERSION = "1"


def drop_words(text: str, p: float, rng: np.random.Generator, idf: Mapping[str, float]) -> str:
    """``text`` with about ``p`` of its words dropped, the common ones (low ``idf``) more often than the rare, as in
    UDA's TF-IDF word replacement: the sentence's rarest word stays, and one word survives if all would go.

    A text tower trained from random weights on a few templates otherwise keys on their syntax ("The car is
    ..." begins the sentences of crashes) rather than on the words that carry meaning ("clear", "cyclist"), and
    a new sentence built from those words lands by its syntax. Words of equal ``idf`` (or none known) are
    dropped with probability ``p`` each."""
    split = text.split()
    if not split:
        return text
    weight = np.array([idf.get(w, 0.0) for w in words(text)])
    gap = weight.max() - weight
    probs = np.minimum(p * gap / gap.mean(), 1.0) if gap.mean() > 0 else np.full(len(split), p)
    return " ".join(w for w, keep in zip(split, _kept(probs, rng)) if keep)


def _kept(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Which words stay when each goes with its probability: at least one."""
    kept = rng.random(len(probs)) >= probs
    if not kept.any():
        kept[rng.integers(len(probs))] = True
    return kept


def words(text: str) -> list[str]:
    """The lower-case words of ``text``, punctuation stripped."""
    return [w.strip(".,;:!?").lower() for w in text.split()]


@dataclass(frozen=True)
class TextViews:
    """How texts are read: as written (``count`` 1), or as the normalised mean of the unit embeddings of ``count``
    copies with each word dropped with probability ``dropout``.

    The copies of a text are a pure function of its words (seeded by a digest of them, lower-cased as the
    tokenizer reads them), so a text embeds the same alone, in any batch and on any machine. A fine-tune writes
    its views into the checkpoint's metadata (:meth:`metadata`); the static pathway reads them back
    (:meth:`from_metadata`), so a checkpoint is always read as it was evaluated, and its file hash, which names
    the weights in label-set specs, covers them.
    """

    count: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"text views: count must be a positive integer, got {self.count!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"text views: dropout must be within [0, 1), got {self.dropout!r}")
        if (self.count == 1) != (self.dropout == 0.0):
            raise ValueError(f"text views: one view reads the text as written (dropout 0), more need a dropout; got {self.count} / {self.dropout}")

    def expand(self, texts: list[str]) -> list[str]:
        """Each text's ``count`` copies, text by text (the texts themselves when read as written)."""
        if self.count == 1:
            return list(texts)
        return [view for text in texts for view in self._views(text)]

    def pool(self, distinct: torch.Tensor, copies: torch.Tensor) -> torch.Tensor:
        """Unit embeddings of the texts from the unit embeddings of the ``distinct`` copies, where ``copies[i]`` is
        the row of the :meth:`expand` copy ``i``: a sparse sum, so the copies are never gathered (a text of 25
        words has nearly as many distinct copies as ``count``)."""
        copies = copies.to(distinct.device)
        if self.count == 1:
            return distinct[copies]
        texts = torch.arange(len(copies), device=distinct.device) // self.count
        ones = torch.ones(len(copies), dtype=distinct.dtype, device=distinct.device)
        shape = (len(copies) // self.count, len(distinct))
        counts = torch.sparse_coo_tensor(torch.stack([texts, copies]), ones, shape, check_invariants=False)  # valid by construction
        return torch.nn.functional.normalize(torch.sparse.mm(counts, distinct), dim=-1)

    def metadata(self) -> dict[str, str]:
        """Safetensors metadata (strings) that :meth:`from_metadata` reads back."""
        return {_COUNT_KEY: str(self.count), _DROPOUT_KEY: repr(self.dropout), _DRAW_KEY: DRAW_VERSION}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str] | None, source: str) -> TextViews:
        """The views a checkpoint's metadata names; as written when it names none (every pretrained checkpoint)."""
        if not metadata or _COUNT_KEY not in metadata:
            return cls()
        if metadata.get(_DRAW_KEY) != DRAW_VERSION:
            raise ValueError(f"{source}: text views drawn by version {metadata.get(_DRAW_KEY)!r}, this code draws version {DRAW_VERSION!r}")
        try:
            return cls(int(metadata[_COUNT_KEY]), float(metadata.get(_DROPOUT_KEY, "0.0")))
        except ValueError as error:
            raise ValueError(f"{source}: bad text views in the checkpoint's metadata {dict(metadata)}: {error}") from None

    def _views(self, text: str) -> list[str]:
        split = text.split()
        if not split:
            return [text] * self.count
        seed = int.from_bytes(hashlib.blake2b(" ".join(split).lower().encode(), digest_size=8).digest(), "little")
        rng = np.random.default_rng(seed)
        probs = np.full(len(split), self.dropout)
        return [" ".join(w for w, keep in zip(split, _kept(probs, rng)) if keep) for _ in range(self.count)]
