"""Escalation's decision tables: detect, group, mute, page by policy, fire timers, people's transitions."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.escalation import render
from services.escalation.domain import (
    Book,
    Bucket,
    Engine,
    Incident,
    Refusal,
    Silence,
    Step,
    Timer,
    TimerKind,
    Unchanged,
    bucket_start,
    coalesce,
    evolve,
    incident_message,
    inhibited_by,
    may_be_sure,
    may_cascade,
    sure_negative,
)
from services.escalation.policy import CommunityPolicy, InhibitRule, PolicyFile, parse_policy
from terrain.contracts import (
    CharterFlag,
    Comment,
    CommentAction,
    CommentMetrics,
    EscalationTarget,
    IncidentEventType,
    IncidentKind,
    IncidentLevel,
    IncidentState,
    ScoredCommentMessage,
    Sentiment,
    SentimentLabel,
    comment_id_for,
)

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
NEG, NEU, POS = SentimentLabel.negative, SentimentLabel.neutral, SentimentLabel.positive
ENGINE = Engine(PolicyFile())


def scored(
    ext: str = "c1",
    label: SentimentLabel = NEG,
    *,
    confidence: float = 0.9,
    flags: tuple[tuple[str, float], ...] = (),
    action: CommentAction = CommentAction.created,
    thread: str = "post-1",
    community: str = "resto-lyon",
    at: datetime | None = None,
    source: str = "facebook",
    author: str | None = None,
    likes: int = 0,
    place: str | None = None,
    lang: str = "fr",
    message_id: str | None = None,
) -> ScoredCommentMessage:
    score = {NEG: -0.7, NEU: 0.0, POS: 0.7}[label]
    created = at or NOW - timedelta(minutes=5)
    return ScoredCommentMessage(
        message_id=message_id or f"m-{ext}",
        occurred_at=created,
        producer="test",
        comment=Comment(
            source=source, external_id=ext, community_id=community, thread_id=thread, text="…",
            created_at=created, comment_id=comment_id_for(source, ext), lang=lang, action=action,
            author_id=author, metrics=CommentMetrics(likes=likes), place=place,
        ),
        sentiment=Sentiment(label=label, score=score, confidence=confidence, lang=lang, model_version="t"),
        flags=[CharterFlag(kind=k, confidence=c) for k, c in flags],
        scored_at=created,
    )


def run(*msgs: ScoredCommentMessage, engine: Engine = ENGINE, book: Book | None = None, now: datetime = NOW):
    book = book if book is not None else Book()
    return engine.decide_batch(list(msgs), book, now), book


# -- respond: is a negative sure enough to count? -------------------------------------------------------------

POLICY = CommunityPolicy()


@pytest.mark.parametrize(
    ("confidence", "likes", "earlier", "sure"),
    [
        (0.9, 0, 0, True),  # confident: counts
        (0.5, 0, 0, True),  # exactly at the floor: counts
        (0.39, 0, 0, False),  # "Vivement l'an prochain !!" territory: a coin toss, not an incident
        (0.45, 60, 0, True),  # far-reaching comments count on less certainty
        (0.35, 60, 0, False),  # ...but not below the reach floor
        (0.45, 0, 2, True),  # a regular complainer counts on less certainty
        (0.45, 0, 1, False),  # one earlier negative is not a habit
    ],
)
def test_sure_negative(confidence, likes, earlier, sure):
    got, why = sure_negative(scored(confidence=confidence, likes=likes), POLICY, earlier)
    assert got is sure, why


def test_a_positive_or_neutral_comment_is_never_a_sure_negative():
    assert sure_negative(scored(label=POS), POLICY, 5)[0] is False
    assert sure_negative(scored(label=NEU), POLICY, 5)[0] is False


# -- grouping: one incident per thread --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msgs", "actions", "levels"),
    [
        # A sure negative opens a respond-level incident.
        ([scored("a")], ["opened"], {"post-1": "respond"}),
        # A low-confidence negative opens nothing.
        ([scored("a", confidence=0.39)], ["ignored"], {}),
        # A charter breach opens at moderate even when the comment is not negative.
        ([scored("a", NEU, flags=(("insult", 0.9),))], ["opened"], {"post-1": "moderate"}),
        # A flag below its confidence floor is no breach.
        ([scored("a", NEU, flags=(("insult", 0.3),))], ["ignored"], {}),
        # A positive reply is counted in the open incident, not evidence.
        ([scored("a"), scored("b", POS)], ["opened", "counted"], {"post-1": "respond"}),
        # Two threads, two incidents.
        ([scored("a"), scored("b", thread="post-2")], ["opened", "opened"], {"post-1": "respond", "post-2": "respond"}),
        # The same comment under another message id is attached once.
        ([scored("a"), scored("a", message_id="again")], ["opened", "duplicate"], {"post-1": "respond"}),
        # A removal opens nothing.
        ([scored("a", action=CommentAction.removed)], ["ignored"], {}),
        # A comment older than the horizon is recorded and counted, and pages nobody.
        ([scored("a", at=NOW - timedelta(days=3))], ["recorded"], {}),
    ],
)
def test_grouping(msgs, actions, levels):
    fx, _ = run(*msgs)
    assert [d.action.value for d in fx.decisions] == actions
    assert {i.thread_id: i.level.value for i in fx.incidents.values()} == levels
    assert fx.escalations == []


def test_playbook_is_data_and_platform_aware():
    fx, _ = run(scored("fb"), scored("yt", source="youtube", thread="video-1"))
    by_thread = {i.thread_id: i for i in fx.incidents.values()}
    fb = [a.code for a in by_thread["post-1"].actions]
    yt = [a.code for a in by_thread["video-1"].actions]
    # Facebook allows one private reply within 7 days; YouTube has no such thing.
    assert fb == ["reply_public", "message_private"]
    assert yt == ["reply_public"]
    deadline = by_thread["post-1"].actions[1].deadline
    assert deadline == NOW - timedelta(minutes=5) + timedelta(days=7)
    # Rendered for people in the comment's language; never "delete".
    text = by_thread["post-1"].snapshot().recommended_actions
    assert text[0].startswith("Répondre publiquement") and all("supprimer" not in t or "sans" in t for t in text)


def test_charter_breach_says_hide_and_answer_the_thread():
    fx, _ = run(scored("troll", flags=(("insult", 0.9),), lang="en"))
    inc = next(iter(fx.incidents.values()))
    assert [a.code for a in inc.actions] == ["hide", "answer_thread"]
    assert inc.actions[0].params["flags"] == "insult"
    assert "Hide comment troll" in inc.snapshot().recommended_actions[0]


# -- cascade: negatives piling up within a window of event time --------------------------------------------------


def at(minutes: float) -> datetime:
    return NOW - timedelta(minutes=60) + timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("times", "labels", "pages"),
    [
        # Three sure negatives within the 30-minute window: page.
        ([0, 5, 10], [NEG, NEG, NEG], True),
        # The same three spread over an hour: no cascade (a slow thread, not a pile-up).
        ([0, 25, 50], [NEG, NEG, NEG], False),
        # Three negatives drowned in positives: share under one half, no page.
        ([0, 1, 2, 3, 4, 5, 6], [NEG, POS, NEG, POS, POS, POS, NEG], False),
        # Two negatives only: below the minimum count.
        ([0, 5], [NEG, NEG], False),
    ],
)
def test_cascade_window(times, labels, pages):
    msgs = [scored(f"c{i}", lab, at=at(t)) for i, (t, lab) in enumerate(zip(times, labels, strict=True))]
    fx, _ = run(*msgs)
    assert bool([e for e in fx.escalations if e.target is EscalationTarget.human]) is pages


def test_a_cascade_across_a_bucket_boundary_is_not_its_own_baseline():
    # The first reply falls in the previous 15-minute bucket: it must not count as the community's "usual".
    boundary = bucket_start(NOW - timedelta(hours=1), CommunityPolicy().spike.bucket)
    fx, _ = run(*[scored(f"b{i}", at=boundary + timedelta(seconds=-30 + 60 * i)) for i in range(3)])
    assert [e.trigger for e in fx.escalations] == ["cascade"]


def test_one_author_repeating_is_not_a_cascade():
    # A troll posting three insults is a moderation job, not negatives piling up.
    fx, _ = run(*[scored(f"t{i}", at=at(i), author="troll") for i in range(3)])
    assert fx.escalations == []
    fx, _ = run(*[scored(f"t{i}", at=at(i), author="troll" if i < 2 else "someone-else") for i in range(3)])
    assert [e.trigger for e in fx.escalations] == ["cascade"]


def test_a_reply_arriving_late_still_completes_its_cascade():
    # Written at 0, 1 and 2 minutes; the one written at minute 1 arrives last.
    book = Book()
    for ext, minute in (("a", 0), ("c", 2)):
        fx, book = run(scored(ext, at=at(minute)), book=book)
        assert fx.escalations == []
    fx, _ = run(scored("b", at=at(1)), book=book)
    assert [e.trigger for e in fx.escalations] == ["cascade"]


def test_cascade_pages_once_with_a_deadline_and_a_step_timer():
    fx, _ = run(*[scored(f"c{i}", at=at(i)) for i in range(5)])
    pages = [e for e in fx.escalations if e.target is EscalationTarget.human]
    assert len(pages) == 1 and pages[0].step == 1 and pages[0].trigger == "cascade"
    assert pages[0].ack_deadline == NOW + timedelta(minutes=15)
    (inc,) = fx.incidents.values()
    assert inc.level is IncidentLevel.human and inc.step == 1
    kinds = sorted(t.kind.value for t in fx.timers)
    assert kinds == ["persist", "step"]
    assert [d.action.value for d in fx.decisions] == ["opened", "attached", "escalated", "attached", "attached"]


def test_cascade_is_decided_on_event_time_not_arrival():
    # The same comments arriving one batch at a time, an hour later, decide the same.
    book = Book()
    outcome = []
    for i in range(3):
        fx, book = run(scored(f"c{i}", at=at(i)), book=book, now=NOW + timedelta(minutes=60))
        outcome += [e.trigger for e in fx.escalations]
    assert outcome == ["cascade"]


def test_a_busy_complaining_community_needs_more_than_its_usual_share():
    policy = CommunityPolicy()
    b0 = bucket_start(at(0), policy.spike.bucket)
    # This community usually runs at 45% negative: 3 of 5 in a thread (60%) is its normal, not a cascade.
    history = {b0 - policy.spike.bucket * i: Bucket(100, 45, -20.0) for i in range(1, 30)}
    msgs = [scored(f"c{i}", POS if i < 2 else NEG, at=at(i)) for i in range(5)]
    fx, _ = run(*msgs, book=Book(buckets={"resto-lyon": history}, first_seen={"resto-lyon": at(-10000)}))
    assert not fx.escalations
    # The same thread in a community without that history is a cascade.
    fx, _ = run(*msgs)
    assert [e.trigger for e in fx.escalations] == ["cascade"]


# -- spike: the community against its own baseline ---------------------------------------------------------------


def spike_book(current_negatives: int, warm: int = 30) -> tuple[Book, datetime]:
    size = CommunityPolicy().spike.bucket
    cur = bucket_start(at(0), size)
    buckets = {cur - size * i: Bucket(20, 1 + i % 2, 2.0) for i in range(1, warm + 1)}
    buckets[cur] = Bucket(20, current_negatives, -5.0)
    return Book(buckets={"resto-lyon": buckets}, first_seen={"resto-lyon": cur - size * warm}), cur


@pytest.mark.parametrize(
    ("negatives", "warm", "spike"),
    [
        (12, 30, True),  # 12 against a usual 1-2: page
        (4, 30, False),  # within the normal spread
        (12, 5, False),  # still warming up: too little history to call anything a spike
    ],
)
def test_spike_against_baseline(negatives, warm, spike):
    book, cur = spike_book(negatives, warm)
    found = Engine.spike(book, "resto-lyon", cur, CommunityPolicy())
    assert (found is not None and found[0] == "spike_volume") is spike


def test_spike_opens_one_community_incident_and_pages():
    book, cur = spike_book(10)
    fx, book = run(*[scored(f"s{i}", thread=f"t{i}", at=cur + timedelta(minutes=1)) for i in range(3)], book=book)
    spikes = [i for i in fx.incidents.values() if i.kind is IncidentKind.spike]
    assert len(spikes) == 1 and spikes[0].thread_id == "*" and spikes[0].level is IncidentLevel.human
    assert [e.trigger for e in fx.escalations] == ["spike"]
    # A second batch in the same spike updates it; it does not open another or page again.
    fx2, _ = run(scored("s9", thread="t9", at=cur + timedelta(minutes=2)), book=book)
    assert not [i for i in fx2.incidents.values() if i.kind is IncidentKind.spike and i.id != spikes[0].id]
    assert fx2.escalations == []


# -- field ------------------------------------------------------------------------------------------------------


def test_a_cascade_about_a_place_asks_for_a_field_visit():
    fx, _ = run(*[scored(f"c{i}", at=at(i), place="Lyon 4e") for i in range(3)])
    assert [(e.target.value, e.trigger) for e in fx.escalations] == [("human", "cascade"), ("field", "place")]
    field = fx.escalations[1]
    assert field.place == "Lyon 4e" and len(field.evidence) == 3


def escalated_incident() -> tuple[Incident, Book]:
    fx, book = run(*[scored(f"c{i}", at=at(i)) for i in range(3)])
    (inc,) = fx.incidents.values()
    return inc, book


def test_only_an_incident_nobody_was_paged_for_may_still_cascade():
    # The handler reads a thread's window only where this holds: it must be true wherever the engine cascades.
    fx, _ = run(scored("c0", at=at(0)))
    (opened,) = fx.incidents.values()
    assert may_cascade(None) and may_cascade(opened)
    inc, _ = escalated_incident()
    assert inc.step == 1 and not may_cascade(inc)
    acked = ENGINE.transition(opened, IncidentEventType.acknowledged, "claire", None, NOW)
    assert not isinstance(acked, Refusal) and not may_cascade(acked.incident)
    assert not may_cascade(evolve(opened, level=IncidentLevel.human))


def test_evolve_changes_only_what_it_is_given_and_refuses_unknown_fields():
    fx, _ = run(scored("c0", at=at(0)))
    (inc,) = fx.incidents.values()
    grown = evolve(inc, comment_count=inc.comment_count + 5)
    assert grown.comment_count == inc.comment_count + 5 and grown is not inc
    assert dataclasses.replace(grown, comment_count=inc.comment_count) == inc
    with pytest.raises(TypeError, match="no field"):
        evolve(inc, comments=3)


def test_growing_after_acknowledgement_asks_for_the_field():
    inc, book = escalated_incident()
    step = ENGINE.transition(inc, IncidentEventType.acknowledged, "claire", None, NOW)
    assert not isinstance(step, Refusal)
    book.open_by_thread[(inc.community_id, inc.thread_id)] = step.incident
    fx, _ = run(*[scored(f"late{i}", at=NOW - timedelta(minutes=1)) for i in range(3)], book=book)
    assert [(e.target.value, e.trigger) for e in fx.escalations] == [("field", "grew_after_ack")]


# -- timers: steps, fences, field at the end --------------------------------------------------------------------


def stepped_engine() -> Engine:
    return Engine(parse_policy({
        "people": {"alice": {"name": "alice", "email": "alice@example.org"},
                   "bob": {"name": "bob", "webhook": "http://127.0.0.1:9/hook"}},
        "defaults": {"steps": [{"notify": ["person:alice"], "wait": "10m"},
                               {"notify": ["person:bob"], "wait": "10m"}],
                     "field": {"on_place": False, "after_last_step": True}},
    }))


def test_steps_then_field_then_reminders():
    engine = stepped_engine()
    fx, _ = run(*[scored(f"c{i}", at=at(i)) for i in range(3)], engine=engine)
    (inc,) = fx.incidents.values()
    assert [n.channel for n in fx.notices] == ["person:alice"]
    step_timer = next(t for t in fx.timers if t.kind is TimerKind.step)
    # Deadline passes: step 2 pages bob.
    fx2, why = engine.on_timer(inc, step_timer, step_timer.due_at, Book(), [])
    inc2 = fx2.incidents[inc.id]
    assert inc2.step == 2 and [n.channel for n in fx2.notices] == ["person:bob"], why
    assert [(e.trigger, e.step) for e in fx2.escalations] == [("ack_timeout", 2)]
    # The old timer again (a duplicate delivery, another replica): fenced out, nothing happens.
    fx_dup, why = engine.on_timer(inc2, step_timer, step_timer.due_at, Book(), [])
    assert why.startswith("stale") and not fx_dup.escalations
    # Last step passes: a field visit, then reminders on the repeat interval.
    t2 = fx2.timers[0]
    fx3, _ = engine.on_timer(inc2, t2, t2.due_at, Book(), [])
    inc3 = fx3.incidents[inc.id]
    assert [(e.target.value, e.trigger) for e in fx3.escalations] == [("field", "policy_end")]
    assert inc3.level is IncidentLevel.field
    t3 = fx3.timers[0]
    assert t3.due_at - t2.due_at == inc3.policy.repeat_interval
    fx4, _ = engine.on_timer(inc3, t3, t3.due_at, Book(), [])
    assert [(e.trigger, e.step) for e in fx4.escalations] == [("repeat", 2)]


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (IncidentEventType.acknowledged, "stale"),  # acknowledged: nobody is paged any more
        (IncidentEventType.resolved, "stale"),  # resolved: nothing to do
    ],
)
def test_a_person_acting_fences_out_the_step_timer(event, why):
    engine = stepped_engine()
    fx, _ = run(*[scored(f"c{i}", at=at(i)) for i in range(3)], engine=engine)
    (inc,) = fx.incidents.values()
    timer = next(t for t in fx.timers if t.kind is TimerKind.step)
    step = engine.transition(inc, event, "claire", None, NOW)
    assert not isinstance(step, Refusal)
    out, reason = engine.on_timer(step.incident, timer, timer.due_at, Book(), [])
    assert reason.startswith(why) and not out.escalations and not out.notices


def test_a_persisting_crisis_asks_for_the_field_once():
    inc, _ = escalated_incident()
    persist = Timer(inc.id, TimerKind.persist, NOW + timedelta(hours=24), inc.reopened)
    acked = ENGINE.transition(inc, IncidentEventType.acknowledged, "claire", None, NOW)
    assert not isinstance(acked, Refusal)
    fx, _ = ENGINE.on_timer(acked.incident, persist, persist.due_at, Book(), [])
    assert [(e.target.value, e.trigger) for e in fx.escalations] == [("field", "persisted")]
    again, why = ENGINE.on_timer(fx.incidents[inc.id], persist, persist.due_at, Book(), [])
    assert not again.escalations and why.startswith("stale")


# -- mute: silences and inhibition -----------------------------------------------------------------------------


def test_a_silence_mutes_the_page_but_keeps_the_record():
    silence = Silence("s1", {"community_id": "resto-lyon"}, NOW - timedelta(hours=1), NOW + timedelta(hours=1),
                      "claire", "known outage, answering by hand")
    fx, _ = run(*[scored(f"c{i}", at=at(i)) for i in range(3)], book=Book(silences=[silence]))
    (inc,) = fx.incidents.values()
    assert inc.level is IncidentLevel.human and fx.escalations == [] and fx.notices == []
    assert any(s.event == "muted" and "silenced by s1" in s.detail for s in fx.steps)


def test_an_expired_or_unrelated_silence_does_not_mute():
    old = Silence("s1", {"community_id": "resto-lyon"}, NOW - timedelta(hours=2), NOW - timedelta(hours=1), "c", "x")
    other = Silence("s2", {"community_id": "elsewhere"}, NOW - timedelta(hours=1), NOW + timedelta(hours=1), "c", "x")
    fx, _ = run(*[scored(f"c{i}", at=at(i)) for i in range(3)], book=Book(silences=[old, other]))
    assert [e.trigger for e in fx.escalations] == ["cascade"]


@pytest.mark.parametrize(
    ("source_level", "target_level", "same_community", "inhibited"),
    [
        (IncidentLevel.field, IncidentLevel.respond, True, True),  # a field crisis mutes respond noise
        (IncidentLevel.field, IncidentLevel.respond, False, False),  # ...only in its own community
        (IncidentLevel.field, IncidentLevel.human, True, False),  # a human page is not respond noise
        (IncidentLevel.respond, IncidentLevel.respond, True, False),  # a respond incident mutes nothing
    ],
)
def test_inhibition(source_level, target_level, same_community, inhibited):
    inc, _ = escalated_incident()
    source = replace(inc, id="src", level=source_level, thread_id="other",
                     community_id=inc.community_id if same_community else "elsewhere")
    target = replace(inc, id="tgt", level=target_level)
    rules = [InhibitRule(source={"level": "field"}, target={"level": "respond"})]
    assert (inhibited_by(target, [source], rules) is not None) is inhibited


# -- people: transitions, reopening -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "event", "outcome"),
    [
        (IncidentState.open, IncidentEventType.acknowledged, Step),
        (IncidentState.open, IncidentEventType.resolved, Step),
        (IncidentState.acknowledged, IncidentEventType.resolved, Step),
        (IncidentState.acknowledged, IncidentEventType.acknowledged, Unchanged),  # a repeat: already taken
        (IncidentState.resolved, IncidentEventType.resolved, Unchanged),  # a repeat: already closed
        (IncidentState.resolved, IncidentEventType.acknowledged, Refusal),  # the state forbids it
    ],
)
def test_transition(state, event, outcome):
    inc, _ = escalated_incident()
    before = replace(inc, state=state)
    out = ENGINE.transition(before, event, "claire", "on it", NOW)
    assert type(out) is outcome
    if isinstance(out, Step):
        assert out.incident.state.value == {"acknowledged": "acknowledged", "resolved": "resolved"}[event.value]
        assert out.incident.step_fence == inc.step_fence + 1 and out.actor == "claire"
    elif isinstance(out, Unchanged):
        assert out.incident == before  # nothing moves: no fence, no timeline step
    else:
        assert out.reason.startswith("incident is resolved") and "only an open incident" in out.reason


def test_a_flare_up_soon_after_resolution_reopens_the_same_incident():
    inc, book = escalated_incident()
    resolved = ENGINE.transition(inc, IncidentEventType.resolved, "claire", None, NOW)
    assert not isinstance(resolved, Refusal)
    key = (inc.community_id, inc.thread_id)
    book.open_by_thread.pop(key)
    book.resolved_by_thread[key] = resolved.incident
    fx, _ = run(scored("again", at=NOW), book=book, now=NOW + timedelta(hours=1))
    assert [d.action.value for d in fx.decisions] == ["reopened"]
    again = fx.incidents[inc.id]
    assert again.state is IncidentState.open and again.reopened == 1 and again.step == 0
    # Long after the reopen window, the same thread opens a new incident instead.
    later = NOW + timedelta(days=2)
    fx2, _ = run(scored("much-later", at=later), book=Book(resolved_by_thread={key: resolved.incident}), now=later)
    assert [d.action.value for d in fx2.decisions] == ["opened"]


def test_lifecycle_messages_have_stable_ids_and_updates_coalesce():
    fx, _ = run(*[scored(f"c{i}", at=at(i)) for i in range(6)], now=NOW)
    published = coalesce(fx.steps)
    events = [s.publish.value for s in published if s.publish]
    # opened, one coalesced update, escalated, then the later updates collapse into one.
    assert events == ["opened", "updated", "escalated", "updated"]
    ids = [incident_message(s).message_id for s in published]
    fx_again, _ = run(*[scored(f"c{i}", at=at(i)) for i in range(6)], now=NOW)
    assert ids == [incident_message(s).message_id for s in coalesce(fx_again.steps)]


def test_updates_coalesce_per_incident_when_threads_interleave():
    # Two threads' comments alternate in one batch: after each opening negative, insulting replies (evidence,
    # each an update, but no cascade). Each incident publishes its opening and its last update only.
    insult = (("insult", 0.9),)
    comments = [scored("a0", thread="t1", at=at(0)), scored("b0", thread="t2", at=at(0))]
    for i in range(1, 5):
        comments += [scored(f"a{i}", POS, flags=insult, thread="t1", at=at(i)),
                     scored(f"b{i}", POS, flags=insult, thread="t2", at=at(i))]
    fx, _ = run(*comments, now=NOW)
    published = [(s.incident.thread_id, s.publish.value if s.publish else "", s.incident.comment_count)
                 for s in coalesce(fx.steps)]
    assert published == [("t1", "opened", 1), ("t2", "opened", 1), ("t1", "updated", 5), ("t2", "updated", 5)]


def test_render_every_action_and_reason_in_both_languages():
    from terrain.contracts import RecommendedAction

    for code in ("reply_public", "message_private", "hide", "answer_thread", "page", "field_visit"):
        a = RecommendedAction(code=code, external_id="42", deadline=NOW, params={"flags": "insult", "place": "Lyon"})
        fr, en = render.action(a, "fr"), render.action(a, "en")
        assert fr != en and "{" not in fr and "{" not in en
    assert render.action(RecommendedAction(code="future_code"), "fr") == "future_code"


@pytest.mark.parametrize("label", [NEG, NEU, POS])
@pytest.mark.parametrize("confidence", [0.34, 0.39, 0.4, 0.45, 0.5, 0.9])
@pytest.mark.parametrize("likes", [0, 60])
@pytest.mark.parametrize("author", [None, "a1"])
def test_a_comment_that_may_not_be_sure_is_never_sure_whatever_its_authors_history(label, confidence, likes, author):
    # The handler skips a thread's window for comments where may_be_sure is false: sure_negative must then be
    # false for every history; and where it is true, some history makes the comment sure.
    policy = CommunityPolicy()
    msg = scored("c1", label, confidence=confidence, likes=likes, author=author)
    # The engine counts earlier negatives by author: a comment without one has none.
    sure_for = {earlier: sure_negative(msg, policy, earlier)[0] for earlier in (range(0, 6) if author else [0])}
    if not may_be_sure(msg, policy):
        assert not any(sure_for.values())
    else:
        assert any(sure_for.values())
