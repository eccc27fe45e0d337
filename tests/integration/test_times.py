"""One rule for times, on the real broker and PostgreSQL: what the APIs answer and the topics carry is in UTC
with `Z`, whatever offset a comment or a request came with; what people read names its zone."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from services.escalation.app import EscalationSettings, build_app
from services.events.app import EventsSettings
from services.events.app import build_app as build_events_app
from tests.conftest import running
from tests.integration.test_escalation import COMMUNITY, SCORED, created, incidents, scored, wait_for
from tests.kafka_helpers import consume, produce

pytestmark = pytest.mark.integration

PARIS_WINTER = timezone(timedelta(hours=1))
# An instant written out anywhere in a document: a value, or inside a sentence.
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)?")


def at_plus_one(document: Any) -> Any:
    """The document with every instant written at +01:00, as another producer (a French platform) may write it."""
    def move(match: re.Match[str]) -> str:
        return datetime.fromisoformat(match.group()).astimezone(PARIS_WINTER).isoformat()

    return json.loads(INSTANT.sub(move, json.dumps(document)))


def instants(document: Any) -> list[str]:
    text = document if isinstance(document, str) else json.dumps(document, ensure_ascii=False)
    return INSTANT.findall(text)


def not_utc(document: Any) -> list[str]:
    found = instants(document)
    assert found, "no time in the document: the check would pass on anything"
    return [t for t in found if not t.endswith("Z")]


async def test_escalation_answers_and_publishes_times_in_utc_and_names_the_zone_people_read(
    settings_kwargs: dict[str, Any], topic_overrides: dict[str, str], kafka_bootstrap: str
) -> None:
    app = build_app(EscalationSettings(**settings_kwargs), topic_overrides=topic_overrides)
    # Comments written at +01:00 (as a French platform or a person would send them): a cascade pages someone.
    messages = [at_plus_one(scored(f"n{i}", at=created(10 - i))) for i in range(3)]
    assert all(m["comment"]["created_at"].endswith("+01:00") for m in messages)
    async with running(app) as client:
        await produce(kafka_bootstrap, topic_overrides[SCORED], [(COMMUNITY, m) for m in messages])

        async def escalated() -> list[dict[str, Any]]:
            return await incidents(client, level="human")

        inc = (await wait_for(escalated, "the cascade to escalate"))[0]
        starts = (datetime.now(UTC) + timedelta(hours=2)).astimezone(PARIS_WINTER)
        silence = await client.post("/v1/silences", json={
            "matchers": {"community_id": "elsewhere"}, "comment": "travaux", "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(hours=1)).isoformat()})
        assert silence.status_code == 201, silence.text
        note = await client.post(f"/v1/incidents/{inc['id']}/notes", json={"text": "on s'en occupe"})
        assert note.status_code == 201, note.text
        listed = await incidents(client)
        detail = (await client.get(f"/v1/incidents/{inc['id']}")).json()
        silences = (await client.get("/v1/silences")).json()
    for name, document in (("list", listed), ("detail", detail), ("silence", silence.json()),
                           ("silences", silences), ("note", note.json())):
        assert not_utc(document) == [], name
    published = [
        *await consume(kafka_bootstrap, topic_overrides["terrain.incidents.v1"], expect=3, settle_s=0.5),
        *await consume(kafka_bootstrap, topic_overrides["terrain.escalations.v1"], expect=1, settle_s=0.5),
    ]
    for record in published:
        assert not_utc(record.value.decode()) == []
    # People read the deadline with its zone: Paris time named for French, UTC for English.
    page = next(a for a in detail["recommended_actions"] if a.startswith("Alerter"))
    assert re.search(r"avant le \d\d/\d\d/\d{4} \d\d:\d\d (CET|CEST)\b", page), page


async def test_events_answers_times_in_utc_whatever_offset_the_request_gave(
    settings_kwargs: dict[str, Any], topic_overrides: dict[str, str]
) -> None:
    app = build_events_app(EventsSettings(**settings_kwargs), topic_overrides=topic_overrides)
    event = {"community_id": "voyageurs", "kind": "apero", "title": "Apéro",
             "starts_at": "2026-11-20T18:00:00+01:00", "ends_at": "2026-11-20T21:00:00+01:00", "location": "Lyon",
             "outcome": {"attendees": 12, "result": "success"}}
    async with running(app) as client:
        posted = await client.post("/v1/events", json=event)
        assert posted.status_code in (200, 201), posted.text
        event_id = posted.json()["id"]
        got = (await client.get(f"/v1/events/{event_id}")).json()
        history = (await client.get(f"/v1/events/{event_id}/history")).json()
    assert posted.json()["starts_at"] == got["starts_at"] == "2026-11-20T17:00:00Z"
    for name, document in (("post", posted.json()), ("get", got), ("history", history)):
        assert not_utc(document) == [], name

