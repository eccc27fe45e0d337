"""The one verification path, against real parts: keys and sessions in PostgreSQL, OIDC access tokens signed with a
test key whose JWKS a real local HTTP server publishes (the production path: PyJWT fetches it), scopes applied in
SQL, and a service that refuses to start open beyond loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from terrain import db
from terrain.access import store
from terrain.access.model import BOOTSTRAP, Refused, Role, Scope
from terrain.access.verify import Authenticator, check_closed
from terrain.settings import TerrainSettings

pytestmark = pytest.mark.integration

ISSUER_PATH = "/realms/terrain"


class Provider:
    """An OIDC provider's public face: its discovery document and its JWKS, over real HTTP."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == f"{ISSUER_PATH}/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/certs"}
                elif self.path == f"{ISSUER_PATH}/certs":
                    provider.fetches += 1
                    body = provider.jwks
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}{ISSUER_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, *, key: Any = None, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": "terrain", "sub": "u-1", "iat": now, "exp": now + 300,
                "preferred_username": "camille", "groups": ["/terrain-agents", "brand-acme"], **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.key, algorithm=alg, headers={"kid": kid})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    p = Provider()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
async def pool(schema_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(schema_url)
    await db.migrate(p, "kernel", "terrain")
    try:
        yield p
    finally:
        await p.close()


def oidc_settings(provider: Provider, **extra: Any) -> TerrainSettings:
    return TerrainSettings(
        oidc_issuer=provider.issuer, oidc_role_groups="terrain-agents=agent,terrain-admins=admin",
        oidc_scope_groups="brand-acme=acme-*;everything=*", **extra)


# --- OIDC ------------------------------------------------------------------------------------------------


async def test_an_oidc_token_gives_the_role_and_scope_of_its_groups(provider: Provider) -> None:
    auth = Authenticator(oidc_settings(provider), lambda: None)
    who = await auth.identify(f"Bearer {provider.token()}")
    assert who is not None and who.kind == "oidc" and who.subject == "oidc:u-1"
    assert (who.name, who.role) == ("camille", Role.agent)
    assert who.scope.allows("acme-lyon") and not who.scope.allows("bistro-paris")
    admin = await auth.identify(f"Bearer {provider.token(sub='u-2', groups=['terrain-admins', 'terrain-agents'])}")
    assert admin is not None and admin.role is Role.admin  # the strongest of the person's groups
    assert admin.scope.communities == frozenset() and not admin.scope.allows("acme-lyon")  # no brand group: nothing


@pytest.mark.parametrize("why, claims", [
    ("expired", {"exp": int(time.time()) - 3600}),
    ("another issuer", {"iss": "http://127.0.0.1:1/realms/other"}),
    ("another audience", {"aud": "grafana"}),
    ("no role", {"groups": ["brand-acme"]}),
    ("no expiry", {"exp": None}),
])
async def test_a_bad_oidc_token_is_refused_with_the_reason(provider: Provider, why: str, claims: dict[str, Any]):
    auth = Authenticator(oidc_settings(provider), lambda: None)
    with pytest.raises(Refused) as refused:
        await auth.identify(f"Bearer {provider.token(**claims)}")
    assert provider.token() not in str(refused.value)  # the reason never repeats the credential


async def test_a_token_signed_by_another_key_or_unsigned_is_refused(provider: Provider) -> None:
    auth = Authenticator(oidc_settings(provider), lambda: None)
    with pytest.raises(Refused):
        await auth.identify(f"Bearer {provider.token(key=provider.other)}")
    with pytest.raises(Refused):  # a key id the provider does not publish
        await auth.identify(f"Bearer {provider.token(key=provider.other, kid='k2')}")
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "kid": "k1"}).encode()).decode()
    payload = jwt.utils.base64url_encode(json.dumps(
        {"iss": provider.issuer, "aud": "terrain", "sub": "x", "exp": int(time.time()) + 60,
         "groups": ["terrain-admins"]}).encode()).decode()
    with pytest.raises(Refused):
        await auth.identify(f"Bearer {header}.{payload}.")
    hs = jwt.encode({"iss": provider.issuer, "aud": "terrain", "sub": "x", "exp": int(time.time()) + 60,
                     "groups": ["terrain-admins"]}, "a-shared-secret-long-enough-for-hs256!", algorithm="HS256",
                    headers={"kid": "k1"})
    with pytest.raises(Refused):
        await auth.identify(f"Bearer {hs}")


async def test_the_jwks_is_fetched_once_not_per_request(provider: Provider) -> None:
    auth = Authenticator(oidc_settings(provider, access_cache_s=0), lambda: None)
    before = provider.fetches
    for i in range(5):
        assert await auth.identify(f"Bearer {provider.token(sub=f'u-{i}')}") is not None
    assert provider.fetches - before == 1


# --- keys, sessions, the bootstrap token ----------------------------------------------------------------


async def test_a_key_works_until_revoked_or_expired(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    info, token = await store.create_key(pool, name="crm-sync", role=Role.service, scope=Scope.parse("resto-*"),
                                         created_by="test", expires_at=None)
    assert token.startswith("trk_") and info.id in token
    row = await pool.fetchrow("SELECT secret_hash FROM terrain_access_keys WHERE id = $1", info.id)
    assert token.split("_", 2)[2].encode() not in bytes(row["secret_hash"])  # stored hashed, never in clear
    auth = Authenticator(TerrainSettings(api_token="boot", access_cache_s=0), lambda: pool)
    who = await auth.identify(f"Bearer {token}")
    assert who is not None and (who.role, who.actor, who.kind) == (Role.service, "key:crm-sync", "key")
    with pytest.raises(Refused):
        await auth.identify(f"Bearer {token[:-2]}xx")  # the right id, a wrong secret
    assert await auth.identify("Bearer boot") is BOOTSTRAP
    with pytest.raises(store.AccessError):
        await store.create_key(pool, name="crm-sync", role=Role.viewer, scope=Scope.parse("*"), created_by="t",
                               expires_at=None)
    assert await store.revoke_key(pool, "crm-sync", by="test", now=now) is not None
    with pytest.raises(Refused):
        await auth.identify(f"Bearer {token}")
    _, short = await store.create_key(pool, name="short", role=Role.viewer, scope=Scope.parse("*"), created_by="t",
                                      expires_at=now + timedelta(milliseconds=200))
    assert await auth.identify(f"Bearer {short}") is not None
    await asyncio.sleep(0.3)
    with pytest.raises(Refused):
        await auth.identify(f"Bearer {short}")


async def test_a_revoked_key_stops_within_the_cache_time(pool: asyncpg.Pool) -> None:
    _, token = await store.create_key(pool, name="cached", role=Role.viewer, scope=Scope.parse("*"),
                                      created_by="t", expires_at=None)
    auth = Authenticator(TerrainSettings(api_token="boot", access_cache_s=0.3), lambda: pool)
    assert await auth.identify(f"Bearer {token}") is not None
    await store.revoke_key(pool, "cached", by="t", now=datetime.now(UTC))
    assert await auth.identify(f"Bearer {token}") is not None  # still trusted from the cache...
    await asyncio.sleep(0.4)
    with pytest.raises(Refused):  # ...for at most TERRAIN_ACCESS_CACHE_S
        await auth.identify(f"Bearer {token}")


async def test_a_local_user_signs_in_and_out(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    await store.add_user(pool, name="camille", role=Role.moderator, scope=Scope.parse("acme-lyon,acme-paris"),
                         password="correct horse battery", created_by="test")
    with pytest.raises(store.AccessError):
        await store.add_user(pool, name="short", role=Role.viewer, scope=Scope.parse("*"), password="short",
                             created_by="test")
    assert await store.sign_in(pool, "camille", "wrong password!!", now=now, ttl=timedelta(hours=1),
                               address=None) is None
    assert await store.sign_in(pool, "nobody", "correct horse battery", now=now, ttl=timedelta(hours=1),
                               address=None) is None
    opened = await store.sign_in(pool, "camille", "correct horse battery", now=now, ttl=timedelta(hours=1),
                                 address="127.0.0.1")
    assert opened is not None
    token, _ = opened
    auth = Authenticator(TerrainSettings(api_token="boot", access_cache_s=0), lambda: pool)
    who = await auth.identify(f"Bearer {token}")
    assert who is not None and (who.actor, who.role, who.kind) == ("camille", Role.moderator, "user")
    stored = await pool.fetchval("SELECT password_hash FROM terrain_access_users WHERE name = 'camille'")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    await store.disable_user(pool, "camille", now)
    with pytest.raises(Refused):
        await auth.identify(f"Bearer {token}")


async def test_no_authentication_configured_means_the_local_anonymous_admin() -> None:
    auth = Authenticator(TerrainSettings(), lambda: None)
    who = await auth.identify(None)
    assert who is not None and who.kind == "anonymous" and who.role is Role.admin
    closed = Authenticator(TerrainSettings(api_token="boot"), lambda: None)
    assert await closed.identify(None) is None
    assert await closed.identify("Basic Ym9vdA==") is None


# --- scopes in SQL ----------------------------------------------------------------------------------------

COMMUNITY = st.text(alphabet="ab-_%\\.", min_size=1, max_size=6)


@settings(max_examples=60)
@given(communities=st.lists(COMMUNITY, min_size=1, max_size=12, unique=True),
       entries=st.lists(st.one_of(COMMUNITY, COMMUNITY.map(lambda c: c + "*")), min_size=1, max_size=4))
def test_a_scope_in_sql_returns_exactly_the_rows_it_allows(database_url: str, communities: list[str],
                                                            entries: list[str]) -> None:
    scope = Scope.parse(entries)

    async def rows() -> set[str]:
        conn = await asyncpg.connect(database_url)
        try:
            cond, params = scope.sql("community_id", 2)
            found = await conn.fetch(
                f"SELECT community_id FROM unnest($1::text[]) AS t(community_id) WHERE {cond}", communities, *params)
            return {r["community_id"] for r in found}
        finally:
            await conn.close()

    # '%', '_' and '\' in a prefix are LIKE's own characters: escaped, they match only themselves.
    assert asyncio.run(rows()) == {c for c in communities if scope.allows(c)}


# --- closed by default ------------------------------------------------------------------------------------


def test_a_service_beyond_loopback_without_authentication_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
    env.update({"TERRAIN_HOST": "0.0.0.0", "TERRAIN_INGEST_PORT": "0"})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "services.ingest"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "no authentication" in last and "TERRAIN_API_TOKEN" in last and "TERRAIN_OIDC_ISSUER" in last
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60
    assert check_closed(TerrainSettings(host="0.0.0.0", api_token="set")) is None
    assert check_closed(TerrainSettings(host="0.0.0.0", oidc_issuer="https://id.example/realms/t")) is None
    assert check_closed(TerrainSettings(host="127.0.0.1")) is None
