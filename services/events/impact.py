"""The measured effect of an event on its community's engagement: windows, comparison group, estimate.

Method. The event's community is compared over two windows of ``window_days`` UTC days: the days
before the event's first day, and the days after its last day (the event's own days are left out:
they mix before and after). Two outcomes are measured on the daily engagement rollups: mean
sentiment and comment volume.

- *Before / after*: the community's mean in the window after minus the window before. This is not
  an effect of the event: anything else that changed in those weeks is in it too.
- *Difference in differences*: comparison communities are those with no event in the whole span,
  enough days of data in both windows, and a comment volume of the same order (within a factor of
  ``size_ratio``) before the event. Each day's gap between the community and the comparison mean
  is regressed on an after-the-event indicator (statsmodels OLS); the coefficient is the DiD
  estimate: mean gap after minus mean gap before (both reported as ``mean_before`` and
  ``mean_after``). Daily gaps may be autocorrelated, and a few weeks of days are too few to tell
  how much, so the interval is the union of two: the ordinary OLS interval (independent days) and
  the interval of the same regression with AR(1) errors fitted by iterated feasible GLS
  (statsmodels ``GLSAR``), both t-based; the p-value is the larger of the two. On simulated
  communities (daily AR(1) noise, 100 runs per case in tests/unit/test_events_impact.py; and 60
  runs simulated comment by comment) this union covered the planted effect 95 % of the time at a
  nominal 95 %, where GLSAR alone covered 87–90 % and Newey–West (HAC) errors 84–89 %.
  Clustering by community is not used: with a single treated community, cluster-robust errors
  are unreliable.

What it refuses to conclude (``limitations``): an event that did not take place (yet); windows with
too few days of data; other events of the same community inside the span (the effect cannot be
told apart); no comparison community (before / after only); gaps that already trended apart before
the event (a trend test on the days before, at 1 %: the parallel-trends assumption behind DiD
looks wrong). Each of these makes the verdict ``inconclusive``, though the numbers are still
given; otherwise the verdict says whether the interval for mean sentiment lies above zero
(``improved``), below it (``worsened``) or covers it (``no_detectable_effect``). A window after
the event that is not over yet, or fewer than three comparison communities, are reported too;
only complete days count.

Pure: no I/O, and the time comes in as ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from services.events.engagement import DailyEngagement, utc_day
from terrain.contracts.base import utc_text
from terrain.contracts.events import EventStatus

OUTCOMES = ("mean_sentiment", "comments")
VERDICT_OUTCOME = "mean_sentiment"


class Verdict(StrEnum):
    improved = "improved"
    worsened = "worsened"
    no_detectable_effect = "no_detectable_effect"
    inconclusive = "inconclusive"


class Limit(StrEnum):
    """What the analysis could not do or conclude; a fixed set, so metrics can count them."""

    event_not_done = "event_not_done"
    window_not_over = "window_not_over"
    too_little_data = "too_little_data"
    overlapping_events = "overlapping_events"
    no_comparison_group = "no_comparison_group"
    few_comparison_communities = "few_comparison_communities"
    pre_trends_differ = "pre_trends_differ"


# These make any estimate unattributable to the event: the verdict becomes inconclusive.
BLOCKING = frozenset(
    {Limit.event_not_done, Limit.too_little_data, Limit.overlapping_events, Limit.no_comparison_group,
     Limit.pre_trends_differ}
)
# The gap's trend before the event is tested at this level (1 %, with the conservative p-value: on
# simulated parallel communities it fired in 0-2.5 % of runs; at 5 % it fired too often to be useful).
PRE_TREND_ALPHA = 0.01


@dataclass(frozen=True)
class EventSpan:
    """An event as the analysis sees it."""

    id: str
    community_id: str
    kind: str
    status: EventStatus
    starts_at: datetime
    ends_at: datetime | None = None

    @property
    def first_day(self) -> date:
        return utc_day(self.starts_at)

    @property
    def last_day(self) -> date:
        return utc_day(self.ends_at or self.starts_at)


@dataclass(frozen=True)
class Windows:
    before_from: date
    before_to: date
    after_from: date
    after_to: date

    def before_days(self) -> list[date]:
        return _days(self.before_from, self.before_to)

    def after_days(self) -> list[date]:
        return _days(self.after_from, self.after_to)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def windows_of(event: EventSpan, window_days: int) -> Windows:
    return Windows(
        before_from=event.first_day - timedelta(days=window_days),
        before_to=event.first_day - timedelta(days=1),
        after_from=event.last_day + timedelta(days=1),
        after_to=event.last_day + timedelta(days=window_days),
    )


@dataclass(frozen=True)
class Estimate:
    """A shift after the event: the GLS estimate and its interval, beside the plain means it comes from."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    days: int
    mean_before: float
    mean_after: float

    def as_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "p_value": self.p_value, "days": self.days,
                "mean_before": self.mean_before, "mean_after": self.mean_after}


@dataclass(frozen=True)
class BeforeAfter:
    before: float | None
    after: float | None
    days_before: int
    days_after: int
    change: Estimate | None

    def as_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "days_before": self.days_before,
                "days_after": self.days_after, "change": self.change.as_dict() if self.change else None}


@dataclass(frozen=True)
class Series:
    """What the chart draws: the community's days and the comparison communities' band."""

    days: list[date]
    sentiment: list[float | None]
    comments: list[int]
    band_low: list[float | None]
    band_high: list[float | None]
    band_mean: list[float | None]
    comparison_comments: list[float | None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "days": [d.isoformat() for d in self.days],
            "community": {"mean_sentiment": self.sentiment, "comments": self.comments},
            "comparison": {"mean_sentiment_low": self.band_low, "mean_sentiment_high": self.band_high,
                           "mean_sentiment_mean": self.band_mean, "comments_mean": self.comparison_comments},
        }


@dataclass(frozen=True)
class ImpactReport:
    event: EventSpan
    computed_at: datetime
    window_days: int
    windows: Windows
    confidence: float
    before_after: dict[str, BeforeAfter]
    did: dict[str, Estimate] | None
    comparison: list[str]
    excluded: dict[str, int]
    verdict: Verdict
    limitations: list[tuple[Limit, str]]
    series: Series
    method: str = field(default=(
        "Difference in differences: OLS of the daily gap (community minus comparison mean) on an after-the-event"
        " indicator; interval = union of the OLS and the AR(1) feasible-GLS (GLSAR) t-intervals."
    ))

    def as_dict(self) -> dict[str, Any]:
        w = self.windows
        return {
            "event_id": self.event.id,
            "community_id": self.event.community_id,
            "kind": self.event.kind,
            "status": self.event.status.value,
            "computed_at": utc_text(self.computed_at),
            "window_days": self.window_days,
            "confidence": self.confidence,
            "windows": {"before": {"from": w.before_from.isoformat(), "to": w.before_to.isoformat()},
                        "after": {"from": w.after_from.isoformat(), "to": w.after_to.isoformat()}},
            "before_after": {k: v.as_dict() for k, v in self.before_after.items()},
            "difference_in_differences": {k: v.as_dict() for k, v in self.did.items()} if self.did else None,
            "method": self.method,
            "comparison_communities": self.comparison,
            "excluded_communities": self.excluded,
            "verdict": self.verdict.value,
            "limitations": [{"code": c.value, "message": m} for c, m in self.limitations],
            "series": self.series.as_dict(),
        }


# --- shaping the inputs --------------------------------------------------------------------------------


def _overlaps(e: EventSpan, first: date, last: date) -> bool:
    return e.status is not EventStatus.cancelled and e.first_day <= last and e.last_day >= first


def _by_community(daily: Sequence[DailyEngagement]) -> dict[str, dict[date, DailyEngagement]]:
    out: dict[str, dict[date, DailyEngagement]] = {}
    for d in daily:
        out.setdefault(d.community_id, {})[d.day] = d
    return out


def _value(rows: dict[date, DailyEngagement], day: date, outcome: str) -> float | None:
    row = rows.get(day)
    if outcome == "comments":
        # No rollup row means nobody commented that day.
        return float(row.comments) if row is not None else 0.0
    return row.mean_sentiment if row is not None else None


def _active_days(rows: dict[date, DailyEngagement], days: Sequence[date]) -> int:
    return sum(1 for d in days if d in rows and rows[d].comments > 0)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def choose_comparison(
    event: EventSpan,
    others: Sequence[EventSpan],
    rows: dict[str, dict[date, DailyEngagement]],
    w: Windows,
    bdays: Sequence[date],
    adays: Sequence[date],
    min_days: int,
    size_ratio: float,
) -> tuple[list[str], dict[str, int]]:
    """Communities comparable to the event's one, and how many were left out for each reason."""
    busy = {o.community_id for o in others if _overlaps(o, w.before_from, w.after_to)}
    own = rows.get(event.community_id, {})
    own_volume = _mean([_value(own, d, "comments") for d in bdays]) or 0.0
    chosen: list[str] = []
    excluded = {"had_an_event": 0, "too_little_data": 0, "different_size": 0}
    for community in sorted(rows):
        if community == event.community_id:
            continue
        r = rows[community]
        if community in busy:
            excluded["had_an_event"] += 1
        elif _active_days(r, bdays) < min_days or _active_days(r, adays) < min_days:
            excluded["too_little_data"] += 1
        else:
            volume = _mean([_value(r, d, "comments") for d in bdays]) or 0.0
            if own_volume > 0 and not (own_volume / size_ratio <= volume <= own_volume * size_ratio):
                excluded["different_size"] += 1
            else:
                chosen.append(community)
    return chosen, excluded


# --- estimation ------------------------------------------------------------------------------------------


def _ar1_fit(y: Sequence[float], x: Sequence[float]) -> Any:
    """OLS with AR(1) errors by feasible GLS (statsmodels GLSAR, iterated): daily gaps are autocorrelated."""
    import warnings

    import numpy as np
    import statsmodels.api as sm

    design = sm.add_constant(np.asarray(x, dtype=float), has_constant="add")
    with warnings.catch_warnings():
        # A degenerate series (too flat to estimate rho) gives non-finite numbers, which callers drop.
        warnings.simplefilter("ignore")
        return sm.GLSAR(np.asarray(y, dtype=float), design, rho=1).iterative_fit(maxiter=20)


def post_effect(y: Sequence[float], post: Sequence[int], confidence: float) -> Estimate | None:
    """Regress y on an after indicator: the after-minus-before difference and a conservative interval.

    The estimate is the OLS coefficient: exactly mean after minus mean before. The interval is the
    union of the OLS interval (days independent) and the AR(1) feasible-GLS one (days autocorrelated):
    with a few weeks of days, the autocorrelation is too poorly estimated to trust either alone.
    """
    n = len(y)
    if n < 6 or sum(post) < 3 or n - sum(post) < 3 or max(y) == min(y):
        return None
    import numpy as np
    import statsmodels.api as sm

    x = [float(p) for p in post]
    ols = sm.OLS(np.asarray(y, dtype=float), sm.add_constant(np.asarray(x), has_constant="add")).fit()
    gls = _ar1_fit(y, x)
    alpha = 1 - confidence
    (ols_low, ols_high), (gls_low, gls_high) = ols.conf_int(alpha=alpha)[1], gls.conf_int(alpha=alpha)[1]
    est = float(ols.params[1])
    low, high = min(float(ols_low), float(gls_low)), max(float(ols_high), float(gls_high))
    p = max(float(ols.pvalues[1]), float(gls.pvalues[1]))
    if not all(math.isfinite(v) for v in (est, low, high)):
        return None
    before = [v for v, p in zip(y, post, strict=True) if not p]
    after = [v for v, p in zip(y, post, strict=True) if p]
    return Estimate(est, low, high, p if math.isfinite(p) else 1.0, n, sum(before) / len(before),
                    sum(after) / len(after))


def trend_p_value(y: Sequence[float]) -> float | None:
    """p-value of a linear trend in y (the gap before the event), the larger of the OLS and the AR(1)
    GLS ones (as for the interval: conservative); None when too short or flat."""
    n = len(y)
    if n < 6 or max(y) == min(y):
        return None
    import numpy as np
    import statsmodels.api as sm

    t = [float(i) for i in range(n)]
    ols = sm.OLS(np.asarray(y, dtype=float), sm.add_constant(np.asarray(t), has_constant="add")).fit()
    p = max(float(ols.pvalues[1]), float(_ar1_fit(y, t).pvalues[1]))
    return p if math.isfinite(p) else None


def _before_after(
    rows: dict[date, DailyEngagement], bdays: Sequence[date], adays: Sequence[date], outcome: str, confidence: float
) -> BeforeAfter:
    before = [v for v in (_value(rows, d, outcome) for d in bdays) if v is not None]
    after = [v for v in (_value(rows, d, outcome) for d in adays) if v is not None]
    change = post_effect(before + after, [0] * len(before) + [1] * len(after), confidence)
    return BeforeAfter(
        before=_mean(before), after=_mean(after), days_before=len(before), days_after=len(after), change=change
    )


def _gap_series(
    own: dict[date, DailyEngagement],
    comparison: list[dict[date, DailyEngagement]],
    days: Sequence[date],
    outcome: str,
) -> list[tuple[date, float]]:
    out: list[tuple[date, float]] = []
    for d in days:
        mine = _value(own, d, outcome)
        theirs = _mean([_value(r, d, outcome) for r in comparison])
        if mine is not None and theirs is not None:
            out.append((d, mine - theirs))
    return out


def _band(comparison: list[dict[date, DailyEngagement]], day: date) -> tuple[float | None, ...]:
    values = [v for v in (_value(r, day, "mean_sentiment") for r in comparison) if v is not None]
    volumes = [_value(r, day, "comments") for r in comparison]
    if not values:
        return None, None, None, _mean(volumes)
    return min(values), max(values), sum(values) / len(values), _mean(volumes)


def assess(
    event: EventSpan,
    others: Sequence[EventSpan],
    daily: Sequence[DailyEngagement],
    now: datetime,
    *,
    window_days: int = 14,
    min_days: int | None = None,
    size_ratio: float = 10.0,
    confidence: float = 0.95,
) -> ImpactReport:
    """The impact report of one event; `others` are every other event that touches the span."""
    w = windows_of(event, window_days)
    need = min_days if min_days is not None else max(3, window_days // 2)
    rows = _by_community(daily)
    own = rows.get(event.community_id, {})
    limits: list[tuple[Limit, str]] = []

    if event.status is not EventStatus.done:
        limits.append((Limit.event_not_done, f"the event is {event.status.value}: there is no effect to measure yet"))
    today = utc_day(now)
    # Only complete days count: today is still going, and later days have not happened.
    bdays = [d for d in w.before_days() if d < today]
    adays = [d for d in w.after_days() if d < today]
    if today <= w.after_to:
        left = (w.after_to - today).days + 1
        limits.append((Limit.window_not_over, f"the window after the event is not over: {left} day(s) to go"))
    before_days = _active_days(own, bdays)
    after_days = _active_days(own, adays)
    if before_days < need or after_days < need:
        limits.append((Limit.too_little_data, (
            f"the community has comments on {before_days} day(s) before and {after_days} after;"
            f" at least {need} in each window are needed")))
    same = [o for o in others if o.id != event.id and o.community_id == event.community_id
            and _overlaps(o, w.before_from, w.after_to)]
    if same:
        limits.append((Limit.overlapping_events, (
            f"{len(same)} other event(s) of this community fall inside the windows: their effects cannot be"
            " told apart from this one's")))

    chosen, excluded = choose_comparison(event, others, rows, w, bdays, adays, need, size_ratio)
    comparison = [rows[c] for c in chosen]
    before_after = {o: _before_after(own, bdays, adays, o, confidence) for o in OUTCOMES}

    did: dict[str, Estimate] | None = None
    if not chosen:
        limits.append((Limit.no_comparison_group, (
            "no comparable community without an event has enough data in both windows: only the before/after"
            " change is given, and it is not an effect of the event")))
    else:
        if len(chosen) < 3:
            limits.append((Limit.few_comparison_communities, (
                f"only {len(chosen)} comparison community(ies): the comparison mean is noisy")))
        did = {}
        for outcome in OUTCOMES:
            gaps = _gap_series(own, comparison, bdays + adays, outcome)
            post = [1 if d >= w.after_from else 0 for d, _ in gaps]
            est = post_effect([g for _, g in gaps], post, confidence)
            if est is not None:
                did[outcome] = est
            pre = [g for d, g in gaps if d < w.after_from]
            p = trend_p_value(pre)
            if p is not None and p < PRE_TREND_ALPHA:
                limits.append((Limit.pre_trends_differ, (
                    f"{outcome}: the gap to the comparison communities already trended before the event"
                    f" (p = {p:.3f}): the comparison may not hold")))
        if not did:
            did = None

    verdict = Verdict.inconclusive
    blocking = {c for c, _ in limits} & BLOCKING
    headline = did.get(VERDICT_OUTCOME) if did else None
    if headline is not None and not blocking:
        if headline.ci_low > 0:
            verdict = Verdict.improved
        elif headline.ci_high < 0:
            verdict = Verdict.worsened
        else:
            verdict = Verdict.no_detectable_effect

    days = _days(w.before_from, w.after_to)
    bands = [_band(comparison, d) for d in days]
    series = Series(
        days=days,
        sentiment=[_value(own, d, "mean_sentiment") for d in days],
        comments=[own[d].comments if d in own else 0 for d in days],
        band_low=[b[0] for b in bands],
        band_high=[b[1] for b in bands],
        band_mean=[b[2] for b in bands],
        comparison_comments=[b[3] for b in bands],
    )
    return ImpactReport(
        event=event, computed_at=now, window_days=window_days, windows=w, confidence=confidence,
        before_after=before_after, did=did, comparison=chosen, excluded=excluded, verdict=verdict,
        limitations=limits, series=series,
    )
