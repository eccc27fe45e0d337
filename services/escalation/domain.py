"""Pure escalation logic: detect, group, mute, escalate by policy, fire timers. No I/O, no clock reads.

Stages, each a function of its input, the loaded state (`Book`) and `now`:
- detect: respond (a sure negative), moderate (a charter flag), cascade (negatives piling up in one
  thread within a sliding window of event time, above the community's usual share), spike (the
  community's negatives in a time bucket against its own robust baseline), field (a crisis that
  persists, grows after an acknowledgement, or concerns a place);
- group: one incident per (community, thread), one per community for a spike; a resolved incident
  that flares up again within the reopen window is reopened;
- mute: silences and inhibition rules stop notifications, never the record;
- policy: ordered steps frozen into the incident; each step's deadline is a timer fenced by
  `step_fence`, so an acknowledgement or a later step makes an older timer a no-op.
Event time comes from the comments; `now` (the injected clock) decides only the horizon (older
comments are recorded and counted but page nobody) and deadlines.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from services.escalation import render
from services.escalation.policy import CommunityPolicy, InhibitRule, PolicyFile
from terrain.contracts import (
    CommentAction,
    EscalationMessage,
    EscalationTarget,
    Evidence,
    IncidentEventType,
    IncidentKind,
    IncidentLevel,
    IncidentMessage,
    IncidentSnapshot,
    IncidentState,
    RecommendedAction,
    ScoredCommentMessage,
    SentimentLabel,
)
from terrain.contracts.base import derived_id, utc_text

PRODUCER = "terrain-escalation"
SYSTEM_ACTOR = "terrain-escalation"
SPIKE_THREAD = "*"

LEVEL_RANK = {
    IncidentLevel.respond: 0, IncidentLevel.moderate: 1, IncidentLevel.human: 2, IncidentLevel.field: 3,
}
IN_PROGRESS = frozenset({IncidentState.open, IncidentState.acknowledged})
HUMAN_EVENTS = frozenset({IncidentEventType.acknowledged, IncidentEventType.resolved})
_EPOCH = datetime(2000, 1, 3, tzinfo=UTC)  # a Monday: buckets of a day or a week start on it

ThreadKey = tuple[str, str]  # (community_id, thread_id)
CommentKey = tuple[str, str]  # (community_id, comment_id)


class Action(StrEnum):
    """What one scored comment did."""

    opened = "opened"  # opened a new incident
    reopened = "reopened"  # flared up a recently resolved incident again
    attached = "attached"  # joined the thread's open incident as evidence
    escalated = "escalated"  # joined it and pushed it to a person or the field
    counted = "counted"  # counted in the thread's open incident, not evidence of a problem
    recorded = "recorded"  # older than the horizon: counted in the baseline, pages nobody
    duplicate = "duplicate"  # already attached to an incident: nothing changes
    ignored = "ignored"  # nothing to do


class TimerKind(StrEnum):
    step = "step"  # the acknowledgement deadline of the running escalation step
    persist = "persist"  # a human-level incident still unresolved: field visit


@dataclass(frozen=True)
class Seen:
    """What escalation keeps of every comment: the state its windows and baselines are computed from."""

    community_id: str
    comment_id: str
    thread_id: str
    author_key: str | None
    created_at: datetime
    sure_negative: bool
    score: float
    removed: bool = False


@dataclass(frozen=True)
class Bucket:
    comments: int = 0
    negatives: int = 0
    score_sum: float = 0.0

    def plus(self, other: Bucket) -> Bucket:
        return Bucket(
            self.comments + other.comments, self.negatives + other.negatives, self.score_sum + other.score_sum
        )


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
    policy: CommunityPolicy
    language: str
    kind: IncidentKind = IncidentKind.thread
    source: str | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    comment_count: int = 0
    negative_count: int = 0
    negatives_since_ack: int = 0
    actions: tuple[RecommendedAction, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    place: str | None = None
    escalated_at: datetime | None = None
    ack_deadline: datetime | None = None
    step: int = 0  # the policy step paging now (1-based); 0: nobody is being paged
    step_fence: int = 0  # bumped by every change of who is paged; a timer from an older fence is stale
    paged_step: int = 0  # the last step whose page was really sent (not muted)
    field_requested_at: datetime | None = None
    reopened: int = 0
    seq: int = 0

    @property
    def in_progress(self) -> bool:
        return self.state in IN_PROGRESS

    def labels(self) -> dict[str, str]:
        """What silences and inhibition rules match on."""
        return {
            "community_id": self.community_id, "thread_id": self.thread_id, "level": self.level.value,
            "kind": self.kind.value, "state": self.state.value,
        }

    def snapshot(self) -> IncidentSnapshot:
        return IncidentSnapshot(
            id=self.id, community_id=self.community_id, thread_id=self.thread_id, level=self.level,
            reason=self.reason, state=self.state, opened_at=self.opened_at, updated_at=self.updated_at,
            acknowledged_at=self.acknowledged_at, resolved_at=self.resolved_at,
            comment_count=self.comment_count, negative_count=self.negative_count,
            recommended_actions=render.actions(list(self.actions), self.language), evidence=list(self.evidence),
            kind=self.kind, actions=list(self.actions), language=self.language, place=self.place,
            ack_deadline=self.ack_deadline,
        )


@dataclass(frozen=True)
class Step:
    """One timeline entry; `publish` names the lifecycle message it sends (None: timeline only)."""

    seq: int
    at: datetime
    event: str
    publish: IncidentEventType | None
    actor: str
    detail: str
    incident: Incident


@dataclass(frozen=True)
class Timer:
    incident_id: str
    kind: TimerKind
    due_at: datetime
    fence: int


@dataclass(frozen=True)
class Notice:
    """A notification to send (the notifier module delivers it, once, from its log)."""

    id: str
    incident_id: str
    channel: str
    kind: str
    target: str
    subject: str
    text: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    expired_at: datetime | None = None
    created_at: datetime | None = None  # when it was stored (lists page by it)

    def active(self, now: datetime) -> bool:
        return self.expired_at is None and self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.matchers.items())


@dataclass(frozen=True)
class Decision:
    """What one scored comment did, and why."""

    comment_id: str
    message_id: str
    action: Action
    reason: str
    incident_id: str | None = None


@dataclass
class Book:
    """The state a batch is decided against, loaded for the batch's threads and communities."""

    open_by_thread: dict[ThreadKey, Incident] = field(default_factory=dict)
    # The latest resolved incident of a thread, when it was resolved inside the reopen window.
    resolved_by_thread: dict[ThreadKey, Incident] = field(default_factory=dict)
    attached: dict[CommentKey, str] = field(default_factory=dict)
    # Recent comments per thread (at least one cascade window before the batch's oldest comment).
    thread_comments: dict[ThreadKey, dict[str, Seen]] = field(default_factory=dict)
    # Earlier sure negatives per (community, author), by comment id.
    author_negatives: dict[tuple[str, str], dict[str, datetime]] = field(default_factory=dict)
    buckets: dict[str, dict[datetime, Bucket]] = field(default_factory=dict)
    first_seen: dict[str, datetime] = field(default_factory=dict)
    silences: list[Silence] = field(default_factory=list)
    # Other open incidents of the batch's communities that may inhibit (field level, spikes), by id.
    others: dict[str, Incident] = field(default_factory=dict)
    # Each community's in-progress incidents (built when first asked for, dropped when one of them is saved),
    # and the keys of open_by_thread by community, kept in step with it while a batch is decided.
    communities: dict[str, list[Incident]] = field(default_factory=dict, repr=False)
    threads_of: dict[str, dict[ThreadKey, None]] | None = field(default=None, repr=False)


@dataclass
class Effects:
    """What a batch, a timer or an operator changed: the handler stores and publishes exactly this."""

    incidents: dict[str, Incident] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    escalations: list[EscalationMessage] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    seen: dict[CommentKey, Seen] = field(default_factory=dict)
    bucket_deltas: dict[tuple[str, datetime], Bucket] = field(default_factory=dict)
    first_seen: dict[str, datetime] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)


@dataclass(frozen=True)
class Refusal:
    """A lifecycle transition that is not allowed from the incident's state."""

    reason: str


@dataclass(frozen=True)
class Unchanged:
    """A lifecycle command whose effect is already in place (acknowledge an acknowledged incident, resolve a
    resolved one): a repeat, answered with the incident as it is, not an error."""

    incident: Incident


# ---------------------------------------------------------------------------------------------- helpers


_FIELDS: dict[type, frozenset[str]] = {}
_R = TypeVar("_R")


def evolve(record: _R, **changes: Any) -> _R:
    """`dataclasses.replace` for the engine's frozen records at a tenth of its cost: the fields are copied
    rather than passed through `__init__` again. The records have no `__post_init__` and no slots."""
    kind = type(record)
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = frozenset(f.name for f in fields(kind))  # type: ignore[arg-type]
    if not names.issuperset(changes):
        raise TypeError(f"{kind.__name__} has no field {sorted(set(changes) - names)}")
    new = object.__new__(kind)
    attrs = new.__dict__
    attrs.update(record.__dict__)
    attrs.update(changes)
    return new


def bucket_start(at: datetime, size: timedelta) -> datetime:
    n = (at - _EPOCH) // size
    return _EPOCH + n * size


def incident_id_for(community_id: str, thread_id: str, opening_comment_id: str) -> str:
    """Deterministic: the same opening comment always names the same incident, so a replay cannot fork it."""
    return derived_id("incident", community_id, thread_id, opening_comment_id)


def spike_incident_id(community_id: str, bucket: datetime) -> str:
    return derived_id("incident", community_id, SPIKE_THREAD, bucket.isoformat())


def charter_flags(msg: ScoredCommentMessage, policy: CommunityPolicy) -> tuple[str, ...]:
    floor = policy.moderate.flag_min_confidence
    return tuple(sorted({f.kind for f in msg.flags if f.confidence >= floor}))


def author_key(msg: ScoredCommentMessage) -> str | None:
    """A pseudonymous key for the author within the community: history without keeping who it is."""
    c = msg.comment
    return _author_key(c.community_id, c.source.lower(), c.author_id) if c.author_id else None


@functools.lru_cache(maxsize=65_536)
def _author_key(community_id: str, source: str, author_id: str) -> str:
    # A hash per call, twice per comment (loading the batch's state, then deciding), and authors repeat.
    return derived_id("author", community_id, source, author_id)


def reach(msg: ScoredCommentMessage) -> int:
    m = msg.comment.metrics
    return m.likes + m.replies + m.shares


def sure_negative(msg: ScoredCommentMessage, policy: CommunityPolicy, earlier_negatives: int) -> tuple[bool, str]:
    """Is this a negative the scorer is sure enough of to count, and why (floor, reach or a regular)."""
    s = msg.sentiment
    if s.label is not SentimentLabel.negative:
        return False, s.label.value
    r = policy.respond
    if s.confidence >= r.min_confidence:
        return True, f"confidence {s.confidence:.2f} >= {r.min_confidence:.2f}"
    if reach(msg) >= r.reach_threshold and s.confidence >= r.reach_min_confidence:
        return True, f"reach {reach(msg)} with confidence {s.confidence:.2f}"
    if earlier_negatives >= r.regular_negatives and s.confidence >= r.regular_min_confidence:
        return True, f"a regular complainer ({earlier_negatives} earlier negatives)"
    return False, f"negative but confidence {s.confidence:.2f} is below {r.min_confidence:.2f}"


def may_be_sure(msg: ScoredCommentMessage, policy: CommunityPolicy) -> bool:
    """Whether `sure_negative` could say yes for this comment, whatever the author's history: False means it
    never will, so nothing the comment does needs its thread's window (only sure negatives cascade). Asked
    with the most favourable history: a regular complainer's count of earlier negatives for a comment with
    an author (the engine counts none without one)."""
    earlier = policy.respond.regular_negatives if msg.comment.author_id else 0
    return sure_negative(msg, policy, earlier)[0]


def _lang(policy: CommunityPolicy, msg: ScoredCommentMessage | None) -> str:
    if policy.language:
        return policy.language
    if msg is not None:
        return render.language(msg.comment.lang or msg.sentiment.lang)
    return "en"


def comment_actions(
    ev: Evidence, thread_id: str, source: str | None, policy: CommunityPolicy, now: datetime
) -> list[RecommendedAction]:
    """The article's playbook for one comment: hide only a charter breach; otherwise reply, never delete,
    and message the author privately where the platform allows it and its window is still open."""
    if ev.flags:
        return [
            RecommendedAction(code="hide", comment_id=ev.comment_id, external_id=ev.external_id,
                              params={"flags": ", ".join(ev.flags)}),
            RecommendedAction(code="answer_thread", params={"thread_id": thread_id}),
        ]
    out = [RecommendedAction(code="reply_public", comment_id=ev.comment_id, external_id=ev.external_id)]
    if source and source.lower() in policy.private_reply_platforms:
        deadline = ev.created_at + policy.private_reply_window
        if deadline > now:
            out.append(
                RecommendedAction(
                    code="message_private", comment_id=ev.comment_id, external_id=ev.external_id,
                    deadline=deadline, params={"window_days": str(policy.private_reply_window.days)},
                )
            )
    return out


def recommend(incident: Incident, now: datetime, recipients: Sequence[str] = ()) -> tuple[RecommendedAction, ...]:
    out: list[RecommendedAction] = []
    if incident.step and incident.ack_deadline is not None and incident.state is IncidentState.open:
        out.append(
            RecommendedAction(
                code="page", deadline=incident.ack_deadline,
                params={"step": str(incident.step), "recipients": ", ".join(recipients) or "on-call"},
            )
        )
    if incident.field_requested_at is not None:
        out.append(RecommendedAction(code="field_visit", params={"place": incident.place or ""}))
    seen: set[tuple[str, str | None, str]] = set()
    for ev in incident.evidence:
        for a in _comment_actions(ev, incident.thread_id, incident.source, incident.policy, now):
            key = (a.code, a.comment_id, a.params.get("thread_id", ""))
            if key not in seen:
                seen.add(key)
                out.append(a)
    return tuple(out)


# An incident's actions are recomputed with each new piece of evidence, for every piece it keeps: the
# actions of one piece are kept here, keyed by everything they depend on (the policy by identity, checked).
_ACTIONS_OF: dict[tuple[Any, ...], tuple[CommunityPolicy, list[RecommendedAction]]] = {}
_ACTIONS_OF_MAX = 20_000


def _comment_actions(
    ev: Evidence, thread_id: str, source: str | None, policy: CommunityPolicy, now: datetime
) -> list[RecommendedAction]:
    window_open = ev.created_at + policy.private_reply_window > now
    key = (ev.comment_id, ev.external_id, tuple(ev.flags), ev.created_at, thread_id, source, id(policy), window_open)
    hit = _ACTIONS_OF.get(key)
    if hit is not None and hit[0] is policy:
        return hit[1]
    found = comment_actions(ev, thread_id, source, policy, now)
    if len(_ACTIONS_OF) >= _ACTIONS_OF_MAX:
        _ACTIONS_OF.clear()
    _ACTIONS_OF[key] = (policy, found)
    return found


def may_cascade(incident: Incident | None) -> bool:
    """Whether a sure negative in the thread of `incident` (None: nothing in progress there) may still take it
    to a person by a cascade: not acknowledged, nobody paged yet, below the human level."""
    return incident is None or (
        incident.state is not IncidentState.acknowledged and not incident.step
        and LEVEL_RANK[incident.level] < LEVEL_RANK[IncidentLevel.human]
    )


def _step(inc: Incident, event: str, publish: IncidentEventType | None, detail: str, now: datetime,
          actor: str = SYSTEM_ACTOR) -> tuple[Incident, Step]:
    advanced = evolve(inc, seq=inc.seq + 1, updated_at=now)
    return advanced, Step(advanced.seq, now, event, publish, actor, detail, advanced)


def _percent(x: float) -> str:
    return f"{x:.0%}"


# ---------------------------------------------------------------------------------------------- mute


def inhibited_by(
    target: Incident, others: Iterable[Incident], rules: Sequence[InhibitRule]
) -> Incident | None:
    """The open incident whose presence inhibits `target`'s notifications, if any."""
    labels = target.labels()
    for rule in rules:
        if not all(labels.get(k) == v for k, v in rule.target.items()):
            continue
        for other in others:
            if other.id == target.id or not other.in_progress:
                continue
            ol = other.labels()
            if all(ol.get(k) == v for k, v in rule.source.items()) and all(
                ol.get(e) == labels.get(e) for e in rule.equal
            ):
                return other
    return None


def muted(
    incident: Incident, book: Book, rules: Sequence[InhibitRule], now: datetime,
    community_incidents: Iterable[Incident],
) -> str | None:
    """Why notifications about this incident are muted right now (None: not muted)."""
    labels = incident.labels()
    for s in book.silences:
        if s.active(now) and s.matches(labels):
            return f"silenced by {s.id} until {utc_text(s.ends_at)} ({s.created_by}: {s.comment})"
    source = inhibited_by(incident, community_incidents, rules)
    if source is not None:
        return f"inhibited by incident {source.id} ({source.level.value}, {source.kind.value})"
    return None


# ---------------------------------------------------------------------------------------------- engine


class Engine:
    """Decides batches, timers and operator transitions against a policy file; pure given its inputs."""

    def __init__(self, policies: PolicyFile) -> None:
        self.policies = policies

    # -- recipients and notices

    def recipients(self, refs: Sequence[str], now: datetime) -> list[tuple[str, str, str, str]]:
        """(display name, channel name, kind, target) for each contact the references resolve to."""
        out: list[tuple[str, str, str, str]] = []
        for ref in refs:
            kind, _, name = ref.partition(":")
            people: list[str] = []
            if kind == "channel":
                ch = self.policies.channels.get(name)
                if ch is not None:
                    out.append((name, name, ch.kind, ch.target))
                continue
            if kind == "rota":
                rota = self.policies.rotas.get(name)
                if rota is not None:
                    people = [rota.on_call(now)]
            elif kind == "person":
                people = [name]
            for person in people:
                p = self.policies.people.get(person)
                if p is None:
                    continue
                if p.email:
                    out.append((person, f"person:{person}", "email", p.email))
                if p.webhook:
                    out.append((person, f"person:{person}", "webhook", p.webhook))
        return out

    def notices(self, inc: Incident, escalation_id: str, refs: Sequence[str], headline: str,
                now: datetime) -> tuple[list[Notice], list[str]]:
        contacts = self.recipients(refs, now)
        names = list(dict.fromkeys(c[0] for c in contacts)) or [r.partition(":")[2] for r in refs]
        lang = inc.language
        subject = render.subject(f"[Terrain] {inc.level.value} · {inc.community_id}/{inc.thread_id}: {headline}")
        lines = [inc.reason, ""] + [f"- {t}" for t in render.actions(list(inc.actions), lang)]
        lines += ["", f"incident {inc.id}"]
        text = "\n".join(lines)
        payload = {
            "incident_id": inc.id, "escalation_id": escalation_id, "community_id": inc.community_id,
            "thread_id": inc.thread_id, "level": inc.level.value, "state": inc.state.value,
            "reason": inc.reason, "ack_deadline": utc_text(inc.ack_deadline) if inc.ack_deadline else None,
            "actions": [a.model_dump(mode="json") for a in inc.actions],
        }
        out = [
            Notice(
                id=derived_id("notification", escalation_id, channel, kind, target), incident_id=inc.id,
                channel=channel, kind=kind, target=target, subject=subject, text=text, payload=payload,
            )
            for _, channel, kind, target in contacts
        ]
        return out, names

    # -- paging

    def _page(self, inc: Incident, step_no: int, trigger: str, detail: str, now: datetime, book: Book,
              fx: Effects, community: Iterable[Incident], wait: timedelta | None = None) -> Incident:
        """Run policy step `step_no` (1-based): notify its recipients, set its deadline and its timer."""
        rule = inc.policy.steps[step_no - 1]
        deadline = now + (wait or rule.wait)
        inc = evolve(
            inc, level=max(inc.level, IncidentLevel.human, key=LEVEL_RANK.__getitem__), step=step_no,
            step_fence=inc.step_fence + 1, ack_deadline=deadline, escalated_at=inc.escalated_at or now,
        )
        names = [r.partition(":")[2] for r in rule.notify]
        inc = evolve(inc, actions=recommend(inc, now, names))
        inc, step = _step(inc, "escalated", IncidentEventType.escalated, detail, now)
        escalation_id = derived_id("escalation", inc.id, str(inc.seq))
        notices, names = self.notices(inc, escalation_id, rule.notify, detail, now)
        inc = evolve(inc, actions=recommend(inc, now, names))
        step = evolve(step, incident=inc)
        fx.steps.append(step)
        fx.timers.append(Timer(inc.id, TimerKind.step, deadline, inc.step_fence))
        why = muted(inc, book, self.policies.inhibit, now, community)
        if why:
            inc, note = _step(inc, "muted", None, f"page for step {step_no} not sent: {why}", now)
            fx.steps.append(note)
            return inc
        fx.escalations.append(
            self._escalation(inc, escalation_id, EscalationTarget.human, trigger, now, step=step_no, names=names)
        )
        fx.notices.extend(notices)
        return evolve(inc, paged_step=step_no)

    def _field(self, inc: Incident, trigger: str, params: Mapping[str, str], now: datetime, book: Book,
               fx: Effects, community: Iterable[Incident]) -> Incident:
        """Ask for a field visit (once per incident generation): the events service plans it."""
        if not inc.policy.field.enabled or inc.field_requested_at is not None:
            return inc
        detail = render.reason(trigger, params, inc.language)
        inc = evolve(inc, level=IncidentLevel.field, field_requested_at=now)
        inc = evolve(inc, actions=recommend(inc, now))
        inc, step = _step(inc, "escalated", IncidentEventType.escalated, detail, now)
        fx.steps.append(step)
        escalation_id = derived_id("escalation", inc.id, "field", str(inc.reopened))
        why = muted(inc, book, self.policies.inhibit, now, community)
        if why:
            inc, note = _step(inc, "muted", None, f"field request not sent: {why}", now)
            fx.steps.append(note)
            return inc
        # The field request explains itself; the incident keeps the reason of the crisis.
        fx.escalations.append(
            self._escalation(inc, escalation_id, EscalationTarget.field, trigger, now, reason=f"{detail}. {inc.reason}")
        )
        return inc

    def _escalation(self, inc: Incident, escalation_id: str, target: EscalationTarget, trigger: str,
                    now: datetime, *, step: int | None = None, names: Sequence[str] = (),
                    reason: str | None = None) -> EscalationMessage:
        return EscalationMessage(
            message_id=derived_id("terrain.escalations.v1", escalation_id), occurred_at=now, producer=PRODUCER,
            escalation_id=escalation_id, incident_id=inc.id, community_id=inc.community_id,
            thread_id=inc.thread_id, target=target, level=inc.level, reason=reason or inc.reason, place=inc.place,
            ack_deadline=inc.ack_deadline if target is EscalationTarget.human else None,
            evidence=list(inc.evidence), trigger=trigger, step=step, recipients=list(names),
            actions=list(inc.actions), language=inc.language,
        )

    def _escalate_human(self, inc: Incident, trigger: str, detail: str, now: datetime, book: Book,
                        fx: Effects, community: Iterable[Incident]) -> Incident:
        inc = evolve(inc, reason=detail)
        inc = self._page(inc, 1, trigger, detail, now, book, fx, community)
        fr = inc.policy.field
        if fr.enabled:
            fx.timers.append(Timer(inc.id, TimerKind.persist, now + fr.persist_after, inc.reopened))
            if fr.on_place and inc.place:
                inc = self._field(inc, "place", {"place": inc.place}, now, book, fx, community)
        return inc

    # -- detection

    def _cascade(self, inc: Incident, thread: Mapping[str, Seen], at: datetime, book: Book
                 ) -> dict[str, str] | None:
        """Reason params when the thread's comments make a cascade in a window containing `at`, else None.

        Windows end at `at` or at any later comment within one window length, so a reply that arrives
        after the replies written after it still completes the cascade it belongs to.
        """
        rules = inc.policy.cascade
        live = sorted(
            (s for s in thread.values() if not s.removed and at - rules.window <= s.created_at <= at + rules.window),
            key=lambda s: (s.created_at, s.comment_id),
        )
        start = 0
        for end_i, end in enumerate(live):
            if end.created_at < at:
                continue
            while live[start].created_at < end.created_at - rules.window:
                start += 1
            recent = live[start:end_i + 1]
            negatives = [s for s in recent if s.sure_negative]
            authors = {s.author_key or f"comment:{s.comment_id}" for s in negatives}
            if (len(negatives) < rules.min_negatives or len(recent) < rules.min_comments
                    or len(authors) < rules.min_authors):
                continue
            share = len(negatives) / len(recent)
            base = self.baseline_share(book, inc.community_id, end.created_at, inc.policy)
            if share < max(rules.min_share, (base or 0.0) + rules.above_baseline):
                continue
            return {
                "negatives": str(len(negatives)), "comments": str(len(recent)), "thread_id": inc.thread_id,
                "window": render.duration(rules.window.total_seconds(), inc.language),
                "baseline_share": _percent(base) if base is not None else "",
            }
        return None

    @staticmethod
    def baseline_share(book: Book, community_id: str, at: datetime, policy: CommunityPolicy) -> float | None:
        """The community's usual negative share before the cascade window ending at `at` (None: too little
        history to say). Buckets that overlap the window are left out, so a cascade is not its own baseline."""
        size = policy.spike.bucket
        until = bucket_start(at - policy.cascade.window, size)
        since = until - size * policy.spike.lookback_buckets
        total = Bucket()
        for start, b in book.buckets.get(community_id, {}).items():
            if since <= start < until:
                total = total.plus(b)
        if total.comments < policy.cascade.baseline_min_comments:
            return None
        return total.negatives / total.comments

    @staticmethod
    def spike(book: Book, community_id: str, bucket: datetime, policy: CommunityPolicy
              ) -> tuple[str, dict[str, str]] | None:
        """A spike in `bucket` against the community's robust baseline (median and MAD of earlier buckets)."""
        rules = policy.spike
        if not rules.enabled:
            return None
        first = book.first_seen.get(community_id)
        if first is None:
            return None
        size = rules.bucket
        history_start = max(bucket_start(first, size), bucket - size * rules.lookback_buckets)
        n_hist = int((bucket - history_start) / size)
        if n_hist < rules.warmup_buckets:
            return None
        buckets = book.buckets.get(community_id, {})
        hist = [buckets.get(history_start + i * size, Bucket()) for i in range(n_hist)]
        cur = buckets.get(bucket, Bucket())
        negs = [float(b.negatives) for b in hist]
        med = statistics.median(negs)
        mad = statistics.median(abs(x - med) for x in negs)
        # A floor on the spread keeps a quiet community (all zeros) from paging on its first few negatives.
        spread = max(1.4826 * mad, 1.0)
        z = (cur.negatives - med) / spread
        bucket_txt = render.duration(size.total_seconds(), policy.language or "en")
        if cur.negatives >= rules.min_negatives and z >= rules.z_threshold:
            return "spike_volume", {
                "negatives": str(cur.negatives), "usual": f"{med:g}", "z": f"{z:.1f}", "bucket": bucket_txt,
            }
        means = [b.score_sum / b.comments for b in hist if b.comments >= rules.min_comments_for_mean]
        if cur.comments >= rules.min_comments_for_mean and len(means) >= rules.warmup_buckets // 2:
            mean = cur.score_sum / cur.comments
            m_med = statistics.median(means)
            m_mad = statistics.median(abs(x - m_med) for x in means)
            m_z = (mean - m_med) / max(1.4826 * m_mad, 0.05)
            if mean < 0 and m_z <= -rules.z_threshold:
                return "spike_mean", {
                    "mean": f"{mean:+.2f}", "comments": str(cur.comments), "usual": f"{m_med:+.2f}",
                    "z": f"{m_z:.1f}", "bucket": bucket_txt,
                }
        return None

    # -- one batch

    def decide_batch(self, messages: Sequence[ScoredCommentMessage], book: Book, now: datetime) -> Effects:
        """Decide a batch in order, each comment seeing what the earlier ones did (updates `book`)."""
        fx = Effects()
        # The community index is the batch's own: a book may have been edited since the last batch.
        book.communities.clear()
        book.threads_of = None
        touched: dict[tuple[str, datetime], datetime] = {}
        for msg in messages:
            self._one(msg, author_key(msg), book, now, fx, touched)
        for (community_id, bucket), at in sorted(touched.items(), key=lambda kv: kv[1]):
            self._spike(community_id, bucket, at, book, now, fx)
        return fx

    def _community(self, book: Book, community_id: str) -> list[Incident]:
        found = book.communities.get(community_id)
        if found is None:
            if book.threads_of is None:
                book.threads_of = {}
                for key in book.open_by_thread:
                    book.threads_of.setdefault(key[0], {})[key] = None
            # In open_by_thread's order, which the index keeps.
            by_thread = book.open_by_thread
            mine = {i.id: i for i in (by_thread[k] for k in book.threads_of.get(community_id, ()))}
            others = [i for i in book.others.values() if i.community_id == community_id and i.id not in mine]
            found = book.communities[community_id] = [*mine.values(), *others]
        return found

    def _save(self, book: Book, fx: Effects, inc: Incident) -> None:
        fx.incidents[inc.id] = inc
        book.communities.pop(inc.community_id, None)
        key = (inc.community_id, inc.thread_id)
        if inc.in_progress:
            book.open_by_thread[key] = inc
            book.resolved_by_thread.pop(key, None)
            if book.threads_of is not None:
                book.threads_of.setdefault(key[0], {})[key] = None
        else:
            book.open_by_thread.pop(key, None)
            if book.threads_of is not None:
                book.threads_of.get(key[0], {}).pop(key, None)

    def _record(self, msg: ScoredCommentMessage, author: str | None, sure: bool, book: Book, fx: Effects
                ) -> None:
        c = msg.comment
        seen = Seen(c.community_id, c.comment_id, c.thread_id, author, c.created_at, sure, msg.sentiment.score,
                    removed=c.action is CommentAction.removed)
        thread = book.thread_comments.setdefault((c.community_id, c.thread_id), {})
        is_new = c.comment_id not in thread
        thread[c.comment_id] = seen
        fx.seen[(c.community_id, c.comment_id)] = seen
        if sure and author:
            book.author_negatives.setdefault((c.community_id, author), {})[c.comment_id] = c.created_at
        if not is_new or seen.removed:
            return  # an edit or a removal does not count the comment twice in the baseline
        policy = self.policies.community(c.community_id)
        b = bucket_start(c.created_at, policy.spike.bucket)
        delta = Bucket(1, 1 if sure else 0, msg.sentiment.score)
        per = book.buckets.setdefault(c.community_id, {})
        per[b] = per.get(b, Bucket()).plus(delta)
        fx.bucket_deltas[(c.community_id, b)] = fx.bucket_deltas.get((c.community_id, b), Bucket()).plus(delta)
        first = book.first_seen.get(c.community_id)
        if first is None or c.created_at < first:
            book.first_seen[c.community_id] = c.created_at
            fx.first_seen[c.community_id] = c.created_at

    def _one(self, msg: ScoredCommentMessage, author: str | None, book: Book, now: datetime, fx: Effects,
             touched: dict[tuple[str, datetime], datetime]) -> None:
        c = msg.comment
        ids = (c.comment_id, msg.message_id)
        thread_key: ThreadKey = (c.community_id, c.thread_id)
        attached_to = book.attached.get((c.community_id, c.comment_id))
        policy = self.policies.community(c.community_id)
        earlier = 0
        if author:
            cutoff = c.created_at - policy.respond.regular_lookback
            earlier = sum(
                1 for cid, at in book.author_negatives.get((c.community_id, author), {}).items()
                if cid != c.comment_id and cutoff <= at < c.created_at
            )
        sure, why_sure = sure_negative(msg, policy, earlier)
        self._record(msg, author, sure, book, fx)
        stale = now - c.created_at > policy.horizon
        if not stale and c.action is not CommentAction.removed:
            tk = (c.community_id, bucket_start(c.created_at, policy.spike.bucket))
            touched[tk] = max(c.created_at, touched.get(tk, c.created_at))
        if attached_to is not None:
            fx.decisions.append(Decision(*ids, Action.duplicate, f"already attached to incident {attached_to}",
                                         attached_to))
            return
        if c.action is CommentAction.removed:
            fx.decisions.append(Decision(*ids, Action.ignored, "removed at its source: nothing to answer or hide"))
            return
        if stale:
            fx.decisions.append(Decision(
                *ids, Action.recorded,
                f"older than the {render.duration(policy.horizon.total_seconds(), 'en')} horizon: "
                "recorded and counted, pages nobody",
            ))
            return
        flags = charter_flags(msg, policy)
        is_evidence = bool(flags) or sure
        community = self._community(book, c.community_id)
        if sure:
            self._spike_grows(c.community_id, now, book, fx, community)
        incident = book.open_by_thread.get(thread_key)
        if incident is None:
            resolved = book.resolved_by_thread.get(thread_key)
            if resolved is not None and is_evidence and resolved.resolved_at is not None and (
                now - resolved.resolved_at <= resolved.policy.reopen_window
            ):
                incident = self._reopen(resolved, msg, now, fx)
                action = Action.reopened
            elif is_evidence:
                incident = self._open(msg, flags, sure, policy, now, book, fx, community)
                self._save(book, fx, incident)
                book.attached[(c.community_id, c.comment_id)] = incident.id
                fx.decisions.append(Decision(*ids, Action.opened, incident.reason, incident.id))
                incident = self._after_evidence(incident, msg, sure, now, book, fx, community, opened=True)
                self._save(book, fx, incident)
                return
            else:
                fx.decisions.append(Decision(*ids, Action.ignored, f"{why_sure}; no open incident in the thread"))
                return
        else:
            action = Action.attached if is_evidence else Action.counted
        att = _attachment(msg, incident.id, flags, is_evidence)
        fx.attachments.append(att)
        book.attached[(c.community_id, c.comment_id)] = incident.id
        grown = evolve(
            incident, comment_count=incident.comment_count + 1,
            negative_count=incident.negative_count + (1 if sure else 0),
            place=incident.place or c.place, updated_at=now,
        )
        if not is_evidence:
            # Counted so the incident shows how busy the thread is, without a lifecycle message per reply.
            self._save(book, fx, grown)
            fx.decisions.append(Decision(*ids, action, f"{msg.sentiment.label.value} comment counted", grown.id))
            return
        grown = evolve(grown, evidence=(*grown.evidence, att.evidence())[-grown.policy.evidence_limit:])
        if flags and LEVEL_RANK[grown.level] < LEVEL_RANK[IncidentLevel.moderate]:
            grown = evolve(grown, level=IncidentLevel.moderate)
        grown = evolve(grown, actions=recommend(grown, now))
        before = len(fx.escalations)
        grown = self._after_evidence(grown, msg, sure, now, book, fx, community, opened=False)
        if len(fx.escalations) > before or grown.step > incident.step or (
            grown.field_requested_at and not incident.field_requested_at
        ):
            action = Action.escalated if action is not Action.reopened else action
            detail = grown.reason
        else:
            detail = (
                f"comment {c.external_id} joins the incident: {grown.negative_count} negative of "
                f"{grown.comment_count} comments"
            )
            grown, upd = _step(grown, "updated", IncidentEventType.updated, detail, now)
            fx.steps.append(upd)
        self._save(book, fx, grown)
        fx.decisions.append(Decision(*ids, action, detail, grown.id))

    def _after_evidence(self, inc: Incident, msg: ScoredCommentMessage, sure: bool, now: datetime, book: Book,
                        fx: Effects, community: list[Incident], *, opened: bool) -> Incident:
        """Cascade to a person, or to the field when it keeps growing after an acknowledgement."""
        c = msg.comment
        if inc.state is IncidentState.acknowledged and sure:
            inc = evolve(inc, negatives_since_ack=inc.negatives_since_ack + 1)
            if inc.negatives_since_ack >= inc.policy.field.grew_after_ack:
                return self._field(inc, "grew_after_ack", {"count": str(inc.negatives_since_ack)}, now, book, fx,
                                   community)
            return inc
        if not sure or not may_cascade(inc):
            return inc
        thread = book.thread_comments.get((c.community_id, c.thread_id), {})
        params = self._cascade(inc, thread, c.created_at, book)
        if params is None:
            return inc
        detail = render.reason("cascade", params, inc.language)
        return self._escalate_human(inc, "cascade", detail, now, book, fx, community)

    def _open(self, msg: ScoredCommentMessage, flags: tuple[str, ...], sure: bool, policy: CommunityPolicy,
              now: datetime, book: Book, fx: Effects, community: list[Incident]) -> Incident:
        c = msg.comment
        iid = incident_id_for(c.community_id, c.thread_id, c.comment_id)
        lang = _lang(policy, msg)
        att = _attachment(msg, iid, flags, True)
        fx.attachments.append(att)
        code = "moderate" if flags else "respond"
        reason = render.reason(
            code, {"external_id": c.external_id, "score": f"{msg.sentiment.score:+.2f}", "flags": ", ".join(flags)},
            lang,
        )
        inc = Incident(
            id=iid, community_id=c.community_id, thread_id=c.thread_id,
            level=IncidentLevel.moderate if flags else IncidentLevel.respond, reason=reason,
            state=IncidentState.open, opened_at=now, updated_at=now, policy=policy, language=lang,
            source=c.source, comment_count=1, negative_count=1 if sure else 0, evidence=(att.evidence(),),
            place=c.place or policy.place,
        )
        inc = evolve(inc, actions=recommend(inc, now))
        inc, opened = _step(inc, "opened", IncidentEventType.opened, reason, now)
        fx.steps.append(opened)
        route = policy.routes.get("moderate" if flags else "respond", [])
        if route and not muted(inc, book, self.policies.inhibit, now, community):
            notices, _ = self.notices(inc, derived_id("escalation", inc.id, "route"), route, reason, now)
            fx.notices.extend(notices)
        return inc

    def _reopen(self, inc: Incident, msg: ScoredCommentMessage, now: datetime, fx: Effects) -> Incident:
        c = msg.comment
        inc = evolve(
            inc, state=IncidentState.open, resolved_at=None, acknowledged_at=None, reopened=inc.reopened + 1,
            level=IncidentLevel.respond, step=0, paged_step=0, step_fence=inc.step_fence + 1, ack_deadline=None,
            negatives_since_ack=0, field_requested_at=None,
        )
        inc, step = _step(
            inc, "reopened", IncidentEventType.updated,
            f"reopened: comment {c.external_id} flared the thread up again after it was resolved", now,
        )
        fx.steps.append(step)
        return inc

    def _spike_grows(self, community_id: str, now: datetime, book: Book, fx: Effects,
                     community: list[Incident]) -> None:
        """A community-wide spike someone acknowledged that keeps drawing negatives: to the field."""
        spike = book.open_by_thread.get((community_id, SPIKE_THREAD))
        if spike is None or spike.state is not IncidentState.acknowledged or spike.field_requested_at:
            return
        grown = evolve(spike, negatives_since_ack=spike.negatives_since_ack + 1,
                        negative_count=spike.negative_count + 1, updated_at=now)
        # Community-wide, a handful of negatives is noise: the bar is the spike's own minimum.
        bar = max(grown.policy.field.grew_after_ack, grown.policy.spike.min_negatives)
        if grown.negatives_since_ack >= bar:
            grown = self._field(grown, "grew_after_ack", {"count": str(grown.negatives_since_ack)}, now, book, fx,
                                community)
        self._save(book, fx, grown)

    def _spike(self, community_id: str, bucket: datetime, at: datetime, book: Book, now: datetime,
               fx: Effects) -> None:
        policy = self.policies.community(community_id)
        found = self.spike(book, community_id, bucket, policy)
        if found is None:
            return
        code, params = found
        key = (community_id, SPIKE_THREAD)
        existing = book.open_by_thread.get(key)
        lang = policy.language or "fr"
        detail = render.reason(code, params, lang)
        community = self._community(book, community_id)
        if existing is not None:
            if existing.reason != detail:
                updated = evolve(existing, reason=detail)
                updated, step = _step(updated, "updated", IncidentEventType.updated, detail, now)
                fx.steps.append(step)
                self._save(book, fx, updated)
            return
        inc = Incident(
            id=spike_incident_id(community_id, bucket), community_id=community_id, thread_id=SPIKE_THREAD,
            level=IncidentLevel.human, reason=detail, state=IncidentState.open, opened_at=now, updated_at=now,
            policy=policy, language=lang, kind=IncidentKind.spike, place=policy.place,
            comment_count=book.buckets.get(community_id, {}).get(bucket, Bucket()).comments,
            negative_count=book.buckets.get(community_id, {}).get(bucket, Bucket()).negatives,
        )
        inc, opened = _step(inc, "opened", IncidentEventType.opened, detail, now)
        fx.steps.append(opened)
        inc = self._escalate_human(inc, "spike", detail, now, book, fx, community)
        self._save(book, fx, inc)

    # -- timers and people

    def on_timer(self, inc: Incident, timer: Timer, now: datetime, book: Book,
                 community: Iterable[Incident]) -> tuple[Effects, str]:
        """Fire a due timer; a stale one (fenced out, or its incident moved on) does nothing. Returns why."""
        fx = Effects()
        if not inc.in_progress:
            return fx, f"stale: incident is {inc.state.value}"
        if timer.kind is TimerKind.step:
            if timer.fence != inc.step_fence or inc.state is not IncidentState.open or not inc.step:
                return fx, f"stale: fence {timer.fence} is not the incident's {inc.step_fence}"
            deadline = render.when(timer.due_at, inc.language)
            if inc.paged_step < inc.step:
                # This step's page was muted: nobody has had the chance to acknowledge it, so run it again
                # (it is sent if the silence is over) rather than moving on to the next person or the field.
                detail = render.reason("repeat", {}, inc.language)
                inc = self._page(inc, inc.step, "repeat", detail, now, book, fx, community)
                why = f"step {inc.step} was muted: run again"
            elif inc.step < len(inc.policy.steps):
                detail = render.reason("ack_timeout", {"deadline": deadline}, inc.language)
                inc = self._page(inc, inc.step + 1, "ack_timeout", detail, now, book, fx, community)
                why = f"step {inc.step} paged"
            elif (inc.policy.field.enabled and inc.policy.field.after_last_step
                  and inc.field_requested_at is None):
                inc = self._field(inc, "policy_end", {}, now, book, fx, community)
                # Keep reminding the last step while nobody acknowledges.
                inc = evolve(inc, step_fence=inc.step_fence + 1)
                fx.timers.append(Timer(inc.id, TimerKind.step, now + inc.policy.repeat_interval, inc.step_fence))
                why = "policy exhausted: field visit requested"
            else:
                detail = render.reason("repeat", {}, inc.language)
                inc = self._page(inc, inc.step, "repeat", detail, now, book, fx, community,
                                 wait=inc.policy.repeat_interval)
                why = f"step {inc.step} paged again"
            fx.incidents[inc.id] = inc
            return fx, why
        if timer.fence != inc.reopened or inc.field_requested_at is not None:
            return fx, "stale: field already requested or incident reopened since"
        age = render.duration((now - (inc.escalated_at or inc.opened_at)).total_seconds(), inc.language)
        inc = self._field(inc, "persisted", {"age": age}, now, book, fx, community)
        fx.incidents[inc.id] = inc
        return fx, "field visit requested: the crisis persisted"

    def transition(self, inc: Incident, event: IncidentEventType, actor: str, note: str | None, now: datetime
                   ) -> Step | Unchanged | Refusal:
        """A person acknowledges or resolves an incident. A repeat (the incident is already in the state asked
        for) changes nothing; acknowledging a resolved incident is refused with why."""
        if event is IncidentEventType.acknowledged:
            if inc.state is IncidentState.acknowledged:
                return Unchanged(inc)
            if inc.state is IncidentState.resolved:
                when = f" since {utc_text(inc.resolved_at)}" if inc.resolved_at else ""
                return Refusal(f"incident is resolved{when}: only an open incident can be acknowledged")
            changed = evolve(inc, state=IncidentState.acknowledged, acknowledged_at=now, ack_deadline=None,
                              step_fence=inc.step_fence + 1, negatives_since_ack=0)
        elif event is IncidentEventType.resolved:
            if inc.state is IncidentState.resolved:
                return Unchanged(inc)
            changed = evolve(inc, state=IncidentState.resolved, resolved_at=now, ack_deadline=None,
                              step_fence=inc.step_fence + 1)
        else:
            raise ValueError(f"{event.value} is not a transition a person makes")
        changed = evolve(changed, actions=recommend(changed, now))
        detail = f"{event.value} by {actor}" + (f": {note}" if note else "")
        _, step = _step(changed, event.value, event, detail, now, actor)
        return step


def note_step(inc: Incident, actor: str, text: str, now: datetime) -> Step:
    """A note on the timeline; it changes nothing else and publishes nothing."""
    _, step = _step(inc, "note", None, text, now, actor)
    return evolve(step, incident=evolve(step.incident, updated_at=inc.updated_at))


def _attachment(msg: ScoredCommentMessage, incident_id: str, flags: tuple[str, ...], is_evidence: bool
                ) -> Attachment:
    c = msg.comment
    return Attachment(
        incident_id=incident_id, comment_id=c.comment_id, community_id=c.community_id, thread_id=c.thread_id,
        external_id=c.external_id, label=msg.sentiment.label.value, score=msg.sentiment.score, flags=flags,
        is_evidence=is_evidence, created_at=c.created_at, message_id=msg.message_id,
    )


def incident_message(step: Step) -> IncidentMessage:
    """The lifecycle message of one published timeline step; a stable id makes a relayed duplicate recognisable."""
    inc = step.incident
    assert step.publish is not None
    return IncidentMessage(
        message_id=derived_id("terrain.incidents.v1", inc.id, str(step.seq)),
        occurred_at=step.at,
        producer=PRODUCER,
        event=step.publish,
        incident=inc.snapshot(),
        actor=step.actor if step.publish in HUMAN_EVENTS else None,
    )


def coalesce(steps: Sequence[Step]) -> list[Step]:
    """The published steps of a batch. An incident's `updated` step followed, in this batch, by another `updated`
    of the same incident is dropped: the later snapshot holds all of it. Other steps are all kept, in order,
    whatever other incidents' steps come between (a busy batch interleaves many threads)."""
    kept: list[Step] = []
    later: dict[str, IncidentEventType] = {}
    for s in reversed(steps):
        if s.publish is None:
            continue
        if not (s.publish is IncidentEventType.updated and later.get(s.incident.id) is IncidentEventType.updated):
            kept.append(s)
        later[s.incident.id] = s.publish
    return kept[::-1]
