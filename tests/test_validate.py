"""`pokeagent validate`: fails clearly on a missing or damaged data directory and on inconsistent
configs, passes on a good one, skips what cannot apply here (no GPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from pokeagent.launch.resources import gpu_memory_gb
from pokeagent.launch.validate import FAIL, PASS, SKIP, ValidateConfig, validate
from pokeagent.train.ds_config import load_ds_json


def _cfg(data_dir, tmp_path, **extra) -> ValidateConfig:
    return ValidateConfig(
        data_dir=str(data_dir),
        run_dir=str(tmp_path / "run"),
        model="tiny",
        batch_size_per_gpu=8,
        **extra,
    )


def _status(report, name: str) -> tuple[str, str]:
    check = next(c for c in report.checks if c.name == name)
    return check.status, check.detail


def test_missing_data_directory_fails_with_exit_1(tmp_path):
    missing = tmp_path / "no-shards"
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    out = subprocess.run(
        [sys.executable, "-m", "pokeagent", "validate", "--data-dir", str(missing),
         "--model", "tiny", "--run-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    data_row = next(line for line in out.stdout.splitlines() if line.startswith("data "))
    assert " fail " in data_row and str(missing) in data_row and "no such directory" in data_row
    assert "NOT ready" in out.stdout


def test_good_data_directory_passes(shards, tmp_path):
    report = validate(_cfg(shards, tmp_path, comprehensive=True))
    assert report.ok, report.table()
    status, detail = _status(report, "data")
    assert status == PASS and "every shard read" in detail
    assert _status(report, "config")[0] == PASS
    assert _status(report, "gloo")[0] == PASS  # comprehensive: a real collective
    assert "torch" in report.table() and "ready" in report.table()
    import torch

    if not torch.cuda.is_available():
        for name in ("cuda", "nccl", "gpu memory"):
            status, detail = _status(report, name)
            assert status == SKIP and "no CUDA GPU" in detail


def test_a_mixture_checks_every_folder(shards, tmp_path):
    """`--data-dir DIR=W,DIR=W` (the loader's mixture, `pokeagent improve`): each folder is
    checked; a missing one fails, naming it."""
    second = shutil.copytree(shards, tmp_path / "round-000")
    status, detail = _status(validate(_cfg(f"{shards}=3,{second}=1", tmp_path)), "data")
    assert status == PASS and detail.startswith("a mixture of 2")
    missing = tmp_path / "round-001"
    status, detail = _status(validate(_cfg(f"{shards}=3,{missing}=1", tmp_path)), "data")
    assert status == FAIL and str(missing) in detail


def test_damaged_data_directories_fail_naming_the_shard(shards, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shards, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    first = manifest["shards"]["train"][0]["name"]
    (broken / first).unlink()
    (broken / "train-999999.tar").write_bytes(b"stray")
    status, detail = _status(validate(_cfg(broken, tmp_path)), "data")
    assert status == FAIL and f"{first} missing" in detail
    assert "train-999999.tar not in the manifest" in detail

    truncated = tmp_path / "truncated"
    shutil.copytree(shards, truncated)
    victim = truncated / first
    victim.write_bytes(victim.read_bytes()[:1000])
    status, detail = _status(validate(_cfg(truncated, tmp_path)), "data")
    assert status == FAIL and f"{first} has 1000 bytes" in detail

    no_manifest = tmp_path / "no-manifest"
    shutil.copytree(shards, no_manifest)
    (no_manifest / "manifest.json").unlink()
    status, detail = _status(validate(_cfg(no_manifest, tmp_path)), "data")
    assert status == FAIL and "manifest.json is missing" in detail

    other_schema = tmp_path / "other-schema"
    shutil.copytree(shards, other_schema)
    manifest["encoder_schema"]["encoder_version"] = -1
    (other_schema / "manifest.json").write_text(json.dumps(manifest))
    status, detail = _status(validate(_cfg(other_schema, tmp_path)), "data")
    assert status == FAIL and "encoder_version" in detail


def test_inconsistent_config_and_unreachable_nodes_fail(shards, tmp_path):
    ds = load_ds_json("cpu") | {"train_batch_size": 999}
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    report = validate(_cfg(shards, tmp_path, ds_config=str(tmp_path / "ds.json")))
    status, detail = _status(report, "config")
    assert status == FAIL and "train_batch_size=999" in detail
    assert not report.ok

    status, detail = _status(
        validate(_cfg(shards, tmp_path, hosts="node-that-does-not-exist.invalid")), "nodes"
    )
    assert status == FAIL and "node-that-does-not-exist.invalid" in detail
    status, detail = _status(validate(_cfg(shards, tmp_path, nodes=2)), "nodes")
    assert status == FAIL and "no SLURM allocation" in detail
    status, _ = _status(validate(_cfg(shards, tmp_path, hosts="localhost")), "nodes")
    assert status == PASS


def test_gpu_memory_estimate_follows_batch_and_zero_stage():
    zero1, zero3 = load_ds_json("zero1_bf16"), load_ds_json("zero3_bf16")
    small = gpu_memory_gb("large", 64, 64, zero1, 4)
    assert gpu_memory_gb("large", 256, 64, zero1, 4) > 3 * (small - 2)  # activations dominate
    assert gpu_memory_gb("large", 64, 64, zero3, 8) < small  # parameters sharded too
    assert gpu_memory_gb("seed-200m", 64, 64, zero1, 4) > gpu_memory_gb("small", 64, 64, zero1, 4)
