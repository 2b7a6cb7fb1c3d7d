"""`pipeline clip finetune` / `eval` on a tiny SUMO dataset: it learns, its checkpoint is what annotate
loads, and bad input is refused before any work."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from annotate import AnnotateConfig, RunOptions, annotate_dataset, load_config
from annotate.clip_eval import BEV_PROMPTS, PromptPair
from annotate.clip_finetune import CARD_FILE, CHECKPOINT_FILE, FinetuneConfig, finetune, static_pathway_settings
from annotate.static_pathway import ClipConfig, StaticPathway
from data_schema import Dataset, DatasetError, decode_image
from data_schema.reward import RewardConfig
from episode_tables import episode_table
from pipeline.cli import main

#: A fine-tune small enough for CI: a few hundred frames, two short epochs.
TINY = FinetuneConfig(epochs=2, batch_size=32, heldout_share=0.3, threads=1)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def town(tmp_path_factory) -> str:
    """Expert and random episodes on the SUMO town: random ones crash and leave the road, so hazards occur."""
    root = str(tmp_path_factory.mktemp("clip") / "town")
    for policy, seed, episodes in (("expert", 0, 3), ("random", 100, 5)):
        result = invoke("collect", root, "--episodes", str(episodes), "--policy", policy, "--seed", str(seed), "--max-steps", "60")
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def tuned(town, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("clip") / "bev-clip"
    return out, finetune(town, out, TINY, progress=False)


@pytest.mark.slow
def test_finetune_lowers_the_heldout_contrastive_loss(tuned):
    out, card = tuned
    losses = card["training"]["heldout_loss"]
    assert len(losses) == TINY.epochs + 1  # before training, then after each epoch
    assert losses[-1] < losses[0] - 0.02, losses
    assert card["model"] == "BEV-ViT-T-8-64" and card["init"] == {"pretrained": "none", "weights_id": "random-seed0"}
    assert card["settings"]["epochs"] == 2 and card["dataset"]["heldout_episodes"] >= 2
    assert card["captions"]["template_hash"].startswith("sha256-")
    assert set(card["heldout"]["prompts"]["vlm-rl"]["auroc"]) == {"critical_agent", "vehicle_close", "event_soon", "any"}
    assert (out / CHECKPOINT_FILE).is_file() and not list(out.glob("*.tmp"))


@pytest.mark.slow
def test_checkpoint_loaded_by_annotate_reproduces_the_finetuners_embeddings(tuned, town, tmp_path):
    out, card = tuned
    checkpoint = str(out / CHECKPOINT_FILE)
    fingerprint = card["fingerprint"]
    dataset = Dataset.open(town)
    steps = dataset.read_steps(["bev"])
    keys = list(zip(steps.column("episode_id").to_pylist(), steps.column("step").to_pylist()))
    frames = [decode_image(steps.column("bev")[keys.index(tuple(k))].as_py()) for k in fingerprint["frames"]]
    pathway = StaticPathway(ClipConfig(model=card["model"], pretrained=checkpoint, device="cpu"))
    assert pathway.text_views == TINY.views and card["heldout"]["text_views"] == {"count": TINY.views.count, "dropout": TINY.views.dropout}
    np.testing.assert_allclose(pathway.encode_images(frames), fingerprint["image_embeddings"], atol=1e-5)
    np.testing.assert_allclose(pathway.encode_texts(fingerprint["texts"]), fingerprint["text_embeddings"], atol=1e-5)

    # the real annotate run: its sim_pos / sim_neg are the trained model's cosines
    positive, negative = fingerprint["texts"]
    config = AnnotateConfig(clip=ClipConfig(model=card["model"], pretrained=checkpoint, device="cpu"))
    settings = {"gate": {"source": "scene"}, "vlm": {"backend": "none"}, "prompts": {"positive": positive, "negative": negative}}
    config = _with(config, settings)
    summary = annotate_dataset(town, config, RunOptions(label_set="tuned", processes=False, workers=1, progress=False))
    assert not summary.failed
    labels = dataset.join("tuned", columns=["step"], label_columns=["sim_pos", "sim_neg"]).set_index(["episode_id", "step"])
    images = np.asarray(fingerprint["image_embeddings"])
    texts = np.asarray(fingerprint["text_embeddings"])
    for (episode, step), image in zip(fingerprint["frames"], images):
        row = labels.loc[(episode, step)]
        assert row["sim_pos"] == pytest.approx(image @ texts[0], abs=1e-5)
        assert row["sim_neg"] == pytest.approx(image @ texts[1], abs=1e-5)


@pytest.mark.slow
def test_eval_reports_auroc_retrieval_and_a_histogram(tuned, town, tmp_path):
    out, card = tuned
    result = invoke("clip", "eval", town, "--clip-checkpoint", str(out / CHECKPOINT_FILE), "--out", str(tmp_path / "eval"),
                    "--prompts", "The road ahead is clear.", "A car is stopped close ahead.")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "user-1" in result.output and "text-to-image retrieval" in result.output
    assert f"texts read as the mean of {TINY.views.count} copies, each word dropped with p {TINY.views.dropout:g}" in result.output
    assert re.search(r"left out, never learned: .*accidents, Two, cars, have, collided, each, other\n", result.output)
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    # the same split and checkpoint as the card's held-out evaluation: the same figures
    assert report["frames"] == card["heldout"]["frames"]
    assert report["prompts"]["bev"]["auroc"] == pytest.approx(card["heldout"]["prompts"]["bev"]["auroc"])
    assert (tmp_path / "eval" / "histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_words_no_caption_uses_keep_no_embedding_and_are_left_out_of_goals(tuned):
    out, card = tuned
    pathway = StaticPathway(ClipConfig(model=card["model"], pretrained=str(out / CHECKPOINT_FILE), device="cpu"))
    vlm_rl = card["heldout"]["prompts"]["vlm-rl"]
    assert {"accidents", "Two", "cars", "collided", "each", "other"} <= set(vlm_rl["unknown_words"])
    assert not {"road", "clear", "car"} & set(vlm_rl["unknown_words"])
    assert card["heldout"]["prompts"]["bev"]["unknown_words"] == []  # caption sentences: every word learned
    np.testing.assert_allclose(
        pathway.encode_texts(["The road is clear with no car accidents"]), pathway.encode_texts(["The road is clear with no car"]), atol=1e-6
    )


@pytest.mark.slow
def test_the_static_pathway_settings_use_the_card_s_checkpoint_prompts_and_theta(tuned):
    out, card = tuned
    settings = static_pathway_settings(out, BEV_PROMPTS)
    config = load_config(None, settings)
    assert (config.clip.model, config.clip.pretrained) == (card["model"], str(out / CHECKPOINT_FILE))
    assert (config.prompts.positive, config.prompts.negative) == (BEV_PROMPTS.positive, BEV_PROMPTS.negative)
    theta = card["heldout"]["prompts"]["bev"]["theta"]
    if theta is None:  # the tiny fine-tune may not rank danger: the default range stays
        assert (config.reward.theta_min, config.reward.theta_max) == (RewardConfig().theta_min, RewardConfig().theta_max)
    else:
        assert (config.reward.theta_min, config.reward.theta_max) == (theta["theta_min"], theta["theta_max"])
    with pytest.raises(DatasetError, match="were not evaluated"):
        static_pathway_settings(out, PromptPair("mine", "a clear road", "a pedestrian ahead"))


@pytest.mark.slow
def test_rerun_of_a_finished_finetune_does_no_work_and_other_settings_are_refused(tuned, town):
    out, card = tuned
    again = finetune(town, out, TINY, progress=False)
    assert again == card
    result = invoke("clip", "finetune", town, "--out", str(out), "--epochs", "3")
    assert result.exit_code != 0 and "other settings" in result.output


@pytest.mark.slow
def test_a_card_from_before_word_dropout_and_text_views_counts_as_trained_without_them(tuned, town, tmp_path):
    out, card = tuned
    older = tmp_path / "older"
    older.mkdir()
    (older / CHECKPOINT_FILE).write_bytes((out / CHECKPOINT_FILE).read_bytes())
    settings = {k: v for k, v in card["settings"].items() if k not in ("word_dropout", "text_views", "text_view_dropout")}
    (older / CARD_FILE).write_text(json.dumps({**card, "settings": settings}))
    assert finetune(town, older, dataclasses.replace(TINY, word_dropout=0.0, text_views=1), progress=False)["settings"] == settings
    for changed in ({"word_dropout": 0.3, "text_views": 1}, {"word_dropout": 0.0}):
        with pytest.raises(DatasetError, match="other settings"):
            finetune(town, older, dataclasses.replace(TINY, **changed), progress=False)


def test_bad_init_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    result = invoke("clip", "finetune", str(tmp_path / "no-dataset"), "--out", str(out), "--init", str(tmp_path / "missing.safetensors"))
    assert result.exit_code != 0
    assert "--init" in result.output and "missing.safetensors" in result.output
    result = invoke("clip", "finetune", str(tmp_path / "no-dataset"), "--out", str(out), "--model", "ViT-B-32", "--init", "laion9000")
    assert result.exit_code != 0 and "'laion9000' is neither a pretrained tag of ViT-B-32" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ([[]] * 6, "no frame has any agents"),
        ([[{"kind": "pedestrian", "x": 5.0, "y": 9.0, "yaw": 0.0, "speed": 1.0, "length": 0.5, "width": 0.5}]] * 6, "none of its 6 frames has a hazard"),
    ],
)
def test_dataset_without_agents_or_hazards_is_refused_before_any_work(tmp_path, agents, message):
    dataset = Dataset.create(str(tmp_path / "ds"))
    dataset.write_episode_shard("20250101T000000-test-e000000", episode_table("test-000000", 6, agents=agents, speed=5.0))
    out = tmp_path / "out"
    result = invoke("clip", "finetune", str(tmp_path / "ds"), "--out", str(out))
    assert result.exit_code != 0 and message in result.output
    assert not out.exists()


def _with(config: AnnotateConfig, settings: dict) -> AnnotateConfig:
    from annotate.config import to_mapping
    from data_schema.settings import build, merge

    return build(AnnotateConfig, merge(to_mapping(config), settings), "test")
