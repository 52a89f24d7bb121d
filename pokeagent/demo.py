"""`pokeagent demo`: the README's main command, the pipeline end to end as far as it exists.

Today: install the pinned simulator, play battles between poke-env baselines on a local server
(heuristic vs maxpower) and in-process simulator battles (sim-random), and write replays plus
ground truth. Parsing, packing, training and evaluation stages join as they land.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pokeagent.data.generate import SIM_RANDOM, GenerateConfig, generate
from pokeagent.showdown.install import install


@dataclass
class DemoConfig:
    """The demo's knobs; the defaults finish in a few minutes on 2 CPU cores."""

    out: Path = Path("runs/demo")
    """Run folder; each stage writes into its own subfolder."""
    battles: int = 200
    """Battles per generation stage."""
    seed: int = 0
    """Seeds every stage."""
    format: str = "gen9randombattle"
    """Showdown format of the generated battles."""


def _stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage that exists; returns the stage summaries by name."""
    out = Path(cfg.out)
    _stage("1/3 simulator: pokemon-showdown (pinned)")
    print(f"installed at {install()}")

    results = {}
    _stage(f"2/3 battles on a local server: heuristic vs maxpower, {cfg.battles} x {cfg.format}")
    server_cfg = GenerateConfig(
        out=out / "battles-baselines",
        format=cfg.format,
        battles=cfg.battles,
        players=("heuristic", "maxpower"),
        seed=cfg.seed,
    )
    results["baselines"] = generate(server_cfg)
    print(results["baselines"].table())

    _stage(f"3/3 in-process simulator battles: sim-random, {cfg.battles} x {cfg.format}")
    sim_cfg = GenerateConfig(
        out=out / "battles-sim-random",
        format=cfg.format,
        battles=cfg.battles,
        players=(SIM_RANDOM, SIM_RANDOM),
        seed=cfg.seed,
        concurrency=2,
    )
    results["sim-random"] = generate(sim_cfg)
    print(results["sim-random"].table())

    _stage("report")
    for name, summary in results.items():
        print(f"{name:>12}: {summary.table()}")
    print(
        f"\nreplays and ground truth under {out}/ (replays.jsonl, ground_truth.jsonl, summary.json)"
    )
    return results
