"""Tiny random Qwen3-VL models built offline for the VLM tests (imported by the test_vlm*.py modules).

The model is real Qwen3-VL code (config, vision tower, processor, chat template) at toy sizes with a
byte-level BPE tokenizer trained here on a few sentences, so nothing is downloaded. Built once per
test session under the session's base temp dir; modules that import the fixtures share the files.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotate.vlm.config import DEFAULT_PROMPT

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Qwen-style chat template: string or list content, image parts as vision placeholders.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

VALID_ANSWER = {
    "hazard": True,
    "risk": 0.75,
    "description": "A pedestrian is crossing the road ahead.",
    "action": "stop",
}

#: A short prompt keeps the tiny model's sequences (and its teaching) short.
TEST_PROMPT = "Assess the hazard in these frames and answer with the JSON object."

_CORPUS = (
    TEST_PROMPT,
    DEFAULT_PROMPT,
    json.dumps(VALID_ANSWER),
    '{"hazard": false, "risk": 0.0, "description": "The road ahead is clear.", "action": "continue"}',
    "A previous answer was rejected. Reply with only the JSON object, exactly as specified.",
)


def build_tiny_qwen3_vl(path: Path, seed: int = 0) -> Path:
    """Save a random Qwen3-VL (about 0.25 M parameters), its processor and tokenizer to ``path``."""
    import torch
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    tokenizer = _train_tokenizer()
    ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))))
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [4, 2, 2],
                "mrope_interleaved": True,
            },
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    # Frames become at most 64x64 pixels: 4x4 patches of 16, merged 2x2 into 4 tokens per image.
    size = {"shortest_edge": 32 * 32, "longest_edge": 64 * 64}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, temporal_patch_size=2, merge_size=2, size=size),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16, temporal_patch_size=2, merge_size=2, size=size),
        chat_template=CHAT_TEMPLATE,
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def teach_answer(path: Path, answer: str, prompt: str, max_steps: int = 300, seed: int = 0) -> None:
    """Fine-tune the saved model in place until it answers ``answer`` to ``prompt``, whatever the frames.

    Gives the tests a model whose greedy output is a known valid answer, through the same code paths
    as the random one. Frames of varied sizes and kinds (noise, flat colour, gradients) teach it to
    ignore them; training stops once a whole cycle of batches has a loss far below what greedy
    decoding needs to reproduce the answer.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    processor.tokenizer.padding_side = "right"
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    content = [{"type": "image"} for _ in range(4)] + [{"type": "text", "text": prompt}]
    chat = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
    texts = [chat + answer + "<|im_end|>"] * 4
    answer_length = len(processor.tokenizer(answer + "<|im_end|>")["input_ids"])
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(6):
        images = [[Image.fromarray(_varied_frame(rng)) for _ in range(4)] for _ in texts]
        batch = processor(text=texts, images=images, padding=True, return_tensors="pt")
        labels = torch.full_like(batch["input_ids"], -100)
        for row, length in enumerate(batch["attention_mask"].sum(dim=1).tolist()):
            labels[row, length - answer_length : length] = batch["input_ids"][row, length - answer_length : length]
        batches.append((batch, labels))
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    recent: list[float] = []
    for step in range(max_steps):
        batch, labels = batches[step % len(batches)]
        optimizer.zero_grad()
        loss = model(**batch, labels=labels).loss
        recent = [*recent[1 - len(batches) :], loss.item()]
        if len(recent) == len(batches) and max(recent) < 0.02:
            break
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(path)


def random_window(rng: np.random.Generator, frames: int = 4, size: tuple[int, int] = (48, 64)) -> list[bytes]:
    """``frames`` random RGB frames as PNG bytes (alternating with JPEG so both decoders are used)."""
    window = []
    for index in range(frames):
        buffer = io.BytesIO()
        Image.fromarray(_random_frame(rng, size)).save(buffer, format="PNG" if index % 2 == 0 else "JPEG")
        window.append(buffer.getvalue())
    return window


def _varied_frame(rng: np.random.Generator) -> np.ndarray:
    """A frame of random size: noise, a flat colour or a colour gradient."""
    size = (int(rng.integers(24, 160)), int(rng.integers(24, 160)))
    kind = rng.integers(3)
    if kind == 0:
        return _random_frame(rng, size)
    if kind == 1:
        return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (*size, 3)).copy()
    ramp = np.linspace(0.0, 1.0, size[1])[None, :, None] * rng.uniform(0, 255, 3)
    return np.broadcast_to(ramp, (*size, 3)).astype(np.uint8)


def _random_frame(rng: np.random.Generator, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def _train_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(_CORPUS) * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    return tokenizer


def _built(base: Path, name: str) -> tuple[Path, bool]:
    path = base / name
    return path, (path / "model.safetensors").is_file() and (path / "processor_config.json").is_file()


@pytest.fixture(scope="session")
def tiny_qwen3_vl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a random tiny Qwen3-VL: its answers are garbage."""
    path, done = _built(tmp_path_factory.getbasetemp(), "tiny_qwen3_vl")
    return path if done else build_tiny_qwen3_vl(path)


@pytest.fixture(scope="session")
def tiny_qwen3_vl_answering(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny Qwen3-VL taught to answer :data:`VALID_ANSWER` to :data:`TEST_PROMPT`."""
    path, done = _built(tmp_path_factory.getbasetemp(), "tiny_qwen3_vl_answering")
    if not done:
        build_tiny_qwen3_vl(path)
        teach_answer(path, json.dumps(VALID_ANSWER), TEST_PROMPT)
    return path
