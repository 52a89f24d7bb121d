"""Shared fixtures: the real Showdown server (pokeagent.showdown.pytest_plugin) and the replay fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pokeagent.showdown.pytest_plugin"]

SHARED_REPLAYS = Path(__file__).resolve().parents[2] / "shared" / "replays"


@pytest.fixture(scope="session")
def shared_replays() -> Path:
    """../shared/replays: real human replays and server logs (read-only)."""
    if not SHARED_REPLAYS.is_dir():
        pytest.skip(f"{SHARED_REPLAYS} is not here")
    return SHARED_REPLAYS
