#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and install what pokeagent needs:
# the pinned torch, the package with its dev extras, and the pinned Pokémon Showdown.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only does what is missing).
#
# Knobs (environment):
#   POKEAGENT_VENV        virtualenv folder (default: .venv in the repo)
#   POKEAGENT_PYTHON      interpreter that creates it (default: python3)
#   POKEAGENT_TORCH_SPEC  torch requirement (default: torch==2.13.0). On a CPU-only machine
#                         with the local CPU wheel, that pin takes it; on a CUDA cluster the
#                         same pin takes PyPI's CUDA build. Point PIP_INDEX_URL/PIP_EXTRA_INDEX_URL
#                         at the PyTorch index to choose another CUDA build.
#   POKEAGENT_SKIP_SHOWDOWN=1  do not install the simulator (training-only nodes)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POKEAGENT_VENV:-$REPO/.venv}"
PYTHON="${POKEAGENT_PYTHON:-python3}"
TORCH_SPEC="${POKEAGENT_TORCH_SPEC:-torch==2.13.0}"

say() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  say "installing $TORCH_SPEC"
  "$PY" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
fi

# Reinstall the package only when its install recipe changed since the last install, or when
# the parser's compiled modules no longer match their sources (pokeagent/native.py).
STAMP="$VENV/.pokeagent-installed"
if [ ! -f "$STAMP" ] || [ "$REPO/setup.py" -nt "$STAMP" ] \
  || ! "$PY" -W ignore -c "import sys, pokeagent.native as n; sys.exit(n.needs_rebuild())" >/dev/null 2>&1; then
  say "installing pokeagent (editable) with dev extras"
  "$PY" -m pip install --quiet --disable-pip-version-check -e "$REPO[dev]"
  touch "$STAMP"
fi

export PATH="$VENV/bin:$PATH"
# DeepSpeed on a machine without CUDA: say so rather than let it probe and warn.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
fi

if [ "${POKEAGENT_SKIP_SHOWDOWN:-0}" != "1" ]; then
  pokeagent showdown install
fi
