"""Contrastive fine-tuning of an open_clip model on a dataset's BEV frames and their ground-truth captions.

Zero-shot CLIP reads a schematic bird's-eye view poorly, and without internet only random weights exist; so
the static pathway is taught the dataset's own pictures (Found-RL fine-tunes CLIP on driving data for the
same reason). The model is built exactly as the static pathway builds it (``StaticPathway``: same
architecture, weights resolution and preprocessing), trained with open_clip's own ``ClipLoss`` on
(frame, caption) pairs of the training episodes, and written as a safetensors state dict that
``pipeline annotate --clip-checkpoint`` loads, with a card (JSON) saying what it is and how it scores on the
held-out episodes.

Each epoch draws as many samples as there are training frames, ``hazard_share`` of them from frames with a
hazard (dangerous frames are a minority, and which of them a caption describes is what the static pathway
must learn). Each sample's text is one sentence of its frame's caption (the static pathway's language goals
are single sentences), drawn anew every epoch, leaving out the ego's speed, which a single frame does not
show, and by default the road users that are no hazard; half its words are dropped, common ones first, so that
a new phrasing of a language goal is read by its telling words. From random weights, the words no caption uses
keep an all-zero token embedding, which the static pathway reads as a word to leave out, and the checkpoint's
metadata names the views texts are read through (``annotate.word_dropout.TextViews``): the mean embedding of
copies with most words dropped, which rests on what the words mean rather than on an order of them that the
text tower reads differently from seed to seed. After every epoch the
model, optimiser and schedule are saved atomically; rerunning the same command resumes after the last
complete epoch, and a finished run is not redone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from annotate.captions import CONTEXT_SLOTS, TEMPLATE_VERSION, TEMPLATES, template_hash
from annotate.clip_data import ClipFrames, EpisodeSplit, SentencePool, load_frames, scan
from annotate.clip_eval import BEV_PROMPTS, DEFAULT_PROMPTS, PromptPair, evaluate_clip
from annotate.model_weights import WeightsError
from annotate.static_pathway import ClipConfig, StaticPathway, read_texts, token_embedding, unknown_tokens
from annotate.word_dropout import TextViews
from data_schema.dataset import Dataset
from data_schema.errors import DatasetError
from data_schema.groundtruth import HazardRule
from data_schema.storage import atomic_path, atomic_write_text

__all__ = [
    "CARD_FILE", "CHECKPOINT_FILE", "DEFAULT_MODEL", "RANDOM_INIT_TEXT_VIEWS", "FinetuneConfig", "finetune", "read_card", "static_pathway_settings",
]

#: The shipped architecture for BEV frames, downsampled to 64 px (``annotate/clip_configs``).
DEFAULT_MODEL = "BEV-ViT-T-8-64"
CHECKPOINT_FILE = "model.safetensors"
CARD_FILE = "card.json"
STATE_FILE = "train_state.pt"
CARD_FORMAT = "drive-vlm-rl/clip-card"
#: Held-out frames whose embeddings the card keeps, and how closely a loaded checkpoint must reproduce them.
FINGERPRINT_FRAMES = 8
FINGERPRINT_ATOL = 1e-5
FINGERPRINT_TEXT_BATCH = 256
#: Seeds the draw of the held-out frames' sentences, apart from every epoch's draw.
HELDOUT_DRAW = 2**31 - 1
#: Settings that only say how to compute: a resumed run may change them.
EXECUTION_SETTINGS = ("device", "threads")
#: Text views of a fine-tune from random weights (``text_views`` None), and the share of words each drops. With
#: them, every unseen phrasing of ``bench.clip`` ranks danger at AUROC 0.85 or better on its held-out set at each
#: of fine-tune seeds 0-7 (the worst pair per seed 0.88-0.93, against 0.44-0.89 with texts as written; issue 12).
RANDOM_INIT_TEXT_VIEWS = 256
TEXT_VIEW_DROPOUT = 0.8
#: Settings added after the first cards were written, with the value that reproduces what those cards trained.
LATER_SETTINGS = {"word_dropout": 0.0, "text_views": 1, "text_view_dropout": 0.0}


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of ``pipeline clip finetune``.

    * ``model``: open_clip architecture (``open_clip.list_models()`` or a shipped one, ``BEV-ViT-T-8-64``);
    * ``init``: initial weights: a pretrained tag of ``model`` (downloaded on first use), a checkpoint file,
      or ``none`` (random weights from ``seed``: what exists without internet);
    * ``epochs``, ``batch_size`` (pairs per contrastive batch), ``lr`` (peak AdamW learning rate, reached after
      ``warmup_share`` of the steps, then cosine decay to 0), ``weight_decay`` (not on gains, biases, logit scale);
    * ``hazard_share``: share of each epoch's samples drawn from frames with a hazard; None keeps the data's own;
    * ``leave_out``: caption slots left out of the training text (``annotate.captions.CONTEXT_SLOTS``);
    * ``word_dropout``: share of each training sentence's words dropped, the common ones more often than the rare
      (``annotate.word_dropout.drop_words``), so that the text tower learns what the telling words mean rather than
      the templates' syntax and language goals phrased anew land by their words (0 keeps whole sentences);
    * ``text_views`` and ``text_view_dropout``: the static pathway reads a text as the mean embedding of
      ``text_views`` copies with each word dropped with probability ``text_view_dropout``
      (``annotate.word_dropout.TextViews``; written into the checkpoint, so annotate reads texts as the card was
      evaluated); 1 reads texts as written, whatever the dropout. None: ``RANDOM_INIT_TEXT_VIEWS`` from random
      weights, whose text tower knows only the templates' sentences, and 1 from pretrained weights, which read
      language (and whose larger text towers make each view costly);
    * ``mirror``: mirror half the samples left to right, the frame and the sides its sentence names (a mirrored
      town is as valid a scene, and it doubles what a small dataset shows);
    * ``heldout_share`` and ``seed``: the episode split (``annotate.clip_data.EpisodeSplit``); ``seed`` also
      seeds random weights and the sample order;
    * ``device``, ``threads`` (torch CPU threads): execution only.
    """

    model: str = DEFAULT_MODEL
    init: str = "none"
    epochs: int = 10  # from random weights the held-out AUROC still rises from 3 (0.80) to 10 epochs (0.93): bench.clip
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_share: float = 0.1
    hazard_share: float | None = 0.4
    leave_out: tuple[str, ...] = CONTEXT_SLOTS
    word_dropout: float = 0.5
    text_views: int | None = None
    text_view_dropout: float = TEXT_VIEW_DROPOUT
    mirror: bool = True
    heldout_share: float = 0.2
    seed: int = 0
    device: str = "auto"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"epochs must be >= 1 and batch_size >= 2 (a contrastive batch), got {self.epochs} / {self.batch_size}")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.warmup_share < 1):
            raise ValueError(f"lr must be > 0, weight_decay >= 0, warmup_share in [0, 1); got {self.lr} / {self.weight_decay} / {self.warmup_share}")
        if self.hazard_share is not None and not 0 < self.hazard_share < 1:
            raise ValueError(f"hazard_share must be within (0, 1) or None, got {self.hazard_share}")
        object.__setattr__(self, "leave_out", tuple(self.leave_out))
        unknown = sorted(set(self.leave_out) - set(TEMPLATES))
        if unknown:
            raise ValueError(f"leave_out: unknown caption slot(s) {unknown}; slots are {', '.join(TEMPLATES)}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be within [0, 1), got {self.word_dropout}")
        try:
            self.views
        except ValueError as error:
            raise ValueError(f"text_views / text_view_dropout: {error}") from None
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        EpisodeSplit(self.heldout_share, self.seed)

    @property
    def views(self) -> TextViews:
        """How the fine-tuned static pathway reads texts (one view, the text as written, has no dropout)."""
        count = self.text_views if self.text_views is not None else RANDOM_INIT_TEXT_VIEWS if self.init == "none" else 1
        return TextViews(count, self.text_view_dropout if count > 1 else 0.0)

    def settings(self) -> dict[str, Any]:
        """What decides the checkpoint and its card (and the resume check): everything but execution settings,
        the text views as resolved."""
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items() if k not in EXECUTION_SETTINGS}
        return {**settings, "text_views": self.views.count, "text_view_dropout": self.views.dropout}


def read_card(path: str | Path) -> dict[str, Any]:
    """A card written by :func:`finetune`; an error names the file when it is not one."""
    path = Path(path)
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the CLIP card ({error})") from error
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise DatasetError(f"{path}: not a CLIP card written by `pipeline clip finetune`")
    return card


def static_pathway_settings(out_dir: str | Path, prompts: PromptPair = BEV_PROMPTS) -> tuple[str, ...]:
    """The annotate settings that use the finished fine-tune in ``out_dir``: its model and checkpoint, the
    language goals ``prompts`` (a pair its card was evaluated on: the VLM-RL defaults can rank danger backwards
    after a fine-tune whose captions never use their words) and the theta range the card derived for them from
    the held-out scores, or the default range when those scores do not rank danger."""
    out = Path(out_dir)
    card = read_card(out / CARD_FILE)
    evaluated = card["heldout"]["prompts"]
    if prompts.name not in evaluated:
        raise DatasetError(f"{out / CARD_FILE}: prompts {prompts.name!r} were not evaluated; the card has {sorted(evaluated)}")
    settings = (
        f"clip.model={card['model']}", f"clip.pretrained={out / CHECKPOINT_FILE}",
        f"prompts.positive={prompts.positive}", f"prompts.negative={prompts.negative}",
    )  # fmt: skip
    theta = evaluated[prompts.name]["theta"]
    if theta is None:
        return settings
    return (*settings, f"reward.theta_min={theta['theta_min']!r}", f"reward.theta_max={theta['theta_max']!r}")


def finetune(dataset: str, out_dir: str | Path, config: FinetuneConfig = FinetuneConfig(), progress: bool = True) -> dict[str, Any]:
    """Fine-tune on ``dataset`` into ``out_dir`` (``model.safetensors``, ``card.json``); returns the card."""
    torch.set_num_threads(config.threads)
    out = Path(out_dir)
    card_path = out / CARD_FILE
    if card_path.is_file():
        card = read_card(card_path)
        if _settings_as_now(card["settings"]) == config.settings() and (out / CHECKPOINT_FILE).is_file():
            return card  # finished under the same settings: nothing to redo
        raise DatasetError(f"{out}: holds a finished fine-tune with other settings; choose another --out or remove it")
    # checks before any work: the initial weights, then the data (cheap columns only)
    pathway = _initial_pathway(config)
    ds = Dataset.open(dataset)
    data = scan(ds, EpisodeSplit(config.heldout_share, config.seed), progress=progress)
    _check_split(data)
    state = _load_state(out, config, data)
    load_frames(ds, data, progress=progress)

    import open_clip  # heavy: loaded when a fine-tune runs, not when annotate is imported

    model, tokenizer, transform = pathway.model, pathway.tokenizer, pathway.image_transform
    device = pathway.device
    resized = transform.resize(data.frames)
    pixels = (lambda rows: transform.normalise_resized(resized[rows], device)) if resized is not None else (lambda rows: transform(data.frames[rows], device))
    sentences = SentencePool.of(data.captions, tokenizer, config.leave_out)
    if config.init == "none":
        _zero_unused_words(model, sentences.tokens[sentences.sentence_ids(data.train)])
    heldout_texts = sentences.draw(data.test, np.random.default_rng([config.seed, HELDOUT_DRAW]))  # the same every epoch
    optimizer = _optimizer(model, config, device)
    steps_per_epoch = len(data.train) // config.batch_size
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config.warmup_share, steps_per_epoch * config.epochs))
    loss_fn = open_clip.ClipLoss()
    history = {"train_loss": [], "heldout_loss": [], "seconds": [], "samples": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
    else:
        history["heldout_loss"].append(_heldout_loss(model, loss_fn, pixels, heldout_texts, data.test, config.batch_size, device))
    first_epoch = len(history["train_loss"])

    bar = tqdm(total=steps_per_epoch * config.epochs, initial=steps_per_epoch * first_epoch, desc="fine-tuning CLIP", unit="batch", disable=not progress, dynamic_ncols=True)
    for epoch in range(first_epoch, config.epochs):
        started = time.perf_counter()
        order = epoch_order(data, config, epoch)
        draw = np.random.default_rng([config.seed, epoch, 1])
        model.train()
        losses = []
        for start in range(0, steps_per_epoch * config.batch_size, config.batch_size):
            rows = order[start : start + config.batch_size]
            images, mirrored = pixels(rows), None
            if config.mirror:
                mirrored = draw.random(len(rows)) < 0.5
                images = torch.where(torch.from_numpy(mirrored).to(device).view(-1, 1, 1, 1), images.flip(-1), images)
            image, text, scale = model(images, sentences.draw(rows, draw, mirrored, config.word_dropout).to(device))
            loss = loss_fn(image, text, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():  # CLIP's clamp: a temperature below 1/100 destabilises training
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
        history["train_loss"].append(float(np.mean(losses)))
        history["heldout_loss"].append(_heldout_loss(model, loss_fn, pixels, heldout_texts, data.test, config.batch_size, device))
        history["seconds"].append(time.perf_counter() - started)
        history["samples"] += len(losses) * config.batch_size
        _save_state(out, config, data, model, optimizer, scheduler, history)
    bar.close()

    checkpoint = out / CHECKPOINT_FILE
    with atomic_path(checkpoint) as tmp:
        save_file({name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}, str(tmp), metadata=config.views.metadata())
    fingerprint = _fingerprint(model, tokenizer, pixels, data, device, config.views)
    card = _card(pathway, config, data, history, fingerprint, _evaluate_checkpoint(pathway, checkpoint, data, fingerprint, config))
    atomic_write_text(card_path, json.dumps(card, indent=2))
    (out / STATE_FILE).unlink(missing_ok=True)  # the checkpoint and card now say all of it
    return card


def epoch_order(data: ClipFrames, config: FinetuneConfig, epoch: int) -> np.ndarray:
    """The training rows of one epoch, in order: as many as there are training frames, ``hazard_share`` of
    them from frames with a hazard (drawn with replacement when there are fewer), seeded by seed and epoch."""
    rng = np.random.default_rng([config.seed, epoch])
    train = data.train
    if config.hazard_share is None:
        return rng.permutation(train)
    danger = data.hazards["any"][train]
    hazard_rows, safe_rows = train[danger], train[~danger]
    n_hazard = int(round(config.hazard_share * len(train)))
    n_safe = len(train) - n_hazard
    chosen = np.concatenate([
        rng.choice(hazard_rows, n_hazard, replace=n_hazard > len(hazard_rows)),
        rng.choice(safe_rows, n_safe, replace=n_safe > len(safe_rows)),
    ])  # fmt: skip
    return rng.permutation(chosen)


def _initial_pathway(config: FinetuneConfig) -> StaticPathway:
    """The model to start from, built as annotate builds it; a bad --init fails here, before any data is read."""
    try:
        clip = ClipConfig(model=config.model, pretrained=config.init, device=config.device, precision="fp32", batch_size=256, seed=config.seed)
    except ValueError as error:
        raise WeightsError(str(error)) from None
    try:
        return StaticPathway(clip)
    except WeightsError as error:
        raise WeightsError(f"--init {config.init!r}: {error}") from None


def _check_split(data: ClipFrames) -> None:
    for side, rows in (("training", data.train), ("held-out", data.test)):
        danger = data.hazards["any"][rows]
        if len(rows) == 0 or not danger.any() or danger.all():
            raise DatasetError(
                f"{data.dataset}: the {side} episodes hold {len(rows)} frames, {int(danger.sum())} with a hazard; both sides "
                "need frames with and without one (collect more episodes, expert and random, or change --heldout-share)"
            )


@torch.no_grad()
def _zero_unused_words(model: torch.nn.Module, tokens: torch.Tensor) -> None:
    """Zero the random token embeddings of the words the training captions never use (``tokens``: theirs); a word
    only the held-out episodes use would never be trained either. They get no gradient, so they stay
    zero (the static pathway then leaves those words out of its texts); left random, they would carry noise
    that differs from seed to seed into every language goal that names one."""
    table = token_embedding(model)
    if table is not None:
        unused = torch.ones(table.num_embeddings, dtype=torch.bool)
        unused[tokens.unique()] = False
        table.weight[unused.to(table.weight.device)] = 0.0


def _optimizer(model: torch.nn.Module, config: FinetuneConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only, as open_clip trains (gains, biases and the logit
    scale are left alone); the fused kernel where torch has one for the device."""
    decay, rest = [], []
    for name, parameter in model.named_parameters():
        (decay if parameter.ndim >= 2 and "logit_scale" not in name else rest).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, fused=device.type in ("cpu", "cuda"))


def _warmup_cosine(warmup_share: float, total_steps: int):
    warmup = max(int(warmup_share * total_steps), 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(total_steps - warmup, 1), 1.0)))

    return factor


@torch.no_grad()
def _heldout_loss(model, loss_fn, pixels, texts: torch.Tensor, rows: np.ndarray, batch_size: int, device: torch.device) -> float:
    """Mean contrastive loss over the held-out frames (``texts``: one sentence each) in fixed batches:
    comparable from epoch to epoch."""
    model.eval()
    losses, weights = [], []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        if len(batch) < 2:
            continue
        image, text, scale = model(pixels(batch), texts[start : start + batch_size].to(device))
        losses.append(loss_fn(image, text, scale).item())
        weights.append(len(batch))
    return float(np.average(losses, weights=weights))


def _settings_as_now(recorded: dict[str, Any]) -> dict[str, Any]:
    """Settings a card or train state recorded, those added since read as the value such runs used."""
    return {**LATER_SETTINGS, **recorded}


def _state_identity(config: FinetuneConfig, data: ClipFrames) -> dict[str, Any]:
    return {"settings": config.settings(), "data": data.identity()["shards_hash"], "templates": template_hash()}


def _load_state(out: Path, config: FinetuneConfig, data: ClipFrames) -> dict[str, Any] | None:
    """The last complete epoch's state of an interrupted run in ``out`` with the same settings, or None."""
    path = out / STATE_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    identity = state.get("identity", {})
    if {**identity, "settings": _settings_as_now(identity.get("settings", {}))} != _state_identity(config, data):
        raise DatasetError(
            f"{path}: an interrupted fine-tune with other settings or data is here; rerun it with its own settings, "
            "choose another --out, or remove the file to start afresh"
        )
    return state


def _save_state(out: Path, config, data, model, optimizer, scheduler, history) -> None:
    state = {
        "identity": _state_identity(config, data), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "history": history,
    }  # fmt: skip
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save(state, tmp)


@torch.no_grad()
def _fingerprint(model, tokenizer, pixels, data: ClipFrames, device: torch.device, views: TextViews) -> dict[str, Any]:
    """Embeddings the trained model gives a few held-out frames and the demo's prompts (read through ``views``):
    the checkpoint, loaded as annotate loads it, must reproduce them (checked before the card is written)."""
    model.eval()
    rows = data.test[:: max(len(data.test) // FINGERPRINT_FRAMES, 1)][:FINGERPRINT_FRAMES]
    texts = [BEV_PROMPTS.positive, BEV_PROMPTS.negative]
    images = torch.nn.functional.normalize(model.encode_image(pixels(rows)).float(), dim=-1)
    prompts = read_texts(model, tokenizer, texts, views, unknown_tokens(model), FINGERPRINT_TEXT_BATCH, device)  # as annotate reads them
    return {
        "frames": [[str(data.episode_id[r]), int(data.step[r])] for r in rows], "image_embeddings": images.cpu().tolist(),
        "texts": texts, "text_embeddings": prompts.cpu().tolist(),
    }  # fmt: skip


def _evaluate_checkpoint(pathway: StaticPathway, checkpoint: Path, data: ClipFrames, fingerprint: dict, config: FinetuneConfig) -> dict[str, Any]:
    """Held-out metrics of the checkpoint as ``annotate`` loads it (in fp32, as trained), so the card reports
    what labels will see; first, that it reproduces the trained model's embeddings."""
    loaded = StaticPathway(dataclasses.replace(pathway.config, model=pathway.model_id, pretrained=str(checkpoint)))
    rows = [int(np.flatnonzero((data.episode_id == e) & (data.step == s))[0]) for e, s in fingerprint["frames"]]
    for got, want, what in (
        (loaded.encode_images(list(data.frames[rows])), fingerprint["image_embeddings"], "image"),
        (loaded.encode_texts(fingerprint["texts"]), fingerprint["text_embeddings"], "text"),
    ):
        gap = float(np.max(np.abs(got - np.asarray(want, np.float32))))
        if gap > FINGERPRINT_ATOL:
            raise RuntimeError(f"{checkpoint}: loaded as annotate loads it, its {what} embeddings differ from the trained model's by {gap:.2e}")
    return evaluate_clip(loaded, data, data.test, DEFAULT_PROMPTS, config.seed).summary


def _card(pathway: StaticPathway, config: FinetuneConfig, data: ClipFrames, history: dict, fingerprint: dict, heldout: dict) -> dict[str, Any]:
    seconds = float(sum(history["seconds"]))
    return {
        "format": CARD_FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": pathway.model_id,
        "checkpoint": CHECKPOINT_FILE,
        "init": {"pretrained": config.init, "weights_id": pathway.weights_id},
        "dataset": data.identity(),
        "captions": {"template_version": TEMPLATE_VERSION, "template_hash": template_hash(), "hazard_rule": repr(HazardRule())},
        "settings": config.settings(),
        "training": {
            "epochs": len(history["train_loss"]), "samples": history["samples"], "seconds": seconds,
            "samples_per_s": history["samples"] / seconds if seconds else None, "device": str(pathway.device), "threads": config.threads,
            "train_loss": history["train_loss"], "heldout_loss": history["heldout_loss"],
        },
        "heldout": heldout,
        "fingerprint": fingerprint,
    }  # fmt: skip
