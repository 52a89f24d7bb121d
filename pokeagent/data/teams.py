"""A player's own team when it is known in full: from the source (server logs, simulator
battles) or, in live play, from the `|request|` JSON.

Public replays only let the parser read a player's own team in hindsight (what the whole log
reveals); a player in a live battle sees its whole team sheet. Where a replay carries the
team sheets, the parser uses them instead, through the same function the live agent uses, so
the own-team rows the encoder sees are built one way in training and in play.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from pokeagent.data.hindsight import Hindsight, TeamMember
from pokeagent.showdown import actions as A
from pokeagent.showdown.dex import Dex, to_id
from pokeagent.showdown.state import normalise


@cache
def _dex() -> Dex:
    return Dex.load()


def display_name(kind: str, name: str | None, gen: int) -> str | None:
    """The name the battle log prints ('leftovers' -> 'Leftovers'); unknown names unchanged.

    Team sheets store ids or names depending on their origin; the parser compares with the
    log's names (a Choice item by its prefix, moves by name), so sheets are brought to names.
    """
    if not name:
        return name
    getter = {"moves": _dex().move, "items": _dex().item, "abilities": _dex().ability}[kind]
    record = getter(name, gen, include_future=True)
    if record and record["id"] != to_id(record["name"]):
        # A variant named after its base: the log prints "Hidden Power", not "... Fire 60".
        record = getter(record["id"], gen, include_future=True) or record
    return record["name"] if record else name


def _species_name(species: str, gen: int) -> str:
    record = _dex().species(species, gen, include_future=True)
    return record["name"] if record else species


def members_from_sets(
    sets: list[dict], gen: int, hindsight_members: Iterable[TeamMember] = ()
) -> list[TeamMember]:
    """Team sheet (PokemonSet dicts) -> TeamMembers in canonical order (sorted by species id).

    The gimmick flags (the parser's gimmick mask) come from the held item: a Mega Stone or a
    Z-Crystal; `hindsight_members` (what the log revealed) adds the cases a sheet does not show.
    """
    revealed = {m.name: m for m in hindsight_members if m.name}
    members = []
    for pokemon in sets[: A.N_TEAM]:
        species = _species_name(pokemon["species"], gen)
        name = pokemon.get("name") or species
        seen = revealed.get(name)
        moves = [display_name("moves", move, gen) or move for move in pokemon["moves"][: A.N_MOVES]]
        tera = pokemon.get("teraType") if gen == 9 else None
        held = _dex().item(pokemon["item"], gen) if pokemon.get("item") else None
        members.append(
            TeamMember(
                species=species,
                name=name,
                moves=sorted(moves, key=normalise),
                # "" is a known "no item"; a sheet without the key says nothing.
                item=display_name("items", pokemon["item"], gen) if "item" in pokemon else None,
                # Generations 1-2 have no abilities (sheets say "none" or "").
                ability=display_name("abilities", pokemon.get("ability"), gen)
                if gen >= 3
                else None,
                tera_type=tera or None,
                mega=bool(seen and seen.mega) or bool(held and held.get("megaStone")),
                zmove=bool(seen and seen.zmove) or bool(held and held.get("zMove")),
            )
        )
    members.sort(key=lambda m: normalise(m.species))
    return members


def with_known_teams(hindsight: Hindsight, replay, gen: int) -> Hindsight:
    """`hindsight` with each side's team replaced by its team sheet, where the replay has one."""
    if not replay.teams:
        return hindsight
    for side, sets in replay.teams.items():
        members = members_from_sets(sets, gen, hindsight.team.get(side, ()))
        hindsight.team[side] = members
        hindsight.team_size[side] = len(members)
    return hindsight
