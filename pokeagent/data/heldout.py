"""Held-out shards read in a fixed order: the trajectories offline evaluation and the trainer's
validation score.

Reading is deterministic: shard paths in order (a folder's `<split>-*.tar` sorted), samples in
file order; `max_samples` takes that many spread evenly over them (by the manifest's counts).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from pokeagent.data.shards import read_shard


def shard_paths(shards: str | Path | Iterable[str | Path], split: str = "val") -> list[str]:
    """Tar paths in a fixed order: a folder gives its sorted `<split>-*.tar`, a file itself. A
    mixture (`DIR=W,DIR=W`, the trainer's `--data-dir`) gives its first folder's: validation
    stays on the same held-out battles when a mixture gains folders."""
    if isinstance(shards, str):
        from pokeagent.data.loader import first_folder

        shards = first_folder(shards)
    items = [shards] if isinstance(shards, str | Path) else list(shards)
    paths: list[str] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(str(p) for p in item.glob(f"{split}-*.tar"))
            if not found:
                raise FileNotFoundError(
                    f"no {split}-*.tar in {item} (pack with --val-fraction > 0, or pass tar files)"
                )
            paths += found
        elif item.is_file():
            paths.append(str(item))
        else:
            raise FileNotFoundError(f"{item}: no such shard or folder")
    return paths


def _manifest_counts(paths: list[str]) -> list[int] | None:
    """Samples per shard from the `manifest.json` beside each shard (`pokeagent pack`'s), or None
    where one is missing."""
    manifests: dict[Path, dict[str, int]] = {}
    counts = []
    for path in map(Path, paths):
        if path.parent not in manifests:
            try:
                shards = json.loads((path.parent / "manifest.json").read_text())["shards"]
                manifests[path.parent] = {
                    entry["name"]: int(entry["samples"])
                    for entries in shards.values()
                    for entry in entries
                }
            except (OSError, ValueError, KeyError, TypeError):
                manifests[path.parent] = {}
        if path.name not in manifests[path.parent]:
            return None
        counts.append(manifests[path.parent][path.name])
    return counts


def read_trajectories(paths: list[str], max_samples: int | None = None) -> Iterator[dict]:
    """Whole trajectories in file order (empty ones skipped). With `max_samples`, that many spread
    evenly over all of them (samples floor(i x total / max_samples), by the manifest's counts;
    shards holding none of them are not opened): pack writes its inputs in order, so the first N
    would often be one format or one month. Without a manifest, the first `max_samples`."""
    counts = _manifest_counts(paths) if max_samples is not None else None
    if counts is not None and sum(counts) > max_samples:
        total = sum(counts)
        wanted = sorted({i * total // max_samples for i in range(max_samples)})
        offset = 0
        for path, count in zip(paths, counts, strict=True):
            here = {index - offset for index in wanted if offset <= index < offset + count}
            offset += count
            if not here:
                continue
            last = max(here)
            for index, sample in enumerate(read_shard(path)):
                if index in here and len(sample["action"]):
                    yield sample
                if index >= last:
                    break
        return
    count = 0
    for path in paths:
        for sample in read_shard(path):
            if max_samples is not None and count >= max_samples:
                return
            if len(sample["action"]):
                count += 1
                yield sample
