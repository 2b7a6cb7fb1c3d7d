"""The thread budget: how many torch / OpenMP threads each process the pipeline starts gets.

torch gives every process one thread per core, and a thread whose core is busy spins before it sleeps. The
online round runs collection, a background annotation pass and gradient updates on the same cores at once
by design, and on 2 cores the SAC collector ran 22x slower with torch's default than with one thread
(issue 10). So each part gets an explicit count, derived from the cores this process may run on, and the
parts that run at the same time never ask for more than those cores together:

* **collection** (and evaluation rollouts): 1 thread per collecting process. Its network sees one
  observation at a time, too little work to split across threads (``bench/train.py`` measures it);
* **gradient updates**: every core offline; in the online round, the cores the annotation pass leaves
  (half of them, at least 1) unless ``TrainConfig.torch_threads`` says otherwise;
* **annotation**: a pass's local dask workers split the cores it is given (``pipeline annotate --threads``
  per worker; by default the cores divided by the workers, at least 1 each).

Counts reach child processes through ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS``
(read when torch or numpy load there) and this process through ``torch.set_num_threads``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

__all__ = [
    "COLLECTOR_THREADS", "ThreadBudget", "available_cores", "offline_update_threads", "online_budget", "thread_env", "use_threads",
    "worker_threads",
]  # fmt: skip

#: torch threads of a process that collects (one observation per forward pass).
COLLECTOR_THREADS = 1

_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that give a child process ``threads`` torch / OpenMP / BLAS threads."""
    return {name: str(threads) for name in _VARIABLES}


def use_threads(threads: int) -> None:
    """Give this process ``threads`` torch threads, and every child it starts from now on the same count."""
    if threads < 1:
        raise ValueError(f"thread count must be >= 1, got {threads}")
    os.environ.update(thread_env(threads))
    torch = sys.modules.get("torch")  # not loaded yet: it reads the variables above when it loads
    if torch is not None:
        torch.set_num_threads(threads)


def worker_threads(workers: int, cores: int | None = None) -> int:
    """torch threads per worker when ``workers`` processes split the cores."""
    return max(1, (cores or available_cores()) // max(1, workers))


def offline_update_threads(update_threads: int = 0, cores: int | None = None) -> int:
    """Offline updates run alone: every core, unless ``update_threads`` (``TrainConfig.torch_threads``) is set."""
    return update_threads or cores or available_cores()


@dataclass(frozen=True)
class ThreadBudget:
    """Threads of each part of the online round: collection and updates take turns in the trainer process,
    the annotation pass runs beside both."""

    cores: int
    collector: int
    updates: int
    annotation_workers: int
    annotation_threads: int  # per worker

    def describe(self) -> str:
        return (
            f"threads ({self.cores} cores): collection {self.collector}, gradient updates {self.updates}, background "
            f"annotation {self.annotation_workers} worker(s) x {self.annotation_threads}"
        )


def online_budget(update_threads: int = 0, annotation_workers: int = 1, cores: int | None = None) -> ThreadBudget:
    """The online round's budget; ``update_threads`` (``TrainConfig.torch_threads``, 0 for the default) fixes
    the updates' count and the annotation pass gets the cores left, at least 1 thread per worker."""
    cores = cores or available_cores()
    updates = update_threads or max(1, cores // 2)
    return ThreadBudget(
        cores=cores,
        collector=COLLECTOR_THREADS,
        updates=updates,
        annotation_workers=annotation_workers,
        annotation_threads=worker_threads(annotation_workers, max(1, cores - updates)),
    )
