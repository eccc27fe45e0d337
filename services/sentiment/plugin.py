"""How the sentiment service plugs into the kernel (the `terrain.services` entry point in pyproject.toml)."""

from __future__ import annotations

from typing import Any

from terrain.plugins import ServiceDef


def _commands(app: Any) -> None:
    from services.sentiment.cli import sentiment_app

    app.add_typer(sentiment_app, name="sentiment")


SERVICE = ServiceDef("sentiment", "services.sentiment", "TERRAIN_SENTIMENT_PORT", 8082, order=20, commands=_commands)
