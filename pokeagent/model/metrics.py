"""The offline metrics of a network on whole trajectories: what `pokeagent eval offline` reports
and what the trainer's periodic validation records (one code path for both).

Each trajectory is cut into non-overlapping chunks of K decisions from its start (the last one
padded), so every decision is scored exactly once; a chunk's first decision sees no earlier
context, as a training window that starts there.

Metrics: top-1/top-3 accuracy and policy loss (cross-entropy over legal actions) on decisions
with a known label, overall and by decision kind, by the player's rating band and by turn bucket;
value log-loss, Brier score and a calibration table (10 bins of predicted win probability: count,
mean prediction, observed win rate, ties counting 1/2) on every decision.

With a critic (`critic_heads` > 0): its value V(s) = sum_a pi(a|s) Q(s,a) read as a win
probability (V + 1) / 2 (terminal rewards +-1: exact at the last decision, shrunk towards 1/2 by
the discount before it), its Brier score against the outcome; on labelled decisions, how often
the critic's best legal action is the logged one (`critic_top1`), and the share of logged actions
with a positive advantage (`advantage_positive`: what the `binary` objective keeps) and their
mean Q (`q_taken`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pokeagent.data.loader import collate, cut_window
from pokeagent.showdown.actions import KIND_NAMES

RATING_EDGES = (1200, 1400, 1600, 1800)
RATING_BANDS = ("unrated", "<1200", "1200-1399", "1400-1599", "1600-1799", "1800+")
"""By the player's own rating (info[1]); -1 (unknown) is `unrated`."""
TURN_EDGES = (1, 6, 11, 21, 41)
TURN_BUCKETS = ("0", "1-5", "6-10", "11-20", "21-40", "41+")
"""Turn 0: team preview and anything before the first `|turn|`."""
CALIBRATION_BINS = 10

_FIELDS = (
    "decisions",
    "labelled",
    "top1",
    "top3",
    "policy_nll",
    "value_nll",
    "brier",
    "predicted",
    "outcome",
    "critic_brier",
    "critic_top1",
    "advantage_positive",
    "q_taken",
)
_CRITIC_FIELDS = _FIELDS[-4:]


def batches(
    samples: Iterable[dict], window: int, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Non-overlapping chunks of `window` decisions, `batch_size` per batch (the last one smaller);
    the loader's collate plus `rating` (the player's own rating per chunk)."""
    chunks, infos = [], []
    for sample in samples:
        for start in range(0, len(sample["action"]), window):
            chunks.append(cut_window(sample, start, window))
            infos.append(sample["info"])
            if len(chunks) == batch_size:
                yield _collate(chunks, infos)
                chunks, infos = [], []
    if chunks:
        yield _collate(chunks, infos)


def _collate(chunks: list[dict], infos: list[np.ndarray]) -> dict[str, torch.Tensor]:
    batch = collate(chunks, infos)
    batch["rating"] = torch.from_numpy(np.stack(infos)[:, 1].astype(np.int64))
    return batch


# ---------------------------------------------------------------------- metrics
class _Sums:
    """Per-group sums of the `_FIELDS` (float64: exact counts, order-stable totals)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.table = np.zeros((len(names), len(_FIELDS)))

    def add(self, group: np.ndarray, terms: dict[str, np.ndarray]) -> None:
        for j, field in enumerate(_FIELDS):
            self.table[:, j] += np.bincount(group, weights=terms[field], minlength=len(self.names))

    def row(self, index: int) -> dict[str, float]:
        return dict(zip(_FIELDS, self.table[index].tolist(), strict=True))


def _critic_columns(
    logits: torch.Tensor, q: torch.Tensor, batch: dict[str, torch.Tensor], labelled: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The critic's per-decision fields (module docstring), ensemble mean."""
    from pokeagent.model.loss import policy_probs

    legal = batch["legal"]
    q_bar = q.float().mean(-2)  # [B, K, A]
    value = (policy_probs(logits, legal) * q_bar).sum(-1)
    outcome = batch["outcome"].float().unsqueeze(1).expand_as(value)
    action = batch["action"].long().clamp(min=0).unsqueeze(-1)
    q_taken = q_bar.gather(-1, action).squeeze(-1)
    best = q_bar.masked_fill(~legal, float("-inf")).argmax(-1, keepdim=True)
    zero = torch.zeros_like(value)
    return {
        "critic_brier": ((value.clamp(-1, 1) + 1) / 2 - outcome) ** 2,
        "critic_top1": (labelled & (best == action).squeeze(-1)).float(),
        "advantage_positive": (labelled & (q_taken > value)).float(),
        "q_taken": torch.where(labelled, q_taken, zero),
    }


def _decision_terms(
    logits: torch.Tensor,
    value_logits: torch.Tensor,
    batch: dict[str, torch.Tensor],
    q: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Per real decision (window mask), as float64 numpy: the summed fields and group keys (the
    critic's fields are 0 without a critic's `q`)."""
    mask = batch["mask"]
    action = batch["action"].long()
    labelled = mask & (action >= 0)
    logits = logits.float()
    label = action.clamp(min=0).unsqueeze(-1)
    nll = -torch.log_softmax(logits, dim=-1).gather(-1, label).squeeze(-1)
    top3 = logits.topk(3, dim=-1).indices
    value_logits = value_logits.float()
    outcome = batch["outcome"].float().unsqueeze(1).expand_as(value_logits)
    predicted = torch.sigmoid(value_logits)
    columns = {
        "decisions": torch.ones_like(value_logits),
        "labelled": labelled.float(),
        "top1": (labelled & (logits.argmax(-1) == action)).float(),
        "top3": (labelled & (top3 == label).any(-1)).float(),
        # where(), not a product: unlabelled steps may hold inf or nan (illegal label, padding).
        "policy_nll": torch.where(labelled, nll, torch.zeros_like(nll)),
        "value_nll": F.binary_cross_entropy_with_logits(value_logits, outcome, reduction="none"),
        "brier": (predicted - outcome) ** 2,
        "predicted": predicted,
        "outcome": outcome,
        "kind": batch["kind"].long(),
        "turn": batch["turn"].long(),
        "rating": batch["rating"].to(mask.device).unsqueeze(1).expand_as(mask),
    }
    if q is not None:
        columns |= _critic_columns(logits, q, batch, labelled)
    else:
        columns |= {name: torch.zeros_like(value_logits) for name in _CRITIC_FIELDS}
    return {name: column[mask].double().cpu().numpy() for name, column in columns.items()}


def _summary(
    row: dict[str, float], value_weight: float | None = None, critic: bool = False
) -> dict:
    decisions, labelled = int(row["decisions"]), int(row["labelled"])
    out = {
        "decisions": decisions,
        "labelled": labelled,
        "top1": row["top1"] / labelled if labelled else None,
        "top3": row["top3"] / labelled if labelled else None,
        "policy_loss": row["policy_nll"] / labelled if labelled else None,
        "value_log_loss": row["value_nll"] / decisions if decisions else None,
        "value_brier": row["brier"] / decisions if decisions else None,
    }
    if value_weight is not None and labelled:
        out["loss"] = out["policy_loss"] + value_weight * out["value_log_loss"]
    if critic and decisions:
        out["critic_brier"] = row["critic_brier"] / decisions
        if labelled:
            out["critic_top1"] = row["critic_top1"] / labelled
            out["advantage_positive"] = row["advantage_positive"] / labelled
            out["q_taken"] = row["q_taken"] / labelled
    return out


def evaluate(
    net: nn.Module,
    samples: Iterable[dict],
    window: int,
    batch_size: int = 32,
    value_weight: float = 0.5,
    device: torch.device | str | None = None,
) -> dict:
    """The metrics of `net` on `samples` (whole trajectories), under no_grad in eval mode; the
    module's mode is restored afterwards. Takes no random draws."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    groups = {
        "overall": _Sums(("all",)),
        "by_kind": _Sums(KIND_NAMES),
        "by_rating": _Sums(RATING_BANDS),
        "by_turn": _Sums(TURN_BUCKETS),
        "calibration": _Sums(tuple(f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10))),
    }
    trajectories = 0
    critic = getattr(net, "critic", None) is not None

    def counted(stream: Iterable[dict]) -> Iterator[dict]:
        nonlocal trajectories
        for sample in stream:
            trajectories += 1
            yield sample

    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for batch in batches(counted(samples), window, batch_size):
                batch = {k: v.to(device) for k, v in batch.items()}
                if critic:
                    logits, value_logits, q, _ = net(batch, critic=True)
                else:
                    (logits, value_logits), q = net(batch), None
                terms = _decision_terms(logits, value_logits, batch, q)
                keys = {
                    "overall": np.zeros(len(terms["kind"]), dtype=np.int64),
                    "by_kind": terms["kind"].astype(np.int64),
                    "by_rating": np.where(
                        terms["rating"] < 0,
                        0,
                        1 + np.searchsorted(RATING_EDGES, terms["rating"], side="right"),
                    ),
                    "by_turn": np.searchsorted(TURN_EDGES, terms["turn"], side="right"),
                    "calibration": np.clip(
                        np.floor(terms["predicted"] * CALIBRATION_BINS), 0, CALIBRATION_BINS - 1
                    ).astype(np.int64),
                }
                for name, sums in groups.items():
                    sums.add(keys[name], terms)
    finally:
        net.train(was_training)

    overall = _summary(groups["overall"].row(0), value_weight, critic)
    metrics: dict = {
        "trajectories": trajectories,
        "window": window,
        "windowing": f"non-overlapping chunks of {window} decisions from each trajectory's start",
        "value_weight": value_weight,
        "overall": overall,
    }
    for name in ("by_kind", "by_rating", "by_turn"):
        sums = groups[name]
        metrics[name] = {
            label: _summary(sums.row(i)) for i, label in enumerate(sums.names) if sums.table[i, 0]
        }
    calibration = []
    sums = groups["calibration"]
    for i, label in enumerate(sums.names):
        row = sums.row(i)
        count = int(row["decisions"])
        calibration.append(
            {
                "bin": label,
                "count": count,
                "mean_predicted": row["predicted"] / count if count else None,
                "observed_win_rate": row["outcome"] / count if count else None,
            }
        )
    metrics["calibration"] = calibration
    total = max(1, overall["decisions"])
    metrics["overall"]["value_ece"] = sum(
        c["count"] / total * abs(c["mean_predicted"] - c["observed_win_rate"])
        for c in calibration
        if c["count"]
    )
    return metrics


def scalars(metrics: dict, prefix: str) -> dict[str, float]:
    """TensorBoard scalars of a metrics dict: the overall figures and top-1 by group."""
    overall = metrics["overall"]
    out = {
        f"{prefix}/{name}": overall[name]
        for name in (
            "loss",
            "policy_loss",
            "top1",
            "top3",
            "value_log_loss",
            "value_brier",
            "value_ece",
            "critic_brier",
            "critic_top1",
            "advantage_positive",
            "q_taken",
        )
        if overall.get(name) is not None
    }
    for group in ("by_kind", "by_rating", "by_turn"):
        for label, figures in metrics[group].items():
            if figures["top1"] is not None:
                out[f"{prefix}/top1_{group}/{label}"] = figures["top1"]
    return out
