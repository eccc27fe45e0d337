"""Roles, permissions, community scopes and identities: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class Role(StrEnum):
    viewer = "viewer"  # reads what its scope holds
    agent = "agent"  # + acts on it: reply, ack, resolve, assign, note, correct a label, field visits and events
    moderator = "moderator"  # + hides, silences of up to a day
    admin = "admin"  # + policies, longer silences, users and keys, the audit log, erasure
    service = "service"  # another system: publishes comments, reads what its scope allows


class Permission(StrEnum):
    read = "read"
    publish = "publish"
    act = "act"
    moderate = "moderate"
    administer = "administer"


ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.viewer: frozenset({Permission.read}),
    Role.agent: frozenset({Permission.read, Permission.act}),
    Role.moderator: frozenset({Permission.read, Permission.act, Permission.moderate}),
    Role.admin: frozenset(Permission),
    Role.service: frozenset({Permission.read, Permission.publish}),
}


def allowed_roles(permission: Permission) -> list[Role]:
    return [r for r in Role if permission in ROLE_PERMISSIONS[r]]


class Refused(Exception):
    """A credential was presented and is not good: why, in one sentence (never the credential itself)."""


class ScopeError(ValueError):
    """A scope written wrongly: an empty entry, a character an identifier may not hold, an unknown group."""


# What a community identifier may hold in a scope entry: no spaces, no control characters, no commas (the list's
# separator), no "*" except as a prefix's end, no "%" or "_"-free worries (LIKE patterns are escaped).
_ENTRY = re.compile(r"[^\s,*@\x00-\x1f\x7f]{1,200}")
ALL = "*"


def _escape_like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass(frozen=True)
class Scope:
    """The communities an identity may see and act on: every one, some by name, or those whose id starts with a
    prefix (`resto-*`: a brand whose communities share a naming). A named group (`@acme`) is expanded when the
    scope is read, from `TERRAIN_ACCESS_GROUPS`."""

    everything: bool = False
    communities: frozenset[str] = field(default_factory=frozenset)
    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str | Iterable[str], groups: Mapping[str, str] | None = None) -> Scope:
        """From `*`, or entries separated by commas: `resto-lyon`, `resto-*`, `@group`."""
        entries = [e.strip() for e in (spec.split(",") if isinstance(spec, str) else spec)]
        entries = [e for e in entries if e]
        if not entries:
            raise ScopeError("a scope names at least one community, prefix (name-*), group (@name) or * for all")
        communities: set[str] = set()
        prefixes: set[str] = set()
        for entry in entries:
            if entry == ALL:
                return cls(everything=True)
            if entry.startswith("@"):
                name = entry[1:]
                if groups is None or name not in groups:
                    known = ", ".join(sorted(groups or {})) or "none is defined (TERRAIN_ACCESS_GROUPS)"
                    raise ScopeError(f"unknown group {entry!r}: known groups: {known}")
                expanded = cls.parse(groups[name], {k: v for k, v in groups.items() if k != name})
                if expanded.everything:
                    return expanded
                communities |= expanded.communities
                prefixes |= set(expanded.prefixes)
                continue
            bare = entry[:-1] if entry.endswith("*") else entry
            if not _ENTRY.fullmatch(bare):
                raise ScopeError(f"{entry!r} is not a community id, a prefix ending in * or a group (@name)")
            (prefixes if entry.endswith("*") else communities).add(bare)
        return cls(communities=frozenset(communities), prefixes=tuple(sorted(prefixes)))

    def allows(self, community_id: str) -> bool:
        return self.everything or community_id in self.communities or community_id.startswith(self.prefixes)

    def covers(self, other: Scope) -> bool:
        """Whether every community `other` allows, this allows too (what an admin may grant)."""
        if self.everything:
            return True
        if other.everything:
            return False
        return (all(self.allows(c) for c in other.communities)
                and all(p.startswith(self.prefixes) for p in other.prefixes))

    def entries(self) -> list[str]:
        """The stored form, the one `parse` reads back."""
        if self.everything:
            return [ALL]
        return sorted(self.communities) + [p + "*" for p in self.prefixes]

    def __str__(self) -> str:
        return ",".join(self.entries())

    def sql(self, column: str, first_param: int) -> tuple[str, list[Any]]:
        """A condition on `column` for a query, and its parameters ($first_param, $first_param + 1): the scope is
        applied by the database, in the query that reads the rows, never after."""
        if self.everything:
            return "TRUE", []
        return (f"({column} = ANY(${first_param}::text[]) OR {column} LIKE ANY(${first_param + 1}::text[]))",
                [sorted(self.communities), [_escape_like(p) for p in self.prefixes]])


EVERYTHING = Scope(everything=True)

IdentityKind = Literal["bootstrap", "key", "user", "oidc", "anonymous"]


@dataclass(frozen=True)
class Identity:
    """Who is acting: what timelines, notes, silences, visits and the audit log name (`actor`)."""

    subject: str  # stable: key:<id>, user:<name>, oidc:<issuer's subject>, bootstrap, anonymous
    name: str
    role: Role
    scope: Scope
    kind: IdentityKind

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    @property
    def actor(self) -> str:
        """The name a timeline shows: a person by name, a key as `key:<name>`."""
        return f"key:{self.name}" if self.kind == "key" else self.name


BOOTSTRAP = Identity(subject="bootstrap", name="bootstrap-admin", role=Role.admin, scope=EVERYTHING, kind="bootstrap")
# No authentication configured, on loopback only (a service bound elsewhere refuses to start): the local runner.
ANONYMOUS = Identity(subject="anonymous", name="local", role=Role.admin, scope=EVERYTHING, kind="anonymous")


def split_groups(spec: str) -> dict[str, str]:
    """`name=community,prefix-*,...;other=...` as {name: members} (groups separated by `;`)."""
    groups: dict[str, str] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, sep, members = part.partition("=")
        if not sep or not name.strip() or not members.strip():
            raise ScopeError(f"{part.strip()!r}: expected NAME=community,prefix-*,... (groups separated by ';')")
        groups[name.strip()] = members.strip()
    return groups


def parse_groups(spec: str) -> dict[str, str]:
    """`TERRAIN_ACCESS_GROUPS`: `acme=acme-*,acme-paris;bistro=bistro-lyon`; each group must read as a scope."""
    groups = split_groups(spec)
    for name, members in groups.items():
        Scope.parse(members, {k: v for k, v in groups.items() if k != name})
    return groups


def parse_role_map(spec: str) -> dict[str, Role]:
    """`TERRAIN_OIDC_ROLE_GROUPS`: `terrain-admins=admin,terrain-agents=agent` (an OIDC group to a role)."""
    out: dict[str, Role] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        group, sep, role = part.partition("=")
        if not sep or role.strip() not in Role.__members__:
            raise ScopeError(f"{part.strip()!r}: expected GROUP=ROLE with ROLE one of {', '.join(Role)}")
        out[group.strip()] = Role(role.strip())
    return out


def strongest(roles: Iterable[Role]) -> Role | None:
    """The role with the most permissions among several (a person in two groups); service never mixes in."""
    order = [Role.admin, Role.moderator, Role.agent, Role.viewer, Role.service]
    found = set(roles)
    return next((r for r in order if r in found), None)
