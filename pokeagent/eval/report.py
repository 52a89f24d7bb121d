"""The battle evaluation's report: markdown for people, a PNG for a glance."""

from __future__ import annotations

from pathlib import Path

OPPONENT_NAMES = {
    "random": "RandomPlayer",
    "maxpower": "MaxBasePowerPlayer",
    "heuristic": "SimpleHeuristicsPlayer",
}


def markdown(report: dict) -> str:
    lines = [
        f"# Battles: {report['model']} step {report['step']} in {report['format']}",
        "",
        f"Checkpoint `{report['checkpoint']}`; {report['seconds']:.0f} s.",
        "",
        "| opponent | games | won | lost | tied | win rate | 95% interval | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, s in report["opponents"].items():
        rate = "n/a" if s["win_rate"] is None else f"{100 * s['win_rate']:.1f}%"
        low, high = s["ci95"]
        lines.append(
            f"| {OPPONENT_NAMES.get(kind, kind)} | {s['games']} | {s['wins']} | {s['losses']} | "
            f"{s['ties']} | {rate} | {100 * low:.1f}-{100 * high:.1f}% | "
            f"{s['errors']} games, {s['agent_errors']} decisions |"
        )
    if report["ratings"]:
        lines += ["", f"Ratings ({report['rating_note']}):", ""]
        lines += ["| player | rating |", "|---|---|"]
        for player, rating in sorted(report["ratings"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {OPPONENT_NAMES.get(player, player)} | {rating:.0f} |")
    if report.get("errors"):
        lines += ["", "Errors:", ""] + [f"- {k}: {v}" for k, v in report["errors"].items()]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    kinds = [k for k, s in report["opponents"].items() if s["win_rate"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    rates = [100 * report["opponents"][k]["win_rate"] for k in kinds]
    # max(0, ...): a 0% or 100% rate sits on its interval's edge (up to rounding).
    errors = [
        [
            max(0.0, r - 100 * report["opponents"][k]["ci95"][0])
            for k, r in zip(kinds, rates, strict=True)
        ],
        [
            max(0.0, 100 * report["opponents"][k]["ci95"][1] - r)
            for k, r in zip(kinds, rates, strict=True)
        ],
    ]
    labels = [OPPONENT_NAMES.get(k, k).removesuffix("Player") for k in kinds]
    axes[0].bar(labels, rates, yerr=errors, capsize=6, color="#4c72b0")
    axes[0].axhline(50, color="grey", linewidth=0.8, linestyle="--")
    axes[0].set_ylim(0, 100)
    axes[0].set_ylabel("agent win rate (%), 95% interval")
    axes[0].set_title(f"{report['model']} step {report['step']}")
    ratings = sorted(report["ratings"].items(), key=lambda kv: kv[1])
    axes[1].barh(
        [OPPONENT_NAMES.get(p, p).removesuffix("Player") for p, _ in ratings],
        [r for _, r in ratings],
        color=["#dd8452" if p == "agent" else "#8c8c8c" for p, _ in ratings],
    )
    if ratings:
        values = [r for _, r in ratings]
        axes[1].set_xlim(min(values) - 150, max(values) + 100)
    axes[1].set_xlabel("Elo-style rating (Random = 1000)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict, out: Path) -> None:
    (out / "report.md").write_text(markdown(report))
    plot(report, out / "battles.png")
