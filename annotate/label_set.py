"""Label-set identity: the spec of everything that determines label values, its content hash, and the rules.

The spec holds prompts, model ids and weight hashes, the precision CLIP and the VLM really ran at (``auto``
resolved: fp32 on a CPU, bf16 on most GPUs), gate settings, the VLM prompt and sampling, the reward parameters and
the schema version; execution settings (devices, batch sizes, URLs, retries of the
transport) are left out, so the same labels computed on another machine get the same hash. The hash is the
sha256 of the spec's canonical JSON.

Rules for ``pipeline annotate DATASET --label-set NAME``:

* a new name: the spec is written and every shard is labelled;
* the same name and spec: shards whose label shard carries the hash are skipped (``--force`` redoes them);
  label shards with another hash (left by an interrupted replace) are redone, never mixed in;
* the same name with another spec: an error listing what changed, unless ``--replace``, which removes the
  old label shards before anything is written under the new hash.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pyarrow.parquet as pq

from data_schema import SCHEMA_VERSION, Dataset, DatasetError, LabelSet
from data_schema.label_sets import spec_hash

from annotate.config import AnnotateConfig, to_mapping
from annotate.vlm import settings_id

#: Fields of each section that say how to compute, not what: left out of the spec and its hash.
EXECUTION_FIELDS = {
    "clip": {"device", "batch_size", "pretrained"},
    "gate": {"device", "batch_size", "weights"},
    "vlm": {
        "backend", "device", "batch_size", "base_url", "api_key_env", "concurrency", "timeout_s",
        "max_http_retries", "backoff_s", "tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype",
    },
}


class LabelSetConflict(DatasetError):
    """The label set exists under the same name with another spec."""


@dataclass(frozen=True)
class ModelIds:
    """What identifies the models' weights (computed where they are loaded: file hashes, not paths)."""

    clip_model: str
    clip_weights: str
    gate_weights: str | None
    clip_precision: str = "fp32"  # what ``clip.precision`` resolved to where the model runs
    vlm_precision: str | None = None  # the VLM backend's ``precision_id``; None without a VLM


def build_spec(config: AnnotateConfig, ids: ModelIds) -> dict[str, Any]:
    """The label-set spec: every setting that determines a label value, and nothing else."""
    sections = to_mapping(config)
    clip = _without(sections["clip"], "clip")
    clip.update(model_id=ids.clip_model, weights_id=ids.clip_weights, precision=ids.clip_precision)
    gate = _without(sections["gate"], "gate")
    gate["fallback"] = config.gate_fallback
    if ids.gate_weights is not None:
        gate["weights_id"] = ids.gate_weights
    if config.vlm.backend == "none":
        vlm: dict[str, Any] = {"enabled": False}
    else:
        vlm = {"enabled": True, "settings_id": settings_id(config.vlm), "precision": ids.vlm_precision, **_without(sections["vlm"], "vlm")}
    return {
        "schema_version": SCHEMA_VERSION,
        "clip": clip,
        "prompts": sections["prompts"],
        "gate": gate,
        "vlm": vlm,
        "reward": sections["reward"],
    }


def spec_diff(old: Any, new: Any, key: str = "") -> list[str]:
    """Human-readable ``key: old -> new`` lines between two specs."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for name in sorted(set(old) | set(new)):
            sub = f"{key}.{name}" if key else name
            if name not in old:
                lines.append(f"{sub}: (absent) -> {_short(new[name])}")
            elif name not in new:
                lines.append(f"{sub}: {_short(old[name])} -> (absent)")
            else:
                lines.extend(spec_diff(old[name], new[name], sub))
        return lines
    return [] if old == new else [f"{key}: {_short(old)} -> {_short(new)}"]


def prepare(dataset: Dataset, name: str, spec: dict[str, Any], replace: bool) -> tuple[LabelSet, str]:
    """Apply the naming rules and write ``label_set.json``; returns the label set and its hash.

    Raises LabelSetConflict when ``name`` exists with another spec and ``replace`` is not set.
    """
    labels = dataset.label_set(name)
    digest = spec_hash(spec)
    previous = labels.document() if labels.exists() else None
    if previous is not None and previous.get("hash") != digest:
        if not replace:
            changes = spec_diff(previous.get("spec", {}), spec) or ["(spec layout changed)"]
            shown = "\n  ".join(changes[:12]) + ("\n  ..." if len(changes) > 12 else "")
            raise LabelSetConflict(
                f"{labels.path}: label set {name!r} exists with another spec (hash {str(previous.get('hash'))[:12]}, "
                f"now {digest[:12]}); changed:\n  {shown}\n"
                f"Pass --replace to discard its {len(labels.shards())} label shard(s), or choose another --label-set name."
            )
        remove_label_shards(labels)
        previous = None
    labels.remove_leftovers()
    created = previous["provenance"]["created"] if previous else _now()
    provenance = dict(previous["provenance"]) if previous else {}
    provenance.update(created=created, updated=_now(), code_version=code_version())
    provenance.setdefault("hosts", [])
    provenance.setdefault("counts", {"shards": 0, "frames": 0})
    labels.write_document({"name": name, "hash": digest, "spec": spec, "provenance": provenance})
    return labels, digest


def remove_label_shards(labels: LabelSet) -> list[str]:
    """Delete every label shard of ``labels`` (``--replace``), leaving its caches alone."""
    fs = labels.dataset.fs
    removed = labels.shards()
    for shard in removed:
        fs.rm(labels.shard_path(shard))
    return removed


def plan(dataset: Dataset, labels: LabelSet, digest: str, force: bool) -> tuple[list[str], list[str]]:
    """``(todo, skipped)`` raw shards: skipped ones already carry a label shard with this hash."""
    todo, skipped = [], []
    for shard in dataset.shards():
        if not force and labels.shard_hash(shard) == digest:
            skipped.append(shard)
        else:
            todo.append(shard)
    return todo, skipped


def record_run(labels: LabelSet, digest: str, hosts: Iterable[str], summary: dict[str, Any]) -> None:
    """Update the provenance after a run: hosts that computed labels, counts on disk, the run's summary."""
    document = labels.document()
    if document.get("hash") != digest:
        raise LabelSetConflict(f"{labels.path}/label_set.json: replaced by another run while this one ran (hash {document.get('hash')})")
    provenance = document["provenance"]
    provenance["hosts"] = sorted(set(provenance.get("hosts", [])) | set(hosts) | {socket.gethostname()})
    provenance["updated"] = _now()
    provenance["counts"] = label_counts(labels)
    provenance["last_run"] = summary
    labels.write_document(document)


def label_counts(labels: LabelSet) -> dict[str, int]:
    """Label shards and rows on disk (rows from Parquet footers only)."""
    frames = 0
    shards = labels.labelled()
    for shard in shards:
        with labels.dataset.fs.open(labels.shard_path(shard), "rb") as f:
            frames += pq.ParquetFile(f).metadata.num_rows
    return {"shards": len(shards), "frames": frames}


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    try:
        version = metadata.version("drive-vlm-rl")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5, check=True
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "annotate", "data_schema"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
            return f"{version}+g{commit}{'.dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass
    return version


def _without(section: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k not in EXECUTION_FIELDS[name]}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
