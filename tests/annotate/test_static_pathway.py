"""CLIP static pathway: real open_clip code with seeded random weights, checked against open_clip directly."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import open_clip
import pytest
import torch
from model_fixtures import TINY_CLIP_MODEL
from PIL import Image
from safetensors.torch import save_file

from annotate.model_weights import WeightsError, file_digest, host_reachable
from annotate.clip_data import ClipFrames
from annotate.clip_finetune import _fingerprint
from annotate.static_pathway import ClipConfig, StaticPathway, _cached_tag_file, without_unknown_pieces, without_unknown_tokens
from annotate.word_dropout import TextViews

PROMPTS = ["The road is clear with no car accidents", "Two cars have collided with each other on the road"]


def bev_frames(count: int, size: int = 128, seed: int = 0) -> list[np.ndarray]:
    """BEV-like frames: dark background, a grey road, a few coloured boxes for vehicles."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        frame = np.full((size, size, 3), 20, dtype=np.uint8)
        frame[:, size // 3 : 2 * size // 3] = 90
        for _ in range(int(rng.integers(1, 5))):
            y, x = rng.integers(0, size - 12, 2)
            frame[y : y + 12, x : x + 6] = rng.integers(0, 256, 3)
        out.append(frame)
    return out


def reference_embeddings(model, preprocess, tokenizer, images, texts):
    """What open_clip computes one image at a time through PIL, normalised as CLIP scores are."""
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.fromarray(image)) for image in images])
        image = model.encode_image(pixels)
        text = model.encode_text(tokenizer(texts))
    return (image / image.norm(dim=-1, keepdim=True)).numpy(), (text / text.norm(dim=-1, keepdim=True)).numpy()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"precision": "fp8"}, "clip.precision"),
        ({"batch_size": 0}, "clip.batch_size"),
        ({"device": "toaster"}, "clip.device"),
        ({"pretrained": ""}, "clip.pretrained"),
        ({"model": ""}, "clip.model"),
    ],
)
def test_config_rejects_bad_values_naming_the_option(kwargs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        ClipConfig(**kwargs)


def test_scores_equal_open_clip_computed_directly(tiny_clip):
    """Same seed, same architecture, built by open_clip here: cosine scores agree with the pathway's."""
    # camera-sized frames interleaved with BEV frames: the pathway groups by shape and must keep input order
    camera = [np.asarray(Image.fromarray(f).resize((320, 180))) for f in bev_frames(3, seed=5)]
    images = bev_frames(6)
    images[1:1] = camera[:2]
    images.append(camera[2])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_MODEL)
    model.eval()
    ref_images, ref_texts = reference_embeddings(
        model, preprocess, open_clip.get_tokenizer(TINY_CLIP_MODEL), images, PROMPTS
    )

    ours_images = tiny_clip.encode_images(images)
    ours_texts = tiny_clip.encode_texts(PROMPTS)

    assert ours_images.dtype == np.float32 and ours_images.shape == (len(images), tiny_clip.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(ours_images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours_images @ ours_texts.T, ref_images @ ref_texts.T, atol=1e-5)
    np.testing.assert_allclose(ours_images, ref_images, atol=1e-5)
    # the scores are not degenerate: frames differ from each other
    assert np.ptp(ours_images @ ours_texts[0]) > 1e-3


def test_counts_image_encoder_work_and_text_encoding_does_not(tiny_clip):
    calls, images = tiny_clip.image_forward_calls, tiny_clip.images_encoded
    tiny_clip.encode_texts(PROMPTS + ["a third goal"])
    assert (tiny_clip.image_forward_calls, tiny_clip.images_encoded) == (calls, images)

    tiny_clip.encode_images(bev_frames(9))  # batch_size 4: 3 forward calls
    assert (tiny_clip.image_forward_calls, tiny_clip.images_encoded) == (calls + 3, images + 9)


def test_empty_inputs_and_bad_frames(tiny_clip):
    assert tiny_clip.encode_images([]).shape == (0, tiny_clip.embed_dim)
    assert tiny_clip.encode_texts([]).shape == (0, tiny_clip.embed_dim)
    with pytest.raises(ValueError, match="image 1 must be HxWx3 uint8"):
        tiny_clip.encode_images([bev_frames(1)[0], np.zeros((8, 8, 4), np.uint8)])
    with pytest.raises(ValueError, match="image 0 must be HxWx3 uint8"):
        tiny_clip.encode_images([np.zeros((8, 8, 3), np.float32)])


def test_random_weights_are_reproducible_and_seeded(tiny_clip, tiny_clip_config):
    frames = bev_frames(3, seed=11)
    again = StaticPathway(tiny_clip_config)
    other = StaticPathway(replace(tiny_clip_config, seed=1))

    assert tiny_clip.model_id == again.model_id == TINY_CLIP_MODEL
    assert tiny_clip.weights_id == again.weights_id == "random-seed0"
    assert other.weights_id == "random-seed1"
    np.testing.assert_array_equal(again.encode_images(frames), tiny_clip.encode_images(frames))
    assert not np.allclose(other.encode_images(frames), tiny_clip.encode_images(frames), atol=1e-3)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_path_reproduces_the_saved_model(tiny_clip, tiny_clip_config, tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    state = {name: tensor.contiguous() for name, tensor in tiny_clip.model.state_dict().items()}
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    config = replace(tiny_clip_config, pretrained=str(path))

    loaded = StaticPathway(config)
    frames = bev_frames(4, seed=3)

    assert loaded.weights_id == file_digest(path)
    assert loaded.weights_id.startswith("sha256-") and len(loaded.weights_id) == len("sha256-") + 16
    np.testing.assert_array_equal(loaded.encode_images(frames), tiny_clip.encode_images(frames))
    np.testing.assert_array_equal(loaded.encode_texts(PROMPTS), tiny_clip.encode_texts(PROMPTS))


def test_unknown_tokens_are_removed_and_the_rest_moved_up_in_order():
    tokens = torch.tensor([[49406, 5, 7, 9, 7, 49407, 0, 0], [49406, 7, 49407, 0, 0, 0, 0, 0]])
    unknown = torch.zeros(49408, dtype=torch.bool)
    unknown[7] = True
    assert without_unknown_tokens(tokens, unknown).tolist() == [[49406, 5, 9, 49407, 0, 0, 0, 0], [49406, 49407, 0, 0, 0, 0, 0, 0]]
    assert without_unknown_tokens(tokens, None) is tokens


def test_words_with_all_zero_token_embeddings_are_left_out_of_encoded_texts(tiny_clip, tiny_clip_config, tmp_path):
    """A fine-tune from random weights zeroes the words its captions lack; such a word is read as absent."""
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_MODEL)
    state = {name: tensor.clone().contiguous() for name, tensor in tiny_clip.model.state_dict().items()}
    for token in tokenizer(["collided accidents"])[0, 1:]:
        if token not in (0, tokenizer.eot_token_id):
            state["token_embedding.weight"][token] = 0.0
    save_file(state, str(tmp_path / "clip.safetensors"))
    loaded = StaticPathway(replace(tiny_clip_config, pretrained=str(tmp_path / "clip.safetensors")))

    assert loaded.unknown_words(PROMPTS[1]) == ["collided"] and loaded.unknown_words(PROMPTS[0]) == ["accidents"]
    assert tiny_clip.unknown_words(PROMPTS[1]) == []  # random weights: every token has a vector
    without = ["The road is clear with no car", "Two cars have with each other on the road"]
    with torch.no_grad():
        direct = loaded.model.encode_text(tokenizer(without))
    np.testing.assert_allclose(loaded.encode_texts(PROMPTS), torch.nn.functional.normalize(direct, dim=-1).numpy(), atol=1e-6)
    assert not np.allclose(loaded.encode_texts(PROMPTS), tiny_clip.encode_texts(PROMPTS), atol=1e-3)


def test_a_checkpoint_names_the_views_its_texts_are_read_through(tiny_clip, tiny_clip_config, tmp_path):
    """A fine-tune writes its text views into the checkpoint's metadata; each text is then read as the mean of its
    views, whatever the batch, and the file hash that names the weights covers the views."""
    state = {name: tensor.contiguous() for name, tensor in tiny_clip.model.state_dict().items()}
    views = TextViews(8, 0.5)
    save_file(state, str(tmp_path / "views.safetensors"), metadata=views.metadata())
    save_file(state, str(tmp_path / "plain.safetensors"))
    config = replace(tiny_clip_config, pretrained=str(tmp_path / "views.safetensors"), batch_size=3)  # views span batches
    loaded, as_written = StaticPathway(config), StaticPathway(config, TextViews())

    assert loaded.text_views == views and as_written.text_views == TextViews() and tiny_clip.text_views == TextViews()
    assert StaticPathway(replace(config, pretrained=str(tmp_path / "plain.safetensors"))).text_views == TextViews()
    assert loaded.weights_id != file_digest(tmp_path / "plain.safetensors")
    read = loaded.encode_texts(PROMPTS)
    for text, embedding in zip(PROMPTS, read):
        mean = as_written.encode_texts(views.expand([text])).mean(axis=0)
        np.testing.assert_allclose(embedding, mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(loaded.encode_texts(PROMPTS[1:]), read[1:], atol=1e-6)
    assert not np.allclose(read, as_written.encode_texts(PROMPTS), atol=1e-3)


def zeroed_checkpoint(pathway: StaticPathway, path, words: str, views: TextViews) -> torch.Tensor:
    """``pathway``'s weights with the tokens of ``words`` zeroed, as a fine-tune zeroes words it never learned; the
    mask of those tokens."""
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_MODEL)
    state = {name: tensor.clone().contiguous() for name, tensor in pathway.model.state_dict().items()}
    unknown = torch.zeros(state["token_embedding.weight"].shape[0], dtype=torch.bool)
    unknown[tokenizer.encode(words)] = True
    state["token_embedding.weight"][unknown] = 0.0
    save_file(state, str(path), metadata=views.metadata())
    return unknown


def test_unknown_pieces_go_and_the_rest_of_their_word_stays():
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_MODEL)
    unknown = torch.zeros(49408, dtype=torch.bool)
    unknown[tokenizer.encode("accidents (")] = True
    text = "The road is clear (no car accidents)."
    assert without_unknown_pieces(text, tokenizer, unknown) == "The road is clear no car )."
    assert (tokenizer([without_unknown_pieces(text, tokenizer, unknown)]) == without_unknown_tokens(tokenizer([text]), unknown)).all()
    assert without_unknown_pieces("The road is clear.", tokenizer, unknown) == "The road is clear."


def test_read_through_views_a_goal_with_words_never_learned_reads_as_the_goal_without_them(tiny_clip, tiny_clip_config, tmp_path):
    zeroed_checkpoint(tiny_clip, tmp_path / "clip.safetensors", "accidents (", TextViews(16, 0.8))
    loaded = StaticPathway(replace(tiny_clip_config, pretrained=str(tmp_path / "clip.safetensors")))

    assert loaded.text_views == TextViews(16, 0.8)
    with_unknown = loaded.encode_texts(["The road is clear with no car accidents", "A cyclist (on the left) is crossing."])
    without = loaded.encode_texts(["The road is clear with no car", "A cyclist on the left) is crossing."])
    np.testing.assert_allclose(with_unknown, without, atol=1e-6)


def test_the_finetuners_fingerprint_reads_texts_as_the_pathway_does(tiny_clip, tiny_clip_config, tmp_path):
    """The fingerprint check compares the trained model's reading of the demo's goals with the checkpoint's: both
    read through the same views, also when a goal's word was never learned ("clear" here)."""
    views = TextViews(16, 0.8)
    zeroed_checkpoint(tiny_clip, tmp_path / "clip.safetensors", "clear", views)
    loaded = StaticPathway(replace(tiny_clip_config, pretrained=str(tmp_path / "clip.safetensors")))
    data = ClipFrames("d", [], np.array(["e"] * 2), np.arange(2), [[], []], {"any": np.array([True, False])}, np.ones(2, bool))
    pixels = lambda rows: torch.zeros(len(rows), 3, 224, 224)  # noqa: E731  (the image side is not under test)
    fingerprint = _fingerprint(loaded.model, loaded.tokenizer, pixels, data, loaded.device, views)

    assert loaded.unknown_words(" ".join(fingerprint["texts"])) == ["clear"]
    np.testing.assert_allclose(loaded.encode_texts(fingerprint["texts"]), fingerprint["text_embeddings"], atol=1e-6)


def test_bad_text_views_in_a_checkpoint_name_the_file(tiny_clip, tiny_clip_config, tmp_path):
    state = {name: tensor.contiguous() for name, tensor in tiny_clip.model.state_dict().items()}
    save_file(state, str(tmp_path / "clip.safetensors"), metadata={**TextViews(8, 0.5).metadata(), "text_view_dropout": "0"})
    with pytest.raises(WeightsError, match=r"clip\.safetensors: bad text views .*need a dropout"):
        StaticPathway(replace(tiny_clip_config, pretrained=str(tmp_path / "clip.safetensors")))


def test_missing_checkpoint_and_unknown_tag_name_the_problem(tmp_path):
    with pytest.raises(WeightsError, match=r"CLIP checkpoint not found: .*missing\.safetensors"):
        StaticPathway(ClipConfig(model=TINY_CLIP_MODEL, pretrained=str(tmp_path / "missing.safetensors")))
    with pytest.raises(WeightsError, match=r"'laion9000' is neither a pretrained tag of ViT-B-32 \(known: .*openai"):
        StaticPathway(ClipConfig(model="ViT-B-32", pretrained="laion9000"))
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        StaticPathway(ClipConfig(model="ViT-Q-99", pretrained="none"))


def test_pretrained_tag_offline_fails_fast_with_checkpoint_advice():
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE and host_reachable("huggingface.co"):
        pytest.skip("this machine reaches huggingface.co: the offline error path cannot be exercised")
    if _cached_tag_file(open_clip.get_pretrained_cfg("ViT-B-32", "openai")):
        pytest.skip("ViT-B-32 'openai' weights are in the local download cache: nothing to fail on")
    advice = r"cannot download open_clip weights 'openai' for ViT-B-32.*--clip-checkpoint PATH"
    with pytest.raises(WeightsError, match=advice):
        StaticPathway(ClipConfig(model="ViT-B-32", pretrained="openai", device="cpu"))
