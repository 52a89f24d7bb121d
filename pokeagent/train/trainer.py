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

import torch
from torch import nn

from pokeagent.data.encode import schema
from pokeagent.data.loader import LoaderConfig, TrajectoryLoader
from pokeagent.model.config import preset
from pokeagent.model.loss import LossConfig, compute_loss
from pokeagent.model.network import PokeAgentNet, count_parameters
from pokeagent.run_dir import BEST, LATEST, LATEST_UNIVERSAL, RunDir, tag_of
from pokeagent.train.config import TrainConfig
from pokeagent.train.ds_config import resolve_run

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


def init_distributed() -> torch.device:
    """Join the process group (a world of one without a launcher) on this rank's device."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    _ensure_distributed_env()
    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu":
        deepspeed.init_distributed()
        return torch.device("cpu")
    # One GPU per rank of the node, before anything touches one: the engine would set it only in
    # deepspeed.initialize, after the batches' device is taken, and NCCL's first collective picks
    # the current device.
    accelerator.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    deepspeed.init_distributed()
    return torch.device(accelerator.device_name(), accelerator.current_device())


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

    validation = None
    """--eval-every: the fixed validation subset and best loss (train/validation.py), from run()."""
    battles = None
    """--eval-battles, rank 0: the battle processes (train/validation.py), from run()."""

    def __init__(self, cfg: TrainConfig):
        import deepspeed
        import torch.distributed as dist

        self.cfg = cfg
        self.device = init_distributed()
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.run_dir = RunDir(cfg.run_dir)
        self.ckpt_dir = self.run_dir.checkpoints
        if self.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        plan = resolve_run(cfg, self.world)
        self.peak_lr, self.ds_config = plan.peak_lr, plan.deepspeed
        self.saved_world: int | None = None
        """Ranks that saved the checkpoint to resume, when that differs from this run's."""
        self._prepare_resume_elsewhere()
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
                min_rating=cfg.min_elo or None,
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
        self._apply_sample_budget()

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> str:
        step = self.engine.global_steps
        tag = tag_of(step)
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
            self.run_dir.rank_file(tag, self.rank),
        )
        self.dist.barrier()
        if self.rank == 0:
            self._export_weights(tag)
            self._prune()
            self.run_dir.write_config(self.cfg.to_dict(), self.ds_config)
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
            str(self.run_dir.weights(tag)),
            metadata=metadata,
        )

    def _prune(self) -> None:
        # The best checkpoint by validation loss, and those a battle process may still be reading,
        # stay outside the keep-last rotation.
        exempt = {self.run_dir.pointer(BEST)}
        if self.battles is not None:
            exempt |= self.battles.protected()
        for old in self.run_dir.tags()[: -self.cfg.keep_last]:
            if old not in exempt:
                shutil.rmtree(self.ckpt_dir / old, ignore_errors=True)

    def try_resume(self) -> bool:
        """Continue from the latest checkpoint of the run directory, if there is one."""
        if self.run_dir.pointer(LATEST) is None:
            return False
        path, _client = self.engine.load_checkpoint(str(self.ckpt_dir))
        if path is None:
            raise RuntimeError(
                f"{self.ckpt_dir}: `latest` names a checkpoint DeepSpeed cannot load"
            )
        tag = self.run_dir.pointer(LATEST)
        if self.saved_world is not None:
            self._resume_resplit(tag)
            return True
        own = torch.load(self.run_dir.rank_file(tag, self.rank), weights_only=False)
        if own["loader"]["workers"] != max(1, self.cfg.workers_per_gpu):
            self._resume_resplit(tag)  # same ranks, another --workers-per-gpu
            return True
        self.loader.load_state_dict(own["loader"])
        torch.set_rng_state(own["torch_rng"])
        self.samples_seen = own["samples_seen"]
        self.decisions_seen = own["decisions_seen"]
        self.resumed_from = own["step"]
        return True

    def _apply_sample_budget(self) -> None:
        """--max-samples: the run ends at the step where the global sample count reaches it (from
        the samples already seen, so that a resume on another global batch still ends there)."""
        if not self.cfg.max_samples:
            return
        if not hasattr(self, "_max_steps_asked"):
            self._max_steps_asked = self.cfg.max_steps
        global_batch = self.cfg.batch_size_per_gpu * self.cfg.grad_accum * self.world
        left = max(0, self.cfg.max_samples - self.samples_seen)
        done = self.engine.global_steps
        self.cfg.max_steps = max(
            1, min(self._max_steps_asked, done + math.ceil(left / global_batch))
        )

    # ------------------------------------------------------------------ resume on another world size
    def _prepare_resume_elsewhere(self) -> None:
        """Before the engine exists: if `latest` was saved by another number of ranks, convert it
        to a DeepSpeed universal checkpoint (rank 0; the others wait) and have the engine load
        that (`"checkpoint": {"load_universal": true}`). ZeRO shards of one data-parallel size do
        not load into another; a universal checkpoint holds every parameter's fp32 weights and
        Adam moments whole. Without ZeRO the optimizer state is not sharded and loads as is."""
        tag = self.run_dir.pointer(LATEST)
        if tag is None:
            return
        saved = len(self.run_dir.rank_files(tag))
        if saved in (0, self.world):
            return
        self.saved_world = saved
        if self.ds_config.get("zero_optimization", {}).get("stage", 0) == 0:
            return
        universal = f"universal-{tag}"
        if self.rank == 0:
            print(
                f"{self.ckpt_dir / tag} was saved by {saved} ranks, this run has {self.world}: "
                f"converting it to a universal checkpoint ({universal})",
                flush=True,
            )
            if not (self.ckpt_dir / universal).is_dir():
                self._convert_to_universal(tag, universal)
            (self.ckpt_dir / LATEST_UNIVERSAL).write_text(universal)
        self.dist.barrier()
        self.ds_config["checkpoint"] = {"load_universal": True}

    def _convert_to_universal(self, tag: str, universal: str) -> None:
        """deepspeed.checkpoint.ds_to_universal in its own process (it forks extraction workers,
        which a process holding a process group should not), into a temporary folder renamed
        when complete, so that an interrupted conversion is redone rather than half-loaded."""
        import subprocess
        import sys

        partial = self.ckpt_dir / f"{universal}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        workers = str(max(1, min(4, (os.cpu_count() or 2) // 2)))
        command = [
            sys.executable,
            "-m",
            "deepspeed.checkpoint.ds_to_universal",
            "--input_folder",
            str(self.ckpt_dir / tag),
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
                f"converting {self.ckpt_dir / tag} to a universal checkpoint failed "
                f"({' '.join(command)}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        partial.rename(self.ckpt_dir / universal)

    def _resume_resplit(self, tag: str) -> None:
        """Counters, loader and RNG when the saving run had another world size or worker count.

        The loader continues from a fresh assignment (data/loader.py `resplit_state`: epoch + 1 of
        the furthest old worker). Kept: the step (the engine's), samples seen (a global count),
        the decisions seen (their sum over the old ranks, carried by rank 0) and the position of
        the learning-rate schedule, whose peak is re-derived for the new global batch by the
        square-root rule. Dropout's RNG is seeded from (seed, step, rank)."""
        import numpy as np

        from pokeagent.data.loader import resplit_state

        states = [torch.load(path, weights_only=False) for path in self.run_dir.rank_files(tag)]
        step = states[0]["step"]
        self.loader.load_state_dict(
            resplit_state(
                [s["loader"] for s in states],
                self.rank,
                self.world,
                self.cfg.workers_per_gpu,
                self.cfg.seed,
            )
        )
        seed = np.random.SeedSequence([self.cfg.seed, step, self.rank]).generate_state(1)[0]
        torch.manual_seed(int(seed))
        self.samples_seen = states[0]["samples_seen"]
        self.decisions_seen = sum(s["decisions_seen"] for s in states) if self.rank == 0 else 0
        self.resumed_from = step
        self._apply_sample_budget()
        factor = lr_lambda(self.cfg)(self.scheduler.last_epoch)
        self.scheduler.base_lrs = [self.peak_lr for _ in self.scheduler.base_lrs]
        for group in self.scheduler.optimizer.param_groups:
            group["lr"] = self.peak_lr * factor
        self.scheduler._last_lr = [self.peak_lr * factor for _ in self.scheduler.base_lrs]
        if self.rank == 0:
            print(
                f"resumed {len(states)} ranks' checkpoint {tag} on {self.world}: loader re-split "
                f"(fresh epoch), peak lr {self.peak_lr:.3g} for global batch "
                f"{self.cfg.batch_size_per_gpu * self.cfg.grad_accum * self.world}",
                flush=True,
            )
        universal = self.ckpt_dir / f"universal-{tag}"
        self.dist.barrier()
        if self.rank == 0 and universal.is_dir():
            # Loaded by every rank: until the next save, a restart converts `latest` again.
            shutil.rmtree(universal, ignore_errors=True)
            (self.ckpt_dir / LATEST_UNIVERSAL).unlink(missing_ok=True)

    # ------------------------------------------------------------------ the loop
    def _on_signal(self, signum, _frame) -> None:
        self.stop_requested = True

    def _agree(self, checkpoint_due: bool, stop: bool) -> tuple[bool, bool]:
        # On the rank's device: a NCCL process group has no CPU backend (gloo on CPU runs).
        flags = torch.tensor([float(checkpoint_due), float(stop)], device=self.device)
        self.dist.all_reduce(flags, op=self.dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])

    def _log(self, step: int, window: dict[str, float], seconds: float, waited: float) -> None:
        """Sum the interval's counters over ranks (a collective on every rank), write on rank 0."""
        keys = sorted(window)
        totals = torch.tensor([window[k] for k in keys], dtype=torch.float64, device=self.device)
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
        writer = self._writer()
        for name, value in scalars.items():
            writer.add_scalar(name, value, step)
        writer.flush()
        print(
            f"step {step}/{self.cfg.max_steps} loss {scalars['loss/total']:.4f} top1 {scalars['accuracy/top1']:.3f} "
            f"lr {scalars['lr']:.2e} {scalars['throughput/samples_per_s']:.0f} samples/s "
            f"{scalars['throughput/decisions_per_s']:.0f} decisions/s data-wait {scalars['throughput/data_wait_share']:.0%}",
            flush=True,
        )

    # ------------------------------------------------------------------ validation
    def _writer(self):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir.tensorboard))
        return self.writer

    def _setup_validation(self) -> None:
        """--eval-every: every rank reads the fixed subset once. Rank 0 recovers the best loss of
        a resumed run, records battle results that came after the last job ended and, with
        --eval-battles, watches the battle processes."""
        cfg = self.cfg
        if not cfg.eval_every:
            return
        from pokeagent.train.validation import Battles, Validation, unrecorded_battles

        self.validation = Validation(
            cfg.data_dir, cfg.eval_samples, cfg.window, cfg.batch_size_per_gpu, cfg.value_weight
        )
        self.validation.recover_best(self.run_dir.root, self.ckpt_dir)
        if self.rank == 0:
            self._record_battles(unrecorded_battles(self.run_dir))
            if cfg.eval_battles:
                self.battles = Battles(cfg.eval_battles)

    def _validate(self, step: int) -> bool:
        """Validation at `step`. Every rank evaluates the same subset: ZeRO-3's forward needs them
        all, and at lower stages they would only wait for rank 0. Rank 0 writes `val/` scalars and
        a `"val": true` record in metrics.jsonl; returns whether the loss is the best so far (rank
        0's verdict is the one used)."""
        from pokeagent.model.metrics import scalars
        from pokeagent.train.validation import record

        started = time.monotonic()
        metrics = self.validation.evaluate(self.engine.module.net, self.device)
        loss = metrics["overall"].get("loss", math.inf)
        best = loss < self.validation.best_loss
        if best:
            self.validation.best_loss = loss
        if self.rank != 0:
            return False
        writer = self._writer()
        for name, value in scalars(metrics, "val").items():
            writer.add_scalar(name, value, step)
        writer.flush()
        row = record(step, metrics, time.monotonic() - started)
        self.run_dir.append_metrics(row)
        print(
            f"validation at step {step}: loss {loss:.4f} top1 {row['top1']:.3f} "
            f"top3 {row['top3']:.3f} value {row['value_loss']:.4f} ({row['trajectories']} "
            f"trajectories, {row['seconds']:.1f} s){' best so far' if best else ''}",
            flush=True,
        )
        return best

    def _after_validation_save(self, step: int, tag: str, best: bool) -> None:
        """Rank 0, once the checkpoint of a validated step is saved: the `best` pointer (the
        previous best returns to the rotation) and the battle process."""
        if best:
            self.run_dir.set_pointer(BEST, tag)
            self._prune()
        if self.battles is not None:
            self.battles.launch(
                step, self.run_dir.checkpoint(tag), self.run_dir.eval_dir("battles", step)
            )

    def _poll_battles(self) -> None:
        """Rank 0: win rates of finished battle processes -> TensorBoard at the step they played."""
        if self.battles is not None:
            self._record_battles(self.battles.poll())

    def _record_battles(self, results: dict[int, dict[str, float]]) -> None:
        for step, rates in results.items():
            writer = self._writer()
            for opponent, rate in rates.items():
                writer.add_scalar(f"battles/vs_{opponent}", rate, step)
            writer.flush()
            self.run_dir.append_metrics({"battles": True, "step": step, "win_rates": rates})
            shown = ", ".join(f"vs {name} {rate:.2f}" for name, rate in rates.items())
            print(f"battles for step {step}: {shown}", flush=True)

    def _write_job(self, deadline: float) -> None:
        """Rank 0: `job.json`, when this job started and must stop (for `pokeagent status`)."""
        if self.rank != 0:
            return
        now = time.time()
        job = {
            "started_at": now,
            "stop_at": now + (deadline - time.monotonic()) if math.isfinite(deadline) else None,
            "time_limit_hours": self.cfg.time_limit_hours,
            "resumed_from": self.resumed_from,
            "world_size": self.world,
        }
        self.run_dir.write_job(job)

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
        self._write_job(deadline)
        self._setup_validation()
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
                self.run_dir.append_metrics(asdict(record))
            if step % cfg.log_every == 0:
                now = time.monotonic()
                self._log(step, window, now - interval_start, waited)
                window, waited, interval_start = {}, 0.0, now
                if self.rank == 0:
                    self._poll_battles()
            validated = best = False
            if self.validation is not None and (
                step % cfg.eval_every == 0 or step >= cfg.max_steps
            ):
                validated, best = True, self._validate(step)
            now = time.monotonic()
            # Rank 0's clock decides; the all-reduce below makes every rank follow it. A new best
            # validation loss, or battles to play, need a checkpoint of this step.
            battles = self.battles is not None and not self.battles.unavailable
            due = self.rank == 0 and (
                now - last_save >= cfg.checkpoint_minutes * 60 or best or (validated and battles)
            )
            stop = self.stop_requested or now >= deadline
            due, stop = self._agree(due, stop)
            if due or stop or step >= cfg.max_steps:
                tag = self.save()
                last_save = time.monotonic()
                if validated and self.rank == 0:
                    self._after_validation_save(step, tag, best)
            if stop:
                if self.rank == 0:
                    print(
                        f"stopped cleanly at step {step} ({'signal' if self.stop_requested else 'time limit'}); checkpoint saved",
                        flush=True,
                    )
                break
        if self.rank == 0 and self.battles is not None:
            self._poll_battles()
            for running in self.battles.still_running():
                print(
                    f"battles still running: {running}; `pokeagent status` shows them", flush=True
                )
        return self.history

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.dist.is_initialized():
            self.dist.barrier()
            self.dist.destroy_process_group()
