"""`pokeagent generate`: real battles (server and in-process) -> served replays + honest ground truth."""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict

import pytest
from helpers import run_pokeagent

from pokeagent.data.audit import generated_records
from pokeagent.data.generate import GenerateConfig, generate

# The public replay's keys, plus each player's own team sheet (not on the public site).
SERVED_KEYS = {"id", "format", "formatid", "players", "log", "rating", "uploadtime", "teams"}
MOVE_LINE = re.compile(r"^\|move\|(p[12])a: [^|]*\|([^|]+)(.*)$")


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def logged_moves(log: str) -> dict[tuple[str, int], set[str]]:
    """(side, turn) -> moves the public log shows that side choosing in that turn.

    Moves called by other moves or effects carry `[from]` (Metronome, Sleep Talk, Outrage's
    lock, ...) and `[still]`/`[notarget]` are display flags only; `[from]` lines are left out
    because the player did not pick them that turn. Neither did a side Encored earlier in the
    same turn: Encore replaces the chosen move with the encored one.
    """
    moves: dict[tuple[str, int], set[str]] = defaultdict(set)
    turn = 0
    encored: set[str] = set()
    for line in log.splitlines():
        if line.startswith("|turn|"):
            turn, encored = int(line.split("|")[2]), set()
            continue
        if line.startswith("|-start|") and line.split("|")[3] == "Encore":
            encored.add(line.split("|")[2][:2])
        match = MOVE_LINE.match(line)
        if match and "[from]" not in match.group(3) and match.group(1) not in encored:
            moves[(match.group(1), turn)].add(match.group(2))
    return moves


def chosen_moves(decisions: list[dict]) -> dict[tuple[str, int], set[str]]:
    """(side, turn) -> moves the ground truth says that side chose at that turn."""
    moves: dict[tuple[str, int], set[str]] = defaultdict(set)
    for decision in decisions:
        action = decision["action"]
        if action["type"] == "move":
            # A turn's choices are made at the request of the previous turn number.
            moves[(decision["side"], decision["turn"])].add(action["move"])
    return moves


def option_key(option: dict) -> tuple:
    """What identifies an option: a team-preview option is its lead (the action adds the full order)."""
    if option["type"] == "team":
        return ("team", option["lead"])
    return tuple(sorted((k, str(v)) for k, v in option.items()))


def assert_valid_outputs(out, expected_battles: int) -> tuple[list[dict], list[dict]]:
    replays = _read_jsonl(out / "replays.jsonl")
    truths = _read_jsonl(out / "ground_truth.jsonl")
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert len(replays) == len(truths) == summary["battles"] == expected_battles
    assert [r["id"] for r in replays] == [t["id"] for t in truths]
    assert len({r["id"] for r in replays}) == len(replays)
    for replay, truth in zip(replays, truths, strict=True):
        assert set(replay) == SERVED_KEYS
        assert isinstance(replay["log"], str) and isinstance(replay["uploadtime"], int)
        for side in ("p1", "p2"):  # the sheet as the player's first request showed it
            sheet = replay["teams"][side]
            assert 1 <= len(sheet) <= 6 and all(m["species"] and m["moves"] for m in sheet)
            assert any(f"|{side}a: {m['name']}|" in replay["log"] for m in sheet)  # by name
        assert replay["players"] == truth["players"] and len(replay["players"]) == 2
        last = replay["log"].rstrip("\n").splitlines()[-1]
        assert last.startswith("|win|") or last == "|tie", last
        # The public view: no per-player secret halves, HP out of 100 only.
        assert "|split|" not in replay["log"] and "|request|" not in replay["log"]
        for line in replay["log"].splitlines():
            fields = line.split("|")
            hp_field = {"switch": 4, "drag": 4, "-damage": 3, "-heal": 3}.get(
                fields[1] if len(fields) > 1 else ""
            )
            if hp_field is not None:
                hp = fields[hp_field].split()[0]
                assert hp == "0" or hp.endswith("/100"), line
        winner = truth["winner"]
        assert (last == f"|win|{winner}") if winner else last == "|tie"
        # Ground truth agrees with the log: every move the log shows a side choosing was chosen.
        shown, chosen = logged_moves(replay["log"]), chosen_moves(truth["decisions"])
        for key, moves in shown.items():
            missing = moves - chosen[key] - {"Struggle"}  # Struggle is forced when no move has PP
            assert not missing, f"{replay['id']}: {key} log shows {moves}, truth has {chosen[key]}"
        for decision in truth["decisions"]:
            assert decision["side"] in ("p1", "p2")
            assert decision["kind"] in ("team_preview", "turn", "forced_switch")
            assert option_key(decision["action"]) in {option_key(o) for o in decision["legal"]}, (
                decision
            )
    return replays, truths


@pytest.mark.slow
def test_server_battles_between_baselines(showdown_package, tmp_path):
    cfg = GenerateConfig(
        out=tmp_path / "gen",
        battles=8,
        players=("heuristic", "random"),
        concurrency=2,
        seed=3,
    )
    summary = generate(cfg, progress=False)
    assert summary.battles == 8 and summary.timed_out == 0 and not summary.failed
    assert summary.decisions > 8 * 10
    _, truths = assert_valid_outputs(cfg.out, 8)
    assert {k for t in truths for k in t["player_kinds"]} == {"heuristic", "random"}
    # Each kind plays both seats.
    assert {t["player_kinds"][0] for t in truths} == {"heuristic", "random"}
    assert sum(summary.wins.values()) == 8
    assert summary.wins["heuristic"] >= 6  # 99% against random, measured; 6 of 8 is a loose floor


def test_sim_random_is_deterministic_and_valid(showdown_package, tmp_path):
    def run(out, seed):
        cfg = GenerateConfig(
            out=out, battles=6, players=("sim-random", "sim-random"), seed=seed, concurrency=2
        )
        generate(cfg, progress=False)
        return assert_valid_outputs(out, 6)

    first, truth = run(tmp_path / "a", 7)
    again, _ = run(tmp_path / "b", 7)
    other, _ = run(tmp_path / "c", 8)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "uploadtime"} for r in rs]  # noqa: E731
    assert strip(first) == strip(again)
    assert {r["id"] for r in first}.isdisjoint({r["id"] for r in other})
    kinds = {d["kind"] for t in truth for d in t["decisions"]}
    assert {"turn", "forced_switch"} <= kinds
    # The audit reads a generated folder with the players' team sheets, as pack does.
    records = list(generated_records(tmp_path / "a"))
    assert [r["teams"] for r in records] == [r["teams"] for r in first]
    assert all(r["teams"]["p1"] and r["teams"]["p2"] for r in records)


@pytest.mark.slow
def test_team_format_with_generated_teams(showdown_package, tmp_path):
    teams = tmp_path / "gen9ou.txt"
    out = run_pokeagent(
        "showdown", "teams", "--format", "gen9ou", "--count", 3, "--out", teams, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert len(teams.read_text().splitlines()) == 3
    cfg = GenerateConfig(
        out=tmp_path / "ou",
        format="gen9ou",
        battles=2,
        players=("maxpower", "random"),
        teams_file=teams,
        concurrency=1,
    )
    summary = generate(cfg, progress=False)
    assert summary.battles == 2
    _, truths = assert_valid_outputs(cfg.out, 2)
    # gen9ou has team preview: the first decision of each side picks a lead.
    for truth in truths:
        firsts = {d["side"]: d for d in reversed(truth["decisions"])}
        assert all(
            d["kind"] == "team_preview" and d["action"]["type"] == "team" for d in firsts.values()
        )


def test_format_needing_teams_without_them_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs teams"):
        GenerateConfig(out=tmp_path, format="gen9ou", players=("random", "random"))


@pytest.mark.slow
def test_timeout_abandons_battles_instead_of_hanging(showdown_package, tmp_path):
    cfg = GenerateConfig(
        out=tmp_path / "t",
        battles=3,
        players=("random", "random"),
        concurrency=1,
        battle_timeout_s=0.05,
    )
    summary = generate(cfg, progress=False)
    assert summary.timed_out == 3 and summary.battles == 0


@pytest.mark.slow
def test_agent_exception_falls_back_to_a_legal_move(showdown_server):
    from poke_env.player import RandomPlayer
    from poke_env.ps_client.account_configuration import AccountConfiguration

    from pokeagent.showdown.players import _guarded, unique_name

    class Broken(RandomPlayer):
        def choose_move(self, battle):
            raise RuntimeError("agent bug")

    def player(cls, prefix):
        return cls(
            account_configuration=AccountConfiguration(unique_name(prefix), None),
            server_configuration=showdown_server.server_configuration(),
            battle_format="gen9randombattle",
            log_level=40,
        )

    broken, opponent = player(_guarded(Broken), "broken"), player(RandomPlayer, "opp")

    async def play():
        await asyncio.wait_for(broken.battle_against(opponent, n_battles=1), 120)
        for p in (broken, opponent):
            await p.ps_client.stop_listening()

    asyncio.run(play())
    assert broken.n_finished_battles == 1
    assert broken.agent_errors > 0
