"""Audit the parser against ground truth: simulator battles where every real choice is known.

`pokeagent generate` and `simtool` write, per battle, the public log and each player's real
decisions (from the requests they answered). The parser sees only the log; this module checks
that its decision points align with the real ones (count and kind, per side) and that every
label it gives equals the real choice. Recall = labelled / real decisions.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pokeagent.data.parse import Encoder, SkipBattle, Trajectory, parse_replay
from pokeagent.data.replay import Replay, own_teams
from pokeagent.showdown import actions as A

_KINDS = {"team_preview": A.TEAM_PREVIEW, "turn": A.TURN, "forced_switch": A.FORCED_SWITCH}


@dataclass
class AuditReport:
    battles: int = 0
    skipped: Counter = field(default_factory=Counter)
    decisions: int = 0
    """Real decisions in the battles parsed (both sides)."""
    labelled: int = 0
    mismatches: list[tuple] = field(default_factory=list)
    """(battle id, side, turn, real choice, parser's label) for every wrong label."""
    misaligned: list[tuple] = field(default_factory=list)
    """(battle id, side) where decision points differ in count or kind."""
    illegal_labels: int = 0
    """Labels outside the decision's own legal mask (must be 0)."""

    @property
    def recall(self) -> float:
        return self.labelled / self.decisions if self.decisions else 0.0

    def summary(self) -> str:
        return (
            f"{self.battles} battles, {self.decisions} real decisions, {self.labelled} labelled "
            f"(recall {self.recall:.1%}), {len(self.mismatches)} wrong labels, "
            f"{len(self.misaligned)} misaligned sides, skipped {dict(self.skipped)}"
        )


def _real_key(action: dict) -> tuple:
    if action["type"] == "move":
        return ("move", action["move"], action.get("gimmick"))
    if action["type"] == "switch":
        return ("switch", action["species"])
    if action["type"] == "team":
        return ("team", action["lead"])
    return (action["type"],)


def _label_key(info: dict) -> tuple:
    if info["type"] == "move":
        return ("move", info["name"], info.get("gimmick"))
    if info["type"] == "switch":
        return ("switch", info["species"])
    return ("team", info["lead"])


def audit_trajectory(
    battle_id: str, trajectory: Trajectory, real: list[dict], report: AuditReport
) -> None:
    """Compare one side's parsed decisions with that side's real ones."""
    real = [d for d in real if d["action"]["type"] != "pass"]
    report.decisions += len(real)
    if [_KINDS[d["kind"]] for d in real] != [d.kind for d in trajectory.decisions]:
        report.misaligned.append((battle_id, trajectory.side))
        return
    for truth, parsed in zip(real, trajectory.decisions, strict=True):
        if parsed.action < 0:
            continue
        report.labelled += 1
        if not parsed.legal[parsed.action]:
            report.illegal_labels += 1
        if _real_key(truth["action"]) != _label_key(parsed.action_info):
            report.mismatches.append(
                (
                    battle_id,
                    trajectory.side,
                    truth["turn"],
                    _real_key(truth["action"]),
                    _label_key(parsed.action_info),
                )
            )


def audit(
    records: Iterable[dict], encoder: Encoder | None = None, team_sheets: bool = True
) -> AuditReport:
    """Audit battle records (simtool's shape: id, format, players, log, winner, decisions).

    With `encoder`, every decision is also encoded, as when packing. `team_sheets` gives the
    parser each player's team sheet from the record, as `pack` does for generated battles;
    without, it reads own teams in hindsight, as for public replays.
    """
    report = AuditReport()
    for record in records:
        if "error" in record:
            report.skipped["no record: " + record["error"][:40]] += 1
            continue
        replay = Replay(
            id=record["id"],
            format=record.get("format") or record.get("formatid", ""),
            players=tuple(record["players"]),
            log=record["log"],
            winner=record.get("winner"),
            source="audit",
            teams=own_teams(record.get("teams")) if team_sheets else None,
        )
        try:
            trajectories = parse_replay(replay, encoder=encoder)
        except SkipBattle as skip:
            report.skipped[skip.reason] += 1
            continue
        report.battles += 1
        for trajectory in trajectories:
            real = [d for d in record["decisions"] if d["side"] == trajectory.side]
            audit_trajectory(record["id"], trajectory, real, report)
    return report


def generated_records(folder) -> Iterable[dict]:
    """Battle records from a `pokeagent generate` folder (replays.jsonl + ground_truth.jsonl)."""
    folder = Path(folder)
    with (
        open(folder / "replays.jsonl", encoding="utf-8") as replays,
        open(folder / "ground_truth.jsonl", encoding="utf-8") as truths,
    ):
        for replay_line, truth_line in zip(replays, truths, strict=True):
            replay, truth = json.loads(replay_line), json.loads(truth_line)
            if replay["id"] != truth["id"]:
                raise ValueError(
                    f"{folder}: replays.jsonl and ground_truth.jsonl disagree at {replay['id']}"
                )
            yield {
                **truth,
                "format": replay["formatid"],
                "log": replay["log"],
                "teams": replay.get("teams"),
            }
