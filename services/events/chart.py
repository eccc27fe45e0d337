"""The impact chart: a community's daily sentiment and volume around an event, with the comparison band.

Drawn from the impact report as the API serves it (a JSON dict), so `terrain report event` needs
nothing but the HTTP answer. Matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any


def _nan(values: list[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def render(report: dict[str, Any], path: Path) -> Path:
    """Write the chart of an impact report to `path` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report["series"]
    days = [date.fromisoformat(d) for d in series["days"]]
    own = series["community"]
    comp = series["comparison"]
    windows = report["windows"]
    before_to = date.fromisoformat(windows["before"]["to"])
    after_from = date.fromisoformat(windows["after"]["from"])

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=(3, 2))
    has_band = any(v is not None for v in comp["mean_sentiment_low"])
    if has_band:
        n = len(report["comparison_communities"])
        top.fill_between(
            days, _nan(comp["mean_sentiment_low"]), _nan(comp["mean_sentiment_high"]),
            color="tab:gray", alpha=0.25, linewidth=0, label=f"comparison communities, min–max ({n})",
        )
        top.plot(days, _nan(comp["mean_sentiment_mean"]), color="tab:gray", linestyle="--", linewidth=1,
                 label="comparison mean")
    top.plot(days, _nan(own["mean_sentiment"]), color="tab:blue", marker="o", markersize=3, linewidth=1.5,
             label=report["community_id"])
    top.axhline(0, color="black", linewidth=0.5)
    top.set_ylabel("mean sentiment (−1 … +1)")
    top.legend(loc="lower left", fontsize=8)

    bottom.bar(days, own["comments"], color="tab:blue", alpha=0.6, label=f"{report['community_id']} comments")
    if has_band:
        bottom.plot(days, _nan(comp["comments_mean"]), color="tab:gray", linestyle="--", linewidth=1,
                    label="comparison mean")
    bottom.set_ylabel("comments per day")
    bottom.legend(loc="upper left", fontsize=8)

    # The event's own days sit between the two windows (they are left out of the estimate).
    first = datetime.combine(before_to + timedelta(days=1), datetime.min.time()) - timedelta(hours=12)
    last = datetime.combine(after_from - timedelta(days=1), datetime.min.time()) + timedelta(hours=12)
    for ax in (top, bottom):
        ax.axvspan(first, last, color="tab:orange", alpha=0.3, linewidth=0)
    top.text(last, 0.96, " event", transform=top.get_xaxis_transform(), color="tab:orange", fontsize=9,
             va="top", ha="left")
    ticks = days[:: max(1, len(days) // 8)]
    bottom.set_xticks(ticks, [d.strftime("%d %b") for d in ticks])
    fig.autofmt_xdate()

    did = (report.get("difference_in_differences") or {}).get("mean_sentiment")
    if did:
        effect = (f"DiD on mean sentiment: {did['estimate']:+.3f}"
                  f" [{did['ci_low']:+.3f}, {did['ci_high']:+.3f}] ({int(report['confidence'] * 100)} % CI)")
    else:
        effect = "no difference-in-differences estimate"
    fig.suptitle(f"{report['kind']} {report['event_id']} in {report['community_id']}: {report['verdict']}",
                 fontsize=11)
    top.set_title(effect, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
