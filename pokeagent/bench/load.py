"""`pokeagent bench load --shards DIR`: how fast the loader feeds a (no-op) consumer.

Figures: samples/s (trajectory windows) and decisions/s (real, unpadded decisions in those
windows) with 1 worker and with N, and the data-wait share: the fraction of wall time the
consumer spent waiting for the next batch while doing `consume_ms` of pretend work per batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pokeagent.data.loader import LoaderConfig, TrajectoryLoader


@dataclass
class LoadBenchRow:
    workers: int
    batches: int
    samples_per_s: float
    decisions_per_s: float
    data_wait_share: float


def measure(
    shards: str, workers: int, batches: int, batch_size: int, window: int, consume_ms: float
) -> LoadBenchRow:
    loader = TrajectoryLoader(
        LoaderConfig(shards=shards, batch_size=batch_size, window=window, workers=workers)
    )
    iterator = iter(loader)
    next(iterator)  # start-up (worker processes, first shard) is not throughput
    waited, decisions = 0.0, 0
    started = time.perf_counter()
    for _ in range(batches):
        before = time.perf_counter()
        batch = next(iterator)
        waited += time.perf_counter() - before
        decisions += int(batch["mask"].sum())
        if consume_ms:
            time.sleep(consume_ms / 1000)
    elapsed = time.perf_counter() - started
    return LoadBenchRow(
        workers, batches, batches * batch_size / elapsed, decisions / elapsed, waited / elapsed
    )


def run_load_bench(
    shards: str,
    workers: list[int],
    batches: int = 200,
    batch_size: int = 32,
    window: int = 64,
    consume_ms: float = 0.0,
) -> list[LoadBenchRow]:
    return [measure(shards, w, batches, batch_size, window, consume_ms) for w in workers]


def table(rows: list[LoadBenchRow]) -> str:
    lines = [
        f"{'workers':>7} {'batches':>7} {'samples/s':>10} {'decisions/s':>12} {'data-wait':>9}"
    ]
    for r in rows:
        lines.append(
            f"{r.workers:>7} {r.batches:>7} {r.samples_per_s:>10.0f} {r.decisions_per_s:>12.0f} {r.data_wait_share:>8.0%}"
        )
    return "\n".join(lines)
