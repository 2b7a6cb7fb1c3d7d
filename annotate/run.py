"""``pipeline annotate`` orchestration: one dask task per raw shard, a progress bar, and a summary.

Execution: a distributed ``LocalCluster`` sized to the machine by default (one single-threaded worker
process per core, or one per GPU when the models run on CUDA), or an existing cluster given by its
scheduler address. Tasks are idempotent (see ``annotate.shard_task``), so dask may rerun them freely: a
worker that dies has its tasks rescheduled, a task that raises is retried ``task_retries`` times, and
a shard that still fails is reported without stopping the others. Tasks that need a GPU ask for the
worker resource ``GPU``; start GPU workers of your own cluster with ``dask worker ... --resources GPU=1``.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from dask.distributed import Client, LocalCluster, as_completed
from tqdm.auto import tqdm

from data_schema import Dataset
from data_schema.groundtruth import GateQuality
from data_schema.shards import parquet_metadata
from data_schema.storage import remove_leftovers

from annotate import label_set, model_cache
from annotate.config import AnnotateConfig
from annotate.label_set import ModelIds
from annotate.caches import embedding_cache_folder, vlm_cache_folder
from annotate.shard_task import ShardStats, ShardTask, annotate_shard


class ClusterError(RuntimeError):
    """The dask cluster cannot run this annotation consistently."""


@dataclass(frozen=True)
class RunOptions:
    """How to run, as opposed to what to compute (``AnnotateConfig``)."""

    label_set: str
    replace: bool = False
    force: bool = False
    scheduler: str | None = None
    workers: int | None = None
    #: Local workers as processes (default) or as threads of this process (debugging, small datasets).
    processes: bool = True
    progress: bool = True
    #: Environment of local worker processes, on top of dask's: the caller's thread budget
    #: (``OMP_NUM_THREADS``...), which dask would otherwise set to one thread per worker.
    worker_env: Mapping[str, str] = field(default_factory=dict)
    #: Raw shards that cannot be read are listed and left unlabelled instead of failing the run.
    skip_bad: bool = False

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.scheduler is not None and self.workers is not None:
            raise ValueError("--workers sizes the local cluster; it cannot be combined with --scheduler")


@dataclass
class RunSummary:
    """What a run did; ``lines()`` is what the CLI prints."""

    label_set: str
    hash: str
    shards: int = 0
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)  # unreadable raw shards left unlabelled (--skip-bad)
    seconds: float = 0.0
    #: Of ``seconds``: starting the cluster and loading the models on a first worker, before any shard ran.
    startup_seconds: float = 0.0
    #: torch threads of each worker, read back from the worker once its models loaded.
    worker_threads: dict[str, int] = field(default_factory=dict)
    stats: list[ShardStats] = field(default_factory=list)
    #: The gate decided from the scene's agents: the very corridor test its quality is measured with.
    gate_from_scene: bool = True

    def add(self, stats: ShardStats) -> None:
        self.stats.append(stats)
        if stats.status == "skipped":
            self.skipped += 1
        elif stats.status == "bad":
            self.bad[stats.shard] = stats.error
        else:
            self.done += 1

    def total(self, name: str) -> int:
        """A ``ShardStats`` counter summed over the shards this run labelled (a skipped one counts nothing)."""
        return sum(getattr(s, name) for s in self.stats if s.status == "done")

    @property
    def frames(self) -> int:
        return self.total("frames")

    @property
    def gated(self) -> int:
        return self.total("gated")

    @property
    def hosts(self) -> set[str]:
        return {s.host for s in self.stats}

    @property
    def gate_quality(self) -> GateQuality:
        """The gate against the scene corridor's ground truth, over the shards this run labelled."""
        return sum((s.gate_quality for s in self.stats if s.status == "done"), GateQuality())

    @property
    def gate_share(self) -> float:
        return self.gated / self.frames if self.frames else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly counts (stored as the label set's ``last_run``)."""
        return {
            "shards": self.shards, "done": self.done, "skipped": self.skipped, "failed": dict(self.failed), "bad": dict(self.bad),
            "frames": self.frames, "gated": self.gated, "gate_share": self.gate_share,
            "gate_recall": self.gate_quality.recall, "gate_precision": self.gate_quality.precision,
            "vlm_calls": self.total("vlm_calls"), "vlm_ok": self.total("vlm_ok"), "vlm_cache_hits": self.total("vlm_cache_hits"),
            "images_encoded": self.total("images_encoded"), "seconds": round(self.seconds, 3),
            "startup_seconds": round(self.startup_seconds, 3),
        }

    def lines(self) -> list[str]:
        def pct(value: float | None) -> str:
            return "n/a" if value is None else f"{100 * value:.1f} %"

        rate = self.frames / self.seconds if self.seconds else 0.0
        out = [
            f"label set {self.label_set} ({self.hash[:12]}): {self.done} shard(s) labelled, {self.skipped} skipped, "
            f"{len(self.failed)} failed, {f'{len(self.bad)} unreadable, ' if self.bad else ''}of {self.shards}",
            f"frames {self.frames} in {self.seconds:.1f} s ({rate:.1f} frames/s, {self.startup_seconds:.1f} s of it starting "
            f"workers and models); images encoded {self.total('images_encoded')}, embeddings from cache {self.total('embedding_cache_hits')}",
            f"gate: {self.gated} frames ({pct(self.gate_share)}), "
            + ("from the scene's agents (the ground truth itself: recall and precision are 1 by construction)" if self.gate_from_scene
               else f"recall {pct(self.gate_quality.recall)}, precision {pct(self.gate_quality.precision)} against the scene ground truth"),
            f"VLM: {self.total('vlm_calls')} call(s), {self.total('vlm_ok')} valid answer(s) for gated frames, "
            f"{self.total('vlm_cache_hits')} from cache",
            f"workers: {len(self.worker_threads)}, torch threads per worker: "
            f"{', '.join(str(n) for n in sorted(set(self.worker_threads.values()))) or '-'}",
        ]
        out += [f"FAILED {shard}: {error}" for shard, error in sorted(self.failed.items())]
        out += [f"SKIPPED unreadable {shard}: {error}" for shard, error in sorted(self.bad.items())]
        return out


def annotate_dataset(dataset_url: str, config: AnnotateConfig, options: RunOptions) -> RunSummary:
    """Label every raw shard of a dataset under ``options.label_set``; see the module docstring."""
    started = time.perf_counter()
    dataset = Dataset.open(dataset_url, options.skip_bad)
    camera = config.gate.source == "camera" and dataset_has_camera(dataset)
    gpu = _wants_gpu(config, camera, local=options.scheduler is None)
    resources = {"GPU": 1} if gpu else None
    with _client(options, gpu) as client:
        ids = _load_models(client, config, camera, resources)
        worker_threads = client.run(_torch_threads)
        spec = label_set.build_spec(config, ids)
        labels, digest = label_set.prepare(dataset, options.label_set, spec, options.replace)
        _clean_caches(dataset, config, ids)
        todo, skipped = label_set.plan(dataset, labels, digest, options.force)
        summary = RunSummary(
            options.label_set, digest, shards=len(todo) + len(skipped), skipped=len(skipped), worker_threads=worker_threads,
            gate_from_scene=not camera,
        )
        summary.startup_seconds = time.perf_counter() - started
        url = dataset.fs.unstrip_protocol(dataset.path)
        futures = {
            client.submit(
                annotate_shard,
                ShardTask(url, shard, options.label_set, digest, config, options.force, options.skip_bad),
                key=f"annotate-{digest[:12]}-{shard}",
                retries=config.task_retries,
                resources=resources,
                pure=False,
            ): shard
            for shard in todo
        }
        with tqdm(total=len(futures), desc=f"annotate {options.label_set}", unit="shard", disable=not options.progress) as bar:
            for future in as_completed(futures):
                shard = futures[future]
                try:
                    summary.add(future.result())
                except Exception as error:  # a task failure is reported per shard; the others go on
                    summary.failed[shard] = f"{type(error).__name__}: {error}"
                elapsed = time.perf_counter() - started
                bar.set_postfix(frames_s=f"{summary.frames / elapsed:.1f}", gated=f"{100 * summary.gate_share:.0f}%", failed=len(summary.failed))
                bar.update()
    summary.seconds = time.perf_counter() - started
    label_set.record_run(labels, digest, summary.hosts - {""}, summary.as_dict())
    return summary


def dataset_has_camera(dataset: Dataset) -> bool:
    """Whether any raw shard holds camera frames, from Parquet footer statistics where they exist."""
    for _, meta in dataset.readable(dataset.shards(), lambda shard: parquet_metadata(dataset.fs, dataset.shard_path(shard))):
        index = next(j for j in range(meta.num_columns) if meta.schema.column(j).path == "camera")
        for g in range(meta.num_row_groups):
            column = meta.row_group(g).column(index)
            stats = column.statistics
            if stats is None or not stats.has_null_count or stats.null_count < meta.row_group(g).num_rows:
                return True
    return False


def _load_models(client: Client, config: AnnotateConfig, camera: bool, resources: dict[str, int] | None) -> ModelIds:
    """Load the models on every eligible worker at once, and check that they all load the same weights.

    Loading up front, in parallel, keeps model loading out of the shard tasks' time; a worker whose weight
    files differ from the others' (same path, other bytes) would mix labels, so it is an error.
    """
    workers = client.scheduler_info(n_workers=-1)["workers"]
    eligible = [
        address for address, info in workers.items()
        if all(info.get("resources", {}).get(name, 0) >= amount for name, amount in (resources or {}).items())
    ]
    futures = {
        address: client.submit(_model_ids, config, camera, workers=[address], allow_other_workers=True, resources=resources, pure=False)
        for address in eligible
    } or {"any worker": client.submit(_model_ids, config, camera, resources=resources, pure=False)}
    found = dict(zip(futures, client.gather(list(futures.values()))))
    if len(set(found.values())) > 1:
        listing = "; ".join(f"{address}: {ids}" for address, ids in found.items())
        raise ClusterError(f"workers load different model weights, their labels would not agree: {listing}")
    return next(iter(found.values()))


def _model_ids(config: AnnotateConfig, camera: bool) -> ModelIds:
    """Runs on a worker: loads the models there (they stay cached for its tasks) and reports their identity.

    The VLM is loaded here too, so a wrong model path, server or key stops the run before any shard runs.
    """
    pathway = model_cache.static_pathway(config.clip)
    vlm = model_cache.vlm_backend(config.vlm)
    gate_weights = model_cache.camera_gate(config.gate).weights_id if camera else None
    return ModelIds(
        clip_model=pathway.model_id, clip_weights=pathway.weights_id, gate_weights=gate_weights, clip_precision=pathway.precision_id,
        vlm_precision=vlm.precision_id if vlm is not None else None,
    )  # fmt: skip


def _torch_threads() -> int:
    """Runs on a worker: its torch thread count."""
    import torch  # heavy, and loaded on the worker already by its models


    return torch.get_num_threads()


def _clean_caches(dataset: Dataset, config: AnnotateConfig, ids: ModelIds) -> None:
    """Remove ``*.tmp`` files crashed writers left in this run's cache folders."""
    folders = [embedding_cache_folder(dataset, ids.clip_model, ids.clip_weights, ids.clip_precision)]
    if config.vlm.backend != "none":
        folders.append(vlm_cache_folder(dataset, config, ids.vlm_precision or ""))
    for folder in folders:
        remove_leftovers(dataset.fs, folder)


def _wants_gpu(config: AnnotateConfig, camera: bool, local: bool) -> bool:
    """Whether tasks must run on GPU workers: a device naming CUDA, or ``auto`` on a local machine with CUDA."""
    devices = [config.clip.device] + ([config.gate.device] if camera else [])
    if config.vlm.backend in ("transformers", "vllm"):
        devices.append(config.vlm.device if config.vlm.backend == "transformers" else "cuda")
    if any(d.startswith("cuda") for d in devices):
        return True
    if local and "auto" in devices:
        import torch

        return torch.cuda.is_available()
    return False


@contextlib.contextmanager
def _client(options: RunOptions, gpu: bool) -> Iterator[Client]:
    if options.scheduler is not None:
        try:
            client = Client(options.scheduler, timeout="30s")
        except (OSError, TimeoutError) as error:
            raise ConnectionError(f"--scheduler {options.scheduler}: cannot reach the dask scheduler ({error})") from error
        with client:
            yield client
        return
    if gpu and options.processes:
        import torch

        cluster: LocalCluster = _GpuLocalCluster(torch.cuda.device_count(), options.workers, options.worker_env)
    else:
        n = options.workers or os.cpu_count() or 1
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=options.processes, dashboard_address=":0",
            resources={"GPU": 1} if gpu else None, **({"env": dict(options.worker_env)} if options.processes else {}),
        )
    with cluster, Client(cluster) as client:
        yield client


class _GpuLocalCluster(LocalCluster):
    """Local workers for CUDA models: worker i sees only GPU ``i mod n`` and offers the resource ``GPU=1``."""

    def __init__(self, gpus: int, workers: int | None, env: Mapping[str, str]) -> None:
        self._gpus = max(gpus, 1)
        n = workers or self._gpus
        super().__init__(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=":0", resources={"GPU": 1}, env=dict(env))
        self.scale(n)

    def new_worker_spec(self) -> dict[Any, dict[str, Any]]:
        ((name, spec),) = super().new_worker_spec().items()
        options = dict(spec["options"])
        options["env"] = {**options.get("env", {}), "CUDA_VISIBLE_DEVICES": str(int(name) % self._gpus)}
        return {name: {**spec, "options": options}}
