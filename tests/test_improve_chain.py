"""`launch/improve.sh`: a round of `pokeagent improve` as a chain of SLURM jobs. The job scripts
are rendered, then run here by bash as SLURM would run them (the array task's index in
`SLURM_ARRAY_TASK_ID`), with the training job's step done by the local loop's trainer call: the
round must come out as the local loop makes it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import tiny_loop, train_env

from pokeagent.launch.slurm import LaunchError
from pokeagent.loop.improve import Improve, ImproveConfig, run_improve
from pokeagent.loop.slurm_chain import ChainOptions, main, render_chain

REPO = Path(__file__).resolve().parents[1]


def test_a_chain_needs_a_start_and_sbatch(tmp_path, capsys):
    cfg = ImproveConfig(out=str(tmp_path / "loop"), shards=str(tmp_path / "shards"))
    with pytest.raises(LaunchError, match="give --start"):
        render_chain(cfg, ChainOptions(), "test")
    with pytest.raises(LaunchError, match="--gpus-per-node"):
        ChainOptions(gpus_per_node=0)
    with pytest.raises(ValueError, match="--chunk-index"):
        ImproveConfig(stage="generate", round=1)
    with pytest.raises(ValueError, match="--round"):
        ImproveConfig(stage="pack")
    assert main(["--out", str(tmp_path / "loop"), "--shards", str(tmp_path)]) == 2
    assert "give --start" in capsys.readouterr().err


def _run_job(script: Path, env: dict, task: int | None = None) -> None:
    env = dict(env, SLURM_SUBMIT_DIR=str(REPO), SLURM_JOB_ID="1")
    if task is not None:
        env["SLURM_ARRAY_TASK_ID"] = str(task)
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, (script.name, done.stdout[-2000:], done.stderr[-2000:])


@pytest.mark.slow
def test_a_round_runs_as_its_chain_of_jobs(shards, tmp_path, monkeypatch, capsys):
    for key, value in train_env().items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "loop"
    options = tiny_loop(shards, out, steps=5)
    # Round 0 here (the chain starts from a loop with a round 0, or from --start).
    run_improve(ImproveConfig(**options, rounds=0), progress=False)
    cfg = ImproveConfig(**options, rounds=1)
    chain = render_chain(cfg, ChainOptions(nodes=2, gpus_per_node=4, partition="gpu"), "test")
    assert chain.rounds == [1]
    # The command line: --dry-run prints the four jobs and submit.sh; without SLURM, no submission.
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()] + ["--rounds=1"]
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("# ---- ") == 5 and printed.rstrip().endswith(
        'AFTER="--dependency=afterok:$FINISH"'
    )
    if shutil.which("sbatch") is None:
        assert main(argv) == 2 and "no sbatch here" in capsys.readouterr().err
        assert not (out / "slurm").exists()
    assert sorted(chain.scripts) == [
        f"round-001-{stage}.sbatch" for stage in ("finish", "generate", "pack", "train")
    ]
    # The submission: each job after the one before, in order.
    deps = re.findall(r"(\w+)=\$\(submit (?:--dependency=afterok:\$(\w+)|\$AFTER) ", chain.submit)
    assert deps == [("GEN", ""), ("PACK", "GEN"), ("TRAIN", "PACK"), ("FINISH", "TRAIN")]
    loop = Improve(cfg, progress=False)
    chunks = loop.chunks(1)
    generate = chain.scripts["round-001-generate.sbatch"]
    assert f"#SBATCH --array=0-{len(chunks) - 1}" in generate and "--gpus-per-node" not in generate
    train = chain.scripts["round-001-train.sbatch"]
    # The training job is the tier's template: 2 nodes x 4 GPUs, the USR1 stop, requeue, the
    # round's target step, the loop's run directory, the run's own settings.
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "#SBATCH --requeue"):
        assert line in train
    assert "#SBATCH --partition=gpu" in train and "--signal=USR1@" in train
    assert f"--run-dir {out / 'train'} " in train and '--data-dir "$DATA_DIR"' in train
    target = int(re.search(r"--max-steps (\d+)", train).group(1))
    assert target == 3 + 5
    assert "--window 32" in train and "--batch-size-per-gpu 8" in train

    # The jobs, as SLURM runs them.
    folder = tmp_path / "jobs"
    folder.mkdir()
    for name, text in chain.scripts.items():
        (folder / name).write_text(text)
    env = dict(os.environ)
    for task in range(len(chunks)):
        _run_job(folder / "round-001-generate.sbatch", env, task)
    _run_job(folder / "round-001-pack.sbatch", env)
    data_dir = (out / "rounds" / "round-001" / "data-dir.txt").read_text().strip()
    loop.train_to(data_dir, target)  # the GPU job's part, on this machine's trainer
    _run_job(folder / "round-001-finish.sbatch", env)

    round_dir = out / "rounds" / "round-001"
    plan = json.loads((round_dir / "plan.json").read_text())
    assert plan["chunks"] == chunks and plan["target_step"] == target
    played = sorted(p.name for p in (round_dir / "battles").iterdir())
    assert played == [f"chunk-{c['index']:03d}" for c in chunks]
    lines = [
        line
        for name in played
        for line in (round_dir / "battles" / name / "replays.jsonl").read_text().splitlines()
    ]
    assert len(lines) == len({json.loads(line)["id"] for line in lines}) == 4
    assert json.loads((round_dir / "agent" / "agent.json").read_text())["step"] == target
    report = json.loads((out / "improve.json").read_text())
    assert [row["round"] for row in report["rounds"]] == [0, 1]
    # Submitted again, the chain has nothing left to do.
    with pytest.raises(LaunchError, match="are done"):
        render_chain(cfg, ChainOptions(), "test")
