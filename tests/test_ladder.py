"""`pokeagent eval ladder`: the fit recovers known strengths, the plan resumes, a real tiny ladder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_generate_agent import untrained_checkpoint

from pokeagent.eval.ladder import (
    GAMES_FILE,
    LadderConfig,
    plan_games,
    rate,
    read_games,
    result_table,
    run_ladder,
)
from pokeagent.eval.ratings import bradley_terry
from pokeagent.showdown.players import PlayerSpec

TRUE = {"random": 1000.0, "a": 1200.0, "maxpower": 1400.0, "b": 1550.0, "heuristic": 1750.0}


def _synthetic_games(per_pair: int, seed: int) -> list[dict]:
    """Every pair of TRUE meets `per_pair` times, each game won with the Bradley-Terry odds."""
    rng = np.random.default_rng(seed)
    keys, games = list(TRUE), []
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            p = 1 / (1 + 10 ** ((TRUE[b] - TRUE[a]) / 400))
            wins = rng.binomial(per_pair, p)
            games += [{"a": a, "b": b, "p1": a, "score": 1.0}] * wins
            games += [{"a": a, "b": b, "p1": b, "score": 0.0}] * (per_pair - wins)
    return games


def test_fit_recovers_known_strengths():
    # 1,000 games per pair, as the headline ladder. Measured over 60 tables: errors' sd 10-13
    # Elo, no bias, the largest error 24 Elo; so: every error under 40 Elo, the mean error under
    # 8, and the 95% intervals holding the truth at least 90% of the time.
    keys, truth = list(TRUE), np.array(list(TRUE.values()))
    errors, covered = [], []
    for seed in range(20):
        games = _synthetic_games(1000, seed=seed)
        wins, ties = result_table(games, keys)
        ratings, intervals = rate(wins, ties, anchor=0, bootstrap=400, seed=seed)
        assert ratings[0] == pytest.approx(1000.0)
        assert tuple(intervals[0]) == pytest.approx((1000, 1000))
        errors.append(ratings[1:] - truth[1:])
        covered += list((intervals[1:, 0] <= truth[1:]) & (truth[1:] <= intervals[1:, 1]))
        widths = intervals[1:, 1] - intervals[1:, 0]
        assert (widths > 20).all() and (widths < 100).all(), widths
    errors = np.array(errors)
    assert np.abs(errors).max() < 40, errors.round()
    assert np.abs(errors.mean(0)).max() < 8, errors.mean(0)
    assert np.mean(covered) >= 0.9
    # The same fit as `eval battles`' ratings over the same games.
    reference = bradley_terry([(g["a"], g["b"], g["score"]) for g in games], anchor="random")
    assert ratings == pytest.approx([reference[k] for k in keys], abs=1e-4)
    # Fewer games, wider intervals.
    few_wins, few_ties = result_table(_synthetic_games(50, seed=0), keys)
    _, few = rate(few_wins, few_ties, anchor=0, bootstrap=300, seed=0)
    assert ((few[1:, 1] - few[1:, 0]) > widths).all()


def test_ties_count_half_and_a_perfect_record_stays_finite():
    keys = ["random", "x"]
    table = [{"a": "random", "b": "x", "p1": "x", "score": 0.5}] * 10
    ratings, _ = rate(*result_table(table, keys), anchor=0, bootstrap=50)
    assert ratings[1] == pytest.approx(1000.0)
    table = [{"a": "random", "b": "x", "p1": "x", "score": 0.0}] * 100
    ratings, intervals = rate(*result_table(table, keys), anchor=0, bootstrap=50)
    assert 1000 < ratings[1] < 2500 and np.isfinite(intervals).all()


def test_plan_resumes_per_pair_and_side(tmp_path):
    specs = [PlayerSpec("random"), PlayerSpec("maxpower"), PlayerSpec("heuristic")]
    games = [{"a": "random", "b": "maxpower", "p1": p1, "score": 1.0} for p1 in ["random"] * 3]
    games += [{"a": "maxpower", "b": "random", "p1": "maxpower", "score": 0.0}] * 2
    games += [{"a": "random", "b": "heuristic", "p1": p1, "score": 0.0} for p1 in ["heuristic"]]
    plan = {tuple(map(str, pair)): todo for pair, todo in plan_games(specs, games, 5)}
    # random-maxpower has 5 of 5 (3 and 2, in either order of the pair): done.
    assert plan == {
        ("random", "heuristic"): {"random": 3, "heuristic": 1},
        ("maxpower", "heuristic"): {"maxpower": 3, "heuristic": 2},
    }
    # A cut last line (a kill while writing) is dropped before the next run appends.
    path = tmp_path / GAMES_FILE
    row = {"a": "random", "b": "maxpower", "p1": "random", "score": 1.0, "format": "gen9x"}
    path.write_text(json.dumps(row) + "\n" + json.dumps(row)[:20])
    from pokeagent.eval.ladder import _drop_cut_line

    _drop_cut_line(path)
    assert read_games(path, "gen9x") == [row]
    with pytest.raises(ValueError, match="gen1x ladder"):
        read_games(path, "gen1x")


def test_config_needs_the_anchor(tmp_path):
    with pytest.raises(ValueError, match="anchors random"):
        LadderConfig(out=tmp_path, baselines=("maxpower", "heuristic"))


@pytest.mark.slow
def test_tiny_ladder_end_to_end_and_resume(showdown_package, tmp_path):
    checkpoint = untrained_checkpoint(tmp_path / "run" / "checkpoints" / "step00000000")
    out = tmp_path / "ladder"

    def ladder(games: int) -> dict:
        cfg = LadderConfig(
            out=out,
            checkpoints=(f"{checkpoint}@1",),
            baselines=("random", "maxpower"),
            games=games,
            concurrency=2,
            bootstrap=200,
        )
        return run_ladder(cfg, progress=False)

    report = ladder(2)
    first = (out / GAMES_FILE).read_text().splitlines()
    assert report["played"] == 6 and len(first) == 6, report["errors"]
    assert report["agent_errors"] == 0
    names = {"random", "maxpower", "run/step00000000@1"}
    assert {p["name"] for p in report["players"]} == names
    assert set(report["ratings"]) == names
    assert report["ratings"]["random"]["rating"] == pytest.approx(1000.0)
    for pair in report["pairs"]:
        assert pair["games"] == 2 == pair["a_wins"] + pair["ties"] + pair["b_wins"]
    # Sides alternated: within each pair, each player was p1 once.
    rows = [json.loads(line) for line in first]
    for a, b in {(r["a"], r["b"]) for r in rows}:
        assert sorted(r["p1"] for r in rows if (r["a"], r["b"]) == (a, b)) == sorted([a, b])
    saved = json.loads((out / "ladder.json").read_text())
    assert saved["ratings"].keys() == report["ratings"].keys()
    assert "run/step00000000@1" in (out / "ladder.md").read_text()
    assert (out / "ladder.png").read_bytes()[:4] == b"\x89PNG"

    # More games per pair: only the missing ones are played, the first ones kept.
    report = ladder(4)
    lines = (out / GAMES_FILE).read_text().splitlines()
    assert report["played"] == 6 and lines[:6] == first and len(lines) == 12
    assert all(pair["games"] == 4 for pair in report["pairs"])
    # Nothing missing: no game, no server; the ratings are refitted from the file.
    assert ladder(4)["played"] == 0
    assert (out / GAMES_FILE).read_text().splitlines() == lines
