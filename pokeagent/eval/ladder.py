"""`pokeagent eval ladder`: round-robin games among checkpoints and baselines, rated together.

    pokeagent eval ladder runs/a/checkpoints/step00001000 runs/b@0.5 \
        --baselines random,maxpower,heuristic --games 1000 --out runs/ladder

Every pair of players meets `games` times on a local Showdown server of its own (one per pair:
a server's memory grows with its games), a few games at a time, sides alternated (half the games each player is p1). Each game is appended to
`games.jsonl` as it finishes, so a ladder that is stopped resumes where it was: a pair plays only
the games it still lacks, per side. A new checkpoint added to an existing ladder folder plays only
its own pairs, so a training loop can rate each round's checkpoint against everything before it.

Ratings: a Bradley-Terry fit over every game (ties half a win, one virtual tie per pair that met,
as in `eval battles`) on the Elo scale with RandomPlayer at 1000. Intervals: 95% percentile
bootstrap over games, resampled within each pair (the pairs' game counts are the design), all
refits anchored on Random, so Random's own interval is a point and the others' say how sure the
gap to Random is. Written to `ladder.json`, `ladder.md` and `ladder.png` in the output folder.

The players' randomness is seeded per pair (the baselines' global RNG, the agents' sampling); the
server seeds each battle itself, so games are not replayable from the ladder's seed alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pokeagent.eval.agent import AgentMaker
from pokeagent.eval.checkpoint import resolve_weights
from pokeagent.eval.ratings import wilson_interval
from pokeagent.progress import progress as progress_bar
from pokeagent.showdown.players import AGENT, BASELINES, PlayerSpec, unique_name

ANCHOR = "random"
ANCHOR_RATING = 1000.0
GAMES_FILE = "games.jsonl"
RATING_NOTE = (
    "Bradley-Terry over all games, ties half a win, one virtual tie per pair; Elo scale, "
    "RandomPlayer = 1000; 95% percentile bootstrap over games within each pair"
)


@dataclass
class LadderConfig:
    """A round-robin among checkpoints and baselines."""

    out: Path
    """Output folder: games.jsonl (appended, the resume point), ladder.json/.md/.png."""
    checkpoints: tuple[str, ...] = ()
    """Agents: `PATH[@TEMPERATURE]` or `agent:PATH[@TEMPERATURE]`, PATH a checkpoint folder, run
    directory (its latest checkpoint, resolved once at the start) or model.safetensors."""
    baselines: tuple[str, ...] = ("random", "maxpower", "heuristic")
    """poke-env baselines; `random` is the anchor and must be among them."""
    format: str = "gen9randombattle"
    """Showdown format (random-team formats only: no team files)."""
    games: int = 1000
    """Games per pair, sides alternated."""
    temperature: float = 0.0
    """Sampling temperature of a checkpoint given without `@TEMPERATURE` (0: greedy)."""
    concurrency: int = 4
    """Games of a pair played at once."""
    seed: int = 0
    """Seeds the players' randomness per pair, and the bootstrap."""
    bootstrap: int = 1000
    """Bootstrap resamples for the rating intervals."""
    battle_timeout_s: float = 240.0
    """A batch of games not finished in this long is abandoned; its unfinished games are errors
    (not written: a rerun plays them)."""
    device: str = "cpu"
    """Where agents' networks run."""

    def __post_init__(self):
        self.out = Path(self.out)
        self.checkpoints = tuple(self.checkpoints)
        self.baselines = tuple(self.baselines)
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {sorted(BASELINES)}")
        if ANCHOR not in self.baselines:
            raise ValueError(f"the ladder anchors {ANCHOR} at 1000: keep it among --baselines")
        if self.games < 1 or self.concurrency < 1 or self.bootstrap < 1:
            raise ValueError("games, concurrency and bootstrap must be >= 1")

    def specs(self) -> list[PlayerSpec]:
        """Baselines, then agents (checkpoints resolved to their weights file), duplicates out."""
        specs = [PlayerSpec(kind) for kind in self.baselines]
        for text in self.checkpoints:
            path = text.removeprefix(AGENT + ":")
            spec = PlayerSpec.parse(f"{AGENT}:{path}")
            # No `@TEMPERATURE` at the end: the ladder's own temperature.
            temperature = spec.temperature if spec.checkpoint != path else self.temperature
            weights = str(resolve_weights(spec.checkpoint).resolve())
            specs.append(PlayerSpec(AGENT, weights, temperature))
        return list(dict.fromkeys(specs))


def display_name(spec: PlayerSpec) -> str:
    """`heuristic`, or `<run>/<checkpoint>[@T]` for an agent (its folder names)."""
    if spec.kind != AGENT:
        return spec.kind
    checkpoint = Path(spec.checkpoint).parent
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    name = f"{run.name}/{checkpoint.name}"
    return f"{name}@{spec.temperature:g}" if spec.temperature else name


# -- the games file -----------------------------------------------------------------------------


def read_games(path: Path, format_id: str) -> list[dict]:
    """The finished games of a ladder folder (none where the file is absent)."""
    if not path.is_file():
        return []
    games, lines = [], path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            game = json.loads(line)
        except ValueError:
            raise ValueError(f"{path}:{number}: not JSON; delete the line to go on") from None
        if game["format"] != format_id:
            raise ValueError(
                f"{path}:{number}: a {game['format']} game in a {format_id} ladder; "
                "use another --out for another format"
            )
        games.append(game)
    return games


def _drop_cut_line(path: Path) -> None:
    """A ladder killed while writing leaves its last line cut: drop it before appending."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def plan_games(
    specs: list[PlayerSpec], games: list[dict], per_pair: int
) -> list[tuple[tuple[PlayerSpec, PlayerSpec], dict[str, int]]]:
    """The games each pair still lacks, by who is p1: of `per_pair`, the first player of the
    pair is p1 in ceil(half), the second in floor(half), less what `games` already has."""
    plan = []
    for a, b in itertools.combinations(specs, 2):
        done = Counter(g["p1"] for g in games if {g["a"], g["b"]} == {str(a), str(b)})
        todo = {
            str(a): max(0, (per_pair + 1) // 2 - done[str(a)]),
            str(b): max(0, per_pair // 2 - done[str(b)]),
        }
        if any(todo.values()):
            plan.append(((a, b), todo))
    return plan


def _seed(*parts) -> int:
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:4], "big")


# -- playing ------------------------------------------------------------------------------------


@dataclass
class _PairResult:
    errors: Counter = field(default_factory=Counter)
    agent_errors: int = 0


async def _play_pair(
    cfg: LadderConfig,
    maker: AgentMaker,
    server,
    specs: tuple[PlayerSpec, PlayerSpec],
    todo: dict[str, int],
    write,
    bar,
) -> _PairResult:
    """Play `todo[key]` games with player `key` as p1, for both players of the pair."""
    keys = (str(specs[0]), str(specs[1]))
    result = _PairResult()
    random.seed(_seed(cfg.seed, *keys))  # poke-env's baselines draw from the global RNG
    builds = itertools.count()

    def new_players():
        build = next(builds)
        return tuple(
            maker(
                spec,
                unique_name(f"{spec.kind[:5]}{'ab'[side]}"),
                server.server_configuration(),
                cfg.format,
                seed=_seed(cfg.seed, *keys, side, build),
                max_concurrent_battles=cfg.concurrency,
            )
            for side, spec in enumerate(specs)
        )

    async def retire(players) -> None:
        for player in players:
            result.agent_errors += getattr(player, "agent_errors", 0)
            with contextlib.suppress(Exception):  # a dead socket is what we want anyway
                await asyncio.wait_for(player.ps_client.stop_listening(), 10)

    players = new_players()
    while any(todo.values()):
        # The side with more games to go challenges (the challenger is p1).
        side = 0 if todo[keys[0]] >= todo[keys[1]] else 1
        chunk = min(cfg.concurrency, todo[keys[side]])
        first, second = players[side], players[1 - side]
        before = set(players[0].battles)
        hung = False
        try:
            await asyncio.wait_for(
                first.battle_against(second, n_battles=chunk), cfg.battle_timeout_s
            )
        except Exception as error:  # TimeoutError, a lost connection: count it and play on
            hung = True
            result.errors[f"play: {type(error).__name__}"] += 1
        rows = []
        for tag, battle in players[0].battles.items():
            if tag in before or not battle.finished:
                continue
            score = 1.0 if battle.won else 0.0 if battle.lost else 0.5
            p1 = keys[0] if battle.player_role == "p1" else keys[1]
            rows.append(
                {
                    "a": keys[0],
                    "b": keys[1],
                    "p1": p1,
                    "score": score,
                    "turns": battle.turn,
                    "format": cfg.format,
                }
            )
        result.errors["unfinished game"] += chunk - len(rows)
        write(rows)
        # Only finished games count: a rerun plays the rest.
        todo[keys[side]] -= chunk
        bar.update(chunk)
        if hung:
            await retire(players)
            players = new_players()
    await retire(players)
    if not result.errors["unfinished game"]:
        del result.errors["unfinished game"]
    return result


def _play_all(cfg, maker, plan, write, progress) -> tuple[Counter, int]:
    from pokeagent.showdown.server import ShowdownServer

    errors, agent_errors = Counter(), 0
    total = sum(sum(todo.values()) for _, todo in plan)
    with progress_bar(total=total, desc="ladder", unit="game", disable=not progress) as bar:
        for specs, todo in plan:
            bar.set_postfix_str(f"{display_name(specs[0])} vs {display_name(specs[1])}")
            # A server per pair: its memory grows with the games it has played (~0.4 MB each).
            with ShowdownServer() as server:
                result = asyncio.run(_play_pair(cfg, maker, server, specs, todo, write, bar))
            errors.update(result.errors)
            agent_errors += result.agent_errors
    return errors, agent_errors


# -- ratings ------------------------------------------------------------------------------------


def fit_bradley_terry(
    score: np.ndarray,
    games: np.ndarray,
    anchor: int,
    anchor_rating: float = ANCHOR_RATING,
    prior_games: float = 1.0,
    tolerance: float = 1e-10,
    max_iterations: int = 100_000,
) -> np.ndarray:
    """Elo-scale ratings from a result table: `score[..., i, j]` points i took from j (wins +
    ties/2), `games[..., i, j]` games between them (symmetric); leading dimensions are separate
    tables fitted at once (the bootstrap). Hunter's MM iterations, as `ratings.bradley_terry`
    over the same games (one virtual tie per pair that met). Every player must have played."""
    score = np.asarray(score, dtype=np.float64)
    games = np.asarray(games, dtype=np.float64)
    met = games > 0
    games = games + prior_games * met
    wins = (score + prior_games / 2 * met).sum(-1)
    if (games.sum(-1) == 0).any():
        raise ValueError("every player needs at least one game to be rated")
    strength = np.ones(wins.shape)
    for _ in range(max_iterations):
        denominator = (games / (strength[..., :, None] + strength[..., None, :])).sum(-1)
        updated = wins / denominator
        updated /= updated[..., anchor : anchor + 1]
        change = np.abs(updated / strength - 1).max()
        strength = updated
        if change < tolerance:
            break
    return anchor_rating + 400.0 * np.log10(strength)


def result_table(games: list[dict], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(wins, ties) as [n, n] counts from row i's view, over the games among `keys`."""
    index = {key: i for i, key in enumerate(keys)}
    wins = np.zeros((len(keys), len(keys)))
    ties = np.zeros((len(keys), len(keys)))
    for game in games:
        a, b = index.get(game["a"]), index.get(game["b"])
        if a is None or b is None:
            continue
        if game["score"] == 0.5:
            ties[a, b] += 1
            ties[b, a] += 1
        else:
            winner, loser = (a, b) if game["score"] == 1.0 else (b, a)
            wins[winner, loser] += 1
    return wins, ties


def rate(
    wins: np.ndarray, ties: np.ndarray, anchor: int, bootstrap: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(ratings [n], 95% intervals [n, 2]) from a result table; intervals by resampling each
    pair's games (multinomial over its win / tie / loss counts) and refitting."""
    games = wins + wins.T + ties
    ratings = fit_bradley_terry(wins + ties / 2, games, anchor)
    n = len(wins)
    upper = [(i, j) for i in range(n) for j in range(i + 1, n) if games[i, j] > 0]
    rng = np.random.default_rng(seed)
    sample_wins = np.zeros((bootstrap, n, n))
    sample_ties = np.zeros((bootstrap, n, n))
    for i, j in upper:
        total = int(games[i, j])
        draws = rng.multinomial(
            total, [wins[i, j] / total, ties[i, j] / total, wins[j, i] / total], bootstrap
        )
        sample_wins[:, i, j], sample_ties[:, i, j], sample_wins[:, j, i] = draws.T
        sample_ties[:, j, i] = sample_ties[:, i, j]
    sampled = fit_bradley_terry(
        sample_wins + sample_ties / 2,
        sample_wins + sample_wins.transpose(0, 2, 1) + sample_ties,
        anchor,
    )
    intervals = np.percentile(sampled, [2.5, 97.5], axis=0).T
    return ratings, intervals


# -- the whole ladder ---------------------------------------------------------------------------


def run_ladder(cfg: LadderConfig, progress: bool = True) -> dict:
    """Play the games every pair still lacks, fit the ratings, write ladder.json/.md/.png."""
    specs = cfg.specs()
    keys = [str(spec) for spec in specs]
    names = [display_name(spec) for spec in specs]
    if len(set(names)) < len(names):  # two runs' checkpoints with the same folder names
        names = keys
    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / GAMES_FILE
    _drop_cut_line(path)
    games = read_games(path, cfg.format)
    plan = plan_games(specs, games, cfg.games)
    already = len(games)

    started = time.monotonic()
    errors, agent_errors = Counter(), 0
    if plan:
        maker = AgentMaker(device=cfg.device)
        maker.preload(specs)
        with open(path, "a", encoding="utf-8") as handle:

            def write(rows: list[dict]) -> None:
                for row in rows:
                    handle.write(json.dumps(row) + "\n")
                handle.flush()
                games.extend(rows)

            errors, agent_errors = _play_all(cfg, maker, plan, write, progress)

    report = ladder_report(cfg, specs, names, games)
    report["seconds"] = time.monotonic() - started
    report["played"] = len(games) - already
    report["errors"] = dict(errors.most_common())
    report["agent_errors"] = agent_errors
    (cfg.out / "ladder.json").write_text(json.dumps(report, indent=2))
    (cfg.out / "ladder.md").write_text(markdown(report))
    plot(report, cfg.out / "ladder.png")
    report["out"] = str(cfg.out)
    return report


def ladder_report(cfg: LadderConfig, specs, names: list[str], games: list[dict]) -> dict:
    """Ratings and the pair table from the games among `specs` (other games in the file are
    kept there but left out)."""
    keys = [str(spec) for spec in specs]
    wins, ties = result_table(games, keys)
    played = (wins + wins.T + ties).sum(1) > 0
    rated = [i for i in range(len(keys)) if played[i]]
    ratings = {}
    if keys.index(str(PlayerSpec(ANCHOR))) in rated and len(rated) > 1:
        sub = np.ix_(rated, rated)
        anchor = rated.index(keys.index(str(PlayerSpec(ANCHOR))))
        points, intervals = rate(wins[sub], ties[sub], anchor, cfg.bootstrap, cfg.seed)
        for i, point, (low, high) in zip(rated, points, intervals, strict=True):
            ratings[names[i]] = {"rating": point, "low": low, "high": high}
    pairs = []
    for i, j in itertools.combinations(range(len(keys)), 2):
        total = wins[i, j] + wins[j, i] + ties[i, j]
        score = wins[i, j] + ties[i, j] / 2
        low, high = wilson_interval(score, int(total))
        pairs.append(
            {
                "a": names[i],
                "b": names[j],
                "games": int(total),
                "a_wins": int(wins[i, j]),
                "ties": int(ties[i, j]),
                "b_wins": int(wins[j, i]),
                "a_score": score / total if total else None,
                "ci95": [low, high],
            }
        )
    return {
        "format": cfg.format,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "players": [
            {"name": name, "key": key, "games": int((wins[i] + wins[:, i] + ties[i]).sum())}
            for i, (name, key) in enumerate(zip(names, keys, strict=True))
        ],
        "ratings": dict(sorted(ratings.items(), key=lambda kv: -kv[1]["rating"])),
        "rating_note": RATING_NOTE,
        "pairs": pairs,
    }


def markdown(report: dict) -> str:
    lines = [
        f"# Ladder: {len(report['players'])} players in {report['format']}",
        "",
        f"{report['config']['games']} games per pair, sides alternated; "
        f"{sum(p['games'] for p in report['pairs'])} games in all.",
        "",
        f"Ratings ({report['rating_note']}):",
        "",
        "| # | player | rating | 95% interval | games |",
        "|---|---|---|---|---|",
    ]
    games = {p["name"]: p["games"] for p in report["players"]}
    for rank, (name, r) in enumerate(report["ratings"].items(), 1):
        lines.append(
            f"| {rank} | {name} | {r['rating']:.0f} | {r['low']:.0f} to {r['high']:.0f} | "
            f"{games[name]} |"
        )
    order = list(report["ratings"]) + [
        p["name"] for p in report["players"] if p["name"] not in report["ratings"]
    ]
    share = {}
    for p in report["pairs"]:
        if p["games"]:
            share[p["a"], p["b"]] = p["a_score"]
            share[p["b"], p["a"]] = 1 - p["a_score"]
    lines += [
        "",
        "Score of the row against the column (wins + ties/2), %:",
        "",
        "| | " + " | ".join(order) + " |",
        "|---|" + "---|" * len(order),
    ]
    for row in order:
        cells = [
            "–" if row == col or (row, col) not in share else f"{100 * share[row, col]:.1f}"
            for col in order
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if report.get("errors") or report.get("agent_errors"):
        lines += [
            "",
            f"Errors (games not written; a rerun plays them): {report.get('errors')}; "
            f"agent decisions that fell back to a random move: {report.get('agent_errors', 0)}",
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    ratings = list(report["ratings"].items())[::-1]
    names = [name for name, _ in ratings]
    size = 0.6 * max(4, len(names))
    fig, axes = plt.subplots(
        1, 2, figsize=(6 + 1.6 * size, size + 2.5), gridspec_kw={"width_ratios": [1.2, 1]}
    )
    if ratings:
        values = np.array([r["rating"] for _, r in ratings])
        low = np.array([r["low"] for _, r in ratings])
        high = np.array([r["high"] for _, r in ratings])
        axes[0].errorbar(
            values,
            range(len(names)),
            xerr=[np.maximum(0, values - low), np.maximum(0, high - values)],
            fmt="o",
            capsize=5,
            color="#4c72b0",
        )
        axes[0].set_yticks(range(len(names)), names)
        axes[0].axvline(ANCHOR_RATING, color="grey", linewidth=0.8, linestyle="--")
    axes[0].set_xlabel("rating (Random = 1000), 95% bootstrap interval")
    axes[0].set_title(f"ladder, {report['format']}")
    order = names[::-1]
    share = np.full((len(order), len(order)), np.nan)
    position = {name: i for i, name in enumerate(order)}
    for p in report["pairs"]:
        if p["games"] and p["a"] in position and p["b"] in position:
            share[position[p["a"]], position[p["b"]]] = 100 * p["a_score"]
            share[position[p["b"]], position[p["a"]]] = 100 - 100 * p["a_score"]
    image = axes[1].imshow(share, cmap="RdBu", vmin=0, vmax=100)
    axes[1].set_xticks(range(len(order)), order, rotation=45, ha="right")
    axes[1].set_yticks(range(len(order)), order)
    for (i, j), value in np.ndenumerate(share):
        if not np.isnan(value):
            axes[1].text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8)
    axes[1].set_title("score of row vs column (%)")
    fig.colorbar(image, ax=axes[1], fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
