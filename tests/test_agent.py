"""The live agent sees exactly what the parser reconstructs from the same battle's replay.

Real battles on a local Showdown server (agent vs poke-env's RandomPlayer, the agent as p1 and
as p2), then the server's input log re-run through the simulator into the public replay that
`pokeagent generate` writes, then `parse_replay`: decision by decision, the arrays must be equal
(one encoder, no skew), the parser's label must be the agent's own choice wherever the log
reveals it, and the request's options must sit inside the parser's estimate of them.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from poke_env.ps_client.account_configuration import AccountConfiguration

from pokeagent.data.encode import encode, schema
from pokeagent.data.generate import rerun_server_battles, served_replay
from pokeagent.data.parse import SkipBattle, parse_replay
from pokeagent.data.sources import replay_from_record
from pokeagent.eval.agent import AgentPlayer, LiveView, NetworkPolicy, public_hp
from pokeagent.model.config import preset
from pokeagent.model.network import PokeAgentNet
from pokeagent.showdown import actions as A
from pokeagent.showdown.players import make_baseline, unique_name

BATTLES_PER_SIDE = 2


def _untrained_policy(seed: int) -> NetworkPolicy:
    torch.manual_seed(seed)
    net = PokeAgentNet(preset("tiny"), schema()["vocab"]).eval()
    # Sampling makes the untrained agent switch, use gimmicks and pick varied moves.
    return NetworkPolicy(net, temperature=1.0, seed=seed)


async def _play(server, battle_format: str, seed: int) -> AgentPlayer:
    config = server.server_configuration()
    agent = AgentPlayer(
        _untrained_policy(seed),
        account_configuration=AccountConfiguration(unique_name("agent"), None),
        server_configuration=config,
        battle_format=battle_format,
        keep_records=True,
        log_level=40,
    )
    opponent = make_baseline("random", unique_name("random"), config, battle_format)
    await asyncio.wait_for(agent.battle_against(opponent, n_battles=BATTLES_PER_SIDE), 300)
    await asyncio.wait_for(opponent.battle_against(agent, n_battles=BATTLES_PER_SIDE), 300)
    for player in (agent, opponent):
        await player.ps_client.stop_listening()
    return agent


# Gen 9 (what the demo plays) and gen 1 (no items or abilities, HP in 48ths, partial trapping).
# Known rare gaps elsewhere: private halves of split lines in old gens (a Skill Swap), and a
# gen-7 switch mask the parser narrows.
@pytest.mark.slow
@pytest.mark.parametrize("battle_format", ["gen9randombattle", "gen1randombattle"])
def test_live_arrays_equal_the_parsers(showdown_server, showdown_package, battle_format):
    agent = asyncio.run(_play(showdown_server, battle_format, seed=7))
    assert agent.agent_errors == 0, agent.error_kinds
    assert len(agent.records) == 2 * BATTLES_PER_SIDE
    compared = labelled = same_mask = illusions = diverged = 0
    sides = set()
    for tag, record in rerun_server_battles(
        showdown_server.logs_dir, [">" + t for t in agent.records], showdown_package
    ):
        if battle_format.startswith("gen1") and record.get("error", "").startswith(
            "choice rejected by the simulator"
        ):
            # The simulator's own re-run of its input log can refuse a choice its server took:
            # the log names moves (`move rest`), and in gen 1 the name finds another slot than
            # the one chosen (seen once, a Transformed Ditto's). Nothing of ours to compare.
            diverged += 1
            continue
        assert "error" not in record, record
        replay = replay_from_record(served_replay(record, uploadtime=0))
        side = "p1" if record["players"][0] == agent.username else "p2"
        try:
            trajectory = parse_replay(replay, encoder=encode)[0 if side == "p1" else 1]
        except SkipBattle as skip:  # Zoroark: the parser refuses what it cannot see through
            assert skip.reason == "illusion", skip.reason
            illusions += 1
            continue
        sides.add(side)
        live = agent.records[tag.removeprefix(">")]
        assert [o.kind for o, _, _ in live] == [d.kind for d in trajectory.decisions], tag
        for (observation, action, _win), decision in zip(live, trajectory.decisions, strict=True):
            where = f"{tag} turn {decision.turn}"
            for key in ("tokens", "features", "globals"):
                np.testing.assert_array_equal(observation.arrays[key], decision.obs[key], where)
            if decision.action != A.UNKNOWN_ACTION:
                assert decision.action == action, where
                labelled += 1
            # The request is the truth; the parser's mask may only be wider (hidden trapping,
            # disabled moves), except where every move is out of PP: logs do not count PP.
            if not observation.struggling:
                assert not (observation.legal & ~decision.legal).any(), where
            # Where the mask is wider, it must be for hidden reasons more often than not; a move
            # out of PP is one the log never shows, so it does not count as a difference.
            wider = decision.legal & ~observation.legal
            for slot in observation.out_of_pp:
                wider[A.move_action(slot)] = wider[A.move_action(slot, gimmick=True)] = False
            same_mask += not wider.any()
            compared += 1
    assert sides == {"p1", "p2"} and illusions + diverged <= 1
    assert compared > 20 * BATTLES_PER_SIDE and labelled > compared // 2
    assert same_mask > 0.8 * compared


def test_public_hp_matches_the_simulator():
    """Pokemon.getHealth: percentages round up, never 100 below full; 48ths in old gens."""
    assert public_hp(300, 300, 9, False) == "100/100"
    assert public_hp(299, 300, 9, False) == "99/100"
    assert public_hp(1, 300, 9, False) == "1/100"
    assert public_hp(250, 300, 7, False) == "84/100"
    assert public_hp(250, 300, 4, True) == "84/100"
    assert public_hp(250, 300, 4, False) == "40/48"
    assert public_hp(1, 300, 3, False) == "1/48"
    assert public_hp(151, 300, 5, False) == "24/48g"
    assert public_hp(149, 300, 5, False) == "23/48"


def test_own_exact_hp_becomes_public():
    view = LiveView(username="me")
    for line in ("|player|p1|me|1|", "|player|p2|them|2|", "|gen|9", "|start"):
        view.feed(line)
    view.feed("|switch|p1a: Pikachu|Pikachu, L90, M|250/300")
    view.feed("|switch|p2a: Eevee|Eevee, L90, F|71/100")
    assert view.state.sides["p1"].active.hp == pytest.approx(0.84)
    view.feed("|-damage|p1a: Pikachu|30/300 par")
    assert view.state.sides["p1"].active.hp == pytest.approx(0.10)
    assert view.state.sides["p1"].active.status == "par"
    assert view.state.sides["p2"].active.hp == pytest.approx(0.71)
