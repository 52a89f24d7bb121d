"""Validation during training (`--eval-every`): val/ scalars and records at the right steps, a
`best` checkpoint that survives the keep-last rotation, training losses bitwise unchanged;
`pokeagent status`; an invalid option refused before anything starts."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import TRAIN, run_pokeagent, run_training, torchrun, train_env

from pokeagent.eval.offline import OfflineEvalConfig, run_offline_eval


def _train(shards, run_dir, *extra: str) -> subprocess.CompletedProcess:
    # --test-mode (tiny model, window 32, batch 8), shortened; a checkpoint at every step and
    # keep-last 1, so that only the rotation's newest and the best one remain.
    options = {
        "run-dir": run_dir,
        "data-dir": shards,
        "max-steps": 6,
        "log-every": 2,
        "workers-per-gpu": 0,
        "checkpoint-minutes": 0.0001,
        "keep-last": 1,
        "learning-rate": 0.01,
        "seed": 5,
    }
    argv = [item for key, value in options.items() for item in (f"--{key}", str(value))]
    return run_training([*TRAIN, "--test-mode", *argv, *extra])


def _status(run_dir) -> subprocess.CompletedProcess:
    """`pokeagent status RUN_DIR`, as a user runs it."""
    return run_pokeagent("status", run_dir, env=train_env(), timeout=120)


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_eval_every_validates_keeps_best_and_leaves_training_unchanged(shards, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plain = _train(shards, tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr[-3000:]
    run_dir = tmp_path / "eval"
    run = _train(shards, run_dir, "--eval-every", "2", "--eval-samples", "8")
    assert run.returncode == 0, run.stderr[-3000:]

    records = _records(run_dir)
    steps = [r for r in records if not r.get("val")]
    # Bitwise: validation takes no random draws and never touches the training loader.
    assert steps == _records(tmp_path / "plain")
    vals = [r for r in records if r.get("val")]
    assert [r["step"] for r in vals] == [2, 4, 6]
    assert all(r["trajectories"] == 8 and r["labelled"] > 0 for r in vals)
    assert len({r["decisions"] for r in vals}) == 1  # the same fixed subset

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    for tag in ("val/loss", "val/policy_loss", "val/top1", "val/top3", "val/value_log_loss"):
        assert [e.step for e in events.Scalars(tag)] == [2, 4, 6], tag
    assert events.Scalars("val/loss")[-1].value == pytest.approx(vals[-1]["loss"], rel=1e-6)

    ckpt = run_dir / "checkpoints"
    best_step = min(vals, key=lambda r: r["loss"])["step"]
    best = (ckpt / "best").read_text().strip()
    assert best == f"step{best_step:08d}"
    kept = sorted(p.name for p in ckpt.glob("step*"))
    # keep-last 1 pruned steps 1-5 except the best one
    assert kept == sorted({best, "step00000006"}), kept
    # With this seed the first validation is the best: it must outlive the rotation.
    assert best_step == 2, f"not the case this test needs: {vals}"
    # `pokeagent eval offline` on the best checkpoint (through the pointer file), with the same
    # number of trajectories, reproduces that validation: one code path, the same fixed subset.
    offline = run_offline_eval(
        OfflineEvalConfig(
            checkpoint=str(ckpt / "best"), shards=[str(shards)], max_samples=8, tensorboard=False
        )
    )
    assert offline["step"] == best_step and offline["window"] == 32
    best_record = next(r for r in vals if r["step"] == best_step)
    assert offline["overall"]["loss"] == pytest.approx(best_record["loss"], rel=1e-5)
    assert offline["overall"]["top1"] == best_record["top1"]

    status = _status(run_dir)
    assert status.returncode == 0, status.stderr
    assert "step 6/6, 48 samples" in status.stdout
    assert f"validation at step 6: loss {vals[-1]['loss']:.4f}" in status.stdout
    assert f"best checkpoint {best} (validation loss {vals[0]['loss']:.4f})" in status.stdout


def test_invalid_eval_option_is_refused_before_anything_starts(tmp_path):
    run_dir = tmp_path / "never"
    out = run_training([*TRAIN, "--run-dir", run_dir, "--eval-every", -1], timeout=120)
    assert out.returncode == 2 and "--eval-every must be >= 0 (got -1)" in out.stderr
    assert not run_dir.exists()


def test_status_shows_battles_and_time_left(tmp_path):
    """A run in progress, as its files show it: the time left and the last battles' win rates."""
    import time

    from pokeagent.eval.status import run_status

    (tmp_path / "config.json").write_text(
        json.dumps({"train": {"max_steps": 100}, "deepspeed": {"train_batch_size": 32}})
    )
    rows = [
        {"step": 10, "loss": 2.5, "policy_loss": 2.0, "value_loss": 1.0, "lr": 1e-3},
        {"val": True, "step": 10, "loss": 2.25, "policy_loss": 1.75, "value_loss": 1.0}
        | {"top1": 0.3, "top3": 0.6, "value_brier": 0.25, "trajectories": 8},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "job.json").write_text(
        json.dumps({"stop_at": time.time() + 2 * 3600 + 60, "time_limit_hours": 3.0})
    )
    done = tmp_path / "eval" / "battles-step10"
    done.mkdir(parents=True)
    opponents = {"random": {"win_rate": 0.9, "ci95": [0.8, 0.95]}, "heuristic": {"win_rate": 0.25}}
    (done / "battles.json").write_text(json.dumps({"opponents": opponents, "ratings": {}}))
    (tmp_path / "eval" / "battles-step20").mkdir()
    (tmp_path / "eval" / "battles-step20" / "battles.log").write_text("")

    text = run_status(tmp_path)
    assert "step 10/100, 320 samples; train loss 2.5000" in text
    assert "no checkpoint yet" in text
    assert "validation at step 10: loss 2.2500" in text
    assert "battles at step 10: vs random 0.90 [0.80, 0.95], vs heuristic 0.25" in text
    assert "battles without results yet (running or failed): step 20" in text
    assert "time limit 3.0 h: 2.0 h left before it stops" in text


@pytest.mark.slow
def test_eval_battles_run_beside_training_and_reach_tensorboard(shards, tmp_path):
    """--eval-battles: `pokeagent eval battles` in child processes that training does not wait
    for; their results reach TensorBoard at the step they evaluated (here through the resumed
    run, which records the results that finished after the first job ended)."""
    import contextlib
    import re
    import time

    import psutil
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pokeagent.train.validation import battles_unavailable

    if battles_unavailable():
        pytest.skip(battles_unavailable())
    run_dir = tmp_path / "battles"
    run = _train(shards, run_dir, "--eval-every", "3", "--eval-battles", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    launched = {
        int(s): int(p) for s, p in re.findall(r"battles for step (\d+): pid (\d+)", run.stdout)
    }
    assert sorted(launched) == [3, 6], run.stdout[-3000:]
    # Step 3's checkpoint outlived keep-last 1: its battles were still reading it (or it is the best).
    assert (run_dir / "checkpoints" / "step00000003" / "model.safetensors").exists()
    results = {step: run_dir / "eval" / f"battles-step{step}" / "battles.json" for step in launched}
    try:
        deadline = time.monotonic() + 400
        while not all(path.exists() for path in results.values()):
            assert time.monotonic() < deadline, "the battle processes did not finish"
            time.sleep(1)
    finally:
        for pid in launched.values():  # only the processes this run started
            with contextlib.suppress(psutil.Error):  # gone, or a zombie once finished
                process = psutil.Process(pid)
                if "battles" in " ".join(process.cmdline()):
                    process.kill()
    rates = {
        step: {k: v["win_rate"] for k, v in json.loads(path.read_text())["opponents"].items()}
        for step, path in results.items()
    }
    assert all(set(r) == {"random", "maxpower", "heuristic"} for r in rates.values()), rates

    resumed = _train(shards, run_dir, "--eval-every", "3")  # at max-steps already: records only
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "battles for step 3: vs random" in resumed.stdout
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    for opponent in ("random", "maxpower", "heuristic"):
        scalars = events.Scalars(f"battles/vs_{opponent}")
        assert {e.step: e.value for e in scalars} == pytest.approx(
            {step: rates[step][opponent] for step in (3, 6)}
        )
    status = _status(run_dir)
    assert f"battles at step 6: vs random {rates[6]['random']:.2f}" in status.stdout


@pytest.mark.slow
def test_two_ranks_zero3_validate_without_changing_training(shards, tmp_path):
    """ZeRO-3 partitions the weights: every rank takes part in each validation forward (rank 0
    alone would hang). Training losses are those of a run without validation; rank 0 alone writes."""
    from pokeagent.train.ds_config import DS_CONFIG_DIR

    config = json.loads((DS_CONFIG_DIR / "zero3_bf16.json").read_text())
    config["optimizer"]["params"]["torch_adam"] = True  # no JIT-built Adam on CPU
    (tmp_path / "zero3.json").write_text(json.dumps(config))
    launch = [*torchrun(2), "--ds-config", str(tmp_path / "zero3.json")]
    common = ["--test-mode", "--data-dir", str(shards), "--max-steps", "6", "--log-every", "3"]
    for name, extra in (("plain", []), ("eval", ["--eval-every", "3", "--eval-samples", "6"])):
        run = run_training(
            [*launch, *common, "--workers-per-gpu", "0", "--run-dir", str(tmp_path / name), *extra]
        )
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    records = _records(tmp_path / "eval")
    assert [r["step"] for r in records if r.get("val")] == [3, 6]
    steps = [r for r in records if not r.get("val")]
    plain = _records(tmp_path / "plain")
    assert [r["step"] for r in steps] == [r["step"] for r in plain] == list(range(1, 7))
    for row, reference in zip(steps, plain, strict=True):
        assert row["loss"] == pytest.approx(reference["loss"], rel=1e-6, abs=1e-6), row


def test_resumed_run_recovers_the_best_validation_loss(shards, tmp_path):
    from pokeagent.train.validation import Validation

    ckpt = tmp_path / "checkpoints"
    (ckpt / "step00000004").mkdir(parents=True)
    (ckpt / "best").write_text("step00000004")
    rows = [{"val": True, "step": 2, "loss": 3.0}, {"val": True, "step": 4, "loss": 2.5}]
    rows += [{"step": 4, "loss": 1.0}, {"val": True, "step": 6, "loss": 2.75}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"st')
    validation = Validation(str(shards), samples=4, window=32, batch_size=8, value_weight=0.5)
    assert len(validation.subset) == 4
    validation.recover_best(tmp_path, ckpt)
    assert validation.best_loss == 2.5  # the val record of the step `best` names
