"""The kernel is a library: it imports no service, and finds the installed ones through their entry points."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from terrain import plugins
from terrain.plugins import ServiceDef, discover_services

KERNEL = Path(__file__).resolve().parents[2] / "terrain"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_kernel_module_imports_a_service():
    offenders = {
        str(p.relative_to(KERNEL.parent)): sorted(m for m in _imported_modules(p) if m.split(".")[0] == "services")
        for p in KERNEL.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_four_services_are_found_in_start_order():
    found = discover_services()
    assert [s.name for s in found] == ["ingest", "sentiment", "escalation", "events"]
    assert all(s.module == f"services.{s.name}" and s.has_migrations for s in found)


def test_their_commands_are_registered():
    import typer

    app = typer.Typer()
    plugins.register_commands(app)
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert {"import", "sentiment", "escalation", "policy", "report"} <= names


def test_a_broken_entry_point_is_named(monkeypatch: pytest.MonkeyPatch):
    class EntryPoint:
        name = "broken"
        value = "nowhere.at:all"

        def load(self):
            raise ImportError("No module named 'nowhere'")

    class NotAService(EntryPoint):
        name = "odd"
        value = "somewhere:THING"

        def load(self):
            return object()

    for ep, why in ((EntryPoint(), "does not load"), (NotAService(), "is not a terrain.plugins.ServiceDef")):
        monkeypatch.setattr(plugins.metadata, "entry_points", lambda group, ep=ep: [ep])
        discover_services.cache_clear()
        with pytest.raises(plugins.PluginError, match=why):
            discover_services()
    discover_services.cache_clear()


def test_a_service_def_is_plain_data():
    svc = ServiceDef("x", "services.ingest", "TERRAIN_X_PORT", 9999)
    assert svc.order == 100 and svc.commands is None
