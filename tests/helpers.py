"""Helpers the test modules import (`from helpers import ...`); fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TRAIN = [sys.executable, "-m", "pokeagent.train"]
"""`python -m pokeagent.train`, as a subprocess."""


def run_pokeagent(*args, env: dict | None = None, timeout: float = 600):
    """`python -m pokeagent ARGS` as a user runs it (arguments made strings), stdout and stderr
    captured as text; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "pokeagent", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_training(argv: list, env: dict | None = None, timeout: float = 600):
    """A training command (`TRAIN` or `torchrun(n)` plus options) in `train_env()` (or `env`),
    stdout and stderr captured as text; returns the CompletedProcess."""
    return subprocess.run(
        [str(a) for a in argv],
        env=env or train_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def torchrun(nproc: int) -> list[str]:
    """`torchrun --standalone --nproc_per_node N -m pokeagent.train`, as a subprocess."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "pokeagent.train",
    ]


def write_simulated_replays(package: Path, path: Path, count: int, seed: int, **players) -> Path:
    """`count` in-process simulator battles (gen9randombattle) as served-format JSONL, the shape
    `pokeagent generate` writes; `players` go to simtool (move_prob, tera_prob...)."""
    from pokeagent.data.generate import served_replay
    from pokeagent.showdown import simtool

    with open(path, "w") as out:
        for record in simtool.run_random_battles(
            package, "gen9randombattle", count, seed, **players
        ):
            out.write(json.dumps(served_replay(record, uploadtime=0)) + "\n")
    return path


def simulated_shards(
    package: Path, root: Path, count: int, seed: int, *, players: dict | None = None, **options
) -> Path:
    """`count` simulated battles (`write_simulated_replays` into `root/replays.jsonl`, `players`
    its simtool options) packed into `root/shards` (`options` go to PackConfig); returns it."""
    from pokeagent.data.pack import PackConfig, pack

    replays = write_simulated_replays(
        package, root / "replays.jsonl", count, seed, **(players or {})
    )
    pack(PackConfig(sources=[str(replays)], out=root / "shards", **options), progress=False)
    return root / "shards"


def train_env() -> dict:
    """The environment of a `pokeagent train` subprocess: DeepSpeed on CPU, one thread, a short
    DeepSpeed timeout, no RANK inherited from the test runner."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", DEEPSPEED_TIMEOUT="2")
    env.pop("RANK", None)
    return env


def tiny_loop(shards: Path, out: Path, **overrides) -> dict:
    """ImproveConfig options of a loop small enough for a test: round 0 trains 3 steps, a round
    plays 4 battles in 2 chunks (heuristic and the agent itself), 1 game per baseline."""
    return (
        dict(
            out=str(out),
            shards=str(shards),
            start_steps=3,
            battles=4,
            chunk=2,
            pool="heuristic=1,self@1.5=1",
            eval_games=1,
            concurrency=2,
            train_args="--window 32 --batch-size-per-gpu 8",
        )
        | overrides
    )
