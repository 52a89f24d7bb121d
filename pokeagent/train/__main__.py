"""`python -m pokeagent.train` (what `deepspeed` and `torchrun` launch) and `pokeagent train`.

Every TrainConfig field is an option (`--batch-size-per-gpu 32`); `--config run.json` loads a
saved config first; `--dry-run` prints the resolved configs and exits without training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pokeagent.options import add_options, given
from pokeagent.train.config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pokeagent train", description=__doc__.splitlines()[0])
    add_options(parser, TrainConfig)
    parser.add_argument("--min-elo", dest="min_rating", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help="a JSON TrainConfig to start from")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved configs and exit"
    )
    parser.add_argument("--resume", action="store_true", help="require a checkpoint to resume from")
    parser.add_argument(
        "--test-mode", action="store_true", help="a few steps of the tiny model (smoke test)"
    )
    parser.add_argument(
        "--mock-data",
        action="store_true",
        help="pack shards on the fly from a few simulator battles (real data, small)",
    )
    parser.add_argument(
        "--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS
    )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    data = json.loads(Path(args.config).read_text()) if args.config else {}
    return TrainConfig.from_dict(data | given(TrainConfig, args))


TEST_MODE = {
    "model": "tiny",
    "max_steps": 20,
    "window": 32,
    "batch_size_per_gpu": 8,
    "warmup_steps": 2,
    "log_every": 5,
}
"""What --test-mode sets (options given explicitly still win)."""


def mock_shards(run_dir: Path, battles: int = 60, seed: int = 0) -> Path:
    """Shards packed from simulator battles under the run directory; rank 0 makes them, the other
    ranks wait for them (this runs before the process group exists)."""
    import time

    from pokeagent.data.pack import MANIFEST_FILE, PackConfig, pack
    from pokeagent.showdown import simtool
    from pokeagent.showdown.install import install

    out = run_dir / "mock-shards"
    if int(os.environ.get("RANK", "0")) == 0:
        if not (out / MANIFEST_FILE).exists():
            out.mkdir(parents=True, exist_ok=True)
            replays = out / "replays.jsonl"
            with open(replays, "w") as lines:
                for record in simtool.run_random_battles(
                    install(), "gen9randombattle", battles, seed, move_prob=0.8, tera_prob=0.2
                ):
                    if "error" not in record:
                        lines.write(
                            json.dumps({k: record[k] for k in ("id", "format", "players", "log")})
                            + "\n"
                        )
            pack(
                PackConfig(
                    sources=[str(replays)],
                    out=out,
                    workers=1,
                    shard_size=2 * 1024 * 1024,
                    val_fraction=0.05,
                ),
                progress=False,
            )
    else:
        print(f"waiting for rank 0 to pack the mock shards in {out} (at most 10 min)", flush=True)
        deadline = time.monotonic() + 600
        while not (out / MANIFEST_FILE).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank 0 did not pack the mock shards in {out}")
            time.sleep(0.5)
    return out


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.test_mode:
        for key, value in TEST_MODE.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    try:
        cfg = config_from_args(args)
    except ValueError as error:  # an invalid option: refused before anything starts
        parser.error(str(error))
    if args.mock_data and not args.dry_run:
        cfg.data_dir = str(mock_shards(Path(cfg.run_dir), seed=cfg.seed))
    if cfg.eval_every and not args.dry_run:
        from pokeagent.data.heldout import shard_paths

        try:
            shard_paths(cfg.data_dir, "val")
        except FileNotFoundError as error:
            parser.error(f"--eval-every reads the validation shards: {error}")
    if args.dry_run:
        from pokeagent.train.ds_config import resolve_run

        world = int(os.environ.get("WORLD_SIZE", "1"))
        run = resolve_run(cfg, world)
        print(
            json.dumps(
                {
                    "train": cfg.to_dict(),
                    "world_size": world,
                    "global_batch": run.global_batch,
                    "peak_lr": run.peak_lr,
                    "deepspeed": run.deepspeed,
                },
                indent=2,
            )
        )
        return 0
    if cfg.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG)
        os.environ.setdefault("TORCH_DISTRIBUTED_DEBUG", "DETAIL")
        if args.log_every is None:
            cfg.log_every = 1
    import torch

    from pokeagent.train.checkpoint import CheckpointSaveError
    from pokeagent.train.trainer import NonFiniteLoss, Trainer
    from pokeagent.writer_lock import FolderLocked

    trainer = None
    try:
        trainer = Trainer(cfg)
        resumed = trainer.try_resume()  # automatic whenever the run directory holds a checkpoint
        checkpoints = trainer.run_dir.checkpoints
        if args.resume and not resumed:
            raise SystemExit(f"--resume: no checkpoint in {checkpoints} is complete")
        if resumed:
            trainer.log.say(f"resumed from step {trainer.resumed_from} ({checkpoints})")
        trainer.run()
    except torch.cuda.OutOfMemoryError as error:
        print(out_of_memory_message(cfg, error), file=sys.stderr, flush=True)
        return 3
    except (NonFiniteLoss, CheckpointSaveError) as error:
        # Every rank stops here together (they agreed on it); rank 0 says why.
        if trainer.rank == 0:
            print(f"pokeagent train: {error}", file=sys.stderr, flush=True)
        trainer.close()
        return 4 if isinstance(error, NonFiniteLoss) else 5
    except FolderLocked as error:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"pokeagent train: {error}", file=sys.stderr, flush=True)
        return 6
    finally:
        # Whatever ends the run (an error included) frees the run directory; only a killed
        # job leaves its lock, for the next one to take over (writer_lock.py says when).
        if trainer is not None:
            trainer.writer_lock.release()
    trainer.close()
    return 0


def out_of_memory_message(cfg: TrainConfig, error: BaseException) -> str:
    """What to change after a CUDA out-of-memory error, instead of a bare traceback."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    batch = cfg.batch_size_per_gpu
    first = str(error).splitlines()[0] if str(error) else "out of memory"
    if batch > 1:
        smaller = batch // 2
        accum = cfg.grad_accum * batch // smaller if batch % smaller == 0 else cfg.grad_accum * 2
        fix = (
            f"--batch-size-per-gpu {smaller} --grad-accum {accum} keeps the global batch "
            f"{batch * cfg.grad_accum * world} (or --batch-size-per-gpu {smaller} alone halves it)"
        )
    else:
        fix = "the batch is already 1 window per GPU: a shorter --window, or a smaller --model"
    return (
        f"pokeagent train: CUDA out of memory with --batch-size-per-gpu {batch} "
        f"(model {cfg.model}, window {cfg.window}, {cfg.ds_config}, {world} GPU(s)): {first}\n"
        f"  try {fix};\n"
        "  or hold less per GPU: --ds-config zero3_bf16 (parameters sharded too) or "
        "zero2_offload (optimizer states in CPU memory).\n"
        "  `pokeagent validate --model M --batch-size-per-gpu B` estimates the memory beforehand."
    )


def main(argv: list[str] | None = None) -> int:
    """`pokeagent train`: the exit code, whatever happened. The callers (below, and
    `pokeagent.cli`) end the process with `os._exit` after it."""
    try:
        return run(argv)
    except SystemExit as done:  # argparse's errors, --resume without a checkpoint
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        return done.code if isinstance(done.code, int) else 1
    except BaseException:
        # Returned, not raised: an error must end the process, and interpreter teardown would
        # wait on the loader's worker processes forever (a full disk during a save hung so).
        import traceback

        traceback.print_exc()
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Measured here: ~1 in 30 two-rank DeepSpeed runs abort at interpreter exit after training
    # finished; leaving without interpreter teardown avoids it (shared/notes/deepspeed-cpu.md).
    os._exit(code)
