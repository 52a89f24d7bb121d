"""Faults a long run meets, made on purpose: what the fault campaign (scripts/fault_campaign.py)
and the guards' tests (tests/test_faults.py) inject into small real runs.

Each function makes one fault and nothing else; whether the run survives it is for the caller
to check.
"""

from __future__ import annotations

import io
import resource
import shutil
import signal
import tarfile
from pathlib import Path

import numpy as np


def poison_shards(source: Path, out: Path, names: list[str] | None = None) -> Path:
    """A copy of the shard folder `source` at `out` whose `names` shards (default: every train
    shard) hold NaN features in every sample: the losses of the batches that draw them are NaN."""
    shutil.copytree(source, out)
    for name in names or sorted(p.name for p in Path(out).glob("train-*.tar")):
        path = Path(out) / name
        members = []
        with tarfile.open(path) as tar:
            for info in tar.getmembers():
                data = tar.extractfile(info).read()
                if info.name.endswith(".features.npy"):
                    array = np.load(io.BytesIO(data))
                    buffer = io.BytesIO()
                    np.save(buffer, np.full_like(array, np.nan))
                    data = buffer.getvalue()
                    info.size = len(data)
                members.append((info, data))
        with tarfile.open(path, "w") as tar:
            for info, data in members:
                tar.addfile(info, io.BytesIO(data))
    return Path(out)


def truncate(path: Path, keep: float = 0.5) -> int:
    """Cut the file at `path` to `keep` of its size (a copy or a write cut short); the new size."""
    size = int(Path(path).stat().st_size * keep)
    with open(path, "r+b") as file:
        file.truncate(size)
    return size


def file_size_limit(limit: int):
    """A `preexec_fn` for subprocess: no file of the child may grow past `limit` bytes, and a
    write past it fails (EFBIG) rather than killing the process (SIGXFSZ ignored) - a disk that
    fills, for one process, without a file system of its own."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply
