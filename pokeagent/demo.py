"""`pokeagent demo`: the README's main command, the pipeline end to end as far as it exists.

Today: install the pinned simulator, play battles between poke-env baselines on a local server
(heuristic vs maxpower) and in-process simulator battles (sim-random), write replays plus
ground truth, parse and encode every replay into both players' trajectories and audit the
parser's labels against the ground truth, pack them into WebDataset shards and stream training
batches from them, and train the model with DeepSpeed. Evaluation in battles joins next.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pokeagent.data.audit import audit, generated_records
from pokeagent.data.encode import encode
from pokeagent.data.generate import SIM_RANDOM, GenerateConfig, generate
from pokeagent.data.loader import LoaderConfig, TrajectoryLoader
from pokeagent.data.pack import PackConfig, pack
from pokeagent.showdown.install import install


@dataclass
class DemoConfig:
    """The demo's knobs; the defaults finish in a few minutes on 2 CPU cores."""

    out: Path = Path("runs/demo")
    """Run folder; each stage writes into its own subfolder."""
    battles: int = 200
    """Battles per generation stage."""
    seed: int = 0
    """Seeds every stage."""
    format: str = "gen9randombattle"
    """Showdown format of the generated battles."""
    workers: int = 2
    """Worker processes for packing."""
    model: str = "tiny"
    """Model preset trained by the demo."""
    train_steps: int = 60
    """Optimizer steps of the demo's training run."""


def _stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage that exists; returns the generation summaries by name."""
    out = Path(cfg.out)
    _stage("1/6 simulator: pokemon-showdown (pinned)")
    print(f"installed at {install()}")

    results = {}
    _stage(f"2/6 battles on a local server: heuristic vs maxpower, {cfg.battles} x {cfg.format}")
    server_cfg = GenerateConfig(
        out=out / "battles-baselines",
        format=cfg.format,
        battles=cfg.battles,
        players=("heuristic", "maxpower"),
        seed=cfg.seed,
    )
    results["baselines"] = generate(server_cfg)
    print(results["baselines"].table())

    _stage(f"3/6 in-process simulator battles: sim-random, {cfg.battles} x {cfg.format}")
    sim_cfg = GenerateConfig(
        out=out / "battles-sim-random",
        format=cfg.format,
        battles=cfg.battles,
        players=(SIM_RANDOM, SIM_RANDOM),
        seed=cfg.seed,
        concurrency=2,
    )
    results["sim-random"] = generate(sim_cfg)
    print(results["sim-random"].table())

    _stage("4/6 parse + encode both players' views; audit the labels against the ground truth")
    audits = {}
    for name, stage_cfg in (("baselines", server_cfg), ("sim-random", sim_cfg)):
        audits[name] = audit(generated_records(stage_cfg.out), encoder=encode)
        print(f"{name:>12}: {audits[name].summary()}")

    _stage("5/6 pack into WebDataset shards; stream batches with the resumable loader")
    shards = out / "shards"
    shutil.rmtree(shards, ignore_errors=True)  # the battles above are new: pack them afresh
    packed = pack(
        PackConfig(
            sources=[str(c.out / "replays.jsonl") for c in (server_cfg, sim_cfg)],
            out=shards,
            workers=cfg.workers,
            shard_size=8 * 1024 * 1024,
            val_fraction=0.05,
        )
    )
    print(packed.table())
    loader = TrajectoryLoader(
        LoaderConfig(shards=shards, batch_size=16, window=64, workers=0, seed=cfg.seed)
    )
    batches = iter(loader)
    for _ in range(3):
        batch = next(batches)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in batch.items())
    print(f"a batch: {shapes}; labelled decisions in it: {int((batch['action'] >= 0).sum())}")

    _stage(
        f"6/6 train the {cfg.model} model with DeepSpeed for {cfg.train_steps} steps (checkpoints, TensorBoard)"
    )
    run_dir = out / "train"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "pokeagent.train",
        "--run-dir",
        str(run_dir),
        "--data-dir",
        str(shards),
    ]
    command += [
        "--model",
        cfg.model,
        "--max-steps",
        str(cfg.train_steps),
        "--warmup-steps",
        "5",
        "--window",
        "64",
    ]
    command += [
        "--batch-size-per-gpu",
        "16",
        "--log-every",
        "10",
        "--workers-per-gpu",
        "1",
        "--seed",
        str(cfg.seed),
    ]
    # Its own process: the trainer owns a (one-rank) DeepSpeed process group and exits hard.
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("RANK", None)
    trained = subprocess.run(command, env=env, text=True)
    if trained.returncode != 0:
        raise RuntimeError(f"training failed (exit {trained.returncode}): {' '.join(command)}")
    losses = [
        json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    print(
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps; weights in {run_dir}/checkpoints/latest"
    )

    _stage("report")
    for name, summary in results.items():
        print(f"{name:>12}: {summary.table()}")
        print(f"{'':>12}  parser: {audits[name].summary()}")
    print(f"{'shards':>12}: {packed.table()}")
    print(
        f"{'training':>12}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps ({cfg.model})"
    )
    print(
        f"\nreplays and ground truth under {out}/battles-*/, shards under {shards}/, the run under {run_dir}/ (tensorboard --logdir {run_dir}/tb)"
    )
    return results
