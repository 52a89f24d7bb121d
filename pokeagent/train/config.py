"""The run config of `pokeagent train`: every knob the trainer reads, typed, with its default."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pokeagent.model.loss_config import LossConfig


@dataclass
class TrainConfig(LossConfig):
    """One training run (the loss's knobs, declared in `LossConfig`, come first)."""

    run_dir: str = "runs/train"
    """Checkpoints, TensorBoard logs and the resolved config go here."""
    data_dir: str = "shards"
    """A folder written by `pokeagent pack` (its train-*.tar are read), or a mixture of such
    folders `DIR=W,DIR=W,...` (data/loader.py; validation reads the first folder's val-*.tar)."""
    model: str = "tiny"
    """Model preset: tiny, small, medium, large, seed-200m."""
    ds_config: str = "cpu"
    """A file in ds_configs/ (or a path): ZeRO stage, precision, offload."""
    batch_size_per_gpu: int = 16
    """Trajectory windows per rank per micro-step."""
    grad_accum: int = 1
    """Micro-steps per optimizer step."""
    window: int = 64
    """Decisions per trajectory window."""
    learning_rate: float = 3e-4
    """At the reference global batch (256); scaled by the square-root rule (train/ds_config.py)."""
    warmup_steps: int = 100
    """Linear warmup from 0, in optimizer steps."""
    max_steps: int = 1000
    """Optimizer steps of the whole run (the cosine decay ends here)."""
    min_lr_ratio: float = 0.1
    """Cosine decay floor, as a fraction of the peak rate."""
    grad_clip: float = 1.0
    """Global gradient-norm clipping."""
    workers_per_gpu: int = 2
    """Loader worker processes per rank."""
    shuffle_buffer: int = 256
    """Trajectories per loader worker's shuffle buffer."""
    seed: int = 0
    """Model init, data order and dropout."""
    checkpoint_minutes: float = 15.0
    """Save a checkpoint every this many minutes of wall clock (and at the end)."""
    keep_last: int = 3
    """Checkpoints kept; older ones are deleted."""
    time_limit_hours: float = 0.0
    """Stop cleanly (save, exit 0) before this much wall time has passed; 0: no limit."""
    time_margin_minutes: float = 5.0
    """How long before the time limit to stop (a checkpoint must fit in it)."""
    log_every: int = 10
    """Optimizer steps between console and TensorBoard logs."""
    eval_every: int = 0
    """Validate every this many optimizer steps and at the last one (0: never): the `val-*.tar`
    of data_dir, through `pokeagent eval offline`'s code; the best checkpoint is kept."""
    eval_samples: int = 256
    """Validation trajectories, spread evenly over the val shards: the same ones every time."""
    eval_battles: int = 0
    """After each validation, battles per opponent (random, maxpower, heuristic) played by a
    separate `pokeagent eval battles` process (0: none; needs --eval-every)."""

    max_samples: int = 0
    """Stop after this many training samples (trajectory windows, all ranks; 0: no limit): the
    run's optimizer steps become min(max_steps, ceil(max_samples / global batch)), and the
    learning-rate schedule ends there."""
    min_rating: int = 0
    """Train only on trajectories whose known ratings all reach this (the word `pack` and
    `download` use too; `--min-elo` is an alias); trajectories without any rating are dropped;
    0: no filter."""
    max_nonfinite_steps: int = 5
    """A step whose loss or gradient norm is not finite (NaN, inf) is skipped; this many in a row
    stop the run with the last good checkpoint named, saving nothing (0: never stop)."""
    debug: bool = False
    """Log every step (unless --log-every is given), Python logging at DEBUG, and
    TORCH_DISTRIBUTED_DEBUG=DETAIL for the process group."""

    peak_tflops: float = 0.0
    """The GPU's peak TFLOP/s for MFU; 0: from the GPU's name and the run's precision
    (model/flops.py), or POKEAGENT_PEAK_TFLOPS; no MFU on CPU unless given."""

    # Offline RL (model/loss.py, model/rewards.py): the objective and its knobs are LossConfig's.
    critic_heads: int = 0
    """Q-value heads of the critic's ensemble; 0: none with bc, 2 with binary/exp. A critic
    with bc trains beside imitation (its Q and advantages are logged) without weighting it."""
    target_rate: float = 0.005
    """Polyak rate of the critic's target after each optimizer step (train/critic_target.py)."""

    def __post_init__(self):
        super().__post_init__()
        if self.max_samples < 0 or self.min_rating < 0:
            raise ValueError(
                f"--max-samples and --min-rating must be >= 0 (got {self.max_samples}, {self.min_rating})"
            )
        if self.batch_size_per_gpu < 1 or self.grad_accum < 1 or self.max_steps < 1:
            raise ValueError("batch_size_per_gpu, grad_accum and max_steps must be >= 1")
        if self.keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        for option, value, least in (
            ("eval_every", self.eval_every, 0),
            ("eval_samples", self.eval_samples, 1),
            ("eval_battles", self.eval_battles, 0),
        ):
            if value < least:
                raise ValueError(f"--{option.replace('_', '-')} must be >= {least} (got {value})")
        if self.eval_battles and not self.eval_every:
            raise ValueError("--eval-battles needs --eval-every (battles follow each validation)")
        if self.max_nonfinite_steps < 0:
            raise ValueError(f"--max-nonfinite-steps must be >= 0 (got {self.max_nonfinite_steps})")
        if self.peak_tflops < 0:
            raise ValueError(f"--peak-tflops must be >= 0 (got {self.peak_tflops})")
        if self.critic_heads < 0:
            raise ValueError(f"--critic-heads must be >= 0 (got {self.critic_heads})")
        if self.objective != "bc" and not self.critic_heads:
            self.critic_heads = 2
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"--target-rate must be in (0, 1] (got {self.target_rate})")

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        if "min_elo" in data:  # the name before min_rating (config.json of older runs)
            data.setdefault("min_rating", data.pop("min_elo"))
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown train config keys {sorted(unknown)}")
        return cls(**data)
