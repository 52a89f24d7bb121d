"""`pokeagent bench parse`: replays/s and decisions/s per core, beside poke-env's own tracking.

The corpus is fixed: simulator battles from a seed (`simtool battles`), cached in the pokeagent
cache, so figures from different runs and machines compare. Both contestants run on one core in
this process, over the same logs held in memory:

- pokeagent: `parse_replay` with the encoder: both players' trajectories, labels, legal masks and
  the encoded arrays;
- poke-env: one `Battle` object per log fed every line through `Battle.parse_message` (what a
  poke-env player does with the messages it receives): one point of view, no arrays.

Steady state on a shared machine: each contestant first handles one replay untimed (imports,
the dex, poke-env's data files: a one-off cost of 0.1-0.3 s, as much as a hundred replays), then
the two take turns over the corpus in chunks, so load from other processes falls on both alike.
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
    poke_env_seconds: float
    mode: str = ""
    """pokeagent.native.mode(): 'compiled', or why the parser ran uncompiled."""

    @property
    def replays_per_s(self) -> float:
        return self.replays / self.seconds

    @property
    def poke_env_replays_per_s(self) -> float:
        return self.replays / self.poke_env_seconds

    def table(self) -> str:
        ratio = self.replays_per_s / self.poke_env_replays_per_s
        return "\n".join(
            [
                f"corpus: {self.replays} replays, {self.decisions} decisions (both sides)",
                f"pokeagent parser build: {self.mode}",
                f"pokeagent parse+encode, 2 POVs: {self.replays_per_s:8.1f} replays/s  {self.decisions / self.seconds:9.0f} decisions/s",
                f"poke-env Battle tracking, 1 POV: {self.poke_env_replays_per_s:8.1f} replays/s",
                f"ratio pokeagent / poke-env:      {ratio:8.2f}x",
            ]
        )


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
    return ParseBenchResult(
        replays=len(replays),
        decisions=decisions,
        seconds=ours,
        poke_env_seconds=theirs,
        mode=native.mode(),
    )
