"""`pokeagent pack`: replays -> parse + encode in worker processes -> WebDataset tar shards.

    pokeagent pack data/replays/ --out shards/gen9 --workers 8 --formats gen9ou --min-rating 1300

Output: `train-000000.tar`, ..., `val-000000.tar`, ... (a battle's two trajectories always land
in the same split: the split is chosen by a hash of the battle id) and `manifest.json`.

Interruptible and resumable: a shard is written as `<name>.tar.tmp` and renamed when complete;
`pack-state.json` records, whenever shards complete, the position in the (deterministic) input
stream that they cover up to. A rerun with the same settings reads past that position without
parsing and rewrites the open shards from it: no shard is redone, no sample duplicated or lost.

One copy per battle: the sources are read in the order given, and a battle whose id was already
read (the same battle from another source, e.g. PokéChamp's copy of a Metamon battle, both
`<formatid>-<number>` once `sources` has read them) is skipped as 'duplicate battle'. So the
split, a hash of the id, is by battle, never by copy. Records without an id of their own (named
after their file and line) are never taken for duplicates. See `SeenIds` for how.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import sqlite3
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

import webdataset as wds

from pokeagent.data.encode import ENCODER_VERSION, encode, schema
from pokeagent.data.parse import PARSER_VERSION, SkipBattle, parse_replay
from pokeagent.data.replay import Replay
from pokeagent.data.shards import encode_sample
from pokeagent.data.sources import SourceStats, count_records, iter_replays
from pokeagent.progress import progress as progress_bar
from pokeagent.writer_lock import WriterLock

SPLITS = ("train", "val")
STATE_FILE = "pack-state.json"
MANIFEST_FILE = "manifest.json"
SEEN_FILE = "seen-ids.sqlite"
LOCK_FILE = "pack.lock"
"""Held by the pack writing the folder (pokeagent/writer_lock.py)."""
DUPLICATE = "duplicate battle"
"""Skip reason of a battle whose id an earlier replay of the input already had."""
RATING_BANDS = (0, 1000, 1200, 1400, 1600, 1800, 2000)


@dataclass
class PackConfig:
    """What `pokeagent pack` reads, how it splits, and where it writes."""

    sources: list[str]
    """Replay files or folders (any format `pokeagent.data.sources` reads)."""
    out: Path
    """Output folder for shards, manifest.json and pack-state.json."""
    workers: int = max(1, (os.cpu_count() or 2) - 1)
    """Parse+encode worker processes."""
    formats: list[str] | None = None
    """Keep only these format ids (None: all)."""
    min_rating: int | None = None
    """Keep only battles where both known ratings are >= this (None: all, rated or not)."""
    shard_size: int = 256 * 1024 * 1024
    """Target shard size in bytes; a shard is closed after the sample that crosses it."""
    val_fraction: float = 0.01
    """Share of battles (by hash of the battle id) that go to the validation split."""
    chunk: int = 32
    """Replays per worker task."""

    def __post_init__(self):
        self.out = Path(self.out)
        self.sources = [str(s) for s in self.sources]
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_size < 1:
            raise ValueError("shard_size must be positive")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")

    def fingerprint(self) -> dict:
        """Settings a resumed run must share with the interrupted one."""
        return {
            "sources": [[str(Path(s).resolve()), _signature(Path(s))] for s in self.sources],
            "formats": sorted(self.formats) if self.formats else None,
            "min_rating": self.min_rating,
            "shard_size": self.shard_size,
            "val_fraction": self.val_fraction,
            "encoder_version": ENCODER_VERSION,
            "parser_version": PARSER_VERSION,
        }


def _signature(path: Path) -> list[int]:
    """(files, bytes, newest mtime) of a source: a resumed pack must read the same input."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [f.stat() for f in files]
    return [
        len(stats),
        sum(s.st_size for s in stats),
        max((s.st_mtime_ns for s in stats), default=0),
    ]


def split_of(battle_id: str, val_fraction: float) -> str:
    """'val' for a fixed `val_fraction` of battle ids, by hash: stable across runs and machines."""
    digest = hashlib.blake2b(battle_id.encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "big") / 2**64 < val_fraction else "train"


def parse_size(text: str) -> int:
    """'256MB' -> bytes (KB, MB, GB are powers of 1024; a bare number is bytes)."""
    text = text.strip().upper().removesuffix("B")
    for suffix, scale in (("K", 1024), ("M", 1024**2), ("G", 1024**3)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * scale)
    return int(text)


@dataclass
class ShardInfo:
    name: str
    samples: int = 0
    decisions: int = 0
    bytes: int = 0
    first_replay: int = 0
    """Input position of the first replay with a sample in it."""


class _SplitWriter:
    """Writes one split's shards, one at a time, under temporary names."""

    def __init__(self, out: Path, split: str, done: list[dict]):
        self.out, self.split = out, split
        self.done = [ShardInfo(**d) for d in done]
        self.current: ShardInfo | None = None
        self.writer: wds.TarWriter | None = None
        self.stream = None

    @property
    def size(self) -> int:
        return self.stream.tell() if self.stream is not None else 0

    def write(self, sample: dict, position: int, decisions: int) -> None:
        if self.current is None:
            name = f"{self.split}-{len(self.done):06d}.tar"
            self.current = ShardInfo(name=name, first_replay=position)
            self.stream = open(self.out / (name + ".tmp"), "wb")  # noqa: SIM115 - closed in close()
            self.writer = wds.TarWriter(self.stream, encoder=False, mtime=0)
        self.writer.write(sample)
        self.current.samples += 1
        self.current.decisions += decisions

    def close(self) -> None:
        """Complete the open shard (if any): close it and give it its final name."""
        if self.current is None:
            return
        self.writer.close()
        self.stream.close()
        tmp = self.out / (self.current.name + ".tmp")
        self.current.bytes = tmp.stat().st_size
        tmp.rename(self.out / self.current.name)
        self.done.append(self.current)
        self.current, self.writer, self.stream = None, None, None


@dataclass
class PackSummary:
    replays_read: int = 0
    battles_packed: int = 0
    trajectories: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    shards: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    resumed_from: int = 0

    def table(self) -> str:
        rate = (self.replays_read - self.resumed_from) / self.seconds if self.seconds else 0.0
        return (
            f"read {self.replays_read} replays ({rate:.0f}/s), packed {self.battles_packed} battles: "
            f"trajectories {self.trajectories}, decisions {self.decisions}, shards {self.shards}; "
            f"skipped {self.skipped or 0}; filtered {self.filtered or 0}"
            + (f"; resumed at replay {self.resumed_from}" if self.resumed_from else "")
        )


class SeenIds:
    """The battle ids a pack has read, to keep one copy of each battle: an SQLite table of whole
    ids in the output folder (`seen-ids.sqlite`, removed when the pack completes).

    Why this structure: the check is exact (whole ids, no hash that could merge two battles);
    memory is SQLite's page cache, `CACHE_KIB` whatever the number of battles (a Python set of
    ids would need ~100 MB per million battles, in the one process that must never run out);
    the disk holds ~25 bytes per battle (~50 MB for 2M); lookups run at ~150k/s on an idle
    core (56k/s with this machine's 2 cores shared four ways; 2M random ids: 16 MB of resident
    memory, 24 bytes each on disk), above what 32 parse workers consume. No locking (`unix-none`: one writer, and
    network file systems' locks are unreliable), no journal: it is a scratch file.

    Resumable by construction: it is rebuilt on every run. A resumed pack re-reads its input
    from the start anyway (without parsing up to the saved position) and adds every id again
    in the same order, so at the resume position the table holds exactly what the interrupted
    run's did, whatever moment the kill came at.
    """

    CACHE_KIB = 16 * 1024

    def __init__(self, path: Path):
        self.path = path
        path.unlink(missing_ok=True)
        uri = f"file:{quote(str(path))}" + ("?vfs=unix-none" if os.name == "posix" else "")
        # Filled by the pool's task thread, which reads the input; closed by the main thread.
        self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{self.CACHE_KIB}"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY) WITHOUT ROWID")
        self.db.execute("BEGIN")  # never committed: the file is thrown away
        self.insert = self.db.cursor()

    def add(self, battle_id: str) -> bool:
        """Record `battle_id`; False when it was already there."""
        self.insert.execute("INSERT OR IGNORE INTO seen VALUES (?)", (battle_id,))
        return self.insert.rowcount == 1

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


def _work(
    chunk: list[tuple[int, Replay | None]], val_fraction: float
) -> list[tuple[int, str | None, str, list[tuple[dict, int]], dict]]:
    """Worker: parse + encode a chunk; per replay (position, skip reason, split, samples, facts).
    A replay given as None is a duplicate of an earlier one."""
    results = []
    for position, replay in chunk:
        if replay is None:
            results.append((position, DUPLICATE, "train", [], {}))
            continue
        split = split_of(replay.id, val_fraction)
        try:
            trajectories = parse_replay(replay, encoder=encode)
        except SkipBattle as skip:
            results.append((position, skip.reason, split, [], {}))
            continue
        samples = [(encode_sample(t), len(t.decisions)) for t in trajectories if t.decisions]
        ratings = [r for r in (replay.ratings or {}).values() if r is not None]
        results.append(
            (
                position,
                None,
                split,
                samples,
                {"format": replay.format, "rating": min(ratings) if ratings else None},
            )
        )
    return results


def _chunks(
    replays: Iterator[Replay],
    size: int,
    start: int,
    seen: SeenIds,
    marks: deque[int],
    stats: SourceStats,
) -> Iterator[list[tuple[int, Replay | None]]]:
    """Chunks of (position, replay) from `start` on, a duplicate's replay replaced by None.
    Every id goes into `seen`, those before `start` too (see `SeenIds`). Before each chunk,
    `marks` gets the number of input records read up to its end (the progress shown once its
    results are in: imap returns them in the same order)."""
    chunk: list[tuple[int, Replay | None]] = []
    for position, replay in enumerate(replays):
        first = bool(replay.extra.get("fallback_id")) or seen.add(replay.id)
        if position < start:
            continue
        chunk.append((position, replay if first else None))
        if len(chunk) == size:
            marks.append(stats.read)
            yield chunk
            chunk = []
    if chunk:
        marks.append(stats.read)
        yield chunk


def _band(rating: int | None) -> str:
    if rating is None:
        return "unrated"
    return f"{max(b for b in RATING_BANDS if b <= rating)}+"


def _empty_counts() -> dict:
    return {"skipped": {}, "formats": {}, "ratings": {}, "battles": 0}


def pack(cfg: PackConfig, progress: bool = True) -> PackSummary:
    """Pack `cfg.sources` into shards under `cfg.out`; resumes an interrupted run.

    Whenever a shard completes, the other split's open shard is completed too, so that every
    saved state is one input position: a resume re-reads the input up to it without parsing
    and goes on from there. (Validation shards come out about val_fraction the train size.)
    One pack at a time per output folder: a second one is refused (FolderLocked, naming the
    first), a lock left by a killed pack is taken over (pokeagent/writer_lock.py).
    """
    cfg.out.mkdir(parents=True, exist_ok=True)
    with WriterLock(cfg.out / LOCK_FILE, "pack output"):
        return _pack(cfg, progress)


def _pack(cfg: PackConfig, progress: bool) -> PackSummary:
    state_path = cfg.out / STATE_FILE
    state = {
        "fingerprint": cfg.fingerprint(),
        "shards": {s: [] for s in SPLITS},
        "position": 0,
        "counts": _empty_counts(),
    }
    if state_path.exists():
        saved = json.loads(state_path.read_text())
        if saved["fingerprint"] != state["fingerprint"]:
            raise ValueError(
                f"{cfg.out} holds a pack made with other settings ({saved['fingerprint']}); "
                "use a new --out folder or delete that one"
            )
        if saved.get("complete"):
            print(f"{cfg.out}: already packed (see {MANIFEST_FILE})")
            return PackSummary(**json.loads((cfg.out / MANIFEST_FILE).read_text())["summary"])
        state = saved
    for stale in cfg.out.glob("*.tar.tmp"):
        stale.unlink()  # the open shards of an interrupted run: rewritten from their start
    writers = {s: _SplitWriter(cfg.out, s, state["shards"][s]) for s in SPLITS}
    resume_at = state["position"]
    counts = state["counts"]
    pending: list[tuple[str | None, dict]] = []  # facts of replays since the last saved position

    def fold_pending() -> None:
        for reason, info in pending:
            if reason:
                counts["skipped"][reason] = counts["skipped"].get(reason, 0) + 1
                continue
            counts["battles"] += 1
            counts["formats"][info["format"]] = counts["formats"].get(info["format"], 0) + 1
            band = _band(info["rating"])
            counts["ratings"][band] = counts["ratings"].get(band, 0) + 1
        pending.clear()

    def save(position: int, complete: bool = False) -> None:
        for writer in writers.values():
            writer.close()
        fold_pending()
        state.update(
            shards={s: [asdict(i) for i in w.done] for s, w in writers.items()},
            position=position,
            counts=counts,
            complete=complete,
        )
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(state_path)

    source_stats = SourceStats()
    replays = iter_replays(
        cfg.sources, formats=cfg.formats, min_rating=cfg.min_rating, stats=source_stats
    )
    started = time.monotonic()
    end = resume_at
    # Input records done (read, and parsed unless skipped or filtered; a resumed pack reads
    # its input again from the start, fast up to where it stopped), out of the total where
    # parquet footers give it: an ETA for the big packs.
    bar = progress_bar(
        total=count_records(cfg.sources) if progress else None,
        desc="pack",
        unit="record",
        disable=not progress,
    )
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    seen = SeenIds(cfg.out / SEEN_FILE)
    try:
        with context.Pool(cfg.workers) as pool:
            work = functools.partial(_work, val_fraction=cfg.val_fraction)
            marks: deque[int] = deque()
            chunks = _chunks(replays, cfg.chunk, resume_at, seen, marks, source_stats)
            for results in pool.imap(work, chunks):
                for position, reason, split, samples, info in results:
                    end = position + 1
                    pending.append((reason, info))
                    for sample, decisions in samples:
                        writers[split].write(sample, position, decisions)
                    # Shards end at replay boundaries: a battle's two samples stay together.
                    if any(w.size >= cfg.shard_size for w in writers.values()):
                        save(position + 1)
                bar.update(marks.popleft() - bar.n)
    finally:
        seen.close()
    bar.update(source_stats.read - bar.n)
    bar.close()
    save(end, complete=False)
    summary = PackSummary(
        seconds=time.monotonic() - started,
        resumed_from=resume_at,
        replays_read=source_stats.yielded,
    )
    summary.skipped = dict(counts["skipped"]) | {
        f"source: {k}": v for k, v in source_stats.skipped.items()
    }
    summary.filtered = dict(source_stats.filtered)
    summary.battles_packed = counts["battles"]
    for split, writer in writers.items():
        summary.trajectories[split] = sum(i.samples for i in writer.done)
        summary.decisions[split] = sum(i.decisions for i in writer.done)
        summary.shards[split] = len(writer.done)
    manifest = {
        "summary": asdict(summary),
        "shards": {s: [asdict(i) for i in w.done] for s, w in writers.items()},
        "formats": counts["formats"],
        "rating_histogram": counts["ratings"],
        "skip_reasons": summary.skipped,
        "encoder_schema": schema(),
        "parser_version": PARSER_VERSION,
        "settings": cfg.fingerprint(),
        "sources": cfg.sources,
    }
    (cfg.out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    save(end, complete=True)
    return summary
