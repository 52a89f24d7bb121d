"""The protocol's shared vocabularies: boost names, statuses, the volatiles the state tracks and
the rules that read them. One place, for the state tracker, the parser's masks and the encoder
(a compiled module: pokeagent/native.py, rule 3)."""

from __future__ import annotations

from typing import Final

BOOST_STATS: Final = ("atk", "def", "spa", "spd", "spe", "accuracy", "evasion")
"""Stat stages, in the encoder's column order."""
STATUSES: Final = ("brn", "par", "slp", "frz", "psn", "tox")
"""Non-volatile statuses as the protocol writes them, in the encoder's column order."""

TRACKED_VOLATILES: Final = frozenset(
    {
        "substitute",
        "confusion",
        "leechseed",
        "taunt",
        "encore",
        "disable",
        "torment",
        "attract",
        "yawn",
        "perishsong",
        "perish0",
        "perish1",
        "perish2",
        "perish3",
        "curse",
        "nightmare",
        "embargo",
        "healblock",
        "focusenergy",
        "magnetrise",
        "aquaring",
        "ingrain",
        "trapped",
        "partiallytrapped",
        "mustrecharge",
        "dynamax",
        "saltcure",
        "protosynthesis",
        "quarkdrive",
        "flashfire",
        "slowstart",
        "charge",
        "stockpile",
        "typechange",
        "transform",
        "lockedmove",
        "throatchop",
        "glaiverush",
        "destinybond",
        "smackdown",
        "octolock",
        "noretreat",
        "tarshot",
        "syrupbomb",
    }
)
"""Volatile effects the state keeps (normalised lower-case names); the rest are ignored."""

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

MOVE_CLOSING_VOLATILES: Final = frozenset({"taunt", "healblock", "throatchop", "torment"})
"""Volatiles that close some of their holder's moves (the parser's masks)."""
SELF_TRAPPING_VOLATILES: Final = frozenset({"noretreat", "ingrain"})
"""Volatiles that keep their holder in (a Shed Shell or, from gen 6, a Ghost type excepted)."""
