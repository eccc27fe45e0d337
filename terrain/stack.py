"""`terrain up`: the whole pipeline on one machine: embedded broker and database, one process per installed service."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from terrain.devstack import EmbeddedPostgres, TansuBroker, _die_with_parent, free_port, stop_process
from terrain.kafka import ensure_topics
from terrain.plugins import ServiceDef as ServiceDef  # re-exported: the deployment plans name it from here
from terrain.plugins import discover_services
from terrain.topics import all_topic_names

log = logging.getLogger("terrain.stack")


def __getattr__(name: str) -> tuple[ServiceDef, ...]:
    # `SERVICES` is what is installed, found when first asked for (after every plugin's package can load).
    if name == "SERVICES":
        return discover_services()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def state_dir() -> Path:
    """Where local runs keep their data: $TERRAIN_HOME, else the user's data directory."""
    env = os.environ.get("TERRAIN_HOME")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("terrain", appauthor=False))


# What `terrain up` reads besides the services' settings, said once: `terrain up --help` and the operators'
# reference (terrain/ops/reference.py, which refuses a variable read here without a line) show these words.
LOCAL_RUN_VARIABLES: dict[str, str] = {
    "TERRAIN_HOME": "Folder of local runs: the embedded database, the API token (`api-token`), the broker's log, "
    "and the lock and state of a live `terrain up`; default: the user data directory (~/.local/share/terrain "
    "on Linux). Commands run beside a live `terrain up` find it through the same folder.",
    "TERRAIN_TANSU_PORT": "Port of the embedded Kafka-protocol broker (default 9092); when it is taken, or 0, "
    "`terrain up` picks a free one and prints it.",
    "TERRAIN_TANSU_LOG": "Log filter of the embedded broker (RUST_LOG syntax, default `warn`), written to "
    "`tansu.log` in TERRAIN_HOME.",
}

# In a home: the lock a live `terrain up` holds, and the state file it writes (pids, ports, addresses).
LOCK_FILE, STATE_FILE = "terrain.lock", "stack.json"


# What a command run beside a live `terrain up` of the same home takes from that run when it is not set (one rule
# for every command that talks to a running stack): its broker, its embedded database, a service's URL
# (TERRAIN_<SERVICE>_URL) and the API token it keeps in the home.
BROKER_VAR, DATABASE_VAR, TOKEN_VAR = "TERRAIN_KAFKA_BOOTSTRAP_SERVERS", "TERRAIN_DATABASE_URL", "TERRAIN_API_TOKEN"
TOKEN_FILE = "api-token"


def service_url_var(service: str) -> str:
    return f"TERRAIN_{service.upper()}_URL"


def running_stack_env(
    home: Path, env: dict[str, str], wanted: Sequence[str] = (BROKER_VAR, DATABASE_VAR)
) -> dict[str, str]:
    """For a command run beside `terrain up` on the same home (`terrain import`, `terrain report event`): the
    `wanted` variables `env` does not set, as that live run has them. Empty when no run is live there (nobody
    holds the home's lock) or when all are set. An external database (TERRAIN_DATABASE_URL given to `terrain
    up`) is never written down, so it is never offered; the token only when `terrain up` took it from the home
    (not from TERRAIN_API_TOKEN), and only with a service URL of the same run, so it goes nowhere else."""
    import fcntl

    wanted = [k for k in wanted if not env.get(k)]
    if not wanted:
        return {}
    try:
        fd = os.open(home / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return {}
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # taken: nobody holds the home, so no run is live
        fcntl.flock(fd, fcntl.LOCK_UN)
        return {}
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    try:
        state = json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, Any] = {BROKER_VAR: state.get("bootstrap"), DATABASE_VAR: state.get("database_url")}
    for name, port in (state.get("ports") or {}).items():
        found[service_url_var(name)] = f"http://127.0.0.1:{port}"
    offered = {k: str(found[k]) for k in wanted if found.get(k)}
    if TOKEN_VAR in wanted and state.get("api_token_file") and any(k.endswith("_URL") for k in offered):
        try:
            token = (home / str(state["api_token_file"])).read_text(encoding="utf-8").strip()
        except OSError:
            token = ""
        if token:
            offered[TOKEN_VAR] = token
    return offered


NO_DATABASE = (
    "TERRAIN_DATABASE_URL is not set: say which PostgreSQL to use, e.g. "
    "TERRAIN_DATABASE_URL=postgresql://terrain@db.example:5432/terrain (`terrain up` runs an embedded one for "
    "local use, and a command run beside it on the same home uses that one)"
)


def database_for_command(say: Callable[[str], None]) -> bool:
    """For a command run by hand that writes to the database (`terrain migrate`, `terrain import`): never
    guess one. TERRAIN_DATABASE_URL if set; else, beside a live `terrain up` of this home, that run's broker
    and embedded database (put in the environment, said); else False, and the caller refuses with
    NO_DATABASE (before, such a command wrote its tables into whatever PostgreSQL listened on 5432)."""
    use_running_stack(say)
    return bool(os.environ.get("TERRAIN_DATABASE_URL"))


def use_running_stack(say: Callable[[str], None], wanted: Sequence[str] = (BROKER_VAR, DATABASE_VAR)) -> None:
    """Beside a live `terrain up` of this home, put what it has of `wanted` in the environment where unset, and
    say so (the token by where it is kept, never its value)."""
    home = state_dir()
    found = running_stack_env(home, dict(os.environ), wanted)
    if found:
        os.environ.update(found)
        where = ", ".join(
            f"{k.removeprefix('TERRAIN_').lower()} " + (str(home / TOKEN_FILE) if k == TOKEN_VAR else v)
            for k, v in found.items()
        )
        say(f"using the running `terrain up` of {home}: {where}")


def service_command(module: str) -> list[str]:
    """The command that runs a service module as `terrain up` does. `-P`: the working directory stays off the
    import path, so a folder there named like a package (the checkout `terrain` in the folder that holds it: a
    namespace package, as its root has no __init__.py) never shadows the installed one."""
    return [sys.executable, "-P", "-m", module]


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as s:
        # As servers bind: a port left in TIME_WAIT by a stopped run is free, one with a listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class HomeInUse(RuntimeError):
    """Another live `terrain up` holds this home."""


class PortsInUse(RuntimeError):
    """A service port is taken by another program."""


@dataclass
class Stack:
    """Starts the parts in order, supervises the services, and stops everything it started, by pid."""

    home: Path
    say: Callable[[str], None] = print
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    broker: TansuBroker | None = None
    postgres: EmbeddedPostgres | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, list[float]] = field(default_factory=dict)
    token: str = ""
    bootstrap: str = ""
    database_url: str = ""
    # When set, each service writes its output to <log_dir>/<service>.log instead of the terminal.
    log_dir: Path | None = None
    _lock_fd: int | None = field(default=None, repr=False)

    @property
    def lock_file(self) -> Path:
        return self.home / LOCK_FILE

    def lock_home(self) -> None:
        """Hold an exclusive lock on the home for this runner's life: one `terrain up` per home.

        The lock is the operating system's (flock), so it dies with its owner: a home whose owner was
        killed is free again, and only then are its leftovers (a PostgreSQL still running) cleaned.
        """
        import fcntl

        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise HomeInUse(
                f"another `terrain up` (pid {owner}) is running with the home {self.home}; "
                "stop it first, or give this one its own home with TERRAIN_HOME=<folder>"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock_home(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def check_ports(self) -> None:
        """Refuse to start when a service port is taken: the services would crash-loop on it."""
        busy = [
            f"{self.ports[svc.name]} ({svc.name}, {svc.port_env})"
            for svc in discover_services()
            if not _port_free(self.ports[svc.name], self.env.get("TERRAIN_HOST", "127.0.0.1"))
        ]
        if busy:
            raise PortsInUse(
                "port(s) in use by another program: " + ", ".join(busy)
                + "; stop it or choose other ports with those variables"
            )

    @property
    def state_file(self) -> Path:
        return self.home / STATE_FILE

    def home_token(self) -> str:
        """The API token kept in the home, made on the first start and readable by its owner only, so an
        exported header and a script keep working from one `terrain up` to the next on the same home (a
        new token each start answered them 401)."""
        path = self.home / TOKEN_FILE
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            token = ""
        if not token:
            token = secrets.token_urlsafe(18)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(token + "\n")
        return token

    def start(self, ready_timeout_s: float = 90.0) -> None:
        t0 = time.monotonic()
        self.lock_home()
        for svc in discover_services():
            self.ports[svc.name] = int(self.env.get(svc.port_env, svc.default_port))
        self.check_ports()
        self.token = self.env.get("TERRAIN_API_TOKEN") or self.home_token()
        if self.env.get("TERRAIN_KAFKA_BOOTSTRAP_SERVERS"):
            self.bootstrap = self.env["TERRAIN_KAFKA_BOOTSTRAP_SERVERS"]
            self.say(f"broker      external at {self.bootstrap}")
        else:
            wanted = int(self.env.get("TERRAIN_TANSU_PORT", "9092"))
            port = wanted if wanted and _port_free(wanted) else free_port()
            self.broker = TansuBroker(port=port, log_path=self.home / "tansu.log", bin_dir=self.home / "bin").start()
            self.bootstrap = self.broker.bootstrap_servers
            self.say(f"broker      Tansu (embedded, in memory) at {self.bootstrap}")
        if self.env.get("TERRAIN_DATABASE_URL"):
            self.database_url = self.env["TERRAIN_DATABASE_URL"]
            self.say("database    external (TERRAIN_DATABASE_URL)")
        else:
            self.postgres = EmbeddedPostgres(self.home / "postgres").start()
            self.database_url = self.postgres.url
            self.say(f"database    PostgreSQL (embedded) at {self.database_url}, data in {self.postgres.datadir}")
        partitions = int(self.env.get("TERRAIN_TOPIC_PARTITIONS", "4"))
        created = asyncio.run(ensure_topics(self.bootstrap, all_topic_names(), partitions=partitions,
                                            security=self._kafka_security()))
        self.say(f"topics      {len(all_topic_names())} ready ({len(created)} created, {partitions} partitions each)")
        for svc in discover_services():
            self._spawn(svc)
        self._write_state()
        self.wait_ready(ready_timeout_s)
        self.say(f"ready in {time.monotonic() - t0:.1f}s")

    def _child_env(self, svc: ServiceDef) -> dict[str, str]:
        env = dict(self.env)
        env.update({
            "TERRAIN_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TERRAIN_DATABASE_URL": self.database_url,
            "TERRAIN_API_TOKEN": self.token,
            svc.port_env: str(self.ports[svc.name]),
            "TERRAIN_CREATE_TOPICS": "false",
            "PYTHONUNBUFFERED": "1",
        })
        # Quick group rejoin on one machine; production keeps the safer defaults.
        env.setdefault("TERRAIN_PUBLIC_DOCS", "true")  # a local run's API documentation is for whoever runs it
        env.setdefault("TERRAIN_KAFKA_SESSION_TIMEOUT_MS", "3000")
        env.setdefault("TERRAIN_KAFKA_HEARTBEAT_INTERVAL_MS", "500")
        return env

    def _spawn(self, svc: ServiceDef) -> None:
        out: Any = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{svc.name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        try:
            self.procs[svc.name] = subprocess.Popen(
                service_command(svc.module), env=self._child_env(svc), preexec_fn=_die_with_parent,
                # Own session: a terminal's Ctrl-C reaches only the runner, which stops services before the broker.
                start_new_session=True, stdout=out, stderr=subprocess.STDOUT if out else None,
            )
        finally:
            if out is not None:
                out.close()

    def _kafka_security(self) -> dict[str, Any]:
        """An external broker's TLS and SASL settings (TERRAIN_KAFKA_*), as the services will use them; the embedded
        broker needs none."""
        if self.broker is not None:
            return {}
        from terrain.kafka import client_options
        from terrain.settings import TerrainSettings

        given = {k.removeprefix("TERRAIN_").lower(): v for k, v in self.env.items() if k.startswith("TERRAIN_KAFKA_")}
        return client_options(TerrainSettings.model_validate(given))

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "broker_pid": self.broker.proc.pid if self.broker and self.broker.proc else None,
            "postgres_datadir": str(self.postgres.datadir) if self.postgres else None,
            "services": {name: p.pid for name, p in self.procs.items()},
            "ports": self.ports,
            "bootstrap": self.bootstrap,
            # Only the embedded database's URL (no password in it): other commands on this home find it here.
            "database_url": self.database_url if self.postgres else None,
            # Where the token in use is kept, when it is the home's (a token given by the environment is not).
            "api_token_file": None if self.env.get(TOKEN_VAR) else TOKEN_FILE,
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    def urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(self.procs)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for name in sorted(pending):
                    proc = self.procs[name]
                    if proc.poll() is not None:
                        raise RuntimeError(f"service {name} exited with code {proc.returncode} during start-up")
                    try:
                        got = client.get(f"{self.urls()[name]}/readyz")
                        # Only our own process counts: another program on the port must not pass for it. /healthz
                        # names the process (/readyz, public on a cluster, does not).
                        if (got.status_code == 200
                                and client.get(f"{self.urls()[name]}/healthz").json().get("pid") == proc.pid):
                            pending.discard(name)
                            self.say(f"{name:<11} ready at {self.urls()[name]}")
                    except (httpx.HTTPError, ValueError, AttributeError):
                        pass
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(f"not ready after {timeout_s:.0f}s: {', '.join(sorted(pending))}")
                time.sleep(0.2)

    def supervise_once(self) -> None:
        """Restart a service that died (at most 5 times a minute, then give up loudly)."""
        for svc in discover_services():
            proc = self.procs.get(svc.name)
            if proc is None or proc.poll() is None:
                continue
            recent = [t for t in self.restarts.get(svc.name, []) if time.monotonic() - t < 60]
            if len(recent) >= 5:
                raise RuntimeError(f"service {svc.name} keeps exiting (code {proc.returncode}); stopping")
            self.say(f"{svc.name} exited with code {proc.returncode}; restarting")
            recent.append(time.monotonic())
            self.restarts[svc.name] = recent
            self._spawn(svc)
            self._write_state()

    def stop(self) -> bool:
        """Stop what this runner started, services first; False when it had started nothing."""
        started = bool(self.procs or self.broker or self.postgres)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                self.say(f"{name} did not stop in 20s; killing it")
                stop_process(proc, 1)
        self.procs.clear()
        if self.broker:
            self.broker.stop()
        if self.postgres:
            self.postgres.stop()
        if self._lock_fd is not None:  # the state file is the lock owner's: never touch another runner's
            self.state_file.unlink(missing_ok=True)
        self.unlock_home()
        return started
