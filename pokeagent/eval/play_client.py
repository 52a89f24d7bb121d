"""The connection of `pokeagent play` to a Showdown server: the address, the login, the password
kept out of every log, and a websocket that comes back after a drop.

- `websocket_url` accepts the public server's layout (`wss://sim3.psim.us/showdown/websocket`,
  `https://play.pokemonshowdown.com`, `public`), a private server's (`https://NAME.psim.us`,
  `http://host:8000`, `host:8000`, `ws://host:8000/showdown/websocket`) and None: the local
  server `pokeagent showdown start` left running.
- The password comes from an environment variable or a file (`read_password`), never from the
  command line; `Redactor` removes it (and the login server's assertion, which stands for it for
  a day) from every log record that goes through the play loggers.
- `PlayClient` is poke-env's `PSClient` with a listening loop that reconnects: a dropped socket
  is opened again with backoff, the login is redone, and Showdown puts a returning user back
  into its unfinished battles (the room's whole log, then the pending request). Every message is
  handled in its own task and an exception in one is counted and logged, never raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import websockets
from poke_env.data import to_id_str
from poke_env.ps_client import PSClient

PUBLIC_WEBSOCKET = "wss://sim3.psim.us/showdown/websocket"
"""The public server (play.pokemonshowdown.com) as poke-env's ShowdownServerConfiguration names it."""
_PUBLIC_NAMES = {"public", "showdown", "play.pokemonshowdown.com", "pokemonshowdown.com"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_ASSERTION = re.compile(r"(/trn [^,|]*,\d+,)[^\s|'\"]+")
REDACTED = "<redacted>"


class LoginError(RuntimeError):
    """The server or its login server refused the account."""


def websocket_url(server: str | None) -> str:
    """The websocket address of `server` (see the module docstring for what it accepts)."""
    if server is None or server.strip() in ("", "local"):
        from pokeagent.showdown.server import running_servers

        running = running_servers()
        if not running:
            raise ValueError(
                "no local Showdown server is running: start one with `pokeagent showdown start`, "
                "or give --server (e.g. public, or ws://HOST:PORT/showdown/websocket)"
            )
        return f"ws://127.0.0.1:{running[-1].port}/showdown/websocket"
    text = server.strip()
    if text.lower().rstrip("/") in _PUBLIC_NAMES or text.lower().rstrip("/").endswith(
        "//play.pokemonshowdown.com"
    ):
        return PUBLIC_WEBSOCKET
    if "://" not in text:
        text = "ws://" + text
    parts = urlsplit(text)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError(f"--server {server!r}: expected ws(s)://HOST[:PORT][/PATH] or http(s)://")
    path = parts.path.rstrip("/")
    if not path.endswith("/websocket"):
        path += "/showdown/websocket"
    return f"{scheme}://{parts.netloc}{path}"


def is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in _LOOPBACK


def server_label(url: str) -> str:
    """'' for the public server (its battle ids are the replay site's); `host-port` else, so
    ids from different servers never collide in one data set."""
    if url == PUBLIC_WEBSOCKET or (urlsplit(url).hostname or "").endswith(".psim.us"):
        return ""
    parts = urlsplit(url)
    host = re.sub(r"[^a-z0-9]+", "", (parts.hostname or "").lower())
    return f"{host}-{parts.port}" if parts.port else host


def read_password(env: str | None, file: str | None) -> str | None:
    """The account's password from the environment variable named `env` or from `file` (its
    first line), or None when neither is given."""
    if env and file:
        raise ValueError("give the password one way: --password-env or --password-file")
    if env:
        password = os.environ.get(env)
        if not password:
            raise ValueError(f"--password-env {env}: the environment variable is not set or empty")
        return password
    if file:
        path = Path(file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"--password-file {file}: {error.strerror}") from error
        password = text.splitlines()[0] if text.strip() else ""
        if not password:
            raise ValueError(f"--password-file {file} is empty")
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            logging.getLogger("pokeagent.play").warning(
                "%s can be read by other users: chmod 600 it", file
            )
        return password
    return None


class Redactor(logging.Filter):
    """Replaces the secrets (and any login assertion) in a record's message with <redacted>.

    On a handler it covers every record the handler writes, whichever logger made it."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.secrets = tuple(
            {form for secret in secrets if secret for form in (secret, quote(secret, safe=""))}
        )

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return _ASSERTION.sub(rf"\g<1>{REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.redact(message), None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class PlayClient(PSClient):
    """poke-env's client, reconnecting (see the module docstring). The owner gives:

    - `on_message(split_messages)`: sees every non-battle message first (`|updatesearch|`,
      `|popup|`, `|pm|`...); returns True when it handled it and poke-env must not;
    - `on_drop(reason)`: the socket closed (the loop then tries again);
    - `battle_leave`: `/leave` of a battle room is held back (the owner leaves once the
      server has told the rating, which comes after `|win|`).
    """

    def __init__(
        self,
        *args,
        logger: logging.Logger,
        on_message: Callable[[list[list[str]]], bool],
        on_drop: Callable[[str], None],
        auth_assertion: bool,
        **kwargs,
    ):
        self._play_logger = logger
        super().__init__(*args, start_listening=False, **kwargs)
        self.on_message = on_message
        self.on_drop = on_drop
        self.auth_assertion = auth_assertion
        """Without a password, ask the login server for an unregistered name's assertion
        (servers with security); a local `--no-security` server takes an empty one."""
        self.closing = False
        self.connections = 0
        """Sockets opened."""
        self.message_errors = 0
        self.login_error: str | None = None
        """Why the first login failed (the run ends); a later one is retried on a new socket."""
        self.ever_logged_in = False
        self.last_message_at = time.monotonic()

    def _create_logger(self, log_level):
        return self._play_logger

    async def _handle_message(self, message: str) -> None:
        self.last_message_at = time.monotonic()
        try:
            split_messages = [m.split("|") for m in message.split("\n")]
            first = split_messages[0]
            if first[0].startswith(">battle"):
                await super()._handle_message(message)
                return
            kind = first[1] if len(first) > 1 else ""
            if kind == "nametaken":
                reason = first[3] if len(first) > 3 else "no reason given"
                await self._login_failed(f"the server refused the name {self.username!r}: {reason}")
                return
            if kind == "updateuser" and len(first) > 3:
                # ` Name`, `*Name@!` (a group symbol, away): poke-env wants the bare name.
                name = first[2].rsplit("@", 1)[0] if "@" in first[2] else first[2]
                if first[3] == "1" and to_id_str(name) == to_id_str(self.username):
                    self.logged_in.set()
                    self.ever_logged_in = True
                return
            if kind == "popup":
                self.logger.warning("server popup: %s", "|".join(first[2:]).replace("||", " "))
            if self.on_message(split_messages) or kind == "popup":
                return
            await super()._handle_message(message)
        except Exception:  # one bad message never ends the run: count it, log it, go on
            self.message_errors += 1
            self.logger.exception("could not handle a message (%d so far)", self.message_errors)

    async def log_in(self, split_message: list[str]) -> None:
        challstr = "|".join(split_message[2:])
        password = self.account_configuration.password
        if password or self.auth_assertion:
            assertion = await asyncio.to_thread(self._assertion, challstr, password)
        else:
            self.logger.info("logging in without a password (a server without security)")
            assertion = ""
        if isinstance(assertion, LoginError):
            await self._login_failed(str(assertion))
            return
        await self.send_message(f"/trn {self.username},0,{assertion}")

    async def _login_failed(self, reason: str) -> None:
        if not self.ever_logged_in:
            self.login_error = reason
            self.logger.error("%s", reason)
            return
        # Logged in before: the server may not have noticed the old socket is gone yet, or the
        # login server is down for a moment. Try again on a new socket.
        self.logger.warning("%s; trying again", reason)
        await self.websocket.close()

    def _assertion(self, challstr: str, password: str | None) -> str | LoginError:
        """The login server's signed assertion for this connection, or why there is none."""
        import requests

        url = self.server_configuration.authentication_url
        try:
            if password:
                data = {"act": "login", "name": self.username, "pass": password}
                reply = requests.post(url, data=data | {"challstr": challstr}, timeout=15)
                body = json.loads(reply.text.lstrip("]") or "{}")
                assertion = body.get("assertion") or ""
                if not body.get("actionsuccess", True) or assertion.startswith(";;"):
                    reason = assertion[2:] or "wrong name or password"
                    return LoginError(f"the login server refused {self.username!r}: {reason}")
                return assertion
            data = {"act": "getassertion", "userid": self.username, "challstr": challstr}
            assertion = requests.post(url, data=data, timeout=15).text.strip()
        except (OSError, ValueError) as error:  # requests' errors are OSErrors; bad JSON
            return LoginError(f"could not reach the login server {url}: {type(error).__name__}")
        if assertion == ";":
            return LoginError(
                f"the name {self.username!r} is registered: give its password "
                "(--password-env VAR or --password-file FILE)"
            )
        if assertion.startswith(";;"):
            return LoginError(f"the login server refused {self.username!r}: {assertion[2:]}")
        return assertion

    async def send_message(self, message: str, room: str = "", message_2: str | None = None):
        if message.startswith("/leave battle-"):
            return  # the owner leaves a finished battle itself (`send_raw`)
        await self.send_raw("|".join([message, message_2]) if message_2 else message, room)

    async def send_raw(self, message: str, room: str = "") -> None:
        """Send as is (a `/leave` of a battle room included)."""
        self.logger.debug(">>> %s|%s", room, message)
        await self.websocket.send(f"{room}|{message}")

    async def listen(self) -> None:
        """Connect, and connect again after every drop until `close`."""
        failures = 0
        while not self.closing:
            reason = "closed by the server"
            logged_in_before = self.connections
            try:
                async with websockets.connect(
                    self.websocket_url,
                    max_queue=None,
                    open_timeout=self._open_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                ) as websocket:
                    self.websocket = websocket
                    self.connections += 1
                    async for message in websocket:
                        self.logger.debug("<<< %s", message)
                        task = asyncio.create_task(self._handle_message(str(message)))
                        self._active_tasks.add(task)
                        task.add_done_callback(self._active_tasks.discard)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # refused, reset, handshake or ping timeout
                reason = f"{type(error).__name__}: {error}"
            self.logged_in.clear()
            if self.closing:
                return
            failures = 0 if self.connections > logged_in_before else failures + 1
            self.on_drop(reason)
            await asyncio.sleep(min(30.0, 0.5 * 2**failures))

    async def close(self) -> None:
        self.closing = True
        websocket = getattr(self, "websocket", None)
        if websocket is not None:
            await websocket.close()
