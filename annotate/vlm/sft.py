"""Supervised fine-tuning of a VLM on gated windows and their ground-truth answers (``pipeline vlm finetune``).

Each example is the request annotation sends (annotate's messages through the model's own chat template,
:func:`~annotate.vlm.transformers_backend.chat_inputs`) followed by the target answer in the compact form
constrained decoding writes, then the end-of-turn token; the loss counts the answer tokens only. A real
model is tuned with LoRA adapters on all its linear layers (merged into the weights at the end); the tiny
base is trained whole, after a warm-up of its vision tower (:mod:`annotate.vlm.vision_warmup`), which then
stays frozen.

The run is resumable: every ``checkpoint_every`` steps the trainable weights, the optimizer and the step are
written atomically to ``OUT/train_state/``; batches are a seeded function of the step, so a resumed run
continues exactly where the killed one stopped (the vision warm-up is one unit: its tower is written when it
ends, and a run killed during it warms up again). The finished model is a plain transformers model directory
(``config.json``, safetensors weights, processor, chat template) that ``vlm.backend=transformers``,
``transformers serve`` and ``vllm serve`` load, with ``finetune.json`` written last as its record.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor

from data_schema import Dataset
from data_schema.storage import atomic_path, atomic_write_text

from annotate.config import AnnotateConfig
from annotate.model_weights import resolve_device
from annotate.vlm.answer import canonical_json
from annotate.vlm.config import VlmConfig
from annotate.vlm.prompt import build_messages, decode_frame
from annotate.vlm.sft_data import GatedWindow, gated_windows, split_episodes
from annotate.vlm.targets import TargetRule
from data_schema.risk import RiskRule
from annotate.vlm.tiny import TinyQwen3VL, build_tiny_qwen3_vl
from annotate.vlm.transformers_backend import chat_inputs
from annotate.vlm.vision_warmup import vision_tower, warm_up_vision

__all__ = ["FINETUNE_RECORD", "FinetuneConfig", "FinetuneRecord", "answer_loss", "finetune", "finetune_on_dataset", "read_record"]

#: The record of a finished fine-tune inside the model directory.
FINETUNE_RECORD = "finetune.json"
RECORD_FORMAT = "drive-vlm-rl vlm finetune"
RECORD_VERSION = 1
METHODS = ("auto", "full", "lora")
_STATE_DIR = "train_state"
_SPEC_MARKER = "spec_hash"
_VISION_TOWER = "vision_tower.safetensors"
_VISION_SCORES = "vision_warmup.json"
_IGNORE = -100


@dataclass(frozen=True)
class FinetuneConfig:
    """How the VLM is tuned.

    ``base`` is ``"tiny"`` (a small Qwen3-VL built here with random weights, see :mod:`annotate.vlm.tiny`)
    or a saved model directory. ``method`` ``auto`` trains the tiny base whole and a real model with LoRA
    (rank ``lora_rank``, scale ``lora_alpha / lora_rank``). ``learning_rate`` None picks 1e-3 for whole
    training, 2e-4 for LoRA; it warms up linearly over ``warmup_steps``, then decays on a cosine to 0 at
    ``steps``. The held-out loss is measured on ``eval_windows`` held-out windows before and after training.
    ``vision_steps`` of vision warm-up (batches of ``vision_batch_size`` windows) come first; None picks 1500
    for the tiny base, whose tower starts random, and 0 for a saved model, whose tower already reads images.
    """

    base: str = "tiny"
    method: str = "auto"
    steps: int = 3000
    batch_size: int = 8
    learning_rate: float | None = None
    warmup_steps: int = 30
    lora_rank: int = 16
    lora_alpha: float = 32.0
    holdout: float = 0.2
    seed: int = 0
    checkpoint_every: int = 100
    eval_windows: int = 128
    vision_steps: int | None = None
    vision_batch_size: int = 32
    device: str = "auto"
    tiny: TinyQwen3VL = field(default_factory=TinyQwen3VL)

    def __post_init__(self) -> None:
        checks = [
            (bool(self.base.strip()), "base", "must be 'tiny' or a model directory"),
            (self.method in METHODS, "method", f"must be one of {list(METHODS)}, got {self.method!r}"),
            (self.steps >= 1, "steps", f"must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}"),
            (self.learning_rate is None or self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}"),
            (self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}"),
            (self.lora_rank >= 1 and self.lora_alpha > 0, "lora_rank", "and lora_alpha must be positive"),
            (0 < self.holdout < 1, "holdout", f"must be a share between 0 and 1, got {self.holdout}"),
            (self.checkpoint_every >= 1, "checkpoint_every", f"must be >= 1, got {self.checkpoint_every}"),
            (self.eval_windows >= 1, "eval_windows", f"must be >= 1, got {self.eval_windows}"),
            (self.vision_steps is None or self.vision_steps >= 0, "vision_steps", f"must be >= 0, got {self.vision_steps}"),
            (self.vision_batch_size >= 1, "vision_batch_size", f"must be >= 1, got {self.vision_batch_size}"),
        ]
        for ok, name, message in checks:
            if not ok:
                raise ValueError(f"FinetuneConfig.{name} {message}")

    @property
    def uses_lora(self) -> bool:
        return self.method == "lora" or (self.method == "auto" and self.base != "tiny")

    @property
    def vision_warmup_steps(self) -> int:
        if self.vision_steps is not None:
            return self.vision_steps
        return 1500 if self.base == "tiny" else 0

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (2e-4 if self.uses_lora else 1e-3)


@dataclass(frozen=True)
class FinetuneRecord:
    """What ``finetune.json`` holds: the settings, the split, the losses and the time it took."""

    spec: dict[str, Any]
    spec_hash: str
    train_episodes: list[str]
    held_out_episodes: list[str]
    train_windows: int
    held_out_windows: int
    held_out_loss_before: float
    held_out_loss_after: float
    train_loss_last: float
    seconds: float
    created: str
    #: How well the warmed-up vision tower's probe read held-out windows (ProbeScores); None without a warm-up.
    vision_warmup: dict[str, Any] | None = None

    @property
    def request(self) -> dict[str, Any]:
        """The VLM request settings the model was tuned on (prompt, window, max_image_side)."""
        return dict(self.spec["request"])


def read_record(model_dir: str | Path) -> FinetuneRecord | None:
    """The fine-tune record of a model directory; None for a model this command did not write."""
    path = Path(model_dir) / FINETUNE_RECORD
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("format") != RECORD_FORMAT or data.get("version") != RECORD_VERSION:
        raise ValueError(f"{path}: not a {RECORD_FORMAT} record of version {RECORD_VERSION}")
    return FinetuneRecord(**{k: v for k, v in data.items() if k not in ("format", "version")})


def finetune_on_dataset(
    dataset: Dataset, out: Path, config: FinetuneConfig, settings: AnnotateConfig, progress: bool = True, log: Callable[[str], None] = print
) -> FinetuneRecord:
    """:func:`finetune` on ``dataset``'s scene-gated windows (the gate corridor and the request of
    ``settings``), its episodes split into training and held-out ones by ``config.holdout`` and ``config.seed``."""
    rule = TargetRule(risk=RiskRule(corridor=settings.gate.corridor))
    windows = gated_windows(dataset, settings.vlm.window, settings.gate.corridor, rule)
    train_ids, held_ids = split_episodes([w.episode_id for w in windows], config.holdout, config.seed)
    held_set = set(held_ids)
    train = [w for w in windows if w.episode_id not in held_set]
    held_out = [w for w in windows if w.episode_id in held_set]
    log(f"{dataset.url}: {len(windows)} gated windows; {len(train)} from {len(train_ids)} training episodes, "
        f"{len(held_out)} from {len(held_ids)} held-out episodes")  # fmt: skip
    spec = {"dataset": dataset.url, "target_rule": repr(rule), "train_episodes": train_ids, "held_out_episodes": held_ids}
    return finetune(dataset, train, held_out, out, config, settings.vlm, spec, progress=progress, log=log)


def finetune(
    dataset: Dataset,
    train: Sequence[GatedWindow],
    held_out: Sequence[GatedWindow],
    out: Path,
    config: FinetuneConfig,
    vlm: VlmConfig,
    spec: dict[str, Any],
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> FinetuneRecord:
    """Tune ``config.base`` on ``train``, measure on ``held_out``, save the model to ``out``; resume or skip
    what an earlier run with the same ``spec`` already did. ``spec`` holds everything that decides the result
    besides ``config`` and the request settings (the dataset, the split, the target rule)."""
    if not train or not held_out:
        raise ValueError(f"{dataset.url}: {len(train)} training and {len(held_out)} held-out gated windows; both are needed")
    spec = {**spec, "finetune": _jsonable(asdict(config)), "request": _request(vlm)}
    spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    done = read_record(out)
    if done is not None:
        if done.spec_hash != spec_hash:
            raise ValueError(f"{out} holds a fine-tune with other settings; choose another --out or delete it")
        log(f"{out}: already fine-tuned with these settings (held-out loss {done.held_out_loss_after:.4f})")
        return done
    state_dir = out / _STATE_DIR
    _check_state(state_dir, spec_hash)
    device = resolve_device(config.device)
    base = _base_dir(config, state_dir, train, vlm)
    processor = AutoProcessor.from_pretrained(base, local_files_only=True)
    if getattr(processor, "chat_template", None) is None:
        raise ValueError(f"{base}: the processor has no chat template")
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32, local_files_only=True).to(device)
    eval_set = _eval_sample(held_out, config.eval_windows, config.seed)
    vision_scores = _warmed_up_vision(model, processor, train, eval_set, config, vlm, state_dir, spec_hash, progress, log)
    if config.uses_lora:
        model = _with_lora(model, config)
    examples = _Examples(processor, vlm, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)

    state = _load_state(state_dir, model, optimizer)
    if state is None:
        state = {"step": 0, "held_out_loss_before": examples.loss(model, eval_set, config.batch_size), "train_losses": []}
    elif state["step"] > 0:
        log(f"resuming from step {state['step']} of {config.steps}")

    model.train()
    resumed_at, seconds_before = time.perf_counter(), state.get("seconds", 0.0)
    bar = tqdm(total=config.steps, initial=state["step"], desc="fine-tune", unit="step", disable=not progress)
    while state["step"] < config.steps:
        step = state["step"]
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        batch = examples.batch([train[i] for i in _batch_indices(len(train), config, step)])
        with _autocast(device):
            loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        state["step"] = step + 1
        state["train_losses"].append(float(loss.item()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(state['train_losses'][-20:]):.4f}")
        if state["step"] % config.checkpoint_every == 0 or state["step"] == config.steps:
            state["seconds"] = seconds_before + time.perf_counter() - resumed_at
            _save_state(state_dir, spec_hash, model, optimizer, state)
    bar.close()

    held_out_loss = examples.loss(model, eval_set, config.batch_size)
    if config.uses_lora:
        model = model.merge_and_unload()
    record = FinetuneRecord(
        spec=spec, spec_hash=spec_hash,
        train_episodes=sorted({w.episode_id for w in train}), held_out_episodes=sorted({w.episode_id for w in held_out}),
        train_windows=len(train), held_out_windows=len(held_out),
        held_out_loss_before=state["held_out_loss_before"], held_out_loss_after=held_out_loss,
        train_loss_last=float(np.mean(state["train_losses"][-20:])),
        seconds=state["seconds"],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        vision_warmup=vision_scores,
    )  # fmt: skip
    _save_model(out, model, processor, record)
    shutil.rmtree(state_dir, ignore_errors=True)
    return record


def answer_loss(model: Any, processor: Any, vlm: VlmConfig, windows: Sequence[GatedWindow], batch_size: int = 8) -> float:
    """Mean loss per answer token of ``model`` on ``windows``, with the request fine-tuning trains on: what
    tells whether a tuned model uses its frames (compare with the same windows' frames swapped)."""
    return _Examples(processor, vlm, next(model.parameters()).device).loss(model, windows, batch_size)


class _Examples:
    """Model inputs of windows: the request's tokens (no loss) then the answer's (loss)."""

    def __init__(self, processor: Any, vlm: VlmConfig, device: torch.device) -> None:
        self.processor = processor
        self.messages = build_messages(vlm)
        self.max_side = vlm.max_image_side
        self.device = device
        tokenizer = processor.tokenizer
        if tokenizer.eos_token is None or tokenizer.pad_token_id is None:
            raise ValueError("the base model's tokenizer needs an end-of-turn (eos) and a pad token")
        self.tokenizer = tokenizer

    def batch(self, windows: Sequence[GatedWindow]) -> dict[str, torch.Tensor]:
        rows: list[dict[str, torch.Tensor]] = []
        for window in windows:
            frames = [decode_frame(frame, self.max_side) for frame in window.frames]
            prompt = chat_inputs(self.processor, [self.messages], [frames])
            answer = self.tokenizer(canonical_json(window.target) + self.tokenizer.eos_token, add_special_tokens=False)
            rows.append({**prompt, "answer": torch.tensor(answer["input_ids"])})
        length = max(row["input_ids"].shape[1] + len(row["answer"]) for row in rows)
        out: dict[str, list[torch.Tensor]] = {}
        for row in rows:
            prompt_length = row["input_ids"].shape[1]
            answer = row["answer"]
            pad = length - prompt_length - len(answer)
            for key, value in row.items():
                if key == "answer":
                    continue
                if value.dim() == 2 and value.shape[1] == prompt_length:  # per-token: extend over answer and padding
                    fill = {"input_ids": answer, "attention_mask": torch.ones_like(answer)}.get(key, torch.zeros_like(answer))
                    filler = self.tokenizer.pad_token_id if key == "input_ids" else 0
                    value = torch.cat([value[0], fill.to(value.dtype), torch.full((pad,), filler, dtype=value.dtype)])
                out.setdefault(key, []).append(value)
            labels = torch.cat([torch.full((prompt_length,), _IGNORE), answer, torch.full((pad,), _IGNORE)])
            out.setdefault("labels", []).append(labels)
        return {
            key: (torch.stack(values) if values[0].dim() == 1 else torch.cat(values)).to(self.device)
            for key, values in out.items()
        }

    def loss(self, model: Any, windows: Sequence[GatedWindow], batch_size: int) -> float:
        """Mean loss per answer token over ``windows``."""
        was_training = model.training
        model.eval()
        total, tokens = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(windows), batch_size):
                batch = self.batch(windows[start : start + batch_size])
                count = int((batch["labels"][:, 1:] != _IGNORE).sum())
                with _autocast(self.device):
                    total += float(model(**batch).loss) * count
                tokens += count
        model.train(was_training)
        return total / max(tokens, 1)


def _request(vlm: VlmConfig) -> dict[str, Any]:
    return {"prompt": vlm.prompt, "window": vlm.window, "max_image_side": vlm.max_image_side}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _base_dir(config: FinetuneConfig, state_dir: Path, train: Sequence[GatedWindow], vlm: VlmConfig) -> Path:
    """The base model's directory; the tiny base is built once per run (its tokenizer learns the prompt and answers)."""
    if config.base != "tiny":
        path = Path(config.base)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--base {config.base!r} is neither 'tiny' nor a saved model directory (no config.json)")
        return path
    path = state_dir / "base"
    if not (path / "model.safetensors").is_file():
        retry = build_messages(vlm, "answer keys")[0]["content"][-1]["text"]
        corpus = [retry] + sorted({canonical_json(w.target) for w in train})
        staging = state_dir / f"base.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        build_tiny_qwen3_vl(staging, corpus, config.tiny, seed=config.seed)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(staging, path)
    return path


def _with_lora(model: Any, config: FinetuneConfig) -> Any:
    # peft is imported here: only LoRA runs need it.
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules="all-linear")
    return get_peft_model(model, lora)


def _learning_rate(config: FinetuneConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batch_indices(n: int, config: FinetuneConfig, step: int) -> list[int]:
    """The examples of ``step``: epochs are seeded permutations, so any step's batch is known without replaying."""
    per_epoch = max(1, n // config.batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([config.seed, epoch]).permutation(n)
    chosen = order[position * config.batch_size : (position + 1) * config.batch_size]
    return [int(i) for i in chosen] if len(chosen) else [int(i) for i in order[: config.batch_size]]


def _eval_sample(windows: Sequence[GatedWindow], count: int, seed: int) -> list[GatedWindow]:
    if len(windows) <= count:
        return list(windows)
    picked = np.sort(np.random.default_rng(seed).choice(len(windows), count, replace=False))
    return [windows[int(i)] for i in picked]


def _autocast(device: torch.device) -> Any:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def _warmed_up_vision(
    model: Any, processor: Any, train: Sequence[GatedWindow], eval_set: Sequence[GatedWindow], config: FinetuneConfig,
    vlm: VlmConfig, state_dir: Path, spec_hash: str, progress: bool, log: Callable[[str], None],
) -> dict[str, Any] | None:
    """Warm the vision tower up and freeze it, or load the tower an earlier run of this fine-tune warmed up;
    the probe's held-out scores, None when there is no warm-up."""  # fmt: skip
    if config.vision_warmup_steps == 0:
        return None
    tower_file, scores_file = state_dir / _VISION_TOWER, state_dir / _VISION_SCORES
    if tower_file.is_file() and scores_file.is_file():
        tower = vision_tower(model)
        tower.load_state_dict(load_file(tower_file, device=str(next(tower.parameters()).device)))
        tower.requires_grad_(False)
        return json.loads(scores_file.read_text())
    scores = warm_up_vision(
        model, processor, train, eval_set, config.vision_warmup_steps, config.vision_batch_size,
        seed=config.seed, max_side=vlm.max_image_side, progress=progress,
    ).as_dict()  # fmt: skip
    log(f"vision warm-up: {config.vision_warmup_steps} steps in {scores['seconds']:.0f} s; the tower is frozen from here")
    _mark_state(state_dir, spec_hash)
    with atomic_path(tower_file) as tmp:
        save_file({name: t.detach().cpu().contiguous() for name, t in vision_tower(model).state_dict().items()}, str(tmp))
    atomic_write_text(scores_file, json.dumps(scores))
    return scores


def _mark_state(state_dir: Path, spec_hash: str) -> None:
    """Say which settings the files in ``state_dir`` belong to, before any of them is written."""
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state_dir / _SPEC_MARKER, spec_hash)


def _check_state(state_dir: Path, spec_hash: str) -> None:
    marker = state_dir / _SPEC_MARKER
    if marker.is_file() and marker.read_text().strip() != spec_hash:
        raise ValueError(
            f"{state_dir} holds an unfinished fine-tune with other settings; rerun with those settings to resume it, "
            "or delete the directory to start over"
        )


def _trainable_state(model: Any) -> dict[str, torch.Tensor]:
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {name: t.detach().cpu() for name, t in model.state_dict().items() if name in names}


def _save_state(state_dir: Path, spec_hash: str, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    _mark_state(state_dir, spec_hash)
    payload = {"model": _trainable_state(model), "optimizer": optimizer.state_dict(), "state": state}
    with atomic_path(state_dir / "state.pt") as tmp:
        torch.save(payload, tmp)


def _load_state(state_dir: Path, model: Any, optimizer: Any) -> dict[str, Any] | None:
    path = state_dir / "state.pt"
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    missing = set(_trainable_state(model)) - set(payload["model"])
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} trainable tensors (e.g. {sorted(missing)[0]}); delete {state_dir} to start over")
    model.load_state_dict(payload["model"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    return payload["state"]


def _save_model(out: Path, model: Any, processor: Any, record: FinetuneRecord) -> None:
    """The model files into ``out`` (saved beside it, then moved in), ``finetune.json`` last."""
    staging = out / f".model.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    for item in staging.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()
    data = {"format": RECORD_FORMAT, "version": RECORD_VERSION, **asdict(record)}
    atomic_write_text(out / FINETUNE_RECORD, json.dumps(data, indent=2, sort_keys=True) + "\n")
