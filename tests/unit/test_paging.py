"""List cursors: what a page gives back reads back the same; anything else is a BadCursor (a 422), never a crash
or a value the database cannot compare."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terrain import paging
from terrain.http import HTTPRefusal


@given(at=st.datetimes(timezones=st.timezones()), row_id=st.text(st.characters(blacklist_categories=["Cs"],
                                                                             blacklist_characters="\x00")))
def test_a_cursor_reads_back_as_the_instant_and_id_it_names(at: datetime, row_id: str) -> None:
    try:
        utc = at.astimezone(UTC)
    except OverflowError:
        return  # an instant at the calendar's end with an offset: no such row is ever stored
    assert paging.decode("incidents", paging.encode("incidents", at, row_id)) == (utc, row_id)


def _raw(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


FORGED = [
    ("not base64 JSON", "not-a-cursor"),
    ("another list's", paging.encode("silences", datetime(2026, 1, 1, tzinfo=UTC), "s-1")),
    ("a naive time", _raw(["incidents", "2026-01-01T00:00:00", "i-1"])),
    ("not a time", _raw(["incidents", "yesterday", "i-1"])),
    ("a NUL in the id", _raw(["incidents", "2026-01-01T00:00:00+00:00", "i\x00"])),
    ("a lone surrogate", base64.urlsafe_b64encode(b'["incidents","2026-01-01T00:00:00+00:00","\\ud800"]').decode()),
    ("past the calendar in UTC", _raw(["incidents", "9999-12-31T23:59:59-01:00", "i-1"])),
    ("a number for the id", _raw(["incidents", "2026-01-01T00:00:00+00:00", 7])),
    ("two parts", _raw(["incidents", "2026-01-01T00:00:00+00:00"])),
    ("an object", _raw({"at": "2026-01-01T00:00:00+00:00"})),
]


@pytest.mark.parametrize(("case", "cursor"), FORGED, ids=[c for c, _ in FORGED])
def test_a_cursor_the_api_did_not_give_is_refused(case: str, cursor: str) -> None:
    with pytest.raises(paging.BadCursor):
        paging.decode("incidents", cursor)
    with pytest.raises(HTTPRefusal) as refused:
        paging.after("incidents", cursor)
    assert refused.value.status_code == 422 and refused.value.fields["errors"][0]["field"] == "cursor"


@given(st.text(max_size=paging.MAX_CURSOR_CHARS))
def test_any_text_decodes_or_is_a_bad_cursor(text: str) -> None:
    try:
        at, row_id = paging.decode("incidents", text)
    except paging.BadCursor:
        return
    assert at.tzinfo is not None and at.utcoffset() == timedelta(0) and "\x00" not in row_id


def test_cursor_and_offset_together_are_refused_naming_offset() -> None:
    cursor = paging.encode("incidents", datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))), "i-1")
    assert paging.after("incidents", cursor, 0) == (datetime(2025, 12, 31, 22, tzinfo=UTC), "i-1")
    assert paging.after("incidents", None, 40) is None  # offset alone: the caller pages by offset
    assert paging.after("incidents", "", 0) is None  # `?cursor=` with nothing: the first page
    with pytest.raises(HTTPRefusal) as refused:
        paging.after("incidents", cursor, 40)
    assert refused.value.fields["errors"][0]["field"] == "offset"
