"""Who may do what on the escalation service, against the real service, PostgreSQL and broker: every route ×
every role × a row in or out of the caller's scope; every route declares its permission; no list ever returns a
row outside the caller's scope, whatever the scopes and communities; the access API (sign-in, keys, audit log)
mounted on the service."""

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

from services.escalation.app import EscalationSettings, build_app
from services.escalation.domain import Incident
from services.escalation.handlers import Escalator
from services.escalation.policy import CommunityPolicy
from terrain.access import store
from terrain.access.deps import route_permission
from terrain.access.model import Permission, Role, Scope
from terrain.contracts import IncidentLevel, IncidentState
from terrain.topics import all_topic_names
from tests.access_helpers import ACT, MODERATE, READ, tokens_for_every_role

pytestmark = pytest.mark.integration

IN, OUT = "c-in", "c-out"
TOKEN = "test-token"


@dataclass
class Service:
    app: Any
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    escalator: Escalator
    tokens: dict[Role, str] = field(default_factory=dict)

    async def call(self, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def incident(self, community: str, state: IncidentState = IncidentState.open,
                       at: datetime | None = None) -> Incident:
        """An incident stored as the engine stores it (its own thread: one open incident per thread)."""
        when = at or datetime.now(UTC)
        inc = Incident(
            id=f"inc-{uuid.uuid4().hex[:12]}", community_id=community, thread_id=f"t-{uuid.uuid4().hex[:8]}",
            level=IncidentLevel.respond, reason="a negative comment", state=state, opened_at=when,
            updated_at=when, policy=CommunityPolicy(), language="fr",
            resolved_at=when if state is IncidentState.resolved else None)
        from services.escalation import repository

        async with self.pool.acquire() as conn:
            await repository.save_incidents(conn, [inc])
        return inc

    async def silence(self, matchers: dict[str, str]) -> str:
        now = datetime.now(UTC)
        s = await self.escalator.create_silence(matchers, now, now + timedelta(hours=1), "seed", "seed")
        return s.id

    async def state_of(self, incident_id: str) -> str:
        return str(await self.pool.fetchval("SELECT state FROM escalation_incidents WHERE id = $1", incident_id))


@pytest.fixture(scope="module")
async def service(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Service]:
    """One escalation service for the module (its own schema and topics) and a key of each role, scoped to c-in."""
    unique = uuid.uuid4().hex[:10]
    schema = f"t_{unique}"
    conn = await asyncpg.connect(database_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    sep = "&" if "?" in database_url else "?"
    cfg = EscalationSettings(
        kafka_bootstrap_servers=kafka_bootstrap, database_url=f"{database_url}{sep}search_path={schema}",
        api_token=TOKEN, kafka_session_timeout_ms=6000, kafka_heartbeat_interval_ms=500, batch_timeout_ms=50,
        kafka_client_id=f"terrain-test-{unique}", kafka_group_prefix=f"terrain-test-{unique}",
        access_cache_s=0,  # a signed-out session or a revoked key stops at once
    )
    app = build_app(cfg, topic_overrides={name: f"{name}.t{unique}" for name in all_topic_names()})
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                svc = Service(app, client, app.state.runtime.pool, app.state.escalator)
                svc.tokens.update(await tokens_for_every_role(svc.pool, IN))
                yield svc
    finally:
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


# --- every route × every role × in / out of scope ---------------------------------------------------------



@dataclass(frozen=True)
class Case:
    """One route: who may call it, its answer on a row in scope and on one out of scope."""

    name: str
    roles: set[Role]
    in_scope: int
    out_of_scope: int


ROUTES = [
    Case("list incidents of a community", READ, 200, 200),  # out of scope: an empty list, total 0
    Case("list incidents", READ, 200, 200),  # out of scope: the row is not among them
    Case("incident detail", READ, 200, 404),  # 404 as for an id that does not exist
    Case("acknowledge", ACT, 200, 404),
    Case("resolve", ACT, 200, 404),
    Case("note", ACT, 201, 404),
    Case("create silence", MODERATE, 201, 403),  # creating for a community out of scope: out_of_scope
    Case("list silences", READ, 200, 200),  # out of scope: the silence is not among them
    Case("expire silence", MODERATE, 200, 404),
    Case("community policy", READ, 200, 404),
]
CALLERS: list[Role | None] = [*Role, None]


async def _exercise(svc: Service, case: str, token: str | None, community: str) -> tuple[httpx.Response, Any]:
    """Call the route on a fresh row of `community`; returns the answer and the row's id (to check after)."""
    if case in ("list incidents of a community", "list incidents"):
        inc = await svc.incident(community)
        params = {"since": inc.updated_at.isoformat()}
        if case == "list incidents of a community":
            params["community_id"] = community
        return await svc.call("GET", "/v1/incidents", token, params=params), inc.id
    if case == "incident detail":
        inc = await svc.incident(community)
        return await svc.call("GET", f"/v1/incidents/{inc.id}", token), inc.id
    if case in ("acknowledge", "resolve", "note"):
        inc = await svc.incident(community)
        path = {"acknowledge": "ack", "resolve": "resolve", "note": "notes"}[case]
        body = {"text": "called the author"} if case == "note" else {"note": "on it"}
        return await svc.call("POST", f"/v1/incidents/{inc.id}/{path}", token, json=body), inc.id
    if case == "create silence":
        body = {"matchers": {"community_id": community}, "duration_minutes": 30, "comment": "by hand tonight"}
        return await svc.call("POST", "/v1/silences", token, json=body), None
    if case == "list silences":
        sid = await svc.silence({"community_id": community})
        return await svc.call("GET", "/v1/silences", token), sid
    if case == "expire silence":
        sid = await svc.silence({"community_id": community})
        return await svc.call("DELETE", f"/v1/silences/{sid}", token), sid
    if case == "community policy":
        return await svc.call("GET", "/v1/policy", token, params={"community_id": community}), None
    raise AssertionError(case)


@pytest.mark.parametrize("scope", ["in", "out"])
@pytest.mark.parametrize("role", CALLERS, ids=lambda r: r.value if r else "no-credential")
@pytest.mark.parametrize("case", ROUTES, ids=lambda c: c.name.replace(" ", "-"))
async def test_route_by_role_and_scope(service: Service, case: Case, role: Role | None, scope: str) -> None:
    community = IN if scope == "in" else OUT
    token = service.tokens[role] if role else None
    r, row = await _exercise(service, case.name, token, community)
    expected = 401 if role is None else 403 if role not in case.roles else (
        case.in_scope if scope == "in" else case.out_of_scope)
    assert r.status_code == expected, f"{case.name} as {role} on a row {scope} of scope: {r.status_code} {r.text}"
    served = r.status_code < 300
    if case.name.startswith("list"):
        ids = [i["id"] for i in r.json()["items"]] if served else []
        # Its own row in scope is listed; a row out of scope never is (and is not counted).
        assert (row in ids) is (served and scope == "in"), (case.name, role, scope, ids)
        if case.name == "list incidents of a community" and served and scope == "out":
            assert r.json()["total"] == 0
    elif served:
        assert community == IN and OUT not in r.text
    else:
        assert set(r.json()) == {"detail"}  # a refusal says why, and carries none of the row's data
    if case.name in ("acknowledge", "resolve"):
        # Refused or out of scope: the incident is as it was; done: by the key's name, never the body's.
        after = await service.state_of(row)
        assert after == ({"acknowledge": "acknowledged", "resolve": "resolved"}[case.name] if served else "open")
        if served:
            assert r.json()["changed"] is True
            timeline = await service.pool.fetch(
                "SELECT actor FROM escalation_incident_events WHERE incident_id = $1", row)
            assert [t["actor"] for t in timeline] == [f"key:{role.value}-key"]  # type: ignore[union-attr]
    if case.name == "create silence" and served:
        assert r.json()["created_by"] == f"key:{role.value}-key"  # type: ignore[union-attr]


# --- silences: the scope, the length, every community --------------------------------------------------

SILENCE_RULES = [
    # (caller, scope of the caller, matchers, minutes, expected status) and why
    (Role.moderator, IN, {"community_id": IN}, 24 * 60, 201),  # a day: a moderator's longest
    (Role.moderator, IN, {"community_id": IN}, 24 * 60 + 1, 403),  # a minute more needs an admin
    (Role.admin, IN, {"community_id": IN}, 7 * 24 * 60, 201),  # an admin may silence a week
    (Role.moderator, IN, {"thread_id": "post-1"}, 30, 403),  # no community: every community, beyond c-in
    (Role.admin, IN, {"level": "respond"}, 30, 403),  # even an admin must stay within a scope of c-in
    (Role.moderator, "*", {"level": "respond"}, 30, 403),  # every community needs an admin
    (Role.admin, "*", {"level": "respond"}, 30, 201),  # an admin over everything may
    (Role.moderator, "c-*", {"community_id": OUT}, 30, 201),  # a prefix scope allows c-out
    (Role.moderator, "c-*", {"community_id": "d-out"}, 30, 403),
]


@pytest.mark.parametrize(("role", "scope", "matchers", "minutes", "status"), SILENCE_RULES)
async def test_who_may_silence_what(service: Service, role: Role, scope: str, matchers: dict[str, str],
                                    minutes: int, status: int) -> None:
    _, token = await store.create_key(service.pool, name=f"silencer-{uuid.uuid4().hex[:8]}", role=role,
                                      scope=Scope.parse(scope), created_by="test", expires_at=None)
    r = await service.call("POST", "/v1/silences", token, json={
        "matchers": matchers, "duration_minutes": minutes, "comment": "tonight", "created_by": "someone-else"})
    assert r.status_code == status, r.text
    if status == 201:
        assert r.json()["created_by"].startswith("key:silencer-")  # the body's created_by is ignored
    else:
        assert "detail" in r.json()


async def test_silences_over_every_community_are_listed_to_identities_over_everything_only(service: Service):
    everywhere = await service.silence({"level": "respond"})
    _, viewer_all = await store.create_key(service.pool, name=f"all-{uuid.uuid4().hex[:8]}", role=Role.viewer,
                                           scope=Scope.parse("*"), created_by="test", expires_at=None)
    mine = await service.call("GET", "/v1/silences", service.tokens[Role.admin])
    seen_all = await service.call("GET", "/v1/silences", viewer_all)
    expire = await service.call("DELETE", f"/v1/silences/{everywhere}", service.tokens[Role.admin])
    assert everywhere not in [s["id"] for s in mine.json()["items"]]  # an admin scoped to c-in
    assert everywhere in [s["id"] for s in seen_all.json()["items"]]
    assert expire.status_code == 404


# --- every route declares its permission --------------------------------------------------------------

DECLARED = {
    ("GET", "/v1/incidents"): Permission.read,
    ("GET", "/v1/incidents/{incident_id}"): Permission.read,
    ("POST", "/v1/incidents/{incident_id}/ack"): Permission.act,
    ("POST", "/v1/incidents/{incident_id}/resolve"): Permission.act,
    ("POST", "/v1/incidents/{incident_id}/notes"): Permission.act,
    ("POST", "/v1/silences"): Permission.moderate,
    ("GET", "/v1/silences"): Permission.read,
    ("DELETE", "/v1/silences/{silence_id}"): Permission.moderate,
    ("GET", "/v1/policy"): Permission.read,
    ("DELETE", "/v1/access/sessions/current"): Permission.read,
    ("GET", "/v1/access/me"): Permission.read,
    ("GET", "/v1/access/keys"): Permission.administer,
    ("POST", "/v1/access/keys"): Permission.administer,
    ("DELETE", "/v1/access/keys/{key}"): Permission.administer,
    ("GET", "/v1/access/users"): Permission.administer,
    ("POST", "/v1/access/users"): Permission.administer,
    ("DELETE", "/v1/access/users/{name}"): Permission.administer,
    ("GET", "/v1/access/audit"): Permission.administer,
}


def test_every_route_declares_its_permission_or_is_public() -> None:
    app = build_app(EscalationSettings())
    public = app.state.http_edge.public
    declared: dict[tuple[str, str], Permission | None] = {}
    for route in app.routes:
        if isinstance(route, APIRoute):
            for method in route.methods:
                declared[(method, route.path)] = route_permission(route)
    undeclared = [k for k, p in declared.items() if p is None and k[1] not in public]
    assert undeclared == [], f"routes with neither a permission nor a public reason: {undeclared}"
    assert {k: p for k, p in declared.items() if p is not None} == DECLARED
    # Sign-in is public (a person has no credential yet), and says why.
    assert ("POST", "/v1/access/sessions") in declared and public["/v1/access/sessions"]


# --- no list returns a row outside the caller's scope --------------------------------------------------

# Ids that share prefixes, and LIKE's own wildcards (a prefix "resto_*" must not match "restoXlyon").
VOCABULARY = ["resto-lyon", "resto-paris", "resto_x", "restoXlyon", "resto%", "bistro", "b", "r-1"]
ENTRIES = st.one_of(
    st.sampled_from(VOCABULARY),
    st.sampled_from(["resto-*", "resto_*", "resto%*", "resto*", "b*", "r*", "x*"]),
)
SCOPES = st.one_of(st.just("*"), st.lists(ENTRIES, min_size=1, max_size=4).map(",".join))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    communities=st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=4),
    scope=SCOPES,
    role=st.sampled_from([Role.viewer, Role.service, Role.admin]),
    filter_community=st.one_of(st.none(), st.sampled_from(VOCABULARY)),
    limit=st.integers(min_value=1, max_value=7),
)
async def test_no_list_returns_a_row_outside_the_scope(
    service: Service, communities: list[str], scope: str, role: Role, filter_community: str | None, limit: int
) -> None:
    for c in communities:
        await service.incident(c, state=IncidentState.resolved)  # resolved: a thread may hold many
        await service.silence({"community_id": c})
    await service.silence({"thread_id": "post-1"})  # over every community
    allowed = Scope.parse(scope)
    _, token = await store.create_key(service.pool, name=f"p-{uuid.uuid4().hex[:10]}", role=role, scope=allowed,
                                      created_by="test", expires_at=None)

    async def every_page(path: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], set[int]]:
        items: list[dict[str, Any]] = []
        totals: set[int] = set()
        cursor = None
        while True:
            r = await service.call("GET", path, token, params={**params, "limit": limit,
                                                                **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            items += r.json()["items"]
            totals.add(r.json()["total"])
            cursor = r.json()["next"]
            if cursor is None:
                return items, totals

    incidents, totals = await every_page(
        "/v1/incidents", {"community_id": filter_community} if filter_community else {})
    assert all(allowed.allows(i["community_id"]) for i in incidents), (scope, [i["community_id"] for i in incidents])
    # Nothing in scope is left out either: the database's rows, judged by the scope itself.
    rows = await service.pool.fetch("SELECT id, community_id FROM escalation_incidents")
    expected = {r["id"] for r in rows if allowed.allows(r["community_id"])
                and filter_community in (None, r["community_id"])}
    assert sorted(i["id"] for i in incidents) == sorted(expected) and totals == {len(expected)}

    silences, totals = await every_page("/v1/silences", {"active": "false"})
    visible = [s["matchers"].get("community_id") for s in silences]
    assert all(c is not None and allowed.allows(c) for c in visible) or allowed.everything, (scope, visible)
    stored = await service.pool.fetch("SELECT id, matchers->>'community_id' AS c FROM escalation_silences")
    expected = {r["id"] for r in stored if allowed.everything or (r["c"] is not None and allowed.allows(r["c"]))}
    assert sorted(s["id"] for s in silences) == sorted(expected) and totals == {len(expected)}


# --- the access API on the escalation service ------------------------------------------------------------


async def test_sign_in_session_keys_and_audit_through_the_api(service: Service) -> None:
    password = "correct horse battery staple"
    await store.add_user(service.pool, name="camille", role=Role.agent, scope=Scope.parse(IN), password=password,
                         created_by="test")
    wrong = await service.call("POST", "/v1/access/sessions", None, json={"name": "camille", "password": "nope"})
    signed = await service.call("POST", "/v1/access/sessions", None, json={"name": "camille", "password": password})
    assert wrong.status_code == 401 and signed.status_code == 201, signed.text
    session = signed.json()["token"]
    assert session.startswith("trs_")

    me = (await service.call("GET", "/v1/access/me", session)).json()
    assert (me["name"], me["role"], me["kind"], me["communities"]) == ("camille", "agent", "user", [IN])
    inc = await service.incident(IN)
    acked = await service.call("POST", f"/v1/incidents/{inc.id}/ack", session, json={"actor": "someone-else"})
    assert acked.status_code == 200 and acked.json()["changed"] is True
    detail = (await service.call("GET", f"/v1/incidents/{inc.id}", session)).json()
    assert [(t["event"], t["actor"]) for t in detail["timeline"]] == [("acknowledged", "camille")]
    assert (await service.call("GET", "/v1/access/keys", session)).status_code == 403  # an agent
    out = await service.call("DELETE", "/v1/access/sessions/current", session)
    assert out.status_code == 200 and out.json() == {"signed_out": "camille"}
    assert (await service.call("GET", "/v1/access/me", session)).status_code == 401

    # Keys: an admin makes, lists and revokes them; nobody else may.
    admin, agent = TOKEN, service.tokens[Role.agent]
    body = {"name": "crm-sync", "role": "service", "communities": IN}
    for who in (service.tokens[Role.viewer], agent, service.tokens[Role.moderator], service.tokens[Role.service]):
        assert (await service.call("POST", "/v1/access/keys", who, json=body)).status_code == 403
        assert (await service.call("GET", "/v1/access/keys", who)).status_code == 403
        assert (await service.call("DELETE", "/v1/access/keys/viewer-key", who)).status_code == 403
    made = await service.call("POST", "/v1/access/keys", admin, json=body)
    assert made.status_code == 201, made.text
    key = made.json()["token"]
    listed = (await service.call("GET", "/v1/access/keys", admin)).json()["items"]
    assert "crm-sync" in [k["name"] for k in listed] and all("token" not in k for k in listed)
    assert (await service.call("GET", "/v1/incidents", key)).status_code == 200
    assert (await service.call("POST", f"/v1/incidents/{inc.id}/resolve", key)).status_code == 403  # a service
    revoked = await service.call("DELETE", "/v1/access/keys/crm-sync", admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert (await service.call("GET", "/v1/incidents", key)).status_code == 401

    # The audit log: an admin's to read; it lists these calls with who made them.
    for who in (agent, service.tokens[Role.moderator], service.tokens[Role.viewer]):
        assert (await service.call("GET", "/v1/access/audit", who)).status_code == 403
    audit = await service.call("GET", "/v1/access/audit", admin, params={"limit": 1000})
    assert audit.status_code == 200
    entries = [(e["actor"], e["method"], e["route"], e["status"]) for e in audit.json()["items"]]
    assert ("camille", "POST", "/v1/incidents/{incident_id}/ack", 200) in entries
    assert ("camille", "DELETE", "/v1/access/sessions/current", 200) in entries
    assert ("bootstrap-admin", "POST", "/v1/access/keys", 201) in entries
    assert ("bootstrap-admin", "DELETE", "/v1/access/keys/{key}", 200) in entries
    assert ("key:agent-key", "POST", "/v1/access/keys", 403) in entries  # refused calls are recorded too
    assert ("key:crm-sync", "POST", "/v1/incidents/{incident_id}/resolve", 403) in entries
    assert all(e["service"] == "escalation" for e in audit.json()["items"])
