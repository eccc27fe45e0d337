"""Who may score, correct, list and export label corrections on the sentiment service: every route × every role
(and no credential) × a community in or out of the caller's scope, against the running service and PostgreSQL
with real API keys; and a property: whatever the communities and scopes, a list or an export never holds a
correction outside the caller's scope."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.sentiment.app import SentimentSettings, build_app
from terrain.access.deps import route_permission
from terrain.access.model import Permission, Role, Scope
from tests.access_helpers import key_header
from tests.conftest import running

pytestmark = pytest.mark.integration

IN, OUT = "resto-lyon", "bistro-paris"
ROLES: list[Role | None] = [*Role, None]  # None: no credential at all
CAN_ACT = {Role.agent, Role.moderator, Role.admin}


@pytest.fixture
async def service(settings_kwargs: dict[str, Any], topic_overrides: dict[str, str]
                  ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = build_app(SentimentSettings(**settings_kwargs), topic_overrides=topic_overrides)
    async with running(app) as client:  # its default credential is the bootstrap token: admin, every community
        yield app, client


def correction(community: str | None, text: str, comment: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text, "label": "negative", "corrected_by": "someone-else"}
    if community is not None:
        body["community_id"] = community
    if comment is not None:
        body["comment_id"] = comment
    return body


def test_every_route_declares_the_permission_it_needs() -> None:
    app = build_app(SentimentSettings.model_construct())
    declared = {(method, route.path): route_permission(route)
                for route in app.routes if isinstance(route, APIRoute) for method in route.methods}
    public = app.state.http_edge.public
    assert [r for r, p in declared.items() if p is None and r[1] not in public] == []
    assert {r: p for r, p in declared.items() if p is not None} == {
        ("POST", "/v1/score"): Permission.read,  # ad hoc, nothing stored: any role that reads
        ("POST", "/v1/corrections"): Permission.act,
        ("GET", "/v1/corrections"): Permission.read,
        ("GET", "/v1/corrections/export"): Permission.read,
    }


async def test_every_route_for_every_role_in_and_out_of_scope(service: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = service
    pool = app.state.runtime.pool
    # Seen only by those whose scope holds the community (the last one: by callers whose scope is everything).
    for community, text in ((IN, "seed in scope"), (OUT, "seed out of scope"), (None, "seed without community")):
        assert (await client.post("/v1/corrections", json=correction(community, text))).status_code == 201

    wrong: list[str] = []

    def expect(what: str, got: httpx.Response, status: int, why: str = "") -> None:
        if got.status_code != status or why not in got.text:
            wrong.append(f"{what}: {got.status_code} {got.text[:160]!r}, expected {status} {why!r}")

    for role in ROLES:
        auth = await key_header(pool, role, IN)  # every key here holds IN and not OUT
        name = role.value if role else "no credential"
        denied = 401 if role is None else None

        expect(f"{name} scores", await client.post("/v1/score", json={"text": "Merci !"}, headers=auth),
               denied or 200)

        for community, in_scope in ((IN, True), (OUT, False)):
            posted = await client.post("/v1/corrections", headers=auth,
                                       json=correction(community, f"{name} on {community}", f"c-{name}"))
            if role is None:
                expect(f"{name} corrects {community}", posted, 401)
            elif role not in CAN_ACT:
                expect(f"{name} corrects {community}", posted, 403, "needs the act permission")
            elif in_scope:
                expect(f"{name} corrects {community}", posted, 201)
                if posted.status_code == 201 and not posted.json()["corrected_by"].startswith(f"key:{name}-"):
                    wrong.append(f"{name}'s correction names {posted.json()['corrected_by']!r}, not its key")
            else:
                expect(f"{name} corrects {community}", posted, 403, f"community '{OUT}' is outside your scope")

        listed = await client.get("/v1/corrections", params={"limit": 500}, headers=auth)
        exported = await client.get("/v1/corrections/export", headers=auth)
        expect(f"{name} lists", listed, denied or 200)
        expect(f"{name} exports", exported, denied or 200)
        if role is not None:
            rows = listed.json()["items"]
            texts = {json.loads(line)["text"] for line in exported.text.splitlines()}
            if {r["community_id"] for r in rows} != {IN} or "seed in scope" not in {r["text"] for r in rows}:
                wrong.append(f"{name} lists {[(r['community_id'], r['text']) for r in rows]}: only {IN}'s rows")
            if "seed in scope" not in texts or texts & {"seed out of scope", "seed without community"}:
                wrong.append(f"{name} exports {sorted(texts)}: only {IN}'s texts")

    assert wrong == [], "\n".join(wrong)
    # Nothing refused was stored: out of scope, or by a role that may not act.
    stored = {r["text"] for r in (await client.get("/v1/corrections", params={"limit": 500})).json()["items"]}
    assert not any(t.endswith(f"on {OUT}") for t in stored), stored
    assert {t for t in stored if t.endswith(f"on {IN}")} == {f"{r.value} on {IN}" for r in CAN_ACT}


async def test_a_scoped_correction_names_its_community_and_never_replaces_another_communitys(
        service: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = service
    agent = await key_header(app.state.runtime.pool, Role.agent, "resto-*")
    # The bootstrap admin (every community) corrects comment c-9 of bistro-paris.
    theirs = await client.post("/v1/corrections", json=correction(OUT, "Très bon accueil", "c-9"))
    assert theirs.status_code == 201
    nameless = await client.post("/v1/corrections", json=correction(None, "Service lent", "c-9"), headers=agent)
    assert nameless.status_code == 422 and nameless.json()["errors"][0]["field"] == "community_id"
    # The same comment id under a community of the agent's: a row of its own (201, not a 200 replacing theirs).
    mine = await client.post("/v1/corrections", json=correction(IN, "Service lent", "c-9"), headers=agent)
    assert mine.status_code == 201 and mine.json()["id"] != theirs.json()["id"]
    again = await client.post("/v1/corrections", json=correction(IN, "Service lent !", "c-9"), headers=agent)
    assert again.status_code == 200 and again.json()["id"] == mine.json()["id"]  # in place, within its community
    everything = (await client.get("/v1/corrections")).json()["items"]
    assert sorted((c["community_id"], c["text"], c["corrected_by"]) for c in everything) == [
        (OUT, "Très bon accueil", "bootstrap-admin"), (IN, "Service lent !", mine.json()["corrected_by"])]
    assert mine.json()["corrected_by"].startswith("key:agent-")  # never the body's "someone-else"


# --- the property: no list or export ever holds a row outside the caller's scope --------------------------

NAMES = st.sampled_from(["lyon", "lyon-2", "paris", "nantes", "lille"])
BRANDS = st.sampled_from(["resto", "bistro", "cafe"])


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[str], list[str], Role]:
    """Communities with corrections, a scope (ids, prefixes or everything) and a reader's role."""
    communities = draw(st.lists(st.builds(lambda b, n: f"{b}-{n}", BRANDS, NAMES), min_size=1, max_size=6))
    entry = st.one_of(st.builds(lambda b, n: f"{b}-{n}", BRANDS, NAMES), BRANDS.map(lambda b: f"{b}-*"),
                      st.sampled_from(["resto-l*", "*"]))
    scope = draw(st.lists(entry, min_size=1, max_size=3))
    role = draw(st.sampled_from([Role.viewer, Role.agent, Role.moderator, Role.admin, Role.service]))
    return communities, scope, role


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(world=worlds())
async def test_no_list_or_export_holds_a_correction_outside_the_scope(
        service: tuple[FastAPI, httpx.AsyncClient], world: tuple[list[str], list[str], Role]) -> None:
    app, client = service
    communities, entries, role = world
    run = f"x{uuid.uuid4().hex[:8]}"  # one example's communities and scope never meet another's
    local = [f"{run}-{c}" for c in communities]
    scope = Scope.parse([e if e == "*" else f"{run}-{e}" for e in entries])
    for i, community in enumerate(local):
        made = await client.post("/v1/corrections", json=correction(community, f"{community} #{i}", f"{run}-{i}"))
        assert made.status_code == 201, made.text
    auth = await key_header(app.state.runtime.pool, role, str(scope))
    listed = (await client.get("/v1/corrections", params={"limit": 500}, headers=auth)).json()["items"]
    exported = [json.loads(line)["text"] for line in
                (await client.get("/v1/corrections/export", headers=auth)).text.splitlines()]
    assert all(c["community_id"] is not None and scope.allows(c["community_id"]) for c in listed), listed
    expected = {f"{c} #{i}" for i, c in enumerate(local) if scope.allows(c)}
    assert {c["text"] for c in listed if c["text"].startswith(run)} == expected
    assert {t for t in exported if t.startswith(run)} == expected
    if not scope.everything:  # a scoped caller gets this example's rows it may see, and nothing else
        assert {c["text"] for c in listed} == expected and set(exported) == expected
