"""Tiny random Qwen3-VL models built offline for the VLM tests (imported by the test_vlm*.py modules).

Built by ``annotate.vlm.tiny`` (the base of ``pipeline vlm finetune --base tiny``) at smaller sizes, with a
tokenizer trained on the test prompts, so nothing is downloaded. Built once per test session under the
session's base temp dir; modules that import the fixtures share the files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotate.vlm.answer import canonical_json
from annotate.vlm.config import DEFAULT_PROMPT
from annotate.vlm.tiny import TinyQwen3VL, build_tiny_qwen3_vl

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
    canonical_json(VALID_ANSWER),
    '{"hazard": false, "risk": 0.0, "description": "The road ahead is clear.", "action": "continue"}',
    "A previous answer was rejected. Reply with only the JSON object, exactly as specified.",
)


#: The model of the tests: about 0.25 M parameters, frames of at most 64x64 pixels (4 tokens per image).
TEST_SIZE = TinyQwen3VL(
    hidden_size=64, layers=2, heads=4, kv_heads=2, vision_hidden_size=32, vision_depth=2, vision_heads=2, image_side=64,
    vocab_size=600,
)


def build_test_model(path: Path, seed: int = 0) -> Path:
    """The tests' random tiny Qwen3-VL, built by the product's builder with a corpus of the test prompts."""
    return build_tiny_qwen3_vl(path, _CORPUS, TEST_SIZE, seed)


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


def _built(base: Path, name: str) -> tuple[Path, bool]:
    path = base / name
    return path, (path / "model.safetensors").is_file() and (path / "processor_config.json").is_file()


@pytest.fixture(scope="session")
def tiny_qwen3_vl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a random tiny Qwen3-VL: its answers are garbage."""
    path, done = _built(tmp_path_factory.getbasetemp(), "tiny_qwen3_vl")
    return path if done else build_test_model(path)


@pytest.fixture(scope="session")
def tiny_qwen3_vl_answering(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny Qwen3-VL taught to answer :data:`VALID_ANSWER` to :data:`TEST_PROMPT`."""
    path, done = _built(tmp_path_factory.getbasetemp(), "tiny_qwen3_vl_answering")
    if not done:
        build_test_model(path)
        teach_answer(path, canonical_json(VALID_ANSWER), TEST_PROMPT)
    return path
