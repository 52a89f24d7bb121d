"""Battles on the local simulator -> replays (public view) + ground truth of every decision.

Two ways to play:
- poke-env players on a local Showdown server: the baselines (`random`, `maxpower`,
  `heuristic`) and the trained agent (`agent:PATH[@TEMPERATURE]`, see
  `pokeagent.showdown.players.PlayerSpec`): real websocket players, `concurrency` battles at a
  time, each under a timeout;
- `sim-random`: the simulator's own RandomPlayerAI in-process (no server; seeded, deterministic).

Two players, or one player against a weighted pool of opponents (`opponents`): the battles are
split among the pool by weight. This layer does not import the network: players are built by a
`PlayerMaker` (`generate(cfg, players=...)`); the default builds baselines, and
`pokeagent.eval.agent.AgentMaker()` builds the agent too (the CLI passes it).

Either way each battle ends as a Showdown *input log* (seed, teams, every choice), and one code
path (`simtool.js replay`, via `pokeagent.showdown.simtool`) re-runs it to produce the public
spectator log and, for every decision, the request the player saw and the choice it made. So the
ground truth never depends on which player produced the battle.

Outputs in `out/`: `replays.jsonl` (served replay JSON, one battle a line: id, format, formatid,
players, log, rating, uploadtime), `ground_truth.jsonl` (same ids: decisions, winner, input
log), `summary.json`.

    pokeagent generate --format gen9randombattle --battles 200 --players heuristic,maxpower --out runs/gen
    pokeagent generate --battles 400 --players agent:runs/a@1.0 \
        --opponents heuristic=2,maxpower=1,agent:runs/a@1.5=1 --out runs/self
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pokeagent.progress import progress as progress_bar
from pokeagent.showdown import simtool
from pokeagent.showdown.install import install

if TYPE_CHECKING:
    from pokeagent.showdown.players import PlayerMaker

SIM_RANDOM = "sim-random"
"""Player kind: the simulator's RandomPlayerAI, played in-process without a server."""

SERVER_KINDS = ("random", "maxpower", "heuristic", "agent")
"""Player kinds that play through poke-env on a local server (`agent` as `agent:PATH[@T]`)."""


@dataclass
class GenerateConfig:
    """What `pokeagent generate` plays and where it writes."""

    out: Path
    """Output folder (created); replays.jsonl, ground_truth.jsonl and summary.json go there."""
    format: str = "gen9randombattle"
    """Showdown format id. Formats without random teams need `teams_file`."""
    battles: int = 100
    """How many battles to play."""
    players: tuple[str, ...] = ("heuristic", "maxpower")
    """Two player specs: random, maxpower, heuristic, agent:PATH[@TEMPERATURE] (server), or
    sim-random (both sides); one spec where `opponents` is given. Stored in canonical form
    (`agent:PATH@T`), which is each player's label in the summary and ground truth."""
    opponents: tuple[tuple[str, float], ...] = ()
    """A pool that `players[0]` meets, as (spec, weight) pairs (or `heuristic=2,maxpower=1,
    agent:runs/a@1.5=1`): the battles are split among them in proportion to the weights
    (largest remainders, the earlier entry first on a tie), each opponent played in a block."""
    seed: int = 0
    """Seeds battles and players. sim-random output is a pure function of it; server battles
    are not (the server seeds its battles itself and concurrency reorders them)."""
    concurrency: int = 4
    """Battles played at once (server) or simulator processes (sim-random)."""
    teams_file: Path | None = None
    """Packed teams, one a line, for formats without random teams (`pokeagent showdown teams`)."""
    battle_timeout_s: float = 300.0
    """A server battle still running after this long is abandoned and counted as timed out."""
    sim_move_prob: float | None = None
    """sim-random only: chance that RandomPlayerAI prefers a move over a switch."""

    def __post_init__(self):
        self.out = Path(self.out)
        self.players = tuple(self.players)
        if isinstance(self.opponents, str):
            self.opponents = tuple((str(s), w) for s, w in _parse_pool(self.opponents))
        self.opponents = tuple((str(spec), float(weight)) for spec, weight in self.opponents)
        wanted = 1 if self.opponents else 2
        if len(self.players) != wanted:
            raise ValueError(
                f"need {'one player and a pool of opponents' if self.opponents else 'exactly two players'}"
                f", got players {self.players}"
            )
        kinds = {spec.partition(":")[0] for spec in self.players + self.specs_of_pool()}
        if SIM_RANDOM in kinds:
            if kinds != {SIM_RANDOM} or self.opponents:
                raise ValueError(
                    "sim-random plays both sides in the simulator; it cannot face a server player"
                )
        else:
            self.players = tuple(_canonical(spec) for spec in self.players)
            self.opponents = tuple((_canonical(spec), w) for spec, w in self.opponents)
            pool = self.specs_of_pool()
            if len(set(pool)) != len(pool):
                raise ValueError(f"an opponent appears twice in the pool: {pool}")
            if any(weight <= 0 for _, weight in self.opponents):
                raise ValueError(f"pool weights must be > 0: {self.opponents}")
        if self.battles < 1 or self.concurrency < 1:
            raise ValueError("battles and concurrency must be >= 1")
        if self.teams_file is None and not is_random_team_format(self.format):
            raise ValueError(
                f"format {self.format} needs teams: pass --teams FILE (packed teams, one a line; "
                f"make them with `pokeagent showdown teams --format {self.format} --count 100 --out FILE`)"
            )

    @property
    def uses_server(self) -> bool:
        return self.players[0] != SIM_RANDOM

    def specs_of_pool(self) -> tuple[str, ...]:
        return tuple(spec for spec, _ in self.opponents)

    def matchups(self) -> list[tuple[tuple[str, str], int]]:
        """((spec, spec), battles) per pairing played, in playing order; a pool opponent whose
        share rounds to no battle is left out."""
        if not self.opponents:
            return [((self.players[0], self.players[1]), self.battles)]
        counts = split_by_weight(self.battles, [w for _, w in self.opponents])
        return [
            ((self.players[0], spec), n)
            for (spec, _), n in zip(self.opponents, counts, strict=True)
            if n
        ]

    def labels(self) -> list[str]:
        """Every player label of the summary, in order (the same spec on both sides of a
        pairing gets #1/#2)."""
        labels = []
        for pair, _ in self.matchups():
            labels += [label for label in player_labels(pair) if label not in labels]
        return labels


def _canonical(text: str) -> str:
    from pokeagent.showdown.players import PlayerSpec

    return str(PlayerSpec.parse(text))


def _parse_pool(text: str):
    from pokeagent.showdown.players import parse_pool

    return parse_pool(text)


def split_by_weight(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainders; ties to the earlier)."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


@dataclass
class GenerateSummary:
    """What a generate run produced."""

    battles: int = 0
    """Battles written (complete, with ground truth)."""
    wins: dict[str, int] = field(default_factory=dict)
    """Wins per player label, plus 'tie'."""
    matchups: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per pairing (`A vs B`): battles written, wins per label, 'tie'."""
    mean_turns: float = 0.0
    decisions: int = 0
    """Ground-truth decisions written, both sides."""
    timed_out: int = 0
    """Server battles abandoned after battle_timeout_s."""
    failed: dict[str, int] = field(default_factory=dict)
    """Battles not written, by reason."""
    agent_errors: int = 0
    """Exceptions inside players' choose_move (each replaced by a random legal move)."""
    seconds: float = 0.0
    battles_per_min: float = 0.0

    def table(self) -> str:
        wins = ", ".join(f"{k} {v}" for k, v in self.wins.items())
        return (
            f"battles {self.battles} played in {self.seconds:.1f} s ({self.battles_per_min:.0f}/min); "
            f"wins: {wins}; mean turns {self.mean_turns:.1f}; decisions {self.decisions}; "
            f"timed out {self.timed_out}; failed {dict(self.failed) or 0}; agent errors {self.agent_errors}"
        )


def is_random_team_format(format_id: str) -> bool:
    """True for formats whose teams the simulator generates (random battles, cups)."""
    return any(key in format_id for key in ("random", "challengecup", "hackmonscup"))


def battle_id(format_id: str, seed) -> str:
    """A stable id like the public site's (`gen9randombattle-1234567890`), from the battle seed."""
    digest = hashlib.sha256(json.dumps(seed).encode()).digest()
    return f"{format_id}-{int.from_bytes(digest[:8], 'big') % 10**10:010d}"


def player_labels(players: tuple[str, ...]) -> tuple[str, ...]:
    """Labels for the summary; the same kind on both sides gets #1/#2."""
    if players[0] == players[1]:
        return f"{players[0]}#1", f"{players[1]}#2"
    return players


def served_replay(record: dict, uploadtime: int) -> dict:
    """The battle in the public replay site's JSON shape (spectator log, no exact HP)."""
    return {
        "id": record["id"],
        "format": record["format_name"],
        "formatid": record["format"],
        "players": record["players"],
        "log": record["log"],
        "rating": None,
        "uploadtime": uploadtime,
        # Not on the public site: both players' own teams, known to their owners (parse.py).
        "teams": record.get("teams"),
    }


def ground_truth(record: dict, kinds: dict[str, str]) -> dict:
    """The decisions record for one battle; `kinds` maps player name -> player label."""
    return {
        "id": record["id"],
        "formatid": record["format"],
        "players": record["players"],
        "player_kinds": [kinds.get(name, "?") for name in record["players"]],
        "winner": record["winner"],
        "turns": record["turns"],
        "end": record.get("end", "normal"),
        "seed": record["seed"],
        "input_log": record["input_log"],
        "decisions": record["decisions"],
    }


class _Writer:
    """Appends replays and ground truth as battles complete, and tallies the summary."""

    def __init__(self, cfg: GenerateConfig, kinds: dict[str, str]):
        cfg.out.mkdir(parents=True, exist_ok=True)
        self.kinds = kinds
        self.labels = cfg.labels()
        pairs = [player_labels(pair) for pair, _ in cfg.matchups()]
        self.matchups = {frozenset(labels): " vs ".join(labels) for labels in pairs}
        self.replays = open(  # noqa: SIM115 - open for the writer's lifetime, closed in close()
            cfg.out / "replays.jsonl", "w", encoding="utf-8"
        )
        self.truth = open(  # noqa: SIM115
            cfg.out / "ground_truth.jsonl", "w", encoding="utf-8"
        )
        self.summary = GenerateSummary(
            wins={label: 0 for label in self.labels} | {"tie": 0},
            matchups={
                " vs ".join(labels): {"battles": 0} | dict.fromkeys(labels, 0) | {"tie": 0}
                for labels in pairs
            },
        )
        self.turns = 0
        self.uploadtime = int(time.time())

    def write(self, record: dict) -> None:
        if "error" in record:
            self.fail(f"replay: {record['error']}")
            return
        self.replays.write(
            json.dumps(served_replay(record, self.uploadtime), ensure_ascii=False) + "\n"
        )
        self.truth.write(json.dumps(ground_truth(record, self.kinds), ensure_ascii=False) + "\n")
        winner = record["winner"]
        outcome = self.kinds.get(winner, "tie") if winner else "tie"
        self.summary.wins[outcome] += 1
        key = self.matchups.get(frozenset(self.kinds.get(n) for n in record["players"]))
        if key is not None:
            self.summary.matchups[key]["battles"] += 1
            self.summary.matchups[key][outcome] += 1
        self.summary.battles += 1
        self.summary.decisions += len(record["decisions"])
        self.turns += record["turns"]

    def fail(self, reason: str) -> None:
        self.summary.failed[reason] = self.summary.failed.get(reason, 0) + 1

    def close(self, seconds: float) -> GenerateSummary:
        self.replays.close()
        self.truth.close()
        s = self.summary
        s.seconds = seconds
        s.mean_turns = self.turns / s.battles if s.battles else 0.0
        s.battles_per_min = 60.0 * s.battles / seconds if seconds > 0 else 0.0
        return s


def generate(
    cfg: GenerateConfig, progress: bool = True, players: PlayerMaker | None = None
) -> GenerateSummary:
    """Play `cfg.battles` battles and write replays + ground truth; returns the summary.

    `players` builds each server player from its spec (default: baselines only,
    `pokeagent.showdown.players.make_player`; `pokeagent.eval.agent.AgentMaker()` for the agent).
    """
    if cfg.uses_server and players is None:
        from pokeagent.showdown.players import AGENT, make_player

        if any(spec.startswith(AGENT + ":") for spec in cfg.players + cfg.specs_of_pool()):
            raise ValueError(
                "agent players need the network: generate(cfg, players="
                "pokeagent.eval.agent.AgentMaker())"
            )
        players = make_player
    package = install()
    if cfg.uses_server:
        summary = _generate_on_server(cfg, package, progress, players)
    else:
        summary = _generate_in_simulator(cfg, package, progress)
    summary_path = cfg.out / "summary.json"
    summary_path.write_text(
        json.dumps({"config": _jsonable(cfg), "summary": asdict(summary)}, indent=2)
    )
    return summary


def _jsonable(cfg: GenerateConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


def _generate_in_simulator(cfg: GenerateConfig, package: Path, progress: bool) -> GenerateSummary:
    names = ("sim-random-1", "sim-random-2")
    labels = player_labels(cfg.players)
    writer = _Writer(cfg, dict(zip(names, labels, strict=True)))
    started = time.monotonic()
    records = simtool.run_random_battles(
        package,
        cfg.format,
        cfg.battles,
        cfg.seed,
        teams_file=cfg.teams_file,
        move_prob=cfg.sim_move_prob,
        names=names,
        processes=cfg.concurrency,
    )
    with progress_bar(
        total=cfg.battles, desc="battles", unit="battle", disable=not progress
    ) as bar:
        for record in records:
            writer.write(record)
            bar.update(1)
    return writer.close(time.monotonic() - started)


def _read_teams(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    teams = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not teams:
        raise ValueError(f"{path}: no teams (expected packed teams, one a line)")
    return teams


def _generate_on_server(
    cfg: GenerateConfig, package: Path, progress: bool, players: PlayerMaker
) -> GenerateSummary:
    from pokeagent.showdown.server import ShowdownServer

    logs_dir = cfg.out / "server-logs"
    items, server_winners = [], {}
    with ShowdownServer(logs_dir=logs_dir) as server:
        played = asyncio.run(_play_all(cfg, server, progress, players))
        # The server writes each battle's log asynchronously after the battle: read them all
        # before stopping it, or the last few are lost.
        for _tag, item, server_log in _server_items(logs_dir, played.battle_tags):
            if item is None:
                played.failed["server log missing"] += 1
                continue
            items.append(item)
            server_winners[item["id"]] = server_log.get("winner") or None
    writer = _Writer(cfg, played.kinds)
    writer.summary.timed_out = played.timed_out
    writer.summary.agent_errors = played.agent_errors
    writer.summary.failed.update(played.failed)
    with progress_bar(
        total=len(items), desc="ground truth", unit="battle", disable=not progress
    ) as bar:
        for record in simtool.replay_input_logs(package, items):
            # Same simulator version, same seed and choices: the re-run must end as the server's did.
            if "error" not in record and record["winner"] != server_winners[record["id"]]:
                writer.fail("re-run diverged from the server")
            else:
                writer.write(record)
            bar.update(1)
    return writer.close(played.seconds)


def rerun_server_battles(
    logs_dir: Path, battle_tags: list[str], package: Path
) -> Iterator[tuple[str, dict]]:
    """(tag, record) for battles a local server played (their `.log.json` under `logs_dir`),
    re-run through the simulator: spectator log, team sheets and ground truth, as `generate`
    writes them. A battle whose server log never appeared is left out."""
    found = [(tag, item) for tag, item, _ in _server_items(logs_dir, battle_tags) if item]
    records = simtool.replay_input_logs(package, [item for _, item in found])
    yield from zip([tag for tag, _ in found], records, strict=True)


def _server_items(
    logs_dir: Path, battle_tags: list[str]
) -> Iterator[tuple[str, dict | None, dict | None]]:
    """(tag, simtool replay item, server log) per battle; item and log None where the server
    log never appeared."""
    for tag in battle_tags:
        server_log = _find_server_log(logs_dir, tag)
        if server_log is None:
            yield tag, None, None
            continue
        item_id = battle_id(server_log["format"], server_log["seed"])
        yield tag, {"id": item_id, "input_log": server_log["inputLog"]}, server_log


def _find_server_log(logs_dir: Path, battle_tag: str, wait_s: float = 15.0) -> dict | None:
    """The server's `.log.json` for `battle_tag`; the server writes it asynchronously after the end."""
    roomid = battle_tag.removeprefix(">").removeprefix("battle-")
    pattern = str(logs_dir / "*" / "*" / "*" / f"{roomid}.log.json")
    deadline = time.monotonic() + wait_s
    while True:
        for path in glob.glob(pattern):
            try:
                return json.loads(Path(path).read_text())
            except (OSError, ValueError):
                pass  # still being written
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


@dataclass
class _Played:
    battle_tags: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    timed_out: int = 0
    agent_errors: int = 0
    failed: Counter = field(default_factory=Counter)
    seconds: float = 0.0


async def _play_all(cfg: GenerateConfig, server, progress: bool, players: PlayerMaker) -> _Played:
    from pokeagent.showdown.players import PlayerSpec, TeamPool, unique_name

    random.seed(cfg.seed)  # poke-env's baselines draw from the global RNG
    teams = _read_teams(cfg.teams_file)
    matchups = cfg.matchups()
    played = _Played()
    # (pairing, battle number within it): each pairing in a block, so a worker keeps its pair.
    pending = [(m, number) for m, (_, count) in enumerate(matchups) for number in range(count)]
    bar = progress_bar(total=cfg.battles, desc="battles", unit="battle", disable=not progress)
    made = Counter()

    def new_pair(worker: int, matchup: int):
        pair = []
        specs = matchups[matchup][0]
        for side, (spec, label) in enumerate(zip(specs, player_labels(specs), strict=True)):
            name = unique_name(f"{spec[:5]}{worker}{'ab'[side]}")
            # Every player built gets its own seed (teams, the agent's sampling).
            seed = cfg.seed * 100_000 + worker * 1000 + made[worker] * 2 + side
            team = TeamPool(teams, seed=seed) if teams else None
            pair.append(
                players(
                    PlayerSpec.parse(spec),
                    name,
                    server.server_configuration(),
                    cfg.format,
                    team=team,
                    seed=seed,
                )
            )
            played.kinds[name] = label
        made[worker] += 1
        return pair

    async def retire(pair) -> None:
        for player in pair:
            played.agent_errors += player.agent_errors
            # A socket that is already dead is what we want anyway.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(player.ps_client.stop_listening(), 10)

    async def worker(index: int) -> None:
        pair, current = None, None
        while pending:
            matchup, number = pending.pop(0)
            if matchup != current:
                if pair is not None:
                    await retire(pair)
                pair, current = new_pair(index, matchup), matchup
            # Alternate who challenges, so each kind plays both p1 and p2.
            first, second = pair if number % 2 == 0 else pair[::-1]
            before = set(first.battles)
            try:
                await asyncio.wait_for(
                    first.battle_against(second, n_battles=1), cfg.battle_timeout_s
                )
            except TimeoutError:
                played.timed_out += 1
                await retire(pair)
                pair = new_pair(index, matchup)
                bar.update(1)
                continue
            except Exception as error:  # a lost connection etc.: count it, play on
                played.failed[f"play: {type(error).__name__}"] += 1
                await retire(pair)
                pair = new_pair(index, matchup)
                bar.update(1)
                continue
            new_tags = [tag for tag in first.battles if tag not in before]
            if len(new_tags) == 1 and first.battles[new_tags[0]].finished:
                played.battle_tags.append(new_tags[0])
            else:
                played.failed["battle not finished"] += 1
            bar.update(1)
        if pair is not None:
            await retire(pair)

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(min(cfg.concurrency, cfg.battles))))
    played.seconds = time.monotonic() - started
    bar.close()
    return played
