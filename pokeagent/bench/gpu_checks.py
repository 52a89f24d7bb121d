"""The three parts of `pokeagent bench gpu` (`bench/gpu.py` runs them and prints the report):
speed cells on the DeepSpeed engine, save and exact resume, the loader feeding a model.

Each returns a dataclass row; a part that fails returns its row with `status` "error: ..." (and
an unsupported precision "skipped: ..."), so one failure never costs the rest of a GPU call.
"""

from __future__ import annotations

import gc
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pokeagent.bench.gpu import GpuBenchConfig

GIB = 1024**3


# ------------------------------------------------------------------ engine plumbing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def init(device_kind: str) -> torch.device:
    """A world of one on this GPU (NCCL) or on the CPU (gloo)."""
    if device_kind == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"
    elif not torch.cuda.is_available():
        raise SystemExit(
            "pokeagent bench gpu: no CUDA GPU here; `--device cpu` runs the smoke version"
        )
    elif os.environ.get("DS_ACCELERATOR", "cuda") != "cuda":
        raise SystemExit(
            f"pokeagent bench gpu: DS_ACCELERATOR={os.environ['DS_ACCELERATOR']} would keep "
            "DeepSpeed off the GPU: unset it (or `--device cpu` for the smoke version)"
        )
    import deepspeed
    from deepspeed.utils import logger

    from pokeagent.train.trainer import _ensure_distributed_env

    logger.setLevel("WARNING")
    _ensure_distributed_env()
    if device_kind == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    deepspeed.init_distributed()
    if device_kind == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def _ds_config(name: str, batch: int, torch_adam: bool, device: torch.device) -> dict:
    from deepspeed.accelerator import get_accelerator

    from pokeagent.train.ds_config import BatchPlan, load_ds_json, resolve_ds_config, scaled_lr

    config = load_ds_json(name)
    if torch_adam:
        params = config.setdefault("optimizer", {}).setdefault("params", {})
        params["torch_adam"] = True
        if device.type == "cuda":
            params["fused"] = True
    accelerator = get_accelerator()
    return resolve_ds_config(
        config,
        BatchPlan(batch, 1, 1),
        lr=scaled_lr(3e-4, batch),
        grad_clip=1.0,
        fp16_supported=accelerator.is_fp16_supported(),
        bf16_supported=accelerator.is_bf16_supported(),
    )


def _engine(model: str, window: int, config: dict, device: torch.device, seed: int = 0):
    import deepspeed

    from pokeagent.data.encode import schema
    from pokeagent.model.config import preset
    from pokeagent.model.loss import LossConfig
    from pokeagent.model.network import build, count_parameters
    from pokeagent.train.trainer import _TrainModule

    torch.manual_seed(seed)
    net = build(preset(model, max_window=max(window, 16)), schema()["vocab"], device)
    parameters = count_parameters(net)
    engine, *_ = deepspeed.initialize(
        model=_TrainModule(net, LossConfig()), model_parameters=net.parameters(), config=config
    )
    return engine, parameters


def _release(engine) -> None:
    """Free an engine's memory before the next one (the caller drops its own references)."""
    if engine is not None:
        try:
            engine.destroy()
        except Exception as error:  # after an OOM its state may be half-built: report, go on
            print(f"bench gpu: releasing an engine failed ({error}); memory may leak", flush=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


def _loss_scale(engine) -> float | None:
    if not engine.fp16_enabled():
        return None
    scale = getattr(engine.optimizer, "cur_scale", None)
    if scale is None:
        scale = getattr(engine.optimizer, "loss_scale", None)
    return None if scale is None else float(scale)


class Pool:
    """Real windows read once from the shards, on the device; a batch of any size repeats them."""

    def __init__(self, shards: str, window: int, device: torch.device, size: int = 64):
        from pokeagent.data.loader import LoaderConfig, TrajectoryLoader

        loader = TrajectoryLoader(
            LoaderConfig(shards=shards, batch_size=size, window=window, workers=0)
        )
        self.batch = {k: v.to(device) for k, v in next(iter(loader)).items()}
        self.size = size

    def take(self, batch_size: int, offset: int = 0) -> dict[str, torch.Tensor]:
        device = self.batch["tokens"].device
        index = (torch.arange(batch_size, device=device) + offset) % self.size
        return {k: v[index] for k, v in self.batch.items()}


def _step(engine, batch) -> dict[str, torch.Tensor]:
    """One optimizer step; the loss module's parts (detached tensors, still on the device)."""
    loss, parts = engine(batch)
    engine.backward(loss)
    engine.step()
    return parts


# ------------------------------------------------------------------ 1. speed cells
@dataclass
class Cell:
    model: str
    ds_config: str
    status: str = "ok"
    """ok, skipped: <why>, error: <what>."""
    precision: str = ""
    parameters: int = 0
    init_s: float = 0.0
    """Engine build and the first two steps (kernel builds, allocator warm-up, first scale)."""
    batch: int = 0
    window: int = 0
    steps: int = 0
    step_s: float = 0.0
    samples_per_s: float = 0.0
    decisions_per_s: float = 0.0
    """Real (unpadded) decisions per second, as the trainer counts them."""
    positions_per_s: float = 0.0
    """Window positions computed per second (padding included): what the FLOPs are counted on."""
    flops_per_decision: int = 0
    tflops: float = 0.0
    mfu: float | None = None
    peak_mem_gib: float = 0.0
    losses: list[float] = field(default_factory=list)
    loss_finite: bool = False
    loss_falling: bool = False
    skipped_steps: int = 0
    """fp16 steps the loss scaler skipped on overflow."""
    loss_scale: float | None = None
    max_batch: int = 0
    max_batch_limit: str = ""
    """oom (the next doubling ran out of memory), cap (--max-batch), time (the cell's budget)."""
    max_batch_samples_per_s: float = 0.0
    max_batch_mfu: float | None = None
    max_batch_peak_mem_gib: float = 0.0
    search: list[dict] = field(default_factory=list)
    """Each batch size the doubling ran: batch, step_s, samples_per_s, mfu, peak_mem_gib."""
    leftover_gib: float = 0.0
    """Memory still allocated after the cell's engine was released (a leak shows here)."""


def _timed_steps(engine, batch, steps: int, min_seconds: float, device) -> tuple[list, float]:
    """(loss tensors, seconds per step) over at least `steps` steps and `min_seconds`."""
    losses = []
    _sync(device)
    started = time.perf_counter()
    while len(losses) < steps or time.perf_counter() - started < min_seconds:
        losses.append(_step(engine, batch)["loss"])
        if len(losses) >= 20 * steps:
            break
    _sync(device)
    return losses, (time.perf_counter() - started) / len(losses)


def _falling(losses: list[float]) -> bool:
    third = max(1, len(losses) // 3)
    return sum(losses[-third:]) / third < sum(losses[:third]) / third


def run_cell(
    cfg: GpuBenchConfig, model: str, ds_name: str, pool: Pool, device, deadline: float
) -> Cell:
    """One model x DeepSpeed config: the fixed-batch figures, then the doubling search."""
    from pokeagent.model.config import preset
    from pokeagent.model.flops import flops_per_decision, peak_flops, precision_of
    from pokeagent.train.ds_config import ConfigError

    cell = Cell(model, ds_name, batch=cfg.batch_size, window=cfg.window)
    try:
        config = _ds_config(ds_name, cfg.batch_size, cfg.torch_adam, device)
    except ConfigError as error:
        cell.status = f"skipped: {str(error).split(':')[0]}"
        return cell
    cell.precision = precision_of(config)
    peak = peak_flops(
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        cell.precision,
        cfg.peak_tflops,
    )
    cell.flops_per_decision = flops_per_decision(preset(model), cfg.window)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    held: dict = {}
    try:
        _measure(cell, cfg, config, pool, device, deadline, peak, held)
    except Exception as error:  # a kernel build, OOM at the fixed batch...: a row, not the end
        cell.status = "error: " + (f"{type(error).__name__}: {error}".splitlines()[0])[:300]
    finally:
        _release(held.pop("engine", None))
    if device.type == "cuda":
        cell.leftover_gib = (torch.cuda.memory_allocated(device) - before) / GIB
    return cell


def _measure(cell: Cell, cfg, config: dict, pool: Pool, device, deadline, peak, held) -> None:
    """Fills `cell`; the engine goes into `held` so that the caller releases it whatever happens
    (this frame's tensors are gone once it returns)."""
    started = time.perf_counter()
    engine, cell.parameters = _engine(cell.model, cfg.window, config, device)
    held["engine"] = engine
    batch = pool.take(cfg.batch_size)
    for _ in range(2):  # warm-up: allocator, kernels, fp16's first scale
        _step(engine, batch)
    cell.init_s = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, cell.step_s = _timed_steps(engine, batch, cfg.min_steps, cfg.min_seconds, device)
    cell.losses = [float(x) for x in torch.stack(losses).float().cpu()]
    cell.steps = len(losses)
    cell.loss_finite = all(math.isfinite(x) for x in cell.losses)
    cell.loss_falling = cell.loss_finite and _falling(cell.losses)
    cell.skipped_steps = engine.skipped_steps
    cell.loss_scale = _loss_scale(engine)
    cell.samples_per_s = cfg.batch_size / cell.step_s
    cell.decisions_per_s = float(batch["mask"].sum()) / cell.step_s
    cell.positions_per_s = cell.samples_per_s * cfg.window
    cell.tflops = cell.positions_per_s * cell.flops_per_decision / 1e12
    cell.mfu = cell.tflops * 1e12 / peak if peak else None
    if device.type == "cuda":
        cell.peak_mem_gib = torch.cuda.max_memory_allocated(device) / GIB
    cell.max_batch = cfg.batch_size
    cell.max_batch_samples_per_s, cell.max_batch_mfu = cell.samples_per_s, cell.mfu
    cell.max_batch_peak_mem_gib = cell.peak_mem_gib
    del batch, losses
    size, last_step = cfg.batch_size, cell.step_s
    while True:
        size *= 2
        if size > cfg.max_batch:
            cell.max_batch_limit = "cap"
            return
        if time.monotonic() + 2 * 2.5 * last_step > deadline:
            cell.max_batch_limit = "time"
            return
        try:
            bigger = pool.take(size)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _step(engine, bigger)  # the first step at a size pays the allocator
            _sync(device)
            tick = time.perf_counter()
            _step(engine, bigger)
            _sync(device)
            last_step = time.perf_counter() - tick
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not _is_oom(error):
                raise
            cell.max_batch_limit = "oom"
            return
        finally:
            bigger = None
        cell.max_batch = size
        cell.max_batch_samples_per_s = size / last_step
        cell.max_batch_mfu = (
            size * cfg.window * cell.flops_per_decision / last_step / peak if peak else None
        )
        if device.type == "cuda":
            cell.max_batch_peak_mem_gib = torch.cuda.max_memory_allocated(device) / GIB
        cell.search.append(
            {
                "batch": size,
                "step_s": last_step,
                "samples_per_s": cell.max_batch_samples_per_s,
                "mfu": cell.max_batch_mfu,
                "peak_mem_gib": cell.max_batch_peak_mem_gib,
            }
        )


# ------------------------------------------------------------------ 2. save and exact resume
@dataclass
class ResumeCheck:
    model: str
    ds_config: str
    status: str = "ok"
    steps: int = 0
    continuous: list[float] = field(default_factory=list)
    resumed: list[float] = field(default_factory=list)
    bitwise_equal: bool = False
    max_rel_diff: float = math.inf
    save_s: float = 0.0
    load_s: float = 0.0
    checkpoint_mib: float = 0.0

    @property
    def verdict(self) -> str:
        if self.status != "ok":
            return self.status
        if self.bitwise_equal:
            return "exact"
        return f"close ({self.max_rel_diff:.1e})" if self.max_rel_diff <= 1e-3 else "DIFFERS"


def run_resume(cfg: GpuBenchConfig, ds_name: str, pool: Pool, device, root: Path) -> ResumeCheck:
    """Warm-up steps, save; N steps; a fresh engine from other initial weights loads the
    checkpoint and takes the same N steps (other windows each step)."""
    from pokeagent.train.ds_config import ConfigError

    check = ResumeCheck(cfg.resume_model, ds_name, steps=cfg.resume_steps)
    try:
        config = _ds_config(ds_name, cfg.batch_size, cfg.torch_adam, device)
    except ConfigError as error:
        check.status = f"skipped: {str(error).split(':')[0]}"
        return check
    folder = root / f"resume-{ds_name}"
    batches = [pool.take(cfg.batch_size, offset=7 * i) for i in range(3 + cfg.resume_steps)]
    engine = None
    try:
        engine, _ = _engine(cfg.resume_model, cfg.window, config, device, seed=0)
        for batch in batches[:3]:
            _step(engine, batch)
        tick = time.perf_counter()
        engine.save_checkpoint(str(folder), tag="bench")
        check.save_s = time.perf_counter() - tick
        check.continuous = [float(_step(engine, b)["loss"].float()) for b in batches[3:]]
        _release(engine)
        engine = None
        engine, _ = _engine(cfg.resume_model, cfg.window, config, device, seed=1)
        tick = time.perf_counter()
        path, _client = engine.load_checkpoint(str(folder), tag="bench")
        check.load_s = time.perf_counter() - tick
        if path is None:
            raise RuntimeError(f"DeepSpeed did not load the checkpoint it wrote in {folder}")
        check.resumed = [float(_step(engine, b)["loss"].float()) for b in batches[3:]]
        check.bitwise_equal = check.continuous == check.resumed
        check.max_rel_diff = max(
            abs(a - b) / max(abs(a), 1e-12)
            for a, b in zip(check.continuous, check.resumed, strict=True)
        )
        check.checkpoint_mib = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / (
            1024**2
        )
    except Exception as error:
        check.status = "error: " + (f"{type(error).__name__}: {error}".splitlines()[0])[:300]
    finally:
        _release(engine)
        engine = None
        shutil.rmtree(folder, ignore_errors=True)
    return check


# ------------------------------------------------------------------ 3. the loader feeding a model
@dataclass
class FeedCheck:
    model: str
    ds_config: str
    workers: int
    batch: int
    window: int
    status: str = "ok"
    steps: int = 0
    samples_per_s: float = 0.0
    decisions_per_s: float = 0.0
    data_wait_share: float = 0.0
    synced_samples_per_s: float = 0.0
    """The same loop reading every logged scalar each step (a host sync per step)."""
    host_sync_cost: float = 0.0
    """Step time with a host sync per step over the step time without, minus 1."""


_LOGGED = ("loss", "policy_loss", "value_loss", "top1_correct", "top3_correct", "labelled")


def _feed(engine, batches, steps: int, device, sync_each_step: bool) -> tuple[float, float, float]:
    """(seconds, seconds waiting for the loader, real decisions) over `steps` steps."""
    pin = device.type == "cuda"
    waited, decisions = 0.0, []
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        tick = time.perf_counter()
        host = next(batches)
        waited += time.perf_counter() - tick
        batch = {
            k: (v.pin_memory() if pin else v).to(device, non_blocking=True) for k, v in host.items()
        }
        parts = _step(engine, batch)
        if sync_each_step:  # as a loop that logs every step's scalars does
            decisions.append(int(parts["decisions"]))
            for key in _LOGGED:
                float(parts[key])
        else:
            decisions.append(parts["decisions"])
    total = float(torch.stack([torch.as_tensor(d) for d in decisions]).sum())
    _sync(device)
    return time.perf_counter() - started, waited, total


def run_feed(cfg: GpuBenchConfig, shards: str, device) -> FeedCheck:
    from pokeagent.data.loader import LoaderConfig, TrajectoryLoader

    check = FeedCheck(
        cfg.loader_model, cfg.loader_config, cfg.loader_workers, cfg.loader_batch, cfg.window
    )
    engine = None
    try:
        config = _ds_config(cfg.loader_config, cfg.loader_batch, cfg.torch_adam, device)
        engine, _ = _engine(cfg.loader_model, cfg.window, config, device)
        loader = TrajectoryLoader(
            LoaderConfig(
                shards=shards,
                batch_size=cfg.loader_batch,
                window=cfg.window,
                workers=cfg.loader_workers,
            )
        )
        batches = iter(loader)
        _feed(engine, batches, 3, device, False)  # workers start, first shards open
        seconds, waited, decisions = _feed(engine, batches, cfg.loader_steps, device, False)
        check.steps = cfg.loader_steps
        check.samples_per_s = cfg.loader_steps * cfg.loader_batch / seconds
        check.decisions_per_s = decisions / seconds
        check.data_wait_share = waited / seconds
        seconds, _, _ = _feed(engine, batches, cfg.loader_steps, device, True)
        check.synced_samples_per_s = cfg.loader_steps * cfg.loader_batch / seconds
        check.host_sync_cost = check.samples_per_s / check.synced_samples_per_s - 1
        del batches, loader
    except Exception as error:
        check.status = "error: " + (f"{type(error).__name__}: {error}".splitlines()[0])[:300]
    finally:
        _release(engine)
    return check


def environment(device: torch.device) -> dict:
    """What ran the bench: versions, and the GPU with its memory."""
    import deepspeed

    info = {
        "device": device.type,
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        nccl = torch.cuda.nccl.version()
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / GIB, 1),
            "capability": f"{props.major}.{props.minor}",
            "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl),
        }
    return info
