"""Pure ingest logic: screening (one decision for every path), stable ids and the created/edited/removed/duplicate call.

No I/O and no clock reads: the caller passes the time and the detected languages.

One decision, the same on every path (HTTP, inbound topic, bulk import, Meta webhook):
- **Empty text** (empty or only whitespace) on a comment that is not a removal is *refused* with reason
  `empty_text`: Terrain exists to read comments, and a photo- or sticker-only comment gives sentiment
  nothing to read. A removal needs no text (Meta sends none).
- **Unknown source** is *refused* with reason `unknown_source`: the source is half of the stable comment
  id, so a typo would silently split one comment into two; the known list is configuration
  (`TERRAIN_INGEST_SOURCES`), so adding a platform is a setting, not a code change.
- **Text longer than the limit** is *kept, truncated* to the limit and flagged (`text_truncated`): the
  opening of a comment carries its tone, and dropping a long angry comment is the worst outcome.
- **A date further in the future than the allowed skew** (`TERRAIN_INGEST_MAX_FUTURE_SKEW_S`, a day) is
  *refused* with reason `future_timestamp`: no comment is written tomorrow, so it is a producer's bug
  (a clock, a unit, a year typed wrong), and a comment dated 2199 would sit at the head of every time
  window downstream. Clocks drift, hence the skew; the time compared with is the caller's clock.

Versions are ordered when the source dates them (Meta's `created_time` on each change): a change older
than the last one applied is `stale` and changes nothing, so a replayed edit never rolls the text back.
What ingest remembers of a comment outlives the dedup window: only the content hash (what tells a repost
from an edit) is forgotten, so a replayed Meta `add` is a duplicate whenever it comes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field, ValidationError

from terrain.contracts import Comment, CommentAction, CommentIn, CommentMessage, comment_id_for
from terrain.contracts.base import Envelope, derived_id, error_message, utc_text

PRODUCER = "terrain-ingest"
COMMENTS_TOPIC = "terrain.comments.v1"
UNDETERMINED_LANG = "und"  # ISO 639-2 "undetermined": the detector was unsure; sentiment detects again

DEFAULT_SOURCES = (
    "facebook", "instagram", "threads", "x", "twitter", "tiktok", "youtube", "linkedin", "google",
    "tripadvisor", "trustpilot", "forum", "blog", "email", "web", "import",
)


class CommentDraft(CommentIn):
    """A comment as received, before screening: like CommentIn, but a text of any length (ingest truncates)."""

    text: str = Field(description="The comment's text; longer than the limit is truncated, never refused.")


class InboundDraft(Envelope, CommentDraft):
    """The inbound topic's message read leniently, so an over-long text is truncated rather than dead-lettered."""


class Outcome(StrEnum):
    created = "created"
    edited = "edited"
    removed = "removed"
    duplicate = "duplicate"
    stale = "stale"  # older than the version already applied (a replayed or late edit): changes nothing


# The outcomes that publish a message and change what is stored.
CHANGES = frozenset({Outcome.created, Outcome.edited, Outcome.removed})


class Kind(StrEnum):
    """What the source says the item is. Only Meta tells `first` (verb add) from an edit."""

    upsert = "upsert"  # a version of the comment: new, or an edit when the text differs
    first = "first"  # the first version (Meta `add`): when already known it is a late retry, never an edit
    removal = "removal"  # removed or hidden at the source


class Reason(StrEnum):
    """Why something was refused: a small fixed set, used as a metric label and in every error."""

    invalid = "invalid"  # a field is missing or malformed
    empty_text = "empty_text"
    unknown_source = "unknown_source"
    malformed_json = "malformed_json"
    too_large = "too_large"
    unsupported = "unsupported"  # a Meta change Terrain cannot read as a comment
    future_timestamp = "future_timestamp"  # dated further ahead than the allowed clock skew
    out_of_scope = "out_of_scope"  # for a community outside the caller's scope (HTTP: the request is refused whole)


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    field: str | None
    message: str

    def describe(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.reason.value}: {where}{self.message}"


@dataclass(frozen=True)
class Limits:
    max_text_chars: int = 20_000
    sources: frozenset[str] = frozenset(DEFAULT_SOURCES)
    max_future_skew: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class Incoming:
    """A screened comment ready for the dedup decision."""

    comment: CommentIn
    kind: Kind = Kind.upsert
    truncated: bool = False
    # When the source dated this version (Meta's `created_time` of the change), to order a comment's
    # versions; None when the source dates only the comment (its creation), which orders nothing.
    version_at: datetime | None = None


@dataclass(frozen=True)
class Seen:
    """What ingest remembers of a comment it already published."""

    content_hash: str | None  # None once pruned: the comment is still known, its text no longer comparable
    revision: int
    removed: bool
    version_at: datetime | None = None  # the newest version time applied (see Incoming.version_at)


@dataclass(frozen=True)
class Decision:
    comment_id: str
    outcome: Outcome
    revision: int
    content_hash: str
    version_at: datetime | None = None  # what the stored record says after this decision


@dataclass
class Tally:
    """Counts for one request, batch or import."""

    received: int = 0
    created: int = 0
    edited: int = 0
    removed: int = 0
    duplicates: int = 0
    stale: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return self.created + self.edited + self.removed

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def add(self, other: Tally) -> None:
        """Add another tally's counts to this one (the shards of one import)."""
        self.received += other.received
        self.created += other.created
        self.edited += other.edited
        self.removed += other.removed
        self.duplicates += other.duplicates
        self.stale += other.stale
        for reason, n in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n

    def add_decisions(self, decisions: Iterable[Decision]) -> None:
        for d in decisions:
            if d.outcome is Outcome.duplicate:
                self.duplicates += 1
            else:  # created, edited, removed and stale are the tally's own field names
                setattr(self, d.outcome.value, getattr(self, d.outcome.value) + 1)

    def add_refusal(self, reason: Reason, n: int = 1) -> None:
        self.rejected[reason.value] = self.rejected.get(reason.value, 0) + n


# --- screening ----------------------------------------------------------------------------------------


def parse_sources(value: str) -> frozenset[str]:
    """`facebook, Instagram,forum` -> {"facebook", "instagram", "forum"}."""
    return frozenset(s.strip().lower() for s in value.split(",") if s.strip())


def screen(
    draft: CommentDraft | CommentIn,
    limits: Limits,
    kind: Kind = Kind.upsert,
    now: datetime | None = None,
    version_at: datetime | None = None,
) -> Incoming | Refusal:
    """Refuse, or normalise (lower-case source, truncated text), one received comment.

    `now` is the caller's clock, for the future-date check; every service path passes it (None skips the
    check, for parsers examined on their own). `version_at` orders the comment's versions (Incoming).
    """
    source = draft.source.lower()
    if source not in limits.sources:
        known = ", ".join(sorted(limits.sources))
        return Refusal(Reason.unknown_source, "source", f"unknown source {draft.source!r}; known: {known}")
    if now is not None and draft.created_at - now > limits.max_future_skew:
        return Refusal(Reason.future_timestamp, "created_at", _future_message(draft.created_at, now, limits))
    removal = kind is Kind.removal or draft.removed
    text = draft.text
    if not removal and not text.strip():
        return Refusal(Reason.empty_text, "text", "empty text (a comment with nothing to read is refused)")
    truncated = len(text) > limits.max_text_chars
    if truncated:
        text = text[: limits.max_text_chars]
    # The language is detected later, only for what gets published (reposts cost no detection).
    if source == draft.source and not truncated and removal == draft.removed:
        comment: CommentIn = draft  # already normal: most comments, and a copy per comment is not free
    else:
        # Fields are already validated; the copy only carries the normalised values.
        comment = draft.model_copy(update={"source": source, "text": text, "removed": removal})
    return Incoming(comment, Kind.removal if removal else kind, truncated, version_at)


def _future_message(at: datetime, now: datetime, limits: Limits) -> str:
    skew = limits.max_future_skew.total_seconds()
    return (f"dated {utc_text(at)}, more than {skew:g} s after the time it arrived ({utc_text(now)}): "
            "a comment cannot be written in the future")


def validation_refusals(exc: ValidationError, prefix: str = "") -> list[Refusal]:
    """One refusal per bad field, the field named as a path (`[3].created_at`), never a character position."""
    out = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        path = prefix.rstrip(".")
        for part in loc:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        out.append(Refusal(Reason.invalid, path or None, error_message(err)))
    return out


def one_refusal(refusals: Sequence[Refusal]) -> Refusal:
    """Every bad field of one record in one refusal: a record is rejected once, and names all it lacks."""
    if len(refusals) == 1:
        return refusals[0]
    by_message: dict[str, list[str]] = {}
    for r in refusals:
        by_message.setdefault(r.message, []).append(r.field or "(record)")
    fields = [r.field or "(record)" for r in refusals]
    message = "; ".join(f"{', '.join(names)}: {msg}" for msg, names in by_message.items())
    return Refusal(refusals[0].reason, ", ".join(dict.fromkeys(fields)), message)


# --- dedup decision -----------------------------------------------------------------------------------


def content_hash(comment: CommentIn) -> str:
    """Fingerprint of what a reader sees; a different fingerprint for the same id is an edit."""
    return hashlib.sha256(comment.text.encode("utf-8")).hexdigest()


def group_by_id(items: Sequence[Incoming]) -> dict[str, list[Incoming]]:
    """The batch's versions of each comment, in arrival order; comments in first-seen order."""
    out: dict[str, list[Incoming]] = {}
    for item in items:
        out.setdefault(comment_id_for(item.comment.source, item.comment.external_id), []).append(item)
    return out


def decide_versions(comment_id: str, versions: Sequence[Incoming], seen: Seen | None) -> list[Decision]:
    """Decide each version in turn, as if they had come one by one: an add, its edit and its removal in
    one batch give three messages, so downstream keeps the history (the playbook never deletes)."""
    out = []
    state = seen
    for item in versions:
        d = decide(comment_id, item, state)
        out.append(d)
        if d.outcome in CHANGES:
            state = Seen(d.content_hash, d.revision, d.outcome is Outcome.removed, d.version_at)
    return out


def final_state(decisions: Sequence[Decision]) -> Decision | None:
    """The last decision that changed something: what the dedup record must now say."""
    changed = [d for d in decisions if d.outcome in CHANGES]
    return changed[-1] if changed else None


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def decide(comment_id: str, incoming: Incoming, seen: Seen | None) -> Decision:
    """Whether an incoming comment is new, an edit, a removal, a repost of what was already published, or an
    edit older than the version already applied (stale)."""
    digest = content_hash(incoming.comment)
    removal = incoming.kind is Kind.removal
    at = incoming.version_at
    if seen is None:
        # A removal of a comment never seen still counts: downstream may hold it from another path.
        return Decision(comment_id, Outcome.removed if removal else Outcome.created, 1, digest, at)
    # A pruned record has no fingerprint left; the incoming one keeps the message ids distinct.
    known = seen.content_hash or digest
    if removal:
        # Never stale: a removal is applied whatever its date, since losing one would keep showing a comment
        # its author or the page took down.
        if seen.removed:
            return Decision(comment_id, Outcome.duplicate, seen.revision, known, seen.version_at)
        return Decision(comment_id, Outcome.removed, seen.revision + 1, known, _latest(seen.version_at, at))
    if incoming.kind is Kind.first:
        # Meta's `add` is the first version: arriving after anything else, it is a retry (or out of order).
        return Decision(comment_id, Outcome.duplicate, seen.revision, known, seen.version_at)
    if at is not None and seen.version_at is not None:
        if at < seen.version_at:  # a replayed or late edit: applying it would roll the text back
            return Decision(comment_id, Outcome.stale, seen.revision, known, seen.version_at)
        if at == seen.version_at and seen.content_hash is None:
            # The version last applied, replayed after its fingerprint was pruned: nothing newer to publish.
            return Decision(comment_id, Outcome.duplicate, seen.revision, known, seen.version_at)
    if digest == seen.content_hash and not seen.removed:
        return Decision(comment_id, Outcome.duplicate, seen.revision, digest, seen.version_at)
    return Decision(comment_id, Outcome.edited, seen.revision + 1, digest, _latest(seen.version_at, at))


def message_id_for(decision: Decision, action: CommentAction) -> str:
    """Stable per comment version; the content hash keeps ids distinct whatever was pruned."""
    return derived_id(COMMENTS_TOPIC, decision.comment_id, str(decision.revision), action.value,
                      decision.content_hash[:16])


_COMMENT_IN_FIELDS = tuple(CommentIn.model_fields)
_ACTIONS = {Outcome.created: CommentAction.created, Outcome.edited: CommentAction.edited,
            Outcome.removed: CommentAction.removed}


def needs_language(incoming: Incoming) -> bool:
    """Whether ingest must detect the language: the source gave none and there is a text to read."""
    return incoming.comment.lang is None and incoming.kind is not Kind.removal


def to_message(incoming: Incoming, decision: Decision, now: datetime, lang: str | None = None) -> CommentMessage:
    """The normalised comment for `terrain.comments.v1`; `lang` (detected) applies when the source gave none."""
    action = _ACTIONS[decision.outcome]
    src = incoming.comment
    fields: dict[str, Any] = {name: getattr(src, name) for name in _COMMENT_IN_FIELDS}
    if needs_language(incoming):
        fields["lang"] = lang
    fields.update(comment_id=decision.comment_id, revision=decision.revision, action=action,
                  text_truncated=incoming.truncated)
    # Validated from the received comment's attributes rather than from its dump: pydantic's validator is
    # cheaper than `model_dump` (and than `model_construct`), and the message is still checked against the
    # contract.
    return CommentMessage.model_validate({
        "message_id": message_id_for(decision, action),
        "occurred_at": src.created_at if action is CommentAction.created else now,
        "producer": PRODUCER,
        "comment": Comment.model_validate(fields),
    })


# --- retention ----------------------------------------------------------------------------------------


def prune_cutoff(now: datetime, retention: timedelta) -> datetime:
    """Content hashes of comments last changed before this instant may go: longer ago than any retry or
    redelivery. The comment's row stays (its id, revision and version time), so it is never new again."""
    return now - retention
