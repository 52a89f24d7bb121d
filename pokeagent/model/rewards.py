"""Rewards and transitions of a batch of trajectory windows: what the critic learns from.

The one place that says what a reward is:
- **Terminal**: at a trajectory's last decision, `reward_scale` x (+1 win, -1 loss, 0 tie), from
  the player's own outcome. Every other decision's terminal part is 0.
- **Shaping** (optional, `shaping_weight`, 0 by default): between a decision and the next one of
  the same trajectory, from the public state the encoder already holds (the `features` rows):
  `shaping_weight` x (HP the opponent lost - HP we lost, in whole Pokémon: the sum of HP
  fractions over the rows present at both decisions, so a Pokémon revealed in between counts
  nothing) + `shaping_weight` x (the opponent's new faints - our new faints) + `shaping_weight`
  x 0.25 x (the opponent's newly statused Pokémon - ours). Healing is HP gained (negative loss).
- **Transitions**: decision t of a window bootstraps from decision t+1 of the same window.
  A window cut from a longer trajectory ends with a decision whose next one is outside the
  window: it has no target and is **masked** out of the critic's loss (`has_target` False), as
  are padding steps. A trajectory's last decision has a target: its reward, with no bootstrap
  (`terminal`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pokeagent.data.encode import MON_FEATURES
from pokeagent.showdown import actions as A

_PRESENT = MON_FEATURES.index("present")
_FAINTED = MON_FEATURES.index("fainted")
_HP = MON_FEATURES.index("hp")
_STATUS = [i for i, name in enumerate(MON_FEATURES) if name.startswith("status_")]
STATUS_SHARE = 0.25
"""A new status condition, in units of a faint (shaping only)."""


@dataclass
class Transitions:
    reward: torch.Tensor
    """[B, K] float32: the reward received after decision t (terminal + shaping)."""
    terminal: torch.Tensor
    """[B, K] bool: decision t is its trajectory's last (no bootstrap)."""
    has_target: torch.Tensor
    """[B, K] bool: decision t is real and its target is known (terminal, or t+1 in the window)."""


def _side_totals(features: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per side (own rows 0-5, opponent rows 6-11): HP, faints and statused Pokémon [B, K, 2],
    and the present flags [B, K, 12]."""
    rows = features.float()
    present = rows[..., _PRESENT] > 0.5
    split = (A.N_TEAM, A.N_TEAM)
    fainted = torch.stack([part.sum(-1) for part in rows[..., _FAINTED].split(split, -1)], -1)
    status = (rows[..., _STATUS].sum(-1) > 0.5) & ~(rows[..., _FAINTED] > 0.5) & present
    statused = torch.stack([part.sum(-1) for part in status.float().split(split, -1)], -1)
    return rows[..., _HP], present, fainted, statused


def transitions(
    batch: dict[str, torch.Tensor], reward_scale: float = 1.0, shaping_weight: float = 0.0
) -> Transitions:
    """The rewards and bootstrap masks of a loader batch (`mask`, `last`, `outcome`, and with
    shaping the `features`). See the module docstring."""
    mask = batch["mask"]
    terminal = batch["last"] & mask
    outcome = batch["outcome"].float().unsqueeze(1)  # 1 win, 0 loss, 0.5 tie
    reward = terminal.float() * (reward_scale * (2.0 * outcome - 1.0))
    next_real = torch.zeros_like(mask)
    next_real[:, :-1] = mask[:, 1:]
    has_target = mask & (terminal | next_real)
    if shaping_weight:
        hp, present, fainted, statused = _side_totals(batch["features"])
        both = present[:, :-1] & present[:, 1:]
        hp_lost = torch.where(both, hp[:, :-1] - hp[:, 1:], torch.zeros_like(hp[:, 1:]))
        own_lost, opp_lost = hp_lost[..., : A.N_TEAM].sum(-1), hp_lost[..., A.N_TEAM :].sum(-1)
        new_faints = fainted[:, 1:] - fainted[:, :-1]
        new_status = statused[:, 1:] - statused[:, :-1]
        step = (
            (opp_lost - own_lost)
            + (new_faints[..., 1] - new_faints[..., 0])
            + STATUS_SHARE * (new_status[..., 1] - new_status[..., 0])
        )
        shaped = torch.zeros_like(reward)
        shaped[:, :-1] = torch.where(
            next_real[:, :-1] & ~terminal[:, :-1], step, torch.zeros_like(step)
        )
        reward = reward + shaping_weight * shaped
    return Transitions(reward=reward, terminal=terminal, has_target=has_target)
