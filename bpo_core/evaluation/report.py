"""Win / tie / lose tallies with confidence intervals, as JSON, Markdown and a bar chart PNG.

Rates get Wilson score intervals (95%). The paper's headline figure, win rate minus lose rate,
gets an Agresti-Caffo style interval: one pseudo-win and one pseudo-loss are added, then the
normal approximation with the multinomial variance ``(p_win + p_lose - (p_win - p_lose)^2) / n``.
(Without the pseudo-counts a small all-tie sample would get the interval [0, 0].)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bpo_core.evaluation.pairwise import ItemResult

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # Exact ends for 0 and n successes (the formula gives them only up to rounding).
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


@dataclass(frozen=True)
class SetSummary:
    """Outcomes on one test set (rates are fractions of ``n``, the items with a valid outcome)."""

    name: str
    n: int
    win: int
    tie: int
    lose: int
    unchanged: int
    invalid: int
    pending: int
    win_rate: float
    tie_rate: float
    lose_rate: float
    win_ci: tuple[float, float]
    tie_ci: tuple[float, float]
    lose_ci: tuple[float, float]
    delta: float
    delta_ci: tuple[float, float]
    #: Of the judged pairs, how often the two orders agreed (a low figure means position bias).
    order_agreement: float | None
    #: Of all verdicts, how often the first answer shown won.
    first_position_rate: float | None


def summarize(name: str, results: Sequence[ItemResult], expected: int) -> SetSummary:
    valid = [r for r in results if r.outcome is not None]
    n = len(valid)
    counts = {o: sum(r.outcome == o for r in valid) for o in ("win", "tie", "lose")}
    rate = {o: counts[o] / n if n else 0.0 for o in counts}
    delta = rate["win"] - rate["lose"]
    adj_win, adj_lose = (counts["win"] + 1) / (n + 2), (counts["lose"] + 1) / (n + 2)
    adj_delta = adj_win - adj_lose
    half = Z95 * math.sqrt(max(adj_win + adj_lose - adj_delta**2, 0.0) / (n + 2))
    judged = [r for r in results if not r.unchanged and all(v is not None for v in r.verdicts)]
    # Orders agree when they name the same answer: (A, B) or (B, A) or (C, C).
    agree = sum(r.verdicts in {("A", "B"), ("B", "A"), ("C", "C")} for r in judged)
    verdicts = [v for r in results if not r.unchanged for v in r.verdicts if v is not None]
    return SetSummary(
        name=name,
        n=n,
        win=counts["win"],
        tie=counts["tie"],
        lose=counts["lose"],
        unchanged=sum(r.unchanged for r in results),
        invalid=len(results) - n,
        pending=expected - len(results),
        win_rate=rate["win"],
        tie_rate=rate["tie"],
        lose_rate=rate["lose"],
        win_ci=wilson(counts["win"], n),
        tie_ci=wilson(counts["tie"], n),
        lose_ci=wilson(counts["lose"], n),
        delta=delta,
        delta_ci=(max(-1.0, adj_delta - half), min(1.0, adj_delta + half)),
        order_agreement=agree / len(judged) if judged else None,
        first_position_rate=sum(v == "A" for v in verdicts) / len(verdicts) if verdicts else None,
    )


def build_report(results: Sequence[ItemResult], sizes: Mapping[str, int], config: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON report: the run's setup and a summary per test set."""
    sets = [summarize(name, [r for r in results if r.set == name], size) for name, size in sizes.items()]
    return {"config": dict(config), "sets": [asdict(s) for s in sets]}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(ci: Sequence[float]) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def to_markdown(report: Mapping[str, Any]) -> str:
    config = report["config"]
    lines = [
        "# BPO pairwise evaluation",
        "",
        f"Optimized vs original prompts. Target: `{config.get('target')}`. Judge: `{config.get('judge')}` "
        f"(pair-v2, both answer orders). Optimizer: `{config.get('optimizer')}`"
        + (f", {config['rounds']} round(s)" if config.get("rounds") else "")
        + ".",
        "",
        "| test set | n | win | tie | lose | win - lose | unchanged | orders agree | invalid | pending |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["sets"]:
        agree = "-" if s["order_agreement"] is None else _pct(s["order_agreement"])
        lines.append(
            f"| {s['name']} | {s['n']} | {_pct(s['win_rate'])} {_ci(s['win_ci'])} | {_pct(s['tie_rate'])} {_ci(s['tie_ci'])} "
            f"| {_pct(s['lose_rate'])} {_ci(s['lose_ci'])} | {100 * s['delta']:+.1f} {_ci(s['delta_ci'])} "
            f"| {s['unchanged']} | {agree} | {s['invalid']} | {s['pending']} |"
        )
    lines += [
        "",
        "Brackets: 95% intervals (Wilson for rates; Agresti-Caffo style for win - lose). A pair is a win when the "
        "verdicts of the two orders add up in the optimized answer's favour, a tie when they cancel. `unchanged`: "
        "the optimizer kept the prompt, counted as ties. `invalid`: no `[[A]]`/`[[B]]`/`[[C]]` in either verdict. "
        "`pending`: not finished (re-run to resume).",
        "",
    ]
    return "\n".join(lines)


def plot(report: Mapping[str, Any], path: str | Path) -> Path | None:
    """Stacked win/tie/lose bars per test set, like the paper's figures; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sets = report["sets"]
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(sets) + 1.4))
    names = [s["name"] for s in sets][::-1]
    left = [0.0] * len(sets)
    for outcome, colour in (("win", "#4c9a5a"), ("tie", "#b8b8b8"), ("lose", "#c9504b")):
        values = [100 * s[f"{outcome}_rate"] for s in sets][::-1]
        bars = ax.barh(names, values, left=left, color=colour, label=outcome)
        for bar, value in zip(bars, values):
            if value >= 6:
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_y() + bar.get_height() / 2,
                    f"{value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if outcome != "tie" else "black",
                )
        left = [a + b for a, b in zip(left, values)]
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of prompts (optimized vs original)")
    ax.set_title(
        f"BPO: {report['config'].get('target')} judged by {report['config'].get('judge')}", fontsize=10, pad=24
    )
    ax.legend(ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    results: Sequence[ItemResult], sizes: Mapping[str, int], config: Mapping[str, Any], output_dir: str | Path
) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``report.png`` (when matplotlib is installed)."""
    output_dir = Path(output_dir)
    report = build_report(results, sizes, config)
    (output_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (output_dir / "report.md").write_text(to_markdown(report), encoding="utf-8")
    chart = plot(report, output_dir / "report.png")
    report["files"] = {
        "json": str(output_dir / "report.json"),
        "markdown": str(output_dir / "report.md"),
        "chart": str(chart) if chart else None,
    }
    return report
