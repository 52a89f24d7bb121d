"""`pokeagent improve`: the pool, the chunks and the mixture of a round; and a tiny loop killed
during generation and during training, then resumed: no battle duplicated or lost, and the
training steps contiguous with the redone ones bit-identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import tiny_loop, train_env

from pokeagent.loop.improve import Improve, ImproveConfig, mixture, start_checkpoint
from pokeagent.loop.pool import PoolEntry, parse_pool, plan_chunks, resolve_pool


def test_pool_specs_and_their_resolution():
    entries = parse_pool("heuristic=2, maxpower, past:2=1, self@1.5=1, agent:runs/x@0.5=0.5")
    assert entries == [
        PoolEntry("heuristic", 2.0),
        PoolEntry("maxpower", 1.0),
        PoolEntry("past", 1.0, None, 2),
        PoolEntry("self", 1.0, 1.5),
        PoolEntry("agent", 0.5, 0.5, path="runs/x"),
    ]
    for bad in ("alphago=1", "past:0=1", "past:x", "self@hot", "heuristic=0", "", "random@1"):
        with pytest.raises(ValueError, match="--pool"):
            parse_pool(bad)
    current, past = Path("r2"), [Path("r0"), Path("r1")]
    pool = resolve_pool(parse_pool("heuristic=2,past:1=1,past:3@0=2,self=1"), current, [], 1.0)
    # No past agents yet: past:K is left out; self plays at the loop's temperature.
    assert pool == [("heuristic", 2.0), ("agent:r2@1", 1.0)]
    pool = dict(
        resolve_pool(parse_pool("heuristic=2,past:1=1,past:3@0=2,self=1"), current, past, 1)
    )
    assert pool == {
        "heuristic": 2.0,
        "agent:r1@1": 1.0,  # the most recent one
        "agent:r0@0": 1.0,  # past:3 has only two: the weight shared
        "agent:r1@0": 1.0,
        "agent:r2@1": 1.0,
    }
    # The same spec named twice plays with the sum of the weights.
    assert resolve_pool(parse_pool("self@1=1,self@1=2"), current, past, 1.0) == [
        ("agent:r2@1", 3.0)
    ]


def test_a_round_is_cut_into_seeded_chunks_by_weight():
    pool = [("heuristic", 2.0), ("maxpower", 1.0), ("agent:r0@1.5", 1.0)]
    chunks = plan_chunks(pool, battles=250, chunk=60, seed=3, round_index=2)
    per_opponent = {}
    for chunk in chunks:
        per_opponent[chunk["opponent"]] = per_opponent.get(chunk["opponent"], 0) + chunk["battles"]
        assert 1 <= chunk["battles"] <= 60
    assert per_opponent == {"heuristic": 125, "maxpower": 63, "agent:r0@1.5": 62}
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert len({c["seed"] for c in chunks}) == len(chunks)
    assert chunks == plan_chunks(pool, 250, 60, 3, 2)  # a pure function of its arguments
    assert [c["seed"] for c in plan_chunks(pool, 250, 60, 3, 3)] != [c["seed"] for c in chunks]


def test_the_mixture_keeps_the_replays_first_and_shares_the_rounds(tmp_path):
    cfg = ImproveConfig(shards=str(tmp_path / "replays"), replay_weight=2.0, rounds_weight=1.0)
    rounds = [(tmp_path / "r1", 300), (tmp_path / "r2", 0), (tmp_path / "r3", 100)]
    assert mixture(cfg, rounds) == [
        (str(tmp_path / "replays"), 2.0),
        (str(tmp_path / "r1"), 0.75),  # shared by trajectories; an empty round is left out
        (str(tmp_path / "r3"), 0.25),
    ]
    # Own games only: the replays stay first (weight 0), where a loader state from them goes on.
    own = ImproveConfig(shards=str(tmp_path / "replays"), replay_weight=0.0)
    assert mixture(own, rounds)[0] == (str(tmp_path / "replays"), 0.0)


def test_options_are_checked_and_a_rerun_keeps_the_loop_it_continues(tmp_path):
    for bad in (
        {"battles": 0},
        {"replay_weight": 0.0, "rounds_weight": 0.0},
        {"pool": "alphago"},
        {"start_steps": 0},
    ):
        with pytest.raises(ValueError):
            ImproveConfig(**bad)
    Improve(ImproveConfig(out=str(tmp_path), shards="a")).check_config()
    Improve(ImproveConfig(out=str(tmp_path), shards="a", rounds=9, eval_games=5)).check_config()
    with pytest.raises(ValueError, match="other shards"):
        Improve(ImproveConfig(out=str(tmp_path), shards="b")).check_config()
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not bare weights"):
        start_checkpoint(str(weights))


# ------------------------------------------------------------------------------ killed and resumed
def _options(shards: Path, out: Path, rounds: int) -> dict:
    # a checkpoint every step: the kill lands between two
    return tiny_loop(shards, out, rounds=rounds, steps=6, checkpoint_minutes=0.0)


def _command(options: dict) -> list[str]:
    command = [sys.executable, "-m", "pokeagent", "improve"]
    for key, value in options.items():
        command.append(f"--{key.replace('_', '-')}={value}")
    return command


class Killed(Exception):
    """Stands for a kill in the middle of a chunk."""


def _replays(chunk: Path) -> list[str]:
    return (chunk / "replays.jsonl").read_text().splitlines()


def _latest(out: Path) -> int:
    pointer = out / "train" / "checkpoints" / "latest"
    return int(pointer.read_text().removeprefix("step")) if pointer.is_file() else 0


@pytest.mark.slow
def test_a_killed_loop_resumes_without_duplicates_or_gaps(shards, tmp_path, monkeypatch):
    from pokeagent.data import generate as generate_module
    from pokeagent.loop.improve import run_improve

    out = tmp_path / "loop"
    for key, value in train_env().items():
        monkeypatch.setenv(key, value)

    # 1. Killed during round 1's generation: chunk 0 complete, chunk 1's battles played but
    # its replays not yet written (the simulator re-run that writes them is where it stops).
    real = generate_module.simtool.replay_input_logs
    calls = []

    def dies_on_the_second(*args, **kwargs):  # round 0 has no battles: round 1's chunks 0 and 1
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_module.simtool, "replay_input_logs", dies_on_the_second)
    with pytest.raises(Killed):
        run_improve(ImproveConfig(**_options(shards, out, rounds=1)), progress=False)
    monkeypatch.setattr(generate_module.simtool, "replay_input_logs", real)
    battles = out / "rounds" / "round-001" / "battles"
    assert sorted(p.name for p in battles.iterdir()) == ["chunk-000", "chunk-001.partial"]
    first_chunk = _replays(battles / "chunk-000")
    assert len(first_chunk) == 2

    # 2. Killed during round 1's training (SIGKILL to the loop and its trainer), two rounds asked.
    options = _options(shards, out, rounds=2)
    loop = subprocess.Popen(
        _command(options),
        env=dict(os.environ),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    plan = out / "rounds" / "round-001" / "plan.json"
    deadline = time.monotonic() + 600
    try:
        while not (plan.is_file() and 3 < _latest(out) < 7):  # round 1 trains steps 4..9
            assert loop.poll() is None, "the loop ended before round 1's training was killed"
            assert time.monotonic() < deadline, "round 1's training never started"
            time.sleep(0.05)
    finally:
        os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()
    killed_at = _latest(out)

    # 3. The rerun finishes both rounds.
    report = run_improve(ImproveConfig(**options), progress=False)

    assert [row["round"] for row in report["rounds"]] == [0, 1, 2]
    assert _replays(battles / "chunk-000") == first_chunk  # a complete chunk is never replayed
    ids = []
    for index in (1, 2):
        folder = out / "rounds" / f"round-{index:03d}"
        chunks = sorted(p.name for p in (folder / "battles").iterdir())
        assert chunks == ["chunk-000", "chunk-001"]
        lines = [line for chunk in chunks for line in _replays(folder / "battles" / chunk)]
        assert len(lines) == 4  # the round's battles, none lost
        ids += [json.loads(line)["id"] for line in lines]
        packed = json.loads((folder / "shards" / "manifest.json").read_text())["summary"]
        # Every replay read once: packed, or skipped with a reason (Zoroark's illusion...).
        assert packed["replays_read"] == 4
        assert packed["battles_packed"] + sum(packed["skipped"].values()) == 4
        assert json.loads((folder / "agent" / "agent.json").read_text())["step"] == 3 + 6 * index
    assert len(set(ids)) == len(ids) == 8  # no battle twice
    assert len(json.loads((out / "rounds" / "round-002" / "mixture.json").read_text())) == 3

    rows = [
        json.loads(line)
        for line in (out / "train" / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line) and not json.loads(line).get("val")
    ]
    losses: dict[int, float] = {}
    for row in rows:
        # A step done again after the kill (resumed from its last checkpoint) is bit-identical.
        assert losses.setdefault(row["step"], row["loss"]) == row["loss"], row["step"]
    assert sorted(losses) == list(range(1, 16))  # contiguous: 3 + 2 rounds of 6
    assert 3 < killed_at < 9
    assert report["best"]["round"] in (0, 1, 2)
    assert (out / "best" / "model.safetensors").is_file()
    assert (out / "improve.png").is_file()
    assert "| 2" in (out / "improve.md").read_text()

    # 4. Another loop on from this one's run: its checkpoint is copied (the run left as it was),
    # and a run trained on other shards is refused before anything plays.
    again = ImproveConfig(
        out=str(tmp_path / "again"),
        shards=str(shards),
        start=str(out / "train"),
        rounds=0,
        eval_games=1,
        concurrency=2,
    )
    assert run_improve(again, progress=False)["rounds"][0]["step"] == 15
    assert (tmp_path / "again" / "train" / "checkpoints" / "step00000015").is_dir()
    assert (out / "train" / "checkpoints" / "step00000015").is_dir()
    with pytest.raises(ValueError, match="trained on"):
        run_improve(
            ImproveConfig(
                out=str(tmp_path / "other"), shards=str(battles), start=str(out / "train")
            )
        )
