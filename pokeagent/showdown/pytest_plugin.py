"""pytest fixtures for a real local Showdown server.

Enable with `pytest_plugins = ["pokeagent.showdown.pytest_plugin"]` in a conftest.py. Tests that
use `showdown_server` are skipped, with the reason, when node is missing; everything else about
the server is real (the pinned package, installed on first use).
"""

from __future__ import annotations

import shutil

import pytest

from pokeagent.showdown.install import install
from pokeagent.showdown.server import ShowdownServer


@pytest.fixture(scope="session")
def showdown_package():
    """The installed pokemon-showdown package folder (installs it on first use)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not on PATH: the Showdown simulator cannot run")
    return install()


@pytest.fixture(scope="session")
def showdown_server(showdown_package, tmp_path_factory):
    """One server on 127.0.0.1 shared by the session; stopped (every process) at the end."""
    with ShowdownServer(logs_dir=tmp_path_factory.mktemp("showdown-logs")) as server:
        yield server
