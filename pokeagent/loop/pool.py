"""`pokeagent improve`'s pool of opponents and a round's battles: `--pool` parsed
(`parse_pool`), resolved against the round's agents (`resolve_pool`) and cut into seeded chunks
(`plan_chunks`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PoolEntry:
    """One item of `--pool`."""

    kind: str
    """A baseline kind, `self`, `past` or `agent`."""
    weight: float
    temperature: float | None = None
    """self, past, agent: the sampling temperature (None: the loop's `temperature`)."""
    count: int = 0
    """past: how many earlier agents."""
    path: str | None = None
    """agent: the checkpoint."""


def parse_pool(text: str) -> list[PoolEntry]:
    """`heuristic=2,past:2=1,self@1.5=1,agent:runs/x@0.5=1` -> entries (a weight left out is 1)."""
    from pokeagent.showdown.players import AGENT, BASELINES, PlayerSpec, number, split_weighted

    entries = []
    for spec, weight in split_weighted(text, "--pool"):
        item = spec
        name, at, temperature = spec.partition("@")
        if spec in BASELINES:
            entries.append(PoolEntry(spec, weight))
        elif name == "self" or name.startswith("past:"):
            t = number(temperature) if at else None
            if at and (t is None or t < 0):
                raise ValueError(f"--pool {item!r}: @T must be a temperature >= 0")
            count = name.removeprefix("past:")
            if name != "self" and not (count.isdigit() and int(count) > 0):
                raise ValueError(f"--pool {item!r}: past:K needs a count K >= 1")
            kind = "self" if name == "self" else "past"
            entries.append(PoolEntry(kind, weight, t, int(count) if kind == "past" else 0))
        elif spec.startswith(AGENT + ":"):
            player = PlayerSpec.parse(spec)
            entries.append(PoolEntry(AGENT, weight, player.temperature, path=player.checkpoint))
        else:
            raise ValueError(
                f"--pool {item!r}: choose from {sorted(BASELINES)}, self[@T], past:K[@T], "
                "agent:PATH[@T]"
            )
    return entries


def resolve_pool(
    entries: list[PoolEntry], current: Path, past: list[Path], temperature: float
) -> list[tuple[str, float]]:
    """The pool of one round as (player spec, weight): `current` is the agent being trained, `past`
    the earlier rounds' agents (oldest first). A spec named twice gets the sum of its weights."""
    pool: dict[str, float] = {}

    def add(spec: str, weight: float) -> None:
        pool[spec] = pool.get(spec, 0.0) + weight

    for entry in entries:
        t = temperature if entry.temperature is None else entry.temperature
        if entry.kind == "self":
            add(f"agent:{current}@{t:g}", entry.weight)
        elif entry.kind == "past":
            chosen = past[-entry.count :] if past else []
            for path in chosen:
                add(f"agent:{path}@{t:g}", entry.weight / len(chosen))
        elif entry.kind == "agent":
            add(f"agent:{entry.path}@{t:g}", entry.weight)
        else:
            add(entry.kind, entry.weight)
    return list(pool.items())


def plan_chunks(
    pool: list[tuple[str, float]], battles: int, chunk: int, seed: int, round_index: int
) -> list[dict]:
    """The round's battles split among the pool by weight (largest remainders), each opponent's
    cut into chunks of at most `chunk`; every chunk with its own seed."""
    import numpy as np

    from pokeagent.data.generate import split_by_weight

    chunks = []
    for (opponent, _), count in zip(
        pool, split_by_weight(battles, [w for _, w in pool]), strict=True
    ):
        for first in range(0, count, chunk):
            index = len(chunks)
            chunk_seed = int(
                np.random.SeedSequence([seed, round_index, index]).generate_state(1)[0]
            )
            chunks.append(
                {
                    "index": index,
                    "opponent": opponent,
                    "battles": min(chunk, count - first),
                    "seed": chunk_seed,
                }
            )
    return chunks
