"""Where model weights come from and what identifies them, shared by the CLIP and YOLO wrappers.

Label-set hashes and embedding caches are keyed by *what the weights are*, not by where they were found, so
every weight file is identified by a hash of its bytes.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import torch

_CHUNK = 1 << 22


class WeightsError(RuntimeError):
    """Model weights are missing, unreadable or cannot be downloaded here."""


def cache_dir() -> Path:
    """The project's cache folder (``$DRIVE_VLM_RL_CACHE`` or ``~/.cache/drive-vlm-rl``), created on demand."""
    path = Path(os.environ.get("DRIVE_VLM_RL_CACHE") or Path.home() / ".cache" / "drive-vlm-rl")
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_digest(path: str | os.PathLike, length: int = 16) -> str:
    """``sha256-<hex>`` of a file's bytes, truncated to ``length`` hex digits (64 bits by default)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise WeightsError(f"cannot read weights file {path}: {error}") from error
    return f"sha256-{digest.hexdigest()[:length]}"


def existing_file(path: str | os.PathLike, what: str, option: str) -> Path:
    """``path`` as a Path if it is a file, else a WeightsError naming the option that set it."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise WeightsError(f"{what} not found: {resolved} (set by {option})")
    return resolved


def resolve_device(device: str) -> torch.device:
    """``auto`` → the first CUDA device if there is one, else the CPU; anything else as torch parses it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise WeightsError(f"device '{device}' requested but torch sees no CUDA device")
    return resolved


def host_reachable(host: str, port: int = 443, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout_s``.

    Download libraries retry an unreachable hub for a minute or more; probing first lets an offline
    machine fail in seconds with advice instead.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
