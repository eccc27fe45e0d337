"""The event lifecycle (requested → scheduled → done / cancelled) as a table, and the commands on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.events import domain
from services.events.domain import Change, Merged, Origin, Refusal, RefusalKind, StoredEvent
from services.events.visits import TRANSITIONS, Action, Forbidden, Move, next_status
from terrain.contracts import EscalationMessage, EventIn, EventOutcome
from terrain.contracts.events import EventStatus

S = EventStatus
ESCALATED = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=2)
VISIT_DAY = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)

# (status before, action, status after or None when refused) — every pair of the machine.
TABLE: list[tuple[S | None, Action, S | None]] = [
    # Creating an event: any status but through the action that names it.
    (None, Action.request, S.requested),
    (None, Action.schedule, S.scheduled),
    (None, Action.complete, S.done),
    (None, Action.cancel, S.cancelled),
    # Nothing to assign before the event exists.
    (None, Action.assign, None),
    # A second request for the same visit is a repeat; it gets a date, a person, or is dropped.
    (S.requested, Action.request, S.requested),
    (S.requested, Action.schedule, S.scheduled),
    (S.requested, Action.assign, S.requested),
    # A team that went before anyone scheduled the visit still made it.
    (S.requested, Action.complete, S.done),
    (S.requested, Action.cancel, S.cancelled),
    # A scheduled visit cannot go back to being a request.
    (S.scheduled, Action.request, None),
    # Rescheduling and reassigning keep it scheduled.
    (S.scheduled, Action.schedule, S.scheduled),
    (S.scheduled, Action.assign, S.scheduled),
    (S.scheduled, Action.complete, S.done),
    (S.scheduled, Action.cancel, S.cancelled),
    # Done is final; completing again only corrects the outcome.
    (S.done, Action.request, None),
    (S.done, Action.schedule, None),
    (S.done, Action.assign, None),
    (S.done, Action.complete, S.done),
    # It took place: it cannot be cancelled afterwards.
    (S.done, Action.cancel, None),
    # Cancelled is final; a second cancel is a harmless repeat.
    (S.cancelled, Action.request, None),
    (S.cancelled, Action.schedule, None),
    (S.cancelled, Action.assign, None),
    (S.cancelled, Action.complete, None),
    (S.cancelled, Action.cancel, S.cancelled),
]


def test_the_table_covers_every_pair_and_only_the_machine_s_moves() -> None:
    pairs = {(b, a) for b, a, _ in TABLE}
    assert len(pairs) == len(TABLE) == 5 * len(Action)
    assert {(b, a): after for b, a, after in TABLE if after is not None} == TRANSITIONS


@pytest.mark.parametrize(("before", "action", "after"), TABLE, ids=[f"{b}-{a.value}" for b, a, _ in TABLE])
def test_transition_table(before: S | None, action: Action, after: S | None) -> None:
    got = next_status(before, action)
    if after is None:
        assert isinstance(got, Forbidden) and action.value in got.reason
    else:
        assert got == Move(before, after, action)


def test_a_refusal_of_a_final_status_says_so() -> None:
    got = next_status(S.done, Action.cancel)
    assert isinstance(got, Forbidden) and "final" in got.reason


def escalation(**kw: Any) -> EscalationMessage:
    return EscalationMessage.model_validate(
        {
            "message_id": "m-esc",
            "occurred_at": ESCALATED.isoformat(),
            "producer": "terrain-escalation",
            "escalation_id": "esc-1",
            "incident_id": "inc-1",
            "community_id": "restos",
            "thread_id": "post-7",
            "target": "field",
            "level": "field",
            "reason": "la crise dure depuis 3 jours",
            "place": "Brasserie du Parc",
            "evidence": [
                {"comment_id": "c1", "external_id": "x1", "label": "negative", "score": -0.8,
                 "created_at": "2026-11-23T20:00:00Z"}
            ],
            **kw,
        }
    )


def planned() -> StoredEvent:
    plan = domain.plan_field_visit(escalation(), NOW)
    assert plan is not None
    return plan


def test_a_field_escalation_becomes_a_requested_visit_with_place_reason_incident_and_evidence() -> None:
    visit = planned()
    assert (visit.status, visit.kind, visit.incident_id, visit.location) == (
        S.requested, "field_visit", "inc-1", "Brasserie du Parc")
    assert visit.reason == "la crise dure depuis 3 jours" and visit.escalated_at == ESCALATED
    assert [e.comment_id for e in visit.evidence] == ["c1"]
    first = domain.planned_transition(visit, "terrain-escalation", NOW)
    assert (first.before, first.after, first.action, first.actor, first.at) == (
        None, S.requested, Action.request, "terrain-escalation", NOW)


def test_fields_the_escalation_side_may_add_later_change_nothing() -> None:
    # Consumers ignore unknown fields: a policy step or recommended actions do not alter the plan.
    later = domain.plan_field_visit(
        escalation(step=2, some_future_field={"anything": [1, 2]}, recommended_actions=["visit"]), NOW
    )
    assert later == planned()


def test_schedule_assign_close_keeps_each_step_with_who_and_when() -> None:
    visit = planned()
    scheduled = domain.act(visit, visit.id, Action.schedule, {"starts_at": VISIT_DAY, "assignee": "Lina"},
                           "marc", NOW, "rdv avec le gérant")
    assert isinstance(scheduled, Merged) and scheduled.event.status is S.scheduled
    (t1,) = scheduled.transitions
    assert (t1.before, t1.after, t1.actor, t1.at, t1.assignee, t1.scheduled_for, t1.note) == (
        S.requested, S.scheduled, "marc", NOW, "Lina", VISIT_DAY, "rdv avec le gérant")
    outcome = EventOutcome(attendees=4, ambassadors_met=1, result="resolved", notes="excuses acceptées")
    closed = domain.act(scheduled.event, visit.id, Action.complete,
                        {"outcome": outcome, "follow_ups": ["rappeler dans 2 semaines"]}, "lina", LATER)
    assert isinstance(closed, Merged) and closed.event.status is S.done
    (t2,) = closed.transitions
    assert (t2.before, t2.after, t2.actor, t2.at) == (S.scheduled, S.done, "lina", LATER)
    assert closed.event.outcome.result == "resolved" and closed.event.follow_ups == ["rappeler dans 2 semaines"]
    # What the escalation said stays with the visit.
    assert (closed.event.reason, closed.event.escalation_id) == (visit.reason, "esc-1")
    assert domain.escalation_to_visit(closed.event, t2) == ("done", (VISIT_DAY - ESCALATED).total_seconds())


def test_correcting_a_done_visit_s_outcome_is_kept_too() -> None:
    done = planned().model_copy(update={"status": S.done, "outcome": EventOutcome(result="improved")})
    fixed = domain.act(done, done.id, Action.complete, {"outcome": EventOutcome(result="resolved")}, "lina", LATER)
    assert isinstance(fixed, Merged) and fixed.event.outcome.result == "resolved"
    assert [(t.before, t.after, t.action, t.actor) for t in fixed.transitions] == [
        (S.done, S.done, Action.complete, "lina")]


def test_repeating_a_command_records_nothing_twice() -> None:
    visit = planned()
    first = domain.act(visit, visit.id, Action.schedule, {"starts_at": VISIT_DAY}, "marc", NOW)
    assert isinstance(first, Merged)
    again = domain.act(first.event, visit.id, Action.schedule, {"starts_at": VISIT_DAY}, "marc", LATER)
    assert isinstance(again, Merged) and again.change is Change.unchanged and again.transitions == ()
    cancelled = domain.act(first.event, visit.id, Action.cancel, {}, "marc", LATER, "gérant absent")
    assert isinstance(cancelled, Merged) and cancelled.event.outcome.result == "cancelled"
    twice = domain.act(cancelled.event, visit.id, Action.cancel, {}, "marc", LATER, "gérant absent")
    assert isinstance(twice, Merged) and twice.change is Change.unchanged


# (case, stored status, command, refusal kind, field)
COMMAND_REFUSALS: list[tuple[str, S | None, Action, dict[str, Any], RefusalKind, str]] = [
    # No event under that id.
    ("missing event", None, Action.schedule, {"starts_at": VISIT_DAY}, RefusalKind.missing, "id"),
    # Final statuses refuse further moves.
    ("schedule a done visit", S.done, Action.schedule, {"starts_at": VISIT_DAY}, RefusalKind.conflict, "status"),
    ("close a cancelled visit", S.cancelled, Action.complete, {}, RefusalKind.conflict, "status"),
    # The date must stay coherent.
    ("end before start", S.requested, Action.schedule,
     {"starts_at": VISIT_DAY, "ends_at": VISIT_DAY - timedelta(hours=1)}, RefusalKind.invalid, "ends_at"),
]


@pytest.mark.parametrize(("case", "status", "action", "changes", "kind", "field"), COMMAND_REFUSALS,
                         ids=[c[0] for c in COMMAND_REFUSALS])
def test_command_refusals(
    case: str, status: S | None, action: Action, changes: dict[str, Any], kind: RefusalKind, field: str
) -> None:
    stored = planned().model_copy(update={"status": status}) if status is not None else None
    got = domain.act(stored, "v1", action, changes, "marc", NOW)
    assert isinstance(got, Refusal) and (got.kind, got.field) == (kind, field)


def event_in(**kw: Any) -> EventIn:
    base: dict[str, Any] = {"community_id": "restos", "kind": "field_visit", "title": "Visite",
                            "starts_at": VISIT_DAY}
    return EventIn.model_validate({**base, **kw})


# (case, the write, status the new event gets)
INITIAL: list[tuple[str, EventIn, S]] = [
    # A future event without an outcome is planned.
    ("future", event_in(), S.scheduled),
    # Logged after the fact.
    ("past", event_in(starts_at="2026-11-01T18:00:00Z"), S.done),
    ("decided result", event_in(outcome={"result": "success"}), S.done),
    ("cancelled result", event_in(outcome={"result": "cancelled"}), S.cancelled),
    # A stated status wins.
    ("stated", event_in(status="requested"), S.requested),
]


@pytest.mark.parametrize(("case", "write", "status"), INITIAL, ids=[c[0] for c in INITIAL])
def test_a_new_event_s_status(case: str, write: EventIn, status: S) -> None:
    got = domain.merge(None, "e1", write, Origin.http, NOW)
    assert isinstance(got, Merged) and got.event.status is status
    assert [(t.before, t.after) for t in got.transitions] == [(None, status)]


def test_an_outcome_published_for_a_visit_closes_it_and_names_the_producer() -> None:
    visit = planned()
    report = event_in(id=visit.id, outcome={"attendees": 3, "result": "improved"}, organiser="Lina",
                      follow_ups=["nouvelle carte"])
    got = domain.merge(visit, visit.id, report, Origin.topic, LATER, actor="appli-terrain")
    assert isinstance(got, Merged) and got.event.status is S.done
    assert [(t.before, t.after, t.actor) for t in got.transitions] == [(S.requested, S.done, "appli-terrain")]
    assert (got.event.organiser, got.event.follow_ups, got.event.incident_id) == ("Lina", ["nouvelle carte"], "inc-1")


def test_a_write_against_a_final_status_is_refused_with_a_clear_reason() -> None:
    visit = planned().model_copy(update={"status": S.cancelled})
    got = domain.merge(visit, visit.id, event_in(outcome={"result": "success"}), Origin.http, LATER)
    assert isinstance(got, Refusal) and got.kind is RefusalKind.conflict and got.field == "status"
    assert "cancelled" in got.reason


# (case, stored status and start or None for a new event, what the command or write sets, refused?)
# The clock reads NOW; the grace is five minutes.
PAST_SCHEDULES: list[tuple[str, tuple[S, datetime] | None, Action, dict[str, Any], bool]] = [
    # The bug: a visit could be scheduled for a day already gone.
    ("schedule a requested visit for yesterday", (S.requested, ESCALATED), Action.schedule,
     {"starts_at": NOW - timedelta(days=1)}, True),
    # A time typed a few minutes late still means now.
    ("within the grace", (S.requested, ESCALATED), Action.schedule, {"starts_at": NOW - timedelta(minutes=4)}, False),
    ("just past the grace", (S.requested, ESCALATED), Action.schedule,
     {"starts_at": NOW - timedelta(minutes=5, seconds=1)}, True),
    # Moving a scheduled visit to the past is scheduling it in the past too.
    ("move a scheduled visit back", (S.scheduled, VISIT_DAY), Action.schedule,
     {"starts_at": NOW - timedelta(hours=2)}, True),
    # A visit already scheduled for a date now gone keeps it when only who goes changes.
    ("reassign a visit whose date passed", (S.scheduled, NOW - timedelta(days=1)), Action.schedule,
     {"starts_at": NOW - timedelta(days=1), "assignee": "Sam"}, False),
    ("assign only", (S.scheduled, NOW - timedelta(days=1)), Action.assign, {"assignee": "Sam"}, False),
    # Reporting a visit that took place names its real (past) date: not a schedule.
    ("close with a past start", (S.requested, ESCALATED), Action.complete,
     {"starts_at": NOW - timedelta(days=1), "outcome": EventOutcome(result="resolved")}, False),
]


@pytest.mark.parametrize(("case", "before", "action", "changes", "refused"), PAST_SCHEDULES,
                         ids=[c[0] for c in PAST_SCHEDULES])
def test_a_visit_cannot_be_scheduled_in_the_past(
    case: str, before: tuple[S, datetime], action: Action, changes: dict[str, Any], refused: bool
) -> None:
    stored = planned().model_copy(update={"status": before[0], "starts_at": before[1]})
    got = domain.act(stored, stored.id, action, changes, "marc", NOW)
    if refused:
        assert isinstance(got, Refusal) and (got.kind, got.field) == (RefusalKind.invalid, "starts_at")
        assert "in the past" in got.reason and "close" in got.reason
    else:
        assert isinstance(got, Merged) and got.change is Change.updated


def test_a_repeated_schedule_answers_as_the_first_even_once_its_date_has_passed() -> None:
    first = domain.act(planned(), "v1", Action.schedule, {"starts_at": NOW + timedelta(minutes=1)}, "marc", NOW)
    assert isinstance(first, Merged)
    again = domain.act(first.event, "v1", Action.schedule, {"starts_at": NOW + timedelta(minutes=1)}, "marc",
                       NOW + timedelta(hours=1))
    assert isinstance(again, Merged) and again.change is Change.unchanged


def test_the_grace_is_the_caller_s_to_set() -> None:
    got = domain.act(planned(), "v1", Action.schedule, {"starts_at": NOW - timedelta(minutes=30)}, "marc", NOW,
                     grace=timedelta(hours=1))
    assert isinstance(got, Merged)


# (case, a new event written over HTTP (and the same on the topic), refused over HTTP?)
HTTP_WRITES: list[tuple[str, EventIn, bool]] = [
    # Stating "scheduled" for a past start is scheduling in the past, whichever route says it.
    ("stated scheduled in the past", event_in(status="scheduled", starts_at=NOW - timedelta(days=2)), True),
    # Without a status, a past start is an event logged after the fact (done): not refused.
    ("logged after the fact", event_in(starts_at=NOW - timedelta(days=2)), False),
    ("stated scheduled ahead", event_in(status="scheduled"), False),
]


@pytest.mark.parametrize(("case", "write", "refused"), HTTP_WRITES, ids=[c[0] for c in HTTP_WRITES])
def test_a_write_over_http_cannot_schedule_in_the_past_but_a_topic_report_may(
    case: str, write: EventIn, refused: bool
) -> None:
    http = domain.merge(None, "e1", write, Origin.http, NOW)
    topic = domain.merge(None, "e1", write, Origin.topic, NOW)
    assert isinstance(topic, Merged)
    if refused:
        assert isinstance(http, Refusal) and http.field == "starts_at"
    else:
        assert isinstance(http, Merged)


def test_a_forbidden_move_names_the_status_the_event_is_in() -> None:
    done = planned().model_copy(update={"status": S.done})
    got = domain.act(done, done.id, Action.schedule, {"starts_at": VISIT_DAY}, "marc", NOW)
    assert isinstance(got, Refusal) and got.kind is RefusalKind.conflict and got.status is S.done
