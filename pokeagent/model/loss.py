"""Loss and metrics: the policy objective on labelled decisions, the value loss on every decision
and, with a critic, its temporal-difference loss.

Policy objectives (`LossConfig.objective`):
- `bc`: plain imitation, cross-entropy of the logged action (the loss before the critic existed,
  bitwise: `tests/test_critic.py` holds it to a frozen copy);
- `binary`: imitation of the decisions whose advantage is positive, weight 1[A(s,a) > 0]
  (CRR's binary filter; Metamon's offline RL);
- `exp`: imitation weighted by min(exp(beta A(s,a)), clip) (AWR / CRR's exponential weights).
A(s,a) = Q(s,a) - sum_a' pi(a'|s) Q(s,a') over the legal actions, from the critic's online heads
(reduced over the ensemble by `critic_reduce`) and the current policy, detached: the weights never
pass gradients. The sum is over labelled decisions and divided by their count (not by the sum of
the weights), so a filter that keeps fewer decisions takes smaller steps.

Critic (Q over the action space, `model/network.py` `Critic`): each head regresses, on labelled
decisions with a target (`model/rewards.py`: terminal, or the next decision in the window), to
y = r + discount x (not terminal) x sum_a' pi(a'|s') Qtarget(s', a'), an expected-SARSA target
for the current policy from the target heads (reduced over the ensemble the same way).
Unlabelled decisions (-1) train no head (their action is unknown) but are the s' of the decision
before them, and a terminal reward still reaches the critic through a labelled last decision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pokeagent.model.loss_config import LossConfig
from pokeagent.model.rewards import transitions

__all__ = ["LossConfig", "compute_loss", "critic_terms"]


def reduce_heads(q: torch.Tensor, how: str) -> torch.Tensor:
    """[..., E, A] -> [..., A]: the ensemble's mean or min."""
    return q.mean(-2) if how == "mean" else q.amin(-2)


def policy_probs(logits: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
    """pi(a|s) over the legal actions, detached, fp32; 0 where illegal and on decisions with no
    legal action (padding), never NaN."""
    safe = logits.detach().float().masked_fill(~legal, -1e30)
    return torch.softmax(safe, dim=-1) * legal


def advantage_weights(advantage: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """The policy weight of each decision from its advantage: 1[A > 0] or min(exp(beta A), clip)."""
    if cfg.objective == "binary":
        return (advantage > 0).float()
    if cfg.objective == "exp":
        return torch.exp(cfg.advantage_beta * advantage).clamp(max=cfg.advantage_clip)
    return torch.ones_like(advantage)


def critic_terms(
    logits: torch.Tensor,
    q: torch.Tensor,
    q_target: torch.Tensor,
    batch: dict[str, torch.Tensor],
    cfg: LossConfig,
) -> dict[str, torch.Tensor]:
    """The critic's TD loss and, per labelled decision, the advantage of the logged action.

    q, q_target [B, K, E, A]. Returns `critic_loss` (scalar, with gradients), `advantage` [B, K]
    (detached; 0 where unlabelled), `q_taken` [B, K] (the ensemble's Q of the logged action,
    detached) and the masks `labelled` and `trained` (labelled decisions with a TD target)."""
    legal = batch["legal"]
    action = batch["action"].long()
    labelled = batch["mask"] & (action >= 0)
    steps = transitions(batch, cfg.reward_scale, cfg.shaping_weight)
    probs = policy_probs(logits, legal)  # [B, K, A]
    target_value = (probs * reduce_heads(q_target.float(), cfg.critic_reduce)).sum(-1)
    next_value = torch.zeros_like(target_value)
    next_value[:, :-1] = target_value[:, 1:]
    y = steps.reward + cfg.discount * (~steps.terminal).float() * next_value  # [B, K]
    index = action.clamp(min=0)[..., None, None].expand(*action.shape, q.shape[-2], 1)
    q_logged = q.float().gather(-1, index).squeeze(-1)  # [B, K, E]
    trained = labelled & steps.has_target
    error = (q_logged - y.unsqueeze(-1)) ** 2
    n_trained = trained.sum()
    critic_loss = error[trained].mean(-1).sum() / n_trained.clamp(min=1)
    with torch.no_grad():
        q_bar = reduce_heads(q.detach().float(), cfg.critic_reduce)
        q_taken = q_bar.gather(-1, action.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        baseline = (probs * q_bar).sum(-1)
        advantage = torch.where(labelled, q_taken - baseline, torch.zeros_like(q_taken))
    return {
        "critic_loss": critic_loss,
        "advantage": advantage,
        "q_taken": q_taken,
        "labelled": labelled,
        "trained": trained,
    }


def compute_loss(
    logits: torch.Tensor,
    value_logits: torch.Tensor,
    batch: dict[str, torch.Tensor],
    cfg: LossConfig | None = None,
    q: torch.Tensor | None = None,
    q_target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts (detached) plus metric sums for logging.

    Policy: the objective's loss over legal actions on decisions whose label is known (action >=
    0, inside the window mask); -1 labels teach nothing. Value: binary cross-entropy of the value
    logit against the trajectory's outcome (1 win, 0 loss, 0.5 tie) at every real decision.
    Critic (where `q` is given): the TD loss of the module docstring, and its metric sums.
    """
    cfg = cfg or LossConfig()
    if cfg.objective != "bc" and q is None:
        raise ValueError(f"objective {cfg.objective!r} needs a critic's Q-values")
    mask = batch["mask"]
    action = batch["action"].long()
    labelled = mask & (action >= 0)
    n_labelled = labelled.sum()
    picked = logits[labelled].float()
    targets = action[labelled]
    critic = critic_terms(logits, q, q_target, batch, cfg) if q is not None else None
    if cfg.objective == "bc":
        policy = F.cross_entropy(picked, targets, reduction="sum") / n_labelled.clamp(min=1)
    else:
        weights = advantage_weights(critic["advantage"][labelled], cfg)
        nll = F.cross_entropy(picked, targets, reduction="none")
        policy = (weights * nll).sum() / n_labelled.clamp(min=1)
    outcome = batch["outcome"].to(value_logits.dtype).unsqueeze(1).expand_as(value_logits)
    n_steps = mask.sum()
    value = F.binary_cross_entropy_with_logits(
        value_logits[mask].float(), outcome[mask].float(), reduction="sum"
    ) / n_steps.clamp(min=1)
    total = policy + cfg.value_weight * value
    if critic is not None:
        total = total + cfg.critic_weight * critic["critic_loss"]
    with torch.no_grad():
        top3 = picked.topk(min(3, picked.shape[-1]), dim=-1).indices if n_labelled else picked
        parts = {
            "loss": total.detach(),
            "policy_loss": policy.detach(),
            "value_loss": value.detach(),
            "top1_correct": (picked.argmax(-1) == targets).sum() if n_labelled else n_labelled * 0,
            "top3_correct": (top3 == targets.unsqueeze(-1)).any(-1).sum()
            if n_labelled
            else n_labelled * 0,
            "labelled": n_labelled,
            "decisions": n_steps,
            # Calibration of the win probability: squared error summed over real decisions.
            "value_brier_sum": (
                (torch.sigmoid(value_logits[mask].float()) - outcome[mask].float()) ** 2
            ).sum(),
        }
        if critic is not None:
            parts.update(critic_parts(critic, labelled, cfg))
    return total, parts


CRITIC_SUMS = (
    "critic_loss",
    "critic_trained",
    "q_taken_sum",
    "advantage_sum",
    "advantage_sq_sum",
    "kept",
    "weight_sum",
)
"""The critic's metric sums in `compute_loss`'s parts (the trainer sums them over ranks and steps)."""


def critic_parts(critic: dict, labelled: torch.Tensor, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """Detached sums for logging: the TD loss, Q of the logged actions, the advantage's first two
    moments, and how many labelled decisions the objective keeps (weight > 0) and their weights."""
    advantage = critic["advantage"][labelled]
    weights = advantage_weights(advantage, cfg)
    return {
        "critic_loss": critic["critic_loss"].detach(),
        "critic_trained": critic["trained"].sum(),
        "q_taken_sum": critic["q_taken"][labelled].sum(),
        "advantage_sum": advantage.sum(),
        "advantage_sq_sum": (advantage**2).sum(),
        "kept": (weights > 0).sum(),
        "weight_sum": weights.sum(),
    }
