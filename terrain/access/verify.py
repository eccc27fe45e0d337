"""The one verification path: a bearer credential in, an `Identity` (or a refusal) out.

In order: the bootstrap token (`TERRAIN_API_TOKEN`, constant-time compare); a Terrain key or session token
(`trk_...`, `trs_...`: looked up by id, its secret compared with the stored hash); an OIDC access token (a JWT
signed by the provider, checked with PyJWT against the provider's published keys: signature, issuer, audience,
expiry). With neither the token nor an issuer set, every caller is the local anonymous admin (a service only
listens on loopback then: `check_closed`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from terrain.access import store
from terrain.access.model import (
    ANONYMOUS,
    BOOTSTRAP,
    Identity,
    Refused,
    Role,
    Scope,
    ScopeError,
    parse_groups,
    parse_role_map,
    split_groups,
    strongest,
)
from terrain.settings import TerrainSettings

log = logging.getLogger("terrain.access")

LOOPBACK = ("127.0.0.1", "::1", "localhost")
SIGNING_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
LEEWAY_S = 30


def auth_configured(settings: TerrainSettings) -> bool:
    return settings.api_token is not None or bool(settings.oidc_issuer)


def check_closed(settings: TerrainSettings) -> str | None:
    """Why a service must not start: it would listen beyond loopback with nobody checked. None when fine."""
    if auth_configured(settings) or settings.host in LOOPBACK:
        return None
    return (f"listening on {settings.host} with no authentication: set TERRAIN_API_TOKEN (the bootstrap admin "
            "credential) and/or TERRAIN_OIDC_ISSUER, or TERRAIN_HOST=127.0.0.1 for a local run")


class OidcVerifier:
    """Access tokens from an OIDC provider: keys from its JWKS (fetched in a worker thread, cached by PyJWT),
    roles and scopes from its groups claim."""

    def __init__(self, settings: TerrainSettings) -> None:
        import jwt

        assert settings.oidc_issuer
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.audience = settings.oidc_audience
        self.groups_claim = settings.oidc_groups_claim
        self.name_claim = settings.oidc_name_claim
        self.role_groups = parse_role_map(settings.oidc_role_groups)
        named = parse_groups(settings.access_groups) if settings.access_groups else {}
        self.scope_groups = {
            group: Scope.parse(spec, named) for group, spec in split_groups(settings.oidc_scope_groups).items()}
        self._jwks_url = settings.oidc_jwks_url
        self._client: jwt.PyJWKClient | None = None

    def _jwks_client(self) -> Any:
        import jwt

        if self._client is None:
            url = self._jwks_url
            if url is None:
                discovery = f"{self.issuer}/.well-known/openid-configuration"
                with urllib.request.urlopen(discovery, timeout=5) as answer:
                    url = str(json.load(answer)["jwks_uri"])
            self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=600, timeout=5)
        return self._client

    def _decode(self, token: str) -> dict[str, Any]:
        import jwt

        try:
            key = self._jwks_client().get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=SIGNING_ALGORITHMS, audience=self.audience, issuer=self.issuer,
                leeway=LEEWAY_S, options={"require": ["exp", "iss", "sub"]})
        except jwt.PyJWKClientError as exc:
            raise Refused(f"the provider's signing keys could not be read: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise Refused(f"token refused: {exc}") from None
        except OSError as exc:
            raise Refused(f"the provider could not be reached: {type(exc).__name__}") from None
        return claims

    def identity(self, claims: dict[str, Any]) -> Identity:
        raw = claims.get(self.groups_claim) or []
        groups = {str(g).lstrip("/") for g in (raw if isinstance(raw, list) else [raw])}
        role = strongest(self.role_groups[g] for g in groups if g in self.role_groups)
        if role is None:
            raise Refused("the token's groups give no Terrain role (TERRAIN_OIDC_ROLE_GROUPS)")
        scopes = [self.scope_groups[g] for g in groups if g in self.scope_groups]
        scope = _union(scopes)
        name = str(claims.get(self.name_claim) or claims.get("email") or claims["sub"])
        return Identity(subject=f"oidc:{claims['sub']}", name=name, role=role, scope=scope, kind="oidc")

    async def verify(self, token: str) -> Identity:
        claims = await asyncio.to_thread(self._decode, token)
        return self.identity(claims)


def _union(scopes: list[Scope]) -> Scope:
    if any(s.everything for s in scopes):
        return Scope(everything=True)
    return Scope(communities=frozenset().union(*(s.communities for s in scopes)),
                 prefixes=tuple(sorted({p for s in scopes for p in s.prefixes})))


class Authenticator:
    """What every service's HTTP edge asks: who presents this credential?"""

    def __init__(self, settings: TerrainSettings, pool: Callable[[], asyncpg.Pool | None],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self._pool = pool
        self._clock = clock
        self._bootstrap = settings.api_token.get_secret_value().encode() if settings.api_token else None
        self.oidc = OidcVerifier(settings) if settings.oidc_issuer else None
        self.configured = auth_configured(settings)
        self._cache: dict[bytes, tuple[float, Identity]] = {}
        self._cache_s = settings.access_cache_s

    async def identify(self, authorization: str | None) -> Identity | None:
        """The caller's identity; None when no credential came (401 unless auth is off); raises Refused when one
        came and is not good."""
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return None if self.configured else ANONYMOUS
        if self._bootstrap is not None and hmac.compare_digest(credential.encode(), self._bootstrap):
            return BOOTSTRAP
        cache_key = hashlib.sha256(credential.encode()).digest()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        identity = await self._verify(credential)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[cache_key] = (time.monotonic() + self._cache_s, identity)
        return identity

    async def _verify(self, credential: str) -> Identity:
        parts = store.split_token(credential)
        if parts is not None:
            pool = self._pool()
            if pool is None:
                raise Refused("keys and sessions cannot be checked: the service has no database yet")
            prefix, token_id, secret = parts
            look = store.key_identity if prefix == store.KEY_PREFIX else store.session_identity
            found = await look(pool, token_id, secret, self._clock())
            if found is None:
                raise Refused("unknown, expired or revoked key or session")
            return found
        if self.oidc is not None and credential.count(".") == 2:
            return await self.oidc.verify(credential)
        raise Refused("missing or wrong bearer token")


def parse_scope(spec: str, settings: TerrainSettings) -> Scope:
    """A scope as an admin writes it, with this deployment's named groups."""
    groups = parse_groups(settings.access_groups) if settings.access_groups else {}
    return Scope.parse(spec, groups)


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ScopeError(f"unknown role {value!r}: one of {', '.join(Role)}") from None
