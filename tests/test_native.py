"""The compiled parser core (pokeagent/native.py): same output as the sources, never stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_simulated_replays

from pokeagent import native

# Runs in a child process: one digest per trajectory (labels, masks, every array byte).
_DIGESTS = r"""
import hashlib, json, sys
import numpy as np
from pokeagent import native
from pokeagent.data.encode import encode
from pokeagent.data.parse import SkipBattle, parse_replay
from pokeagent.data.sources import iter_replays

out = {"mode": native.mode(), "module": __import__("pokeagent.data.parse").data.parse.__file__}
for index, replay in enumerate(iter_replays(sys.argv[1:])):
    try:
        trajectories = parse_replay(replay, encoder=encode)
    except SkipBattle as skip:
        out[f"{index}:{replay.id}"] = "skip: " + skip.reason
        continue
    digests = []
    for t in trajectories:
        h = hashlib.sha256(json.dumps([t.side, t.player, t.outcome, t.team]).encode())
        for d in t.decisions:
            h.update(json.dumps([d.turn, d.kind, d.action, d.action_info, d.line]).encode())
            h.update(np.asarray(d.legal, dtype=bool).tobytes())
            for key in ("tokens", "features", "globals"):
                h.update(np.ascontiguousarray(d.obs[key]).tobytes())
        digests.append(h.hexdigest())
    out[f"{index}:{replay.id}"] = digests
print(json.dumps(out))
"""


def _digests(pure: bool, paths: list[Path]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    if pure:
        env[native.PURE_ENV] = "1"
    result = subprocess.run(
        [sys.executable, "-c", _DIGESTS, *map(str, paths)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.mark.skipif(
    native.mode() != "compiled", reason=f"no compiled parser build ({native.mode()})"
)
def test_compiled_parser_equals_pure_python(shared_replays, showdown_package, tmp_path):
    simulated = write_simulated_replays(
        showdown_package, tmp_path / "sim.jsonl", 40, 5, move_prob=0.8, tera_prob=0.2
    )
    paths = [shared_replays / "human", shared_replays / "serverlogs", simulated]
    compiled, pure = _digests(False, paths), _digests(True, paths)
    assert compiled.pop("mode") == "compiled" and compiled.pop("module").endswith(".so")
    assert pure.pop("mode").startswith("pure") and pure.pop("module").endswith(".py")
    parsed = [k for k, v in pure.items() if isinstance(v, list)]
    assert len(parsed) > 20
    assert compiled == pure


def test_the_compiled_build_runs_where_required():
    """CI sets POKEAGENT_REQUIRE_COMPILED=1: there the compiled build must be what runs."""
    if os.environ.get(native.REQUIRE_ENV, "") in ("", "0"):
        pytest.skip(f"{native.REQUIRE_ENV} is not set")
    assert native.mode() == "compiled"


def test_a_changed_source_runs_uncompiled(monkeypatch, tmp_path):
    """A build whose sources changed since must not run: guard() loads them from source."""
    mode, meta_path = native._mode, list(sys.meta_path)
    built = all(native._built(m) for m in native.COMPILED_MODULES)
    monkeypatch.setattr(native, "fingerprints", lambda: dict.fromkeys(native.COMPILED_MODULES, "x"))
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    try:
        if built:
            with pytest.warns(UserWarning, match="sources changed since the build"):
                native.guard()
            assert native.mode().startswith("pure (sources changed")
            assert native.needs_rebuild()
            finder = sys.meta_path[0]
            spec = finder.find_spec("pokeagent.data.parse")
            assert spec is not None and spec.origin.endswith("parse.py")
            assert finder.find_spec("pokeagent.data.shards") is None
            sys.meta_path[:] = meta_path
            monkeypatch.undo()
            monkeypatch.delenv(native.PURE_ENV, raising=False)
            monkeypatch.setattr(native, "SHARED_LIBRARY", "no_such_library__mypyc")
            native.guard()  # a module's build without the group's library must not run
            assert native.mode() == "pure (incomplete build: no_such_library__mypyc)"
            # nor one whose library is there but does not load (e.g. linked without its code)
            sys.meta_path[:] = meta_path
            broken = tmp_path / "broken_library__mypyc.py"
            broken.write_text("raise ImportError('does not define module export function')\n")
            monkeypatch.syspath_prepend(str(tmp_path))
            monkeypatch.setattr(native, "SHARED_LIBRARY", "broken_library__mypyc")
            with pytest.warns(UserWarning, match="broken build"):
                native.guard()
            assert native.mode().startswith("pure (broken build: broken_library__mypyc")
            assert native.needs_rebuild()
        else:
            native.guard()
            assert native.mode() == "pure (no compiled build)" and not native.needs_rebuild()
    finally:
        native._mode = mode
        sys.meta_path[:] = meta_path


def test_written_out_inits_match_the_dataclass_fields():
    """Hot dataclasses spell out __init__ (compiled, unlike a generated one): every field must
    get its declared default, so adding a field without updating __init__ fails here."""
    import dataclasses

    import numpy as np

    from pokeagent.data.hindsight import Hindsight, TeamMember
    from pokeagent.data.parse import Decision, Trajectory
    from pokeagent.showdown.protocol import Message
    from pokeagent.showdown.state import FieldState, PokemonState, SideState

    made = {
        Message: Message("move", ["p1a: X", "Tackle"]),
        Decision: Decision(3, 1, np.zeros(14, dtype=bool)),
        PokemonState: PokemonState("p1", "Pikachu", "Pikachu"),
        SideState: SideState("p1"),
        FieldState: FieldState(),
        TeamMember: TeamMember("Mew", "M", ["Psychic"], None, None, None, False, False),
        Hindsight: Hindsight({"p1": []}, {"p1": 6}),
        Trajectory: Trajectory("b", "gen9ou", 9, "p1", "A", None, None, 1.0, "x"),
    }
    for cls, instance in made.items():
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                assert getattr(instance, f.name) == f.default, (cls.__name__, f.name)
            elif f.default_factory is not dataclasses.MISSING:
                assert getattr(instance, f.name) == f.default_factory(), (cls.__name__, f.name)
            else:
                assert hasattr(instance, f.name), (cls.__name__, f.name)
    # the keyword form callers use
    mon = PokemonState(side="p2", species="Mew", start_species="Mew", name="M")
    assert (mon.side, mon.name, mon.moves, mon.version) == ("p2", "M", [], 0)
    assert Message("turn", ["1"], line="|turn|1").tags == {}


def test_parser_objects_pickle_and_copy(shared_replays):
    """Compiled classes cannot be pickled or copied unless they say how (`__reduce__`): a
    trajectory must survive a multiprocessing pool, a state `copy.deepcopy` (search, rollouts)."""
    import ast
    import copy
    import pickle

    import numpy as np

    from pokeagent.data.encode import encode
    from pokeagent.data.parse import build_hindsight, parse_replay
    from pokeagent.data.sources import iter_replays
    from pokeagent.showdown import state as state_module
    from pokeagent.showdown.protocol import parse_details, parse_line, parse_pokemon_ref

    replay = next(iter(iter_replays(shared_replays / "human" / "smogtours-gen9ou-733546.json")))
    trajectory = parse_replay(replay, encoder=encode)[0]
    for clone in (pickle.loads(pickle.dumps(trajectory)), copy.deepcopy(trajectory)):
        assert (clone.battle_id, clone.side, clone.team) == (
            trajectory.battle_id,
            trajectory.side,
            trajectory.team,
        )
        assert len(clone.decisions) == len(trajectory.decisions) > 10
        for a, b in zip(clone.decisions, trajectory.decisions, strict=True):
            assert (a.turn, a.kind, a.action, a.action_info, a.line) == (
                b.turn,
                b.kind,
                b.action,
                b.action_info,
                b.line,
            )
            assert (a.legal == b.legal).all()
            for key in ("tokens", "features", "globals"):
                np.testing.assert_array_equal(a.obs[key], b.obs[key])
        for key, array in trajectory.arrays.items():
            np.testing.assert_array_equal(clone.arrays[key], array)

    state = state_module.BattleState()
    for line in replay.log.splitlines():
        message = parse_line(line)
        if message is not None:
            state.apply(message)
            clone = pickle.loads(pickle.dumps(message))
            assert (clone.kind, clone.args, clone.tags, clone.ref()) == (
                message.kind,
                message.args,
                message.tags,
                message.ref(),
            )
    hindsight = build_hindsight(state)
    for clone in (pickle.loads(pickle.dumps(state)), copy.deepcopy(state)):
        assert (clone.turn, clone.winner, clone.version) == (
            state.turn,
            state.winner,
            state.version,
        )
        assert clone.sides == state.sides and clone.field == state.field
        for side in ("p1", "p2"):
            ours, theirs = encode(clone, side, hindsight), encode(state, side, hindsight)
            for key in ours:
                np.testing.assert_array_equal(ours[key], theirs[key])
    assert pickle.loads(pickle.dumps(hindsight)) == hindsight
    for value in (parse_pokemon_ref("p1a: Great Tusk"), parse_details("Iron Moth, L84, tera:Fire")):
        assert pickle.loads(pickle.dumps(value)) == value

    # BattleState.__reduce__ carries exactly what its __init__ sets
    tree = ast.parse(native.source_path("pokeagent.showdown.state").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BattleState"]
    (init,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    assigned = {
        node.attr
        for node in ast.walk(init)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }
    assert assigned == set(state_module._STATE_ATTRIBUTES)
