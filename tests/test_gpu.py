"""On one CUDA GPU: bf16 and fp16 engine steps (fp16 overflow skipped, not applied), one-rank NCCL,
save and resume, the network computing on the GPU what it computes on the CPU, and the live agent
playing on the GPU. Skipped, with the reason, where there is no CUDA.

    python -m pytest -m gpu tests/test_gpu.py -q       # on a GPU node (the agent test needs node)

The engine runs in this process as a world of one (NCCL), built by the same helpers as
`pokeagent bench gpu` (bench/gpu_checks.py). torch's fused AdamW (`torch_adam`) keeps these
tests free of DeepSpeed's JIT-built Adam (it needs nvcc); `pokeagent bench gpu` runs the shipped
configs as they are.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from pokeagent.data.encode import (
    N_ENTITIES,
    N_GLOBAL_FEATURES,
    N_MON_FEATURES,
    N_TOKEN_FIELDS,
    schema,
)
from pokeagent.model.config import preset
from pokeagent.model.network import PokeAgentNet
from pokeagent.showdown import actions as A

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

WINDOW = 16


def _batch(batch_size: int, seed: int, device) -> dict[str, torch.Tensor]:
    """Loader-shaped windows (stored dtypes); token ids under the smallest vocabulary."""
    g = torch.Generator().manual_seed(seed)
    vocab = min(schema()["vocab"].values())
    shape = (batch_size, WINDOW)
    batch = {
        "tokens": torch.randint(
            0, vocab, (*shape, N_ENTITIES, N_TOKEN_FIELDS), generator=g
        ).short(),
        "features": torch.rand(*shape, N_ENTITIES, N_MON_FEATURES, generator=g).half(),
        "globals": torch.rand(*shape, N_GLOBAL_FEATURES, generator=g).half(),
        "legal": torch.rand(*shape, A.N_ACTIONS, generator=g) < 0.7,
        "mask": torch.ones(shape, dtype=torch.bool),
        "last": torch.zeros(shape, dtype=torch.bool),
        "outcome": torch.randint(0, 3, (batch_size,), generator=g).float() / 2,
    }
    batch["legal"][..., 0] = True
    logits = torch.rand(*shape, A.N_ACTIONS, generator=g).masked_fill(~batch["legal"], -1)
    batch["action"] = logits.argmax(-1).to(torch.int8)
    return {k: v.to(device) for k, v in batch.items()}


class _Pool:
    """bench/gpu_checks.Pool's interface over generated windows (no shards, no node)."""

    def __init__(self, device):
        self.device = device

    def take(self, batch_size: int, offset: int = 0):
        return _batch(batch_size, offset, self.device)


@pytest.fixture(scope="module")
def device():
    """This process joins a world of one on the GPU (NCCL)."""
    from pokeagent.bench import gpu_checks

    if os.environ.get("DS_ACCELERATOR", "cuda") != "cuda":
        pytest.skip(f"DS_ACCELERATOR={os.environ['DS_ACCELERATOR']} keeps DeepSpeed off the GPU")
    return gpu_checks.init("cuda")


def _config(name: str, batch_size: int, device) -> dict:
    from pokeagent.bench import gpu_checks

    return gpu_checks._ds_config(name, batch_size, torch_adam=True, device=device)


def test_one_rank_nccl(device):
    import torch.distributed as dist

    assert dist.is_initialized() and dist.get_backend() == "nccl"
    assert dist.get_world_size() == 1 and dist.get_rank() == 0
    flags = torch.tensor([0.0, 1.0], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    gathered = torch.empty(2, device=device)
    dist.all_gather_into_tensor(gathered, torch.tensor([3.0, 4.0], device=device))
    dist.barrier()
    assert flags.tolist() == [0.0, 1.0] and gathered.tolist() == [3.0, 4.0]


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("zero2_bf16", torch.bfloat16),
        ("zero2_fp16", torch.float16),
        ("zero3_bf16", torch.bfloat16),
    ],
)
def test_low_precision_steps_learn(device, name, dtype):
    from pokeagent.bench import gpu_checks

    engine, _ = gpu_checks._engine("tiny", WINDOW, _config(name, 8, device), device)
    try:
        assert next(engine.module.parameters()).dtype == dtype
        batch = _batch(8, 0, device)
        losses = [float(gpu_checks._step(engine, batch)["loss"]) for _ in range(12)]
        assert all(torch.isfinite(torch.tensor(losses))), losses
        assert sum(losses[-3:]) < sum(losses[:3]), losses
        assert engine.global_steps == 12
        if dtype == torch.float16:
            scale = engine.optimizer.cur_scale
            assert 1 <= scale <= 2**16 and scale == 2 ** round(
                torch.log2(torch.tensor(scale)).item()
            )
            assert engine.skipped_steps < 12
    finally:
        gpu_checks._release(engine)


def test_fp16_overflow_is_skipped_and_the_scale_falls(device):
    """A loss scale so large the fp16 gradients overflow: the step is skipped (weights as they
    were), a second overflow halves the scale (hysteresis 2); a sane scale steps again."""
    from pokeagent.bench import gpu_checks

    engine, _ = gpu_checks._engine("tiny", WINDOW, _config("zero2_fp16", 8, device), device)
    try:
        batch = _batch(8, 0, device)
        gpu_checks._step(engine, batch)
        weights = [p.detach().clone() for p in engine.module.parameters()]
        skipped = engine.skipped_steps
        engine.optimizer.cur_scale = 2.0**100
        gpu_checks._step(engine, batch)
        assert engine.skipped_steps == skipped + 1
        assert all(
            torch.equal(a, b) for a, b in zip(weights, engine.module.parameters(), strict=True)
        )
        gpu_checks._step(engine, batch)
        assert engine.skipped_steps == skipped + 2 and engine.optimizer.cur_scale <= 2.0**99
        engine.optimizer.cur_scale = 2.0**8
        loss = gpu_checks._step(engine, batch)["loss"]
        assert engine.skipped_steps == skipped + 2 and torch.isfinite(loss)
        assert not all(
            torch.equal(a, b) for a, b in zip(weights, engine.module.parameters(), strict=True)
        )
    finally:
        gpu_checks._release(engine)


@pytest.mark.parametrize("name", ["zero2_bf16", "zero2_fp16", "zero3_bf16"])
def test_save_and_resume_on_gpu(device, tmp_path, name):
    """A fresh engine (other initial weights) loads the checkpoint and retakes the same steps:
    the first loss is bit-identical (same weights, same batch), the later ones within what
    GPU kernels' summation order allows."""
    from pokeagent.bench import gpu_checks
    from pokeagent.bench.gpu import GpuBenchConfig

    cfg = GpuBenchConfig(
        window=WINDOW, batch_size=8, resume_model="tiny", resume_steps=4, torch_adam=True
    )
    check = gpu_checks.run_resume(cfg, name, _Pool(device), device, tmp_path)
    assert check.status == "ok", check.status
    assert check.continuous[0] == check.resumed[0], (check.continuous, check.resumed)
    assert check.max_rel_diff <= 1e-3, (check.continuous, check.resumed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_network_computes_on_the_gpu_what_it_computes_on_the_cpu(dtype):
    device = torch.device("cuda")
    torch.manual_seed(0)
    net = PokeAgentNet(preset("tiny"), schema()["vocab"]).eval()
    batch = _batch(4, 1, "cpu")
    with torch.inference_mode():
        logits, value = net(batch)
        gpu_logits, gpu_value = net.to(device, dtype)({k: v.to(device) for k, v in batch.items()})
    legal = batch["legal"]
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(
        gpu_logits.float().cpu()[legal], logits[legal], atol=tolerance, rtol=tolerance
    )
    torch.testing.assert_close(gpu_value.float().cpu(), value, atol=tolerance, rtol=tolerance)
    assert torch.isinf(gpu_logits[~legal.to(device)]).all()


def test_the_live_agent_plays_on_the_gpu(showdown_package, tmp_path):
    """`pokeagent eval battles --device cuda`: real games on a local server, one forward pass on
    the GPU per decision, no agent errors."""
    from safetensors.torch import save_file

    from pokeagent.eval.battles import BattleEvalConfig, evaluate_battles

    torch.manual_seed(0)
    net = PokeAgentNet(preset("tiny"), schema()["vocab"])
    (tmp_path / "ckpt").mkdir()
    metadata = {"model": "tiny", "model_config": json.dumps(net.cfg.to_dict()), "step": "0"}
    save_file(net.state_dict(), str(tmp_path / "ckpt" / "model.safetensors"), metadata=metadata)
    report = evaluate_battles(
        BattleEvalConfig(
            checkpoint=str(tmp_path / "ckpt"),
            opponents=("random",),
            battles=4,
            concurrency=2,
            device="cuda",
            out=str(tmp_path / "report"),
        ),
        progress=False,
    )
    result = report["opponents"]["random"]
    assert result["games"] >= 3 and result["agent_errors"] == 0, result
