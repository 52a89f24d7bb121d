"""Offline evaluation: how well a checkpoint predicts the held-out decisions and outcomes.

    pokeagent eval offline --checkpoint runs/small --shards shards/gen9 [--out DIR] [--max-samples N]
    pokeagent eval offline --checkpoint runs/small/checkpoints/step00002000 --shards a.tar b.tar

Reading is deterministic: shard paths in order (a folder's `val-*.tar` sorted), samples in file
order; `max_samples` takes that many spread evenly over them (by the manifest's counts). Each trajectory is cut into non-overlapping chunks of
K decisions from its start (the last one padded), so every decision is scored exactly once; a
chunk's first decision sees no earlier context, as a training window that starts there.

Metrics (JSON + markdown in the output folder, scalars in TensorBoard): top-1/top-3 accuracy and
policy loss (cross-entropy over legal actions) on decisions with a known label, overall and by
decision kind, by the player's rating band and by turn bucket; value log-loss, Brier score and a
calibration table (10 bins of predicted win probability: count, mean prediction, observed win
rate, ties counting 1/2) on every decision. The trainer's periodic validation calls `evaluate` on
a fixed subset: one code path for both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pokeagent.data.loader import _window, collate
from pokeagent.data.shards import read_shard
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
)


@dataclass
class OfflineEvalConfig:
    """One offline evaluation (`pokeagent eval offline`)."""

    checkpoint: str
    """model.safetensors, a checkpoint folder, a `checkpoints/` folder or a run directory."""
    shards: list[str]
    """Folders written by `pokeagent pack` (their `<split>-*.tar`) and/or tar files."""
    out: str | None = None
    """Output folder; default `<run dir>/eval/offline-step<N>` (beside the weights outside a run)."""
    split: str = "val"
    """Which shards of a folder to read."""
    max_samples: int | None = None
    """Evaluate N trajectories spread evenly over the shards (None: all)."""
    window: int | None = None
    """Decisions per chunk; default the run's training window (config.json), else max_window."""
    batch_size: int = 32
    """Chunks per forward pass."""
    value_weight: float = 0.5
    """Weight of the value loss in the reported total loss (as in training)."""
    device: str | None = None
    """torch device; default cuda when available, else cpu."""
    tensorboard: bool = True
    """Also write the scalars to TensorBoard (`<run dir>/tb`, else `<out>/tb`) at the step."""

    def __post_init__(self):
        if isinstance(self.shards, str):
            self.shards = [self.shards]
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"--max-samples must be >= 1 (got {self.max_samples})")
        if self.window is not None and self.window < 1:
            raise ValueError(f"--window must be >= 1 (got {self.window})")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1 (got {self.batch_size})")


# ---------------------------------------------------------------------- reading
def shard_paths(shards: str | Path | Iterable[str | Path], split: str = "val") -> list[str]:
    """Tar paths in a fixed order: a folder gives its sorted `<split>-*.tar`, a file itself."""
    items = [shards] if isinstance(shards, str | Path) else list(shards)
    paths: list[str] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(str(p) for p in item.glob(f"{split}-*.tar"))
            if not found:
                raise FileNotFoundError(
                    f"no {split}-*.tar in {item} (pack with --val-fraction > 0, or pass tar files)"
                )
            paths += found
        elif item.is_file():
            paths.append(str(item))
        else:
            raise FileNotFoundError(f"{item}: no such shard or folder")
    return paths


def _manifest_counts(paths: list[str]) -> list[int] | None:
    """Samples per shard from the `manifest.json` beside each shard (`pokeagent pack`'s), or None
    where one is missing."""
    manifests: dict[Path, dict[str, int]] = {}
    counts = []
    for path in map(Path, paths):
        if path.parent not in manifests:
            try:
                shards = json.loads((path.parent / "manifest.json").read_text())["shards"]
                manifests[path.parent] = {
                    entry["name"]: int(entry["samples"])
                    for entries in shards.values()
                    for entry in entries
                }
            except (OSError, ValueError, KeyError, TypeError):
                manifests[path.parent] = {}
        if path.name not in manifests[path.parent]:
            return None
        counts.append(manifests[path.parent][path.name])
    return counts


def read_trajectories(paths: list[str], max_samples: int | None = None) -> Iterator[dict]:
    """Whole trajectories in file order (empty ones skipped). With `max_samples`, that many spread
    evenly over all of them (samples floor(i x total / max_samples), by the manifest's counts;
    shards holding none of them are not opened): pack writes its inputs in order, so the first N
    would often be one format or one month. Without a manifest, the first `max_samples`."""
    counts = _manifest_counts(paths) if max_samples is not None else None
    if counts is not None and sum(counts) > max_samples:
        total = sum(counts)
        wanted = sorted({i * total // max_samples for i in range(max_samples)})
        offset = 0
        for path, count in zip(paths, counts, strict=True):
            here = {index - offset for index in wanted if offset <= index < offset + count}
            offset += count
            if not here:
                continue
            last = max(here)
            for index, sample in enumerate(read_shard(path)):
                if index in here and len(sample["action"]):
                    yield sample
                if index >= last:
                    break
        return
    count = 0
    for path in paths:
        for sample in read_shard(path):
            if max_samples is not None and count >= max_samples:
                return
            if len(sample["action"]):
                count += 1
                yield sample


def batches(
    samples: Iterable[dict], window: int, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Non-overlapping chunks of `window` decisions, `batch_size` per batch (the last one smaller);
    the loader's collate plus `rating` (the player's own rating per chunk)."""
    chunks, infos = [], []
    for sample in samples:
        for start in range(0, len(sample["action"]), window):
            chunks.append(_window(sample, start, window))
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


def _decision_terms(
    logits: torch.Tensor, value_logits: torch.Tensor, batch: dict[str, torch.Tensor]
) -> dict[str, np.ndarray]:
    """Per real decision (window mask), as float64 numpy: the summed fields and group keys."""
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
    return {name: column[mask].double().cpu().numpy() for name, column in columns.items()}


def _summary(row: dict[str, float], value_weight: float | None = None) -> dict:
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
                logits, value_logits = net(batch)
                terms = _decision_terms(logits, value_logits, batch)
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

    overall = _summary(groups["overall"].row(0), value_weight)
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
        )
        if overall.get(name) is not None
    }
    for group in ("by_kind", "by_rating", "by_turn"):
        for label, figures in metrics[group].items():
            if figures["top1"] is not None:
                out[f"{prefix}/top1_{group}/{label}"] = figures["top1"]
    return out


# ---------------------------------------------------------------------- reports
def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def markdown(metrics: dict) -> str:
    """The report: overall figures, the three breakdowns and the calibration table."""
    lines = [
        f"# Offline evaluation, step {metrics.get('step', '?')}",
        "",
        f"- checkpoint: `{metrics.get('checkpoint', '?')}`",
        f"- data: {metrics['trajectories']} trajectories from {len(metrics.get('shards', []))} "
        f"shard(s); {metrics['windowing']}",
        "",
        "| | decisions | labelled | top-1 | top-3 | policy loss | value log-loss | Brier |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(label: str, f: dict) -> str:
        return (
            f"| {label} | {f['decisions']} | {f['labelled']} | {_fmt(f['top1'])} | "
            f"{_fmt(f['top3'])} | {_fmt(f['policy_loss'])} | {_fmt(f['value_log_loss'])} | "
            f"{_fmt(f['value_brier'])} |"
        )

    lines.append(row("**overall**", metrics["overall"]))
    for group, title in (
        ("by_kind", "kind"),
        ("by_rating", "rating"),
        ("by_turn", "turn"),
    ):
        for label, figures in metrics[group].items():
            lines.append(row(f"{title} {label}", figures))
    overall = metrics["overall"]
    lines += [
        "",
        f"Total loss (policy + {metrics['value_weight']} x value): {_fmt(overall.get('loss'))}; "
        f"expected calibration error: {_fmt(overall['value_ece'])}",
        "",
        "## Value calibration",
        "",
        "| predicted win probability | decisions | mean predicted | observed win rate |",
        "|---|---:|---:|---:|",
    ]
    for c in metrics["calibration"]:
        lines.append(
            f"| {c['bin']} | {c['count']} | {_fmt(c['mean_predicted'], 3)} | "
            f"{_fmt(c['observed_win_rate'], 3)} |"
        )
    return "\n".join(lines) + "\n"


def write_tensorboard(metrics: dict, log_dir: Path, step: int, prefix: str = "offline") -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        for name, value in scalars(metrics, prefix).items():
            writer.add_scalar(name, value, step)


def _run_dir(weights: Path) -> Path | None:
    """The run directory of `<run>/checkpoints/<tag>/model.safetensors`, else None."""
    return weights.parents[2] if weights.parent.parent.name == "checkpoints" else None


def default_window(weights: Path, max_window: int) -> int:
    """The run's training window (config.json): longer chunks would use positions it never
    trained; else the model's max_window."""
    run_dir = _run_dir(weights)
    config = run_dir / "config.json" if run_dir else None
    if config is not None and config.is_file():
        window = json.loads(config.read_text()).get("train", {}).get("window")
        if window:
            return min(int(window), max_window)
    return max_window


def run_offline_eval(cfg: OfflineEvalConfig) -> dict:
    """Load, evaluate, write `offline.json`, `offline.md` (and TensorBoard); return the metrics
    (with `out`, the folder written)."""
    from pokeagent.eval.checkpoint import load_network

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_network(cfg.checkpoint, device)
    max_window = loaded.net.cfg.max_window
    window = cfg.window or default_window(loaded.weights, max_window)
    if window > max_window:
        raise ValueError(f"--window {window} exceeds the model's max_window {max_window}")
    paths = shard_paths(cfg.shards, cfg.split)
    metrics = evaluate(
        loaded.net,
        read_trajectories(paths, cfg.max_samples),
        window,
        cfg.batch_size,
        cfg.value_weight,
        device,
    )
    metrics |= {"checkpoint": str(loaded.weights), "step": loaded.step, "shards": paths}
    run_dir = _run_dir(loaded.weights)
    out = (
        Path(cfg.out)
        if cfg.out
        else (run_dir or loaded.weights.parent) / "eval" / f"offline-step{loaded.step}"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "offline.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "offline.md").write_text(markdown(metrics))
    if cfg.tensorboard:
        write_tensorboard(metrics, (run_dir / "tb") if run_dir else out / "tb", loaded.step)
    metrics["out"] = str(out)
    return metrics
