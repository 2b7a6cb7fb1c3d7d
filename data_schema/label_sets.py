"""Label sets on disk: ``labels/<name>/label_set.json`` and one label shard per raw shard.

``label_set.json`` holds the spec of everything that determines the labels' values, its content hash, and
provenance. Readers take it as a typed :class:`LabelSetInfo`, read once, rather than digging into the
JSON, and checked: a spec that no longer hashes to its recorded hash (edited by hand) is refused, since
the label shards were computed from the spec the hash names, not from the edit. annotate, which writes
the file, reads and writes the raw document. Each label shard carries the hash in
its Parquet metadata, so a stale shard is detected, never mixed in.

"Labelled" has one meaning everywhere: a raw shard is labelled when its label shard exists *and* carries
the label set's current hash (:meth:`LabelSet.labelled`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa

from data_schema import shards
from data_schema.errors import DatasetError, SchemaError
from data_schema.groundtruth import Corridor
from data_schema.naming import check_name
from data_schema.reward import RewardConfig
from data_schema.settings import build
from data_schema.storage import atomic_write_bytes, remove_leftovers

if TYPE_CHECKING:
    from data_schema.dataset import Dataset

__all__ = ["LabelSet", "LabelSetInfo", "canonical_json", "spec_hash"]

SHARD_SUFFIX = ".parquet"
INFO_FILE = "label_set.json"


def canonical_json(spec: dict[str, Any]) -> str:
    """The spec as canonical JSON: sorted keys, no whitespace, exact float reprs (what the hash is of)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def spec_hash(spec: dict[str, Any]) -> str:
    """sha256 of the spec's canonical JSON: a label set's identity."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


@dataclass(frozen=True)
class LabelSetInfo:
    """``label_set.json`` as read once: the label set's name, hash, spec sections and provenance."""

    path: str
    name: str
    hash: str
    spec: dict[str, Any]
    provenance: dict[str, Any]

    @classmethod
    def from_document(cls, path: str, document: Any) -> "LabelSetInfo":
        if not isinstance(document, dict):
            raise DatasetError(f"{path}: expected a JSON object, got {type(document).__name__}")
        missing = [k for k in ("name", "hash", "spec") if k not in document]
        if missing:
            raise DatasetError(f"{path}: missing key(s) {missing}; not written by `pipeline annotate`?")
        if not isinstance(document["spec"], dict):
            raise DatasetError(f"{path}: 'spec' must be a JSON object")
        try:
            actual = spec_hash(document["spec"])
        except ValueError as error:  # NaN or infinity in the spec: not canonical JSON
            raise DatasetError(f"{path}: spec is not canonical JSON ({error})") from error
        if actual != document["hash"]:
            raise DatasetError(
                f"{path}: the spec does not match its hash (recorded {str(document['hash'])[:12]}, the spec hashes to "
                f"{actual[:12]}): the file was edited after annotation, and its labels were computed from another spec. "
                "Undo the edit, or annotate under a new --label-set name with the settings you want"
            )
        return cls(path, str(document["name"]), str(document["hash"]), document["spec"], dict(document.get("provenance") or {}))

    def section(self, name: str) -> dict[str, Any]:
        """One section of the spec (``clip``, ``prompts``, ``gate``, ``vlm``, ``reward``); empty when absent."""
        value = self.spec.get(name) or {}
        if not isinstance(value, dict):
            raise DatasetError(f"{self.path}: spec.{name} must be a JSON object")
        return value

    @property
    def reward(self) -> RewardConfig:
        """The reward parameters the labels were synthesised with (``--reward-from-components`` starts here)."""
        if "reward" not in self.spec:
            raise DatasetError(f"{self.path}: holds no reward parameters (spec.reward); cannot recompute rewards")
        return build(RewardConfig, self.section("reward"), f"{self.path}: spec.reward")

    @property
    def corridor(self) -> Corridor:
        """The corridor the gate was scored against; settings the spec lacks take their defaults."""
        gate = self.section("gate")
        names = {"corridor_length": "length", "corridor_half_width": "half_width", "critical_kinds": "kinds"}
        return build(Corridor, {ours: gate[theirs] for theirs, ours in names.items() if theirs in gate}, f"{self.path}: spec.gate")

    @property
    def vlm_enabled(self) -> bool:
        return bool(self.section("vlm").get("enabled", True))


@dataclass(frozen=True)
class LabelSet:
    """One label set of a dataset: ``labels/<name>/``."""

    dataset: "Dataset"
    name: str

    @property
    def path(self) -> str:
        return f"{self.dataset.path}/labels/{self.name}"

    @property
    def info_path(self) -> str:
        return f"{self.path}/{INFO_FILE}"

    def shard_path(self, shard: str) -> str:
        """The label shard of raw shard ``shard``; a name that is not a shard name never becomes a path."""
        return f"{self.path}/{check_name('shard', shard)}{SHARD_SUFFIX}"

    def exists(self) -> bool:
        return self.dataset.fs.exists(self.info_path)

    def document(self) -> dict[str, Any]:
        """The raw ``label_set.json`` (for annotate, which writes it); readers use :meth:`info`."""
        if not self.dataset.fs.exists(self.info_path):
            raise DatasetError(f"{self.info_path}: label set {self.name!r} does not exist; known: {self.dataset.label_sets()}")
        try:
            with self.dataset.fs.open(self.info_path, "r") as f:
                return json.load(f)
        except ValueError as e:  # invalid JSON or not UTF-8 text
            raise DatasetError(f"{self.info_path}: not valid JSON ({e})") from e
        except OSError as e:
            raise DatasetError(f"{self.info_path}: cannot read ({e.strerror or e})") from e

    def info(self) -> LabelSetInfo:
        return LabelSetInfo.from_document(self.info_path, self.document())

    @property
    def hash(self) -> str:
        return self.info().hash

    def write_document(self, document: dict[str, Any]) -> None:
        if "hash" not in document:
            raise DatasetError(f"{self.info_path}: a label-set document needs a 'hash'")
        atomic_write_bytes(self.dataset.fs, self.info_path, json.dumps(document, indent=2, sort_keys=True).encode())

    def shards(self) -> list[str]:
        """Names of the label shards present, whatever hash they carry (tmp files of writers are not listed)."""
        return self.dataset._list_shards(self.path)

    def shard_hash(self, shard: str) -> str | None:
        """The label-set hash a label shard was written for; None when it is absent or unreadable (a shard to
        label again)."""
        path = self.shard_path(shard)
        if not self.dataset.fs.exists(path):
            return None
        try:
            meta = shards.shard_metadata(self.dataset.fs, path)
        except SchemaError:
            return None
        return meta.get(shards.META_LABEL_SET_HASH, b"").decode() or None

    def labelled(self, raw_shards: Sequence[str] | None = None, label_set_hash: str | None = None) -> list[str]:
        """The raw shards (of ``raw_shards``, default all, in that order) whose label shard carries the current
        hash (``label_set_hash`` when the caller read it already); an absent label set labels nothing."""
        wanted = list(raw_shards) if raw_shards is not None else self.dataset.shards()
        if label_set_hash is None:
            if not self.exists():
                return []
            label_set_hash = self.hash
        present = set(self.shards())
        return [s for s in wanted if s in present and self.shard_hash(s) == label_set_hash]

    def select(self, raw_shards: Sequence[str], missing: str = "skip", label_set_hash: str | None = None) -> list[str]:
        """The labelled shards of ``raw_shards``; the others are left out with a warning (``missing="skip"``)
        or refused (``missing="error"``), naming how many."""
        if missing not in ("skip", "error"):
            raise ValueError(f"missing must be 'skip' or 'error', got {missing!r}")
        done = set(self.labelled(raw_shards, label_set_hash if label_set_hash is not None else self.hash))
        absent = [s for s in raw_shards if s not in done]
        if absent and missing == "error":
            shown = f"{absent[:5]}{'...' if len(absent) > 5 else ''}"
            raise DatasetError(f"{self.path}: no label shard with the current hash for raw shard(s) {shown}")
        if absent:
            warnings.warn(
                f"label set {self.name!r} has no current labels for {len(absent)} of {len(raw_shards)} shard(s) (not "
                "labelled yet, or labelled under another hash); they are left out",
                stacklevel=3,
            )
        return [s for s in raw_shards if s in done]

    def write_shard(self, shard: str, table: pa.Table, label_set_hash: str) -> None:
        shards.write_shard(self.dataset.fs, self.shard_path(shard), table, "labels", label_set_hash)

    def read_shard(self, shard: str, columns: Sequence[str] | None = None, label_set_hash: str | None = None) -> pa.Table:
        """A label shard, checked against this label set's hash so that stale labels are never mixed in.

        Loops over shards pass the hash they read once (``label_set_hash``) instead of re-reading the spec.
        """
        expected = label_set_hash if label_set_hash is not None else self.hash
        return shards.read_shard(self.dataset.fs, self.shard_path(shard), "labels", columns, label_set_hash=expected)

    def remove_leftovers(self) -> list[str]:
        return remove_leftovers(self.dataset.fs, self.path)
