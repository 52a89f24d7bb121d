"""Progress of long commands that reads well where it lands: a bar on a terminal, plain lines in
a log.

tqdm redraws its bar with carriage returns, a few times a second: on a terminal that is one line
that moves, but in a file or a pipe (`pokeagent pack ... > log 2>&1`, SLURM's `slurm-%j.out`) it
is thousands of frames on one "line". So `progress(...)` gives tqdm's bar only when stderr is a
terminal, and otherwise a `LineProgress`: one plain line now and then, with the count, the rate
and, where the total is known, the share done and the time left, and a last line when it ends:

    pack: 12,345 replays, 1,234/s, 0:00:10
    download: 1.20 GB of 5.70 GB (21%), 45.1 MB/s, 0:00:27, ETA 0:01:40
    pack: done, 30,000 replays in 0:00:25, 1,200/s

Lines come every 5 s at first, then less often as the run gets longer (a twentieth of the time
so far, at most once a minute), so a day-long job writes a few thousand lines, not millions.
`POKEAGENT_PROGRESS_EVERY=<seconds>` fixes the interval; `POKEAGENT_PROGRESS=bar|lines` forces one
kind. Both kinds take the few tqdm arguments this project uses (`total`, `desc`, `unit`,
`unit_scale`, `initial`, `disable`) and offer `update`, `set_postfix_str`, `close`, iteration and
`with`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

FIRST_EVERY_S = 5.0
"""Seconds between lines while the run is young."""
MAX_EVERY_S = 60.0
"""The longest wait between two lines."""


def progress(iterable: Iterable | None = None, **kwargs: Any) -> Progress:
    """A tqdm bar on a terminal, a `LineProgress` on a file or pipe (see the module docstring)."""
    if _use_bar(kwargs.get("file") or sys.stderr):
        return tqdm(iterable, **kwargs)
    return LineProgress(iterable, **kwargs)


def _use_bar(stream: IO) -> bool:
    """A bar where `stream` is a terminal, unless POKEAGENT_PROGRESS says otherwise."""
    forced = os.environ.get("POKEAGENT_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines"):
        return forced == "bar"
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class LineProgress:
    """tqdm's interface, written as a plain line every few seconds (see the module docstring)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        unit_scale: bool = False,
        unit_divisor: int = 1000,
        initial: float = 0,
        disable: bool = False,
        file: IO | None = None,
        every: float | None = None,
        **_ignored: Any,
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit.strip() or "it"
        self.scale = unit_divisor if unit_scale else 0
        self.n = self.initial = initial
        self.disable = disable
        self.file = file
        fixed = os.environ.get("POKEAGENT_PROGRESS_EVERY")
        self.every = every if every is not None else (float(fixed) if fixed else None)
        self.postfix = ""
        self.started = self.last = time.monotonic()
        self.closed = False
        self.lock = threading.Lock()

    # -- tqdm's interface

    def update(self, n: float = 1) -> None:
        if self.disable or not n:
            return
        with self.lock:
            self.n += n
            now = time.monotonic()
            if now - self.last >= self._interval(now):
                self.last = now
                self._write(self._line(now))

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.disable or self.closed:
            return
        self.closed = True
        now = time.monotonic()
        elapsed = now - self.started
        done = self.n - self.initial
        line = f"{self._prefix()}done, {self._amount(self.n)} in {_clock(elapsed)}"
        if elapsed > 0 and done:
            line += f", {self._rate(done / elapsed)}"
        self._write(line + (f" | {self.postfix}" if self.postfix else ""))

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the line

    def _interval(self, now: float) -> float:
        if self.every is not None:
            return self.every
        return min(MAX_EVERY_S, max(FIRST_EVERY_S, (now - self.started) / 20))

    def _line(self, now: float) -> str:
        elapsed = now - self.started
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        line = self._prefix() + self._amount(self.n)
        if self.total:
            line += f" of {self._amount(self.total, unit=False)} ({self.n / self.total:.0%})"
        line += f", {self._rate(rate)}, {_clock(elapsed)}"
        if self.total and rate > 0 and self.n < self.total:
            line += f", ETA {_clock((self.total - self.n) / rate)}"
        return line + (f" | {self.postfix}" if self.postfix else "")

    def _prefix(self) -> str:
        return f"{self.desc}: " if self.desc else ""

    def _amount(self, value: float, unit: bool = True) -> str:
        text = _scaled(value, self.scale) if self.scale else f"{value:,.0f}"
        if not unit:
            return text + (self.unit if self.scale else "")
        if self.scale:
            return f"{text}{self.unit}"
        plural = value != 1 and self.unit.isalpha() and not self.unit.endswith("s")
        return f"{text} {self.unit}{'s' if plural else ''}"

    def _rate(self, rate: float) -> str:
        if self.scale:
            return f"{_scaled(rate, self.scale)}{self.unit}/s"
        return f"{rate:,.1f}/s" if rate < 10 else f"{rate:,.0f}/s"

    def _write(self, line: str) -> None:
        stream = self.file or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed log never stops the run
            pass


def _scaled(value: float, divisor: int) -> str:
    """1234567 -> '1.23 M' (the unit follows: 'MB')."""
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < divisor or prefix == "T":
            return f"{value:.0f} {prefix}" if not prefix else f"{value:.2f} {prefix}"
        value /= divisor
    return f"{value:.2f} P"


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


Progress = tqdm | LineProgress
"""What `progress` returns."""
