"""How the escalation service plugs into the kernel (the `terrain.services` entry point in pyproject.toml)."""

from __future__ import annotations

from typing import Any

from terrain.plugins import ServiceDef


def _commands(app: Any) -> None:
    from services.escalation.cli import escalation_app, policy_app

    app.add_typer(escalation_app, name="escalation")
    app.add_typer(policy_app, name="policy")


SERVICE = ServiceDef("escalation", "services.escalation", "TERRAIN_ESCALATION_PORT", 8083, order=30, commands=_commands)
