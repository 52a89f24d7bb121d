"""Install the pinned npm `pokemon-showdown` into the pokeagent cache, once per machine.

The install is atomic (npm installs into a temporary folder that is renamed when complete) and
guarded by a file lock, so parallel test workers or jobs never see half an install.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from pokeagent.paths import cache_dir

SHOWDOWN_VERSION = "0.11.11"
"""The pokemon-showdown release everything here is verified against (protocol, dex, server)."""

# Only the overrides: the server merges them over config/config-example.js. The logs folder is
# per server instance (POKEAGENT_SHOWDOWN_LOGSDIR), so that servers sharing this install never
# share a battle counter or log names. repl sockets are off: we never attach a console.
CONFIG_JS = """\
// Written by pokeagent (pokeagent/showdown/install.py); rewritten at every install and start.
exports.bindaddress = '127.0.0.1';
exports.noguestsecurity = true;
exports.nothrottle = true;
exports.noipchecks = true;
exports.logchallenges = true;
exports.repl = false;
exports.crashguardemail = null;
if (process.env.POKEAGENT_SHOWDOWN_LOGSDIR) exports.logsdir = process.env.POKEAGENT_SHOWDOWN_LOGSDIR;
"""

# Folders the server expects under its logs directory; without them the battle counter is
# not saved and log names collide after a restart.
LOG_SUBDIRS = ("repl", "chat", "modlog")


class ShowdownInstallError(RuntimeError):
    """Node/npm missing, or the npm install failed."""


def install_root(version: str = SHOWDOWN_VERSION) -> Path:
    """The folder holding `node_modules/pokemon-showdown` for this version."""
    return cache_dir() / "showdown" / version


def package_dir(version: str = SHOWDOWN_VERSION) -> Path:
    """The installed `pokemon-showdown` package folder (it may not exist yet)."""
    return install_root(version) / "node_modules" / "pokemon-showdown"


def is_installed(version: str = SHOWDOWN_VERSION) -> bool:
    """True when the package is installed at exactly `version`."""
    manifest = package_dir(version) / "package.json"
    try:
        return json.loads(manifest.read_text())["version"] == version
    except (OSError, ValueError, KeyError):
        return False


def node_executable() -> str:
    """Path of `node`, or a clear error telling how to get it."""
    node = shutil.which("node")
    if node is None:
        raise ShowdownInstallError(
            "`node` was not found on PATH: Pokémon Showdown needs Node.js >= 18 "
            "(e.g. `apt-get install nodejs npm`, or a module load on a cluster)."
        )
    return node


@contextmanager
def _install_lock(root: Path):
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_server_files(pkg: Path) -> None:
    """Write `config/config.js` and the folders the server expects.

    The config lives inside node_modules, so a reinstall deletes it: written at every start.
    `--skip-build` fails with "Cannot find module" without it.
    """
    (pkg / "config" / "chat-plugins").mkdir(parents=True, exist_ok=True)
    config = pkg / "config" / "config.js"
    if not config.exists() or config.read_text() != CONFIG_JS:
        config.write_text(CONFIG_JS)
    for sub in LOG_SUBDIRS:
        (pkg / "logs" / sub).mkdir(parents=True, exist_ok=True)


def install(version: str = SHOWDOWN_VERSION, force: bool = False, quiet: bool = True) -> Path:
    """Install pokemon-showdown@`version` (minimal: no optional database/mail packages).

    Returns the package folder. A second call is a no-op unless `force`.
    """
    root = install_root(version)
    with _install_lock(root):
        if is_installed(version) and not force:
            write_server_files(package_dir(version))
            return package_dir(version)
        node_executable()
        npm = shutil.which("npm")
        if npm is None:
            raise ShowdownInstallError("`npm` was not found on PATH; it ships with Node.js.")
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        started = time.monotonic()
        cmd = [
            npm,
            "install",
            "--omit=optional",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--loglevel=error",
            f"pokemon-showdown@{version}",
        ]
        proc = subprocess.run(cmd, cwd=staging, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise ShowdownInstallError(
                f"`{' '.join(cmd)}` failed (exit {proc.returncode}) in {staging}:\n"
                f"{proc.stderr[-3000:]}"
            )
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
        write_server_files(package_dir(version))
        if not quiet:
            print(
                f"installed pokemon-showdown {version} in {time.monotonic() - started:.1f} s "
                f"-> {package_dir(version)}"
            )
        return package_dir(version)


def require_installed(version: str = SHOWDOWN_VERSION) -> Path:
    """The package folder, or an error that says which command installs it."""
    if not is_installed(version):
        raise ShowdownInstallError(
            f"pokemon-showdown {version} is not installed in {install_root(version)}: "
            "run `pokeagent showdown install`."
        )
    return package_dir(version)
