"""One writer per folder: a run directory (`pokeagent train`) or a pack's output (`pokeagent pack`).

Two jobs writing one run directory (a requeued job while the old one still runs, a typo in
--run-dir) overwrite each other's checkpoints; two packs into one folder, each other's shards.
The writer holds `<folder>/<name>.lock`, a JSON file naming it: host, pid, the process's start
time, SLURM job id and restart count, command. A second writer is refused with that holder
named. A lock is taken over, with a line saying so, when its holder is gone for sure:
- the same host, and that pid is not running (or runs another process: its start time differs);
- the same SLURM job (an earlier restart of it: SLURM ends a job's processes before requeueing
  it), on any host.
A holder on another host, of another job, cannot be checked from here: the message says what to
delete if that job is known to be dead.

The lock is a plain file, not an flock held for the run: network file systems' locks are
unreliable (SQLite's docs, Lustre without `-o flock`). The check-then-take is serialised by a
short flock on the folder where the file system has one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


class FolderLocked(RuntimeError):
    """Another writer holds the folder."""


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22), or None
    when no such process runs. Without /proc: "?" for a live pid (no pid-reuse check)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def this_writer() -> dict:
    """What a lock says of its holder: this process."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": _start_time(os.getpid()),
        "boot": _boot_id(),
        "job": os.environ.get("SLURM_JOB_ID"),
        "restart": os.environ.get("SLURM_RESTART_COUNT", "0"),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv)[:300],
    }


def describe(holder: dict) -> str:
    job = f", SLURM job {holder['job']}" if holder.get("job") else ""
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('since')} "
        f"({holder.get('command', '?')})"
    )


def gone(holder: dict, me: dict) -> str | None:
    """Why `holder` surely holds nothing any more (for the takeover line), or None when it may
    still be writing."""
    if me["job"] and holder.get("job") == me["job"] and holder.get("restart") != me["restart"]:
        return (
            f"an earlier run of this SLURM job (restart {holder.get('restart')}): SLURM ended "
            "it before the requeue"
        )
    if holder.get("host") != me["host"]:
        return None
    if holder.get("boot") and me["boot"] and holder["boot"] != me["boot"]:
        return "the host has restarted since"
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return "it names no process"
    if pid == me["pid"] and holder.get("start") == me["start"]:
        return "it is this process's own"
    start = _start_time(pid)
    if start is None:
        return f"pid {pid} is not running"
    if holder.get("start") not in (None, "?") and start != holder["start"]:
        return f"pid {pid} is now another process"
    return None


@contextlib.contextmanager
def _guard(path: Path):
    """A short exclusive flock on the lock's folder, where the file system has flock."""
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        # Without flock (some network file systems) the window is a few milliseconds.
        with contextlib.suppress(OSError):
            fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the flock


class WriterLock:
    """`<folder>/<name>` held by this process while it writes the folder; `what` names the
    folder's kind in messages (a run directory, a pack output)."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path), what
        self.held = False

    def acquire(self, say=print) -> None:
        """Take the lock, or raise FolderLocked naming its holder. Takes over (and says so) a
        lock whose holder is gone."""
        me = this_writer()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _guard(self.path):
            holder = self.read()
            if holder is not None:
                why = gone(holder, me)
                if why is None:
                    raise FolderLocked(
                        f"{self.path.parent} is being written by another job: {describe(holder)}. "
                        f"Two writers of one {self.what} overwrite each other's files. Wait for "
                        f"it to end, or give this job another folder; if that job is dead (its "
                        f"node was lost), delete {self.path} and start again."
                    )
                if why != "it is this process's own":
                    say(f"{self.path}: taken over from {describe(holder)}: {why}")
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            partial.write_text(json.dumps(me, indent=1) + "\n")
            os.replace(partial, self.path)
        self.held = True

    def read(self) -> dict | None:
        """The holder the lock names, or None when there is no lock. A lock that cannot be
        read (cut short) names no process."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:
            return {"host": "?", "pid": None, "command": f"unreadable lock: {text[:80]!r}"}
        return holder if isinstance(holder, dict) else {"host": "?", "pid": None}

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if not self.held:
            return
        self.held = False
        me = this_writer()
        with _guard(self.path):
            holder = self.read()
            if holder and holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()
