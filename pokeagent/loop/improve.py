"""`pokeagent improve`: rounds of the agent's own games -> new shards -> training on from the last
checkpoint over a mixture -> evaluation -> the best agent kept (DESIGN.md, "The loop").

    pokeagent improve --shards runs/demo/shards --start runs/demo/train --out runs/improve
    pokeagent improve --shards runs/demo/shards --out runs/improve --rounds 5 --battles 500 \\
        --pool heuristic=2,maxpower=1,past:2=1,self@1.5=1 --steps 500 --objective binary

Round 0 is the starting agent: the checkpoint of the `start` run (copied into `out/train`, the
loop's one run directory), or `start_steps` of training on the replays alone. Each round r >= 1:
1. battles: the current agent (round r-1's, sampling at `temperature`) against the pool, split by
   weight and cut into chunks of at most `chunk` battles. A chunk plays into
   `battles/chunk-NNN.partial/` and is renamed `chunk-NNN/` once complete: a killed round plays
   its unfinished chunk again (the partial battles are thrown away), never a complete one, so no
   battle is duplicated or missing;
2. pack: the round's replays into `rounds/round-NNN/shards/`, its own folder (nothing re-packed;
   pack resumes itself);
3. train on from the last checkpoint, `steps` more optimizer steps, over the mixture of the
   replays (`replay_weight`) and every round's shards (`rounds_weight`, shared among the rounds
   by their trajectories): `pokeagent train --max-steps <previous + steps>` on `out/train`, which
   resumes from its last checkpoint after a kill (`checkpoint_minutes` bounds what is redone);
4. keep the agent (`rounds/round-NNN/agent/`), evaluate it (greedy) against RandomPlayer,
   MaxBasePowerPlayer and SimpleHeuristicsPlayer (an unfinished evaluation is played again),
   optionally rate it on a ladder with every earlier round's agent (`ladder/`, resumable), and
   keep the best by the win rate against SimpleHeuristicsPlayer (`best/`, `best.json`);
5. `improve.md`, `improve.json`, `improve.png`: a row per round, rebuilt from the rounds' files.

What a round plays is fixed in `rounds/round-NNN/plan.json` when it starts (current agent, pool,
chunks and their seeds, target step), so a rerun continues the same round even with other
options; raising `rounds` continues a finished loop.

The learning rate across rounds: each round raises `--max-steps`, and the trainer's warmup +
cosine is a function of (step, max_steps), so the cosine is stretched to the new end. At a
round's first step the rate jumps back up to the stretched curve (rounds as long as round 0:
55%, 33%, 23%, 19% of the peak in rounds 1-4) and decays to the floor at the round's end. So
every kept and evaluated agent is an annealed checkpoint, and the restarts shrink as the agent
matures (warm restarts, as SGDR). One schedule fixed in advance would need the number of rounds
up front and evaluate unannealed checkpoints; a constant rate would never anneal.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pokeagent.loop.pool import parse_pool, plan_chunks, resolve_pool
from pokeagent.run_dir import LATEST, WEIGHTS, RunDir, read_json, step_of

OPPONENTS = ("random", "maxpower", "heuristic")
"""The baselines every round's agent is evaluated against."""
BEST_BY = "heuristic"
"""The kept agent is the one with the best win rate against this baseline (then the mean)."""
FIXED = ("shards", "start", "seed", "format", "model", "objective")
"""Options a rerun must share with the loop it continues."""
STAGES = ("all", "zero", "generate", "pack", "finish")
"""What one invocation does: `all` the whole loop (here); the others one piece of a round, as the
jobs of a SLURM chain run them (`pokeagent/loop/slurm_chain.py`): `zero` round 0 (the start
agent kept and evaluated), `generate` one chunk of a round's battles, `pack` the round's shards
and its training mixture (`data-dir.txt`), `finish` the trained round's agent kept and
evaluated. Training in between is `pokeagent train` on `train/` (the chain's GPU job)."""


@dataclass
class ImproveConfig:
    """`pokeagent improve`: the loop's knobs."""

    out: str = "runs/improve"
    """Loop folder: train/ (the run directory), rounds/round-NNN/, best/, improve.md/.json/.png."""
    shards: str = "shards"
    """The replays' shards (a `pokeagent pack` folder): round 0's data, and the first folder of
    every round's mixture (validation reads its val shards)."""
    start: str | None = None
    """A run directory (its latest checkpoint) or a checkpoint folder of one, trained on `shards`:
    its full resume point is copied into out/train and its training settings carry on. None:
    round 0 trains `start_steps` on the replays."""
    start_steps: int = 1000
    """Without `start`: optimizer steps of round 0 on the replays alone."""
    rounds: int = 3
    """Rounds after round 0 (a rerun with more continues a finished loop)."""
    battles: int = 500
    """Battles per round: the current agent against the pool."""
    chunk: int = 100
    """Battles per generation chunk: what a killed round plays again at most."""
    pool: str = "heuristic=2,maxpower=1,past:2=1,self@1.5=1"
    """Opponents with weights, SPEC=W,...: random, maxpower, heuristic; self@T (the current agent
    sampling at T); past:K[@T] (the K rounds' agents before the current one, the weight shared,
    left out while there are none); agent:PATH[@T] (a fixed checkpoint)."""
    temperature: float = 1.0
    """The current agent's sampling temperature in its own games (and past:K's default)."""
    replay_weight: float = 1.0
    """Mixture weight of the replays' shards (0: own games only)."""
    rounds_weight: float = 1.0
    """Mixture weight of all rounds' shards together, shared by their trajectories (0: replays
    only, the control)."""
    steps: int = 500
    """Optimizer steps per round."""
    objective: str = "bc"
    """Policy objective (pokeagent train --objective): bc, or binary/exp with a critic, which
    can pick the winning choices out of the agent's own games; a `start` run needs a critic for
    binary/exp."""
    model: str = "tiny"
    """Model preset of a loop that trains round 0 itself."""
    learning_rate: float = 2e-3
    """Without `start`: the peak rate at the reference batch of 256 (scaled to the batch of 16)."""
    checkpoint_minutes: float = 5.0
    """Checkpoint the training run at least this often (a kill redoes at most this much)."""
    train_args: str = ""
    """More `pokeagent train` options for every round, as one string:
    `--train-args="--advantage-beta 2 --window 32"` (with `=`: the value starts with --)."""
    eval_games: int = 100
    """Games of each round's agent against each baseline."""
    ladder_games: int = 0
    """Games per pair on a ladder of every round's agent and the baselines (0: no ladder)."""
    format: str = "gen9randombattle"
    """Showdown format (random-team formats)."""
    seed: int = 0
    """Seeds the battles' chunks, the training run and the evaluations."""
    concurrency: int = 4
    """Battles played at once (generation, evaluation, ladder)."""
    pack_workers: int = 1
    """Parse workers of each round's pack."""
    device: str = "cpu"
    """Where the agents' networks run in battles."""
    stage: str = "all"
    """all: the whole loop here. zero, generate, pack, finish: one piece of a round, as the jobs
    of a SLURM chain (`launch/improve.sh`) run it; with --round (and --chunk-index for generate)."""
    round: int | None = None
    """The round of a --stage other than all."""
    chunk_index: int | None = None
    """The chunk of --stage generate (the array task's index)."""

    def __post_init__(self):
        for name in ("rounds", "start_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
        for name in ("battles", "chunk", "steps", "eval_games", "concurrency", "pack_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.start is None and self.start_steps < 1:
            raise ValueError("without --start, round 0 trains --start-steps >= 1 steps")
        if min(self.replay_weight, self.rounds_weight) < 0 or not (
            self.replay_weight or self.rounds_weight
        ):
            raise ValueError("--replay-weight and --rounds-weight: >= 0, not both 0")
        if self.temperature < 0 or self.ladder_games < 0:
            raise ValueError("--temperature and --ladder-games must be >= 0")
        if self.stage not in STAGES:
            raise ValueError(f"--stage {self.stage}: choose from {', '.join(STAGES)}")
        if self.stage in ("generate", "pack", "finish") and (self.round or 0) < 1:
            raise ValueError(f"--stage {self.stage} needs --round N (N >= 1)")
        if self.stage == "generate" and (self.chunk_index is None or self.chunk_index < 0):
            raise ValueError(
                "--stage generate needs --chunk-index I (I >= 0: the array task's index)"
            )
        parse_pool(self.pool)


def mixture(cfg: ImproveConfig, packed: list[tuple[Path, int]]) -> list[tuple[str, float]]:
    """The training mixture: the replays first (always: a run's loader state from the replays
    alone continues as the first folder), then every round with trajectories, `rounds_weight`
    shared by their trajectories."""
    parts = [(str(Path(cfg.shards).resolve()), cfg.replay_weight)]
    total = sum(n for _, n in packed)
    parts += [(str(folder), cfg.rounds_weight * n / total) for folder, n in packed if n]
    return parts


# -- the loop -----------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _write_json(path: Path, data) -> None:
    """Atomically: a reader (or a rerun after a kill) sees the old file or the new one; writers
    at once (a chain's array tasks writing the same plan) each replace it whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class Improve:
    """One loop folder: its rounds, each stage skipped when its output is complete."""

    def __init__(self, cfg: ImproveConfig, make_players: Callable | None = None, progress=True):
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.out).resolve()
        self.train_run = RunDir(self.out / "train")
        self.make_players = make_players or self._agent_maker

    def _agent_maker(self):
        from pokeagent.eval.agent import AgentMaker

        return AgentMaker(device=self.cfg.device)

    def round_dir(self, index: int) -> Path:
        return self.out / "rounds" / f"round-{index:03d}"

    def agent_dir(self, index: int) -> Path:
        return self.round_dir(index) / "agent"

    # ---------------------------------------------------------------- setup
    def check_config(self) -> None:
        """The first run saves the options; a rerun must share the FIXED ones."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "config.json"
        saved = read_json(path)
        mine = asdict(self.cfg)
        if saved is None:
            _write_json(path, mine)
            return
        changed = [name for name in FIXED if saved.get(name) != mine[name]]
        if changed:
            raise ValueError(
                f"{self.out} is a loop with other {', '.join(changed)} "
                f"({ {k: saved.get(k) for k in changed} }): use another --out"
            )

    def base_config(self) -> Path:
        """The TrainConfig every round's run starts from (`train-config.json`, fixed at the
        first run); rounds give --data-dir and --max-steps on top."""
        path = self.out / "train-config.json"
        if not path.is_file():
            _write_json(path, self.train_settings())
        return path

    def train_settings(self) -> dict:
        """train-config.json's content: as saved, or as the first run will save it (checked)."""
        from pokeagent.data.loader import first_folder
        from pokeagent.train.config import TrainConfig

        saved = read_json(self.out / "train-config.json")
        if saved is not None:
            return saved
        cfg = self.cfg
        if cfg.start is not None:
            source, _ = start_checkpoint(cfg.start)
            train = (source.read_config() or {}).get("train")
            if train is None:
                raise ValueError(f"--start {cfg.start}: no config.json in {source.root}")
            trained_on = Path(first_folder(train["data_dir"])).resolve()
            if trained_on != Path(cfg.shards).resolve():
                raise ValueError(
                    f"--start {cfg.start} trained on {trained_on}, not --shards {cfg.shards}: its "
                    "loader state is a position in those shards; give the shards it trained on"
                )
            if cfg.objective != "bc" and not train.get("critic_heads"):
                raise ValueError(
                    f"--objective {cfg.objective} needs a critic, and --start {cfg.start} has none "
                    "(trained with bc): start from a run with --critic-heads, or without --start"
                )
        else:
            train = {
                "model": cfg.model,
                "learning_rate": cfg.learning_rate,
                "warmup_steps": max(1, cfg.start_steps // 20),
                "window": 64,
                "batch_size_per_gpu": 16,
                "workers_per_gpu": 1,
                "seed": cfg.seed,
                "log_every": max(1, min(cfg.start_steps, cfg.steps) // 10),
            }
        train |= {
            "run_dir": str(self.train_run.root),
            "data_dir": str(Path(cfg.shards).resolve()),
            "objective": cfg.objective,
            "checkpoint_minutes": cfg.checkpoint_minutes,
            "eval_battles": 0,
            "time_limit_hours": 0.0,
        }
        TrainConfig.from_dict(train)  # checked now, not in the first round's subprocess
        return train

    def target_step(self, index: int) -> int:
        """The step round `index` trains to: `steps` more than the round before. Rounds not kept
        yet (a chain rendered ahead of them) count `steps` each from the last kept agent, or from
        round 0's step (the --start checkpoint's, or start_steps)."""
        for kept in range(index - 1, -1, -1):
            info = read_json(self.agent_dir(kept) / "agent.json")
            if info is not None:
                return info["step"] + (index - kept) * self.cfg.steps
        if self.cfg.start is None:
            return self.cfg.start_steps + index * self.cfg.steps
        return step_of(start_checkpoint(self.cfg.start)[1]) + index * self.cfg.steps

    def round_done(self, index: int) -> bool:
        """Round `index`'s agent is kept and evaluated with these settings."""
        return (self.agent_dir(index) / WEIGHTS).is_file() and self._evaluated(index)

    def chunk_dir(self, index: int, chunk: dict) -> Path:
        """Where a chunk of round `index`'s battles is (`chunk-NNN/` once complete)."""
        return self.round_dir(index) / "battles" / f"chunk-{chunk['index']:03d}"

    def adopt_start(self) -> None:
        """`start`'s checkpoint becomes out/train's first (copied whole; the start run is left
        as it is). Nothing to do once out/train has a checkpoint."""
        if self.cfg.start is None or self.train_run.pointer() is not None:
            return
        source, tag = start_checkpoint(self.cfg.start)
        self.train_run.checkpoints.mkdir(parents=True, exist_ok=True)
        partial = self.train_run.checkpoints / f".{tag}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source.checkpoint(tag), partial)
        os.replace(partial, self.train_run.checkpoint(tag))
        self.train_run.set_pointer(LATEST, tag)

    # ---------------------------------------------------------------- stages
    def train_to(self, data_dir: str, target: int) -> float:
        """`pokeagent train` on out/train until step `target` (resumed from its checkpoint; nothing
        to do once there). Returns the seconds spent."""
        if self.latest_step() >= target:
            return 0.0
        started = time.monotonic()
        command = [sys.executable, "-m", "pokeagent.train", "--config", str(self.base_config())]
        command += ["--data-dir", data_dir, "--max-steps", str(target)]
        command += shlex.split(self.cfg.train_args)
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        env.pop("RANK", None)
        done = subprocess.run(command, env=env)
        if done.returncode != 0 or self.latest_step() < target:
            raise RuntimeError(
                f"training to step {target} failed (exit {done.returncode}): {shlex.join(command)}"
            )
        return time.monotonic() - started

    def latest_step(self) -> int:
        """The step of the run's newest complete checkpoint (0: none). DeepSpeed writes `latest`
        before the trainer's rank files and fp32 export: a checkpoint that a kill cut short there
        is set aside (`latest` goes back to the newest complete one, which the trainer resumes
        from, redoing the lost steps exactly)."""
        run = self.train_run
        complete = [t for t in run.tags() if run.rank_files(t) and run.weights(t).is_file()]
        tag = run.pointer()
        if tag is not None and tag not in complete:
            print(f"{run.checkpoint(tag)} is incomplete (a kill during its save): set aside")
            if complete:
                run.set_pointer(LATEST, complete[-1])
            else:
                (run.checkpoints / LATEST).unlink()
            tag = run.pointer()
        return step_of(tag) if tag else 0

    def keep_agent(self, index: int, target: int | None = None) -> Path:
        """The run's latest weights, copied to the round's agent/ (the run's keep-last rotation
        deletes old checkpoints; past agents stay playable). With `target`, the run must have
        reached that step (a chain's finish job after a training job that stopped early)."""
        agent = self.agent_dir(index)
        if (agent / WEIGHTS).is_file():
            return agent
        reached = self.latest_step()  # `latest` names a complete checkpoint
        if target is not None and reached != target:
            raise RuntimeError(
                f"round {index} trains to step {target}, and {self.train_run.root} is at step "
                f"{reached}: train it there first (`pokeagent train` resumes it)"
            )
        tag = self.train_run.pointer()
        partial = agent.with_name("agent.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        shutil.copy2(self.train_run.weights(tag), partial / WEIGHTS)
        _write_json(partial / "agent.json", {"round": index, "step": step_of(tag), "tag": tag})
        os.replace(partial, agent)
        return agent

    def generate_round(self, index: int, plan: dict) -> float:
        """Every chunk of the plan that is not complete yet; the seconds spent."""
        started = time.monotonic()
        for chunk in plan["chunks"]:
            self.generate_chunk(index, plan, chunk)
        return time.monotonic() - started

    def generate_chunk(self, index: int, plan: dict, chunk: dict) -> None:
        """One chunk's battles into `battles/chunk-NNN/` (nothing to do once it is there)."""
        from pokeagent.data.generate import GenerateConfig, generate

        final = self.chunk_dir(index, chunk)
        if final.is_dir():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # a killed chunk's battles: played again
        players = (plan["agent"], chunk["opponent"])
        print(f"chunk {chunk['index']}: {chunk['battles']} x {players[0]} vs {players[1]}")
        maker = self.make_players()
        if hasattr(maker, "preload"):
            maker.preload(players)
        summary = generate(
            GenerateConfig(
                out=partial,
                format=self.cfg.format,
                battles=chunk["battles"],
                players=players,
                seed=chunk["seed"],
                concurrency=self.cfg.concurrency,
            ),
            progress=self.progress,
            players=maker,
        )
        print(summary.table(), flush=True)
        shutil.rmtree(partial / "server-logs", ignore_errors=True)  # replays hold it all
        os.replace(partial, final)

    def pack_round(self, index: int, plan: dict) -> dict:
        """The round's replays -> its own shards (pack resumes a killed pack); the manifest."""
        from pokeagent.data.pack import MANIFEST_FILE, PackConfig, pack

        folder = self.round_dir(index)
        sources = [str(self.chunk_dir(index, chunk) / "replays.jsonl") for chunk in plan["chunks"]]
        shards = folder / "shards"
        if not (shards / MANIFEST_FILE).is_file():
            summary = pack(
                PackConfig(
                    sources=sources,
                    out=shards,
                    workers=self.cfg.pack_workers,
                    val_fraction=0.0,  # validation stays on the replays' held-out battles
                    shard_size=64 * 1024 * 1024,
                ),
                progress=self.progress,
            )
            print(summary.table(), flush=True)
        return json.loads((shards / MANIFEST_FILE).read_text())

    def evaluate(self, index: int) -> dict:
        """The round's agent (greedy) against the baselines, unless already done with these
        settings (a killed evaluation has no battles.json: it is played again)."""
        from pokeagent.eval.battles import BattleEvalConfig, evaluate_battles

        out = self.round_dir(index) / "eval"
        report = read_json(out / "battles.json")
        if (
            report is not None
            and report["config"]["battles"] == self.cfg.eval_games
            and tuple(report["opponents"]) == OPPONENTS
        ):
            return report
        return evaluate_battles(
            BattleEvalConfig(
                checkpoint=str(self.agent_dir(index)),
                format=self.cfg.format,
                opponents=OPPONENTS,
                battles=self.cfg.eval_games,
                concurrency=self.cfg.concurrency,
                seed=self.cfg.seed,
                out=str(out),
                device=self.cfg.device,
            ),
            progress=self.progress,
        )

    def ladder(self, upto: int) -> dict | None:
        """Every round's agent so far and the baselines on one resumable ladder."""
        if not self.cfg.ladder_games:
            return None
        from pokeagent.eval.ladder import LadderConfig, run_ladder

        return run_ladder(
            LadderConfig(
                out=self.out / "ladder",
                checkpoints=tuple(str(self.agent_dir(i)) for i in range(upto + 1)),
                format=self.cfg.format,
                games=self.cfg.ladder_games,
                concurrency=self.cfg.concurrency,
                seed=self.cfg.seed,
                device=self.cfg.device,
            ),
            progress=self.progress,
        )

    def plan(self, index: int) -> dict:
        """Round `index`'s plan (`plan.json`): written when the round starts, read after that."""
        path = self.round_dir(index) / "plan.json"
        saved = read_json(path)
        if saved is not None:
            return saved
        pool = self.pool(index)
        plan = {
            "round": index,
            "agent": f"agent:{self.agent_dir(index - 1) / WEIGHTS}@{self.cfg.temperature:g}",
            "pool": pool,
            "chunks": self.chunks(index, pool),
            "start_step": read_json(self.agent_dir(index - 1) / "agent.json")["step"],
            "target_step": self.target_step(index),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, plan)
        return plan

    def pool(self, index: int) -> list[tuple[str, float]]:
        """Round `index`'s opponents: the pool resolved against the agents of the rounds before
        (their paths only: known before those rounds have run)."""
        current = self.agent_dir(index - 1) / WEIGHTS
        past = [self.agent_dir(i) / WEIGHTS for i in range(index - 1)]
        return resolve_pool(parse_pool(self.cfg.pool), current, past, self.cfg.temperature)

    def chunks(self, index: int, pool: list | None = None) -> list[dict]:
        """Round `index`'s chunks (what its plan will hold; known before the round starts, for
        the size of a chain's array job)."""
        cfg = self.cfg
        pool = self.pool(index) if pool is None else pool
        return plan_chunks(pool, cfg.battles, cfg.chunk, cfg.seed, index)

    def add_seconds(self, index: int, stage: str, seconds: float) -> None:
        """Wall time per stage, summed over the runs that worked on it (`times.json`)."""
        path = self.round_dir(index) / "times.json"
        times = read_json(path) or {}
        times[stage] = times.get(stage, 0.0) + seconds
        _write_json(path, times)

    # ---------------------------------------------------------------- rounds
    def round_zero(self) -> None:
        cfg = self.cfg
        self.round_dir(0).mkdir(parents=True, exist_ok=True)
        if cfg.start is not None:
            _say(f"round 0: the start agent {cfg.start}")
            self.base_config()
            self.adopt_start()
        else:
            _say(f"round 0: {cfg.start_steps} steps on the replays alone ({cfg.shards})")
            self.base_config()
            seconds = self.train_to(str(Path(cfg.shards).resolve()), cfg.start_steps)
            self.add_seconds(0, "train", seconds)
        self.keep_agent(0)
        self.finish_round(0)

    def play_round(self, index: int) -> None:
        cfg = self.cfg
        plan = self.plan(index)
        _say(
            f"round {index}/{cfg.rounds}: {sum(c['battles'] for c in plan['chunks'])} battles of "
            f"{plan['agent']} against {', '.join(f'{s}={w:g}' for s, w in plan['pool'])}"
        )
        self.add_seconds(index, "battles", self.generate_round(index, plan))
        data_dir = self.pack_stage(index)
        _say(f"round {index}: train to step {plan['target_step']}")
        self.add_seconds(index, "train", self.train_to(data_dir, plan["target_step"]))
        self.keep_agent(index, plan["target_step"])
        self.finish_round(index)

    def pack_stage(self, index: int) -> str:
        """The round's shards, and its training mixture: replays + every round so far
        (`mixture.json`, and `data-dir.txt`: the --data-dir a chain's training job reads)."""
        from pokeagent.data.loader import mixture_spec

        _say(f"round {index}: pack")
        started = time.monotonic()
        self.pack_round(index, self.plan(index))
        self.add_seconds(index, "pack", time.monotonic() - started)
        packed = []
        for i in range(1, index + 1):
            manifest = json.loads((self.round_dir(i) / "shards" / "manifest.json").read_text())
            packed.append(
                (self.round_dir(i) / "shards", manifest["summary"]["trajectories"]["train"])
            )
        parts = mixture(self.cfg, packed)
        _write_json(self.round_dir(index) / "mixture.json", parts)
        spec = mixture_spec(parts)
        (self.round_dir(index) / "data-dir.txt").write_text(spec + "\n")
        print(f"round {index}: the mixture of {len(parts)} folders: {spec}", flush=True)
        return spec

    def finish_round(self, index: int) -> None:
        _say(f"round {index}: evaluate against {', '.join(OPPONENTS)} ({self.cfg.eval_games} each)")
        started = time.monotonic()
        self.evaluate(index)
        ladder = self.ladder(index)
        self.add_seconds(index, "evaluate", time.monotonic() - started)
        from pokeagent.loop.report import write_report

        report = write_report(self, ladder)
        print(report["markdown"], flush=True)

    def run_stage(self) -> None:
        """One piece of a round (`--stage`), as a chain's job runs it; each is idempotent."""
        from pokeagent.showdown.install import install

        cfg, index = self.cfg, self.cfg.round
        self.check_config()
        if cfg.stage == "zero":
            if cfg.start is None:
                raise ValueError("a chain starts from a trained run: give --start")
            install()
            if not self.round_done(0):
                self.round_zero()
            return
        if not (self.agent_dir(index - 1) / WEIGHTS).is_file():
            raise RuntimeError(f"round {index - 1} has no agent yet: its jobs come first")
        plan = self.plan(index)
        if cfg.stage == "generate":
            if cfg.chunk_index >= len(plan["chunks"]):
                raise ValueError(
                    f"--chunk-index {cfg.chunk_index}: round {index} has "
                    f"{len(plan['chunks'])} chunks"
                )
            install()
            self.generate_chunk(index, plan, plan["chunks"][cfg.chunk_index])
        elif cfg.stage == "pack":
            missing = [c["index"] for c in plan["chunks"] if not self.chunk_dir(index, c).is_dir()]
            if missing:
                raise RuntimeError(f"round {index}: chunks {missing} are not played yet")
            self.pack_stage(index)
        elif cfg.stage == "finish":
            install()
            self.keep_agent(index, plan["target_step"])
            self.finish_round(index)

    def run(self) -> dict:
        from pokeagent.loop.report import write_report
        from pokeagent.showdown.install import install

        self.check_config()
        install()
        if not self.round_done(0):
            self.round_zero()
        for index in range(1, self.cfg.rounds + 1):
            if not self.round_done(index):
                self.play_round(index)
        ladder = read_json(self.out / "ladder" / "ladder.json") if self.cfg.ladder_games else None
        return write_report(self, ladder)

    def _evaluated(self, index: int) -> bool:
        report = read_json(self.round_dir(index) / "eval" / "battles.json")
        return report is not None and report["config"]["battles"] == self.cfg.eval_games


def start_checkpoint(path: str) -> tuple[RunDir, str]:
    """(run, tag) of `--start`: a run directory (its latest) or one of its checkpoint folders;
    a full resume point (DeepSpeed state and the ranks' files), not bare weights."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        run = RunDir(path)
        tag = run.pointer()
    elif path.parent.name == "checkpoints":
        run, tag = RunDir(path.parents[1]), path.name
    else:
        run, tag = None, None
    if run is None or tag is None or not run.rank_files(tag):
        raise ValueError(
            f"--start {path}: a run directory or one of its checkpoints/step<N> folders (DeepSpeed "
            "state and rank files to train on from), not bare weights"
        )
    return run, tag


def run_improve(cfg: ImproveConfig, make_players: Callable | None = None, progress=True) -> dict:
    """Run (or continue) the loop; returns the report (improve.json's content). A `stage`
    other than all runs that one piece of a round and returns what it did.

    `make_players` builds a fresh `PlayerMaker` for each chunk of battles (default: an
    `AgentMaker` on `cfg.device`)."""
    loop = Improve(cfg, make_players, progress)
    if cfg.stage != "all":
        # One piece of a round: the report is rewritten by the stages that evaluate (zero,
        # finish), not by a chain's array tasks at once.
        loop.run_stage()
        return {"config": asdict(cfg), "stage": cfg.stage, "round": cfg.round}
    return loop.run()
