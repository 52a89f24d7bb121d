"""`launch/train.sh NODES GPUS_PER_NODE [HOURS] [BATCH_PER_GPU] [options]`: submit, or run here.

    launch/train.sh 1 4 6                         # tier 1x4: 4 GPUs, global batch 1024, 6 h, requeued until done
    launch/train.sh 8 4 12 --dry-run              # print the sbatch script and the launch command only
    launch/train.sh 1 1 1 --test-mode --mock-data # where there is no SLURM: a local smoke run

With `sbatch` on PATH the job is submitted; without it the run starts on this machine (torchrun
with one process per GPU, or a single process). One template renders every tier's sbatch
script: `#SBATCH` resources sized from the preset and the loader workers (the script says why),
`--signal=USR1@<margin>` so the trainer checkpoints and exits 0 before the time limit,
`--requeue` plus a requeue when the time ran out (the trainer resumes from `checkpoints/latest`),
the log at `RUN_DIR/slurm-JOBID.out`, TensorBoard in `RUN_DIR/tb`.

Three wirings (`--wiring`):
- `srun` (default, no ssh between nodes needed): one launcher per node through `srun`, torchrun
  with a c10d rendezvous on the first node. SLURM signals every process of the step; the
  per-node launcher ignores USR1 so that only the ranks act on it (they save and exit 0, and the
  launcher then exits 0 on its own).
- `srun-deepspeed`: the same with `deepspeed --no_ssh --node_rank=$SLURM_NODEID` per node.
- `deepspeed`: `deepspeed --hostfile` from the batch shell (pdsh over ssh). The signal goes to the
  batch shell (`B:`), which forwards it to the ranks on every node.

Options fail before anything starts when unknown, out of range or contradictory, naming the
option (`LaunchError`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pokeagent.launch.resources import CPUS_PER_RANK, NodeRequest, node_request
from pokeagent.options import add_options
from pokeagent.options import given as given_options
from pokeagent.train.ds_config import cuda_available

REPO = Path(__file__).resolve().parents[2]
TIERS_DIR = REPO / "launch" / "tiers"


class LaunchError(ValueError):
    """An option that is unknown, out of range or contradicts another; the message names it."""


@dataclass(frozen=True)
class Tier:
    nodes: int
    gpus_per_node: int
    ds_config: str
    """Why this one: see the comment in TIERS."""

    @property
    def name(self) -> str:
        return f"{self.nodes}x{self.gpus_per_node}"


TIERS = {
    t.name: t
    for t in (
        # ZeRO-2 (gradients + optimizer states sharded) leaves the most room for 256 windows/GPU
        # on few GPUs; at 32 GPUs the optimizer shard of a 200M model is ~75 MB, and ZeRO-1 spares
        # the gradient partitioning's bookkeeping.
        Tier(1, 4, "zero2_bf16"),
        Tier(2, 4, "zero2_bf16"),
        Tier(4, 4, "zero2_bf16"),
        Tier(8, 4, "zero1_bf16"),
    )
}
DEFAULT_DS_CONFIG = "zero2_bf16"
DEFAULT_WORKERS = 2
WIRINGS = ("srun", "srun-deepspeed", "deepspeed")
SLURM_ONLY = ("memory", "cpus_per_node", "exclusive", "partition", "account", "qos")
"""Options that mean something only to SLURM: refused for a run on this machine."""


@dataclass
class LaunchOptions:
    """Everything `launch/train.sh` takes; the run options pass through to `pokeagent train`.
    Each field is an option (`build_parser`); one that is also a TrainConfig field takes its help
    from there unless it states its own, and its default here (a tier's run)."""

    nodes: int
    gpus_per_node: int
    time_limit_hours: float = 6.0
    """SLURM wall time of each job (and the trainer's own stop, minus the margin); same as HOURS."""
    batch_size_per_gpu: int = 256
    global_batch: int | None = None
    """If given: must equal batch x GPUs x grad accumulation; sets the accumulation."""
    max_steps: int = 200_000
    learning_rate: float = 3e-4
    checkpoint_minutes: float = 15.0
    eval_every: int | None = None
    data_dir: str = "shards"
    max_samples: int | None = None
    min_rating: int | None = None
    workers_per_gpu: int | None = None
    """Loader workers per GPU, 1-8; default: the partition's cores per GPU minus 2 (sinfo), kept
    in 2-4, else 2."""
    model: str = "large"
    ds_config: str | None = None
    """DeepSpeed JSON in ds_configs/ or a path; default: the tier's (TIERS), zero2_bf16 for other
    shapes, cpu for a local run without CUDA."""
    run_dir: str | None = None
    """Checkpoints, logs and TensorBoard; default: runs/<model>-<N>gpu."""
    memory: int | None = None
    """GB of host memory per node (default: estimated, see resources.py)."""
    cpus_per_node: int | None = None
    """CPU cores per node (default: estimated, see resources.py)."""
    exclusive: bool = False
    """Whole nodes."""
    partition: str | None = None
    """SLURM partition; default: one with GPUs, detected with sinfo."""
    account: str | None = None
    """SLURM account; default: detected with sacctmgr."""
    qos: str | None = None
    """SLURM QOS; default: the account's default."""
    wiring: str = "srun"
    """srun: srun + torchrun per node; srun-deepspeed: srun + deepspeed --no_ssh per node;
    deepspeed: deepspeed --hostfile over pdsh/ssh."""
    stop_margin_minutes: float = 10.0
    """SIGUSR1 this long before the time limit: the last checkpoint must fit in it."""
    max_requeues: int = 20
    """Requeues when the time runs out."""
    debug: bool = False
    """Verbose logs: every step, NCCL_DEBUG=INFO, TORCH_DISTRIBUTED_DEBUG=DETAIL."""
    resume: bool = False
    """Require a checkpoint in the run directory."""
    test_mode: bool = False
    """A few steps of the tiny model."""
    mock_data: bool = False
    """Shards packed on the fly from simulator battles."""
    dry_run: bool = False
    """Print the sbatch script and launch command, run nothing."""
    no_validate: bool = False
    """Skip the job's pre-flight `pokeagent validate` on its first node."""
    seed: int | None = None
    train_options: dict = field(default_factory=dict)
    """Every other TrainConfig option given (`--objective binary`, `--window 128`...), passed to
    `pokeagent train` as it is (`PASSED_THROUGH`)."""

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def workers(self) -> int:
        return self.workers_per_gpu if self.workers_per_gpu is not None else DEFAULT_WORKERS

    @property
    def grad_accum(self) -> int:
        if self.global_batch is None:
            return 1
        return self.global_batch // (self.batch_size_per_gpu * self.world_size)

    @property
    def tier(self) -> str:
        return f"{self.nodes}x{self.gpus_per_node}"

    @property
    def resolved_run_dir(self) -> str:
        return self.run_dir or f"runs/{self.model}-{self.world_size}gpu"

    @property
    def resolved_ds_config(self) -> str:
        if self.ds_config:
            return self.ds_config
        tier = TIERS.get(self.tier)
        return tier.ds_config if tier else DEFAULT_DS_CONFIG


# ---------------------------------------------------------------------------------- options
_TEST_MODE = {"model": "tiny", "batch_size_per_gpu": 8, "max_steps": 20}
"""What --test-mode changes in the launcher's defaults (as `pokeagent train --test-mode` does)."""


def passed_through() -> tuple[str, ...]:
    """TrainConfig fields the launcher hands to `pokeagent train` untouched: all but its own
    (stated above with a tier's defaults) and those it derives (the gradient accumulation from
    --global-batch, the trainer's time margin from --stop-margin-minutes)."""
    from pokeagent.train.config import TrainConfig

    own = {f.name for f in fields(LaunchOptions)} | {"grad_accum", "time_margin_minutes"}
    return tuple(f.name for f in fields(TrainConfig) if f.name not in own)


def build_parser() -> argparse.ArgumentParser:
    from pokeagent.train.config import TrainConfig

    parser = argparse.ArgumentParser(
        prog="launch/train.sh",
        description="Submit a training run to SLURM, or run it here where there is no SLURM.",
        allow_abbrev=False,
    )
    parser.add_argument("nodes", type=int, help="nodes")
    parser.add_argument("gpus_per_node", type=int, help="GPUs per node")
    parser.add_argument("hours", type=float, nargs="?", help="wall time per job (default 6)")
    parser.add_argument("batch", type=int, nargs="?", help="windows per GPU (default 256)")
    add_options(
        parser,
        LaunchOptions,
        skip=("nodes", "gpus_per_node", "train_options"),
        help_from=(TrainConfig,),
    )
    trainer = parser.add_argument_group("more `pokeagent train` options, passed through")
    own = {f.name for f in fields(TrainConfig)} - set(passed_through())
    add_options(trainer, TrainConfig, skip=tuple(own))
    parser.add_argument("--min-elo", dest="min_rating", type=int, help=argparse.SUPPRESS)
    return parser


def _same(args: argparse.Namespace, positional: str, option: str, flag: str, name: str):
    a, b = getattr(args, positional), getattr(args, option)
    if a is not None and b is not None and a != b:
        raise LaunchError(f"{name} {a} and {flag} {b} disagree: give one")
    return a if a is not None else b


def options_from_args(argv: list[str]) -> LaunchOptions:
    """Parse and check; raises LaunchError (or SystemExit from argparse for unknown options)."""
    args = build_parser().parse_args(argv)
    given = given_options(LaunchOptions, args)
    given["time_limit_hours"] = _same(
        args, "hours", "time_limit_hours", "--time-limit-hours", "HOURS"
    )
    given["batch_size_per_gpu"] = _same(
        args, "batch", "batch_size_per_gpu", "--batch-size-per-gpu", "BATCH_PER_GPU"
    )
    given = {k: v for k, v in given.items() if v is not None}
    given["train_options"] = {
        name: getattr(args, name) for name in passed_through() if getattr(args, name) is not None
    }
    if args.test_mode:
        given = _TEST_MODE | given
    opts = LaunchOptions(**given)
    check(opts)
    return opts


def check(opts: LaunchOptions) -> None:
    """Every range and contradiction, each error naming its option."""
    for flag, value, least in (  # None: not given
        ("NODES", opts.nodes, 1),
        ("GPUS_PER_NODE", opts.gpus_per_node, 1),
        ("--batch-size-per-gpu", opts.batch_size_per_gpu, 1),
        ("--max-steps", opts.max_steps, 1),
        ("--eval-every", opts.eval_every, 1),
        ("--max-samples", opts.max_samples, 1),
        ("--memory", opts.memory, 1),
        ("--cpus-per-node", opts.cpus_per_node, 1),
        ("--min-rating", opts.min_rating, 0),
        ("--max-requeues", opts.max_requeues, 0),
    ):
        if value is not None and value < least:
            raise LaunchError(f"{flag} must be >= {least}, got {value}")
    for flag, value in (
        ("--time-limit-hours", opts.time_limit_hours),
        ("--learning-rate", opts.learning_rate),
        ("--checkpoint-minutes", opts.checkpoint_minutes),
        ("--stop-margin-minutes", opts.stop_margin_minutes),
    ):
        if not value > 0 or not math.isfinite(value):
            raise LaunchError(f"{flag} must be > 0, got {value}")
    if opts.wiring not in WIRINGS:
        raise LaunchError(f"--wiring {opts.wiring}: choose from {', '.join(WIRINGS)}")
    if opts.workers_per_gpu is not None and not 1 <= opts.workers_per_gpu <= 8:
        raise LaunchError(
            f"--workers-per-gpu must be 1-8 (2-4 is right), got {opts.workers_per_gpu}"
        )
    if opts.stop_margin_minutes >= opts.time_limit_hours * 60:
        raise LaunchError(
            f"--stop-margin-minutes {opts.stop_margin_minutes} leaves no training time in "
            f"--time-limit-hours {opts.time_limit_hours}"
        )
    if opts.global_batch is not None:
        per_step = opts.batch_size_per_gpu * opts.world_size
        if opts.global_batch % per_step:
            raise LaunchError(
                f"--global-batch {opts.global_batch} is not a multiple of --batch-size-per-gpu "
                f"{opts.batch_size_per_gpu} x {opts.world_size} GPUs = {per_step}"
            )
    if opts.resume and opts.mock_data:
        raise LaunchError("--resume and --mock-data contradict: mock shards are for a fresh run")
    from pokeagent.model.config import PRESETS

    if opts.model not in PRESETS:
        raise LaunchError(f"--model {opts.model!r}: choose from {sorted(PRESETS)}")
    from pokeagent.data.loader import parse_mixture

    folders = [d for d, _ in parse_mixture(opts.data_dir) or [(opts.data_dir, 1.0)]]
    missing = [d for d in folders if not Path(d).is_dir()]
    if not opts.mock_data and not opts.dry_run and missing:
        raise LaunchError(
            f"--data-dir {', '.join(missing)}: no such folder (pack shards with `pokeagent pack`, "
            "or give --mock-data for a smoke run)"
        )


def train_config(opts: LaunchOptions):
    """The run config every rank will hold: `train_args` read by the trainer's own parser."""
    from pokeagent.train.__main__ import build_parser, config_from_args

    return config_from_args(build_parser().parse_args(train_args(opts)))


def resolved(opts: LaunchOptions, fp16_supported: bool = True) -> dict:
    """The DeepSpeed config the trainer will build (batch arithmetic and JSON checked here), on
    the cluster's GPUs: fp16 and bf16 are taken as supported unless told otherwise."""
    from pokeagent.train.ds_config import ConfigError, resolve_run

    try:
        cfg = train_config(opts)
    except ValueError as error:  # the run config's own checks name the option
        raise LaunchError(str(error)) from error
    try:
        run = resolve_run(cfg, opts.world_size, precision=(fp16_supported, True))
    except ConfigError as error:
        raise LaunchError(f"--ds-config: {error}") from error
    return {"global_batch": run.global_batch, "peak_lr": run.peak_lr, "deepspeed": run.deepspeed}


# ---------------------------------------------------------------------------------- commands
def train_args(opts: LaunchOptions, ds_config: str | None = None) -> list[str]:
    """`pokeagent train` options for this launch (what every rank runs)."""
    values = {
        "run-dir": opts.resolved_run_dir,
        "data-dir": opts.data_dir,
        "model": opts.model,
        "ds-config": ds_config or opts.resolved_ds_config,
        "batch-size-per-gpu": opts.batch_size_per_gpu,
        "grad-accum": opts.grad_accum,
        "max-steps": opts.max_steps,
        "learning-rate": opts.learning_rate,
        "checkpoint-minutes": opts.checkpoint_minutes,
        "time-limit-hours": opts.time_limit_hours,
        "time-margin-minutes": opts.stop_margin_minutes,
        "workers-per-gpu": opts.workers,
        "seed": opts.seed,
        "eval-every": opts.eval_every,
        "max-samples": opts.max_samples,
        "min-rating": opts.min_rating,
    }
    out = [item for k, v in values.items() if v is not None for item in (f"--{k}", _word(v))]
    for flag in ("debug", "resume", "test_mode", "mock_data"):
        if getattr(opts, flag):
            out.append("--" + flag.replace("_", "-"))
    for name, value in opts.train_options.items():
        flag = "--" + name.replace("_", "-")
        out += [flag] if value is True else [flag, str(value)]
    return out


class _Shell(str):
    """A word of the template that the script's shell expands (`"--x=$VAR"`), unlike user values."""


def _word(value) -> str:
    """An option's value as a shell word: a `_Shell` stays one (its `$VAR` expands)."""
    return value if isinstance(value, str) else str(value)


def validate_args(opts: LaunchOptions) -> list[str]:
    """`pokeagent validate` options that check what this launch will run."""
    values = {
        "data-dir": opts.data_dir,
        "run-dir": opts.resolved_run_dir,
        "model": opts.model,
        "ds-config": opts.resolved_ds_config,
        "batch-size-per-gpu": opts.batch_size_per_gpu,
        "grad-accum": opts.grad_accum,
        "nodes": opts.nodes,
        "gpus-per-node": opts.gpus_per_node,
    }
    return [item for k, v in values.items() for item in (f"--{k}", _word(v))]


def _join(words: list[str]) -> str:
    return " ".join(f'"{w}"' if isinstance(w, _Shell) else shlex.quote(w) for w in words)


def node_launch_words(opts: LaunchOptions) -> list[str]:
    """The per-node command of the srun wiring (shell words; `$VAR` ones expand in the script)."""
    if opts.wiring == "srun":
        return [
            "torchrun",
            f"--nnodes={opts.nodes}",
            f"--nproc_per_node={opts.gpus_per_node}",
            _Shell("--rdzv_id=$SLURM_JOB_ID"),
            "--rdzv_backend=c10d",
            _Shell("--rdzv_endpoint=$MASTER_ADDR:$MASTER_PORT"),
            "-m",
            "pokeagent.train",
            *train_args(opts),
        ]
    ssh = [] if opts.wiring == "srun-deepspeed" else ["deepspeed"]
    return [
        *ssh,
        _Shell("--hostfile=$HOSTFILE"),
        _Shell("--master_addr=$MASTER_ADDR"),
        _Shell("--master_port=$MASTER_PORT"),
        "--module",
        "pokeagent.train",
        *train_args(opts),
    ]


def local_command(opts: LaunchOptions, cuda: bool) -> list[str]:
    """Where there is no SLURM: torchrun with one process per GPU, or one process."""
    ds = opts.ds_config or (opts.resolved_ds_config if cuda else "cpu")
    args = train_args(opts, ds_config=ds)
    if opts.gpus_per_node == 1:
        return [sys.executable, "-m", "pokeagent.train", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={opts.gpus_per_node}",
        "-m",
        "pokeagent.train",
        *args,
    ]


# ---------------------------------------------------------------------------------- cluster
def _query(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def detect_cluster(opts: LaunchOptions) -> list[str]:
    """Fill partition/account/QOS from sinfo/sacctmgr where missing; check given ones exist.

    Returns notes for the dry-run; raises LaunchError for a partition or account that the
    cluster does not have."""
    notes = []
    user = os.environ.get("USER", "")
    partitions = _query(["sinfo", "-h", "-o", "%P %G"])
    if partitions is None:
        notes.append("partition: sinfo not available; SLURM's default partition applies")
    else:
        rows = [line.split() for line in partitions.splitlines() if line.strip()]
        names = {row[0].rstrip("*") for row in rows}
        if opts.partition and opts.partition not in names:
            raise LaunchError(f"--partition {opts.partition}: not one of {sorted(names)} (sinfo)")
        if not opts.partition:
            with_gpus = [r[0] for r in rows if len(r) > 1 and "gpu" in r[1].lower()]
            default = [n for n in with_gpus if n.endswith("*")] or with_gpus
            if default:
                opts.partition = default[0].rstrip("*")
                notes.append(f"partition: {opts.partition} (detected: has GPUs per sinfo)")
            else:
                notes.append("partition: sinfo lists none with GPUs; SLURM's default applies")
        if opts.workers_per_gpu is None and opts.partition:
            cores = _query(["sinfo", "-h", "-p", opts.partition, "-o", "%c"])
            counts = [int(c) for c in re.findall(r"\d+", cores or "")]
            if counts:
                per_gpu = min(counts) // opts.gpus_per_node - CPUS_PER_RANK
                opts.workers_per_gpu = max(2, min(4, per_gpu))
                notes.append(
                    f"workers per GPU: {opts.workers_per_gpu} ({min(counts)} cores per node in "
                    f"{opts.partition} / {opts.gpus_per_node} GPUs - {CPUS_PER_RANK}, kept in 2-4)"
                )
    accounts = _query(
        ["sacctmgr", "-nP", "show", "assoc", f"user={user}", "format=account,qos,defaultqos"]
    )
    if accounts is None:
        notes.append("account/QOS: sacctmgr not available; SLURM's defaults apply")
        return notes
    rows = [line.split("|") for line in accounts.splitlines() if line.strip()]
    names = [row[0] for row in rows if row and row[0]]
    if opts.account and opts.account not in names:
        raise LaunchError(
            f"--account {opts.account}: {user} has only {sorted(set(names))} (sacctmgr)"
        )
    if not opts.account and names:
        default = _query(["sacctmgr", "-nP", "show", "user", user, "format=defaultaccount"])
        opts.account = (default or "").strip() or names[0]
        notes.append(f"account: {opts.account} (detected with sacctmgr)")
    row = next((r for r in rows if r[0] == opts.account), None)
    if row and len(row) >= 3:
        allowed = [q for q in row[1].split(",") if q]
        if opts.qos and allowed and opts.qos not in allowed:
            raise LaunchError(
                f"--qos {opts.qos}: account {opts.account} allows {allowed} (sacctmgr)"
            )
        if not opts.qos and row[2]:
            opts.qos = row[2]
            notes.append(f"qos: {opts.qos} (the account's default, sacctmgr)")
    return notes


# ---------------------------------------------------------------------------------- sbatch
def _time(hours: float) -> str:
    minutes = round(hours * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def request(opts: LaunchOptions) -> NodeRequest:
    from pokeagent.train.ds_config import load_ds_json

    ds = load_ds_json(opts.resolved_ds_config)
    offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device") == "cpu"
    return node_request(
        opts.model,
        opts.gpus_per_node,
        opts.workers,
        opts.world_size,
        offload,
        cpus=opts.cpus_per_node,
        memory_gb=opts.memory,
    )


def sbatch_head(
    about: list[str],
    *,
    job_name: str,
    nodes: int,
    cpus: int,
    memory_gb: int,
    hours: float,
    output: str,
    gpus_per_node: int = 0,
    signal: str | None = None,
    array: str | None = None,
    partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    exclusive: bool = False,
    why: tuple[str, ...] = (),
) -> list[str]:
    """The head every pokeagent job script shares (the tiers and a loop's chain): what the job is,
    how it was generated, its #SBATCH lines. A GPU job (`signal`) is requeued when its time runs
    out; a CPU job of a chain (`array` for a battle array) is not: a rerun redoes what is missing."""
    head = [
        "#!/bin/bash",
        *[f"# {line}" for line in about],
        "# (pokeagent/launch/slurm.py renders it; change the options there, not here.)",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if gpus_per_node:
        head.append(f"#SBATCH --gpus-per-node={gpus_per_node}")
    head += [
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --mem={memory_gb}G",
        f"#SBATCH --time={_time(hours)}",
    ]
    if array is not None:
        head.append(f"#SBATCH --array={array}")
    if signal is not None:
        head += [f"#SBATCH --signal={signal}", "#SBATCH --requeue"]
    head += ["#SBATCH --open-mode=append", f"#SBATCH --output={output}"]
    for key, value in (("partition", partition), ("account", account), ("qos", qos)):
        if value:
            head.append(f"#SBATCH --{key}={value}")
    if exclusive:
        head.append("#SBATCH --exclusive")
    return head + [f"# {line}" for line in why]


JOB_PREAMBLE = (
    'cd "${SLURM_SUBMIT_DIR:-.}"',
    "if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi",
)
"""Every job's first lines: where it was submitted from, the project's virtualenv."""


def render_sbatch(opts: LaunchOptions, command: str, prelude: tuple[str, ...] = ()) -> str:
    """The sbatch script for this launch (one template for every tier and wiring). `prelude`:
    shell lines run before the pre-flight (a loop's chain reads its round's --data-dir there)."""
    need = request(opts)
    facts = resolved(opts)
    run_dir = opts.resolved_run_dir
    margin_s = int(opts.stop_margin_minutes * 60)
    limit_s = round(opts.time_limit_hours * 60) * 60
    head = sbatch_head(
        [
            f"pokeagent tier {opts.tier}: {opts.nodes} node(s) x {opts.gpus_per_node} GPUs = "
            f"{opts.world_size} ranks, global batch {facts['global_batch']} "
            f"({opts.batch_size_per_gpu}/GPU x {opts.grad_accum} accumulation), "
            f"peak lr {facts['peak_lr']:.3g}, {opts.resolved_ds_config}, {opts.wiring} wiring.",
            f"Generated by: {command}",
        ],
        job_name=f"pokeagent-{opts.model}-{opts.tier}",
        nodes=opts.nodes,
        gpus_per_node=opts.gpus_per_node,
        cpus=need.cpus,
        memory_gb=need.memory_gb,
        hours=opts.time_limit_hours,
        signal=f"{'B:' if opts.wiring == 'deepspeed' else ''}USR1@{margin_s}",
        output=f"{run_dir}/slurm-%j.out",
        partition=opts.partition,
        account=opts.account,
        qos=opts.qos,
        exclusive=opts.exclusive,
        why=need.why,
    )
    env = ["export OMP_NUM_THREADS=1"]
    if opts.debug:
        env += ["export NCCL_DEBUG=INFO", "export TORCH_DISTRIBUTED_DEBUG=DETAIL"]
    body = [
        "",
        "set -uo pipefail",
        *JOB_PREAMBLE,
        f"RUN_DIR={shlex.quote(run_dir)}",
        'mkdir -p "$RUN_DIR"',
        *env,
        *prelude,
        'MASTER_ADDR="$(python -m pokeagent.launch hostfile --first)" || exit 1',
        "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))",
        "export MASTER_ADDR MASTER_PORT",
        'echo "job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST; '
        'master $MASTER_ADDR:$MASTER_PORT"',
        'echo "watch: tensorboard --logdir $RUN_DIR/tb ; tail -f $RUN_DIR/slurm-$SLURM_JOB_ID.out"',
    ]
    if not opts.no_validate and not opts.mock_data:
        body += [
            "# Pre-flight on the first node, before any GPU hour is spent (--no-validate skips it).",
            _join(["python", "-m", "pokeagent", "validate", *validate_args(opts)]) + " || exit 1",
        ]
    launch = _join(node_launch_words(opts))
    if opts.wiring != "srun":
        body += [
            'HOSTFILE="$RUN_DIR/hostfile-$SLURM_JOB_ID"',
            'python -m pokeagent.launch hostfile > "$HOSTFILE" || exit 1',
        ]
    if opts.wiring in ("srun", "srun-deepspeed"):
        per_node = (
            'exec "$@"'
            if opts.wiring == "srun"
            else 'exec deepspeed --no_ssh --node_rank="$SLURM_NODEID" "$@"'
        )
        body += [
            "# One launcher per node; it ignores USR1 (SLURM signals every process of the step) so",
            "# that the ranks alone act on it: they finish the step, save, and exit 0.",
            f"srun --ntasks-per-node=1 --cpus-per-task={need.cpus} --kill-on-bad-exit=1 \\",
            f"  bash -c 'trap \"\" USR1; {per_node}' pokeagent-node \\",
            f"  {launch}",
            "STATUS=$?",
        ]
    else:
        body += [
            'HOSTS="$(python -m pokeagent.launch hostfile --names)"',
            "# SLURM signals this shell (B:USR1); pass it on to the ranks on every node.",
            "forward_stop() {",
            '  pdsh -R ssh -w "$HOSTS" "pkill -USR1 -u $USER -f \'pokeagent[.]train --local_rank=.*--run-dir $RUN_DIR\'"',
            "}",
            "trap forward_stop USR1",
            f"{launch} &",
            "LAUNCHER=$!",
            "# wait returns early when the trap runs: wait again until the launcher has ended.",
            'STATUS=0; wait "$LAUNCHER" || STATUS=$?',
            'while kill -0 "$LAUNCHER" 2>/dev/null; do STATUS=0; wait "$LAUNCHER" || STATUS=$?; done',
        ]
    body += [
        "# Out of time (USR1 came, the trainer saved): requeue; the trainer resumes from",
        "# checkpoints/latest. A run that reached --max-steps is not requeued.",
        f'if [ "$STATUS" -eq 0 ] && [ "$SECONDS" -ge {max(0, limit_s - margin_s - 300)} ] \\',
        f'   && [ "${{SLURM_RESTART_COUNT:-0}}" -lt {opts.max_requeues} ]; then',
        '  LAST=$(sed "s/^step0*//" "$RUN_DIR/checkpoints/latest" 2>/dev/null || echo 0)',
        f'  if [ "${{LAST:-0}}" -lt {opts.max_steps} ]; then',
        '    echo "requeueing at step $LAST"; scontrol requeue "$SLURM_JOB_ID"',
        "  fi",
        "fi",
        'exit "$STATUS"',
    ]
    return "\n".join(head + body) + "\n"


def render_tier(name: str) -> str:
    """The checked-in launch/tiers/<name>.sbatch: the tier with every default."""
    tier = TIERS[name]
    opts = LaunchOptions(tier.nodes, tier.gpus_per_node, dry_run=True)
    return render_sbatch(
        opts,
        f"launch/train.sh {tier.nodes} {tier.gpus_per_node} (defaults); regenerate: "
        "python -m pokeagent.launch render-tiers",
    )


def write_tiers(out: Path = TIERS_DIR) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TIERS:
        path = out / f"{name}.sbatch"
        path.write_text(render_tier(name))
        written.append(path)
    return written


# ---------------------------------------------------------------------------------- main
def main(argv: list[str]) -> int:
    try:
        opts = options_from_args(argv)
        command = "launch/train.sh " + " ".join(shlex.quote(a) for a in argv)
        slurm = shutil.which("sbatch") is not None
        if not slurm and not opts.dry_run:
            for name in SLURM_ONLY:
                if getattr(opts, name):
                    raise LaunchError(
                        f"--{name.replace('_', '-')} is for SLURM, and there is no sbatch here: "
                        "drop it to run on this machine, or use --dry-run to see the sbatch script"
                    )
        notes = detect_cluster(opts) if slurm or opts.dry_run else []
        facts = resolved(opts)
        script = render_sbatch(opts, command)
    except LaunchError as error:
        print(f"launch/train.sh: error: {error}", file=sys.stderr)
        return 2
    run_dir = Path(opts.resolved_run_dir)
    summary = {
        "tier": opts.tier,
        "nodes": opts.nodes,
        "gpus_per_node": opts.gpus_per_node,
        "world_size": opts.world_size,
        "global_batch": facts["global_batch"],
        "grad_accum": opts.grad_accum,
        "peak_lr": facts["peak_lr"],
        "ds_config": opts.resolved_ds_config,
        "workers_per_gpu": opts.workers,
        "run_dir": str(run_dir),
        "time_limit": _time(opts.time_limit_hours),
        "signal_margin_s": int(opts.stop_margin_minutes * 60),
    }
    if opts.dry_run:
        print("# ---- plan")
        print(json.dumps(summary, indent=2))
        for note in notes:
            print(f"# {note}")
        print("# ---- sbatch script")
        print(script, end="")
        print("# ---- launch command")
        if slurm:
            print(f"cd {shlex.quote(os.getcwd())} && sbatch --parsable {run_dir}/job.sbatch")
        elif opts.nodes > 1:
            print(
                f"# no sbatch here: {opts.nodes} nodes need SLURM; `sbatch` the script above there"
            )
        else:
            print(
                "# (no sbatch here: on a SLURM cluster, `sbatch` the script above; here it runs as)"
            )
            print(_join(local_command(opts, cuda=cuda_available())))
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "launch.json").write_text(
        json.dumps({"command": command, "options": asdict(opts), **summary}, indent=2)
    )
    if slurm:
        path = run_dir / "job.sbatch"
        path.write_text(script)
        out = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
        if out.returncode:
            print(f"launch/train.sh: sbatch failed: {out.stderr.strip()}", file=sys.stderr)
            return out.returncode
        job = out.stdout.strip().split(";")[0]
        print(f"submitted job {job} ({opts.tier}, global batch {facts['global_batch']})")
        print(f"  log:         {run_dir}/slurm-{job}.out")
        print(f"  tensorboard: tensorboard --logdir {run_dir}/tb")
        print(f"  queue:       squeue -j {job}")
        return 0
    if opts.nodes > 1:
        print(
            f"launch/train.sh: error: NODES {opts.nodes} needs SLURM (no sbatch on PATH); "
            "here run 1 node, or --dry-run to see the sbatch script",
            file=sys.stderr,
        )
        return 2
    cmd = local_command(opts, cuda=cuda_available())
    print("running here (no SLURM): " + _join(cmd), flush=True)
    started = time.monotonic()
    code = subprocess.run(cmd).returncode
    print(f"finished with exit code {code} after {time.monotonic() - started:.0f} s")
    return code
