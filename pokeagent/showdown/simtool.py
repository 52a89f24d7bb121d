"""Python wrapper around ``simtool.js`` (Pokémon Showdown battle records).

``simtool.js`` runs the Pokémon Showdown simulator in-process under Node and
emits one JSON "battle record" per battle (spectator log, input log, winner and
per-decision ground truth).  This module only starts ``node`` and streams its
JSON Lines output; see ``simtool.js`` for the record format.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "SCRIPT",
    "SimToolError",
    "generate_teams",
    "replay_input_logs",
    "run_random_battles",
]

#: The Node script this module drives.
SCRIPT = Path(__file__).with_name("simtool.js")

# Keep at most this much of node's stderr for error messages.
_STDERR_LIMIT = 64 * 1024


class SimToolError(RuntimeError):
    """``simtool.js`` could not be run or exited with a non-zero status.

    The message carries node's stderr (the tool's diagnostics).
    """


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise SimToolError(
            "`node` (Node.js >= 18) was not found on PATH; it is needed to run simtool.js"
        )
    return node


def _read_stderr(handle: IO[bytes]) -> str:
    handle.seek(0)
    data = handle.read()
    if len(data) > _STDERR_LIMIT:
        data = b"...\n" + data[-_STDERR_LIMIT:]
    return data.decode("utf-8", errors="replace").strip()


def _stream(
    args: list[str], items: Iterable[dict[str, Any]] | None = None
) -> Iterator[dict[str, Any]]:
    """Run ``node simtool.js ARGS`` and yield each stdout line parsed as JSON.

    If ``items`` is given they are written to node's stdin as JSON Lines from a
    background thread, so input and output are both streamed (constant memory).
    Stops (and kills node) if the consumer abandons the generator.
    """
    command = [_node(), str(SCRIPT), *args]
    # stderr goes to a temporary file: a pipe we never read could fill up and block node.
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if items is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        writer_error: list[BaseException] = []
        writer: threading.Thread | None = None
        if items is not None:
            writer = threading.Thread(
                target=_write_items, args=(proc, items, writer_error), daemon=True
            )
            writer.start()
        finished = False
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.strip()
                if line:
                    yield json.loads(line)
            returncode = proc.wait()
            finished = True
        finally:
            if not finished and proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
            proc.wait()
            if writer is not None:
                # After a kill the writer fails its next write at once; don't wait on a slow
                # `items` iterator forever when the consumer has already gone.
                writer.join(timeout=None if finished else 5.0)
        if writer_error:
            raise SimToolError(
                f"could not send input to simtool.js: {writer_error[0]!r}"
            ) from writer_error[0]
        if returncode != 0:
            message = _read_stderr(stderr) or "(no stderr output)"
            raise SimToolError(f"simtool.js {args[0]} exited with status {returncode}:\n{message}")


def _write_items(
    proc: subprocess.Popen[bytes], items: Iterable[dict[str, Any]], errors: list[BaseException]
) -> None:
    """Feed ``items`` to node's stdin as JSON Lines, then close it (runs in a thread)."""
    assert proc.stdin is not None
    try:
        for item in items:
            proc.stdin.write(json.dumps(item).encode("utf-8") + b"\n")
    except BrokenPipeError:
        pass  # node exited early; its exit status reports why
    except BaseException as exc:  # re-raised by the reading thread
        errors.append(exc)
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()


def run_random_battles(
    package_dir: Path,
    format_id: str,
    count: int,
    seed: int,
    teams_file: Path | None = None,
    move_prob: float | None = None,
    names: tuple[str, str] = ("sim-p1", "sim-p2"),
    *,
    processes: int = 1,
    mega_prob: float | None = None,
    tera_prob: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Simulate ``count`` battles between two ``RandomPlayerAI`` players.

    Args:
        package_dir: folder of the ``pokemon-showdown`` npm package.
        format_id: e.g. ``"gen9randombattle"``; non-random formats need ``teams_file``.
        count: number of battles.
        seed: the same seed always gives identical records, whatever ``processes``.
        teams_file: packed teams, one per line (validated for the format).
        move_prob: RandomPlayerAI's probability of moving rather than switching
            (default: the AI's own default, 1.0).
        names: the two player names.
        processes: node processes run at once; process k plays battles k, k+K, k+2K, ...
            and the records are yielded in battle order.
        mega_prob: RandomPlayerAI's probability of Mega Evolving / Ultra
            Bursting / Dynamaxing when it can (default: the AI's own default, 0).
        tera_prob: probability of adding Terastallization to a move when the
            request allows it (RandomPlayerAI itself never terastallizes).

    Yields:
        One battle record per battle (or ``{"id", "error"}`` if a battle failed).

    Raises:
        SimToolError: if node is missing or rejects the arguments.
    """
    args = [
        "battles",
        "--showdown",
        str(package_dir),
        "--format",
        format_id,
        "--seed",
        str(int(seed)),
        "--p1",
        names[0],
        "--p2",
        names[1],
    ]
    if teams_file is not None:
        args += ["--teams", str(teams_file)]
    if move_prob is not None:
        args += ["--move-prob", repr(float(move_prob))]
    if mega_prob is not None:
        args += ["--mega-prob", repr(float(mega_prob))]
    if tera_prob is not None:
        args += ["--tera-prob", repr(float(tera_prob))]
    processes = max(1, min(int(processes), int(count)))
    streams = [
        _stream(
            [
                *args,
                "--count",
                str(len(range(k, int(count), processes))),
                "--first",
                str(k),
                "--stride",
                str(processes),
            ]
        )
        for k in range(processes)
    ]
    return _round_robin(streams, int(count))


def _round_robin(streams: list[Iterator[dict[str, Any]]], count: int) -> Iterator[dict[str, Any]]:
    """Battle i comes from stream i % K: reading in that order keeps every process busy
    (each blocks only on its own full pipe) and yields the records in battle order."""
    try:
        for i in range(count):
            yield next(streams[i % len(streams)])
        for stream in streams:  # let each finish, so its exit status is checked
            for extra in stream:
                raise SimToolError(f"simtool.js emitted more records than asked: {extra.get('id')}")
    finally:
        for stream in streams:
            stream.close()


def replay_input_logs(
    package_dir: Path, items: Iterable[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """Re-run Showdown input logs and yield one battle record per item.

    Args:
        package_dir: folder of the ``pokemon-showdown`` npm package.
        items: ``{"input_log": [...], "id": optional, "winner": optional}``;
            ``winner`` is only used when the input log stops before the battle
            ends (old servers did not log forfeits): it is applied as the other
            player's forfeit.

    Yields:
        Records in input order; an item that cannot be replayed (doubles,
        unknown format, a choice the simulator rejects, ...) yields
        ``{"id": ..., "error": "..."}`` instead.
    """
    return _stream(["replay", "--showdown", str(package_dir)], items)


def generate_teams(package_dir: Path, format_id: str, count: int, seed: int) -> list[str]:
    """Return ``count`` packed teams that pass the format's team validator.

    The teams are random-battle teams of the format's generation that happened
    to be legal; the same seed gives the same teams.
    """
    args = [
        "teams",
        "--showdown",
        str(package_dir),
        "--format",
        format_id,
        "--count",
        str(int(count)),
        "--seed",
        str(int(seed)),
    ]
    return [item["team"] for item in _stream(args)]
