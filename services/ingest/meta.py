"""Meta Graph webhooks, pure: the hub.challenge handshake, the X-Hub-Signature-256 check, deliveries as comments.

A delivery is `{"object": "page"|"instagram", "entry": [{"id", "time", "changes": [{"field", "value"}]}]}`;
Meta batches several entries and changes in one delivery.
- Facebook Page `feed` changes with `value.item == "comment"`: verb `add` (first version), `edited`
  (an edit), `remove` / `hide` (a removal); `comment_id`, `post_id`, `parent_id` (equal to the post id
  for a top-level comment), `from {id, name}`, `message`, `created_time` (Unix time or ISO string).
- Instagram `comments` / `live_comments`: `id`, `text`, `from {id, username}`, `media {id}`, `parent_id`;
  no creation time, so the entry's `time` stands for it.
- community id = `entry[].id` (the Page or Instagram account); thread id = the post or media id.
- Everything else (reactions, likes, shares, posts, other fields or objects) is counted as an engagement
  signal and otherwise ignored: an unexpected item must never fail a delivery Meta would then retry.
- A change's time (`created_time`, else the entry's `time`) orders the comment's versions: an `edited`
  change older than the version already applied is stale (domain.decide). A time further ahead than the
  allowed clock skew refuses the change (`future_timestamp`), naming the field it came from.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from services.ingest.domain import CommentDraft, Incoming, Kind, Limits, Reason, Refusal, screen, validation_refusals

SIGNATURE_HEADER = "x-hub-signature-256"
SIGNATURE_PREFIX = "sha256="

# Engagement signals, a fixed set (they label a metric).
SIGNAL_KINDS = ("reaction", "like", "share", "post", "mention", "other")
_FEED_ITEM_SIGNALS = {"reaction": "reaction", "like": "like", "share": "share", "status": "post", "post": "post",
                      "photo": "post", "video": "post", "link": "post", "event": "post", "album": "post"}
_VERBS = {"add": Kind.first, "edited": Kind.upsert, "edit": Kind.upsert, "update": Kind.upsert,
          "remove": Kind.removal, "delete": Kind.removal, "hide": Kind.removal, "unhide": Kind.upsert}


class SignatureCheck(StrEnum):
    ok = "ok"
    missing = "missing"
    malformed = "malformed"
    mismatch = "mismatch"


def sign(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 value Meta sends for this body."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> SignatureCheck:
    """Check the raw body's HMAC-SHA256 against the header, in constant time, before anything parses the body."""
    if not header:
        return SignatureCheck.missing
    header = header.strip()
    if not header.startswith(SIGNATURE_PREFIX) or len(header) != len(SIGNATURE_PREFIX) + 64:
        return SignatureCheck.malformed
    expected = sign(body, secret).encode()
    return SignatureCheck.ok if hmac.compare_digest(expected, header.lower().encode()) else SignatureCheck.mismatch


def handshake(params: Mapping[str, str], verify_token: str | None) -> str | None:
    """The challenge to echo when Meta's subscription request carries our verify token, else None (403)."""
    challenge = params.get("hub.challenge")
    token = params.get("hub.verify_token")
    if not verify_token or params.get("hub.mode") != "subscribe" or token is None or challenge is None:
        return None
    return challenge if hmac.compare_digest(token.encode(), verify_token.encode()) else None


@dataclass
class RefusedChange:
    refusal: Refusal
    community_id: str
    delivery: dict[str, Any]  # a one-change delivery, replayable with `terrain import`


@dataclass
class Parsed:
    items: list[Incoming] = field(default_factory=list)
    refused: list[RefusedChange] = field(default_factory=list)
    signals: Counter[str] = field(default_factory=Counter)
    changes: int = 0


def count_changes(payload: Any) -> int:
    """How many changes a delivery carries (the per-delivery limit counts these)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        return 0
    n = 0
    for entry in payload["entry"]:
        if isinstance(entry, dict):
            changes = entry.get("changes")
            n += len(changes) if isinstance(changes, list) else int("field" in entry)
    return n


def is_delivery(payload: Any) -> bool:
    """Whether a decoded JSON value looks like a Meta webhook delivery (for archives of deliveries)."""
    return isinstance(payload, dict) and "object" in payload and isinstance(payload.get("entry"), list)


def parse_delivery(payload: Any, limits: Limits, now: datetime | None = None) -> Parsed | Refusal:
    """Every comment change of a delivery, screened; what cannot be read is refused per change, with a reason.
    `now` (the caller's clock) refuses changes dated in the future; None skips that check."""
    if not isinstance(payload, dict):
        return Refusal(Reason.invalid, None, "a Meta delivery is a JSON object")
    entries = payload.get("entry")
    if not isinstance(entries, list):
        return Refusal(Reason.invalid, "entry", "expected a list of entries")
    obj = payload.get("object")
    out = Parsed()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        changes = entry.get("changes")
        if not isinstance(changes, list):
            # Some deliveries put one change's field/value on the entry itself.
            changes = [{"field": entry.get("field"), "value": entry.get("value")}] if "field" in entry else []
        for j, change in enumerate(changes):
            out.changes += 1
            path = f"entry[{i}].changes[{j}]"
            result = _read_change(obj, entry, change, path, limits, now)
            if isinstance(result, Incoming):
                out.items.append(result)
            elif isinstance(result, Refusal):
                one = {k: v for k, v in entry.items() if k != "changes"}
                out.refused.append(RefusedChange(result, str(entry.get("id") or ""),
                                                 {"object": obj, "entry": [{**one, "changes": [change]}]}))
            else:
                out.signals[result] += 1
    return out


def _read_change(
    obj: Any, entry: dict[str, Any], change: Any, path: str, limits: Limits, now: datetime | None
) -> Incoming | Refusal | str:
    """An Incoming comment, a Refusal, or the engagement-signal kind the change counts as."""
    if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
        return "other"
    fld, value = change.get("field"), change["value"]
    if obj == "page" and fld == "feed":
        item = value.get("item")
        if item != "comment":
            return _FEED_ITEM_SIGNALS.get(str(item), "other")
        return _page_comment(entry, value, path, limits, now)
    if obj == "instagram" and fld in ("comments", "live_comments"):
        return _instagram_comment(entry, value, path, limits, now)
    if obj == "instagram" and fld == "mentions":
        return "mention"
    return "other"


# More digits than any Unix time in milliseconds has for ten thousand years: not a time (and int() of a
# string of over 4,300 digits raises).
_MAX_TIME_DIGITS = 15


def _time(value: Any) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdecimal():  # not isdigit: int("²") raises
        digits = value.strip()
        if len(digits) > _MAX_TIME_DIGITS:
            return None
        value = int(digits)
    if isinstance(value, int | float):
        try:
            seconds = value / 1000 if value > 100_000_000_000 else value  # milliseconds in some fields
            return datetime.fromtimestamp(seconds, UTC)
        except (ValueError, OverflowError, OSError):  # NaN, an integer too large for a float, or a year no
            return None  # calendar here holds: not a time
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _build(
    raw: dict[str, Any], kind: Kind, path: str, limits: Limits, now: datetime | None, time_field: str
) -> Incoming | Refusal:
    """Screen one change read as a comment; `time_field` is the path of the Meta field its time came from."""
    try:
        draft = CommentDraft.model_validate(raw)
    except ValidationError as exc:
        return validation_refusals(exc, prefix=path + ".")[0]
    result = screen(draft, limits, kind, now, version_at=draft.created_at)
    if isinstance(result, Refusal):
        if result.reason is Reason.future_timestamp:  # name Meta's field, not ours
            return Refusal(result.reason, time_field, result.message)
        return Refusal(result.reason, f"{path}.{result.field}" if result.field else path, result.message)
    return result


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and str(value) else None


def _entry_path(path: str) -> str:
    """`entry[2].changes[0]` -> `entry[2]`."""
    return path.rsplit(".changes[", 1)[0]


def _page_comment(
    entry: dict[str, Any], value: dict[str, Any], path: str, limits: Limits, now: datetime | None
) -> Incoming | Refusal | str:
    verb = str(value.get("verb") or "add")
    kind = _VERBS.get(verb)
    message = value.get("message")
    if kind is None or (verb == "unhide" and not message):
        return "other"  # block, mute, follow…; an unhide without its text has nothing to republish
    comment_id = _id(value.get("comment_id"))
    if comment_id is None:
        return Refusal(Reason.invalid, f"{path}.value.comment_id", "missing")
    post_id = _id(value.get("post_id"))
    community = _id(entry.get("id"))
    if post_id is None and community and "_" in comment_id:
        # Comment ids are "<post number>_<comment number>", post ids "<page id>_<post number>".
        post_id = f"{community}_{comment_id.split('_', 1)[0]}"
    parent = _id(value.get("parent_id"))
    author = _obj(value.get("from"))
    created = _time(value.get("created_time"))
    time_field = f"{path}.value.created_time"
    if created is None:
        created, time_field = _time(entry.get("time")), f"{_entry_path(path)}.time"
    raw = {
        "source": "facebook", "external_id": comment_id, "community_id": community, "thread_id": post_id,
        "parent_id": parent if parent != post_id else None,
        "author_id": _id(author.get("id")), "author_name": author.get("name"),
        "text": message if isinstance(message, str) else "", "created_at": created,
        "removed": kind is Kind.removal,
    }
    return _build(raw, kind, path + ".value", limits, now, time_field)


def _instagram_comment(
    entry: dict[str, Any], value: dict[str, Any], path: str, limits: Limits, now: datetime | None
) -> Incoming | Refusal:
    comment_id = _id(value.get("id"))
    if comment_id is None:
        return Refusal(Reason.invalid, f"{path}.value.id", "missing")
    media = _obj(value.get("media"))
    author = _obj(value.get("from"))
    text = value.get("text")
    raw = {
        "source": "instagram", "external_id": comment_id, "community_id": _id(entry.get("id")),
        "thread_id": _id(media.get("id")), "parent_id": _id(value.get("parent_id")),
        "author_id": _id(author.get("id")), "author_name": author.get("username"),
        "text": text if isinstance(text, str) else "", "created_at": _time(entry.get("time")),
    }
    return _build(raw, Kind.upsert, path + ".value", limits, now, f"{_entry_path(path)}.time")
