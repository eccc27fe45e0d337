"""How the ingest service plugs into the kernel (the `terrain.services` entry point in pyproject.toml)."""

from __future__ import annotations

from typing import Any

from terrain.plugins import ServiceDef


def _commands(app: Any) -> None:
    from services.ingest.cli import import_command

    app.command("import")(import_command)


SERVICE = ServiceDef("ingest", "services.ingest", "TERRAIN_INGEST_PORT", 8081, order=10, commands=_commands)
