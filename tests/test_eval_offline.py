"""`pokeagent eval offline`: its metrics agree with compute_loss on the same decisions, the
calibration table covers every decision, the breakdowns split them right, the CLI writes its files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pokeagent.data.encode import schema
from pokeagent.data.heldout import read_trajectories, shard_paths
from pokeagent.data.loader import collate, cut_window
from pokeagent.eval.offline import OfflineEvalConfig, run_offline_eval
from pokeagent.model.config import preset
from pokeagent.model.loss import compute_loss
from pokeagent.model.metrics import evaluate
from pokeagent.model.network import PokeAgentNet
from pokeagent.showdown.actions import KIND_NAMES

WINDOW = 16
STEP = 7


@pytest.fixture(scope="module")
def data(shards, tmp_path_factory):
    """The session's val shards and a tiny (untrained, seeded) checkpoint in a run dir."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("offline")
    torch.manual_seed(3)
    net = PokeAgentNet(preset("tiny", max_window=32), schema()["vocab"])
    tag = f"step{STEP:08d}"
    ckpt = root / "run" / "checkpoints" / tag
    ckpt.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(ckpt / "model.safetensors"),
        metadata={
            "model": "tiny",
            "model_config": json.dumps(net.cfg.to_dict()),
            "step": str(STEP),
        },
    )
    (root / "run" / "checkpoints" / "latest").write_text(tag)
    (root / "run" / "config.json").write_text(json.dumps({"train": {"window": WINDOW}}))
    return shards, root / "run", net.eval()


def _direct(net, samples, keep=None) -> dict[str, float]:
    """The same figures from compute_loss, one chunk at a time; `keep(batch)` narrows the mask."""
    sums = dict.fromkeys(("policy", "value", "top1", "top3", "labelled", "decisions", "brier"), 0.0)
    with torch.no_grad():
        for sample in samples:
            for start in range(0, len(sample["action"]), WINDOW):
                batch = collate([cut_window(sample, start, WINDOW)], [sample["info"]])
                if keep is not None:
                    batch["mask"] = batch["mask"] & keep(batch)
                logits, value = net(batch)
                _, parts = compute_loss(logits, value, batch)
                sums["policy"] += float(parts["policy_loss"]) * int(parts["labelled"])
                sums["value"] += float(parts["value_loss"]) * int(parts["decisions"])
                sums["brier"] += float(parts["value_brier_sum"])
                for key in ("top1", "top3"):
                    sums[key] += int(parts[f"{key}_correct"])
                sums["labelled"] += int(parts["labelled"])
                sums["decisions"] += int(parts["decisions"])
    return sums


def _assert_agrees(figures: dict, direct: dict) -> None:
    assert figures["labelled"] == direct["labelled"] and figures["decisions"] == direct["decisions"]
    assert figures["top1"] == pytest.approx(direct["top1"] / direct["labelled"], abs=1e-12)
    assert figures["top3"] == pytest.approx(direct["top3"] / direct["labelled"], abs=1e-12)
    assert figures["policy_loss"] == pytest.approx(direct["policy"] / direct["labelled"], rel=1e-5)
    assert figures["value_log_loss"] == pytest.approx(
        direct["value"] / direct["decisions"], rel=1e-5
    )
    assert figures["value_brier"] == pytest.approx(direct["brier"] / direct["decisions"], rel=1e-5)


def test_metrics_agree_with_compute_loss(data, tmp_path):
    shards, run, net = data
    samples = list(read_trajectories(shard_paths(shards)))
    assert len(samples) >= 6 and any(len(s["action"]) > WINDOW for s in samples)
    metrics = run_offline_eval(
        OfflineEvalConfig(
            checkpoint=str(run), shards=[str(shards)], out=str(tmp_path), batch_size=5
        )
    )
    assert metrics["window"] == WINDOW  # the run's training window, from config.json
    assert metrics["trajectories"] == len(samples)
    overall = metrics["overall"]
    assert overall["decisions"] == sum(len(s["action"]) for s in samples)
    _assert_agrees(overall, _direct(net, samples))
    assert overall["loss"] == pytest.approx(
        overall["policy_loss"] + 0.5 * overall["value_log_loss"]
    )

    # Breakdowns: each group agrees with compute_loss on that group's decisions alone.
    # Random battles have no team preview.
    assert list(metrics["by_kind"]) == ["turn", "forced_switch"]
    for index, name in enumerate(KIND_NAMES):
        if name in metrics["by_kind"]:
            _assert_agrees(
                metrics["by_kind"][name], _direct(net, samples, lambda b, i=index: b["kind"] == i)
            )
    _assert_agrees(
        metrics["by_turn"]["6-10"],
        _direct(net, samples, lambda b: (b["turn"] >= 6) & (b["turn"] <= 10)),
    )
    for group in ("by_kind", "by_turn", "by_rating"):
        assert sum(f["decisions"] for f in metrics[group].values()) == overall["decisions"]
    assert list(metrics["by_rating"]) == ["unrated"]  # simulator battles carry no rating

    # Calibration: 10 bins covering every decision, each mean inside its bin.
    bins = metrics["calibration"]
    assert len(bins) == 10 and sum(b["count"] for b in bins) == overall["decisions"]
    for i, b in enumerate(bins):
        if b["count"]:
            assert i / 10 <= b["mean_predicted"] <= (i + 1) / 10
            assert 0 <= b["observed_win_rate"] <= 1

    # Batching does not change the figures.
    again = evaluate(net, samples, WINDOW, batch_size=1)
    assert again["overall"]["top1"] == overall["top1"]
    assert again["overall"]["policy_loss"] == pytest.approx(overall["policy_loss"], rel=1e-6)


def test_max_samples_spread_over_the_shards(data, tmp_path):
    import shutil

    shards, _, _ = data
    paths = shard_paths(shards)
    everything = [s["key"] for s in read_trajectories(paths)]
    assert len(paths) >= 3 and len(everything) >= 7
    picked = [s["key"] for s in read_trajectories(paths, max_samples=3)]
    total = len(everything)
    assert picked == [everything[i * total // 3] for i in range(3)]
    assert picked[-1] not in everything[:3]  # not simply the first three
    # Tar files without their manifest: the first N.
    copies = [shutil.copy(path, tmp_path) for path in paths]
    assert [s["key"] for s in read_trajectories(copies, max_samples=3)] == everything[:3]


def test_rating_bands_split_by_own_rating(data):
    shards, _, net = data
    samples = list(read_trajectories(shard_paths(shards), max_samples=4))
    ratings = [1100, 1500, -1, 1850]
    for sample, rating in zip(samples, ratings, strict=True):
        sample["info"] = np.array(sample["info"])  # the read array is read-only
        sample["info"][1] = rating
    metrics = evaluate(net, samples, WINDOW, batch_size=3)
    lengths = [len(s["action"]) for s in samples]
    assert {k: v["decisions"] for k, v in metrics["by_rating"].items()} == {
        "<1200": lengths[0],
        "1400-1599": lengths[1],
        "unrated": lengths[2],
        "1800+": lengths[3],
    }


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """`pokeagent eval offline ...` in this process (the CLI is a thin layer: no need to pay
    another interpreter start); returns (exit code, stdout, stderr)."""
    from pokeagent.cli import main

    code = main(["eval", "offline", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_json_markdown_and_tensorboard(data, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    shards, run, _ = data
    code, stdout, stderr = _cli(
        capsys, "--checkpoint", str(run), "--shards", str(shards), "--max-samples", "3"
    )
    assert code == 0, stderr[-3000:]
    folder = run / "eval" / f"offline-step{STEP}"
    metrics = json.loads((folder / "offline.json").read_text())
    assert metrics["trajectories"] == 3 and metrics["step"] == STEP
    report = (folder / "offline.md").read_text()
    assert "| **overall** |" in report and "Value calibration" in report
    assert f"top-1 {metrics['overall']['top1']:.4f}" in stdout
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    top1 = events.Scalars("offline/top1")  # the run's tb/, also written by the first test
    assert {e.step for e in top1} == {STEP}
    assert top1[-1].value == pytest.approx(metrics["overall"]["top1"], abs=1e-6)

    code, _, stderr = _cli(
        capsys, "--checkpoint", str(run), "--shards", str(shards), "--split", "x"
    )
    assert code == 2 and "no x-*.tar in" in stderr
    code, _, stderr = _cli(
        capsys, "--checkpoint", str(run), "--shards", str(shards), "--window", "64"
    )
    assert code == 2 and "--window 64 exceeds" in stderr
