"""The whole pipeline as `terrain up` runs it: a French negative comment becomes one incident; stop leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from terrain.devstack import free_port

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token"


def _wait(predicate, timeout_s: float, what: str, proc: subprocess.Popen[bytes]):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"terrain up exited ({proc.returncode}) while waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_comment_to_incident_and_clean_stop(tmp_path: Path):
    ports = {name: free_port() for name in ("INGEST", "SENTIMENT", "ESCALATION", "EVENTS")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
    env.update({f"TERRAIN_{n}_PORT": str(p) for n, p in ports.items()})
    env.update({"TERRAIN_HOME": str(tmp_path / "home"), "TERRAIN_API_TOKEN": TOKEN, "TERRAIN_TANSU_PORT": "0"})
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "terrain.cli", "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    state_file = tmp_path / "home" / "stack.json"
    ingest = f"http://127.0.0.1:{ports['INGEST']}"
    escalation = f"http://127.0.0.1:{ports['ESCALATION']}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        def all_ready() -> bool:
            try:
                return all(
                    httpx.get(f"http://127.0.0.1:{p}/readyz", timeout=1).status_code == 200 for p in ports.values()
                )
            except httpx.HTTPError:
                return False

        _wait(all_ready, 120, "every service ready", proc)
        state = json.loads(state_file.read_text())
        comment = {
            "source": "facebook", "external_id": "e2e-1", "community_id": "resto-lyon", "thread_id": "post-9",
            "author_id": "u-1", "text": "Service déplorable et serveur très désagréable, je suis furieux !",
            "created_at": "2026-11-25T12:00:00Z",
        }
        for _ in range(2):  # the same comment twice must attach once
            r = httpx.post(f"{ingest}/v1/comments", json=comment, headers=headers, timeout=10)
            assert r.status_code == 202, r.text

        def incidents() -> list[dict]:
            r = httpx.get(f"{escalation}/v1/incidents", params={"community_id": "resto-lyon"}, headers=headers)
            return r.json()["items"] if r.status_code == 200 else []

        found = _wait(incidents, 30, "an incident for the comment", proc)
        assert len(found) == 1
        assert found[0]["thread_id"] == "post-9" and found[0]["state"] == "open"
        time.sleep(2)  # a duplicate, if any, would have attached by now
        detail = httpx.get(f"{escalation}/v1/incidents/{found[0]['id']}", headers=headers).json()
        assert detail["comment_count"] == 1
        assert httpx.get(f"{escalation}/v1/incidents", headers={"Authorization": "Bearer wrong"}).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    assert proc.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
    pids = [state["broker_pid"], *state["services"].values()]
    pg_pidfile = Path(state["postgres_datadir"]) / "postmaster.pid"
    assert not pg_pidfile.exists(), "PostgreSQL still running after stop"
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"processes left behind: {alive}"
    assert not state_file.exists()
