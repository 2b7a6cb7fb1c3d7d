"""A tiny Qwen3-VL built offline: real Qwen3-VL code (config, vision tower, processor, chat template) at toy sizes.

No VLM weights can be downloaded here, so ``pipeline vlm finetune --base tiny`` starts from this model with
random weights and a byte-level BPE tokenizer trained on the prompt and the answers it will be taught; the
tests use the same builder at smaller sizes. Any text still tokenizes (byte fallback); words of the corpus
become single tokens, which keeps sequences short enough to train on a CPU in minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "TinyQwen3VL", "build_tiny_qwen3_vl"]

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

#: What the tokenizer never merges with its neighbours.
_PIECES = r'[{}\[\]":,.\n]|\d'

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


@dataclass(frozen=True)
class TinyQwen3VL:
    """Sizes of the tiny model. The defaults (about 1 M parameters) read 128-pixel frames as 8x8 patches of 16
    pixels, merged 2x2 into 16 tokens per frame."""

    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    vision_hidden_size: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    patch_size: int = 16
    #: Largest frame side in pixels the processor keeps (larger frames are resized to fit).
    image_side: int = 128
    vocab_size: int = 1000

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads or (self.hidden_size // self.heads) % 8:
            raise ValueError(f"TinyQwen3VL: hidden_size / heads must be a multiple of 8, got {self.hidden_size} / {self.heads}")
        if self.heads % self.kv_heads or self.vision_hidden_size % self.vision_heads:
            raise ValueError("TinyQwen3VL: heads must divide evenly (heads by kv_heads, vision_hidden_size by vision_heads)")
        if self.patch_size < 4 or self.image_side % (2 * self.patch_size):
            raise ValueError(
                f"TinyQwen3VL.image_side must be a multiple of two patches (they merge 2x2), got {self.image_side} "
                f"with patch_size {self.patch_size}"
            )
        if self.vocab_size < 300:
            raise ValueError(f"TinyQwen3VL.vocab_size must leave room for the 256 bytes and special tokens, got {self.vocab_size}")


def build_tiny_qwen3_vl(path: Path, corpus: Sequence[str], size: TinyQwen3VL = TinyQwen3VL(), seed: int = 0) -> Path:
    """Save a random tiny Qwen3-VL, its processor and a tokenizer trained on ``corpus`` to ``path``."""
    # torch and transformers load in seconds: only the commands that build a model pay for them.
    import torch
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    tokenizer = _train_tokenizer(corpus, size.vocab_size)
    ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))))
    head_dim = size.hidden_size // size.heads
    patches = size.image_side // size.patch_size
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": size.hidden_size,
            "intermediate_size": 2 * size.hidden_size,
            "num_hidden_layers": size.layers,
            "num_attention_heads": size.heads,
            "num_key_value_heads": size.kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                # temporal, height, width shares of the rotary frequencies (head_dim / 2 in all)
                "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8],
                "mrope_interleaved": True,
            },
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": size.vision_depth,
            "hidden_size": size.vision_hidden_size,
            "intermediate_size": 2 * size.vision_hidden_size,
            "num_heads": size.vision_heads,
            "patch_size": size.patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": size.hidden_size,
            "num_position_embeddings": patches * patches,
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
    smallest = 2 * size.patch_size
    pixels = {"shortest_edge": smallest * smallest, "longest_edge": size.image_side * size.image_side}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=size.patch_size, temporal_patch_size=2, merge_size=2, size=pixels),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=size.patch_size, temporal_patch_size=2, merge_size=2, size=pixels),
        chat_template=CHAT_TEMPLATE,
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _train_tokenizer(corpus: Sequence[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    # JSON punctuation, full stops and digits stand alone; words may merge into phrases ("is crossing from
    # the"), which keeps the prompt and the answers a few dozen tokens long.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus) * 4, trainer)
    # The generic fast tokenizer keeps this pre-tokenizer through save and load (Qwen2Tokenizer restores its own).
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    return tokenizer
