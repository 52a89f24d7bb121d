"""The improve loop's table and plot, rebuilt from the rounds' own files every time (so a rerun
after a kill reports every round): `improve.json`, `improve.md`, `improve.png`, and the best
agent kept in `best/` (named in `best.json`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from pokeagent.eval.report import OPPONENT_NAMES
from pokeagent.loop.improve import BEST_BY, OPPONENTS
from pokeagent.run_dir import WEIGHTS, read_json

if TYPE_CHECKING:
    from pokeagent.loop.improve import Improve


def _battles(loop: Improve, index: int, plan: dict) -> dict:
    """The round's generated battles per opponent: how many, and the agent's score."""
    from pokeagent.data.generate import player_labels

    by_opponent: dict[str, dict] = {}
    for chunk in plan["chunks"]:
        summary = read_json(loop.chunk_dir(index, chunk) / "summary.json")
        if summary is None:
            continue
        counts = summary["summary"]
        label = player_labels((plan["agent"], chunk["opponent"]))[0]
        row = by_opponent.setdefault(chunk["opponent"], {"battles": 0, "wins": 0, "ties": 0})
        row["battles"] += counts["battles"]
        row["wins"] += counts["wins"].get(label, 0)
        row["ties"] += counts["wins"].get("tie", 0)
    for row in by_opponent.values():
        row["score"] = (row["wins"] + row["ties"] / 2) / row["battles"] if row["battles"] else None
    return by_opponent


def round_row(loop: Improve, index: int, ladder: dict | None) -> dict | None:
    """One round's figures, or None while its agent has no evaluation."""
    folder = loop.round_dir(index)
    agent = read_json(folder / "agent" / "agent.json")
    report = read_json(folder / "eval" / "battles.json")
    if agent is None or report is None:
        return None
    row = {
        "round": index,
        "step": agent["step"],
        "agent": str(folder / "agent"),
        "eval": {
            kind: {k: s[k] for k in ("games", "win_rate", "ci95", "errors")}
            for kind, s in report["opponents"].items()
        },
        "rating": report["ratings"].get("agent"),
        "seconds": read_json(folder / "times.json") or {},
    }
    plan = read_json(folder / "plan.json")
    if plan is not None:
        row["battles"] = _battles(loop, index, plan)
        manifest = read_json(folder / "shards" / "manifest.json") or {}
        summary = manifest.get("summary", {})
        row["data"] = {
            "shards": str(folder / "shards"),
            "battles": summary.get("battles_packed"),
            "trajectories": summary.get("trajectories", {}).get("train"),
            "decisions": summary.get("decisions", {}).get("train"),
            "mixture": read_json(folder / "mixture.json"),
        }
    if ladder is not None:
        weights = str((folder / "agent" / WEIGHTS).resolve())
        for player in ladder["players"]:
            if weights in player["key"] and player["name"] in ladder["ratings"]:
                row["ladder"] = ladder["ratings"][player["name"]]
    return row


def best_round(rows: list[dict]) -> dict | None:
    """The row with the best win rate against BEST_BY (then the best mean over the baselines)."""

    def key(row):
        rates = [row["eval"][k]["win_rate"] or 0.0 for k in OPPONENTS if k in row["eval"]]
        return (row["eval"].get(BEST_BY, {}).get("win_rate") or 0.0, sum(rates) / len(rates))

    return max(rows, key=key) if rows else None


def keep_best(out: Path, row: dict) -> None:
    """`best/model.safetensors`: a copy of the best round's agent (atomic), named in best.json."""
    saved = read_json(out / "best.json")
    if saved is not None and saved["round"] == row["round"] and (out / "best" / WEIGHTS).is_file():
        return
    (out / "best").mkdir(exist_ok=True)
    tmp = out / "best" / f".{WEIGHTS}.tmp"
    shutil.copy2(Path(row["agent"]) / WEIGHTS, tmp)
    os.replace(tmp, out / "best" / WEIGHTS)
    best = {"round": row["round"], "step": row["step"], "agent": row["agent"], "by": BEST_BY}
    best["win_rate"] = row["eval"][BEST_BY]["win_rate"]
    tmp = out / ".best.json.tmp"
    tmp.write_text(json.dumps(best, indent=2) + "\n")
    os.replace(tmp, out / "best.json")


def _cell(s: dict) -> str:
    if s["win_rate"] is None:
        return "n/a"
    low, high = s["ci95"]
    return f"{100 * s['win_rate']:.1f}% ({100 * low:.0f}-{100 * high:.0f})"


def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"# Improve: {cfg['format']}, pool {cfg['pool']}",
        "",
        f"Each round: {cfg['battles']} battles of the agent (T={cfg['temperature']:g}) against the "
        f"pool, {cfg['steps']} steps over replays={cfg['replay_weight']:g} + "
        f"rounds={cfg['rounds_weight']:g} ({cfg['objective']}), then {cfg['eval_games']} greedy "
        "games against each baseline (win rate, 95% interval).",
        "",
        "| round | step | own games: agent's score | trajectories | "
        + " | ".join(f"vs {OPPONENT_NAMES[o]}" for o in OPPONENTS)
        + " | rating | ladder | minutes |",
        "|---|---:|---|---:|" + "---:|" * len(OPPONENTS) + "---:|---:|---:|",
    ]
    best = report["best"]["round"] if report["best"] else None
    for row in report["rounds"]:
        games = ", ".join(
            f"{_short(opponent)} {100 * s['score']:.0f}% of {s['battles']}"
            for opponent, s in row.get("battles", {}).items()
            if s["score"] is not None
        )
        ladder = row.get("ladder")
        cells = [
            f"{row['round']}{' (best)' if row['round'] == best else ''}",
            str(row["step"]),
            games or "-",
            str(row.get("data", {}).get("trajectories") or "-"),
            *(_cell(row["eval"][o]) if o in row["eval"] else "-" for o in OPPONENTS),
            f"{row['rating']:.0f}" if row["rating"] is not None else "-",
            f"{ladder['rating']:.0f} ({ladder['low']:.0f}-{ladder['high']:.0f})" if ladder else "-",
            f"{sum(row['seconds'].values()) / 60:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "rating: Bradley-Terry over the round's evaluation games (RandomPlayer = 1000); ladder: "
        "every round's agent and the baselines on one ladder, 95% bootstrap interval.",
    ]
    if report["best"]:
        b = report["best"]
        lines.append(
            f"Best: round {b['round']} (step {b['step']}), {100 * b['win_rate']:.1f}% against "
            f"{OPPONENT_NAMES[BEST_BY]}: `best/{WEIGHTS}`."
        )
    return "\n".join(lines) + "\n"


def _short(spec: str) -> str:
    """A pool opponent's name in the table: `heuristic`, `round-002@1.5`."""
    if not spec.startswith("agent:"):
        return spec
    path, _, temperature = spec.removeprefix("agent:").rpartition("@")
    parts = Path(path).parts
    name = parts[-3] if len(parts) >= 3 and parts[-2] == "agent" else Path(path).name
    return f"{name}@{temperature}"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rounds"]
    rounds = [row["round"] for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for opponent in OPPONENTS:
        cells = [row["eval"].get(opponent) for row in rows]
        rates = [100 * (c["win_rate"] or 0.0) if c else float("nan") for c in cells]
        low = [
            max(0.0, r - 100 * c["ci95"][0]) if c else 0.0
            for r, c in zip(rates, cells, strict=True)
        ]
        high = [
            max(0.0, 100 * c["ci95"][1] - r) if c else 0.0
            for r, c in zip(rates, cells, strict=True)
        ]
        axes[0].errorbar(
            rounds, rates, yerr=[low, high], marker="o", capsize=4, label=OPPONENT_NAMES[opponent]
        )
    axes[0].axhline(50, color="grey", linewidth=0.8, linestyle="--")
    axes[0].set_ylim(0, 100)
    axes[0].set_xlabel("round")
    axes[0].set_ylabel("agent win rate (%), 95% interval")
    axes[0].legend(title="against")
    ratings = [row["rating"] if row["rating"] is not None else float("nan") for row in rows]
    axes[1].plot(rounds, ratings, marker="o", label="evaluation games")
    laddered = [row for row in rows if row.get("ladder")]
    if laddered:
        points = [row["ladder"]["rating"] for row in laddered]
        axes[1].errorbar(
            [row["round"] for row in laddered],
            points,
            yerr=[
                [
                    max(0.0, p - row["ladder"]["low"])
                    for p, row in zip(points, laddered, strict=True)
                ],
                [
                    max(0.0, row["ladder"]["high"] - p)
                    for p, row in zip(points, laddered, strict=True)
                ],
            ],
            marker="s",
            capsize=4,
            label="ladder",
        )
    axes[1].ticklabel_format(axis="y", useOffset=False, style="plain")
    axes[1].set_xlabel("round")
    axes[1].set_ylabel("rating (RandomPlayer = 1000)")
    axes[1].legend()
    for ax in axes:
        ax.set_xticks(rounds)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(loop: Improve, ladder: dict | None) -> dict:
    """improve.json/.md/.png from every evaluated round; the best agent copied to best/."""
    from dataclasses import asdict

    rows = []
    index = 0
    while loop.round_dir(index).is_dir():
        row = round_row(loop, index, ladder)
        if row is not None:
            rows.append(row)
        index += 1
    best = best_round(rows)
    if best is not None:
        keep_best(loop.out, best)
    report = {
        "config": asdict(loop.cfg),
        "train": str(loop.train_run.root),
        "replays": str(Path(loop.cfg.shards).resolve()),
        "rounds": rows,
        "best": read_json(loop.out / "best.json") if best is not None else None,
    }
    _write(loop.out / "improve.json", json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    _write(loop.out / "improve.md", text)
    if rows:
        plot(report, loop.out / "improve.png")
    return report | {"markdown": text}


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
