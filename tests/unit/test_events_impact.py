"""Impact of an event: a planted effect is recovered inside its interval, no effect is reported when none
was planted, the limitations are named, and the chart is drawn."""

from __future__ import annotations

import random
import struct
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.events import engagement, impact
from services.events.chart import render
from services.events.cli import summary
from services.events.engagement import DailyEngagement
from services.events.impact import EventSpan, Limit, Verdict
from terrain.contracts import ScoredCommentMessage
from terrain.contracts.events import EventStatus

START = date(2026, 9, 1)
TREATED = "treated"


def simulate_comments(
    seed: int, effect: float, *, controls: int = 6, days: int = 42, event_day: int = 21,
    per_day: tuple[int, int] = (15, 40),
) -> tuple[list[dict[str, Any]], datetime]:
    """Scored comments (as JSON messages) of one community with an event on `event_day` and of `controls`
    communities without one. Each comment's score = community level + a shock shared by every community
    that day + a community-day shock (AR(1)) + the comment's own noise; after the event day, the treated
    community's comments carry `effect` too."""
    rng = random.Random(seed)
    shared, s = [], 0.0
    for _ in range(days):
        s = 0.5 * s + rng.gauss(0, 0.04)
        shared.append(s)
    messages: list[dict[str, Any]] = []
    event_at = datetime.combine(START + timedelta(days=event_day), datetime.min.time(), UTC) + timedelta(hours=18)
    for k in range(controls + 1):
        community = TREATED if k == 0 else f"c{k}"
        level = rng.uniform(-0.2, 0.2)
        volume = rng.randint(*per_day)
        e = 0.0
        for d in range(days):
            e = 0.3 * e + rng.gauss(0, 0.04)
            planted = effect if (k == 0 and d > event_day) else 0.0
            day = datetime.combine(START + timedelta(days=d), datetime.min.time(), UTC)
            for i in range(max(1, volume + rng.randint(-5, 5))):
                score = max(-1.0, min(1.0, level + shared[d] + e + planted + rng.gauss(0, 0.2)))
                label = "positive" if score > 0.05 else "negative" if score < -0.05 else "neutral"
                at = day + timedelta(minutes=rng.randint(0, 1439))
                cid = f"{community}-{d}-{i}"
                messages.append({
                    "message_id": f"m-{cid}", "occurred_at": at.isoformat(), "producer": "simulation",
                    "comment": {
                        "comment_id": cid, "source": "forum", "external_id": cid, "community_id": community,
                        "thread_id": f"t{d % 5}", "parent_id": f"{community}-{d}-0" if i % 3 else None,
                        "author_id": f"a{rng.randint(0, 60)}", "text": "…", "created_at": at.isoformat(),
                        "metrics": {"likes": rng.randint(0, 3), "replies": 0, "shares": 0},
                    },
                    "sentiment": {"label": label, "score": score, "confidence": 0.8, "lang": "fr",
                                  "model_version": "simulation"},
                    "scored_at": at.isoformat(),
                })
    return messages, event_at


def daily_of(messages: list[dict[str, Any]]) -> list[DailyEngagement]:
    facts = [engagement.fact_of(ScoredCommentMessage.model_validate(m)) for m in messages]
    return list(engagement.rollup(facts).values())


def event_at(at: datetime, status: EventStatus = EventStatus.done, **kw: Any) -> EventSpan:
    return EventSpan(kw.pop("id", "apero-1"), kw.pop("community_id", TREATED), "apero", status, at, **kw)


AFTER_ALL = datetime.combine(START + timedelta(days=60), datetime.min.time(), UTC)


@pytest.fixture(scope="module")
def planted() -> tuple[impact.ImpactReport, float]:
    messages, at = simulate_comments(seed=7, effect=0.2)
    return impact.assess(event_at(at), [], daily_of(messages), AFTER_ALL), 0.2


@pytest.fixture(scope="module")
def null() -> impact.ImpactReport:
    messages, at = simulate_comments(seed=8, effect=0.0)
    return impact.assess(event_at(at), [], daily_of(messages), AFTER_ALL)


def test_a_planted_effect_is_recovered_inside_its_interval(planted: tuple[impact.ImpactReport, float]) -> None:
    report, effect = planted
    assert report.did is not None and report.comparison == [f"c{k}" for k in range(1, 7)]
    est = report.did["mean_sentiment"]
    print(f"planted {effect:+.3f}: estimate {est.estimate:+.3f} [{est.ci_low:+.3f}, {est.ci_high:+.3f}]")
    assert est.ci_low <= effect <= est.ci_high
    assert est.ci_low > 0 and report.verdict is Verdict.improved
    # Comment volume was not touched: its interval covers zero.
    volume = report.did["comments"]
    assert volume.ci_low <= 0 <= volume.ci_high
    assert [c for c, _ in report.limitations] == []


def test_no_effect_is_reported_when_none_was_planted(null: impact.ImpactReport) -> None:
    assert null.did is not None
    est = null.did["mean_sentiment"]
    print(f"no effect planted: estimate {est.estimate:+.3f} [{est.ci_low:+.3f}, {est.ci_high:+.3f}]")
    assert est.ci_low <= 0 <= est.ci_high
    assert null.verdict is Verdict.no_detectable_effect


def daily_gaps(seed: int, effect: float, controls: int = 5, window: int = 14) -> list[DailyEngagement]:
    """Daily rollups straight away (fast): levels, shared shocks and AR(1) community noise."""
    rng = random.Random(seed)
    rows: list[DailyEngagement] = []
    shared = [rng.gauss(0, 0.05) for _ in range(2 * window + 1)]
    for k in range(controls + 1):
        level, e = rng.uniform(-0.2, 0.2), 0.0
        for d in range(2 * window + 1):
            e = 0.3 * e + rng.gauss(0, 0.05)
            mean = level + shared[d] + e + (effect if k == 0 and d > window else 0.0)
            rows.append(DailyEngagement(TREATED if k == 0 else f"c{k}", START + timedelta(days=d), 20, 15, 5,
                                        20, 10, 5, 20 * mean))
    return rows


def test_the_interval_covers_the_truth_about_as_often_as_it_says() -> None:
    """Calibration over 100 simulated worlds per case (AR(1) daily noise): coverage near the nominal 95 %."""
    at = datetime.combine(START + timedelta(days=14), datetime.min.time(), UTC) + timedelta(hours=18)
    coverage = {}
    for effect in (0.0, 0.15):
        hits = 0
        for seed in range(100):
            report = impact.assess(event_at(at), [], daily_gaps(seed, effect), AFTER_ALL)
            assert report.did is not None
            est = report.did["mean_sentiment"]
            hits += est.ci_low <= effect <= est.ci_high
        coverage[effect] = hits / 100
    print(f"coverage of the 95 % interval: {coverage}")
    assert all(0.85 <= c <= 1.0 for c in coverage.values())


def test_without_comparison_communities_only_before_after_is_given() -> None:
    messages, at = simulate_comments(seed=7, effect=0.2, controls=0)
    report = impact.assess(event_at(at), [], daily_of(messages), AFTER_ALL)
    assert report.did is None and report.verdict is Verdict.inconclusive
    assert Limit.no_comparison_group in {c for c, _ in report.limitations}
    change = report.before_after["mean_sentiment"].change
    assert change is not None and change.estimate > 0.1


def test_what_it_cannot_conclude() -> None:
    messages, at = simulate_comments(seed=3, effect=0.0, controls=3)
    daily = daily_of(messages)
    # Another event of the same community two days later, and one in a comparison community.
    overlapping = event_at(at + timedelta(days=2), id="other")
    busy = event_at(at, id="elsewhere", community_id="c1")
    report = impact.assess(event_at(at), [overlapping, busy], daily, AFTER_ALL)
    codes = {c for c, _ in report.limitations}
    assert Limit.overlapping_events in codes and report.verdict is Verdict.inconclusive
    assert report.excluded["had_an_event"] == 1 and "c1" not in report.comparison
    assert Limit.few_comparison_communities in codes
    # Still planned, and asked about too early: the window after has not happened.
    early = impact.assess(event_at(at, EventStatus.scheduled), [], daily, at + timedelta(days=3))
    early_codes = {c for c, _ in early.limitations}
    assert {Limit.event_not_done, Limit.window_not_over, Limit.too_little_data} <= early_codes
    assert early.verdict is Verdict.inconclusive
    # A comparison community ten times larger or smaller is not comparable.
    huge = [DailyEngagement("huge", d.day, d.comments * 50, 1, 0, 0, 0, 0, d.sentiment_sum * 50)
            for d in daily if d.community_id == TREATED]
    sized = impact.assess(event_at(at), [], daily + huge, AFTER_ALL)
    assert sized.excluded["different_size"] == 1 and "huge" not in sized.comparison


def test_gaps_that_trend_apart_before_the_event_are_reported() -> None:
    at = datetime.combine(START + timedelta(days=14), datetime.min.time(), UTC) + timedelta(hours=18)
    rows = daily_gaps(seed=1, effect=0.0)
    # The community drifts up by 0.03 a day from the first day: parallel trends do not hold.
    drifting = [DailyEngagement(r.community_id, r.day, r.comments, r.unique_authors, r.replies, r.reactions,
                                r.positive, r.negative, r.sentiment_sum + r.comments * 0.03 * (r.day - START).days)
                if r.community_id == TREATED else r for r in rows]
    report = impact.assess(event_at(at), [], drifting, AFTER_ALL)
    messages = dict(report.limitations)
    assert Limit.pre_trends_differ in messages and "mean_sentiment" in messages[Limit.pre_trends_differ]
    # The estimate is still given (it mistakes the drift for an effect): the verdict refuses to conclude.
    assert report.did is not None and report.did["mean_sentiment"].estimate > 0.3
    assert report.verdict is Verdict.inconclusive


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_the_chart_and_the_printed_report(planted: tuple[impact.ImpactReport, float], tmp_path: Path) -> None:
    report = planted[0].as_dict()
    path = render(report, tmp_path / "impact.png")
    assert png_size(path) == (1100, 715) and path.stat().st_size > 20_000
    text = "\n".join(summary(report))
    est = report["difference_in_differences"]["mean_sentiment"]["estimate"]
    assert "verdict: improved" in text and f"mean_sentiment: {est:+.3f}" in text
    assert "not an effect" in text


def test_terrain_report_event_prints_and_saves_the_chart(
    planted: tuple[impact.ImpactReport, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx
    from typer.testing import CliRunner

    from terrain.cli import app

    body = planted[0].as_dict()
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/events/apero-1/impact":
            return httpx.Response(200, json=body)
        return httpx.Response(404, json={"detail": "no event"})

    real_client = httpx.Client
    monkeypatch.setattr("services.events.cli.httpx.Client",
                        lambda **kw: real_client(transport=httpx.MockTransport(answer), **kw))
    monkeypatch.setenv("TERRAIN_API_TOKEN", "secret")
    out = tmp_path / "chart.png"
    result = CliRunner().invoke(app, ["report", "event", "apero-1", "--window-days", "14", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "verdict: improved" in result.output and f"chart: {out}" in result.output.replace("\n", "")
    assert png_size(out) == (1100, 715)
    assert seen[0].headers["Authorization"] == "Bearer secret" and seen[0].url.params["window_days"] == "14"
    missing = CliRunner().invoke(app, ["report", "event", "nope", "--out", str(tmp_path / "x.png")])
    assert missing.exit_code == 1 and "no event with id nope" in missing.output
