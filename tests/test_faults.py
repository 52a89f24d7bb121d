"""The guards against the faults of long runs (issue #20): non-finite losses, checkpoints that are
complete or absent, a disk that fills during a save. Faults come from pokeagent/bench/faults.py."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import TRAIN, train_env
from test_hub import fake_hub, metamon  # noqa: F401 - the Hub stand-in's fixtures
from test_train import _args as train_args

from pokeagent.bench.faults import file_size_limit, poison_shards, truncate
from pokeagent.run_dir import RunDir, tag_of
from pokeagent.train.checkpoint import Checkpointer, checkpoint_problem, write_manifest

OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _args(shards, run_dir, steps, **extra) -> list[str]:
    """test_train's run options, with the loader in the training process."""
    return train_args(shards, run_dir, steps, **({"workers-per-gpu": 0} | extra))


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


# ---------------------------------------------------------------- one writer
@pytest.fixture
def other_process():
    """A live process other than this one (a writer that still runs)."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


def _lock_of(holder: subprocess.Popen, path, **fields) -> None:
    """A lock at `path` held by the process `holder` on this host, as WriterLock writes it."""
    from pokeagent.writer_lock import _start_time, this_writer

    record = this_writer() | {"pid": holder.pid, "start": _start_time(holder.pid)} | fields
    path.write_text(json.dumps(record))


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, other_process):
    from pokeagent.writer_lock import FolderLocked, WriterLock

    path = tmp_path / "writer.lock"
    _lock_of(other_process, path)
    with pytest.raises(FolderLocked) as refused:
        WriterLock(path, "run directory").acquire()
    assert f"pid {other_process.pid} on " in str(refused.value)
    assert f"delete {path}" in str(refused.value)
    other_process.kill()
    other_process.wait()
    said = []
    lock = WriterLock(path, "run directory")
    lock.acquire(say=said.append)
    assert said == [
        f"{path}: taken over from {said[0].split('taken over from ')[1].split(': pid')[0]}: "
        f"pid {other_process.pid} is not running"
    ]
    assert json.loads(path.read_text())["pid"] != other_process.pid
    lock.release()
    assert not path.exists()


def test_writer_lock_holders_that_may_still_write(tmp_path, other_process, monkeypatch):
    from pokeagent.writer_lock import FolderLocked, WriterLock, this_writer

    path = tmp_path / "writer.lock"
    _lock_of(other_process, path, host="another-node")  # cannot be checked from here
    with pytest.raises(FolderLocked):
        WriterLock(path, "run directory").acquire()
    # The same SLURM job, restarted by a requeue: its earlier run is over, on any node.
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    _lock_of(other_process, path, host="another-node", job="77", restart="0")
    said = []
    WriterLock(path, "run directory").acquire(say=said.append)
    assert "an earlier run of this SLURM job (restart 0)" in said[0]
    # The same job and restart on another node: a second writer (two srun steps, say).
    _lock_of(other_process, path, host="another-node", job="77", restart="1")
    with pytest.raises(FolderLocked):
        WriterLock(path, "run directory").acquire()
    # This pid, but another process (the pid was reused after the holder died).
    path.write_text(json.dumps(this_writer() | {"start": "1"}))
    said = []
    WriterLock(path, "run directory").acquire(say=said.append)
    assert "is now another process" in said[0]


def test_a_second_pack_into_one_folder_is_refused(tmp_path, other_process):
    from pokeagent.data.pack import LOCK_FILE, PackConfig, pack
    from pokeagent.writer_lock import FolderLocked

    out = tmp_path / "shards"
    out.mkdir()
    _lock_of(other_process, out / LOCK_FILE)
    replays = tmp_path / "replays.jsonl"
    replays.write_text("")
    with pytest.raises(FolderLocked, match=f"pid {other_process.pid} on"):
        pack(PackConfig(sources=[str(replays)], out=out, workers=1), progress=False)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE], "the refused pack wrote"


@pytest.mark.slow
def test_a_second_train_job_is_refused_and_a_killed_ones_lock_taken_over(
    shards, tmp_path, reference
):
    import signal
    import time

    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        TRAIN + _args(shards, run_dir, 8), env=train_env(), stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (run_dir / "writer.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    # Frozen, not ended: the tiny run would finish before a second job starts.
    first.send_signal(signal.SIGSTOP)
    second = _train(_args(shards, run_dir, 8))
    assert second.returncode == 6, second.stderr[-3000:]
    assert f"{run_dir} is being written by another job: pid {first.pid} on " in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    third = _train(_args(shards, run_dir, 8))
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"taken over from pid {first.pid} on " in third.stdout
    assert f"pid {first.pid} is not running" in third.stdout
    _assert_same_losses(run_dir, reference, 8)
    assert not (run_dir / "writer.lock").exists()


# ---------------------------------------------------------------- JIT op build locks
def test_a_build_lock_of_a_dead_builder_is_taken_over(tmp_path, other_process, capsys):
    from pokeagent.train.build_lock import OwnedBaton

    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    _lock_of(other_process, lock)
    assert not OwnedBaton(str(lock)).try_acquire(), "a live builder's lock was taken"
    other_process.kill()
    other_process.wait()
    baton = OwnedBaton(str(lock))
    assert baton.try_acquire()
    assert f"removed a stale build lock (pid {other_process.pid} is not running)" in (
        capsys.readouterr().out
    )
    assert json.loads(lock.read_text())["pid"] != other_process.pid
    baton.release()
    assert not lock.exists()


def test_an_empty_build_lock_is_stale_only_unheld_and_quiet(tmp_path):
    import os
    import time

    from pokeagent.train.build_lock import QUIET_S, OwnedBaton

    lock = tmp_path / "fused_adam" / "lock"
    lock.parent.mkdir()
    with open(lock, "w"):  # held open, as torch's own builder holds it
        assert not OwnedBaton(str(lock)).try_acquire()
    assert not OwnedBaton(str(lock)).try_acquire(), "its folder changed a moment ago"
    old = time.time() - QUIET_S - 5
    for path in (lock, lock.parent):
        os.utime(path, (old, old))
    assert OwnedBaton(str(lock)).try_acquire()


def test_a_wait_for_a_build_is_bounded_and_says_for_whom(tmp_path, other_process, monkeypatch):
    import pokeagent.train.build_lock as build_lock

    monkeypatch.setattr(build_lock, "WAIT_S", 0.5)
    monkeypatch.setattr(build_lock, "_CHECK_S", 0.2)
    lock = tmp_path / "cpu_adam" / "lock"
    lock.parent.mkdir()
    _lock_of(other_process, lock)
    with pytest.raises(
        build_lock.BuildLockError,
        match=f"still locked after .* by pid {other_process.pid} on .* delete {lock}",
    ):
        build_lock.OwnedBaton(str(lock)).wait()
    other_process.kill()  # the builder dies while another process waits
    other_process.wait()
    with pytest.raises(build_lock.BuildLockError, match=r"abandoned .* is not running"):
        build_lock.OwnedBaton(str(lock)).wait()
    assert not lock.exists()


@pytest.mark.slow
def test_a_run_killed_during_its_first_op_build_does_not_hang_the_next(shards, tmp_path):
    """SIGKILL while DeepSpeed builds deepspeed_shm_comm (its first init on CPU, ~30-200 s on 2
    busy cores): the next run takes the dead builder's lock over and builds."""
    import os
    import signal
    import time

    env = train_env() | {"TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    args = _args(shards, tmp_path / "run", 2)
    first = subprocess.Popen(
        TRAIN + args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the kill takes the compiler processes too
    )
    lock = tmp_path / "extensions" / "deepspeed_shm_comm" / "lock"
    deadline = time.monotonic() + 300
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2)  # inside the build
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert lock.exists()
    second = subprocess.run(
        TRAIN + args, env=env, capture_output=True, text=True, timeout=900
    )  # before the guard: no end, no word
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{lock}: removed a stale build lock (pid {first.pid} is not running)" in second.stdout
    assert "step 2/2" in second.stdout


# ---------------------------------------------------------------- the campaign's cases
@pytest.fixture(scope="module")
def campaign(shards, tmp_path_factory):
    from pokeagent.bench.faults import Campaign

    return Campaign(shards, tmp_path_factory.mktemp("campaign"), steps=8)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        ("sigkill", 2),
        ("sigterm_validation", 1),
        ("sigterm_battles", 1),
        ("truncated_checkpoint", 1),
        ("full_disk", 1),
        ("loader_worker", 1),
        ("second_writer", 2),  # a train job, then a pack
        ("pack_kill", 2),
    ],
    ids=lambda case: case[0],
)
def test_each_fault_of_the_campaign_is_survived(campaign, case):
    """scripts/fault_campaign.py's cases, a run or two each (the build kill has its own test)."""
    name, runs = case
    if name == "pack_kill":
        outcome = campaign.pack_kill(runs, campaign.shards.parent / "replays.jsonl")
    else:
        outcome = getattr(campaign, name)(runs)
    assert outcome.runs >= runs and outcome.survived == outcome.runs, outcome
    assert outcome.identical is not False, outcome


@pytest.mark.slow
@pytest.mark.usefixtures("metamon")
def test_a_download_killed_at_random_resumes_to_the_same_files(campaign):
    """kill -9 of `pokeagent download` against the Hub stand-in of test_hub.py, then again."""
    outcome = campaign.download_kill(2)
    assert outcome.runs >= 2 and outcome.survived == outcome.runs, outcome
