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
  accuracy evasion), terastallized, volatile flags (vocab.VOLATILE_FLAGS), choice-locked.
- `globals` float32 [N_GLOBAL_FEATURES]: decision kind one-hot, generation one-hot (1-9),
  turn/100, weather one-hot, terrain one-hot, pseudo-weather flags, side conditions for own then
  opponent side, gimmicks already used (own, opponent), Pokémon left (own, opponent)/6.

The opponent rows carry only what the log had shown by then: the encoder reads the public state
for them and never the hindsight, which holds the player's own team only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import cache
from typing import Final

import numpy as np

from pokeagent.data.hindsight import Hindsight, TeamMember
from pokeagent.showdown import actions as A
from pokeagent.showdown.dex import Dex
from pokeagent.showdown.state import BattleState, PokemonState, SideState, normalise
from pokeagent.showdown.vocab import BOOST_STATS, STATUSES, VOLATILE_FLAGS

ENCODER_VERSION: Final = 1

N_ENTITIES: Final = 2 * A.N_TEAM
TOKEN_FIELDS: Final = (
    "species",
    "ability",
    "item",
    "move1",
    "move2",
    "move3",
    "move4",
    "tera_type",
)
N_TOKEN_FIELDS: Final = len(TOKEN_FIELDS)
PAD: Final = 0
UNKNOWN: Final = 1

MON_FEATURES: Final = (
    "present",
    "revealed",
    "own",
    "active",
    "fainted",
    "hp",
    "level",
    *(f"status_{s}" for s in STATUSES),
    *(f"boost_{b}" for b in BOOST_STATS),
    "terastallized",
    *(f"volatile_{v}" for v in VOLATILE_FLAGS),
    "choice_locked",
)
N_MON_FEATURES: Final = len(MON_FEATURES)

WEATHERS: Final = (
    "sunnyday",
    "raindance",
    "sandstorm",
    "hail",
    "snow",
    "desolateland",
    "primordialsea",
    "deltastream",
)
TERRAINS: Final = ("electricterrain", "grassyterrain", "mistyterrain", "psychicterrain")
PSEUDO_WEATHERS: Final = ("trickroom", "gravity", "magicroom", "wonderroom")
SIDE_CONDITIONS: Final = (
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
GIMMICK_FLAGS: Final = ("used_tera", "used_mega", "used_zmove", "used_dynamax")
GLOBAL_FEATURES: Final = (
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
N_GLOBAL_FEATURES: Final = len(GLOBAL_FEATURES)

_F: Final = {name: i for i, name in enumerate(MON_FEATURES)}
_G: Final = {name: i for i, name in enumerate(GLOBAL_FEATURES)}


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


class _Memo:
    """A dex lookup, memoised: the same few hundred names recur in every battle."""

    def __init__(self, lookup: Callable[[str], int]) -> None:
        self.lookup = lookup
        self.table: dict[str, int] = {}

    def get(self, name: str) -> int:
        value = self.table.get(name)
        if value is None:
            value = self.table[name] = self.lookup(name)
        return value


class _Lookups:
    """Name -> index for each kind of dex entry."""

    def __init__(self, dex: Dex):
        self.species_index = _Memo(dex.species_index)
        self.move_index = _Memo(dex.move_index)
        self.item_index = _Memo(dex.item_index)
        self.ability_index = _Memo(dex.ability_index)
        self.type_index = _Memo(dex.type_index)


@cache
def _lookups() -> _Lookups:
    return _Lookups(_dex())


def _index(lookup: _Memo, name: str | None) -> int:
    if name is None:
        return UNKNOWN
    if name == "":
        return PAD  # known to have none (an item knocked off or consumed)
    return lookup.get(name)


# Column indices, resolved once (the hot loops index arrays with plain ints).
_PRESENT: Final = _F["present"]
_REVEALED: Final = _F["revealed"]
_OWN: Final = _F["own"]
_ACTIVE: Final = _F["active"]
_FAINTED: Final = _F["fainted"]
_HP: Final = _F["hp"]
_LEVEL: Final = _F["level"]
_TERA: Final = _F["terastallized"]
_LOCKED: Final = _F["choice_locked"]
_BIT_PRESENT: Final = 1 << _PRESENT
_BIT_REVEALED: Final = 1 << _REVEALED
_BIT_OWN: Final = 1 << _OWN
_BIT_ACTIVE: Final = 1 << _ACTIVE
_BIT_FAINTED: Final = 1 << _FAINTED
_BIT_TERA: Final = 1 << _TERA
_BIT_LOCKED: Final = 1 << _LOCKED
assert N_MON_FEATURES < 64  # _MonRows keeps a row's 0/1 columns as the bits of an int64
assert _LEVEL == _HP + 1  # _MonRows writes both columns with one slice
_STATUS_COLUMN: Final = {s: _F["status_" + s] for s in STATUSES}
_BOOST_COLUMN: Final = {b: _F["boost_" + b] for b in BOOST_STATS}
_VOLATILE_COLUMN: Final = {v: _F["volatile_" + v] for v in VOLATILE_FLAGS}
_KIND_COLUMN: Final = tuple(_G["kind_" + name] for name in A.KIND_NAMES)
_GEN_COLUMN: Final = {g: _G[f"gen{g}"] for g in range(1, 10)}
_TURN: Final = _G["turn"]
_OWN_LEFT: Final = _G["own_left"]
_OPP_LEFT: Final = _G["opp_left"]
_WEATHER_COLUMN: Final = {w: _G["weather_" + w] for w in WEATHERS}
_TERRAIN_COLUMN: Final = {t: _G["terrain_" + t] for t in TERRAINS}
_FIELD_COLUMN: Final = {p: _G["field_" + p] for p in PSEUDO_WEATHERS}
_CONDITION_COLUMN: Final = {
    prefix: {c: (_G[prefix + c], cap) for c, cap in SIDE_CONDITIONS} for prefix in ("own_", "opp_")
}
_OWN_CONDITIONS: Final = _CONDITION_COLUMN["own_"]
_OPP_CONDITIONS: Final = _CONDITION_COLUMN["opp_"]
assert GIMMICK_FLAGS == ("used_tera", "used_mega", "used_zmove", "used_dynamax")  # _side_globals
_OWN_GIMMICKS: Final[tuple[int, int, int, int]] = (
    _G["own_used_tera"],
    _G["own_used_mega"],
    _G["own_used_zmove"],
    _G["own_used_dynamax"],
)
_OPP_GIMMICKS: Final[tuple[int, int, int, int]] = (
    _G["opp_used_tera"],
    _G["opp_used_mega"],
    _G["opp_used_zmove"],
    _G["opp_used_dynamax"],
)
_UNKNOWN_TOKENS: Final = (UNKNOWN,) * N_TOKEN_FIELDS


def int64_array(values: list[int]) -> np.ndarray:
    """`np.array(values, dtype=np.int64)`, read-only, about twice as fast for a list of ints
    (struct packs them in one C loop; numpy inspects each element)."""
    return np.frombuffer(struct.pack(f"{len(values)}q", *values), dtype=np.int64)


def float64_array(values: list[float]) -> np.ndarray:
    """`np.array(values, dtype=np.float64)`, read-only; see `int64_array`."""
    return np.frombuffer(struct.pack(f"{len(values)}d", *values), dtype=np.float64)


class _Sparse:
    """The non-zero cells of a block of zeroed rows, written in order: (flat index, value).

    Writers append here instead of setting numpy cells one by one (each such write is a Python
    call); `scatter` then places them all with one numpy operation.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.index: list[int] = []
        self.value: list[float] = []

    def scatter(self, rows: np.ndarray, first_row: int = 0) -> None:
        """Write the cells into `rows` (whose row 0 is row `first_row` here), then forget them."""
        if self.index:
            flat = rows.reshape(-1)
            index = int64_array(self.index)
            flat[index - first_row * self.width if first_row else index] = float64_array(self.value)
            self.index, self.value = [], []


class _MonRows:
    """Pokémon feature rows as written, placed into a numpy array only when asked for.

    Every column but HP, level and the boosts is 0 or 1: a row keeps those as the bits of one
    int (bit c = column c), HP and level as floats, and its few boosts as sparse cells. Rows
    are numbered from 0 in order of `write` (row 0 of a pool is its zero padding row).
    """

    def __init__(self) -> None:
        self.first = 0  # number of the first row not yet taken
        self.bits: list[int] = []
        self.hp_level: list[float] = []  # HP and level of each row, one after the other
        self.boost_row: list[int] = []
        self.boost_column: list[int] = []
        self.boost_value: list[float] = []

    def write(self, row: int, bits: int, hp: float, level: float) -> None:
        while self.first + len(self.bits) < row:  # rows skipped stay zero
            self.bits.append(0)
            self.hp_level.append(0.0)
            self.hp_level.append(0.0)
        self.bits.append(bits)
        self.hp_level.append(hp)
        self.hp_level.append(level)

    def boost(self, row: int, column: int, value: float) -> None:
        self.boost_row.append(row - self.first)  # as a row of what `take` returns
        self.boost_column.append(column)
        self.boost_value.append(value)

    def take(self, rows: int) -> np.ndarray:
        """float32 [rows - first, N_MON_FEATURES]: the rows written since the last take (rows
        never written are zero), then forgets them."""
        out = np.zeros((rows - self.first, N_MON_FEATURES), dtype=np.float32)
        n = len(self.bits)
        if n:
            # Each row's bits as 8 little-endian bytes, unpacked: columns 0..N_MON_FEATURES-1.
            packed = np.frombuffer(struct.pack(f"<{n}q", *self.bits), dtype=np.uint8)
            out[:n] = np.unpackbits(
                packed.reshape(n, 8), axis=1, count=N_MON_FEATURES, bitorder="little"
            )
            out[:n, _HP : _LEVEL + 1] = float64_array(self.hp_level).reshape(n, 2)
        if self.boost_row:
            out[int64_array(self.boost_row), int64_array(self.boost_column)] = float64_array(
                self.boost_value
            )
        self.first = rows
        self.bits, self.hp_level = [], []
        self.boost_row, self.boost_column, self.boost_value = [], [], []
        return out


def _mon_features(
    out: _MonRows, row: int, mon: PokemonState, own: bool, choice_locked: bool
) -> None:
    """Write one Pokémon's features as row `row`."""
    bits = _BIT_PRESENT
    if mon.revealed:
        bits |= _BIT_REVEALED
    if own:
        bits |= _BIT_OWN
    if mon.active:
        bits |= _BIT_ACTIVE
    if mon.fainted:
        bits |= _BIT_FAINTED
    column = _STATUS_COLUMN.get(mon.status) if mon.status else None
    if column is not None:
        bits |= 1 << column
    if mon.boosts:  # mostly empty: skip the loop
        for stat, boost in mon.boosts.items():
            column = _BOOST_COLUMN.get(stat)
            if column is not None:
                out.boost(row, column, boost / 6.0)
    if mon.terastallized:
        bits |= _BIT_TERA
    if mon.volatiles:
        for volatile in mon.volatiles:
            column = _VOLATILE_COLUMN.get(volatile)
            if column is not None:
                bits |= 1 << column
    if choice_locked:
        bits |= _BIT_LOCKED
    out.write(row, bits, mon.hp, mon.level / 100.0)


def _own_moves(dex: _Lookups, member: TeamMember) -> tuple[int, ...]:
    moves = member.moves
    return tuple(
        dex.move_index.get(moves[s]) if s < len(moves) else UNKNOWN for s in range(A.N_MOVES)
    )


def _own_tokens(
    dex: _Lookups, member: TeamMember, moves: tuple[int, ...], live: PokemonState | None
) -> tuple[int, ...]:
    """Token row of an own team member the hindsight lists (`moves`: its move tokens)."""
    if live is None:
        return (
            dex.species_index.get(member.species),
            _index(dex.ability_index, member.ability),
            _index(dex.item_index, member.item),
            *moves,
            _index(dex.type_index, member.tera_type),
        )
    return (
        dex.species_index.get(live.forme),
        _index(dex.ability_index, live.ability or member.ability),
        _index(dex.item_index, live.item if live.item is not None else member.item),
        *moves,
        _index(dex.type_index, live.tera_type or member.tera_type),
    )


def _own_features(out: _MonRows, row: int, member: TeamMember, live: PokemonState | None) -> None:
    """Feature row of an own team member the hindsight lists."""
    if live is None:
        out.write(row, _BIT_PRESENT | _BIT_OWN, 1.0, 0.0)
        return
    # The item it holds now: a Choice item knocked off or tricked away locks nothing.
    item = live.item if live.item is not None else member.item
    locked = bool(item and item.startswith("Choice ") and live.active and live.last_move)
    _mon_features(out, row, live, True, locked)


def _unknown_features(out: _MonRows, row: int, own: bool) -> None:
    """A team member the log never shows: exists, nothing known (tokens: all UNKNOWN)."""
    if own:
        out.write(row, _BIT_PRESENT | _BIT_OWN, 0.0, 0.0)
    else:
        out.write(row, _BIT_PRESENT, 1.0, 0.0)


def _opponent_tokens(dex: _Lookups, mon: PokemonState) -> tuple[int, ...]:
    moves = mon.moves
    n_moves = len(moves)
    return (
        dex.species_index.get(mon.forme),
        _index(dex.ability_index, mon.ability),
        _index(dex.item_index, mon.item),
        dex.move_index.get(moves[0]) if n_moves > 0 else UNKNOWN,
        dex.move_index.get(moves[1]) if n_moves > 1 else UNKNOWN,
        dex.move_index.get(moves[2]) if n_moves > 2 else UNKNOWN,
        dex.move_index.get(moves[3]) if n_moves > 3 else UNKNOWN,
        dex.type_index.get(mon.tera_type) if mon.terastallized and mon.tera_type else UNKNOWN,
    )


def _normalised(name: str) -> str:
    """`normalise`, memoised (a few dozen weather and terrain names)."""
    value = _NORMALISED.get(name)
    if value is None:
        value = _NORMALISED[name] = normalise(name)
    return value


_NORMALISED: Final[dict[str, str]] = {}


def _side_globals(
    out: _Sparse,
    base: int,
    side_state: SideState,
    conditions: dict[str, tuple[int, int]],
    gimmicks: tuple[int, int, int, int],
) -> None:
    """One side's conditions and gimmicks used (`gimmicks`: the GIMMICK_FLAGS columns)."""
    index, value = out.index, out.value
    if side_state.conditions:
        for condition, layers in side_state.conditions.items():
            entry = conditions.get(condition)
            if entry is not None:
                index.append(base + entry[0])
                value.append(min(layers, entry[1]) / entry[1])
    # GIMMICK_FLAGS order, read directly (getattr by name is slow where this is compiled)
    if side_state.used_tera:
        index.append(base + gimmicks[0])
        value.append(1.0)
    if side_state.used_mega:
        index.append(base + gimmicks[1])
        value.append(1.0)
    if side_state.used_zmove:
        index.append(base + gimmicks[2])
        value.append(1.0)
    if side_state.used_dynamax:
        index.append(base + gimmicks[3])
        value.append(1.0)


def _globals_body(
    out: _Sparse,
    row: int,
    state: BattleState,
    own_side: SideState,
    opp_side: SideState,
    own_team_size: int,
) -> None:
    """Write the globals except decision kind and turn into zeroed row `row`."""
    index, value = out.index, out.value
    base = row * N_GLOBAL_FEATURES
    column = _GEN_COLUMN.get(state.gen)
    if column is not None:
        index.append(base + column)
        value.append(1.0)
    field = state.field
    for name, columns in ((field.weather, _WEATHER_COLUMN), (field.terrain, _TERRAIN_COLUMN)):
        if name:
            column = columns.get(_normalised(name))
            if column is not None:
                index.append(base + column)
                value.append(1.0)
    for pseudo in field.pseudo_weather:
        column = _FIELD_COLUMN.get(pseudo)
        if column is not None:
            index.append(base + column)
            value.append(1.0)
    _side_globals(out, base, own_side, _OWN_CONDITIONS, _OWN_GIMMICKS)
    _side_globals(out, base, opp_side, _OPP_CONDITIONS, _OPP_GIMMICKS)
    own_fainted = sum(1 for m in own_side.pokemon if m.fainted)
    opp_fainted = sum(1 for m in opp_side.pokemon if m.fainted)
    index.append(base + _OWN_LEFT)
    value.append((own_team_size - own_fainted) / A.N_TEAM)
    index.append(base + _OPP_LEFT)
    value.append((opp_side.team_size - opp_fainted) / A.N_TEAM)


def encode(
    state: BattleState, side: str, hindsight: Hindsight, kind: int = A.TURN
) -> dict[str, np.ndarray]:
    """Arrays for `side`'s view of `state`; `hindsight`: what the player knows of its own team.

    Builds every row from scratch; `IncrementalEncoder` gives the same arrays faster when called
    decision after decision on one battle.
    """
    dex = _lookups()
    other = "p2" if side == "p1" else "p1"
    tokens = np.zeros((N_ENTITIES, N_TOKEN_FIELDS), dtype=np.int32)
    cells = _MonRows()

    own_side, opp_side = state.sides[side], state.sides[other]
    members = hindsight.team[side]
    for row in range(min(hindsight.team_size[side], A.N_TEAM)):
        if row >= len(members):
            tokens[row] = _UNKNOWN_TOKENS
            _unknown_features(cells, row, own=True)
            continue
        member = members[row]
        live = member.live(own_side)
        tokens[row] = _own_tokens(dex, member, _own_moves(dex, member), live)
        _own_features(cells, row, member, live)

    opp_revealed = opp_side.pokemon[: A.N_TEAM]
    for offset, mon in enumerate(opp_revealed):
        tokens[A.N_TEAM + offset] = _opponent_tokens(dex, mon)
        _mon_features(cells, A.N_TEAM + offset, mon, False, False)
    for offset in range(len(opp_revealed), min(opp_side.team_size, A.N_TEAM)):
        tokens[A.N_TEAM + offset] = _UNKNOWN_TOKENS
        _unknown_features(cells, A.N_TEAM + offset, own=False)
    features = cells.take(N_ENTITIES)

    glob = np.zeros((1, N_GLOBAL_FEATURES), dtype=np.float32)
    body = _Sparse(N_GLOBAL_FEATURES)
    _globals_body(body, 0, state, own_side, opp_side, hindsight.team_size[side])
    body.scatter(glob)
    glob[0, _KIND_COLUMN[kind]] = 1.0
    glob[0, _TURN] = state.turn / 100.0
    return {"tokens": tokens, "features": features, "globals": glob[0]}


class IncrementalEncoder:
    """`encode`, decision after decision on one battle: the same arrays, faster.

    Each side keeps a pool of encoded rows, one per (Pokémon, version) it has shown, and a
    decision is a list of pool rows plus its globals: only what changed since the previous
    decision is encoded. `BattleState` bumps `PokemonState.version` for every Pokémon a message
    touches, `SideState.version` when a side's list of Pokémon changes and `BattleState.version`
    when what the globals read changes; so the state must be updated only through
    `BattleState.apply` (as the parser and a live agent do). A new state or hindsight object
    starts over: build a new `Hindsight` rather than editing one in place.

    Live play: `encoder = IncrementalEncoder()` per battle, then `encoder(state, side,
    hindsight, kind)` wherever `encode(state, side, hindsight, kind)` would be called. The
    parser calls `add` at each decision and `stacked` once at the end, which builds every
    decision's arrays with a few whole-trajectory numpy operations.
    """

    def __init__(self) -> None:
        self._sides: dict[str, _SideEncoder] = {}
        self._pools = _Pools()

    def __call__(
        self, state: BattleState, side: str, hindsight: Hindsight, kind: int = A.TURN
    ) -> dict[str, np.ndarray]:
        encoder = self._side(state, side, hindsight)
        return encoder.take(encoder.add(kind))

    def add(self, state: BattleState, side: str, hindsight: Hindsight, kind: int = A.TURN) -> None:
        """Record `side`'s view now; its arrays come later from `stacked(side)`."""
        self._side(state, side, hindsight).add(kind)

    def stacked(self) -> dict[str, dict[str, np.ndarray]]:
        """side -> the arrays of every view of that side recorded with `add`, in order: one
        [T, ...] array per key (sides with nothing recorded are left out). One set of numpy
        operations for all sides: the arrays of each side are views into shared ones."""
        encoders = [e for e in self._sides.values() if e.n_views]
        if not encoders:
            return {}
        pools = self._pools
        pools.arrays()
        view_tokens: list[int] = []
        view_features: list[int] = []
        view_bodies: list[int] = []
        view_kinds: list[int] = []
        view_turns: list[int] = []
        for encoder in encoders:
            view_tokens.extend(encoder.view_tokens)
            view_features.extend(encoder.view_features)
            view_bodies.extend(encoder.view_bodies)
            view_kinds.extend(encoder.view_kinds)
            view_turns.extend(encoder.view_turns)
        n = len(view_bodies)
        shape = (n, N_ENTITIES)
        # `take` gathers rows several times faster than fancy indexing does.
        tokens = pools.tokens.take(int64_array(view_tokens).reshape(shape), axis=0)
        features = pools.features.take(int64_array(view_features).reshape(shape), axis=0)
        glob = pools.bodies.take(int64_array(view_bodies), axis=0)
        glob[np.arange(n), int64_array(view_kinds)] = 1.0
        glob[:, _TURN] = int64_array(view_turns) / 100.0  # as `encode` computes it
        out: dict[str, dict[str, np.ndarray]] = {}
        start = 0
        for encoder in encoders:
            end = start + encoder.n_views
            out[encoder.side] = {
                "tokens": tokens[start:end],
                "features": features[start:end],
                "globals": glob[start:end],
            }
            start = end
        return out

    def _side(self, state: BattleState, side: str, hindsight: Hindsight) -> _SideEncoder:
        encoder = self._sides.get(side)
        if encoder is None or encoder.state is not state or encoder.hindsight is not hindsight:
            encoder = self._sides[side] = _SideEncoder(state, side, hindsight, self._pools)
        return encoder


class _Pools:
    """The rows the sides' views are made of, each written once and never changed (row 0 of
    each pool is padding): token rows (flat `token_values`), Pokémon feature rows and globals
    bodies (kept as written, placed into numpy arrays only when arrays are asked for: `arrays`).
    Shared by both sides of a battle, so that one set of numpy operations serves both."""

    def __init__(self) -> None:
        self.token_values: list[int] = [PAD] * N_TOKEN_FIELDS
        self.feature_cells = _MonRows()
        self.feature_cells.write(0, 0, 0.0, 0.0)
        self.n_features = 1
        self.body_cells = _Sparse(N_GLOBAL_FEATURES)
        self.n_bodies = 1
        # The pools as numpy arrays, up to the rows placed so far.
        self.tokens: np.ndarray = np.zeros((0, N_TOKEN_FIELDS), dtype=np.int32)
        self.features: np.ndarray = np.zeros((0, N_MON_FEATURES), dtype=np.float32)
        self.bodies: np.ndarray = np.zeros((0, N_GLOBAL_FEATURES), dtype=np.float32)

    def token_row(self, values: tuple[int, ...]) -> int:
        index = len(self.token_values) // N_TOKEN_FIELDS
        self.token_values.extend(values)
        return index

    def feature_row(self) -> int:
        self.n_features += 1
        return self.n_features - 1

    def body_row(self) -> int:
        self.n_bodies += 1
        return self.n_bodies - 1

    def arrays(self) -> None:
        """Bring the numpy pools up to every row written so far (only the new rows are made)."""
        done = len(self.tokens)
        if done * N_TOKEN_FIELDS < len(self.token_values):
            values = self.token_values[done * N_TOKEN_FIELDS :]
            packed = struct.pack(f"{len(values)}i", *values)
            new = np.frombuffer(packed, dtype=np.int32).reshape(-1, N_TOKEN_FIELDS)
            self.tokens = np.concatenate([self.tokens, new]) if done else new
        done = len(self.features)
        if done < self.n_features:
            new = self.feature_cells.take(self.n_features)
            self.features = np.concatenate([self.features, new]) if done else new
        done = len(self.bodies)
        if done < self.n_bodies:
            new = np.zeros((self.n_bodies - done, N_GLOBAL_FEATURES), dtype=np.float32)
            self.body_cells.scatter(new, done)
            self.bodies = np.concatenate([self.bodies, new]) if done else new


class _SideEncoder:
    """One side's view of one battle, as rows of the shared `_Pools`.

    Token rows change rarely (forme, item, ability, moves, tera type): this side's are shared
    through `token_rows`, keyed by what they are made of. `current_tokens[r]` /
    `current_features[r]` are the pool rows entity row r shows now, and `row_mon[r]` /
    `row_version[r]` the Pokémon (and version) they were made from.
    """

    def __init__(self, state: BattleState, side: str, hindsight: Hindsight, pools: _Pools) -> None:
        self.pools = pools
        self.dex = _lookups()
        self.state, self.side, self.hindsight = state, side, hindsight
        other = "p2" if side == "p1" else "p1"
        self.own_side, self.opp_side = state.sides[side], state.sides[other]
        self.own_team_size = hindsight.team_size[side]
        self.token_rows: dict[tuple, int] = {}
        self.feature_cells = pools.feature_cells
        own_unknown = self._token_row(("own unknown",), _UNKNOWN_TOKENS)
        opp_unknown = self._token_row(("opp unknown",), _UNKNOWN_TOKENS)
        own_unknown_features, opp_unknown_features = self._feature_row(), self._feature_row()
        _unknown_features(self.feature_cells, own_unknown_features, own=True)
        _unknown_features(self.feature_cells, opp_unknown_features, own=False)
        self.opp_unknown = (opp_unknown, opp_unknown_features)
        self.current_tokens = [0] * N_ENTITIES
        self.current_features = [0] * N_ENTITIES
        members = hindsight.team[side]
        # Own rows with a member (row = canonical slot), with its move tokens; the rest of the
        # own rows never change.
        self.members: list[TeamMember] = []
        self.member_moves: list[tuple[int, ...]] = []
        for row in range(min(self.own_team_size, A.N_TEAM)):
            if row >= len(members):
                self.current_tokens[row] = own_unknown
                self.current_features[row] = own_unknown_features
            else:
                self.members.append(members[row])
                self.member_moves.append(_own_moves(self.dex, members[row]))
        self.own_list_version = -1
        self.lives: list[PokemonState | None] = []
        self.row_mon: list[object] = [_UNSET] * N_ENTITIES
        self.row_version = [-1] * N_ENTITIES
        # What each row's current token row was made of (compared by identity: a field that
        # was not assigned since is the same object).
        self.token_forme: list[object] = [_UNSET] * N_ENTITIES
        self.token_ability: list[object] = [_UNSET] * N_ENTITIES
        self.token_item: list[object] = [_UNSET] * N_ENTITIES
        self.token_tera: list[object] = [_UNSET] * N_ENTITIES
        self.token_moves = [-1] * N_ENTITIES
        self.opp_list_version = -1
        self.opp_mons: list[PokemonState] = []  # in rows N_TEAM, N_TEAM + 1, ...
        # Globals without kind and turn: a body row per state version seen.
        self.body = -1
        self.body_version = -1
        # Per recorded view: token rows, feature rows, globals row, kind column, turn.
        self.n_views: int = 0
        self.view_tokens: list[int] = []  # flat: N_ENTITIES per view
        self.view_features: list[int] = []
        self.view_bodies: list[int] = []
        self.view_kinds: list[int] = []
        self.view_turns: list[int] = []  # the turn (kept as an int: no float object per view)

    def _token_row(self, key: tuple, values: tuple[int, ...]) -> int:
        index = self.token_rows[key] = self.pools.token_row(values)
        return index

    def _feature_row(self) -> int:
        return self.pools.feature_row()

    def add(self, kind: int) -> int:
        dex, token_rows = self.dex, self.token_rows
        current_tokens, current_features = self.current_tokens, self.current_features
        row_mon, row_version = self.row_mon, self.row_version
        own_side, opp_side = self.own_side, self.opp_side
        cells = self.feature_cells
        if own_side.version != self.own_list_version:
            self.own_list_version = own_side.version
            self.lives = [member.live(own_side) for member in self.members]
        members, member_moves, lives = self.members, self.member_moves, self.lives
        token_forme, token_ability = self.token_forme, self.token_ability
        token_item, token_tera = self.token_item, self.token_tera
        for row in range(len(members)):  # member i sits in own row i
            member, moves = members[row], member_moves[row]
            live: PokemonState | None = lives[row]
            key: tuple
            if live is None:
                if row_mon[row] is None:
                    continue
                key = (row,)
                token = token_rows.get(key)
                if token is None:
                    token = self._token_row(key, _own_tokens(dex, member, moves, live))
            else:
                if live is row_mon[row] and live.version == row_version[row]:
                    continue
                forme, ability, item, tera = live.forme, live.ability, live.item, live.tera_type
                if (
                    live is row_mon[row]
                    and forme is token_forme[row]
                    and ability is token_ability[row]
                    and item is token_item[row]
                    and tera is token_tera[row]
                ):
                    token = current_tokens[row]  # what the token row is made of is unchanged
                else:
                    # Keyed by what the row shows: an ability or item the log reveals for the
                    # first time is the one the hindsight had already filled in.
                    key = (
                        row,
                        forme,
                        ability or member.ability,
                        item if item is not None else member.item,
                        tera or member.tera_type,
                    )
                    token = token_rows.get(key)
                    if token is None:
                        token = self._token_row(key, _own_tokens(dex, member, moves, live))
                    token_forme[row], token_ability[row] = forme, ability
                    token_item[row], token_tera[row] = item, tera
            current_tokens[row] = token
            index = self._feature_row()
            _own_features(cells, index, member, live)
            current_features[row] = index
            row_mon[row] = live
            row_version[row] = live.version if live is not None else -1

        if opp_side.version != self.opp_list_version:
            self.opp_list_version = opp_side.version
            revealed = opp_side.pokemon[: A.N_TEAM]
            unknown = min(opp_side.team_size, A.N_TEAM)
            for offset in range(len(revealed), A.N_TEAM):
                row = A.N_TEAM + offset
                token, index = self.opp_unknown if offset < unknown else (0, 0)
                current_tokens[row], current_features[row] = token, index
                row_mon[row] = _UNSET
            self.opp_mons = revealed
        token_moves = self.token_moves
        opp_mons = self.opp_mons
        for offset in range(len(opp_mons)):
            mon, row = opp_mons[offset], A.N_TEAM + offset
            if mon is row_mon[row] and mon.version == row_version[row]:
                continue
            forme, ability, item = mon.forme, mon.ability, mon.item
            tera = mon.tera_type if mon.terastallized else None
            n_moves = len(mon.moves)  # moves are only ever appended
            if (
                mon is row_mon[row]
                and forme is token_forme[row]
                and ability is token_ability[row]
                and item is token_item[row]
                and tera is token_tera[row]
                and n_moves == token_moves[row]
            ):
                token = current_tokens[row]  # what the token row is made of is unchanged
            else:
                opp_key: tuple = (forme, ability, item, tuple(mon.moves[: A.N_MOVES]), tera)
                token = token_rows.get(opp_key)
                if token is None:
                    token = self._token_row(opp_key, _opponent_tokens(dex, mon))
                token_forme[row], token_ability[row] = forme, ability
                token_item[row], token_tera[row] = item, tera
                token_moves[row] = n_moves
            current_tokens[row] = token
            index = self._feature_row()
            _mon_features(cells, index, mon, False, False)
            current_features[row] = index
            row_mon[row] = mon
            row_version[row] = mon.version

        state = self.state
        if state.version != self.body_version or self.body < 0:
            self.body_version = state.version
            self.body = self.pools.body_row()
            _globals_body(
                self.pools.body_cells, self.body, state, own_side, opp_side, self.own_team_size
            )
        self.view_tokens.extend(current_tokens)
        self.view_features.extend(current_features)
        self.view_bodies.append(self.body)
        self.view_kinds.append(_KIND_COLUMN[kind])
        self.view_turns.append(state.turn)
        self.n_views += 1
        return self.n_views - 1

    def take(self, view: int) -> dict[str, np.ndarray]:
        pools = self.pools
        pools.arrays()
        glob = pools.bodies[self.view_bodies[view]].copy()
        glob[self.view_kinds[view]] = 1.0
        glob[_TURN] = self.view_turns[view] / 100.0
        rows = slice(view * N_ENTITIES, (view + 1) * N_ENTITIES)
        return {
            "tokens": pools.tokens[self.view_tokens[rows]],
            "features": pools.features[self.view_features[rows]],
            "globals": glob,
        }


class ObservationView:
    """One decision's arrays as a read-only mapping (`obs["tokens"]`...): views into its
    trajectory's stacked arrays, made when asked for (most consumers read the stacked arrays)."""

    __slots__ = ("index", "stacked")

    def __init__(self, stacked: dict[str, np.ndarray], index: int) -> None:
        self.stacked = stacked
        self.index = index

    def __getitem__(self, key: str) -> np.ndarray:
        return self.stacked[key][self.index]

    def __reduce__(self) -> tuple:  # pickle and copy (a compiled class needs it)
        return ObservationView, (self.stacked, self.index)

    def __iter__(self):
        return iter(self.stacked)

    def __len__(self) -> int:
        return len(self.stacked)

    def __contains__(self, key: object) -> bool:
        return key in self.stacked

    def keys(self):
        return self.stacked.keys()

    def items(self):
        return [(key, self[key]) for key in self.stacked]


# Row marker: nothing written yet, or a row that shows no Pokémon object.
_UNSET: Final = object()
