"""`pokeagent train --objective binary|exp`: the critic under the DeepSpeed engine on 1 and 2
ranks with ZeRO 1/2/3, its metrics, and exact resume after SIGTERM (its target included)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time

import pytest
import torch
from helpers import TRAIN, torchrun, train_env
from test_train import _args, _cpu_variant, _losses

pytestmark = pytest.mark.slow

CRITIC_SCALARS = {
    "critic/loss",
    "critic/q_taken",
    "critic/advantage_mean",
    "critic/advantage_std",
    "critic/kept_share",
    "critic/weight_mean",
}


def _interrupted_then_resumed(launcher: list[str], args: list[str], run_dir, stop_after: int):
    """Start a run, SIGTERM every process of it after `stop_after` steps, run it again."""
    import psutil

    process = subprocess.Popen(
        launcher + args, env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (
        (run_dir / "metrics.jsonl").exists() and len(_losses(run_dir)) >= stop_after
    ):
        time.sleep(0.05)
    # As SLURM's --signal does: every process of the job (ranks, loader workers) but a launcher,
    # which would end its ranks itself.
    root = psutil.Process(process.pid)
    launched = "torch.distributed.run" in " ".join(root.cmdline())
    for child in [*([] if launched else [root]), *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker that already ended (zombie)
            child.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 0
    stopped_at = max(_losses(run_dir))
    resumed = subprocess.run(
        launcher + args, env=train_env(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    return stopped_at


def test_binary_objective_logs_the_critic_and_resumes_bitwise(shards, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = 16
    extra = {"objective": "binary", "critic-heads": 2, "target-rate": 0.05}
    straight = subprocess.run(
        TRAIN + _args(shards, tmp_path / "a", steps, **extra),
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = _losses(tmp_path / "a")
    rows = [
        json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all("critic_loss" in row for row in rows if "loss" in row)
    events = EventAccumulator(str(tmp_path / "a" / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= CRITIC_SCALARS
    kept = [e.value for e in events.Scalars("critic/kept_share")]
    assert all(0.0 <= share <= 1.0 for share in kept)
    # The target is saved with every checkpoint, and it moved away from the initial heads.
    last = tmp_path / "a" / "checkpoints" / f"step{steps:08d}"
    target = torch.load(last / "rank00000.pt", weights_only=False)["critic_target"]
    assert set(target) == {"hidden_w", "hidden_b", "read_w", "read_b", "point_w"}
    assert target["read_w"].dtype == torch.float32 and target["read_w"].shape[0] == 2

    run_b = tmp_path / "b"
    stopped = _interrupted_then_resumed(TRAIN, _args(shards, run_b, steps, **extra), run_b, 6)
    assert stopped < steps
    resumed = [json.loads(line) for line in (run_b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == list(range(1, steps + 1))
    for row in resumed:
        assert row["loss"] == reference[row["step"]], row  # bitwise, as the bc resume test
        assert row["critic_loss"] == next(
            r["critic_loss"] for r in rows if r["step"] == row["step"]
        )


@pytest.mark.parametrize("stage", ["zero1_bf16", "zero2_bf16", "zero3_bf16"])
def test_two_ranks_exp_objective_with_each_zero_stage_resumes(shards, tmp_path, stage):
    steps = 10
    extra = {
        "objective": "exp",
        "ds-config": _cpu_variant(stage, tmp_path),
        "workers-per-gpu": 1,
        "learning-rate": 3e-3,
        "target-rate": 0.05,
    }
    straight = subprocess.run(
        torchrun(2) + _args(shards, tmp_path / "a", steps, **extra),
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert straight.returncode == 0, (straight.stdout + straight.stderr)[-4000:]
    reference = _losses(tmp_path / "a")
    losses = list(reference.values())
    assert len(losses) == steps and all(loss == loss for loss in losses)  # finite, no NaN
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    run_b = tmp_path / "b"
    stopped = _interrupted_then_resumed(torchrun(2), _args(shards, run_b, steps, **extra), run_b, 4)
    assert stopped < steps
    rows = [json.loads(line) for line in (run_b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    for row in rows:
        assert row["loss"] == pytest.approx(reference[row["step"]], rel=1e-6, abs=1e-6), row
