"""The trained agent as a player of `pokeagent generate`: player specs, pools, and the agent's
battles coming out as every generated battle does (public replays, team sheets, ground truth),
which parse back to the agent's own choices."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from test_generate import assert_valid_outputs

from pokeagent.data.audit import AuditReport, audit_trajectory, generated_records
from pokeagent.data.encode import schema
from pokeagent.data.generate import GenerateConfig, generate, split_by_weight
from pokeagent.data.parse import SkipBattle, parse_replay
from pokeagent.data.replay import Replay, own_teams
from pokeagent.model.config import preset
from pokeagent.model.network import PokeAgentNet
from pokeagent.showdown.players import PlayerSpec, parse_pool


def untrained_checkpoint(folder, seed: int = 0):
    """A randomly initialised tiny network saved the way the trainer exports weights."""
    torch.manual_seed(seed)
    net = PokeAgentNet(preset("tiny"), schema()["vocab"])
    folder.mkdir(parents=True)
    metadata = {"model": "tiny", "model_config": json.dumps(net.cfg.to_dict()), "step": "0"}
    save_file(net.state_dict(), str(folder / "model.safetensors"), metadata=metadata)
    return folder


def test_player_specs_and_pools():
    assert PlayerSpec.parse("heuristic") == PlayerSpec("heuristic")
    agent = PlayerSpec.parse("agent:runs/a/checkpoints/step00001000@0.7")
    assert (agent.checkpoint, agent.temperature) == ("runs/a/checkpoints/step00001000", 0.7)
    assert str(PlayerSpec.parse("agent:runs/a")) == "agent:runs/a@0"  # greedy by default
    assert PlayerSpec.parse("agent:x@y/run").checkpoint == "x@y/run"  # not a temperature
    assert PlayerSpec.parse(str(agent)) == agent
    pool = parse_pool("heuristic=2, maxpower, agent:runs/a@1.5=0.5")
    assert [(str(s), w) for s, w in pool] == [
        ("heuristic", 2.0),
        ("maxpower", 1.0),
        ("agent:runs/a@1.5", 0.5),
    ]
    for bad in ("agent", "agent:runs/a@-1", "heuristic:x", "alphago", "random@1"):
        with pytest.raises(ValueError):
            PlayerSpec.parse(bad)
    with pytest.raises(ValueError, match="> 0"):
        parse_pool("random=0")


def test_pool_splits_battles_by_weight(tmp_path):
    assert split_by_weight(10, [2, 1, 1]) == [5, 3, 2]  # 2.5 and 2.5: the earlier gets it
    assert split_by_weight(3, [1, 1, 1, 1]) == [1, 1, 1, 0]
    cfg = GenerateConfig(
        out=tmp_path,
        battles=10,
        players=("agent:runs/a@1",),
        opponents="heuristic=2,maxpower=1,agent:runs/a@1=1",
    )
    assert cfg.matchups() == [
        (("agent:runs/a@1", "heuristic"), 5),
        (("agent:runs/a@1", "maxpower"), 3),
        (("agent:runs/a@1", "agent:runs/a@1"), 2),
    ]
    # Self-play: the same spec on both sides is told apart.
    assert cfg.labels()[-2:] == ["agent:runs/a@1#1", "agent:runs/a@1#2"]
    with pytest.raises(ValueError, match="twice"):
        GenerateConfig(out=tmp_path, players=("random",), opponents="random,random=2")
    with pytest.raises(ValueError, match="one player"):
        GenerateConfig(out=tmp_path, players=("random", "maxpower"), opponents="heuristic")
    with pytest.raises(ValueError, match="AgentMaker"):  # before any server starts
        generate(GenerateConfig(out=tmp_path, players=("agent:runs/a", "random")))


@pytest.mark.slow
def test_agent_battles_parse_back_to_its_own_choices(showdown_package, tmp_path):
    from pokeagent.eval.agent import AgentMaker

    checkpoint = untrained_checkpoint(tmp_path / "ckpt")
    learner = f"agent:{checkpoint}@1"  # sampled: switches, tera and varied moves
    cfg = GenerateConfig(
        out=tmp_path / "gen",
        battles=4,
        players=(learner,),
        # A baseline and the learner itself (agent vs agent, one network for both sides).
        opponents=f"random=1,{learner}=1",
        concurrency=2,
        seed=5,
    )
    summary = generate(cfg, progress=False, players=AgentMaker())
    assert summary.battles == 4 and summary.timed_out == 0 and not summary.failed, summary
    assert summary.agent_errors == 0
    versus, itself = f"{learner} vs random", f"{learner}#1 vs {learner}#2"
    assert set(summary.matchups) == {versus, itself}
    for key, tally in summary.matchups.items():
        assert tally["battles"] == 2 == sum(v for k, v in tally.items() if k != "battles"), key
    _, truths = assert_valid_outputs(cfg.out, 4)
    kinds = [t["player_kinds"] for t in truths]
    assert sorted(map(sorted, kinds)) == sorted(
        [sorted([learner, "random"])] * 2 + [[f"{learner}#1", f"{learner}#2"]] * 2
    )
    # The parser, reading only the public replay and the team sheets, labels every agent
    # decision it can see with the agent's real choice (the ground truth of the re-run).
    report, skipped = AuditReport(), 0
    for record in generated_records(cfg.out):
        replay = Replay(
            id=record["id"],
            format=record["format"],
            players=tuple(record["players"]),
            log=record["log"],
            winner=record["winner"],
            source="test",
            teams=own_teams(record["teams"]),
        )
        try:
            trajectories = parse_replay(replay)
        except SkipBattle as skip:  # Zoroark
            assert skip.reason == "illusion"
            skipped += 1
            continue
        for trajectory in trajectories:
            seat = 0 if trajectory.side == "p1" else 1
            if record["player_kinds"][seat].startswith("agent:"):
                real = [d for d in record["decisions"] if d["side"] == trajectory.side]
                audit_trajectory(record["id"], trajectory, real, report)
    assert skipped <= 1
    assert not report.misaligned and not report.mismatches, report.summary()
    assert report.illegal_labels == 0
    assert report.decisions > 3 * 15 and report.recall > 0.8, report.summary()
