"""`pokeagent inspect`: a parsed battle, decision by decision, for a human to read (or as JSON)."""

from __future__ import annotations

from pokeagent.data.parse import Decision, Trajectory
from pokeagent.showdown import actions as A


def action_by_name(
    trajectory: Trajectory, decision: Decision, action: int, gimmick: str | None
) -> dict:
    """One action index of one decision in the shape of the ground truth: names, not slots."""
    kind, slot, with_gimmick = A.describe(action)
    team = trajectory.team
    if kind == "switch":
        species = team[slot]["species"] if slot < len(team) else None
        if decision.kind == A.TEAM_PREVIEW:
            return {"type": "team", "lead": species}
        return {"type": "switch", "species": species}
    moves = (
        team[decision.active_slot]["moves"]
        if decision.active_slot is not None and decision.active_slot < len(team)
        else []
    )
    return {
        "type": "move",
        "name": moves[slot] if slot < len(moves) else None,
        "gimmick": gimmick if with_gimmick else None,
    }


def generation_gimmick(gen: int) -> str | None:
    """The gimmick a generation's gimmick-block actions stand for."""
    return {6: "mega", 7: "mega", 8: "dynamax", 9: "terastallize"}.get(gen)


def describe(trajectory: Trajectory) -> list[dict]:
    """One JSON-able object per decision: side, turn, kind, action (or None), legal options."""
    rows = []
    for decision in trajectory.decisions:
        gimmick = (decision.action_info or {}).get("gimmick") or generation_gimmick(trajectory.gen)
        legal = [
            action_by_name(trajectory, decision, a, gimmick)
            for a in range(A.N_ACTIONS)
            if decision.legal[a]
        ]
        rows.append(
            {
                "side": trajectory.side,
                "turn": decision.turn,
                "kind": A.KIND_NAMES[decision.kind],
                "action": decision.action_info if decision.action >= 0 else None,
                "action_index": decision.action,
                "legal": legal,
            }
        )
    return rows


def _short(action: dict | None) -> str:
    if action is None:
        return "?"
    if action["type"] == "move":
        name = action["name"] or "(unrevealed move)"
        return f"{name}{' +' + action['gimmick'] if action.get('gimmick') else ''}"
    if action["type"] == "team":
        return f"lead {action['lead'] or '(unrevealed)'}"
    return f"-> {action['species'] or '(unrevealed)'}"


def render(trajectory: Trajectory) -> str:
    """A readable table of one player's decisions."""
    head = (
        f"{trajectory.battle_id} [{trajectory.format}, gen {trajectory.gen}] {trajectory.side} "
        f"{trajectory.player} (rating {trajectory.rating}), outcome {trajectory.outcome}; "
        f"{len(trajectory.decisions)} decisions, {trajectory.labelled} labelled"
    )
    team = ", ".join(f"{m['species']} [{' / '.join(m['moves']) or '-'}]" for m in trajectory.team)
    lines = [head, f"  team: {team}"]
    for row in describe(trajectory):
        options = ", ".join(_short(a) for a in row["legal"])
        lines.append(
            f"  t{row['turn']:>3} {row['kind']:<13} chose {_short(row['action']):<28} of: {options}"
        )
    return "\n".join(lines)
