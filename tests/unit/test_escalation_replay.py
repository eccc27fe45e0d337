"""The replay harness: every shipped scenario meets its expectations, and the report's numbers are right."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from services.escalation.cli import escalation_app
from services.escalation.replay import (
    ScenarioError,
    load_scenario,
    parse_scenario,
    replay,
    shipped_scenarios,
    simulate,
    totals,
)
from terrain.contracts import EscalationTarget

runner = CliRunner()

@pytest.mark.parametrize("path", shipped_scenarios(), ids=lambda p: p.stem)
def test_every_shipped_scenario_meets_its_expectations(path: Path) -> None:
    report = replay(load_scenario(path))
    assert report.passed, "\n".join(report.failures)


def test_the_shipped_scenarios_cover_the_issue() -> None:
    names = {load_scenario(p).name for p in shipped_scenarios()}
    assert {
        "lone-complaint", "cascade-one-post", "slow-burn-spike", "troll-charter", "positive-viral",
        "duplicate-flood", "quiet-regular", "late-import", "seed-article", "unacknowledged-steps", "place-field",
    } <= names


# ---------------------------------------------------------------------------------------------- numbers

START = "2026-03-14T12:00:00Z"


def neg(ext: str, at: str, **kw: Any) -> dict[str, Any]:
    return {"id": ext, "at": at, "author": f"a-{ext}", "label": "negative", "score": -0.8, "confidence": 0.9, **kw}


def pos(ext: str, at: str, **kw: Any) -> dict[str, Any]:
    return {"id": ext, "at": at, "author": f"a-{ext}", "label": "positive", "score": 0.7, "confidence": 0.9, **kw}


def tiny(**expect: Any) -> dict[str, Any]:
    """A cascade in `post-a` (its third negative arrives 5 s after it was written), a lone complaint in `post-b`."""
    return {
        "name": "tiny", "start": START, "until": "10m",
        "defaults": {"community": "resto", "thread": "post-a"},
        "comments": [
            pos("p1", "0s"), neg("n1", "1m"), neg("n2", "2m"), neg("n3", "3m", arrive="3m5s"),
            neg("b1", "4m", thread="post-b"),
        ],
        "expect": expect,
    }


def test_the_report_counts_found_missed_precision_recall_and_delay() -> None:
    report = replay(parse_scenario(tiny(incidents=[
        # Found: paged 5 s after the third negative was written (when it arrived).
        {"thread": "post-a", "level": "human", "after": "n3", "within": "60s"},
        # Missed: nothing makes a spike here.
        {"spike": True, "level": "human"},
    ])))
    assert (report.found, report.expected) == (1, 2)
    assert report.incident_recall == 0.5
    # Two incidents opened (post-a, post-b); only post-a was expected.
    assert report.incidents == 2 and report.incident_tp == 1 and report.incident_precision == 0.5
    assert report.unexpected_incidents and "resto/post-b (respond)" in report.unexpected_incidents[0]
    # One page, for post-a, which was expected; two pages were expected (post-a and the spike).
    assert (report.page_tp, report.page_units) == (1, 1) and report.page_precision == 1.0
    assert (report.page_found, report.page_expected) == (1, 2) and report.page_recall == 0.5
    assert report.results[0].delay == timedelta(seconds=5)
    assert report.results[1].problems == ["no incident"]
    assert not report.passed
    assert report.failures == ["expected resto/spike ≥ human, page: no incident"]


def test_the_command_exits_non_zero_on_a_missed_expectation_and_prints_the_total(tmp_path: Path) -> None:
    missed = tmp_path / "missed.yaml"
    missed.write_text(yaml.safe_dump(tiny(incidents=[{"thread": "post-a", "level": "human", "after": "n3"},
                                                     {"spike": True, "level": "human"}])), encoding="utf-8")
    met = tmp_path / "met.yaml"
    met.write_text(yaml.safe_dump({**tiny(incidents=[{"thread": "post-a", "level": "human", "after": "n3"},
                                                     {"thread": "post-b"}]), "name": "met"}), encoding="utf-8")
    result = runner.invoke(escalation_app, ["replay", str(met), str(missed)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "failed: expected resto/spike ≥ human, page: no incident" in result.output
    total = next(line for line in result.output.splitlines() if "total" in line)
    # 3 of 4 expectations found (1 missed), no false page; incidents: 3 of the 4 opened were expected (P 0.75)
    # and 3 of 4 expected found (R 0.75); pages: both sent were expected (P 1.00), 2 of the 3 expected sent.
    cells = [c.strip() for c in total.split("│")[1:-1]]
    assert cells[:8] == ["total", "3/4", "1", "0", "0.75", "0.75", "1.00", "0.67"], cells
    assert cells[-1] == "1/2 pass"
    assert runner.invoke(escalation_app, ["replay", str(met)]).exit_code == 0


def test_a_page_nobody_expected_is_a_false_page() -> None:
    report = replay(parse_scenario(tiny(
        incidents=[{"thread": "post-a", "level": "respond", "page": False},
                   {"thread": "post-b", "level": "respond"}],
    )))
    assert report.found == 2
    assert report.page_units == 1 and report.page_tp == 0 and report.page_precision == 0.0
    assert report.page_recall is None  # no page was expected
    assert len(report.unexpected_pages) == 1 and report.unexpected_pages[0].startswith("page for resto/post-a at +3.08")
    assert not report.passed


def test_too_slow_a_detection_fails_its_expectation() -> None:
    report = replay(parse_scenario(tiny(incidents=[
        {"thread": "post-a", "level": "human", "after": "n3", "within": "2s"},
        {"thread": "post-b", "level": "respond", "page": False},
    ])))
    assert report.results[0].problems == ["detected 5s after n3 (> 2s)"]
    assert report.incident_precision == 1.0 and not report.passed


def test_no_page_max_pages_and_max_incidents_are_checked() -> None:
    report = replay(parse_scenario(tiny(no_page=True, max_pages=0, max_incidents=1)))
    assert "expected no page: 1 page(s) and 0 field request(s)" in report.failures
    assert "expected at most 0 page(s): 1" in report.failures
    assert "expected at most 1 incident(s): 2" in report.failures


def test_totals_add_the_scenarios_up() -> None:
    a = replay(parse_scenario(tiny(incidents=[{"thread": "post-a", "level": "human", "after": "n3"},
                                              {"thread": "post-b"}])))
    b = replay(parse_scenario(tiny(incidents=[{"spike": True, "level": "human"}])))
    t = totals([a, b])
    assert (t.scenarios, t.passed) == (2, 1)
    assert (t.found, t.expected) == (2, 3)
    assert t.incident_precision == (2 + 0) / 4
    assert t.median_delay == timedelta(seconds=5)


# ---------------------------------------------------------------------------------------------- simulation


def test_timers_fire_at_their_due_time_through_the_policy_steps() -> None:
    out = simulate(load_scenario(_shipped("unacknowledged_steps.yaml")))
    sent = [(e.at - out.escalations[0].at, e.escalation.target, e.escalation.step) for e in out.escalations]
    assert sent == [
        (timedelta(0), EscalationTarget.human, 1),  # the third negative: step 1 (wait 5 min)
        (timedelta(minutes=5), EscalationTarget.human, 2),  # not acknowledged: step 2 (wait 10 min)
        (timedelta(minutes=15), EscalationTarget.field, None),  # the steps are exhausted: the field
    ]


def test_an_acknowledgement_makes_the_pending_timer_stale() -> None:
    out = simulate(load_scenario(_shipped("cascade_one_post.yaml")))
    assert [why for _, _, why in out.timers_fired] == ["stale: fence 1 is not the incident's 2"]
    assert len(out.escalations) == 1


def test_redeliveries_are_dropped_before_the_engine_and_resends_are_recognised_by_it() -> None:
    out = simulate(load_scenario(_shipped("duplicate_flood.yaml")))
    # 5 comments, 4 of them sent 4 times under different ids, every message delivered 21 times.
    assert out.messages == (5 + 4 * 3) * 21
    assert out.processed == 5 + 4 * 3
    assert sum(1 for _, d in out.decisions if d.action.value == "duplicate") == 4 * 3


def test_a_late_arrival_is_recorded_not_acted_on() -> None:
    out = simulate(load_scenario(_shipped("late_import.yaml")))
    assert {d.action.value for _, d in out.decisions} == {"recorded"}
    assert not out.tracks and not out.escalations


def test_a_resolved_thread_that_flares_up_is_reopened_not_duplicated() -> None:
    scenario = parse_scenario({
        "name": "reopen", "start": START, "until": "3h", "defaults": {"community": "c", "thread": "t"},
        "comments": [neg("n1", "0s"), neg("n2", "2h")],
        "actions": [{"at": "1h", "do": "resolve"}],
        "expect": {"incidents": [{"level": "respond"}], "max_incidents": 1},
    })
    out = simulate(scenario)
    assert replay(scenario).passed
    (track,) = out.tracks.values()
    assert track.incident.reopened == 1 and track.incident.state.value == "open"


def test_an_inline_policy_and_a_policy_file_change_the_outcome(tmp_path: Path) -> None:
    strict = {"defaults": {"cascade": {"min_negatives": 5}}}
    scenario = parse_scenario({**tiny(incidents=[{"thread": "post-a", "level": "human"}]), "policy": strict})
    assert replay(scenario).failures[0].startswith("expected resto/post-a ≥ human, page: reached only respond")
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(strict), encoding="utf-8")
    scenario_file = tmp_path / "tiny.yaml"
    scenario_file.write_text(yaml.safe_dump(tiny(incidents=[{"thread": "post-a", "level": "human"},
                                                            {"thread": "post-b"}])), encoding="utf-8")
    assert runner.invoke(escalation_app, ["replay", str(scenario_file)]).exit_code == 0
    result = runner.invoke(escalation_app, ["replay", str(scenario_file), "--policy", str(path)])
    assert result.exit_code == 1, result.output
    assert "reached only respond" in result.output


def test_the_lexicon_scorer_scores_text_comments() -> None:
    scenario = parse_scenario({
        "name": "text", "start": START, "scorer": "lexicon", "defaults": {"community": "c", "thread": "t"},
        "comments": [{"id": "x", "text": "Service déplorable, plat froid, vraiment nul et honteux."}],
    })
    out = simulate(scenario)
    assert [d.action.value for _, d in out.decisions] == ["opened"]


# ---------------------------------------------------------------------------------------------- format


def test_a_bad_scenario_names_each_problem_with_its_path() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario({
            "name": "bad", "start": "2026-03-14T12:00:00",
            "comments": [{"id": "a", "label": "negative"}, {"id": "b", "at": "soon", "label": "neutral",
                                                             "confidence": 1}],
            "policy": {"defaults": {"horizon": "soon"}},
        })
    text = "\n".join(err.value.errors)
    assert "start:" in text  # no time zone
    assert "comments.0:" in text and "confidence" in text
    assert "comments.1.at:" in text


def test_a_scenario_without_community_or_scorer_is_refused() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario({"name": "x", "start": START, "comments": [{"id": "a", "text": "hello"}]})
    text = "\n".join(err.value.errors)
    assert "comments.0: no community" in text and "names no `scorer`" in text


def test_an_inline_policy_error_is_prefixed_with_policy() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario({"name": "x", "start": START, "policy": {"defaults": {"horizon": "soon"}}})
    assert err.value.errors[0].startswith("policy.defaults.horizon")


def test_compound_offsets_and_series() -> None:
    scenario = parse_scenario({
        "name": "series", "start": START, "defaults": {"community": "c"},
        "comments": [{"id": "s-{i}", "thread": "t-{i}", "count": 3, "at": "1h30m", "every": "2m10s",
                      "label": "neutral", "confidence": 0.5}],
    })
    out = simulate(scenario)
    assert sorted(out.created) == ["s-0", "s-1", "s-2"]
    assert out.created["s-2"] - out.created["s-0"] == timedelta(minutes=4, seconds=20)
    assert out.created["s-0"] - scenario.start == timedelta(hours=1, minutes=30)


def _shipped(name: str) -> Path:
    (path,) = [p for p in shipped_scenarios() if p.name == name]
    return path


def test_a_silence_mutes_the_page_but_keeps_the_incident() -> None:
    silenced = tiny(incidents=[{"thread": "post-a", "level": "human", "page": False}, {"thread": "post-b"}],
                    no_page=True)
    # The manager silenced the thread for the evening: the cascade is recorded, nobody is paged.
    silenced["silences"] = [{"at": "0s", "until": "1h", "matchers": {"community_id": "resto", "thread_id": "post-a"},
                             "by": "camille", "comment": "tasting evening, we watch it ourselves"}]
    silenced["until"] = "30m"
    report = replay(parse_scenario(silenced))
    assert report.passed, report.failures
    assert report.incidents == 2 and report.pages == 0
    # Once the silence is over, the muted step runs again at its deadline: the on-call person is paged
    # then (nobody could acknowledge a page that was never sent), and nothing jumps to the field.
    silenced["silences"][0]["until"] = "5m"
    out = simulate(parse_scenario(silenced))
    assert [(e.at - out.escalations[0].at, e.escalation.target, e.escalation.trigger) for e in out.escalations] == [
        (timedelta(0), EscalationTarget.human, "repeat"),
    ]
    assert out.escalations[0].at == parse_scenario(silenced).start + timedelta(minutes=18, seconds=5)
