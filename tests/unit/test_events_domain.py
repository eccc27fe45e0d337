"""The events merge rules, ids and field-visit planning, without a broker or a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.events import domain
from services.events.domain import Change, Merged, Origin, Refusal, RefusalKind, StoredEvent
from terrain.contracts import EscalationMessage, EventIn, EventOutcome
from terrain.contracts.base import derived_id

T0 = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def event_in(**kw: Any) -> EventIn:
    base: dict[str, Any] = {
        "community_id": "voyageurs",
        "kind": "apero",
        "title": "Apéro des blogueurs",
        "starts_at": T0,
        "ends_at": T0 + timedelta(hours=3),
        "location": "Lyon",
        "outcome": {"attendees": 40, "ambassadors_met": 5, "result": "success", "notes": "bonne ambiance"},
    }
    return EventIn.model_validate({**base, **kw})


def stored(**kw: Any) -> StoredEvent:
    first = domain.merge(None, "e1", event_in(**kw), Origin.http, NOW)
    assert isinstance(first, Merged)
    return first.event


def test_first_write_creates_with_the_given_id_and_times() -> None:
    result = domain.merge(None, "e1", event_in(id="ignored-here"), Origin.topic, NOW)
    assert isinstance(result, Merged) and result.change is Change.created
    e = result.event
    assert (e.id, e.origin, e.recorded_at, e.updated_at) == ("e1", Origin.topic, NOW, NOW)
    assert e.outcome == EventOutcome(attendees=40, ambassadors_met=5, result="success", notes="bonne ambiance")


# (case, update fields, expected stored fields after the merge)
MERGE_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # Reporting only the attendance keeps the notes, ambassadors and result written before.
    (
        "partial outcome keeps the rest",
        {"outcome": {"attendees": 55}},
        {"attendees": 55, "ambassadors_met": 5, "result": "success", "notes": "bonne ambiance"},
    ),
    # A defaulted "pending" cannot tell "not decided" from "not stated": it never undoes a decision.
    ("pending does not undo a decided result", {"outcome": {"result": "pending"}}, {"result": "success"}),
    # A decided result may still be corrected.
    ("a decided result replaces another", {"outcome": {"result": "mixed"}}, {"result": "mixed"}),
    # Location, end and incident left out keep their stored values.
    (
        "omitted optionals are kept",
        {"ends_at": None, "location": None},
        {"ends_at": T0 + timedelta(hours=3), "location": "Lyon"},
    ),
    # Stated optionals replace the stored ones.
    (
        "stated optionals replace",
        {"location": "Villeurbanne", "incident_id": "inc-9"},
        {"location": "Villeurbanne", "incident_id": "inc-9"},
    ),
    # Required fields are in every write: the latest wins.
    (
        "title and kind follow the latest write",
        {"title": "Meetup de novembre", "kind": "meetup"},
        {"title": "Meetup de novembre", "kind": "meetup"},
    ),
]


@pytest.mark.parametrize(("case", "update", "expected"), MERGE_CASES, ids=[c[0] for c in MERGE_CASES])
def test_merge_rules(case: str, update: dict[str, Any], expected: dict[str, Any]) -> None:
    before = stored(outcome={"attendees": 40, "ambassadors_met": 5, "result": "success", "notes": "bonne ambiance"})
    sparse = event_in(**{"outcome": {}, "ends_at": None, "location": None, **update})
    result = domain.merge(before, "e1", sparse, Origin.topic, LATER)
    assert isinstance(result, Merged)
    after = result.event
    flat = {**after.model_dump(exclude={"outcome"}), **after.outcome.model_dump()}
    for field, value in expected.items():
        assert flat[field] == value, field
    # What belongs to the first write never moves.
    assert (after.origin, after.recorded_at, after.id) == (Origin.http, NOW, "e1")


def test_an_update_that_changes_something_moves_updated_at() -> None:
    result = domain.merge(stored(), "e1", event_in(outcome={"attendees": 41}), Origin.http, LATER)
    assert isinstance(result, Merged)
    assert (result.change, result.event.updated_at, result.event.recorded_at) == (Change.updated, LATER, NOW)


def test_a_repost_changes_nothing_not_even_updated_at() -> None:
    before = stored()
    # The full same event, and a sparser write that states nothing new: both are no-ops.
    for update in (event_in(), event_in(ends_at=None, location=None, outcome={"attendees": 40})):
        result = domain.merge(before, "e1", update, Origin.topic, LATER)
        assert isinstance(result, Merged)
        assert result.change is Change.unchanged and result.event == before


# (case, update, refusal kind, field named)
REFUSALS: list[tuple[str, EventIn, RefusalKind, str]] = [
    # Caller ids are not namespaced: the same id from another community is a collision, not an update.
    ("another community", event_in(community_id="restos"), RefusalKind.conflict, "community_id"),
    # Moving the start past the stored end, without a new end, would leave an event ending before it starts.
    (
        "start after the stored end",
        event_in(starts_at=T0 + timedelta(days=1), ends_at=None),
        RefusalKind.invalid,
        "ends_at",
    ),
]


@pytest.mark.parametrize(("case", "update", "kind", "field"), REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refusals(case: str, update: EventIn, kind: RefusalKind, field: str) -> None:
    result = domain.merge(stored(), "e1", update, Origin.http, LATER)
    assert isinstance(result, Refusal)
    assert (result.kind, result.field) == (kind, field)


def test_a_new_start_with_a_new_end_is_fine() -> None:
    moved = event_in(starts_at=T0 + timedelta(days=1), ends_at=T0 + timedelta(days=1, hours=2))
    result = domain.merge(stored(), "e1", moved, Origin.http, LATER)
    assert isinstance(result, Merged) and result.event.starts_at == T0 + timedelta(days=1)


def test_ids() -> None:
    # The caller's id wins on every channel.
    assert domain.outcome_event_id("mine", "m-1") == "mine"
    assert domain.http_event_id("mine", "fresh") == "mine"
    # Without one, HTTP takes the fresh id and the topic derives one from the message id,
    # so a redelivered message lands on the same event.
    assert domain.http_event_id(None, "fresh") == "fresh"
    assert domain.outcome_event_id(None, "m-1") == derived_id("event", "m-1")
    assert domain.outcome_event_id(None, "m-1") != domain.outcome_event_id(None, "m-2")
    assert domain.field_visit_id("esc-1") != domain.field_visit_id("esc-2")


def test_fold_applies_a_batch_in_order_and_keeps_only_changed_events() -> None:
    existing = stored()
    writes = [
        ("a", "e1", event_in(outcome={"attendees": 50})),
        ("b", "e2", event_in(title="Atelier", kind="workshop", outcome={})),
        ("c", "e1", event_in(outcome={"notes": "suite"})),
        ("d", "e1", event_in(community_id="restos")),
        ("e", "e3", event_in(community_id="restos", outcome={})),
        ("f", "e3", event_in(community_id="restos", outcome={})),
    ]
    folded = domain.fold({"e1": existing}, writes, Origin.topic, LATER)
    changes = [(a.item, a.result.change if isinstance(a.result, Merged) else a.result.kind) for a in folded.applied]
    assert changes == [
        ("a", Change.updated),
        ("b", Change.created),
        ("c", Change.updated),
        ("d", RefusalKind.conflict),
        ("e", Change.created),
        ("f", Change.unchanged),
    ]
    # The second write to e1 saw the first: both its attendance and its notes are there.
    assert folded.final["e1"].outcome.attendees == 50 and folded.final["e1"].outcome.notes == "suite"
    assert sorted(folded.final) == ["e1", "e2", "e3"]
    # An unchanged event is not rewritten.
    assert domain.fold({"e1": existing}, [("x", "e1", event_in())], Origin.topic, LATER).final == {}


def escalation(target: str, **kw: Any) -> EscalationMessage:
    return EscalationMessage.model_validate(
        {
            "message_id": "m-esc",
            "occurred_at": "2026-11-24T08:00:00Z",
            "producer": "terrain-escalation",
            "escalation_id": "esc-1",
            "incident_id": "inc-1",
            "community_id": "restos",
            "thread_id": "post-7",
            "target": target,
            "level": "field",
            "reason": "crisis persists for 3 days",
            "place": "Brasserie du Parc",
            **kw,
        }
    )


def test_a_field_escalation_plans_a_pending_visit_linked_to_its_incident() -> None:
    plan = domain.plan_field_visit(escalation("field"), NOW)
    assert plan is not None
    assert (plan.id, plan.kind, plan.incident_id, plan.community_id) == (
        domain.field_visit_id("esc-1"),
        "field_visit",
        "inc-1",
        "restos",
    )
    assert (plan.outcome.result, plan.location, plan.origin, plan.escalation_id) == (
        "pending",
        "Brasserie du Parc",
        Origin.escalation,
        "esc-1",
    )
    assert plan.title == "Field visit: Brasserie du Parc"
    assert plan.starts_at == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    assert (plan.recorded_at, plan.updated_at) == (NOW, NOW)


def test_a_field_escalation_without_a_place_names_the_thread() -> None:
    plan = domain.plan_field_visit(escalation("field", place=None), NOW)
    assert plan is not None and plan.title == "Field visit: thread post-7" and plan.location is None


def test_a_field_escalation_whose_place_spans_lines_plans_a_visit_located_on_one_line() -> None:
    # An escalation's place is free text (a policy file's `place: |` ends in a line break); the visit's location
    # is held to one line: the planned visit must be made, not refused as a poison message.
    plan = domain.plan_field_visit(escalation("field", place="Brasserie du Parc\nLyon 6e\n"), NOW)
    assert plan is not None and plan.location == "Brasserie du Parc Lyon 6e"
    assert plan.title == "Field visit: Brasserie du Parc Lyon 6e"
    blank = domain.plan_field_visit(escalation("field", place="\n"), NOW)
    assert blank is not None and blank.location is None and blank.title == "Field visit: thread post-7"


def test_a_human_escalation_plans_nothing() -> None:
    assert domain.plan_field_visit(escalation("human"), NOW) is None


def test_the_field_team_reporting_on_a_planned_visit_fills_it_in() -> None:
    plan = domain.plan_field_visit(escalation("field"), NOW)
    assert plan is not None
    report = EventIn(
        id=plan.id,
        community_id="restos",
        kind="field_visit",
        title="Visite à la brasserie",
        starts_at=T0 + timedelta(days=5),
        outcome=EventOutcome(attendees=3, result="success", notes="gérant rencontré"),
    )
    result = domain.merge(plan, plan.id, report, Origin.http, LATER)
    assert isinstance(result, Merged) and result.change is Change.updated
    # The report did not restate the incident or the place: the plan's stay.
    assert (result.event.incident_id, result.event.location) == ("inc-1", "Brasserie du Parc")
    assert (result.event.outcome.result, result.event.escalation_id) == ("success", "esc-1")
