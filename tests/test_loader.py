"""The loader: disjoint shard assignment, exact resume across workers and ranks, corrupt shards skipped."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import run_pokeagent

from pokeagent.data.loader import LoaderConfig, TrajectoryLoader, worker_shards


def _take(loader, n):
    iterator = iter(loader)
    return [next(iterator) for _ in range(n)]


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_assignment_is_disjoint_and_complete(shards):
    paths = LoaderConfig(shards=shards).shard_paths
    assert len(paths) >= 6
    for epoch in range(3):
        taken = [worker_shards(paths, 0, epoch, g, 4) for g in range(4)]  # 2 ranks x 2 workers
        flat = [p for t in taken for p in t]
        assert sorted(flat) == sorted(paths) and len(set(flat)) == len(flat)
    assert worker_shards(paths, 0, 0, 0, 4) != worker_shards(paths, 0, 1, 0, 4) or len(paths) < 8
    # More workers than shards: nobody is left without data.
    assert all(worker_shards(paths[:2], 0, 0, g, 5) for g in range(5))


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_loader_yields_exactly_the_next_batches(shards, workers):
    for rank in (0, 1):
        cfg = dict(
            shards=shards, batch_size=4, window=16, workers=workers, shuffle_buffer=8, seed=3
        )
        uninterrupted = _take(TrajectoryLoader(LoaderConfig(**cfg), rank=rank, world_size=2), 12)
        first = TrajectoryLoader(LoaderConfig(**cfg), rank=rank, world_size=2)
        _take(first, 7)
        state = json.loads(json.dumps(first.state_dict()))  # it must survive a checkpoint file
        resumed = TrajectoryLoader(LoaderConfig(**cfg), rank=rank, world_size=2)
        resumed.load_state_dict(state)
        for expected, got in zip(uninterrupted[7:], _take(resumed, 5), strict=True):
            _same(expected, got)
        # Runs well past one epoch: the stream never runs dry.
        assert first.batches_served == 7


def test_batches_have_the_documented_shapes(shards):
    batch = _take(
        TrajectoryLoader(LoaderConfig(shards=shards, batch_size=3, window=200, workers=0)), 1
    )[0]
    assert batch["tokens"].shape[:3] == (3, 200, 12) and batch["tokens"].dtype == torch.int16
    assert batch["features"].dtype == torch.float16 and batch["legal"].dtype == torch.bool
    assert batch["legal"].shape == (3, 200, 14)
    # A window longer than the trajectory is padded: masked steps carry no label.
    assert not batch["mask"].all()
    assert (batch["action"][~batch["mask"]] == -1).all()
    assert batch["legal"][batch["mask"]].any(dim=-1).all()


def test_corrupt_shard_is_reported_and_skipped(shards, tmp_path, caplog):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    victim = sorted(copy.glob("train-*.tar"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    loader = TrajectoryLoader(
        LoaderConfig(shards=copy, batch_size=4, window=8, workers=0, shuffle_buffer=4)
    )
    batches = _take(loader, 40)
    assert len(batches) == 40
    assert str(victim) in loader.corrupt_shards
    assert any(victim.name in r.getMessage() for r in caplog.records)


def test_resume_refuses_another_layout(shards):
    loader = TrajectoryLoader(LoaderConfig(shards=shards, workers=0), rank=0, world_size=2)
    _take(loader, 1)
    other = TrajectoryLoader(LoaderConfig(shards=shards, workers=0), rank=0, world_size=1)
    with pytest.raises(ValueError, match="cannot resume"):
        other.load_state_dict(loader.state_dict())


def test_bench_load_prints_figures(shards):
    out = run_pokeagent(
        "bench", "load", "--shards", shards, "--workers", "0,1", "--batches", 5, timeout=300
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["0", "1"]
    assert all(float(r[3]) > 0 for r in rows)  # decisions/s


def test_read_time_filters(shards):
    kept = _take(
        TrajectoryLoader(
            LoaderConfig(shards=shards, batch_size=2, workers=0, formats=["gen9randombattle"])
        ),
        2,
    )
    assert len(kept) == 2
    # Nothing matches: a clear error instead of a loader that spins forever.
    with pytest.raises(RuntimeError, match="no sample"):
        _take(
            TrajectoryLoader(
                LoaderConfig(shards=shards, batch_size=2, workers=0, formats=["gen1ou"])
            ),
            1,
        )
    # Simulator battles carry no rating: a rating floor filters every one of them.
    with pytest.raises(RuntimeError, match="no sample"):
        _take(
            TrajectoryLoader(LoaderConfig(shards=shards, batch_size=2, workers=0, min_rating=1000)),
            1,
        )


# ------------------------------------------------------------------------------ mixtures
def _second_folder(shards, tmp_path, count=3):
    """A second shard folder: `count` of the session's train shards, copied."""
    folder = tmp_path / "second"
    folder.mkdir(parents=True)
    for path in sorted(shards.glob("train-*.tar"))[:count]:
        shutil.copy(path, folder / path.name)
    return folder


def test_mixture_specs(shards, tmp_path):
    from pokeagent.data.loader import first_folder, mixture_spec, parse_mixture

    other = _second_folder(shards, tmp_path)
    assert parse_mixture(str(shards)) is None  # a folder, whatever its name
    assert parse_mixture("no/such/folder") is None
    spec = mixture_spec([(shards, 2), (other, 0.5)])
    assert parse_mixture(spec) == [(str(shards), 2.0), (str(other), 0.5)]
    assert first_folder(spec) == str(shards) and first_folder(str(other)) == str(other)
    cfg = LoaderConfig(shards=spec)
    assert cfg.mixed and cfg.weights == [2.0, 0.5]
    assert [len(paths) for paths in cfg.sources] == [len(list(shards.glob("train-*.tar"))), 3]
    for bad, why in (
        (f"{shards}=1,{other}", "DIR=WEIGHT"),
        (f"{shards}=1,{other}=-1", ">= 0"),
        (f"{shards}=0,{other}=0", "every weight is 0"),
        (f"{shards}=1,{shards}=2", "twice"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_mixture(bad)
    with pytest.raises(FileNotFoundError, match="a folder of the mixture"):
        LoaderConfig(shards=f"{shards}=1,{tmp_path / 'empty'}=1")


def test_mixture_draws_sources_by_weight(shards, tmp_path):
    from pokeagent.data.loader import _WorkerStream, mixture_spec

    spec = mixture_spec([(shards, 3), (_second_folder(shards, tmp_path), 1)])
    cfg = LoaderConfig(shards=spec, batch_size=4, window=8, workers=0, shuffle_buffer=8)
    stream = _WorkerStream(cfg, 0, 1, None)
    draws = [stream._source() for _ in range(4000)]
    assert abs(draws.count(0) / len(draws) - 0.75) < 0.03
    # Weight 0: the folder keeps its place but is never drawn.
    spec = mixture_spec([(shards, 0), (_second_folder(shards, tmp_path / "z"), 1)])
    stream = _WorkerStream(LoaderConfig(shards=spec, workers=0), 0, 1, None)
    assert {stream._source() for _ in range(1000)} == {1}
    # Both folders are read, each with its own cursor, whatever their sizes.
    loader = TrajectoryLoader(cfg)
    _take(loader, 30)
    cursor = loader.state_dict()["cursors"]["0"]
    assert cursor["folders"] == cfg.folders
    assert all(position != [0, 0, 0] for position in cursor["positions"])
    assert {entry[0] for entry in cursor["buffer"]} == {0, 1}


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_mixture_yields_exactly_the_next_batches(shards, tmp_path, workers):
    from pokeagent.data.loader import mixture_spec

    spec = mixture_spec([(shards, 1), (_second_folder(shards, tmp_path), 1)])
    for rank in (0, 1):
        cfg = dict(shards=spec, batch_size=4, window=16, workers=workers, shuffle_buffer=8, seed=3)
        uninterrupted = _take(TrajectoryLoader(LoaderConfig(**cfg), rank=rank, world_size=2), 12)
        first = TrajectoryLoader(LoaderConfig(**cfg), rank=rank, world_size=2)
        _take(first, 7)
        state = json.loads(json.dumps(first.state_dict()))
        resumed = TrajectoryLoader(LoaderConfig(**cfg), rank=rank, world_size=2)
        resumed.load_state_dict(state)
        for expected, got in zip(uninterrupted[7:], _take(resumed, 5), strict=True):
            _same(expected, got)


def test_a_mixture_grows_on_resume(shards, tmp_path):
    """A single folder's state continues as the first source of a mixture, and a mixture's as a
    mixture with one more folder: the old cursors and buffers carry over, the new folder starts
    at its beginning (what `pokeagent improve` does each round)."""
    from pokeagent.data.loader import _WorkerStream, mixture_spec

    second = _second_folder(shards, tmp_path)
    third = _second_folder(shards, tmp_path / "x", count=2)
    options = dict(batch_size=4, window=8, workers=0, shuffle_buffer=6, seed=1)
    single = TrajectoryLoader(LoaderConfig(shards=shards, **options))
    _take(single, 5)
    flat = single.state_dict()
    two = TrajectoryLoader(LoaderConfig(shards=mixture_spec([(shards, 1), (second, 1)]), **options))
    two.load_state_dict(flat)
    stream = _WorkerStream(two.cfg, 0, 1, flat["cursors"]["0"])
    old = flat["cursors"]["0"]
    assert stream.positions == [[old["epoch"], old["shard_pos"], old["sample_pos"]], [0, 0, 0]]
    assert [list(identity[1:]) for identity, _ in stream.buffer] == old["buffer"]
    _take(two, 5)
    mixed = two.state_dict()
    three = LoaderConfig(shards=mixture_spec([(shards, 1), (second, 1), (third, 2)]), **options)
    grown = _WorkerStream(three, 0, 1, mixed["cursors"]["0"])
    saved = mixed["cursors"]["0"]
    assert grown.positions == saved["positions"] + [[0, 0, 0]]
    assert [list(identity) for identity, _ in grown.buffer] == saved["buffer"]
    assert len(grown.buffer) == 5  # refilled to 6, one popped since
    # A mixture's state does not silently resume a single folder.
    with pytest.raises(ValueError, match="mixture"):
        _WorkerStream(LoaderConfig(shards=shards, **options), 0, 1, saved)
