"""`pokeagent bench gpu`: everything a cluster user must know before paying for many GPUs, from one
command on one GPU in at most ~8 minutes.

    pokeagent bench gpu --out bench-gpu.json           # on one GPU (a table, and the JSON)
    pokeagent bench gpu --device cpu --out smoke.json  # the tiny smoke version (CI, ~1 minute)

1. Speed cells, each model x DeepSpeed config (default small, large, seed-200m x zero2_bf16,
   zero2_fp16, zero3_bf16), on the real engine in this process (a world of one): at a fixed
   batch, steps on one batch of real windows: samples/s, decisions/s, achieved TFLOP/s and MFU
   (model/flops.py), peak memory, losses (finite, falling: the batch repeats, so it must fall)
   and fp16 overflow skips with the final loss scale; then the batch doubles, one engine step per
   size, until CUDA runs out of memory (or the cap, or the cell's time): the largest per-GPU
   batch that fits, with its samples/s, MFU and peak memory.
2. Save and exact resume: N steps after a checkpoint, then a fresh engine (other initial
   weights) loads it and retakes the same N steps; the losses are compared.
3. Feeding: the TrajectoryLoader with worker processes over real shards feeds a real model
   (pinned host memory, non-blocking copies, no host sync per step): data-wait share; and the
   same loop reading every logged scalar each step (what a `float(loss)` per step costs).

Without --shards it packs its own from simulator battles (needs node, like `pokeagent
generate`). Every step of the timed loops keeps its loss on the device: one host sync at the end.
A cell that fails (a kernel build, an unsupported precision) is reported as such and the run goes
on. The time budget is shared: each cell gets an equal part of what is left after a reserve for
2 and 3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# No torch here: `pokeagent --help` builds this command's parser. The parts run in gpu_checks.py.


@dataclass
class GpuBenchConfig:
    """What `pokeagent bench gpu` runs; `smoke()` is the CPU version."""

    device: str = "cuda"
    """cuda (one GPU) or cpu (the smoke version's engine runs on the CPU)."""
    models: tuple[str, ...] = ("small", "large", "seed-200m")
    ds_configs: tuple[str, ...] = ("zero2_bf16", "zero2_fp16", "zero3_bf16")
    window: int = 64
    batch_size: int = 16
    """Per-GPU batch (trajectory windows) of the fixed-batch measurement."""
    min_steps: int = 10
    """Timed steps at the fixed batch (more while under `min_seconds`)."""
    min_seconds: float = 3.0
    max_batch: int = 4096
    """Where the doubling search stops even without running out of memory."""
    budget_s: float = 420.0
    """Wall-clock budget of the whole run, shard making included (the default leaves a minute of
    the 8 for start-up and for checks that overrun their reserve)."""
    reserve_s: float = 100.0
    """The end of the budget kept for the resume and loader checks (the speed cells share the
    rest)."""
    shards: str | None = None
    """Shards written by `pokeagent pack`; None: made from `battles` simulator battles."""
    battles: int = 48
    resume_model: str = "small"
    resume_configs: tuple[str, ...] = ("zero2_bf16", "zero2_fp16", "zero3_bf16")
    resume_steps: int = 4
    loader_model: str = "small"
    loader_config: str = "zero2_bf16"
    loader_workers: int = 2
    loader_batch: int = 32
    loader_steps: int = 40
    torch_adam: bool = False
    """torch's AdamW (fused on CUDA) instead of DeepSpeed's JIT-built FusedAdam."""
    peak_tflops: float | None = None
    """Peak TFLOP/s of this GPU when the table lacks it (model/flops.py PEAK_TFLOPS)."""
    work_dir: str | None = None
    """Shards and checkpoints go here (default: a temporary folder, removed at the end)."""

    @classmethod
    def smoke(cls, **overrides) -> GpuBenchConfig:
        """The CPU version: the tiny model, short windows, a few steps, the same table."""
        return replace(
            cls(
                device="cpu",
                models=("tiny",),
                window=16,
                batch_size=4,
                min_steps=6,
                min_seconds=0.0,
                max_batch=8,
                budget_s=150.0,
                reserve_s=40.0,
                battles=8,
                resume_model="tiny",
                resume_configs=("zero2_bf16",),
                resume_steps=3,
                loader_model="tiny",
                loader_workers=1,
                loader_batch=8,
                loader_steps=8,
                torch_adam=True,
            ),
            **overrides,
        )


# ------------------------------------------------------------------ shards
def make_shards(out: Path, battles: int, seed: int = 0) -> Path:
    """Shards packed from `battles` simulator battles (gen9randombattle, in parallel node
    processes), small shards so that several loader workers each have their own."""
    from pokeagent.data.generate import served_replay
    from pokeagent.data.pack import PackConfig, pack
    from pokeagent.showdown import simtool
    from pokeagent.showdown.install import install

    out.mkdir(parents=True, exist_ok=True)
    replays = out / "replays.jsonl"
    processes = max(1, min(8, (os.cpu_count() or 2) - 1))
    with open(replays, "w") as lines:
        for record in simtool.run_random_battles(
            install(),
            "gen9randombattle",
            battles,
            seed,
            move_prob=0.8,
            tera_prob=0.2,
            processes=processes,
        ):
            if "error" not in record:
                lines.write(json.dumps(served_replay(record, uploadtime=0)) + "\n")
    pack(
        PackConfig(
            sources=[str(replays)],
            out=out / "shards",
            workers=processes,
            shard_size=512 * 1024,
            val_fraction=0.0,
        ),
        progress=False,
    )
    return out / "shards"


def problems(report: dict) -> list[str]:
    """What the run says is wrong (empty: everything checked passed)."""
    found = []
    for cell in report["cells"]:
        where = f"{cell['model']} {cell['ds_config']}"
        if cell["status"].startswith("error"):
            found.append(f"{where}: {cell['status']}")
        elif cell["status"] == "ok":
            if not cell["loss_finite"]:
                found.append(f"{where}: a loss is not finite")
            elif not cell["loss_falling"]:
                found.append(f"{where}: the loss did not fall on a repeated batch")
    for check in report["resume"]:
        if check["verdict"] not in ("exact",) and not check["verdict"].startswith(
            ("close", "skipped")
        ):
            found.append(f"resume {check['ds_config']}: {check['verdict']}")
    feed = report["feed"]
    if feed["status"] != "ok":
        found.append(f"loader feed: {feed['status']}")
    elif feed["data_wait_share"] > 0.10:
        found.append(
            f"loader feed: the model waited {feed['data_wait_share']:.0%} of the time for data "
            f"with {feed['workers']} workers"
        )
    return found


def run_gpu_bench(cfg: GpuBenchConfig) -> dict:
    """All three parts (module docstring); the report that `table` prints and --out holds."""
    import warnings

    from pokeagent.bench import gpu_checks as checks

    # ZeRO's collectives call names torch 2.13 deprecates: one warning per step, nothing to act on.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning
    )
    started = time.monotonic()
    deadline = started + cfg.budget_s
    root = Path(cfg.work_dir or tempfile.mkdtemp(prefix="pokeagent-bench-gpu-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        tick = time.monotonic()
        shards = cfg.shards or str(make_shards(root, cfg.battles))
        shards_s = time.monotonic() - tick
        device = checks.init(cfg.device)
        pool = checks.Pool(shards, cfg.window, device)
        cells = []
        plan = [(m, d) for m in cfg.models for d in cfg.ds_configs]
        for index, (model, ds_name) in enumerate(plan):
            left = deadline - cfg.reserve_s - time.monotonic()
            if left <= 0:
                cells.append(checks.Cell(model, ds_name, status="skipped: out of time budget"))
                continue
            share = left / (len(plan) - index)
            deadline_cell = time.monotonic() + share
            cells.append(checks.run_cell(cfg, model, ds_name, pool, device, deadline_cell))
        resume = [checks.run_resume(cfg, name, pool, device, root) for name in cfg.resume_configs]
        feed = checks.run_feed(cfg, shards, device)
        report = {
            "environment": checks.environment(device),
            "config": asdict(cfg),
            "shards": shards if cfg.shards else "made from simulator battles",
            "shards_s": shards_s,
            "cells": [asdict(c) for c in cells],
            "resume": [asdict(r) | {"verdict": r.verdict} for r in resume],
            "feed": asdict(feed),
            "seconds": time.monotonic() - started,
        }
        report["problems"] = problems(report)
        return report
    finally:
        if cfg.work_dir is None:
            shutil.rmtree(root, ignore_errors=True)


def _num(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(report: dict) -> str:
    env = report["environment"]
    where = env.get("gpu", "CPU (smoke version)")
    lines = [
        f"pokeagent bench gpu on {where}: torch {env['torch']}, deepspeed {env['deepspeed']}, "
        f"CUDA {env['cuda']}; {report['seconds']:.0f} s",
        "",
        f"{'model':<10} {'config':<11} {'params':>7} {'batch':>5} {'samples/s':>10} "
        f"{'decisions/s':>11} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>8} {'max batch':>10} "
        f"{'samples/s':>10} {'MFU':>6} {'GiB':>6} {'loss first->last':>17} {'falls':>5} "
        f"{'fp16 skips':>10}",
    ]
    for c in report["cells"]:
        head = f"{c['model']:<10} {c['ds_config']:<11}"
        if c["status"] != "ok":
            lines.append(f"{head} {c['status']}")
            continue
        limit = {"oom": "", "cap": "+", "time": "~"}.get(c["max_batch_limit"], "?")
        skips = f"{c['skipped_steps']}" + (
            f" (scale {c['loss_scale']:g})" if c["loss_scale"] is not None else ""
        )
        lines.append(
            f"{head} {c['parameters'] / 1e6:>6.1f}M {c['batch']:>5} {c['samples_per_s']:>10.1f} "
            f"{c['decisions_per_s']:>11.0f} {c['tflops']:>8.2f} {_num(c['mfu'], '>6.1%'):>6} "
            f"{c['peak_mem_gib']:>8.2f} {str(c['max_batch']) + limit:>10} "
            f"{c['max_batch_samples_per_s']:>10.1f} {_num(c['max_batch_mfu'], '>6.1%'):>6} "
            f"{c['max_batch_peak_mem_gib']:>6.1f} "
            f"{c['losses'][0]:>8.4f}->{c['losses'][-1]:<8.4f} "
            f"{'yes' if c['loss_falling'] else 'NO':>5} {skips:>10}"
        )
    lines += [
        "max batch: the largest per-GPU batch that ran (+: --max-batch reached, ~: the cell's "
        "time ran out, else the next doubling ran out of memory); MFU needs a known peak "
        "(--peak-tflops)",
        "",
        f"{'resume':<18} {'steps':>5} {'continuous losses':>40} {'verdict':>16} "
        f"{'save s':>7} {'load s':>7} {'MiB':>7}",
    ]
    for r in report["resume"]:
        head = f"{r['model'] + ' ' + r['ds_config']:<18}"
        if r["status"] != "ok":
            lines.append(f"{head} {r['verdict']}")
            continue
        shown = " ".join(f"{x:.4f}" for x in r["continuous"])
        lines.append(
            f"{head} {r['steps']:>5} {shown:>40} {r['verdict']:>16} {r['save_s']:>7.2f} "
            f"{r['load_s']:>7.2f} {r['checkpoint_mib']:>7.1f}"
        )
    f = report["feed"]
    lines += [
        "",
        f"loader feeding {f['model']} ({f['ds_config']}, {f['workers']} workers, batch "
        f"{f['batch']} x {f['window']}): "
        + (
            f"{f['samples_per_s']:.1f} samples/s, {f['decisions_per_s']:.0f} decisions/s, "
            f"data-wait {f['data_wait_share']:.0%}; with a host sync per step "
            f"{f['synced_samples_per_s']:.1f} samples/s (step time {f['host_sync_cost']:+.0%})"
            if f["status"] == "ok"
            else f["status"]
        ),
        "",
    ]
    found = report["problems"]
    lines.append(
        "problems: none" if not found else "problems:\n" + "\n".join("  " + p for p in found)
    )
    return "\n".join(lines)


# ------------------------------------------------------------------ command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="cpu: the tiny smoke version"
    )
    parser.add_argument("--out", default="bench-gpu.json", help="where the JSON report goes")
    parser.add_argument("--shards", default=None, help="packed shards (default: made here)")
    parser.add_argument("--models", default=None, help="comma-separated presets")
    parser.add_argument("--ds-configs", default=None, help="comma-separated ds_configs/ names")
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="the fixed per-GPU batch")
    parser.add_argument("--max-batch", type=int, default=None, help="cap of the doubling search")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget")
    parser.add_argument("--loader-workers", type=int, default=None)
    parser.add_argument(
        "--torch-adam",
        action="store_true",
        default=None,
        help="torch's fused AdamW instead of DeepSpeed's JIT-built FusedAdam",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="this GPU's peak, if not in the table"
    )
    parser.add_argument(
        "--work-dir", default=None, help="keep shards and checkpoints here (default: temporary)"
    )


def config_from_args(args: argparse.Namespace) -> GpuBenchConfig:
    overrides = {
        name: getattr(args, name)
        for name in (
            "shards",
            "window",
            "batch_size",
            "max_batch",
            "budget_s",
            "loader_workers",
            "torch_adam",
            "peak_tflops",
            "work_dir",
        )
        if getattr(args, name) is not None
    }
    for name in ("models", "ds_configs"):
        if getattr(args, name):
            overrides[name] = tuple(getattr(args, name).split(","))
    if args.device == "cpu":
        return GpuBenchConfig.smoke(**overrides)
    return replace(GpuBenchConfig(), **overrides)


def main(args: argparse.Namespace) -> int:
    report = run_gpu_bench(config_from_args(args))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\nJSON: {args.out}")
    return 1 if report["problems"] else 0
