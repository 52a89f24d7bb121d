"""`pokeagent`: a thin command line over the library. Every verb calls one library function.

pokeagent showdown install|start|stop|status|teams
pokeagent generate --format gen9randombattle --battles 200 --players heuristic,maxpower --out DIR
pokeagent generate --players agent:RUN_DIR@1.0 --opponents heuristic=2,agent:RUN_DIR@1.5=1 --out DIR
pokeagent download --dataset metamon-raw --formats gen1ou --min-rating 1300 --out DIR
pokeagent eval offline --checkpoint RUN_DIR --shards SHARDS_DIR
pokeagent eval battles --checkpoint RUN_DIR --opponents random,maxpower,heuristic --battles 200
pokeagent eval ladder RUN_A/checkpoints/step00001000 RUN_B --games 1000 --out DIR
pokeagent play RUN_DIR --server public --username NAME --password-env VAR --ladder 10
pokeagent status RUN_DIR
pokeagent improve --shards SHARDS_DIR [--start RUN_DIR] --rounds 3 --out DIR
pokeagent demo
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pokeagent.options import add_options, config_from


def _showdown(args: argparse.Namespace) -> int:
    from pokeagent.showdown import install as sd_install
    from pokeagent.showdown import server as sd_server

    if args.action == "install":
        already = sd_install.is_installed()
        pkg = sd_install.install(force=args.force, quiet=False)
        if already and not args.force:
            print(f"pokemon-showdown {sd_install.SHOWDOWN_VERSION} already installed: {pkg}")
        return 0
    if args.action == "start":
        sd_install.install()
        record = sd_server.start_detached(port=args.port, logs_dir=args.logs_dir)
        print(
            f"Showdown server {record.version} on ws://127.0.0.1:{record.port}/showdown/websocket "
            f"(pid {record.pid}, logs {record.logs_dir}); stop it with `pokeagent showdown stop --port {record.port}`"
        )
        return 0
    if args.action == "stop":
        stopped = sd_server.stop_detached(port=args.port)
        for record in stopped:
            print(f"stopped the server on port {record.port} (pid {record.pid})")
        if not stopped:
            print("no running server recorded" + (f" on port {args.port}" if args.port else ""))
            return 1 if args.port else 0
        return 0
    if args.action == "status":
        installed = sd_install.is_installed()
        where = sd_install.package_dir() if installed else "not installed"
        print(f"pokemon-showdown {sd_install.SHOWDOWN_VERSION}: {where}")
        servers = sd_server.running_servers()
        for record in servers:
            age = time.time() - record.started_at
            print(
                f"  running: port {record.port}, pid {record.pid}, up {age:.0f} s, logs {record.logs_dir}"
            )
        if not servers:
            print("  no running server")
        return 0 if installed else 1
    if args.action == "teams":
        from pokeagent.showdown import simtool

        teams = simtool.generate_teams(sd_install.install(), args.format, args.count, args.seed)
        text = "\n".join(teams) + "\n"
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text)
            print(f"{len(teams)} valid {args.format} teams -> {args.out}")
        else:
            sys.stdout.write(text)
        return 0
    raise AssertionError(args.action)


def _two_players(text: str) -> tuple[str, ...]:
    """'heuristic,maxpower' -> both; a single kind ('sim-random') plays both sides."""
    players = tuple(p.strip() for p in text.split(",") if p.strip())
    return players * 2 if len(players) == 1 else players


def _generate(args: argparse.Namespace) -> int:
    from pokeagent.data.generate import GenerateConfig, generate

    cfg = GenerateConfig(
        out=Path(args.out),
        format=args.format,
        battles=args.battles,
        players=_two_players(args.players) if not args.opponents else (args.players.strip(),),
        opponents=args.opponents or (),
        seed=args.seed,
        concurrency=args.concurrency,
        teams_file=Path(args.teams) if args.teams else None,
        battle_timeout_s=args.battle_timeout,
    )
    maker = None
    if any(spec.startswith("agent:") for spec in cfg.players + cfg.specs_of_pool()):
        from pokeagent.eval.agent import AgentMaker

        maker = AgentMaker(device=args.device)
        maker.preload(cfg.players + cfg.specs_of_pool())
    summary = generate(cfg, progress=not args.no_progress, players=maker)
    print(summary.table())
    print(f"-> {cfg.out}/replays.jsonl, {cfg.out}/ground_truth.jsonl, {cfg.out}/summary.json")
    return 0


def _download(args: argparse.Namespace) -> int:
    from pokeagent.data.hub import DownloadConfig, download

    cfg = DownloadConfig(
        dataset=args.dataset,
        out=Path(args.out),
        formats=args.formats.split(",") if args.formats else None,
        min_rating=args.min_rating,
        max_games=args.max_games,
        months=args.months.split(",") if args.months else None,
        splits=args.splits.split(",") if args.splits else None,
        workers=args.workers,
        revision=args.revision,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )
    summary = download(cfg, progress=not args.no_progress)
    print(summary.table())
    print(f"-> {cfg.out}/replays/ (parquet), {cfg.out}/summary.json")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from pokeagent.data.pack import PackConfig, pack, parse_size

    cfg = PackConfig(
        sources=args.sources,
        out=Path(args.out),
        workers=args.workers,
        formats=[f.strip() for f in args.formats.split(",")] if args.formats else None,
        min_rating=args.min_rating,
        shard_size=parse_size(args.shard_size),
        val_fraction=args.val_fraction,
        chunk=args.chunk,
    )
    summary = pack(cfg, progress=not args.no_progress)
    print(summary.table())
    print(f"-> {cfg.out}/ (manifest.json)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    from pokeagent.data.encode import encode
    from pokeagent.data.inspect import describe, render
    from pokeagent.data.parse import SkipBattle, parse_replay
    from pokeagent.data.sources import open_source

    shown = 0
    for index, replay in enumerate(open_source(args.replay)):
        if index < args.index:
            continue
        try:
            trajectories = parse_replay(replay, encoder=encode)
        except SkipBattle as skip:
            print(f"{replay.id}: skipped ({skip.reason})", file=sys.stderr)
            return 1
        for trajectory in trajectories:
            if args.side and trajectory.side != args.side:
                continue
            if args.json:
                for row in describe(trajectory):
                    print(json.dumps(row, ensure_ascii=False))
            else:
                print(render(trajectory))
        shown += 1
        break
    if not shown:
        print(f"{args.replay}: no replay at index {args.index}", file=sys.stderr)
        return 1
    return 0


def _dex(args: argparse.Namespace) -> int:
    from pokeagent.showdown.dex import DATA_FILE, export_dex
    from pokeagent.showdown.install import install

    out = Path(args.out) if args.out else DATA_FILE
    path = export_dex(install(), out)
    print(
        f"dex exported from the pinned pokemon-showdown -> {path} ({path.stat().st_size:,} bytes)"
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.what == "parse":
        from pokeagent.bench.parse import run_parse_bench

        print(run_parse_bench(args.format, args.battles, args.seed).table())
    elif args.what == "train":
        from pokeagent.bench.train import run_train_bench

        print(
            run_train_bench(
                args.shards, args.model, args.batch_size, args.window, args.steps, args.ds_config
            ).table()
        )
    elif args.what == "load":
        from pokeagent.bench.load import run_load_bench, table

        workers = [int(w) for w in args.workers.split(",")]
        print(
            table(
                run_load_bench(
                    args.shards,
                    workers,
                    args.batches,
                    args.batch_size,
                    args.window,
                    args.consume_ms,
                )
            )
        )
    elif args.what == "gpu":
        from pokeagent.bench.gpu import main as bench_gpu

        return bench_gpu(args)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from pokeagent.launch.validate import ValidateConfig, validate

    report = validate(config_from(ValidateConfig, args))
    print(report.table())
    return 0 if report.ok else 1


def _demo(args: argparse.Namespace) -> int:
    from pokeagent.demo import DemoConfig, run_demo

    run_demo(config_from(DemoConfig, args))
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.action == "offline":
        from pokeagent.eval.offline import OfflineEvalConfig, run_offline_eval

        metrics = run_offline_eval(
            OfflineEvalConfig(
                checkpoint=args.checkpoint,
                shards=args.shards,
                out=args.out,
                split=args.split,
                max_samples=args.max_samples,
                window=args.window,
                batch_size=args.batch_size,
                device=args.device,
            )
        )
        overall = metrics["overall"]
        print(
            f"step {metrics['step']}: {metrics['trajectories']} trajectories, "
            f"{overall['labelled']} labelled decisions: top-1 {overall['top1']:.4f} "
            f"top-3 {overall['top3']:.4f} policy loss {overall['policy_loss']:.4f} "
            f"value log-loss {overall['value_log_loss']:.4f} Brier {overall['value_brier']:.4f}"
        )
        print(f"-> {metrics['out']}/offline.json, {metrics['out']}/offline.md")
        return 0
    if args.action == "battles":
        from pokeagent.eval.battles import BattleEvalConfig, evaluate_battles
        from pokeagent.eval.report import markdown

        report = evaluate_battles(
            BattleEvalConfig(
                checkpoint=args.checkpoint,
                format=args.format,
                opponents=tuple(o.strip() for o in args.opponents.split(",") if o.strip()),
                battles=args.battles,
                concurrency=args.concurrency,
                temperature=args.temperature,
                seed=args.seed,
                out=args.out,
                device=args.device,
            )
        )
        print(markdown(report))
        print(f"-> {report['out']}/battles.json, report.md, battles.png")
        return 0
    if args.action == "ladder":
        from pokeagent.eval.ladder import LadderConfig, markdown, run_ladder

        report = run_ladder(
            LadderConfig(
                out=Path(args.out),
                checkpoints=tuple(args.checkpoints),
                baselines=tuple(b.strip() for b in args.baselines.split(",") if b.strip()),
                format=args.format,
                games=args.games,
                temperature=args.temperature,
                concurrency=args.concurrency,
                seed=args.seed,
                bootstrap=args.bootstrap,
                device=args.device,
            ),
            progress=not args.no_progress,
        )
        print(markdown(report))
        print(f"-> {report['out']}/games.jsonl, ladder.json, ladder.md, ladder.png")
        return 0
    raise AssertionError(args.action)


def _improve(args: argparse.Namespace) -> int:
    from pokeagent.loop.improve import ImproveConfig, run_improve

    report = run_improve(config_from(ImproveConfig, args))
    if report.get("stage") is None:
        print(f"-> {report['config']['out']}/improve.md, improve.json, improve.png, best/")
    return 0


def _play(args: argparse.Namespace) -> int:
    from pokeagent.eval.play import LoginFailed, PlayConfig, play

    try:
        summary = play(config_from(PlayConfig, args))
    except LoginFailed as error:
        print(f"pokeagent play: cannot log in: {error}", file=sys.stderr)
        return 2
    run = summary["this_run"]
    print(
        f"{summary['username']} on {summary['server']}: {run['games']} games this run; in all "
        f"{summary['wins']}-{summary['losses']}-{summary['ties']} (won-lost-tied), rating "
        f"{summary['rating']}; {run['reconnects']} reconnects, {run['fallbacks']} random "
        f"fallbacks; stopped: {run['stopped']} -> {summary['out']}/play.json"
    )
    return 1 if run["error"] else 0


def _status(args: argparse.Namespace) -> int:
    from pokeagent.eval.status import run_status

    print(run_status(Path(args.run_dir)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pokeagent", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    sd = verbs.add_parser(
        "showdown", help="the pinned local Pokémon Showdown: install, start, stop, status, teams"
    )
    sd_actions = sd.add_subparsers(dest="action", required=True)
    p = sd_actions.add_parser("install", help="install pokemon-showdown into the cache (once)")
    p.add_argument("--force", action="store_true", help="reinstall even if present")
    p = sd_actions.add_parser(
        "start", help="start a server on 127.0.0.1 that outlives this command"
    )
    p.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    p.add_argument(
        "--logs-dir", default=None, help="the server's logs folder (default: in the cache)"
    )
    p = sd_actions.add_parser("stop", help="stop servers started by `pokeagent showdown start`")
    p.add_argument(
        "--port", type=int, default=None, help="only the server on this port (default: all)"
    )
    sd_actions.add_parser("status", help="install and running servers")
    p = sd_actions.add_parser(
        "teams", help="valid packed teams for a format (random teams filtered by its validator)"
    )
    p.add_argument("--format", required=True, help="format id, e.g. gen9ou")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="file to write (default: stdout)")
    sd.set_defaults(func=_showdown)

    gen = verbs.add_parser(
        "generate", help="play battles on the local simulator -> replays + ground truth"
    )
    gen.add_argument("--format", default="gen9randombattle")
    gen.add_argument("--battles", type=int, default=100)
    gen.add_argument(
        "--players",
        default="heuristic,maxpower",
        help="two of random, maxpower, heuristic, agent:CHECKPOINT[@TEMPERATURE] (poke-env on a "
        "local server), or sim-random (in-process); one player with --opponents",
    )
    gen.add_argument(
        "--opponents",
        default=None,
        help="a pool the one --players player meets, SPEC[=WEIGHT],... (battles split by weight), "
        "e.g. heuristic=2,maxpower=1,agent:runs/a@1.5=1",
    )
    gen.add_argument("--device", default="cpu", help="where agent players' networks run")
    gen.add_argument("--out", required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--concurrency", type=int, default=4)
    gen.add_argument(
        "--teams", default=None, help="packed teams, one a line (formats without random teams)"
    )
    gen.add_argument(
        "--battle-timeout", type=float, default=300.0, help="seconds before a battle is abandoned"
    )
    gen.add_argument("--no-progress", action="store_true")
    gen.set_defaults(func=_generate)

    dl = verbs.add_parser(
        "download", help="real replays from the Hugging Face Hub, filtered, into parquet shards"
    )
    dl.add_argument("--dataset", required=True, help="pokechamp or metamon-raw")
    dl.add_argument("--out", required=True, help="output folder (a rerun reuses what is there)")
    dl.add_argument("--formats", default=None, help="comma-separated format ids to keep")
    dl.add_argument("--min-rating", type=int, default=None)
    dl.add_argument("--max-games", type=int, default=None, help="stop after this many games")
    dl.add_argument("--months", default=None, help="e.g. 2024-03,2024-06..2024-09 (or March2024)")
    dl.add_argument("--splits", default=None, help="dataset splits to keep, e.g. train")
    dl.add_argument("--workers", type=int, default=4, help="parallel file downloads")
    dl.add_argument(
        "--revision",
        default=None,
        help="branch, tag or commit (default: v6 for metamon-raw, main for pokechamp)",
    )
    dl.add_argument(
        "--cache-dir", default=None, help="raw file cache (default: $HF_HOME/pokeagent)"
    )
    dl.add_argument("--no-progress", action="store_true")
    dl.set_defaults(func=_download)

    pk = verbs.add_parser(
        "pack", help="replays -> parsed, encoded trajectories in WebDataset shards"
    )
    pk.add_argument(
        "sources", nargs="+", help="replay files or folders (JSON, .log.json, .log, JSONL, parquet)"
    )
    pk.add_argument("--out", required=True, help="output folder (a rerun resumes it)")
    pk.add_argument("--workers", type=int, default=max(1, (__import__("os").cpu_count() or 2) - 1))
    pk.add_argument("--formats", default=None, help="comma-separated format ids to keep")
    pk.add_argument("--min-rating", type=int, default=None)
    pk.add_argument("--shard-size", default="256MB", help="target shard size (e.g. 256MB)")
    pk.add_argument("--val-fraction", type=float, default=0.01)
    pk.add_argument("--chunk", type=int, default=32, help="replays per worker task")
    pk.add_argument("--no-progress", action="store_true")
    pk.set_defaults(func=_pack)

    ins = verbs.add_parser("inspect", help="a battle's reconstruction, decision by decision")
    ins.add_argument(
        "replay", help="a replay file (served JSON, .log.json, .log, JSONL, parquet) or folder"
    )
    ins.add_argument("--side", choices=("p1", "p2"), default=None, help="one player only")
    ins.add_argument("--json", action="store_true", help="one JSON object per decision")
    ins.add_argument(
        "--index", type=int, default=0, help="which replay of a multi-replay file (0-based)"
    )
    ins.set_defaults(func=_inspect)

    dex = verbs.add_parser("dex", help="the game data shipped with pokeagent")
    dex_actions = dex.add_subparsers(dest="action", required=True)
    p = dex_actions.add_parser(
        "export", help="regenerate the dex file from the pinned pokemon-showdown"
    )
    p.add_argument("--out", default=None, help="where to write (default: the shipped file)")
    dex.set_defaults(func=_dex)

    bench = verbs.add_parser("bench", help="throughput benchmarks (figures, not tests)")
    bench_what = bench.add_subparsers(dest="what", required=True)
    p = bench_what.add_parser(
        "parse", help="parse+encode replays/s per core vs poke-env's tracking"
    )
    p.add_argument("--format", default="gen9randombattle")
    p.add_argument("--battles", type=int, default=300, help="size of the fixed simulator corpus")
    p.add_argument("--seed", type=int, default=0)
    p = bench_what.add_parser("load", help="loader samples/s and decisions/s, 1 and N workers")
    p.add_argument("--shards", required=True, help="a folder written by `pokeagent pack`")
    p.add_argument("--workers", default="0,1,2", help="worker counts to measure (0: in-process)")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--window", type=int, default=64)
    p.add_argument(
        "--consume-ms", type=float, default=0.0, help="pretend work per batch (data-wait share)"
    )
    p = bench_what.add_parser(
        "train", help="DeepSpeed engine vs a plain PyTorch loop: steps/s, samples/s"
    )
    p.add_argument(
        "--shards", required=True, help="a folder written by `pokeagent pack` (one batch is read)"
    )
    p.add_argument("--model", default="tiny")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--ds-config", default="cpu")
    p = bench_what.add_parser(
        "gpu", help="one GPU, <8 min: speed, MFU, memory, max batch, fp16, resume, feeding"
    )
    from pokeagent.bench.gpu import add_arguments as bench_gpu_arguments

    bench_gpu_arguments(p)
    bench.set_defaults(func=_bench)

    verbs.add_parser(
        "train", help="train with DeepSpeed (`pokeagent train --help`)", add_help=False
    )

    ev = verbs.add_parser("eval", help="evaluate a checkpoint: offline on held-out shards")
    ev_actions = ev.add_subparsers(dest="action", required=True)
    p = ev_actions.add_parser(
        "offline", help="action accuracy, policy/value loss and calibration on held-out shards"
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint folder, run directory or model.safetensors",
    )
    p.add_argument(
        "--shards",
        required=True,
        nargs="+",
        help="a `pokeagent pack` folder (its val-*.tar) or tar files",
    )
    p.add_argument("--out", default=None, help="default: <run dir>/eval/offline-step<N>")
    p.add_argument("--split", default="val", help="which shards of a folder to read")
    p.add_argument(
        "--max-samples", type=int, default=None, help="N trajectories spread over the shards"
    )
    p.add_argument(
        "--window", type=int, default=None, help="decisions per chunk (default: the run's window)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p = ev_actions.add_parser(
        "battles",
        help="play poke-env's baselines on a local server: win rates, ratings, report",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint folder, run directory or model.safetensors",
    )
    p.add_argument("--format", default="gen9randombattle")
    p.add_argument(
        "--opponents", default="random,maxpower,heuristic", help="comma-separated baselines"
    )
    p.add_argument("--battles", type=int, default=100, help="games against each opponent")
    p.add_argument("--concurrency", type=int, default=4, help="games at once")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: <run dir>/eval/battles-step<N>")
    p.add_argument("--device", default="cpu")
    p = ev_actions.add_parser(
        "ladder",
        help="round-robin among checkpoints and baselines: ratings (Random = 1000) with intervals",
    )
    p.add_argument(
        "checkpoints",
        nargs="*",
        help="checkpoint folders, run directories (latest) or model.safetensors, each [@TEMPERATURE]",
    )
    p.add_argument("--baselines", default="random,maxpower,heuristic", help="random is the anchor")
    p.add_argument("--games", type=int, default=1000, help="games per pair, sides alternated")
    p.add_argument("--format", default="gen9randombattle")
    p.add_argument("--temperature", type=float, default=0.0, help="for checkpoints without @T")
    p.add_argument("--concurrency", type=int, default=4, help="games of a pair at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the intervals")
    p.add_argument("--out", required=True, help="a rerun (or more checkpoints) resumes it")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_eval)

    val = verbs.add_parser(
        "validate",
        help="pre-flight checks: torch, CUDA, NCCL, DeepSpeed, data, disk, nodes, config",
    )
    from pokeagent.launch.validate import ValidateConfig

    add_options(val, ValidateConfig)
    val.set_defaults(func=_validate)

    pl = verbs.add_parser(
        "play",
        help="the agent on a Showdown server with an account: ladder, challenges (see README)",
    )
    from pokeagent.eval.play import PlayConfig

    pl.add_argument("checkpoint", help="a checkpoint folder, run directory or model.safetensors")
    add_options(pl, PlayConfig, skip=("checkpoint",))
    pl.set_defaults(func=_play)

    st = verbs.add_parser(
        "status", help="a training run: step, checkpoints, validation, battles, time left"
    )
    st.add_argument("run_dir", help="the run directory (--run-dir of `pokeagent train`)")
    st.set_defaults(func=_status)

    imp = verbs.add_parser(
        "improve",
        help="rounds of the agent's own games -> new shards -> training on -> evaluation",
    )
    from pokeagent.loop.improve import ImproveConfig

    add_options(imp, ImproveConfig)
    imp.set_defaults(func=_improve)

    demo = verbs.add_parser(
        "demo", help="the CPU demo: battles -> shards -> DeepSpeed training -> battles -> report"
    )
    from pokeagent.demo import DemoConfig

    add_options(demo, DemoConfig)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        # The trainer owns its options (one per TrainConfig field): hand them over whole.
        from pokeagent.train.__main__ import main as train_main

        code = train_main(argv[1:])
        sys.stdout.flush()
        os._exit(code)  # see pokeagent/train/__main__.py
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"pokeagent {args.verb}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
