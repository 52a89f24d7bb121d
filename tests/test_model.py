"""The network: preset sizes, shapes, masking, causality, and that it can learn a real batch."""

from __future__ import annotations

import pytest
import torch

from pokeagent.data.encode import schema
from pokeagent.data.loader import LoaderConfig, TrajectoryLoader
from pokeagent.model.config import NOMINAL_PARAMETERS, PRESETS, preset
from pokeagent.model.loss import compute_loss
from pokeagent.model.network import build, count_parameters
from pokeagent.showdown import actions as A

VOCAB = schema()["vocab"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_sizes_match_their_names(name):
    count = count_parameters(build(PRESETS[name], VOCAB, "meta"))
    nominal = NOMINAL_PARAMETERS[name]
    if name == "tiny":
        assert count < nominal
    else:
        assert 0.9 * nominal <= count <= 1.1 * nominal, f"{name}: {count / 1e6:.1f}M"


@pytest.fixture(scope="module")
def batch(shards):
    return next(
        iter(TrajectoryLoader(LoaderConfig(shards=shards, batch_size=8, window=32, workers=0)))
    )


def test_forward_masks_illegal_actions(batch):
    torch.manual_seed(0)
    model = build(preset("tiny"), VOCAB)
    logits, value = model(batch)
    assert logits.shape == (8, 32, A.N_ACTIONS) and value.shape == (8, 32)
    real = batch["mask"]
    assert torch.isinf(logits[real][~batch["legal"][real]]).all()
    assert torch.isfinite(logits[real][batch["legal"][real]]).all()
    assert batch["legal"][real].gather(-1, logits[real].argmax(-1, keepdim=True)).all()


def test_decisions_only_see_the_past(batch):
    torch.manual_seed(0)
    model = build(preset("tiny"), VOCAB).eval()
    changed = {k: v.clone() for k, v in batch.items()}
    changed["features"][:, 20:] = 0.5  # alter the future of every window
    with torch.no_grad():
        before, _ = model(batch)
        after, _ = model(changed)
    legal = batch["legal"][:, :20]
    assert torch.equal(before[:, :20][legal], after[:, :20][legal])
    assert not torch.equal(
        before[:, 20:][batch["legal"][:, 20:]], after[:, 20:][batch["legal"][:, 20:]]
    )


def test_tiny_model_learns_a_real_batch(batch):
    torch.manual_seed(0)
    model = build(preset("tiny"), VOCAB)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        logits, value = model(batch)
        loss, parts = compute_loss(logits, value, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    assert 0 < int(parts["top1_correct"]) <= int(parts["top3_correct"]) <= int(parts["labelled"])
    assert int(parts["labelled"]) == int(((batch["action"] >= 0) & batch["mask"]).sum())
