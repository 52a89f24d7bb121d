"""The loss's knobs (`model/loss.py` says what each objective computes), without torch: the run
config checks them where `pokeagent --help` and the launcher import it."""

from __future__ import annotations

from dataclasses import dataclass, fields

OBJECTIVES = ("bc", "binary", "exp")
CRITIC_REDUCTIONS = ("mean", "min")


@dataclass
class LossConfig:
    """The loss's knobs, declared once: `TrainConfig` extends this (they are its options)."""

    value_weight: float = 0.5
    """Weight of the value (win-probability) loss against the policy loss."""
    objective: str = "bc"
    """Policy objective: bc (plain imitation), binary (imitate where the critic's advantage is
    positive) or exp (weights min(exp(beta A), clip)); binary and exp train a critic."""
    critic_weight: float = 1.0
    """Weight of the critic's TD loss in the total (only with a critic)."""
    advantage_beta: float = 1.0
    """exp: the inverse temperature beta of exp(beta A)."""
    advantage_clip: float = 20.0
    """exp: the largest weight of one decision."""
    discount: float = 0.99
    """Per-decision discount of the TD target."""
    critic_reduce: str = "mean"
    """How the ensemble gives one Q (for targets and advantages): mean, or min (pessimistic)."""
    reward_scale: float = 1.0
    """Terminal reward: +scale for a win, -scale for a loss, 0 for a tie."""
    shaping_weight: float = 0.0
    """Shaped rewards between decisions (HP dealt and lost, faints, status: model/rewards.py),
    times this; 0: terminal rewards only."""

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES} (got {self.objective!r})")
        if self.critic_reduce not in CRITIC_REDUCTIONS:
            raise ValueError(
                f"critic_reduce must be one of {CRITIC_REDUCTIONS} (got {self.critic_reduce!r})"
            )
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1] (got {self.discount})")
        if self.advantage_beta <= 0 or self.advantage_clip <= 0:
            raise ValueError(
                "--advantage-beta and --advantage-clip must be > 0 "
                f"(got {self.advantage_beta}, {self.advantage_clip})"
            )

    def loss_config(self) -> LossConfig:
        """These knobs alone (a TrainConfig's, for model/loss.py)."""
        return LossConfig(**{f.name: getattr(self, f.name) for f in fields(LossConfig)})
