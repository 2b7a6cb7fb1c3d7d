"""One writer per run id, and writer processes that never outlive their run.

A collection run (``pipeline collect``, an online training run) owns its run id: it alone writes the run's
shards and removes the run's leftover tmp files. Two guards make that a fact rather than a convention:

* :class:`RunLock`: an exclusive ``flock`` on ``<root>/locks/<run_id>.lock``, held while the run writes. A
  second writer of the same run id fails at once with an error naming the run and the holder (pid, host).
  The kernel drops the lock when its holder dies, however it dies, so a crashed run never blocks its rerun.
* the worker fence: worker processes hold a shared lock on ``<run_id>.workers`` for as long as they live
  (:func:`join_run`), and die with their parent (:func:`die_with_parent`). A run takes that lock exclusively
  before it lists what the run holds, so a rerun waits until every survivor of a killed run has exited:
  whatever a survivor was still writing is on disk (and skipped) or gone (and collected again), never both.

Datasets behind fsspec URLs that are not local files (object stores) have no file locks: their lock files
live in this machine's temporary directory, keyed by the dataset URL, so they keep out writers on this
machine only. Writers of one run id on two machines are still caught afterwards: readers refuse an episode
found in two shards (``Dataset.episode_index``).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import fcntl
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from data_schema.errors import RunLockedError
from data_schema.naming import check_run_id

__all__ = ["RunLock", "die_with_parent", "join_run"]

_PR_SET_PDEATHSIG = 1
#: File descriptors of the fences this process has joined: open (and locked) until the process exits.
_joined: list[int] = []


class RunLock:
    """Held while a run writes: ``with RunLock(folder, run_id): ...``; see the module docstring."""

    def __init__(self, folder: str | Path, run_id: str, survivor_wait_s: float = 120.0) -> None:
        self.folder = Path(folder)
        self.run_id = check_run_id(run_id)
        self.survivor_wait_s = survivor_wait_s
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / f"{self.run_id}.lock"

    @property
    def fence(self) -> Path:
        """The file worker processes of the run hold a shared lock on (:func:`join_run`)."""
        return self.folder / f"{self.run_id}.workers"

    def __enter__(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 400, 0).decode(errors="replace").strip() or "a process that recorded nothing yet"
            os.close(fd)
            raise RunLockedError(
                f"run {self.run_id!r} is being written by another process ({holder}; lock {self.path}): one writer per run "
                "id, or the two would write the same episodes twice. Wait for it to finish, stop it, or choose another --run-id"
            ) from None
        try:
            stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}".encode(), 0)
            self._wait_for_survivors()
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def _wait_for_survivors(self) -> None:
        """Block until no process of an earlier run holds the fence (they die with their parent, so this is short)."""
        fd = os.open(self.fence, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.survivor_wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RunLockedError(
                            f"run {self.run_id!r}: worker processes of an earlier run are still alive after "
                            f"{self.survivor_wait_s:.0f} s (they hold {self.fence}; `fuser {self.fence}` lists them); "
                            "stop them before collecting this run again"
                        ) from None
                    time.sleep(0.1)
        finally:
            os.close(fd)


def join_run(fence: str | Path) -> None:
    """In a worker process: hold a shared lock on the run's fence until this process exits."""
    fd = os.open(fence, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _joined.append(fd)


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Linux: this process gets ``sig`` when its parent dies (even by SIGKILL), so no child of a killed run
    goes on writing beside the rerun. Exits at once if the parent died already (before the request took hold).

    The signal follows the parent *thread* that started this process; callers start their children from the
    main thread. Elsewhere than Linux this only does the exit check.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent_pid:
        os._exit(1)
