"""`pokeagent eval battles`: real games on a local server, results, ratings and the report."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from pokeagent.data.encode import schema
from pokeagent.eval.battles import BattleEvalConfig, evaluate_battles
from pokeagent.eval.ratings import bradley_terry, wilson_interval
from pokeagent.model.config import preset
from pokeagent.model.network import PokeAgentNet


def _checkpoint(folder):
    """An untrained tiny network saved the way the trainer exports weights."""
    torch.manual_seed(0)
    net = PokeAgentNet(preset("tiny"), schema()["vocab"])
    folder.mkdir(parents=True)
    metadata = {"model": "tiny", "model_config": json.dumps(net.cfg.to_dict()), "step": "0"}
    save_file(net.state_dict(), str(folder / "model.safetensors"), metadata=metadata)
    return folder


@pytest.mark.slow
def test_battles_against_baselines(showdown_package, tmp_path):
    out = tmp_path / "report"
    report = evaluate_battles(
        BattleEvalConfig(
            checkpoint=str(_checkpoint(tmp_path / "ckpt")),
            opponents=("random", "maxpower"),
            battles=6,
            concurrency=3,
            out=str(out),
        ),
        progress=False,
    )
    for kind in ("random", "maxpower"):
        result = report["opponents"][kind]
        assert result["games"] + result["errors"] == 6
        assert result["games"] >= 5 and result["agent_errors"] == 0, result
        low, high = result["ci95"]
        assert low <= result["win_rate"] <= high
    assert report["ratings"]["random"] == pytest.approx(1000.0)
    assert set(report["ratings"]) == {"agent", "random", "maxpower"}
    saved = json.loads((out / "battles.json").read_text())
    assert saved["opponents"]["random"]["wins"] == report["opponents"]["random"]["wins"]
    assert "MaxBasePowerPlayer" in (out / "report.md").read_text()
    assert (out / "battles.png").read_bytes()[:4] == b"\x89PNG"


def test_bradley_terry_recovers_odds():
    # 90-10 against A, 60-40 against B: ratings are the log-odds on the Elo scale (plus the
    # one virtual tie per pair).
    games = [("x", "a", 1.0)] * 90 + [("x", "a", 0.0)] * 10
    games += [("x", "b", 1.0)] * 60 + [("x", "b", 0.0)] * 40
    ratings = bradley_terry(games, anchor="a")
    assert ratings["a"] == 1000.0
    assert ratings["x"] == pytest.approx(1000 + 400 * math.log10(90.5 / 10.5), abs=0.01)
    assert ratings["x"] - ratings["b"] == pytest.approx(400 * math.log10(60.5 / 40.5), abs=0.01)
    # A perfect record stays finite.
    assert math.isfinite(bradley_terry([("x", "a", 1.0)] * 50, anchor="a")["x"])


def test_wilson_interval():
    low, high = wilson_interval(90, 100)
    assert low == pytest.approx(0.8256, abs=1e-3) and high == pytest.approx(0.9448, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_report_plots_perfect_records(tmp_path):
    """A 100% (or 0%) rate sits on its Wilson interval's edge, up to rounding: still plots."""
    from pokeagent.eval.report import plot

    games = 10
    report = {"model": "tiny", "step": 1, "ratings": {"agent": 1400.0, "random": 1000.0}}
    report["opponents"] = {
        "random": {"win_rate": 1.0, "ci95": list(wilson_interval(games, games))},
        "maxpower": {"win_rate": 0.0, "ci95": list(wilson_interval(0, games))},
    }
    plot(report, tmp_path / "battles.png")
    assert (tmp_path / "battles.png").read_bytes()[:4] == b"\x89PNG"
