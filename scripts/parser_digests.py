"""One sha256 per trajectory over a fixed corpus: run before and after a parser change.

    python scripts/parser_digests.py before.json           # on the old code
    python scripts/parser_digests.py after.json --compare before.json

Hashes each trajectory's metadata, every decision's turn, kind, label, line and legal mask, and
every byte of its encoded arrays (a skip hashes as its reason). The corpus: the bench corpora
(simulator battles in gens 9, 4, 1 and 7, generated once into the pokeagent cache) and the shared
real replays. A refactor that keeps the output must show no difference; one that changes it
bumps PARSER_VERSION or ENCODER_VERSION.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from pokeagent.bench.parse import corpus
from pokeagent.data.encode import encode
from pokeagent.data.parse import SkipBattle, Trajectory, parse_replay
from pokeagent.data.sources import iter_replays

SHARED_REPLAYS = Path(__file__).resolve().parents[2] / "shared" / "replays"


def replays():
    yield from corpus()
    yield from corpus("gen4randombattle", 100, 1)
    yield from corpus("gen1randombattle", 100, 2)
    yield from corpus("gen7randombattle", 100, 3)
    for sub in ("human", "serverlogs"):
        if (SHARED_REPLAYS / sub).is_dir():
            yield from iter_replays(SHARED_REPLAYS / sub)


def digest(t: Trajectory) -> str:
    h = hashlib.sha256()
    meta = [t.battle_id, t.format, t.gen, t.side, t.player, t.rating, t.opponent_rating]
    h.update(json.dumps([*meta, t.outcome, t.team], sort_keys=True, default=str).encode())
    for d in t.decisions:
        fields = [d.turn, d.kind, int(d.action), d.action_info, d.active_slot, d.line]
        h.update(json.dumps(fields).encode())
        h.update(np.asarray(d.legal, dtype=bool).tobytes())
        for key in ("tokens", "features", "globals"):
            array = d.obs[key]
            h.update(f"{key}{array.dtype}{array.shape}".encode())
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path, help="digests written earlier")
    args = parser.parse_args()
    out: dict[str, list[str] | str] = {}
    for index, replay in enumerate(replays()):
        key = f"{index}:{replay.id}"
        try:
            out[key] = [digest(t) for t in parse_replay(replay, encoder=encode)]
        except SkipBattle as skip:
            out[key] = "skip: " + skip.reason
    args.out.write_text(json.dumps(out, indent=0, sort_keys=True))
    skipped = sum(isinstance(v, str) for v in out.values())
    print(f"{len(out)} replays, {skipped} skipped -> {args.out}")
    if args.compare is not None:
        before = json.loads(args.compare.read_text())
        differ = sorted(k for k in before.keys() | out.keys() if before.get(k) != out.get(k))
        print(f"{len(differ)} differ from {args.compare}", *differ[:20], sep="\n  ")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
