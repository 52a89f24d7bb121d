"""The analytic FLOPs per decision against torch's FlopCounterMode; the peak table and MFU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pokeagent.data.encode import (
    N_ENTITIES,
    N_GLOBAL_FEATURES,
    N_MON_FEATURES,
    N_TOKEN_FIELDS,
    schema,
)
from pokeagent.model import network
from pokeagent.model.config import preset
from pokeagent.model.flops import (
    flops_breakdown,
    flops_per_decision,
    gpu_key,
    mfu,
    peak_flops,
    precision_of,
)
from pokeagent.model.loss import compute_loss
from pokeagent.model.network import PokeAgentNet
from pokeagent.showdown import actions as A


def _batch(batch_size: int, window: int) -> dict[str, torch.Tensor]:
    """A batch of the loader's shapes and dtypes (FLOPs depend on shapes only); token ids stay
    under the smallest vocabulary (types) so every lookup is valid."""
    g = torch.Generator().manual_seed(0)
    vocab = min(schema()["vocab"].values())
    return {
        "tokens": torch.randint(
            0, vocab, (batch_size, window, N_ENTITIES, N_TOKEN_FIELDS), generator=g
        ).short(),
        "features": torch.rand(batch_size, window, N_ENTITIES, N_MON_FEATURES, generator=g).half(),
        "globals": torch.rand(batch_size, window, N_GLOBAL_FEATURES, generator=g).half(),
        "legal": torch.ones(batch_size, window, A.N_ACTIONS, dtype=torch.bool),
        "action": torch.randint(0, A.N_ACTIONS, (batch_size, window), generator=g).to(torch.int8),
        "mask": torch.ones(batch_size, window, dtype=torch.bool),
        "last": torch.zeros(batch_size, window, dtype=torch.bool),
        "outcome": torch.ones(batch_size),
    }


def _measured(model: str, batch_size: int, window: int, training: bool, **overrides) -> float:
    """FlopCounterMode's count per window position. The math SDPA backend: CPU's fused attention
    kernel (`_scaled_dot_product_flash_attention_for_cpu`) has no formula in FlopCounterMode and
    would count as zero, while the GPU kernels it does count cost the same full square. With a
    critic, its online Q-values join the loss and, in training, its target (fp32 copies) runs
    as the trainer runs it; forward only, no target (what acting and evaluation run)."""
    torch.manual_seed(0)
    cfg = preset(model, max_window=max(window, 16), **overrides)
    net = PokeAgentNet(cfg, schema()["vocab"])
    batch = _batch(batch_size, window)
    critic = bool(overrides.get("critic_heads"))
    extra = {}
    if critic:
        target = {k: v.detach().float().clone() for k, v in net.critic.weights().items()}
        extra = {"critic": True, "critic_target": target if training else None}
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter, torch.set_grad_enabled(training):
        logits, value, *q = net(batch, **extra)
        if training:
            loss, _ = compute_loss(logits, value, batch)
            if critic:
                loss = loss + q[0].float().mean()
            loss.backward()
    return counter.get_total_flops() / (batch_size * window)


@pytest.mark.parametrize(
    ("model", "batch_size", "window"), [("tiny", 2, 16), ("tiny", 1, 40), ("small", 1, 24)]
)
def test_training_flops_match_the_counter(model, batch_size, window):
    counted = _measured(model, batch_size, window, training=True)
    assert flops_per_decision(preset(model), window) == pytest.approx(counted, rel=0.01)


def test_forward_flops_match_the_counter():
    counted = _measured("tiny", 2, 16, training=False)
    assert flops_per_decision(preset("tiny"), 16, training=False) == pytest.approx(
        counted, rel=0.01
    )


def test_attention_grows_with_the_window_and_presets_order():
    cfg = preset("small")
    short, long = flops_breakdown(cfg, 64), flops_breakdown(cfg, 256)
    assert long.encoder == short.encoder and long.trajectory > short.trajectory
    # Per position, attention adds 3 x 4 x window x d_model per trajectory layer.
    assert long.trajectory - short.trajectory == 3 * 4 * (256 - 64) * cfg.d_model * cfg.n_layers
    sizes = [flops_per_decision(preset(p), 64) for p in ("tiny", "small", "medium", "large")]
    assert sizes == sorted(sizes)
    with pytest.raises(ValueError):
        flops_per_decision(cfg, 0)


def test_critic_heads_add_a_head_term():
    fields = {**preset("small").to_dict(), "critic_heads": 0}
    plain = flops_breakdown(SimpleNamespace(**fields), 64)
    critic = flops_breakdown(SimpleNamespace(**{**fields, "critic_heads": 4}), 64)
    d = fields["d_model"]
    assert critic.encoder == plain.encoder and critic.trajectory == plain.trajectory
    # Per head: two d x d products, a read and a pointer over the actions; x3 + the target's x1.
    assert critic.heads - plain.heads == 4 * 4 * (4 * d * d + 4 * d * A.N_ACTIONS)


@pytest.mark.skipif(not hasattr(network, "Critic"), reason="the network has no critic yet")
@pytest.mark.parametrize("training", [True, False])
def test_critic_flops_match_the_counter(training):
    counted = _measured("tiny", 2, 16, training=training, critic_heads=3)
    expected = flops_per_decision(preset("tiny", critic_heads=3), 16, training=training)
    assert expected == pytest.approx(counted, rel=0.01)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("Tesla V100-PCIE-32GB", "V100-PCIE"),
        ("Tesla T4", "T4"),
        ("Some Future GPU", None),
    ],
)
def test_gpu_names_find_their_row(name, key):
    assert gpu_key(name) == key


def test_peak_lookup_override_and_mfu(monkeypatch):
    monkeypatch.delenv("POKEAGENT_PEAK_TFLOPS", raising=False)
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA A100-SXM4-40GB", "fp32") == pytest.approx(19.5e12)
    assert peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # Volta has no bf16
    assert peak_flops("Unknown GPU", "bf16") is None
    assert peak_flops("Unknown GPU", "bf16", override=100.0) == pytest.approx(100e12)
    monkeypatch.setenv("POKEAGENT_PEAK_TFLOPS", "250")
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(250e12)
    assert mfu(1e6, 2e8, 1e15) == pytest.approx(0.2)
    assert mfu(1e6, 2e8, None) is None
    assert precision_of({"bf16": {"enabled": True}}) == "bf16"
    assert precision_of({"fp16": {"enabled": True}, "bf16": {"enabled": False}}) == "fp16"
    assert precision_of({}) == "fp32"
