"""BattleState: what the protocol log has shown so far, updated message by message (singles).

The state holds the public knowledge of a battle: both sides as the log reveals them. What ONE
player knows is this public state plus that player's knowledge of its own team, which comes
from hindsight over the whole log (replays) or from `|request|` JSON (live play); the encoder
combines the two (`pokeagent.data.encode`), so this module never decides who knows what.

Unknown message kinds are counted in `unknown_kinds` and otherwise ignored: the protocol grows
with every Showdown release, and a new message must never crash a million-replay job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from pokeagent import native
from pokeagent.showdown.protocol import (
    K_ABILITY,
    K_ACTIVATE,
    K_BOOST,
    K_CANT,
    K_CURESTATUS,
    K_DAMAGE,
    K_END,
    K_ENDITEM,
    K_FAINT,
    K_FIRST_GLOBAL,
    K_HEAL,
    K_ITEM,
    K_LAST_GLOBAL,
    K_MOVE,
    K_SIDESTART,
    K_START,
    K_STATUS,
    K_SWITCH,
    K_TERASTALLIZE,
    K_TURN,
    K_UNBOOST,
    K_WEATHER,
    KIND_CODES,
    ROOM_LINES,
    Message,
    PokemonRef,
    effect_kind,
    effect_name,
    parse_details,
    parse_hp_status,
    parse_pokemon_ref,
)
from pokeagent.showdown.vocab import BOOST_STATS, TRACKED_VOLATILES

GEN1_PARTIAL_TRAPPING_MOVES: Final = frozenset({"Bind", "Clamp", "Fire Spin", "Wrap"})
"""Gen 1 moves that cancel their target's recharge turn (data/mods/gen1/moves.ts: onTryMove)."""

KNOWN_IGNORED: Final = ROOM_LINES | frozenset(
    {
        "",
        "timestamp",
        "rated",
        "rule",
        "seed",
        "split",
        "title",
        "join",
        "leave",
        "name",
        "badge",
        "debug",
        "message",
        "-message",
        "-hint",
        "-crit",
        "-supereffective",
        "-resisted",
        "-immune",
        "-miss",
        "-fail",
        "-block",
        "-notarget",
        "-nothing",
        "-center",
        "-combine",
        "-waiting",
        "-prepare",
        "-anim",
        "-hitcount",
        "-singleturn",
        "-singlemove",
        "-ohko",
        "-zbroken",
        "-fieldactivate",
        "-primal",
        "-endability",
        "-burst",
        "-candynamax",
        "upkeep",
        "teampreview",
        "start",
        "request",
        "sentchoice",
        "choice",
        "error",
        "bigerror",
        "askreg",
        "deinit",
        "init",
        "noinit",
        "notify",
        "tempnotify",
        "tempnotifyoff",
        "expire",
        "done",
        "unlink",
        "poke",
        "clearpoke",
        "updatepoke",
        "gametype",
        "gen",
        "tier",
        "player",
        "teamsize",
        "turn",
        "win",
        "tie",
        "cant",
        "move",
        "switch",
        "drag",
        "replace",
        "faint",
        "detailschange",
        "swap",
        "hidelines",
        "customgroup",
        "bestof",
    }
)


def normalise(name: str) -> str:
    """Lower-case alphanumerics: Showdown's toID ('Leech Seed' -> 'leechseed')."""
    try:
        return _NORMALISED[name]
    except KeyError:
        pass
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    if len(_NORMALISED) >= 100_000:
        _NORMALISED.clear()  # the same few thousand names recur; stay small over a long job
    _NORMALISED[name] = key
    return key


_NORMALISED: Final[dict[str, str]] = {}


@dataclass
class PokemonState:
    """One Pokémon as the log has shown it."""

    side: str
    species: str
    """Species/forme as shown by switch-ins and lasting changes (`|detailschange|`: Mega...)."""
    start_species: str
    """The species it was first shown as (team preview or first switch-in); fixes team order."""
    name: str | None = None
    """Nickname as in `p1a: NAME`; None for a team-preview entry not yet seen in battle."""
    level: int = 100
    gender: str = ""
    hp: float = 1.0
    """Fraction of maximum HP."""
    fainted: bool = False
    status: str | None = None
    """brn, par, slp, frz, psn, tox, or None."""
    boosts: dict[str, int] = field(default_factory=dict)
    volatiles: set[str] = field(default_factory=set)
    moves: list[str] = field(default_factory=list)
    """Its own moves, in the order the log revealed them (never moves called via other moves)."""
    item: str | None = None
    """Current item: None = unknown, '' = known to hold nothing."""
    first_item: str | None = None
    """The first item the log revealed it started with (not one gained by Trick & co)."""
    ability: str | None = None
    tera_type: str | None = None
    terastallized: bool = False
    active: bool = False
    revealed: bool = False
    """True once it has been in battle (switched in)."""
    last_move: str | None = None
    """Last move it chose since it switched in (choice-item locks)."""
    mega_evolved: bool = False
    used_zmove: bool = False
    """It used a Z-Move (so it holds a Z-Crystal)."""
    disabled_move: str | None = None
    encored_move: str | None = None
    temporary_forme: str | None = None
    """A `-formechange` forme (Aegislash-Blade, Minior-Meteor...) until it switches out."""
    version: int = field(default=0, compare=False, repr=False)
    """Bumped by `BattleState.apply` whenever a message may have changed this Pokémon (what
    `IncrementalEncoder` re-encodes)."""

    # Written out: pokeagent/native.py, rule 1.
    # Callers pass the fields after `start_species` by name only.
    def __init__(
        self, side: str, species: str, start_species: str, name: str | None = None
    ) -> None:
        self.side = side
        self.species = species
        self.start_species = start_species
        self.name = name
        self.level = 100
        self.gender = ""
        self.hp = 1.0
        self.fainted = False
        self.status = None
        self.boosts = {}
        self.volatiles = set()
        self.moves = []
        self.item = None
        self.first_item = None
        self.ability = None
        self.tera_type = None
        self.terastallized = False
        self.active = False
        self.revealed = False
        self.last_move = None
        self.mega_evolved = False
        self.used_zmove = False
        self.disabled_move = None
        self.encored_move = None
        self.temporary_forme = None
        self.version = 0

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_dataclass(self, 4)

    @property
    def forme(self) -> str:
        """What it looks like right now."""
        return self.temporary_forme or self.species

    def reset_on_switch_out(self) -> None:
        self.active = False
        self.boosts.clear()
        self.volatiles.clear()
        self.last_move = None
        self.disabled_move = None
        self.encored_move = None
        self.temporary_forme = None


@dataclass
class SideState:
    """One player's side as the log has shown it."""

    side: str
    player: str = ""
    team_size: int = 6
    pokemon: list[PokemonState] = field(default_factory=list)
    """In order of reveal (team preview order where there was one)."""
    active: PokemonState | None = None
    conditions: dict[str, int] = field(default_factory=dict)
    """Side conditions (stealthrock, spikes, toxicspikes, stickyweb, reflect, lightscreen,
    auroraveil, tailwind, safeguard, mist, ...) -> layers."""
    used_tera: bool = False
    used_mega: bool = False
    used_zmove: bool = False
    used_dynamax: bool = False
    version: int = field(default=0, compare=False, repr=False)
    """Bumped whenever `pokemon`, a Pokémon's name or `team_size` may have changed."""
    names: dict[str, PokemonState] = field(default_factory=dict, compare=False, repr=False)
    """name -> the first Pokémon of that name, as of `names_version` (`find` keeps it)."""
    names_version: int = field(default=-1, compare=False, repr=False)

    # Written out: pokeagent/native.py, rule 1.
    def __init__(
        self,
        side: str,
        player: str = "",
        team_size: int = 6,
        pokemon: list[PokemonState] | None = None,
        active: PokemonState | None = None,
        conditions: dict[str, int] | None = None,
        used_tera: bool = False,
        used_mega: bool = False,
        used_zmove: bool = False,
        used_dynamax: bool = False,
        version: int = 0,
        names: dict[str, PokemonState] | None = None,
        names_version: int = -1,
    ) -> None:
        self.side = side
        self.player = player
        self.team_size = team_size
        self.pokemon = [] if pokemon is None else pokemon
        self.active = active
        self.conditions = {} if conditions is None else conditions
        self.used_tera = used_tera
        self.used_mega = used_mega
        self.used_zmove = used_zmove
        self.used_dynamax = used_dynamax
        self.version = version
        self.names = {} if names is None else names
        self.names_version = names_version

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_dataclass(self)

    def find(self, name: str) -> PokemonState | None:
        """The (first) Pokémon named `name`; None when none is."""
        if self.names_version != self.version:  # names or the list changed: index again
            names: dict[str, PokemonState] = {}
            for mon in self.pokemon:
                if mon.name is not None and mon.name not in names:
                    names[mon.name] = mon
            self.names, self.names_version = names, self.version
        return self.names.get(name)


@dataclass
class FieldState:
    weather: str | None = None
    terrain: str | None = None
    pseudo_weather: set[str] = field(default_factory=set)
    """trickroom, gravity, magicroom, wonderroom, ..."""

    # Written out: pokeagent/native.py, rule 1.
    def __init__(
        self,
        weather: str | None = None,
        terrain: str | None = None,
        pseudo_weather: set[str] | None = None,
    ) -> None:
        self.weather = weather
        self.terrain = terrain
        self.pseudo_weather = set() if pseudo_weather is None else pseudo_weather

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_dataclass(self)


def _species_matches(preview_species: str, species: str) -> bool:
    """Team preview shows `Zamazenta-*` or the base forme; battle shows the real forme."""
    if preview_species == species:
        return True
    if preview_species.endswith("-*"):
        return species.startswith(preview_species[:-2])
    return species.split("-")[0] == preview_species.split("-")[0] and "-" not in preview_species


class BattleState:
    """The public state of one singles battle, updated with `apply(message)`."""

    def __init__(self) -> None:
        self.sides = {"p1": SideState("p1"), "p2": SideState("p2")}
        self.field = FieldState()
        self.gen = 9
        self.gametype = "singles"
        self.tier = ""
        self.turn = 0
        self.started = False
        self.team_preview = False
        self.ended = False
        self.winner: str | None = None
        self.unknown_kinds: Counter[str] = Counter()
        self.version = 0
        """Bumped whenever the generation, the field, a side's conditions, gimmicks used, team
        size or number of fainted Pokémon may have changed (what the encoder's globals read)."""

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_fields(self, _STATE_ATTRIBUTES, 0)

    # ------------------------------------------------------------------ lookups
    def mon(self, ref_text: str) -> PokemonState | None:
        """The Pokémon named by `p1a: Nick`; None when unknown."""
        return self.mon_ref(parse_pokemon_ref(ref_text))

    def mon_ref(self, ref: PokemonRef | None) -> PokemonState | None:
        """`mon` of a reference already parsed (`Message.ref()`)."""
        if ref is None or ref.side not in self.sides:
            return None
        side = self.sides[ref.side]
        mon = side.find(ref.name)
        if (
            mon is None
            and ref.position is not None
            and side.active is not None
            and side.active.name == ref.name
        ):
            mon = side.active
        if mon is not None:
            mon.version += 1  # looked up to be changed, as a rule: see PokemonState.version
        return mon

    def _switch_in(self, msg: Message) -> None:
        ref = msg.ref()
        if ref is None or ref.side not in self.sides:
            return
        side = self.sides[ref.side]
        details = parse_details(msg.arg(1))
        mon = side.find(ref.name)
        if mon is None:
            side.version += 1  # a name given or a Pokémon added
            # A team-preview entry not yet seen: match by species.
            for candidate in side.pokemon:
                if candidate.name is None and _species_matches(candidate.species, details.species):
                    mon = candidate
                    mon.name = ref.name
                    mon.species = details.species
                    if mon.start_species.endswith("-*"):
                        # Team preview hides some formes (`Zamazenta-*`); its owner knew it.
                        mon.start_species = details.species
                    break
        if mon is None:
            mon = PokemonState(
                side=ref.side, species=details.species, start_species=details.species, name=ref.name
            )
            side.pokemon.append(mon)
        mon.version += 1
        mon.revealed = True
        mon.level, mon.gender = details.level, details.gender
        mon.species = details.species
        if details.tera_type:
            mon.tera_type = details.tera_type
        if side.active is not None and side.active is not mon:
            side.active.reset_on_switch_out()
            side.active.version += 1
        side.active = mon
        mon.active = True
        hp, fainted, status = parse_hp_status(msg.arg(2))
        if hp is not None:
            if mon.fainted != fainted:
                self.version += 1
            mon.hp, mon.fainted = hp, fainted
        mon.status = status

    # ------------------------------------------------------------------ apply
    def apply(self, msg: Message) -> None:
        """Update with one message. Never raises on odd input: unknown things are ignored."""
        code = msg.code
        # The frequent kinds called directly, by the kind's number (protocol.KIND_CODES): the
        # same methods as in _HANDLERS, but a call through that table is a slow Python-level
        # call where this module is compiled, and a number compares in one C instruction.
        if code == K_MOVE:
            self._move(msg)
        elif code in (K_DAMAGE, K_HEAL):
            self._hp_change(msg)
        elif code == K_SWITCH:
            self._switch(msg)
        elif code == K_TURN:
            self._turn(msg)
        elif code == K_BOOST:
            self._boost(msg)
        elif code == K_FAINT:
            self._faint(msg)
        elif code == K_UNBOOST:
            self._unboost(msg)
        elif code == K_WEATHER:
            self._weather(msg)
        elif code == K_ABILITY:
            self._ability(msg)
        elif code == K_STATUS:
            self._status(msg)
        elif code == K_START:
            self._volatile_start(msg)
        elif code == K_ACTIVATE:
            self._activate(msg)
        elif code == K_CANT:
            self._cant(msg)
        elif code == K_END:
            self._volatile_end(msg)
        elif code == K_ENDITEM:
            self._enditem(msg)
        elif code == K_TERASTALLIZE:
            self._terastallize(msg)
        elif code == K_SIDESTART:
            self._sidestart(msg)
        elif code == K_CURESTATUS:
            self._curestatus(msg)
        elif code == K_ITEM:
            self._item(msg)
        else:
            handler = _HANDLERS.get(msg.kind)
            if handler is None:
                if msg.kind not in KNOWN_IGNORED:
                    self.unknown_kinds[msg.kind] += 1
                return
            handler(self, msg)
        if K_FIRST_GLOBAL <= code <= K_LAST_GLOBAL:  # _GLOBAL_KINDS
            self.version += 1

    # Each handler takes (state, msg). Kept as methods for readability.
    def _player(self, msg: Message) -> None:
        side = self.sides.get(msg.arg(0))
        if side is not None and msg.arg(1):
            side.player = msg.arg(1)

    def _teamsize(self, msg: Message) -> None:
        side = self.sides.get(msg.arg(0))
        if side is not None and msg.arg(1).isdigit():
            side.team_size = int(msg.arg(1))
            side.version += 1

    def _gen(self, msg: Message) -> None:
        if msg.arg(0).isdigit():
            self.gen = int(msg.arg(0))

    def _gametype(self, msg: Message) -> None:
        self.gametype = msg.arg(0)

    def _tier(self, msg: Message) -> None:
        self.tier = msg.arg(0)

    def _poke(self, msg: Message) -> None:
        side = self.sides.get(msg.arg(0))
        if side is None:
            return
        details = parse_details(msg.arg(1))
        mon = PokemonState(side=side.side, species=details.species, start_species=details.species)
        mon.level, mon.gender = details.level, details.gender
        if msg.arg(2) == "item":
            mon.item = None  # "has an item" only
        side.pokemon.append(mon)
        side.version += 1

    def _clearpoke(self, msg: Message) -> None:
        for side in self.sides.values():
            side.pokemon = [m for m in side.pokemon if m.name is not None]
            side.version += 1

    def _teampreview(self, msg: Message) -> None:
        self.team_preview = True

    def _start(self, msg: Message) -> None:
        self.started = True

    def _turn(self, msg: Message) -> None:
        if msg.arg(0).isdigit():
            self.turn = int(msg.arg(0))

    def _win(self, msg: Message) -> None:
        self.ended, self.winner = True, msg.arg(0) or None

    def _tie(self, msg: Message) -> None:
        self.ended, self.winner = True, None

    def _move(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        move = msg.arg(1)
        self._reveal_from_tags(msg, mon)
        if self.gen == 1 and move in GEN1_PARTIAL_TRAPPING_MOVES:
            # Gen 1: a partial-trapping move used on a Pokémon that must recharge cancels the
            # recharge, hit or miss (the simulator only hints at it).
            target = self.mon(msg.arg(2))
            if target is not None:
                target.volatiles.discard("mustrecharge")
        # Called by another move or an effect (Metronome, Sleep Talk, Magic Bounce...): not one
        # of its own moves. A lockedmove repeat (Outrage & co) is its own.
        if msg.tags.get("from", "lockedmove") != "lockedmove":
            return
        if (
            move in ("Struggle", "Recharge")
            or "transform" in mon.volatiles
            or "zeffect" in msg.tags
        ):
            mon.last_move = move
            return
        mon.last_move = move
        if move not in mon.moves and not _is_max_or_z(move, msg):
            mon.moves.append(move)

    def _cant(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        reason = msg.arg(1)
        if effect_kind(reason) == "ability" and mon.ability is None:
            mon.ability = effect_name(reason)
        if "recharge" in reason or (self.gen == 1 and reason == "flinch"):
            # Gen 1: flinching takes the place of the recharge turn.
            mon.volatiles.discard("mustrecharge")
        moved = msg.arg(2)
        if moved and moved not in mon.moves and "transform" not in mon.volatiles:
            mon.moves.append(moved)

    def _switch(self, msg: Message) -> None:
        self._switch_in(msg)

    def _replace(self, msg: Message) -> None:
        self._switch_in(msg)

    def _detailschange(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        details = parse_details(msg.arg(1))
        mon.species = details.species
        mon.temporary_forme = None
        if "-Mega" in details.species or details.species.endswith(("-Primal", "-Ultra")):
            mon.mega_evolved = True
        if details.tera_type:
            mon.tera_type = details.tera_type

    def _formechange(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None and msg.arg(1):
            mon.temporary_forme = msg.arg(1)
            self._reveal_from_tags(msg, mon)

    def _faint(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None:
            mon.hp, mon.fainted = 0.0, True

    def _hp_change(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        hp, fainted, status = parse_hp_status(msg.arg(1))
        if hp is not None:
            mon.hp = hp
            if mon.fainted != fainted:
                self.version += 1
            mon.fainted = fainted
        if status is not None:
            mon.status = status
        self._reveal_from_tags(msg, mon)

    def _status(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None:
            mon.status = msg.arg(1) or None
            if self.gen == 1 and mon.status == "slp":
                # Gen 1: put to sleep before its recharge turn, it no longer recharges.
                mon.volatiles.discard("mustrecharge")
            self._reveal_from_tags(msg, mon)

    def _curestatus(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None:
            mon.status = None
            self._reveal_from_tags(msg, mon)

    def _cureteam(self, msg: Message) -> None:
        ref = msg.ref()
        if ref is not None and ref.side in self.sides:
            for mon in self.sides[ref.side].pokemon:
                mon.status = None
                mon.version += 1

    def _boost(self, msg: Message, sign: int = 1) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        stat = msg.arg(1)
        try:
            amount = int(msg.arg(2) or 0)
        except ValueError:
            return
        mon.boosts[stat] = max(-6, min(6, mon.boosts.get(stat, 0) + sign * amount))
        self._reveal_from_tags(msg, mon)

    def _unboost(self, msg: Message) -> None:
        self._boost(msg, -1)

    def _setboost(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        try:
            mon.boosts[msg.arg(1)] = max(-6, min(6, int(msg.arg(2))))
        except ValueError:
            return

    def _clearboost(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None:
            mon.boosts.clear()

    def _clearallboost(self, msg: Message) -> None:
        for side in self.sides.values():
            if side.active is not None:
                side.active.boosts.clear()
                side.active.version += 1

    def _clearnegativeboost(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None:
            mon.boosts = {k: v for k, v in mon.boosts.items() if v > 0}

    def _clearpositiveboost(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None:
            mon.boosts = {k: v for k, v in mon.boosts.items() if v < 0}

    def _invertboost(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None:
            mon.boosts = {k: -v for k, v in mon.boosts.items()}

    def _copyboost(self, msg: Message) -> None:
        target, source = self.mon_ref(msg.ref()), self.mon(msg.arg(1))
        if target is not None and source is not None:
            target.boosts = dict(source.boosts)

    def _swapboost(self, msg: Message) -> None:
        a, b = self.mon_ref(msg.ref()), self.mon(msg.arg(1))
        if a is None or b is None:
            return
        stats = [s.strip() for s in msg.arg(2).split(",") if s.strip()] or list(BOOST_STATS)
        for stat in stats:
            a_value, b_value = a.boosts.get(stat, 0), b.boosts.get(stat, 0)
            a.boosts[stat], b.boosts[stat] = b_value, a_value

    def _volatile_start(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        effect = effect_name(msg.arg(1))
        key = normalise(effect)
        if key in TRACKED_VOLATILES:
            mon.volatiles.add(key)
        if key == "encore" and mon.last_move:
            mon.encored_move = mon.last_move
        if key == "dynamax":
            self.sides[mon.side].used_dynamax = True
            self.version += 1
        if key == "disable" and msg.arg(2):
            mon.disabled_move = msg.arg(2)
        self._reveal_from_tags(msg, mon)

    def _volatile_end(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        key = normalise(effect_name(msg.arg(1)))
        mon.volatiles.discard(key)
        if "partiallytrapped" in msg.tags:  # `|-end|POKEMON|Whirlpool|[partiallytrapped]`
            mon.volatiles.discard("partiallytrapped")
        if key == "encore":
            mon.encored_move = None
        if key == "disable":
            mon.disabled_move = None
        self._reveal_from_tags(msg, mon)

    def _activate(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        effect = msg.arg(1)
        if mon is None:
            return
        kind, name = effect_kind(effect), effect_name(effect)
        if kind == "ability" and mon.ability is None:
            mon.ability = name
        elif kind == "item":
            mon.item = name
            if mon.first_item is None:
                mon.first_item = name
        key = normalise(name)
        if key in ("trapped", "meanlook", "block", "spiderweb"):
            mon.volatiles.add("trapped")
        elif key in (
            "bind",
            "wrap",
            "firespin",
            "clamp",
            "whirlpool",
            "sandtomb",
            "magmastorm",
            "infestation",
            "snaptrap",
            "thundercage",
        ):
            mon.volatiles.add("partiallytrapped")
        self._reveal_from_tags(msg, mon)

    def _item(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        item = msg.arg(1)
        source = msg.tags.get("from", "")
        gained = effect_kind(source) == "move" or normalise(effect_name(source)) in (
            "trick",
            "switcheroo",
            "pickup",
            "harvest",
            "recycle",
            "bestow",
            "thief",
            "covet",
            "magician",
            "pickpocket",
            "frisk",
        )
        if normalise(effect_name(source)) == "frisk":
            # Frisk reveals the target's item; the Pokémon named is the target.
            gained = False
        mon.item = item
        if gained:
            # An item taking effect mid-battle starts afresh: a Choice item locks only from
            # the next move (the simulator drops the lock when one arrives, Trick included).
            mon.last_move = None
        if not gained and mon.first_item is None:
            mon.first_item = item
        if source and effect_kind(source) == "ability":
            holder = self.mon(msg.tags.get("of", "")) if "of" in msg.tags else None
            if holder is not None and holder.ability is None:
                holder.ability = effect_name(source)

    def _enditem(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        item = msg.arg(1)
        if mon.first_item is None and normalise(effect_name(msg.tags.get("from", ""))) not in (
            "stealeat",
        ):
            mon.first_item = item
        mon.item = ""

    def _ability(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        source = msg.tags.get("from", "")
        ability = msg.arg(1)
        if source and normalise(effect_name(source)) in (
            "trace",
            "roleplay",
            "skillswap",
            "entrainment",
            "receiver",
            "powerofalchemy",
            "doodle",
        ):
            if normalise(effect_name(source)) == "trace" and mon.ability is None:
                mon.ability = "Trace"
            return
        if mon.ability is None:
            mon.ability = ability

    def _transform(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None:
            mon.volatiles.add("transform")

    def _terastallize(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        mon.tera_type, mon.terastallized = msg.arg(1), True
        self.sides[mon.side].used_tera = True

    def _mega(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is None:
            return
        mon.mega_evolved = True
        if msg.arg(2) and mon.first_item is None:
            mon.first_item = mon.item = msg.arg(2)
        self.sides[mon.side].used_mega = True

    def _zpower(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None:
            mon.used_zmove = True
            self.sides[mon.side].used_zmove = True

    def _mustrecharge(self, msg: Message) -> None:
        mon = self.mon_ref(msg.ref())
        if mon is not None:
            mon.volatiles.add("mustrecharge")

    def _weather(self, msg: Message) -> None:
        weather = msg.arg(0)
        self.field.weather = None if weather in ("none", "") else weather
        source = msg.tags.get("from", "")
        if effect_kind(source) == "ability" and "of" in msg.tags:
            holder = self.mon(msg.tags["of"])
            if holder is not None and holder.ability is None:
                holder.ability = effect_name(source)

    def _fieldstart(self, msg: Message) -> None:
        name = effect_name(msg.arg(0))
        if name.endswith("Terrain"):
            self.field.terrain = name
        else:
            self.field.pseudo_weather.add(normalise(name))
        if "of" in msg.tags and effect_kind(msg.tags.get("from", "")) == "ability":
            holder = self.mon(msg.tags["of"])
            if holder is not None and holder.ability is None:
                holder.ability = effect_name(msg.tags["from"])

    def _fieldend(self, msg: Message) -> None:
        name = effect_name(msg.arg(0))
        if name.endswith("Terrain"):
            if self.field.terrain == name:
                self.field.terrain = None
        else:
            self.field.pseudo_weather.discard(normalise(name))

    def _sidestart(self, msg: Message) -> None:
        side = self.sides.get(msg.arg(0)[:2])
        if side is not None:
            key = normalise(effect_name(msg.arg(1)))
            side.conditions[key] = side.conditions.get(key, 0) + 1

    def _sideend(self, msg: Message) -> None:
        side = self.sides.get(msg.arg(0)[:2])
        if side is not None:
            side.conditions.pop(normalise(effect_name(msg.arg(1))), None)

    def _swapsideconditions(self, msg: Message) -> None:
        p1, p2 = self.sides["p1"], self.sides["p2"]
        p1.conditions, p2.conditions = p2.conditions, p1.conditions

    def _reveal_from_tags(self, msg: Message, mon: PokemonState | None) -> None:
        """`[from] item: Leftovers` / `[from] ability: Rough Skin|[of] p2a: X` reveal an item or ability."""
        if not reveals_item_or_ability(msg):
            return
        source = msg.tags["from"]
        kind = effect_kind(source)
        holder = self.mon(msg.tags["of"]) if "of" in msg.tags else mon
        if holder is None:
            return
        name = effect_name(source)
        if kind == "item":
            holder.item = name
            if holder.first_item is None:
                holder.first_item = name
        elif holder.ability is None:
            holder.ability = name


def reveals_item_or_ability(msg: Message) -> bool:
    """The message has a `[from] item: Leftovers` / `[from] ability: Rough Skin` tag, which
    reveals an item or ability (`BattleState._reveal_from_tags`)."""
    source = msg.tags.get("from")
    return source is not None and effect_kind(source) in ("item", "ability")


def _is_max_or_z(move: str, msg: Message) -> bool:
    """Max Moves and Z-Moves are not moveset moves (the log names them, not the base move)."""
    # (startswith with one string each: a tuple of them is a slow generic call where compiled)
    return move.startswith("Max ") or move.startswith("G-Max ") or "zeffect" in msg.tags


_STATE_ATTRIBUTES: Final = (
    "sides",
    "field",
    "gen",
    "gametype",
    "tier",
    "turn",
    "started",
    "team_preview",
    "ended",
    "winner",
    "unknown_kinds",
    "version",
)
"""What `BattleState.__init__` sets (tests/test_native.py checks), carried by pickle and copy."""

_HANDLERS: Final[dict[str, Callable[[BattleState, Message], None]]] = {
    "player": BattleState._player,
    "teamsize": BattleState._teamsize,
    "gen": BattleState._gen,
    "gametype": BattleState._gametype,
    "tier": BattleState._tier,
    "poke": BattleState._poke,
    "clearpoke": BattleState._clearpoke,
    "teampreview": BattleState._teampreview,
    "start": BattleState._start,
    "turn": BattleState._turn,
    "win": BattleState._win,
    "tie": BattleState._tie,
    "move": BattleState._move,
    "cant": BattleState._cant,
    "switch": BattleState._switch,
    "drag": BattleState._switch,
    "replace": BattleState._replace,
    "detailschange": BattleState._detailschange,
    "-formechange": BattleState._formechange,
    "faint": BattleState._faint,
    "-damage": BattleState._hp_change,
    "-heal": BattleState._hp_change,
    "-sethp": BattleState._hp_change,
    "-status": BattleState._status,
    "-curestatus": BattleState._curestatus,
    "-cureteam": BattleState._cureteam,
    "-boost": BattleState._boost,
    "-unboost": BattleState._unboost,
    "-setboost": BattleState._setboost,
    "-clearboost": BattleState._clearboost,
    "-clearallboost": BattleState._clearallboost,
    "-clearnegativeboost": BattleState._clearnegativeboost,
    "-clearpositiveboost": BattleState._clearpositiveboost,
    "-invertboost": BattleState._invertboost,
    "-copyboost": BattleState._copyboost,
    "-swapboost": BattleState._swapboost,
    "-start": BattleState._volatile_start,
    "-end": BattleState._volatile_end,
    "-activate": BattleState._activate,
    "-item": BattleState._item,
    "-enditem": BattleState._enditem,
    "-ability": BattleState._ability,
    "-transform": BattleState._transform,
    "-terastallize": BattleState._terastallize,
    "-mega": BattleState._mega,
    "-zpower": BattleState._zpower,
    "-mustrecharge": BattleState._mustrecharge,
    "-weather": BattleState._weather,
    "-fieldstart": BattleState._fieldstart,
    "-fieldend": BattleState._fieldend,
    "-sidestart": BattleState._sidestart,
    "-sideend": BattleState._sideend,
    "-swapsideconditions": BattleState._swapsideconditions,
}
_GLOBAL_KINDS: Final = frozenset(
    {
        "gen",
        "teamsize",
        "clearpoke",
        "faint",
        "-terastallize",
        "-mega",
        "-zpower",
        "-weather",
        "-fieldstart",
        "-fieldend",
        "-sidestart",
        "-sideend",
        "-swapsideconditions",
    }
)
"""Kinds whose handlers may change what `BattleState.version` covers; fainting by HP (`-damage`,
a switch-in's HP) and Dynamax (`-start`) bump it where they happen. A new Pokémon (`|poke|`,
a first switch-in) is not fainted: the counts stay."""
BATTLE_STATE_KINDS: Final = frozenset(_HANDLERS)
"""The message kinds `BattleState.apply` reads (every other kind leaves the state as it is)."""
# `apply` finds a kind's handler through its number and bumps the version by number.
assert KIND_CODES.keys() >= BATTLE_STATE_KINDS
assert {k for k, c in KIND_CODES.items() if K_FIRST_GLOBAL <= c <= K_LAST_GLOBAL} == _GLOBAL_KINDS
