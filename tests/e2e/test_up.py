"""The whole pipeline as `terrain up` runs it: a French negative comment becomes one incident; stop leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
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
        # The start-up jobs, run by hand beside it with nothing set, find its broker and database by the home.
        for args, expected in ((["topics", "--check"], "missing"), (["migrate", "--check"], "up to date")):
            done = subprocess.run([sys.executable, "-m", "terrain.cli", *args], env=env, capture_output=True,
                                  text=True, timeout=120, check=False)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            assert "using the running `terrain up`" in done.stdout and expected in done.stdout, done.stdout
        comment = {
            "source": "facebook", "external_id": "e2e-1", "community_id": "resto-lyon", "thread_id": "post-9",
            "author_id": "u-1", "text": "Service déplorable et serveur très désagréable, je suis furieux !",
            "created_at": datetime.now(UTC).isoformat(),  # older than the horizon would page nobody
        }
        for _ in range(2):  # the same comment twice must attach once
            r = httpx.post(f"{ingest}/v1/comments", json=comment, headers=headers, timeout=10)
            assert r.status_code == 202, r.text

        def incidents() -> list[dict]:
            r = httpx.get(f"{escalation}/v1/incidents", params={"community_id": "resto-lyon"}, headers=headers)
            return r.json()["items"] if r.status_code == 200 else []

        found = _wait(incidents, 90, "an incident for the comment", proc)
        assert len(found) == 1
        assert found[0]["thread_id"] == "post-9" and found[0]["state"] == "open"
        time.sleep(2)  # a duplicate, if any, would have attached by now
        detail = httpx.get(f"{escalation}/v1/incidents/{found[0]['id']}", headers=headers).json()
        assert detail["comment_count"] == 1
        assert httpx.get(f"{escalation}/v1/incidents", headers={"Authorization": "Bearer wrong"}).status_code == 401

        # Another system's key, made from the shell beside the running stack: it publishes for its brand only.
        made = subprocess.run([sys.executable, "-m", "terrain.cli", "access", "key", "create", "--name", "crm",
                               "--role", "service", "--communities", "resto-*"],
                              env=env, capture_output=True, text=True, timeout=120, check=False)
        assert made.returncode == 0, (made.stdout, made.stderr)
        crm = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
        praise = {**comment, "external_id": "e2e-crm", "thread_id": "post-10", "text": "Merci, super soirée !"}
        assert httpx.post(f"{ingest}/v1/comments", json=praise, headers=crm, timeout=10).status_code == 202
        elsewhere = httpx.post(f"{ingest}/v1/comments", json={**praise, "community_id": "bistro-paris"},
                               headers=crm, timeout=10)
        assert elsewhere.status_code == 403, elsewhere.text
        assert elsewhere.json()["detail"] == "community 'bistro-paris' is outside your scope"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)  # a second signal while stopping must not break off the stop
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    printed = (tmp_path / "up.log").read_text()
    assert proc.returncode == 0, printed[-3000:]
    assert printed.rstrip().endswith("stopped: services, broker and database"), printed[-500:]
    assert "Traceback" not in printed, printed[-3000:]
    pids = [state["broker_pid"], *state["services"].values()]
    pg_pidfile = Path(state["postgres_datadir"]) / "postmaster.pid"
    assert not pg_pidfile.exists(), "PostgreSQL still running after stop"
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"processes left behind: {alive}"
    assert not state_file.exists()


# --- a second `terrain up`: refused on a live home, ports checked, ready only from its own processes -----


def _lock_holder(home: Path) -> subprocess.Popen[bytes]:
    """Another runner holding the home, as a live `terrain up` does."""
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom terrain.stack import Stack\n"
        "s = Stack(home=Path(sys.argv[1])); s.lock_home(); print('locked', flush=True); time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
    return proc


def test_a_second_up_on_a_live_home_is_refused_and_touches_nothing(tmp_path: Path):
    from terrain.devstack import EmbeddedPostgres
    from terrain.stack import HomeInUse, Stack

    home = tmp_path / "home"
    owner = _lock_holder(home)
    live_db = EmbeddedPostgres(home / "postgres").start()  # the live instance's database
    (home / "stack.json").write_text("{}")
    try:
        lines: list[str] = []
        second = Stack(home=home, say=lines.append, env={"TERRAIN_TANSU_PORT": "0"})
        with pytest.raises(HomeInUse, match=rf"pid {owner.pid}.*TERRAIN_HOME"):
            second.start(ready_timeout_s=5)
        # What `terrain up` does on any error; it says "stopped" only when stop() reports something stopped.
        assert second.stop() is False
        assert second.broker is None and second.postgres is None and second.procs == {}
        assert (home / "postgres" / "postmaster.pid").exists(), "the live instance's PostgreSQL was stopped"
        assert (home / "stack.json").exists(), "the live instance's state file was removed"
    finally:
        live_db.stop()
        owner.kill()
        owner.wait(10)
    # the owner is dead: its home is free again
    third = Stack(home=home, say=lambda _: None)
    third.lock_home()
    third.unlock_home()


def test_a_command_beside_a_live_up_finds_its_broker_and_database(tmp_path: Path):
    import json

    from terrain.stack import running_stack_env

    home = tmp_path / "home"
    home.mkdir()
    state = {"bootstrap": "127.0.0.1:19092", "database_url": "postgresql://postgres@127.0.0.1:5999/terrain"}
    (home / "stack.json").write_text(json.dumps(state))
    assert running_stack_env(home, {}) == {}  # no lock file: nothing runs there
    owner = _lock_holder(home)
    try:
        assert running_stack_env(home, {}) == {
            "TERRAIN_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
            "TERRAIN_DATABASE_URL": "postgresql://postgres@127.0.0.1:5999/terrain"}
        # What the caller set wins; only the rest is offered.
        assert running_stack_env(home, {"TERRAIN_DATABASE_URL": "postgresql://db.example/x"}) == {
            "TERRAIN_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092"}
    finally:
        owner.kill()
        owner.wait(10)
    assert running_stack_env(home, {}) == {}  # the run is gone, its state file is stale


def test_up_refuses_busy_ports_before_starting_anything(tmp_path: Path):
    import socket

    from terrain.stack import PortsInUse, Stack

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"TERRAIN_INGEST_PORT": str(port), "TERRAIN_TANSU_PORT": "0",
               **{f"TERRAIN_{n}_PORT": str(free_port()) for n in ("SENTIMENT", "ESCALATION", "EVENTS")}}
        stack = Stack(home=tmp_path / "home", say=lambda _: None, env=env)
        with pytest.raises(PortsInUse, match=rf"{port} \(ingest, TERRAIN_INGEST_PORT\)"):
            stack.start(ready_timeout_s=5)
        assert stack.stop() is False
        assert stack.broker is None and stack.postgres is None and stack.procs == {}


def test_ready_is_reported_only_when_its_own_process_answers(tmp_path: Path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from terrain.stack import Stack

    class Impostor(BaseHTTPRequestHandler):  # another instance's service answering on the port
        def do_GET(self) -> None:
            body = json.dumps({"ready": True, "pid": os.getpid()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stack = Stack(home=tmp_path / "home", say=lambda _: None)
        stack.procs = {"ingest": ours}
        stack.ports = {"ingest": server.server_address[1]}
        with pytest.raises(TimeoutError, match="ingest"):
            stack.wait_ready(timeout_s=2)
    finally:
        ours.kill()
        ours.wait(10)
        server.shutdown()
