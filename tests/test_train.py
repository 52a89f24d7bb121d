"""The DeepSpeed trainer on CPU: loss falls, a SIGTERM'd run resumes to the same losses, checkpoints rotate."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch
from helpers import TRAIN, run_pokeagent, run_training, torchrun, train_env

from pokeagent.train.ds_config import DS_CONFIG_DIR


def _cpu_variant(name: str, tmp_path) -> str:
    """A shipped ZeRO config with torch's AdamW, so that CPU tests need no JIT-built Adam."""
    config = json.loads((DS_CONFIG_DIR / f"{name}.json").read_text())
    config["optimizer"]["params"]["torch_adam"] = True
    path = tmp_path / f"{name}-cpu.json"
    path.write_text(json.dumps(config))
    return str(path)


def _args(shards, run_dir, steps, **extra):
    options = {
        "run-dir": run_dir,
        "data-dir": shards,
        "model": "tiny",
        "ds-config": "cpu",
        "batch-size-per-gpu": 8,
        "window": 32,
        "max-steps": steps,
        "warmup-steps": 4,
        "workers-per-gpu": 2,
        "log-every": 1,
        "checkpoint-minutes": 999,
        "seed": 5,
    } | extra
    return [item for key, value in options.items() for item in (f"--{key}", str(value))]


def _losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}


@pytest.mark.slow
def test_sigterm_then_resume_gives_the_uninterrupted_losses(shards, tmp_path):
    steps = 24
    straight = run_training(TRAIN + _args(shards, tmp_path / "a", steps))
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = _losses(tmp_path / "a")
    assert sorted(reference) == list(range(1, steps + 1))
    assert sum(list(reference.values())[-4:]) < sum(list(reference.values())[:4])  # it learns

    run_b = tmp_path / "b"
    process = subprocess.Popen(
        TRAIN + _args(shards, run_b, steps),
        env=train_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (run_b / "metrics.jsonl").exists() and len(_losses(run_b)) >= 8:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    stopped_at = max(_losses(run_b))
    assert stopped_at < steps, "the run finished before the signal"
    assert (run_b / "checkpoints" / "latest").read_text().strip() == f"step{stopped_at:08d}"

    resumed = run_training(TRAIN + _args(shards, run_b, steps))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {stopped_at}" in resumed.stdout
    empty = tmp_path / "empty"
    refused = run_training(TRAIN + _args(shards, empty, steps) + ["--resume"])
    assert refused.returncode != 0 and "no checkpoint" in refused.stderr
    rows = [json.loads(line) for line in (run_b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1)), "a step was repeated or skipped"
    for row in rows:
        # Bitwise: same machine, one OMP thread, torch's AdamW (ds_configs/cpu.json).
        assert row["loss"] == reference[row["step"]], row


@pytest.mark.slow
def test_checkpoint_interval_and_keep_last(shards, tmp_path):
    run = run_training(
        TRAIN
        + _args(
            shards,
            tmp_path / "c",
            6,
            **{"checkpoint-minutes": 0.0001, "keep-last": 2, "workers-per-gpu": 0},
        )
    )
    assert run.returncode == 0, run.stderr[-3000:]
    kept = sorted(p.name for p in (tmp_path / "c" / "checkpoints").glob("step*"))
    assert kept == ["step00000005", "step00000006"]
    saved = json.loads((tmp_path / "c" / "config.json").read_text())
    assert saved["train"]["keep_last"] == 2 and saved["deepspeed"]["train_batch_size"] == 8


def test_dry_run_prints_resolved_configs(shards):
    out = run_training(
        TRAIN + _args(shards, "unused", 10) + ["--dry-run"],
        env=train_env() | {"WORLD_SIZE": "4"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout[out.stdout.index("{") :])
    assert resolved["global_batch"] == 32 and resolved["deepspeed"]["train_batch_size"] == 32
    assert resolved["peak_lr"] == pytest.approx(3e-4 * (32 / 256) ** 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero1_bf16", "zero2_bf16", "zero3_bf16"])
def test_two_ranks_train_with_each_zero_stage(shards, tmp_path, stage):
    run_dir = tmp_path / stage
    args = _args(
        shards,
        run_dir,
        12,
        **{"ds-config": _cpu_variant(stage, tmp_path), "workers-per-gpu": 1, "learning-rate": 3e-3},
    )
    run = run_training(torchrun(2) + args)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    losses = list(_losses(run_dir).values())
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3]), losses
    optim_shards = sorted(
        p.name for p in (run_dir / "checkpoints" / "step00000012").glob("*optim_states.pt")
    )
    assert len(optim_shards) == 2  # ZeRO: each rank saved its own optimizer shard
    assert sorted(p.name for p in (run_dir / "checkpoints" / "step00000012").glob("rank*.pt")) == [
        "rank00000.pt",
        "rank00001.pt",
    ]


@pytest.mark.slow
def test_two_ranks_sigterm_and_resume(shards, tmp_path):
    import psutil

    steps = 16
    config = {"ds-config": _cpu_variant("zero2_bf16", tmp_path), "workers-per-gpu": 1}
    straight = run_training(torchrun(2) + _args(shards, tmp_path / "a", steps, **config))
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = _losses(tmp_path / "a")

    run_b = tmp_path / "b"
    launcher = subprocess.Popen(
        torchrun(2) + _args(shards, run_b, steps, **config),
        env=train_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (
        (run_b / "metrics.jsonl").exists() and len(_losses(run_b)) >= 5
    ):
        time.sleep(0.05)
    # As SLURM's --signal does: every process of the job gets it (ranks and loader workers),
    # not just the launcher.
    processes = psutil.Process(launcher.pid).children(recursive=True)
    assert sum("pokeagent.train" in " ".join(p.cmdline()) for p in processes) >= 2
    for process in processes:
        process.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=300) == 0
    stopped_at = max(_losses(run_b))
    assert stopped_at < steps
    resumed = run_training(torchrun(2) + _args(shards, run_b, steps, **config))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(line) for line in (run_b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    for row in rows:
        assert row["loss"] == pytest.approx(reference[row["step"]], rel=1e-6, abs=1e-6), row


@pytest.mark.slow
def test_weights_export_and_tensorboard(shards, tmp_path):
    from safetensors.torch import load_file
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pokeagent.data.encode import schema
    from pokeagent.model.config import preset
    from pokeagent.model.network import PokeAgentNet

    run_dir = tmp_path / "w"
    run = run_training(TRAIN + _args(shards, run_dir, 6, **{"log-every": 2}))
    assert run.returncode == 0, run.stderr[-3000:]
    weights = load_file(str(run_dir / "checkpoints" / "step00000006" / "model.safetensors"))
    net = PokeAgentNet(preset("tiny", max_window=32), schema()["vocab"])
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(weights, strict=True)
    assert all(v.dtype == torch.float32 for v in weights.values())
    assert any(not torch.equal(weights[k], fresh[k]) for k in fresh), (
        "exported weights equal a fresh init"
    )
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "loss/total",
        "loss/policy",
        "loss/value",
        "accuracy/top1",
        "accuracy/top3",
        "value/brier",
        "lr",
        "grad_norm",
    } <= tags
    assert {
        "throughput/samples_per_s",
        "throughput/decisions_per_s",
        "throughput/data_wait_share",
    } <= tags
    assert [e.step for e in events.Scalars("loss/total")] == [2, 4, 6]


@pytest.mark.slow
def test_test_mode_with_mock_data_runs_end_to_end(showdown_package, tmp_path):
    run_dir = tmp_path / "smoke"
    out = run_pokeagent(
        "train", "--test-mode", "--mock-data", "--run-dir", run_dir, "--workers-per-gpu", 1,
        env=train_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(_losses(run_dir)) == list(range(1, 21))
    assert (
        json.loads((run_dir / "mock-shards" / "manifest.json").read_text())["summary"][
            "battles_packed"
        ]
        > 40
    )
    assert (run_dir / "checkpoints" / "step00000020" / "model.safetensors").exists()
    assert "step 20/20" in out.stdout


@pytest.mark.slow
def test_bench_train_prints_the_ratio(shards):
    out = run_pokeagent(
        "bench", "train", "--shards", shards, "--steps", 2, "--batch-size", 4, "--window", 16,
        env=train_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "plain PyTorch:" in out.stdout and "DeepSpeed:" in out.stdout
    ratio = float(out.stdout.split("step-time ratio DeepSpeed / plain:")[1].split()[0])
    assert ratio > 0
