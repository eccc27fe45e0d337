"""Who is acting: identities (people, API keys, the bootstrap token), their roles and their community scopes.

One verification path for every service: the HTTP edge (terrain/http.py) turns the request's bearer credential
into an `Identity` before the body is read, every route declares the permission it needs (`allow`), and every
query filters by the identity's scope (`Scope.sql`).
"""

from terrain.access.model import (
    ANONYMOUS,
    BOOTSTRAP,
    Identity,
    Permission,
    Role,
    Scope,
    ScopeError,
    allowed_roles,
)

__all__ = ["ANONYMOUS", "BOOTSTRAP", "Identity", "Permission", "Role", "Scope", "ScopeError", "allowed_roles"]
