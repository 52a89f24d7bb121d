"""DeepSpeed config resolution: one place per knob, batch arithmetic, the lr rule, CPU limits."""

from __future__ import annotations

import json
import math

import pytest

from pokeagent.train.ds_config import (
    DS_CONFIG_DIR,
    BatchPlan,
    ConfigError,
    load_ds_json,
    resolve_ds_config,
    scaled_lr,
)

SHIPPED = ("zero1_bf16", "zero2_fp16", "zero2_bf16", "zero3_bf16", "zero2_offload", "cpu")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_resolve(name):
    plan = BatchPlan(micro_batch=8, grad_accum=2, world_size=4)
    config = resolve_ds_config(name, plan, lr=3e-4, grad_clip=1.0, fp16_supported=True)
    assert config["train_batch_size"] == 64 == 8 * 2 * 4
    assert config["optimizer"]["params"]["lr"] == 3e-4
    assert config["zero_optimization"]["stage"] in (1, 2, 3)
    # The shipped files leave the run's knobs to the run config.
    raw = json.loads((DS_CONFIG_DIR / f"{name}.json").read_text())
    assert not {
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
    } & set(raw)


def test_a_knob_stated_twice_must_agree():
    config = load_ds_json("cpu") | {"train_batch_size": 128}
    with pytest.raises(ConfigError, match="train_batch_size=128"):
        resolve_ds_config(config, BatchPlan(8, 1, 2), lr=1e-3, grad_clip=1.0, fp16_supported=False)
    agreeing = load_ds_json("cpu") | {"train_batch_size": 16}
    assert (
        resolve_ds_config(
            agreeing, BatchPlan(8, 1, 2), lr=1e-3, grad_clip=1.0, fp16_supported=False
        )["train_batch_size"]
        == 16
    )


def test_fp16_is_refused_clearly_on_cpu():
    with pytest.raises(ConfigError, match=r"fp16.*cpu\.json"):
        resolve_ds_config(
            "zero2_fp16", BatchPlan(4, 1, 1), lr=1e-3, grad_clip=1.0, fp16_supported=False
        )


def test_unknown_config_names_the_choices():
    with pytest.raises(ConfigError, match="zero2_bf16"):
        load_ds_json("zero9_fp8")


def test_sqrt_lr_rule():
    assert scaled_lr(3e-4, 256) == pytest.approx(3e-4)
    assert scaled_lr(3e-4, 1024) == pytest.approx(6e-4)
    assert scaled_lr(3e-4, 64) == pytest.approx(3e-4 * math.sqrt(0.25))


@pytest.mark.parametrize("name", SHIPPED)
def test_deepspeed_accepts_the_resolved_configs(name, monkeypatch):
    for key, value in dict(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29611"
    ).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from deepspeed.runtime.config import DeepSpeedConfig

    resolved = resolve_ds_config(
        name, BatchPlan(8, 2, 1), lr=3e-4, grad_clip=1.0, fp16_supported=True
    )
    parsed = DeepSpeedConfig(resolved)  # DeepSpeed's own validation of every field
    assert parsed.train_batch_size == 16 and parsed.gradient_accumulation_steps == 2
    assert parsed.zero_optimization_stage == resolved["zero_optimization"]["stage"]
    assert parsed.float16_config.enabled == (name == "zero2_fp16")
    assert parsed.bfloat16_config.enabled == (name not in ("zero2_fp16", "cpu"))
