"""The critic and the advantage-weighted objectives (model/loss.py, model/rewards.py,
train/critic_target.py): bc unchanged bitwise, the weights on a hand-made batch, window ends,
convergence to known returns, the target's Polyak step and its state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pokeagent.data.encode import MON_FEATURES, N_GLOBAL_FEATURES, N_MON_FEATURES, schema
from pokeagent.data.loader import LoaderConfig, TrajectoryLoader, collate, cut_window
from pokeagent.model.config import preset
from pokeagent.model.loss import LossConfig, compute_loss, critic_terms
from pokeagent.model.network import CRITIC_WEIGHTS, build
from pokeagent.model.rewards import transitions
from pokeagent.showdown import actions as A
from pokeagent.train.critic_target import CriticTarget

VOCAB = schema()["vocab"]


def loss_before_the_critic(logits, value_logits, batch, value_weight=0.5):
    """A frozen copy of compute_loss as it was before the critic: `bc` must stay bitwise this."""
    mask = batch["mask"]
    action = batch["action"].long()
    labelled = mask & (action >= 0)
    n_labelled = labelled.sum()
    picked = logits[labelled].float()
    targets = action[labelled]
    policy = F.cross_entropy(picked, targets, reduction="sum") / n_labelled.clamp(min=1)
    outcome = batch["outcome"].to(value_logits.dtype).unsqueeze(1).expand_as(value_logits)
    n_steps = mask.sum()
    value = F.binary_cross_entropy_with_logits(
        value_logits[mask].float(), outcome[mask].float(), reduction="sum"
    ) / n_steps.clamp(min=1)
    return policy + value_weight * value, policy, value


@pytest.fixture(scope="module")
def batch(shards):
    loader = TrajectoryLoader(LoaderConfig(shards=shards, batch_size=8, window=24, workers=0))
    return next(iter(loader))


def test_bc_is_bitwise_the_loss_before_the_critic(batch):
    torch.manual_seed(0)
    plain = build(preset("tiny"), VOCAB)
    logits, value = plain(batch)
    total, parts = compute_loss(logits, value, batch, LossConfig())
    old_total, old_policy, old_value = loss_before_the_critic(logits, value, batch)
    assert torch.equal(total, old_total)
    assert torch.equal(parts["policy_loss"], old_policy.detach())
    assert torch.equal(parts["value_loss"], old_value.detach())
    # Without a critic, the network's weights are those it had before the critic existed: the
    # critic is built last, so the other modules draw the same random numbers.
    torch.manual_seed(0)
    with_critic = build(preset("tiny", critic_heads=3), VOCAB)
    own = dict(with_critic.named_parameters())
    for name, weight in plain.named_parameters():
        assert torch.equal(weight, own[name]), name
    # With a critic and `bc`, the policy and value terms are still the same numbers.
    logits2, value2, q, q_target = with_critic(batch, critic=True)
    assert torch.equal(logits2, logits) and torch.equal(value2, value)
    total2, parts2 = compute_loss(logits2, value2, batch, LossConfig(), q=q, q_target=q_target)
    assert torch.equal(parts2["policy_loss"], old_policy.detach())
    assert torch.equal(total2, old_total + parts2["critic_loss"])


def _hand_made(objective: str, **options):
    """One window of 2 decisions, both labelled with action 0, only actions 0 and 1 legal, the
    policy at 50/50; two heads with Q(s, 0) = 1.0 / 0.6 and Q(s, 1) = 0.0 / 0.2 at decision 0,
    the reverse at decision 1."""
    legal = torch.zeros(1, 2, A.N_ACTIONS, dtype=torch.bool)
    legal[..., :2] = True
    logits = torch.zeros(1, 2, A.N_ACTIONS).masked_fill(~legal, float("-inf"))
    q = torch.zeros(1, 2, 2, A.N_ACTIONS)
    q[0, 0, :, 0], q[0, 0, :, 1] = torch.tensor([1.0, 0.6]), torch.tensor([0.0, 0.2])
    q[0, 1, :, 0], q[0, 1, :, 1] = torch.tensor([0.0, 0.2]), torch.tensor([1.0, 0.6])
    batch = {
        "legal": legal,
        "action": torch.zeros(1, 2, dtype=torch.int8),
        "mask": torch.ones(1, 2, dtype=torch.bool),
        "last": torch.tensor([[False, True]]),
        "outcome": torch.tensor([1.0]),
    }
    cfg = LossConfig(objective=objective, **options)
    value = torch.zeros(1, 2)
    return logits, value, q, batch, cfg


@pytest.mark.parametrize("reduce", ["mean", "min"])
def test_weights_are_the_filter_and_the_clipped_exponential(reduce):
    # Mean over heads: Q(s0) = (0.8, 0.1), baseline 0.45, A = +0.35; decision 1: A = -0.35.
    # Min over heads: Q(s0) = (0.6, 0.0), baseline 0.3, A = +0.3; decision 1: A = -0.3.
    advantage = 0.35 if reduce == "mean" else 0.3
    nll = math.log(2.0)  # the logged action under a 50/50 policy
    for objective, weights in (
        ("binary", [1.0, 0.0]),
        ("exp", [min(math.exp(2.0 * advantage), 1.5), math.exp(-2.0 * advantage)]),
    ):
        logits, value, q, batch, cfg = _hand_made(
            objective, advantage_beta=2.0, advantage_clip=1.5, critic_reduce=reduce
        )
        terms = critic_terms(logits, q, q.clone(), batch, cfg)
        assert terms["advantage"][0].tolist() == pytest.approx([advantage, -advantage])
        _, parts = compute_loss(logits, value, batch, cfg, q=q, q_target=q.clone())
        assert float(parts["policy_loss"]) == pytest.approx(sum(weights) * nll / 2)
        assert float(parts["weight_sum"]) == pytest.approx(sum(weights))
        assert int(parts["kept"]) == sum(w > 0 for w in weights)


def test_unlabelled_decisions_train_no_head_but_are_bootstrapped_from():
    logits, value, q, batch, cfg = _hand_made("binary", discount=0.5)
    batch["action"][0, 1] = -1  # the last decision's choice is unknown
    terms = critic_terms(logits, q, q.clone(), batch, cfg)
    assert terms["trained"].tolist() == [[True, False]]
    assert float(terms["advantage"][0, 1]) == 0.0
    # Decision 0's target: no reward, discount x sum pi(a|s1) Qtarget(s1, a) = 0.5 x 0.45.
    expected = ((1.0 - 0.225) ** 2 + (0.6 - 0.225) ** 2) / 2
    assert float(terms["critic_loss"]) == pytest.approx(expected)
    _, parts = compute_loss(logits, value, batch, cfg, q=q, q_target=q.clone())
    assert int(parts["labelled"]) == 1 and int(parts["critic_trained"]) == 1


def _sample(steps: int, outcome: int) -> dict[str, np.ndarray]:
    """A stored-shape trajectory of `steps` decisions (arrays as the shards hold them)."""
    return {
        "tokens": np.zeros((steps, 12, 8), dtype=np.int16),
        "features": np.zeros((steps, 12, N_MON_FEATURES), dtype=np.float16),
        "globals": np.zeros((steps, N_GLOBAL_FEATURES), dtype=np.float16),
        "legal": np.ones((steps, A.N_ACTIONS), dtype=np.uint8),
        "action": np.zeros(steps, dtype=np.int8),
        "kind": np.zeros(steps, dtype=np.int8),
        "turn": np.arange(steps, dtype=np.int16),
        "info": np.array([9, -1, -1, outcome], dtype=np.int32),
    }


def test_a_window_cut_short_masks_its_last_decision_and_the_terminal_one_is_rewarded():
    win, loss = _sample(10, 2), _sample(10, 0)
    middle = collate([cut_window(win, 2, 4)], [win["info"]])  # decisions 2-5 of 10
    end = collate([cut_window(loss, 6, 4)], [loss["info"]])  # decisions 6-9: the last one
    padded = collate([cut_window(win, 8, 4)], [win["info"]])  # 8-9, then 2 padding steps
    steps = transitions(middle)
    assert steps.has_target.tolist() == [[True, True, True, False]]
    assert not steps.terminal.any() and not steps.reward.any()
    steps = transitions(end, reward_scale=2.0)
    assert steps.has_target.tolist() == [[True, True, True, True]]
    assert steps.terminal.tolist() == [[False, False, False, True]]
    assert steps.reward.tolist() == [[0.0, 0.0, 0.0, -2.0]]
    steps = transitions(padded)
    assert steps.has_target.tolist() == [[True, True, False, False]]
    assert steps.reward.tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_shaping_counts_damage_faints_and_status_between_decisions():
    sample = _sample(3, 1)  # a tie: no terminal reward
    hp, present, fainted = (MON_FEATURES.index(n) for n in ("hp", "present", "fainted"))
    status = MON_FEATURES.index(next(n for n in MON_FEATURES if n.startswith("status_")))
    rows = sample["features"]
    rows[:, [0, 6], present] = 1
    rows[:, [0, 6], hp] = 1
    rows[1:, 6, hp] = 0.25  # the opponent's active loses 75% before decision 1
    rows[2, 0, hp] = 0.5  # ours loses half before decision 2 ...
    rows[2, 6, hp], rows[2, 6, fainted] = 0, 1  # ... and theirs faints
    rows[1:, 0, status] = 1  # ours is statused before decision 1
    rows[2, 7, [present, hp]] = 1  # a Pokémon revealed at decision 2 changes nothing
    batch = collate([cut_window(sample, 0, 3)], [sample["info"]])
    shaped = transitions(batch, shaping_weight=0.1).reward[0].tolist()
    assert shaped == pytest.approx([0.1 * (0.75 - 0.25), 0.1 * (0.25 - 0.5 + 1.0), 0.0])
    assert not transitions(batch).reward.any()  # off by default


def test_the_critic_converges_to_known_returns():
    """Trajectories of 5 decisions with one legal action each: Q(s_t) must reach the discounted
    return discount^(4 - t) x (+1 win / -1 loss); the species token tells the two apart."""
    torch.manual_seed(0)
    discount, steps = 0.9, 5
    samples = []
    for outcome in (2, 0, 2, 0):
        sample = _sample(steps, outcome)
        sample["legal"][:] = 0
        sample["legal"][:, 0] = 1
        sample["tokens"][:, 0, 0] = 5 if outcome == 2 else 9
        sample["globals"][:, 0] = np.arange(steps) / steps  # where in the battle
        samples.append(sample)
    batch = collate([cut_window(s, 0, steps) for s in samples], [s["info"] for s in samples])
    net = build(preset("tiny", critic_heads=2), VOCAB)
    target = CriticTarget(net.critic, rate=0.1, device=torch.device("cpu"))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    cfg = LossConfig(discount=discount)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only wait on each other
    try:
        for _ in range(300):
            logits, _, q, q_target = net(batch, critic=True, critic_target=target.weights)
            loss = critic_terms(logits, q, q_target, batch, cfg)["critic_loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            target.update(net.critic)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        q = net(batch, critic=True)[2][..., 0].mean(-1)  # [4, 5]: Q of the only action
    returns = torch.tensor([discount ** (steps - 1 - t) for t in range(steps)])
    expected = torch.stack([returns, -returns, returns, -returns])
    assert torch.allclose(q, expected, atol=0.05), (q, expected)


def test_the_target_moves_by_polyak_steps_and_round_trips_its_state():
    torch.manual_seed(0)
    net = build(preset("tiny", critic_heads=2), VOCAB)
    target = CriticTarget(net.critic, rate=0.25, device=torch.device("cpu"))
    before = {k: v.clone() for k, v in target.weights.items()}
    with torch.no_grad():
        for name in CRITIC_WEIGHTS:
            getattr(net.critic, name).add_(1.0)
    target.update(net.critic)
    for name in CRITIC_WEIGHTS:
        online = getattr(net.critic, name).detach()
        assert torch.allclose(target.weights[name], 0.75 * before[name] + 0.25 * online)
        assert target.weights[name].dtype == torch.float32
    state = target.state_dict()
    fresh = CriticTarget(net.critic, rate=0.25, device=torch.device("cpu"))
    assert not torch.equal(fresh.weights["read_w"], state["read_w"])
    fresh.load_state_dict(state)
    for name in CRITIC_WEIGHTS:
        assert torch.equal(fresh.weights[name], target.weights[name])
    other = CriticTarget(
        build(preset("tiny", critic_heads=3), VOCAB).critic, 0.25, torch.device("cpu")
    )
    with pytest.raises(ValueError, match="critic-heads"):
        other.load_state_dict(state)


def test_objectives_need_a_critic_and_knobs_are_checked(batch):
    net = build(preset("tiny"), VOCAB)
    logits, value = net(batch)
    with pytest.raises(ValueError, match="needs a critic"):
        compute_loss(logits, value, batch, LossConfig(objective="binary"))
    with pytest.raises(ValueError, match="no critic"):
        net(batch, critic=True)
    with pytest.raises(ValueError, match="objective"):
        LossConfig(objective="awr")
    with pytest.raises(ValueError, match="critic_reduce"):
        LossConfig(critic_reduce="max")


def test_offline_metrics_report_the_critic(shards):
    from pokeagent.data.heldout import read_trajectories, shard_paths
    from pokeagent.eval.offline import markdown
    from pokeagent.model.metrics import evaluate, scalars

    samples = list(read_trajectories(shard_paths(shards, "val"), 8))
    torch.manual_seed(0)
    plain = evaluate(build(preset("tiny"), VOCAB), samples, window=24)
    assert "critic_brier" not in plain["overall"]
    metrics = evaluate(build(preset("tiny", critic_heads=2), VOCAB), samples, window=24)
    overall = metrics["overall"]
    assert 0.0 <= overall["critic_brier"] <= 1.0
    for name in ("critic_top1", "advantage_positive"):
        assert 0.0 <= overall[name] <= 1.0
    assert math.isfinite(overall["q_taken"])
    # The critic's best action is the logged one no more often than chance allows: a fresh
    # critic knows nothing, and at least one decision has two or more legal actions.
    assert overall["critic_top1"] < 1.0
    assert "val/critic_brier" in scalars(metrics, "val")
    assert "## Critic" in markdown(metrics | {"shards": []})
