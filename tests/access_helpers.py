"""Credentials for the access tests: one key per role, and the Authorization header of a fresh key."""

from __future__ import annotations

import uuid

import asyncpg

from terrain.access import store
from terrain.access.model import Role, Scope

# Who may do what, written out here on purpose rather than read from the kernel's table: a wrong change to that
# table must fail these tests, not move their expectations with it.
READ = {Role.viewer, Role.agent, Role.moderator, Role.admin, Role.service}
ACT = {Role.agent, Role.moderator, Role.admin}
MODERATE = {Role.moderator, Role.admin}


async def key_header(pool: asyncpg.Pool, role: Role | None, scope: str) -> dict[str, str]:
    """The Authorization header of a new key with this role and scope; an empty one for None (it overrides a
    client's default bootstrap token: no credential at all)."""
    if role is None:
        return {"Authorization": ""}
    _, token = await store.create_key(pool, name=f"{role.value}-{uuid.uuid4().hex[:8]}", role=role,
                                      scope=Scope.parse(scope), created_by="test", expires_at=None)
    return {"Authorization": f"Bearer {token}"}


async def tokens_for_every_role(pool: asyncpg.Pool, scope: str) -> dict[Role, str]:
    """One key per role, all with the same scope: {role: token}."""
    tokens: dict[Role, str] = {}
    for role in Role:
        _, tokens[role] = await store.create_key(pool, name=f"{role.value}-key", role=role,
                                                 scope=Scope.parse(scope), created_by="test", expires_at=None)
    return tokens
