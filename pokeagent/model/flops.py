"""FLOPs per decision of the network, GPU peak FLOP/s, and MFU (model FLOPs utilization).

    from pokeagent.model.flops import flops_per_decision, peak_flops, mfu
    per_decision = flops_per_decision(cfg, window)           # training: forward + backward
    peak = peak_flops(torch.cuda.get_device_name(), "bf16")  # FLOP/s, None when unknown
    utilization = mfu(positions_per_s, per_decision, peak)   # a fraction, 0.40 = 40 %

What is counted: the matrix multiplications, as `torch.utils.flop_counter.FlopCounterMode`
counts them (2 FLOPs per multiply-add; embeddings, norms, softmax, GELU, the dex-fact gathers and
the loss are not matrix products and count nothing). Attention costs the full square: scores
(Q Kᵀ) and their product with V are counted over every (query, key) pair of the window, as
FlopCounterMode counts an SDPA kernel and as the math path computes it, although the causal mask
leaves half of the trajectory's pairs unused (a flash kernel skips most of them: the MFU of the
trajectory transformer is then slightly understated, the PaLM convention).

Training is forward x 3 (the backward computes the gradient of both operands of each product),
except the global-feature input projection: its input needs no gradient, so its backward is one
product, not two (forward x 2). The test checks the total against FlopCounterMode.

A "decision" here is one window position that the network computes: a batch of B windows of W
positions costs B x W x flops_per_decision(cfg, W) whether or not some positions are padding.
MFU from a loader's real-decision count would understate the work done; use samples/s x window.

Heads are counted in `_head_flops` (policy, value, pointer, and the optional critic's Q heads
with their target), so a new head is one term there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pokeagent.data.encode import N_ENTITIES, N_GLOBAL_FEATURES, N_MON_FEATURES
from pokeagent.model.config import ModelConfig
from pokeagent.showdown import actions as A

# The decision encoder's fixed input widths (network.py): dex facts per move and per species.
_N_MOVE_FACTS = 6 + 3
_N_SPECIES_FACTS = 6
_TOKEN_SLOTS = 8  # species, ability, item, 4 moves, tera type
_ENTITY_TOKENS = N_ENTITIES + 1  # the 12 Pokémon rows and the global token


def _linear(n_in: int, n_out: int) -> int:
    return 2 * n_in * n_out


def _layer_flops(width: int, tokens: int, ffn_mult: int) -> int:
    """Forward FLOPs of one pre-norm transformer layer over `tokens` positions, all positions
    together: Q, K, V and output projections, the feed-forward, and attention over the full
    square (scores and their product with V)."""
    projections = 4 * _linear(width, width)
    feed_forward = 2 * _linear(width, ffn_mult * width)
    attention = 2 * 2 * tokens * width  # per query: Q·K over `tokens` keys, then P·V
    return tokens * (projections + feed_forward + attention)


def _head_flops(cfg: ModelConfig, training: bool) -> int:
    """FLOPs of the per-decision heads (forward + backward when `training`).

    Policy: a linear read plus the pointer (one dot product per action vector); value: a linear
    read. Critic (`critic_heads` E > 0, network.py `Critic`): per head a d x d hidden layer, a
    read over the actions, a d x d pointer projection and the pointer's dot products, forward x 3
    in training, plus the fp32 target heads' forward on the same inputs (no backward: the trainer
    passes the target in every training step)."""
    d = cfg.d_model
    policy = _linear(d, A.N_ACTIONS) + 2 * A.N_ACTIONS * d
    value = _linear(d, 1)
    heads = getattr(cfg, "critic_heads", 0)
    critic = heads * (2 * _linear(d, d) + _linear(d, A.N_ACTIONS) + 2 * A.N_ACTIONS * d)
    if not training:
        return policy + value + critic
    return 3 * (policy + value + critic) + critic  # the last term: the target's forward


@dataclass(frozen=True)
class FlopsBreakdown:
    """FLOPs per decision by part (forward only, or forward + backward when training)."""

    encoder: int
    """Decision encoder: row and global projections, the entity mixer, action vectors."""
    trajectory: int
    """Causal trajectory transformer over the window."""
    heads: int
    """Policy, value and critic heads (and the critic's target)."""

    @property
    def total(self) -> int:
        return self.encoder + self.trajectory + self.heads


def flops_breakdown(cfg: ModelConfig, window: int, training: bool = True) -> FlopsBreakdown:
    """`flops_per_decision`, by part."""
    e, d = cfg.d_entity, cfg.d_model
    row_inputs = _TOKEN_SLOTS * cfg.d_token + N_MON_FEATURES + _N_SPECIES_FACTS
    row_inputs += 4 * _N_MOVE_FACTS
    global_in = _linear(N_GLOBAL_FEATURES, e)
    encoder = (
        N_ENTITIES * _linear(row_inputs, e)
        + cfg.entity_layers * _layer_flops(e, _ENTITY_TOKENS, cfg.ffn_mult)
        + _linear(e, d)  # the decision's vector from the global token
        + A.N_MOVES * _linear(e + _N_MOVE_FACTS, d)  # move action vectors
        + A.N_TEAM * _linear(e, d)  # switch action vectors
    )
    trajectory = cfg.n_layers * _layer_flops(d, window, cfg.ffn_mult) // window
    heads = _head_flops(cfg, training)
    if training:
        # The global projection's input (features) needs no gradient: backward = weight grad only.
        return FlopsBreakdown(3 * encoder + 2 * global_in, 3 * trajectory, heads)
    return FlopsBreakdown(encoder + global_in, trajectory, heads)


def flops_per_decision(cfg: ModelConfig, window: int, training: bool = True) -> int:
    """Matrix-product FLOPs the network spends per window position (see the module docstring):
    forward + backward when `training`, forward only otherwise. `window` is the length of the
    windows the model runs on (attention grows with it)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, not {window}")
    return flops_breakdown(cfg, window, training).total


# ------------------------------------------------------------------ peak FLOP/s by GPU
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # Dense (no 2:4 sparsity) tensor-core TFLOP/s from the vendors' datasheets; fp32 is the
    # non-tensor rate, tf32 the tensor-core rate fp32 matmuls use when TF32 is allowed.
    "H100 NVL": {"bf16": 835.0, "fp16": 835.0, "tf32": 417.5, "fp32": 60.0},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},  # SXM
    "GH200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H200 NVL": {"bf16": 835.0, "fp16": 835.0, "tf32": 417.5, "fp32": 60.0},
    "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},  # SXM
    "B200": {"bf16": 2250.0, "fp16": 2250.0, "tf32": 1100.0, "fp32": 80.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "A10G": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},  # as the A10's sheet
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6},
    "L40": {"bf16": 181.0, "fp16": 181.0, "tf32": 90.5, "fp32": 90.5},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "V100-PCIE": {"fp16": 112.0, "fp32": 14.0},  # no bf16 on Volta
    "V100": {"fp16": 125.0, "fp32": 15.7},  # SXM2
    "T4": {"fp16": 65.0, "fp32": 8.1},
    "MI300X": {"bf16": 1307.4, "fp16": 1307.4, "tf32": 653.7, "fp32": 163.4},
}
"""TFLOP/s per GPU and precision. Keys are matched against the CUDA device name in this order
(case-insensitive substring), so the more specific name comes first ("H100 PCIe" before "H100",
"A100" before "A10")."""

PEAK_ENV = "POKEAGENT_PEAK_TFLOPS"
"""Environment override of the peak (TFLOP/s), for a GPU the table lacks or a clocked-down one."""


def gpu_key(device_name: str) -> str | None:
    """The table's key for a CUDA device name (`torch.cuda.get_device_name()`), or None."""
    name = device_name.upper()
    for key in PEAK_TFLOPS:
        if key.upper() in name:
            return key
    return None


def peak_flops(
    device_name: str | None = None, precision: str = "bf16", override: float | None = None
) -> float | None:
    """Peak FLOP/s of one GPU at `precision` (bf16, fp16, tf32, fp32), or None when unknown.

    `override` (TFLOP/s) wins, then the environment's POKEAGENT_PEAK_TFLOPS, then the table by
    `device_name` (default: the current CUDA device's name; None without CUDA)."""
    if override is None and os.environ.get(PEAK_ENV):
        override = float(os.environ[PEAK_ENV])
    if override is not None:
        return override * 1e12
    if device_name is None:
        import torch

        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    key = gpu_key(device_name)
    if key is None:
        return None
    tflops = PEAK_TFLOPS[key].get(precision)
    return None if tflops is None else tflops * 1e12


def precision_of(ds_config: dict) -> str:
    """The matmul precision a DeepSpeed config trains in: bf16, fp16 or fp32."""
    if ds_config.get("bf16", {}).get("enabled"):
        return "bf16"
    if ds_config.get("fp16", {}).get("enabled"):
        return "fp16"
    return "fp32"


def mfu(decisions_per_s: float, flops_per_decision: float, peak: float | None) -> float | None:
    """Model FLOPs utilization of one GPU: achieved FLOP/s over the peak (None without a peak).

    `decisions_per_s` counts computed window positions per GPU (samples/s x window)."""
    if not peak:
        return None
    return decisions_per_s * flops_per_decision / peak
