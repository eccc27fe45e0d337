"""API keys, local users, their sessions and the audit log, in the kernel's tables (terrain/migrations/003).

A key or a session token is `trk_<id>_<secret>` / `trs_<id>_<secret>`: the id finds the row, the secret is
compared with its stored SHA-256 (a random 256-bit secret needs no slow hash; a password does: argon2id). The
secret is shown once, when the key is made or the session opened, and never stored or logged in clear.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from terrain.access.model import Identity, Role, Scope
from terrain.contracts.base import utc_text

KEY_PREFIX = "trk"
SESSION_PREFIX = "trs"
MAX_NAME = 100


class AccessError(ValueError):
    """A request the store refuses, in one sentence (a taken name, a short password)."""


class NameTaken(AccessError):
    """A live key or a user already has that name."""


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_token(prefix: str) -> tuple[str, str, bytes]:
    """(id, the token to hand out once, the stored hash of its secret)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, f"{prefix}_{token_id}_{secret}", _hash(secret)


def split_token(token: str) -> tuple[str, str, str] | None:
    """(prefix, id, secret) of a key or session token, else None (not one of ours: maybe an OIDC token)."""
    prefix, sep, rest = token.partition("_")
    if not sep or prefix not in (KEY_PREFIX, SESSION_PREFIX):
        return None
    token_id, sep, secret = rest.partition("_")
    if not sep or not token_id or not secret or len(token) > 200:
        return None
    return prefix, token_id, secret


def secret_matches(secret: str, stored: bytes) -> bool:
    return hmac.compare_digest(_hash(secret), bytes(stored))


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    role: Role
    scope: Scope
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role.value, "communities": self.scope.entries(),
                "created_at": utc_text(self.created_at), "created_by": self.created_by,
                "expires_at": utc_text(self.expires_at) if self.expires_at else None,
                "revoked_at": utc_text(self.revoked_at) if self.revoked_at else None}


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: Role
    scope: Scope
    created_at: datetime
    created_by: str
    disabled_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role.value, "communities": self.scope.entries(),
                "created_at": utc_text(self.created_at), "created_by": self.created_by,
                "disabled_at": utc_text(self.disabled_at) if self.disabled_at else None}


def _key(row: asyncpg.Record) -> KeyInfo:
    return KeyInfo(row["id"], row["name"], Role(row["role"]), Scope.parse(row["scope"], {}), row["created_at"],
                   row["created_by"], row["expires_at"], row["revoked_at"])


def _user(row: asyncpg.Record) -> UserInfo:
    return UserInfo(row["name"], Role(row["role"]), Scope.parse(row["scope"], {}), row["created_at"],
                    row["created_by"], row["disabled_at"])


def check_name(name: str, what: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not all(ch.isprintable() and not ch.isspace() for ch in name):
        raise AccessError(f"a {what} name is 1 to {MAX_NAME} printable characters without spaces")
    return name


# --- keys ----------------------------------------------------------------------------------------------


async def create_key(pool: asyncpg.Pool, *, name: str, role: Role, scope: Scope, created_by: str,
                     expires_at: datetime | None) -> tuple[KeyInfo, str]:
    """A new key and its token, shown this once."""
    name = check_name(name, "key")
    token_id, token, digest = new_token(KEY_PREFIX)
    try:
        row = await pool.fetchrow(
            """INSERT INTO terrain_access_keys (id, name, role, scope, secret_hash, created_by, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
            token_id, name, role.value, scope.entries(), digest, created_by, expires_at)
    except asyncpg.UniqueViolationError:
        raise NameTaken(f"a live key is already named {name!r}: revoke it first or choose another name") from None
    assert row is not None
    return _key(row), token


async def list_keys(pool: asyncpg.Pool, *, include_revoked: bool = False) -> list[KeyInfo]:
    rows = await pool.fetch(
        "SELECT * FROM terrain_access_keys WHERE $1 OR revoked_at IS NULL ORDER BY created_at, id", include_revoked)
    return [_key(r) for r in rows]


async def revoke_key(pool: asyncpg.Pool, id_or_name: str, *, by: str, now: datetime) -> KeyInfo | None:
    """Revoke a live key by id or name; None when no live key has it."""
    row = await pool.fetchrow(
        """UPDATE terrain_access_keys SET revoked_at = $2, revoked_by = $3
           WHERE (id = $1 OR name = $1) AND revoked_at IS NULL RETURNING *""", id_or_name, now, by)
    return _key(row) if row is not None else None


async def key_identity(pool: asyncpg.Pool, token_id: str, secret: str, now: datetime) -> Identity | None:
    row = await pool.fetchrow(
        """SELECT name, role, scope, secret_hash FROM terrain_access_keys
           WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)""", token_id, now)
    if row is None or not secret_matches(secret, row["secret_hash"]):
        return None
    return Identity(subject=f"key:{token_id}", name=row["name"], role=Role(row["role"]),
                    scope=Scope.parse(row["scope"], {}), kind="key")


# --- local users and their sessions ---------------------------------------------------------------------


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


MIN_PASSWORD = 12


async def add_user(pool: asyncpg.Pool, *, name: str, role: Role, scope: Scope, password: str,
                   created_by: str) -> UserInfo:
    name = check_name(name, "user")
    if len(password) < MIN_PASSWORD:
        raise AccessError(f"a password holds at least {MIN_PASSWORD} characters")
    digest = _hasher().hash(password)
    try:
        row = await pool.fetchrow(
            """INSERT INTO terrain_access_users (name, role, scope, password_hash, created_by)
               VALUES ($1, $2, $3, $4, $5) RETURNING *""", name, role.value, scope.entries(), digest, created_by)
    except asyncpg.UniqueViolationError:
        raise NameTaken(f"a user is already named {name!r}") from None
    assert row is not None
    return _user(row)


async def list_users(pool: asyncpg.Pool) -> list[UserInfo]:
    return [_user(r) for r in await pool.fetch("SELECT * FROM terrain_access_users ORDER BY name")]


async def disable_user(pool: asyncpg.Pool, name: str, now: datetime) -> UserInfo | None:
    """Disable a user and end their sessions, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE terrain_access_users SET disabled_at = $2 WHERE name = $1 AND disabled_at IS NULL RETURNING *",
            name, now)
        await conn.execute("DELETE FROM terrain_access_sessions WHERE user_name = $1", name)
    return _user(row) if row is not None else None


async def sign_in(pool: asyncpg.Pool, name: str, password: str, *, now: datetime, ttl: timedelta,
                  address: str | None) -> tuple[str, datetime] | None:
    """A session token for a user whose password matches, and when it expires; None otherwise (which of the
    two was wrong is not said)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    row = await pool.fetchrow(
        "SELECT password_hash FROM terrain_access_users WHERE name = $1 AND disabled_at IS NULL", name)
    hasher = _hasher()
    try:
        if row is None:
            # As long as a real check, so the answer's time does not say whether the name exists.
            hasher.verify(_dummy_hash(), password + "x")
            return None
        hasher.verify(row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        return None
    token_id, token, digest = new_token(SESSION_PREFIX)
    expires = now + ttl
    await pool.execute(
        """INSERT INTO terrain_access_sessions (id, user_name, secret_hash, created_at, expires_at, address)
           VALUES ($1, $2, $3, $4, $5, $6)""", token_id, name, digest, now, expires, address)
    return token, expires


@functools.cache
def _dummy_hash() -> str:
    """A hash to check a password against when the name is unknown (made once: hashing costs tens of ms)."""
    return str(_hasher().hash(secrets.token_urlsafe(16)))


async def end_session(pool: asyncpg.Pool, token_id: str) -> bool:
    return (await pool.execute("DELETE FROM terrain_access_sessions WHERE id = $1", token_id)) != "DELETE 0"


async def session_identity(pool: asyncpg.Pool, token_id: str, secret: str, now: datetime) -> Identity | None:
    row = await pool.fetchrow(
        """SELECT s.secret_hash, u.name, u.role, u.scope FROM terrain_access_sessions s
           JOIN terrain_access_users u ON u.name = s.user_name
           WHERE s.id = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL""", token_id, now)
    if row is None or not secret_matches(secret, row["secret_hash"]):
        return None
    return Identity(subject=f"user:{row['name']}", name=row["name"], role=Role(row["role"]),
                    scope=Scope.parse(row["scope"], {}), kind="user")


async def prune_sessions(pool: asyncpg.Pool, now: datetime) -> int:
    status = await pool.execute("DELETE FROM terrain_access_sessions WHERE expires_at <= $1", now)
    return int(status.split()[-1])


# --- the audit log ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    service: str
    identity: Identity
    method: str
    route: str
    path: str
    status: int
    address: str | None


async def record(pool: asyncpg.Pool, entries: Sequence[AuditEntry]) -> None:
    """Several entries in one statement (a service writes what its last requests did, together)."""
    if not entries:
        return
    await pool.execute(
        """INSERT INTO terrain_audit (service, subject, actor, role, method, route, path, status, address)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                $7::text[], $8::int[], $9::text[])""",
        [e.service for e in entries], [e.identity.subject for e in entries], [e.identity.actor for e in entries],
        [e.identity.role.value for e in entries], [e.method for e in entries], [e.route for e in entries],
        [e.path for e in entries], [e.status for e in entries], [e.address for e in entries])


async def read_audit(pool: asyncpg.Pool, *, limit: int, before_id: int | None, actor: str | None,
                     since: datetime | None) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT * FROM terrain_audit
           WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR actor = $2)
             AND ($3::timestamptz IS NULL OR at >= $3)
           ORDER BY id DESC LIMIT $4""", before_id, actor, since, limit)
    return [{**dict(r), "at": utc_text(r["at"])} for r in rows]
