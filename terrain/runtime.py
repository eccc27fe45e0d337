"""What every service process has: settings, broker, publisher, database pool, outbox and health, started in order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import asyncpg
from aiokafka.errors import KafkaError
from fastapi import FastAPI
from pydantic import ValidationError

from terrain import db, telemetry
from terrain.contracts.base import error_message
from terrain.kafka import BatchConsumer, KafkaRefused, Publisher, check_tls, client_options, ensure_topics, make_broker
from terrain.looplag import LoopLagMonitor
from terrain.settings import TerrainSettings
from terrain.topics import TopicSpec, all_topic_names

log = logging.getLogger("terrain.runtime")

# At stop: how long the broker client (its consumers and its producer) may take to close.
STOP_BROKER_S = 20.0


class ServiceRuntime:
    """Owns a service's connections. `lifespan` starts them (database, topics, broker) and stops them in reverse."""

    def __init__(
        self,
        service: str,
        settings: TerrainSettings,
        *,
        migrations_package: str | None = None,
        use_database: bool = True,
        topic_overrides: dict[str, str] | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.migrations_package = migrations_package
        self.use_database = use_database
        # Tests map a contract topic to a uniquely named one; production uses the contract names.
        self.topic_overrides = topic_overrides or {}
        self.health = telemetry.Health(service)
        self.consumers: list[BatchConsumer[Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.broker = make_broker(settings, service)
        # The broker's own security, as arguments for the bare aiokafka clients (topic creation).
        self.kafka_options = client_options(settings)
        self.publisher = Publisher(self.broker, service)
        self._metrics_server: telemetry.MetricsServer | None = None
        self._pool: asyncpg.Pool | None = None
        self._outbox: db.Outbox | None = None
        self.on_started: list[Callable[[], Awaitable[None]]] = []
        self.on_stopping: list[Callable[[], Awaitable[None]]] = []
        self.loop_lag = LoopLagMonitor(service)

    def topic(self, spec: TopicSpec | str) -> str:
        name = spec.name if isinstance(spec, TopicSpec) else spec
        return self.topic_overrides.get(name, name)

    def pool_or_none(self) -> asyncpg.Pool | None:
        """The pool once started, else None (the HTTP edge checks keys and writes the audit log through it)."""
        return self._pool

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.service}: the database pool is not started")
        return self._pool

    @property
    def outbox(self) -> db.Outbox:
        if self._outbox is None:
            raise RuntimeError(f"{self.service}: the outbox is not started")
        return self._outbox

    def group(self, stream: str | None = None) -> str:
        """The consumer group of one of this service's streams: `<prefix>-<service>[-<stream>]`."""
        base = f"{self.settings.kafka_group_prefix}-{self.service}"
        return f"{base}-{stream}" if stream else base

    def consumer(self, spec: TopicSpec, process: Any, *, group_id: str | None = None) -> BatchConsumer[Any]:
        """Create and register a batch consumer for a topic (subscribers must exist before the broker starts)."""
        c: BatchConsumer[Any] = BatchConsumer(
            spec=spec,
            group_id=group_id or self.group(),
            service=self.service,
            settings=self.settings,
            publisher=self.publisher,
            process=process,
            health=self.health,
        )
        c.register(self.broker, topic=self.topic(spec), dlq_topic=self.topic(spec.dlq))
        self.consumers.append(c)
        return c

    async def start(self) -> None:
        try:
            await self._start()
        except KafkaRefused as exc:
            # A setting to fix, not an outage to wait out: one line in the log says which.
            log.error("cannot start: %s", exc, extra={"service": self.service})
            await self.stop()
            raise
        except BaseException:
            # A start-up failure must not leak what was opened (the pool, the broker's connections).
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        if s.metrics_port is not None:
            # First, so that Prometheus sees a starting service (terrain_ready 0) rather than none.
            self._metrics_server = telemetry.MetricsServer.start(s.host, s.metrics_port)
            log.info("metrics served apart", extra={"service": self.service, "port": self._metrics_server.port})
        if self.use_database:
            self.health.set("database", False, "connecting")
            where = db.describe_url(s.database_url)
            if "database_url" in s.model_fields_set:
                log.info("database", extra={"service": self.service, "database": where})
            else:
                log.warning(
                    "TERRAIN_DATABASE_URL is not set: using the default %s; set it to the database meant for this",
                    where, extra={"service": self.service},
                )
            self._pool = await db.create_pool(
                s.database_url, min_size=s.db_pool_min_size, max_size=s.db_pool_max_size
            )
            if s.migrate_on_start:
                await db.migrate(self._pool, "kernel", "terrain")
            if self.migrations_package and s.migrate_on_start:
                await db.migrate(self._pool, self.service, self.migrations_package)
            self._outbox = db.Outbox(self._pool, self.publisher, self.service)
            self.health.set("database", True, "connected")
        # With TLS asked for, one handshake first: a plaintext listener is then named in seconds, before any client
        # waits out its request timeout on it (40 s for the broker's).
        await check_tls(s.kafka_bootstrap_servers, self.kafka_options)
        if s.create_topics:
            names = [self.topic(n) for n in all_topic_names()]
            created = await ensure_topics(
                s.kafka_bootstrap_servers, names,
                partitions=s.topic_partitions, replication_factor=s.topic_replication_factor,
                security=self.kafka_options,
            )
            if created:
                log.info("topics created", extra={"topics": ",".join(created)})
        self.health.set("broker", False, "connecting")
        await self._start_broker()
        self.health.set("broker", True, "connected")
        if self._outbox is not None:
            self._outbox.start_relay(s.outbox_relay_interval_s, s.outbox_relay_min_age_s)
            self._tasks.append(asyncio.create_task(self._prune_loop(), name=f"prune-{self.service}"))
        self._tasks.append(asyncio.create_task(self._probe_loop(), name=f"probe-{self.service}"))
        self._tasks.append(asyncio.create_task(self.loop_lag.run(), name=f"loop-lag-{self.service}"))
        for hook in self.on_started:
            await hook()
        if _OWN_PROCESS:
            tune_gc(s.gc_young_threshold)
        self.health.started = True
        self.health.set("started", True, "")
        log.info("service started", extra={"service": self.service})

    async def _start_broker(self) -> None:
        """Connect to the broker, waiting for it (bounded) when it is not there yet: not ready meanwhile."""
        deadline = asyncio.get_running_loop().time() + self.settings.kafka_start_timeout_s
        while True:
            try:
                await self.broker.start()
                return
            except (KafkaError, OSError) as exc:
                await check_tls(self.settings.kafka_bootstrap_servers, self.kafka_options)
                if asyncio.get_running_loop().time() > deadline:
                    raise
                self.health.set("broker", False, f"unreachable: {type(exc).__name__}")
                log.warning("broker unreachable (%s); retrying", type(exc).__name__)
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(1.0)

    async def probe_once(self) -> None:
        """Check the database and the broker answer, and refresh consumer lag (and stuck detection)."""
        timeout = max(1.0, min(5.0, self.settings.health_probe_interval_s))
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.fetchval("SELECT 1"), timeout)
                self.health.set("database", True, "connected")
            except Exception as exc:
                self.health.set("database", False, f"unreachable: {type(exc).__name__}")
        try:
            reachable = await self.broker.ping(timeout)
        except Exception:
            reachable = False
        self.health.set("broker", reachable, "connected" if reachable else "unreachable")
        if reachable:
            for c in self.consumers:
                try:
                    await asyncio.wait_for(c.refresh_lag(), timeout)
                except Exception as exc:
                    log.debug("lag refresh failed: %s", type(exc).__name__)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_probe_interval_s)
            try:
                await self.probe_once()
            except Exception:
                log.exception("health probe failed")

    async def _prune_loop(self) -> None:
        s = self.settings
        while True:
            try:
                await db.prune_processed(
                    self.pool, self.service, s.processed_retention_hours * 3600, s.processed_prune_batch
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away: try again next time
                log.warning("pruning processed-message records failed: %s", type(exc).__name__)
            await asyncio.sleep(s.processed_prune_interval_s)

    async def stop(self) -> None:
        self.health.started = False
        self.health.set("started", False, "stopping")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for hook in self.on_stopping:
            try:
                await hook()
            except Exception:
                log.exception("stop hook failed")
        if self._outbox is not None:
            await self._outbox.stop_relay()
        try:
            # Bounded: a consumer paused by the dead-letter bound, or a broker gone, must not hang the stop.
            await asyncio.wait_for(self.broker.stop(), STOP_BROKER_S)
        except TimeoutError:
            log.error("broker client did not stop within %.0f s; stopping without it", STOP_BROKER_S,
                      extra={"service": self.service})
        except Exception as exc:
            log.warning("broker client stopped with an error: %s", type(exc).__name__, extra={"service": self.service})
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.stop)
            self._metrics_server = None
        log.info("service stopped", extra={"service": self.service})

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()


# Set by `serve`: the interpreter is the service's own, so its collector may be tuned (not inside a test run).
_OWN_PROCESS = False


def tune_gc(young: int) -> None:
    """Set Python's cyclic collector for batch work, once a service has started.

    What start-up built (modules, models, policies, caches) is collected once and then frozen: later
    collections no longer walk it. The youngest generation is collected every `young` allocations instead of
    every 700; the older generations keep their ratios. bench/README has the effect, measured side by side.
    """
    gc.collect()
    gc.freeze()
    if young:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young, older, oldest)


T = TypeVar("T")
CONFIG_EXIT_CODE = 2  # as a command line's usage error: fix the configuration, do not restart in a loop


def _setting_error(err: Any) -> str:
    """One pydantic error on a settings field, named as the environment variable that sets it."""
    name = "TERRAIN_" + "_".join(str(part) for part in err["loc"]).upper() if err["loc"] else "settings"
    given = err.get("input")
    shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
    return f"{name}: {error_message(err)}{shown}"


def _config_exit(service: str, reason: str) -> NoReturn:
    print(f"{service}: cannot start: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(CONFIG_EXIT_CODE)


def configured(service: str, make: Callable[[], T]) -> T:
    """Run a start-up step of a service (reading its settings, loading its models, its policy file): a bad
    setting or file ends the process with one line that names it, and exit code 2, not a traceback. The
    traceback stays available in the debug log (TERRAIN_LOG_LEVEL=DEBUG)."""
    try:
        return make()
    except ValidationError as exc:
        _config_exit(service, "; ".join(_setting_error(e) for e in exc.errors(include_url=False)))
    except (ValueError, OSError) as exc:
        log.debug("start-up failed", exc_info=True)
        _config_exit(service, str(exc) or type(exc).__name__)


def serve(app: FastAPI, settings: TerrainSettings, port: int) -> None:
    """Run one service's ASGI app with uvicorn until SIGINT/SIGTERM (the form containers use)."""
    import uvicorn

    from terrain.access.verify import check_closed

    closed = check_closed(settings)
    if closed is not None:
        _config_exit(str(getattr(app.state, "service", app.title)), closed)
    global _OWN_PROCESS
    _OWN_PROCESS = True
    uvicorn.run(app, host=settings.host, port=port, log_config=None, access_log=False, lifespan="on")
