"""DeepSpeed config resolution: a JSON from ds_configs/ + the run's knobs -> the engine's config.

One config tree (STYLE.md): the JSON files hold engine settings (ZeRO stage, precision,
offload, optimizer family); the run config owns batch sizes, learning rate and clipping. A JSON
that states one of those with a different value is refused, not silently overridden.

Learning rate rule: `lr = base_lr x sqrt(global_batch / reference_batch)`, the square-root rule
for Adam-type optimizers (linear scaling overshoots with Adam at large batches). The reference is
the batch the base rate was tuned at (3e-4 at 256 trajectories).

`resolve_run` is the one sequence every caller runs (the trainer, `--dry-run`, the launcher,
`pokeagent validate`, `pokeagent bench train`): run config + world size -> batch plan -> peak
learning rate -> the engine's config.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pokeagent.train.config import TrainConfig

DS_CONFIG_DIR = Path(__file__).resolve().parents[2] / "ds_configs"
REFERENCE_BATCH = 256
"""Global batch (trajectory windows) at which `base_lr` is stated."""
GPU_DS_CONFIG = "zero2_bf16"
"""The DeepSpeed config of a run on GPUs that names none (CPU runs: cpu.json)."""


class ConfigError(ValueError):
    """The DeepSpeed JSON and the run config disagree, or the combination cannot run here."""


def scaled_lr(base_lr: float, global_batch: int, reference_batch: int = REFERENCE_BATCH) -> float:
    """The square-root scaling rule (see the module docstring)."""
    return base_lr * math.sqrt(global_batch / reference_batch)


@dataclass(frozen=True)
class BatchPlan:
    micro_batch: int
    """Windows per GPU (rank) per forward/backward."""
    grad_accum: int
    """Micro-batches accumulated per optimizer step."""
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    def __post_init__(self):
        if min(self.micro_batch, self.grad_accum, self.world_size) < 1:
            raise ConfigError(f"batch sizes must be >= 1: {self}")


def load_ds_json(name_or_path: str | Path) -> dict:
    """A config by file name in ds_configs/ (`zero2_bf16`, `cpu.json`) or by path."""
    path = Path(name_or_path)
    if not path.exists():
        candidate = DS_CONFIG_DIR / (path.name if path.suffix == ".json" else f"{path.name}.json")
        if not candidate.exists():
            known = sorted(p.stem for p in DS_CONFIG_DIR.glob("*.json"))
            raise ConfigError(
                f"no DeepSpeed config {name_or_path!r}: give a path or one of {known}"
            )
        path = candidate
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from error


def _agree(config: dict, key: str, value, where: str) -> None:
    if key in config and config[key] != value:
        raise ConfigError(
            f"{where}: {key}={config[key]!r} in the DeepSpeed JSON, but the run config says {value!r}; state it in one place"
        )
    config[key] = value


def resolve_ds_config(
    ds: str | Path | dict,
    plan: BatchPlan,
    lr: float,
    grad_clip: float,
    fp16_supported: bool,
    bf16_supported: bool = True,
) -> dict:
    """The full DeepSpeed config for this run; raises ConfigError with what to change."""
    where = str(ds) if not isinstance(ds, dict) else "DeepSpeed config"
    config = copy.deepcopy(ds) if isinstance(ds, dict) else load_ds_json(ds)
    _agree(config, "train_micro_batch_size_per_gpu", plan.micro_batch, where)
    _agree(config, "gradient_accumulation_steps", plan.grad_accum, where)
    _agree(config, "train_batch_size", plan.global_batch, where)
    _agree(config, "gradient_clipping", grad_clip, where)
    optimizer = config.setdefault("optimizer", {"type": "AdamW", "params": {}})
    _agree(optimizer.setdefault("params", {}), "lr", lr, where + " optimizer")
    if config.get("fp16", {}).get("enabled") and not fp16_supported:
        raise ConfigError(
            f"{where} enables fp16, which this accelerator does not support (DeepSpeed on CPU runs "
            "fp32 or bf16): use ds_configs/cpu.json or a bf16 config"
        )
    if config.get("bf16", {}).get("enabled") and not bf16_supported:
        raise ConfigError(
            f"{where} enables bf16, which this accelerator does not support: use zero2_fp16.json"
        )
    if config.get("fp16", {}).get("enabled") and config.get("bf16", {}).get("enabled"):
        raise ConfigError(f"{where} enables both fp16 and bf16: choose one")
    return config


@dataclass(frozen=True)
class RunPlan:
    """What a run config resolves to on a given number of ranks."""

    batch: BatchPlan
    peak_lr: float
    """The learning rate after warmup: the config's, scaled to the global batch."""
    deepspeed: dict
    """The engine's full config."""

    @property
    def global_batch(self) -> int:
        return self.batch.global_batch


def cuda_available() -> bool:
    """Whether this machine has a CUDA GPU for a run started here."""
    import torch

    return torch.cuda.is_available()


def local_ds_config(name: str | None, gpu_default: str = GPU_DS_CONFIG) -> str:
    """The DeepSpeed config of a run on this machine: `name`, else `gpu_default` with CUDA and
    cpu.json without."""
    return name or (gpu_default if cuda_available() else "cpu")


def precision_support() -> tuple[bool, bool]:
    """Whether this machine's accelerator runs fp16 and bf16 (DeepSpeed's answer: on CPU no fp16;
    on CUDA by compute capability)."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    return accelerator.is_fp16_supported(), accelerator.is_bf16_supported()


def resolve_run(
    cfg: TrainConfig, world_size: int, precision: tuple[bool, bool] | None = None
) -> RunPlan:
    """Batch plan, peak learning rate and DeepSpeed config of `cfg` on `world_size` ranks.
    `precision`: whether fp16 and bf16 run, by default on this machine (`precision_support`); a
    launcher planning for other machines states it. Raises ConfigError with what to change."""
    fp16, bf16 = precision or precision_support()
    batch = BatchPlan(cfg.batch_size_per_gpu, cfg.grad_accum, world_size)
    lr = scaled_lr(cfg.learning_rate, batch.global_batch)
    return RunPlan(
        batch, lr, resolve_ds_config(cfg.ds_config, batch, lr, cfg.grad_clip, fp16, bf16)
    )
