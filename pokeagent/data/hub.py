"""`pokeagent download`: real replays from the Hugging Face Hub, filtered, into parquet shards.

    pokeagent download --dataset metamon-raw --formats gen1ou,gen9ou --min-rating 1300 --out data/metamon
    pokeagent download --dataset pokechamp --formats gen9ou --months 2024-09..2025-03 --out data/champ
    pokeagent pack data/metamon/replays --out shards/metamon --workers 15

What it does, in order:

1. Resolves `--revision` (a branch, tag or commit; default `main`) to a commit and pins every
   later request to that commit, so a run never mixes two versions of a dataset.
2. Lists the repository's files (`HfApi.list_repo_tree`, recursive) and keeps the parquet
   files. A file whose *path* names a format (`gen9ou`), a month (`2024-03`, `March2024`) or a
   split (`train-00000-of-00046.parquet`, `test/`) outside the filters is left out unread.
3. With `--formats` or `--months`, reads only the footer of each remaining parquet file (one
   HTTP Range request for its last bytes, cached) and leaves out files whose row-group
   statistics (min/max of the format and month columns) rule out every wanted value.
4. Downloads the rest, `--workers` at a time: plain HTTP GETs of the Hub's `resolve` URLs
   with `Range` resume from a `.part` file, so a dropped connection or a killed run continues
   where it stopped. Each finished file is checked against the tree listing's sha256 (git-LFS)
   or git blob id before it is kept, and is never fetched again while it still verifies.
   Raw files live in a content-addressed cache (`--cache-dir`, default `$HF_HOME/pokeagent`).
5. Filters row by row with the same rules as `pokeagent pack` (formats, min rating: every
   known rating of the battle >= the minimum; unrated battles are left out), plus months and
   `--max-games`, and writes the kept rows, columns unchanged, to `OUT/replays/<dataset>-00000.parquet`,
   ... (`shard_rows` rows each), which `pokeagent pack` reads directly; and `OUT/summary.json`
   (games per format and rating band, bytes, files, skipped and filtered rows by reason).
   A rerun with the same settings and commit whose outputs are intact fetches nothing and
   rewrites nothing.

What we assumed about the real layouts (checked against public code that reads them,
2025-2026; a changed layout degrades to "download more", never to wrong rows):

- `jakegrigsby/metamon-raw-replays`: git tags per release (`v1` ... `v6`), data in
  `data/train-XXXXX-of-000NN.parquet` (46 files, ~5.7 GB at v6) with columns `id, format,
  players, log, uploadtime, formatid, rating` (`rating` a string that may be empty). Paths
  carry no format, but rows are grouped by format (e.g. all gen1 rows in 3 files), so the
  footer statistics of `formatid` prune most files for a few formats. Months come from
  `uploadtime` (Unix seconds, UTC).
- `milkkarten/pokechamp`: `data/train-*.parquet` and `data/test-*.parquet` with columns
  `battle_id, gamemode, elo, month_year, text`; `elo` a band ("1400-1599", "1800+"),
  `month_year` like "March2025". Rows are not known to be sorted, so footer pruning may rule
  out little: expect to download most of it (a few GB) for any filter except `--splits`.
- Both: LFS files served by `GET {endpoint}/datasets/{repo}/resolve/{commit}/{path}`, which
  may redirect to a CDN that honours `Range`; the tree listing gives each file's size and
  sha256. `HF_ENDPOINT` (mirrors), `HF_TOKEN` (gated/private copies) and `HF_HOME` (cache
  location) are read when `download` runs.
"""

from __future__ import annotations

import calendar
import errno
import hashlib
import json
import os
import re
import shutil
import threading
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import (
    WeakFileLock,
    build_hf_headers,
    get_session,
    hf_raise_for_status,
)
from tqdm import tqdm

from pokeagent.data.sources import BadRecord, format_id, replay_from_record

SUMMARY_FILE = "summary.json"
REPLAYS_DIR = "replays"
FOOTER_PROBE = 64 * 1024
"""Bytes read from the end of a parquet file to find its footer (one more request if bigger)."""
CHUNK = 1 << 22
"""Bytes per read when hashing a file."""
RETRY_WAIT_S = 1.0
"""First wait before resuming a broken download; doubled after each failure in a row."""
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
"""HTTP answers worth waiting out (rate limits, a busy or restarting server)."""
BATCH_ROWS = 1024
"""Parquet rows decoded at a time while filtering (a few tens of MB of logs)."""
DISK_MARGIN = 1 << 30
"""Free space kept in reserve on the cache disk beyond what the downloads need."""


@dataclass(frozen=True)
class HubDataset:
    """A replay dataset on the Hub and which of its columns the filters read."""

    repo_id: str
    """`owner/name` of the dataset repository."""
    format_column: str
    """Column holding the format id (`gen9ou`)."""
    month_column: str
    """Column the month of a battle comes from: a month string or Unix seconds."""


DATASETS = {
    "pokechamp": HubDataset("milkkarten/pokechamp", "gamemode", "month_year"),
    "metamon-raw": HubDataset("jakegrigsby/metamon-raw-replays", "formatid", "uploadtime"),
}

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_YEAR_MONTH = re.compile(r"(?<!\d)((?:19|20)\d\d)[-_/](0[1-9]|1[0-2])(?!\d)")
_NAME_YEAR = re.compile(r"(?<![a-z])([a-z]{3,9})[-_ ]?((?:19|20)\d\d)(?!\d)", re.IGNORECASE)
_FORMAT_IN_PATH = re.compile(r"(?<![a-z0-9])gen[1-9][a-z0-9]+(?![a-z0-9])")
_SPLIT_IN_PATH = re.compile(r"(?:^|/)(train|test|validation|valid|val)(?:[-_./]|$)")
_ID_LIKE = re.compile(r"[a-z0-9]+")


class HubError(RuntimeError):
    """A download that cannot go on; the message says what to do."""


@dataclass
class DownloadConfig:
    """What `pokeagent download` fetches, how it filters, and where it writes."""

    dataset: str
    """`pokechamp` or `metamon-raw` (or their repository ids)."""
    out: Path
    """Output folder: `replays/*.parquet` (the kept rows) and `summary.json`."""
    formats: list[str] | None = None
    """Keep only these formats (ids or names: `gen9ou`, `[Gen 9] OU`); None keeps all."""
    min_rating: int | None = None
    """Keep a battle only when every known rating is >= this (as `pack`); unrated ones are dropped."""
    max_games: int | None = None
    """Stop after this many kept battles (files in path order); None: no limit."""
    months: list[str] | None = None
    """Keep only battles of these months: `2024-03`, `March2024`, or ranges `2024-01..2024-06`."""
    splits: list[str] | None = None
    """Keep only files of these dataset splits (`train`, `test`), told by their paths."""
    workers: int = 4
    """Files downloaded at the same time."""
    revision: str | None = None
    """Branch, tag or commit of the dataset; None: `main`."""
    cache_dir: Path | None = None
    """Raw file cache; None: `$HF_HOME/pokeagent` (HF_HOME read at run time)."""
    endpoint: str | None = None
    """Hub URL; None: `$HF_ENDPOINT`, else https://huggingface.co."""
    token: str | None = None
    """Access token; None: `$HF_TOKEN`, else the token saved by `hf auth login`."""
    shard_rows: int = 50_000
    """Rows per output parquet file (about 500 MB of logs before compression)."""
    retries: int = 5
    """Times one file's download is resumed after a network error before the run gives up."""

    def __post_init__(self):
        by_repo = {spec.repo_id: name for name, spec in DATASETS.items()}
        self.dataset = by_repo.get(self.dataset, self.dataset)
        if self.dataset not in DATASETS:
            raise ValueError(
                f"unknown dataset {self.dataset!r}: choose one of {', '.join(sorted(DATASETS))}"
                f" ({', '.join(spec.repo_id for spec in DATASETS.values())})"
            )
        self.out = Path(self.out)
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else None
        if self.formats is not None:
            self.formats = sorted({format_id(f) for f in self.formats if format_id(f)})
        if self.months is not None:
            self.months = sorted(parse_months(self.months))
        if self.splits is not None:
            self.splits = sorted({s.strip().lower() for s in self.splits if s.strip()})
        for name in ("workers", "shard_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_games is not None and self.max_games < 1:
            raise ValueError(f"max_games must be >= 1, got {self.max_games}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")

    @property
    def spec(self) -> HubDataset:
        return DATASETS[self.dataset]

    def filters(self) -> dict:
        """The settings that decide the output (a rerun with the same ones reuses it)."""
        return {
            "dataset": self.dataset,
            "formats": self.formats,
            "min_rating": self.min_rating,
            "max_games": self.max_games,
            "months": self.months,
            "splits": self.splits,
            "shard_rows": self.shard_rows,
        }


@dataclass
class DownloadSummary:
    """What a run fetched and kept; saved as `summary.json`."""

    dataset: str = ""
    repo_id: str = ""
    revision: str = ""
    commit: str = ""
    filters: dict = field(default_factory=dict)
    files: Counter[str] = field(default_factory=Counter)
    """listed, selected, pruned by path / by stats, downloaded, reused, unneeded (max_games)."""
    bytes: Counter[str] = field(default_factory=Counter)
    """downloaded, reused (already in the cache), footers, written."""
    rows_read: int = 0
    games: int = 0
    games_by_format: dict[str, dict[str, int]] = field(default_factory=dict)
    """format -> rating band -> kept battles."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Unusable rows by reason (the `pack` reasons: 'no log', 'no players'...)."""
    filtered: Counter[str] = field(default_factory=Counter)
    """Good rows left out: 'format', 'month', 'no rating', 'rating below min', 'max games'."""
    shards: list[dict] = field(default_factory=list)
    """Output files: name, rows, bytes."""
    sources: list[dict] = field(default_factory=list)
    """Repository files the rows came from: path, size, sha256 or git oid."""
    seconds: float = 0.0
    up_to_date: bool = False
    """True when a rerun found the outputs of an identical run and did nothing."""

    def table(self) -> str:
        per_format = ", ".join(
            f"{fmt} {sum(bands.values())}" for fmt, bands in sorted(self.games_by_format.items())
        )
        return (
            f"{self.repo_id}@{self.commit[:10]} ({self.revision}): kept {self.games} games "
            f"({per_format or 'none'}) of {self.rows_read} rows read; files {dict(self.files)}; "
            f"bytes {dict(self.bytes)}; skipped {dict(self.skipped) or 0}; "
            f"filtered {dict(self.filtered) or 0}"
            + ("; already up to date" if self.up_to_date else "")
        )

    def to_json(self) -> dict:
        # Not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs, counting them.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "up_to_date"}
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in data.items()}


# ---------------------------------------------------------------- months, bands, paths


def month_of(value: object) -> str | None:
    """A month as `YYYY-MM`: from Unix seconds, `2024-03`, `March2024`, `Mar-2024`; else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m")
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    if value.strip().isdigit():
        return month_of(int(value.strip()))
    if match := _YEAR_MONTH.search(value):
        return f"{match.group(1)}-{match.group(2)}"
    for match in _NAME_YEAR.finditer(value):
        if (month := _MONTHS.get(match.group(1).lower())) is not None:
            return f"{match.group(2)}-{month:02d}"
    return None


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
    hints: dict[str, set[str]] = {
        "formats": set(_FORMAT_IN_PATH.findall(lower)),
        "months": set(),
        "splits": {m.group(1) for m in _SPLIT_IN_PATH.finditer(lower)},
    }
    for match in _YEAR_MONTH.finditer(path):
        hints["months"].add(f"{match.group(1)}-{match.group(2)}")
    for match in _NAME_YEAR.finditer(path):
        if (month := _MONTHS.get(match.group(1).lower())) is not None:
            hints["months"].add(f"{match.group(2)}-{month:02d}")
    return hints


def _path_reason(path: str, cfg: DownloadConfig) -> str:
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


def _stats_rule_out(metadata: pq.FileMetaData, spec: HubDataset, cfg: DownloadConfig) -> bool:
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


def _footer_metadata(data: bytes) -> pq.FileMetaData:
    return pq.read_metadata(pa.BufferReader(b"PAR1" + data))


# ---------------------------------------------------------------- the run


@dataclass
class _File:
    """One parquet file of the repository at the pinned commit."""

    path: str
    size: int
    sha256: str | None
    git_oid: str

    @property
    def key(self) -> str:
        return self.sha256 or self.git_oid


class _Hub:
    """The Hub as this run sees it: one repository at one commit, and the local blob cache."""

    def __init__(self, cfg: DownloadConfig):
        self.cfg = cfg
        self.repo_id = cfg.spec.repo_id
        self.endpoint = (
            cfg.endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        ).rstrip("/")
        home = os.environ.get("HF_HOME") or constants.HF_HOME
        root = cfg.cache_dir or Path(home).expanduser() / "pokeagent"
        self.cache = root / f"datasets--{self.repo_id.replace('/', '--')}"
        self.api = HfApi(endpoint=self.endpoint, token=cfg.token)
        self.headers = build_hf_headers(token=cfg.token)
        self.headers["Accept-Encoding"] = "identity"  # byte ranges of the file, never of a gzip
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.commit = ""
        self.bands: dict[str, Counter[str]] = defaultdict(Counter)
        """format -> rating band -> kept games."""
        self.games_bar = tqdm(disable=True)
        self.summary = DownloadSummary(
            dataset=cfg.dataset,
            repo_id=self.repo_id,
            revision=cfg.revision or "main",
            filters=cfg.filters(),
        )

    # -- metadata

    def call(self, what: str, fn: Callable):
        """Run a Hub API call; turn its failures into errors that say what to do."""
        try:
            return fn()
        except RevisionNotFoundError:
            raise HubError(
                f"revision {self.cfg.revision!r} does not exist in dataset {self.repo_id}"
                f"{self._refs_hint()}: pass an existing branch, tag or commit to --revision, "
                "or leave --revision out for main"
            ) from None
        except (RepositoryNotFoundError, GatedRepoError):
            raise HubError(
                f"dataset {self.repo_id} was not found at {self.endpoint}, or it is gated or "
                "private and no valid token was sent: accept its terms on the Hub and set "
                "HF_TOKEN (or run `hf auth login`); if HF_ENDPOINT is set, check that the "
                "mirror has it"
            ) from None
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else "?"
            raise HubError(
                f"the Hub at {self.endpoint} answered HTTP {status} to {what} of {self.repo_id}: "
                f"{str(err).splitlines()[0]}; retry later (files already fetched are kept)"
            ) from None
        except httpx2.TransportError as err:
            raise self.offline(err) from None
        except OfflineModeIsEnabled:
            raise HubError(
                "HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it for `pokeagent "
                "download` (the files it writes are then read offline by `pokeagent pack`)"
            ) from None

    def offline(self, err: Exception) -> HubError:
        return HubError(
            f"cannot reach the Hugging Face Hub at {self.endpoint} ({type(err).__name__}: "
            f"{err}): check the network connection and proxy settings (HTTPS_PROXY), or set "
            "HF_ENDPOINT to a reachable mirror; files fetched so far stay in "
            f"{self.cache} and a rerun continues from them"
        )

    def _refs_hint(self) -> str:
        try:
            refs = self.api.list_repo_refs(self.repo_id, repo_type="dataset")
        except Exception:  # the hint is a courtesy; the error it decorates is the point
            return ""
        names = [r.name for r in refs.branches] + [r.name for r in refs.tags]
        return f" (it has: {', '.join(names)})" if names else ""

    def resolve(self) -> str:
        info = self.call(
            "the revision lookup",
            lambda: self.api.dataset_info(self.repo_id, revision=self.cfg.revision),
        )
        if not info.sha:
            raise HubError(f"the Hub at {self.endpoint} gave no commit for {self.repo_id}")
        self.commit = info.sha
        return info.sha

    def list_files(self) -> list[_File]:
        entries = self.call(
            "the file listing",
            lambda: list(
                self.api.list_repo_tree(
                    self.repo_id, repo_type="dataset", revision=self.commit, recursive=True
                )
            ),
        )
        files = [
            _File(e.path, e.size, e.lfs.sha256 if e.lfs else None, e.blob_id)
            for e in entries
            if isinstance(e, RepoFile) and e.path.lower().endswith(".parquet")
        ]
        return sorted(files, key=lambda f: f.path)

    # -- bytes

    def url(self, file: _File) -> str:
        return hf_hub_url(
            self.repo_id,
            file.path,
            repo_type="dataset",
            revision=self.commit,
            endpoint=self.endpoint,
        )

    def blob(self, file: _File) -> Path:
        return self.cache / "blobs" / file.key

    def cached(self, file: _File) -> bool:
        """The blob is here and verifies (hashed once, then trusted while size and mtime hold)."""
        blob = self.blob(file)
        if not blob.is_file():
            return False
        stamp = blob.with_name(blob.name + ".ok")
        stat = blob.stat()
        mark = f"{stat.st_size} {stat.st_mtime_ns}"
        if stamp.is_file() and stamp.read_text() == mark and stat.st_size == file.size:
            return True
        if stat.st_size == file.size and _digest(blob, file) == file.key:
            stamp.write_text(mark)
            return True
        blob.unlink()
        stamp.unlink(missing_ok=True)
        return False

    def get_range(self, file: _File, start: int, end: int) -> bytes:
        """Bytes [start, end) of a file (one request)."""
        headers = {**self.headers, "Range": f"bytes={start}-{end - 1}"}
        try:
            response = get_session().get(
                self.url(file), headers=headers, follow_redirects=True, timeout=60
            )
            hf_raise_for_status(response)
        except httpx2.TransportError as err:
            raise self.offline(err) from None
        except HfHubHTTPError as err:
            raise HubError(f"reading the footer of {file.path}: {err}") from None
        data = response.content
        if response.status_code == 200:  # a server that ignores Range sends the whole file
            data = data[start:end]
        if len(data) != end - start:
            raise HubError(f"{file.path}: asked for {end - start} bytes, got {len(data)}")
        with self.lock:
            self.summary.bytes["footers"] += len(data)
        return data

    def footer(self, file: _File) -> pq.FileMetaData:
        """The parquet metadata of a file: from the cached blob, the footer cache, or 1-2 requests."""
        if self.cached(file):
            return pq.read_metadata(self.blob(file))
        saved = self.cache / "footers" / file.key
        if saved.is_file():
            return _footer_metadata(saved.read_bytes())
        probe = min(file.size, FOOTER_PROBE)
        tail = self.get_range(file, file.size - probe, file.size)
        if tail[-4:] != b"PAR1":
            raise HubError(f"{self.repo_id}:{file.path} is not a parquet file (no PAR1 footer)")
        length = int.from_bytes(tail[-8:-4], "little") + 8
        if length > file.size - 4:
            raise HubError(f"{self.repo_id}:{file.path}: footer length {length} is impossible")
        if length > probe:
            tail = self.get_range(file, file.size - length, file.size - probe) + tail
        footer = tail[-length:]
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_name(saved.name + ".tmp")
        tmp.write_bytes(footer)
        os.replace(tmp, saved)
        return _footer_metadata(footer)

    def fetch(self, file: _File, progress: tqdm) -> Path:
        """Download one file into the blob cache, resuming a `.part` left by an earlier try.

        A file lock keeps two processes sharing the cache (an array job) off the same `.part`.
        """
        blob = self.blob(file)
        blob.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(blob.with_name(blob.name + ".lock")):
            if self.cached(file):  # another process finished it meanwhile
                return blob
            return self._fetch(file, blob, progress)

    def _fetch(self, file: _File, blob: Path, progress: tqdm) -> Path:
        part = blob.with_name(blob.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        if have > file.size:
            part.unlink()
            have = 0
        failures = 0
        with self.lock:
            progress.update(have)
        while have < file.size:
            if self.stop.is_set():
                raise _Stopped
            headers = dict(self.headers)
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                with get_session().stream(
                    "GET", self.url(file), headers=headers, follow_redirects=True, timeout=60
                ) as response:
                    hf_raise_for_status(response)
                    if have and response.status_code == 200:  # Range ignored: start over
                        with self.lock:
                            progress.update(-have)
                        have = 0
                    with open(part, "ab" if have else "wb") as sink:
                        # No chunk size: a buffered chunk would be lost when the connection drops.
                        for chunk in response.iter_bytes():
                            if self.stop.is_set():
                                raise _Stopped
                            sink.write(chunk)
                            have += len(chunk)
                            failures = 0
                            with self.lock:
                                progress.update(len(chunk))
            except (httpx2.TransportError, HfHubHTTPError) as err:
                status = getattr(getattr(err, "response", None), "status_code", None)
                if isinstance(err, HfHubHTTPError) and status not in RETRY_STATUSES:
                    raise HubError(f"downloading {self.repo_id}:{file.path}: {err}") from None
                failures += 1
                if failures > self.cfg.retries:
                    raise HubError(
                        f"download of {self.repo_id}:{file.path} broke off at {have:,} of "
                        f"{file.size:,} bytes ({type(err).__name__}: {str(err).splitlines()[0]}); "
                        "run the same command again to continue from there"
                    ) from None
                time.sleep(min(RETRY_WAIT_S * 2 ** (failures - 1), 60.0))
        if have != file.size or _digest(part, file) != file.key:
            part.unlink()
            raise HubError(
                f"{self.repo_id}:{file.path} did not match its checksum after download (the "
                "partial file was removed): run the same command again to fetch it afresh"
            )
        os.replace(part, blob)
        stat = blob.stat()
        blob.with_name(blob.name + ".ok").write_text(f"{stat.st_size} {stat.st_mtime_ns}")
        return blob


class _Stopped(Exception):
    """A download abandoned because enough games were kept (its `.part` stays for later)."""


def _digest(path: Path, file: _File) -> str:
    """sha256 for LFS files, the git blob id (sha1 of a `blob <size>` header + bytes) otherwise."""
    if file.sha256:
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1()
        digest.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class _Writer:
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


def download(cfg: DownloadConfig, *, progress: bool = True) -> DownloadSummary:
    """Fetch, filter and write one dataset (see the module docstring); returns the summary."""
    started = time.time()
    hub = _Hub(cfg)
    summary = hub.summary
    try:
        summary.commit = hub.resolve()
        files = hub.list_files()
        summary.files["listed"] = len(files)
        if not files:
            raise HubError(
                f"{hub.repo_id}@{summary.commit[:10]} holds no parquet files: the dataset's layout "
                "has changed from what pokeagent/data/hub.py expects; see its docstring"
            )
        previous = _up_to_date(cfg, summary.commit)
        if previous is not None:
            return previous
        files = _select(hub, files, cfg, summary, progress)
        _check_disk(hub, files)
        _run(hub, files, cfg, summary, progress)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise HubError(
                f"the disk is full ({err.filename or cfg.out}): free space, or point --out and "
                "--cache-dir (or HF_HOME) at a larger disk; run the same command again to continue"
            ) from None
        raise
    summary.seconds = round(time.time() - started, 3)
    (cfg.out / SUMMARY_FILE).write_text(json.dumps(summary.to_json(), indent=1, sort_keys=True))
    return summary


def _up_to_date(cfg: DownloadConfig, commit: str) -> DownloadSummary | None:
    """The saved summary of an identical finished run whose outputs are all still there."""
    path = cfg.out / SUMMARY_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("commit") != commit or saved.get("filters") != cfg.filters():
        return None
    folder = cfg.out / REPLAYS_DIR
    for shard in saved.get("shards", []):
        target = folder / shard["name"]
        if not target.is_file() or target.stat().st_size != shard["bytes"]:
            return None
    for name in ("files", "bytes", "skipped", "filtered"):
        saved[name] = Counter(saved.get(name, {}))
    try:
        summary = DownloadSummary(**saved)
    except TypeError:  # written by another version of this module: redo the run
        return None
    summary.up_to_date = True
    return summary


def _select(
    hub: _Hub, files: list[_File], cfg: DownloadConfig, summary: DownloadSummary, progress: bool
) -> list[_File]:
    """Files the filters may need: by path first, then by footer statistics."""
    kept = []
    for file in files:
        reason = _path_reason(file.path, cfg)
        if reason:
            summary.files[f"pruned by path ({reason})"] += 1
        else:
            kept.append(file)
    if cfg.formats is None and cfg.months is None:
        summary.files["selected"] = len(kept)
        return kept
    with ThreadPoolExecutor(cfg.workers) as pool:
        footers = pool.map(hub.footer, kept)
        ruled_out = [
            _stats_rule_out(metadata, cfg.spec, cfg)
            for metadata in tqdm(
                footers, total=len(kept), desc="footers", unit="file", disable=not progress
            )
        ]
    summary.files["pruned by stats"] = sum(ruled_out)
    kept = [file for file, out in zip(kept, ruled_out, strict=True) if not out]
    summary.files["selected"] = len(kept)
    return kept


def _check_disk(hub: _Hub, files: list[_File]) -> None:
    missing = [f for f in files if not hub.blob(f).is_file()]
    partial = sum(
        p.stat().st_size
        for f in missing
        if (p := hub.blob(f).with_name(hub.blob(f).name + ".part")).is_file()
    )
    need = sum(f.size for f in missing) - partial
    if need <= 0:
        return
    hub.cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(hub.cache).free
    if need + DISK_MARGIN > free:
        raise HubError(
            f"not enough disk space in {hub.cache}: the {len(missing)} files to fetch need "
            f"{need / 1e9:.2f} GB (+{DISK_MARGIN / 1e9:.0f} GB margin) and {free / 1e9:.2f} GB "
            "are free: free space, narrow the filters, or point --cache-dir (or HF_HOME) at a "
            "larger disk"
        )


def _run(
    hub: _Hub, files: list[_File], cfg: DownloadConfig, summary: DownloadSummary, progress: bool
) -> None:
    """Download in parallel, filter in path order, write shards; stop early at max_games."""
    folder = cfg.out / REPLAYS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (cfg.out / SUMMARY_FILE).unlink(missing_ok=True)  # written again when this run completes
    stem = cfg.dataset
    for stale in folder.glob(f"{stem}-*.parquet*"):  # an earlier run's outputs: rewritten below
        stale.unlink()
    writer = _Writer(folder, stem, cfg.shard_rows)
    reused = {f.path for f in files if hub.cached(f)}
    to_fetch = sum(f.size for f in files if f.path not in reused)
    bar = tqdm(
        total=to_fetch,
        desc="download",
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
    )
    hub.games_bar = tqdm(desc="kept", unit=" games", disable=not progress)
    pool = ThreadPoolExecutor(cfg.workers)
    futures: list[Future] = [
        pool.submit(lambda f: hub.blob(f) if f.path in reused else hub.fetch(f, bar), f)
        for f in files
    ]
    try:
        for index, (file, future) in enumerate(zip(files, futures, strict=True)):
            path = future.result()
            if file.path in reused:
                summary.files["reused"] += 1
                summary.bytes["reused"] += file.size
            else:
                summary.files["downloaded"] += 1
                summary.bytes["downloaded"] += file.size
            summary.sources.append({"path": file.path, "size": file.size, "hash": file.key})
            _filter_file(path, file, hub, cfg, writer)
            if cfg.max_games is not None and summary.games >= cfg.max_games:
                summary.files["unneeded (max games)"] = len(files) - index - 1
                break
    finally:
        hub.stop.set()
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True)
        bar.close()
        hub.games_bar.close()
    writer.close()
    summary.games_by_format = {fmt: dict(sorted(c.items())) for fmt, c in sorted(hub.bands.items())}
    summary.shards = writer.shards
    summary.bytes["written"] = sum(s["bytes"] for s in writer.shards)


def _filter_file(path: Path, file: _File, hub: _Hub, cfg: DownloadConfig, writer: _Writer) -> None:
    """Keep the rows of one parquet file that pass the filters (cheap columns read first)."""
    spec, summary = cfg.spec, hub.summary
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
            candidates = []  # rows of the group that the cheap columns do not rule out
            for row, (fmt, month) in enumerate(zip(fmts, months, strict=True)):
                fid = format_id(fmt) if isinstance(fmt, str) else ""
                if cfg.formats is not None and fid and fid not in cfg.formats:
                    summary.filtered["format"] += 1
                elif cfg.months is not None and month_of(month) not in cfg.months:
                    summary.filtered["month"] += 1
                else:
                    candidates.append(row)
            summary.rows_read += table.num_rows
            # All columns of the candidates only, a batch at a time: a row group of long logs
            # can hold GBs once decoded.
            start = 0
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group]):
                end = start + batch.num_rows
                inside = candidates[bisect_left(candidates, start) : bisect_left(candidates, end)]
                if inside:
                    rows = pa.Table.from_batches([batch]).take([r - start for r in inside])
                    first = group_start + start
                    _keep_rows(rows, [first + r - start for r in inside], file, hub, cfg, writer)
                start = end
                if cfg.max_games is not None and summary.games >= cfg.max_games:
                    return
            group_start += table.num_rows
    finally:
        parquet.close()


def _keep_rows(
    rows: pa.Table, row_numbers: list[int], file: _File, hub: _Hub, cfg: DownloadConfig, writer
) -> None:
    """Judge candidate rows one by one; write the kept ones, columns unchanged."""
    summary = hub.summary
    kept = []
    for offset, record in enumerate(rows.to_pylist()):
        if cfg.max_games is not None and summary.games >= cfg.max_games:
            summary.filtered["max games"] += rows.num_rows - offset
            break
        where = f"{hub.repo_id}@{hub.commit[:10]}:{file.path}:row {row_numbers[offset]}"
        reason, band, fmt = _judge(record, where, cfg)
        if reason.startswith("bad: "):
            summary.skipped[reason[5:]] += 1
        elif reason:
            summary.filtered[reason] += 1
        else:
            kept.append(offset)
            hub.bands[fmt][band] += 1
            summary.games += 1
            hub.games_bar.update(1)
    if kept:
        writer.write(rows.take(kept))


def _judge(record: dict, where: str, cfg: DownloadConfig) -> tuple[str, str, str]:
    """(reason it is left out or '', rating band, format) of one row, by `pack`'s rules."""
    try:
        replay = replay_from_record(record, source=where)
    except BadRecord as bad:
        return f"bad: {bad.reason}", "", ""
    if cfg.formats is not None and replay.format not in cfg.formats:
        return "format", "", ""
    if cfg.min_rating is not None:
        known = [r for r in (replay.ratings or {}).values() if r is not None]
        if not known:
            return "no rating", "", ""
        if min(known) < cfg.min_rating:
            return "rating below min", "", ""
    return "", rating_band(replay.ratings, replay.extra.get("elo_band")), replay.format
