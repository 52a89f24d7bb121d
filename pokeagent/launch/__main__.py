"""`python -m pokeagent.launch train|improve|hostfile|render-tiers` (launch/*.sh call these)."""

from __future__ import annotations

import argparse
import sys


def _hostfile(argv: list[str]) -> int:
    from pokeagent.launch.hostfile import HostfileError, gpus_per_node, hostfile_text, hosts_from

    parser = argparse.ArgumentParser(
        prog="launch/hostfile.sh",
        description="A DeepSpeed hostfile from the SLURM allocation or a list of hosts.",
    )
    parser.add_argument("--hosts", help="hosts (compact SLURM syntax allowed) or a file of them")
    parser.add_argument("--slots", type=int, help="GPUs per host (default: from SLURM)")
    parser.add_argument("--out", help="write here instead of stdout")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--first", action="store_true", help="print the first host only")
    shown.add_argument("--names", action="store_true", help="print the hosts, comma-separated")
    args = parser.parse_args(argv)
    try:
        hosts = hosts_from(args.hosts)
        if args.first:
            text = hosts[0] + "\n"
        elif args.names:
            text = ",".join(hosts) + "\n"
        else:
            slots = args.slots if args.slots is not None else gpus_per_node()
            text = hostfile_text(hosts, slots)
    except HostfileError as error:
        print(f"hostfile: error: {error}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verb, rest = (argv[0], argv[1:]) if argv else ("", [])
    if verb == "train":
        from pokeagent.launch.slurm import main as train_main

        return train_main(rest)
    if verb == "improve":
        from pokeagent.loop.slurm_chain import main as improve_main

        return improve_main(rest)
    if verb == "hostfile":
        return _hostfile(rest)
    if verb == "render-tiers":
        from pokeagent.launch.slurm import write_tiers

        for path in write_tiers():
            print(path)
        return 0
    print(
        "usage: python -m pokeagent.launch train|improve|hostfile|render-tiers ...",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
