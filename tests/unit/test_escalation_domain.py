"""Escalation's decision table: which scored comment opens, joins, escalates or leaves an incident alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.escalation.domain import (
    Action,
    Book,
    Incident,
    Policy,
    Refusal,
    Step,
    decide,
    decide_batch,
    incident_id_for,
    incident_message,
    transition,
)
from terrain.contracts import (
    CharterFlag,
    Comment,
    CommentAction,
    EscalationTarget,
    IncidentEventType,
    IncidentLevel,
    IncidentState,
    ScoredCommentMessage,
    Sentiment,
    SentimentLabel,
    comment_id_for,
)

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
POLICY = Policy()
NEG, NEU, POS = SentimentLabel.negative, SentimentLabel.neutral, SentimentLabel.positive


def scored(
    ext: str = "c1",
    label: SentimentLabel = NEG,
    *,
    confidence: float = 0.9,
    flags: tuple[tuple[str, float], ...] = (),
    action: CommentAction = CommentAction.created,
    thread: str = "post-1",
    created_at: datetime = NOW - timedelta(hours=1),
    message_id: str | None = None,
    place: str | None = None,
) -> ScoredCommentMessage:
    score = {NEG: -0.7, NEU: 0.0, POS: 0.7}[label]
    return ScoredCommentMessage(
        message_id=message_id or f"m-{ext}",
        occurred_at=created_at,
        producer="test",
        comment=Comment(
            source="facebook", external_id=ext, community_id="resto-lyon", thread_id=thread,
            text="Service déplorable", created_at=created_at, comment_id=comment_id_for("facebook", ext),
            action=action, place=place,
        ),
        sentiment=Sentiment(label=label, score=score, confidence=confidence, lang="fr", model_version="t"),
        flags=[CharterFlag(kind=k, confidence=c) for k, c in flags],
        scored_at=NOW,
    )


def incident(
    level: IncidentLevel = IncidentLevel.respond,
    state: IncidentState = IncidentState.open,
    negatives: int = 1,
    threshold: int = 3,
) -> Incident:
    return Incident(
        id="inc-1", community_id="resto-lyon", thread_id="post-1", level=level, reason="opened earlier",
        state=state, opened_at=NOW - timedelta(hours=1), updated_at=NOW - timedelta(hours=1),
        cascade_threshold=threshold, ack_deadline_s=900.0, comment_count=negatives,
        negative_count=negatives, seq=1,
    )


@pytest.mark.parametrize(
    ("msg", "open_incident", "attached_to", "policy", "action", "level", "events", "why"),
    [
        # A negative comment in a quiet thread deserves an answer.
        (scored(), None, None, POLICY, Action.opened, IncidentLevel.respond, ["opened"],
         "deserves an answer"),
        # Negative and insulting: hide it, the thread still gets an answer.
        (scored(flags=(("insult", 0.9),)), None, None, POLICY, Action.opened, IncidentLevel.moderate,
         ["opened"], "breaks the charter (insult)"),
        # Spam breaks the charter whatever its tone.
        (scored(label=NEU, flags=(("spam", 0.8),)), None, None, POLICY, Action.opened, IncidentLevel.moderate,
         ["opened"], "breaks the charter (spam)"),
        # An unsure flag does not justify hiding: answer it as a negative comment.
        (scored(flags=(("insult", 0.3),)), None, None, POLICY, Action.opened, IncidentLevel.respond,
         ["opened"], "deserves an answer"),
        # Praise or neutral talk in a quiet thread opens nothing.
        (scored(label=POS), None, None, POLICY, Action.ignored, None, [], "positive comment"),
        (scored(label=NEU), None, None, POLICY, Action.ignored, None, [], "neutral comment"),
        # Removed at its source: nothing left to answer.
        (scored(action=CommentAction.removed), None, None, POLICY, Action.ignored, None, [], "removed"),
        # A negative label the scorer is unsure of, under a stricter policy.
        (scored(confidence=0.4), None, None, replace(POLICY, min_confidence=0.6), Action.ignored, None, [],
         "below 0.60"),
        # The same comment again (another message id): already attached, nothing changes.
        (scored(), None, "inc-0", POLICY, Action.duplicate, None, [], "already attached to incident inc-0"),
        # A second negative joins the thread's open incident.
        (scored("c2"), incident(), None, POLICY, Action.attached, IncidentLevel.respond, ["updated"],
         "2 negative of 2 comments"),
        # A positive reply is counted, without a lifecycle message.
        (scored("c2", POS), incident(), None, POLICY, Action.counted, IncidentLevel.respond, [], "counted"),
        # An insult in a thread being answered raises the incident to moderate.
        (scored("c2", flags=(("threat", 0.9),)), incident(), None, POLICY, Action.attached,
         IncidentLevel.moderate, ["updated"], "breaks the charter (threat)"),
        # The third negative reaches the cascade threshold: page a person.
        (scored("c3"), incident(negatives=2), None, POLICY, Action.escalated, IncidentLevel.human,
         ["escalated"], "reached the cascade threshold of 3"),
        # Acknowledged already: a person is on it, so no page, but the comment still joins.
        (scored("c3"), incident(state=IncidentState.acknowledged, negatives=2), None, POLICY, Action.attached,
         IncidentLevel.respond, ["updated"], "already acknowledged the incident: no page"),
        # Already with a person: no second page.
        (scored("c9"), incident(IncidentLevel.human, negatives=5), None, POLICY, Action.attached,
         IncidentLevel.human, ["updated"], "6 negative"),
        # The policy frozen into the incident wins over today's (stricter) setting.
        (scored("c3"), incident(negatives=2, threshold=5), None, replace(POLICY, cascade_threshold=2),
         Action.attached, IncidentLevel.respond, ["updated"], "cascade at 5"),
        # A removal in a thread with an open incident changes nothing.
        (scored("c2", action=CommentAction.removed), incident(), None, POLICY, Action.ignored, None, [],
         "removed"),
    ],
)
def test_decide(msg, open_incident, attached_to, policy, action, level, events, why):
    d = decide(msg, open_incident, attached_to, policy, NOW)
    assert d.action is action
    assert why in d.reason
    assert [s.event.value for s in d.steps] == events
    if level is None:
        assert d.incident is None and d.attachment is None
    else:
        assert d.incident is not None and d.incident.level is level
        assert d.attachment is not None and d.attachment.incident_id == d.incident.id
    assert (d.escalation is not None) == (action is Action.escalated)


def test_opening_recommends_the_playbook_with_the_private_reply_deadline():
    d = decide(scored(created_at=NOW - timedelta(days=1)), None, None, POLICY, NOW)
    assert d.incident is not None
    deadline = "2026-12-01 12:00 UTC"  # created a day ago + Meta's 7 days
    assert deadline in d.reason
    actions = d.incident.recommended_actions
    assert actions[0] == "Reply publicly to comment c1; do not delete it"
    assert deadline in actions[1] and "private message" in actions[1]
    assert not any(a.startswith("Hide") for a in actions)
    assert d.incident.id == incident_id_for("resto-lyon", "post-1", comment_id_for("facebook", "c1"))
    assert (d.incident.comment_count, d.incident.negative_count, d.incident.seq) == (1, 1, 1)


def test_private_reply_window_closed_for_an_old_comment():
    d = decide(scored(created_at=NOW - timedelta(days=8)), None, None, POLICY, NOW)
    assert d.incident is not None
    assert "private-reply window closed" in d.reason
    assert not any("private message" in a for a in d.incident.recommended_actions)


def test_moderate_says_hide_and_still_answer():
    d = decide(scored(flags=(("insult", 0.9), ("threat", 0.7))), None, None, POLICY, NOW)
    assert d.incident is not None
    actions = d.incident.recommended_actions
    assert any(a.startswith("Hide comment c1") and "insult, threat" in a for a in actions)
    assert any(a.startswith("Answer thread post-1 publicly") for a in actions)


def test_escalation_carries_target_deadline_and_evidence():
    d = decide(scored("c3", place="Lyon"), incident(negatives=2), None, POLICY, NOW)
    e = d.escalation
    assert e is not None and d.incident is not None
    assert (e.target, e.level, e.incident_id) == (EscalationTarget.human, IncidentLevel.human, "inc-1")
    assert e.ack_deadline == NOW + timedelta(minutes=15) == d.incident.ack_deadline
    assert e.place == "Lyon"
    assert [ev.external_id for ev in e.evidence] == ["c3"]
    assert d.incident.recommended_actions[0].startswith("Page the on-call community manager")
    # The id names the incident and target, so a replay of the decision is recognisable downstream.
    again = decide(scored("c3", message_id="other"), incident(negatives=2), None, POLICY, NOW)
    assert again.escalation is not None and again.escalation.message_id == e.message_id


def test_batch_three_negatives_open_then_escalate_once():
    book = Book()
    batch = [scored("c1"), scored("c2"), scored("c1", message_id="dup-of-c1"), scored("c3"), scored("c4")]
    decisions = decide_batch(batch, book, POLICY, NOW)
    assert [d.action for d in decisions] == [
        Action.opened, Action.attached, Action.duplicate, Action.escalated, Action.attached,
    ]
    steps = [s for d in decisions for s in d.steps]
    assert [(s.seq, s.event.value) for s in steps] == [
        (1, "opened"), (2, "updated"), (3, "escalated"), (4, "updated"),
    ]
    assert len({s.incident.id for s in steps}) == 1
    assert sum(d.escalation is not None for d in decisions) == 1
    last = decisions[-1].incident
    assert last is not None
    assert (last.comment_count, last.negative_count, last.level) == (4, 4, IncidentLevel.human)
    assert book.open_by_thread[("resto-lyon", "post-1")] is last


def test_batch_keeps_threads_apart():
    decisions = decide_batch([scored("a", thread="p1"), scored("b", thread="p2")], Book(), POLICY, NOW)
    assert [d.action for d in decisions] == [Action.opened, Action.opened]
    assert decisions[0].incident is not None and decisions[1].incident is not None
    assert decisions[0].incident.id != decisions[1].incident.id


def test_threshold_of_one_pages_on_the_first_negative():
    d = decide(scored(), None, None, replace(POLICY, cascade_threshold=1), NOW)
    assert d.action is Action.escalated
    assert [(s.seq, s.event.value) for s in d.steps] == [(1, "opened"), (2, "escalated")]
    assert [s.incident.level for s in d.steps] == [IncidentLevel.respond, IncidentLevel.human]


@pytest.mark.parametrize(
    ("state", "event", "allowed"),
    [
        (IncidentState.open, IncidentEventType.acknowledged, True),  # the usual first move
        (IncidentState.acknowledged, IncidentEventType.acknowledged, False),  # someone already has it
        (IncidentState.resolved, IncidentEventType.acknowledged, False),  # nothing left to acknowledge
        (IncidentState.open, IncidentEventType.resolved, True),  # resolving without acknowledging is fine
        (IncidentState.acknowledged, IncidentEventType.resolved, True),  # the usual end
        (IncidentState.resolved, IncidentEventType.resolved, False),  # resolving twice is refused
    ],
)
def test_transition(state, event, allowed):
    out = transition(incident(state=state), event, "claire", "called the manager", NOW)
    if not allowed:
        assert isinstance(out, Refusal) and "already" in out.reason
        return
    assert isinstance(out, Step)
    assert out.event is event and out.seq == 2 and out.actor == "claire"
    assert out.detail == f"{event.value} by claire: called the manager"
    target = IncidentState.acknowledged if event is IncidentEventType.acknowledged else IncidentState.resolved
    assert out.incident.state is target and out.incident.updated_at == NOW
    msg = incident_message(out)
    assert msg.actor == "claire" and msg.event is event and msg.incident.state is target


def test_only_people_acknowledge_or_resolve():
    with pytest.raises(ValueError):
        transition(incident(), IncidentEventType.escalated, "claire", None, NOW)


def test_lifecycle_message_ids_are_stable_per_step():
    d = decide(scored(), None, None, POLICY, NOW)
    step = d.steps[0]
    assert incident_message(step).message_id == incident_message(step).message_id
    later = decide(scored("c2"), d.incident, None, POLICY, NOW).steps[0]
    assert incident_message(later).message_id != incident_message(step).message_id
    assert incident_message(step).actor is None  # the service acted, not a person
