"""CLIP static pathway: embeddings of BEV frames and of language goals (open_clip), for cosine rewards.

The model is loaded once per process. ``model_id`` and ``weights_id`` name exactly what produced an
embedding, so callers can key image-embedding caches and label-set hashes on them; ``image_forward_calls``
and ``images_encoded`` count image-encoder work, so re-scoring with new prompts can be shown to skip it.

Words a text tower never learned are left out of the texts it encodes. A fine-tune from random weights
(``annotate.clip_finetune``) zeroes the token embeddings of every word its captions lack; such a token's
vector carries no meaning, only noise that differs from seed to seed, and its word dropout taught the text
tower to read sentences with words missing. Models with no all-zero token embedding (every pretrained one)
encode texts unchanged. Such a fine-tune also names, in its checkpoint's metadata, the views texts are read
through (``annotate.word_dropout.TextViews``); other checkpoints read texts as written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from annotate.clip_transform import ClipImageTransform
from annotate.model_weights import WeightsError, file_digest, host_reachable, resolve_device
from annotate.word_dropout import TextViews

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: open_clip architectures shipped with the pipeline (``annotate/clip_configs/*.json``). ``BEV-ViT-T-8-64``: a
#: two-layer ViT on the BEV downsampled to 64 px in 8 px patches (each patch 8 m square, as a 16 px patch of
#: the 128 px frame, but with a quarter of the pixel positions to learn a road user at), so it fine-tunes
#: from random weights in minutes on a CPU.
SHIPPED_CONFIGS = Path(__file__).parent / "clip_configs"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_OFFLINE_ADVICE = (
    "on a machine without internet, download the weights elsewhere and pass the file with "
    "--clip-checkpoint PATH (or pretrained='none' for random weights, e.g. in tests)"
)


@dataclass(frozen=True)
class ClipConfig:
    """Which CLIP to run and how.

    ``pretrained`` is an open_clip pretrained tag (downloaded on first use), a local checkpoint path
    (state dict, ``.safetensors`` or a torch file read with ``weights_only=True``), or ``none`` for random
    weights initialised from ``seed`` (reproducible, but the scores carry no meaning: for tests only).
    """

    model: str = "ViT-B-32"
    pretrained: str = "openai"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.model or not isinstance(self.model, str):
            raise ValueError("clip.model: expected an open_clip model name such as 'ViT-B-32'")
        if not self.pretrained or not isinstance(self.pretrained, str):
            raise ValueError("clip.pretrained: expected a pretrained tag, a checkpoint path, or 'none'")
        if self.precision not in PRECISIONS:
            raise ValueError(f"clip.precision: '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"clip.batch_size: expected a positive integer, got {self.batch_size!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as error:
                raise ValueError(f"clip.device: '{self.device}' is not a torch device ({error})") from None


@dataclass(frozen=True)
class _Weights:
    path: str | None  # None: random init
    tag_cfg: dict
    weights_id: str


class StaticPathway:
    """An open_clip model with batched, cache-friendly image and text encoders (L2-normalised float32).

    ``text_views`` says how texts are read; None takes them from the checkpoint (as written unless a fine-tune
    wrote views into it). Benchmarks pass ``TextViews()`` to compare with the plain reading.
    """

    def __init__(self, config: ClipConfig, text_views: TextViews | None = None) -> None:
        import open_clip

        register_shipped_models()
        self.config = config
        self.device = resolve_device(config.device)
        self._autocast_dtype = _autocast_dtype(config.precision, self.device)
        if config.model not in open_clip.list_models():
            raise ValueError(f"clip.model: unknown open_clip model '{config.model}' (see open_clip.list_models())")
        weights = _resolve_weights(config)
        # open_clip only warns when a tag was trained with QuickGELU (e.g. ViT-B-32 'openai'); run it as trained,
        # and name the architecture accordingly so its embeddings never share a cache key with plain GELU ones
        quick_gelu = bool(weights.tag_cfg.get("quick_gelu", False))
        self._model_id = config.model + ("-quickgelu" if quick_gelu and not config.model.endswith("-quickgelu") else "")
        self._weights_id = weights.weights_id
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                config.model,
                pretrained=weights.path,
                force_quick_gelu=quick_gelu,
                image_mean=weights.tag_cfg.get("mean"),
                image_std=weights.tag_cfg.get("std"),
                image_interpolation=weights.tag_cfg.get("interpolation"),
                image_resize_mode=weights.tag_cfg.get("resize_mode"),
                weights_only=True,
            )
        self.model = model.to(self.device).eval()
        self._tokenizer = open_clip.get_tokenizer(config.model)
        self._transform = ClipImageTransform(model.visual.preprocess_cfg, preprocess)
        self._unknown_tokens = unknown_tokens(model)
        self.text_views = text_views if text_views is not None else _checkpoint_text_views(weights.path)
        self.embed_dim = int(open_clip.get_model_config(config.model)["embed_dim"])
        self.image_forward_calls = 0
        self.images_encoded = 0

    @property
    def model_id(self) -> str:
        """The architecture that produced the embeddings, e.g. ``ViT-B-32``."""
        return self._model_id

    @property
    def weights_id(self) -> str:
        """``sha256-<hex>`` of the checkpoint file, or ``random-seed<N>`` for random weights."""
        return self._weights_id

    @property
    def precision_id(self) -> str:
        """The precision the encoders really run at (``auto`` resolved): ``fp32``, ``bf16`` or ``fp16``. Embeddings
        differ between them, so caches and label-set hashes are keyed on it."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self._autocast_dtype]

    @property
    def tokenizer(self):
        """open_clip's tokenizer of the model (the fine-tuner tokenises captions with it)."""
        return self._tokenizer

    @property
    def image_transform(self) -> ClipImageTransform:
        """The batch preprocessing ``encode_images`` applies (the fine-tuner feeds its training frames through it)."""
        return self._transform

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, D)`` float32 unit-norm embeddings of HxWx3 uint8 RGB frames, in input order."""
        frames = [_check_frame(image, i) for i, image in enumerate(images)]
        if not frames:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        outputs: list[torch.Tensor] = []
        order: list[int] = []
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            by_shape.setdefault(frame.shape, []).append(i)
        with torch.inference_mode(), self._autocast():
            for indices in by_shape.values():
                for start in range(0, len(indices), self.config.batch_size):
                    chunk = indices[start : start + self.config.batch_size]
                    pixels = self._transform(np.stack([frames[i] for i in chunk]), self.device)
                    outputs.append(self.model.encode_image(pixels).float())
                    order.extend(chunk)
                    self.image_forward_calls += 1
                    self.images_encoded += len(chunk)
            # one device→host copy at the end lets the CPU prepare batch k+1 while the GPU runs batch k
            embeddings = torch.nn.functional.normalize(torch.cat(outputs), dim=-1).cpu().numpy()
        result = np.empty_like(embeddings)
        result[np.asarray(order)] = embeddings
        return result

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, D)`` float32 unit-norm embeddings of language goals or VLM descriptions, read through
        :attr:`text_views`, without the words the text tower never learned (:meth:`unknown_words`)."""
        texts = list(texts)
        if any(not isinstance(text, str) for text in texts):
            raise TypeError("encode_texts: every text must be a str")
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            embeddings = read_texts(self.model, self._tokenizer, texts, self.text_views, self._unknown_tokens, self.config.batch_size, self.device)
            return embeddings.cpu().numpy()

    def unknown_words(self, text: str) -> list[str]:
        """The distinct pieces of ``text`` (words, punctuation) with a token the text tower never learned: left out
        when it is encoded."""
        if self._unknown_tokens is None:
            return []
        pieces = _pieces_with_unknown(text, self._tokenizer, self._unknown_tokens)
        return list(dict.fromkeys(piece for _, split in pieces for piece, unknown in split if unknown))

    def _autocast(self):
        if self._autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)


def read_texts(
    model: torch.nn.Module, tokenizer, texts: list[str], views: TextViews, unknown: torch.Tensor | None, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Unit embeddings of ``texts`` as the static pathway reads them (the fine-tuner's fingerprint too): through
    ``views``, each distinct copy encoded once (a short goal's 256 copies hold a few dozen distinct ones), without
    the tokens marked ``unknown``. Read through views, a text first loses its unknown pieces, so that a goal with
    a word the tower never learned has the copies of the goal without it."""
    if views.count > 1 and unknown is not None:
        texts = [without_unknown_pieces(text, tokenizer, unknown) for text in texts]
    index: dict[str, int] = {}
    copies = torch.tensor([index.setdefault(copy, len(index)) for copy in views.expand(texts)])
    distinct = list(index)
    outputs = []
    for start in range(0, len(distinct), batch_size):
        tokens = without_unknown_tokens(tokenizer(distinct[start : start + batch_size]), unknown)
        outputs.append(model.encode_text(tokens.to(device)).float())
    return views.pool(torch.nn.functional.normalize(torch.cat(outputs), dim=-1), copies)


def without_unknown_pieces(text: str, tokenizer, unknown: torch.Tensor) -> str:
    """``text`` without its pieces that hold a token marked ``unknown`` (:func:`_pieces_with_unknown`):
    "(accidents)" keeps "( )", spaced so that they tokenise as before."""
    kept = []
    for word, split in _pieces_with_unknown(text, tokenizer, unknown):
        kept.extend([piece for piece, left_out in split if not left_out] if any(left_out for _, left_out in split) else [word])
    return " ".join(kept)


def _pieces_with_unknown(text: str, tokenizer, unknown: torch.Tensor) -> list[tuple[str, list[tuple[str, bool]]]]:
    """Per whitespace word of ``text``, the pieces open_clip's tokenizer splits it into (letters, a digit,
    punctuation; the whole word for tokenizers without that pre-split), each with whether it holds a token
    marked ``unknown``."""
    pattern, encode = getattr(tokenizer, "pat", None), getattr(tokenizer, "encode", None)
    words = [(word, pattern.findall(word) if pattern is not None else [word]) for word in text.split()]
    distinct = sorted({piece for _, split in words for piece in split})
    if encode is not None:
        flags = {piece: bool(unknown[encode(piece)].any()) for piece in distinct}
    else:  # a Hugging Face tokenizer: whole words, padded; its special tokens are in every training sentence
        flags = dict(zip(distinct, unknown[tokenizer(distinct)].any(dim=1).tolist())) if distinct else {}
    return [(word, [(piece, flags[piece]) for piece in split]) for word, split in words]


def token_embedding(model: torch.nn.Module) -> torch.nn.Embedding | None:
    """The token embedding table of an open_clip text transformer; None for other text towers (Hugging Face)."""
    for owner in (model, getattr(model, "text", None)):
        table = getattr(owner, "token_embedding", None)
        if isinstance(table, torch.nn.Embedding):
            return table
    return None


def unknown_tokens(model: torch.nn.Module) -> torch.Tensor | None:
    """Per token id, whether its embedding is all zero (a word a fine-tune never saw); None where none is."""
    table = token_embedding(model)
    if table is None:
        return None
    unknown = ~table.weight.detach().any(dim=1).cpu()
    return unknown if unknown.any() else None


def without_unknown_tokens(tokens: torch.Tensor, unknown: torch.Tensor | None) -> torch.Tensor:
    """``tokens`` (N, context) without those ``unknown`` marks, the rest moved up in order and padded with 0."""
    if unknown is None:
        return tokens
    keep = ~unknown[tokens]
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    return tokens.gather(1, order).masked_fill(~keep.gather(1, order), 0)


def _checkpoint_text_views(path: str | None) -> TextViews:
    """The text views a safetensors checkpoint's metadata names; as written for anything else."""
    if path is None or Path(path).suffix != ".safetensors":
        return TextViews()
    from safetensors import safe_open

    with safe_open(path, framework="pt") as checkpoint:
        metadata = checkpoint.metadata()
    try:
        return TextViews.from_metadata(metadata, path)
    except ValueError as error:
        raise WeightsError(str(error)) from None


def register_shipped_models() -> None:
    """Make the shipped architectures known to open_clip (idempotent)."""
    import open_clip  # heavy: imported only where a model is built

    if not set(_shipped_names()) <= set(open_clip.list_models()):
        open_clip.add_model_config(SHIPPED_CONFIGS)


def _shipped_names() -> list[str]:
    return [path.stem for path in SHIPPED_CONFIGS.glob("*.json")]


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None means plain fp32; ``auto`` is bf16 (or fp16 where unsupported) on CUDA and fp32 elsewhere."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _check_frame(image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"encode_images: image {index} must be HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
    return image


def _resolve_weights(config: ClipConfig) -> _Weights:
    """Turn ``pretrained`` into a local file (or None for random init) and its content id."""
    import open_clip

    if config.pretrained == "none":
        log.warning(
            "CLIP %s runs with RANDOM weights (pretrained='none', seed %d): similarity scores and rewards carry "
            "no semantic meaning; use them for tests and benchmarks, or as the start of `pipeline clip finetune`",
            config.model,
            config.seed,
        )
        return _Weights(None, {}, f"random-seed{config.seed}")
    path = Path(config.pretrained).expanduser()
    if path.is_file():
        return _Weights(str(path), {}, file_digest(path))
    tag_cfg = open_clip.get_pretrained_cfg(config.model, config.pretrained)
    if not tag_cfg:
        if os.sep in config.pretrained or path.suffix in _CHECKPOINT_SUFFIXES:
            raise WeightsError(f"CLIP checkpoint not found: {path} (clip.pretrained / --clip-checkpoint)")
        known = ", ".join(open_clip.list_pretrained_tags_by_model(config.model)) or "none"
        raise WeightsError(
            f"clip.pretrained: '{config.pretrained}' is neither a pretrained tag of {config.model} "
            f"(known: {known}) nor an existing checkpoint file"
        )
    local = _download_tag(config, dict(tag_cfg))
    return _Weights(local, dict(tag_cfg), file_digest(local))


def _download_tag(config: ClipConfig, tag_cfg: dict) -> str:
    """The local file of a pretrained tag: from the download cache, else downloaded if the host answers."""
    import open_clip

    cached = _cached_tag_file(tag_cfg)
    if cached:
        return cached
    host = urlparse(_tag_endpoint(tag_cfg)).hostname or ""
    what = f"open_clip weights '{config.pretrained}' for {config.model}"
    if tag_cfg.get("hf_hub") and _hf_offline():
        raise WeightsError(f"cannot download {what}: HF_HUB_OFFLINE is set and they are not cached; {_OFFLINE_ADVICE}")
    if not host_reachable(host):
        raise WeightsError(f"cannot download {what}: {host} is unreachable; {_OFFLINE_ADVICE}")
    try:
        return open_clip.download_pretrained(tag_cfg)
    except Exception as error:  # noqa: BLE001 - hub and HTTP clients raise many types; all mean "not here"
        raise WeightsError(f"cannot download {what}: {error}; {_OFFLINE_ADVICE}") from error


def _tag_endpoint(tag_cfg: dict) -> str:
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import constants

        return constants.ENDPOINT
    return tag_cfg.get("url", "")


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cached_tag_file(tag_cfg: dict) -> str | None:
    """The tag's weights if an earlier download left them in open_clip's caches (no network access)."""
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else filename.rsplit(".", 1)[0] + ".safetensors"
        for name in (safe, filename):
            found = try_to_load_from_cache(repo_id, name)
            if isinstance(found, str):
                return found
        return None
    url = tag_cfg.get("url", "")
    target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    return str(target) if url and target.is_file() else None
