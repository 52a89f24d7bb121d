#!/usr/bin/env bash
# The README's main command: installs what is missing (scripts/setup.sh), then runs
# `pokeagent demo` (extra arguments go to it, e.g. `bash scripts/demo.sh --out runs/demo2`).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup.sh"
cd "$REPO"
pokeagent demo "$@"
