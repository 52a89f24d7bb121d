"""Where pokeagent keeps things outside the repository (caches, installs)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The pokeagent cache: $POKEAGENT_CACHE, else $XDG_CACHE_HOME/pokeagent, else ~/.cache/pokeagent.

    The Showdown install and the records of running servers live here, outside any checkout,
    so that every clone and every run on the machine shares one install.
    """
    if env := os.environ.get("POKEAGENT_CACHE"):
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "pokeagent").resolve()
