"""The protocol's shared vocabularies: boost names, statuses, the volatiles the state tracks and
the rules that read them. One place, for the state tracker, the parser's masks and the encoder
(a compiled module: pokeagent/native.py, rule 3)."""

from __future__ import annotations

from typing import Final

BOOST_STATS: Final = ("atk", "def", "spa", "spd", "spe", "accuracy", "evasion")
"""Stat stages, in the encoder's column order."""
STATUSES: Final = ("brn", "par", "slp", "frz", "psn", "tox")
"""Non-volatile statuses as the protocol writes them, in the encoder's column order."""

VOLATILE_FLAGS: Final = (
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
"""The volatiles the encoder gives a column each, in column order (all of them tracked)."""

TRACKED_VOLATILES: Final = frozenset(VOLATILE_FLAGS) | frozenset(
    {
        "aquaring",
        "charge",
        "destinybond",
        "embargo",
        "flashfire",
        "glaiverush",
        "ingrain",
        "lockedmove",
        "magnetrise",
        "nightmare",
        "noretreat",
        "octolock",
        "perish0",
        "perish1",
        "perish2",
        "perish3",
        "protosynthesis",
        "quarkdrive",
        "slowstart",
        "smackdown",
        "stockpile",
        "syrupbomb",
        "tarshot",
        "throatchop",
    }
)
"""Volatile effects the state keeps (normalised lower-case names): the encoder's columns and
these, which the state's rules read; the rest are ignored."""

MOVE_CLOSING_VOLATILES: Final = frozenset({"taunt", "healblock", "throatchop", "torment"})
"""Volatiles that close some of their holder's moves (the parser's masks)."""
SELF_TRAPPING_VOLATILES: Final = frozenset({"noretreat", "ingrain"})
"""Volatiles that keep their holder in (a Shed Shell or, from gen 6, a Ghost type excepted)."""
