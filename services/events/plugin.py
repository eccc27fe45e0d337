"""How the events service plugs into the kernel (the `terrain.services` entry point in pyproject.toml)."""

from __future__ import annotations

from typing import Any

from terrain.plugins import ServiceDef


def _commands(app: Any) -> None:
    from services.events.cli import report_app

    app.add_typer(report_app, name="report")


SERVICE = ServiceDef("events", "services.events", "TERRAIN_EVENTS_PORT", 8084, order=40, commands=_commands)
