"""`launch/improve.sh`: the rounds of `pokeagent improve` as a chain of SLURM jobs.

    launch/improve.sh --shards shards --start runs/large-32gpu --out runs/improve \\
        --rounds 3 --battles 20000 --chunk 500 --steps 5000 --eval-games 1000 --dry-run

Each round is four jobs, each waiting for the one before (`--dependency=afterok`):

1. **generate**: a CPU array job, one task per chunk of the round's plan (battles split by
   weight among the pool, cut into seeded chunks: `--array=0-<chunks-1>`); a task runs
   `pokeagent improve ... --stage generate --round N --chunk-index $SLURM_ARRAY_TASK_ID`;
2. **pack**: a CPU job, `--stage pack`: the round's shards and its mixture (`data-dir.txt`);
3. **train**: the usual GPU tier, rendered by the tiers' own template (`render_sbatch`: resources
   from the preset, the USR1 stop, requeue until `--max-steps`), on the loop's run directory
   `OUT/train` to the round's target step, over the mixture that the pack job wrote;
4. **finish**: a CPU job, `--stage finish`: the agent kept, evaluated, the report rewritten.

A round-0 job (`--stage zero`: the `--start` agent adopted and evaluated) comes first when the
loop folder has no round 0 yet. Every stage is the same code as the local loop's, and idempotent:
a job that failed is submitted again (or the whole chain, which skips done rounds). What a
round plays is fixed by its plan, written by its first generation task; the number of chunks is
known before (it depends on the pool and the round only), which sizes the array.

The scripts go to `OUT/slurm/` with `submit.sh`, which submits them in order; `--dry-run` prints
them and writes nothing. Without `sbatch` here there is nothing to submit to: run
`pokeagent improve` (the same loop on this machine), or `--dry-run`.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from pokeagent.launch.slurm import (
    JOB_PREAMBLE,
    LaunchError,
    LaunchOptions,
    _join,
    _Shell,
    passed_through,
    render_sbatch,
    sbatch_head,
)
from pokeagent.loop.improve import Improve, ImproveConfig
from pokeagent.options import add_options, config_from

STAGE_FIELDS = ("stage", "round", "chunk_index")
"""ImproveConfig fields a job sets itself (one per job), not the user."""
LAUNCH_FROM_RUN = (
    "model",
    "batch_size_per_gpu",
    "learning_rate",
    "checkpoint_minutes",
    "eval_every",
    "max_samples",
    "min_rating",
    "seed",
)
"""LaunchOptions fields the training job takes from the loop's run (train-config.json): a run
goes on with its own settings."""


@dataclass
class ChainOptions:
    """How a loop's rounds map onto SLURM jobs (the loop's own options are `pokeagent improve`'s)."""

    submit_rounds: int | None = None
    """Rounds chained by one submission, from the first one not done (default: all that remain
    up to --rounds)."""
    nodes: int = 1
    """Nodes of each training job."""
    gpus_per_node: int = 4
    """GPUs per node of each training job."""
    train_hours: float = 6.0
    """Wall time of a training job (it stops before, saves, and requeues until its round's step)."""
    cpu_hours: float = 4.0
    """Wall time of a CPU job: a chunk of battles, a pack, an evaluation."""
    cpus_per_task: int = 8
    """Cores of a CPU job (a chunk plays --concurrency battles at once; pack and evaluation)."""
    cpu_memory: int = 32
    """GB of memory of a CPU job."""
    partition: str | None = None
    """SLURM partition of the training jobs."""
    cpu_partition: str | None = None
    """SLURM partition of the CPU jobs (default: --partition)."""
    account: str | None = None
    """SLURM account of every job."""
    qos: str | None = None
    """SLURM QOS of every job."""
    wiring: str = "srun"
    """Training jobs' wiring (launch/train.sh --wiring)."""
    ds_config: str | None = None
    """Training jobs' DeepSpeed JSON (default: the tier's; the start run's own is not reused: a
    start trained on this machine ran on the CPU config)."""
    dry_run: bool = False
    """Print the scripts and the submission, write and submit nothing."""

    def __post_init__(self):
        for name in ("nodes", "gpus_per_node", "cpus_per_task", "cpu_memory"):
            if getattr(self, name) < 1:
                raise LaunchError(f"--{name.replace('_', '-')} must be >= 1")
        if self.submit_rounds is not None and self.submit_rounds < 1:
            raise LaunchError("--submit-rounds must be >= 1")
        if not (self.train_hours > 0 and self.cpu_hours > 0):
            raise LaunchError("--train-hours and --cpu-hours must be > 0")


@dataclass
class Chain:
    """What one submission holds: the job scripts (file name -> text) and submit.sh."""

    folder: Path
    rounds: list[int]
    scripts: dict[str, str] = field(default_factory=dict)
    submit: str = ""


def improve_args(cfg: ImproveConfig) -> list[str]:
    """The loop's options as given (those that differ from the defaults), for every job."""
    defaults = ImproveConfig()
    out = []
    for f in fields(ImproveConfig):
        value = getattr(cfg, f.name)
        if f.name in STAGE_FIELDS or value == getattr(defaults, f.name):
            continue
        out += [f"--{f.name.replace('_', '-')}", str(value)]
    return out


def _stage_job(
    cfg: ImproveConfig,
    chain: ChainOptions,
    command: str,
    index: int,
    stage: str,
    what: str,
    array: int | None = None,
) -> str:
    folder = Path(cfg.out) / "slurm"
    name = f"round-{index:03d}-{stage}"
    words = ["python", "-m", "pokeagent", "improve", *improve_args(cfg), "--stage", stage]
    if stage != "zero":
        words += ["--round", str(index)]
    if array is not None:
        words += ["--chunk-index", _Shell("$SLURM_ARRAY_TASK_ID")]
    head = sbatch_head(
        [f"pokeagent improve, round {index}: {what}.", f"Generated by: {command}"],
        job_name=f"pokeagent-improve-r{index}-{stage}",
        nodes=1,
        cpus=chain.cpus_per_task,
        memory_gb=chain.cpu_memory,
        hours=chain.cpu_hours,
        output=f"{folder}/{name}-%A_%a.out" if array is not None else f"{folder}/{name}-%j.out",
        array=f"0-{array - 1}" if array is not None else None,
        partition=chain.cpu_partition or chain.partition,
        account=chain.account,
        qos=chain.qos,
    )
    body = ["", "set -euo pipefail", *JOB_PREAMBLE, "export OMP_NUM_THREADS=1", _join(words)]
    return "\n".join(head + body) + "\n"


def _train_options(loop: Improve, chain: ChainOptions, index: int) -> LaunchOptions:
    """The training job of round `index`: the tier's launch, with the run's own settings."""
    from pokeagent.train.config import TrainConfig

    settings = loop.train_settings() | round_train_options(loop.cfg)
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    given = {k: settings[k] for k in LAUNCH_FROM_RUN if settings.get(k) is not None}
    world = chain.nodes * chain.gpus_per_node
    batch = given.get("batch_size_per_gpu", LaunchOptions.batch_size_per_gpu)
    return LaunchOptions(
        chain.nodes,
        chain.gpus_per_node,
        time_limit_hours=chain.train_hours,
        global_batch=batch * world * max(1, settings.get("grad_accum") or 1),
        max_steps=loop.target_step(index),
        data_dir=_Shell("$DATA_DIR"),
        run_dir=str(loop.train_run.root),
        ds_config=chain.ds_config,
        partition=chain.partition,
        account=chain.account,
        qos=chain.qos,
        wiring=chain.wiring,
        train_options={
            name: settings[name]
            for name in passed_through()
            if name in settings
            and settings[name] is not None
            and settings[name] != defaults.get(name)
            and name not in ("run_dir", "data_dir", "time_limit_hours", "eval_battles")
        },
        **given,
    )


def round_train_options(cfg: ImproveConfig) -> dict:
    """`--train-args` as TrainConfig fields: what every round's training adds to the run's own
    settings (the local loop hands the same words to `pokeagent train`)."""
    from pokeagent.options import given
    from pokeagent.train.__main__ import build_parser as train_parser
    from pokeagent.train.config import TrainConfig

    return given(TrainConfig, train_parser().parse_args(shlex.split(cfg.train_args)))


def rounds_to_chain(loop: Improve, chain: ChainOptions) -> list[int]:
    """The rounds of this submission: from the first one not done, --submit-rounds of them."""
    todo = [i for i in range(1, loop.cfg.rounds + 1) if not loop.round_done(i)]
    return todo[: chain.submit_rounds] if chain.submit_rounds else todo


def render_chain(cfg: ImproveConfig, chain: ChainOptions, command: str) -> Chain:
    """Every job script of the chain and the submit.sh that submits them in order."""
    loop = Improve(cfg, progress=False)
    zero_done = loop.round_done(0)
    if cfg.start is None and not zero_done:
        raise LaunchError(
            "the chain starts from a trained run: give --start (a run of launch/train.sh), or "
            "make round 0 first (pokeagent improve --rounds 0)"
        )
    folder = Path(cfg.out) / "slurm"
    rounds = rounds_to_chain(loop, chain)
    if not rounds:
        raise LaunchError(f"{cfg.out}: rounds 1-{cfg.rounds} are done; raise --rounds for more")
    result = Chain(folder, rounds)
    lines = [
        "#!/bin/bash",
        f"# pokeagent improve on SLURM: rounds {rounds[0]}-{rounds[-1]} of {cfg.out} as job chains.",
        f"# Generated by: {command}",
        "# Each job waits for the one before; a failed job cancels those after it",
        "# (--kill-on-invalid-dep): fix, then run this again (done rounds are skipped).",
        "set -euo pipefail",
        f"cd {shlex.quote(str(Path.cwd()))}",
        f"S={shlex.quote(str(folder))}",
        'submit() { sbatch --parsable --kill-on-invalid-dep=yes "$@" | cut -d";" -f1; }',
        'AFTER=""',
    ]
    if not zero_done:
        name = "round-000-zero.sbatch"
        result.scripts[name] = _stage_job(
            cfg, chain, command, 0, "zero", "the --start agent adopted and evaluated"
        )
        lines += [
            f"ZERO=$(submit $S/{name})",
            'echo "round 0: $ZERO"',
            'AFTER="--dependency=afterok:$ZERO"',
        ]
    for index in rounds:
        chunks = len(loop.chunks(index))
        prefix = f"round-{index:03d}"
        data_dir = loop.round_dir(index) / "data-dir.txt"
        result.scripts[f"{prefix}-generate.sbatch"] = _stage_job(
            cfg,
            chain,
            command,
            index,
            "generate",
            f"{cfg.battles} battles in {chunks} chunks, one array task each",
            array=chunks,
        )
        result.scripts[f"{prefix}-pack.sbatch"] = _stage_job(
            cfg, chain, command, index, "pack", "its battles packed, the mixture written"
        )
        result.scripts[f"{prefix}-train.sbatch"] = render_sbatch(
            _train_options(loop, chain, index),
            f"{command} (round {index}: to step {loop.target_step(index)})",
            prelude=(
                "# The round's mixture (replays + every round's shards), written by its pack job.",
                f'DATA_DIR="$(cat {shlex.quote(str(data_dir))})" || exit 1',
            ),
        )
        result.scripts[f"{prefix}-finish.sbatch"] = _stage_job(
            cfg, chain, command, index, "finish", "its agent kept, evaluated, the report"
        )
        lines += [
            f"GEN=$(submit $AFTER $S/{prefix}-generate.sbatch)",
            f"PACK=$(submit --dependency=afterok:$GEN $S/{prefix}-pack.sbatch)",
            f"TRAIN=$(submit --dependency=afterok:$PACK $S/{prefix}-train.sbatch)",
            f"FINISH=$(submit --dependency=afterok:$TRAIN $S/{prefix}-finish.sbatch)",
            f'echo "round {index}: generate $GEN, pack $PACK, train $TRAIN, finish $FINISH"',
            'AFTER="--dependency=afterok:$FINISH"',
        ]
    result.submit = "\n".join(lines) + "\n"
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch/improve.sh",
        description="Submit the rounds of `pokeagent improve` to SLURM as chains of jobs.",
        allow_abbrev=False,
    )
    add_options(
        parser.add_argument_group("the loop (pokeagent improve)"), ImproveConfig, skip=STAGE_FIELDS
    )
    add_options(parser.add_argument_group("the jobs"), ChainOptions)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    command = "launch/improve.sh " + " ".join(shlex.quote(a) for a in argv)
    try:
        cfg = config_from(ImproveConfig, args)
        chain = config_from(ChainOptions, args)
        result = render_chain(cfg, chain, command)
    except (LaunchError, ValueError) as error:
        print(f"launch/improve.sh: error: {error}", file=sys.stderr)
        return 2
    if chain.dry_run:
        for name, text in result.scripts.items():
            print(f"# ---- {result.folder / name}")
            print(text, end="")
        print(f"# ---- {result.folder / 'submit.sh'}")
        print(result.submit, end="")
        return 0
    if shutil.which("sbatch") is None:
        print(
            "launch/improve.sh: error: no sbatch here: run the same loop on this machine with "
            "`pokeagent improve` (same options), or see the jobs with --dry-run",
            file=sys.stderr,
        )
        return 2
    result.folder.mkdir(parents=True, exist_ok=True)
    # SLURM opens a job's --output before the job runs: the training job's log folder too.
    (Path(cfg.out) / "train").mkdir(parents=True, exist_ok=True)
    for name, text in result.scripts.items():
        (result.folder / name).write_text(text)
    submit = result.folder / "submit.sh"
    submit.write_text(result.submit)
    submit.chmod(0o755)
    return subprocess.run(["bash", str(submit)]).returncode
