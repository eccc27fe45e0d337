"""What a route declares next to its path: the permission it needs (`Reader`, `Agent`, ...), which hands it the
caller's `Identity`; and the answers for a community out of scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from terrain.access.model import Identity, Permission, allowed_roles
from terrain.http import HTTPRefusal, JsonBodyRoute, unauthorized


def caller(request: Request) -> Identity | None:
    """The identity the HTTP edge found for this request (None on a public route)."""
    identity = request.scope.get("state", {}).get("identity")
    return identity if isinstance(identity, Identity) else None


def forbidden(identity: Identity, permission: Permission) -> HTTPRefusal:
    roles = ", ".join(r.value for r in allowed_roles(permission))
    return HTTPRefusal(403, f"{identity.actor} ({identity.role.value}) may not do this: it needs the "
                            f"{permission.value} permission (roles: {roles})")


def out_of_scope(community_id: str) -> HTTPRefusal:
    return HTTPRefusal(403, f"community {community_id!r} is outside your scope")


# Only marks a route as taking a bearer credential in the OpenAPI document: the HTTP edge identified the caller.
_BEARER = HTTPBearer(auto_error=False)


def need(permission: Permission) -> Callable[..., Awaitable[Identity]]:
    """A FastAPI dependency: the caller's identity when its role holds `permission`, else 401 / 403. Its
    `permission` attribute says what the route needs (the access tests read it)."""

    async def dependency(request: Request,
                         _: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> Identity:
        identity = caller(request)
        if identity is None:
            raise unauthorized()
        if not identity.may(permission):
            raise forbidden(identity, permission)
        return identity

    dependency.permission = permission  # type: ignore[attr-defined]
    dependency.__name__ = f"need_{permission.value}"
    return dependency


def api_router() -> APIRouter:
    """A service's router: JSON bodies decoded as the kernel decodes them (400 with line and column)."""
    return APIRouter(route_class=JsonBodyRoute)


Reader = Annotated[Identity, Depends(need(Permission.read))]
Publisher = Annotated[Identity, Depends(need(Permission.publish))]
Agent = Annotated[Identity, Depends(need(Permission.act))]
Moderator = Annotated[Identity, Depends(need(Permission.moderate))]
Admin = Annotated[Identity, Depends(need(Permission.administer))]


def route_permission(route: Any) -> Permission | None:
    """The permission a FastAPI route declared (through one of the annotations above), else None."""
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
    while stack:
        dep = stack.pop()
        found = getattr(dep.call, "permission", None)
        if isinstance(found, Permission):
            return found
        stack.extend(dep.dependencies)
    return None
