"""Pure escalation logic: which scored comment opens, joins or escalates an incident; lifecycle rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from terrain.contracts import (
    CommentAction,
    EscalationMessage,
    EscalationTarget,
    Evidence,
    IncidentEventType,
    IncidentLevel,
    IncidentMessage,
    IncidentSnapshot,
    IncidentState,
    ScoredCommentMessage,
    SentimentLabel,
)
from terrain.contracts.base import derived_id

PRODUCER = "terrain-escalation"
SYSTEM_ACTOR = "terrain-escalation"

LEVEL_RANK = {
    IncidentLevel.respond: 0, IncidentLevel.moderate: 1, IncidentLevel.human: 2, IncidentLevel.field: 3,
}
IN_PROGRESS = frozenset({IncidentState.open, IncidentState.acknowledged})
HUMAN_EVENTS = frozenset({IncidentEventType.acknowledged, IncidentEventType.resolved})

ThreadKey = tuple[str, str]  # (community_id, thread_id)
CommentKey = tuple[str, str]  # (community_id, comment_id)


@dataclass(frozen=True)
class Policy:
    """The rules in force; the parts that drive a running escalation are frozen into each incident."""

    cascade_threshold: int = 3
    ack_deadline: timedelta = timedelta(minutes=15)
    # Meta allows one private reply per comment, within 7 days of the comment.
    private_reply_window: timedelta = timedelta(days=7)
    min_confidence: float = 0.0
    # Hiding a comment is the costly mistake, so a charter flag must be fairly sure before it counts.
    flag_min_confidence: float = 0.5
    evidence_limit: int = 10


class Action(StrEnum):
    """What one scored comment did."""

    opened = "opened"  # opened a new incident
    attached = "attached"  # joined the thread's open incident as evidence
    escalated = "escalated"  # joined it and pushed it to a person
    counted = "counted"  # counted in the thread's open incident, not evidence of a problem
    duplicate = "duplicate"  # already attached to an incident: nothing changes
    ignored = "ignored"  # nothing to do


@dataclass(frozen=True)
class Attachment:
    """A comment attached to an incident (evidence, or only counted)."""

    incident_id: str
    comment_id: str
    community_id: str
    thread_id: str
    external_id: str
    label: str
    score: float
    flags: tuple[str, ...]
    is_evidence: bool
    created_at: datetime
    message_id: str

    def evidence(self) -> Evidence:
        return Evidence(
            comment_id=self.comment_id, external_id=self.external_id, label=self.label, score=self.score,
            flags=list(self.flags), created_at=self.created_at,
        )


@dataclass(frozen=True)
class Incident:
    id: str
    community_id: str
    thread_id: str
    level: IncidentLevel
    reason: str
    state: IncidentState
    opened_at: datetime
    updated_at: datetime
    cascade_threshold: int
    ack_deadline_s: float
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    comment_count: int = 0
    negative_count: int = 0
    recommended_actions: tuple[str, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    place: str | None = None
    escalated_at: datetime | None = None
    ack_deadline: datetime | None = None
    seq: int = 0

    @property
    def in_progress(self) -> bool:
        return self.state in IN_PROGRESS

    def snapshot(self) -> IncidentSnapshot:
        return IncidentSnapshot(
            id=self.id, community_id=self.community_id, thread_id=self.thread_id, level=self.level,
            reason=self.reason, state=self.state, opened_at=self.opened_at, updated_at=self.updated_at,
            acknowledged_at=self.acknowledged_at, resolved_at=self.resolved_at,
            comment_count=self.comment_count, negative_count=self.negative_count,
            recommended_actions=list(self.recommended_actions), evidence=list(self.evidence),
        )


@dataclass(frozen=True)
class Step:
    """One timeline entry; each publishes one lifecycle message carrying the incident as it stood then."""

    seq: int
    at: datetime
    event: IncidentEventType
    actor: str
    detail: str
    incident: Incident


@dataclass(frozen=True)
class Decision:
    """What to do with one scored comment, and why."""

    comment_id: str
    message_id: str
    action: Action
    reason: str
    incident: Incident | None = None
    attachment: Attachment | None = None
    steps: tuple[Step, ...] = ()
    escalation: EscalationMessage | None = None


@dataclass(frozen=True)
class Refusal:
    """A lifecycle transition that is not allowed from the incident's state."""

    reason: str


@dataclass
class Book:
    """What the batch knows: open incidents per thread and which comments are attached to which incident."""

    open_by_thread: dict[ThreadKey, Incident] = field(default_factory=dict)
    attached: dict[CommentKey, str] = field(default_factory=dict)


def fmt(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def incident_id_for(community_id: str, thread_id: str, opening_comment_id: str) -> str:
    """Deterministic: the same opening comment always names the same incident, so a replay cannot fork it."""
    return derived_id("incident", community_id, thread_id, opening_comment_id)


def charter_flags(msg: ScoredCommentMessage, policy: Policy) -> tuple[str, ...]:
    return tuple(sorted({f.kind for f in msg.flags if f.confidence >= policy.flag_min_confidence}))


def private_reply_deadline(created_at: datetime, policy: Policy) -> datetime:
    return created_at + policy.private_reply_window


def recommend(incident: Incident, policy: Policy, now: datetime) -> tuple[str, ...]:
    """The article's playbook: page if escalated, then per comment reply and message, or hide."""
    out: list[str] = []
    if LEVEL_RANK[incident.level] >= LEVEL_RANK[IncidentLevel.human] and incident.ack_deadline is not None:
        out.append(
            f"Page the on-call community manager about thread {incident.thread_id} "
            f"({incident.negative_count} negative comments); acknowledge before {fmt(incident.ack_deadline)}"
        )
    window_days = policy.private_reply_window.days
    for ev in incident.evidence:
        if ev.flags:
            out.append(
                f"Hide comment {ev.external_id}: it breaks the charter ({', '.join(ev.flags)}); "
                "say publicly why it was hidden"
            )
            continue
        out.append(f"Reply publicly to comment {ev.external_id}; do not delete it")
        deadline = private_reply_deadline(ev.created_at, policy)
        if deadline > now:
            out.append(
                f"Send the author of comment {ev.external_id} one private message before {fmt(deadline)} "
                f"(Meta allows one private reply per comment, within {window_days} days)"
            )
        else:
            out.append(
                f"The private-reply window for comment {ev.external_id} closed at {fmt(deadline)}: "
                "reply publicly"
            )
    if any(ev.flags for ev in incident.evidence):
        out.append(
            f"Answer thread {incident.thread_id} publicly: hiding a comment does not close the conversation"
        )
    return tuple(out)


def _attachment(
    msg: ScoredCommentMessage, incident_id: str, flags: tuple[str, ...], is_evidence: bool
) -> Attachment:
    c = msg.comment
    return Attachment(
        incident_id=incident_id, comment_id=c.comment_id, community_id=c.community_id, thread_id=c.thread_id,
        external_id=c.external_id, label=msg.sentiment.label.value, score=msg.sentiment.score, flags=flags,
        is_evidence=is_evidence, created_at=c.created_at, message_id=msg.message_id,
    )


def _step(incident: Incident, event: IncidentEventType, detail: str, now: datetime,
          actor: str = SYSTEM_ACTOR) -> tuple[Incident, Step]:
    advanced = replace(incident, seq=incident.seq + 1, updated_at=now)
    return advanced, Step(advanced.seq, now, event, actor, detail, advanced)


def _opening_reason(msg: ScoredCommentMessage, flags: tuple[str, ...], policy: Policy, now: datetime) -> str:
    ext = msg.comment.external_id
    if flags:
        return (
            f"comment {ext} breaks the charter ({', '.join(flags)}): hide it and say why; "
            "the thread still gets an answer"
        )
    deadline = private_reply_deadline(msg.comment.created_at, policy)
    base = (
        f"negative comment {ext} (score {msg.sentiment.score:+.2f}) deserves an answer: "
        "reply publicly without deleting it"
    )
    if deadline > now:
        return (
            f"{base}, and message its author privately before {fmt(deadline)} "
            f"(Meta's {policy.private_reply_window.days}-day private-reply window)"
        )
    return f"{base}; the private-reply window closed at {fmt(deadline)}"


def _maybe_escalate(incident: Incident, now: datetime) -> tuple[Incident, Step | None, str | None]:
    """Escalate to a person when the thread's negatives reach the threshold frozen into the incident."""
    if incident.negative_count < incident.cascade_threshold:
        return incident, None, None
    if LEVEL_RANK[incident.level] >= LEVEL_RANK[IncidentLevel.human]:
        return incident, None, None
    if incident.state is not IncidentState.open:
        # A person already acknowledged it: paging someone else would only add noise.
        return incident, None, (
            f"{incident.negative_count} negative comments reached the cascade threshold of "
            f"{incident.cascade_threshold}, but a person already acknowledged the incident: no page"
        )
    ack_deadline = now + timedelta(seconds=incident.ack_deadline_s)
    reason = (
        f"{incident.negative_count} negative comments in thread {incident.thread_id} reached the cascade "
        f"threshold of {incident.cascade_threshold}: page the on-call community manager, acknowledge before "
        f"{fmt(ack_deadline)}"
    )
    raised = replace(
        incident, level=IncidentLevel.human, reason=reason, escalated_at=now, ack_deadline=ack_deadline
    )
    advanced, step = _step(raised, IncidentEventType.escalated, reason, now)
    return advanced, step, None


def decide(
    msg: ScoredCommentMessage,
    incident: Incident | None,
    attached_to: str | None,
    policy: Policy,
    now: datetime,
) -> Decision:
    """Decide one scored comment against its thread's open incident (if any), with a reason."""
    c = msg.comment
    ids = (c.comment_id, msg.message_id)
    if attached_to is not None:
        return Decision(*ids, Action.duplicate, f"comment already attached to incident {attached_to}")
    if c.action is CommentAction.removed:
        return Decision(*ids, Action.ignored, "removed at its source: nothing to answer or hide")
    flags = charter_flags(msg, policy)
    is_negative = msg.sentiment.label is SentimentLabel.negative
    # Only negatives the scorer is sure enough of count toward a cascade; the others are only counted.
    sure_negative = is_negative and msg.sentiment.confidence >= policy.min_confidence
    is_evidence = bool(flags) or sure_negative
    if incident is None:
        if is_evidence:
            return _open(msg, flags, sure_negative, policy, now)
        if is_negative:
            why = (
                f"negative but confidence {msg.sentiment.confidence:.2f} is below "
                f"{policy.min_confidence:.2f}: not enough to open an incident"
            )
        else:
            why = f"{msg.sentiment.label.value} comment and no open incident in the thread: nothing to do"
        return Decision(*ids, Action.ignored, why)

    att = _attachment(msg, incident.id, flags, is_evidence)
    grown = replace(
        incident, comment_count=incident.comment_count + 1,
        negative_count=incident.negative_count + (1 if sure_negative else 0),
        place=incident.place or c.place, updated_at=now,
    )
    if not is_evidence:
        # Counted so the incident shows how busy the thread is, without a lifecycle message per reply.
        why = f"{msg.sentiment.label.value} comment counted in incident {incident.id}"
        return Decision(*ids, Action.counted, why, incident=grown, attachment=att)
    grown = replace(grown, evidence=(*grown.evidence, att.evidence())[-policy.evidence_limit :])
    detail = (
        f"comment {c.external_id} joins the incident: {grown.negative_count} negative of "
        f"{grown.comment_count} comments (cascade at {grown.cascade_threshold})"
    )
    if flags and LEVEL_RANK[grown.level] < LEVEL_RANK[IncidentLevel.moderate]:
        detail = _opening_reason(msg, flags, policy, now)
        grown = replace(grown, level=IncidentLevel.moderate, reason=detail)
    grown, escalated, note = _maybe_escalate(grown, now)
    grown = replace(grown, recommended_actions=recommend(grown, policy, now))
    if escalated is not None:
        return Decision(
            *ids, Action.escalated, escalated.detail, incident=grown, attachment=att,
            steps=(replace(escalated, incident=grown),), escalation=escalation_message(grown, now),
        )
    if note:
        detail = f"{detail}; {note}"
    grown, updated = _step(grown, IncidentEventType.updated, detail, now)
    return Decision(*ids, Action.attached, detail, incident=grown, attachment=att, steps=(updated,))


def _open(
    msg: ScoredCommentMessage, flags: tuple[str, ...], is_negative: bool, policy: Policy, now: datetime
) -> Decision:
    """A new incident for the thread, at respond (negative) or moderate (charter violation)."""
    c = msg.comment
    iid = incident_id_for(c.community_id, c.thread_id, c.comment_id)
    reason = _opening_reason(msg, flags, policy, now)
    att = _attachment(msg, iid, flags, True)
    fresh = Incident(
        id=iid, community_id=c.community_id, thread_id=c.thread_id,
        level=IncidentLevel.moderate if flags else IncidentLevel.respond, reason=reason,
        state=IncidentState.open, opened_at=now, updated_at=now,
        cascade_threshold=policy.cascade_threshold, ack_deadline_s=policy.ack_deadline.total_seconds(),
        comment_count=1, negative_count=1 if is_negative else 0, evidence=(att.evidence(),), place=c.place,
    )
    fresh = replace(fresh, recommended_actions=recommend(fresh, policy, now))
    fresh, opened = _step(fresh, IncidentEventType.opened, reason, now)
    # A threshold of one pages on the first negative comment.
    fresh, escalated, _ = _maybe_escalate(fresh, now)
    if escalated is None:
        return Decision(c.comment_id, msg.message_id, Action.opened, reason, fresh, att, (opened,))
    fresh = replace(fresh, recommended_actions=recommend(fresh, policy, now))
    return Decision(
        c.comment_id, msg.message_id, Action.escalated, escalated.detail, fresh, att,
        (opened, replace(escalated, incident=fresh)), escalation_message(fresh, now),
    )


def decide_batch(
    messages: Iterable[ScoredCommentMessage],
    book: Book,
    policy: Policy,
    now: datetime,
) -> list[Decision]:
    """Decide a batch in order, each comment seeing what the earlier ones did (updates the book in place)."""
    out: list[Decision] = []
    for msg in messages:
        c = msg.comment
        thread: ThreadKey = (c.community_id, c.thread_id)
        attached_to = book.attached.get((c.community_id, c.comment_id))
        d = decide(msg, book.open_by_thread.get(thread), attached_to, policy, now)
        if d.incident is not None:
            if d.incident.in_progress:
                book.open_by_thread[thread] = d.incident
            else:
                book.open_by_thread.pop(thread, None)
        if d.attachment is not None:
            book.attached[(c.community_id, c.comment_id)] = d.attachment.incident_id
        out.append(d)
    return out


def transition(
    incident: Incident, event: IncidentEventType, actor: str, note: str | None, now: datetime
) -> Step | Refusal:
    """A person acknowledges or resolves an incident; anything else from its state is refused with why."""
    if event is IncidentEventType.acknowledged:
        if incident.state is not IncidentState.open:
            acked = incident.state is IncidentState.acknowledged
            since = incident.acknowledged_at if acked else incident.resolved_at
            when = f" since {fmt(since)}" if since else ""
            return Refusal(
                f"incident is already {incident.state.value}{when}: only an open incident can be acknowledged"
            )
        changed = replace(incident, state=IncidentState.acknowledged, acknowledged_at=now)
    elif event is IncidentEventType.resolved:
        if incident.state is IncidentState.resolved:
            when = f" since {fmt(incident.resolved_at)}" if incident.resolved_at else ""
            return Refusal(f"incident is already resolved{when}")
        changed = replace(incident, state=IncidentState.resolved, resolved_at=now)
    else:
        raise ValueError(f"{event.value} is not a transition a person makes")
    detail = f"{event.value} by {actor}" + (f": {note}" if note else "")
    _, step = _step(changed, event, detail, now, actor)
    return step


def incident_message(step: Step) -> IncidentMessage:
    """The lifecycle message of one timeline step; a stable id makes a relayed duplicate recognisable."""
    inc = step.incident
    return IncidentMessage(
        message_id=derived_id("terrain.incidents.v1", inc.id, str(step.seq)),
        occurred_at=step.at,
        producer=PRODUCER,
        event=step.event,
        incident=inc.snapshot(),
        actor=step.actor if step.event in HUMAN_EVENTS else None,
    )


def escalation_message(incident: Incident, now: datetime) -> EscalationMessage:
    """The request to page a person; one per incident and target, whatever the number of replays."""
    escalation_id = derived_id("escalation", incident.id, EscalationTarget.human.value)
    return EscalationMessage(
        message_id=derived_id("terrain.escalations.v1", escalation_id),
        occurred_at=now,
        producer=PRODUCER,
        escalation_id=escalation_id,
        incident_id=incident.id,
        community_id=incident.community_id,
        thread_id=incident.thread_id,
        target=EscalationTarget.human,
        level=incident.level,
        reason=incident.reason,
        place=incident.place,
        ack_deadline=incident.ack_deadline,
        evidence=list(incident.evidence),
    )


def policy_snapshot(policy: Policy) -> Mapping[str, float]:
    """The policy as plain numbers, for logs at start-up."""
    return {
        "cascade_threshold": policy.cascade_threshold,
        "ack_deadline_s": policy.ack_deadline.total_seconds(),
        "private_reply_window_s": policy.private_reply_window.total_seconds(),
        "min_confidence": policy.min_confidence,
        "flag_min_confidence": policy.flag_min_confidence,
        "evidence_limit": policy.evidence_limit,
    }
