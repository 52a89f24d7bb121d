"""Offline evaluation: how well a checkpoint predicts the held-out decisions and outcomes.

    pokeagent eval offline --checkpoint runs/small --shards shards/gen9 [--out DIR] [--max-samples N]
    pokeagent eval offline --checkpoint runs/small/checkpoints/step00002000 --shards a.tar b.tar

This module is the runner: it loads the checkpoint, reads the shards (`pokeagent.data.heldout`:
a fixed order, `max_samples` spread evenly over them), scores them with
`pokeagent.model.metrics.evaluate` (the code the trainer's periodic validation calls on a fixed
subset: one code path for both) and writes the metrics as JSON + markdown in the output folder
and as scalars in TensorBoard.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from pokeagent.data.heldout import read_trajectories, shard_paths
from pokeagent.eval.checkpoint import eval_dir, load_network
from pokeagent.model.metrics import evaluate, scalars
from pokeagent.run_dir import RunDir


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
    ]
    if "critic_brier" in overall:
        lines += [
            "## Critic",
            "",
            f"- value (V + 1) / 2 against the outcome, Brier: {_fmt(overall['critic_brier'])}",
            f"- its best legal action is the logged one: {_fmt(overall.get('critic_top1'))}",
            "- logged actions with a positive advantage (what `binary` keeps): "
            f"{_fmt(overall.get('advantage_positive'))}; their mean Q: "
            f"{_fmt(overall.get('q_taken'))}",
            "",
        ]
    lines += [
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


def default_window(weights: Path, max_window: int) -> int:
    """The run's training window (config.json): longer chunks would use positions it never
    trained; else the model's max_window."""
    run = RunDir.of_weights(weights)
    config = (run.read_config() if run else None) or {}
    window = config.get("train", {}).get("window")
    return min(int(window), max_window) if window else max_window


def run_offline_eval(cfg: OfflineEvalConfig) -> dict:
    """Load, evaluate, write `offline.json`, `offline.md` (and TensorBoard); return the metrics
    (with `out`, the folder written)."""
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
    out = Path(cfg.out) if cfg.out else eval_dir(loaded.weights, "offline", loaded.step)
    out.mkdir(parents=True, exist_ok=True)
    (out / "offline.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "offline.md").write_text(markdown(metrics))
    if cfg.tensorboard:
        run = RunDir.of_weights(loaded.weights)
        write_tensorboard(metrics, run.tensorboard if run else out / "tb", loaded.step)
    metrics["out"] = str(out)
    return metrics
