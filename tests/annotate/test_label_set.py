"""Label-set identity: what enters the content hash, and the new / skip / conflict / replace / force rules."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from annotate import label_set, model_cache
from annotate.label_set import LabelSetConflict, ModelIds, build_spec, plan, prepare, record_run
from data_schema.label_sets import canonical_json, spec_hash
from annotate.caches import vlm_cache_folder
from annotate.shard_task import ShardTask, annotate_shard
from annotate_fixtures import fast_config, make_dataset
from data_schema import SCHEMA_VERSION, Dataset, SchemaError

IDS = ModelIds(clip_model="ViT-S-32-alt", clip_weights="random-seed0", gate_weights=None)


def digest(*overrides: str, ids: ModelIds = IDS) -> str:
    return spec_hash(build_spec(fast_config(*overrides), ids))


def test_hash_is_the_sha256_of_the_canonical_spec_and_is_stable_across_processes():
    spec = build_spec(fast_config(), IDS)
    assert spec_hash(spec) == hashlib.sha256(canonical_json(spec).encode()).hexdigest()
    assert spec["schema_version"] == SCHEMA_VERSION
    assert spec["clip"]["weights_id"] == "random-seed0" and spec["clip"]["model_id"] == "ViT-S-32-alt"
    code = (
        "import sys; sys.path[:0] = ['tests', 'tests/annotate']\n"
        "from annotate_fixtures import fast_config\n"
        "from annotate.label_set import ModelIds, build_spec\nfrom data_schema.label_sets import spec_hash\n"
        "print(spec_hash(build_spec(fast_config(), ModelIds('ViT-S-32-alt', 'random-seed0', None))))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == spec_hash(spec)


@pytest.mark.parametrize(
    "override",
    [
        "prompts.positive=An empty street",
        "reward.beta_dynamic=0.5",
        "reward.pathways=[static]",
        "reward.stability_signed=false",
        "gate.corridor_length=30",
        "gate.critical_kinds=pedestrian",
        "gate_fallback=none",
        "reward.penalty=0",
        "reward.target_speed_kmh=30",
    ],
)
def test_every_value_setting_changes_the_hash(override):
    assert digest(override) != digest()


def test_the_precision_clip_really_ran_at_changes_the_hash_not_the_configured_name():
    """``auto`` is fp32 on a CPU and bf16 on most GPUs: the hash follows what ran, so a CPU re-score is a new label set."""
    bf16 = dataclasses.replace(IDS, clip_precision="bf16")
    assert digest(ids=bf16) != digest()
    assert build_spec(fast_config(), bf16)["clip"]["precision"] == "bf16"
    assert digest("clip.precision=fp32") == digest("clip.precision=auto")  # both ran at fp32 (IDS)


def test_the_precision_the_vlm_ran_at_changes_the_hash_and_its_answer_cache(tmp_path):
    base = ("vlm.backend=openai", "vlm.model=qwen")
    fp32, bf16 = dataclasses.replace(IDS, vlm_precision="fp32"), dataclasses.replace(IDS, vlm_precision="bf16")
    assert digest(*base, ids=fp32) != digest(*base, ids=bf16)
    dataset = Dataset.create(str(tmp_path / "ds"))
    config = fast_config(*base)
    assert vlm_cache_folder(dataset, config, "fp32") != vlm_cache_folder(dataset, config, "bf16")


def test_vlm_prompt_sampling_and_model_change_the_hash():
    base = ("vlm.backend=openai", "vlm.model=qwen")
    assert digest(*base) != digest()
    for extra in ("vlm.prompt=Describe the risk as JSON.", "vlm.temperature=0.7", "vlm.window=1", "vlm.model=other"):
        assert digest(*base, extra) != digest(*base), extra


def test_weights_change_the_hash_but_not_where_they_came_from():
    assert digest(ids=ModelIds("ViT-S-32-alt", "sha256-0123", None)) != digest()
    assert digest(ids=ModelIds("ViT-S-32-alt", "random-seed0", "sha256-abcd")) != digest()
    assert digest("clip.pretrained=/elsewhere/weights.pt") == digest()


@pytest.mark.parametrize(
    "override",
    ["clip.device=auto", "clip.batch_size=7", "gate.batch_size=3", "gate.device=cpu", "task_retries=0"],
)
def test_execution_settings_leave_the_hash_alone(override):
    assert digest(override) == digest()


def test_vlm_transport_settings_leave_the_hash_alone():
    base = ("vlm.backend=openai", "vlm.model=qwen")
    for extra in ("vlm.base_url=http://gpu-box:8000/v1", "vlm.concurrency=32", "vlm.backend=vllm", "vlm.timeout_s=5"):
        assert digest(*base, extra) == digest(*base), extra


@pytest.fixture(scope="module")
def warm_dataset(tmp_path_factory):
    """A small dataset whose image-embedding cache is filled, so the rule tests do not wait on CLIP."""
    dataset = make_dataset(str(tmp_path_factory.mktemp("warm") / "ds"), shards=2, episodes_per_shard=1, steps=6)
    label(dataset, "warm-up")
    shutil.rmtree(f"{dataset.path}/labels")
    return dataset


@pytest.fixture
def dataset(warm_dataset, tmp_path):
    shutil.copytree(warm_dataset.path, tmp_path / "ds")
    return Dataset.open(str(tmp_path / "ds"))


def label(dataset, name: str, *overrides: str, replace: bool = False, force: bool = False):
    """Apply the rules, then label the shards the plan says, in this process."""
    config = fast_config(*overrides)
    pathway = model_cache.static_pathway(config.clip)
    spec = build_spec(config, ModelIds(pathway.model_id, pathway.weights_id, None))
    labels, h = prepare(dataset, name, spec, replace)
    todo, skipped = plan(dataset, labels, h, force)
    stats = [annotate_shard(ShardTask(dataset.url, shard, name, h, config, force)) for shard in todo]
    return labels, h, todo, skipped, stats


def test_new_label_set_writes_its_spec_hash_and_provenance(dataset):
    labels, h, todo, skipped, _ = label(dataset, "clg-v1")
    document = json.loads((dataset.fs.open(f"{labels.path}/label_set.json").read()))
    assert document["hash"] == h == spec_hash(document["spec"])
    assert document["name"] == "clg-v1"
    assert document["provenance"]["code_version"] and document["provenance"]["created"]
    assert todo == dataset.shards() and skipped == []
    assert all(labels.shard_hash(s) == h for s in dataset.shards())


def test_unchanged_rerun_skips_every_shard_and_force_redoes_them(dataset):
    labels, h, *_ = label(dataset, "clg-v1")
    mtimes = {s: dataset.fs.modified(labels.shard_path(s)) for s in dataset.shards()}
    _, h2, todo, skipped, _ = label(dataset, "clg-v1")
    assert h2 == h and todo == [] and skipped == dataset.shards()
    assert {s: dataset.fs.modified(labels.shard_path(s)) for s in dataset.shards()} == mtimes
    before = labels.read_shard("s00")
    _, _, todo, skipped, stats = label(dataset, "clg-v1", force=True)
    assert todo == dataset.shards() and skipped == [] and [s.status for s in stats] == ["done", "done"]
    assert labels.read_shard("s00").equals(before)


def test_changed_spec_under_the_same_name_is_refused_naming_the_change(dataset):
    labels, h, *_ = label(dataset, "clg-v1")
    with pytest.raises(LabelSetConflict) as error:
        label(dataset, "clg-v1", "prompts.positive=An empty street")
    message = str(error.value)
    assert "prompts.positive" in message and "--replace" in message and "2 label shard(s)" in message
    assert labels.hash == h and all(labels.shard_hash(s) == h for s in dataset.shards())


def test_replace_removes_the_old_label_shards_before_relabelling(dataset, monkeypatch):
    labels, old, *_ = label(dataset, "clg-v1")
    removed = []
    real = label_set.remove_label_shards
    monkeypatch.setattr(label_set, "remove_label_shards", lambda ls: removed.extend(real(ls)) or removed)
    _, new, todo, _, _ = label(dataset, "clg-v1", "prompts.positive=An empty street", replace=True)
    assert new != old and removed == dataset.shards() and todo == dataset.shards()
    assert labels.hash == new and all(labels.shard_hash(s) == new for s in dataset.shards())


def test_stale_label_shard_is_relabelled_and_never_read_as_current(dataset):
    labels, h, *_ = label(dataset, "clg-v1")
    config = fast_config()
    annotate_shard(ShardTask(dataset.url, "s01", "clg-v1", "0" * 64, config, force=True))  # an interrupted replace's leftover
    with pytest.raises(SchemaError, match="stale label shard"):
        labels.read_shard("s01")
    with pytest.warns(UserWarning, match="1 of 2"):
        assert set(dataset.join("clg-v1")["episode_id"]) == set(dataset.join("clg-v1", shards=["s00"])["episode_id"])
    todo, skipped = plan(dataset, labels, h, force=False)
    assert todo == ["s01"] and skipped == ["s00"]
    annotate_shard(ShardTask(dataset.url, "s01", "clg-v1", h, config))
    assert len(dataset.join("clg-v1")) == 12


def test_an_unreadable_label_shard_is_relabelled_by_the_plan_and_by_its_task(dataset):
    labels, h, *_ = label(dataset, "clg-v1")
    with open(labels.shard_path("s01"), "wb") as f:
        f.write(b"garbage")
    todo, skipped = plan(dataset, labels, h, force=False)
    assert todo == ["s01"] and skipped == ["s00"]
    stats = annotate_shard(ShardTask(dataset.url, "s01", "clg-v1", h, fast_config()))
    assert stats.status == "done" and labels.shard_hash("s01") == h
    assert len(dataset.join("clg-v1")) == 12


def test_record_run_counts_what_is_on_disk(dataset):
    labels, h, *_ = label(dataset, "clg-v1")
    record_run(labels, h, {"worker-a"}, {"done": 2})
    provenance = labels.document()["provenance"]
    assert provenance["counts"] == {"shards": 2, "frames": 12}
    assert "worker-a" in provenance["hosts"] and provenance["last_run"] == {"done": 2}
