"""Who may do what on the events service, against the real service, PostgreSQL and broker: every route × every
role × an event in or out of the caller's scope; every route declares its permission; no list returns a row outside
the caller's scope, whatever the scopes and communities; the impact compares only with communities in scope; lists
page by cursor and count; repeated commands say they changed nothing; a visit is not scheduled in the past."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.events.app import EventsSettings, build_app
from terrain import paging
from terrain.access import store
from terrain.access.deps import route_permission
from terrain.access.model import Permission, Role, Scope
from terrain.topics import all_topic_names
from tests.access_helpers import ACT, READ, tokens_for_every_role

pytestmark = pytest.mark.integration

IN, OUT = "c-in", "c-out"
TOKEN = "test-token"


def soon(days: float = 3) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@dataclass
class Service:
    app: Any
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    tokens: dict[Role, str] = field(default_factory=dict)

    async def call(self, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def visit(self, community: str, **kw: Any) -> str:
        """A requested field visit of `community`, logged by the bootstrap admin; its id."""
        event_id = f"v-{uuid.uuid4().hex[:12]}"
        body = {"id": event_id, "community_id": community, "kind": "field_visit", "title": "Visite",
                "starts_at": soon(), "status": "requested", **kw}
        r = await self.call("POST", "/v1/events", TOKEN, json=body)
        assert r.status_code == 201, r.text
        return event_id

    async def row(self, event_id: str) -> tuple[Any, ...]:
        """What an action would change: status, start, assignee, result and the number of kept steps."""
        got = await self.pool.fetchrow(
            """SELECT status, starts_at, assignee, result,
                      (SELECT count(*) FROM events_transitions WHERE event_id = $1) AS steps
               FROM events_log WHERE id = $1""", event_id)
        return tuple(got) if got is not None else ()

    async def actors(self, event_id: str) -> list[str]:
        rows = await self.pool.fetch("SELECT actor FROM events_transitions WHERE event_id = $1 ORDER BY seq", event_id)
        return [r["actor"] for r in rows]


@pytest.fixture(scope="module")
async def service(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Service]:
    """One events service for the module (its own schema and topics) and a key of each role, scoped to c-in."""
    unique = uuid.uuid4().hex[:10]
    schema = f"t_{unique}"
    conn = await asyncpg.connect(database_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    sep = "&" if "?" in database_url else "?"
    cfg = EventsSettings(
        kafka_bootstrap_servers=kafka_bootstrap, database_url=f"{database_url}{sep}search_path={schema}",
        api_token=TOKEN, kafka_session_timeout_ms=6000, kafka_heartbeat_interval_ms=500, batch_timeout_ms=50,
        kafka_client_id=f"terrain-test-{unique}", kafka_group_prefix=f"terrain-test-{unique}", access_cache_s=0,
    )
    app = build_app(cfg, topic_overrides={name: f"{name}.t{unique}" for name in all_topic_names()})
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                svc = Service(app, client, app.state.runtime.pool)
                svc.tokens.update(await tokens_for_every_role(svc.pool, IN))
                yield svc
    finally:
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


# --- every route × every role × in / out of scope ---------------------------------------------------------



@dataclass(frozen=True)
class Case:
    """One route: who may call it, its answer on an event in scope and on one out of scope."""

    name: str
    method: str
    path: str
    roles: set[Role]
    in_scope: int
    out_of_scope: int
    body: dict[str, Any] | None = None


ROUTES = [
    # Out of scope: an empty list and a total of 0, whatever the filter names.
    Case("list a community", "GET", "/v1/events", READ, 200, 200),
    # Out of scope: the event is not among them.
    Case("list", "GET", "/v1/events", READ, 200, 200),
    # Out of scope: 404, exactly as for an id that does not exist.
    Case("detail", "GET", "/v1/events/{id}", READ, 200, 404),
    Case("history", "GET", "/v1/events/{id}/history", READ, 200, 404),
    Case("impact", "GET", "/v1/events/{id}/impact", READ, 200, 404),
    # Logging for a community out of scope: 403 out_of_scope (the caller named it: nothing to hide).
    Case("log", "POST", "/v1/events", ACT, 201, 403),
    # An action on an event out of scope: 404 as for one that does not exist, and nothing changes.
    Case("schedule", "POST", "/v1/events/{id}/schedule", ACT, 200, 404, {"starts_at": "+", "assignee": "Lina"}),
    Case("assign", "POST", "/v1/events/{id}/assign", ACT, 200, 404, {"assignee": "Sam"}),
    Case("close", "POST", "/v1/events/{id}/close", ACT, 200, 404, {"outcome": {"result": "resolved"}}),
    Case("cancel", "POST", "/v1/events/{id}/cancel", ACT, 200, 404, {"note": "le gérant annule"}),
]
CALLERS: list[Role | None] = [*Role, None]


def _body(case: Case) -> dict[str, Any] | None:
    if case.body is None:
        return None
    # A name in the body is accepted and ignored.
    return {**{k: (soon(5) if v == "+" else v) for k, v in case.body.items()}, "actor": "mallory"}


async def _call(svc: Service, case: Case, token: str | None, community: str, event_id: str) -> tuple[httpx.Response,
                                                                                                     str]:
    """Call the route on the event `event_id` of `community`; the answer and the id of the event it concerns."""
    if case.name == "log":
        body = {"id": f"e-{uuid.uuid4().hex[:12]}", "community_id": community, "kind": "meetup",
                "title": "Apéro", "starts_at": soon(), "actor": "mallory"}
        return await svc.call("POST", "/v1/events", token, json=body), body["id"]
    if case.name.startswith("list"):
        params = {"community_id": community} if case.name == "list a community" else {"limit": 500}
        return await svc.call("GET", "/v1/events", token, params=params), event_id
    return await svc.call(case.method, case.path.format(id=event_id), token, json=_body(case)), event_id


@pytest.mark.parametrize("scope", ["in", "out"])
@pytest.mark.parametrize("role", CALLERS, ids=lambda r: r.value if r else "no-credential")
@pytest.mark.parametrize("case", ROUTES, ids=lambda c: c.name.replace(" ", "-"))
async def test_route_by_role_and_scope(service: Service, case: Case, role: Role | None, scope: str) -> None:
    community = IN if scope == "in" else OUT
    token = service.tokens[role] if role else None
    event_id = await service.visit(community)
    before = await service.row(event_id)
    r, target = await _call(service, case, token, community, event_id)
    expected = 401 if role is None else 403 if role not in case.roles else (
        case.in_scope if scope == "in" else case.out_of_scope)
    assert r.status_code == expected, f"{case.name} as {role} on an event {scope} of scope: {r.status_code} {r.text}"
    served = r.status_code < 300
    if case.name.startswith("list"):
        ids = [i["id"] for i in r.json()["items"]] if served else []
        # Its own event in scope is listed; one out of scope never is (and is not counted).
        assert (event_id in ids) is (served and scope == "in"), (case.name, role, scope)
        if served:
            assert all(i["community_id"] == IN for i in r.json()["items"]) and r.json()["total"] == len(ids)
        if case.name == "list a community" and served and scope == "out":
            assert r.json() == {"items": [], "total": 0, "next": None}
    elif served:
        assert community == IN and OUT not in r.text
    elif r.status_code == 404:
        # Word for word the answer for an event that does not exist.
        missing = await service.call(case.method, case.path.format(id="no-such-event"), service.tokens[Role.admin],
                                     json=_body(case))
        assert missing.status_code == 404 and r.text == missing.text.replace("no-such-event", event_id)
    if case.method == "POST" and case.name != "log":
        # Refused or out of scope: the event is as it was.
        assert (await service.row(event_id) != before) is served
    if case.name == "log" and not served:
        assert await service.row(target) == ()
    if served and case.method == "POST":
        # Done by the key's name, never the body's.
        assert r.json()["changed"] is True
        assert (await service.actors(target))[-1] == f"key:{role.value}-key"  # type: ignore[union-attr]


def test_every_route_declares_its_permission_or_is_public() -> None:
    app = build_app(EventsSettings(api_token=TOKEN))
    public = app.state.http_edge.public
    declared = {(m, r.path): route_permission(r) for r in app.routes if isinstance(r, APIRoute)
                for m in r.methods if r.path not in public and r.path not in ("/docs", "/openapi.json")}
    assert declared == {
        ("POST", "/v1/events"): Permission.act,
        ("GET", "/v1/events"): Permission.read,
        ("GET", "/v1/events/{event_id}"): Permission.read,
        ("GET", "/v1/events/{event_id}/history"): Permission.read,
        ("GET", "/v1/events/{event_id}/impact"): Permission.read,
        ("POST", "/v1/events/{event_id}/schedule"): Permission.act,
        ("POST", "/v1/events/{event_id}/assign"): Permission.act,
        ("POST", "/v1/events/{event_id}/close"): Permission.act,
        ("POST", "/v1/events/{event_id}/cancel"): Permission.act,
    }


# --- no list returns a row outside the scope ---------------------------------------------------------------

VOCABULARY = ["resto-lyon", "resto-paris", "resto_x", "restoXlyon", "resto%", "bistro", "b", "r-1"]
ENTRIES = st.one_of(
    st.sampled_from(VOCABULARY),
    st.sampled_from(["resto-*", "resto_*", "resto%*", "resto*", "b*", "r*", "x*"]),
)
SCOPES = st.one_of(st.just("*"), st.lists(ENTRIES, min_size=1, max_size=4).map(",".join))
# A few starts only, so that pages often end between two events of the same start (the id breaks the tie).
STARTS = [datetime(2026, 12, 20, 18, 0, tzinfo=UTC) + timedelta(hours=h) for h in (0, 0, 1, 24)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(st.tuples(st.sampled_from(VOCABULARY), st.sampled_from(STARTS)), min_size=1, max_size=5),
    scope=SCOPES,
    role=st.sampled_from([Role.viewer, Role.service, Role.agent]),
    filter_community=st.one_of(st.none(), st.sampled_from(VOCABULARY)),
    limit=st.integers(min_value=1, max_value=7),
)
async def test_no_list_returns_a_row_outside_the_scope(
    service: Service, events: list[tuple[str, datetime]], scope: str, role: Role, filter_community: str | None,
    limit: int,
) -> None:
    for community, starts_at in events:
        r = await service.call("POST", "/v1/events", TOKEN, json={
            "id": f"p-{uuid.uuid4().hex[:10]}", "community_id": community, "kind": "apero", "title": "Apéro",
            "starts_at": starts_at.isoformat(), "status": "scheduled"})
        assert r.status_code == 201, r.text
    allowed = Scope.parse(scope)
    _, token = await store.create_key(service.pool, name=f"p-{uuid.uuid4().hex[:10]}", role=role, scope=allowed,
                                      created_by="test", expires_at=None)
    items: list[dict[str, Any]] = []
    totals: set[int] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"community_id": filter_community} if filter_community else {}),
                                  **({"cursor": cursor} if cursor else {})}
        r = await service.call("GET", "/v1/events", token, params=params)
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) <= limit
        items += r.json()["items"]
        totals.add(r.json()["total"])
        cursor = r.json()["next"]
        if cursor is None:
            break
    assert all(allowed.allows(i["community_id"]) for i in items), (scope, [i["community_id"] for i in items])
    # Nothing in scope is left out or given twice: the database's rows, judged by the scope itself.
    rows = await service.pool.fetch("SELECT id, community_id FROM events_log")
    expected = {r["id"] for r in rows if allowed.allows(r["community_id"])
                and filter_community in (None, r["community_id"])}
    assert sorted(i["id"] for i in items) == sorted(expected) and totals == {len(expected)}
    # The pages together keep the list's order: newest start first, then by id.
    keys = [(-datetime.fromisoformat(i["starts_at"]).timestamp(), i["id"]) for i in items]
    assert keys == sorted(keys)
    # An event's history is a list too: out of scope, there is none to see.
    some = rows[0]
    history = await service.call("GET", f"/v1/events/{some['id']}/history", token)
    assert history.status_code == (200 if allowed.allows(some["community_id"]) else 404)


# --- the impact compares only with communities in scope ----------------------------------------------------


async def test_the_impact_of_a_scoped_reader_compares_only_with_communities_in_its_scope(service: Service) -> None:
    event_at = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=30)
    r = await service.call("POST", "/v1/events", TOKEN, json={
        "id": "imp-event", "community_id": "imp-a", "kind": "apero", "title": "Apéro",
        "starts_at": event_at.isoformat(), "outcome": {"result": "success"}})
    assert r.status_code == 201 and r.json()["status"] == "done"
    # Daily engagement of the event's community, one comparable community in scope and one out of it (the
    # volumes tell them apart in the comparison's daily means).
    first = event_at.date() - timedelta(days=14)
    rows = [(community, first + timedelta(days=d), comments, comments // 2, 0.1 * comments * (1 + (d % 3)))
            for community, comments in (("imp-a", 20), ("imp-b", 10), ("zz-c", 30)) for d in range(29)]
    await service.pool.executemany(
        """INSERT INTO events_engagement_daily (community_id, day, comments, unique_authors, replies, reactions,
               positive, negative, sentiment_sum, updated_at) VALUES ($1, $2, $3, $4, 0, 0, $4, 0, $5, now())""",
        rows)
    _, token = await store.create_key(service.pool, name="imp-viewer", role=Role.viewer, scope=Scope.parse("imp-*"),
                                      created_by="test", expires_at=None)
    everything = (await service.call("GET", "/v1/events/imp-event/impact", TOKEN)).json()
    scoped = await service.call("GET", "/v1/events/imp-event/impact", token)
    assert everything["comparison_communities"] == ["imp-b", "zz-c"]
    assert everything["comparison_limited_to_scope"] is False
    assert scoped.status_code == 200
    report = scoped.json()
    assert report["comparison_communities"] == ["imp-b"] and report["comparison_limited_to_scope"] is True
    assert "zz-c" not in scoped.text
    # Every comparison number is imp-b's own: zz-c's volume (30 a day) is in no mean.
    volumes = {v for v in report["series"]["comparison"]["comments_mean"] if v is not None}
    assert volumes == {10.0}
    assert sum(report["excluded_communities"].values()) == 0
    outsider = await store.create_key(service.pool, name="imp-outsider", role=Role.viewer,
                                      scope=Scope.parse("zz-*"), created_by="test", expires_at=None)
    assert (await service.call("GET", "/v1/events/imp-event/impact", outsider[1])).status_code == 404


# --- lists: a total, a cursor, limits ----------------------------------------------------------------------


async def test_a_list_says_how_many_and_pages_by_cursor(service: Service) -> None:
    community = "page-1"
    at = datetime(2027, 1, 10, 18, 0, tzinfo=UTC)
    for i in range(55):
        # Pairs of events share a start: a page may end between them.
        r = await service.call("POST", "/v1/events", TOKEN, json={
            "id": f"page-{i:02d}", "community_id": community, "kind": "meetup", "title": f"Meetup {i}",
            "starts_at": (at - timedelta(hours=i // 2)).isoformat()})
        assert r.status_code == 201
    whole = await service.call("GET", "/v1/events", TOKEN, params={"community_id": community})
    body = whole.json()
    # The default page: 50 of 55, with a way to the rest.
    assert (len(body["items"]), body["total"]) == (50, 55) and body["next"]
    rest = (await service.call("GET", "/v1/events", TOKEN,
                               params={"community_id": community, "cursor": body["next"]})).json()
    assert [e["id"] for e in rest["items"]] == [f"page-{i:02d}" for i in range(50, 55)] and rest["next"] is None
    assert [e["id"] for e in body["items"]] == [f"page-{i:02d}" for i in range(50)]
    # A page that ends inside a pair of equal starts goes on with the other one.
    small = (await service.call("GET", "/v1/events", TOKEN, params={"community_id": community, "limit": 3})).json()
    after = (await service.call("GET", "/v1/events", TOKEN,
                                params={"community_id": community, "limit": 3, "cursor": small["next"]})).json()
    assert [e["id"] for e in small["items"] + after["items"]] == [f"page-{i:02d}" for i in range(6)]
    # Events added before the next page is read do not shift it (an offset would repeat one).
    await service.call("POST", "/v1/events", TOKEN, json={
        "id": "page-new", "community_id": community, "kind": "meetup", "title": "Nouveau",
        "starts_at": (at + timedelta(days=1)).isoformat()})
    again = (await service.call("GET", "/v1/events", TOKEN,
                                params={"community_id": community, "limit": 3, "cursor": small["next"]})).json()
    assert again["items"] == after["items"] and again["total"] == 56
    # offset still works for older clients.
    offset = (await service.call("GET", "/v1/events", TOKEN,
                                 params={"community_id": community, "limit": 2, "offset": 3})).json()
    assert [e["id"] for e in offset["items"]] == ["page-02", "page-03"]
    refusals = {
        "both": {"cursor": small["next"], "offset": 1},
        "garbled": {"cursor": "not-a-cursor"},
        "another list's": {"cursor": paging.encode("incidents", at, "inc-1")},
        "too many": {"limit": 501},
    }
    for what, params in refusals.items():
        r = await service.call("GET", "/v1/events", TOKEN, params={"community_id": community, **params})
        field_name = {"both": "offset", "too many": "query.limit"}.get(what, "cursor")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field_name, (what, r.text)


# --- repeated commands, the date rule, the actor ------------------------------------------------------------


async def test_a_repeated_command_says_it_changed_nothing_and_a_forbidden_one_names_the_status(
    service: Service,
) -> None:
    agent = service.tokens[Role.agent]
    visit = await service.visit(IN)
    when = soon(4)
    first = await service.call("POST", f"/v1/events/{visit}/schedule", agent, json={"starts_at": when})
    again = await service.call("POST", f"/v1/events/{visit}/schedule", agent, json={"starts_at": when})
    cancelled = await service.call("POST", f"/v1/events/{visit}/cancel", agent, json={"note": "pluie"})
    cancelled_again = await service.call("POST", f"/v1/events/{visit}/cancel", agent, json={"note": "pluie"})
    reschedule = await service.call("POST", f"/v1/events/{visit}/schedule", agent, json={"starts_at": when})
    assert (first.status_code, first.json()["changed"]) == (200, True)
    assert again.status_code == 200 and again.json() == {**first.json(), "changed": False}
    assert (cancelled.status_code, cancelled.json()["changed"]) == (200, True)
    assert cancelled_again.status_code == 200 and cancelled_again.json() == {**cancelled.json(), "changed": False}
    assert reschedule.status_code == 409 and reschedule.json()["state"] == "cancelled"
    assert "cancelled" in reschedule.json()["detail"]
    # Each change was kept once.
    assert len(await service.actors(visit)) == 3


async def test_a_visit_scheduled_in_the_past_is_refused_naming_the_field(service: Service) -> None:
    agent = service.tokens[Role.agent]
    visit = await service.visit(IN)
    before = await service.row(visit)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    past = await service.call("POST", f"/v1/events/{visit}/schedule", agent, json={"starts_at": yesterday})
    assert past.status_code == 422 and past.json()["errors"][0]["field"] == "starts_at"
    assert "in the past" in past.json()["detail"]
    assert await service.row(visit) == before
    # A minute ago is still now.
    just = await service.call("POST", f"/v1/events/{visit}/schedule", agent,
                              json={"starts_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()})
    assert just.status_code == 200 and just.json()["status"] == "scheduled"
    # Logging a new event stated as scheduled for yesterday is scheduling in the past too.
    logged = await service.call("POST", "/v1/events", agent, json={
        "community_id": IN, "kind": "meetup", "title": "Hier", "starts_at": yesterday, "status": "scheduled"})
    assert logged.status_code == 422 and logged.json()["errors"][0]["field"] == "starts_at"


async def test_the_timeline_names_the_caller_not_the_body(service: Service) -> None:
    agent = service.tokens[Role.agent]
    r = await service.call("POST", "/v1/events", agent, json={
        "id": "named", "community_id": IN, "kind": "field_visit", "title": "Visite", "starts_at": soon(),
        "status": "requested", "actor": "mallory"})
    assert r.status_code == 201
    await service.call("POST", "/v1/events/named/assign", agent, json={"assignee": "Sam", "actor": "mallory"})
    history = (await service.call("GET", "/v1/events/named/history", agent)).json()["items"]
    assert [h["actor"] for h in history] == ["key:agent-key", "key:agent-key"]
