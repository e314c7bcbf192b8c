"""Small helpers used across the stages: seeding, device choice, and safe JSON files."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minillm.errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """Turn 'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' into a torch.device, checking it exists."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}: CUDA is not available here; use --device cpu or auto")
    if device == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ConfigError("device='mps': Apple's MPS backend is not available here; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda") and device != "mps":
        raise ConfigError(f"device={device!r}: expected one of auto, cpu, cuda, cuda:N, mps")
    return torch.device(device)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that a reader sees either the old content or the new, never half of it.

    We write to a temporary file in the same folder, flush it to disk (fsync), then rename it over
    the target: a rename within one file system is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def spread_rows(rows: list, n: int) -> list:
    """About `n` rows taken evenly from `rows`, always including the last one, each once: a log to print."""
    shown = rows[:: max(1, len(rows) // n)]
    return shown if not rows or shown[-1] is rows[-1] else shown + rows[-1:]
