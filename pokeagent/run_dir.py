"""The run directory's layout: what `pokeagent train` writes, and `eval`, `status` and `demo` read.

    runs/small/
      config.json                  the resolved run config + DeepSpeed config (rewritten at each save)
      job.json                     when the current job started and must stop
      writer.lock                  the job writing here (host, pid, job id): one writer at a time
      metrics.jsonl                a record per optimizer step, validation (`"val": true`) and
                                   battle evaluation (`"battles": true`)
      tb/                          TensorBoard
      checkpoints/latest           the tag of the last checkpoint (`best`: of the best validation)
      checkpoints/step00000100/    DeepSpeed state, rank<r>.pt per rank, model.safetensors and,
                                   written last, manifest.json (its files and their sizes)
      eval/battles-step100/        `pokeagent eval battles` of that step (offline-step100/ likewise)

Only this module spells those names; everything else asks a `RunDir`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CHECKPOINTS = "checkpoints"
LATEST = "latest"
BEST = "best"
LATEST_UNIVERSAL = "latest_universal"
"""DeepSpeed's pointer to the universal checkpoint to load (resume on another world size)."""
WEIGHTS = "model.safetensors"
"""A checkpoint's plain fp32 weights (with the model config in its metadata)."""
METRICS = "metrics.jsonl"
CONFIG = "config.json"
JOB = "job.json"
WRITER_LOCK = "writer.lock"
"""Held by the job that writes the run (pokeagent/writer_lock.py)."""
CHECKPOINT_MANIFEST = "manifest.json"
"""A checkpoint's files and sizes, written once all of them are: a folder without it (or whose
files differ from it) is incomplete (train/checkpoint.py)."""
TENSORBOARD = "tb"
EVAL = "eval"
_STEP = "step"


def tag_of(step: int) -> str:
    """The checkpoint tag of an optimizer step: `step00000100`."""
    return f"{_STEP}{step:08d}"


def step_of(tag: str) -> int:
    """The optimizer step of a checkpoint tag (`step00000100` -> 100)."""
    return int(tag.removeprefix(_STEP))


def read_pointer(ckpt_dir: Path, name: str) -> str | None:
    """The tag a pointer file (`latest`, `best`) names, or None."""
    path = Path(ckpt_dir) / name
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def write_pointer(ckpt_dir: Path, name: str, tag: str) -> None:
    """Point `name` at `tag`, atomically (a reader sees the old tag or the new one)."""
    tmp = Path(ckpt_dir) / f".{name}.tmp"
    tmp.write_text(tag)
    os.replace(tmp, Path(ckpt_dir) / name)


def eval_dir(root: Path, kind: str, step: int) -> Path:
    """Where `pokeagent eval <kind>` of a step writes below `root`: `eval/battles-step100`."""
    return Path(root) / EVAL / f"{kind}-step{step}"


def read_json(path: Path) -> dict | None:
    """A JSON file's object, or None where it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class RunDir:
    """The paths of one run directory, and its small reads and writes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.checkpoints = self.root / CHECKPOINTS
        self.metrics = self.root / METRICS
        self.config = self.root / CONFIG
        self.job = self.root / JOB
        self.lock = self.root / WRITER_LOCK
        self.tensorboard = self.root / TENSORBOARD

    @classmethod
    def of_weights(cls, weights: Path) -> RunDir | None:
        """The run of `<run>/checkpoints/<tag>/model.safetensors`, else None."""
        weights = Path(weights)
        return cls(weights.parents[2]) if weights.parent.parent.name == CHECKPOINTS else None

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self, tag: str) -> Path:
        return self.checkpoints / tag

    def weights(self, tag: str) -> Path:
        return self.checkpoints / tag / WEIGHTS

    def manifest(self, tag: str) -> Path:
        return self.checkpoints / tag / CHECKPOINT_MANIFEST

    def rank_file(self, tag: str, rank: int) -> Path:
        """A rank's own part of a checkpoint: loader cursor, RNG state, counters."""
        return self.checkpoints / tag / f"rank{rank:05d}.pt"

    def rank_files(self, tag: str) -> list[Path]:
        """Every rank's part of a checkpoint, in rank order (their count: the saving world size)."""
        return sorted((self.checkpoints / tag).glob("rank*.pt"))

    def tags(self) -> list[str]:
        """The checkpoints present, oldest first."""
        return sorted(p.name for p in self.checkpoints.glob(f"{_STEP}*") if p.is_dir())

    def pointer(self, name: str = LATEST) -> str | None:
        """The tag `latest` (or `best`) names, or None."""
        return read_pointer(self.checkpoints, name)

    def set_pointer(self, name: str, tag: str) -> None:
        write_pointer(self.checkpoints, name, tag)

    # ---------------------------------------------------------------- records
    def read_metrics(self) -> list[dict]:
        """The records of `metrics.jsonl` (a torn last line, from a killed run, is left out)."""
        if not self.metrics.is_file():
            return []
        records = []
        for line in self.metrics.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics, "a") as lines:
            lines.write(json.dumps(record) + "\n")

    def read_config(self) -> dict | None:
        """`config.json`: {"train": the run config, "deepspeed": the engine's config}."""
        return read_json(self.config)

    def write_config(self, train: dict, deepspeed: dict) -> None:
        self.config.write_text(json.dumps({"train": train, "deepspeed": deepspeed}, indent=2))

    def read_job(self) -> dict | None:
        return read_json(self.job)

    def write_job(self, job: dict) -> None:
        self.job.write_text(json.dumps(job, indent=2) + "\n")

    # ---------------------------------------------------------------- evaluations
    def eval_dir(self, kind: str, step: int) -> Path:
        return eval_dir(self.root, kind, step)

    def battle_dirs(self) -> dict[int, Path]:
        """The battle evaluations' folders by step, in step order."""
        found = {}
        for folder in (self.root / EVAL).glob("battles-step*"):
            try:
                found[int(folder.name.removeprefix("battles-step"))] = folder
            except ValueError:
                continue
        return dict(sorted(found.items()))
