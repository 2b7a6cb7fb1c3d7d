"""Annotation of newly collected shards in the background, while the online round keeps collecting.

Each pass is a child process running ``pipeline annotate DATASET --label-set NAME`` with the run's annotate
options: the same command, settings and label-set rules as a manual run. A pass labels every raw shard that
has no current label shard yet (annotate skips the rest), so shards written while a pass runs are picked up
by the next one. Collection never waits for a pass; only the end of a run does, so that nothing it
collected stays unlabelled.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from data_schema.run_lock import die_with_parent
from pipeline.threads import thread_env

__all__ = ["BackgroundAnnotation"]


class BackgroundAnnotation:
    """At most one ``pipeline annotate`` pass at a time; its output goes to ``log_path``.

    A pass runs ``workers`` local workers of ``threads`` torch threads each (``pipeline.threads``), unless
    ``annotate_args`` name a scheduler, workers or threads of their own.
    """

    def __init__(
        self, dataset: str, label_set: str, annotate_args: Sequence[str], log_path: str | Path, workers: int = 1, threads: int = 1
    ) -> None:
        args = list(annotate_args)
        given = {a.split("=")[0] for a in args}
        if not {"--workers", "--scheduler"} & given:
            args += ["--workers", str(workers)]  # training shares the machine: few model-loading workers
        if not {"--threads", "--scheduler"} & given:
            args += ["--threads", str(threads)]
        self.command = [sys.executable, "-m", "pipeline", "annotate", dataset, "--label-set", label_set, *args]
        self._thread_env = thread_env(threads)
        self.log_path = Path(log_path)
        self._process: subprocess.Popen | None = None
        self.passes = 0
        self.failures = 0

    @property
    def running(self) -> bool:
        return self._reap()

    def _reap(self) -> bool:
        """Whether a pass is running; a finished one is forgotten, and counted if it failed."""
        if self._process is None:
            return False
        code = self._process.poll()
        if code is None:
            return True
        if code != 0:
            self.failures += 1
        self._process = None
        return False

    def start(self) -> bool:
        """Start a pass unless one is running; returns whether one was started."""
        if self.running:
            return False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:
            log.write(f"\n=== pass {self.passes + 1}: {' '.join(self.command)}\n")
            log.flush()
            # the pass gets SIGTERM when the trainer dies (even by SIGKILL), so a resumed run never finds an
            # orphaned pass still writing into the label set beside its own
            self._process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self._thread_env}, preexec_fn=functools.partial(die_with_parent, os.getpid()),
            )  # fmt: skip
        self.passes += 1
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the running pass (if any) to end; a failed pass is counted, its log kept."""
        if self._process is not None:
            self._process.wait(timeout=timeout)
            self._reap()

    def stop(self) -> None:
        """End a running pass (the run is failing); annotate writes atomically, so nothing half-done remains."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
