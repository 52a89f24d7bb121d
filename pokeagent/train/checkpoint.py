"""Checkpoints of a training run: save, fp32 export, keep-last rotation, resume, also on another
number of ranks (a DeepSpeed universal checkpoint).

A checkpoint `checkpoints/step<N>/` (layout: pokeagent/run_dir.py) is a full resume point:
- the engine's state (model, optimizer, scheduler; ZeRO shards on every rank);
- per rank, `rank<r>.pt`: what the trainer's `state_dict()` gives (loader cursor, RNG state,
  counters); DeepSpeed writes client_state from rank 0 only;
- `model.safetensors`: exact fp32 weights with the model config in the metadata, for evaluation
  and sharing without DeepSpeed;
- `manifest.json`, written last: every file of the folder and its size.

Complete or absent: `latest` moves to a checkpoint only once its manifest is written, so a kill
or a full disk during a save leaves it naming the previous one. A resume takes the newest
checkpoint whose files match their manifest (a save cut short has none; a file truncated since
has another size) and says which ones it skipped and why; keep-last counts complete ones and
never removes the newest of them. Sizes, not hashes: hashing gigabytes at every save costs what
a save costs, and truncation (a full disk, a killed copy) is what happens.

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

from pokeagent.run_dir import (
    BEST,
    CHECKPOINT_MANIFEST,
    LATEST,
    LATEST_UNIVERSAL,
    RunDir,
    read_json,
    step_of,
    tag_of,
)


class CheckpointSaveError(RuntimeError):
    """A save failed (a full disk, a lost mount): the run stops; `latest` is unchanged."""


class Checkpointer:
    """The run's checkpoints, seen from one rank."""

    def __init__(
        self, run: RunDir, rank: int, world: int, keep_last: int, device: torch.device | None = None
    ):
        self.run, self.rank, self.world, self.keep_last = run, rank, world, keep_last
        self.device = device or torch.device("cpu")
        """Where this rank's collectives hold their tensors (NCCL has no CPU backend)."""
        self.saved_world: int | None = None
        """Ranks that saved the checkpoint to resume, when that differs from this run's."""
        self._resume: tuple[str | None] | None = None
        self._universal: str | None = None
        """The universal checkpoint converted for this run to load, if any."""

    # ---------------------------------------------------------------- save
    def save(
        self, engine, rank_state: dict, config: dict, ds_config: dict, exempt: set[str]
    ) -> str:
        """The engine's state and this rank's `rank_state`, then on rank 0 the fp32 export, the
        manifest, `latest`, the rotation (`exempt` tags stay) and config.json. Returns the tag.
        Raises CheckpointSaveError on every rank when a write failed on any."""
        tag = tag_of(engine.global_steps)
        folder = self.run.checkpoint(tag)
        if self.rank == 0 and folder.exists():
            # This step's folder from an earlier job (a save cut short, or damaged since): the
            # save replaces it whole rather than mixing files of two saves under one manifest.
            shutil.rmtree(folder, ignore_errors=True)
        dist.barrier()

        def write_own() -> None:
            engine.save_checkpoint(
                str(self.run.checkpoints),
                tag=tag,
                client_state={"config": config},
                save_latest=False,  # `latest` moves once the manifest is written
            )
            torch.save(rank_state, self.run.rank_file(tag, self.rank))

        def complete() -> None:
            export_weights(engine, self.run, tag, ds_config, config["model"])
            write_manifest(self.run, tag, self.world)
            self.run.set_pointer(LATEST, tag)
            self.prune(exempt)
            self.run.write_config(config, ds_config)

        self._agree_written(_attempt(write_own), tag)
        self._agree_written(_attempt(complete) if self.rank == 0 else None, tag)
        return tag

    def _agree_written(self, error: Exception | None, tag: str) -> None:
        """A barrier that also tells every rank whether a write failed on any; if one did, the
        partial folder goes (it holds no resume point, and a full disk wants the space back)."""
        failed = torch.tensor([float(error is not None)], device=self.device)
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if not failed.item():
            return
        if self.rank == 0:
            shutil.rmtree(self.run.checkpoint(tag), ignore_errors=True)
        previous = self.run.pointer(LATEST)
        where = f"on rank {self.rank}: {error}" if error is not None else "on another rank"
        raise CheckpointSaveError(
            f"saving checkpoint {self.run.checkpoint(tag)} failed {where}. Nothing of it is kept; "
            + (
                f"`latest` still names {previous}, which is complete"
                if previous
                else "the run has no earlier checkpoint"
            )
            + ". Fix the cause (a full disk: free space) and run the same command: it resumes "
            "from the newest complete checkpoint."
        )

    def prune(self, exempt: set[str]) -> None:
        """Rank 0: delete all but the last `keep_last` complete checkpoints. The best one by
        validation loss and the `exempt` ones (a battle process may still read them) stay outside
        it, and the newest complete one always stays. Older folders of saves cut short go too
        (nothing resumes from them); damaged ones (files that no longer match their manifest)
        stay for a person to look at."""
        exempt = exempt | {self.run.pointer(BEST)}
        tags = self.run.tags()
        newest = next((t for t in reversed(tags) if checkpoint_problem(self.run, t) is None), None)
        # Complete for the rotation: a matching manifest, or a finished save without one (written
        # before manifests existed).
        finished = [t for t in tags if _finished(self.run, t)]
        keep = set(finished[-self.keep_last :]) | exempt | {newest}
        for tag in tags:
            if tag in keep:
                continue
            cut_short = (
                tag not in finished
                and not self.run.manifest(tag).is_file()
                and newest is not None
                and step_of(tag) < step_of(newest)
            )
            if tag in finished or cut_short:
                shutil.rmtree(self.run.checkpoint(tag), ignore_errors=True)

    # ---------------------------------------------------------------- resume
    def latest(self) -> str | None:
        return self.run.pointer(LATEST)

    def resume_tag(self) -> str | None:
        """The checkpoint to resume from (`newest_complete`, rank 0 saying which newer ones it
        skipped and why), the same all run long."""
        if self._resume is None:
            self._resume = (self.newest_complete(report=self.rank == 0),)
        return self._resume[0]

    def newest_complete(self, report: bool = False) -> str | None:
        """The newest checkpoint whose files match its manifest (with `report`, each newer one
        skipped is printed with the reason). A run whose checkpoints all predate manifests
        answers its `latest`, as it resumed then."""
        tags = self.run.tags()
        if tags and not any(self.run.manifest(t).is_file() for t in tags):
            return self.latest()
        for tag in reversed(tags):
            problem = checkpoint_problem(self.run, tag)
            if problem is None:
                return tag
            if report:
                print(f"resume: skipped {self.run.checkpoint(tag)}: {problem}", flush=True)
        return None

    def prepare_resume(self, ds_config: dict) -> None:
        """Before the engine exists: if the checkpoint to resume was saved by another number of
        ranks, convert it to a DeepSpeed universal checkpoint (rank 0; the others wait) and have
        the engine load that (`"checkpoint": {"load_universal": true}` in `ds_config`). ZeRO
        shards of one data-parallel size do not load into another; a universal checkpoint holds
        every parameter's fp32 weights and Adam moments whole. Without ZeRO the optimizer state
        is not sharded and loads as is."""
        tag = self.resume_tag()
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
        self._universal = universal

    def load(self, engine) -> str | None:
        """Load the newest complete checkpoint into the engine; its tag, or None when the run
        has none."""
        tag = self.resume_tag()
        if tag is None:
            return None
        load = self._universal or tag
        path, _client = engine.load_checkpoint(str(self.run.checkpoints), tag=load)
        if path is None:
            raise RuntimeError(
                f"{self.run.checkpoint(load)}: DeepSpeed cannot load this checkpoint"
            )
        return tag

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


def _attempt(write) -> Exception | None:
    """Run `write`; what it raised, or None. A full disk shows as an OSError from Python's own
    writes and as a RuntimeError from torch.save's (`unexpected pos`)."""
    try:
        write()
    except Exception as error:
        return error
    return None


def checkpoint_problem(run: RunDir, tag: str) -> str | None:
    """Why checkpoint `tag` cannot be resumed from (no manifest: its save did not finish; a
    file missing, or of another size than the manifest says), or None when it is complete."""
    manifest = read_json(run.manifest(tag))
    if manifest is None:
        return f"no {CHECKPOINT_MANIFEST} (its save did not finish)"
    folder = run.checkpoint(tag)
    for name, size in manifest["files"].items():
        try:
            found = (folder / name).stat().st_size
        except FileNotFoundError:
            return f"{name} is missing"
        if found != size:
            return f"{name} has {found} bytes, its manifest says {size} (truncated or damaged)"
    return None


def _finished(run: RunDir, tag: str) -> bool:
    """A complete checkpoint, or a finished save of before manifests (rank files and the fp32
    export, which comes after them)."""
    if run.manifest(tag).is_file():
        return checkpoint_problem(run, tag) is None
    return bool(run.rank_files(tag)) and run.weights(tag).is_file()


def write_manifest(run: RunDir, tag: str, world: int) -> None:
    """`<tag>/manifest.json`: every file of the checkpoint and its size, flushed to the disk
    first (a machine that crashes after this keeps files that match it)."""
    folder = run.checkpoint(tag)
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != CHECKPOINT_MANIFEST:
            _fsync(path)
            files[path.relative_to(folder).as_posix()] = path.stat().st_size
    manifest = {"tag": tag, "step": step_of(tag), "ranks": world, "files": files}
    partial = folder / f".{CHECKPOINT_MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=1) + "\n")
    _fsync(partial)
    os.replace(partial, run.manifest(tag))
    _fsync(folder)


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
