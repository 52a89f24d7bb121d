"""The fault campaign of issue #20: each fault made on small real runs, one table.

    nice -n 19 python scripts/fault_campaign.py --kills 20 --runs 2 --work runs/faults
    python scripts/fault_campaign.py --kills 2 --runs 1 --only sigkill,truncated   # a quick check

Every training fault runs the tiny model on simulated shards (made here once, in --work) and
compares every step's loss with an uninterrupted run of the same options, bitwise; pack and
download compare their output files byte for byte (download runs against tests/test_hub.py's
stand-in for the Hub, over ../shared/replays). Prints one markdown table (fault | runs |
survived | losses identical after resume) and writes it to <work>/faults.md; the runs' logs are
in <work>/logs/. The cases are pokeagent/bench/faults.py's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from pathlib import Path

from pokeagent.bench.faults import TABLE_HEAD, Campaign

FAULTS = (
    "sigkill",
    "sigterm-validation",
    "sigterm-battles",
    "truncated",
    "full-disk",
    "loader-worker",
    "second-writer",
    "build-kill",
    "pack-kill",
    "download-kill",
)
ROOT = Path(__file__).resolve().parents[1]


def shards_and_replays(work: Path) -> tuple[Path, Path]:
    """24 simulated gen9randombattle battles packed as the tests' shards (made once)."""
    from pokeagent.data.generate import served_replay
    from pokeagent.data.pack import MANIFEST_FILE, PackConfig, pack
    from pokeagent.showdown import simtool
    from pokeagent.showdown.install import install

    data = work / "data"
    replays, shards = data / "replays.jsonl", data / "shards"
    if not (shards / MANIFEST_FILE).is_file():
        import json

        data.mkdir(parents=True, exist_ok=True)
        battles = simtool.run_random_battles(
            install(), "gen9randombattle", 24, 41, move_prob=0.8, tera_prob=0.2
        )
        with open(replays, "w") as out:
            for record in battles:
                out.write(json.dumps(served_replay(record, uploadtime=0)) + "\n")
        pack(
            PackConfig(
                sources=[str(replays)], out=shards, workers=1, shard_size=100_000, val_fraction=0.25
            ),
            progress=False,
        )
    return shards, replays


@contextlib.contextmanager
def hub_stand_in(shared_replays: Path, chunk: int = 2048, pause_s: float = 0.02):
    """tests/test_hub.py's stand-in for the Hugging Face Hub on 127.0.0.1 (metamon-raw at tag
    v6, built from the shared replays, as its `metamon` fixture), sending file bytes `chunk` at
    a time `pause_s` apart so that a kill can land inside a file; HF_ENDPOINT names it."""
    from http.server import ThreadingHTTPServer

    sys.path.insert(0, str(ROOT / "tests"))
    import test_hub

    rows = sorted(
        (test_hub._metamon_row(r) for r in test_hub._records(shared_replays)),
        key=lambda r: (r["formatid"], r["id"]),
    )
    files = {"README.md": test_hub.README, ".gitattributes": b"*.parquet filter=lfs\n"}
    for i in range(3):
        files[f"data/train-{i:05d}-of-00003.parquet"] = test_hub._parquet(rows[i * 8 : (i + 1) * 8])
    hub = test_hub.FakeHub()
    hub.add_repo("jakegrigsby/metamon-raw-replays", files, tags=("v5", "v6"))

    class Slow(test_hub._Handler):
        def _send(self, status, body=b"", headers=None, head=False):
            if head or not self.path.startswith("/cdn/"):
                return super()._send(status, body, headers, head)
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), chunk):
                self.wfile.write(body[start : start + chunk])
                self.wfile.flush()
                time.sleep(pause_s)

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # a client killed inside a file resets its connection: that is the point here

    Slow.hub = hub
    server = Server(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ.update(
        HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}", NO_PROXY="127.0.0.1,localhost"
    )
    os.environ.pop("HF_TOKEN", None)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def download_kill(campaign: Campaign, kills: int, shared_replays: Path):
    with hub_stand_in(shared_replays):
        return campaign.download_kill(kills)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/faults", help="runs, logs, data and the table")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of training, and of pack")
    parser.add_argument("--runs", type=int, default=2, help="runs of every other fault")
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps of a run")
    parser.add_argument("--seed", type=int, default=0, help="of the kill moments")
    parser.add_argument("--only", default=",".join(FAULTS), help=f"of {','.join(FAULTS)}")
    parser.add_argument(
        "--shared-replays",
        default=str(ROOT.parent / "shared" / "replays"),
        help="the real replays the Hub stand-in serves (download-kill)",
    )
    args = parser.parse_args(argv)
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = set(only) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    work = Path(args.work).resolve()
    shards, replays = shards_and_replays(work)
    campaign = Campaign(shards, work, steps=args.steps, seed=args.seed)
    cases = {
        "sigkill": lambda: campaign.sigkill(args.kills),
        "sigterm-validation": lambda: campaign.sigterm_validation(args.runs),
        "sigterm-battles": lambda: campaign.sigterm_battles(args.runs),
        "truncated": lambda: campaign.truncated_checkpoint(args.runs),
        "full-disk": lambda: campaign.full_disk(args.runs),
        "loader-worker": lambda: campaign.loader_worker(args.runs),
        "second-writer": lambda: campaign.second_writer(args.runs),
        "build-kill": lambda: campaign.build_kill(args.runs),
        "pack-kill": lambda: campaign.pack_kill(args.kills, replays),
        "download-kill": lambda: download_kill(campaign, args.kills, Path(args.shared_replays)),
    }
    rows = []
    for name in only:
        started = time.monotonic()
        outcome = cases[name]()
        rows.append(outcome.row())
        print(f"{outcome.row()}   [{time.monotonic() - started:.0f} s]", flush=True)
    table = "\n".join([TABLE_HEAD, *rows])
    (work / "faults.md").write_text(table + "\n")
    print(f"\n{table}\n\n-> {work / 'faults.md'}, logs in {work / 'logs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
