"""`pokeagent download`: real replays from the Hugging Face Hub, filtered, into parquet shards.

    pokeagent download --dataset metamon-raw --formats gen1ou,gen9ou --min-rating 1300 --out data/metamon
    pokeagent download --dataset pokechamp --formats gen9ou --months 2024-09..2025-03 --out data/champ
    pokeagent pack data/metamon/replays --out shards/metamon --workers 15

What it does, in order:

1. Resolves `--revision` (a branch, tag or commit; default: the dataset's pinned revision,
   `v6` for metamon-raw, `main` for pokechamp) to a commit and pins every later request to
   that commit, so a run never mixes two versions of a dataset.
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

This module holds the settings, the summary and the run; `hub_fetch` the Hub side (steps 1, 2,
the footer requests of 3, and 4) and `hub_filter` what is kept (the path and footer pruning of
2-3, and 5).

What the real datasets look like. Confirmed from public code that reads or writes them
(Metamon's uploader `metamon/data/replay_dataset/raw_replays/upload_to_hf.py`, its downloader
`metamon/download.py` and `metamon/data/raw_replay_util.py`, its PokéChamp importer
`raw_replays/pull_from_pokechamp.py`, PokéChamp's and third-party loaders), and assumed where
said; a changed layout degrades to "download more" or a named skip, never to wrong rows:

- `jakegrigsby/metamon-raw-replays` (confirmed): parquet under `data/`, columns `id, format,
  players, log, uploadtime, formatid, rating`; git tags per release, and Metamon's own
  downloader pins `v6` (`LATEST_RAW_REPLAY_REVISION`), so that is the default here (`main` may
  move on). The uploader writes every value as `str(value)` (`players` as `"['a', 'b']"`,
  `uploadtime` as digits, a null as `"None"`) and a field the replay lacked as `"MISSING"`;
  `pokeagent.data.sources` reads those placeholders as absent and falls back (format from
  `format`, `|tier|` or the id; upload time from `|t:|`). Rows Metamon imported from PokéChamp
  carry `id = <formatid>-<number>`, `format` and `uploadtime` only, the upload time 0 where the
  date did not parse. Assumed: 46 files (~5.7 GB) at `v6`, rows grouped by format (e.g. all
  gen1 rows in 3 files), so footer statistics prune most files for a few formats (a string
  column with placeholders among its values prunes less, never wrongly).
- `milkkarten/pokechamp` (confirmed): `data/train-*.parquet` and `data/test-*.parquet` with
  columns `battle_id, gamemode, elo, month_year, text`; `battle_id` the game number then the
  date (`2058494320-2024-09-15`), which `sources` turns into the replay server's
  `gen9ou-2058494320` as Metamon does (its battles are mostly also in Metamon's set: `pack`
  keeps one copy); `elo` a band ("1400-1599", "1800+"), `month_year` like "March2025".
  Sizes (the dataset card): 1.9M train and 213K test rows. Assumed: no release tags (the
  default revision is `main`; the summary records the commit it resolved to); rows not sorted,
  so footer pruning may rule out little: expect to download most of it (a few GB) for any
  filter except `--splits`.
- Both: LFS files served by `GET {endpoint}/datasets/{repo}/resolve/{commit}/{path}`, which
  may redirect to a CDN that honours `Range`; the tree listing gives each file's size and
  sha256. `HF_ENDPOINT` (mirrors), `HF_TOKEN` (gated/private copies) and `HF_HOME` (cache
  location) are read when `download` runs.
"""

from __future__ import annotations

import errno
import json
import shutil
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

from pokeagent.data.hub_fetch import HubError, HubFile, HubRepo
from pokeagent.data.hub_filter import (
    RowFilter,
    ShardWriter,
    parse_months,
    path_reason,
    stats_rule_out,
)
from pokeagent.data.sources import format_id
from pokeagent.progress import progress as progress_bar

SUMMARY_FILE = "summary.json"
REPLAYS_DIR = "replays"
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
    revision: str
    """Revision downloaded when `--revision` is not given: the release its own tools use."""


DATASETS = {
    "pokechamp": HubDataset("milkkarten/pokechamp", "gamemode", "month_year", "main"),
    "metamon-raw": HubDataset("jakegrigsby/metamon-raw-replays", "formatid", "uploadtime", "v6"),
}


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
    """Branch, tag or commit of the dataset; None: the dataset's pinned one (`HubDataset.revision`:
    `v6` for metamon-raw, `main` for pokechamp)."""
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
        if self.revision is None:
            self.revision = self.spec.revision
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


# ---------------------------------------------------------------- the run


def download(cfg: DownloadConfig, *, progress: bool = True) -> DownloadSummary:
    """Fetch, filter and write one dataset (see the module docstring); returns the summary."""
    started = time.time()
    summary = DownloadSummary(
        dataset=cfg.dataset,
        repo_id=cfg.spec.repo_id,
        revision=cfg.revision,
        filters=cfg.filters(),
    )
    hub = HubRepo(cfg, summary.bytes)
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
    hub: HubRepo,
    files: list[HubFile],
    cfg: DownloadConfig,
    summary: DownloadSummary,
    progress: bool,
) -> list[HubFile]:
    """Files the filters may need: by path first, then by footer statistics."""
    kept = []
    for file in files:
        reason = path_reason(file.path, cfg)
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
            stats_rule_out(metadata, cfg.spec, cfg)
            for metadata in progress_bar(
                footers, total=len(kept), desc="footers", unit="file", disable=not progress
            )
        ]
    summary.files["pruned by stats"] = sum(ruled_out)
    kept = [file for file, out in zip(kept, ruled_out, strict=True) if not out]
    summary.files["selected"] = len(kept)
    return kept


def _check_disk(hub: HubRepo, files: list[HubFile]) -> None:
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
    hub: HubRepo,
    files: list[HubFile],
    cfg: DownloadConfig,
    summary: DownloadSummary,
    progress: bool,
) -> None:
    """Download in parallel, filter in path order, write shards; stop early at max_games."""
    folder = cfg.out / REPLAYS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (cfg.out / SUMMARY_FILE).unlink(missing_ok=True)  # written again when this run completes
    stem = cfg.dataset
    for stale in folder.glob(f"{stem}-*.parquet*"):  # an earlier run's outputs: rewritten below
        stale.unlink()
    writer = ShardWriter(folder, stem, cfg.shard_rows)
    reused = {f.path for f in files if hub.cached(f)}
    to_fetch = sum(f.size for f in files if f.path not in reused)
    bar = progress_bar(
        total=to_fetch,
        desc="download",
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
    )
    games_bar = progress_bar(desc="kept", unit=" games", disable=not progress)
    rows = RowFilter(cfg, summary, f"{hub.repo_id}@{hub.commit[:10]}", writer, games_bar)
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
            rows.file(path, file)
            if cfg.max_games is not None and summary.games >= cfg.max_games:
                summary.files["unneeded (max games)"] = len(files) - index - 1
                break
    finally:
        hub.stop.set()
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True)
        bar.close()
        games_bar.close()
    writer.close()
    summary.games_by_format = {
        fmt: dict(sorted(c.items())) for fmt, c in sorted(rows.bands.items())
    }
    summary.shards = writer.shards
    summary.bytes["written"] = sum(s["bytes"] for s in writer.shards)
