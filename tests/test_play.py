"""`pokeagent play`: the agent on a Showdown server with an account (ladder, challenges), its
reconnects, its stop, its records, and a password that reaches no log.

The server tests are real: two `pokeagent play` processes ladder against each other on the local
server; the agent accepts a poke-env player's challenge; its socket is cut mid-battle (a TCP proxy
between it and the server) and, in another game, the server behind the proxy is replaced by a
fresh one (a restart, as the client sees it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs

import pytest
import torch
from safetensors.torch import save_file

from pokeagent.data.encode import schema
from pokeagent.data.parse import parse_replay
from pokeagent.data.replay import own_teams
from pokeagent.data.sources import replay_from_record
from pokeagent.eval.play import LoginFailed, PlayConfig, play
from pokeagent.eval.play_client import (
    PUBLIC_WEBSOCKET,
    REDACTED,
    Redactor,
    read_password,
    server_label,
    websocket_url,
)
from pokeagent.model.config import preset
from pokeagent.model.network import PokeAgentNet
from pokeagent.showdown.players import unique_name
from pokeagent.showdown.server import ShowdownServer, free_port

FORMAT = "gen9randombattle"
SERVED_KEYS = {"id", "format", "formatid", "players", "log", "rating", "uploadtime", "teams"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """An untrained tiny network saved the way the trainer exports weights."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    net = PokeAgentNet(preset("tiny"), schema()["vocab"])
    metadata = {"model": "tiny", "model_config": json.dumps(net.cfg.to_dict()), "step": "0"}
    save_file(net.state_dict(), str(folder / "model.safetensors"), metadata=metadata)
    return str(folder)


# ---------------------------------------------------------------------- no server


def test_websocket_url_layouts():
    for public in ("public", "https://play.pokemonshowdown.com/", PUBLIC_WEBSOCKET):
        assert websocket_url(public) == PUBLIC_WEBSOCKET
    assert websocket_url("https://club.psim.us") == "wss://club.psim.us/showdown/websocket"
    assert websocket_url("http://10.0.0.5:8000/") == "ws://10.0.0.5:8000/showdown/websocket"
    assert websocket_url("localhost:8000") == "ws://localhost:8000/showdown/websocket"
    given = "ws://127.0.0.1:9/showdown/websocket"
    assert websocket_url(given) == given
    with pytest.raises(ValueError, match="expected"):
        websocket_url("ftp://host")
    assert server_label(PUBLIC_WEBSOCKET) == ""  # ids stay the replay site's
    assert server_label("ws://127.0.0.1:8000/showdown/websocket") == "127001-8000"


def test_password_from_env_or_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAY_TEST_PW", "s3cret pass")
    assert read_password("PLAY_TEST_PW", None) == "s3cret pass"
    assert read_password(None, None) is None
    secret = tmp_path / "pw"
    secret.write_text("from-file\nignored\n")
    secret.chmod(0o600)
    assert read_password(None, str(secret)) == "from-file"
    with pytest.raises(ValueError, match="one way"):
        read_password("PLAY_TEST_PW", str(secret))
    with pytest.raises(ValueError, match="not set"):
        read_password("PLAY_TEST_UNSET", None)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_password(None, str(tmp_path / "empty"))


def test_redactor_hides_password_and_assertion():
    redactor = Redactor(("p@ss word",))
    stream = []
    handler = logging.Handler()
    handler.emit = lambda record: stream.append(handler.format(record))
    handler.addFilter(redactor)
    log = logging.getLogger("test-play-redactor")
    log.addHandler(handler)
    try:
        log.warning("sent %s", "|/trn bot,0,4f8e;9a1b2c3d")
        log.warning("posted name=bot&pass=%s", "p%40ss%20word")
        try:
            raise RuntimeError("login with p@ss word failed")
        except RuntimeError:
            log.exception("oops")
    finally:
        log.removeHandler(handler)
    text = "\n".join(stream)
    assert "p@ss word" not in text and "p%40ss%20word" not in text and "4f8e" not in text
    assert text.count(REDACTED) >= 3  # (the traceback shows the raising line too)


def test_config_needs_one_way_to_find_games():
    with pytest.raises(ValueError, match="one of"):
        PlayConfig("ckpt")
    with pytest.raises(ValueError, match="one of"):
        PlayConfig("ckpt", ladder=2, challenge="bob")
    cfg = PlayConfig("ckpt", accept_from="Alice, bob")
    assert cfg.accept_challenges and cfg.allowed() == {"alice", "bob"} and cfg.target is None
    assert PlayConfig("ckpt", challenge="bob").target == 1
    assert PlayConfig("ckpt", ladder=3).target == 3
    with pytest.raises(ValueError, match="--games goes with"):
        PlayConfig("ckpt", ladder=3, games=2)
    with pytest.raises(ValueError, match="singles"):
        PlayConfig("ckpt", ladder=1, format="gen9randomdoublesbattle")
    with pytest.raises(ValueError, match="needs teams"):
        PlayConfig("ckpt", ladder=1, format="gen9ou")
    with pytest.raises(ValueError, match="18"):
        PlayConfig("ckpt", ladder=1, username="x" * 19)


def test_own_teams_may_hold_one_side():
    sheet = [{"species": "Pikachu", "moves": ["thunderbolt"]}]
    assert own_teams({"p2": sheet}) == {"p2": sheet}
    assert own_teams({"p1": sheet, "p2": [{"species": "Eevee"}]}) is None  # malformed: dropped
    assert own_teams({}) is None


@pytest.fixture
def session(checkpoint, tmp_path):
    """A play session that never connects: its player is fed messages directly."""
    from pokeagent.eval.checkpoint import load_network
    from pokeagent.eval.play import _in_poke_loop
    from pokeagent.eval.play_session import Session

    cfg = PlayConfig(
        checkpoint, server="ws://127.0.0.1:9", username="unit", ladder=1, no_timer=True
    )
    net = load_network(checkpoint).net
    log = logging.getLogger("pokeagent.play.test")
    made = _in_poke_loop(lambda: Session(cfg, websocket_url(cfg.server), None, net, tmp_path, log))
    made.sent = []
    made.send = lambda *messages: made.sent.extend(messages)
    yield made
    made.player.executor.shutdown()


def _in_loop(coroutine, timeout=10):
    from poke_env.concurrency import POKE_LOOP

    return asyncio.run_coroutine_threadsafe(coroutine, POKE_LOOP).result(timeout)


def test_a_bad_message_never_stalls_the_battle(session):
    """Lines that break the agent or poke-env are counted; a request left unanswered by them is
    answered with the server's default choice; rooms that are not our games are ignored."""
    tag = f"battle-{FORMAT}-7"

    def feed(text: str, room: str = tag) -> None:
        split = [line.split("|") for line in f">{room}\n{text}".split("\n")]
        _in_loop(session.player._handle_battle_message(split))

    feed("|init|battle\n|title|unit vs. other\n|player|p1|unit|1|\n|player|p2|other|2|")
    assert session.started == 1 and session.player.games[tag].side == "p1"
    feed('|request|{"rqid": 3, "side": {"id": "p1"}}')  # poke-env cannot read it
    feed("|request|{not json")
    feed("|-damage|p1a: Nobody|garbage hp")
    assert session.sent == [f"{tag}|/choose default"]  # once: the broken line had no rqid
    assert session.player.message_errors >= 2
    feed("|turn|1")  # the battle goes on
    feed("|turn|2", room=f"battle-{FORMAT}-99")  # not ours: ignored (poke-env would wait forever)


def test_a_slow_decision_plays_a_random_legal_move(session):
    """The network thinks beside the connection; past the deadline a random move goes out."""
    from types import SimpleNamespace

    session.cfg.move_time_s = 0.2
    session.player._observe = lambda battle: ["observation"]
    session.player.policy.act = lambda history: time.sleep(2) or (0, 0.5)
    started = time.monotonic()
    assert _in_loop(session.player._choose(SimpleNamespace(battle_tag="battle-x-1"))) is None
    assert time.monotonic() - started < 1.5
    assert session.player.slow_decisions == 1 and session.player.fallbacks == 1


# ---------------------------------------------------------------------- helpers for server tests


class Proxy:
    """127.0.0.1:port -> the server's port, in a thread of its own: `drop()` cuts every
    connection mid-stream; `target` can move to another server (a restart, as clients see it)."""

    def __init__(self, target: int):
        self.target, self.port = target, free_port()
        self.transports: set = set()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self.loop
        ).result()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/showdown/websocket"

    async def _serve(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.transports |= {writer.transport, up_writer.transport}

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.transports -= {writer.transport, up_writer.transport}

    def drop(self) -> None:
        def abort():
            for transport in list(self.transports):
                transport.abort()

        self.loop.call_soon_threadsafe(abort)

    def close(self) -> None:
        self.drop()
        self.loop.call_soon_threadsafe(self.server.close)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _check_replays(out: Path, username: str) -> list:
    """Every replay parses, in the served shape, with the agent's side from its team sheet."""
    rows, replays = _lines(out / "games.jsonl"), _lines(out / "replays.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in replays]
    trajectories = []
    for row, record in zip(rows, replays, strict=True):
        assert set(record) == SERVED_KEYS and record["formatid"] == FORMAT
        side = row["side"]
        assert list(record["teams"]) == [side] and len(record["teams"][side]) == 6
        assert record["players"][int(side[1]) - 1] == username
        first, second = parse_replay(replay_from_record(record, source="play"))
        mine = first if first.side == side else second
        assert mine.player == username
        if row["end"] == "normal":
            assert mine.outcome == {"win": 1.0, "loss": 0.0, "tie": 0.5}[row["result"]]
        # Its own moves are known in full from the sheet, not only the ones it used.
        sheet_moves = sorted(len(p["moves"]) for p in record["teams"][side])
        assert sorted(len(member["moves"]) for member in mine.team) == sheet_moves
        trajectories.append(mine)
    return trajectories


class _Challenger:
    """A poke-env RandomPlayer that challenges the agent (directly on the server)."""

    def __init__(self, server_configuration, name: str):
        from poke_env.player import RandomPlayer
        from poke_env.ps_client.account_configuration import AccountConfiguration

        self.player = RandomPlayer(
            account_configuration=AccountConfiguration(name, None),
            server_configuration=server_configuration,
            battle_format=FORMAT,
            log_level=50,
        )

    def _run(self, coroutine, timeout=30):
        from poke_env.concurrency import POKE_LOOP

        return asyncio.run_coroutine_threadsafe(coroutine, POKE_LOOP).result(timeout)

    def challenge(self, username: str) -> None:
        client = self.player.ps_client
        _wait(client.logged_in.is_set, 60, "the challenger's login")
        self._run(client.challenge(username.lower(), FORMAT, None))

    def turn(self) -> int:
        return max((battle.turn for battle in self.player.battles.values()), default=0)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # its socket may be gone with its server
            self._run(self.player.ps_client.stop_listening(), timeout=10)


def _play_in_thread(cfg: PlayConfig) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def target():
        try:
            result["summary"] = play(cfg)
        except Exception as error:  # surfaced by the test
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def _spawn(checkpoint, server, name, tmp_path, *options) -> subprocess.Popen:
    """`pokeagent play` as NAME on `server`, writing to tmp_path/NAME."""
    out = str(tmp_path / name)
    where = ["--server", server.websocket_url, "--username", name, "--out", out]
    return subprocess.Popen(
        [sys.executable, "-m", "pokeagent", "play", checkpoint, *where, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _logged_in(out: Path) -> bool:
    log = out / "play.log"
    return log.exists() and "logged in as" in log.read_text()


# ---------------------------------------------------------------------- on a server


@pytest.mark.slow
def test_two_processes_ladder_against_each_other(showdown_server, checkpoint, tmp_path):
    names = [unique_name("ladA"), unique_name("ladB")]
    procs = [
        _spawn(checkpoint, showdown_server, name, tmp_path, "--ladder", "2", "--concurrency", "2")
        for name in names
    ]
    outputs = [proc.communicate(timeout=400)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    ids = []
    for name, output in zip(names, outputs, strict=True):
        out = tmp_path / name
        summary = json.loads((out / "play.json").read_text())
        assert summary["games"] == 2 and summary["this_run"]["games"] == 2, output
        assert summary["wins"] + summary["losses"] + summary["ties"] == 2
        assert summary["this_run"]["fallbacks"] == 0 and summary["this_run"]["error"] is None
        rows = _lines(out / "games.jsonl")
        assert all(row["rated"] and row["end"] == "normal" for row in rows)
        assert {row["opponent"] for row in rows} == set(names) - {name}
        # The rating the server reported after each game; the table keeps the latest.
        assert all(isinstance(row["rating_after"], int) for row in rows)
        assert summary["rating"] == rows[-1]["rating_after"]
        assert "game 2/2" in output and "rating" in output
        _check_replays(out, name)
        ids.append(sorted(row["id"] for row in rows))
        assert list((out / "tb").glob("events.out.tfevents.*"))
    assert ids[0] == ids[1]  # they played each other, both games


@pytest.mark.slow
def test_accepts_a_challenge_and_survives_a_cut_socket(showdown_server, checkpoint, tmp_path):
    proxy = Proxy(showdown_server.port)
    name, rival = unique_name("acc"), unique_name("rival")
    out = tmp_path / "out"
    cfg = PlayConfig(
        checkpoint, server=proxy.url, username=name, accept_from=rival, games=1, out=str(out)
    )
    thread, result = _play_in_thread(cfg)
    challenger = _Challenger(showdown_server.server_configuration(), rival)
    try:
        _wait(lambda: _logged_in(out), 120, "the agent's login")
        challenger.challenge(name)
        _wait(lambda: challenger.turn() >= 3, 120, "turn 3")
        proxy.drop()  # mid-battle: the agent's socket dies
        thread.join(timeout=300)
        assert not thread.is_alive(), "play hung after the dropped connection"
    finally:
        challenger.close()
        proxy.close()
    assert "error" not in result, result
    summary = result["summary"]
    run = summary["this_run"]
    assert summary["games"] == 1 and run["reconnects"] == 1 and run["rejoined"] == 1, summary
    (row,) = _lines(out / "games.jsonl")
    assert row["end"] == "normal" and row["rejoined"] == 1 and row["opponent"] == rival
    battle = next(iter(challenger.player.battles.values()))
    assert row["result"] == ("loss" if battle.won else "win" if battle.lost else "tie")
    # The log rebuilt after the rejoin is the whole game: it parses, the agent's side labelled.
    (mine,) = _check_replays(out, name)
    assert sum(decision.action >= 0 for decision in mine.decisions) >= row["turns"] // 2


@pytest.mark.slow
def test_a_restarted_server_counts_the_game_lost(showdown_package, checkpoint, tmp_path):
    first = ShowdownServer(logs_dir=tmp_path / "logs1").start()
    second = None
    proxy = Proxy(first.port)
    name, rival = unique_name("rst"), unique_name("rival")
    out = tmp_path / "out"
    cfg = PlayConfig(
        checkpoint,
        server=proxy.url,
        username=name,
        accept_challenges=True,
        games=1,
        reconnect_s=120,
        out=str(out),
    )
    thread, result = _play_in_thread(cfg)
    challenger = _Challenger(first.server_configuration(), rival)
    try:
        _wait(lambda: _logged_in(out), 120, "the agent's login")
        challenger.challenge(name)
        _wait(lambda: challenger.turn() >= 2, 120, "turn 2")
        first.stop()  # the battle dies with it
        second = ShowdownServer(logs_dir=tmp_path / "logs2").start()
        proxy.target = second.port  # the same address, a fresh server
        thread.join(timeout=240)
        assert not thread.is_alive(), "play hung after the server restart"
    finally:
        challenger.close()
        proxy.close()
        first.stop()
        if second is not None:
            second.stop()
    assert "error" not in result, result
    summary = result["summary"]
    assert summary["games"] == 1 and summary["losses"] == 1, summary
    assert summary["ends"] == {"disconnected": 1} and summary["this_run"]["reconnects"] >= 1
    (record,) = _lines(out / "replays.jsonl")
    assert record["log"].count("|turn|") >= 2  # the part that was played is kept


@pytest.mark.slow
def test_challenge_accepted_then_ctrl_c_once_and_twice(showdown_server, checkpoint, tmp_path):
    """A challenges B (two play processes); in their first game B gets one Ctrl-C (no new
    game, this one is played out) and A two (it forfeits now): both end with a summary."""
    a, b = unique_name("chalA"), unique_name("accB")
    one_at_a_time = ("--games", "4", "--concurrency", "1")
    procs = {
        a: _spawn(checkpoint, showdown_server, a, tmp_path, "--challenge", b, *one_at_a_time),
        b: _spawn(checkpoint, showdown_server, b, tmp_path, "--accept-from", a, *one_at_a_time),
    }
    logs = [tmp_path / name / "play.log" for name in (a, b)]
    try:
        try:
            _wait(
                lambda: all(p.exists() and "game 1 started" in p.read_text() for p in logs),
                180,
                "the first game",
            )
        except AssertionError as timeout:  # say what the two processes were doing
            _kill_all(procs)
            told = {name: proc.communicate(timeout=30)[0][-3000:] for name, proc in procs.items()}
            raise AssertionError(
                f"{timeout}; exit codes and output: "
                f"{ {n: (p.returncode, told[n]) for n, p in procs.items()} }"
            ) from None
        procs[b].send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert procs[b].poll() is None  # still playing its game
        procs[a].send_signal(signal.SIGINT)
        time.sleep(0.5)
        procs[a].send_signal(signal.SIGINT)
        outputs = {name: procs[name].communicate(timeout=120)[0] for name in (a, b)}
    finally:
        _kill_all(procs)
    assert [procs[name].returncode for name in (a, b)] == [0, 0], outputs
    (row_a,) = _lines(tmp_path / a / "games.jsonl")
    (row_b,) = _lines(tmp_path / b / "games.jsonl")
    assert row_a["id"] == row_b["id"] and not row_a["rated"]
    assert (row_a["result"], row_a["end"], row_a["opponent"]) == ("loss", "interrupted", b)
    assert (row_b["result"], row_b["end"], row_b["opponent"]) == ("win", "forfeit", a)
    for name in (a, b):
        summary = json.loads((tmp_path / name / "play.json").read_text())
        assert summary["this_run"]["stopped"] == "interrupt" and summary["games"] == 1
        assert "stopping after the current games" in outputs[name]


@pytest.mark.slow
def test_a_challenger_waits_for_its_opponent_to_log_in(showdown_server, checkpoint, tmp_path):
    """A challenges B before B is online: A asks again until B logs in, then they play."""
    a, b = unique_name("earlyA"), unique_name("lateB")
    procs = {a: _spawn(checkpoint, showdown_server, a, tmp_path, "--challenge", b, "--games", "1")}
    try:
        _wait(lambda: "is not online (yet)" in _read(tmp_path / a / "play.log"), 60, "a retry")
        procs[b] = _spawn(
            checkpoint, showdown_server, b, tmp_path, "--accept-from", a, "--games", "1"
        )
        outputs = {name: procs[name].communicate(timeout=180)[0] for name in (a, b)}
    finally:
        _kill_all(procs)
    assert [procs[name].returncode for name in (a, b)] == [0, 0], outputs
    (row_a,) = _lines(tmp_path / a / "games.jsonl")
    (row_b,) = _lines(tmp_path / b / "games.jsonl")
    assert row_a["id"] == row_b["id"] and {row_a["result"], row_b["result"]} <= {
        "win",
        "loss",
        "tie",
    }


def _kill_all(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


class _FakeLogin(BaseHTTPRequestHandler):
    """A login server that takes any password and answers with a made-up assertion."""

    received: ClassVar[list[dict]] = []
    assertion = "a1b2c3d4e5,fakebot;SIGNATURE0123"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.received.append(parse_qs(body))
        reply = json.dumps({"actionsuccess": True, "assertion": self.assertion})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(("]" + reply).encode())

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_the_password_appears_in_no_log(showdown_server, checkpoint, tmp_path, monkeypatch, capfd):
    password = "Hunter2-very-secret"
    monkeypatch.setenv("PLAY_TEST_PASSWORD", password)
    login = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLogin)
    threading.Thread(target=login.serve_forever, daemon=True).start()
    out = tmp_path / "out"
    cfg = PlayConfig(
        checkpoint,
        server=showdown_server.websocket_url,
        auth_url=f"http://127.0.0.1:{login.server_port}/action.php?",
        username=unique_name("pwbot"),
        password_env="PLAY_TEST_PASSWORD",
        ladder=1,
        verbose=True,  # every message sent and received goes to the logs
        out=str(out),
    )
    try:
        # The local server cannot check the made-up assertion: it refuses the name, and the run
        # ends with its reason (a real login server's assertion would be accepted).
        with pytest.raises(LoginFailed, match="assertion"):
            play(cfg)
    finally:
        login.shutdown()
    assert _FakeLogin.received[-1]["pass"] == [password]  # it went to the login server only
    written = (out / "play.log").read_text() + "".join(capfd.readouterr())
    assert "/trn" in written and REDACTED in written
    assert password not in written and "SIGNATURE0123" not in written
    assert password not in json.dumps(cfg.__dict__)  # the config (play.json) names the variable
