"""Replay sources: every file shape the project meets -> a stream of `Replay` records.

Shapes (DESIGN.md, "Contracts between stages"), all mapped by `replay_from_record`:

- served replay JSON (`<id>.json` from the replay site) and Metamon raw rows: `id, format,
  formatid, players, log (text), uploadtime, rating`. Metamon's uploader writes every field as
  a string (`str(value)`: a list of players as `"['a', 'b']"`, a null as `"None"`) and a
  field the replay lacked as `"MISSING"`;
- server battle logs (`.log.json`): `p1, p2, log (a list of lines), p1rating, p2rating,
  winner, roomid (or id in older servers), inputLog, p1team, p2team, ...`;
- PokéChamp rows: `battle_id, gamemode, elo (a band, "1400-1599"), month_year, text (the log)`,
  where `battle_id` is the game number then a date (`2058494320-2024-09-15`);
- raw protocol text (`.log`, `.txt`);
- JSONL and JSONL.gz holding any of the JSON shapes, one a line; parquet with PokéChamp or
  Metamon columns; folders of any of these (recursive, sorted).

Absent values: `None`, and the placeholders `"MISSING"`, `"None"` and `""` (after stripping),
are one and the same "not known", whatever field they sit in. Each field then falls back:
the format to `format`, then the log's `|tier|`, then the id (`gen9ou-123`); the players to the
log's `|player|` lines; the upload time (also when it is 0 or negative, a failed date parse
upstream) to the log's first `|t:|`, then the date in a PokéChamp id; the id to the file name
and row (marked `extra["fallback_id"]`, which `pack` does not deduplicate by).

One id per battle across sources: a PokéChamp id `<number>-<date>` becomes the replay server's
`<formatid>-<number>` (the id Metamon's and the replay site's rows carry for the same battle,
and the one Metamon itself rebuilds to deduplicate when it imports PokéChamp), the raw value
kept in `extra["battle_id"]`. `pokeagent pack` keeps the first copy of each id.

Memory is one record (or one parquet batch) at a time, whatever the number of rows. Bad input
never stops a run: each unreadable file, line or row is skipped, counted by reason in
`SourceStats.skipped` and logged (the first few per reason at WARNING, the rest at DEBUG, since
one broken dump can hold millions of bad lines).
"""

from __future__ import annotations

import ast
import errno
import gzip
import json
import logging
import math
import os
import re
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pokeagent.data.replay import (
    Replay,
    own_teams,
    players_from_log,
    ratings_from_log,
    winner_from_log,
)

logger = logging.getLogger(__name__)

PARQUET_BATCH_ROWS = 256
"""Parquet rows decoded at a time: 256 logs of 5-30 kB is a few MB of Python strings."""
WARN_PER_REASON = 20
"""Skips logged at WARNING per reason in one run; the rest go to DEBUG."""

_POKECHAMP_COLUMNS = ("battle_id", "gamemode", "elo", "month_year", "text")
_METAMON_COLUMNS = ("id", "format", "formatid", "players", "log", "uploadtime", "rating")
_SERVER_LOG_EXTRA = ("seed", "turns", "endType", "timestamp", "inputLog")
_KINDS = ((".jsonl.gz", "jsonl"), (".jsonl", "jsonl"), (".json", "json"), (".parquet", "parquet"))
_KINDS += ((".log", "log"), (".txt", "log"))
_TIER_LINE = re.compile(r"^\|tier\|(.*)$", re.MULTILINE)
_TIME_LINE = re.compile(r"^\|t:\|(\d+)", re.MULTILINE)
_FORMAT_IN_NAME = re.compile(r"gen\d+[a-z0-9]*")
_ELO_BAND = re.compile(r"\s*(\d+)\s*(?:[-–]\s*\d*|\+)?\s*$")
_NUMBERED_ID = re.compile(r"^(\d+)(?:-(.*))?$")
"""PokéChamp's `battle_id`: the game number, then (usually) the date, `2058494320-2024-09-15`."""
PLACEHOLDERS = frozenset({"MISSING", "None", ""})
"""Strings that stand for "no value": Metamon's uploader writes `"MISSING"` for an absent field
and `str(None)` for a null one."""


@dataclass
class SourceStats:
    """What a run read: `read == yielded + sum(skipped.values()) + sum(filtered.values())`."""

    read: int = 0
    """Records looked at (files, lines, rows), plus one per file or file tail that failed."""
    yielded: int = 0
    """Replays handed to the caller."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Bad input by reason: 'bad json', 'no log', 'corrupt parquet', 'unknown shape'..."""
    filtered: Counter[str] = field(default_factory=Counter)
    """Good replays left out by the filters: 'format', 'no rating', 'rating below min'."""


class BadRecord(ValueError):
    """A record that cannot become a Replay; `reason` is the short name it is counted under."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Skip:
    """A reader's report of one thing it could not turn into a Replay."""

    reason: str
    where: str
    detail: str = ""


def format_id(name: str) -> str:
    """Showdown format id: `[Gen 9] OU` -> `gen9ou` (lower case, only [a-z0-9])."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


# ---------------------------------------------------------------- records -> Replay


def replay_from_record(record: object, *, source: str = "", default_id: str = "") -> Replay:
    """A served replay / Metamon row, server log or PokéChamp row (a dict) -> Replay.

    The shape is told by its keys; then placeholder values (`PLACEHOLDERS`) count as absent.
    `default_id` names records that carry no id (raw files use their stem). Raises `BadRecord`
    with a short reason when the record is unusable.
    """
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    given = {key: value for key, value in record.items() if not is_placeholder(value)}
    if "battle_id" in record or "text" in record:
        return _from_pokechamp(given, source, default_id)
    if isinstance(record.get("log"), list) or "inputLog" in record or "p1rating" in record:
        return _from_server_log(given, source, default_id)
    if "log" in record or "players" in record:
        return _from_served(given, source, default_id)
    raise BadRecord("unknown shape")


def is_placeholder(value: object) -> bool:
    """True for None and the strings that stand for no value (`"MISSING"`, `"None"`, `""`)."""
    return value is None or (isinstance(value, str) and value.strip() in PLACEHOLDERS)


def _from_served(rec: dict, source: str, default_id: str) -> Replay:
    return _build(
        rid=_battle_id(rec.get("id")),
        default_id=default_id,
        fmt=rec.get("formatid") or rec.get("format"),
        # Older replay JSON had `p1`, `p2` instead of `players`.
        players=rec.get("players") or [rec.get("p1"), rec.get("p2")],
        log=rec.get("log"),
        source=source,
        shared_rating=_rating(rec.get("rating")),  # the site's one number stands for both sides
        record_winner=rec.get("winner"),
        uploadtime=_int(rec.get("uploadtime")),
        teams=rec.get("teams"),  # simulator battles written by `pokeagent generate`
    )


def _from_server_log(rec: dict, source: str, default_id: str) -> Replay:
    log = rec.get("log")
    if isinstance(log, list):
        if not all(isinstance(line, str) for line in log):
            raise BadRecord("bad log")
        log = "\n".join(log)
    return _build(
        # Servers since ~2020 write `roomid`; older ones (the 2019 fixtures) `id`.
        rid=_battle_id(rec.get("roomid") or rec.get("id")),
        default_id=default_id,
        fmt=rec.get("formatid") or rec.get("format"),
        players=[rec.get("p1"), rec.get("p2")],
        log=log,
        source=source,
        side_ratings={"p1": _rating(rec.get("p1rating")), "p2": _rating(rec.get("p2rating"))},
        record_winner=rec.get("winner"),
        uploadtime=_js_date(rec.get("timestamp")),
        # Teams, seed and input log make server logs ground truth; keep them for the parser.
        extra={key: rec[key] for key in _SERVER_LOG_EXTRA if key in rec},
        teams={"p1": rec.get("p1team"), "p2": rec.get("p2team")},
    )


def _from_pokechamp(rec: dict, source: str, default_id: str) -> Replay:
    band = rec.get("elo")
    raw_id = _battle_id(rec.get("battle_id"))
    extra = {"elo_band": band, "month_year": rec.get("month_year"), "battle_id": raw_id or None}
    return _build(
        rid=raw_id,
        default_id=default_id,
        numbered_id=True,
        fmt=rec.get("gamemode"),
        players=None,  # PokéChamp keeps names only in the log's |player| lines
        log=rec.get("text"),
        source=source,
        shared_rating=_elo_band_floor(band),
        extra={k: v for k, v in extra.items() if v is not None},
    )


def _build(
    *,
    rid: str,
    default_id: str,
    numbered_id: bool = False,
    fmt: object,
    players: object,
    log: object,
    source: str,
    side_ratings: dict[str, int | None] | None = None,
    shared_rating: int | None = None,
    record_winner: object = None,
    uploadtime: int | None = None,
    extra: dict | None = None,
    teams: object = None,
) -> Replay:
    """The checks and fallbacks every shape shares (placeholders already removed).

    `numbered_id`: `rid` may be PokéChamp's `<number>-<date>`, rewritten `<formatid>-<number>`.
    """
    if log is None or log == "":
        raise BadRecord("no log")
    if not isinstance(log, str):
        raise BadRecord("bad log")
    if not (log.startswith("|") or "\n|" in log):
        raise BadRecord("not a protocol log")
    numbered = _NUMBERED_ID.match(rid) if numbered_id else None
    fid = format_id(fmt) if isinstance(fmt, str) else ""
    if not fid and (tier := _TIER_LINE.search(log)):
        fid = format_id(tier.group(1))
    if not fid and (named := _FORMAT_IN_NAME.search((rid or default_id).lower())):
        fid = named.group(0)
    if not fid:
        raise BadRecord("no format")
    extra = dict(extra or {})
    if numbered:
        rid = f"{fid}-{numbered.group(1)}"
    elif not rid and default_id:
        rid = default_id
        extra["fallback_id"] = True
    if not rid:
        raise BadRecord("no id")
    names = _two_names(players) or players_from_log(log)
    if names is None:
        raise BadRecord("no players")
    if uploadtime is not None and uploadtime <= 0:
        uploadtime = None  # 0 or less: a date that failed to parse upstream, not 1970
    if uploadtime is None and (stamp := _TIME_LINE.search(log)):
        uploadtime = int(stamp.group(1)) or None
    if uploadtime is None and numbered and numbered.group(2):
        uploadtime = _iso_date(numbered.group(2))
    replay = Replay(
        id=rid,
        format=fid,
        players=names,
        log=log,
        # Per-side numbers (record, then |player| lines) beat one number for both sides.
        ratings=_merge_ratings(side_ratings, ratings_from_log(log), shared=shared_rating),
        winner=winner_from_log(log),
        source=source,
        uploadtime=uploadtime,
        extra=extra,
        teams=own_teams(teams),
    )
    # The record's winner only where the log has no result: a `|tie` in the log stays a tie.
    if not replay.finished and isinstance(record_winner, str) and record_winner.strip():
        replay.winner = record_winner.strip()
    return replay


def _battle_id(value: object) -> str:
    """`battle-gen9ou-123` -> `gen9ou-123`, so ids agree across server logs and replays."""
    return value.strip().removeprefix("battle-") if isinstance(value, str) else ""


def _two_names(players: object) -> tuple[str, str] | None:
    if isinstance(players, str) and players.lstrip().startswith("["):
        try:  # Metamon's rows hold `str(list)`: "['name a', 'name b']"
            players = ast.literal_eval(players)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    if (
        isinstance(players, (list, tuple))
        and len(players) == 2
        and all(isinstance(name, str) and name.strip() for name in players)
    ):
        return players[0], players[1]
    return None


def _int(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number) if math.isfinite(number) else None


def _rating(value: object) -> int | None:
    """A number, numeric string or a ladder dict (`elo`, else `rpr`) -> int; 0 or less is unrated."""
    if isinstance(value, dict):
        for key in ("elo", "rpr"):
            if (rating := _rating(value.get(key))) is not None:
                return rating
        return None
    rating = _int(value)
    return rating if rating is not None and rating > 0 else None


def _elo_band_floor(band: object) -> int | None:
    """PokéChamp's `elo`: "1400-1599" or "1800+" -> the lower bound; "<1000" has none."""
    if isinstance(band, str):
        match = _ELO_BAND.match(band)
        return int(match.group(1)) if match else None
    return _rating(band)


def _merge_ratings(
    *per_side: dict[str, int | None] | None, shared: int | None = None
) -> dict[str, int | None] | None:
    merged: dict[str, int | None] = {}
    for side in ("p1", "p2"):
        known = [src[side] for src in per_side if src and src.get(side) is not None]
        merged[side] = known[0] if known else shared
    return merged if any(v is not None for v in merged.values()) else None


def _iso_date(text: str) -> int | None:
    """`2024-09-15` -> Unix time of that day's start (UTC); None when it is not such a date."""
    try:
        when = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(when.timestamp())


def _js_date(value: object) -> int | None:
    """Server logs' JavaScript date, `Wed May 15 2019 20:35:04 GMT-0700 (PDT)` -> Unix time."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.strptime(value.split(" (")[0].strip(), "%a %b %d %Y %H:%M:%S GMT%z")
    except ValueError:
        return None
    return int(when.timestamp())


# ---------------------------------------------------------------- files -> records


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    return next((kind for suffix, kind in _KINDS if name.endswith(suffix)), None)


def _stem(path: Path) -> str:
    """File name without its suffixes: `battle-gen9ou-1.log.json` -> `gen9ou-1`."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".parquet", ".log", ".txt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return _battle_id(name)


def _convert(record: object, where: str, default_id: str) -> Replay | _Skip:
    try:
        return replay_from_record(record, source=where, default_id=default_id)
    except BadRecord as bad:
        return _Skip(bad.reason, where)


def _read_json(path: Path) -> Iterator[Replay | _Skip]:
    """One JSON document: a record, or a list of records (some dumps are arrays)."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as err:
        yield _Skip("unreadable file", str(path), str(err))
        return
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        yield _Skip("bad json", str(path), str(err)[:80])
        return
    if isinstance(data, list):
        for i, record in enumerate(data):
            yield _convert(record, f"{path}:item {i}", f"{_stem(path)}-{i}")
    else:
        yield _convert(data, str(path), _stem(path))


def _read_jsonl(path: Path) -> Iterator[Replay | _Skip]:
    gz = path.name.lower().endswith(".gz")
    lineno = 0
    try:
        # Bytes, not text: a line with broken UTF-8 is then one bad line, not a dead file.
        with gzip.open(path, "rb") if gz else open(path, "rb") as lines:
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                where = f"{path}:line {lineno}"
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as err:
                    yield _Skip("bad json", where, str(err)[:80])
                    continue
                yield _convert(record, where, f"{_stem(path)}-{lineno}")
    except (OSError, EOFError, zlib.error) as err:  # truncated or corrupt gzip, I/O error
        yield _Skip(
            "corrupt gzip" if gz else "unreadable file", f"{path}:line {lineno + 1}", str(err)
        )


def _read_log(path: Path) -> Iterator[Replay | _Skip]:
    """Raw protocol text; format from `|tier|` (else the name), players from `|player|` lines."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        yield _Skip("unreadable file", str(path), str(err))
        return
    except UnicodeDecodeError:
        yield _Skip("not utf-8", str(path))
        return
    try:
        yield _build(
            rid=_stem(path),
            default_id="",
            fmt=None,
            players=None,
            log=text.replace("\r\n", "\n"),
            source=str(path),
        )
    except BadRecord as bad:
        yield _Skip(bad.reason, str(path))


def _read_parquet(path: Path) -> Iterator[Replay | _Skip]:
    """PokéChamp or Metamon rows, told apart by their columns, a batch of rows at a time."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:  # ArrowInvalid: truncated footer, not parquet
        yield _Skip("corrupt parquet", str(path), str(err)[:80])
        return
    try:
        names = set(parquet.schema_arrow.names)
        if {"battle_id", "text"} <= names:
            columns = [c for c in _POKECHAMP_COLUMNS if c in names]
        elif {"id", "log"} <= names:
            columns = [c for c in _METAMON_COLUMNS if c in names]
        else:
            yield _Skip("unknown parquet schema", str(path), ", ".join(sorted(names))[:80])
            return
        # Only the needed columns, one row group at a time: a corrupt page then costs its row
        # group, not the rest of the file.
        first_row = 0
        for group in range(parquet.metadata.num_row_groups):
            row = first_row
            first_row += parquet.metadata.row_group(group).num_rows
            batches = parquet.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, row_groups=[group], columns=columns
            )
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (OSError, pa.ArrowException) as err:
                    yield _Skip("corrupt parquet", f"{path}:row {row}", str(err)[:80])
                    break
                for record in batch.to_pylist():
                    yield _convert(record, f"{path}:row {row}", f"{_stem(path)}-{row}")
                    row += 1
    finally:
        parquet.close()


_READERS = {"json": _read_json, "jsonl": _read_jsonl, "log": _read_log, "parquet": _read_parquet}


def _read_path(path: Path) -> Iterator[Replay | _Skip]:
    """A file, or a folder walked depth first with names sorted in each folder.

    Sorting one folder at a time keeps memory to the largest folder's names, not the tree's.
    Hidden entries (.cache, .DS_Store) and files of other types (README.md) are passed over.
    """
    if not path.is_dir():
        kind = _kind(path)
        if kind is None:
            yield _Skip("unsupported file type", str(path))
        else:
            yield from _READERS[kind](path)
        return
    try:
        with os.scandir(path) as entries:
            listing = sorted((e.name, e.is_dir()) for e in entries if not e.name.startswith("."))
    except OSError as err:
        yield _Skip("unreadable folder", str(path), str(err))
        return
    for name, is_dir in listing:
        child = path / name
        if is_dir or _kind(child) is not None:
            yield from _read_path(child)


# ---------------------------------------------------------------- public entry points


def iter_replays(
    paths: Iterable[str | Path] | str | Path,
    *,
    formats: Collection[str] | None = None,
    min_rating: int | None = None,
    stats: SourceStats | None = None,
) -> Iterator[Replay]:
    """Stream the replays in `paths` (files or folders, in the order given), filtered.

    `formats`: format ids or names to keep (`gen9ou`, `[Gen 9] OU`). `min_rating`: keep a
    replay only when every known rating of its players is at least this; a replay with no
    rating at all is left out. Bad input is skipped and counted in `stats`; a path that does
    not exist raises FileNotFoundError before anything is read.
    """
    roots = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(errno.ENOENT, "replay source not found", str(root))
    wanted = None if formats is None else {format_id(f) for f in formats}
    return _stream(roots, wanted, min_rating, stats if stats is not None else SourceStats())


def count_records(paths: Iterable[str | Path]) -> int | None:
    """The records `iter_replays(paths)` will read, where the files tell without being read:
    the row counts in parquet footers (one small read per file). None when any file is of
    another kind (JSON, JSONL, logs) or a footer is unreadable."""
    total = 0
    for root in (Path(p) for p in paths):
        files = [root] if not root.is_dir() else _files_under(root)
        for path in files:
            if _kind(path) != "parquet":
                return None
            try:
                total += pq.ParquetFile(path).metadata.num_rows
            except (OSError, pa.ArrowException):
                return None
    return total


def _files_under(folder: Path) -> list[Path]:
    """The files `_read_path` reads in a folder (no hidden entries, known kinds only)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            if not name.startswith(".") and _kind(path) is not None:
                found.append(path)
    return found


def open_source(path: str | Path) -> Iterator[Replay]:
    """Stream the replays in one file or folder, unfiltered (bad input skipped and logged)."""
    return iter_replays([path])


def _stream(
    roots: list[Path], wanted: set[str] | None, min_rating: int | None, stats: SourceStats
) -> Iterator[Replay]:
    for root in roots:
        for item in _read_path(root):
            stats.read += 1
            if isinstance(item, _Skip):
                _count_skip(stats, item)
                continue
            reason = filter_reason(item, wanted, min_rating)
            if reason:
                stats.filtered[reason] += 1
                continue
            stats.yielded += 1
            yield item


def _count_skip(stats: SourceStats, skip: _Skip) -> None:
    stats.skipped[skip.reason] += 1
    seen = stats.skipped[skip.reason]
    level = logging.WARNING if seen <= WARN_PER_REASON else logging.DEBUG
    more = (
        f" (further '{skip.reason}' skips are logged at DEBUG)" if seen == WARN_PER_REASON else ""
    )
    detail = f": {' '.join(skip.detail.split())}" if skip.detail else ""  # one line per skip
    logger.log(level, "skipped %s: %s%s%s", skip.where, skip.reason, detail, more)


def filter_reason(replay: Replay, wanted: Collection[str] | None, min_rating: int | None) -> str:
    """Why the filters leave a replay out ('' when they keep it): its format is not `wanted`
    (format ids), or `min_rating` is set and some known rating is below it, or none is known.
    `pokeagent pack` and `pokeagent download` both judge by it."""
    if wanted is not None and replay.format not in wanted:
        return "format"
    if min_rating is not None:
        known = [r for r in (replay.ratings or {}).values() if r is not None]
        if not known:
            return "no rating"
        if min(known) < min_rating:
            return "rating below min"
    return ""
