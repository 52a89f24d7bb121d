"""Launch at any scale: hostfiles, SLURM sbatch scripts per scale tier, local runs, pre-flight checks.

    launch/train.sh 2 4 6 --dry-run          # the sbatch script and launch command for 2 nodes x 4 GPUs, 6 h
    launch/hostfile.sh > hostfile            # `host slots=N` lines from the SLURM allocation
    pokeagent validate --data-dir shards     # pass/fail table before spending GPU hours

The trainer is the same everywhere (`python -m pokeagent.train`); only the launcher and the
DeepSpeed JSON differ between one CPU process and 32+ GPUs.
"""
