"""`pokeagent validate [--comprehensive]`: pre-flight checks before spending GPU hours.

    pokeagent validate --data-dir /data/shards --model large --gpus-per-node 4 --nodes 2
    pokeagent validate --comprehensive ...   # also: read every shard, a collective, build the ops

A pass/fail table: torch, CUDA, NCCL, DeepSpeed and its ops, GPU memory against the preset and
batch, the data directory against its manifest.json, disk space for checkpoints, the nodes,
the Showdown install, the batch arithmetic of the DeepSpeed config. A check that cannot apply
here says `skip` and why (no GPU: no CUDA, NCCL or GPU memory checks); `warn` does not fail the
run. The exit status is 1 when any check fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from pokeagent.train.ds_config import cuda_available, local_ds_config

PASS, FAIL, SKIP, WARN = "pass", "fail", "skip", "warn"


@dataclass
class ValidateConfig:
    """What `pokeagent validate` checks: the run to come, and the machines it will run on."""

    data_dir: str = "shards"
    """A folder written by `pokeagent pack`."""
    run_dir: str = "runs"
    """Where checkpoints will go (its file system is the one checked for space)."""
    model: str = "large"
    """Model preset of the run (GPU memory, disk)."""
    ds_config: str | None = None
    """DeepSpeed config of the run; default: zero2_bf16 with CUDA, cpu without."""
    batch_size_per_gpu: int = 256
    """Trajectory windows per GPU per micro-step."""
    grad_accum: int = 1
    """Micro-steps per optimizer step."""
    window: int = 64
    """Decisions per trajectory window."""
    nodes: int = 1
    """Nodes of the run."""
    gpus_per_node: int = 1
    """GPUs (ranks) per node."""
    keep_last: int = 3
    """Checkpoints the run keeps (disk space)."""
    hosts: str | None = None
    """Hosts to reach (compact SLURM syntax allowed); default: the SLURM allocation's."""
    comprehensive: bool = False
    """Also read every shard, run a collective and build the DeepSpeed ops."""
    needs_showdown: bool = False
    """Fail (not warn) without Showdown: --mock-data and battle evaluation need it."""

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    def train_config(self):
        """The run config of the run checked: the fields it shares with TrainConfig (the others
        at the trainer's defaults), the DeepSpeed config resolved for this machine."""
        from pokeagent.train.config import TrainConfig

        shared = {f.name for f in fields(TrainConfig)} & {f.name for f in fields(self)}
        values = {name: getattr(self, name) for name in shared}
        return TrainConfig(**values | {"ds_config": _ds_name(self)})


@dataclass
class Check:
    name: str
    status: str
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"{'check':<{width}}  status  detail"]
        lines += [f"{c.name:<{width}}  {c.status:<6}  {c.detail}" for c in self.checks]
        counts = {s: sum(c.status == s for c in self.checks) for s in (PASS, WARN, SKIP, FAIL)}
        lines.append(
            f"{counts[PASS]} passed, {counts[WARN]} warnings, {counts[SKIP]} skipped, "
            f"{counts[FAIL]} failed: {'ready' if self.ok else 'NOT ready'}"
        )
        return "\n".join(lines)


def _ds_name(cfg: ValidateConfig) -> str:
    return local_ds_config(cfg.ds_config)


# ---------------------------------------------------------------------------------- checks
def check_torch(cfg: ValidateConfig) -> Check:
    import torch

    return Check("torch", PASS, f"{torch.__version__}")


def check_cuda(cfg: ValidateConfig) -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check("cuda", SKIP, "no CUDA GPU on this machine (CPU runs use ds_configs/cpu.json)")
    count = torch.cuda.device_count()
    names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
    if count < cfg.gpus_per_node:
        return Check(
            "cuda", FAIL, f"{count} GPU(s) visible, --gpus-per-node {cfg.gpus_per_node} wanted"
        )
    return Check("cuda", PASS, f"CUDA {torch.version.cuda}, {count} x {', '.join(names)}")


def check_nccl(cfg: ValidateConfig) -> Check:
    import torch
    import torch.distributed as dist

    if not torch.cuda.is_available():
        return Check("nccl", SKIP, "no CUDA GPU: multi-GPU runs use NCCL, CPU runs gloo")
    if not dist.is_nccl_available():
        return Check("nccl", FAIL, "this torch build has no NCCL: install a CUDA build of torch")
    version = ".".join(str(v) for v in torch.cuda.nccl.version())
    if cfg.comprehensive:
        detail = _one_rank_all_reduce("nccl")
        if detail:
            return Check("nccl", FAIL, detail)
        return Check("nccl", PASS, f"NCCL {version}; a 1-rank all_reduce on the GPU worked")
    return Check("nccl", PASS, f"NCCL {version}")


def _one_rank_all_reduce(backend: str) -> str | None:
    """A world of one, one all_reduce; None when it worked, else what went wrong."""
    import torch
    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
        )
        device = "cuda" if backend == "nccl" else "cpu"
        value = torch.ones(4, device=device)
        dist.all_reduce(value)
        if value.sum().item() != 4:
            return f"{backend} all_reduce gave {value.tolist()}"
    except Exception as error:  # every failure of the collective is the finding
        return f"{backend} all_reduce failed: {error}"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return None


def check_collectives(cfg: ValidateConfig) -> Check:
    """Comprehensive, without CUDA: the gloo path the CPU runs take."""
    if cuda_available():
        return Check("gloo", SKIP, "CUDA runs communicate with NCCL (checked above)")
    detail = _one_rank_all_reduce("gloo")
    return Check("gloo", FAIL, detail) if detail else Check("gloo", PASS, "1-rank all_reduce")


def check_deepspeed(cfg: ValidateConfig) -> Check:
    try:
        import deepspeed
        from deepspeed.accelerator import get_accelerator
    except Exception as error:  # an import error names what is missing
        return Check("deepspeed", FAIL, f"cannot import deepspeed: {error}")
    from pokeagent.train.ds_config import load_ds_json

    ds = load_ds_json(_ds_name(cfg))
    accelerator = get_accelerator()
    params = ds.get("optimizer", {}).get("params", {})
    zero = ds.get("zero_optimization", {})
    ops = []
    if zero.get("offload_optimizer", {}).get("device") == "cpu":
        ops.append("CPUAdamBuilder")
    elif not params.get("torch_adam"):
        ops.append("FusedAdamBuilder")
    found = []
    for op in ops:
        builder = accelerator.get_op_builder(op)
        if builder is None or not builder().is_compatible(verbose=False):
            return Check(
                "deepspeed ops",
                FAIL,
                f"{op} is not available on the {accelerator.device_name()} accelerator (set "
                '"torch_adam": true in the DeepSpeed JSON, or fix the build: `ds_report`)',
            )
        if cfg.comprehensive:
            try:
                builder().load()  # JIT-builds it once (minutes), cached afterwards
            except Exception as error:  # a compiler error is the finding
                return Check("deepspeed ops", FAIL, f"{op} does not build: {error}")
        found.append(op + (" (built)" if cfg.comprehensive else " (compatible)"))
    return Check(
        "deepspeed ops",
        PASS,
        f"deepspeed {deepspeed.__version__} on {accelerator.device_name()}; "
        + (", ".join(found) if found else "torch's AdamW (no JIT op needed)"),
    )


def check_gpu_memory(cfg: ValidateConfig) -> Check:
    import torch

    from pokeagent.launch.resources import gpu_memory_gb
    from pokeagent.train.ds_config import load_ds_json

    need = gpu_memory_gb(
        cfg.model, cfg.batch_size_per_gpu, cfg.window, load_ds_json(_ds_name(cfg)), cfg.world_size
    )
    what = f"~{need:.1f} GB estimated for {cfg.model} at {cfg.batch_size_per_gpu}/GPU x window {cfg.window}"
    if not torch.cuda.is_available():
        return Check("gpu memory", SKIP, f"no CUDA GPU ({what})")
    have = min(
        torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())
    )
    if need > 0.9 * have / 1e9:
        smaller = max(1, cfg.batch_size_per_gpu // 2)
        return Check(
            "gpu memory",
            FAIL,
            f"{what} > 90% of {have / 1e9:.0f} GB: try --batch-size-per-gpu {smaller} with "
            "twice the --grad-accum, or zero3_bf16 / zero2_offload",
        )
    return Check("gpu memory", PASS, f"{what}, {have / 1e9:.0f} GB per GPU")


def check_data(cfg: ValidateConfig) -> Check:
    """Every folder of `--data-dir` (one, or each of a mixture `DIR=W,...`)."""
    from pokeagent.data.loader import parse_mixture

    try:
        mixture = parse_mixture(cfg.data_dir)
    except ValueError as error:
        return Check("data", FAIL, str(error))
    if mixture is None:
        return check_folder(Path(cfg.data_dir), cfg.comprehensive)
    checks = [check_folder(Path(folder), cfg.comprehensive) for folder, _ in mixture]
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        return Check("data", FAIL, "; ".join(c.detail for c in failed))
    return Check(
        "data", PASS, f"a mixture of {len(checks)}: " + "; ".join(c.detail for c in checks)
    )


def check_folder(root: Path, comprehensive: bool) -> Check:
    """One `pokeagent pack` output: its manifest, its shards' sizes (and, comprehensive, every
    sample), its encoder schema."""
    from pokeagent.data.encode import schema
    from pokeagent.data.pack import MANIFEST_FILE

    if not root.is_dir():
        return Check("data", FAIL, f"{root}: no such directory (make shards with `pokeagent pack`)")
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        return Check("data", FAIL, f"{manifest_path} is missing: not a `pokeagent pack` output")
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = {s: manifest["shards"][s] for s in manifest["shards"]}
    except (ValueError, KeyError, TypeError) as error:
        return Check("data", FAIL, f"{manifest_path}: unreadable manifest ({error})")
    problems = []
    for split, shards in listed.items():
        for info in shards:
            path = root / info["name"]
            if not path.is_file():
                problems.append(f"{info['name']} missing")
            elif path.stat().st_size != info["bytes"]:
                problems.append(
                    f"{info['name']} has {path.stat().st_size} bytes, the manifest says {info['bytes']}"
                )
        names = {info["name"] for info in shards}
        extra = sorted(p.name for p in root.glob(f"{split}-*.tar") if p.name not in names)
        problems += [f"{name} not in the manifest" for name in extra]
    if not listed.get("train"):
        problems.append("no train shards listed")
    current = schema()
    packed = manifest.get("encoder_schema", {})
    differs = sorted(k for k in set(current) | set(packed) if current.get(k) != packed.get(k))
    if differs:
        problems.append(
            f"packed with another encoder schema (differs in {differs}): re-pack with this version"
        )
    if not problems and comprehensive:
        from pokeagent.data.shards import read_shard

        for info in listed["train"] + listed.get("val", []):
            try:
                count = sum(1 for _ in read_shard(str(root / info["name"])))
            except ValueError as error:
                problems.append(f"{info['name']} is corrupt: {error}")
                continue
            if count != info["samples"]:
                problems.append(
                    f"{info['name']} holds {count} samples, the manifest says {info['samples']}"
                )
    if problems:
        shown = "; ".join(problems[:5]) + (
            f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        )
        return Check("data", FAIL, f"{root}: {shown}")
    train = listed["train"]
    return Check(
        "data",
        PASS,
        f"{root}: {len(train)} train shards, {sum(s['samples'] for s in train)} trajectories, "
        f"{sum(s['decisions'] for s in train)} decisions"
        + (", every shard read" if comprehensive else ", sizes match the manifest"),
    )


def check_disk(cfg: ValidateConfig) -> Check:
    from pokeagent.launch.resources import parameters

    where = Path(cfg.run_dir)
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 1e9
    # fp32 master weights + two Adam moments (12 B), bf16 module weights (2 B), fp32 export (4 B)
    per_checkpoint = 18 * parameters(cfg.model) / 1e9
    need = per_checkpoint * (cfg.keep_last + 1)
    what = f"{free:.0f} GB free at {probe}; {cfg.keep_last}+1 checkpoints of {cfg.model} need ~{need:.1f} GB"
    return Check("disk", PASS if free >= need else FAIL, what)


def check_nodes(cfg: ValidateConfig) -> Check:
    from pokeagent.launch.hostfile import HostfileError, hosts_from

    if not cfg.hosts and not os.environ.get("SLURM_JOB_NODELIST"):
        if cfg.nodes > 1:
            return Check(
                "nodes", FAIL, f"--nodes {cfg.nodes} but no SLURM allocation here and no --hosts"
            )
        return Check("nodes", SKIP, "one node and no SLURM allocation: nothing to reach")
    try:
        hosts = hosts_from(cfg.hosts)
    except HostfileError as error:
        return Check("nodes", FAIL, str(error))
    unreachable = []
    for host in hosts:
        try:
            socket.getaddrinfo(host, None)
        except OSError as error:
            unreachable.append(f"{host} ({error.strerror or error})")
    if unreachable:
        return Check("nodes", FAIL, "cannot resolve " + ", ".join(unreachable))
    if cfg.comprehensive:
        no_ssh = []
        for host in hosts:
            try:
                socket.create_connection((host, 22), timeout=3).close()
            except OSError:
                no_ssh.append(host)
        if no_ssh:
            return Check(
                "nodes",
                WARN,
                f"{len(hosts)} resolve; no ssh on {', '.join(no_ssh)} (use --wiring srun)",
            )
    return Check("nodes", PASS, f"{len(hosts)} host(s) resolve: {', '.join(hosts[:8])}")


def check_showdown(cfg: ValidateConfig) -> Check:
    from pokeagent.showdown.install import SHOWDOWN_VERSION, is_installed, package_dir

    if is_installed():
        return Check("showdown", PASS, f"pokemon-showdown {SHOWDOWN_VERSION} at {package_dir()}")
    status = FAIL if cfg.needs_showdown else WARN
    return Check(
        "showdown",
        status,
        f"pokemon-showdown {SHOWDOWN_VERSION} not installed (`pokeagent showdown install`); "
        "training needs it only for --mock-data and battle evaluation",
    )


def check_config(cfg: ValidateConfig) -> Check:
    from pokeagent.model.config import preset
    from pokeagent.train.ds_config import resolve_run

    try:
        train = cfg.train_config()
        preset(train.model)
        run = resolve_run(train, cfg.world_size)
    except ValueError as error:  # ConfigError too
        return Check("config", FAIL, str(error))
    ds = run.deepspeed
    return Check(
        "config",
        PASS,
        f"{_ds_name(cfg)}: {ds['train_micro_batch_size_per_gpu']} x {ds['gradient_accumulation_steps']} "
        f"x {cfg.world_size} ranks = global batch {ds['train_batch_size']}, peak lr {run.peak_lr:.3g}",
    )


CHECKS: list[Callable[[ValidateConfig], Check]] = [
    check_torch,
    check_cuda,
    check_nccl,
    check_deepspeed,
    check_gpu_memory,
    check_data,
    check_disk,
    check_nodes,
    check_showdown,
    check_config,
]


def validate(cfg: ValidateConfig) -> Report:
    """Run every check; an exception inside one becomes its failure, the others still run."""
    report = Report()
    checks = CHECKS + ([check_collectives] if cfg.comprehensive else [])
    for check in checks:
        try:
            report.checks.append(check(cfg))
        except Exception as error:  # a crashing check is a failed check, named
            name = check.__name__.removeprefix("check_")
            report.checks.append(Check(name, FAIL, f"{type(error).__name__}: {error}"))
    return report
