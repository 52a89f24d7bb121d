"""`pokeagent bench gpu --device cpu`: the smoke version of the one GPU check runs end to end (its
own shards from simulator battles, the DeepSpeed engine, resume, the loader) and reports the
same table and JSON as on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pokeagent.bench.gpu import GpuBenchConfig, problems, table


@pytest.mark.slow
def test_smoke_version_runs_and_reports(showdown_package, tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", DEEPSPEED_TIMEOUT="2")
    env.pop("RANK", None)
    done = subprocess.run(
        # A budget that never binds (~1 min on an idle 2-core machine): the test checks what the
        # report holds, not how fast a loaded machine makes it.
        [sys.executable, "-m", "pokeagent", "bench", "gpu", "--device", "cpu", "--out", str(out),
         "--budget-s", "540"],
        env=env,
        capture_output=True,
        text=True,
        timeout=570,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["environment"]["device"] == "cpu"
    assert report["shards"] == "made from simulator battles"
    cells = {c["ds_config"]: c for c in report["cells"]}
    assert set(cells) == {"zero2_bf16", "zero2_fp16", "zero3_bf16"}
    # DeepSpeed runs no fp16 on a CPU: the row says so instead of failing the run.
    assert (
        cells["zero2_fp16"]["status"].startswith("skipped: ")
        and "fp16" in (cells["zero2_fp16"]["status"])
    )
    for name in ("zero2_bf16", "zero3_bf16"):
        cell = cells[name]
        assert cell["status"] == "ok", cell["status"]
        assert cell["precision"] == "bf16" and cell["parameters"] > 0
        assert cell["loss_finite"] and cell["loss_falling"], cell["losses"]
        assert cell["samples_per_s"] > 0 and cell["decisions_per_s"] > 0
        assert cell["mfu"] is None  # no peak for a CPU
        assert cell["max_batch"] == 8 and cell["max_batch_limit"] == "cap"
        assert cell["flops_per_decision"] > 0 and cell["tflops"] > 0
    (resume,) = report["resume"]
    assert resume["verdict"] == "exact", resume
    assert resume["continuous"] == resume["resumed"] and len(resume["continuous"]) == 3
    feed = report["feed"]
    assert feed["status"] == "ok" and feed["workers"] == 1
    assert 0 <= feed["data_wait_share"] <= 1 and feed["decisions_per_s"] > 0
    assert report["problems"] == []
    # The printed table is the report's, row for row.
    assert "pokeagent bench gpu on CPU (smoke version)" in done.stdout
    assert table(report) in done.stdout
    assert "zero2_fp16  skipped" in done.stdout and "problems: none" in done.stdout


def test_problems_name_what_failed():
    cell = {
        "model": "small",
        "ds_config": "zero2_fp16",
        "status": "ok",
        "loss_finite": False,
        "loss_falling": False,
    }
    report = {
        "cells": [cell, {**cell, "ds_config": "zero3_bf16", "loss_finite": True}],
        "resume": [{"ds_config": "zero2_bf16", "verdict": "DIFFERS"}],
        "feed": {"status": "ok", "data_wait_share": 0.4, "workers": 2},
    }
    found = problems(report)
    assert found == [
        "small zero2_fp16: a loss is not finite",
        "small zero3_bf16: the loss did not fall on a repeated batch",
        "resume zero2_bf16: DIFFERS",
        "loader feed: the model waited 40% of the time for data with 2 workers",
    ]


def test_the_gpu_defaults_stay_within_eight_minutes():
    full = GpuBenchConfig()
    assert full.device == "cuda" and full.budget_s <= 8 * 60 - 60
    assert full.models == ("small", "large", "seed-200m")
    assert full.ds_configs == ("zero2_bf16", "zero2_fp16", "zero3_bf16")
    assert GpuBenchConfig.smoke().device == "cpu"


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_cuda_without_a_gpu_is_refused_with_the_way_out(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pokeagent",
            "bench",
            "gpu",
            "--shards",
            str(tmp_path),
            "--out",
            str(tmp_path / "x.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "--device cpu" in done.stderr


class _FakeEngine:
    """Stands in for the DeepSpeed engine where only the search logic is under test."""

    skipped_steps = 0
    destroyed = False

    def fp16_enabled(self) -> bool:
        return False

    def destroy(self) -> None:
        _FakeEngine.destroyed = True


def test_the_batch_search_stops_at_the_first_out_of_memory(monkeypatch):
    """Doubling from 4: 8 runs, 16 runs out of CUDA memory: the largest batch is 8, the limit
    'oom', and the engine is released."""
    import torch

    from pokeagent.bench import gpu_checks

    fits = 8
    steps = []

    def step(engine, batch):
        size = batch["mask"].shape[0]
        if size > fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        steps.append(size)
        return {"loss": torch.tensor(2.0 - 0.1 * len(steps))}

    class Pool:
        def take(self, size, offset=0):
            return {"mask": torch.ones(size, 16, dtype=torch.bool)}

    monkeypatch.setattr(gpu_checks, "_engine", lambda *args, **kw: (_FakeEngine(), 1234))
    monkeypatch.setattr(gpu_checks, "_step", step)
    cfg = GpuBenchConfig.smoke(max_batch=1024)
    cell = gpu_checks.run_cell(
        cfg, "tiny", "zero2_bf16", Pool(), torch.device("cpu"), deadline=float("inf")
    )
    assert cell.status == "ok" and cell.parameters == 1234
    assert cell.max_batch == 8 and cell.max_batch_limit == "oom"
    assert cell.loss_finite and cell.loss_falling and cell.steps == cfg.min_steps
    assert cell.max_batch_samples_per_s > 0 and _FakeEngine.destroyed
    assert steps.count(8) == 2  # two steps at each size that fits: the second is timed
    assert [row["batch"] for row in cell.search] == [8]
    # Another error than running out of memory is the row's error, not a search result.
    monkeypatch.setattr(
        gpu_checks, "_step", lambda engine, batch: (_ for _ in ()).throw(RuntimeError("NCCL"))
    )
    cell = gpu_checks.run_cell(
        cfg, "tiny", "zero2_bf16", Pool(), torch.device("cpu"), deadline=float("inf")
    )
    assert cell.status == "error: RuntimeError: NCCL"
