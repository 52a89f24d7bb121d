"""The parser against ground truth, real replays, and mangled input."""

from __future__ import annotations

import json
import random
import re

import pytest

from pokeagent.data.audit import audit
from pokeagent.data.parse import SkipBattle, parse_replay
from pokeagent.data.replay import Replay
from pokeagent.showdown import actions as A
from pokeagent.showdown import simtool


def _battles(package, format_id, count, seed, **kw):
    # Players that switch (move_prob < 1) and use every gimmick they can.
    return list(
        simtool.run_random_battles(
            package,
            format_id,
            count,
            seed,
            move_prob=0.7,
            mega_prob=0.6,
            tera_prob=0.3,
            processes=2,
            **kw,
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize("gen", range(1, 10))
def test_labels_match_ground_truth_in_random_battles(showdown_package, gen):
    records = _battles(showdown_package, f"gen{gen}randombattle", 35, 1000 + gen)
    recall = {}
    # With the players' team sheets (generated battles, server logs) and without (public
    # replays: own team in hindsight).
    for team_sheets in (True, False):
        report = audit(records, team_sheets=team_sheets)
        assert report.battles >= 30, report.summary()
        assert not report.misaligned, report.misaligned[:3]
        assert not report.mismatches, report.mismatches[:5]
        assert report.illegal_labels == 0
        # Measured 86-93% per generation; unknown labels are sleep, paralysis, flinch, recharge...
        assert report.recall > 0.8, report.summary()
        assert set(report.skipped) <= {"illusion"}
        recall[team_sheets] = report.recall
    assert recall[True] >= recall[False]  # a sheet names moves the log never shows


@pytest.mark.slow
def test_team_preview_format_matches_ground_truth(showdown_package, tmp_path):
    teams = tmp_path / "teams.txt"
    teams.write_text("\n".join(simtool.generate_teams(showdown_package, "gen9ou", 12, 3)) + "\n")
    records = _battles(showdown_package, "gen9ou", 20, 9, teams_file=teams)
    report = audit(records)
    assert report.battles == 20 and not report.misaligned and not report.mismatches
    previews = [d for r in records for d in r["decisions"] if d["kind"] == "team_preview"]
    assert len(previews) == 40


def _replay_from_file(path) -> Replay:
    data = json.loads(path.read_text())
    log = data["log"] if isinstance(data["log"], str) else "\n".join(data["log"])
    fmt = data.get("formatid") or data.get("format", "")
    return Replay(id=path.stem, format=fmt, players=("p1", "p2"), log=log, source=str(path))


def test_every_shared_replay_parses_or_is_skipped_with_a_reason(shared_replays):
    outcomes = {}
    for path in sorted(shared_replays.glob("*/*.json")):
        try:
            first, second = parse_replay(_replay_from_file(path))
        except SkipBattle as skip:
            assert not skip.reason.startswith("parser error"), (path.name, skip.__cause__)
            outcomes[path.name] = skip.reason
            continue
        outcomes[path.name] = "ok"
        assert (first.side, second.side) == ("p1", "p2")
        assert {first.outcome, second.outcome} in ({0.0, 1.0}, {0.5})
        assert first.decisions and second.decisions
        for trajectory in (first, second):
            for decision in trajectory.decisions:
                assert decision.legal.any()
                assert decision.action < 0 or decision.legal[decision.action]
    assert outcomes["gen6doublesou__log.1.json"].startswith("doubles")
    for name in (
        "smogtours-gen1ou-733374.json",
        "smogtours-gen9ou-733546.json",
        "gen9draft-2058494320.json",
    ):
        assert outcomes[name] == "ok"
    tie = parse_replay(_replay_from_file(shared_replays / "human" / "smogtours-gen2ou-672504.json"))
    assert [t.outcome for t in tie] == [0.5, 0.5]


def test_gen9ou_replay_team_preview_and_tera(shared_replays):
    first, second = parse_replay(
        _replay_from_file(shared_replays / "human" / "smogtours-gen9ou-733546.json")
    )
    for trajectory in (first, second):
        preview = trajectory.decisions[0]
        assert preview.kind == A.TEAM_PREVIEW and preview.action_info["type"] == "team"
        assert preview.legal[A.SWITCH_BASE : A.SWITCH_BASE + 6].all()
    gimmicks = [
        d.action_info.get("gimmick") for t in (first, second) for d in t.decisions if d.action_info
    ]
    assert "terastallize" in gimmicks


def _mutations(log: str, rng: random.Random):
    lines = log.splitlines()
    yield "\n".join(lines[: rng.randrange(len(lines))])  # truncated
    shuffled = lines[:]
    rng.shuffle(shuffled)
    yield "\n".join(shuffled)
    garbage = []
    for line in lines:
        fields = line.split("|")
        if len(fields) > 2 and rng.random() < 0.2:
            fields[rng.randrange(1, len(fields))] = rng.choice(
                ["", "p1a:", "p3a: X", "999/0", "]]", "|", "nan", "💥"]
            )
        garbage.append("|".join(fields))
    yield "\n".join(garbage)
    yield (
        log.replace("Garganacl", "Notamon")
        .replace("Thunderbolt", "Notamove")
        .replace("Earthquake", "Notamove2")
    )
    yield "\n".join(line for line in lines if not line.startswith("|switch|"))


def test_fuzzed_logs_never_crash_the_parser(shared_replays, showdown_package):
    rng = random.Random(0)
    logs = [_replay_from_file(p).log for p in sorted(shared_replays.glob("*/*.json"))]
    logs += [r["log"] for r in _battles(showdown_package, "gen9randombattle", 4, 77)]
    outcomes = {"ok": 0}
    for log in logs:
        for mutated in _mutations(log, rng):
            replay = Replay(id="fuzz", format="gen9ou", players=("a", "b"), log=mutated)
            try:
                parse_replay(replay)
                outcomes["ok"] += 1
            except SkipBattle as skip:
                # A named skip is fine; an internal error (wrapped as 'parser error') is a bug.
                assert not skip.reason.startswith("parser error"), repr(skip.__cause__)
                outcomes[skip.reason] = outcomes.get(skip.reason, 0) + 1
    assert outcomes["ok"] > 0 and len(outcomes) > 2


def test_inspect_cli_prints_the_reconstruction(shared_replays):
    import subprocess
    import sys

    path = shared_replays / "human" / "smogtours-gen9ou-733546.json"
    out = subprocess.run(
        [sys.executable, "-m", "pokeagent", "inspect", str(path), "--side", "p2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(r["side"] == "p2" for r in rows)
    assert rows[0]["kind"] == "team_preview" and rows[0]["action"] == {
        "type": "team",
        "lead": rows[0]["action"]["lead"],
    }
    assert {r["kind"] for r in rows} <= {"team_preview", "turn", "forced_switch"}
    for row in rows:
        assert row["action"] is None or row["action"] in row["legal"]
    moves = [r["action"]["name"] for r in rows if r["action"] and r["action"]["type"] == "move"]
    assert moves and all(isinstance(m, str) for m in moves)
    text = subprocess.run(
        [sys.executable, "-m", "pokeagent", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert text.returncode == 0 and "team_preview" in text.stdout and "amaterus" in text.stdout


@pytest.mark.slow
def test_bench_parse_prints_both_contestants(showdown_package, tmp_path):
    import subprocess
    import sys

    env = dict(__import__("os").environ, POKEAGENT_CACHE=str(tmp_path / "cache"))
    # The bench installs the simulator into its cache: point it at the installed one.
    (tmp_path / "cache" / "showdown").mkdir(parents=True)
    (tmp_path / "cache" / "showdown" / showdown_package.parents[1].name).symlink_to(
        showdown_package.parents[1]
    )
    out = subprocess.run(
        [sys.executable, "-m", "pokeagent", "bench", "parse", "--battles", "6"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "corpus: 6 replays" in out.stdout
    assert "pokeagent parser build: " in out.stdout
    # steady and cold figures for both contestants, and both ratios
    assert re.search(
        r"poke-env Battle tracking, 1 POV: +\d+\.\d replays/s +\d+\.\d replays/s", out.stdout
    )
    assert re.search(r"ratio pokeagent / poke-env: +\d+\.\d\dx +\d+\.\d\dx", out.stdout)


def test_message_kinds_are_numbered_for_dispatch(shared_replays):
    """The state and the parser dispatch on `Message.code`: every kind they read has its own
    number, a message carries its kind's number, and the kinds nobody reads are counted or
    dropped as before."""
    from pokeagent.data.parse import _messages
    from pokeagent.showdown import protocol as P
    from pokeagent.showdown.state import BATTLE_STATE_KINDS, BattleState

    assert P.KIND_CODES.keys() >= BATTLE_STATE_KINDS
    codes = list(P.KIND_CODES.values())
    assert len(set(codes)) == len(codes) and P.K_OTHER not in codes
    assert P.parse_line("|-weather|RainDance").code == P.K_WEATHER
    assert P.parse_line("|-crit|p1a: Garchomp").code == P.K_OTHER
    state = BattleState()
    state.apply(P.parse_line("|-someday|p1a: Mew"))  # a kind the protocol may add one day
    assert state.unknown_kinds == {"-someday": 1}
    log = _replay_from_file(sorted(shared_replays.glob("*/*.json"))[0]).log
    kept = _messages(log)
    assert kept and all(m.code == P.KIND_CODES[m.kind] for m in kept)


def _packed_mon(species, moves, item="", ability="Pressure", evs=84, ivs=31):
    """One packed-team member (custom games take any set)."""
    return f"{species}||{item}|{ability}|{moves}|Serious|{f'{evs},' * 5}{evs}|N|{f'{ivs},' * 5}{ivs}||100|"


def _custom_battle(package, gen: int, seed: int, p1: list[str], p2: list[str], choices: list[str]):
    """A custom game of gen `gen` between two packed teams, the choices given in order (then a
    forced tie), run by the simulator: its record (log, decisions with the true options)."""
    input_log = [
        ">start " + json.dumps({"formatid": f"gen{gen}customgame", "seed": [seed, 2, 3, 4]}),
        ">player p1 " + json.dumps({"name": "A", "team": "]".join(p1)}),
        ">player p2 " + json.dumps({"name": "B", "team": "]".join(p2)}),
        *choices,
        ">forcetie",
    ]
    (record,) = simtool.replay_input_logs(package, [{"input_log": input_log, "id": "t"}])
    assert "error" not in record, record
    return record


@pytest.mark.parametrize(
    ("blocker", "seed", "turn"),
    [("sleeppowder", 1, 2), ("wrap", 1, 2), ("flinch", 27, 3)],
)
def test_gen1_recharge_cancelled_by_sleep_trapping_or_flinch(showdown_package, blocker, seed, turn):
    """Gen 1: Hyper Beam's recharge turn is cancelled when the user is put to sleep, hit by a
    partial-trapping move or made to flinch first (the log shows at most a hint). The next turn
    its request offers moves and switches again, and the parser's mask must too. The seeds are
    ones where the scenario happens; the test checks that it did."""
    from pokeagent.data.sources import replay_from_record

    def mon(species, moves):
        return _packed_mon(species, moves, ability="NoAbility", evs=255, ivs=30)

    p1 = [mon("Tauros", "hyperbeam,bodyslam"), mon("Chansey", "softboiled,seismictoss")]
    # Persian outspeeds Tauros: its Bite can flinch Tauros on the recharge turn.
    foe, move = ("Persian", "bite") if blocker == "flinch" else ("Victreebel", blocker)
    p2 = [mon(foe, f"{move},slash"), mon("Snorlax", "bodyslam")]
    choices = [">p1 move hyperbeam", f">p2 move {move}", *[">p1 move 1", ">p2 move 1"] * (turn - 1)]
    record = _custom_battle(showdown_package, 1, seed, p1, p2, choices)
    lines = record["log"].splitlines()
    # The scenario happened: Hyper Beam hit on turn 1, then the blocker landed before the
    # recharge turn.
    first = lines[lines.index("|turn|1") : lines.index("|turn|2")]
    assert "|-mustrecharge|p1a: Tauros" in first
    if blocker == "flinch":
        assert "|cant|p1a: Tauros|flinch" in lines[lines.index("|turn|2") :]
    else:
        assert any(line.startswith("|-hint|In Gen 1,") for line in first)
    truth = next(d for d in record["decisions"] if d["side"] == "p1" and d["turn"] == turn)
    assert any(o["type"] == "switch" and o["species"] == "Chansey" for o in truth["legal"])

    trajectory = parse_replay(replay_from_record(record))[0]
    decision = next(d for d in trajectory.decisions if d.turn == turn and d.kind == A.TURN)
    chansey = [m["species"] for m in trajectory.team].index("Chansey")
    assert decision.legal[A.switch_action(chansey)]
    assert decision.legal[A.move_action(1)]  # not only "Recharge" (played as slot 0)


@pytest.mark.parametrize(
    ("gen", "gimmick", "blocker", "seed", "shows"),
    [
        (9, "terastallize", "confuseray", 5, "|-damage|p2a: Snorlax|"),  # confusion self-hit
        (7, "mega", "confuseray", 5, "|-damage|p2a: Gyarados|"),
        (8, "dynamax", "confuseray", 5, "|-damage|p2a: Snorlax|"),
        (9, "terastallize", "spore", 2, "|cant|p2a: Snorlax|slp"),
        (9, "terastallize", "thunderwave", 2, "|cant|p2a: Snorlax|par"),
        (9, "terastallize", "fakeout", 1, "|cant|p2a: Snorlax|flinch"),
    ],
)
def test_a_gimmick_whose_move_never_came_labels_no_later_move(
    showdown_package, gen, gimmick, blocker, seed, shows
):
    """p2 uses its gimmick on turn 1, then its move never comes (it hurts itself in confusion,
    sleeps, is fully paralysed, flinches); on turn 2 it moves without one. The gimmick was
    turn 1's choice: turn 2's label must not carry it (the confusion self-hit, with no `|cant|`
    line, did: a tera/mega/dynamax move the player never chose, outside the mask). The seeds
    are ones where the scenario happens; the test checks that it did."""
    from pokeagent.data.sources import replay_from_record

    # Gengar (faster) lands the blocker, then only Splashes; p2's moves cannot touch a Ghost.
    p1 = _packed_mon("Gengar", f"{blocker},splash")
    if gimmick == "mega":
        p2 = _packed_mon("Gyarados", "splash,waterfall", item="Gyaradosite")
    else:  # four moves: a Max Move then names its base move unambiguously
        p2 = _packed_mon("Snorlax", "bodyslam,curse,earthquake,crunch")
    choices = [">p1 team 1", ">p2 team 1", ">p1 move 1", f">p2 move 1 {gimmick}"]
    choices += [">p1 move 2", ">p2 move 1"] * 2
    record = _custom_battle(showdown_package, gen, seed, [p1], [p2], choices)
    lines = record["log"].splitlines()
    first = lines[lines.index("|turn|1") : lines.index("|turn|2")]
    assert any(line.startswith(shows) for line in first), first
    if blocker == "confuseray":
        assert any(line.endswith("[from] confusion") for line in first)
    assert not any(line.startswith("|move|p2a") for line in first)  # the move never came
    truth = {d["turn"]: d["action"] for d in record["decisions"] if d["side"] == "p2"}
    assert truth[1]["gimmick"] == gimmick and truth[2]["gimmick"] is None

    trajectory = parse_replay(replay_from_record(record))[1]
    turns = {d.turn: d for d in trajectory.decisions if d.kind == A.TURN}
    assert turns[1].action == A.UNKNOWN_ACTION  # the log never shows which move
    assert turns[2].action == A.move_action(0) and turns[2].action_info["gimmick"] is None
    report = audit([record])
    assert report.battles == 1 and not report.mismatches and report.illegal_labels == 0


@pytest.mark.parametrize(
    ("case", "p1_moves", "p2", "p2_turns"),
    [
        ("taunt", "taunt,splash", ("Snorlax", "curse,rest,bodyslam,earthquake", ""), (3, 3)),
        ("heal block", "psychicnoise,splash", ("Chansey", "recover,seismictoss", ""), (2, 2)),
        ("torment", "torment,splash", ("Snorlax", "bodyslam,earthquake", ""), (1, 2)),
        ("throat chop", "throatchop,splash", ("Snorlax", "hypervoice,earthquake", ""), (2, 2)),
        ("no retreat", "splash,protect", ("Falinks", "noretreat,closecombat", ""), (1, 2)),
        (
            "no retreat, shed shell",
            "splash,protect",
            ("Falinks", "noretreat", "Shed Shell"),
            (1, 1),
        ),
        ("ingrain", "splash,protect", ("Snorlax", "ingrain,bodyslam", ""), (1, 2)),
        ("ingrain by a ghost", "splash,protect", ("Gengar", "ingrain,shadowball", ""), (1, 2)),
    ],
)
def test_public_volatiles_close_what_the_request_closes(
    showdown_package, case, p1_moves, p2, p2_turns
):
    """A public line (`-start|...|move: Taunt`, No Retreat, Ingrain...) closes moves or switches
    for its holder: on turn 2 the parser's mask must name exactly the request's options, neither
    narrower (a real option hidden) nor wider where the log shows why. A Shed Shell or a Ghost
    (gen 6+) keeps the switch of a Pokémon that holds itself in."""
    from pokeagent.data.sources import replay_from_record

    species, moves, item = p2
    p1 = [_packed_mon("Weavile", p1_moves), _packed_mon("Chansey", "splash")]
    p2_team = [_packed_mon(species, moves, item), _packed_mon("Blissey", "splash")]
    choices = [">p1 team 12", ">p2 team 12", ">p1 move 1", f">p2 move {p2_turns[0]}"]
    choices += [">p1 move 2", f">p2 move {p2_turns[1]}"]
    record = _custom_battle(showdown_package, 9, 1, p1, p2_team, choices)
    truth = next(d for d in record["decisions"] if d["side"] == "p2" and d["turn"] == 2)
    expected = {
        ("move", o["move"]) if o["type"] == "move" else ("switch", o["species"])
        for o in truth["legal"]
        if o.get("gimmick") is None
    }
    trajectory = parse_replay(replay_from_record(record))[1]
    decision = next(d for d in trajectory.decisions if d.turn == 2 and d.kind == A.TURN)
    team = trajectory.team
    active = next(i for i, m in enumerate(team) if m["species"] == species)
    parsed = {
        ("move", name)
        for i, name in enumerate(team[active]["moves"])
        if decision.legal[A.move_action(i)]
    } | {("switch", m["species"]) for j, m in enumerate(team) if decision.legal[A.switch_action(j)]}
    assert parsed == expected, case
    # The scenario bites: something is closed on turn 2 (or, for the exceptions, stays open).
    all_moves = {("move", name) for name in team[active]["moves"]}
    if case in ("no retreat, shed shell", "ingrain by a ghost"):
        assert ("switch", "Blissey") in expected
    else:
        assert ("switch", "Blissey") not in expected or not all_moves <= expected
