"""Loss and metrics: masked cross-entropy on labelled decisions + value loss on every decision."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossConfig:
    value_weight: float = 0.5
    """Weight of the value (win-probability) loss against the policy loss."""


def compute_loss(
    logits: torch.Tensor,
    value_logits: torch.Tensor,
    batch: dict[str, torch.Tensor],
    cfg: LossConfig | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts (detached) plus metric sums for logging.

    Policy: cross-entropy over legal actions on decisions whose label is known (action >= 0,
    inside the window mask); -1 labels teach nothing. Value: binary cross-entropy of the value
    logit against the trajectory's outcome (1 win, 0 loss, 0.5 tie) at every real decision.
    """
    cfg = cfg or LossConfig()
    mask = batch["mask"]
    action = batch["action"].long()
    labelled = mask & (action >= 0)
    n_labelled = labelled.sum()
    picked = logits[labelled].float()
    targets = action[labelled]
    policy = F.cross_entropy(picked, targets, reduction="sum") / n_labelled.clamp(min=1)
    outcome = batch["outcome"].to(value_logits.dtype).unsqueeze(1).expand_as(value_logits)
    n_steps = mask.sum()
    value = F.binary_cross_entropy_with_logits(
        value_logits[mask].float(), outcome[mask].float(), reduction="sum"
    ) / n_steps.clamp(min=1)
    total = policy + cfg.value_weight * value
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
    return total, parts
