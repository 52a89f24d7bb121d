"""The lock torch takes to build (or load) a JIT-compiled DeepSpeed op, and the hang it causes.

torch builds an op (deepspeed_shm_comm at every first init_distributed on CPU, fused_adam,
cpu_adam) in `<extensions dir>/<op>/` holding `<op>/lock`, an empty file
(torch.utils.file_baton.FileBaton); every other process that needs the op waits until the file
goes, without a limit or a word. A builder killed during the build (SIGKILL, a time limit, a
lost node) leaves the file, and every later run on that machine hangs after "Setting
accelerator to CPU" (measured: shared/notes/deepspeed-cpu.md).

`guard_extension_builds()` puts `OwnedBaton` in its place, for this process:
- the lock it creates names its builder (host, pid and start time, as writer_lock.py);
- a lock whose builder is gone is removed with a line saying so, and the build goes on: a lock
  of ours naming a pid of this host that no longer runs; an empty lock (a plain torch builder)
  that no process of this host holds open while its folder has not changed for `QUIET_S`;
- a wait for a live builder says whom it waits for, and gives up after `WAIT_S` naming the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from torch.utils import cpp_extension
from torch.utils.file_baton import FileBaton

from pokeagent.writer_lock import describe, gone, this_writer

WAIT_S = float(os.environ.get("POKEAGENT_BUILD_WAIT_S", 30 * 60))
"""How long to wait for another process's build of an op (a CUDA op can take minutes)."""
QUIET_S = 60.0
"""An empty lock that no process here holds, in a folder unchanged this long, is abandoned."""
_CHECK_S = 5.0


class BuildLockError(RuntimeError):
    """A build lock was held too long, or its builder died while this process waited."""


def guard_extension_builds() -> None:
    """Make torch's JIT builds in this process go through `OwnedBaton` (idempotent)."""
    cpp_extension.FileBaton = OwnedBaton


def _holders(path: Path) -> list[int]:
    """Pids of this host's processes that hold `path` open (torch's builder keeps its lock's
    descriptor open until it removes the file); empty where /proc cannot tell."""
    target = str(path.resolve())
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == target for fd in fd_dir.iterdir()):
                found.append(int(fd_dir.parent.name))
        except OSError:
            continue
    return found


def abandoned(path: Path) -> str | None:
    """Why the build lock at `path` has no live builder, or None while it may have one."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    if isinstance(holder, dict):
        return gone(holder, this_writer())
    if _holders(path):
        return None
    try:
        changed = max(p.stat().st_mtime for p in [path.parent, *path.parent.iterdir()])
    except OSError:
        return None
    idle = time.time() - changed
    if idle < QUIET_S:
        return None
    return f"no process here holds it and {path.parent} has not changed for {idle:.0f} s"


def _remove(path: Path, inode: int) -> None:
    """Remove the lock file if it still is inode `inode` (another process may have replaced a
    stale lock by its own in the meantime: that one is put back)."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if os.stat(aside).st_ino == inode:
        os.unlink(aside)
    else:
        os.rename(aside, path)


def _holder_text(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        holder = None
    if isinstance(holder, dict):
        return describe(holder)
    pids = _holders(path)
    return f"pid {', '.join(map(str, pids))}" if pids else "a process that left no name"


class OwnedBaton(FileBaton):
    """torch's FileBaton with a named holder, stale-lock removal and a bounded, announced wait."""

    def try_acquire(self) -> bool:
        path = Path(self.lock_file_path)
        for _ in range(2):
            try:
                self.fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(self.fd, json.dumps(this_writer()).encode())
                return True
            try:
                inode = os.stat(path).st_ino
            except FileNotFoundError:
                continue
            why = abandoned(path)
            if why is None:
                return False
            print(f"{path}: removed a stale build lock ({why})", flush=True)
            _remove(path, inode)
        return False

    def wait(self) -> None:
        path = Path(self.lock_file_path)
        started = time.monotonic()
        checks = 0
        while path.exists():
            time.sleep(self.wait_seconds)
            waited = time.monotonic() - started
            if waited < (checks + 1) * _CHECK_S:
                continue
            checks += 1
            if checks == 1:
                print(
                    f"waiting for {_holder_text(path)} to finish building {path.parent.name} "
                    f"({path}); at most {WAIT_S / 60:.0f} min",
                    flush=True,
                )
            why = abandoned(path)
            if why is not None:
                with contextlib.suppress(FileNotFoundError):
                    _remove(path, os.stat(path).st_ino)
                raise BuildLockError(
                    f"{path}: the build this process waited for was abandoned ({why}); the "
                    "lock is removed: run again to build it"
                )
            if waited > WAIT_S:
                raise BuildLockError(
                    f"{path}: still locked after {WAIT_S / 60:.0f} min by {_holder_text(path)}; "
                    f"if no build of {path.parent.name} is running, delete {path} and run again"
                )
