"""poke-env's baseline players, hardened for unattended runs, and who plays a side: `PlayerSpec`.

poke-env never times out and stalls a battle forever when `choose_move` raises: the players
here catch agent errors, count them, and fall back to a random legal move.

A player is named by a spec (`PlayerSpec.parse`): a baseline kind (`random`, `maxpower`,
`heuristic`) or the trained agent, `agent:PATH[@TEMPERATURE]` (PATH a checkpoint folder, a run
directory (its latest checkpoint) or a model.safetensors; TEMPERATURE 0, the default, plays the
network's most likely legal action, > 0 samples at that temperature). A pool of opponents with
weights is `SPEC[=WEIGHT],...` (`parse_pool`). This layer builds baselines only (`make_player`);
the agent needs the network, so `pokeagent.eval.agent.AgentMaker` builds every kind, and callers
that may name an agent (`generate`, the ladder) take such a maker.
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass
from typing import Protocol

from poke_env.player import MaxBasePowerPlayer, Player, RandomPlayer, SimpleHeuristicsPlayer
from poke_env.ps_client.account_configuration import AccountConfiguration
from poke_env.teambuilder import Teambuilder

BASELINES: dict[str, type[Player]] = {
    "random": RandomPlayer,
    "maxpower": MaxBasePowerPlayer,
    "heuristic": SimpleHeuristicsPlayer,
}
"""Baseline kinds by the name used on the command line."""

AGENT = "agent"
"""The trained agent's kind: `agent:PATH[@TEMPERATURE]`."""

MAX_NAME_LENGTH = 18  # Showdown's limit on user names


def number(text: str) -> float | None:
    """`text` as a finite number, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class PlayerSpec:
    """Who plays one side of a battle: a baseline, or the agent from a checkpoint."""

    kind: str
    """random, maxpower, heuristic or agent."""
    checkpoint: str | None = None
    """agent only: a checkpoint folder, run directory or model.safetensors."""
    temperature: float = 0.0
    """agent only: 0 plays the most likely legal action; > 0 samples at this temperature."""

    def __post_init__(self):
        if self.kind == AGENT:
            if not self.checkpoint:
                raise ValueError("an agent player needs a checkpoint: agent:PATH[@TEMPERATURE]")
            if self.temperature < 0:
                raise ValueError(f"{self}: the temperature must be >= 0")
        elif self.kind in BASELINES:
            if self.checkpoint is not None or self.temperature:
                raise ValueError(f"baseline {self.kind!r} takes no checkpoint or temperature")
        else:
            raise ValueError(
                f"unknown player {self.kind!r}; choose from {sorted(BASELINES)} or "
                f"{AGENT}:PATH[@TEMPERATURE]"
            )

    @classmethod
    def parse(cls, text: str) -> PlayerSpec:
        """`heuristic`, `agent:runs/a/checkpoints/step00001000`, `agent:runs/a@0.7`. A PATH
        ending in `@<number>` gives the temperature; any other `@` stays in the path."""
        text = text.strip()
        kind, colon, rest = text.partition(":")
        if not colon:
            return cls(kind)
        if kind != AGENT:
            raise ValueError(f"{text!r}: only the agent takes a path ({AGENT}:PATH[@TEMPERATURE])")
        path, at, tail = rest.rpartition("@")
        temperature = number(tail) if at else None
        if temperature is None:
            path, temperature = rest, 0.0
        return cls(AGENT, path, temperature)

    def __str__(self) -> str:
        if self.kind != AGENT:
            return self.kind
        return f"{AGENT}:{self.checkpoint}@{self.temperature:g}"


def split_weighted(text: str, option: str) -> list[tuple[str, float]]:
    """`a=2,b,c=0.5` -> [(item, weight), ...]: a weight left out is 1, a weight must be > 0,
    and the list must not be empty; errors name `option` and the item."""
    pool = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        spec, equals, tail = item.rpartition("=")
        weight = number(tail) if equals else None
        if weight is None:
            spec, weight = item, 1.0
        if weight <= 0:
            raise ValueError(f"{option} {item!r}: a weight must be > 0")
        pool.append((spec, weight))
    if not pool:
        raise ValueError(f"{option} {text!r}: an empty pool")
    return pool


def parse_pool(text: str) -> tuple[tuple[PlayerSpec, float], ...]:
    """`heuristic=2,maxpower=1,agent:runs/a@1.0=1` -> ((spec, weight), ...); a weight left out
    is 1. Weights must be > 0."""
    return tuple((PlayerSpec.parse(spec), w) for spec, w in split_weighted(text, "--opponents"))


class TeamPool(Teambuilder):
    """Hands out packed teams from a list, one drawn at random (seeded) per battle."""

    def __init__(self, packed_teams: list[str], seed: int):
        if not packed_teams:
            raise ValueError("TeamPool needs at least one team")
        self.packed_teams = packed_teams
        self.rng = random.Random(seed)

    def yield_team(self) -> str:
        return self.rng.choice(self.packed_teams)


def _guarded(base: type[Player]) -> type[Player]:
    class Guarded(base):
        agent_errors = 0

        def choose_move(self, battle):
            try:
                return super().choose_move(battle)
            except Exception:  # any agent bug: poke-env would stall the battle forever
                self.agent_errors += 1
                return self.choose_random_move(battle)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


GUARDED = {kind: _guarded(cls) for kind, cls in BASELINES.items()}


def unique_name(prefix: str) -> str:
    """A user name unique on the server: auto names collide across processes and then hang."""
    token = secrets.token_hex(3)
    return f"{prefix[: MAX_NAME_LENGTH - len(token) - 1]}-{token}"


def make_baseline(
    kind: str,
    name: str,
    server_configuration,
    battle_format: str,
    team: Teambuilder | None = None,
    max_concurrent_battles: int = 1,
) -> Player:
    """A guarded baseline player of `kind` ('random', 'maxpower' or 'heuristic')."""
    if kind not in GUARDED:
        raise ValueError(f"unknown player kind {kind!r}; choose from {sorted(BASELINES)}")
    return GUARDED[kind](
        account_configuration=AccountConfiguration(name, None),
        server_configuration=server_configuration,
        battle_format=battle_format,
        max_concurrent_battles=max_concurrent_battles,
        team=team,
        log_level=40,
    )


class PlayerMaker(Protocol):
    """Builds the poke-env player of a spec: `make_player` (baselines), or
    `pokeagent.eval.agent.AgentMaker` (every kind, the agent among them)."""

    def __call__(
        self,
        spec: PlayerSpec,
        name: str,
        server_configuration,
        battle_format: str,
        *,
        team: Teambuilder | None = None,
        seed: int = 0,
        max_concurrent_battles: int = 1,
    ) -> Player: ...


def make_player(
    spec: PlayerSpec,
    name: str,
    server_configuration,
    battle_format: str,
    *,
    team: Teambuilder | None = None,
    seed: int = 0,
    max_concurrent_battles: int = 1,
) -> Player:
    """A `PlayerMaker` for baselines (their randomness is the global RNG's: `seed` is unused)."""
    if spec.kind == AGENT:
        raise ValueError(
            f"{spec}: an agent player needs the network; pass `players="
            "pokeagent.eval.agent.AgentMaker()` (the CLI does)"
        )
    return make_baseline(
        spec.kind, name, server_configuration, battle_format, team, max_concurrent_battles
    )
