"""Dask execution: a separate scheduler process gives the local cluster's labels; a killed worker loses nothing."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from dask.distributed import Client

from annotate import model_cache
from annotate.run import RunOptions, annotate_dataset
from annotate_fixtures import fast_config, sumo_dataset  # noqa: F401
from data_schema import Dataset

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scheduler():
    """``dask scheduler`` and two ``dask worker`` processes on loopback, as a user would start them."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    port = address.rsplit(":", 1)[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = open(os.devnull, "w")
    procs = [subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", port, "--dashboard-address", ":0"], stdout=logs, stderr=logs, env=env)]
    procs += [
        subprocess.Popen(
            ["dask", "worker", address, "--nworkers", "1", "--nthreads", "1", "--dashboard-address", ":0", "--name", f"w{i}"],
            stdout=logs, stderr=logs, env=env,
        )
        for i in range(2)
    ]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        logs.close()


def assert_same_labels(a: Dataset, b: Dataset, name: str) -> None:
    la, lb = a.label_set(name), b.label_set(name)
    assert la.hash == lb.hash and la.shards() == lb.shards() == a.shards()
    for shard in a.shards():
        ta, tb = la.read_shard(shard), lb.read_shard(shard)
        for column in ta.column_names:
            if pa.types.is_floating(ta.schema.field(column).type):
                np.testing.assert_allclose(ta.column(column).to_numpy(), tb.column(column).to_numpy(), atol=1e-6, err_msg=column)
            else:
                assert ta.column(column).equals(tb.column(column)), column


def test_separate_scheduler_gives_the_labels_of_the_local_cluster_with_models_loaded_once_per_worker(scheduler, sumo_dataset, tmp_path):
    local = Dataset.open(str(shutil.copytree(sumo_dataset.path, tmp_path / "local")))
    remote = Dataset.open(str(shutil.copytree(sumo_dataset.path, tmp_path / "remote")))
    config = fast_config()
    shards = len(sumo_dataset.shards())
    frames = sum(sumo_dataset.read_shard(s, ["step"]).num_rows for s in sumo_dataset.shards())

    # each worker process runs the torch threads it was given (dask alone would give it 1), read back from it
    threads = min(2, len(os.sched_getaffinity(0)))
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    summary = annotate_dataset(local.url, config, RunOptions("clg", workers=2, progress=False, worker_env=env))
    assert summary.done == shards and not summary.failed
    assert list(summary.worker_threads.values()) == [threads, threads]
    assert f"workers: 2, torch threads per worker: {threads}" in summary.lines()
    summary = annotate_dataset(remote.url, config, RunOptions("clg", scheduler=scheduler, progress=False))
    assert summary.done == shards and not summary.failed and summary.frames == frames and summary.gated > 0
    assert_same_labels(local, remote, "clg")

    assert {stats.models_loaded for stats in summary.stats} == {0}  # tasks reuse the models their worker loaded
    again = annotate_dataset(remote.url, config, RunOptions("clg", scheduler=scheduler, progress=False))
    assert again.done == 0 and again.skipped == shards
    with Client(scheduler) as client:
        assert set(client.run(model_cache.loads).values()) == {1}  # CLIP loaded once in each worker process, for both runs


def test_a_worker_killed_mid_run_is_replaced_and_every_shard_is_labelled_exactly_once(scheduler, sumo_dataset, tmp_path):
    dataset = Dataset.open(str(shutil.copytree(sumo_dataset.path, tmp_path / "ds")))
    config = fast_config("prompts.positive=A quiet street")  # a label set the workers have not seen: fresh work
    result: dict = {}
    run = threading.Thread(
        target=lambda: result.update(summary=annotate_dataset(dataset.url, config, RunOptions("killed", scheduler=scheduler, progress=False)))
    )
    killed: tuple[int, str] | None = None
    with Client(scheduler, timeout=60) as client:
        pids = client.run(os.getpid)
        run.start()
        deadline = time.monotonic() + 300
        while killed is None and run.is_alive() and time.monotonic() < deadline:
            for worker, keys in client.processing().items():
                shards = [str(k).split("-", 2)[2] for k in keys if str(k).startswith("annotate-")]
                if shards:
                    killed = (pids[worker], shards[0])
                    os.kill(pids[worker], signal.SIGKILL)
                    break
            time.sleep(0.2)
        run.join(timeout=600)
    assert killed is not None, "the run ended before a worker could be killed mid-task"
    summary = result["summary"]
    assert not summary.failed and summary.done == len(dataset.shards())
    labelled = [stats.shard for stats in summary.stats]
    assert sorted(labelled) == dataset.shards()  # each shard reported once
    rerun = next(stats for stats in summary.stats if stats.shard == killed[1])
    assert rerun.pid != killed[0]  # the killed task was rescheduled on a live worker
    labels = dataset.label_set("killed")
    assert labels.shards() == dataset.shards()
    for shard in dataset.shards():
        assert labels.read_shard(shard).num_rows == dataset.read_shard(shard, ["step"]).num_rows


def test_local_gpu_workers_each_see_one_device_and_offer_the_gpu_resource():
    from annotate.run import _GpuLocalCluster

    with _GpuLocalCluster(gpus=2, workers=3, env={"OMP_NUM_THREADS": "7"}) as cluster, Client(cluster) as client:
        client.wait_for_workers(3, timeout=120)
        seen = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("OMP_NUM_THREADS")))
        resources = {info["resources"].get("GPU") for info in client.scheduler_info(n_workers=-1)["workers"].values()}
    assert sorted(seen.values()) == [("0", "7"), ("0", "7"), ("1", "7")] and resources == {1}  # the thread budget reaches them too


@pytest.mark.gpu
def test_cuda_labels_agree_with_cpu_labels(sumo_dataset, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cpu = Dataset.open(str(shutil.copytree(sumo_dataset.path, tmp_path / "cpu")))
    gpu = Dataset.open(str(shutil.copytree(sumo_dataset.path, tmp_path / "gpu")))
    annotate_dataset(cpu.url, fast_config(), RunOptions("clg", workers=1, progress=False))
    summary = annotate_dataset(gpu.url, fast_config("clip.device=cuda", "clip.precision=fp32"), RunOptions("clg", progress=False))
    assert summary.done == len(gpu.shards()) and not summary.failed
    for shard in cpu.shards():
        a, b = cpu.label_set("clg").read_shard(shard), gpu.label_set("clg").read_shard(shard)
        np.testing.assert_allclose(a.column("sim_pos").to_numpy(), b.column("sim_pos").to_numpy(), atol=1e-3)
        assert a.column("gate").equals(b.column("gate"))
