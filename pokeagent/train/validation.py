"""Validation during training (`--eval-every`, `--eval-battles`): what the trainer calls.

- `Validation` evaluates the network on a fixed subset of the validation shards (`eval_samples`
  trajectories spread evenly over the sorted `val-*.tar`, read once) with
  `pokeagent.model.metrics.evaluate`, the code `pokeagent eval offline` runs too, so every figure
  is comparable with every other and with the CLI's. It takes no random draws and does not touch
  the training loader; it restores the module's mode.
- The best validation loss so far names a checkpoint in `checkpoints/best` (a tag, as `latest`);
  that checkpoint is exempt from the keep-last rotation.
- `Battles` runs `pokeagent eval battles` on a checkpoint in a child process (rank 0 only),
  polls it, and reads its `battles.json`; a failure is reported, never raised.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pokeagent.run_dir import BEST, RunDir, read_pointer, step_of

OPPONENTS = ("random", "maxpower", "heuristic")


class Validation:
    """The fixed validation subset and the best loss seen so far (recovered on resume)."""

    def __init__(self, data_dir: str, samples: int, window: int, batch_size: int, value_weight):
        from pokeagent.data.heldout import read_trajectories, shard_paths

        self.subset = list(read_trajectories(shard_paths(data_dir, "val"), samples))
        self.window, self.batch_size, self.value_weight = window, batch_size, value_weight
        self.best_loss = float("inf")

    def recover_best(self, run_dir: Path, ckpt_dir: Path) -> None:
        """On resume: the loss of the checkpoint `best` names, from its `val` record."""
        tag = read_pointer(ckpt_dir, BEST)
        if tag is None or not (ckpt_dir / tag).is_dir():
            return
        step = step_of(tag)
        losses = [
            r["loss"] for r in RunDir(run_dir).read_metrics() if r.get("val") and r["step"] == step
        ]
        if losses:
            self.best_loss = losses[-1]

    def evaluate(self, net: nn.Module, device: torch.device) -> dict:
        from pokeagent.model.metrics import evaluate

        # evaluate() draws no random numbers; fork_rng makes sure of it for the CPU generator,
        # which the training step's dropout reads.
        with torch.random.fork_rng(devices=[]):
            return evaluate(
                net, self.subset, self.window, self.batch_size, self.value_weight, device
            )


def record(step: int, metrics: dict, seconds: float) -> dict:
    """The `metrics.jsonl` line of a validation (`"val": true`; same names as a step's record)."""
    overall = metrics["overall"]
    return {
        "val": True,
        "step": step,
        "loss": overall["loss"],
        "policy_loss": overall["policy_loss"],
        "value_loss": overall["value_log_loss"],
        "top1": overall["top1"],
        "top3": overall["top3"],
        "value_brier": overall["value_brier"],
        "trajectories": metrics["trajectories"],
        "decisions": overall["decisions"],
        "labelled": overall["labelled"],
        "seconds": round(seconds, 3),
    }


def battles_unavailable() -> str | None:
    """Why `pokeagent eval battles` cannot run here, or None."""
    from pokeagent.showdown.install import is_installed

    if shutil.which("node") is None:
        return "node is not on PATH"
    if not is_installed():
        return "pokemon-showdown is not installed (`pokeagent showdown install`)"
    return None


_UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError)


def win_rates(out: Path) -> dict[str, float]:
    """Win rate by opponent from `<out>/battles.json` (opponents without a finished game left
    out); raises one of `_UNREADABLE` when the file is missing or not in that shape."""
    results = json.loads((out / "battles.json").read_text())
    return {
        name: float(figures["win_rate"])
        for name, figures in results["opponents"].items()
        if figures.get("win_rate") is not None
    }


def unrecorded_battles(run: RunDir) -> dict[int, dict[str, float]]:
    """Battle results on disk that metrics.jsonl does not hold: those that finished after the
    job which launched them had ended. A resumed run writes them, at the steps they evaluated."""
    recorded = {r["step"] for r in run.read_metrics() if r.get("battles")}
    found = {}
    for step, folder in run.battle_dirs().items():
        if step not in recorded:
            try:
                found[step] = win_rates(folder)
            except _UNREADABLE:
                continue
    return found


@dataclass
class _Pending:
    process: subprocess.Popen
    out: Path
    tag: str


class Battles:
    """Rank 0's battle evaluations in child processes: launch, poll, read results."""

    def __init__(self, battles: int):
        self.battles = battles
        self.pending: dict[int, _Pending] = {}
        self.unavailable = battles_unavailable()
        self.warned = False

    def protected(self) -> set[str]:
        """Checkpoints a running battle process may still read: not to be pruned."""
        return {p.tag for p in self.pending.values()}

    def launch(self, step: int, ckpt: Path, out: Path) -> None:
        if self.unavailable:
            if not self.warned:
                print(f"--eval-battles: skipped, {self.unavailable}; training goes on", flush=True)
                self.warned = True
            return
        command = [
            sys.executable,
            "-m",
            "pokeagent",
            "eval",
            "battles",
            "--checkpoint",
            str(ckpt),
            "--opponents",
            ",".join(OPPONENTS),
            "--battles",
            str(self.battles),
            "--out",
            str(out),
        ]
        # Not a rank of this job, and off the GPUs that are training.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
        }
        env["CUDA_VISIBLE_DEVICES"] = ""
        try:
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "battles.log", "w") as log:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
        except OSError as error:
            print(f"--eval-battles: could not start for step {step}: {error}", flush=True)
            return
        self.pending[step] = _Pending(process, out, ckpt.name)
        print(f"battles for step {step}: pid {process.pid}, -> {out}", flush=True)

    def poll(self) -> dict[int, dict[str, float]]:
        """Win rates by opponent of the processes that have finished, by the step they evaluated."""
        done = {}
        for step, pending in list(self.pending.items()):
            code = pending.process.poll()
            if code is None:
                continue
            del self.pending[step]
            try:
                done[step] = win_rates(pending.out)
            except _UNREADABLE as error:
                print(
                    f"battles for step {step} gave no results (exit {code}: {error}); "
                    f"see {pending.out / 'battles.log'}",
                    flush=True,
                )
        return done

    def still_running(self) -> list[str]:
        return [f"step {s} (pid {p.process.pid}, -> {p.out})" for s, p in self.pending.items()]
