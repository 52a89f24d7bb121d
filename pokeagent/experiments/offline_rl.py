"""Offline RL against imitation, on the same data: `bash scripts/offline_rl.sh` (or
`python -m pokeagent.experiments.offline_rl`).

1. Battles with real choices that lose: poke-env's SimpleHeuristicsPlayer against itself,
   against MaxBasePowerPlayer and against RandomPlayer on a local server, both sides kept (the
   losers' choices too: what a critic can learn to tell apart from the winners').
2. One pack of all of them (train + val shards).
3. One training run per objective (`bc`, `binary`, `exp`: model/loss.py), each from the same seed
   over the same shards for the same steps; bc is plain imitation (no critic), the others train
   the critic beside the policy.
4. Each agent plays `games` games against RandomPlayer, MaxBasePowerPlayer and
   SimpleHeuristicsPlayer (sides alternated, fixed seeds: pokeagent eval battles).
5. One table: per objective and opponent the win rate with its 95% Wilson interval, and one
   Bradley-Terry fit over every game of every agent (RandomPlayer = 1000), so the ratings of the
   objectives are on one scale; `offline_rl.md`, `offline_rl.json` and `offline_rl.png` in `out`.

Every stage is skipped when its output is complete, so a killed run continues where it stopped
(a training run resumes from its last checkpoint; an unfinished evaluation is played again).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from pokeagent.eval.ratings import bradley_terry, wilson_interval
from pokeagent.eval.report import OPPONENT_NAMES

PAIRINGS = (("heuristic", "heuristic"), ("heuristic", "maxpower"), ("heuristic", "random"))
"""The data's battles: the teacher against itself and against the two weaker baselines."""
OPPONENTS = ("random", "maxpower", "heuristic")


@dataclass
class OfflineRLConfig:
    """The experiment's knobs (defaults: the README's figures, about 2 hours on 2 CPU cores)."""

    out: str = "runs/offline-rl"
    """Experiment folder: battles, shards, one run per objective, evaluations, the table."""
    battles: int = 1000
    """Battles per pairing (heuristic vs heuristic, vs maxpower, vs random)."""
    objectives: tuple[str, ...] = ("bc", "binary", "exp")
    """Objectives to train (model/loss.py), each on the same shards for the same steps."""
    games: int = 1000
    """Games per agent against each opponent."""
    model: str = "tiny"
    """Model preset of every run."""
    steps: int = 1500
    """Optimizer steps of every run."""
    learning_rate: float = 2e-3
    """At the reference batch of 256 (scaled to the batch of 16 by the trainer)."""
    critic_heads: int = 2
    """Critic ensemble of the binary/exp runs."""
    advantage_beta: float = 1.0
    """exp: beta of exp(beta A)."""
    format: str = "gen9randombattle"
    """Showdown format of every battle."""
    seed: int = 0
    """Seeds generation, training and the evaluation games."""
    workers: int = 2
    """Pack workers."""
    concurrency: int = 4
    """Games played at once in the evaluations."""
    extra_train_args: list[str] = field(default_factory=list)
    """More `pokeagent train` options for every run (e.g. --shaping-weight 0.1)."""


def _say(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def generate_battles(cfg: OfflineRLConfig, out: Path) -> list[Path]:
    """The replays of each pairing (skipped where a complete `replays.jsonl` exists)."""
    from pokeagent.data.generate import GenerateConfig, generate

    paths = []
    for index, players in enumerate(PAIRINGS):
        folder = out / f"battles-{players[0]}-{players[1]}"
        replays = folder / "replays.jsonl"
        done = folder / "done.json"
        if not done.is_file():
            result = generate(
                GenerateConfig(
                    out=folder,
                    format=cfg.format,
                    battles=cfg.battles,
                    players=players,
                    seed=cfg.seed * 100 + index,
                )
            )
            print(result.table(), flush=True)
            done.write_text(json.dumps({"battles": cfg.battles, "players": players}) + "\n")
        paths.append(replays)
    return paths


def pack_battles(replays: list[Path], out: Path, workers: int) -> Path:
    from pokeagent.data.pack import MANIFEST_FILE, PackConfig, pack

    shards = out / "shards"
    if not (shards / MANIFEST_FILE).is_file():
        packed = pack(
            PackConfig(
                sources=[str(p) for p in replays],
                out=shards,
                workers=workers,
                shard_size=32 * 1024 * 1024,
                val_fraction=0.05,
            )
        )
        print(packed.table(), flush=True)
    return shards


def train_command(cfg: OfflineRLConfig, objective: str, shards: Path, run_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "pokeagent.train", "--run-dir", str(run_dir)]
    command += ["--data-dir", str(shards), "--model", cfg.model, "--seed", str(cfg.seed)]
    command += ["--max-steps", str(cfg.steps), "--learning-rate", str(cfg.learning_rate)]
    command += ["--warmup-steps", str(max(1, cfg.steps // 20)), "--window", "64"]
    command += ["--batch-size-per-gpu", "16", "--workers-per-gpu", "1"]
    command += ["--log-every", str(max(1, cfg.steps // 15)), "--objective", objective]
    if objective != "bc":
        command += ["--critic-heads", str(cfg.critic_heads)]
        command += ["--advantage-beta", str(cfg.advantage_beta)]
    return command + list(cfg.extra_train_args)


def _trained(cfg: OfflineRLConfig, run_dir: Path) -> bool:
    from pokeagent.run_dir import RunDir

    return any(r.get("step") == cfg.steps for r in RunDir(run_dir).read_metrics() if "loss" in r)


def train(cfg: OfflineRLConfig, objective: str, shards: Path, run_dir: Path) -> None:
    """One run to `steps` (resumed if a checkpoint exists; nothing to do if it is complete)."""
    if _trained(cfg, run_dir):
        return
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    env.pop("RANK", None)
    command = train_command(cfg, objective, shards, run_dir)
    done = subprocess.run(command, env=env, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training {objective} failed (exit {done.returncode}): {command}")
    if not _trained(cfg, run_dir):  # a clean stop (SIGTERM, time limit) before the last step
        raise RuntimeError(f"training {objective} stopped before step {cfg.steps}: run again")


def evaluate(cfg: OfflineRLConfig, run_dir: Path, opponent: str, out: Path) -> dict:
    """`games` games of the run's last checkpoint against one opponent (kept when complete)."""
    from pokeagent.eval.battles import BattleEvalConfig, evaluate_battles

    report_file = out / "battles.json"
    if report_file.is_file():
        report = json.loads(report_file.read_text())
        if report["opponents"][opponent]["games"] >= 0.99 * cfg.games:
            return report
    return evaluate_battles(
        BattleEvalConfig(
            checkpoint=str(run_dir),
            format=cfg.format,
            opponents=(opponent,),
            battles=cfg.games,
            concurrency=cfg.concurrency,
            seed=cfg.seed,
            out=str(out),
        )
    )


def summarise(reports: dict[str, dict[str, dict]]) -> dict:
    """Win rates with Wilson intervals per objective and opponent (`reports[objective][opponent]`,
    a battles.json), and one Bradley-Terry fit over every game of every agent (Random = 1000)."""
    games: list[tuple[str, str, float]] = []
    table: dict[str, dict] = {}
    for objective, by_opponent in reports.items():
        table[objective] = {}
        for opponent, report in by_opponent.items():
            s = report["opponents"][opponent]
            games += [(objective, opponent, 1.0)] * s["wins"]
            games += [(objective, opponent, 0.0)] * s["losses"]
            games += [(objective, opponent, 0.5)] * s["ties"]
            played = s["wins"] + s["losses"] + s["ties"]
            score = s["wins"] + 0.5 * s["ties"]
            table[objective][opponent] = {
                "games": played,
                "win_rate": score / played if played else None,
                "ci95": list(wilson_interval(score, played)),
                "errors": s["errors"],
            }
    # Anchored on RandomPlayer: until the games against it are played, no ratings.
    ratings = bradley_terry(games, anchor="random") if any(g[1] == "random" for g in games) else {}
    return {"table": table, "ratings": ratings}


def markdown(summary: dict, cfg: OfflineRLConfig) -> str:
    lines = [
        f"# Offline RL against imitation: {cfg.model}, {cfg.steps} steps, {cfg.format}",
        "",
        f"Data: {cfg.battles} battles for each of {', '.join(f'{a} vs {b}' for a, b in PAIRINGS)}"
        f" (both sides). {cfg.games} games per agent and opponent, sides alternated.",
        "",
        "| objective | "
        + " | ".join(f"vs {OPPONENT_NAMES[o]} (95% interval)" for o in OPPONENTS)
        + " | rating |",
        "|---|" + "---:|" * (len(OPPONENTS) + 1),
    ]
    ratings = summary["ratings"]
    for objective, row in summary["table"].items():
        cells = []
        for opponent in OPPONENTS:
            c = row.get(opponent)
            if c is None:
                cells.append("not played")
                continue
            rate = "n/a" if c["win_rate"] is None else f"{100 * c['win_rate']:.1f}%"
            cells.append(
                f"{rate} ({100 * c['ci95'][0]:.1f}-{100 * c['ci95'][1]:.1f}%, n={c['games']})"
            )
        rating = f"{ratings[objective]:.0f}" if objective in ratings else "n/a"
        lines.append(f"| {objective} | " + " | ".join(cells) + f" | {rating} |")
    baselines = ", ".join(
        f"{OPPONENT_NAMES[o]} {ratings[o]:.0f}" for o in OPPONENTS if o in ratings
    )
    if baselines:
        lines += ["", f"Baselines on the same scale (Bradley-Terry, Random = 1000): {baselines}."]
    else:
        lines += ["", "Ratings follow once the games against RandomPlayer (the anchor) are played."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = list(summary["table"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(objectives))
    for i, objective in enumerate(objectives):
        row = {o: summary["table"][objective].get(o) for o in OPPONENTS}
        empty = {"win_rate": 0.0, "ci95": [0.0, 0.0]}
        row = {o: c if c is not None else empty for o, c in row.items()}
        rates = [100 * (row[o]["win_rate"] or 0.0) for o in OPPONENTS]
        low = [max(0.0, r - 100 * row[o]["ci95"][0]) for r, o in zip(rates, OPPONENTS, strict=True)]
        high = [
            max(0.0, 100 * row[o]["ci95"][1] - r) for r, o in zip(rates, OPPONENTS, strict=True)
        ]
        ax.bar(
            [j + i * width for j in range(len(OPPONENTS))],
            rates,
            width,
            yerr=[low, high],
            capsize=4,
            label=f"{objective} ({summary['ratings'].get(objective, float('nan')):.0f})",
        )
    ax.set_xticks([j + width * (len(objectives) - 1) / 2 for j in range(len(OPPONENTS))])
    ax.set_xticklabels([OPPONENT_NAMES[o].removesuffix("Player") for o in OPPONENTS])
    ax.axhline(50, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylim(0, 100)
    ax.set_ylabel("agent win rate (%), 95% interval")
    ax.legend(title="objective (rating)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(cfg: OfflineRLConfig) -> dict:
    from pokeagent.showdown.install import install

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    install()
    _say(f"1/4 battles: {cfg.battles} per pairing")
    replays = generate_battles(cfg, out)
    _say("2/4 pack")
    shards = pack_battles(replays, out, cfg.workers)
    for objective in cfg.objectives:
        _say(f"3/4 train {objective}: {cfg.model}, {cfg.steps} steps")
        train(cfg, objective, shards, out / f"train-{objective}")
    # Opponent by opponent, the strongest first: a run cut short still compares every objective
    # against the teacher.
    reports: dict[str, dict[str, dict]] = {objective: {} for objective in cfg.objectives}
    for opponent in ("heuristic", "maxpower", "random"):
        for objective in cfg.objectives:
            _say(f"4/4 battles: {objective} against {opponent}, {cfg.games} games")
            folder = out / f"eval-{objective}" / f"vs-{opponent}"
            reports[objective][opponent] = evaluate(
                cfg, out / f"train-{objective}", opponent, folder
            )
            write_summary(cfg, out, reports)
    return write_summary(cfg, out, reports, started)


def write_summary(cfg: OfflineRLConfig, out: Path, reports: dict, started: float | None = None):
    """The table, JSON and plot of what has been played so far (rewritten after each block)."""
    summary = summarise(reports)
    summary["config"] = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    (out / "offline_rl.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary, cfg)
    (out / "offline_rl.md").write_text(text)
    plot(summary, out / "offline_rl.png")
    print("\n" + text, flush=True)
    if started is not None:
        print(f"{(time.monotonic() - started) / 60:.0f} min; {out}/offline_rl.md", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pokeagent.experiments.offline_rl", description=__doc__.splitlines()[0]
    )
    defaults = OfflineRLConfig()
    for f in fields(OfflineRLConfig):
        option = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, (list, tuple)):
            parser.add_argument(option, default=None, help=f"comma-separated (default {default})")
        else:
            parser.add_argument(
                option, type=type(default), default=None, help=f"(default {default})"
            )
    args = parser.parse_args(argv)
    values = {}
    for f in fields(OfflineRLConfig):
        value = getattr(args, f.name)
        if value is None:
            continue
        if f.name == "objectives":
            value = tuple(v for v in value.split(",") if v)
        elif f.name == "extra_train_args":
            value = value.split()
        values[f.name] = value
    run(OfflineRLConfig(**values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
