"""Win-rate intervals and Elo-style ratings from game results.

Ratings are a Bradley-Terry fit (strength s_i, P(i beats j) = s_i / (s_i + s_j)) by Hunter's
MM iterations over every game played, ties counting half a win to each side, shown on the Elo
scale (400 log10 s) with one player anchored (RandomPlayer at 1000). Each pair that met gets one
virtual tie as a prior, so a 100% record gives a large but finite rating.
"""

from __future__ import annotations

import math
from collections import defaultdict

Z95 = 1.959963984540054


def wilson_interval(wins: float, games: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a win rate (ties as half wins); (0, 1) with no games."""
    if games <= 0:
        return 0.0, 1.0
    p = wins / games
    centre = (p + z * z / (2 * games)) / (1 + z * z / games)
    half = z * math.sqrt(p * (1 - p) / games + z * z / (4 * games * games)) / (1 + z * z / games)
    # At 0% or 100% the bound is exact (the formula leaves rounding crumbs there).
    low = 0.0 if wins <= 0 else max(0.0, centre - half)
    high = 1.0 if wins >= games else min(1.0, centre + half)
    return low, high


def bradley_terry(
    results: list[tuple[str, str, float]],
    anchor: str,
    anchor_rating: float = 1000.0,
    iterations: int = 2000,
    prior_games: float = 1.0,
) -> dict[str, float]:
    """Elo-scale ratings from (player, opponent, score) games (score 1 win, 0.5 tie, 0 loss)."""
    wins: dict[str, float] = defaultdict(float)
    games: dict[tuple[str, str], float] = defaultdict(float)
    for a, b, score in results:
        wins[a] += score
        wins[b] += 1.0 - score
        games[a, b] += 1.0
        games[b, a] += 1.0
    for a, b in list(games):
        games[a, b] += prior_games
        wins[a] += prior_games / 2
    players = sorted({p for pair in games for p in pair})
    if anchor not in players:
        raise ValueError(f"anchor {anchor!r} played no game")
    strength = dict.fromkeys(players, 1.0)
    for _ in range(iterations):
        updated = {}
        for i in players:
            denominator = sum(
                n / (strength[i] + strength[j]) for (a, j), n in games.items() if a == i
            )
            updated[i] = wins[i] / denominator if denominator else strength[i]
        scale = updated[anchor]
        converged = all(abs(updated[p] / scale - strength[p]) < 1e-10 for p in players)
        strength = {p: updated[p] / scale for p in players}
        if converged:
            break
    return {p: anchor_rating + 400.0 * math.log10(strength[p]) for p in players}
