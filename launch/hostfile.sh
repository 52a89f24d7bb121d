#!/usr/bin/env bash
# A DeepSpeed hostfile (`host slots=N`) from the SLURM allocation, or from --hosts LIST --slots N.
#   launch/hostfile.sh > hostfile          # inside a SLURM job
#   launch/hostfile.sh --hosts 'gpu[01-04]' --slots 8
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$REPO/.venv/bin/activate" ]; then
  source "$REPO/.venv/bin/activate"
fi
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec python -m pokeagent.launch hostfile "$@"
