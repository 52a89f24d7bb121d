"""One run of `pokeagent play` (pokeagent/eval/play.py) inside poke-env's event loop.

- `PlayAgent`: the agent player (`AgentPlayer`) with a `Game` per battle room: it notes players,
  ratings (`|player|` lines, and the server's `|raw|` rating line that follows `|win|`), the
  timer, refused choices; after a reconnect the server sends a room's whole log again, and the
  agent's view of it is built afresh (its own team sheet kept from the first request). Each
  decision runs the network in a worker thread under a deadline, so the connection stays served
  while it thinks; a late or failed decision plays a random legal move.
- `Session`: the connection's events (drops, `|updatesearch|`, challenges by PM), finding games
  (one ladder search or one challenge at a time, accepting waiting challengers), the stop, and
  the records of each game (`play.Records`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import html
import json
import random
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path

from poke_env.data import to_id_str
from poke_env.ps_client.account_configuration import AccountConfiguration
from poke_env.ps_client.server_configuration import ServerConfiguration
from websockets.exceptions import ConnectionClosed

from pokeagent.eval.agent import AgentPlayer, LiveView, NetworkPolicy, _Choice
from pokeagent.eval.play import ACCEPT, CHALLENGE, LADDER, Game, LoginFailed, PlayConfig, Records
from pokeagent.eval.play_client import PlayClient, is_loopback, server_label
from pokeagent.showdown.players import TeamPool, unique_name

RATING_WAIT_S = 10.0
"""How long a finished rated game waits for the server's rating line (it follows `|win|`)."""
LOGIN_WAIT_S = 60.0
"""How long the first login may take."""
SEARCH_RETRY_S = 5.0
"""The least time between two ladder searches that did not start a game."""
_RATING_LINE = re.compile(r"^(.*)'s rating: (\d+) &rarr; <strong>(\d+)</strong>")
_TIME_LEFT = re.compile(r"Time left: (\d+) sec this turn")


class PlayAgent(AgentPlayer):
    """The agent player with the bookkeeping a server needs: a `Game` per battle room, rejoins
    after a reconnect, decisions under a deadline, messages that cannot stall a battle."""

    def __init__(self, session: Session, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.session = session
        self.games: dict[str, Game] = {}
        self.answered: dict[str, object] = {}
        """Battle -> the rqid of the last request the agent answered."""
        self.slow_decisions = 0
        self.message_errors = 0
        self.fallbacks = 0
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="network")

    # ------------------------------------------------------------------ messages
    async def _handle_battle_message(self, split_messages: list[list[str]]):
        tag = split_messages[0][0].removeprefix(">")
        try:
            kept = self._bookkeep(tag, split_messages)
            if kept is not None:
                await super()._handle_battle_message(kept)
        except ConnectionClosed:
            # The choice did not go out; after the reconnect the server asks again.
            self.session.log.info("%s: the connection is down, a choice was not sent", tag)
        except Exception:
            self.message_errors += 1
            self.session.log.exception("%s: could not handle a message", tag)
            await self._answer_if_left(tag, split_messages)

    def _bookkeep(self, tag: str, split_messages: list[list[str]]) -> list[list[str]] | None:
        """Record what the game's lines say; return the message poke-env should see (None:
        none of it)."""
        lines = split_messages[1:]
        kinds = [parts[1] if len(parts) > 1 else "" for parts in lines]
        game = self.games.get(tag)
        if "init" in kinds:
            # A new game, or the same one again after a reconnect (its whole log follows).
            self._battles.pop(tag, None)  # poke-env then builds its battle afresh
            if game is None or game.result is not None:
                game = self.games[tag] = Game(tag)
                self.session.game_started(tag)
            else:
                game.rejoined += 1
                old = self.views.get(tag)
                view = self.views[tag] = LiveView(self.username)
                if old is not None:
                    view.side, view.sheet = old.side, old.sheet  # the sheet of the first request
                self.session.log.info("%s: back in the game (rejoin %d)", tag, game.rejoined)
        if game is None:
            return None  # a room that is not one of our games (poke-env would wait for it)
        if "noinit" in kinds:
            self.session.game_lost(tag, "disconnected")  # the server no longer has it
            return None
        for parts in lines:
            self._note(game, parts)
        if game.result is not None:
            if not game.recorded:
                game.log += ["|".join(parts) for parts in lines if len(parts) > 1]
                if game.rating_after is not None or not game.rated:
                    self.session.game_done(tag)
            return None
        if "sentchoice" in kinds and "request" in kinds:
            # Rejoined with the choice already made: poke-env would choose again.
            request = lines[kinds.index("request")]
            if len(request) > 2 and request[2]:
                self.views.setdefault(tag, LiveView(self.username)).on_request(
                    json.loads(request[2])
                )
            split_messages = [p for p in split_messages if len(p) < 2 or p[1] != "request"]
        if "error" in kinds and game.invalid_choices > 10:
            # poke-env chooses again after every refused choice: never loop on it.
            split_messages = [p for p in split_messages if len(p) < 2 or p[1] != "error"]
            self.session.send(f"{tag}|/choose default")
        return split_messages

    def _note(self, game: Game, parts: list[str]) -> None:
        kind = parts[1] if len(parts) > 1 else ""
        if kind == "player" and len(parts) > 3 and parts[3]:
            game.players[parts[2]] = parts[3]
            if to_id_str(parts[3]) == to_id_str(self.username):
                game.side = parts[2]
            if len(parts) > 5 and parts[5].isdigit():
                game.ratings[parts[2]] = int(parts[5])
        elif kind == "rated":
            game.rated = len(parts) < 3 or not parts[2]  # `|rated|MESSAGE`: not the ladder's
        elif kind == "tier" and len(parts) > 2:
            game.format_name = parts[2]
        elif kind == "-message" and len(parts) > 2:
            game.seen_message = parts[2]
        elif kind == "inactive" and len(parts) > 2 and (match := _TIME_LEFT.search(parts[2])):
            game.turn_seconds_left = float(match[1])
        elif kind == "error" and len(parts) > 2 and parts[2].startswith("[Invalid choice]"):
            game.invalid_choices += 1
        elif kind == "request":
            game.invalid_choices = 0
        elif (
            kind == "raw"
            and len(parts) > 2
            and (match := _RATING_LINE.match(parts[2]))
            and to_id_str(html.unescape(match[1])) == to_id_str(self.username)
        ):
            game.rating_before, game.rating_after = int(match[2]), int(match[3])

    async def _answer_if_left(self, tag: str, split_messages: list[list[str]]) -> None:
        """A message that broke off may have carried a request no choice answered: answer it
        with the server's default choice, or the battle waits for the timer."""
        for parts in split_messages[1:]:
            if len(parts) > 2 and parts[1] == "request" and parts[2]:
                with contextlib.suppress(ValueError):
                    request = json.loads(parts[2])
                    if request.get("wait") or self.answered.get(tag) == request.get("rqid"):
                        return
                    self.fallbacks += 1
                    self.session.send(f"{tag}|/choose default")

    def _battle_finished_callback(self, battle) -> None:
        tag = battle.battle_tag
        game, view = self.games.get(tag), self.views.get(tag)
        if game is not None and game.result is None:
            if view is not None:
                game.log, game.sheet = list(view.log), list(view.sheet.values())
                game.side = game.side or view.side
            game.result = "win" if battle.won else "loss" if battle.lost else "tie"
            game.turns = battle.turn
            game.finished_at = time.time()
            message = game.seen_message
            game.end = game.end or (
                "forfeit"
                if message.endswith("forfeited.")
                else "timer"
                if "inactivity" in message
                else "normal"
            )
            self.session.game_finished(tag)
        self.answered.pop(tag, None)
        super()._battle_finished_callback(battle)

    # ------------------------------------------------------------------ decisions
    async def choose_move(self, battle):
        choice = await self._choose(battle)
        return _Choice(choice) if choice else self.choose_random_move(battle)

    async def teampreview(self, battle) -> str:
        choice = await self._choose(battle)
        if choice:  # "team N": N leads, the rest keep their order
            lead = int(choice.split()[1])
            order = [lead] + [n for n in range(1, len(battle.team) + 1) if n != lead]
        else:
            order = random.sample(range(1, 7), 6)
        return "/team " + "".join(str(n) for n in order)

    async def _choose(self, battle) -> str | None:
        """The network's choice, or None: play a random legal one (too slow, or an error)."""
        tag = battle.battle_tag
        game = self.games.get(tag)
        view = self.views.get(tag)
        if view is not None and view.request is not None:
            self.answered[tag] = view.request.get("rqid")
        if game is not None:
            game.decisions += 1
        budget = self.session.cfg.move_time_s
        if game is not None and game.turn_seconds_left:
            budget = min(budget, max(1.0, game.turn_seconds_left / 2))
        try:
            history = self._observe(battle)
            act = asyncio.get_running_loop().run_in_executor(
                self.executor, self.policy.act, list(history)
            )
            action, win = await asyncio.wait_for(act, budget)
            return self._play(battle, history[-1], action, win)
        except asyncio.TimeoutError:  # TimeoutError itself from 3.11 on
            self.slow_decisions += 1
        except Exception as error:  # an agent bug must not stall the game: count, play on
            self._error(error)
        self.fallbacks += 1
        if game is not None:
            game.fallbacks += 1
        return None


class Session:
    """One run of `play`: the connection, the games, the stop. Runs in poke-env's event loop."""

    def __init__(self, cfg: PlayConfig, url: str, password: str | None, net, out: Path, log):
        self.cfg, self.url, self.log, self.out = cfg, url, log, out
        self.label = server_label(url)
        self.username = cfg.username or unique_name("agent")
        team = None
        if cfg.team:
            lines = [t.strip() for t in Path(cfg.team).read_text().splitlines() if t.strip()]
            team = TeamPool(lines, cfg.seed)
        self.player = PlayAgent(
            self,
            NetworkPolicy(net, cfg.temperature, cfg.seed),
            account_configuration=AccountConfiguration(self.username, password),
            server_configuration=ServerConfiguration(url, cfg.auth_url),
            battle_format=cfg.format,
            max_concurrent_battles=0,  # the session keeps the count; poke-env's queue must not block
            team=team,
            start_listening=False,
            start_timer_on_battle_start=not cfg.no_timer,
        )
        self.client = self.player.ps_client = PlayClient(
            account_configuration=self.player.ps_client.account_configuration,
            server_configuration=self.player.ps_client.server_configuration,
            on_battle_message=self.player._handle_battle_message,
            on_update_challenges=self.player._update_challenges,
            on_challenge_request=self.player._handle_challenge_request,
            logger=log.getChild("client"),
            on_message=self._on_message,
            on_drop=self._on_drop,
            auth_assertion=not is_loopback(url),
        )
        header = {"username": self.username, "server": url, "format": cfg.format}
        self.records = Records(out, header | {"mode": cfg.mode, "config": asdict(cfg)})
        self.wake = asyncio.Event()
        self.started = 0
        """Games that began in this run."""
        self.announced: dict[str, float] = {}
        """Battles the server listed as ours before their room opened (they count already)."""
        self.recorded = 0
        self.stopping: str | None = None
        """Why no new game starts (interrupt, or an error)."""
        self.interrupts = 0
        self.error: str | None = None
        self.dropped_at: float | None = None
        self.reconnects = 0
        self.rejoin_check_at: float | None = None
        self.server_games: dict | None = None
        """The games the server listed in its last `|updatesearch|` since the login."""
        self.searching_since: float | None = None
        self.last_search = 0.0
        self.challenging_since: float | None = None
        self.next_challenge = 0.0
        self.absent_since: float | None = None
        """When the challenged user was first reported not online (it may be logging in)."""
        self.challengers: list[str] = []
        """Users whose challenge waits for a free slot."""
        self.accepted: dict[str, float] = {}
        """Challenges accepted whose room has not opened yet."""
        self.finalize_at: dict[str, float] = {}
        self._sending: set[asyncio.Future] = set()

    # ------------------------------------------------------------------ hooks from the player
    def game_started(self, tag: str) -> None:
        self.started += 1
        self.announced.pop(tag, None)
        if self.accepted:
            self.accepted.pop(min(self.accepted, key=self.accepted.get))
        self.searching_since = self.challenging_since = self.absent_since = None
        self.log.info("%s: game %d started", tag, self.started)
        self.wake.set()

    def game_finished(self, tag: str) -> None:
        game = self.player.games[tag]
        wait = RATING_WAIT_S if game.rated and game.rating_after is None else 0.0
        self.finalize_at[tag] = time.monotonic() + wait
        self.wake.set()

    def game_done(self, tag: str) -> None:
        """The rating is in: record the game now."""
        if tag in self.finalize_at:
            self.finalize_at[tag] = 0.0
            self.wake.set()

    def game_lost(self, tag: str, end: str) -> None:
        """A game that ended without `|win|` (the server lost it, or the connection; a forfeit
        on the way out): a loss."""
        game = self.player.games.get(tag)
        if game is None or game.result is not None:
            return
        view = self.player.views.pop(tag, None)
        if view is not None:
            game.log, game.sheet = list(view.log), list(view.sheet.values())
            game.side = game.side or view.side
        self.player.history.pop(tag, None)
        game.result, game.end, game.finished_at = "loss", end, time.time()
        self.finalize_at[tag] = 0.0
        self.log.warning("%s: counted as lost (%s)", tag, end)
        self.wake.set()

    def send(self, *messages: str) -> None:
        """Send `ROOM|TEXT` messages in order, without waiting. On a closed socket they are
        lost, which is safe: the server repeats its request after a reconnect."""

        async def _send():
            with contextlib.suppress(Exception):
                for message in messages:
                    room, _, text = message.partition("|")
                    await self.client.send_raw(text, room)

        task = asyncio.ensure_future(_send())
        self._sending.add(task)  # a task nobody holds may be collected before it runs
        task.add_done_callback(self._sending.discard)

    # ------------------------------------------------------------------ hooks from the client
    def _on_drop(self, reason: str) -> None:
        if not self.client.ever_logged_in:
            self.error = self.error or f"cannot connect to {self.url}: {reason}"
        elif self.dropped_at is None:
            self.dropped_at = time.monotonic()
            self.reconnects += 1
            self.log.warning("connection lost (%s); reconnecting", reason)
        self.server_games = None
        self.searching_since = self.challenging_since = None
        self.accepted.clear()
        self.wake.set()

    def _on_message(self, split_messages: list[list[str]]) -> bool:
        first = split_messages[0]
        kind = first[1] if len(first) > 1 else ""
        if kind == "updatesearch":
            if self.client.logged_in.is_set():
                state = json.loads(first[2])
                self.server_games = state.get("games") or {}
                for tag in self.server_games:
                    game = self.player.games.get(tag)
                    if tag.startswith("battle-") and (game is None or game.result is not None):
                        self.announced.setdefault(tag, time.monotonic())
                if self.cfg.format not in (state.get("searching") or []):
                    self.searching_since = None
                self.wake.set()
            return True
        if kind == "pm" and len(first) > 4:
            self._on_pm(first)
            return True
        if kind == "popup" and self.cfg.mode == CHALLENGE:
            text = "|".join(first[2:])
            if "not accepting challenges" in text:
                self._stop(f"cannot challenge {self.cfg.challenge}: {text.strip()}", error=True)
            elif "was not found" in text:
                # Not online (yet: two processes started together log in in either order):
                # try again every 2 s, for --challenge-wait-s at most.
                now = time.monotonic()
                self.absent_since = self.absent_since or now
                if now - self.absent_since > self.cfg.challenge_wait_s:
                    self._stop(f"cannot challenge {self.cfg.challenge}: {text.strip()}", error=True)
                else:
                    self.log.info("%s is not online (yet): asking again in 2 s", self.cfg.challenge)
                    self.challenging_since, self.next_challenge = None, now + 2.0
                    self.wake.set()
        return False

    def _on_pm(self, parts: list[str]) -> None:
        sender, text = to_id_str(parts[2]), "|".join(parts[4:])
        if text.startswith("/challenge"):
            fmt = text.removeprefix("/challenge").split("|")[0].strip()
            if sender == to_id_str(self.username):  # ours: sent, or over (accepted or not)
                if not fmt and self.challenging_since is not None:
                    self.challenging_since = None
                    self.next_challenge = time.monotonic() + 2.0  # its room may be opening
                return
            if not fmt:  # the challenger cancelled
                with contextlib.suppress(ValueError):
                    self.challengers.remove(sender)
                return
            allowed = self.cfg.allowed()
            if (
                self.cfg.mode != ACCEPT
                or fmt != self.cfg.format
                or self.stopping
                or (allowed is not None and sender not in allowed)
            ):
                self.log.info("rejected a %s challenge from %s", fmt, sender)
                self.send(f"|/reject {sender}")
            elif sender not in self.challengers:
                self.challengers.append(sender)
                self.wake.set()
        elif "rejected the challenge" in text and self.cfg.mode == CHALLENGE:
            self._stop(f"{self.cfg.challenge} rejected the challenge", error=True)

    # ------------------------------------------------------------------ the run
    def interrupt(self) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self._stop("interrupt")
            print(
                "\npokeagent play: stopping after the current games "
                "(Ctrl-C again to forfeit them and stop now)",
                file=sys.stderr,
                flush=True,
            )
        self.wake.set()

    def _stop(self, why: str, error: bool = False) -> None:
        if error:
            self.error = self.error or why
            self.log.error("%s", why)
        self.stopping = self.stopping or why
        if self.searching_since is not None:
            self.send("|/cancelsearch")
        if self.challenging_since is not None:
            self.send(f"|/cancelchallenge {self.cfg.challenge}")
        self.send(*(f"|/reject {sender}" for sender in self.challengers))
        self.challengers.clear()
        self.wake.set()

    def running(self) -> list[Game]:
        return [g for g in self.player.games.values() if g.result is None]

    async def run(self) -> dict:
        listening = asyncio.ensure_future(self.client.listen())
        started = time.monotonic()
        try:
            await self._first_login()
            while self.interrupts < 2:
                await self._step()
                if self._over():
                    break
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 0.5)
            if self.interrupts >= 2:
                for game in self.running():
                    self.send(f"{game.tag}|/forfeit")
                    self.game_lost(game.tag, "interrupted")
                await asyncio.sleep(0.5)  # the forfeits go out before the socket closes
            self._finalize(force=True)
        finally:
            await self.client.close()
            listening.cancel()
            self.player.executor.shutdown(wait=False, cancel_futures=True)
            self.records.close()
        return self._write(time.monotonic() - started)

    async def _first_login(self) -> None:
        deadline = time.monotonic() + LOGIN_WAIT_S
        while not self.client.logged_in.is_set():
            reason = self.client.login_error or self.error
            if reason is None and self.interrupts:
                reason = "interrupted before the login"
            if reason is None and time.monotonic() > deadline:
                reason = f"no login on {self.url} within {LOGIN_WAIT_S:.0f} s"
            if reason is not None:
                raise LoginFailed(reason)
            await asyncio.sleep(0.05)
        self.log.info("logged in as %s on %s", self.username, self.url)

    def _over(self) -> bool:
        if self.running() or self.finalize_at or self.announced:
            return False
        if self.error or self.stopping:
            return True
        target = self.cfg.target
        return target is not None and self.recorded >= target

    async def _step(self) -> None:
        now = time.monotonic()
        logged_in = self.client.logged_in.is_set()
        if self.dropped_at is not None:
            if logged_in:
                self.log.info("reconnected after %.1f s", now - self.dropped_at)
                self.dropped_at = None
                self.rejoin_check_at = now + 5.0
            elif now - self.dropped_at > self.cfg.reconnect_s:
                for game in self.running():
                    self.game_lost(game.tag, "disconnected")
                self.announced.clear()
                self._stop(f"no connection to {self.url} for {self.cfg.reconnect_s:g} s", True)
        if self.rejoin_check_at is not None and (
            self.server_games is not None or now > self.rejoin_check_at
        ):
            # Games the server did not put us back into: ask for their rooms. A room that
            # ended shows its result; one that is gone answers `noinit` (a loss).
            missing = [g.tag for g in self.running() if g.tag not in (self.server_games or {})]
            self.send(*(f"|/join {tag}" for tag in missing))
            self.rejoin_check_at = None
        for tag, since in list(self.announced.items()):
            if now - since > 30:  # listed, but its room never opened
                del self.announced[tag]
        for game in self.running():
            if time.time() - game.started > self.cfg.battle_timeout_s and game.end is None:
                game.end = "too-long"
                self.send(f"{game.tag}|/forfeit")
        self._finalize()
        if logged_in and self.dropped_at is None and not self.stopping:
            self._find_games(now)

    def _find_games(self, now: float) -> None:
        cfg, target = self.cfg, self.cfg.target
        for sender, when in list(self.accepted.items()):
            if now - when > 30:
                del self.accepted[sender]
        coming = self.started + len(self.announced) + len(self.accepted)
        if target is not None and coming >= target:
            return
        if len(self.running()) + len(self.announced) + len(self.accepted) >= cfg.concurrency:
            return
        team = self.player.next_team or "null"
        if cfg.mode == LADDER and self.searching_since is None:
            if now - self.last_search < SEARCH_RETRY_S:
                return
            self.searching_since = self.last_search = now
            self.send(f"|/utm {team}", f"|/search {cfg.format}")
        elif cfg.mode == CHALLENGE:
            if self.challenging_since is not None:
                if now - self.challenging_since > cfg.challenge_wait_s:
                    self.send(f"|/cancelchallenge {cfg.challenge}")
                    self.challenging_since = None
                return
            if now < self.next_challenge:
                return
            self.challenging_since = now
            self.send(f"|/utm {team}", f"|/challenge {cfg.challenge}, {cfg.format}")
        elif cfg.mode == ACCEPT and self.challengers:
            sender = self.challengers.pop(0)
            self.accepted[sender] = now
            self.send(f"|/utm {team}", f"|/accept {sender}")

    def _finalize(self, force: bool = False) -> None:
        now = time.monotonic()
        for tag, when in list(self.finalize_at.items()):
            if when > now and not force:
                continue
            del self.finalize_at[tag]
            game = self.player.games[tag]
            game.recorded = True
            self.records.add(
                game.row(self.username, self.url, self.label),
                game.replay(self.cfg.format, self.label),
            )
            self.recorded += 1
            game.log, game.sheet = [], []  # written: a long run keeps only the small record
            self.player._battles.pop(tag, None)
            self.send(f"|/leave {tag}")
            self._say(game)
            self._write()

    def _say(self, game: Game) -> None:
        table = self.records.table()
        rating = ""
        if game.rating_after is not None:
            rating = f", rating {game.rating_before} -> {game.rating_after}"
        target = f"/{self.cfg.target}" if self.cfg.target else ""
        how = "" if game.end == "normal" else f" ({game.end})"
        print(
            f"play: game {self.recorded}{target} {game.result}{how} vs {game.opponent} "
            f"in {game.turns} turns{rating}; {table['wins']}-{table['losses']}-{table['ties']}",
            flush=True,
        )

    def _write(self, seconds: float | None = None) -> dict:
        """play.json with this run's figures; the summary `play` returns."""
        player = self.player
        run = {
            "games": self.recorded,
            "stopped": self.stopping or "done",
            "error": self.error,
            "reconnects": self.reconnects,
            "rejoined": sum(g.rejoined for g in player.games.values()),
            "agent_errors": player.agent_errors,
            "error_kinds": dict(player.error_kinds.most_common(10)),
            "slow_decisions": player.slow_decisions,
            "fallbacks": player.fallbacks,
            "message_errors": player.message_errors + self.client.message_errors,
        }
        if seconds is not None:
            run["seconds"] = round(seconds, 1)
        summary = self.records.write(run)
        summary["out"] = str(self.out)
        return summary
