"""The guards against the faults of long runs (issue #20): non-finite losses, checkpoints that are
complete or absent, a disk that fills during a save. Faults come from pokeagent/bench/faults.py."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import TRAIN, train_env

from pokeagent.bench.faults import file_size_limit, poison_shards, truncate
from pokeagent.run_dir import RunDir, tag_of
from pokeagent.train.checkpoint import Checkpointer, checkpoint_problem, write_manifest

OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _args(shards, run_dir, steps, **extra) -> list[str]:
    options = {
        "run-dir": run_dir,
        "data-dir": shards,
        "model": "tiny",
        "ds-config": "cpu",
        "batch-size-per-gpu": 8,
        "window": 32,
        "max-steps": steps,
        "warmup-steps": 4,
        "workers-per-gpu": 0,
        "log-every": 1,
        "checkpoint-minutes": 999,
        "seed": 5,
    } | extra
    return [item for key, value in options.items() for item in (f"--{key}", str(value))]


def _train(args, **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        TRAIN + args, env=train_env(), capture_output=True, text=True, timeout=600, **options
    )


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_losses(run_dir, reference: dict[int, float], steps: int) -> None:
    """Every record of every step (those of a killed job, then the redone ones) is bitwise the
    uninterrupted run's, and every step is there."""
    records = _records(run_dir)
    assert {r["step"] for r in records} == set(range(1, steps + 1))
    for record in records:
        assert record["loss"] == reference[record["step"]], record


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> dict[int, float]:
    """The losses of an uninterrupted 8-step run."""
    run_dir = tmp_path_factory.mktemp("reference")
    done = _train(_args(shards, run_dir, 8))
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["step"]: r["loss"] for r in _records(run_dir)}


# ---------------------------------------------------------------- non-finite losses
@pytest.mark.slow
def test_non_finite_steps_are_skipped_and_a_streak_stops_the_run(shards, tmp_path):
    run_dir = tmp_path / "run"
    clean = _train(_args(shards, run_dir, 3))
    assert clean.returncode == 0, clean.stderr[-3000:]
    poisoned = poison_shards(shards, tmp_path / "nan")  # every batch's loss is NaN from here on
    stopped = _train(_args(poisoned, run_dir, 10, **{"max-nonfinite-steps": 3}))
    assert stopped.returncode == 4, stopped.stderr[-3000:]
    assert "step 4: non-finite loss: update skipped (1 in a row of 3 allowed" in stopped.stdout
    assert "stopped at step 6: steps 4-6" in stopped.stderr
    assert f"the last good checkpoint is {run_dir / 'checkpoints' / tag_of(3)}" in stopped.stderr
    run = RunDir(run_dir)
    assert run.tags() == [tag_of(3)] and run.pointer() == tag_of(3), "something broken was saved"


@pytest.mark.slow
def test_a_bad_batch_is_skipped_and_training_goes_on(shards, tmp_path):
    from safetensors.torch import load_file

    poisoned = poison_shards(shards, tmp_path / "nan", ["train-000003.tar"])
    run_dir = tmp_path / "run"
    done = _train(_args(poisoned, run_dir, 12, **{"batch-size-per-gpu": 4}))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "non-finite loss: update skipped" in done.stdout
    losses = [r["loss"] for r in _records(run_dir)]
    assert losses[-1] == losses[-1], "the last step's loss is NaN"
    weights = load_file(str(RunDir(run_dir).weights(tag_of(12))))
    assert all(bool(w.isfinite().all()) for w in weights.values())


@pytest.mark.slow
def test_an_update_applied_with_a_non_finite_loss_stops_without_saving(shards, tmp_path):
    """ZeRO stage 0 has no overflow check: the NaN update goes in, so the run stops at once."""
    config = tmp_path / "zero0.json"
    config.write_text(
        json.dumps(
            {
                "zero_optimization": {"stage": 0},
                "optimizer": {"type": "AdamW", "params": {"torch_adam": True}},
            }
        )
    )
    run_dir = tmp_path / "run"
    poisoned = poison_shards(shards, tmp_path / "nan")
    stopped = _train(_args(poisoned, run_dir, 4, **{"ds-config": config}))
    assert stopped.returncode == 4, stopped.stderr[-3000:]
    assert "step 1: the loss is not finite and the engine applied the update" in stopped.stderr
    assert RunDir(run_dir).tags() == []


# ---------------------------------------------------------------- complete or absent
def _fake_checkpoint(run: RunDir, step: int, complete: bool = True) -> str:
    """A checkpoint folder of the files a 1-rank save writes (small stand-ins); its manifest
    when `complete`."""
    tag = tag_of(step)
    folder = run.checkpoint(tag)
    folder.mkdir(parents=True)
    for name in ("mp_rank_00_model_states.pt", OPTIM, "rank00000.pt", "model.safetensors"):
        (folder / name).write_bytes(bytes(1000 + step))
    if complete:
        write_manifest(run, tag, 1)
    return tag


def test_checkpoint_problems_are_named(tmp_path):
    run = RunDir(tmp_path)
    tag = _fake_checkpoint(run, 1)
    assert checkpoint_problem(run, tag) is None
    truncate(run.checkpoint(tag) / OPTIM)
    assert checkpoint_problem(run, tag) == (
        f"{OPTIM} has 500 bytes, its manifest says 1001 (truncated or damaged)"
    )
    (run.checkpoint(tag) / OPTIM).unlink()
    assert checkpoint_problem(run, tag) == f"{OPTIM} is missing"
    assert checkpoint_problem(run, _fake_checkpoint(run, 2, complete=False)) == (
        "no manifest.json (its save did not finish)"
    )


def test_pruning_keeps_the_newest_complete_checkpoint(tmp_path, capsys):
    run = RunDir(tmp_path)
    first = _fake_checkpoint(run, 1, complete=False)  # an older save cut short: removed
    run.weights(first).unlink()
    for step in (2, 3, 4):
        _fake_checkpoint(run, step)
    truncate(run.checkpoint(tag_of(4)) / OPTIM)  # damaged since: kept for a person to look at
    run.checkpoint(tag_of(5)).mkdir()  # a later save cut short
    (run.checkpoint(tag_of(5)) / "rank00000.pt").write_bytes(b"partial")
    checkpoints = Checkpointer(run, 0, 1, keep_last=1)
    checkpoints.prune(set())
    assert run.tags() == [tag_of(3), tag_of(4), tag_of(5)], f"{first} stays, or step 3 went"
    assert checkpoints.newest_complete(report=True) == tag_of(3)
    said = capsys.readouterr().out
    assert f"skipped {run.checkpoint(tag_of(5))}: no manifest.json" in said
    assert f"skipped {run.checkpoint(tag_of(4))}: {OPTIM} has " in said


def test_a_run_from_before_manifests_resumes_from_latest(tmp_path):
    run = RunDir(tmp_path)
    for step in (1, 2):
        _fake_checkpoint(run, step, complete=False)
    run.set_pointer("latest", tag_of(1))
    assert Checkpointer(run, 0, 1, keep_last=3).newest_complete() == tag_of(1)


@pytest.mark.slow
def test_resume_skips_damaged_and_cut_short_checkpoints(shards, tmp_path, reference):
    run_dir = tmp_path / "run"
    every_step = {"checkpoint-minutes": 0.0001, "keep-last": 4}
    first = _train(_args(shards, run_dir, 4, **every_step))
    assert first.returncode == 0, first.stderr[-3000:]
    run = RunDir(run_dir)
    truncate(run.checkpoint(tag_of(4)) / OPTIM)
    run.manifest(tag_of(3)).unlink()  # as if the job died before its save finished
    resumed = _train(_args(shards, run_dir, 8, **every_step))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"skipped {run.checkpoint(tag_of(4))}: {OPTIM} has " in resumed.stdout
    assert f"skipped {run.checkpoint(tag_of(3))}: no manifest.json" in resumed.stdout
    assert "resumed from step 2" in resumed.stdout
    _assert_same_losses(run_dir, reference, 8)
    assert all(checkpoint_problem(run, tag) is None for tag in run.tags())


@pytest.mark.slow
def test_a_disk_full_during_a_save_keeps_latest_and_resumes(shards, tmp_path, reference):
    run_dir = tmp_path / "run"
    first = _train(_args(shards, run_dir, 3))
    assert first.returncode == 0, first.stderr[-3000:]
    # The optimizer state (5.8 MB) does not fit: the save of step 6 fails part-way.
    full = _train(_args(shards, run_dir, 6), preexec_fn=file_size_limit(3_000_000))
    assert full.returncode == 5, full.stderr[-3000:]
    assert f"saving checkpoint {run_dir / 'checkpoints' / tag_of(6)} failed" in full.stderr
    assert f"`latest` still names {tag_of(3)}, which is complete" in full.stderr
    run = RunDir(run_dir)
    assert run.tags() == [tag_of(3)] and run.pointer() == tag_of(3)
    resumed = _train(_args(shards, run_dir, 6))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 3" in resumed.stdout
    _assert_same_losses(run_dir, {k: v for k, v in reference.items() if k <= 6}, 6)
