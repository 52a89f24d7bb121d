"""What each player knows of its own team from the start of a battle (DESIGN.md, "What a player
knows"): the whole log read ahead (`build_hindsight`), or a team sheet (`data/teams.py`), or the
live agent's first request. The parser's masks and labels and the encoder's own rows read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pokeagent import native
from pokeagent.showdown import actions as A
from pokeagent.showdown.state import BattleState, PokemonState, SideState, normalise


@dataclass
class TeamMember:
    """A member of a player's own team as the whole log reveals it."""

    species: str
    """Species at the start of the battle (sets the canonical order)."""
    name: str | None
    """Nickname, None when only team preview ever showed it."""
    moves: list[str]
    """Known moves in canonical (slot) order: at most 4, sorted by id."""
    item: str | None
    ability: str | None
    tera_type: str | None
    mega: bool
    """It Mega Evolves (or Primal/Ultra Bursts) at some point."""
    zmove: bool
    """It uses a Z-Move at some point."""

    # Written out: pokeagent/native.py, rule 1.
    def __init__(
        self,
        species: str,
        name: str | None,
        moves: list[str],
        item: str | None,
        ability: str | None,
        tera_type: str | None,
        mega: bool,
        zmove: bool,
    ) -> None:
        self.species = species
        self.name = name
        self.moves = moves
        self.item = item
        self.ability = ability
        self.tera_type = tera_type
        self.mega = mega
        self.zmove = zmove

    def live(self, side: SideState) -> PokemonState | None:
        """Its Pokémon in `side` (the state's), None where the log has not shown it yet."""
        return side.find(self.name) if self.name else None

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_dataclass(self)


@dataclass
class Hindsight:
    """What each player knows of its own team from the start: the whole log, read ahead."""

    team: dict[str, list[TeamMember]]
    """side -> members in canonical order; unknown (never shown) members are not listed."""
    team_size: dict[str, int]

    # Written out: pokeagent/native.py, rule 1.
    def __init__(self, team: dict[str, list[TeamMember]], team_size: dict[str, int]) -> None:
        self.team = team
        self.team_size = team_size

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_dataclass(self)

    def slot_of(self, side: str, name: str | None, species: str | None = None) -> int | None:
        for index, member in enumerate(self.team[side]):
            if name is not None and member.name == name:
                return index
        if species is not None:
            for index, member in enumerate(self.team[side]):
                if member.species == species or (
                    member.species.endswith("-*") and species.startswith(member.species[:-2])
                ):
                    return index
        return None


def build_hindsight(final: BattleState) -> Hindsight:
    team, sizes = {}, {}
    for side_id, side in final.sides.items():
        members = []
        for mon in side.pokemon:
            moves = mon.moves[: A.N_MOVES]
            members.append(
                TeamMember(
                    species=mon.start_species,
                    name=mon.name,
                    moves=sorted(moves, key=normalise),
                    item=mon.first_item,
                    ability=mon.ability,
                    tera_type=mon.tera_type if mon.terastallized else None,
                    mega=mon.mega_evolved,
                    zmove=mon.used_zmove,
                )
            )
        members.sort(key=lambda m: normalise(m.species))
        team[side_id] = members[: A.N_TEAM]
        sizes[side_id] = max(side.team_size, len(team[side_id]))
    return Hindsight(team, sizes)
