"""poke-env's baseline players, hardened for unattended runs.

poke-env never times out and stalls a battle forever when `choose_move` raises: the players
here catch agent errors, count them, and fall back to a random legal move.
"""

from __future__ import annotations

import random
import secrets

from poke_env.player import MaxBasePowerPlayer, Player, RandomPlayer, SimpleHeuristicsPlayer
from poke_env.ps_client.account_configuration import AccountConfiguration
from poke_env.teambuilder import Teambuilder

BASELINES: dict[str, type[Player]] = {
    "random": RandomPlayer,
    "maxpower": MaxBasePowerPlayer,
    "heuristic": SimpleHeuristicsPlayer,
}
"""Baseline kinds by the name used on the command line."""

MAX_NAME_LENGTH = 18  # Showdown's limit on user names


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
