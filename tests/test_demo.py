"""The README's main command, small: every stage runs and leaves its outputs."""

from __future__ import annotations

import json
import os

import pytest
from helpers import run_pokeagent


@pytest.mark.slow
def test_demo_runs_every_stage(showdown_package, tmp_path):
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    env.pop("RANK", None)
    out = run_pokeagent(
        "demo", "--out", tmp_path / "demo", "--battles", 8, "--train-steps", 4, "--eval-battles", 2,
        env=env, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    for stage in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6", "=== report ==="):
        assert stage in out.stdout
    assert "0 wrong labels" in out.stdout
    demo = tmp_path / "demo"
    assert len((demo / "battles-heuristic" / "replays.jsonl").read_text().splitlines()) == 8
    summary = json.loads((demo / "shards" / "manifest.json").read_text())["summary"]
    # Random teams: about 1 battle in 40 has a Zoroark, skipped as "illusion" (by design); any
    # other skip is a parser failure.
    assert set(summary["skipped"]) <= {"illusion"}, summary["skipped"]
    assert summary["battles_packed"] + summary["skipped"].get("illusion", 0) == 8
    assert summary["battles_packed"] >= 6
    steps = [
        json.loads(line)["step"]
        for line in (demo / "train" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4]
    assert (demo / "train" / "checkpoints" / "step00000004" / "model.safetensors").exists()
    battles = json.loads((demo / "eval" / "battles.json").read_text())
    assert battles["step"] == 4
    for kind in ("random", "maxpower", "heuristic"):
        result = battles["opponents"][kind]
        assert result["games"] + result["errors"] == 2 and result["agent_errors"] == 0
    assert "bar vs random: 90%" in out.stdout and "bar vs maxpower: 50%" in out.stdout
