"""A local image-text-to-text model (Qwen3-VL by default) through transformers: works on CPU.

Weights are loaded from a directory only (``local_files_only``): a run never downloads from a hub.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from annotate.model_weights import resolve_device
from annotate.vlm.answer import VlmAnswer
from annotate.vlm.backend import ConfiguredVlm, Reply, assess_with_retries
from annotate.vlm.config import VlmConfig
from annotate.vlm.prompt import check_windows, decode_frame


class TransformersVlm(ConfiguredVlm):
    """Batched greedy (or seeded sampled) generation with the model's own processor and chat template."""

    def __init__(self, config: VlmConfig) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(config.model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"VlmConfig.model: {config.model!r} is not a saved model directory (no config.json); "
                "the transformers backend loads weights by path and never downloads"
            )
        self.config = config
        self._torch = torch
        self._device = resolve_device(config.device)
        dtype = torch.float32 if self._device.type == "cpu" else torch.bfloat16
        self._processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        if getattr(self._processor, "chat_template", None) is None:
            raise ValueError(f"VlmConfig.model: the processor in {path} has no chat template")
        self._processor.tokenizer.padding_side = "left"
        self._model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, local_files_only=True)
        self._model.to(self._device).eval()
        self._generation_config = _generation_config(self._model.generation_config, config)
        # One generate at a time: worker threads share this model, and seeding uses torch's global RNG.
        self._lock = threading.Lock()

    def assess(self, windows: Sequence[Sequence[bytes]]) -> list[VlmAnswer]:
        check_windows(windows, self.config)
        images = [[decode_frame(frame, self.config.max_image_side) for frame in window] for window in windows]

        def generate(indices: Sequence[int], messages: Sequence[list[dict[str, Any]]]) -> list[Reply]:
            replies: list[Reply] = []
            size = self.config.batch_size
            for start in range(0, len(indices), size):
                batch = range(start, min(start + size, len(indices)))
                texts = self._generate([messages[j] for j in batch], [images[indices[j]] for j in batch])
                replies.extend(Reply(text) for text in texts)
            return replies

        return assess_with_retries(len(windows), self.config, generate)

    def close(self) -> None:
        del self._model
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()

    def _generate(self, messages: list[list[dict[str, Any]]], images: list[list[Any]]) -> list[str]:
        torch = self._torch
        texts = [self._processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
        inputs = self._processor(text=texts, images=images, padding=True, return_tensors="pt").to(self._device)
        devices = [self._device] if self._device.type == "cuda" else []
        with self._lock, torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(self.config.seed)
            output = self._model.generate(**inputs, generation_config=self._generation_config)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self._processor.batch_decode(new_tokens, skip_special_tokens=True)


def _generation_config(base: Any, config: VlmConfig) -> Any:
    """The model's generation defaults with our length and sampling settings; greedy when temperature is 0."""
    generation = copy.deepcopy(base)
    generation.max_new_tokens = config.max_new_tokens
    if config.temperature > 0:
        generation.do_sample = True
        generation.temperature = config.temperature
        generation.top_p = config.top_p
    else:
        generation.do_sample = False
        generation.temperature = None
        generation.top_p = None
        generation.top_k = None
    return generation
