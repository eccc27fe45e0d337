"""The access API a service mounts (escalation does): sign-in for local users, who am I, and for admins the
keys, the users and the audit log. Plain route functions, each declaring its permission beside its path."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, SecretStr

from terrain.access import store
from terrain.access.deps import Admin, Reader
from terrain.access.model import Identity, Role, ScopeError
from terrain.access.verify import parse_scope
from terrain.contracts.base import AwareDatetime as Timestamp
from terrain.contracts.base import utc_text
from terrain.http import HTTPRefusal, JsonBodyRoute, invalid_request, unauthorized
from terrain.settings import TerrainSettings

SIGN_IN = "/v1/access/sessions"
PUBLIC = {SIGN_IN: "a person signs in with a name and a password (local users)"}


class SignIn(BaseModel):
    name: str = Field(min_length=1, max_length=store.MAX_NAME)
    password: SecretStr = Field(min_length=1, max_length=1000)


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=store.MAX_NAME, description="What the key is for: 'crm-sync'.")
    role: Role
    communities: str = Field(min_length=1, max_length=4000,
                             description="Scope: '*', or community ids, prefixes (acme-*) and groups (@acme).")
    expires_at: Timestamp | None = Field(default=None, description="When the key stops working (none: never).")


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=store.MAX_NAME)
    role: Role
    communities: str = Field(min_length=1, max_length=4000)
    password: SecretStr = Field(min_length=store.MIN_PASSWORD, max_length=1000)


def _scope_or_422(spec: str, settings: TerrainSettings, granter: Identity) -> Any:
    try:
        scope = parse_scope(spec, settings)
    except ScopeError as exc:
        raise invalid_request([{"field": "communities", "message": str(exc)}]) from None
    if not granter.scope.covers(scope):
        raise HTTPRefusal(403, f"you may only grant communities within your own scope ({granter.scope})")
    return scope


def _store_error(exc: store.AccessError, field: str = "name") -> HTTPRefusal:
    return HTTPRefusal(409, str(exc)) if isinstance(exc, store.NameTaken) else invalid_request(
        [{"field": field, "message": str(exc)}])


def access_router(settings: TerrainSettings, pool: Callable[[], asyncpg.Pool],
                  clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> APIRouter:
    router = APIRouter(prefix="/v1/access", tags=["access"], route_class=JsonBodyRoute)

    @router.post("/sessions", status_code=201)
    async def sign_in(body: SignIn, request: Request) -> dict[str, Any]:
        """A local user's session token (Authorization: Bearer ...), shown this once."""
        client = request.client.host if request.client else None
        opened = await store.sign_in(pool(), body.name, body.password.get_secret_value(), now=clock(),
                                     ttl=timedelta(hours=settings.access_session_hours), address=client)
        if opened is None:
            raise unauthorized("wrong name or password, or the user is disabled")
        token, expires = opened
        return {"token": token, "expires_at": utc_text(expires), "name": body.name}

    @router.delete("/sessions/current")
    async def sign_out(who: Reader, request: Request) -> dict[str, Any]:
        """End the session whose token this request presents."""
        header = request.headers.get("authorization", "")
        parts = store.split_token(header.partition(" ")[2].strip())
        if who.kind != "user" or parts is None or parts[0] != store.SESSION_PREFIX:
            raise HTTPRefusal(409, "this request does not present a session token: nothing to sign out of")
        await store.end_session(pool(), parts[1])
        return {"signed_out": who.name}

    @router.get("/me")
    async def me(who: Reader) -> dict[str, Any]:
        """Who the presented credential is: name, role, scope."""
        return {"subject": who.subject, "name": who.name, "actor": who.actor, "kind": who.kind,
                "role": who.role.value, "communities": who.scope.entries()}

    @router.get("/keys")
    async def list_keys(who: Admin, include_revoked: bool = False) -> dict[str, Any]:
        keys = await store.list_keys(pool(), include_revoked=include_revoked)
        return {"items": [k.as_json() for k in keys], "total": len(keys)}

    @router.post("/keys", status_code=201)
    async def create_key(who: Admin, body: NewKey) -> dict[str, Any]:
        """A new API key; its token is in this answer only (stored hashed)."""
        scope = _scope_or_422(body.communities, settings, who)
        if body.expires_at is not None and body.expires_at <= clock():
            raise invalid_request([{"field": "expires_at", "message": "must be in the future"}])
        try:
            info, token = await store.create_key(pool(), name=body.name, role=body.role, scope=scope,
                                                 created_by=who.actor, expires_at=body.expires_at)
        except store.AccessError as exc:
            raise _store_error(exc) from None
        return {**info.as_json(), "token": token}

    @router.delete("/keys/{key}")
    async def revoke_key(who: Admin, key: str) -> dict[str, Any]:
        """Revoke a live key by id or name (every service stops taking it within TERRAIN_ACCESS_CACHE_S)."""
        info = await store.revoke_key(pool(), key, by=who.actor, now=clock())
        if info is None:
            raise HTTPRefusal(404, f"no live key has the id or name {key!r}")
        return info.as_json()

    @router.get("/users")
    async def list_users(who: Admin) -> dict[str, Any]:
        users = await store.list_users(pool())
        return {"items": [u.as_json() for u in users], "total": len(users)}

    @router.post("/users", status_code=201)
    async def add_user(who: Admin, body: NewUser) -> dict[str, Any]:
        scope = _scope_or_422(body.communities, settings, who)
        try:
            info = await store.add_user(pool(), name=body.name, role=body.role, scope=scope,
                                        password=body.password.get_secret_value(), created_by=who.actor)
        except store.AccessError as exc:
            raise _store_error(exc, "password" if "password" in str(exc) else "name") from None
        return info.as_json()

    @router.delete("/users/{name}")
    async def disable_user(who: Admin, name: str) -> dict[str, Any]:
        """Disable a local user and end their sessions."""
        info = await store.disable_user(pool(), name, clock())
        if info is None:
            raise HTTPRefusal(404, f"no enabled user is named {name!r}")
        return info.as_json()

    @router.get("/audit")
    async def audit(who: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    before: Annotated[int | None, Query(ge=1, description="The `next` of a previous page.")] = None,
                    actor: Annotated[str | None, Query(max_length=200)] = None,
                    since: Timestamp | None = None) -> dict[str, Any]:
        """Every mutating call on any service, newest first: who, role, what, when, from which address."""
        rows = await store.read_audit(pool(), limit=limit, before_id=before, actor=actor, since=since)
        return {"items": rows, "next": rows[-1]["id"] if len(rows) == limit else None}

    return router
