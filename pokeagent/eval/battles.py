"""`pokeagent eval battles`: the trained agent against poke-env's baselines on a local server.

    pokeagent eval battles --checkpoint runs/demo/train --opponents random,maxpower,heuristic \
        --battles 200 --format gen9randombattle

Starts a Showdown server on 127.0.0.1 (its own, stopped at the end), plays `battles` games
against each opponent, a few at a time, and writes `battles.json`, `report.md` and
`battles.png` (pokeagent/eval/report.py) into the output folder: per opponent the win rate
with a 95% Wilson interval, and Elo-style ratings from every game (Bradley-Terry, RandomPlayer
at 1000). A battle that hangs is abandoned after `battle_timeout_s` and counted as an error;
an exception inside the agent falls back to a random legal move and is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from poke_env.ps_client.account_configuration import AccountConfiguration

from pokeagent.eval.agent import AgentPlayer, NetworkPolicy
from pokeagent.eval.checkpoint import eval_dir, load_network
from pokeagent.eval.ratings import bradley_terry, wilson_interval
from pokeagent.progress import progress as progress_bar
from pokeagent.showdown.players import BASELINES, make_baseline, unique_name

AGENT = "agent"
ANCHOR = "random"


@dataclass
class BattleEvalConfig:
    """One evaluation of a checkpoint in live battles."""

    checkpoint: str
    """A checkpoint folder, a run directory (its latest checkpoint) or a model.safetensors."""
    format: str = "gen9randombattle"
    """Showdown format; random-team formats need no team files."""
    opponents: tuple[str, ...] = ("random", "maxpower", "heuristic")
    """poke-env baselines to play: random, maxpower, heuristic."""
    battles: int = 100
    """Games against each opponent."""
    concurrency: int = 4
    """Games played at once against one opponent."""
    temperature: float = 0.0
    """0: the network's most likely legal action; > 0: sample at this temperature."""
    seed: int = 0
    """Sampling and the baselines' random choices."""
    battle_timeout_s: float = 240.0
    """A game not finished in this long is abandoned and counted as an error."""
    out: str | None = None
    """Output folder; default `<run dir>/eval/battles-step<N>` next to the checkpoint."""
    device: str = "cpu"
    """Where the network runs (one forward pass per decision)."""

    def __post_init__(self):
        unknown = [o for o in self.opponents if o not in BASELINES]
        if unknown:
            raise ValueError(f"unknown opponents {unknown}; choose from {sorted(BASELINES)}")
        if self.battles < 1 or self.concurrency < 1:
            raise ValueError("battles and concurrency must be >= 1")


@dataclass
class OpponentResult:
    wins: int = 0
    losses: int = 0
    ties: int = 0
    errors: int = 0
    """Games that hung or broke (not counted in the win rate)."""
    agent_errors: int = 0
    """Decisions where the agent raised and a random legal move was played instead."""
    error_kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def count_error(self, kind: str, times: int = 1) -> None:
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + times

    def collect(self, agent: AgentPlayer) -> None:
        """Take in an agent player's error counts (before it is replaced or retired)."""
        self.agent_errors += agent.agent_errors
        for kind, times in agent.error_kinds.items():
            self.count_error(kind, times)

    @property
    def games(self) -> int:
        return self.wins + self.losses + self.ties

    def summary(self) -> dict:
        score = self.wins + 0.5 * self.ties
        low, high = wilson_interval(score, self.games)
        return {
            **asdict(self),
            "games": self.games,
            "win_rate": score / self.games if self.games else None,
            "ci95": [low, high],
        }


async def _play_opponent(
    cfg: BattleEvalConfig, policy: NetworkPolicy, kind: str, server, bar
) -> tuple[OpponentResult, list[float]]:
    result, scores = OpponentResult(), []
    config = server.server_configuration()
    remaining = cfg.battles

    def new_players():
        agent = AgentPlayer(
            policy,
            account_configuration=AccountConfiguration(unique_name("agent"), None),
            server_configuration=config,
            battle_format=cfg.format,
            max_concurrent_battles=cfg.concurrency,
            log_level=40,
        )
        opponent = make_baseline(
            kind, unique_name(kind[:6]), config, cfg.format, max_concurrent_battles=cfg.concurrency
        )
        return agent, opponent

    async def retire(players) -> None:
        for player in players:
            with contextlib.suppress(Exception):  # a dead socket is what we want anyway
                await asyncio.wait_for(player.ps_client.stop_listening(), 10)

    started = time.monotonic()
    players = new_players()
    while remaining > 0:
        chunk = min(cfg.concurrency, remaining)
        agent, opponent = players
        before = set(agent.battles)
        # Half the games with the agent as challenger (p1), half as p2.
        first, second = (
            (agent, opponent) if (cfg.battles - remaining) % 2 == 0 else (opponent, agent)
        )
        try:
            await asyncio.wait_for(
                first.battle_against(second, n_battles=chunk), cfg.battle_timeout_s
            )
            hung = False
        except Exception as error:  # TimeoutError, a lost connection: count it and play on
            hung = True
            result.count_error(f"play: {type(error).__name__}")
        new = [agent.battles[tag] for tag in agent.battles if tag not in before]
        finished = [battle for battle in new if battle.finished]
        for battle in finished:
            if battle.won:
                result.wins += 1
                scores.append(1.0)
            elif battle.lost:
                result.losses += 1
                scores.append(0.0)
            else:
                result.ties += 1
                scores.append(0.5)
        result.errors += chunk - len(finished)
        if hung:
            result.collect(agent)
            await retire(players)
            players = new_players()
        remaining -= chunk
        bar.update(chunk)
        bar.set_postfix_str(f"vs {kind}: {result.wins}/{result.games} won")
    result.collect(players[0])
    await retire(players)
    result.seconds = time.monotonic() - started
    return result, scores


async def _play_all(cfg: BattleEvalConfig, policy: NetworkPolicy, server, progress: bool):
    results, games = {}, []
    total = cfg.battles * len(cfg.opponents)
    with progress_bar(total=total, desc="eval battles", unit="battle", disable=not progress) as bar:
        for kind in cfg.opponents:
            result, scores = await _play_opponent(cfg, policy, kind, server, bar)
            results[kind] = result
            games += [(AGENT, kind, score) for score in scores]
    return results, games


def evaluate_battles(cfg: BattleEvalConfig, progress: bool = True) -> dict:
    """Play the games, fit the ratings, write battles.json / report.md / battles.png."""
    from pokeagent.eval.report import write_report
    from pokeagent.showdown.server import ShowdownServer

    loaded = load_network(cfg.checkpoint, device=cfg.device)
    random.seed(cfg.seed)  # poke-env's baselines draw from the global RNG
    torch.manual_seed(cfg.seed)
    policy = NetworkPolicy(loaded.net, temperature=cfg.temperature, seed=cfg.seed)
    out = Path(cfg.out) if cfg.out else eval_dir(loaded.weights, "battles", max(loaded.step, 0))
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ShowdownServer() as server:
        results, games = asyncio.run(_play_all(cfg, policy, server, progress))
    ratings = bradley_terry(games, anchor=ANCHOR) if ANCHOR in cfg.opponents and games else {}
    report = {
        "checkpoint": str(loaded.weights),
        "step": loaded.step,
        "model": loaded.preset,
        "format": cfg.format,
        "config": asdict(cfg),
        "opponents": {kind: result.summary() for kind, result in results.items()},
        "ratings": ratings,
        "rating_note": "Bradley-Terry over all games, ties half a win, RandomPlayer = 1000",
        "seconds": time.monotonic() - started,
        "errors": dict(
            sum((Counter(r.error_kinds) for r in results.values()), Counter()).most_common()
        ),
    }
    (out / "battles.json").write_text(json.dumps(report, indent=2))
    write_report(report, out)
    report["out"] = str(out)
    return report
