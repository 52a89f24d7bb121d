"""A local Pokémon Showdown server on 127.0.0.1: start, wait until ready, stop exactly what started.

    with ShowdownServer() as server:          # free port, own logs folder
        player = RandomPlayer(server_configuration=server.server_configuration(), ...)

The server runs in its own process group (~9 node processes: the main one forks network and
simulator workers); `stop` ends that group and nothing else. The port is always passed on the
command line: without it Showdown ignores `bindaddress` and listens on 0.0.0.0.

`pokeagent showdown start` leaves a server running after the command exits; its record
(pid, port, logs folder) is kept in the cache so that `stop` and `status` find it later.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pokeagent.paths import cache_dir
from pokeagent.showdown.install import (
    LOG_SUBDIRS,
    SHOWDOWN_VERSION,
    node_executable,
    require_installed,
    write_server_files,
)

LOOPBACK = "127.0.0.1"


class ShowdownServerError(RuntimeError):
    """The server did not start, or died."""


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _serves_clients(port: int, timeout_s: float = 5.0) -> bool:
    """True once a websocket client gets its `|challstr|`: the TCP port opens ~2 s before that."""
    from websockets.sync.client import connect

    try:
        with connect(f"ws://{LOOPBACK}:{port}/showdown/websocket", open_timeout=timeout_s) as ws:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if "|challstr|" in ws.recv(timeout=max(0.01, deadline - time.monotonic())):
                    return True
    except Exception:  # refused, reset, handshake timeout: all mean "not ready yet"
        return False
    return False


def records_dir() -> Path:
    """Where detached servers (`pokeagent showdown start`) are recorded, one JSON per port."""
    return cache_dir() / "servers"


@dataclass
class ServerRecord:
    """What is needed to find and end a running server later."""

    pid: int
    """Main node process; also the id of its process group (it leads a new session)."""
    port: int
    """TCP port on 127.0.0.1."""
    logs_dir: str
    """The server's logs folder (battle logs land in `<logs_dir>/<YYYY-MM>/<format>/...`)."""
    started_at: float
    """Unix time when the server became ready."""
    version: str = SHOWDOWN_VERSION
    """pokemon-showdown version it runs."""

    def path(self) -> Path:
        return records_dir() / f"{self.port}.json"


def process_alive(pid: int) -> bool:
    """True if `pid` runs (zombies count as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def end_process_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the group `pgid`, SIGKILL whatever is left after `grace_s`, wait until empty."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _group_members(pgid):
                return
            time.sleep(0.05)
    if members := _group_members(pgid):
        raise ShowdownServerError(f"processes {members} of group {pgid} survived SIGKILL")


class ShowdownServer:
    """One Showdown server process tree, bound to 127.0.0.1.

    Args:
        port: TCP port; a free one is chosen when None.
        logs_dir: the server's logs folder (battle logs, counter); a fresh temporary folder
            when None, removed by `stop` unless `keep_logs`.
        ready_timeout_s: how long `start` waits for the server to accept connections.
        keep_logs: keep a temporary logs folder after `stop`.
    """

    def __init__(
        self,
        port: int | None = None,
        logs_dir: str | os.PathLike | None = None,
        ready_timeout_s: float = 60.0,
        keep_logs: bool = False,
    ):
        self.port = port
        self._owns_logs = logs_dir is None
        self.logs_dir = Path(logs_dir) if logs_dir is not None else None
        self.ready_timeout_s = ready_timeout_s
        self.keep_logs = keep_logs
        self.process: subprocess.Popen | None = None
        self._console_log: Path | None = None

    @property
    def websocket_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/showdown/websocket"

    def server_configuration(self):
        """A poke-env ServerConfiguration for this server (the auth URL is unused without passwords)."""
        from poke_env.ps_client.server_configuration import ServerConfiguration

        return ServerConfiguration(
            self.websocket_url, "https://play.pokemonshowdown.com/action.php?"
        )

    def start(self) -> ShowdownServer:
        """Start the server and return once it accepts connections; raise with its output if not."""
        if self.process is not None:
            raise ShowdownServerError("this server is already started")
        pkg = require_installed()
        write_server_files(pkg)
        if self.logs_dir is None:
            self.logs_dir = Path(tempfile.mkdtemp(prefix="pokeagent-showdown-"))
        for sub in LOG_SUBDIRS:
            (self.logs_dir / sub).mkdir(parents=True, exist_ok=True)
        # Ports chosen by free_port() can be taken between the check and the bind: retry.
        attempts = 1 if self.port is not None else 3
        for attempt in range(attempts):
            port = self.port if attempts == 1 else free_port()
            try:
                self._launch(pkg, port)
                return self
            except ShowdownServerError:
                if attempt == attempts - 1:
                    raise
        return self

    def _launch(self, pkg: Path, port: int) -> None:
        # Showdown does not exit when its port is taken; it would only time out. Check first.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError as error:
                raise ShowdownServerError(
                    f"port {port} on {LOOPBACK} is not free ({error.strerror}): choose another "
                    "or leave the port out to get a free one"
                ) from error
        self._console_log = self.logs_dir / "server-console.log"
        env = dict(os.environ, POKEAGENT_SHOWDOWN_LOGSDIR=str(self.logs_dir.resolve()))
        cmd = [
            node_executable(),
            str(pkg / "pokemon-showdown"),
            "start",
            "--skip-build",
            "--no-security",
            str(port),
        ]
        with open(self._console_log, "ab") as console:
            process = subprocess.Popen(
                cmd,
                cwd=pkg,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() ends exactly this tree
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                end_process_group(process.pid)
                raise ShowdownServerError(
                    f"the Showdown server exited with code {process.returncode} before "
                    f"accepting connections on {LOOPBACK}:{port}. Its output "
                    f"({self._console_log}):\n{self._console_tail()}"
                )
            if _accepts_connections(port) and _serves_clients(port):
                self.process, self.port = process, port
                return
            time.sleep(0.1)
        end_process_group(process.pid)
        raise ShowdownServerError(
            f"the Showdown server did not accept connections on {LOOPBACK}:{port} within "
            f"{self.ready_timeout_s:.0f} s. Its output ({self._console_log}):\n"
            f"{self._console_tail()}"
        )

    def _console_tail(self, chars: int = 3000) -> str:
        try:
            return self._console_log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no output)"

    def record(self) -> ServerRecord:
        if self.process is None:
            raise ShowdownServerError("the server is not running")
        return ServerRecord(
            pid=self.process.pid,
            port=self.port,
            logs_dir=str(self.logs_dir),
            started_at=time.time(),
        )

    def stop(self) -> None:
        """End the server's whole process group and wait for it; idempotent."""
        if self.process is not None:
            end_process_group(self.process.pid)
            self.process.wait(timeout=5)
            self.process = None
        if self._owns_logs and not self.keep_logs and self.logs_dir is not None:
            import shutil

            shutil.rmtree(self.logs_dir, ignore_errors=True)

    def __enter__(self) -> ShowdownServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_detached(port: int | None = None, logs_dir: str | None = None) -> ServerRecord:
    """Start a server that outlives this process and record it for `stop_detached`."""
    logs = Path(logs_dir) if logs_dir else cache_dir() / "server-logs" / time.strftime("%Y%m%d")
    server = ShowdownServer(port=port, logs_dir=logs).start()
    record = server.record()
    records_dir().mkdir(parents=True, exist_ok=True)
    record.path().write_text(json.dumps(asdict(record), indent=2))
    # Forget the Popen object without ending the server: it is meant to outlive us.
    server.process = None
    return record


def running_servers() -> list[ServerRecord]:
    """Recorded detached servers whose main process is still alive; stale records are removed."""
    records = []
    folder = records_dir()
    if not folder.is_dir():
        return records
    for path in sorted(folder.glob("*.json")):
        try:
            record = ServerRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if process_alive(record.pid):
            records.append(record)
        else:
            path.unlink(missing_ok=True)
    return records


def stop_detached(port: int | None = None) -> list[ServerRecord]:
    """Stop the recorded server on `port`, or all recorded servers when None. Returns those stopped."""
    stopped = []
    for record in running_servers():
        if port is not None and record.port != port:
            continue
        end_process_group(record.pid)
        record.path().unlink(missing_ok=True)
        stopped.append(record)
    return stopped
