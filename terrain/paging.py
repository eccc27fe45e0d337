"""Paged lists: an opaque cursor naming the row a page ended on (keyset paging), and the page limits."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from terrain.http import invalid_request

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_CURSOR_CHARS = 500

CURSOR_DESCRIPTION = "The `next` of the previous page: the page after it (opaque; give it as it came)."
LIMIT_DESCRIPTION = f"Items per page ({DEFAULT_LIMIT} by default, at most {MAX_LIMIT})."


class BadCursor(ValueError):
    """A cursor this list did not give: why, in one sentence."""


def encode(list_name: str, at: datetime, row_id: str) -> str:
    """The cursor after the row (`at`, `row_id`) of a list ordered by time then id, newest first. It names its
    list, so a cursor of another list is refused rather than misread."""
    raw = json.dumps([list_name, at.isoformat(), row_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _storable(value: Any) -> bool:
    """A string PostgreSQL can compare: no NUL, no lone surrogate (JSON can spell both)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def decode(list_name: str, cursor: str) -> tuple[datetime, str]:
    """(time, id) of the row the previous page ended on; raises BadCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found: Any = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        raise BadCursor("not a cursor this API gave (give a page's `next` as it came)") from None
    if not isinstance(found, list) or len(found) != 3 or not all(_storable(v) for v in found):
        raise BadCursor("not a cursor this API gave (give a page's `next` as it came)")
    name, at_text, row_id = found
    if name != list_name:
        raise BadCursor(f"a cursor of the {name[:40]!r} list, not of {list_name!r}")
    at: datetime | None
    try:
        parsed = datetime.fromisoformat(at_text)
        # In UTC, as the database compares it (an instant at the calendar's end with an offset has no UTC form).
        at = parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):
        at = None
    if at is None:
        raise BadCursor("not a cursor this API gave (give a page's `next` as it came)")
    return at, row_id


def after(list_name: str, cursor: str | None, offset: int = 0) -> tuple[datetime, str] | None:
    """The decoded cursor of a request, or the 422 that names the parameter. A request pages by cursor or by
    offset (kept for older clients), not both at once. An empty cursor is the first page."""
    if not cursor:
        return None
    if offset:
        raise invalid_request([{"field": "offset", "message": "give cursor or offset, not both"}])
    try:
        return decode(list_name, cursor)
    except BadCursor as exc:
        raise invalid_request([{"field": "cursor", "message": str(exc)}]) from None
