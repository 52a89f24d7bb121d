"""What a run needs from a node, estimated from the model preset, the batch and the loader workers.

The figures are estimates with their reasons spelled out (the sbatch script and `--dry-run`
print them), not measurements: they size a SLURM request and warn before a run that cannot
fit; `--memory` / `--cpus-per-node` override them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pokeagent.model.config import NOMINAL_PARAMETERS, preset

RANK_RUNTIME_GB = 6.0
"""Host memory of one training process before the model: CUDA context, torch, DeepSpeed, NCCL."""
WORKER_GB = 1.5
"""One loader worker: a forked process, its shuffle buffer (256 trajectories) and prefetch."""
CPUS_PER_RANK = 2
"""Cores for a training process besides its loader workers (the step loop, NCCL, pinning)."""
HEADROOM = 1.1
GPU_RUNTIME_GB = 1.5
"""CUDA context, cuBLAS/NCCL workspaces and allocator slack on each GPU."""


@dataclass
class NodeRequest:
    """CPU cores and host memory for one node, and why."""

    cpus: int
    memory_gb: int
    why: list[str] = field(default_factory=list)


def parameters(model: str) -> float:
    """The preset's nominal parameter count (model/config.py states and tests it)."""
    preset(model)  # unknown names fail here with the list of presets
    return NOMINAL_PARAMETERS[model]


def node_request(
    model: str,
    gpus_per_node: int,
    workers_per_gpu: int,
    world_size: int,
    offload: bool,
    cpus: int | None = None,
    memory_gb: int | None = None,
) -> NodeRequest:
    """Cores and memory for a node running `gpus_per_node` ranks; given values win, with a note."""
    p = parameters(model)
    workers = max(1, workers_per_gpu)
    need_cpus = gpus_per_node * (workers + CPUS_PER_RANK)
    weights_gb = 4 * p / 1e9
    offload_gb = 16 * p / world_size / 1e9 if offload else 0.0
    rank_gb = RANK_RUNTIME_GB + weights_gb + offload_gb
    export_gb = 16 * p / 1e9  # rank 0 rebuilds fp32 master weights + Adam moments per checkpoint
    raw = gpus_per_node * rank_gb + export_gb + gpus_per_node * workers * WORKER_GB
    need_gb = int(math.ceil(raw * HEADROOM / 8) * 8)
    why = [
        f"cpus {need_cpus}/node = {gpus_per_node} GPUs x ({workers} loader workers + "
        f"{CPUS_PER_RANK} for the training process)",
        f"memory {need_gb} GB/node = {gpus_per_node} ranks x {rank_gb:.1f} GB "
        f"({RANK_RUNTIME_GB:.0f} GB CUDA/torch/DeepSpeed runtime + {weights_gb:.1f} GB fp32 weights "
        f"of {model}, {p / 1e6:.0f}M"
        + (f" + {offload_gb:.1f} GB offloaded optimizer shard" if offload else "")
        + f") + {export_gb:.1f} GB (rank 0 rebuilds fp32 weights + Adam moments at each export)"
        f" + {gpus_per_node * workers} workers x {WORKER_GB} GB, +{HEADROOM - 1:.0%} headroom, "
        "rounded up to 8 GB",
    ]
    if cpus is not None:
        why.append(f"cpus {cpus}/node given (--cpus-per-node); the estimate above is {need_cpus}")
        if cpus < need_cpus:
            why.append(f"WARNING: {cpus} cores < {need_cpus}: the loader may starve the GPUs")
    if memory_gb is not None:
        why.append(f"memory {memory_gb} GB/node given (--memory); the estimate above is {need_gb}")
        if memory_gb < need_gb:
            why.append(f"WARNING: {memory_gb} GB < {need_gb} GB: the job may be killed for memory")
    return NodeRequest(cpus or need_cpus, memory_gb or need_gb, why)


def gpu_memory_gb(model: str, batch: int, window: int, ds_config: dict, world_size: int) -> float:
    """Estimated peak GPU memory of one rank: model states under the ZeRO stage + activations.

    Activations per decision follow the usual transformer estimate (34 x width bytes per layer
    and token, plus 5 x heads x sequence for attention scores, in 16-bit) over the trajectory
    transformer (one token per decision) and the decision encoder (13 tokens per decision)."""
    p = parameters(model)
    cfg = preset(model)
    half = ds_config.get("bf16", {}).get("enabled") or ds_config.get("fp16", {}).get("enabled")
    width = 2 if half else 4
    zero = ds_config.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    offload = zero.get("offload_optimizer", {}).get("device", "none") not in ("none", None)
    weights = p * width / (world_size if stage >= 3 else 1)
    grads = p * width / (world_size if stage >= 2 else 1)
    optimizer = 0.0 if offload else 12 * p / (world_size if stage >= 1 else 1)
    per_decision = cfg.n_layers * (34 * cfg.d_model + 5 * cfg.n_heads * window) + (
        cfg.entity_layers * 13 * (34 * cfg.d_entity + 5 * cfg.entity_heads * 13)
    )
    activations = batch * window * per_decision * width / 2
    return (weights + grads + optimizer + activations) / 1e9 + GPU_RUNTIME_GB
