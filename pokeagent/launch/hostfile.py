"""DeepSpeed hostfiles (`host slots=N`) from a SLURM allocation or a plain list of hosts.

    python -m pokeagent.launch hostfile                      # from SLURM_JOB_NODELIST + the GPU count
    python -m pokeagent.launch hostfile --hosts a,b --slots 4
    python -m pokeagent.launch hostfile --first              # the first host (MASTER_ADDR)

SLURM writes node lists in a compact syntax: `gpu[01-03,07],cpu5` is gpu01 gpu02 gpu03 gpu07
cpu5; ranges keep their zero padding; a name may hold several bracket groups
(`r[1-2]n[01-02]` is r1n01 r1n02 r2n01 r2n02). The GPUs per node come from the allocation
(`SLURM_GPUS_ON_NODE`, then `SLURM_GPUS_PER_NODE`, then the count of `SLURM_JOB_GPUS`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

_GPU_ENV = ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")


class HostfileError(ValueError):
    """A node list or GPU count that cannot be read; the message says which and why."""


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
            if depth > 1:
                raise HostfileError(f"nested brackets in node list {text!r}")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise HostfileError(f"unbalanced ']' in node list {text!r}")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise HostfileError(f"unbalanced '[' in node list {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _expand_group(body: str, whole: str) -> list[str]:
    """`01-03,07` -> 01 02 03 07 (zero padding kept: the width of the range's first bound)."""
    out = []
    for item in body.split(","):
        item = item.strip()
        if re.fullmatch(r"\d+", item):
            out.append(item)
            continue
        match = re.fullmatch(r"(\d+)-(\d+)", item)
        if not match:
            raise HostfileError(f"bad range {item!r} in node list {whole!r}")
        low, high = match.groups()
        if int(high) < int(low):
            raise HostfileError(f"descending range {item!r} in node list {whole!r}")
        width = len(low) if low.startswith("0") else 0
        out.extend(str(n).zfill(width) for n in range(int(low), int(high) + 1))
    return out


def _expand_name(name: str, whole: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", name)
    if not match:
        return [name]
    head, tail = name[: match.start()], name[match.end() :]
    return [
        head + part + rest
        for part in _expand_group(match.group(1), whole)
        for rest in _expand_name(tail, whole)
    ]


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compact node list -> host names, in order (duplicates are an error)."""
    hosts = [host for name in _split_top(nodelist) for host in _expand_name(name, nodelist)]
    if not hosts:
        raise HostfileError(f"empty node list {nodelist!r}")
    seen = set()
    for host in hosts:
        if host in seen:
            raise HostfileError(f"host {host!r} appears twice in node list {nodelist!r}")
        seen.add(host)
    return hosts


def gpus_per_node(env: Mapping[str, str] | None = None) -> int:
    """GPUs each node of the allocation holds (the hostfile's `slots`)."""
    env = os.environ if env is None else env
    for key in _GPU_ENV:
        value = env.get(key, "").strip()
        if not value:
            continue
        if key in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
            return len([g for g in value.split(",") if g.strip()])
        # "4", "a100:4", "gpu:a100:4", or "4(x2)" in some SLURM versions
        count = value.split(":")[-1].split("(")[0]
        if count.isdigit() and int(count) > 0:
            return int(count)
        raise HostfileError(f"{key}={value!r}: cannot read a GPU count from it")
    raise HostfileError(
        f"no GPU count in the environment (looked at {', '.join(_GPU_ENV)}): "
        "run inside a SLURM allocation with GPUs (--gpus-per-node) or pass --slots"
    )


def hostfile_text(hosts: list[str], slots: int) -> str:
    """DeepSpeed's hostfile: one `host slots=N` line per host."""
    if slots < 1:
        raise HostfileError(f"slots must be >= 1, got {slots}")
    return "".join(f"{host} slots={slots}\n" for host in hosts)


def hosts_from(hosts: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """A comma/space/newline-separated list (or a file of them, one per line), else the SLURM one."""
    env = os.environ if env is None else env
    if hosts:
        if os.path.isfile(hosts):
            with open(hosts) as lines:
                hosts = " ".join(line.split("#")[0] for line in lines)
        names = [h for h in re.split(r"[\s,]+", hosts) if h]
        return [h for name in names for h in expand_nodelist(name)]
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise HostfileError(
            "no SLURM_JOB_NODELIST in the environment: run inside a SLURM job, or give --hosts"
        )
    return expand_nodelist(nodelist)
