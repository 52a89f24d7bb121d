"""Checkpoints of a training run: save, fp32 export, keep-last rotation, resume, also on another
number of ranks (a DeepSpeed universal checkpoint).

A checkpoint `checkpoints/step<N>/` (layout: pokeagent/run_dir.py) is a full resume point:
- the engine's state (model, optimizer, scheduler; ZeRO shards on every rank);
- per rank, `rank<r>.pt`: what the trainer's `state_dict()` gives (loader cursor, RNG state,
  counters); DeepSpeed writes client_state from rank 0 only;
- `model.safetensors`: exact fp32 weights with the model config in the metadata, for evaluation
  and sharing without DeepSpeed.

Every method is called on every rank (they hold barriers); rank 0 alone writes the shared files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist

from pokeagent.run_dir import BEST, LATEST, LATEST_UNIVERSAL, RunDir, tag_of


class Checkpointer:
    """The run's checkpoints, seen from one rank."""

    def __init__(self, run: RunDir, rank: int, world: int, keep_last: int):
        self.run, self.rank, self.world, self.keep_last = run, rank, world, keep_last
        self.saved_world: int | None = None
        """Ranks that saved the checkpoint to resume, when that differs from this run's."""

    # ---------------------------------------------------------------- save
    def save(
        self, engine, rank_state: dict, config: dict, ds_config: dict, exempt: set[str]
    ) -> str:
        """The engine's state, this rank's `rank_state`, then on rank 0 the fp32 export, the
        rotation (`exempt` tags stay) and config.json. Returns the tag."""
        tag = tag_of(engine.global_steps)
        engine.save_checkpoint(str(self.run.checkpoints), tag=tag, client_state={"config": config})
        torch.save(rank_state, self.run.rank_file(tag, self.rank))
        dist.barrier()
        if self.rank == 0:
            export_weights(engine, self.run, tag, ds_config, config["model"])
            self.prune(exempt)
            self.run.write_config(config, ds_config)
        dist.barrier()
        return tag

    def prune(self, exempt: set[str]) -> None:
        """Rank 0: delete all but the last `keep_last` checkpoints. The best one by validation
        loss and the `exempt` ones (a battle process may still read them) stay outside it."""
        exempt = exempt | {self.run.pointer(BEST)}
        for old in self.run.tags()[: -self.keep_last]:
            if old not in exempt:
                shutil.rmtree(self.run.checkpoint(old), ignore_errors=True)

    # ---------------------------------------------------------------- resume
    def latest(self) -> str | None:
        return self.run.pointer(LATEST)

    def prepare_resume(self, ds_config: dict) -> None:
        """Before the engine exists: if `latest` was saved by another number of ranks, convert it
        to a DeepSpeed universal checkpoint (rank 0; the others wait) and have the engine load
        that (`"checkpoint": {"load_universal": true}` in `ds_config`). ZeRO shards of one
        data-parallel size do not load into another; a universal checkpoint holds every
        parameter's fp32 weights and Adam moments whole. Without ZeRO the optimizer state is not
        sharded and loads as is."""
        tag = self.latest()
        if tag is None:
            return
        saved = len(self.run.rank_files(tag))
        if saved in (0, self.world):
            return
        self.saved_world = saved
        if ds_config.get("zero_optimization", {}).get("stage", 0) == 0:
            return
        universal = f"universal-{tag}"
        if self.rank == 0:
            print(
                f"{self.run.checkpoint(tag)} was saved by {saved} ranks, this run has "
                f"{self.world}: converting it to a universal checkpoint ({universal})",
                flush=True,
            )
            if not self.run.checkpoint(universal).is_dir():
                convert_to_universal(self.run, tag, universal)
            (self.run.checkpoints / LATEST_UNIVERSAL).write_text(universal)
        dist.barrier()
        ds_config["checkpoint"] = {"load_universal": True}

    def load(self, engine) -> str | None:
        """Load `latest` into the engine; its tag, or None when the run has no checkpoint."""
        if self.latest() is None:
            return None
        path, _client = engine.load_checkpoint(str(self.run.checkpoints))
        if path is None:
            raise RuntimeError(
                f"{self.run.checkpoints}: `{LATEST}` names a checkpoint DeepSpeed cannot load"
            )
        return self.latest()

    def rank_state(self, tag: str) -> dict:
        """This rank's own part of checkpoint `tag`."""
        return torch.load(self.run.rank_file(tag, self.rank), weights_only=False)

    def rank_states(self, tag: str) -> list[dict]:
        """Every saving rank's part of checkpoint `tag`, in rank order."""
        return [torch.load(path, weights_only=False) for path in self.run.rank_files(tag)]

    def drop_universal(self, tag: str) -> None:
        """Once every rank loaded it: the universal copy goes (until the next save, a restart
        converts `latest` again)."""
        universal = self.run.checkpoint(f"universal-{tag}")
        dist.barrier()
        if self.rank == 0 and universal.is_dir():
            shutil.rmtree(universal, ignore_errors=True)
            (self.run.checkpoints / LATEST_UNIVERSAL).unlink(missing_ok=True)


def resplit(states: list[dict], rank: int, world: int, workers: int, seed: int) -> dict:
    """This rank's state (as the trainer's `state_dict()`, with a `seed` for the RNG in place of
    its state) from the saving ranks' `states`, when the world size or the worker count changed.

    The loader continues from a fresh assignment (data/loader.py `resplit_state`: epoch + 1 of
    the furthest old worker). Kept: the step, samples seen (a global count) and the decisions
    seen (their sum over the old ranks, carried by rank 0). Dropout's RNG is seeded from
    (seed, step, rank)."""
    from pokeagent.data.loader import resplit_state

    step = states[0]["step"]
    return {
        "loader": resplit_state([s["loader"] for s in states], rank, world, workers, seed),
        "seed": int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]),
        "samples_seen": states[0]["samples_seen"],
        "decisions_seen": sum(s["decisions_seen"] for s in states) if rank == 0 else 0,
        "step": step,
    }


def export_weights(engine, run: RunDir, tag: str, ds_config: dict, model: str) -> None:
    """`<tag>/model.safetensors`: plain fp32 weights of the network, for evaluation and sharing.

    With ZeRO the exact fp32 master weights are rebuilt from the optimizer shards (the module's
    own copy may be bf16 or, with ZeRO-3, partitioned)."""
    from safetensors.torch import save_file

    stage = ds_config.get("zero_optimization", {}).get("stage", 0)
    if stage >= 1:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(run.checkpoints), tag)
        state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    else:
        state = {k: v.detach().float().cpu() for k, v in engine.module.net.state_dict().items()}
    metadata = {
        "model": model,
        "model_config": json.dumps(engine.module.net.cfg.to_dict()),
        "step": str(engine.global_steps),
    }
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(run.weights(tag)), metadata=metadata
    )


def convert_to_universal(run: RunDir, tag: str, universal: str) -> None:
    """deepspeed.checkpoint.ds_to_universal in its own process (it forks extraction workers,
    which a process holding a process group should not), into a temporary folder renamed when
    complete, so that an interrupted conversion is redone rather than half-loaded."""
    partial = run.checkpoint(f"{universal}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    workers = str(max(1, min(4, (os.cpu_count() or 2) // 2)))
    command = [
        sys.executable,
        "-m",
        "deepspeed.checkpoint.ds_to_universal",
        "--input_folder",
        str(run.checkpoint(tag)),
        "--output_folder",
        str(partial),
        "--num_extract_workers",
        workers,
        "--num_merge_workers",
        workers,
        "--inject_missing_state",  # our module states no universal-checkpoint info of its own
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(
            f"converting {run.checkpoint(tag)} to a universal checkpoint failed "
            f"({' '.join(command)}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    partial.rename(run.checkpoint(universal))
