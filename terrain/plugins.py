"""How services plug into the kernel: each declares itself under the `terrain.services` entry-point group.

The kernel imports no service. A service package ships a small declaration (a `ServiceDef`: its name, the
module `python -m` runs, its HTTP port setting, its start order and a hook adding its `terrain` commands)
and names it in its distribution's metadata:

    [project.entry-points."terrain.services"]
    sentiment = "services.sentiment.plugin:SERVICE"

Migrations are found beside the module (`<module>/migrations/NNN_name.sql`), topics in the kernel's
registry (`terrain.topics`), which is the public contract every service reads and writes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata, resources
from typing import Any

log = logging.getLogger("terrain.plugins")

ENTRY_POINT_GROUP = "terrain.services"


@dataclass(frozen=True)
class ServiceDef:
    """One deployable service, as the kernel needs to know it."""

    name: str
    module: str
    port_env: str
    default_port: int
    # Start order for `terrain up` (upstream first); ties by name.
    order: int = 100
    # Adds the service's commands to the `terrain` command (a Typer app); imported only when called.
    commands: Callable[[Any], None] | None = None

    @property
    def has_migrations(self) -> bool:
        return resources.files(self.module).joinpath("migrations").is_dir()


class PluginError(RuntimeError):
    """An entry point that does not load, or does not declare a ServiceDef."""


@functools.cache
def discover_services() -> tuple[ServiceDef, ...]:
    """Every installed service, in start order. Raises PluginError naming an entry point that is broken."""
    found: dict[str, ServiceDef] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            svc = ep.load()
        except Exception as exc:
            raise PluginError(f"service entry point {ep.name!r} ({ep.value}) does not load: {exc}") from exc
        if not isinstance(svc, ServiceDef):
            raise PluginError(f"service entry point {ep.name!r} ({ep.value}) is not a terrain.plugins.ServiceDef")
        if svc.name in found and found[svc.name] != svc:
            raise PluginError(f"two services named {svc.name!r}: {found[svc.name].module} and {svc.module}")
        found[svc.name] = svc
    if not found:
        log.warning("no service is installed (entry-point group %s is empty)", ENTRY_POINT_GROUP)
    return tuple(sorted(found.values(), key=lambda s: (s.order, s.name)))


def register_commands(app: Any) -> None:
    """Let every installed service add its commands to the `terrain` Typer app."""
    for svc in discover_services():
        if svc.commands is not None:
            svc.commands(app)
