"""Who may publish comments to ingest: every route × every role (and no credential) × comments in or out of the
caller's scope, against the running service, its PostgreSQL and broker, with real API keys; Meta's webhook stays
public; and a property: whatever the communities of a request and the caller's scope, ingest stores a comment
only when every comment of the request is in scope."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.app import IngestSettings, build_app
from terrain.access.deps import route_permission
from terrain.access.model import Permission, Role, Scope
from terrain.contracts import comment_id_for
from tests.access_helpers import key_header
from tests.conftest import running

pytestmark = pytest.mark.integration

IN, OUT = "resto-lyon", "bistro-paris"
ROLES: list[Role | None] = [*Role, None]  # None: no credential at all
PUBLISHERS = {Role.service, Role.admin}
VERIFY = "verify-me"


@pytest.fixture
async def service(settings_kwargs: dict[str, Any], topic_overrides: dict[str, str]
                  ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = build_app(IngestSettings(**settings_kwargs, meta_verify_token=VERIFY), topic_overrides=topic_overrides)
    async with running(app) as client:  # its default credential is the bootstrap token: admin, every community
        yield app, client


def comment(external_id: str, community: str) -> dict[str, Any]:
    return {"source": "forum", "external_id": external_id, "community_id": community, "thread_id": "t-1",
            "text": "Merci pour l'accueil", "created_at": "2026-11-20T10:00:00Z"}


async def stored(pool: asyncpg.Pool, external_ids: list[str]) -> set[str]:
    rows = await pool.fetch("SELECT comment_id FROM ingest_comments WHERE comment_id = ANY($1::text[])",
                            [comment_id_for("forum", e) for e in external_ids])
    return {r["comment_id"] for r in rows}


def test_every_route_declares_its_permission_or_is_public() -> None:
    app = build_app(IngestSettings.model_construct())
    declared = {(method, route.path): route_permission(route)
                for route in app.routes if isinstance(route, APIRoute) for method in route.methods}
    public = app.state.http_edge.public
    assert [r for r, p in declared.items() if p is None and r[1] not in public] == []
    assert {r: p for r, p in declared.items() if p is not None} == {("POST", "/v1/comments"): Permission.publish}
    assert "/webhooks/meta" in public and "HMAC" in public["/webhooks/meta"]  # Meta signs it: no bearer


async def test_every_route_for_every_role_in_and_out_of_scope(service: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = service
    pool = app.state.runtime.pool
    wrong: list[str] = []

    def expect(what: str, got: httpx.Response, status: int, why: str = "") -> None:
        if got.status_code != status or why not in got.text:
            wrong.append(f"{what}: {got.status_code} {got.text[:160]!r}, expected {status} {why!r}")

    for role in ROLES:
        auth = await key_header(pool, role, "resto-*")  # holds IN, not OUT
        name = role.value if role else "none"
        cases = [  # (what, the request's comments, in scope)
            ("in scope", [comment(f"{name}-in", IN)], True),
            ("out of scope", [comment(f"{name}-out", OUT)], False),
            ("in and out of scope", [comment(f"{name}-mixed-in", IN), comment(f"{name}-mixed-out", OUT)], False),
        ]
        for what, body, in_scope in cases:
            posted = await client.post("/v1/comments", json=body, headers=auth)
            ids = [c["external_id"] for c in body]
            if role is None:
                expect(f"{name} posts {what}", posted, 401)
            elif role not in PUBLISHERS:
                expect(f"{name} posts {what}", posted, 403, "needs the publish permission")
            elif in_scope:
                expect(f"{name} posts {what}", posted, 202)
            else:  # refused whole, naming the community, before anything is stored
                expect(f"{name} posts {what}", posted, 403, f"community '{OUT}' is outside your scope")
            kept = await stored(pool, ids)
            if kept != ({comment_id_for("forum", i) for i in ids} if role in PUBLISHERS and in_scope else set()):
                wrong.append(f"{name} posts {what}: stored {len(kept)} of {len(ids)}")
        # Meta's webhook takes no bearer credential, whoever calls it (or nobody).
        handshake = await client.get("/webhooks/meta", headers=auth, params={
            "hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"})
        expect(f"{name} Meta handshake", handshake, 200, "1158201444")
        unsigned = await client.post("/webhooks/meta", headers=auth, json={"object": "page", "entry": []})
        expect(f"{name} unsigned Meta delivery", unsigned, 503, "TERRAIN_META_APP_SECRET")  # not a 401 or 403
    assert wrong == [], "\n".join(wrong)


# --- the property: nothing is stored for a caller unless every comment of its request is in scope ----------

COMMUNITIES = st.builds(lambda b, n: f"{b}-{n}", st.sampled_from(["resto", "bistro", "cafe"]),
                        st.sampled_from(["lyon", "lyon-2", "paris", "lille"]))
ENTRIES = st.one_of(COMMUNITIES, st.sampled_from(["resto-*", "bistro-*", "resto-l*", "*"]))


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(communities=st.lists(COMMUNITIES, min_size=1, max_size=5), entries=st.lists(ENTRIES, min_size=1, max_size=3),
       role=st.sampled_from(sorted(PUBLISHERS)))
async def test_a_request_is_stored_only_when_every_comment_is_in_scope(
        service: tuple[FastAPI, httpx.AsyncClient], communities: list[str], entries: list[str], role: Role) -> None:
    app, client = service
    run = f"x{uuid.uuid4().hex[:8]}"  # one example's communities and scope never meet another's
    local = [f"{run}-{c}" for c in communities]
    scope = Scope.parse([e if e == "*" else f"{run}-{e}" for e in entries])
    body = [comment(f"{run}-{i}", c) for i, c in enumerate(local)]
    auth = await key_header(app.state.runtime.pool, role, str(scope))
    posted = await client.post("/v1/comments", json=body, headers=auth)
    kept = await stored(app.state.runtime.pool, [c["external_id"] for c in body])
    outside = [c for c in local if not scope.allows(c)]
    if outside:
        assert posted.status_code == 403 and f"community '{outside[0]}' is outside your scope" in posted.text
        assert kept == set()
    else:
        assert posted.status_code == 202, posted.text
        assert kept == {comment_id_for("forum", c["external_id"]) for c in body}
