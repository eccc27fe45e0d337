"""A fresh clone as the README has a newcomer install it, run from the folder that holds it.

A checkout named `terrain` is a folder without `__init__.py` (a namespace package) in its parent: with the
working directory on the import path, `import terrain` found it before the editable install's finder, and every
service died looking for `.../terrain/migrations`. The commands here run from that parent, in a virtual
environment of their own where the checkout is installed editable (`pip install -e`), as the README says.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from terrain.devstack import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def fresh_venv(tmp_path: Path) -> tuple[Path, Path]:
    """(parent folder, venv bin folder): a copy of the checkout named `terrain` in `parent`, installed editable
    into a new venv. Its dependencies are this environment's, put on the new venv's path by a .pth file
    (a full install downloads and builds for minutes); the checkout itself goes through `pip install -e`."""
    parent = tmp_path / "work"
    clone = parent / "terrain"
    clone.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, clone / name)
    for name in ("terrain", "services"):
        shutil.copytree(REPO / name, clone / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    purelib = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "_terrain_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", "-e", str(clone)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return parent, venv / "bin"


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


def test_up_serve_and_commands_from_the_folder_that_holds_the_clone(tmp_path: Path) -> None:
    parent, bin_dir = fresh_venv(tmp_path)
    ports = {name: free_port() for name in ("ingest", "sentiment", "escalation", "events")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TERRAIN_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({f"TERRAIN_{n.upper()}_PORT": str(p) for n, p in ports.items()})
    user_home = tmp_path / "user"  # $HOME: `terrain up` keeps what it writes in TERRAIN_HOME
    user_home.mkdir()
    env.update({"TERRAIN_HOME": str(tmp_path / "home"), "TERRAIN_TANSU_PORT": "0", "HOME": str(user_home),
                "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"})
    # No TERRAIN_API_TOKEN: `terrain up` makes one and keeps it in the home, where the commands below find it.
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([str(bin_dir / "terrain"), "up"], cwd=parent, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 150
        while not all(_ready(f"http://127.0.0.1:{p}") for p in ports.values()):
            assert up.poll() is None, f"terrain up exited ({up.returncode}):\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.5)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(list(args), cwd=parent, env=env, capture_output=True, text=True, timeout=120,
                                  check=False)

        # The console script, from the same folder, beside the live run.
        done = run(str(bin_dir / "terrain"), "migrate", "--check")
        assert done.returncode == 0 and "up to date" in done.stdout, done.stdout + done.stderr

        # A command that calls a service finds the run's port (moved from 8084) and the token kept in the home: the
        # events service itself answers that there is no such event (neither "connection refused" nor 401).
        done = run(str(bin_dir / "terrain"), "report", "event", "no-such-event")
        assert done.returncode == 1 and "no event with id no-such-event" in done.stdout, done.stdout + done.stderr
        assert f"events_url http://127.0.0.1:{ports['events']}" in done.stderr, done.stderr

        # One service as the README starts it by hand, from the same folder, on the live run's broker and database.
        state = json.loads((tmp_path / "home" / "stack.json").read_text())
        alone_port = free_port()
        alone_env = {**env, "TERRAIN_INGEST_PORT": str(alone_port), "TERRAIN_DATABASE_URL": state["database_url"],
                     "TERRAIN_KAFKA_BOOTSTRAP_SERVERS": state["bootstrap"], "TERRAIN_CREATE_TOPICS": "false"}
        with open(tmp_path / "alone.log", "wb") as alone_log:
            alone = subprocess.Popen([str(bin_dir / "python"), "-m", "services.ingest"], cwd=parent, env=alone_env,
                                     stdout=alone_log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while not _ready(f"http://127.0.0.1:{alone_port}"):
                assert alone.poll() is None, (tmp_path / "alone.log").read_text()[-3000:]
                assert time.monotonic() < deadline, (tmp_path / "alone.log").read_text()[-3000:]
                time.sleep(0.5)
        finally:
            _stop(alone)
    finally:
        _stop(up)
    printed = log_path.read_text()
    assert up.returncode == 0, printed[-3000:]
    assert "Traceback" not in printed, printed[-3000:]
    assert [p.name for p in user_home.iterdir()] == []
