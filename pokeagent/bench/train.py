"""`pokeagent bench train`: optimizer steps/s and samples/s of the DeepSpeed engine, beside a
plain PyTorch loop (AdamW + clipping) on the same model and the same batch.

Both run in this process on one batch read from real shards (so data loading is not measured:
`bench load` does that); the first steps of each are warm-up and not timed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from pokeagent.data.encode import schema
from pokeagent.data.loader import LoaderConfig, TrajectoryLoader
from pokeagent.model.config import preset
from pokeagent.model.loss import LossConfig, compute_loss
from pokeagent.model.network import PokeAgentNet, count_parameters


@dataclass
class TrainBenchResult:
    model: str
    parameters: int
    batch_size: int
    window: int
    steps: int
    plain_step_s: float
    deepspeed_step_s: float

    def table(self) -> str:
        ratio = self.deepspeed_step_s / self.plain_step_s
        return "\n".join(
            [
                f"model {self.model} ({self.parameters / 1e6:.1f}M parameters), batch {self.batch_size} x {self.window} decisions, {self.steps} timed steps",
                f"plain PyTorch: {1 / self.plain_step_s:7.2f} steps/s  {self.batch_size / self.plain_step_s:8.1f} samples/s",
                f"DeepSpeed:     {1 / self.deepspeed_step_s:7.2f} steps/s  {self.batch_size / self.deepspeed_step_s:8.1f} samples/s",
                f"step-time ratio DeepSpeed / plain: {ratio:.2f}",
            ]
        )


def _time(step, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def run_train_bench(
    shards: str,
    model: str = "tiny",
    batch_size: int = 16,
    window: int = 64,
    steps: int = 20,
    ds_config: str = "cpu",
) -> TrainBenchResult:
    import deepspeed

    from pokeagent.train.config import TrainConfig
    from pokeagent.train.ds_config import resolve_run
    from pokeagent.train.trainer import _TrainModule, init_distributed

    cfg = TrainConfig(
        model=model, ds_config=ds_config, batch_size_per_gpu=batch_size, window=window
    )
    run = resolve_run(cfg, world_size=1)
    batch = next(
        iter(
            TrajectoryLoader(
                LoaderConfig(shards=shards, batch_size=batch_size, window=window, workers=0)
            )
        )
    )
    torch.manual_seed(0)
    net = PokeAgentNet(preset(model, max_window=max(window, 16)), schema()["vocab"])
    twin = copy.deepcopy(net)

    # The plain loop mirrors the engine's optimizer: AdamW as in the shipped JSONs, same lr.
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=run.peak_lr, betas=(0.9, 0.95), weight_decay=0.1
    )

    def plain_step():
        logits, value = net(batch)
        loss, _ = compute_loss(logits, value, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()

    plain = _time(plain_step, steps)

    init_distributed()
    engine, *_ = deepspeed.initialize(
        model=_TrainModule(twin, LossConfig()),
        model_parameters=twin.parameters(),
        config=run.deepspeed,
    )

    def engine_step():
        loss, _ = engine(batch)
        engine.backward(loss)
        engine.step()

    ds = _time(engine_step, steps)
    return TrainBenchResult(model, count_parameters(net), batch_size, window, steps, plain, ds)
