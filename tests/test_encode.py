"""The one encoder: fixed shapes, a stable schema, and no opponent information before the log shows it."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pokeagent.data.encode import (
    N_ENTITIES,
    N_GLOBAL_FEATURES,
    N_MON_FEATURES,
    N_TOKEN_FIELDS,
    PAD,
    UNKNOWN,
    encode,
    schema,
)
from pokeagent.data.parse import SkipBattle, parse_replay
from pokeagent.data.replay import Replay
from pokeagent.showdown import actions as A
from pokeagent.showdown import simtool
from pokeagent.showdown.dex import Dex


@pytest.fixture(scope="module")
def battles(showdown_package):
    records = []
    for fmt, seed in (("gen9randombattle", 5), ("gen4randombattle", 6), ("gen7randombattle", 7)):
        records += list(
            simtool.run_random_battles(
                showdown_package, fmt, 8, seed, move_prob=0.7, mega_prob=0.6, tera_prob=0.3
            )
        )
    return records


def _parsed(records):
    for record in records:
        replay = Replay(
            id=record["id"],
            format=record["format"],
            players=tuple(record["players"]),
            log=record["log"],
        )
        try:
            yield record, parse_replay(replay, encoder=encode)
        except SkipBattle:
            continue


def test_shapes_and_schema(battles):
    seen = 0
    for _, trajectories in _parsed(battles):
        for trajectory in trajectories:
            for decision in trajectory.decisions:
                obs = decision.obs
                assert (
                    obs["tokens"].shape == (N_ENTITIES, N_TOKEN_FIELDS)
                    and obs["tokens"].dtype == np.int32
                )
                assert obs["features"].shape == (N_ENTITIES, N_MON_FEATURES)
                assert obs["globals"].shape == (N_GLOBAL_FEATURES,)
                assert np.isfinite(obs["features"]).all() and np.isfinite(obs["globals"]).all()
                assert obs["globals"][decision.kind] == 1.0  # kind one-hot leads the globals
                seen += 1
    assert seen > 500
    described = schema()
    assert described["tokens"] == [N_ENTITIES, N_TOKEN_FIELDS]
    assert described["n_actions"] == A.N_ACTIONS
    assert described["vocab"]["species"] > 1000


def test_own_moves_sit_in_action_slot_order(battles):
    """Row k of the own team is switch slot k; its move columns are move slots 0-3."""
    dex = Dex.load()
    checked = 0
    for _, trajectories in _parsed(battles):
        for trajectory in trajectories:
            for decision in trajectory.decisions:
                info = decision.action_info
                if decision.kind != A.TURN or info is None or info["type"] != "move":
                    continue
                _, slot, _ = A.describe(decision.action)
                active_rows = [r for r in range(A.N_TEAM) if decision.obs["features"][r, 3] == 1.0]
                assert len(active_rows) == 1
                assert decision.obs["tokens"][active_rows[0], 3 + slot] == dex.move_index(
                    info["name"]
                )
                checked += 1
    assert checked > 300


_SIDE_LINE = re.compile(r"^\|([^|]+)\|(p[12])")


def _revealed(lines: list[str], side: str, dex: Dex) -> dict[str, set[int]]:
    """Independent scan of a log prefix: every name that appears in a line about `side`."""
    known: dict[str, set[int]] = {
        "species": set(),
        "moves": set(),
        "items": set(),
        "abilities": set(),
        "tera": set(),
    }
    for line in lines:
        fields = line.split("|")
        if len(fields) < 3 or not fields[2].startswith(side):
            of = re.search(r"\[of\] (p[12])", line)
            if not (of and of.group(1) == side):
                continue
        kind = fields[1]
        if (
            kind in ("switch", "drag", "replace", "detailschange", "poke", "-formechange")
            and len(fields) > 3
        ):
            known["species"].add(dex.species_index(fields[3].split(",")[0]))
        if kind in ("move", "cant") and len(fields) > 3:
            known["moves"].update(dex.move_index(f) for f in fields[3:5])
        if kind == "-terastallize":
            known["tera"].add(dex.type_index(fields[3]))
        for field in fields[3:]:
            text = field.split(": ", 1)[-1] if ":" in field else field
            text = text.replace("[from] ", "")
            known["items"].add(dex.item_index(text))
            known["abilities"].add(dex.ability_index(text))
    return known


def test_no_opponent_information_before_the_log_reveals_it(battles):
    """At every decision, every opponent name in the arrays appeared in the log by then."""
    dex = Dex.load()
    checked = 0
    for record, trajectories in _parsed(battles):
        lines = record["log"].splitlines()
        for trajectory in trajectories:
            opponent = "p2" if trajectory.side == "p1" else "p1"
            for decision in trajectory.decisions:
                known = _revealed(lines[: decision.line + 1], opponent, dex)
                for row in range(A.N_TEAM, 2 * A.N_TEAM):
                    species, ability, item, *moves, tera = decision.obs["tokens"][row]
                    for token, kind in [
                        (species, "species"),
                        (ability, "abilities"),
                        (item, "items"),
                        (tera, "tera"),
                    ] + [(m, "moves") for m in moves]:
                        if token in (PAD, UNKNOWN):
                            continue
                        assert token in known[kind], (
                            record["id"],
                            trajectory.side,
                            decision.turn,
                            kind,
                            int(token),
                        )
                        checked += 1
    assert checked > 2000


def test_every_encoded_volatile_is_tracked_by_the_state():
    from pokeagent.showdown.vocab import TRACKED_VOLATILES, VOLATILE_FLAGS

    assert set(VOLATILE_FLAGS) <= TRACKED_VOLATILES  # an untracked flag would always be 0


def test_incremental_encoder_equals_encode_after_every_message(battles):
    """What a live loop does (parse_line -> apply -> encoder) gives `encode`'s arrays, byte for
    byte, after every message; the parser's incremental path gives them at every decision."""
    from pokeagent.data.encode import IncrementalEncoder
    from pokeagent.data.parse import build_hindsight
    from pokeagent.showdown.protocol import parse_line
    from pokeagent.showdown.state import BattleState

    def same(a, b):
        return all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)

    compared = 0
    for record in battles[:6]:
        msgs = [m for m in map(parse_line, record["log"].splitlines()) if m is not None]
        final = BattleState()
        for msg in msgs:
            final.apply(msg)
        hindsight = build_hindsight(final)
        state, incremental = BattleState(), IncrementalEncoder()
        for index, msg in enumerate(msgs):
            state.apply(msg)
            for side in ("p1", "p2"):
                kind = index % 3
                assert same(
                    incremental(state, side, hindsight, kind), encode(state, side, hindsight, kind)
                )
                compared += 1
    assert compared > 1000

    def plain(state, side, hindsight, kind):
        return encode(state, side, hindsight, kind)  # not `encode` itself: the plain path

    for record, (first, second) in _parsed(battles):
        replay = Replay(record["id"], record["format"], tuple(record["players"]), record["log"])
        for fast, slow in zip((first, second), parse_replay(replay, encoder=plain), strict=True):
            assert len(fast.decisions) == len(slow.decisions)
            for a, b in zip(fast.decisions, slow.decisions, strict=True):
                assert same(a.obs, b.obs)
