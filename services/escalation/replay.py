"""Replay scenarios through the escalation engine on simulated time, and score it against a manager's expectations.

A scenario (YAML, see `services/escalation/scenarios/`) is a stream of timed comments and people's actions,
with the incidents a good community manager would expect. The harness is pure: no broker, no database.
It keeps in memory what the service keeps in PostgreSQL and hands the engine, for each batch, the same
`Book` the handler loads (`handlers.Escalator._book`); timers are stored, deduplicated and fired the way
`fire_due_timers` does, each at its own due time.

Scenario format (the pydantic models below validate it and name every bad path):
- `name`, `description`, `start` (an aware time), `until` (run until this offset), `scorer` (scores comments
  given only as `text`, e.g. `lexicon`), `policy` (an inline policy file), `defaults` (community, thread,
  source, lang);
- `comments`: `id` (external id), `at` (created_at offset), `arrive` (arrival offset, default `at`), community,
  thread, parent, author, source, lang, place, text, and either `label` + `confidence` (+ `score`, `flags`:
  {insult: 0.9}) or nothing to score (`text` or `texts: seed_article`); likes, replies, shares; `action`
  (created, edited, removed); `count` + `every` for a series (`{i}` in strings is the index); `redeliver`
  (+ `redeliver_every`): the same message again, `resend`: the same comment under new message ids;
- `actions`: `at`, `do` (acknowledge or resolve), the thread (or `spike: true`), `by`, `note`;
- `silences`: `at`, `until`, `matchers` (community_id, thread_id, level, kind, state), `by`, `comment`;
- `expect`: `incidents` (community, thread or `spike: true`, least `level`, `page`, `field`, `after`: the
  comment after which it is detectable, `within`: the longest delay, measured from that comment's creation,
  `actions`: recommended action codes it must carry), `allowed` (incidents tolerated but not required, up to a
  level), `no_page`, `max_pages`, `max_incidents`.
Offsets read `90s`, `30m`, `7h15m`, `2d3h` or seconds.

Simulation rules:
- the clock is simulated: a comment is delivered when it *arrives* (its arrival offset, by default its
  creation offset); every comment arriving at the same instant is one batch, and `now` is that instant;
- a message id already processed is dropped before the engine sees it (the processed-message record),
  a copy inside one batch too;
- as the clock moves, every timer due before the next arrival or action fires at its own due time;
- at one instant, comments arrive first, then people act, then the timers due at that instant fire;
- the run stops at `until` (default: the last arrival or action); later timers never fire.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from services.escalation.domain import (
    LEVEL_RANK,
    SPIKE_THREAD,
    Book,
    Bucket,
    CommentKey,
    Decision,
    Effects,
    Engine,
    Incident,
    Refusal,
    Seen,
    Silence,
    ThreadKey,
    Timer,
    Unchanged,
    author_key,
    bucket_start,
)
from services.escalation.policy import PolicyError, PolicyFile, load_policy, parse_policy
from terrain.contracts import (
    CharterFlag,
    Comment,
    CommentAction,
    CommentMetrics,
    EscalationMessage,
    EscalationTarget,
    IncidentEventType,
    IncidentLevel,
    IncidentState,
    ScoredCommentMessage,
    Sentiment,
    SentimentLabel,
    comment_id_for,
)
from terrain.contracts.base import AwareDatetime, derived_id, located_error

# The handler loads a thread's latest resolved incident this far back (repository.REOPEN_LOOKBACK).
REOPEN_LOOKBACK = timedelta(days=7)
PRODUCER = "terrain-replay"
SCENARIO_PACKAGE = "services.escalation.scenarios"
_DEFAULT_SCORE = {SentimentLabel.negative: -0.6, SentimentLabel.neutral: 0.0, SentimentLabel.positive: 0.6}

# ---------------------------------------------------------------------------------------------- format

_OFFSET = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|w|d|h|m|s))+$")
_OFFSET_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|w|d|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _offset(value: Any) -> Any:
    """`90s`, `7h15m`, `2d3h`, `4m10s` or seconds: the policy file's durations, with compound forms."""
    if isinstance(value, str) and _OFFSET.match(value.replace(" ", "")):
        return timedelta(seconds=sum(float(n) * _UNIT_S[u] for n, u in _OFFSET_PART.findall(value)))
    return value


Duration = Annotated[timedelta, BeforeValidator(_offset)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    """Values a comment, an action or an expectation takes when it does not say."""

    community: str | None = None
    thread: str | None = None
    source: str = "facebook"
    lang: str | None = "fr"


class CommentSpec(_Strict):
    """One comment, or a series of `count` comments `every` apart (`{i}` in its strings is the index)."""

    id: str = Field(min_length=1, description="external id in its source")
    at: Duration = Field(default=timedelta(0), description="created_at, as an offset from the start")
    arrive: Duration | None = Field(
        default=None,
        description="arrival offset (default: `at`); later than `at` models a slow source or a late import",
    )
    community: str | None = None
    thread: str | None = None
    parent: str | None = None
    author: str | None = None
    source: str | None = None
    lang: str | None = None
    place: str | None = None
    text: str | None = None
    texts: Literal["seed_article"] | None = Field(
        default=None, description="one comment per reader comment of the seed article (terrain.demo)"
    )
    label: SentimentLabel | None = None
    score: float | None = Field(default=None, ge=-1, le=1)
    confidence: float | None = Field(default=None, ge=0, le=1)
    flags: dict[Literal["insult", "threat", "spam", "personal_data"], float] = Field(default_factory=dict)
    likes: int = Field(default=0, ge=0)
    replies: int = Field(default=0, ge=0)
    shares: int = Field(default=0, ge=0)
    action: CommentAction = CommentAction.created
    count: int | None = Field(default=None, ge=1)
    every: Duration = timedelta(0)
    redeliver: int = Field(default=0, ge=0, description="the same message delivered again this many times")
    redeliver_every: Duration = timedelta(0)
    resend: int = Field(default=0, ge=0, description="the same comment sent again under new message ids")

    @model_validator(mode="after")
    def _scored_or_text(self) -> CommentSpec:
        if self.label is not None and self.confidence is None:
            raise ValueError("a scored comment needs `confidence` with its `label`")
        if self.label is None and self.text is None and self.texts is None:
            raise ValueError("give `label` and `confidence` (already scored), or `text` for the scenario's scorer")
        if self.arrive is not None and self.arrive < self.at:
            raise ValueError("`arrive` cannot be before `at`")
        return self


class ActionSpec(_Strict):
    """A person acknowledges or resolves the in-progress incident of a thread (or the community's spike)."""

    at: Duration
    do: Literal["acknowledge", "resolve"]
    community: str | None = None
    thread: str | None = None
    spike: bool = False
    by: str = "community-manager"
    note: str | None = None


class SilenceSpec(_Strict):
    """A silence created through the API: notifications of matching incidents are muted from `at` to `until`."""

    at: Duration = timedelta(0)
    until: Duration
    matchers: dict[Literal["community_id", "thread_id", "level", "kind", "state"], str] = Field(min_length=1)
    by: str = "community-manager"
    comment: str = "scenario"


class ExpectedIncident(_Strict):
    """An incident a good community manager would expect."""

    community: str | None = None
    thread: str | None = None
    spike: bool = False
    level: IncidentLevel = Field(default=IncidentLevel.respond, description="the least level it must reach")
    page: bool | None = Field(default=None, description="a human page expected (default: level human or field)")
    field: bool | None = Field(default=None, description="a field request expected (default: level field)")
    after: str | None = Field(default=None, description="external id of the comment after which it is detectable")
    within: Duration | None = Field(default=None, description="longest acceptable delay after `after`")
    actions: list[str] = Field(default_factory=list, description="recommended action codes it must carry")

    @model_validator(mode="after")
    def _within_needs_after(self) -> ExpectedIncident:
        if self.within is not None and self.after is None:
            raise ValueError("`within` needs `after`: the comment the delay is measured from")
        if self.spike and self.thread is not None:
            raise ValueError("an expected spike has no `thread`")
        return self

    @property
    def wants_page(self) -> bool:
        return self.page if self.page is not None else LEVEL_RANK[self.level] >= LEVEL_RANK[IncidentLevel.human]

    @property
    def wants_field(self) -> bool:
        return self.field if self.field is not None else self.level is IncidentLevel.field


class Allowed(_Strict):
    """Incidents a manager does not require but finds fair (e.g. an answer to each ordinary complaint)."""

    community: str | None = None
    thread: str | None = Field(default=None, description="unset: any thread of the community")
    level: IncidentLevel = Field(default=IncidentLevel.respond, description="the highest level tolerated")


class Expect(_Strict):
    incidents: list[ExpectedIncident] = Field(default_factory=list)
    allowed: list[Allowed] = Field(default_factory=list)
    no_page: bool = Field(default=False, description="no human page and no field request at all")
    max_pages: int | None = Field(default=None, ge=0, description="at most this many human page messages")
    max_incidents: int | None = Field(default=None, ge=0, description="at most this many incidents")


class Scenario(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    start: AwareDatetime
    until: Duration | None = Field(default=None, description="run until this offset (default: the last event)")
    scorer: str | None = Field(default=None, description="scores comments given as text (e.g. lexicon)")
    policy: dict[str, Any] | None = Field(default=None, description="an inline policy file")
    defaults: Defaults = Defaults()
    comments: list[CommentSpec] = Field(default_factory=list)
    actions: list[ActionSpec] = Field(default_factory=list)
    silences: list[SilenceSpec] = Field(default_factory=list)
    expect: Expect = Expect()

    @model_validator(mode="after")
    def _complete(self) -> Scenario:
        errors: list[str] = []
        for i, c in enumerate(self.comments):
            if (c.community or self.defaults.community) is None:
                errors.append(f"comments.{i}: no community (and no defaults.community)")
            if (c.thread or self.defaults.thread) is None:
                errors.append(f"comments.{i}: no thread (and no defaults.thread)")
            if c.label is None and self.scorer is None:
                errors.append(f"comments.{i}: not scored, and the scenario names no `scorer`")
        for i, a in enumerate(self.actions):
            if (a.community or self.defaults.community) is None:
                errors.append(f"actions.{i}: no community")
            if not a.spike and (a.thread or self.defaults.thread) is None:
                errors.append(f"actions.{i}: no thread (or spike: true)")
        for i, e in enumerate(self.expect.incidents):
            if (e.community or self.defaults.community) is None:
                errors.append(f"expect.incidents.{i}: no community")
            if not e.spike and (e.thread or self.defaults.thread) is None:
                errors.append(f"expect.incidents.{i}: no thread (or spike: true)")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def policies(self, override: PolicyFile | None = None) -> PolicyFile:
        """The policy the scenario runs against: `override` (a --policy file), else its inline one, else defaults."""
        if override is not None:
            return override
        if self.policy is None:
            return PolicyFile()
        return parse_policy(self.policy, f"{self.name}: policy")


class ScenarioError(ValueError):
    """A scenario file that cannot be replayed; `errors` lists each problem with its path."""

    def __init__(self, source: str, errors: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(errors))
        self.source = source
        self.errors = errors


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, [located_error(e) for e in exc.errors(include_url=False)]) from exc
    if scenario.policy is not None:
        try:
            scenario.policies()
        except PolicyError as exc:
            raise ScenarioError(source, [f"policy.{e}" for e in exc.errors]) from exc
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(str(p), [f"cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(str(p), [f"not valid YAML: {exc}"]) from exc
    return parse_scenario(data, str(p))


def shipped_scenarios() -> list[Path]:
    """The scenario files shipped with the package, by name."""
    root = resources.files(SCENARIO_PACKAGE)
    return sorted(Path(str(f)) for f in root.iterdir() if f.name.endswith(".yaml"))


# ---------------------------------------------------------------------------------------------- deliveries


@dataclass(frozen=True)
class Delivery:
    """One message reaching escalation at `at` (simulated)."""

    at: datetime
    order: int
    message: ScoredCommentMessage


@dataclass(frozen=True)
class _Raw:
    at: datetime
    arrive: datetime
    comment: Comment
    spec: CommentSpec


def _sub(value: str | None, i: int) -> str | None:
    return value.replace("{i}", str(i)) if value is not None else None


def _raw_comments(scenario: Scenario) -> list[_Raw]:
    d = scenario.defaults
    out: list[_Raw] = []
    seed: list[str] = []
    for spec in scenario.comments:
        if spec.texts == "seed_article" and not seed:
            from terrain.demo import seed_comments

            seed = seed_comments()
        count = spec.count or (len(seed) if spec.texts == "seed_article" else 1)
        for i in range(count):
            created = scenario.start + spec.at + spec.every * i
            arrive = scenario.start + (spec.arrive if spec.arrive is not None else spec.at) + spec.every * i
            source = spec.source or d.source
            ext = _sub(spec.id, i) or spec.id
            text = seed[i % len(seed)] if spec.texts == "seed_article" else (_sub(spec.text, i) or "")
            comment = Comment(
                source=source, external_id=ext, community_id=spec.community or d.community or "",
                thread_id=_sub(spec.thread, i) or d.thread or "", parent_id=_sub(spec.parent, i),
                author_id=_sub(spec.author, i), text=text, created_at=created, lang=spec.lang or d.lang,
                metrics=CommentMetrics(likes=spec.likes, replies=spec.replies, shares=spec.shares),
                place=spec.place, removed=spec.action is CommentAction.removed,
                comment_id=comment_id_for(source, ext), action=spec.action,
                revision=2 if spec.action is CommentAction.edited else 1,
            )
            out.append(_Raw(created, arrive, comment, spec))
    return out


ScorerFactory = Callable[[str], Any]


def _default_scorer(name: str) -> Any:
    from services.sentiment.scoring import make_scorer

    return make_scorer(name)


def deliveries(scenario: Scenario, scorer_factory: ScorerFactory = _default_scorer) -> list[Delivery]:
    """Every message the scenario delivers, in arrival order (file order at one instant)."""
    raws = _raw_comments(scenario)
    to_score = [r for r in raws if r.spec.label is None]
    assessed: dict[int, tuple[Sentiment, list[CharterFlag]]] = {}
    if to_score:
        from services.sentiment.domain import assess_comments

        assert scenario.scorer is not None  # checked when the scenario was parsed
        scorer = scorer_factory(scenario.scorer)
        for r, a in zip(to_score, assess_comments(scorer, [r.comment for r in to_score]), strict=True):
            assessed[id(r)] = (a.sentiment, list(a.flags))
    out: list[Delivery] = []
    for r in raws:
        spec = r.spec
        if spec.label is not None:
            assert spec.confidence is not None
            sentiment = Sentiment(
                label=spec.label, score=spec.score if spec.score is not None else _DEFAULT_SCORE[spec.label],
                confidence=spec.confidence, lang=r.comment.lang or "fr", model_version="scenario",
            )
            flags = [CharterFlag(kind=k, confidence=v) for k, v in spec.flags.items()]
        else:
            sentiment, flags = assessed[id(r)]
            if spec.flags:
                flags = [CharterFlag(kind=k, confidence=v) for k, v in spec.flags.items()]
        for copy in range(spec.resend + 1):
            message = ScoredCommentMessage(
                message_id=derived_id("replay", scenario.name, r.comment.comment_id, str(r.comment.revision),
                                      str(copy)),
                occurred_at=r.comment.created_at, producer=PRODUCER, comment=r.comment, sentiment=sentiment,
                flags=flags, scored_at=r.arrive,
            )
            for k in range(spec.redeliver + 1):
                out.append(Delivery(r.arrive + spec.redeliver_every * k, len(out), message))
    return sorted(out, key=lambda d: (d.at, d.order))


# ---------------------------------------------------------------------------------------------- simulation


@dataclass
class Track:
    """What happened to one incident during the replay, in simulated time."""

    incident: Incident
    first_at: datetime
    reached: dict[IncidentLevel, datetime] = field(default_factory=dict)
    action_codes: set[str] = field(default_factory=set)

    def reached_at(self, level: IncidentLevel) -> datetime | None:
        times = [t for lv, t in self.reached.items() if LEVEL_RANK[lv] >= LEVEL_RANK[level]]
        return min(times) if times else None

    @property
    def top_level(self) -> IncidentLevel:
        return max(self.reached, key=LEVEL_RANK.__getitem__)


@dataclass(frozen=True)
class Sent:
    at: datetime
    escalation: EscalationMessage


@dataclass
class Outcome:
    """Everything the engine did during one replay."""

    tracks: dict[str, Track] = field(default_factory=dict)
    escalations: list[Sent] = field(default_factory=list)
    decisions: list[tuple[datetime, Decision]] = field(default_factory=list)
    timers_fired: list[tuple[datetime, Timer, str]] = field(default_factory=list)
    log: list[tuple[datetime, str]] = field(default_factory=list)
    created: dict[str, datetime] = field(default_factory=dict)  # external id -> created_at
    messages: int = 0
    processed: int = 0
    batches: int = 0


class Simulation:
    """The escalation service's stored state, in memory, driven by a simulated clock."""

    def __init__(self, policies: PolicyFile, silences: Sequence[Silence] = ()) -> None:
        self.engine = Engine(policies)
        self.policies = policies
        self.silences = list(silences)
        self.incidents: dict[str, Incident] = {}
        self.seen: dict[CommentKey, Seen] = {}
        self.by_thread: dict[ThreadKey, dict[str, Seen]] = {}
        self.by_author: dict[tuple[str, str], set[str]] = {}
        self.buckets: dict[tuple[str, int], dict[datetime, Bucket]] = {}
        self.first_seen: dict[str, datetime] = {}
        self.attached: dict[CommentKey, str] = {}
        self.processed: set[str] = set()
        self.timers: dict[tuple[str, str, int], Timer] = {}
        self.fired: set[tuple[str, str, int]] = set()
        self.out = Outcome()

    # -- what the repository loads

    def _in_progress(self, key: ThreadKey) -> Incident | None:
        for inc in self.incidents.values():
            if (inc.community_id, inc.thread_id) == key and inc.in_progress:
                return inc
        return None

    def _recently_resolved(self, key: ThreadKey, now: datetime) -> Incident | None:
        found = [
            i for i in self.incidents.values()
            if (i.community_id, i.thread_id) == key and i.state is IncidentState.resolved
            and i.resolved_at is not None and i.resolved_at >= now - REOPEN_LOOKBACK
        ]
        return max(found, key=lambda i: i.resolved_at or now) if found else None

    def _inhibitors(self, communities: Iterable[str]) -> dict[str, Incident]:
        """Open incidents that match the source side of an inhibition rule (repository.load_inhibitors)."""
        wanted = set(communities)
        rules = self.policies.inhibit
        levels = {r.source["level"] for r in rules if "level" in r.source}
        kinds = {r.source["kind"] for r in rules if "kind" in r.source}
        unfiltered = any("level" not in r.source and "kind" not in r.source for r in rules)
        if not rules:
            return {}
        return {
            i.id: i for i in self.incidents.values()
            if i.community_id in wanted and i.state is not IncidentState.resolved
            and (unfiltered or i.level.value in levels or i.kind.value in kinds)
        }

    def book(self, fresh: Sequence[ScoredCommentMessage], now: datetime) -> Book:
        """The Book `handlers.Escalator._book` loads for this batch."""
        policy = self.policies.community
        communities = sorted({m.comment.community_id for m in fresh})
        threads = sorted({(m.comment.community_id, m.comment.thread_id) for m in fresh})
        with_spikes = sorted({*threads, *((c, SPIKE_THREAD) for c in communities)})
        open_by_thread = {k: i for k in with_spikes if (i := self._in_progress(k)) is not None}
        resolved = {
            k: i for k in threads if k not in open_by_thread and (i := self._recently_resolved(k, now)) is not None
        }
        thread_since: dict[ThreadKey, datetime] = {}
        for m in fresh:
            k = (m.comment.community_id, m.comment.thread_id)
            at = m.comment.created_at - policy(k[0]).cascade.window
            thread_since[k] = min(at, thread_since.get(k, at))
        thread_comments: dict[ThreadKey, dict[str, Seen]] = {}
        for k, since in thread_since.items():
            for cid, s in self.by_thread.get(k, {}).items():
                if s.created_at >= since:
                    thread_comments.setdefault(k, {})[cid] = s
        for m in fresh:
            s0 = self.seen.get((m.comment.community_id, m.comment.comment_id))
            if s0 is not None:
                thread_comments.setdefault((s0.community_id, s0.thread_id), {})[s0.comment_id] = s0
        oldest = min(m.comment.created_at for m in fresh)
        lookback = max(policy(c).respond.regular_lookback for c in communities)
        author_negatives: dict[tuple[str, str], dict[str, datetime]] = {}
        for m in fresh:
            a = author_key(m)
            if a is None:
                continue
            ak = (m.comment.community_id, a)
            for cid in self.by_author.get(ak, set()):
                s = self.seen[(ak[0], cid)]
                if s.sure_negative and not s.removed and s.created_at >= oldest - lookback:
                    author_negatives.setdefault(ak, {})[cid] = s.created_at
        buckets: dict[str, dict[datetime, Bucket]] = {}
        for c in communities:
            sp = policy(c).spike
            since = min(
                bucket_start(m.comment.created_at, sp.bucket) - sp.bucket * sp.lookback_buckets
                for m in fresh if m.comment.community_id == c
            )
            stored = self.buckets.get((c, int(sp.bucket.total_seconds())), {})
            buckets[c] = {start: b for start, b in stored.items() if start >= since}
        attached = {
            k: self.attached[k] for m in fresh if (k := (m.comment.community_id, m.comment.comment_id)) in self.attached
        }
        return Book(
            open_by_thread=open_by_thread, resolved_by_thread=resolved, attached=attached,
            thread_comments=thread_comments, author_negatives=author_negatives, buckets=buckets,
            first_seen={c: self.first_seen[c] for c in communities if c in self.first_seen},
            silences=self._active_silences(now), others=self._inhibitors(communities),
        )

    def _active_silences(self, now: datetime) -> list[Silence]:
        return [s for s in self.silences if s.active(now)]

    # -- what the repository stores

    def _observe(self, inc: Incident, now: datetime) -> Track:
        track = self.out.tracks.get(inc.id)
        if track is None:
            track = self.out.tracks[inc.id] = Track(inc, now)
        track.reached.setdefault(inc.level, now)
        track.action_codes.update(a.code for a in inc.actions)
        return track

    def _keep_incident(self, inc: Incident, now: datetime) -> None:
        self.incidents[inc.id] = inc
        self._observe(inc, now).incident = inc

    def store(self, fx: Effects, now: datetime) -> None:
        for step in fx.steps:  # the versions an incident went through inside the batch
            self._observe(step.incident, now)
        for inc in fx.incidents.values():
            self._keep_incident(inc, now)
        for att in fx.attachments:
            self.attached.setdefault((att.community_id, att.comment_id), att.incident_id)
        for key, s in fx.seen.items():
            old = self.seen.get(key)
            if old is not None:  # the stored row keeps its thread, author and time; the rest is updated
                s = Seen(old.community_id, old.comment_id, old.thread_id, old.author_key, old.created_at,
                         s.sure_negative, s.score, s.removed)
            self.seen[key] = s
            self.by_thread.setdefault((s.community_id, s.thread_id), {})[s.comment_id] = s
            if s.author_key:
                self.by_author.setdefault((s.community_id, s.author_key), set()).add(s.comment_id)
        for (c, start), delta in fx.bucket_deltas.items():
            size = int(self.policies.community(c).spike.bucket.total_seconds())
            per = self.buckets.setdefault((c, size), {})
            per[start] = per.get(start, Bucket()).plus(delta)
        for c, at in fx.first_seen.items():
            self.first_seen[c] = min(at, self.first_seen.get(c, at))
        for t in fx.timers:
            self.timers.setdefault((t.incident_id, t.kind.value, t.fence), t)
        for e in fx.escalations:
            self.out.escalations.append(Sent(now, e))
        self.out.decisions += [(now, d) for d in fx.decisions]

    # -- the three inputs

    def deliver(self, batch: Sequence[ScoredCommentMessage], now: datetime) -> None:
        """One batch, as `on_scored` takes it: copies and processed ids dropped, then decided and stored."""
        self.out.messages += len(batch)
        unique = list({m.message_id: m for m in reversed(batch)}.values())[::-1]
        fresh = [m for m in unique if m.message_id not in self.processed]
        self.processed.update(m.message_id for m in fresh)
        if not fresh:
            return
        self.out.batches += 1
        self.out.processed += len(fresh)
        fx = self.engine.decide_batch(fresh, self.book(fresh, now), now)
        self.store(fx, now)

    def next_timer(self) -> tuple[tuple[str, str, int], Timer] | None:
        pending = [(k, t) for k, t in self.timers.items() if k not in self.fired]
        return min(pending, key=lambda kt: kt[1].due_at) if pending else None

    def fire(self, key: tuple[str, str, int], timer: Timer, now: datetime) -> None:
        """One due timer, as `fire_due_timers` takes it."""
        self.fired.add(key)
        inc = self.incidents.get(timer.incident_id)
        if inc is None:
            self.out.timers_fired.append((now, timer, "stale: incident gone"))
            return
        others = self._inhibitors([inc.community_id])
        community = [o for o in others.values() if o.id != inc.id]
        book = Book(silences=self._active_silences(now), others=others)
        fx, why = self.engine.on_timer(inc, timer, now, book, community)
        self.out.timers_fired.append((now, timer, why))
        self.store(fx, now)

    def act(self, action: ActionSpec, community: str, thread: str, now: datetime) -> None:
        key = (community, SPIKE_THREAD if action.spike else thread)
        inc = self._in_progress(key)
        if inc is None:
            latest = [i for i in self.incidents.values() if (i.community_id, i.thread_id) == key]
            inc = max(latest, key=lambda i: i.opened_at) if latest else None
        if inc is None:
            self.out.log.append((now, f"{action.by} would {action.do} {key[0]}/{key[1]}: no incident there"))
            return
        event = IncidentEventType.acknowledged if action.do == "acknowledge" else IncidentEventType.resolved
        step = self.engine.transition(inc, event, action.by, action.note, now)
        if isinstance(step, Refusal):
            self.out.log.append((now, f"{action.by} could not {action.do} {inc.id}: {step.reason}"))
            return
        if isinstance(step, Unchanged):
            self.out.log.append((now, f"{action.by} would {action.do} {inc.id}: already {inc.state.value}"))
            return
        self.out.log.append((now, f"{action.by} {event.value} {key[0]}/{key[1]}"))
        self._keep_incident(step.incident, now)


def simulate(scenario: Scenario, policies: PolicyFile | None = None,
             scorer_factory: ScorerFactory = _default_scorer) -> Outcome:
    """Run the scenario on simulated time; see the module docstring for the rules."""
    silences = [
        Silence(id=f"silence-{i}", matchers={str(k): v for k, v in sp.matchers.items()},
                starts_at=scenario.start + sp.at, ends_at=scenario.start + sp.until, created_by=sp.by,
                comment=sp.comment)
        for i, sp in enumerate(scenario.silences)
    ]
    sim = Simulation(scenario.policies(policies), silences)
    queue = deliveries(scenario, scorer_factory)
    for d in queue:
        sim.out.created.setdefault(d.message.comment.external_id, d.message.comment.created_at)
    d0 = scenario.defaults
    acts = sorted(
        ((scenario.start + a.at, i, a) for i, a in enumerate(scenario.actions)), key=lambda x: (x[0], x[1])
    )
    last = max([d.at for d in queue] + [t for t, _, _ in acts], default=scenario.start)
    end = scenario.start + scenario.until if scenario.until is not None else last
    qi = ai = 0
    while True:
        t_msg = queue[qi].at if qi < len(queue) else None
        t_act = acts[ai][0] if ai < len(acts) else None
        nxt = sim.next_timer()
        t_tim = nxt[1].due_at if nxt is not None else None
        # At one instant: comments, then people, then timers (an acknowledgement on the deadline is in time).
        candidates = [(t, rank) for t, rank in ((t_msg, 0), (t_act, 1), (t_tim, 2)) if t is not None and t <= end]
        if not candidates:
            break
        t, rank = min(candidates)
        if rank == 0:
            batch: list[ScoredCommentMessage] = []
            while qi < len(queue) and queue[qi].at == t:
                batch.append(queue[qi].message)
                qi += 1
            sim.deliver(batch, t)
        elif rank == 1:
            _, _, a = acts[ai]
            ai += 1
            sim.act(a, a.community or d0.community or "", a.thread or d0.thread or "", t)
        else:
            assert nxt is not None
            sim.fire(nxt[0], nxt[1], t)
    return sim.out


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class ExpectationResult:
    label: str
    expected: ExpectedIncident
    incident_id: str | None = None
    level: IncidentLevel | None = None
    paged: bool = False
    field_requested: bool = False
    delay: timedelta | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return not self.problems


@dataclass
class ScenarioReport:
    name: str
    description: str
    messages: int
    processed: int
    batches: int
    incidents: int
    pages: int  # human page messages
    field_requests: int
    results: list[ExpectationResult]
    incident_tp: int  # incidents that match an expectation
    allowed: int  # incidents not expected but tolerated (`expect.allowed`)
    page_units: int  # (incident, human|field) pairs that were escalated
    page_tp: int  # of those, the ones an expectation asked for
    page_expected: int  # (expectation, human|field) pairs expected
    page_found: int  # of those, the ones that happened
    unexpected_pages: list[str]
    unexpected_incidents: list[str]
    failures: list[str]
    log: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def expected(self) -> int:
        return len(self.results)

    @property
    def found(self) -> int:
        return sum(1 for r in self.results if r.found)

    @property
    def incident_precision(self) -> float | None:
        """Incidents that were expected or tolerated, over all incidents opened."""
        return (self.incident_tp + self.allowed) / self.incidents if self.incidents else None

    @property
    def incident_recall(self) -> float | None:
        return self.found / self.expected if self.expected else None

    @property
    def page_precision(self) -> float | None:
        return self.page_tp / self.page_units if self.page_units else None

    @property
    def page_recall(self) -> float | None:
        return self.page_found / self.page_expected if self.page_expected else None

    @property
    def delays(self) -> list[timedelta]:
        return [r.delay for r in self.results if r.delay is not None]


def _key_label(community: str, thread: str) -> str:
    return f"{community}/spike" if thread == SPIKE_THREAD else f"{community}/{thread}"


def evaluate(scenario: Scenario, out: Outcome) -> ScenarioReport:
    """Compare what the engine did with what the scenario expects."""
    d0 = scenario.defaults
    tracks = sorted(out.tracks.values(), key=lambda t: t.first_at)
    sent_by_incident: dict[str, list[Sent]] = {}
    for s in out.escalations:
        sent_by_incident.setdefault(s.escalation.incident_id, []).append(s)
    failures: list[str] = []
    results: list[ExpectationResult] = []
    wanted: dict[str, set[EscalationTarget]] = {}  # incident id -> targets an expectation asked for
    matched_ids: set[str] = set()
    for exp in scenario.expect.incidents:
        community = exp.community or d0.community or ""
        thread = SPIKE_THREAD if exp.spike else (exp.thread or d0.thread or "")
        label = f"{_key_label(community, thread)} ≥ {exp.level.value}"
        label += (", page" if exp.wants_page else "") + (", field" if exp.wants_field else "")
        res = ExpectationResult(label, exp)
        candidates = [t for t in tracks if (t.incident.community_id, t.incident.thread_id) == (community, thread)]
        matched_ids.update(t.incident.id for t in candidates)
        targets = {EscalationTarget.human} if exp.wants_page else set()
        targets |= {EscalationTarget.field} if exp.wants_field else set()
        for t in candidates:
            wanted.setdefault(t.incident.id, set()).update(targets)
        best = next((t for t in candidates if t.reached_at(exp.level) is not None), None)
        track = best or (candidates[0] if candidates else None)
        if track is None:
            res.problems.append("no incident")
        else:
            res.incident_id = track.incident.id
            res.level = track.top_level
            sent = sent_by_incident.get(track.incident.id, [])
            pages = [s for s in sent if s.escalation.target is EscalationTarget.human]
            fields = [s for s in sent if s.escalation.target is EscalationTarget.field]
            res.paged, res.field_requested = bool(pages), bool(fields)
            reached = track.reached_at(exp.level)
            if reached is None:
                res.problems.append(f"reached only {res.level.value}")
            if exp.wants_page and not pages:
                res.problems.append("nobody paged")
            if exp.wants_field and not fields:
                res.problems.append("no field request")
            missing = [a for a in exp.actions if a not in track.action_codes]
            if missing:
                res.problems.append("no recommended " + ", ".join(missing))
            detected = pages[0].at if exp.wants_page and pages else (
                fields[0].at if exp.wants_field and fields else reached
            )
            if exp.after is not None and detected is not None:
                ref = out.created.get(exp.after)
                if ref is None:
                    res.problems.append(f"no comment {exp.after} in the scenario")
                else:
                    res.delay = detected - ref
                    if exp.within is not None and res.delay > exp.within:
                        res.problems.append(f"detected {_fmt_delta(res.delay)} after {exp.after} "
                                            f"(> {_fmt_delta(exp.within)})")
        if res.problems:
            failures.append(f"expected {label}: " + "; ".join(res.problems))
        results.append(res)
    # Pages: each (incident, target) escalated at least once is one unit.
    units: dict[tuple[str, EscalationTarget], Sent] = {}
    for s in out.escalations:
        units.setdefault((s.escalation.incident_id, s.escalation.target), s)
    unexpected_pages = []
    page_tp = 0
    for (iid, target), s in units.items():
        if target in wanted.get(iid, set()):
            page_tp += 1
        else:
            what = "page" if target is EscalationTarget.human else "field request"
            unexpected_pages.append(
                f"{what} for {_key_label(s.escalation.community_id, s.escalation.thread_id)} "
                f"at +{_fmt_delta(s.at - scenario.start)} ({s.escalation.trigger}): {s.escalation.reason}"
            )
    failures += [f"unexpected {u}" for u in unexpected_pages]
    page_expected = sum(int(r.expected.wants_page) + int(r.expected.wants_field) for r in results)
    page_found = sum(
        int(r.expected.wants_page and r.paged) + int(r.expected.wants_field and r.field_requested) for r in results
    )
    def tolerated(t: Track) -> bool:
        return any(
            t.incident.community_id == (a.community or d0.community)
            and (a.thread is None or t.incident.thread_id == a.thread)
            and LEVEL_RANK[t.top_level] <= LEVEL_RANK[a.level]
            for a in scenario.expect.allowed
        )

    unmatched = [t for t in tracks if t.incident.id not in matched_ids]
    allowed = [t for t in unmatched if tolerated(t)]
    unexpected_incidents = [
        f"{_key_label(t.incident.community_id, t.incident.thread_id)} ({t.top_level.value}): {t.incident.reason}"
        for t in unmatched if not tolerated(t)
    ]
    n_pages = sum(1 for s in out.escalations if s.escalation.target is EscalationTarget.human)
    field_requests = sum(1 for s in out.escalations if s.escalation.target is EscalationTarget.field)
    ex = scenario.expect
    if ex.no_page and out.escalations:
        failures.append(f"expected no page: {n_pages} page(s) and {field_requests} field request(s)")
    if ex.max_pages is not None and n_pages > ex.max_pages:
        failures.append(f"expected at most {ex.max_pages} page(s): {n_pages}")
    if ex.max_incidents is not None and len(tracks) > ex.max_incidents:
        failures.append(f"expected at most {ex.max_incidents} incident(s): {len(tracks)}")
    ids = [s.escalation.escalation_id for s in out.escalations]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        failures.append(f"escalation id(s) emitted more than once: {', '.join(repeated)}")
    events = list(out.log) + [(t, f"timer {tm.kind.value}: {why}") for t, tm, why in out.timers_fired]
    events += [(t, f"{d.action.value} {d.comment_id[:8]}: {d.reason}") for t, d in out.decisions
               if d.action.value not in ("ignored", "counted")]
    events += [(s.at, f"{s.escalation.target.value} escalation ({s.escalation.trigger}, step {s.escalation.step}) "
                      f"for {_key_label(s.escalation.community_id, s.escalation.thread_id)}")
               for s in out.escalations]
    log = [f"+{_fmt_delta(t - scenario.start)} {line}" for t, line in sorted(events, key=lambda e: e[0])]
    return ScenarioReport(
        name=scenario.name, description=scenario.description, messages=out.messages, processed=out.processed,
        batches=out.batches, incidents=len(tracks), pages=n_pages, field_requests=field_requests, results=results,
        incident_tp=sum(1 for t in tracks if t.incident.id in matched_ids), allowed=len(allowed), page_units=len(units),
        page_tp=page_tp, page_expected=page_expected, page_found=page_found, unexpected_pages=unexpected_pages,
        unexpected_incidents=unexpected_incidents, failures=failures, log=log,
    )


def replay(scenario: Scenario, policies: PolicyFile | None = None,
           scorer_factory: ScorerFactory = _default_scorer) -> ScenarioReport:
    return evaluate(scenario, simulate(scenario, policies, scorer_factory))


def replay_file(path: str | Path, policy_file: str | Path | None = None) -> ScenarioReport:
    policies = load_policy(policy_file) if policy_file is not None else None
    return replay(load_scenario(path), policies)


@dataclass(frozen=True)
class Totals:
    scenarios: int
    passed: int
    expected: int
    found: int
    incidents: int
    incident_tp: int
    allowed: int
    page_units: int
    page_tp: int
    page_expected: int
    page_found: int
    unexpected_pages: int
    delays: tuple[timedelta, ...]

    @property
    def incident_precision(self) -> float | None:
        return (self.incident_tp + self.allowed) / self.incidents if self.incidents else None

    @property
    def incident_recall(self) -> float | None:
        return self.found / self.expected if self.expected else None

    @property
    def page_precision(self) -> float | None:
        return self.page_tp / self.page_units if self.page_units else None

    @property
    def page_recall(self) -> float | None:
        return self.page_found / self.page_expected if self.page_expected else None

    @property
    def median_delay(self) -> timedelta | None:
        return timedelta(seconds=statistics.median(d.total_seconds() for d in self.delays)) if self.delays else None


def totals(reports: Sequence[ScenarioReport]) -> Totals:
    return Totals(
        scenarios=len(reports), passed=sum(r.passed for r in reports), expected=sum(r.expected for r in reports),
        found=sum(r.found for r in reports), incidents=sum(r.incidents for r in reports),
        incident_tp=sum(r.incident_tp for r in reports), allowed=sum(r.allowed for r in reports),
        page_units=sum(r.page_units for r in reports),
        page_tp=sum(r.page_tp for r in reports), page_expected=sum(r.page_expected for r in reports),
        page_found=sum(r.page_found for r in reports),
        unexpected_pages=sum(len(r.unexpected_pages) for r in reports),
        delays=tuple(d for r in reports for d in r.delays),
    )


def _fmt_delta(d: timedelta) -> str:
    s = d.total_seconds()
    sign = "-" if s < 0 else ""
    s = abs(s)
    if s < 120:
        return f"{sign}{s:g}s"
    if s < 2 * 3600:
        return f"{sign}{s / 60:.4g}m"
    if s < 2 * 86400:
        return f"{sign}{s / 3600:.4g}h"
    return f"{sign}{s / 86400:.4g}d"


def fmt_delta(d: timedelta | None) -> str:
    return "–" if d is None else _fmt_delta(d)


def fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"
