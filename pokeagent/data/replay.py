"""The Replay record: what every source produces and the parser consumes (DESIGN.md, "Contracts")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# `|player|SIDE|NAME|AVATAR|RATING`: older logs and server logs stop after AVATAR (no trailing
# `|`), newer ones end `|AVATAR|` with an empty RATING; all three must match.
_PLAYER_LINE = re.compile(r"^\|player\|(p[12])\|([^|\n]*)(?:\|[^|\n]*(?:\|(\d+))?)?", re.MULTILINE)
_WIN_LINE = re.compile(r"^\|win\|(.*)$", re.MULTILINE)
_TIE_LINE = re.compile(r"^\|tie\s*$", re.MULTILINE)


@dataclass
class Replay:
    """One battle as a protocol log plus what its source knew about it."""

    id: str
    """Battle id, e.g. `gen9ou-2058494320` (unique within a dataset)."""
    format: str
    """Format id, lower case without spaces, e.g. `gen9ou`."""
    players: tuple[str, str]
    """Player names as p1, p2."""
    log: str
    """Showdown protocol text, one message a line (spectator, player or omniscient view)."""
    ratings: dict[str, int | None] | None = None
    """Ladder ratings {'p1': ..., 'p2': ...} where the source or the log has them, else None."""
    winner: str | None = None
    """Winner's name; None for a tie or an unfinished battle (see `finished`)."""
    source: str = ""
    """Where it came from: a file path (and row or line), a Hub dataset file, 'simulator'..."""
    uploadtime: int | None = None
    """Unix time of the battle/upload when known."""
    extra: dict = field(default_factory=dict)
    """Source-specific fields kept for provenance (e.g. PokéChamp's elo band, month_year)."""
    teams: dict[str, list[dict]] | None = None
    """Each player's own team where the source has it ({'p1': [set, ...], 'p2': [...]}, sets
    as Showdown's PokemonSet: name, species, item, ability, moves, level, teraType): server
    logs and simulator battles. Public replays do not; the parser then uses hindsight."""

    @property
    def finished(self) -> bool:
        """True when the log ends the battle (`|win|` or `|tie`)."""
        return bool(_WIN_LINE.search(self.log) or _TIE_LINE.search(self.log))


def winner_from_log(log: str) -> str | None:
    """The name in the last `|win|NAME` line, or None (tie or unfinished)."""
    matches = _WIN_LINE.findall(log)
    return matches[-1].strip() if matches else None


def ratings_from_log(log: str) -> dict[str, int | None] | None:
    """Ratings from `|player|p1|name|avatar|RATING` lines; None when no line carries one."""
    ratings: dict[str, int | None] = {"p1": None, "p2": None}
    for side, _name, rating in _PLAYER_LINE.findall(log):
        if rating:
            ratings[side] = int(rating)
    return ratings if any(v is not None for v in ratings.values()) else None


def players_from_log(log: str) -> tuple[str, str] | None:
    """(p1, p2) names from the first `|player|` lines that carry a name."""
    names: dict[str, str] = {}
    for side, name, _rating in _PLAYER_LINE.findall(log):
        if name and side not in names:
            names[side] = name
    if "p1" in names and "p2" in names:
        return names["p1"], names["p2"]
    return None


def own_teams(value: object) -> dict[str, list[dict]] | None:
    """{'p1': [set...], 'p2': [set...]} when `value` is one (sets need a species and a move
    list), else None: a malformed team is dropped, never trusted. One side may be absent (a
    game recorded by one of its players, `pokeagent play`): the other keeps its hindsight."""
    if not isinstance(value, dict):
        return None
    teams = {}
    for side in ("p1", "p2"):
        sets = value.get(side)
        if sets is None:
            continue
        if not isinstance(sets, list) or not sets:
            return None
        for pokemon in sets:
            if not (
                isinstance(pokemon, dict)
                and isinstance(pokemon.get("species"), str)
                and isinstance(pokemon.get("moves"), list)
                and all(isinstance(m, str) for m in pokemon["moves"])
            ):
                return None
        teams[side] = sets
    return teams or None
