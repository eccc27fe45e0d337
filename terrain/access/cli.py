"""`terrain access`: API keys and local users, from the shell (the same operations as the admin API)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from terrain.access import store
from terrain.access.model import Role, ScopeError
from terrain.access.verify import parse_role, parse_scope
from terrain.settings import TerrainSettings

console = Console(highlight=False)
access_app = typer.Typer(help="Who may act: API keys for other systems, local users for people.", no_args_is_help=True)
key_app = typer.Typer(help="API keys (Authorization: Bearer trk_...): shown once, stored hashed.", no_args_is_help=True)
user_app = typer.Typer(help="Local users (the embedded default; production signs people in through OIDC).",
                       no_args_is_help=True)
access_app.add_typer(key_app, name="key")
access_app.add_typer(user_app, name="user")

CLI_ACTOR = "cli"
T = TypeVar("T")

Communities = Annotated[str, typer.Option(
    "--communities", "-c", help="Scope: '*' for all, or community ids, prefixes (acme-*) and groups (@acme).")]
RoleOption = Annotated[str, typer.Option("--role", "-r", help=f"One of {', '.join(Role)}.")]


def _run(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(pool)` against the command's database (never a guessed one), kernel tables migrated."""
    from terrain import db
    from terrain.stack import NO_DATABASE, database_for_command

    if not database_for_command(lambda line: console.print(line, soft_wrap=True)):
        console.print(f"[red]error:[/red] {NO_DATABASE}", soft_wrap=True)
        raise typer.Exit(2)
    settings = TerrainSettings()

    async def go() -> T:
        try:
            pool = await db.create_pool(settings.database_url, timeout_s=30.0)
        except db.DatabaseUnreachable as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(1) from None
        try:
            await db.migrate(pool, "kernel", "terrain")
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def _checked(role: str, communities: str) -> tuple[Role, Any]:
    try:
        return parse_role(role), parse_scope(communities, TerrainSettings())
    except ScopeError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


def _fail(exc: store.AccessError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
    return typer.Exit(1)


@key_app.command("create")
def key_create(
    name: Annotated[str, typer.Option("--name", "-n", help="What the key is for: 'crm-sync'.")],
    role: RoleOption,
    communities: Communities,
    expires_days: Annotated[float | None, typer.Option(min=0.001, help="Days until it stops working.")] = None,
) -> None:
    """Make a key and print its token, this once."""
    chosen, scope = _checked(role, communities)
    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None

    async def work(pool: Any) -> tuple[store.KeyInfo, str]:
        return await store.create_key(pool, name=name, role=chosen, scope=scope, created_by=CLI_ACTOR,
                                      expires_at=expires)

    try:
        info, token = _run(work)
    except store.AccessError as exc:
        raise _fail(exc) from None
    console.print(f"key {info.name!r} ({info.role.value}, communities {info.scope}) id {info.id}"
                  + (f", expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ""), soft_wrap=True)
    console.print("token (shown this once; use it as Authorization: Bearer <token>):", soft_wrap=True)
    print(token)


@key_app.command("list")
def key_list(all_keys: Annotated[bool, typer.Option("--all", help="Revoked keys too.")] = False) -> None:
    """The keys: name, id, role, communities, dates (never their secrets)."""
    keys = _run(lambda pool: store.list_keys(pool, include_revoked=all_keys))
    table = Table("name", "id", "role", "communities", "created", "expires", "revoked")
    for k in keys:
        table.add_row(k.name, k.id, k.role.value, str(k.scope), f"{k.created_at:%Y-%m-%d %H:%M}Z",
                      f"{k.expires_at:%Y-%m-%d %H:%M}Z" if k.expires_at else "never",
                      f"{k.revoked_at:%Y-%m-%d %H:%M}Z" if k.revoked_at else "")
    console.print(table if keys else "no keys")


@key_app.command("revoke")
def key_revoke(key: Annotated[str, typer.Argument(help="The key's name or id.")]) -> None:
    """Revoke a key: every service stops taking it within TERRAIN_ACCESS_CACHE_S seconds."""
    info = _run(lambda pool: store.revoke_key(pool, key, by=CLI_ACTOR, now=datetime.now(UTC)))
    if info is None:
        console.print(f"[red]error:[/red] no live key has the name or id {key!r}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"revoked key {info.name!r} ({info.id})")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The user's sign-in name.")],
    role: RoleOption,
    communities: Communities,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
) -> None:
    """Add a local user (asks for the password, or reads it with --password-stdin)."""
    chosen, scope = _checked(role, communities)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        console.print("[red]error:[/red] no terminal to ask the password on: use --password-stdin", soft_wrap=True)
        raise typer.Exit(2)

    async def work(pool: Any) -> store.UserInfo:
        return await store.add_user(pool, name=name, role=chosen, scope=scope, password=password,
                                    created_by=CLI_ACTOR)

    try:
        info = _run(work)
    except store.AccessError as exc:
        raise _fail(exc) from None
    console.print(f"user {info.name!r} added ({info.role.value}, communities {info.scope}); they sign in at "
                  "POST /v1/access/sessions on the escalation service", soft_wrap=True)


@user_app.command("list")
def user_list() -> None:
    users = _run(store.list_users)
    table = Table("name", "role", "communities", "created", "disabled")
    for u in users:
        table.add_row(u.name, u.role.value, str(u.scope), f"{u.created_at:%Y-%m-%d %H:%M}Z",
                      f"{u.disabled_at:%Y-%m-%d %H:%M}Z" if u.disabled_at else "")
    console.print(table if users else "no users")


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable a user and end their sessions."""
    info = _run(lambda pool: store.disable_user(pool, name, datetime.now(UTC)))
    if info is None:
        console.print(f"[red]error:[/red] no enabled user is named {name!r}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"disabled user {info.name!r}")
