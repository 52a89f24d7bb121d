"""The trainer: the DeepSpeed engine over the loader's batches, with checkpoints that resume exactly.

    pokeagent train --data-dir shards/demo --model small --ds-config zero2_bf16 --run-dir runs/small
    deepspeed --num_gpus 8 -m pokeagent.train --data-dir ... (one process per GPU)

`Trainer.__init__` builds the engine, the loader and the run directory; `run()` is the loop: a
step, its record, the interval's log, validation, then the checkpoint and stop decision. Rank 0
decides when a checkpoint is due (wall clock, a new best validation) or the run must stop
(signal, time limit, last step); one all-reduce per step makes every rank agree, so no rank
enters a collective alone. Checkpoints (and resume on another number of ranks) are
train/checkpoint.py's; the records, TensorBoard and console train/runlog.py's; validation and
battles train/validation.py's.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from pokeagent.data.encode import schema
from pokeagent.data.loader import LoaderConfig, TrajectoryLoader
from pokeagent.model.config import preset
from pokeagent.model.flops import flops_per_decision, mfu, peak_flops, precision_of
from pokeagent.model.loss import CRITIC_SUMS, LossConfig, compute_loss
from pokeagent.model.network import PokeAgentNet, count_parameters
from pokeagent.run_dir import BEST, RunDir
from pokeagent.train.checkpoint import Checkpointer, resplit
from pokeagent.train.config import TrainConfig
from pokeagent.train.critic_target import CriticTarget
from pokeagent.train.ds_config import resolve_run
from pokeagent.train.runlog import RunLog
from pokeagent.writer_lock import FolderLocked, WriterLock

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


_RECORDED = ("loss", "policy_loss", "value_loss")
"""The per-step figures of metrics.jsonl (StepRecord), with `critic_loss` where there is a critic."""


class _TrainModule(nn.Module):
    """The network plus its loss: what the DeepSpeed engine wraps. With a critic, `target` (set
    by the trainer once the engine exists) holds the critic's fp32 target, outside the module."""

    def __init__(self, net: PokeAgentNet, loss_cfg: LossConfig):
        super().__init__()
        self.net, self.loss_cfg = net, loss_cfg
        self.target: CriticTarget | None = None

    def forward(self, batch: dict[str, torch.Tensor]):
        if self.net.critic is None:
            logits, value = self.net(batch)
            return compute_loss(logits, value, batch, self.loss_cfg)
        weights = self.target.weights if self.target is not None else None
        logits, value, q, q_target = self.net(batch, critic=True, critic_target=weights)
        return compute_loss(logits, value, batch, self.loss_cfg, q=q, q_target=q_target)


class NonFiniteLoss(RuntimeError):
    """The run stopped on non-finite losses or gradient norms, without saving (`_guard_nonfinite`)."""


def init_distributed() -> torch.device:
    """Join the process group (a world of one without a launcher); this rank's device. JIT op
    builds from here on never wait silently or forever (train/build_lock.py)."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    from pokeagent.train.build_lock import guard_extension_builds

    guard_extension_builds()
    _ensure_distributed_env()
    world = int(os.environ["WORLD_SIZE"])
    if world > 1 and os.environ["RANK"] == "0":
        print(
            f"joining {world} ranks at {os.environ.get('MASTER_ADDR')}:"
            f"{os.environ.get('MASTER_PORT')} (at most DEEPSPEED_TIMEOUT="
            f"{os.environ.get('DEEPSPEED_TIMEOUT', '10')} min)",
            flush=True,
        )
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


def critic_scalars(sums: dict[str, float], micro: float, labelled: float) -> dict[str, float]:
    """TensorBoard figures of the critic from an interval's sums (model/loss.py CRITIC_SUMS)."""
    mean = sums["advantage_sum"] / labelled
    return {
        "critic/loss": sums["critic_loss"] / micro,
        "critic/q_taken": sums["q_taken_sum"] / labelled,
        "critic/advantage_mean": mean,
        "critic/advantage_std": math.sqrt(max(0.0, sums["advantage_sq_sum"] / labelled - mean**2)),
        "critic/kept_share": sums["kept"] / labelled,
        "critic/weight_mean": sums["weight_sum"] / labelled,
        "critic/trained_share": sums["critic_trained"] / labelled,
    }


class _Interval:
    """One log interval's sums on this rank: the loss parts, micro-steps, samples, data wait.

    The parts stay tensors on the device, added without reading them: reading one (`float()`,
    `.item()`) waits for the GPU to finish the step, so the host could not queue the next one.
    `take()` reads them all at once, at log steps."""

    def __init__(self, started: float):
        self.started, self.tensors, self.counts, self.waited = started, {}, {}, 0.0

    def add(self, parts: dict, samples: int) -> None:
        for key in _LOGGED_SUMS + (CRITIC_SUMS if "critic_loss" in parts else ()):
            value = parts[key].detach().double()
            self.tensors[key] = self.tensors[key] + value if key in self.tensors else value
        self.counts["micro_steps"] = self.counts.get("micro_steps", 0.0) + 1
        self.counts["samples"] = self.counts.get("samples", 0.0) + samples

    def take(self) -> tuple[dict[str, float], float, float]:
        """(sums, seconds, seconds waiting for data) of the interval; the next one starts now."""
        now = time.monotonic()
        keys = sorted(self.tensors)
        values = torch.stack([self.tensors[k] for k in keys]).tolist() if keys else []
        sums = dict(zip(keys, values, strict=True)) | self.counts
        taken = (sums, now - self.started, self.waited)
        self.started, self.tensors, self.counts, self.waited = now, {}, {}, 0.0
        return taken


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
        self.writer_lock = self._lock_run_dir()  # before anything is written there
        if self.rank == 0:
            self.run_dir.checkpoints.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.run_dir, enabled=self.rank == 0)
        self.checkpoints = Checkpointer(
            self.run_dir, self.rank, self.world, cfg.keep_last, self.device
        )
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        plan = resolve_run(cfg, self.world)
        self.peak_lr, self.ds_config = plan.peak_lr, plan.deepspeed
        self.checkpoints.prepare_resume(self.ds_config)  # before the engine reads ds_config
        model_cfg = preset(cfg.model, max_window=max(cfg.window, 16), critic_heads=cfg.critic_heads)
        net = PokeAgentNet(model_cfg, schema()["vocab"])
        self.parameters = count_parameters(net)
        self.flops_per_decision = flops_per_decision(model_cfg, cfg.window)
        """Training FLOPs per window position (model/flops.py): MFU's numerator."""
        self.peak_flops = (
            peak_flops(precision=precision_of(self.ds_config), override=cfg.peak_tflops or None)
            if self.device.type == "cuda" or cfg.peak_tflops
            else None
        )
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=_TrainModule(net, cfg.loss_config()),
            model_parameters=net.parameters(),
            config=self.ds_config,
            lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(
                optimizer, lr_lambda(cfg)
            ),
        )
        self.critic_target = None
        """The critic's fp32 Polyak target (train/critic_target.py), with a critic."""
        if self.engine.module.net.critic is not None:
            self.critic_target = CriticTarget(
                self.engine.module.net.critic, cfg.target_rate, self.device
            )
            self.engine.module.target = self.critic_target
        self.loader = TrajectoryLoader(
            LoaderConfig(
                shards=cfg.data_dir,
                batch_size=cfg.batch_size_per_gpu,
                window=cfg.window,
                workers=cfg.workers_per_gpu,
                shuffle_buffer=cfg.shuffle_buffer,
                seed=cfg.seed,
                min_rating=cfg.min_rating or None,
                pin_memory=self.device.type == "cuda",
            ),
            rank=self.rank,
            world_size=self.world,
        )
        self.samples_seen = 0
        self.decisions_seen = 0
        """This rank's real (unpadded) decisions trained on: the token counter."""
        self.stop_requested = False
        self.nonfinite_steps = 0
        """Optimizer steps whose loss or gradient norm was not finite (each one skipped)."""
        self.nonfinite_streak = 0
        """Such steps in a row, up to the last one; --max-nonfinite-steps of them stop the run."""
        self._step_nonfinite: torch.Tensor | None = None
        """On the device: whether the last step's loss was not finite (read at `_agree`)."""
        self._fp16 = bool(self.ds_config.get("fp16", {}).get("enabled"))
        self.history: list[StepRecord] = []
        self._pending_records: list = []
        """Steps recorded but not yet read from the device (`_record_step`)."""
        self._decisions_pending: list[torch.Tensor] = []
        self.resumed_from: int | None = None
        self._apply_sample_budget()

    def _lock_run_dir(self) -> WriterLock:
        """Rank 0 takes the run directory's writer lock (pokeagent/writer_lock.py); if another
        job holds it, every rank stops with FolderLocked."""
        lock = WriterLock(self.run_dir.lock, "run directory")
        refused = None
        if self.rank == 0:
            try:
                lock.acquire()
            except FolderLocked as error:
                refused = error
        flag = torch.tensor([float(refused is not None)], device=self.device)
        self.dist.all_reduce(flag, op=self.dist.ReduceOp.MAX)
        if flag.item():
            raise refused or FolderLocked(f"{self.run_dir.root}: another job writes it")
        return lock

    # ------------------------------------------------------------------ state and checkpoints
    def state_dict(self) -> dict:
        """This rank's part of a checkpoint beside the engine's: loader cursor, RNG, counters
        and, with a critic, its target (the same on every rank)."""
        self._flush_records()
        state = {
            "loader": self.loader.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "samples_seen": self.samples_seen,
            "decisions_seen": self.decisions_seen,
            "step": self.engine.global_steps,
            "nonfinite_steps": self.nonfinite_steps,
            "nonfinite_streak": self.nonfinite_streak,
        }
        if self.critic_target is not None:
            state["critic_target"] = self.critic_target.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """A `state_dict()`, or a re-split one (checkpoint.resplit: a `seed` for the RNG)."""
        self.loader.load_state_dict(state["loader"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        else:
            torch.manual_seed(state["seed"])
        self.samples_seen = state["samples_seen"]
        self.decisions_seen = state["decisions_seen"]
        self.resumed_from = state["step"]
        self.nonfinite_steps = state.get("nonfinite_steps", 0)
        self.nonfinite_streak = state.get("nonfinite_streak", 0)
        if self.critic_target is not None:
            if "critic_target" not in state:
                raise RuntimeError(
                    f"{self.run_dir.checkpoints}: the checkpoint has no critic target: it was "
                    "trained without a critic (--objective bc, --critic-heads 0); start a new run "
                    "directory to add one"
                )
            self.critic_target.load_state_dict(state["critic_target"])

    def save(self) -> str:
        return self.checkpoints.save(
            self.engine, self.state_dict(), self.cfg.to_dict(), self.ds_config, self._in_use()
        )

    def _in_use(self) -> set[str]:
        """Checkpoints a battle process may still read: outside the keep-last rotation."""
        return self.battles.protected() if self.battles is not None else set()

    def try_resume(self) -> bool:
        """Continue from the latest checkpoint of the run directory, if there is one."""
        tag = self.checkpoints.load(self.engine)
        if tag is None:
            return False
        if self.checkpoints.saved_world is None:
            own = self.checkpoints.rank_state(tag)
            if own["loader"]["workers"] == max(1, self.cfg.workers_per_gpu):
                self.load_state_dict(own)
                return True
        self._resume_resplit(tag)  # another world size, or another --workers-per-gpu
        return True

    def _resume_resplit(self, tag: str) -> None:
        """Counters, loader and RNG re-split for this world (checkpoint.resplit); the position of
        the learning-rate schedule is kept, its peak re-derived for the new global batch by the
        square-root rule."""
        states = self.checkpoints.rank_states(tag)
        cfg = self.cfg
        state = resplit(states, self.rank, self.world, cfg.workers_per_gpu, cfg.seed)
        if "critic_target" in states[0]:
            state["critic_target"] = states[0]["critic_target"]  # the same on every rank
        self.load_state_dict(state)
        self._apply_sample_budget()
        factor = lr_lambda(cfg)(self.scheduler.last_epoch)
        self.scheduler.base_lrs = [self.peak_lr for _ in self.scheduler.base_lrs]
        for group in self.scheduler.optimizer.param_groups:
            group["lr"] = self.peak_lr * factor
        self.scheduler._last_lr = [self.peak_lr * factor for _ in self.scheduler.base_lrs]
        self.log.say(
            f"resumed {len(states)} ranks' checkpoint {tag} on {self.world}: loader re-split "
            f"(fresh epoch), peak lr {self.peak_lr:.3g} for global batch "
            f"{cfg.batch_size_per_gpu * cfg.grad_accum * self.world}"
        )
        self.checkpoints.drop_universal(tag)

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

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[StepRecord]:
        cfg = self.cfg
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        started = last_save = time.monotonic()
        deadline = (
            started + cfg.time_limit_hours * 3600 - cfg.time_margin_minutes * 60
            if cfg.time_limit_hours
            else math.inf
        )
        self._write_job(deadline)
        self._setup_validation()
        interval = _Interval(started)
        batches = iter(self.loader)
        while self.engine.global_steps < cfg.max_steps:
            parts = self.train_step(batches, interval)
            step = self.engine.global_steps
            self._record_step(step, parts)
            if step % cfg.log_every == 0:
                self._flush_records()
                self._log(step, *interval.take())
                self._poll_battles()
            validated = self.validation is not None and (
                step % cfg.eval_every == 0 or step >= cfg.max_steps
            )
            if validated:
                self._flush_records()  # metrics.jsonl keeps its order: the steps, then `val`
            best = self._validate(step) if validated else False
            now = time.monotonic()
            # Rank 0's clock decides; the all-reduce below makes every rank follow it. A new best
            # validation loss, or battles to play, need a checkpoint of this step.
            battles = self.battles is not None and not self.battles.unavailable
            due = self.rank == 0 and (
                now - last_save >= cfg.checkpoint_minutes * 60 or best or (validated and battles)
            )
            due, stop, nonfinite = self._agree(
                due, self.stop_requested or now >= deadline, self._step_nonfinite
            )
            self._guard_nonfinite(step, nonfinite)
            if due or stop or step >= cfg.max_steps:
                tag = self.save()
                last_save = time.monotonic()
                if validated and self.rank == 0:
                    self._after_validation_save(step, tag, best)
            if stop:
                why = "signal" if self.stop_requested else "time limit"
                self.log.say(f"stopped cleanly at step {step} ({why}); checkpoint saved")
                break
        self._flush_records()
        self._poll_battles()
        if self.battles is not None:
            for running in self.battles.still_running():
                self.log.say(f"battles still running: {running}; `pokeagent status` shows them")
        return self.history

    def train_step(self, batches, interval: _Interval) -> dict:
        """One optimizer step: `grad_accum` micro-batches; the last one's loss parts. Whether a
        loss was not finite stays on the device (`_step_nonfinite`) until `_agree` reads it."""
        nonfinite = None
        for _ in range(self.cfg.grad_accum):
            before = time.monotonic()
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()}
            interval.waited += time.monotonic() - before
            loss, parts = self.engine(batch)
            finite = torch.isfinite(loss.detach())
            nonfinite = ~finite if nonfinite is None else nonfinite | ~finite
            # A non-finite loss can have finite gradients (an infinite cross-entropy) that the
            # engine would apply: NaN gradients instead make DeepSpeed's overflow check skip the
            # update. A factor of exactly 1 otherwise, decided on the device: no wait for it.
            self.engine.backward(loss * torch.ones_like(loss).masked_fill(~finite, math.nan))
            self.engine.step()
            self.samples_seen += self.cfg.batch_size_per_gpu * self.world
            self._decisions_pending.append(parts["decisions"].detach())
            interval.add(parts, self.cfg.batch_size_per_gpu)
        self._step_nonfinite = nonfinite
        if self.critic_target is not None:
            self.critic_target.update(self.engine.module.net.critic)
        return parts

    def _record_step(self, step: int, parts: dict) -> None:
        """Keep the step's figures (as device tensors: no wait for the GPU); `_flush_records`
        writes them at log steps, before a checkpoint and at the end."""
        names = _RECORDED + (("critic_loss",) if "critic_loss" in parts else ())
        values = torch.stack([parts[name].detach().float() for name in names])
        self._pending_records.append((step, names, values, self.scheduler.get_last_lr()[0]))

    def _flush_records(self) -> None:
        """The kept steps' records -> history and metrics.jsonl (one read from the device), and
        the decisions counted since the last flush."""
        if self._decisions_pending:
            self.decisions_seen += int(torch.stack(self._decisions_pending).sum())
            self._decisions_pending = []
        if not self._pending_records:
            return
        read = torch.stack([values for _, _, values, _ in self._pending_records]).tolist()
        for (step, names, _, lr), values in zip(self._pending_records, read, strict=True):
            figures = dict(zip(names, values, strict=True))
            record = StepRecord(
                step, figures["loss"], figures["policy_loss"], figures["value_loss"], lr
            )
            self.history.append(record)
            row = asdict(record) | (
                {"critic_loss": figures["critic_loss"]} if len(names) > 3 else {}
            )
            # Full-precision per-step figures: what resume-exactness checks and plots read.
            self.log.record(row)
        self._pending_records = []

    def _on_signal(self, signum, _frame) -> None:
        self.stop_requested = True

    def _agree(
        self, checkpoint_due: bool, stop: bool, nonfinite: torch.Tensor | None = None
    ) -> tuple[bool, bool, bool]:
        """(checkpoint due, stop, a non-finite loss) on any rank: the step's one all-reduce, and
        the one read of `nonfinite` from the device."""
        # On the rank's device: a NCCL process group has no CPU backend (gloo on CPU runs).
        flags = torch.tensor([float(checkpoint_due), float(stop), 0.0], device=self.device)
        if nonfinite is not None:
            flags[2] = nonfinite
        self.dist.all_reduce(flags, op=self.dist.ReduceOp.MAX)
        due, stop, nonfinite = flags.tolist()
        return bool(due), bool(stop), bool(nonfinite)

    def _guard_nonfinite(self, step: int, loss_nonfinite: bool) -> None:
        """Count a step whose loss or gradient norm was not finite: DeepSpeed's overflow check
        skipped its update (NaN gradients, `train_step`), which every rank agrees on. fp16's own
        skips (a finite loss, too high a loss scale) are not counted. --max-nonfinite-steps in a
        row, or such an update that the engine applied (ZeRO stage 0 checks nothing), stop the
        run before anything is saved: NonFiniteLoss."""
        skipped = not self.engine.was_step_applied()
        if not (loss_nonfinite or (skipped and not self._fp16)):
            self.nonfinite_streak = 0
            return
        self.nonfinite_steps += 1
        self.nonfinite_streak += 1
        good = self.checkpoints.newest_complete()
        resume = (
            f"the last good checkpoint is {self.run_dir.checkpoint(good)}: the same command "
            "resumes from it"
            if good
            else "the run has no checkpoint yet"
        )
        what = "loss" if loss_nonfinite else "gradient norm"
        if not skipped:
            raise NonFiniteLoss(
                f"step {step}: the {what} is not finite and the engine applied the update anyway "
                f"(zero stage {self.engine.zero_optimization_stage()} of "
                f"{self.cfg.ds_config} has no overflow check): the weights are broken, nothing "
                f"was saved; {resume}. Use a ZeRO stage >= 1 config to have such steps skipped."
            )
        limit = self.cfg.max_nonfinite_steps
        self.log.say(
            f"step {step}: non-finite {what}: update skipped ({self.nonfinite_streak} in a row"
            + (f" of {limit} allowed" if limit else "")
            + f", {self.nonfinite_steps} in all)"
        )
        if limit and self.nonfinite_streak >= limit:
            first = step - self.nonfinite_streak + 1
            raise NonFiniteLoss(
                f"stopped at step {step}: steps {first}-{step} all had a non-finite loss or "
                f"gradient norm (--max-nonfinite-steps {limit}); their updates were skipped, so "
                f"the weights are those of step {first - 1}, and nothing was saved; {resume}. "
                "Look for bad samples (NaN or infinite features) or lower --learning-rate first."
            )

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
        # MFU counts every window position the network computed, padding included (model/flops.py).
        positions = sums["samples"] * self.cfg.window / max(seconds, 1e-9)
        scalars["throughput/tflops"] = positions * self.flops_per_decision / 1e12
        utilization = mfu(positions, self.flops_per_decision, self.peak_flops)
        if utilization is not None:
            scalars["throughput/mfu"] = utilization
        if "critic_loss" in sums:
            scalars |= critic_scalars(sums, micro, labelled)
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            scalars["grad_norm"] = float(grad_norm)
        if self.nonfinite_steps:
            scalars["train/nonfinite_steps"] = self.nonfinite_steps
        loss_scale = getattr(self.engine.optimizer, "cur_scale", None)
        if loss_scale is not None and self.ds_config.get("fp16", {}).get("enabled"):
            scalars["loss_scale"] = float(loss_scale)
        self.log.scalars(step, scalars)
        self.log.say(
            f"step {step}/{self.cfg.max_steps} loss {scalars['loss/total']:.4f} top1 {scalars['accuracy/top1']:.3f} "
            f"lr {scalars['lr']:.2e} {scalars['throughput/samples_per_s']:.0f} samples/s "
            f"{scalars['throughput/decisions_per_s']:.0f} decisions/s data-wait {scalars['throughput/data_wait_share']:.0%}"
            + (f" MFU {scalars['throughput/mfu']:.1%}" if "throughput/mfu" in scalars else "")
            + (f" non-finite steps {self.nonfinite_steps}" if self.nonfinite_steps else "")
            + (
                f" critic {scalars['critic/loss']:.4f} kept {scalars['critic/kept_share']:.2f}"
                if "critic/loss" in scalars
                else ""
            )
        )

    def _write_job(self, deadline: float) -> None:
        """Rank 0: `job.json`, when this job started and must stop (for `pokeagent status`)."""
        if self.rank != 0:
            return
        now = time.time()
        self.run_dir.write_job(
            {
                "started_at": now,
                "stop_at": now + (deadline - time.monotonic()) if math.isfinite(deadline) else None,
                "time_limit_hours": self.cfg.time_limit_hours,
                "resumed_from": self.resumed_from,
                "world_size": self.world,
            }
        )

    # ------------------------------------------------------------------ validation and battles
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
        self.validation.recover_best(self.run_dir.root, self.run_dir.checkpoints)
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
        self.log.scalars(step, scalars(metrics, "val"))
        row = record(step, metrics, time.monotonic() - started)
        self.log.record(row)
        self.log.say(
            f"validation at step {step}: loss {loss:.4f} top1 {row['top1']:.3f} "
            f"top3 {row['top3']:.3f} value {row['value_loss']:.4f} ({row['trajectories']} "
            f"trajectories, {row['seconds']:.1f} s){' best so far' if best else ''}"
        )
        return best

    def _after_validation_save(self, step: int, tag: str, best: bool) -> None:
        """Rank 0, once the checkpoint of a validated step is saved: the `best` pointer (the
        previous best returns to the rotation) and the battle process."""
        if best:
            self.run_dir.set_pointer(BEST, tag)
            self.checkpoints.prune(self._in_use())
        if self.battles is not None:
            self.battles.launch(
                step, self.run_dir.checkpoint(tag), self.run_dir.eval_dir("battles", step)
            )

    def _poll_battles(self) -> None:
        """Rank 0: win rates of finished battle processes -> the run log at the step they played."""
        if self.battles is not None:
            self._record_battles(self.battles.poll())

    def _record_battles(self, results: dict[int, dict[str, float]]) -> None:
        for step, rates in results.items():
            self.log.scalars(step, {f"battles/vs_{name}": rate for name, rate in rates.items()})
            self.log.record({"battles": True, "step": step, "win_rates": rates})
            shown = ", ".join(f"vs {name} {rate:.2f}" for name, rate in rates.items())
            self.log.say(f"battles for step {step}: {shown}")

    def close(self) -> None:
        self.log.close()
        self.writer_lock.release()
        if self.dist.is_initialized():
            self.dist.barrier()
            self.dist.destroy_process_group()
