"""``pipeline annotate`` through click's CliRunner: summary, rerun, conflicts, --replace, --force, config errors."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from annotate_fixtures import FAST_OVERRIDES, SUMO_EPISODES, sumo_dataset  # noqa: F401
from data_schema import Dataset
from pipeline.cli import main

@pytest.fixture(scope="module")
def dataset(sumo_dataset, tmp_path_factory):
    """A copy of the collected SUMO dataset (four one-episode shards) for this module to label."""
    return Dataset.open(str(shutil.copytree(sumo_dataset.path, tmp_path_factory.mktemp("cli") / "ds")))


def annotate(dataset, *args: str):
    sets = [item for override in FAST_OVERRIDES for item in ("--set", override)]
    return CliRunner().invoke(main, ["annotate", dataset.url, *sets, "--in-process", "--workers", "1", *args])


def test_run_rerun_conflict_replace_and_force(dataset):
    frames = sum(dataset.read_shard(s, ["step"]).num_rows for s in dataset.shards())
    first = annotate(dataset, "--label-set", "clg-v1")
    assert first.exit_code == 0, first.output
    assert f"{SUMO_EPISODES} shard(s) labelled, 0 skipped, 0 failed, of {SUMO_EPISODES}" in first.output
    assert f"frames {frames}" in first.output and "recall and precision are 1 by construction" in first.output

    again = annotate(dataset, "--label-set", "clg-v1")
    assert again.exit_code == 0 and f"0 shard(s) labelled, {SUMO_EPISODES} skipped" in again.output

    changed = annotate(dataset, "--label-set", "clg-v1", "--set", "prompts.positive=An empty road")
    assert changed.exit_code == 1
    assert "prompts.positive" in changed.output and "--replace" in changed.output
    assert dataset.label_set("clg-v1").document()["spec"]["prompts"]["positive"] != "An empty road"

    replaced = annotate(dataset, "--label-set", "clg-v1", "--set", "prompts.positive=An empty road", "--replace")
    assert replaced.exit_code == 0 and f"{SUMO_EPISODES} shard(s) labelled" in replaced.output
    document = dataset.label_set("clg-v1").document()
    assert document["spec"]["prompts"]["positive"] == "An empty road"
    assert document["provenance"]["counts"] == {"shards": SUMO_EPISODES, "frames": frames}

    forced = annotate(dataset, "--label-set", "clg-v1", "--set", "prompts.positive=An empty road", "--force")
    assert forced.exit_code == 0 and f"{SUMO_EPISODES} shard(s) labelled, 0 skipped" in forced.output


def test_camera_gate_on_a_dataset_without_camera_falls_back_to_the_scene(dataset):
    result = annotate(dataset, "--label-set", "fallback", "--set", "gate.source=camera")
    assert result.exit_code == 0, result.output
    labels = dataset.label_set("fallback")
    assert labels.document()["spec"]["gate"]["fallback"] == "scene" and "weights_id" not in labels.document()["spec"]["gate"]
    sources = {s for shard in labels.shards() for s in labels.read_shard(shard, ["gate_source"]).column("gate_source").to_pylist()}
    assert sources == {"scene"}


def test_config_file_and_overrides_are_layered_and_shown(dataset, tmp_path):
    toml = tmp_path / "annotate.toml"
    toml.write_text('[reward]\npenalty = 0.0\ntarget_speed_kmh = 30.0\n[prompts]\nnegative = "A crash"\n')
    shown = annotate(dataset, "--label-set", "x", "--config", str(toml), "--set", "reward.target_speed_kmh=40", "--show-config")
    assert shown.exit_code == 0, shown.output
    assert "penalty: 0.0" in shown.output and "target_speed_kmh: 40.0" in shown.output and "negative: A crash" in shown.output
    assert "x" not in dataset.label_sets()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "gate.confidnce=0.3"], "gate.confidnce"),
        (["--set", "reward.penalty=high"], "reward.penalty: expected a finite number"),
        (["--set", "reward.alpha=.nan"], "reward.alpha: expected a finite number, got nan"),
        (["--set", "gate.corridor_length=.inf"], "gate.corridor_length: expected a finite number, got inf"),
        (["--set", "reward.penalty=3"], "penalty must be"),
        (["--set", "nonsense"], "expected KEY=VALUE"),
        (["--clip-checkpoint", "/no/such/file.pt"], "/no/such/file.pt"),
        (["--label-set", "bad/name"], "invalid label set name"),
    ],
)
def test_bad_options_fail_with_a_message_naming_them(dataset, args, message):
    if "--label-set" not in args:
        args = ["--label-set", "y", *args]
    result = annotate(dataset, *args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_a_vlm_that_cannot_load_stops_the_run_before_any_shard(dataset, tmp_path):
    missing = tmp_path / "no-such-model"
    result = annotate(dataset, "--label-set", "vlm-missing", "--set", "vlm.backend=transformers", "--set", f"vlm.model={missing}")
    assert result.exit_code == 1 and f"{str(missing)!r} is not a saved model directory" in result.output, result.output
    assert "failed" not in result.output and "Traceback" not in result.output
    assert dataset.label_set("vlm-missing").shards() == []


def test_a_yaml_file_with_an_unknown_section_is_named(dataset, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"clip": {"model": "ViT-S-32-alt"}, "gates": {}}))
    result = annotate(dataset, "--label-set", "z", "--config", str(bad))
    assert result.exit_code == 1 and f"{bad}: gates: unknown key" in result.output


def test_missing_dataset_is_reported(tmp_path):
    result = CliRunner().invoke(main, ["annotate", str(tmp_path / "nothing"), "--label-set", "a", "--set", "clip.pretrained=none"])
    assert result.exit_code == 1 and "dataset.json" in result.output


def test_shipped_default_file_documents_exactly_the_dataclass_defaults():
    from annotate.config import AnnotateConfig, default_mapping, load_config, to_mapping

    assert load_config() == AnnotateConfig()
    assert default_mapping() == to_mapping(AnnotateConfig())  # every key present, none stale


def test_override_values_are_parsed_for_the_type_of_their_key():
    from annotate.config import load_config

    config = load_config(None, ["prompts.positive=yes", "gate.classes=person, bicycle", "vlm.max_image_side=null", "clip.batch_size=8", "reward.alpha=1"])
    assert config.prompts.positive == "yes"  # free text stays text, even where YAML would read a boolean
    assert config.gate.classes == ("person", "bicycle")
    assert config.vlm.max_image_side is None and config.clip.batch_size == 8 and config.reward.alpha == 1.0
