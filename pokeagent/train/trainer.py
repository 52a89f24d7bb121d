"""The trainer: the DeepSpeed engine over the loader's batches, with checkpoints that resume exactly.

    pokeagent train --data-dir shards/demo --model small --ds-config zero2_bf16 --run-dir runs/small
    deepspeed --num_gpus 8 -m pokeagent.train --data-dir ... (one process per GPU)

Every checkpoint is a full resume point: the engine's state (model, optimizer, scheduler; ZeRO
shards on every rank) and, per rank, a `rank<r>.pt` file with its loader cursor, RNG state and
counters (DeepSpeed writes client_state from rank 0 only). Rank 0 decides when a checkpoint is
due (wall clock) or the run must stop (signal, time limit, last step); one all-reduce per step
makes every rank agree, so no rank enters a collective alone.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from pokeagent.data.encode import schema
from pokeagent.data.loader import LoaderConfig, TrajectoryLoader
from pokeagent.model.config import preset
from pokeagent.model.loss import LossConfig, compute_loss
from pokeagent.model.network import PokeAgentNet, count_parameters
from pokeagent.train.config import TrainConfig
from pokeagent.train.ds_config import BatchPlan, resolve_ds_config, scaled_lr

CHECKPOINTS = "checkpoints"
_LOGGED_SUMS = (
    "loss",
    "policy_loss",
    "value_loss",
    "top1_correct",
    "top3_correct",
    "labelled",
    "decisions",
    "value_brier_sum",
)


class _TrainModule(nn.Module):
    """The network plus its loss: what the DeepSpeed engine wraps."""

    def __init__(self, net: PokeAgentNet, loss_cfg: LossConfig):
        super().__init__()
        self.net, self.loss_cfg = net, loss_cfg

    def forward(self, batch: dict[str, torch.Tensor]):
        logits, value = self.net(batch)
        return compute_loss(logits, value, batch, self.loss_cfg)


def _ensure_distributed_env() -> None:
    """Without a launcher, run as a world of one (DeepSpeed otherwise looks for MPI)."""
    if "RANK" in os.environ:
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def lr_lambda(cfg: TrainConfig):
    """Linear warmup, then cosine decay to min_lr_ratio at max_steps (a factor of the peak)."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@dataclass
class StepRecord:
    step: int
    loss: float
    policy_loss: float
    value_loss: float
    lr: float


class Trainer:
    """Builds the engine, the loader and the run directory; `run()` trains until done or stopped."""

    def __init__(self, cfg: TrainConfig):
        import deepspeed
        import torch.distributed as dist
        from deepspeed.accelerator import get_accelerator

        self.cfg = cfg
        _ensure_distributed_env()
        deepspeed.init_distributed()
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_dir = self.run_dir / CHECKPOINTS
        if self.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        accelerator = get_accelerator()
        self.device = (
            torch.device(accelerator.device_name(), accelerator.current_device())
            if accelerator.device_name() != "cpu"
            else torch.device("cpu")
        )
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        plan = BatchPlan(cfg.batch_size_per_gpu, cfg.grad_accum, self.world)
        self.peak_lr = scaled_lr(cfg.learning_rate, plan.global_batch)
        self.ds_config = resolve_ds_config(
            cfg.ds_config,
            plan,
            lr=self.peak_lr,
            grad_clip=cfg.grad_clip,
            fp16_supported=accelerator.is_fp16_supported(),
        )
        net = PokeAgentNet(preset(cfg.model, max_window=max(cfg.window, 16)), schema()["vocab"])
        self.parameters = count_parameters(net)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=_TrainModule(net, LossConfig(cfg.value_weight)),
            model_parameters=net.parameters(),
            config=self.ds_config,
            lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(
                optimizer, lr_lambda(cfg)
            ),
        )
        self.loader = TrajectoryLoader(
            LoaderConfig(
                shards=cfg.data_dir,
                batch_size=cfg.batch_size_per_gpu,
                window=cfg.window,
                workers=cfg.workers_per_gpu,
                shuffle_buffer=cfg.shuffle_buffer,
                seed=cfg.seed,
            ),
            rank=self.rank,
            world_size=self.world,
        )
        self.samples_seen = 0
        self.decisions_seen = 0
        """This rank's real (unpadded) decisions trained on: the token counter."""
        self.stop_requested = False
        self.history: list[StepRecord] = []
        self.resumed_from: int | None = None
        self.writer = None

    # ------------------------------------------------------------------ checkpoints
    def _rank_file(self, tag: str) -> Path:
        return self.ckpt_dir / tag / f"rank{self.rank:05d}.pt"

    def save(self) -> str:
        step = self.engine.global_steps
        tag = f"step{step:08d}"
        self.engine.save_checkpoint(
            str(self.ckpt_dir), tag=tag, client_state={"config": self.cfg.to_dict()}
        )
        torch.save(
            {
                "loader": self.loader.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "samples_seen": self.samples_seen,
                "decisions_seen": self.decisions_seen,
                "step": step,
            },
            self._rank_file(tag),
        )
        self.dist.barrier()
        if self.rank == 0:
            self._export_weights(tag)
            self._prune()
            (self.run_dir / "config.json").write_text(
                json.dumps({"train": self.cfg.to_dict(), "deepspeed": self.ds_config}, indent=2)
            )
        self.dist.barrier()
        return tag

    def _export_weights(self, tag: str) -> None:
        """`<tag>/model.safetensors`: plain fp32 weights of the network, for evaluation and sharing.

        With ZeRO the exact fp32 master weights are rebuilt from the optimizer shards (the
        module's own copy may be bf16 or, with ZeRO-3, partitioned)."""
        from safetensors.torch import save_file

        stage = self.ds_config.get("zero_optimization", {}).get("stage", 0)
        if stage >= 1:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(self.ckpt_dir), tag)
            state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
        else:
            state = {
                k: v.detach().float().cpu() for k, v in self.engine.module.net.state_dict().items()
            }
        metadata = {
            "model": self.cfg.model,
            "model_config": json.dumps(self.engine.module.net.cfg.to_dict()),
            "step": str(self.engine.global_steps),
        }
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            str(self.ckpt_dir / tag / "model.safetensors"),
            metadata=metadata,
        )

    def _prune(self) -> None:
        tags = sorted(p.name for p in self.ckpt_dir.glob("step*") if p.is_dir())
        for old in tags[: -self.cfg.keep_last]:
            shutil.rmtree(self.ckpt_dir / old, ignore_errors=True)

    def try_resume(self) -> bool:
        """Continue from the latest checkpoint of the run directory, if there is one."""
        if not (self.ckpt_dir / "latest").exists():
            return False
        path, _client = self.engine.load_checkpoint(str(self.ckpt_dir))
        if path is None:
            raise RuntimeError(
                f"{self.ckpt_dir}: `latest` names a checkpoint DeepSpeed cannot load"
            )
        tag = (self.ckpt_dir / "latest").read_text().strip()
        own = torch.load(self._rank_file(tag), weights_only=False)
        self.loader.load_state_dict(own["loader"])
        torch.set_rng_state(own["torch_rng"])
        self.samples_seen = own["samples_seen"]
        self.decisions_seen = own["decisions_seen"]
        self.resumed_from = own["step"]
        return True

    # ------------------------------------------------------------------ the loop
    def _on_signal(self, signum, _frame) -> None:
        self.stop_requested = True

    def _agree(self, checkpoint_due: bool, stop: bool) -> tuple[bool, bool]:
        flags = torch.tensor([float(checkpoint_due), float(stop)])
        self.dist.all_reduce(flags, op=self.dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])

    def _log(self, step: int, window: dict[str, float], seconds: float, waited: float) -> None:
        """Sum the interval's counters over ranks (a collective on every rank), write on rank 0."""
        keys = sorted(window)
        totals = torch.tensor([window[k] for k in keys], dtype=torch.float64)
        self.dist.all_reduce(totals)
        sums = dict(zip(keys, totals.tolist(), strict=True))
        if self.rank != 0:
            return
        micro = max(1.0, sums["micro_steps"])
        labelled = max(1.0, sums["labelled"])
        scalars = {
            "loss/total": sums["loss"] / micro,
            "loss/policy": sums["policy_loss"] / micro,
            "loss/value": sums["value_loss"] / micro,
            "accuracy/top1": sums["top1_correct"] / labelled,
            "accuracy/top3": sums["top3_correct"] / labelled,
            "value/brier": sums["value_brier_sum"] / max(1.0, sums["decisions"]),
            "lr": self.scheduler.get_last_lr()[0],
            "throughput/samples_per_s": sums["samples"] / max(seconds, 1e-9),
            "throughput/decisions_per_s": sums["decisions"] / max(seconds, 1e-9),
            "throughput/data_wait_share": waited / max(seconds, 1e-9),
        }
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            scalars["grad_norm"] = float(grad_norm)
        loss_scale = getattr(self.engine.optimizer, "cur_scale", None)
        if loss_scale is not None and self.ds_config.get("fp16", {}).get("enabled"):
            scalars["loss_scale"] = float(loss_scale)
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()
        print(
            f"step {step}/{self.cfg.max_steps} loss {scalars['loss/total']:.4f} top1 {scalars['accuracy/top1']:.3f} "
            f"lr {scalars['lr']:.2e} {scalars['throughput/samples_per_s']:.0f} samples/s "
            f"{scalars['throughput/decisions_per_s']:.0f} decisions/s data-wait {scalars['throughput/data_wait_share']:.0%}",
            flush=True,
        )

    def run(self) -> list[StepRecord]:
        cfg = self.cfg
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        started = last_save = interval_start = time.monotonic()
        deadline = (
            started + cfg.time_limit_hours * 3600 - cfg.time_margin_minutes * 60
            if cfg.time_limit_hours
            else math.inf
        )
        window: dict[str, float] = {}
        waited = 0.0
        batches = iter(self.loader)
        while self.engine.global_steps < cfg.max_steps:
            for _ in range(cfg.grad_accum):
                before = time.monotonic()
                batch = {k: v.to(self.device) for k, v in next(batches).items()}
                waited += time.monotonic() - before
                loss, parts = self.engine(batch)
                self.engine.backward(loss)
                self.engine.step()
                self.samples_seen += cfg.batch_size_per_gpu * self.world
                self.decisions_seen += int(parts["decisions"])
                for key in _LOGGED_SUMS:
                    window[key] = window.get(key, 0.0) + float(parts[key])
                window["micro_steps"] = window.get("micro_steps", 0.0) + 1
                window["samples"] = window.get("samples", 0.0) + cfg.batch_size_per_gpu
            step = self.engine.global_steps
            record = StepRecord(
                step,
                float(parts["loss"]),
                float(parts["policy_loss"]),
                float(parts["value_loss"]),
                self.scheduler.get_last_lr()[0],
            )
            self.history.append(record)
            if self.rank == 0:
                # Full-precision per-step figures: what resume-exactness checks and plots read.
                with open(self.run_dir / "metrics.jsonl", "a") as metrics:
                    metrics.write(json.dumps(asdict(record)) + "\n")
            if step % cfg.log_every == 0:
                now = time.monotonic()
                self._log(step, window, now - interval_start, waited)
                window, waited, interval_start = {}, 0.0, now
            now = time.monotonic()
            # Rank 0's clock decides; the all-reduce below makes every rank follow it.
            due = self.rank == 0 and now - last_save >= cfg.checkpoint_minutes * 60
            stop = self.stop_requested or now >= deadline
            due, stop = self._agree(due, stop)
            if due or stop or step >= cfg.max_steps:
                self.save()
                last_save = time.monotonic()
            if stop:
                if self.rank == 0:
                    print(
                        f"stopped cleanly at step {step} ({'signal' if self.stop_requested else 'time limit'}); checkpoint saved",
                        flush=True,
                    )
                break
        return self.history

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.dist.is_initialized():
            self.dist.barrier()
            self.dist.destroy_process_group()
