#!/usr/bin/env bash
# The README's test command: installs what is missing (scripts/setup.sh), lints, runs pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k server -x`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup.sh"
cd "$REPO"
echo "[test] ruff"
ruff check .
ruff format --check .
echo "[test] parser build: $(python -c 'import pokeagent.native as n; print(n.mode())')"
echo "[test] pytest"
python -m pytest "$@"
