"""`pokeagent bench parse`: replays/s and decisions/s per core, beside poke-env's own tracking.

The corpus is fixed: simulator battles from a seed (`simtool battles`), cached in the pokeagent
cache, so figures from different runs and machines compare. Both contestants run on one core in
this process, over the same logs held in memory:

- pokeagent: `parse_replay` with the encoder: both players' trajectories, labels, legal masks and
  the encoded arrays;
- poke-env: one `Battle` object per log fed every line through `Battle.parse_message` (what a
  poke-env player does with the messages it receives): one point of view, no arrays.

Two figures per contestant, each timed with the two taking turns over the corpus in chunks (so
load from other processes falls on both alike), after each has handled one replay untimed
(imports, the dex, poke-env's data files: a one-off 0.1-0.3 s, as much as a hundred replays):

- cold: the first pass over the corpus. Every name, Pokémon reference and HP text is new to the
  lookup caches, which a real job fills within its first few hundred replays;
- steady: a second pass, what a job over many replays runs at per core. The bar (2x poke-env)
  is read here; both figures are printed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from pokeagent import native
from pokeagent.data.encode import encode
from pokeagent.data.parse import SkipBattle, parse_replay
from pokeagent.data.replay import Replay
from pokeagent.paths import cache_dir
from pokeagent.showdown import simtool
from pokeagent.showdown.install import install


@dataclass
class ParseBenchResult:
    replays: int
    decisions: int
    seconds: float
    """pokeagent, steady state (second pass)."""
    poke_env_seconds: float
    """poke-env, steady state (second pass)."""
    cold_seconds: float = 0.0
    """pokeagent, first pass."""
    poke_env_cold_seconds: float = 0.0
    """poke-env, first pass."""
    mode: str = ""
    """pokeagent.native.mode(): 'compiled', or why the parser ran uncompiled."""

    @property
    def replays_per_s(self) -> float:
        return self.replays / self.seconds

    @property
    def poke_env_replays_per_s(self) -> float:
        return self.replays / self.poke_env_seconds

    @property
    def ratio(self) -> float:
        return self.replays_per_s / self.poke_env_replays_per_s

    def table(self) -> str:
        n = self.replays
        lines = [
            f"corpus: {n} replays, {self.decisions} decisions (both sides)",
            f"pokeagent parser build: {self.mode}",
            "                                  steady (2nd pass)        cold (1st pass)",
            f"pokeagent parse+encode, 2 POVs: {n / self.seconds:8.1f} replays/s"
            f"  {n / self.cold_seconds:8.1f} replays/s"
            f"   ({self.decisions / self.seconds:.0f} decisions/s steady)",
            f"poke-env Battle tracking, 1 POV: {n / self.poke_env_seconds:8.1f} replays/s"
            f"  {n / self.poke_env_cold_seconds:8.1f} replays/s",
            f"ratio pokeagent / poke-env:      {self.ratio:8.2f}x"
            f"          {self.poke_env_cold_seconds / self.cold_seconds:8.2f}x",
        ]
        return "\n".join(lines)


def corpus(format_id: str = "gen9randombattle", battles: int = 300, seed: int = 0) -> list[Replay]:
    """The fixed benchmark corpus (generated once, then read from the cache)."""
    path = cache_dir() / "bench" / f"{format_id}-{battles}-{seed}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as out:
            for record in simtool.run_random_battles(
                install(), format_id, battles, seed, move_prob=0.8, tera_prob=0.2
            ):
                if "error" not in record:
                    out.write(
                        json.dumps({k: record[k] for k in ("id", "format", "players", "log")})
                        + "\n"
                    )
        tmp.rename(path)
    replays = []
    with open(path) as lines:
        for line in lines:
            r = json.loads(line)
            replays.append(
                Replay(id=r["id"], format=r["format"], players=tuple(r["players"]), log=r["log"])
            )
    return replays


def _poke_env_track(replay: Replay) -> None:
    from poke_env.battle import Battle

    gen = int(replay.format[3]) if replay.format[3].isdigit() else 9
    battle = Battle(replay.id, replay.players[0], logging.getLogger("bench"), gen=gen)
    for line in replay.log.splitlines():
        if not line.startswith("|") or line == "|":
            continue
        split = line.split("|")
        kind = split[1]
        if kind == "win":
            battle.won_by(split[2])
        elif kind == "tie":
            battle.tied()
        elif kind not in ("request", "t:", "", "upkeep"):
            battle.parse_message(split)


def _parse_and_encode(replays: list[Replay]) -> int:
    decisions = 0
    for replay in replays:
        try:
            first, second = parse_replay(replay, encoder=encode)
        except SkipBattle:
            continue
        decisions += len(first.decisions) + len(second.decisions)
    return decisions


def run_parse_bench(
    format_id: str = "gen9randombattle", battles: int = 300, seed: int = 0, chunks: int = 10
) -> ParseBenchResult:
    replays = corpus(format_id, battles, seed)
    logging.getLogger("bench").setLevel(logging.CRITICAL)
    if replays:  # warm-up, untimed: imports and data files load once per process
        _parse_and_encode(replays[:1])
        _poke_env_track(replays[0])
    cold = _timed_pass(replays, chunks)
    steady = _timed_pass(replays, chunks)
    return ParseBenchResult(
        replays=len(replays),
        decisions=steady[0],
        seconds=steady[1],
        poke_env_seconds=steady[2],
        cold_seconds=cold[1],
        poke_env_cold_seconds=cold[2],
        mode=native.mode(),
    )


def _timed_pass(replays: list[Replay], chunks: int) -> tuple[int, float, float]:
    """(decisions, pokeagent seconds, poke-env seconds) of one pass, taking turns by chunk."""
    decisions, ours, theirs = 0, 0.0, 0.0
    size = max(1, -(-len(replays) // chunks))
    for start in range(0, len(replays), size):
        chunk = replays[start : start + size]
        started = time.perf_counter()
        decisions += _parse_and_encode(chunk)
        ours += time.perf_counter() - started
        started = time.perf_counter()
        for replay in chunk:
            _poke_env_track(replay)
        theirs += time.perf_counter() - started
    return decisions, ours, theirs
