"""Showdown battle protocol: one log line -> a Message (sim/SIM-PROTOCOL.md in the pinned package).

A line is `|KIND|arg1|arg2|...|[tag] value|[tag2]`. Positional arguments come first; trailing
`[from] ...`, `[of] ...`, `[still]`, ... are tags. Pokémon are named `p1a: Nickname` (position +
nickname) in events and `Species, L50, M, shiny, tera:Fairy` in details strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, TypeVar

from pokeagent import native

_TAG: Final = re.compile(r"^\[(\w+)\]\s*(.*)$")

ROOM_LINES: Final = frozenset(
    {
        "t:",
        "j",
        "J",
        "l",
        "L",
        "n",
        "N",
        "c",
        "c:",
        "chat",
        "raw",
        "html",
        "uhtml",
        "uhtmlchange",
        "inactive",
        "inactiveoff",
    }
)
"""Kinds of lines about the room, not the battle: the timer, chat, people coming and going."""


# The battle message kinds this library acts on, numbered (`Message.code`): the state and the
# parser dispatch on the number, a C comparison where they are compiled, where comparing kind
# strings costs a call per comparison. Any other kind is K_OTHER. The kinds whose handlers may
# change what `BattleState.version` covers come as one block (K_FIRST_GLOBAL..K_LAST_GLOBAL).
K_OTHER: Final = 0
K_MOVE: Final = 1
K_DAMAGE: Final = 2
K_HEAL: Final = 3
K_SWITCH: Final = 4
K_TURN: Final = 5
K_BOOST: Final = 6
K_UNBOOST: Final = 7
K_STATUS: Final = 8
K_CURESTATUS: Final = 9
K_CANT: Final = 10
K_START: Final = 11
K_END: Final = 12
K_ACTIVATE: Final = 13
K_ITEM: Final = 14
K_ENDITEM: Final = 15
K_ABILITY: Final = 16
K_DRAG: Final = 17
K_REPLACE: Final = 18
K_DETAILSCHANGE: Final = 19
K_FORMECHANGE: Final = 20
K_SETHP: Final = 21
K_PLAYER: Final = 22
K_TIER: Final = 23
K_POKE: Final = 24
K_TEAMPREVIEW: Final = 25
K_BATTLE_START: Final = 26
K_WIN: Final = 27
K_TIE: Final = 28
K_RULE: Final = 29
K_GAMETYPE: Final = 30
K_CURETEAM: Final = 31
K_SETBOOST: Final = 32
K_CLEARBOOST: Final = 33
K_CLEARALLBOOST: Final = 34
K_CLEARNEGATIVEBOOST: Final = 35
K_CLEARPOSITIVEBOOST: Final = 36
K_INVERTBOOST: Final = 37
K_COPYBOOST: Final = 38
K_SWAPBOOST: Final = 39
K_TRANSFORM: Final = 40
K_MUSTRECHARGE: Final = 41
K_BURST: Final = 42
K_FIRST_GLOBAL: Final = 50
K_FAINT: Final = 50
K_GEN: Final = 51
K_TEAMSIZE: Final = 52
K_CLEARPOKE: Final = 53
K_TERASTALLIZE: Final = 54
K_MEGA: Final = 55
K_ZPOWER: Final = 56
K_WEATHER: Final = 57
K_FIELDSTART: Final = 58
K_FIELDEND: Final = 59
K_SIDESTART: Final = 60
K_SIDEEND: Final = 61
K_SWAPSIDECONDITIONS: Final = 62
K_LAST_GLOBAL: Final = 62

KIND_CODES: Final[dict[str, int]] = {
    "move": K_MOVE,
    "-damage": K_DAMAGE,
    "-heal": K_HEAL,
    "switch": K_SWITCH,
    "turn": K_TURN,
    "-boost": K_BOOST,
    "-unboost": K_UNBOOST,
    "-status": K_STATUS,
    "-curestatus": K_CURESTATUS,
    "cant": K_CANT,
    "-start": K_START,
    "-end": K_END,
    "-activate": K_ACTIVATE,
    "-item": K_ITEM,
    "-enditem": K_ENDITEM,
    "-ability": K_ABILITY,
    "drag": K_DRAG,
    "replace": K_REPLACE,
    "detailschange": K_DETAILSCHANGE,
    "-formechange": K_FORMECHANGE,
    "-sethp": K_SETHP,
    "player": K_PLAYER,
    "tier": K_TIER,
    "poke": K_POKE,
    "teampreview": K_TEAMPREVIEW,
    "start": K_BATTLE_START,
    "win": K_WIN,
    "tie": K_TIE,
    "rule": K_RULE,
    "gametype": K_GAMETYPE,
    "-cureteam": K_CURETEAM,
    "-setboost": K_SETBOOST,
    "-clearboost": K_CLEARBOOST,
    "-clearallboost": K_CLEARALLBOOST,
    "-clearnegativeboost": K_CLEARNEGATIVEBOOST,
    "-clearpositiveboost": K_CLEARPOSITIVEBOOST,
    "-invertboost": K_INVERTBOOST,
    "-copyboost": K_COPYBOOST,
    "-swapboost": K_SWAPBOOST,
    "-transform": K_TRANSFORM,
    "-mustrecharge": K_MUSTRECHARGE,
    "-burst": K_BURST,
    "faint": K_FAINT,
    "gen": K_GEN,
    "teamsize": K_TEAMSIZE,
    "clearpoke": K_CLEARPOKE,
    "-terastallize": K_TERASTALLIZE,
    "-mega": K_MEGA,
    "-zpower": K_ZPOWER,
    "-weather": K_WEATHER,
    "-fieldstart": K_FIELDSTART,
    "-fieldend": K_FIELDEND,
    "-sidestart": K_SIDESTART,
    "-sideend": K_SIDEEND,
    "-swapsideconditions": K_SWAPSIDECONDITIONS,
}
"""Kind -> its code; a kind not listed is K_OTHER."""


@dataclass(slots=True)
class Message:
    """One protocol line, split."""

    kind: str
    """The message kind without the leading `|`: 'move', 'switch', '-damage', 'turn', ..."""
    args: list[str]
    """Positional arguments."""
    tags: dict[str, str] = field(default_factory=dict)
    """Trailing `[tag] value` arguments: {'from': 'item: Leftovers', 'of': 'p2a: Foo', 'still': ''}."""
    line: str = ""
    """The original line (for error messages)."""
    index: int = field(default=-1, compare=False)
    """Its line's index in the log it came from (-1: not known)."""
    first_ref: PokemonRef | None = field(default=None, compare=False, repr=False)
    """`parse_pokemon_ref(arg(0))`, once `ref()` has been called."""
    first_ref_parsed: bool = field(default=False, compare=False, repr=False)
    code: int = field(init=False, compare=False, repr=False)
    """`KIND_CODES` of the kind (K_OTHER for any other kind)."""

    # Written out: pokeagent/native.py, rule 1.
    def __init__(
        self,
        kind: str,
        args: list[str],
        tags: dict[str, str] | None = None,
        line: str = "",
        index: int = -1,
    ) -> None:
        self.kind = kind
        self.args = args
        self.tags = {} if tags is None else tags
        self.line = line
        self.index = index
        self.first_ref = None
        self.first_ref_parsed = False
        self.code = KIND_CODES.get(kind, K_OTHER)

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_fields(self, ("kind", "args", "tags", "line", "index"), 5)

    def ref(self) -> PokemonRef | None:
        """The Pokémon reference in the first argument (`p1a: Nick`), parsed once per message
        (the state and the parser both ask, in two passes)."""
        if not self.first_ref_parsed:
            self.first_ref = parse_pokemon_ref(self.args[0] if self.args else "")
            self.first_ref_parsed = True
        return self.first_ref

    def arg(self, index: int, default: str = "") -> str:
        return self.args[index] if index < len(self.args) else default


def parse_line(line: str) -> Message | None:
    """Split a protocol line; None for blank lines and lines that are not messages (chat text)."""
    if not line.startswith("|") or len(line) < 2:
        return None
    parts = line[1:].split("|")
    return message_from_fields(parts[0], parts[1:], line)


def message_from_fields(kind: str, fields: list[str], line: str, index: int = -1) -> Message:
    """The message of `line` (line `index` of its log) from its kind and the fields after it
    (arguments and tags)."""
    if "[" not in line:
        return Message(kind, fields, {}, line, index)
    args: list[str] = []
    tags: dict[str, str] = {}
    for part in fields:
        tag = _tag(part) if part.startswith("[") else None
        if tag is not None:
            tags[tag[0]] = tag[1]
        else:
            args.append(part)
    return Message(kind, args, tags, line, index)


_CACHE_LIMIT: Final = 100_000
"""Entries per parse cache: the same few thousand strings recur across battles (tags, Pokémon
names); the caches are cleared when full, so a million-replay job stays small."""
_TAGS: Final[dict[str, tuple[str, str] | None]] = {}

T = TypeVar("T")


def _remember(cache: dict[str, T], text: str, value: T) -> T:
    """Store `value` as what `text` parses to in one of the parse caches (cleared when full)."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[text] = value
    return value


def _tag(part: str) -> tuple[str, str] | None:
    """`[from] item: Leftovers` -> ('from', 'item: Leftovers'); None when not a tag."""
    try:
        return _TAGS[part]
    except KeyError:
        pass
    match = _TAG.match(part)
    return _remember(_TAGS, part, (match.group(1), match.group(2)) if match else None)


@dataclass(frozen=True, slots=True)
class PokemonRef:
    """`p1a: Nickname` -> side 'p1', position 'a' (None for `p1: Nickname`), nickname."""

    side: str
    position: str | None
    name: str

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_dataclass(self)


def parse_pokemon_ref(text: str) -> PokemonRef | None:
    """Parse `p1a: Nickname` / `p1: Nickname`; None when it is not a Pokémon reference."""
    try:
        return _REFS[text]
    except KeyError:
        return _remember(_REFS, text, _parse_pokemon_ref(text))


_REFS: Final[dict[str, PokemonRef | None]] = {}


def _parse_pokemon_ref(text: str) -> PokemonRef | None:
    if len(text) < 4 or text[0] != "p" or text[1] not in "1234":
        return None
    colon = text.find(": ")
    if colon < 0:
        return None
    position = text[2:colon] or None
    return PokemonRef(text[:2], position, text[colon + 2 :])


@dataclass(frozen=True, slots=True)
class Details:
    """`Species, L50, M, shiny, tera:Fairy` split into its parts."""

    species: str
    level: int = 100
    gender: str = ""
    shiny: bool = False
    tera_type: str | None = None

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_dataclass(self)


def parse_details(text: str) -> Details:
    """Parse a details string (from |switch|, |poke|, |detailschange|, |replace|)."""
    try:
        return _DETAILS[text]
    except KeyError:
        return _remember(_DETAILS, text, _parse_details(text))


_DETAILS: Final[dict[str, Details]] = {}


def _parse_details(text: str) -> Details:
    parts = [p.strip() for p in text.split(",")]
    level, gender, shiny, tera = 100, "", False, None
    for part in parts[1:]:
        if part.startswith("L") and part[1:].isdigit():
            level = int(part[1:])
        elif part in ("M", "F"):
            gender = part
        elif part == "shiny":
            shiny = True
        elif part.startswith("tera:"):
            tera = part[5:]
    return Details(parts[0], level, gender, shiny, tera)


def parse_hp_status(text: str) -> tuple[float | None, bool, str | None]:
    """`57/100 par` -> (0.57, fainted=False, 'par'); `0 fnt` -> (0.0, True, None).

    HP is a fraction of the maximum: spectator logs show percentages, player and omniscient logs
    exact HP; the fraction is the same quantity either way.
    """
    try:
        return _HP_STATUS[text]
    except KeyError:
        return _remember(_HP_STATUS, text, _parse_hp_status(text))


_HP_STATUS: Final[dict[str, tuple[float | None, bool, str | None]]] = {}


def _parse_hp_status(text: str) -> tuple[float | None, bool, str | None]:
    text = text.strip()
    if not text:
        return None, False, None
    hp_part, _, status = text.partition(" ")
    if status == "fnt":
        return 0.0, True, None
    if "/" in hp_part:
        cur, _, mx = hp_part.partition("/")
        try:
            cur_v, max_v = float(cur), float(mx)
        except ValueError:
            return None, False, status or None
        return (cur_v / max_v if max_v > 0 else 0.0), cur_v <= 0, status or None
    try:
        value = float(hp_part)
    except ValueError:
        return None, False, status or None
    return value / 100.0, value <= 0, status or None


def effect_name(text: str) -> str:
    """`item: Leftovers` -> 'Leftovers'; `move: Taunt` -> 'Taunt'; `Encore` -> 'Encore'."""
    return _effect(text)[1]


def effect_kind(text: str) -> str:
    """`item: Leftovers` -> 'item'; `ability: Intimidate` -> 'ability'; plain -> ''."""
    return _effect(text)[0]


_EFFECTS: Final[dict[str, tuple[str, str]]] = {}


def _effect(text: str) -> tuple[str, str]:
    """(effect_kind, effect_name) of `text`, memoised."""
    try:
        return _EFFECTS[text]
    except KeyError:
        pass
    head, sep, rest = text.partition(": ")
    kinds = ("item", "ability", "move", "pokemon")
    effect = (
        head if sep and head in kinds else "",
        rest if sep and text.split(":")[0] in kinds else text,
    )
    return _remember(_EFFECTS, text, effect)
