"""`pokeagent pack`: shards hold exactly what parse+encode give in memory; interruption loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import write_simulated_replays

from pokeagent.data.encode import encode
from pokeagent.data.pack import PackConfig, pack, split_of
from pokeagent.data.parse import SkipBattle, parse_replay
from pokeagent.data.shards import read_shard, sample_key, trajectory_arrays
from pokeagent.data.sources import iter_replays


@pytest.fixture(scope="module")
def replay_file(showdown_package, tmp_path_factory):
    """Served-format JSONL of simulator battles (what `pokeagent generate` writes)."""
    path = tmp_path_factory.mktemp("replays") / "replays.jsonl"
    write_simulated_replays(showdown_package, path, 60, 11, move_prob=0.8, tera_prob=0.2)
    with open(path, "a") as out:
        out.write("{not json\n")  # a bad line is skipped and counted, never fatal
    return path


def _all_samples(folder):
    samples = {}
    for shard in sorted(folder.glob("*.tar")):
        for sample in read_shard(shard):
            assert sample["key"] not in samples, f"duplicate {sample['key']}"
            samples[sample["key"]] = (shard.name.split("-")[0], sample)
    return samples


def test_round_trip_equals_in_memory_parse(replay_file, tmp_path):
    summary = pack(
        PackConfig(
            sources=[str(replay_file)],
            out=tmp_path / "s",
            workers=2,
            shard_size=60_000,
            val_fraction=0.2,
        ),
        progress=False,
    )
    samples = _all_samples(tmp_path / "s")
    expected = {}
    for replay in iter_replays([replay_file]):
        try:
            trajectories = parse_replay(replay, encoder=encode)
        except SkipBattle:
            continue
        for trajectory in trajectories:
            expected[sample_key(trajectory)] = (
                split_of(replay.id, 0.2),
                trajectory_arrays(trajectory),
            )
    assert set(samples) == set(expected) and len(samples) >= 100
    for key, (split, arrays) in expected.items():
        got_split, got = samples[key]
        assert got_split == split
        for name, array in arrays.items():
            assert got[name].dtype == array.dtype and np.array_equal(got[name], array), (key, name)
        assert got["format"] == "gen9randombattle"
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["summary"]["skipped"].get("source: bad json") == 1
    assert sum(s["samples"] for split in manifest["shards"].values() for s in split) == len(samples)
    assert manifest["encoder_schema"]["tokens"] == [12, 8]
    assert summary.shards["train"] > 1 and summary.trajectories["val"] > 0
    assert not list((tmp_path / "s").glob("*.tmp"))


def test_killed_pack_resumes_without_duplicates_or_gaps(replay_file, tmp_path):
    reference = tmp_path / "reference"
    pack(
        PackConfig(
            sources=[str(replay_file)],
            out=reference,
            workers=1,
            shard_size=30_000,
            val_fraction=0.2,
            chunk=2,
        ),
        progress=False,
    )
    out = tmp_path / "interrupted"
    command = [
        sys.executable,
        "-m",
        "pokeagent",
        "pack",
        str(replay_file),
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    command += ["--shard-size", "30000", "--val-fraction", "0.2", "--chunk", "1", "--no-progress"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("train-*.tar"))) < 2:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    state = json.loads((out / "pack-state.json").read_text())
    assert not state.get("complete"), "the pack finished before it could be interrupted"
    finished_before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed at replay" in rerun.stdout
    for name, data in finished_before.items():
        assert (out / name).read_bytes() == data, f"{name} was rewritten"
    produced = sorted(p.name for p in out.glob("*.tar"))
    assert produced == sorted(p.name for p in reference.glob("*.tar"))
    for name in produced:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert set(_all_samples(out)) == set(_all_samples(reference))


def test_changed_input_is_not_resumed(replay_file, tmp_path):
    source = tmp_path / "replays.jsonl"
    source.write_text(replay_file.read_text())
    cfg = dict(sources=[str(source)], out=tmp_path / "s", workers=1, shard_size=60_000)
    pack(PackConfig(**cfg), progress=False)
    with open(source, "a") as more:
        more.write(replay_file.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="other settings"):
        pack(PackConfig(**cfg), progress=False)


def test_battles_in_two_sources_are_packed_once_and_a_killed_pack_resumes(
    replay_file, tmp_path, monkeypatch
):
    lines = replay_file.read_text().splitlines(keepends=True)
    first = tmp_path / "a" / "replays.jsonl"  # 40 battles, all of them also in `second`
    second = tmp_path / "b" / "replays.jsonl"  # 20 new battles, then the 40 (and the bad line)
    for path, text in ((first, lines[:40]), (second, lines[40:] + lines[:40])):
        path.parent.mkdir()
        path.write_text("".join(text))
    settings = dict(workers=2, shard_size=20_000, val_fraction=0.2, chunk=2)
    alone = pack(PackConfig(sources=[str(second)], out=tmp_path / "alone", **settings), False)
    reference = tmp_path / "reference"
    both = pack(PackConfig(sources=[str(first), str(second)], out=reference, **settings), False)
    assert both.skipped["duplicate battle"] == 40
    assert both.battles_packed == alone.battles_packed and both.replays_read == 100
    samples, single = _all_samples(reference), _all_samples(tmp_path / "alone")
    assert set(samples) == set(single)  # each battle once, in the split of its id
    assert {k: split for k, (split, _) in samples.items()} == {
        k: split for k, (split, _) in single.items()
    }
    assert not (reference / "seen-ids.sqlite").exists()

    # Killed while packing the second source's new battles: the rerun must still know the
    # first source's ids (it rebuilds them while reading up to the saved position), since its
    # copies of them come after that position.
    import pokeagent.data.pack as packmod

    write = packmod._SplitWriter.write

    def dies_late(self, sample, position, decisions):
        if position >= 55:
            raise KeyboardInterrupt
        write(self, sample, position, decisions)

    out = tmp_path / "interrupted"
    cfg = PackConfig(sources=[str(first), str(second)], out=out, **settings)
    monkeypatch.setattr(packmod._SplitWriter, "write", dies_late)
    with pytest.raises(KeyboardInterrupt):
        pack(cfg, False)
    monkeypatch.setattr(packmod._SplitWriter, "write", write)
    resumed = pack(cfg, False)
    assert 40 < resumed.resumed_from <= 55
    assert resumed.skipped == both.skipped
    produced = sorted(p.name for p in out.glob("*.tar"))
    assert produced == sorted(p.name for p in reference.glob("*.tar"))
    for name in produced:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
