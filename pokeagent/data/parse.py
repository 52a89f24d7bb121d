"""Replay -> two first-person Trajectories (DESIGN.md, "What a player knows").

Two passes over the log:
1. hindsight: the whole log through a BattleState, for what each player knows of its OWN team
   from the start (species, moves, items, abilities, tera types the log ever reveals), and the
   canonical order of that team (the action space's switch slots);
2. replay: the log again, message by message. At each decision point the state *as it is then*
   is encoded for the deciding side (opponent known only up to that point), and the decision's
   label is read from what follows in the log.

Decision points: team preview; a turn choice for each side with an active Pokémon at every
`|turn|`; a forced switch wherever a side must pick a replacement (after a faint, or mid-turn
after U-turn, Baton Pass, Eject Button, Emergency Exit and the like). Labels are -1 where the
log cannot tell what was chosen: full paralysis, flinch, sleep, recharge, a confusion self-hit,
fainting or being dragged out before moving, a move replaced by Encore, an ambiguous Z-/Max Move.
A gimmick (tera, mega, dynamax) announced at the start of a turn belongs to that turn's move
only: when the move never comes, the gimmick goes unlabelled with it.

A battle that cannot be reconstructed honestly raises `SkipBattle(reason)`; `parse_replay`
never lets any other exception out for bad input (it becomes a 'parser error: ...' skip).
"""

from __future__ import annotations

import gc
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from pokeagent import native
from pokeagent.data.encode import IncrementalEncoder, ObservationView, encode
from pokeagent.data.hindsight import Hindsight, build_hindsight
from pokeagent.data.replay import Replay
from pokeagent.data.teams import with_known_teams
from pokeagent.showdown import actions as A
from pokeagent.showdown.dex import Dex
from pokeagent.showdown.protocol import (
    K_ACTIVATE,
    K_BURST,
    K_CANT,
    K_DAMAGE,
    K_DRAG,
    K_ENDITEM,
    K_FAINT,
    K_HEAL,
    K_MEGA,
    K_MOVE,
    K_REPLACE,
    K_RULE,
    K_START,
    K_SWITCH,
    K_TEAMPREVIEW,
    K_TERASTALLIZE,
    K_TURN,
    K_ZPOWER,
    KIND_CODES,
    Message,
    effect_name,
    message_from_fields,
    parse_details,
)
from pokeagent.showdown.state import (
    BattleState,
    PokemonState,
    reveals_item_or_ability,
)
from pokeagent.showdown.vocab import MOVE_CLOSING_VOLATILES, SELF_TRAPPING_VOLATILES

PARSER_VERSION: Final = 3
"""Bumped whenever labels, masks or decision points change meaning, or a fix changes them (a
pack does not resume across versions): 2 since a gimmick announced for a move that never came
(confusion self-hit) no longer labels the next turn's move, and gen 1's cancelled recharge;
3 since No Retreat and Ingrain close the switch options of their user, and Taunt, Heal Block,
Throat Chop and Torment the moves they forbid."""

SIDES: Final = ("p1", "p2")
_MOVE_SLOTS: Final = tuple(range(A.N_MOVES))
EJECTING_ITEMS: Final = frozenset({"Eject Button", "Eject Pack"})
EJECTING_ABILITIES: Final = frozenset({"Emergency Exit", "Wimp Out"})
ILLUSION_SPECIES: Final = ("Zoroark", "Zorua")


class SkipBattle(Exception):
    """This battle cannot be reconstructed honestly; `reason` is a short, countable name."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Decision:
    """One decision of one player."""

    turn: int
    kind: int
    """actions.TEAM_PREVIEW / TURN / FORCED_SWITCH."""
    legal: np.ndarray
    """bool[N_ACTIONS]: the player's options as far as the log shows them."""
    action: int = A.UNKNOWN_ACTION
    """Index of the choice, or -1 when the log does not reveal it."""
    action_info: dict | None = None
    """The choice by name: {'type': 'move', 'name', 'gimmick'} | {'type': 'switch', 'species'} |
    {'type': 'team', 'lead'}; None when unknown."""
    obs: Any = None
    """The encoder's arrays for the state the player saw, a mapping key -> array (None when
    parsed without encoder); with `encode`, views into the trajectory's `arrays`."""
    active_slot: int | None = None
    """The own team slot (canonical order) of the active Pokémon; None at team preview."""
    line: int = 0
    """Index of the log line at which the decision was taken (the state includes that line
    for turn choices, excludes it for switches)."""
    legal_bits: int = 0
    """`legal` as bits (1 << action) while the parser builds it; `legal` is made at the end."""

    # Written out: pokeagent/native.py, rule 1.
    def __init__(
        self,
        turn: int,
        kind: int,
        legal: np.ndarray,
        action: int = A.UNKNOWN_ACTION,
        action_info: dict | None = None,
        obs: Any = None,
        active_slot: int | None = None,
        line: int = 0,
        legal_bits: int = 0,
    ) -> None:
        self.turn = turn
        self.kind = kind
        self.legal = legal
        self.action = action
        self.action_info = action_info
        self.obs = obs
        self.active_slot = active_slot
        self.line = line
        self.legal_bits = legal_bits

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_dataclass(self)


@dataclass
class Trajectory:
    """One player's decisions in one battle, with the battle's metadata."""

    battle_id: str
    format: str
    gen: int
    side: str
    player: str
    rating: int | None
    opponent_rating: int | None
    outcome: float
    """1 win, 0 loss, 0.5 tie (from this player's view)."""
    source: str
    decisions: list[Decision] = field(default_factory=list)
    team: list[dict] = field(default_factory=list)
    """The canonical team (switch slots): species, nickname, known moves in slot order."""
    parser_version: int = PARSER_VERSION
    arrays: dict[str, np.ndarray] | None = None
    """With `encode`: the decisions' arrays stacked, [T, ...] per key (tokens, features,
    globals, legal); what shards store, without stacking per-decision arrays again."""

    # Written out: pokeagent/native.py, rule 1.
    def __init__(
        self,
        battle_id: str,
        format: str,
        gen: int,
        side: str,
        player: str,
        rating: int | None,
        opponent_rating: int | None,
        outcome: float,
        source: str,
        decisions: list[Decision] | None = None,
        team: list[dict] | None = None,
        parser_version: int = PARSER_VERSION,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.battle_id = battle_id
        self.format = format
        self.gen = gen
        self.side = side
        self.player = player
        self.rating = rating
        self.opponent_rating = opponent_rating
        self.outcome = outcome
        self.source = source
        self.decisions = [] if decisions is None else decisions
        self.team = [] if team is None else team
        self.parser_version = parser_version
        self.arrays = arrays

    def __reduce__(self) -> tuple:  # pickle and copy (see native.reduce_fields)
        return native.reduce_dataclass(self)

    @property
    def labelled(self) -> int:
        return sum(d.action >= 0 for d in self.decisions)


Encoder = Callable[[BattleState, str, "Hindsight", int], dict]
"""(public state, deciding side, own-team hindsight, decision kind) -> arrays."""


def _check_battle(final: BattleState, replaced: bool) -> None:
    """SkipBattle unless the battle can be reconstructed (`replaced`: the log has `|replace|`)."""
    if final.gametype != "singles":
        raise SkipBattle(f"{final.gametype or 'unknown'} battles are not supported")
    if not final.started:
        raise SkipBattle("no start")
    if not final.ended:
        raise SkipBattle("unfinished")
    if not 1 <= final.gen <= 9:
        raise SkipBattle("unknown generation")
    if replaced:
        raise SkipBattle("illusion")
    for side in final.sides.values():
        if len(side.pokemon) > A.N_TEAM:
            raise SkipBattle("more than 6 Pokémon on a side")
        for mon in side.pokemon:
            if mon.species.startswith(ILLUSION_SPECIES) or mon.start_species.startswith(
                ILLUSION_SPECIES
            ):
                raise SkipBattle("illusion")


class _Reconstruction:
    """Pass 2: walks the log once, opening and closing decisions."""

    def __init__(
        self,
        msgs: list[Message],
        hindsight: Hindsight,
        gen: int,
        banned_gimmicks: set[str],
        encoder: Encoder | None,
    ):
        self.msgs = msgs
        self.line_no = 0
        self.hind = hindsight
        self.gen = gen
        self.banned_gimmicks = banned_gimmicks
        # `encode` itself: the same arrays from the incremental encoder, which encodes only what
        # changed since the side's previous decision and builds them all at the end.
        self.incremental = IncrementalEncoder() if encoder is encode else None
        self.encoder = encoder
        self.state = BattleState()
        self.decisions: dict[str, list[Decision]] = {s: [] for s in SIDES}
        self.pending_turn: dict[str, Decision] = {}
        self.pending_forced: dict[str, Decision] = {}
        self.pending_preview: dict[str, Decision] = {}
        self.gimmick_now: dict[str, str] = {}
        self.in_turns = False
        self.pursuit_target: str | None = None
        self.gen1_frozen_or_asleep: set[str] = set()
        self.slots: dict[str, dict[str | None, int | None]] = {side: {} for side in SIDES}
        # side -> (SideState.version, each hindsight member's live Pokémon or None)
        self.lives: dict[str, tuple[int, list[PokemonState | None]]] = {}
        self.stacked: dict[str, dict[str, np.ndarray]] = {}

    # --------------------------------------------------------------- decisions
    def _slot(self, side: str, name: str | None) -> int | None:
        """`hind.slot_of(side, name)`, memoised (the hindsight does not change in the walk)."""
        slots = self.slots[side]
        if name in slots:
            return slots[name]
        slot = slots[name] = self.hind.slot_of(side, name)
        return slot

    def _lives(self, side: str) -> list[PokemonState | None]:
        """Each hindsight member's Pokémon in the state now (None: not seen yet), by canonical
        slot; found again only when the side's list of Pokémon changed."""
        live = self.state.sides[side]
        cached = self.lives.get(side)
        if cached is not None and cached[0] == live.version:
            return cached[1]
        lives = [member.live(live) for member in self.hind.team[side]]
        self.lives[side] = (live.version, lives)
        return lives

    def _open(self, side: str, kind: int, legal_bits: int) -> Decision:
        active = self.state.sides[side].active
        slot = self._slot(side, active.name) if active is not None else None
        decision = Decision(
            turn=self.state.turn,
            kind=kind,
            legal=_NO_MASK,
            line=self.line_no,
            active_slot=slot,
            legal_bits=legal_bits,
        )
        if self.incremental is not None:
            self.incremental.add(self.state, side, self.hind, kind)
        elif self.encoder is not None:
            decision.obs = self.encoder(self.state, side, self.hind, kind)
        self.decisions[side].append(decision)
        return decision

    def _label(self, decision: Decision, action: int, info: dict | None) -> None:
        if action >= 0:
            # The log proves the option existed: where the mask was too strict (e.g. hidden
            # trapping rules), trust the log.
            decision.legal_bits |= 1 << action
        decision.action, decision.action_info = action, info

    def _close_turn(self, side: str) -> None:
        # `in` and `del`, not `dict.pop(key, None)`: a generic method call where compiled.
        if side in self.pending_turn:
            del self.pending_turn[side]
        if side in self.gimmick_now:
            del self.gimmick_now[side]

    # --------------------------------------------------------------- legal masks
    def _switch_mask(self, side: str) -> int:
        """Switch actions open to `side` (bits): members not known to be fainted or active."""
        lives = self._lives(side)
        bits = 0
        for index in range(min(self.hind.team_size[side], A.N_TEAM)):
            if index < len(lives):
                mon = lives[index]
                if mon is not None and (mon.fainted or mon.active):
                    continue
            bits |= 1 << (A.SWITCH_BASE + index)
        return bits

    def _turn_mask(self, side: str) -> int:
        active = self.state.sides[side].active
        slot = self._slot(side, active.name) if active is not None else None
        moves = self.hind.team[side][slot].moves if slot is not None else []
        usable = _MOVE_SLOTS
        if active is not None and "mustrecharge" in active.volatiles:
            # Recharging: the one option is the request's "Recharge", played as slot 0 (as the
            # live agent maps it); no switch, no gimmick.
            return 1 << A.MOVE_BASE
        if moves and active is not None and slot is not None:
            # The item it holds now: a Choice item knocked off or tricked away locks nothing.
            item = active.item if active.item is not None else self.hind.team[side][slot].item
            locked = active.encored_move or (active.last_move if _choice_locked(item) else None)
            if locked and locked in moves:
                usable = (moves.index(locked),)
            elif active.disabled_move in moves:
                disabled = active.disabled_move
                usable = tuple(i for i in usable if i >= len(moves) or moves[i] != disabled)
            if active.volatiles & MOVE_CLOSING_VOLATILES:
                usable = self._open_moves(active, moves, usable)
        bits = 0
        for index in usable:
            bits |= 1 << (A.MOVE_BASE + index)
        if self._gimmick_available(side, active, slot):
            bits |= bits << (A.GIMMICK_BASE - A.MOVE_BASE)
        if active is None or not (
            "trapped" in active.volatiles
            or "partiallytrapped" in active.volatiles
            or self._holds_itself_in(side, active, slot)
        ):
            bits |= self._switch_mask(side)
        return bits

    def _open_moves(
        self, active: PokemonState, moves: list[str], usable: tuple[int, ...]
    ) -> tuple[int, ...]:
        """`usable` less the moves a public volatile closes: Taunt (status moves, gen 3+), Heal
        Block (healing moves, gen 4+), Throat Chop (sound moves), Torment (the last move).
        When nothing would be left the request offers Struggle, which the mask cannot name:
        then `usable` stays as it was."""
        dex = Dex.load()
        kept = []
        for index in usable:
            if index >= len(moves):
                kept.append(index)
                continue
            move = moves[index]
            record = dex.move(move, self.gen)
            flags = (record.get("flags") or ()) if record is not None else ()
            volatiles = active.volatiles
            closed = (
                (
                    "taunt" in volatiles
                    and self.gen >= 3
                    and record is not None
                    and record.get("category") == "Status"
                )
                or ("healblock" in volatiles and self.gen >= 4 and "heal" in flags)
                or ("throatchop" in volatiles and "sound" in flags)
                or ("torment" in volatiles and move == active.last_move)
            )
            if not closed:
                kept.append(index)
        return tuple(kept) if kept else usable

    def _holds_itself_in(self, side: str, active: PokemonState, slot: int | None) -> bool:
        """No Retreat and Ingrain (public `-start` lines) keep their user in, unless it holds a
        Shed Shell or, from gen 6, is a Ghost. A type changed by a move (Soak...) is not
        tracked: then the mask stays open (wider is safe, narrower would hide a real option)."""
        if not active.volatiles & SELF_TRAPPING_VOLATILES:
            return False
        item = active.item
        if item is None and slot is not None:
            item = self.hind.team[side][slot].item
        if item == "Shed Shell":
            return False
        if self.gen >= 6:
            if "typechange" in active.volatiles:
                return False
            if active.terastallized and active.tera_type != "Stellar":
                return active.tera_type != "Ghost"
            record = Dex.load().species(active.species, self.gen)
            return record is not None and "Ghost" not in (record.get("types") or ())
        return True

    def _gimmick_available(self, side: str, active: PokemonState | None, slot: int | None) -> bool:
        live = self.state.sides[side]
        if active is None:
            return False
        member = self.hind.team[side][slot] if slot is not None else None
        if self.gen == 9:
            return not live.used_tera and "terastallize" not in self.banned_gimmicks
        if self.gen in (6, 7) and member is not None and member.mega:
            return not live.used_mega and not active.mega_evolved
        if self.gen == 7 and member is not None and member.zmove:
            return not live.used_zmove
        if self.gen == 8:
            return not live.used_dynamax and "dynamax" not in self.banned_gimmicks
        return False

    def _base_move(self, side: str, mon: PokemonState, move: str) -> str | None:
        """The move a Z-/Max Move was made from, when the log leaves one possibility.

        The log names only the Z-/Max Move; its type (or, for Max Guard, being a status move)
        points at the base move. Only a fully known moveset rules out an unrevealed match.
        """
        dex = Dex.load()
        record = dex.move(move, self.gen)
        slot = self._slot(side, mon.name)
        if record is None or not (record["isZ"] or record["isMax"]) or slot is None:
            return None
        moves = self.hind.team[side][slot].moves
        if len(moves) < A.N_MOVES:
            return None
        bases = [dex.move(m, self.gen) for m in moves]
        if record["category"] == "Status":
            candidates = [
                m for m, b in zip(moves, bases, strict=True) if b and b["category"] == "Status"
            ]
        else:
            candidates = [
                m
                for m, b in zip(moves, bases, strict=True)
                if b and b["category"] != "Status" and b["type"] == record["type"]
            ]
        return candidates[0] if len(candidates) == 1 else None

    # --------------------------------------------------------------- labels
    def _move_label(self, side: str, mon: PokemonState, move: str) -> tuple[int, dict | None]:
        slot = self._slot(side, mon.name)
        if slot is None:
            return A.UNKNOWN_ACTION, None
        moves = self.hind.team[side][slot].moves
        if move not in moves:
            return A.UNKNOWN_ACTION, None
        gimmick = self.gimmick_now.get(side)
        action = A.move_action(moves.index(move), gimmick=gimmick is not None)
        return action, {"type": "move", "name": move, "gimmick": gimmick}

    def _switch_label(self, side: str, name: str, species: str) -> tuple[int, dict | None]:
        slot = self.hind.slot_of(side, name, species)
        if slot is None:
            return A.UNKNOWN_ACTION, None
        return A.switch_action(slot), {"type": "switch", "species": species}

    # --------------------------------------------------------------- the walk
    def run(self) -> dict[str, list[Decision]]:
        state = self.state
        for msg in self.msgs:
            self.line_no = msg.index
            code = msg.code
            # Dispatched on the kind's number (see BattleState.apply); kinds not listed have
            # no handler here (`-damage`, the most frequent of all, among them).
            if code == K_MOVE:
                self._on_move(msg)
            elif code == K_SWITCH:
                self._on_switch(msg)
            elif code == K_TURN:
                self._on_turn(msg)
            elif code == K_DAMAGE:
                if msg.tags:  # the untagged majority costs one test
                    self._on_damage(msg)
            elif code == K_HEAL:
                self._on_heal(msg)
            elif code == K_FAINT:
                self._on_faint(msg)
            elif code == K_START:
                self._on_start(msg)
            elif code == K_ACTIVATE:
                self._on_activate(msg)
            elif code == K_CANT:
                self._on_cant(msg)
            elif code == K_ENDITEM:
                self._on_enditem(msg)
            elif code == K_TERASTALLIZE:
                self._gimmick(msg, "terastallize")
            elif code == K_DRAG:
                self._forced_out(msg)
            elif code == K_TEAMPREVIEW:
                self._on_teampreview(msg)
            elif code == K_MEGA:
                self._gimmick(msg, "mega")
            elif code == K_BURST:
                self._gimmick(msg, "ultra")
            elif code == K_ZPOWER:
                self._gimmick(msg, "zmove")
            state.apply(msg)
            if code == K_TURN:
                self._open_turn()
        first = self.decisions[SIDES[0]]
        both = _masks(
            [d.legal_bits for d in first] + [d.legal_bits for d in self.decisions[SIDES[1]]]
        )
        all_stacked = self.incremental.stacked() if self.incremental is not None else {}
        rows = list(both)  # each mask a view of one row, made in one C loop
        for side in SIDES:
            decisions = self.decisions[side]
            masks = both[: len(first)] if side == SIDES[0] else both[len(first) :]
            offset = 0 if side == SIDES[0] else len(first)
            for index, decision in enumerate(decisions):
                decision.legal = rows[offset + index]
            stacked = all_stacked.get(side)
            if stacked is not None:
                for index, decision in enumerate(decisions):
                    decision.obs = ObservationView(stacked, index)
                # The trajectory's arrays add the masks (a decision's obs is the encoder's alone).
                self.stacked[side] = {**stacked, "legal": masks}
        return self.decisions

    def _open_turn(self) -> None:
        self.in_turns = True
        self.pursuit_target = None
        if self.gen1_frozen_or_asleep:
            self.gen1_frozen_or_asleep.clear()
        if self.gimmick_now:
            # A gimmick announced for a move that never came (a confusion self-hit, or any
            # line the walk does not read as the end of that choice) was that turn's, never
            # the next one's.
            self.gimmick_now.clear()
        for side in SIDES:
            if side in self.pending_turn:
                del self.pending_turn[side]
            active = self.state.sides[side].active
            if active is None or active.fainted:
                continue
            self.pending_turn[side] = self._open(side, A.TURN, self._turn_mask(side))
            if self.gen == 1 and active.status in ("frz", "slp"):
                self.gen1_frozen_or_asleep.add(side)

    def _on_teampreview(self, msg: Message) -> None:
        for side in SIDES:
            mask = 0
            members = self.hind.team[side]
            for index in range(min(self.hind.team_size[side], A.N_TEAM)):
                mask |= 1 << A.switch_action(index)
            if not members:
                continue
            self.pending_preview[side] = self._open(side, A.TEAM_PREVIEW, mask)

    def _on_move(self, msg: Message) -> None:
        ref = msg.ref()
        if ref is None or ref.side not in self.pending_turn:
            return
        source = msg.tags.get("from")
        if source == "Pursuit":
            # Pursuit hits a switching target before the switch: still its user's choice.
            self.pursuit_target = msg.arg(2)[:2]
            source = None
        if source and source != "lockedmove":
            return  # called by another move or effect: not this turn's choice
        mon = self.state.mon_ref(msg.ref())
        decision = self.pending_turn[ref.side]
        if mon is None:
            self._close_turn(ref.side)
            return
        move = msg.arg(1)
        if source == "lockedmove":
            label, info = self._move_label(ref.side, mon, move)
            if label >= 0:
                # Locked in (Outrage & co): that move was the only option.
                decision.legal_bits = 1 << (label % A.N_MOVES)
                label, info = label % A.N_MOVES, {"type": "move", "name": move, "gimmick": None}
            self._label(decision, label, info)
        elif ref.side in self.gen1_frozen_or_asleep:
            pass  # Gen 1: a frozen or sleeping Pokémon's only option was "Fight"; unknown
        elif move.startswith("Z-") and self.gimmick_now.get(ref.side) == "zmove":
            # Status Z-Moves are named after their base move: `Z-Quiver Dance`.
            label, info = self._move_label(ref.side, mon, move[2:])
            self._label(decision, label, info)
        elif move.startswith("Max ") or move.startswith("G-Max ") or "zeffect" in msg.tags:
            # A Z-/Max Move names its effect, not the move chosen: recover it where unambiguous.
            base = self._base_move(ref.side, mon, move)
            if base is not None:
                label, info = self._move_label(ref.side, mon, base)
                self._label(decision, label, info)
        elif move in ("Struggle", "Recharge"):
            pass  # forced: the player had no choice to reveal
        else:
            label, info = self._move_label(ref.side, mon, move)
            self._label(decision, label, info)
        self._close_turn(ref.side)

    def _on_cant(self, msg: Message) -> None:
        ref = msg.ref()
        if ref is None or ref.side not in self.pending_turn or "of" in msg.tags:
            # With `[of]` the Pokémon named holds the blocking ability (Queenly Majesty,
            # Dazzling, Armor Tail); the blocked attacker's move line came first.
            return
        decision = self.pending_turn[ref.side]
        mon = self.state.mon_ref(msg.ref())
        move = msg.arg(2)
        if move and mon is not None:
            # `|cant|p1a: X|move: Taunt|Swords Dance` names the move that was chosen.
            label, info = self._move_label(ref.side, mon, move)
            self._label(decision, label, info)
        self._close_turn(ref.side)

    def _gimmick(self, msg: Message, gimmick: str) -> None:
        ref = msg.ref()
        if ref is not None and ref.side in self.pending_turn:
            self.gimmick_now[ref.side] = gimmick

    def _forced_out(self, msg: Message) -> None:
        """The side's active leaves or falls before acting: its turn choice stays unknown."""
        ref = msg.ref()
        if ref is not None and ref.side in self.pending_turn:
            active = self.state.sides[ref.side].active
            if active is not None and active.name == ref.name:
                self._close_turn(ref.side)

    def _on_damage(self, msg: Message) -> None:
        # `|-damage|p1a: X|...|[from] confusion`: X hurt itself instead of moving; its choice
        # (and the gimmick it may have used already: tera, mega, dynamax) stays unknown.
        if msg.tags.get("from") == "confusion":
            self._forced_out(msg)

    def _on_faint(self, msg: Message) -> None:
        if self.gen <= 4 and msg.arg(0)[:2] == self.pursuit_target:
            # "Previously chosen switches continue in Gen 2-4 after a Pursuit target faints."
            return
        self._forced_out(msg)

    def _on_heal(self, msg: Message) -> None:
        # Revival Blessing: the user's side picks a fainted Pokémon to revive (a switch-like
        # request); the log shows only the revived one healing, from the side's bench.
        if msg.tags.get("from") != "move: Revival Blessing":
            return
        ref = msg.ref()
        if ref is None or ref.side not in SIDES:
            return
        mask = 0
        live = self.state.sides[ref.side]
        for index, member in enumerate(self.hind.team[ref.side]):
            mon = member.live(live)
            if mon is not None and mon.fainted:
                mask |= 1 << A.switch_action(index)
        decision = self._open(ref.side, A.FORCED_SWITCH, mask)
        slot = self.hind.slot_of(ref.side, ref.name)
        if slot is not None:
            revived = live.find(ref.name)
            species = revived.species if revived else self.hind.team[ref.side][slot].species
            self._label(decision, A.switch_action(slot), {"type": "switch", "species": species})

    def _on_enditem(self, msg: Message) -> None:
        if msg.arg(1) in EJECTING_ITEMS:
            self._forced_out(msg)

    def _on_start(self, msg: Message) -> None:
        if effect_name(msg.arg(1)) == "Dynamax":
            self._gimmick(msg, "dynamax")
        # Encored before it moved: the move it makes is the encored one, not its choice.
        if effect_name(msg.arg(1)) == "Encore":
            ref = msg.ref()
            if ref is not None:
                self._close_turn(ref.side)

    def _on_activate(self, msg: Message) -> None:
        if effect_name(msg.arg(1)) in EJECTING_ABILITIES:
            self._forced_out(msg)

    def _on_switch(self, msg: Message) -> None:
        ref = msg.ref()
        if ref is None or ref.side not in SIDES:
            return
        species = parse_details(msg.arg(1)).species
        side = ref.side
        if not self.in_turns:
            # Leads: chosen at team preview, or not a choice at all.
            if side in self.pending_preview:
                decision = self.pending_preview[side]
                del self.pending_preview[side]
                slot = self.hind.slot_of(side, ref.name, species)
                if slot is not None:
                    self._label(decision, A.switch_action(slot), {"type": "team", "lead": species})
            return
        if side in self.pending_turn:
            label, info = self._switch_label(side, ref.name, species)
            self._label(self.pending_turn[side], label, info)
            self._close_turn(side)
            return
        if side not in self.pending_forced:
            self._open_forced_switches(side, self_switch="from" in msg.tags)
        if side in self.pending_forced:
            label, info = self._switch_label(side, ref.name, species)
            decision = self.pending_forced[side]
            del self.pending_forced[side]
            self._label(decision, label, info)

    def _open_forced_switches(self, switching_side: str, self_switch: bool) -> None:
        """Open forced-switch decisions for this side and every side whose active has fainted:
        their requests came together, so they see the same state. A switch a move or item
        made mid-turn (`[from] U-turn`, Volt Switch, Baton Pass...) was asked of its side
        alone: a fainted active on the other side is replaced later, once that side has seen
        the switch."""
        for side in SIDES:
            if side in self.pending_forced:
                continue
            active = self.state.sides[side].active
            fainted = not self_switch and active is not None and active.fainted
            if side == switching_side or fainted:
                self.pending_forced[side] = self._open(
                    side, A.FORCED_SWITCH, self._switch_mask(side)
                )

    def _on_turn(self, msg: Message) -> None:
        # A turn ends: forced switches that never happened (the battle went on without them)
        # would be stale; so would unanswered turn choices (they stay unknown).
        self.pending_forced.clear()


_NOT_HINDSIGHT: Final = frozenset(
    {
        "-damage",
        "-heal",
        "-sethp",
        "-status",
        "-curestatus",
        "-cureteam",
        "-boost",
        "-unboost",
        "-setboost",
        "-clearboost",
        "-clearallboost",
        "-clearnegativeboost",
        "-clearpositiveboost",
        "-invertboost",
        "-copyboost",
        "-swapboost",
        "faint",
        "turn",
        "-sidestart",
        "-sideend",
        "-swapsideconditions",
        "-fieldend",
        "-mustrecharge",
        "-formechange",
    }
)
"""Kinds whose BattleState handlers change nothing the hindsight or `_check_battle` reads (HP,
status, boosts, field, side conditions, forme of the moment), except through a `[from]` tag
that reveals an item or ability: the hindsight pass skips them when they have none
(`state.reveals_item_or_ability`)."""
_NOT_HINDSIGHT_CODE: Final = tuple(
    any(KIND_CODES[kind] == code for kind in _NOT_HINDSIGHT)
    for code in range(max(KIND_CODES.values()) + 1)
)
"""`_NOT_HINDSIGHT` by kind code (`Message.code`): an index, not a set lookup, per message."""


_READ: Final[dict[str, str]] = {}
"""Message kind -> the kind as an interned string when BattleState or this module reads such
messages (the kinds `protocol.KIND_CODES` numbers), else `_UNREAD`."""
_UNREAD: Final = "\x00unread"


def _read_kind(kind: str) -> str:
    """`_READ[kind]`, worked out the first time. Interned, the kind is the very object the
    literals of the kind tables are (where compiled), so every later lookup of it matches by
    identity."""
    read = _READ[kind] = sys.intern(kind) if kind in KIND_CODES else _UNREAD
    return read


def _messages(log: str) -> list[Message]:
    """The messages of the lines some pass reads (`Message.index`: the line's index)."""
    msgs = []
    read = _READ
    index = -1
    for line in log.splitlines():
        index += 1
        if len(line) < 2 or not line.startswith("|"):  # text, or a bare `|` (a fifth of lines)
            continue
        # One split: the lines no pass reads are short (`|upkeep`, `|-crit|p1a: X`).
        parts = line.split("|")  # ["", kind, field, field, ...]
        kind = read.get(parts[1])
        if kind is None:
            kind = _read_kind(parts[1])
        if kind is _UNREAD:
            continue
        fields = parts[2:]
        if "[" in line:
            msgs.append(message_from_fields(kind, fields, line, index))
        else:  # no tags: `message_from_fields` without its checks
            msgs.append(Message(kind, fields, _NO_TAGS, line, index))
    return msgs


_NO_TAGS: Final[dict[str, str]] = {}
"""The tags of every message without any, shared (nothing changes a message's tags)."""
_NO_MASK: Final = np.zeros(0, dtype=bool)
"""A decision's `legal` until the walk ends (it builds `legal_bits`)."""
assert A.N_ACTIONS <= 16  # _masks packs a mask into 2 bytes


def _masks(bits: list[int]) -> np.ndarray:
    """bool[len(bits), N_ACTIONS] from action bit sets (bit a = action a), in a few numpy
    operations: 2 little-endian bytes per mask, unpacked."""
    packed = np.frombuffer(struct.pack(f"<{len(bits)}H", *bits), dtype=np.uint8)
    return np.unpackbits(packed.reshape(-1, 2), axis=1, count=A.N_ACTIONS, bitorder="little").view(
        bool
    )


def _choice_locked(item: str | None) -> bool:
    return item is not None and item.startswith("Choice ")


def parse_replay(replay: Replay, encoder: Encoder | None = None) -> tuple[Trajectory, Trajectory]:
    """Both players' trajectories, or SkipBattle(reason). Never raises anything else for bad input."""
    # A replay makes tens of thousands of short-lived objects and (almost) no reference cycles:
    # the cyclic GC would walk them over and over for nothing (a tenth of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _parse(replay, encoder)
    except SkipBattle:
        raise
    except Exception as error:  # a bug or input we did not foresee: skip it, named, and count it
        raise SkipBattle(f"parser error: {type(error).__name__}") from error
    finally:
        if collecting:
            gc.enable()


def _parse(replay: Replay, encoder: Encoder | None) -> tuple[Trajectory, Trajectory]:
    msgs = _messages(replay.log)
    final = BattleState()
    replaced = False
    rules: list[str] = []
    for msg in msgs:
        code = msg.code
        if _NOT_HINDSIGHT_CODE[code] and not (msg.tags and reveals_item_or_ability(msg)):
            continue
        if code == K_RULE:
            rules.append(msg.arg(0))
        elif code == K_REPLACE:
            replaced = True
        final.apply(msg)
    _check_battle(final, replaced)
    hindsight = build_hindsight(final)
    hindsight = with_known_teams(hindsight, replay, final.gen)
    if any(
        m.species.startswith(ILLUSION_SPECIES) for team in hindsight.team.values() for m in team
    ):
        # A team sheet names the Zoroark the log may never unmask: its switches and moves
        # would be read as the disguise's.
        raise SkipBattle("illusion")
    banned = set()
    for rule in rules:
        if rule.startswith("Terastal Clause"):
            banned.add("terastallize")
        elif rule.startswith("Dynamax Clause"):
            banned.add("dynamax")
    walk = _Reconstruction(msgs, hindsight, final.gen, banned, encoder)
    decisions = walk.run()
    ratings = replay.ratings or {}
    trajectories = []
    for side, other in (("p1", "p2"), ("p2", "p1")):
        player = final.sides[side].player or (
            replay.players[0] if side == "p1" else replay.players[1]
        )
        winner = final.winner
        outcome = 0.5 if winner is None else float(winner == player)
        trajectories.append(
            Trajectory(
                battle_id=replay.id,
                format=replay.format,
                gen=final.gen,
                side=side,
                player=player,
                rating=ratings.get(side),
                opponent_rating=ratings.get(other),
                outcome=outcome,
                source=replay.source,
                decisions=decisions[side],
                arrays=walk.stacked.get(side),
                team=[
                    {"species": m.species, "name": m.name, "moves": m.moves}
                    for m in hindsight.team[side]
                ],
            )
        )
    return trajectories[0], trajectories[1]
