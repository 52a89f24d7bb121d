#!/usr/bin/env bash
# Offline RL against imitation on the same data (pokeagent/experiments/offline_rl.py): battles of
# the heuristic against itself, MaxBasePower and Random -> shards -> bc, binary and exp runs ->
# 1,000 games each against the three baselines -> one table (runs/offline-rl/offline_rl.md).
# Installs what is missing first; extra arguments go to the experiment (--games 200 ...).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup.sh"
cd "$REPO"
python -m pokeagent.experiments.offline_rl "$@"
