"""Progress in a log: plain lines (count, rate, share, ETA) on a file or pipe, tqdm on a terminal."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from test_sources import _pokechamp_table
from tqdm import tqdm

from pokeagent import progress as progress_module
from pokeagent.progress import LineProgress, progress


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    monkeypatch.delenv("POKEAGENT_PROGRESS_EVERY", raising=False)
    return fake


def test_lines_carry_count_rate_share_and_eta(clock):
    out = io.StringIO()
    bar = LineProgress(total=3000, desc="pack", unit="replay", file=out)
    for _ in range(10):  # 100 replays a second for 10 s: one line at 5 s, one at 10 s
        clock.now += 1
        bar.update(100)
    bar.set_postfix_str("vs random: 3/4 won")
    clock.now += 2
    bar.close()
    assert out.getvalue().splitlines() == [
        "pack: 500 replays of 3,000 (17%), 100/s, 0:00:05, ETA 0:00:25",
        "pack: 1,000 replays of 3,000 (33%), 100/s, 0:00:10, ETA 0:00:20",
        "pack: done, 1,000 replays in 0:00:12, 83/s | vs random: 3/4 won",
    ]


def test_lines_thin_out_as_the_run_grows(clock):
    out = io.StringIO()
    bar = LineProgress(desc="download", unit="B", unit_scale=True, unit_divisor=1024, file=out)
    for _ in range(3 * 3600):  # three hours, a MiB a second
        clock.now += 1
        bar.update(1 << 20)
    lines = out.getvalue().splitlines()
    # Every 5 s for the first 100 s, then a twentieth of the elapsed time, at most a minute.
    assert 150 < len(lines) < 230
    assert lines[0] == "download: 5.00 MB, 1.00 MB/s, 0:00:05"
    assert re.fullmatch(r"download: 10\.\d\d GB, 1\.00 MB/s, 2:59:\d\d", lines[-1])


def test_a_terminal_gets_tqdm_a_file_gets_lines(monkeypatch, tmp_path):
    monkeypatch.delenv("POKEAGENT_PROGRESS", raising=False)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress(total=3, file=Terminal()), tqdm)
    with open(tmp_path / "log", "w") as log:
        assert isinstance(progress(total=3, file=log), LineProgress)
    monkeypatch.setenv("POKEAGENT_PROGRESS", "lines")
    assert isinstance(progress(total=3, file=Terminal()), LineProgress)
    silent = io.StringIO()
    with progress(total=3, file=silent, disable=True) as bar:
        bar.update(3)
    assert silent.getvalue() == ""
    listed = io.StringIO()
    assert list(progress([1, 2], desc="files", file=listed, every=0)) == [1, 2]
    assert listed.getvalue().splitlines()[-1].startswith("files: done, 2 its in ")


def test_pack_into_a_log_file_has_no_carriage_returns(shared_replays, tmp_path):
    """`pokeagent pack ... > log 2>&1`, as in a SLURM job: readable lines, no bar frames; parquet
    sources give the total (from their footers), so the lines carry the share done and an ETA."""
    records = [json.loads(p.read_text()) for p in sorted(shared_replays.glob("*/*.json"))]
    source = tmp_path / "champ.parquet"
    pq.write_table(_pokechamp_table(records, elo=["1400-1599"] * len(records)), source)
    log = tmp_path / "log"
    env = dict(os.environ, POKEAGENT_PROGRESS_EVERY="0")
    env.pop("POKEAGENT_PROGRESS", None)
    with open(log, "wb") as sink:
        command = [sys.executable, "-m", "pokeagent", "pack", str(source), "--workers", "1"]
        command += ["--out", str(tmp_path / "shards"), "--chunk", "4"]
        subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env, check=True)
    text = log.read_bytes().decode()
    assert "\r" not in text
    lines = text.splitlines()
    line = re.compile(
        r"pack: (\d+) records of 24 \(\d+%\), [\d.,]+/s, 0:00:\d\d(, ETA 0:\d\d:\d\d)?$"
    )
    counts = [int(m.group(1)) for m in map(line.match, lines) if m]
    assert counts == sorted(counts) and len(counts) >= 4 and counts[-1] == 24
    assert any(", ETA " in row for row in lines)
    assert any(re.match(r"pack: done, 24 records in 0:00:\d\d, [\d.,]+/s$", row) for row in lines)
