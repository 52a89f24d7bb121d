"""Faults a long run meets, made on purpose: what the fault campaign (scripts/fault_campaign.py)
and the guards' tests (tests/test_faults.py) inject into small real runs.

Each function makes one fault and nothing else; whether the run survives it is for the caller
to check.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pokeagent.run_dir import RunDir
from pokeagent.train.checkpoint import checkpoint_problem


def poison_shards(source: Path, out: Path, names: list[str] | None = None) -> Path:
    """A copy of the shard folder `source` at `out` whose `names` shards (default: every train
    shard) hold NaN features in every sample: the losses of the batches that draw them are NaN."""
    shutil.copytree(source, out)
    for name in names or sorted(p.name for p in Path(out).glob("train-*.tar")):
        path = Path(out) / name
        members = []
        with tarfile.open(path) as tar:
            for info in tar.getmembers():
                data = tar.extractfile(info).read()
                if info.name.endswith(".features.npy"):
                    array = np.load(io.BytesIO(data))
                    buffer = io.BytesIO()
                    np.save(buffer, np.full_like(array, np.nan))
                    data = buffer.getvalue()
                    info.size = len(data)
                members.append((info, data))
        with tarfile.open(path, "w") as tar:
            for info, data in members:
                tar.addfile(info, io.BytesIO(data))
    return Path(out)


def truncate(path: Path, keep: float = 0.5) -> int:
    """Cut the file at `path` to `keep` of its size (a copy or a write cut short); the new size."""
    size = int(Path(path).stat().st_size * keep)
    with open(path, "r+b") as file:
        file.truncate(size)
    return size


def file_size_limit(limit: int):
    """A `preexec_fn` for subprocess: no file of the child may grow past `limit` bytes, and a
    write past it fails (EFBIG) rather than killing the process (SIGXFSZ ignored) - a disk that
    fills, for one process, without a file system of its own."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


# ---------------------------------------------------------------- the campaign
@dataclass
class Outcome:
    """One fault's row: how often it was made, how often the run came through (resumed to the
    end with nothing a user saved lost, or refused cleanly), and whether the losses after the
    resumes were bitwise the uninterrupted run's (None: not a training fault, or a refusal)."""

    fault: str
    runs: int = 0
    survived: int = 0
    identical: bool | None = None
    notes: list[str] = field(default_factory=list)

    def compare(self, same: bool) -> None:
        """One more run's verdict: identical only if every run's losses were."""
        self.identical = same and self.identical in (None, True)

    def row(self) -> str:
        same = {None: "n/a", True: "yes", False: "**no**"}[self.identical]
        notes = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"| {self.fault}{notes} | {self.runs} | {self.survived} | {same} |"


TABLE_HEAD = "| fault | runs | survived | losses identical after resume |\n|---|---:|---:|---|"


def train_env(extensions: Path | None = None) -> dict:
    """A `pokeagent train` child's environment: CPU, one thread, a short DeepSpeed timeout."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", DEEPSPEED_TIMEOUT="2")
    env.pop("RANK", None)
    if extensions is not None:
        env["TORCH_EXTENSIONS_DIR"] = str(extensions)
    return env


class Campaign:
    """Faults made on small real runs of the tiny model (`steps` optimizer steps on `shards`),
    each compared with an uninterrupted run of the same options. Logs go to `work/logs/`."""

    def __init__(self, shards: Path, work: Path, steps: int = 16, seed: int = 0, say=print):
        self.shards, self.work, self.steps, self.say = Path(shards), Path(work), steps, say
        self.random = random.Random(seed)
        self.logs = self.work / "logs"
        for old in (self.logs, self.work / "runs"):  # an earlier campaign's
            shutil.rmtree(old, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self._references: dict[tuple, dict[int, float]] = {}
        self._runs = 0

    # ------------------------------------------------------------ running
    def args(self, run_dir: Path, **extra) -> list[str]:
        options = {
            "run-dir": run_dir,
            "data-dir": self.shards,
            "model": "tiny",
            "ds-config": "cpu",
            "batch-size-per-gpu": 8,
            "window": 32,
            "max-steps": self.steps,
            "warmup-steps": 4,
            "workers-per-gpu": 0,
            "log-every": 1,
            "checkpoint-minutes": 0.0001,  # a save after every step: kills land in saves
            "keep-last": 2,
            "seed": 5,
        } | extra
        return [item for key, value in options.items() for item in (f"--{key}", str(value))]

    def _log(self, name: str):
        self._runs += 1
        return open(self.logs / f"{self._runs:03d}-{name}.log", "w")

    def start(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        """`pokeagent train` in a session of its own (a kill takes its workers and children)."""
        with self._log(name) as log:
            return subprocess.Popen(
                [sys.executable, "-m", "pokeagent.train", *args],
                env=env or train_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def train(
        self, name: str, args: list[str], env: dict | None = None, **popen
    ) -> tuple[int, str]:
        """Run to the end; (exit code, output)."""
        with self._log(name) as log:
            done = subprocess.run(
                [sys.executable, "-m", "pokeagent.train", *args],
                env=env or train_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=1800,
                **popen,
            )
        return done.returncode, Path(log.name).read_text()

    def resume_to_end(self, name: str, args: list[str], tries: int = 3, **popen) -> tuple[int, str]:
        code, output = 1, ""
        for _ in range(tries):
            code, output = self.train(name, args, **popen)
            if code == 0:
                break
        return code, output

    def reference(self, **extra) -> dict[int, float]:
        """The losses of an uninterrupted run with these options (cached)."""
        key = tuple(sorted((k, str(v)) for k, v in extra.items()))
        if key not in self._references:
            run_dir = self.fresh("reference")
            code, output = self.train("reference", self.args(run_dir, **extra))
            if code:
                raise RuntimeError(f"the reference run failed:\n{output[-3000:]}")
            self._references[key] = {r["step"]: r["loss"] for r in _step_records(run_dir)}
        return self._references[key]

    def fresh(self, name: str) -> Path:
        self._runs += 1
        path = self.work / "runs" / f"{self._runs:03d}-{name}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    def same_losses(self, run_dir: Path, reference: dict[int, float]) -> bool:
        """Every step's every record (a killed job's, then the redone ones) is bitwise the
        uninterrupted run's, and no step is missing."""
        records = _step_records(run_dir)
        return {r["step"] for r in records} == set(reference) and all(
            r["loss"] == reference[r["step"]] for r in records
        )

    # ------------------------------------------------------------ faults
    def sigkill(self, kills: int) -> Outcome:
        """SIGKILL at random moments (start-up, steps, saves; every other one waits for a save
        to be under way), then the same command again, until the run ends. After each kill
        `latest` must name a complete checkpoint and no complete one may be lost beyond the
        rotation."""
        outcome = Outcome("SIGKILL at random points")
        reference = self.reference()
        inside = 0
        while outcome.runs < kills:
            run_dir = self.fresh("sigkill")
            run = RunDir(run_dir)
            args = self.args(run_dir)
            while outcome.runs < kills:
                process = self.start("sigkill", args)
                in_save = _wait_then_kill(process, run, self.random, outcome.runs % 2 == 1)
                if process.returncode == 0:
                    break  # the run ended before the kill came
                outcome.runs += 1
                inside += in_save
                latest = run.pointer()
                if latest is None or checkpoint_problem(run, latest) is None:
                    outcome.survived += 1
                else:
                    outcome.notes.append(f"latest names an incomplete {latest}")
            code, _ = self.resume_to_end("sigkill-resume", args)
            same = code == 0 and self.same_losses(run_dir, reference)
            outcome.compare(same)
        outcome.notes.append(f"{inside} inside a save")
        return outcome

    def sigterm_validation(self, runs: int) -> Outcome:
        """SIGTERM to the job (every process, as SLURM) as a validation starts (the step's record
        is written just before it); the run must stop cleanly after it and resume exactly."""
        outcome = Outcome("SIGTERM during validation")
        extra = {"eval-every": 4, "checkpoint-minutes": 999}
        reference = self.reference(**extra)
        for index in range(runs):
            run_dir = self.fresh("sigterm-validation")
            args = self.args(run_dir, **extra)
            at = 4 * (1 + index % max(1, self.steps // 4 - 1))
            process = self.start("sigterm-validation", args)
            _wait_for(
                lambda at=at, run_dir=run_dir: at in {r["step"] for r in _step_records(run_dir)},
                process,
            )
            _signal(process, signal.SIGTERM)
            process.wait(timeout=600)
            outcome.runs += 1
            validated = any(
                r.get("val") and r["step"] == at for r in RunDir(run_dir).read_metrics()
            )
            code, _ = self.resume_to_end("sigterm-validation-resume", args)
            if process.returncode == 0 and validated and code == 0:
                outcome.survived += 1
            outcome.compare(self.same_losses(run_dir, reference))
        return outcome

    def sigterm_battles(self, runs: int) -> Outcome:
        """SIGTERM to the job while its --eval-battles child plays: the trainer stops cleanly
        and resumes exactly; the child ends with it."""
        outcome = Outcome("SIGTERM during an --eval-battles child")
        extra = {"eval-every": 4, "eval-battles": 2, "checkpoint-minutes": 999}
        reference = self.reference(**extra)
        for _ in range(runs):
            run_dir = self.fresh("sigterm-battles")
            args = self.args(run_dir, **extra)
            process = self.start("sigterm-battles", args)
            log = run_dir / "eval" / "battles-step4" / "battles.log"
            _wait_for(lambda log=log: log.is_file() and log.stat().st_size > 0, process)
            children = _children(process.pid)
            _signal(process, signal.SIGTERM)
            process.wait(timeout=600)
            outcome.runs += 1
            left = [p for p in children if _alive(p)]
            code, output = self.resume_to_end("sigterm-battles-resume", args)
            _wait_for_battles(output)
            if process.returncode == 0 and code == 0 and not left:
                outcome.survived += 1
            elif left:
                outcome.notes.append(f"{len(left)} processes outlived the job")
            outcome.compare(self.same_losses(run_dir, reference))
        if not (run_dir / "eval" / "battles-step4" / "battles.json").is_file():
            outcome.notes.append("the signalled step's battles are not played again")
        return outcome

    def truncated_checkpoint(self, runs: int) -> Outcome:
        """A file of the newest checkpoint cut in half after the run: the next start skips that
        checkpoint (naming the file) and redoes its steps from the one before."""
        outcome = Outcome("truncated checkpoint file")
        reference = self.reference()
        victims = ("zero_pp_rank_0_mp_rank_00_optim_states.pt", "mp_rank_00_model_states.pt")
        victims += ("rank00000.pt", "model.safetensors")
        for index in range(runs):
            run_dir = self.fresh("truncated")
            args = self.args(run_dir)
            code, _ = self.train("truncated-first", args)
            run = RunDir(run_dir)
            newest = run.pointer()
            truncate(run.checkpoint(newest) / victims[index % len(victims)])
            outcome.runs += 1
            code, output = self.train("truncated-resume", args)
            if code == 0 and f"skipped {run.checkpoint(newest)}" in output:
                outcome.survived += 1
            outcome.compare(self.same_losses(run_dir, reference))
        return outcome

    def full_disk(self, runs: int) -> Outcome:
        """The disk fills while the run saves (a tmpfs of its own where this process may mount
        one, else a file-size limit): the run stops naming the complete checkpoint `latest`
        keeps; with space again, the same command resumes exactly."""
        outcome = Outcome("full disk during a save")
        reference = self.reference()
        for _ in range(runs):
            run_dir = self.fresh("full-disk")
            with _small_disk(run_dir, 64 * 1024**2) as mounted:
                args = self.args(run_dir)
                if mounted:
                    outcome.notes = ["tmpfs filled by another writer"]
                    process = self.start("full-disk", args)
                    filler = run_dir / "filler"
                    _wait_for(lambda run_dir=run_dir: _complete_count(run_dir) >= 2, process)
                    _fill(filler, leave=2 * 1024**2)
                    process.wait(timeout=600)
                    code = process.returncode
                    filler.unlink(missing_ok=True)
                else:
                    outcome.notes = ["RLIMIT_FSIZE: no tmpfs here"]
                    limit = file_size_limit(3_000_000)
                    code, _ = self.train("full-disk", args, preexec_fn=limit)
                run = RunDir(run_dir)
                latest = run.pointer()
                kept = latest is None or checkpoint_problem(run, latest) is None
                outcome.runs += 1
                resumed, _ = self.resume_to_end("full-disk-resume", args)
                if code == 5 and kept and resumed == 0:
                    outcome.survived += 1
                outcome.compare(self.same_losses(run_dir, reference))
        return outcome

    def loader_worker(self, runs: int) -> Outcome:
        """SIGKILL of one loader worker: the trainer must end (not hang) and resume exactly."""
        outcome = Outcome("a loader worker killed")
        extra = {"workers-per-gpu": 2}
        reference = self.reference(**extra)
        for _ in range(runs):
            run_dir = self.fresh("loader-worker")
            args = self.args(run_dir, **extra)
            process = self.start("loader-worker", args)
            _wait_for(lambda run_dir=run_dir: len(_step_records(run_dir)) >= 3, process)
            workers = [p for p in _children(process.pid) if "pokeagent.train" in _cmdline(p)]
            if workers:
                os.kill(workers[0], signal.SIGKILL)
            try:
                process.wait(timeout=120)
                ended = True
            except subprocess.TimeoutExpired:
                ended = False
                _signal(process, signal.SIGKILL)
                process.wait()
                outcome.notes.append("the trainer hung after the kill")
            outcome.runs += 1
            code, _ = self.resume_to_end("loader-worker-resume", args)
            if workers and ended and code == 0:
                outcome.survived += 1
            outcome.compare(self.same_losses(run_dir, reference))
        return outcome

    def second_writer(self, runs: int) -> Outcome:
        """A second `pokeagent train` on a run directory whose job still runs (stopped, so that
        it still holds it), and a second pack into a folder a pack holds: both refused; the
        first job then ends with the uninterrupted losses."""
        outcome = Outcome("a second writer (train, pack)")
        reference = self.reference(**{"checkpoint-minutes": 999})
        for index in range(runs):
            if index % 2:
                outcome.runs += 1
                outcome.survived += self._second_pack()
                continue
            run_dir = self.fresh("second-writer")
            args = self.args(run_dir, **{"checkpoint-minutes": 999})
            first = self.start("second-writer-first", args)
            _wait_for((run_dir / "writer.lock").exists, first, poll=0.01)
            first.send_signal(signal.SIGSTOP)
            code, output = self.train("second-writer", args)
            first.send_signal(signal.SIGCONT)
            first.wait(timeout=600)
            outcome.runs += 1
            if code == 6 and f"pid {first.pid} on" in output and first.returncode == 0:
                outcome.survived += 1
            outcome.compare(self.same_losses(run_dir, reference))
        return outcome

    def _second_pack(self) -> bool:
        from pokeagent.data.pack import LOCK_FILE

        out = self.fresh("second-pack")
        replays = self.shards.parent / "replays.jsonl"
        command = [sys.executable, "-m", "pokeagent", "pack", str(replays), "--out", str(out)]
        command += ["--workers", "1", "--no-progress"]
        with self._log("second-pack-first") as log:
            first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _wait_for(lambda: (out / LOCK_FILE).exists(), first, poll=0.01)
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(command, capture_output=True, text=True, timeout=600)
        first.send_signal(signal.SIGCONT)
        first.wait(timeout=600)
        return (
            second.returncode != 0
            and f"pid {first.pid} on" in second.stderr
            and first.returncode == 0
        )

    def build_kill(self, runs: int) -> Outcome:
        """SIGKILL while DeepSpeed builds its first JIT op (in an empty extensions folder): the
        next run takes the dead builder's lock over, builds and trains to the same losses."""
        outcome = Outcome("a kill during the first op build")
        reference = self.reference(**{"max-steps": 4})
        for _ in range(runs):
            extensions = self.fresh("extensions")
            env = train_env(extensions)
            run_dir = self.fresh("build-kill")
            args = self.args(run_dir, **{"max-steps": 4})
            process = self.start("build-kill", args, env=env)
            lock = extensions / "deepspeed_shm_comm" / "lock"
            _wait_for(lock.exists, process, poll=0.02)
            time.sleep(self.random.uniform(0.5, 5))
            _signal(process, signal.SIGKILL)
            process.wait()
            outcome.runs += 1
            left = lock.exists()
            code, output = self.train("build-kill-resume", args, env=env)
            if code == 0 and (not left or "removed a stale build lock" in output):
                outcome.survived += 1
            outcome.compare(self.same_losses(run_dir, reference))
        return outcome

    def kill_at_random(self, name: str, start, took: float, most: int) -> int:
        """Start a command (`start(log)` -> Popen) and SIGKILL it at a random moment within
        `took` seconds (what an uninterrupted run took), again and again on the same output,
        at most `most` times or until a run completes first; how many were killed."""
        killed = 0
        while killed < most:
            with self._log(name) as log:
                process = start(log)
            time.sleep(self.random.uniform(0.3, took))
            if process.poll() is not None:
                break  # it completed first
            _signal(process, signal.SIGKILL)
            process.wait()
            killed += 1
        return killed

    def pack_kill(self, kills: int, replays: Path) -> Outcome:
        """kill -9 of `pokeagent pack` (with its workers) at random moments, then the same
        command again until it completes: the shards must be byte-identical to an uninterrupted
        pack's."""
        outcome = Outcome("kill -9 of pack")
        options = ["--workers", "2", "--shard-size", "40KB", "--no-progress"]

        def command(out: Path) -> list[str]:
            return [sys.executable, "-m", "pokeagent", "pack", str(replays), "--out", str(out)]

        reference = self.fresh("pack-reference")
        started = time.monotonic()
        subprocess.run(command(reference) + options, check=True, capture_output=True)
        took = time.monotonic() - started
        outcome.notes = ["shards byte-identical to an uninterrupted pack's"]
        while outcome.runs < kills:
            out = self.fresh("pack-kill")
            killed = self.kill_at_random(
                "pack-kill",
                lambda log, out=out: subprocess.Popen(
                    command(out) + options,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                took,
                kills - outcome.runs,
            )
            done = subprocess.run(command(out) + options, capture_output=True)
            outcome.runs += killed
            if done.returncode == 0 and _same_files(reference, out, "*.tar"):
                outcome.survived += killed
            else:
                outcome.notes.append(f"{out} differs")
        return outcome

    def download_kill(self, kills: int, dataset: str = "metamon-raw") -> Outcome:
        """kill -9 of `pokeagent download` at random moments (against the Hub that HF_ENDPOINT
        names, a local stand-in in the campaign), then the same command again until it
        completes: the output must be byte-identical to an uninterrupted download's (each
        with a cache of its own, HF_HOME)."""
        outcome = Outcome("kill -9 of download", notes=["output byte-identical"])

        def run(out: Path, **popen):
            command = [sys.executable, "-m", "pokeagent", "download", "--dataset", dataset]
            env = dict(os.environ, HF_HOME=str(out.with_name(out.name + "-hf-home")))
            return subprocess.Popen(
                [*command, "--out", str(out), "--no-progress"],
                env=env,
                stdout=popen.pop("stdout", subprocess.DEVNULL),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        reference = self.fresh("download-reference")
        started = time.monotonic()
        if run(reference).wait(timeout=600):
            raise RuntimeError(f"the reference download into {reference} failed")
        took = time.monotonic() - started
        while outcome.runs < kills:
            out = self.fresh("download-kill")
            killed = self.kill_at_random(
                "download-kill",
                lambda log, out=out: run(out, stdout=log),
                took,
                kills - outcome.runs,
            )
            code = run(out).wait(timeout=600)
            outcome.runs += killed
            if code == 0 and _same_files(reference / "replays", out / "replays", "*.parquet"):
                outcome.survived += killed
            else:
                outcome.notes.append(f"{out} differs")
        return outcome


# ---------------------------------------------------------------- helpers of the campaign
def _step_records(run_dir: Path) -> list[dict]:
    return [r for r in RunDir(run_dir).read_metrics() if "loss" in r and not r.get("val")]


def _complete_count(run_dir: Path) -> int:
    run = RunDir(run_dir)
    return sum(checkpoint_problem(run, t) is None for t in run.tags())


def _wait_for(condition, process: subprocess.Popen, timeout: float = 600, poll: float = 0.05):
    """Until `condition()` holds or `process` has ended."""
    deadline = time.monotonic() + timeout
    while not condition() and process.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {condition}")
        time.sleep(poll)


def _wait_then_kill(process, run: RunDir, rng: random.Random, in_save: bool) -> bool:
    """SIGKILL `process` (its whole session) after a random wait, or (with `in_save`) once a
    checkpoint folder without its manifest shows a save under way. Whether a save was."""
    if in_save:
        known = set(run.tags())
        deadline = time.monotonic() + rng.uniform(5, 30)

        def saving() -> bool:
            return (
                any(t not in known and not run.manifest(t).is_file() for t in run.tags())
                or time.monotonic() > deadline
            )

        _wait_for(saving, process, poll=0.005)
    else:
        deadline = time.monotonic() + rng.uniform(2, 25)
        _wait_for(lambda: time.monotonic() > deadline, process, poll=0.05)
    saving_now = any(not run.manifest(t).is_file() for t in run.tags())
    if process.poll() is None:
        _signal(process, signal.SIGKILL)
    process.wait()
    return saving_now


def _wait_for_battles(output: str, timeout: float = 900) -> None:
    """Until the battle processes a run launched (`battles for step N: pid P`) have ended: they
    outlive the trainer by design, and the next case should not share the cores with them."""
    pids = [int(m) for m in re.findall(r"battles for step \d+: pid (\d+)", output)]
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(1)


def _signal(process: subprocess.Popen, sig: int) -> None:
    """`sig` to every process of the child's session, as SLURM signals a job step."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _children(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
        except OSError:
            continue
        for child in map(int, text.split()):
            found.append(child)
            frontier.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def _small_disk(path: Path, size: int):
    """A tmpfs of `size` bytes mounted at `path` (yields True), or just the folder (False)
    where this process may not mount."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(path: Path, leave: int) -> None:
    """Another writer takes all but `leave` bytes of the file system `path` is on, in `path`."""
    stat = os.statvfs(path.parent)
    with open(path, "wb") as out, contextlib.suppress(OSError):
        out.write(bytes(max(0, stat.f_bavail * stat.f_frsize - leave)))


def _same_files(a: Path, b: Path, pattern: str) -> bool:
    """The `pattern` files of folders `a` and `b` have the same names and bytes."""
    names = sorted(p.name for p in a.glob(pattern))
    return (
        bool(names)
        and names == sorted(p.name for p in b.glob(pattern))
        and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    )
