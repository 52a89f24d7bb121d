#!/usr/bin/env bash
# Submit a training run to SLURM, or run it here where there is no SLURM:
#   launch/train.sh NODES GPUS_PER_NODE [HOURS] [BATCH_PER_GPU] [--dry-run] [--resume] ...
# All the logic is in pokeagent/launch/slurm.py (`launch/train.sh 1 4 --help` lists the options).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$REPO/.venv/bin/activate" ]; then
  source "$REPO/.venv/bin/activate"
fi
cd "$REPO"
exec python -m pokeagent.launch train "$@"
