"""A local image-text-to-text model (Qwen3-VL by default) through transformers: works on CPU.

Weights are loaded from a directory only (``local_files_only``): a run never downloads from a hub.
With ``structured_output`` (the default) decoding is constrained to the answer's JSON schema by xgrammar's
logits processor, the grammar engine vLLM uses for its structured outputs: at every step the tokens that
would leave the schema are masked, so an answer is valid by construction unless it runs past
``max_new_tokens``. It is written compactly (no whitespace), the form the fine-tune teaches.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from annotate.model_weights import resolve_device
from annotate.vlm.answer import ANSWER_SCHEMA, VlmAnswer
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
        self.precision_id = "fp32" if dtype == torch.float32 else "bf16"
        self._processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        if getattr(self._processor, "chat_template", None) is None:
            raise ValueError(f"VlmConfig.model: the processor in {path} has no chat template")
        self._processor.tokenizer.padding_side = "left"
        self._model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, local_files_only=True)
        self._model.to(self._device).eval()
        self._generation_config = _generation_config(self._model.generation_config, config)
        self._constraint = (
            _SchemaConstraint(self._processor.tokenizer, self._model, self._generation_config) if config.structured_output else None
        )
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
        inputs = chat_inputs(self._processor, messages, images).to(self._device)
        devices = [self._device] if self._device.type == "cuda" else []
        with self._lock, torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(self.config.seed)
            output = self._model.generate(**inputs, generation_config=self._generation_config, logits_processor=self._constraint.processors() if self._constraint else [])
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self._processor.batch_decode(new_tokens, skip_special_tokens=True)


def chat_inputs(processor: Any, messages: Sequence[list[dict[str, Any]]], images: Sequence[Sequence[Any]]) -> Any:
    """Processor inputs for a batch of chats through the model's own chat template, ending where the
    assistant's answer starts: what generation sees, and the prompt part of a fine-tuning example."""
    texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    return processor(text=texts, images=[list(frames) for frames in images], padding=True, return_tensors="pt")


class _SchemaConstraint:
    """The answer schema compiled against the model's vocabulary (its logits may be wider than the tokenizer)."""

    def __init__(self, tokenizer: Any, model: Any, generation: Any) -> None:
        # xgrammar is imported here: only this backend, with structured_output on, needs it.
        import xgrammar
        from xgrammar.contrib.hf import LogitsProcessor

        stop = generation.eos_token_id
        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer,
            vocab_size=model.get_output_embeddings().weight.shape[0],
            stop_token_ids=[stop] if isinstance(stop, int) else list(stop),
        )
        compiler = xgrammar.GrammarCompiler(info, max_threads=1)
        self._grammar = compiler.compile_json_schema(json.dumps(ANSWER_SCHEMA), any_whitespace=False, separators=(",", ":"))
        self._processor_class = LogitsProcessor

    def processors(self) -> list[Any]:
        """A fresh processor per generate call: it tracks each row's place in the grammar."""
        return [self._processor_class(self._grammar)]


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
