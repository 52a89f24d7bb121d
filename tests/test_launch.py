"""Launchers: hostfiles from SLURM node lists, the sbatch script of every tier, option checks,
submission through a stand-in sbatch, and a 2-rank run resumed on 1 rank (universal checkpoint)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import train_env

from pokeagent.launch import slurm
from pokeagent.launch.hostfile import (
    HostfileError,
    expand_nodelist,
    gpus_per_node,
    hostfile_text,
    hosts_from,
)
from pokeagent.train.__main__ import build_parser, config_from_args

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("gpu[01-03,07],cpu5", ["gpu01", "gpu02", "gpu03", "gpu07", "cpu5"]),
        ("node7", ["node7"]),
        ("a[8-11]", ["a8", "a9", "a10", "a11"]),
        ("a[008-010]", ["a008", "a009", "a010"]),
        ("gpu[1,3],big[01-02],login", ["gpu1", "gpu3", "big01", "big02", "login"]),
        ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
        ("dgx-a100-[001-002]", ["dgx-a100-001", "dgx-a100-002"]),
    ],
)
def test_compact_nodelists_expand(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["gpu[01-03", "gpu01-03]", "gpu[3-1]", "gpu[a-b]", "x,x", ""])
def test_bad_nodelists_are_refused(bad):
    with pytest.raises(HostfileError):
        expand_nodelist(bad)


@pytest.mark.parametrize(
    ("env", "slots"),
    [
        ({"SLURM_GPUS_ON_NODE": "4"}, 4),
        ({"SLURM_GPUS_PER_NODE": "a100:8"}, 8),
        ({"SLURM_GPUS_PER_NODE": "gpu:h100:2"}, 2),
        ({"SLURM_JOB_GPUS": "0,1,2"}, 3),
        ({"SLURM_GPUS_ON_NODE": "2", "SLURM_JOB_GPUS": "0,1,2,3"}, 2),
    ],
)
def test_gpus_per_node_from_the_allocation(env, slots):
    assert gpus_per_node(env) == slots


def test_no_gpu_count_is_a_clear_error():
    with pytest.raises(HostfileError, match="SLURM_GPUS_ON_NODE"):
        gpus_per_node({})


def test_hostfile_from_slurm_and_from_a_list(tmp_path):
    env = {"SLURM_JOB_NODELIST": "gpu[01-02],cpu5", "SLURM_GPUS_ON_NODE": "4"}
    assert hostfile_text(hosts_from(None, env), gpus_per_node(env)) == (
        "gpu01 slots=4\ngpu02 slots=4\ncpu5 slots=4\n"
    )
    listed = tmp_path / "hosts"
    listed.write_text("alpha\nbeta  # a comment\n\ngamma[1-2]\n")
    assert hosts_from(str(listed), {}) == ["alpha", "beta", "gamma1", "gamma2"]
    assert hosts_from("a, b c", {}) == ["a", "b", "c"]
    with pytest.raises(HostfileError, match="SLURM_JOB_NODELIST"):
        hosts_from(None, {})


def test_hostfile_script(tmp_path):
    env = dict(os.environ, SLURM_JOB_NODELIST="n[1-2]", SLURM_GPUS_PER_NODE="4")
    out = subprocess.run(
        [str(REPO / "launch" / "hostfile.sh")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "n1 slots=4\nn2 slots=4\n"
    first = subprocess.run(
        [str(REPO / "launch" / "hostfile.sh"), "--first"], env=env, capture_output=True, text=True
    )
    assert first.stdout == "n1\n"


# ------------------------------------------------------------------------------ sbatch tiers
def _dry_run(capsys, *argv: str) -> tuple[dict, str, str]:
    """(plan, sbatch script, launch command) printed by `train.sh ... --dry-run`."""
    assert slurm.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    plan = json.loads(out.split("# ---- plan\n")[1].split("\n# ")[0])
    script = out.split("# ---- sbatch script\n")[1].split("# ---- launch command\n")[0]
    return plan, script, out.split("# ---- launch command\n")[1]


def _sbatch(script: str, key: str) -> str:
    return re.search(rf"^#SBATCH --{key}=(.*)$", script, re.M).group(1)


def _train_config(words: list[str]):
    """The trainer's own parser reads the options the launcher passes (no drift between them)."""
    start = words.index("pokeagent.train") + 1
    return config_from_args(build_parser().parse_args(words[start:]))


@pytest.mark.parametrize(
    ("nodes", "global_batch", "ds_config"),
    [
        (1, 1024, "zero2_bf16"),
        (2, 2048, "zero2_bf16"),
        (4, 4096, "zero2_bf16"),
        (8, 8192, "zero1_bf16"),
    ],
)
def test_each_tier_dry_run(capsys, nodes, global_batch, ds_config):
    plan, script, _ = _dry_run(capsys, str(nodes), "4", "6")
    assert plan["world_size"] == nodes * 4 and plan["global_batch"] == global_batch
    assert plan["ds_config"] == ds_config
    assert _sbatch(script, "nodes") == str(nodes)
    assert _sbatch(script, "gpus-per-node") == "4"
    assert _sbatch(script, "signal") == "USR1@600"
    assert _sbatch(script, "time") == "06:00:00"
    assert _sbatch(script, "output") == f"runs/large-{nodes * 4}gpu/slurm-%j.out"
    assert "#SBATCH --requeue" in script and "scontrol requeue" in script
    assert int(_sbatch(script, "cpus-per-task")) == 4 * (2 + 2)
    assert int(_sbatch(script, "mem").rstrip("G")) >= 4 * 6
    launch = next(line for line in script.splitlines() if "torchrun" in line)
    assert f"--nnodes={nodes}" in launch and "--nproc_per_node=4" in launch
    cfg = _train_config(launch.split())
    assert (cfg.ds_config, cfg.batch_size_per_gpu, cfg.model) == (ds_config, 256, "large")
    assert cfg.run_dir == f"runs/large-{nodes * 4}gpu" and cfg.time_limit_hours == 6.0
    assert cfg.max_steps == 200_000 and cfg.learning_rate == 3e-4 and cfg.checkpoint_minutes == 15
    preflight = next(line for line in script.splitlines() if "pokeagent validate" in line)
    assert f"--nodes {nodes} --gpus-per-node 4" in preflight and preflight.endswith("|| exit 1")
    # Checked by the trainer's own batch arithmetic (ds_config.py).
    assert plan["peak_lr"] == pytest.approx(3e-4 * (global_batch / 256) ** 0.5)


def test_rendered_tier_files_are_up_to_date():
    for name in slurm.TIERS:
        path = REPO / "launch" / "tiers" / f"{name}.sbatch"
        assert path.read_text() == slurm.render_tier(name), (
            f"{path} is stale: run `python -m pokeagent.launch render-tiers`"
        )


def test_deepspeed_wirings(capsys):
    _, script, _ = _dry_run(capsys, "2", "4", "6", "--wiring", "deepspeed")
    assert _sbatch(script, "signal") == "B:USR1@600"  # the batch shell forwards it over pdsh
    assert "trap forward_stop USR1" in script and "pdsh" in script
    assert re.search(
        r"^deepspeed \"--hostfile=\$HOSTFILE\".*--module pokeagent.train", script, re.M
    )
    _, script, _ = _dry_run(capsys, "2", "4", "6", "--wiring", "srun-deepspeed")
    assert _sbatch(script, "signal") == "USR1@600"
    assert 'deepspeed --no_ssh --node_rank="$SLURM_NODEID"' in script


def test_options_pass_through_and_resources(capsys):
    plan, script, command = _dry_run(
        capsys, "1", "4", "2", "64",
        "--max-steps", "5000", "--learning-rate", "1e-4", "--checkpoint-minutes", "5",
        "--eval-every", "500", "--data-dir", "/data/shards", "--max-samples", "1000000",
        "--min-elo", "1500", "--workers-per-gpu", "4", "--debug", "--memory", "100",
        "--exclusive", "--partition", "gpu", "--account", "rl", "--qos", "high",
        "--model", "medium", "--global-batch", "512", "--resume",
    )  # fmt: skip
    assert plan["global_batch"] == 512 and plan["grad_accum"] == 2
    assert _sbatch(script, "mem") == "100G"
    assert "memory 100 GB/node given (--memory)" in script
    assert int(_sbatch(script, "cpus-per-task")) == 4 * (4 + 2)  # from the loader workers
    assert (_sbatch(script, "partition"), _sbatch(script, "account"), _sbatch(script, "qos")) == (
        "gpu",
        "rl",
        "high",
    )
    assert "#SBATCH --exclusive" in script and "NCCL_DEBUG=INFO" in script
    assert _sbatch(script, "time") == "02:00:00"
    launch = next(line for line in script.splitlines() if "torchrun" in line).split()
    for expected in (
        ["--eval-every", "500"],
        ["--max-samples", "1000000"],
        ["--min-rating", "1500"],
        ["--grad-accum", "2"],
        ["--batch-size-per-gpu", "64"],
        ["--workers-per-gpu", "4"],
    ):
        i = launch.index(expected[0])
        assert launch[i : i + 2] == expected
    assert "--debug" in launch and "--resume" in launch
    cfg = _train_config(launch)  # `pokeagent train` accepts every option passed through
    assert (cfg.max_samples, cfg.min_rating, cfg.eval_every, cfg.debug) == (
        1000000,
        1500,
        500,
        True,
    )
    assert (cfg.data_dir, cfg.model, cfg.grad_accum) == ("/data/shards", "medium", 2)
    assert "pokeagent.train" in command  # no SLURM here: the local command is shown


def test_every_trainer_option_reaches_the_job(capsys, tmp_path):
    """Options the launcher does not state itself (the offline-RL knobs, the window...) pass
    through to `pokeagent train` as given, into the sbatch script."""
    _, script, _ = _dry_run(
        capsys, "2", "4", "6", "--data-dir", "/data/shards",
        "--objective", "binary", "--advantage-beta", "2", "--critic-heads", "3",
        "--discount", "0.995", "--shaping-weight", "0.1", "--window", "128",
    )  # fmt: skip
    launch = next(line for line in script.splitlines() if "torchrun" in line).split()
    cfg = _train_config(launch)
    assert (cfg.objective, cfg.advantage_beta, cfg.critic_heads) == ("binary", 2.0, 3)
    assert (cfg.discount, cfg.shaping_weight, cfg.window) == (0.995, 0.1, 128)
    # The trainer's own checks still apply before anything starts.
    assert slurm.main(["1", "4", "--data-dir", str(tmp_path), "--objective", "awr"]) == 2
    assert "objective" in capsys.readouterr().err


def test_estimates_without_given_resources(capsys):
    _, small, _ = _dry_run(capsys, "1", "4", "6", "--model", "small", "--workers-per-gpu", "2")
    _, large, _ = _dry_run(capsys, "1", "4", "6", "--model", "seed-200m", "--workers-per-gpu", "4")
    assert int(_sbatch(large, "mem").rstrip("G")) > int(_sbatch(small, "mem").rstrip("G"))
    assert "# memory " in small and "loader workers" in small  # the script says why


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["1", "4", "6", "--bogus"], "--bogus"),
        (["1", "4", "6", "--global-batch", "1000"], "--global-batch"),
        (["1", "4", "6", "--checkpoint-minutes", "-5"], "--checkpoint-minutes"),
        (["1", "4", "6", "--eval-every", "0"], "--eval-every"),
        (["1", "4", "6", "--workers-per-gpu", "0"], "--workers-per-gpu"),
        (["1", "4", "6", "--time-limit-hours", "3"], "--time-limit-hours"),
        (["1", "4", "6", "128", "--batch-size-per-gpu", "64"], "--batch-size-per-gpu"),
        (["1", "4", "0.1"], "--stop-margin-minutes"),
        (["1", "4", "6", "--max-samples", "-1"], "--max-samples"),
        (["1", "4", "6", "--model", "huge"], "--model"),
        (["0", "4", "6"], "NODES"),
        (["1", "4", "6", "--ds-config", "zero9"], "--ds-config"),
    ],
)
def test_bad_options_fail_before_anything_starts(argv, named, tmp_path):
    run = subprocess.run(
        [str(REPO / "launch" / "train.sh"), *argv, "--dry-run", "--run-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2, run.stdout
    assert named in run.stderr, run.stderr
    assert not (tmp_path / "r").exists()


def _fake_slurm(tmp_path: Path) -> dict:
    """sbatch, sinfo and sacctmgr stand-ins on PATH; sbatch records what it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'cp "${{@: -1}}" {tmp_path}/submitted.sh; echo "$@" > {tmp_path}/sbatch-args; echo 4242',
        "sinfo": 'case "$*" in *%c*) echo 64;; *) echo "cpu* (null)"; echo "a100 gpu:a100:4";; esac',
        "sacctmgr": 'case "$*" in *defaultaccount*) echo "rl-team";; '
        '*) echo "rl-team|normal,high|normal"; echo "other||";; esac',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


def test_submission_detects_partition_account_qos(tmp_path):
    env = _fake_slurm(tmp_path)
    (tmp_path / "shards").mkdir()
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [str(REPO / "launch" / "train.sh"), "2", "4", "6", "--data-dir", str(tmp_path / "shards"),
         "--run-dir", str(run_dir)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "submitted job 4242" in out.stdout and f"{run_dir}/slurm-4242.out" in out.stdout
    script = (tmp_path / "submitted.sh").read_text()
    assert script == (run_dir / "job.sbatch").read_text()
    assert _sbatch(script, "partition") == "a100"  # the partition with GPUs, not the default
    assert _sbatch(script, "account") == "rl-team" and _sbatch(script, "qos") == "normal"
    # 64 cores / 4 GPUs - 2 = 14 loader workers per GPU, kept in 2-4
    assert "--workers-per-gpu 4" in script and _sbatch(script, "cpus-per-task") == "24"
    refused = subprocess.run(
        [str(REPO / "launch" / "train.sh"), "1", "4", "6", "--partition", "nope", "--dry-run"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2 and "--partition nope" in refused.stderr
    refused = subprocess.run(
        [str(REPO / "launch" / "train.sh"), "1", "4", "6", "--qos", "vip", "--dry-run"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2 and "--qos vip" in refused.stderr


def test_without_slurm_several_nodes_are_refused_and_a_missing_data_dir_named(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    (tmp_path / "shards").mkdir()
    out = subprocess.run(
        [str(REPO / "launch" / "train.sh"), "2", "4", "6", "--data-dir", str(tmp_path / "shards"),
         "--run-dir", str(tmp_path / "r")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "needs SLURM" in out.stderr
    out = subprocess.run(
        [str(REPO / "launch" / "train.sh"), "1", "1", "1", "--data-dir", str(tmp_path / "none")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "--data-dir" in out.stderr
    out = subprocess.run(
        [str(REPO / "launch" / "train.sh"), "1", "1", "1", "--data-dir", str(tmp_path / "shards"),
         "--account", "rl"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "--account is for SLURM" in out.stderr


# ------------------------------------------------------------------------------ resume elsewhere
def test_loader_resplit_starts_a_fresh_epoch_for_the_new_world(tmp_path):
    from pokeagent.data.loader import LoaderConfig, TrajectoryLoader, resplit_state, worker_shards

    old = [
        {"cursors": {"0": {"epoch": 2}, "1": {"epoch": 3}}},
        {"cursors": {"0": {"epoch": 3}, "1": {"epoch": 2}}},
    ]
    state = resplit_state(old, rank=0, world_size=1, workers=3, seed=7)
    assert sorted(state["cursors"]) == ["0", "1", "2"]
    assert {c["epoch"] for c in state["cursors"].values()} == {4}
    assert all(c["buffer"] == [] and c["shard_pos"] == 0 for c in state["cursors"].values())
    for i in range(3):
        (tmp_path / f"train-{i:06d}.tar").write_bytes(b"")
    loader = TrajectoryLoader(LoaderConfig(shards=tmp_path, workers=3, seed=7), 0, 1)
    loader.load_state_dict(state)  # accepted for the new (rank, world, workers)
    # epoch 4 of the new assignment deals every shard to exactly one of the 3 new workers
    paths = loader.cfg.shard_paths
    dealt = [s for g in range(3) for s in worker_shards(paths, 7, 4, g, 3)]
    assert sorted(dealt) == sorted(paths)


def _rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "loss" in row and "val" not in row]


@pytest.mark.slow
def test_two_ranks_resume_on_one_from_a_universal_checkpoint(shards, tmp_path):
    """Saved by 2 ranks (ZeRO-2), resumed by 1: the loss goes on from where it stopped."""
    from pokeagent.train.config import TrainConfig
    from pokeagent.train.ds_config import scaled_lr
    from pokeagent.train.trainer import lr_lambda

    run_dir = tmp_path / "run"
    options = {
        "run-dir": run_dir, "data-dir": shards, "model": "tiny", "ds-config": "cpu",
        "batch-size-per-gpu": 8, "window": 32, "warmup-steps": 2, "workers-per-gpu": 1,
        "log-every": 100, "checkpoint-minutes": 999, "learning-rate": 3e-3, "seed": 3,
    }  # fmt: skip
    words = [w for k, v in options.items() for w in (f"--{k}", str(v))]
    first = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "pokeagent.train", *words, "--max-steps", "10"],
        env=train_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    before = [row["loss"] for row in _rows(run_dir)]
    assert len(before) == 10
    assert len(list((run_dir / "checkpoints" / "step00000010").glob("*optim_states.pt"))) == 2

    second = subprocess.run(
        [sys.executable, "-m", "pokeagent.train", *words, "--max-steps", "14"],
        env=train_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert "saved by 2 ranks, this run has 1" in second.stdout
    assert "resumed from step 10" in second.stdout
    rows = _rows(run_dir)
    assert [row["step"] for row in rows] == list(range(1, 15))
    after = [row["loss"] for row in rows[10:]]
    initial, stopped = sum(before[:2]) / 2, sum(before[-2:]) / 2
    assert initial - stopped > 0.1, before  # it had learnt something worth keeping
    # Not back at the start: the first resumed loss keeps more than half of what was learnt.
    assert after[0] < stopped + 0.5 * (initial - stopped), (before, after)
    # The schedule's position is kept; its peak follows the new global batch (8, not 16).
    cfg = TrainConfig(learning_rate=3e-3, warmup_steps=2, max_steps=14)
    assert rows[10]["lr"] == pytest.approx(scaled_lr(3e-3, 8) * lr_lambda(cfg)(11))
    # The new world's checkpoint is an ordinary one; the universal copy is gone.
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step00000014"
    assert len(list((run_dir / "checkpoints" / "step00000014").glob("rank*.pt"))) == 1
    assert not list((run_dir / "checkpoints").glob("universal-*"))


def test_out_of_memory_names_the_batch_and_the_next_smaller(monkeypatch, capsys):
    import torch

    import pokeagent.train.trainer as trainer_module
    from pokeagent.train.__main__ import main

    class OutOfMemory:
        def __init__(self, cfg):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_module, "Trainer", OutOfMemory)
    monkeypatch.setenv("WORLD_SIZE", "4")
    code = main(["--batch-size-per-gpu", "256", "--model", "large", "--ds-config", "zero2_bf16"])
    err = capsys.readouterr().err
    assert code == 3
    assert "CUDA out of memory with --batch-size-per-gpu 256" in err
    assert "--batch-size-per-gpu 128 --grad-accum 2 keeps the global batch 1024" in err
    assert "zero3_bf16" in err and "zero2_offload" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_max_samples_stops_the_run_and_min_rating_filters_the_data(shards, tmp_path):
    words = [
        "--data-dir", str(shards), "--model", "tiny", "--ds-config", "cpu", "--window", "16",
        "--batch-size-per-gpu", "4", "--workers-per-gpu", "0", "--max-steps", "1000",
        "--checkpoint-minutes", "999", "--debug",
    ]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "pokeagent.train", *words, "--run-dir", str(tmp_path / "a"),
         "--max-samples", "18"],
        env=train_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert [row["step"] for row in _rows(tmp_path / "a")] == [1, 2, 3, 4, 5]  # ceil(18 / 4)
    assert "step 1/5" in run.stdout  # --debug: a log line every step
    assert (tmp_path / "a" / "checkpoints" / "latest").read_text().strip() == "step00000005"
    # Simulator battles carry no ratings: a rating floor leaves nothing to train on.
    filtered = subprocess.run(
        [sys.executable, "-m", "pokeagent.train", *words, "--run-dir", str(tmp_path / "b"),
         "--min-elo", "1000", "--max-steps", "2"],
        env=train_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert filtered.returncode != 0
    assert "all filtered out" in filtered.stderr


@pytest.mark.slow
@pytest.mark.parametrize("wiring", ["srun", "srun-deepspeed"])
def test_the_sbatch_script_runs_stops_on_usr1_and_requeues(shards, tmp_path, wiring):
    """The rendered script under stand-in srun/scontrol: one launcher per node (torchrun, or
    deepspeed --no_ssh), 2 ranks on CPU; USR1 to every process of the step (as SLURM's --signal)
    -> checkpoint, exit 0, requeue."""
    import signal
    import time

    import psutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {
        # srun: drop its own options, run the command on this "node"
        "srun": 'while [[ "$1" == --* ]]; do shift; done; SLURM_NODEID=0 exec "$@"',
        "scontrol": f'echo "$@" >> {tmp_path}/scontrol',
    }
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    run_dir = tmp_path / "run"
    opts = slurm.options_from_args(
        ["1", "2", "0.2", "4", "--data-dir", str(shards),
         "--model", "tiny", "--ds-config", "cpu", "--max-steps", "100000", "--workers-per-gpu", "1",
         "--run-dir", str(run_dir), "--wiring", wiring, "--dry-run"]
    )  # fmt: skip
    script = tmp_path / "job.sbatch"
    script.write_text(slurm.render_sbatch(opts, "test"))
    env = train_env() | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "777",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_GPUS_ON_NODE": "2",
        "SLURM_SUBMIT_DIR": str(REPO),
    }
    job = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (
        (run_dir / "metrics.jsonl").exists() and len(_rows(run_dir)) >= 3
    ):
        time.sleep(0.1)
    for process in psutil.Process(job.pid).children(recursive=True):
        process.send_signal(signal.SIGUSR1)  # the step's processes, not the batch shell
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 0, output[-4000:]
    stopped = max(row["step"] for row in _rows(run_dir))
    assert f"stopped cleanly at step {stopped}" in output
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step{stopped:08d}"
    assert len(list((run_dir / "checkpoints" / f"step{stopped:08d}").glob("rank*.pt"))) == 2
    launcher = "torchrun --nnodes=1" if wiring == "srun" else "deepspeed --no_ssh --node_rank"
    assert launcher in script.read_text()
    # 0.2 h minus the 10 min margin: the time "ran out", the run is not finished -> requeued
    assert (tmp_path / "scontrol").read_text().split() == ["requeue", "777"]
    assert f"requeueing at step {stopped}" in output
    assert "ready" in output and "NOT ready" not in output  # the pre-flight validation passed


def test_a_failed_preflight_ends_the_job_before_the_launch(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f"#!/bin/bash\ntouch {tmp_path}/srun-ran\n")
    (bin_dir / "srun").chmod(0o755)
    opts = slurm.options_from_args(
        ["1", "2", "1", "4", "--data-dir", str(tmp_path / "missing"), "--model", "tiny",
         "--ds-config", "cpu", "--run-dir", str(tmp_path / "run"), "--dry-run"]
    )  # fmt: skip
    script = tmp_path / "job.sbatch"
    script.write_text(slurm.render_sbatch(opts, "test"))
    env = train_env() | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "779",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_SUBMIT_DIR": str(REPO),
    }
    job = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert job.returncode == 1
    assert "no such directory" in job.stdout and "NOT ready" in job.stdout
    assert not (tmp_path / "srun-ran").exists()
