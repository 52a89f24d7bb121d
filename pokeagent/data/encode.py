"""The ONE encoder: what a player knows at a decision -> fixed-shape arrays.

The same function serves replays (parse.py passes the public BattleState plus the player's own
team from hindsight) and live play (the agent passes its BattleState plus its own team from the
`|request|` JSON): training and serving cannot drift apart (DESIGN.md).

Schema (ENCODER_VERSION 1), per decision:

- `tokens` int32 [12, 8]: one row per Pokémon. Rows 0-5: the player's own team in canonical
  order (= the switch slots of the action space); rows 6-11: the opponent's Pokémon in the
  order the log revealed them. Columns: species, ability, item, move 1-4, tera type; ids from
  the shipped dex (0 = pad: no such Pokémon/move; 1 = unknown: exists but not revealed). Own
  moves sit in canonical slot order (= the move actions); the opponent's in reveal order.
- `features` float32 [12, N_MON_FEATURES]: present, revealed, is-own, active, fainted, HP
  fraction, level/100, status one-hot (brn par slp frz psn tox), boosts/6 (atk def spa spd spe
  accuracy evasion), terastallized, volatile flags (VOLATILE_FLAGS), choice-locked.
- `globals` float32 [N_GLOBAL_FEATURES]: decision kind one-hot, generation one-hot (1-9),
  turn/100, weather one-hot, terrain one-hot, pseudo-weather flags, side conditions for own then
  opponent side, gimmicks already used (own, opponent), Pokémon left (own, opponent)/6.

The opponent rows carry only what the log had shown by then: the encoder reads the public state
for them and never the hindsight, which holds the player's own team only.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np

from pokeagent.showdown import actions as A
from pokeagent.showdown.dex import Dex
from pokeagent.showdown.state import BattleState, PokemonState, normalise

ENCODER_VERSION = 1

N_ENTITIES = 2 * A.N_TEAM
TOKEN_FIELDS = ("species", "ability", "item", "move1", "move2", "move3", "move4", "tera_type")
N_TOKEN_FIELDS = len(TOKEN_FIELDS)
PAD, UNKNOWN = 0, 1

STATUSES = ("brn", "par", "slp", "frz", "psn", "tox")
BOOSTS = ("atk", "def", "spa", "spd", "spe", "accuracy", "evasion")
VOLATILE_FLAGS = (
    "substitute",
    "confusion",
    "leechseed",
    "taunt",
    "encore",
    "disable",
    "torment",
    "yawn",
    "perishsong",
    "curse",
    "trapped",
    "partiallytrapped",
    "mustrecharge",
    "dynamax",
    "transform",
    "focusenergy",
    "healblock",
    "saltcure",
    "typechange",
    "attract",
)
MON_FEATURES = (
    "present",
    "revealed",
    "own",
    "active",
    "fainted",
    "hp",
    "level",
    *(f"status_{s}" for s in STATUSES),
    *(f"boost_{b}" for b in BOOSTS),
    "terastallized",
    *(f"volatile_{v}" for v in VOLATILE_FLAGS),
    "choice_locked",
)
N_MON_FEATURES = len(MON_FEATURES)

WEATHERS = (
    "sunnyday",
    "raindance",
    "sandstorm",
    "hail",
    "snow",
    "desolateland",
    "primordialsea",
    "deltastream",
)
TERRAINS = ("electricterrain", "grassyterrain", "mistyterrain", "psychicterrain")
PSEUDO_WEATHERS = ("trickroom", "gravity", "magicroom", "wonderroom")
SIDE_CONDITIONS = (
    ("stealthrock", 1),
    ("spikes", 3),
    ("toxicspikes", 2),
    ("stickyweb", 1),
    ("reflect", 1),
    ("lightscreen", 1),
    ("auroraveil", 1),
    ("tailwind", 1),
    ("safeguard", 1),
    ("mist", 1),
)
GIMMICK_FLAGS = ("used_tera", "used_mega", "used_zmove", "used_dynamax")
GLOBAL_FEATURES = (
    *(f"kind_{k}" for k in A.KIND_NAMES),
    *(f"gen{g}" for g in range(1, 10)),
    "turn",
    *(f"weather_{w}" for w in WEATHERS),
    *(f"terrain_{t}" for t in TERRAINS),
    *(f"field_{p}" for p in PSEUDO_WEATHERS),
    *(f"own_{c}" for c, _ in SIDE_CONDITIONS),
    *(f"opp_{c}" for c, _ in SIDE_CONDITIONS),
    *(f"own_{g}" for g in GIMMICK_FLAGS),
    *(f"opp_{g}" for g in GIMMICK_FLAGS),
    "own_left",
    "opp_left",
)
N_GLOBAL_FEATURES = len(GLOBAL_FEATURES)

_F = {name: i for i, name in enumerate(MON_FEATURES)}
_G = {name: i for i, name in enumerate(GLOBAL_FEATURES)}


def schema() -> dict:
    """The schema as data: stored in shard manifests and checkpoints, checked when loading."""
    dex = _dex()
    return {
        "encoder_version": ENCODER_VERSION,
        "dex_version": dex.version,
        "n_actions": A.N_ACTIONS,
        "tokens": [N_ENTITIES, N_TOKEN_FIELDS],
        "token_fields": list(TOKEN_FIELDS),
        "features": [N_ENTITIES, N_MON_FEATURES],
        "feature_names": list(MON_FEATURES),
        "globals": [N_GLOBAL_FEATURES],
        "global_names": list(GLOBAL_FEATURES),
        "vocab": {
            kind: dex.vocab_size(kind)
            for kind in ("species", "moves", "items", "abilities", "types")
        },
    }


@cache
def _dex() -> Dex:
    return Dex.load()


class _Lookups:
    """Name -> index, memoised: the same few hundred names recur in every battle."""

    def __init__(self, dex: Dex):
        size = 1 << 16
        self.species_index = lru_cache(size)(dex.species_index)
        self.move_index = lru_cache(size)(dex.move_index)
        self.item_index = lru_cache(size)(dex.item_index)
        self.ability_index = lru_cache(size)(dex.ability_index)
        self.type_index = lru_cache(size)(dex.type_index)


@cache
def _lookups() -> _Lookups:
    return _Lookups(_dex())


def _index(lookup, name: str | None) -> int:
    if name is None:
        return UNKNOWN
    if name == "":
        return PAD  # known to have none (an item knocked off or consumed)
    return lookup(name)


def _mon_features(row: np.ndarray, mon: PokemonState, own: bool, choice_locked: bool) -> None:
    row[_F["present"]] = 1.0
    row[_F["revealed"]] = float(mon.revealed)
    row[_F["own"]] = float(own)
    row[_F["active"]] = float(mon.active)
    row[_F["fainted"]] = float(mon.fainted)
    row[_F["hp"]] = mon.hp
    row[_F["level"]] = mon.level / 100.0
    if mon.status in STATUSES:
        row[_F["status_" + mon.status]] = 1.0
    for stat, value in mon.boosts.items():
        key = "boost_" + stat
        if key in _F:
            row[_F[key]] = value / 6.0
    row[_F["terastallized"]] = float(mon.terastallized)
    for volatile in mon.volatiles:
        key = "volatile_" + volatile
        if key in _F:
            row[_F[key]] = 1.0
    row[_F["choice_locked"]] = float(choice_locked)


def encode(state: BattleState, side: str, hindsight, kind: int = A.TURN) -> dict[str, np.ndarray]:
    """Arrays for `side`'s view of `state`; `hindsight` is parse.Hindsight (own team knowledge)."""
    dex = _lookups()
    other = "p2" if side == "p1" else "p1"
    tokens = np.zeros((N_ENTITIES, N_TOKEN_FIELDS), dtype=np.int32)
    features = np.zeros((N_ENTITIES, N_MON_FEATURES), dtype=np.float32)
    glob = np.zeros(N_GLOBAL_FEATURES, dtype=np.float32)

    own_side, opp_side = state.sides[side], state.sides[other]
    members = hindsight.team[side]
    team_size = min(hindsight.team_size[side], A.N_TEAM)
    for row in range(team_size):
        if row >= len(members):
            tokens[row, :] = UNKNOWN  # a member the log never shows: exists, nothing known
            features[row, _F["present"]] = 1.0
            features[row, _F["own"]] = 1.0
            continue
        member = members[row]
        live = own_side.find(member.name) if member.name else None
        tokens[row, 0] = dex.species_index(live.forme if live is not None else member.species)
        ability = live.ability if live is not None and live.ability else member.ability
        tokens[row, 1] = _index(dex.ability_index, ability)
        item = live.item if live is not None and live.item is not None else member.item
        tokens[row, 2] = _index(dex.item_index, item)
        for slot in range(A.N_MOVES):
            tokens[row, 3 + slot] = (
                dex.move_index(member.moves[slot]) if slot < len(member.moves) else UNKNOWN
            )
        tera = (live.tera_type if live is not None and live.tera_type else None) or member.tera_type
        tokens[row, 7] = _index(dex.type_index, tera)
        if live is not None:
            locked = bool(
                member.item and member.item.startswith("Choice ") and live.active and live.last_move
            )
            _mon_features(features[row], live, own=True, choice_locked=locked)
        else:
            features[row, _F["present"]] = 1.0
            features[row, _F["own"]] = 1.0
            features[row, _F["hp"]] = 1.0

    opp_revealed = [m for m in opp_side.pokemon][: A.N_TEAM]
    for offset, mon in enumerate(opp_revealed):
        row = A.N_TEAM + offset
        tokens[row, 0] = dex.species_index(mon.forme)
        tokens[row, 1] = _index(dex.ability_index, mon.ability)
        tokens[row, 2] = _index(dex.item_index, mon.item)
        for slot in range(A.N_MOVES):
            tokens[row, 3 + slot] = (
                dex.move_index(mon.moves[slot]) if slot < len(mon.moves) else UNKNOWN
            )
        tokens[row, 7] = (
            dex.type_index(mon.tera_type) if mon.terastallized and mon.tera_type else UNKNOWN
        )
        _mon_features(features[row], mon, own=False, choice_locked=False)
    for offset in range(len(opp_revealed), min(opp_side.team_size, A.N_TEAM)):
        row = A.N_TEAM + offset
        tokens[row, :] = UNKNOWN
        features[row, _F["present"]] = 1.0
        features[row, _F["hp"]] = 1.0

    glob[_G["kind_" + A.KIND_NAMES[kind]]] = 1.0
    if 1 <= state.gen <= 9:
        glob[_G[f"gen{state.gen}"]] = 1.0
    glob[_G["turn"]] = state.turn / 100.0
    if state.field.weather and "weather_" + normalise(state.field.weather) in _G:
        glob[_G["weather_" + normalise(state.field.weather)]] = 1.0
    if state.field.terrain and "terrain_" + normalise(state.field.terrain) in _G:
        glob[_G["terrain_" + normalise(state.field.terrain)]] = 1.0
    for pseudo in state.field.pseudo_weather:
        if "field_" + pseudo in _G:
            glob[_G["field_" + pseudo]] = 1.0
    for prefix, side_state in (("own_", own_side), ("opp_", opp_side)):
        for condition, cap in SIDE_CONDITIONS:
            glob[_G[prefix + condition]] = min(side_state.conditions.get(condition, 0), cap) / cap
        for flag in GIMMICK_FLAGS:
            glob[_G[prefix + flag]] = float(getattr(side_state, flag))
    own_fainted = sum(1 for m in own_side.pokemon if m.fainted)
    opp_fainted = sum(1 for m in opp_side.pokemon if m.fainted)
    glob[_G["own_left"]] = (hindsight.team_size[side] - own_fainted) / A.N_TEAM
    glob[_G["opp_left"]] = (opp_side.team_size - opp_fainted) / A.N_TEAM
    return {"tokens": tokens, "features": features, "globals": glob}
