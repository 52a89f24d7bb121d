"""`pokeagent play`: the trained agent on any Showdown server, with an account, the ladder included.

    export PS_PASSWORD='...'        # or --password-file FILE (chmod 600); never on the command line
    pokeagent play runs/small --server public --username MyBot --password-env PS_PASSWORD \
        --format gen9randombattle --ladder 20
    pokeagent play runs/small --accept-challenges [--accept-from alice,bob] [--games 5]
    pokeagent play runs/small --server ws://HOST:8000/showdown/websocket --username a --challenge b

One of three ways to find games: `--ladder N` (N rated games, `--concurrency` at a time: one
search at a time, a new one while fewer games run), `--accept-challenges` (from anyone, or the
users of `--accept-from`; others are rejected) or `--challenge USER` (`--games`, one challenge
at a time). Without `--server` it plays on the local server `pokeagent showdown start` left
running (there any name works without a password: the server runs with `--no-security`).

What a ladder needs:
- the battle timer is turned on in every game (`--no-timer` leaves it), and every decision is
  made well inside it: the network runs beside the connection, and a decision not made within
  `--move-time-s` (or half the turn's time left, if less) plays a random legal move instead;
- a dropped connection is opened again (backoff, up to `--reconnect-s`) and logged in again;
  the server puts the agent back into its unfinished battles (their whole log, then the pending
  request) and play goes on. A battle the server no longer has (it restarted) is reported as a
  loss with end `disconnected`; so are the games still running when `--reconnect-s` runs out;
- one bad message (or a bug in the agent) is counted and logged, never the end of the run; a
  request left unanswered because of one is answered with `/choose default`;
- Ctrl-C (or SIGTERM) stops looking for games and ends the run once the current games end; a
  second one forfeits them and ends it at once. Either way a summary is printed.

Written to `--out` (default `<run>/eval/play-<user>-<format>-step<N>/`; a rerun appends):
- `replays.jsonl`: every game in the public replay JSON (`id, format, formatid, players, log,
  rating, uploadtime`), the log as spectators see it, plus `teams` with the agent's own team
  sheet (the side it played): `pokeagent pack` reads it like `generate`'s output;
- `games.jsonl`: a line per game (opponent, result, how it ended, the ratings the server
  reported before and after, turns, decisions, fallbacks);
- `play.json`: the running table (wins, losses, ties, win rate, the latest ladder rating, error
  counts), rewritten after every game, and `tb/` (TensorBoard: play/*);
- `play.log`: the log. The password, and the login server's assertion, are redacted from it
  and from the console.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pokeagent.data.generate import is_random_team_format
from pokeagent.showdown.dex import to_id

LADDER, ACCEPT, CHALLENGE = "ladder", "accept", "challenge"
MAX_NAME_LENGTH = 18  # Showdown's limit on user names
PUBLIC_AUTH = "https://play.pokemonshowdown.com/action.php?"
"""The login server of the public server, and of the private servers registered with it."""


@dataclass
class PlayConfig:
    """The agent on a Showdown server: which server and account, and how it finds games."""

    checkpoint: str
    """A checkpoint folder, a run directory (its latest checkpoint) or a model.safetensors."""
    server: str | None = None
    """`public` (play.pokemonshowdown.com), a websocket URL (ws(s)://HOST:PORT/showdown/websocket),
    a page URL (https://NAME.psim.us, http://HOST:8000) or HOST:PORT; default: the local server
    `pokeagent showdown start` left running."""
    auth_url: str = PUBLIC_AUTH
    """The login server (action.php) that checks the password; the public one serves the public
    server and the private servers registered with it."""
    format: str = "gen9randombattle"
    """Showdown format id; formats without random teams need `team`."""
    username: str | None = None
    """The account (18 characters at most); default on a local server: a fresh name."""
    password_env: str | None = None
    """The environment variable that holds the account's password."""
    password_file: str | None = None
    """A file whose first line is the account's password (keep it chmod 600)."""
    ladder: int = 0
    """Play this many rated ladder games."""
    accept_challenges: bool = False
    """Accept challenges in `format` (from anyone, or from `accept_from`)."""
    accept_from: str | None = None
    """Comma-separated users whose challenges are accepted (implies accept_challenges); others
    are rejected."""
    challenge: str | None = None
    """Challenge this user, `games` times."""
    games: int | None = None
    """Games to play with accept_challenges (default: until Ctrl-C) or challenge (default 1)."""
    concurrency: int = 2
    """Games played at once."""
    team: str | None = None
    """A file of packed teams, one a line (`pokeagent showdown teams`), one drawn per game;
    needed by formats without random teams."""
    temperature: float = 0.0
    """0: the network's most likely legal action; > 0: sample at this temperature."""
    seed: int = 0
    """Sampling, the random fallback moves and the team draws."""
    device: str = "cpu"
    """Where the network runs."""
    move_time_s: float = 10.0
    """A decision not made in this long (or in half the turn's time left, if less) plays a
    random legal move."""
    no_timer: bool = False
    """Do not turn the battle timer on (an opponent who stops playing can then hold a game
    until `battle_timeout_s`)."""
    battle_timeout_s: float = 3600.0
    """A game still running after this long is forfeited."""
    reconnect_s: float = 300.0
    """After a dropped connection, how long to keep trying; then the running games count as
    lost and the run ends."""
    challenge_wait_s: float = 60.0
    """A challenge not answered in this long is cancelled and sent again; a challenged user not
    online is asked again every 2 s for this long, then the run ends."""
    out: str | None = None
    """Output folder; default `<run>/eval/play-<user>-<format>-step<N>` beside the checkpoint."""
    verbose: bool = False
    """Log every message sent and received (redacted) to the console and play.log."""

    def __post_init__(self):
        if self.accept_from:
            self.accept_challenges = True
        modes = [self.ladder > 0, self.accept_challenges, bool(self.challenge)]
        if sum(modes) != 1:
            raise ValueError("choose one of --ladder N, --accept-challenges, --challenge USER")
        if self.ladder < 0:
            raise ValueError("--ladder must be >= 1")
        if self.ladder and self.games is not None:
            raise ValueError(
                "--games goes with --accept-challenges or --challenge; --ladder N counts"
            )
        if self.games is not None and self.games < 1:
            raise ValueError("--games must be >= 1")
        if self.concurrency < 1 or self.move_time_s <= 0 or self.reconnect_s < 0:
            raise ValueError("--concurrency and --move-time-s must be > 0, --reconnect-s >= 0")
        if any(kind in self.format for kind in ("double", "vgc", "multi", "freeforall")):
            raise ValueError(f"{self.format}: the agent plays singles formats only")
        if self.team is None and not is_random_team_format(self.format):
            raise ValueError(
                f"{self.format} needs teams: --team FILE (packed teams, one a line; "
                f"`pokeagent showdown teams --format {self.format} --count 20 --out FILE`)"
            )
        if self.username is not None:
            name = to_id(self.username)
            if not name or len(name) > MAX_NAME_LENGTH:
                raise ValueError(f"--username {self.username!r}: 1 to 18 letters or digits")

    @property
    def mode(self) -> str:
        return LADDER if self.ladder else CHALLENGE if self.challenge else ACCEPT

    @property
    def target(self) -> int | None:
        """Games to play; None: until stopped."""
        if self.mode == LADDER:
            return self.ladder
        if self.mode == CHALLENGE:
            return self.games or 1
        return self.games

    def allowed(self) -> set[str] | None:
        """User ids whose challenges are accepted; None: anyone."""
        if not self.accept_from:
            return None
        return {to_id(name) for name in self.accept_from.split(",") if name.strip()}


@dataclass
class Game:
    """One game, as the agent saw it."""

    tag: str
    """The battle room (`battle-gen9randombattle-123`)."""
    started: float = field(default_factory=time.time)
    side: str | None = None
    players: dict[str, str] = field(default_factory=dict)
    ratings: dict[str, int] = field(default_factory=dict)
    """Side -> the rating the `|player|` line showed at the start (rated games)."""
    rated: bool = False
    format_name: str | None = None
    result: str | None = None
    """win, loss or tie; None while it runs."""
    end: str | None = None
    """normal, forfeit, timer, disconnected, interrupted, too-long."""
    rating_before: int | None = None
    rating_after: int | None = None
    turns: int = 0
    decisions: int = 0
    fallbacks: int = 0
    """Decisions played at random: too slow, or the agent raised."""
    rejoined: int = 0
    """Times the server put the agent back into this game after a reconnect."""
    invalid_choices: int = 0
    finished_at: float | None = None
    recorded: bool = False
    log: list[str] = field(default_factory=list)
    sheet: list[dict] = field(default_factory=list)
    turn_seconds_left: float | None = None
    seen_message: str = ""

    @property
    def opponent(self) -> str | None:
        other = {"p1": "p2", "p2": "p1"}.get(self.side or "")
        return self.players.get(other) if other else None

    def replay_id(self, label: str) -> str:
        """The battle's id (`gen9ou-123`), after `label-` on servers other than the public one."""
        rid = self.tag.removeprefix("battle-")
        return f"{label}-{rid}" if label else rid

    def row(self, username: str, server: str, label: str) -> dict:
        return {
            "id": self.replay_id(label),
            "server": server,
            "username": username,
            "opponent": self.opponent,
            "side": self.side,
            "result": self.result,
            "end": self.end,
            "rated": self.rated,
            "rating_before": self.rating_before
            if self.rating_before is not None
            else self.ratings.get(self.side or ""),
            "rating_after": self.rating_after,
            "opponent_rating": self.ratings.get({"p1": "p2", "p2": "p1"}.get(self.side or "", "")),
            "turns": self.turns,
            "decisions": self.decisions,
            "fallbacks": self.fallbacks,
            "rejoined": self.rejoined,
            "started": self.started,
            "seconds": round((self.finished_at or time.time()) - self.started, 1),
        }

    def replay(self, formatid: str, label: str) -> dict:
        """The public replay JSON of this game (`pokeagent generate`'s shape, `teams` one-sided)."""
        shown = [r for r in self.ratings.values() if r]
        return {
            "id": self.replay_id(label),
            "format": self.format_name or formatid,
            "formatid": formatid,
            "players": [self.players.get("p1", ""), self.players.get("p2", "")],
            "log": "\n".join(self.log),
            "rating": min(shown) if self.rated and shown else None,
            "uploadtime": int(self.finished_at or time.time()),
            "teams": {self.side: self.sheet} if self.side and self.sheet else None,
        }


class Records:
    """games.jsonl, replays.jsonl, play.json and TensorBoard in the output folder; the table
    counts the games already there (a rerun appends)."""

    def __init__(self, out: Path, header: dict, tensorboard: bool = True):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.header = header
        self.rows: list[dict] = []
        games = out / "games.jsonl"
        if games.exists():
            for line in games.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    self.rows.append(json.loads(line))
        self.before = len(self.rows)
        self.tensorboard = tensorboard
        self._writer = None

    def add(self, row: dict, replay: dict) -> None:
        with open(self.out / "replays.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(replay) + "\n")
        with open(self.out / "games.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        self.rows.append(row)
        table = self.table()
        if self.tensorboard:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out / "tb"))
            step = table["games"]
            for name in ("wins", "losses", "ties", "win_rate", "rating"):
                if table[name] is not None:
                    self._writer.add_scalar(f"play/{name}", table[name], step)
            self._writer.add_scalar("play/turns", row["turns"], step)
            self._writer.flush()

    def table(self) -> dict:
        results = Counter(row["result"] for row in self.rows)
        games = len(self.rows)
        rating = next(
            (r["rating_after"] for r in reversed(self.rows) if r.get("rating_after") is not None),
            None,
        )
        return {
            "games": games,
            "wins": results["win"],
            "losses": results["loss"],
            "ties": results["tie"],
            "win_rate": (results["win"] + 0.5 * results["tie"]) / games if games else None,
            "rating": rating,
            "ends": dict(Counter(row["end"] for row in self.rows)),
            "opponents": dict(Counter(row["opponent"] for row in self.rows).most_common(20)),
        }

    def write(self, run: dict) -> dict:
        """play.json: the table, this run's figures and the configuration."""
        summary = {**self.table(), "this_run": run, **self.header}
        tmp = self.out / "play.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(self.out / "play.json")
        return summary

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class LoginFailed(RuntimeError):
    """The run could not log in (wrong password, a taken name, an unreachable server)."""


def _loggers(out: Path, secrets: tuple[str, ...], verbose: bool) -> logging.Logger:
    from pokeagent.eval.play_client import Redactor

    log = logging.getLogger("pokeagent.play")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    log.getChild("client").setLevel(logging.DEBUG if verbose else logging.WARNING)
    redactor = Redactor(secrets)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    file = logging.FileHandler(out / "play.log", encoding="utf-8")
    for handler in (console, file):
        handler.addFilter(redactor)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    return log


def default_out(weights: Path, step: int, username: str, fmt: str) -> Path:
    from pokeagent.eval.checkpoint import eval_dir

    return eval_dir(weights, f"play-{to_id(username)}-{fmt}", max(step, 0))


def play(cfg: PlayConfig) -> dict:
    """Play the games of `cfg` and return the summary (also in `<out>/play.json`).

    Raises LoginFailed when the account cannot log in. Ctrl-C / SIGTERM stop it (see the module
    docstring) when it runs in the main thread."""
    import torch
    from poke_env.concurrency import POKE_LOOP

    from pokeagent.eval.checkpoint import load_network
    from pokeagent.eval.play_client import is_loopback, read_password, websocket_url
    from pokeagent.eval.play_session import Session
    from pokeagent.showdown.players import unique_name

    url = websocket_url(cfg.server)
    if cfg.username is None and not is_loopback(url):
        raise ValueError(f"{url} is not a local server: give --username (and its password)")
    password = read_password(cfg.password_env, cfg.password_file)
    loaded = load_network(cfg.checkpoint, device=cfg.device)
    random.seed(cfg.seed)  # poke-env's random fallback draws from the global RNG
    torch.manual_seed(cfg.seed)
    username = cfg.username or unique_name("agent")
    cfg.username = username
    out = (
        Path(cfg.out) if cfg.out else default_out(loaded.weights, loaded.step, username, cfg.format)
    )
    out.mkdir(parents=True, exist_ok=True)
    log = _loggers(out, (password,) if password else (), cfg.verbose)
    try:
        session = _in_poke_loop(lambda: Session(cfg, url, password, loaded.net, out, log))
        future = asyncio.run_coroutine_threadsafe(session.run(), POKE_LOOP)
        with _signals(lambda: POKE_LOOP.call_soon_threadsafe(session.interrupt)):
            while True:
                try:
                    return future.result(timeout=0.5)
                except concurrent.futures.TimeoutError:
                    continue
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()


def _in_poke_loop(make):
    """Build an object inside poke-env's event loop (its asyncio primitives belong there)."""
    from poke_env.concurrency import POKE_LOOP

    async def _make():
        return make()

    return asyncio.run_coroutine_threadsafe(_make(), POKE_LOOP).result()


@contextlib.contextmanager
def _signals(handler):
    """SIGINT and SIGTERM call `handler` while inside (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: handler())
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
