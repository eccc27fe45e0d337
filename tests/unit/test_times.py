"""The rule for times: API and message JSON in UTC with `Z`; what people read names its zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from pydantic import BaseModel

from services.escalation import render
from terrain.contracts.base import AwareDatetime, utc_text

PARIS_WINTER = timezone(timedelta(hours=1))


def test_people_read_a_deadline_with_its_zone_named() -> None:
    winter, summer = datetime(2026, 11, 25, 12, 15, tzinfo=UTC), datetime(2026, 7, 1, 12, 15, tzinfo=UTC)
    assert render.when(winter, "fr") == "25/11/2026 13:15 CET"
    assert render.when(summer, "fr") == "01/07/2026 14:15 CEST"  # daylight saving: its own name
    assert render.when(winter, "en") == "2026-11-25 12:15 UTC"


def test_an_instant_is_written_in_utc_with_z_whatever_its_offset() -> None:
    at = datetime(2026, 11, 25, 13, 15, 7, 250000, tzinfo=PARIS_WINTER)
    assert utc_text(at) == "2026-11-25T12:15:07.250000Z"
    assert utc_text(at.astimezone(UTC)) == utc_text(at)

    class Model(BaseModel):
        at: AwareDatetime

    m = Model(at=at)
    assert m.model_dump_json() == '{"at":"2026-11-25T12:15:07.250000Z"}'
    assert m.model_dump(mode="json") == {"at": "2026-11-25T12:15:07.250000Z"}
    assert m.at == at and m.model_dump()["at"].utcoffset() == timedelta(hours=1)  # the value itself is kept
