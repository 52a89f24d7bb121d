"""The loss's knobs (`model/loss.py` says what each objective computes), without torch: the run
config checks them where `pokeagent --help` and the launcher import it."""

from __future__ import annotations

from dataclasses import dataclass

OBJECTIVES = ("bc", "binary", "exp")
CRITIC_REDUCTIONS = ("mean", "min")


@dataclass
class LossConfig:
    value_weight: float = 0.5
    """Weight of the value (win-probability) loss against the policy loss."""
    objective: str = "bc"
    """Policy objective: bc, binary or exp (what each computes: model/loss.py)."""
    critic_weight: float = 1.0
    """Weight of the critic's TD loss (only with a critic)."""
    beta: float = 1.0
    """exp: the inverse temperature of exp(beta A)."""
    clip: float = 20.0
    """exp: the largest weight of one decision."""
    discount: float = 0.99
    """Per decision, in the TD target."""
    critic_reduce: str = "mean"
    """How the ensemble's heads give one Q: their mean, or their min (pessimistic)."""
    reward_scale: float = 1.0
    """Terminal reward: +scale for a win, -scale for a loss, 0 for a tie."""
    shaping_weight: float = 0.0
    """Shaped rewards from the public state between decisions (model/rewards.py); 0: off."""

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES} (got {self.objective!r})")
        if self.critic_reduce not in CRITIC_REDUCTIONS:
            raise ValueError(
                f"critic_reduce must be one of {CRITIC_REDUCTIONS} (got {self.critic_reduce!r})"
            )
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1] (got {self.discount})")
        if self.beta <= 0 or self.clip <= 0:
            raise ValueError(f"beta and clip must be > 0 (got {self.beta}, {self.clip})")
