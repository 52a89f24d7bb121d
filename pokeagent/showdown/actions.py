"""The action space: the same indices in replays and in live play (DESIGN.md, "Action space").

    0..3    move in slot k          (the active Pokémon's moves in canonical order)
    4..7    move in slot k + the generation's gimmick (terastallize / mega / z-move / dynamax;
            a Pokémon can use at most one kind, so one block serves every generation)
    8..13   switch to team member k (the player's team in canonical order); at team preview,
            the lead

Canonical orders make the indices independent of where a move or team member sits in a
request: moves sorted by Showdown id, the team sorted by the species id each member started the
battle as (members the log never reveals come last). Replays and live play sort the same way.
"""

from __future__ import annotations

from typing import Final

N_MOVES: Final = 4
N_TEAM: Final = 6
MOVE_BASE: Final = 0
GIMMICK_BASE: Final = MOVE_BASE + N_MOVES
SWITCH_BASE: Final = GIMMICK_BASE + N_MOVES
N_ACTIONS: Final = SWITCH_BASE + N_TEAM
UNKNOWN_ACTION: Final = -1
"""Label of a decision whose choice the log does not reveal (full paralysis, flinch, sleep...)."""

GIMMICKS: Final = ("terastallize", "mega", "zmove", "dynamax", "ultra")
"""Gimmick names as in choices (`move 1 terastallize`); 'ultra' is Ultra Burst (Necrozma)."""

# Decision kinds, as stored in trajectories (int) and printed (str).
TEAM_PREVIEW: Final = 0
TURN: Final = 1
FORCED_SWITCH: Final = 2
KIND_NAMES: Final = ("team_preview", "turn", "forced_switch")


def move_action(slot: int, gimmick: bool = False) -> int:
    if not 0 <= slot < N_MOVES:
        raise ValueError(f"move slot {slot} out of range")
    return (GIMMICK_BASE if gimmick else MOVE_BASE) + slot


def switch_action(team_slot: int) -> int:
    if not 0 <= team_slot < N_TEAM:
        raise ValueError(f"team slot {team_slot} out of range")
    return SWITCH_BASE + team_slot


def describe(action: int) -> tuple[str, int, bool]:
    """action -> ('move' | 'switch', slot, gimmick)."""
    if action < 0 or action >= N_ACTIONS:
        raise ValueError(f"action {action} out of range")
    if action >= SWITCH_BASE:
        return "switch", action - SWITCH_BASE, False
    return "move", action % N_MOVES, action >= GIMMICK_BASE
