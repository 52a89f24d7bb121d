"""`pokeagent status RUN_DIR`: where a training run stands, from the files it writes.

    pokeagent status runs/small

Reads `config.json` (max steps, global batch, time limit), `metrics.jsonl` (the last step, the
last validation and battle records), `checkpoints/` (`latest`, `best`, their age), `job.json`
(when the current job must stop) and `eval/battles-step*/battles.json` (battles that finished
after the trainer last looked, or after it exited).
"""

from __future__ import annotations

import time
from pathlib import Path

from pokeagent.run_dir import BEST, LATEST, RunDir, read_json, step_of


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _battles(run: RunDir) -> tuple[dict | None, list[int]]:
    """The latest finished battle evaluation ({step, opponents}) and the steps still playing."""
    finished, running = None, []
    for step, folder in run.battle_dirs().items():
        results = read_json(folder / "battles.json")
        if results and isinstance(results.get("opponents"), dict):
            finished = {"step": step, "opponents": results["opponents"]}
        elif (folder / "battles.log").exists():
            running.append(step)
    return finished, running


def collect(run_dir: str | Path) -> dict:
    """The run's state as a dict (what `render` prints)."""
    run = RunDir(run_dir)
    config = run.read_config() or {}
    records = run.read_metrics()
    if not config and not records:
        raise FileNotFoundError(
            f"{run.root}: no {run.config.name} or {run.metrics.name} (not a `pokeagent train` "
            "run directory?)"
        )
    train = config.get("train", {})
    steps = [r for r in records if not r.get("val") and not r.get("battles")]
    vals = [r for r in records if r.get("val")]
    now = time.time()
    state: dict = {"run_dir": str(run.root), "max_steps": train.get("max_steps")}
    if steps:
        state["step"] = steps[-1]["step"]
        state["loss"] = steps[-1]["loss"]
        state["last_step_age_s"] = now - run.metrics.stat().st_mtime
        global_batch = config.get("deepspeed", {}).get("train_batch_size")
        if global_batch:
            state["samples"] = state["step"] * global_batch
    for pointer in (LATEST, BEST):
        tag = run.pointer(pointer)
        if tag and run.checkpoint(tag).is_dir():
            state[pointer] = {"tag": tag, "age_s": now - run.checkpoint(tag).stat().st_mtime}
    if BEST in state:
        best_step = step_of(state[BEST]["tag"])
        losses = [r["loss"] for r in vals if r["step"] == best_step]
        state[BEST]["val_loss"] = losses[-1] if losses else None
    state["kept"] = run.tags()
    if vals:
        state["val"] = vals[-1]
    state["battles"], state["battles_running"] = _battles(run)
    job = run.read_job() or {}
    if job.get("stop_at"):
        state["time_left_s"] = job["stop_at"] - now
        state["time_limit_hours"] = job.get("time_limit_hours")
    return state


def render(state: dict) -> str:
    lines = [f"run {state['run_dir']}"]
    if "step" in state:
        total = f"/{state['max_steps']}" if state.get("max_steps") else ""
        samples = f", {state['samples']:,} samples" if "samples" in state else ""
        lines.append(
            f"step {state['step']}{total}{samples}; train loss {state['loss']:.4f}; "
            f"last step {_age(state['last_step_age_s'])} ago"
        )
    else:
        lines.append("no step recorded yet")
    if LATEST in state:
        lines.append(
            f"last checkpoint {state[LATEST]['tag']}, {_age(state[LATEST]['age_s'])} old "
            f"(kept: {', '.join(state['kept'])})"
        )
    else:
        lines.append("no checkpoint yet")
    if BEST in state:
        loss = state[BEST]["val_loss"]
        shown = f" (validation loss {loss:.4f})" if loss is not None else ""
        lines.append(f"best checkpoint {state[BEST]['tag']}{shown}")
    val = state.get("val")
    if val:
        lines.append(
            f"validation at step {val['step']}: loss {val['loss']:.4f}, policy loss "
            f"{val['policy_loss']:.4f}, top-1 {val['top1']:.3f}, top-3 {val['top3']:.3f}, "
            f"value log-loss {val['value_loss']:.4f}, Brier {val['value_brier']:.4f} "
            f"({val['trajectories']} trajectories)"
        )
    battles = state.get("battles")
    if battles:
        shown = []
        for name, figures in battles["opponents"].items():
            ci = figures.get("ci95")
            interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
            shown.append(f"vs {name} {figures['win_rate']:.2f}{interval}")
        lines.append(f"battles at step {battles['step']}: {', '.join(shown)}")
    if state.get("battles_running"):
        steps = ", ".join(str(s) for s in state["battles_running"])
        lines.append(f"battles without results yet (running or failed): step {steps}")
    finished = state.get("step") is not None and state.get("step") == state.get("max_steps")
    if "time_left_s" in state and not finished:
        left = state["time_left_s"]
        lines.append(
            f"time limit {state['time_limit_hours']} h: "
            + (f"{_age(left)} left before it stops" if left > 0 else f"reached {_age(-left)} ago")
        )
    return "\n".join(lines)


def run_status(run_dir: str | Path) -> str:
    return render(collect(run_dir))
