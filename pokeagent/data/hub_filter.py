"""Which files and rows `pokeagent download` (`pokeagent.data.hub`) keeps, and writing them.

- The filters' grammar: months (`2024-03`, `March2024`, Unix seconds, ranges), rating bands,
  and what a repository path says about its rows (format, month, split).
- Pruning without reading rows: by path, and by the footer's row-group statistics (min/max of
  the format and month columns), trusted only where they look like what they are compared with.
- Row filtering with the same rules as `pokeagent pack`, cheap columns read first, and writing
  the kept rows, columns unchanged, to `<dataset>-00000.parquet`, ... (`.tmp` until complete).
"""

from __future__ import annotations

import calendar
import os
import re
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from pokeagent.data.sources import (
    BadRecord,
    filter_reason,
    format_id,
    is_placeholder,
    replay_from_record,
)

if TYPE_CHECKING:
    from pokeagent.data.hub import DownloadConfig, DownloadSummary, HubDataset
    from pokeagent.data.hub_fetch import HubFile
    from pokeagent.progress import Progress

BATCH_ROWS = 1024
"""Parquet rows decoded at a time while filtering (a few tens of MB of logs)."""

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_YEAR_MONTH = re.compile(r"(?<!\d)((?:19|20)\d\d)[-_/](0[1-9]|1[0-2])(?!\d)")
_NAME_YEAR = re.compile(r"(?<![a-z])([a-z]{3,9})[-_ ]?((?:19|20)\d\d)(?!\d)", re.IGNORECASE)
_FORMAT_IN_PATH = re.compile(r"(?<![a-z0-9])gen[1-9][a-z0-9]+(?![a-z0-9])")
_SPLIT_IN_PATH = re.compile(r"(?:^|/)(train|test|validation|valid|val)(?:[-_./]|$)")
_ID_LIKE = re.compile(r"[a-z0-9]+")


# ---------------------------------------------------------------- months, bands, paths


def month_of(value: object) -> str | None:
    """A month as `YYYY-MM`: from Unix seconds, `2024-03`, `March2024`, `Mar-2024`; else None.

    Seconds of 0 or less are unknown (a date that failed to parse upstream), never 1970-01.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        if not value > 0:
            return None
        try:
            return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m")
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    if value.strip().isdigit():
        return month_of(int(value.strip()))
    return next(_months_in(value), None)


def _months_in(text: str) -> Iterator[str]:
    """The months `text` names, as `YYYY-MM`: numeric ones (`2024-03`) first, then spelled ones
    (`March2024`, `Mar-2024`)."""
    for match in _YEAR_MONTH.finditer(text):
        yield f"{match.group(1)}-{match.group(2)}"
    for match in _NAME_YEAR.finditer(text):
        if (month := _MONTHS.get(match.group(1).lower())) is not None:
            yield f"{match.group(2)}-{month:02d}"


def parse_months(items: Iterable[str]) -> set[str]:
    """`["2024-03", "March2024", "2024-01..2024-02"]` -> {"2024-01", "2024-02", "2024-03"}."""
    months: set[str] = set()
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            ends = [p.strip() for p in part.split("..")]
            parsed = [month_of(end) for end in ends]
            if len(ends) > 2 or any(m is None for m in parsed):
                raise ValueError(
                    f"month {part!r} not understood: write 2024-03, March2024, or 2024-01..2024-06"
                )
            first, last = parsed[0], parsed[-1]
            if first > last:
                raise ValueError(f"month range {part!r} ends before it starts")
            year, month = map(int, first.split("-"))
            while f"{year:04d}-{month:02d}" <= last:
                months.add(f"{year:04d}-{month:02d}")
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _month_bounds(month: str) -> tuple[int, int]:
    """`2024-03` -> Unix seconds [start of March, start of April) in UTC."""
    year, mon = map(int, month.split("-"))
    start = datetime(year, mon, 1, tzinfo=timezone.utc)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=timezone.utc)
    return int(start.timestamp()), int(end.timestamp())


def rating_band(ratings: dict[str, int | None] | None, elo_band: object = None) -> str:
    """PokéChamp's own band where the row has one; else the same 200-point bands from the
    lower known rating: "<1000", "1000-1199", ..., "1800+", or "unrated"."""
    if isinstance(elo_band, str) and elo_band.strip():
        return elo_band.strip()
    known = [r for r in (ratings or {}).values() if r is not None]
    if not known:
        return "unrated"
    low = min(known)
    if low < 1000:
        return "<1000"
    if low >= 1800:
        return "1800+"
    floor = 1000 + (low - 1000) // 200 * 200
    return f"{floor}-{floor + 199}"


def path_hints(path: str) -> dict[str, set[str]]:
    """What a repository path says about its rows: formats, months, split."""
    lower = path.lower()
    return {
        "formats": set(_FORMAT_IN_PATH.findall(lower)),
        "months": set(_months_in(path)),
        "splits": {m.group(1) for m in _SPLIT_IN_PATH.finditer(lower)},
    }


def path_reason(path: str, cfg: DownloadConfig) -> str:
    """Why the path alone rules a file out ('' when it does not)."""
    hints = path_hints(path)
    if cfg.splits is not None and hints["splits"] and not hints["splits"] & set(cfg.splits):
        return "split"
    if cfg.formats is not None and hints["formats"] and not hints["formats"] & set(cfg.formats):
        return "format"
    if cfg.months is not None and hints["months"] and not hints["months"] & set(cfg.months):
        return "month"
    return ""


# ---------------------------------------------------------------- footer statistics


def stats_rule_out(metadata: pq.FileMetaData, spec: HubDataset, cfg: DownloadConfig) -> bool:
    """True when no row group's min/max of the format or month column can hold a wanted value.

    Only trusted where the statistics look like what we compare them with (format ids,
    `MonthYYYY` / `YYYY-MM` strings, integer seconds); anything else keeps the file.
    """
    columns = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        formats = columns.get(spec.format_column)
        months = columns.get(spec.month_column)
        if _group_may_match(row_group, formats, cfg.formats, _format_in) and _group_may_match(
            row_group, months, cfg.months, _month_in
        ):
            return False
    return True


def _group_may_match(row_group, column: int | None, wanted, test: Callable) -> bool:
    if wanted is None or column is None:
        return True
    stats = row_group.column(column).statistics
    if stats is None or not stats.has_min_max:
        return True
    return any(test(value, stats.min, stats.max) for value in wanted)


def _format_in(fmt: str, low: object, high: object) -> bool:
    if not (isinstance(low, str) and isinstance(high, str)):
        return True
    if not (_ID_LIKE.fullmatch(low) and _ID_LIKE.fullmatch(high)):
        return True
    return low <= fmt <= high


def _month_in(month: str, low: object, high: object) -> bool:
    if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
        if low <= 0:  # unknown upload times: their month comes from the log, so maybe
            return True
        start, end = _month_bounds(month)
        return low < end and high >= start
    if not (isinstance(low, str) and isinstance(high, str)):
        return True
    year, mon = month.split("-")
    if re.fullmatch(r"\d{4}-\d{2}", low) and re.fullmatch(r"\d{4}-\d{2}", high):
        spelled = month
    elif re.fullmatch(r"[A-Z][a-z]+\d{4}", low) and re.fullmatch(r"[A-Z][a-z]+\d{4}", high):
        spelled = f"{calendar.month_name[int(mon)]}{year}"
    else:
        return True
    return low <= spelled <= high


# ---------------------------------------------------------------- rows


class RowFilter:
    """The rows of the fetched files, judged by `pack`'s rules and the download's filters; the
    kept ones go to a `ShardWriter`, the counts to the run's summary."""

    def __init__(
        self,
        cfg: DownloadConfig,
        summary: DownloadSummary,
        source: str,
        writer: ShardWriter,
        games_bar: Progress,
    ):
        self.cfg, self.summary, self.writer, self.games_bar = cfg, summary, writer, games_bar
        self.source = source
        """`<repo>@<commit>`, the start of each row's location in error messages."""
        self.bands: dict[str, Counter[str]] = defaultdict(Counter)
        """format -> rating band -> kept games."""

    def file(self, path: Path, file: HubFile) -> None:
        """Keep the rows of one parquet file that pass the filters (cheap columns read first)."""
        cfg = self.cfg
        spec, summary = cfg.spec, self.summary
        parquet = pq.ParquetFile(path)
        try:
            names = set(parquet.schema_arrow.names)
            if not ({"battle_id", "text"} <= names or {"id", "log"} <= names):
                summary.skipped["unknown parquet schema"] += parquet.metadata.num_rows
                summary.rows_read += parquet.metadata.num_rows
                return
            cheap = [c for c in (spec.format_column, spec.month_column) if c in names]
            group_start = 0
            for group in range(parquet.num_row_groups):
                if cfg.max_games is not None and summary.games >= cfg.max_games:
                    return
                table = parquet.read_row_group(group, columns=cheap)
                fmts = (
                    table.column(spec.format_column).to_pylist()
                    if spec.format_column in names
                    else [None] * table.num_rows
                )
                months = (
                    table.column(spec.month_column).to_pylist()
                    if spec.month_column in names
                    else [None] * table.num_rows
                )
                # Rows of the group that the cheap columns do not rule out. A placeholder
                # ("MISSING", "None") or an unknown month rules out nothing: the full row is
                # judged (format from `format`, `|tier|` or the id; month from `|t:|`).
                candidates = []
                for row, (fmt, month) in enumerate(zip(fmts, months, strict=True)):
                    fid = format_id(fmt) if isinstance(fmt, str) and not is_placeholder(fmt) else ""
                    known_month = month_of(month)
                    if cfg.formats is not None and fid and fid not in cfg.formats:
                        summary.filtered["format"] += 1
                    elif cfg.months is not None and known_month not in (None, *cfg.months):
                        summary.filtered["month"] += 1
                    else:
                        candidates.append(row)
                summary.rows_read += table.num_rows
                # All columns of the candidates only, a batch at a time: a row group of long logs
                # can hold GBs once decoded.
                start = 0
                for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group]):
                    end = start + batch.num_rows
                    inside = candidates[
                        bisect_left(candidates, start) : bisect_left(candidates, end)
                    ]
                    if inside:
                        rows = pa.Table.from_batches([batch]).take([r - start for r in inside])
                        first = group_start + start
                        self._keep_rows(rows, [first + r - start for r in inside], file)
                    start = end
                    if cfg.max_games is not None and summary.games >= cfg.max_games:
                        return
                group_start += table.num_rows
        finally:
            parquet.close()

    def _keep_rows(self, rows: pa.Table, row_numbers: list[int], file: HubFile) -> None:
        """Judge candidate rows one by one; write the kept ones, columns unchanged."""
        cfg, summary = self.cfg, self.summary
        kept = []
        for offset, record in enumerate(rows.to_pylist()):
            if cfg.max_games is not None and summary.games >= cfg.max_games:
                summary.filtered["max games"] += rows.num_rows - offset
                break
            where = f"{self.source}:{file.path}:row {row_numbers[offset]}"
            reason, band, fmt = _judge(record, where, cfg)
            if reason.startswith("bad: "):
                summary.skipped[reason[5:]] += 1
            elif reason:
                summary.filtered[reason] += 1
            else:
                kept.append(offset)
                self.bands[fmt][band] += 1
                summary.games += 1
                self.games_bar.update(1)
        if kept:
            self.writer.write(rows.take(kept))


def _judge(record: dict, where: str, cfg: DownloadConfig) -> tuple[str, str, str]:
    """(reason it is left out or '', rating band, format) of one row, by `pack`'s rules."""
    try:
        replay = replay_from_record(record, source=where)
    except BadRecord as bad:
        return f"bad: {bad.reason}", "", ""
    reason = filter_reason(replay, cfg.formats, cfg.min_rating)
    if reason:
        return reason, "", ""
    if cfg.months is not None:
        month = month_of(record.get(cfg.spec.month_column))
        if month is None:  # the column did not say: the upload time the row was read with
            month = month_of(replay.uploadtime)
        if month is None:
            return "month unknown", "", ""
        if month not in cfg.months:
            return "month", "", ""
    return "", rating_band(replay.ratings, replay.extra.get("elo_band")), replay.format


class ShardWriter:
    """Kept rows -> `replays/<dataset>-00000.parquet`, ... (`.tmp` until complete)."""

    def __init__(self, folder: Path, stem: str, shard_rows: int):
        self.folder, self.stem, self.shard_rows = folder, stem, shard_rows
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.rows = 0
        self.shards: list[dict] = []

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is not None and not table.schema.equals(self.schema):
                self.close()
            if self.writer is None:
                self.schema = table.schema
                name = f"{self.stem}-{len(self.shards):05d}.parquet"
                self.path = self.folder / name
                self.writer = pq.ParquetWriter(self.path.with_suffix(".parquet.tmp"), self.schema)
                self.rows = 0
            room = self.shard_rows - self.rows
            self.writer.write_table(table.slice(0, room))
            self.rows += min(room, table.num_rows)
            table = table.slice(room)
            if self.rows >= self.shard_rows:
                self.close()

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        self.writer = None
        os.replace(self.path.with_suffix(".parquet.tmp"), self.path)
        self.shards.append(
            {"name": self.path.name, "rows": self.rows, "bytes": self.path.stat().st_size}
        )
