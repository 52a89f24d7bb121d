"""The local Showdown server: binds loopback only, is ready when started, leaves nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psutil
import pytest

from pokeagent.showdown.server import (
    ShowdownServer,
    ShowdownServerError,
    _group_members,
    running_servers,
)


def _listening_addresses(port: int) -> set[str]:
    return {
        conn.laddr.ip
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    }


def test_server_binds_loopback_and_stops_every_process(showdown_package, tmp_path):
    server = ShowdownServer(logs_dir=tmp_path / "logs")
    with server:
        pid = server.process.pid
        assert _listening_addresses(server.port) == {"127.0.0.1"}
        # The server forks workers into its own process group; all of them must end with it.
        members = _group_members(pid)
        assert pid in members and len(members) > 1
        # Ready means a client gets a challenge string, not just an open TCP port.
        from websockets.sync.client import connect

        with connect(server.websocket_url, open_timeout=5) as ws:
            messages = [ws.recv(timeout=5) for _ in range(2)]
        assert any("|challstr|" in m for m in messages)
    assert _group_members(pid) == []
    assert _listening_addresses(server.port) == set()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_start_fails_clearly_when_port_is_taken(showdown_package, tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = ShowdownServer(port=port, logs_dir=tmp_path / "logs", ready_timeout_s=20)
        with pytest.raises(ShowdownServerError, match=str(port)):
            server.start()
        assert server.process is None


@pytest.mark.slow
def test_cli_start_status_stop(showdown_package, tmp_path):
    env = dict(os.environ)
    run = [sys.executable, "-m", "pokeagent", "showdown"]
    out = subprocess.run(
        [*run, "start", "--logs-dir", str(tmp_path / "logs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    [record] = [r for r in running_servers() if r.logs_dir == str(tmp_path / "logs")]
    try:
        assert _listening_addresses(record.port) == {"127.0.0.1"}
        status = subprocess.run(
            [*run, "status"], env=env, capture_output=True, text=True, timeout=60
        )
        assert f"port {record.port}" in status.stdout
    finally:
        stop = subprocess.run(
            [*run, "stop", "--port", str(record.port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert stop.returncode == 0, stop.stderr
    assert _group_members(record.pid) == []
    assert record.port not in {r.port for r in running_servers()}
