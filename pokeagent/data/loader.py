"""The training loader: shards -> shuffled windows of K decisions -> batches, forever, resumable.

    loader = TrajectoryLoader(LoaderConfig(shards="shards/gen9", batch_size=32), rank=r, world_size=n)
    for step, batch in zip(range(steps), loader): ...
    state = loader.state_dict()          # this rank's cursor: save it with the checkpoint
    loader.load_state_dict(state)        # a new loader continues with exactly the next batches

How the stream is made, and why it can be resumed exactly:
- Epoch e shuffles the shard list with a seed from (seed, e) only; global worker g = rank x W + w
  of G = world x W takes shards g, g+G, ... (disjoint and complete; with fewer shards than G,
  workers wrap around so that no one is idle). Each worker streams its shards epoch after epoch,
  forever: every rank yields a batch at every step, no rank runs dry and hangs a collective.
- Samples pass through a shuffle buffer; each popped trajectory yields one window of K
  consecutive decisions at a random start (shorter ones are padded, `mask` marks real steps).
- A worker's cursor is small: epoch, position in its shard list, samples read from the current
  shard, the identities (epoch, shard position, sample index) of the samples in its buffer, and
  its RNG state. Each batch carries its worker's cursor as of that batch; the loader keeps the
  cursor of the last batch it handed out from each worker, and which worker comes next. A new
  loader rebuilds each buffer by reading those samples again and goes on from there.
- A corrupt or truncated shard is logged by name, counted, and skipped.

A mixture of shard folders (`shards="replays=1,rounds/round-001/shards=0.5"`, `mixture_spec`):
each folder is a source streamed as above (its own shard order and per-worker cursor); every
sample that enters a worker's shuffle buffer comes from a source drawn by the worker's RNG with
probability weight / sum of weights, whatever the folders' sizes (a small folder is read over
more epochs). The cursor then holds a position per source (keyed by folder) and buffer entries
(source, epoch, shard position, sample index). Resuming with more sources (the improve loop adds
a round's folder) keeps the cursors of the folders it already had and starts the new ones at
their beginning; a single folder's cursor continues as the first source of a mixture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pokeagent.data.shards import read_shard

log = logging.getLogger(__name__)

_CURSOR = "_cursor"


@dataclass
class LoaderConfig:
    """Where the shards are and how batches are cut."""

    shards: str | Path | list[str]
    """A folder of shards (its `<split>-*.tar`), an explicit list of shard paths, or a mixture
    of folders `DIR=W,DIR=W,...` (each sample's folder drawn by weight: the module docstring)."""
    split: str = "train"
    """Which split's shards to read from a folder."""
    batch_size: int = 32
    """Trajectory windows per batch (per rank)."""
    window: int = 64
    """Decisions per window (K)."""
    workers: int = 2
    """Loader worker processes per rank (0: read in the training process)."""
    shuffle_buffer: int = 256
    """Trajectories held for shuffling, per worker."""
    seed: int = 0
    """Shard order, buffer and window starts derive from it (and the epoch, rank and worker)."""
    min_rating: int | None = None
    """Read-time filter: both known ratings >= this (trajectories without any rating are dropped)."""
    formats: list[str] | None = None
    """Read-time filter: format ids to keep."""
    prefetch_factor: int = 4
    """Batches each worker prepares ahead."""
    pin_memory: bool = False
    """Batches in page-locked memory, so that their copy to the GPU (non_blocking) overlaps the
    step; the trainer sets it on CUDA."""
    sources: list[list[str]] = field(default_factory=list, init=False)
    """Shard paths per source: one source, or one per folder of a mixture."""
    folders: list[str] = field(default_factory=list, init=False)
    """A mixture's folders (resolved), in order: the keys of its cursors. Empty for one source."""
    weights: list[float] = field(default_factory=list, init=False)
    """A mixture's weights, in the order of `folders`."""
    shard_paths: list[str] = field(default_factory=list, init=False)
    """Every shard path, all sources together."""

    def __post_init__(self):
        mixture = parse_mixture(self.shards) if isinstance(self.shards, str) else None
        if isinstance(self.shards, list):
            self.sources = [[str(p) for p in self.shards]]
        elif mixture is None:
            self.sources = [self._folder_shards(self.shards)]
        else:
            self.folders = [str(Path(folder).resolve()) for folder, _ in mixture]
            self.weights = [weight for _, weight in mixture]
            self.sources = [self._folder_shards(folder) for folder, _ in mixture]
        self.shard_paths = [path for paths in self.sources for path in paths]
        if not self.shard_paths:
            raise FileNotFoundError(
                f"no {self.split} shards in {self.shards} (expected {self.split}-000000.tar ...)"
            )
        if self.batch_size < 1 or self.window < 1 or self.shuffle_buffer < 1:
            raise ValueError("batch_size, window and shuffle_buffer must be >= 1")

    def _folder_shards(self, folder: str | Path) -> list[str]:
        paths = sorted(str(p) for p in Path(folder).glob(f"{self.split}-*.tar"))
        if not paths and self.folders:
            raise FileNotFoundError(
                f"no {self.split} shards in {folder}, a folder of the mixture {self.shards}"
            )
        return paths

    @property
    def mixed(self) -> bool:
        return bool(self.folders)


def parse_mixture(text: str) -> list[tuple[str, float]] | None:
    """`DIR=W,DIR=W,...` -> [(DIR, W), ...]; None where `text` is one folder (an existing
    folder, or no `=W` at its end). Weights are shares of the samples drawn, any scale; a folder
    of weight 0 is never drawn but keeps its place (and its cursor on resume)."""
    if Path(text).is_dir():
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    mixture = []
    for part in parts:
        folder, equals, tail = part.rpartition("=")
        try:
            weight = float(tail) if equals else None
        except ValueError:
            weight = None
        if weight is None:
            if len(parts) == 1:
                return None
            raise ValueError(f"{text!r}: {part!r} is not DIR=WEIGHT (a mixture of shard folders)")
        if not weight >= 0 or not np.isfinite(weight):
            raise ValueError(f"{text!r}: the weight of {folder} must be >= 0")
        mixture.append((folder, weight))
    folders = [str(Path(folder).resolve()) for folder, _ in mixture]
    if len(set(folders)) != len(folders):
        raise ValueError(f"{text!r}: a folder appears twice in the mixture")
    if not any(weight > 0 for _, weight in mixture):
        raise ValueError(f"{text!r}: every weight is 0")
    return mixture


def mixture_spec(mixture: list[tuple[str | Path, float]]) -> str:
    """[(DIR, W), ...] -> `DIR=W,DIR=W` (what `--data-dir` and `LoaderConfig.shards` take)."""
    for folder, _ in mixture:
        if "," in str(folder) or "=" in str(folder):
            raise ValueError(f"{folder}: a folder of a mixture cannot have ',' or '=' in its path")
    return ",".join(f"{folder}={weight:g}" for folder, weight in mixture)


def first_folder(shards: str | Path) -> str | Path:
    """A mixture's first folder (where validation reads its held-out shards); else `shards`."""
    mixture = parse_mixture(shards) if isinstance(shards, str) else None
    return mixture[0][0] if mixture else shards


def worker_shards(
    paths: list[str], seed: int, epoch: int, global_worker: int, n_workers: int
) -> list[str]:
    """The shards one global worker reads in one epoch (a pure function of its arguments)."""
    order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(paths))
    shuffled = [paths[i] for i in order]
    if len(shuffled) >= n_workers:
        return shuffled[global_worker::n_workers]
    # Fewer shards than workers: wrap around rather than leave a worker (and its rank) idle.
    return [shuffled[global_worker % len(shuffled)]]


def resplit_state(states: list[dict], rank: int, world_size: int, workers: int, seed: int) -> dict:
    """A loader state for (rank, world_size, workers) from the states saved by every rank of a
    run with another world size or worker count (resume on a different number of GPUs).

    Exact continuation is impossible then: shards are dealt to global workers by position, and
    the samples a worker had not read yet cannot be handed to a different set of workers without
    reading them again. The rule: every new worker starts epoch E + 1 of the assignment for the
    new worker count, E the furthest epoch any old worker had reached; the unread rest of epoch
    E and the old shuffle buffers are skipped (nothing is read twice). Buffers and window starts
    come from a fresh RNG seeded by (seed, global worker, E + 1). The trainer keeps the step and
    sample counters and the learning-rate schedule position across such a resume.
    """
    cursors = [cursor for state in states for cursor in state["cursors"].values()]
    # A mixture's cursors hold a position per folder: each folder goes on at its own epoch + 1.
    furthest: dict[str, int] = {}
    for cursor in cursors:
        for folder, (epoch, _, _) in zip(
            cursor.get("folders", ()), cursor.get("positions", ()), strict=True
        ):
            furthest[folder] = max(furthest.get(folder, 0), epoch)
    epoch = (
        max(furthest.values(), default=0)
        if furthest
        else max((cursor["epoch"] for cursor in cursors), default=0)
    ) + 1
    n_local = max(1, workers)
    fresh = {}
    for local in range(n_local):
        rng = np.random.default_rng([seed, rank * n_local + local, 0xB0F, epoch])
        if furthest:
            fresh[str(local)] = {
                "folders": list(furthest),
                "positions": [[e + 1, 0, 0] for e in furthest.values()],
                "buffer": [],
                "rng": rng.bit_generator.state,
            }
            continue
        fresh[str(local)] = {
            "epoch": epoch,
            "shard_pos": 0,
            "sample_pos": 0,
            "buffer": [],
            "rng": rng.bit_generator.state,
        }
    return {
        "rank": rank,
        "world_size": world_size,
        "workers": n_local,
        "seed": seed,
        "batches_served": 0,
        "cursors": fresh,
    }


def cut_window(sample: dict, start: int, size: int) -> dict[str, np.ndarray]:
    """Decisions [start, start + size) of a trajectory, padded to `size` (padding's `action` is
    -1, never a label); `mask` marks the real steps, `last` the trajectory's last decision."""
    steps = len(sample["action"])
    end = min(steps, start + size)
    out = {}
    for name in ("tokens", "features", "globals", "legal", "action", "kind", "turn"):
        part = sample[name][start:end]
        if end - start < size:
            pad = np.zeros((size - (end - start), *part.shape[1:]), dtype=part.dtype)
            if name == "action":
                pad -= 1  # padding is never a label
            part = np.concatenate([part, pad])
        out[name] = part
    mask = np.zeros(size, dtype=bool)
    mask[: end - start] = True
    out["mask"] = mask
    # The trajectory's last decision, where the window holds it: the critic's terminal step
    # (model/rewards.py); a window that ends earlier cannot bootstrap its last decision.
    last = np.zeros(size, dtype=bool)
    if end == steps and end > start:
        last[end - 1 - start] = True
    out["last"] = last
    return out


def collate(
    windows: list[dict[str, np.ndarray]], infos: list[np.ndarray]
) -> dict[str, torch.Tensor]:
    """Windows -> a batch of tensors.

    Arrays keep their stored dtypes (tokens int16, features float16, action int8...): a
    fraction of the bytes to move from worker processes and to the GPU; the model and the loss
    widen them on the device (`tokens.long()`, `features.float()`, `action.long()`).
    """
    info = np.stack(infos)
    return {
        "tokens": torch.from_numpy(np.stack([w["tokens"] for w in windows])),
        "features": torch.from_numpy(np.stack([w["features"] for w in windows])),
        "globals": torch.from_numpy(np.stack([w["globals"] for w in windows])),
        "legal": torch.from_numpy(np.stack([w["legal"] for w in windows]).view(np.bool_)),
        "action": torch.from_numpy(np.stack([w["action"] for w in windows])),
        "kind": torch.from_numpy(np.stack([w["kind"] for w in windows])),
        "turn": torch.from_numpy(np.stack([w["turn"] for w in windows])),
        "mask": torch.from_numpy(np.stack([w["mask"] for w in windows])),
        "last": torch.from_numpy(np.stack([w["last"] for w in windows])),
        "outcome": torch.from_numpy(info[:, 3].astype(np.float32) / 2.0),
        "gen": torch.from_numpy(info[:, 0].astype(np.int64)),
    }


class _WorkerStream:
    """One global worker's endless, resumable stream of batches (from one source or a mixture)."""

    def __init__(self, cfg: LoaderConfig, global_worker: int, n_workers: int, cursor: dict | None):
        self.cfg, self.g, self.n = cfg, global_worker, n_workers
        self.corrupt_shards: dict[str, str] = {}
        self.rng = np.random.default_rng([cfg.seed, global_worker, 0xB0F])
        self.positions = [[0, 0, 0] for _ in cfg.sources]
        """Per source: epoch, position in this worker's shard list, samples read from that shard."""
        self.buffer: list[tuple[tuple[int, int, int, int], dict]] = []
        """(source, epoch, shard position, sample index) and the sample, per buffered trajectory."""
        total = sum(cfg.weights)
        self.cumulative = np.cumsum([w / total for w in cfg.weights]) if cfg.mixed else None
        if cursor is not None:
            self._restore(cursor)

    def _shards(self, source: int, epoch: int) -> list[str]:
        return worker_shards(self.cfg.sources[source], self.cfg.seed, epoch, self.g, self.n)

    def _keep(self, sample: dict) -> bool:
        cfg = self.cfg
        if cfg.formats is not None and sample["format"] not in cfg.formats:
            return False
        if cfg.min_rating is not None:
            # As in `pokeagent pack`: every known rating must reach it, and one must be known.
            ratings = [int(r) for r in sample["info"][1:3] if r >= 0]
            if not ratings or any(r < cfg.min_rating for r in ratings):
                return False
        return len(sample["action"]) > 0

    def _read(self, path: str, skip: int = 0) -> Iterator[tuple[int, dict]]:
        try:
            for index, sample in enumerate(read_shard(path)):
                if index >= skip:
                    yield index, sample
        except ValueError as error:
            if path not in self.corrupt_shards:
                log.warning("skipping corrupt shard %s: %s", path, error)
            self.corrupt_shards[path] = str(error)

    def _restore(self, cursor: dict) -> None:
        self.rng.bit_generator.state = cursor["rng"]
        if "folders" in cursor:
            if not self.cfg.mixed:
                raise ValueError(
                    f"the loader state is a mixture's ({cursor['folders']}): it cannot resume "
                    f"the single source {self.cfg.shards}; pass the mixture"
                )
            # Folders are matched by name: a resume with more folders keeps the old ones' places.
            index = {folder: k for k, folder in enumerate(self.cfg.folders)}
            moved = [index.get(folder) for folder in cursor["folders"]]
            for old, new in enumerate(moved):
                if new is not None:
                    self.positions[new] = list(cursor["positions"][old])
            gone = [f for f, new in zip(cursor["folders"], moved, strict=True) if new is None]
            if gone:
                log.warning(
                    "loader: folders left out of the mixture since the checkpoint: %s", gone
                )
            wanted = [
                (moved[source], *rest)
                for source, *rest in cursor["buffer"]
                if moved[source] is not None
            ]
        else:  # one source's cursor: the first source of a mixture goes on from it
            self.positions[0] = [cursor["epoch"], cursor["shard_pos"], cursor["sample_pos"]]
            wanted = [(0, *identity) for identity in cursor["buffer"]]
        wanted = [tuple(identity) for identity in wanted]
        by_shard: dict[tuple[int, int, int], set[int]] = {}
        for source, epoch, shard_pos, index in wanted:
            by_shard.setdefault((source, epoch, shard_pos), set()).add(index)
        found: dict[tuple[int, int, int, int], dict] = {}
        for (source, epoch, shard_pos), indices in by_shard.items():
            for index, sample in self._read(self._shards(source, epoch)[shard_pos]):
                if index in indices:
                    found[(source, epoch, shard_pos, index)] = sample
        self.buffer = [(identity, found[identity]) for identity in wanted if identity in found]

    def cursor(self) -> dict:
        rng = self.rng.bit_generator.state
        if not self.cfg.mixed:  # the single-folder format, unchanged
            epoch, shard_pos, sample_pos = self.positions[0]
            return {
                "epoch": epoch,
                "shard_pos": shard_pos,
                "sample_pos": sample_pos,
                "buffer": [list(identity[1:]) for identity, _ in self.buffer],
                "rng": rng,
            }
        return {
            "folders": list(self.cfg.folders),
            "positions": [list(position) for position in self.positions],
            "buffer": [list(identity) for identity, _ in self.buffer],
            "rng": rng,
        }

    def _samples(self, source: int) -> Iterator[tuple[tuple[int, int, int, int], dict]]:
        """One source's samples in stream order from its cursor on, forever; advances it."""
        position = self.positions[source]
        empty_epochs = 0
        while True:
            shards = self._shards(source, position[0])
            yielded = False
            while position[1] < len(shards):
                for index, sample in self._read(shards[position[1]], skip=position[2]):
                    position[2] = index + 1
                    if self._keep(sample):
                        yielded = True
                        yield (source, position[0], position[1], index), sample
                position[1], position[2] = position[1] + 1, 0
            position[0], position[1] = position[0] + 1, 0
            empty_epochs = 0 if yielded else empty_epochs + 1
            # A mixture's other sources keep the buffer filled: a source that gives nothing for
            # more epochs than it has shards is all filtered out (or corrupt), not unlucky.
            if empty_epochs >= 2 and (
                not self.buffer or empty_epochs >= 2 + len(self.cfg.sources[source])
            ):
                raise RuntimeError(
                    f"loader worker {self.g}: a whole epoch of {shards} gave no sample "
                    f"(all filtered out or corrupt: {self.corrupt_shards})"
                )

    def _source(self) -> int:
        """The source of the next buffered sample: drawn by weight (one source: no draw)."""
        if self.cumulative is None:
            return 0
        drawn = int(np.searchsorted(self.cumulative, self.rng.random(), side="right"))
        return min(drawn, len(self.cumulative) - 1)

    def batches(self) -> Iterator[dict]:
        sources = [self._samples(k) for k in range(len(self.cfg.sources))]
        cfg = self.cfg
        while True:
            windows, infos = [], []
            while len(windows) < cfg.batch_size:
                while len(self.buffer) < cfg.shuffle_buffer:
                    self.buffer.append(next(sources[self._source()]))
                pick = int(self.rng.integers(len(self.buffer)))
                self.buffer[pick], self.buffer[-1] = self.buffer[-1], self.buffer[pick]
                _, sample = self.buffer.pop()
                steps = len(sample["action"])
                start = int(self.rng.integers(max(1, steps - cfg.window + 1)))
                windows.append(cut_window(sample, start, cfg.window))
                infos.append(sample["info"])
            batch = collate(windows, infos)
            batch[_CURSOR] = self.cursor()
            batch["_corrupt_shards"] = dict(self.corrupt_shards)
            yield batch


class _Dataset(IterableDataset):
    def __init__(
        self, cfg: LoaderConfig, rank: int, world_size: int, cursors: dict[int, dict], offset: int
    ):
        self.cfg, self.rank, self.world = cfg, rank, world_size
        self.cursors, self.offset = cursors, offset

    def __iter__(self):
        info = get_worker_info()
        n_local = max(1, self.cfg.workers)
        local = ((info.id if info is not None else 0) + self.offset) % n_local
        stream = _WorkerStream(
            self.cfg, self.rank * n_local + local, self.world * n_local, self.cursors.get(local)
        )
        for batch in stream.batches():
            batch["_worker"] = local
            yield batch


def _ignore_stop_signals(_worker_id: int) -> None:
    """Loader workers ignore SIGTERM/SIGUSR1: SLURM signals every process of a job step, and a
    worker killed by it would crash the training process that is trying to stop cleanly."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class TrajectoryLoader:
    """This rank's endless batches, with a cursor for exact resume (see the module docstring)."""

    def __init__(self, cfg: LoaderConfig, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.cfg, self.rank, self.world = cfg, rank, world_size
        self.cursors: dict[int, dict] = {}
        self.batches_served = 0
        self.corrupt_shards: dict[str, str] = {}

    def state_dict(self) -> dict:
        return {
            "rank": self.rank,
            "world_size": self.world,
            "workers": max(1, self.cfg.workers),
            "seed": self.cfg.seed,
            "batches_served": self.batches_served,
            "cursors": {str(k): v for k, v in self.cursors.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        expected = (self.rank, self.world, max(1, self.cfg.workers), self.cfg.seed)
        found = (state["rank"], state["world_size"], state["workers"], state["seed"])
        if found != expected:
            raise ValueError(
                f"loader state for (rank, world, workers, seed) {found} cannot resume {expected}"
            )
        self.batches_served = state["batches_served"]
        self.cursors = {int(k): v for k, v in state["cursors"].items()}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n_local = max(1, self.cfg.workers)
        # DataLoader always starts with its worker 0: rotate so that the worker whose turn it was
        # comes first, keeping the round-robin order of an uninterrupted run.
        dataset = _Dataset(
            self.cfg, self.rank, self.world, dict(self.cursors), self.batches_served % n_local
        )
        kwargs = (
            {
                "prefetch_factor": self.cfg.prefetch_factor,
                "persistent_workers": False,
                "worker_init_fn": _ignore_stop_signals,
            }
            if self.cfg.workers
            else {}
        )
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.cfg.workers,
            pin_memory=self.cfg.pin_memory,
            **kwargs,
        )
        for batch in loader:
            self.cursors[int(batch.pop("_worker"))] = batch.pop(_CURSOR)
            self.corrupt_shards.update(batch.pop("_corrupt_shards"))
            self.batches_served += 1
            yield batch
