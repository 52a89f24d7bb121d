"""Shared fixtures: the real Showdown server (pokeagent.showdown.pytest_plugin), the replay
fixtures and one set of simulated shards for the session; the `gpu` marker's skip. Helpers that
tests call are in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import simulated_shards

pytest_plugins = ["pokeagent.showdown.pytest_plugin"]

SHARED_REPLAYS = Path(__file__).resolve().parents[2] / "shared" / "replays"


def pytest_configure(config):
    """One torch thread in the test process (OMP_NUM_THREADS, where set, wins): the tests' models
    are tiny, and on a shared 2-core machine two spinning threads made a 40-step test 5x slower."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests are skipped, with the reason, where torch sees no CUDA device."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="gpu: torch sees no CUDA device")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_replays() -> Path:
    """../shared/replays: real human replays and server logs (read-only)."""
    if not SHARED_REPLAYS.is_dir():
        pytest.skip(f"{SHARED_REPLAYS} is not here")
    return SHARED_REPLAYS


@pytest.fixture(scope="session")
def shards(showdown_package, tmp_path_factory) -> Path:
    """Shards of 24 simulated gen9randombattle battles, about one battle (two trajectories) a
    shard: 14 train shards, 7 val shards. Shared by the session, so read-only: a test that damages
    or adds shards works on its own copy (shutil.copytree)."""
    return simulated_shards(
        showdown_package,
        tmp_path_factory.mktemp("shards"),
        24,
        41,
        players={"move_prob": 0.8, "tera_prob": 0.2},
        workers=1,
        shard_size=100_000,
        val_fraction=0.25,
    )
