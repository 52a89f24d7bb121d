#!/usr/bin/env bash
# Submit the rounds of `pokeagent improve` to SLURM as chains of jobs (generation as a CPU array,
# pack, training as the usual GPU tier, evaluation), or print them:
#   launch/improve.sh --shards shards --start runs/large-32gpu --out runs/improve --rounds 3 --dry-run
# All the logic is in pokeagent/loop/slurm_chain.py (`launch/improve.sh --help` lists the options).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$REPO/.venv/bin/activate" ]; then
  source "$REPO/.venv/bin/activate"
fi
cd "$REPO"
exec python -m pokeagent.launch improve "$@"
