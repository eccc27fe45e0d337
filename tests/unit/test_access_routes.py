"""Every route of every installed service either is public (with a reason) or declares the permission it needs:
a route added without one is a route anyone holding any key could call."""

from __future__ import annotations

import importlib

import pytest
from fastapi.routing import APIRoute

from terrain.access.deps import route_permission
from terrain.plugins import discover_services


def apps() -> list[tuple[str, object]]:
    out = []
    for svc in discover_services():
        module = importlib.import_module(f"{svc.module}.app")
        out.append((svc.name, module.build_app()))
    return out


@pytest.mark.parametrize("name, app", apps(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_route_is_public_or_declares_its_permission(name: str, app: object) -> None:
    public = app.state.http_edge.public  # type: ignore[attr-defined]
    unguarded = [
        f"{sorted(route.methods)} {route.path}"
        for route in app.routes  # type: ignore[attr-defined]
        if isinstance(route, APIRoute) and route.path not in public and route_permission(route) is None
    ]
    assert unguarded == [], f"{name}: routes with neither a permission nor a public reason: {unguarded}"
    for path, why in public.items():
        assert why.strip(), f"{name}: public route {path} without a reason"
