"""Kafka plumbing: broker factory, topic creation, keyed publishing, and the batch consumer with dead-lettering.

Delivery model: a batch is committed only after its effects are stored. On an error the batch is
rewound: every partition it spans is sought back to its earliest record (done here, and again by
FastStream's NACK_ON_ERROR policy), so nothing is committed past unprocessed work. A message that can
never succeed goes to the topic's dead-letter twin with the reason in its headers; a transient failure
is retried with bounded backoff, then the batch is rewound and read again. When most recent messages
fail (the dead-letter bound), the consumer pauses its partitions and stays stopped, not ready, until
the process restarts: something is broken, and dead-lettering everything would hide it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.security import parse_security
from faststream.middlewares import AckPolicy
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import BaseModel, ValidationError

from terrain import telemetry
from terrain.contracts.base import Envelope, located_error, utc_text
from terrain.settings import TerrainSettings
from terrain.topics import TopicSpec, dlq_name

log = logging.getLogger("terrain.kafka")

M = TypeVar("M", bound=Envelope)

DLQ_HEADER_PREFIX = "terrain-dlq-"
# Under Kafka's default message.max.bytes (1 MB), so a full record batch is never refused.
PRODUCER_BATCH_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, detached from the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A message to publish: topic, partition key, JSON body and headers."""

    topic: str
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, topic: str | TopicSpec, key: str, message: BaseModel) -> OutMessage:
        name = topic.name if isinstance(topic, TopicSpec) else topic
        return cls(topic=name, key=key, value=message.model_dump_json().encode())


@dataclass(frozen=True, slots=True)
class Decoded(Generic[M]):
    record: Record
    message: M


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that can never succeed, and why; it goes to the dead-letter topic."""

    record: Record
    reason: str


class DeadLetterRateExceeded(RuntimeError):
    """Too many recent messages failed: something is broken upstream or here, so stop instead."""


class TransientError(RuntimeError):
    """A failure worth retrying (a dependency is down or busy)."""


class KafkaSettingsError(ValueError):
    """Kafka settings that cannot work together (a SASL mechanism without a user name, a missing CA file)."""


class KafkaRefused(RuntimeError):
    """The broker takes connections but not as the settings say (no TLS where TLS is asked, a certificate this
    client does not trust): waiting for it cannot help, so a starting service stops and says why."""


SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_CLASSES: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
    "PLAIN": SASLPlaintext,
    "SCRAM-SHA-256": SASLScram256,
    "SCRAM-SHA-512": SASLScram512,
}


def kafka_security(settings: TerrainSettings) -> BaseSecurity | None:
    """How every Kafka client of a service authenticates and encrypts, from the TERRAIN_KAFKA_* settings: the
    FastStream security object (None for PLAINTEXT). `client_options` gives the same as aiokafka's arguments.

    Raises KafkaSettingsError, naming the variables, for a combination that cannot work: it is found when the
    service is built, so `terrain serve` stops at once with that line rather than retrying a broker for minutes.
    """
    s = settings
    protocol = s.kafka_security_protocol
    sasl, tls = protocol in SASL_PROTOCOLS, protocol in TLS_PROTOCOLS
    password = s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password is not None else ""
    sasl_given = {
        "TERRAIN_KAFKA_SASL_MECHANISM": s.kafka_sasl_mechanism,
        "TERRAIN_KAFKA_SASL_USERNAME": s.kafka_sasl_username,
        "TERRAIN_KAFKA_SASL_PASSWORD": password,
    }
    files = {
        "TERRAIN_KAFKA_SSL_CA_FILE": s.kafka_ssl_ca_file,
        "TERRAIN_KAFKA_SSL_CERT_FILE": s.kafka_ssl_cert_file,
        "TERRAIN_KAFKA_SSL_KEY_FILE": s.kafka_ssl_key_file,
    }
    if sasl:
        missing = [name for name, value in sasl_given.items() if not value]
        if missing:
            raise KafkaSettingsError(f"TERRAIN_KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}")
    else:
        # Set but unused would connect without the credentials someone meant to use: say so instead.
        stray = [name for name, value in sasl_given.items() if value]
        if stray:
            raise KafkaSettingsError(
                f"{', '.join(stray)} set, but TERRAIN_KAFKA_SECURITY_PROTOCOL is {protocol}: set it to SASL_SSL "
                "(or SASL_PLAINTEXT) to log in to Kafka, or unset them")
    if not tls:
        stray = [name for name, value in files.items() if value is not None]
        if stray:
            raise KafkaSettingsError(
                f"{', '.join(stray)} set, but TERRAIN_KAFKA_SECURITY_PROTOCOL is {protocol}: set it to SSL or "
                "SASL_SSL to use TLS, or unset them")
    context = tls_context(settings) if tls else None
    if not sasl:
        return BaseSecurity(ssl_context=context) if context is not None else None
    assert s.kafka_sasl_mechanism is not None and s.kafka_sasl_username is not None
    return _SASL_CLASSES[s.kafka_sasl_mechanism](s.kafka_sasl_username, password, ssl_context=context, use_ssl=tls)


def tls_context(settings: TerrainSettings) -> ssl.SSLContext:
    """A client TLS context: the brokers' certificates checked against TERRAIN_KAFKA_SSL_CA_FILE (else the
    system's CAs) and their host names; with TERRAIN_KAFKA_SSL_CERT_FILE, a client certificate (mutual TLS)."""
    s = settings
    for name, path in (("TERRAIN_KAFKA_SSL_CA_FILE", s.kafka_ssl_ca_file),
                       ("TERRAIN_KAFKA_SSL_CERT_FILE", s.kafka_ssl_cert_file),
                       ("TERRAIN_KAFKA_SSL_KEY_FILE", s.kafka_ssl_key_file)):
        if path is not None and not path.is_file():
            raise KafkaSettingsError(f"{name}: no file at {path}")
    if s.kafka_ssl_key_file is not None and s.kafka_ssl_cert_file is None:
        raise KafkaSettingsError("TERRAIN_KAFKA_SSL_KEY_FILE set without TERRAIN_KAFKA_SSL_CERT_FILE: the key "
                                 "belongs to a client certificate; set both")
    try:
        context = ssl.create_default_context(cafile=str(s.kafka_ssl_ca_file) if s.kafka_ssl_ca_file else None)
    except ssl.SSLError as exc:
        raise KafkaSettingsError(f"TERRAIN_KAFKA_SSL_CA_FILE: {s.kafka_ssl_ca_file} holds no PEM certificate "
                                 f"({exc.reason or exc})") from None
    if s.kafka_ssl_cert_file is not None:
        key = str(s.kafka_ssl_key_file) if s.kafka_ssl_key_file else None
        try:
            context.load_cert_chain(str(s.kafka_ssl_cert_file), key)
        except (ssl.SSLError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            raise KafkaSettingsError(
                f"TERRAIN_KAFKA_SSL_CERT_FILE / TERRAIN_KAFKA_SSL_KEY_FILE: no client certificate and matching "
                f"private key in {s.kafka_ssl_cert_file}{f' and {key}' if key else ''} ({reason})") from None
    return context


def client_options(settings: TerrainSettings) -> dict[str, Any]:
    """aiokafka's connection arguments (security_protocol, ssl_context, sasl_*) for `kafka_security`'s choice:
    FastStream's own mapping, so a bare aiokafka client connects exactly as the service's broker does."""
    return parse_security(kafka_security(settings))


def _bootstrap_addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


async def check_tls(
    bootstrap_servers: str, options: Mapping[str, Any], *, timeout_s: float = 10.0
) -> None:
    """After a failed connection with TLS asked for (`options` from `client_options`): tell a broker that is
    away (wait for it) from one that answers without TLS or with a certificate this client refuses (raise
    KafkaRefused with one line). A plaintext Kafka listener given a TLS hello either closes the connection or
    waits for the rest of a "request" that never comes; aiokafka then reports only that it could not
    bootstrap, and a service would wait out TERRAIN_KAFKA_START_TIMEOUT_S for nothing."""
    context = options.get("ssl_context")
    if context is None:
        return
    protocol = options.get("security_protocol", "SSL")
    for host, port in _bootstrap_addresses(bootstrap_servers):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except (OSError, TimeoutError):
            continue  # nothing listens there (yet): that is for the caller's waiting, not a wrong setting
        try:
            await writer.start_tls(context, server_hostname=host, ssl_handshake_timeout=timeout_s)
            return  # the handshake works: whatever failed was not TLS
        except ssl.SSLCertVerificationError as exc:
            raise KafkaRefused(
                f"Kafka at {host}:{port} presented a certificate this client does not trust "
                f"({exc.verify_message}): set TERRAIN_KAFKA_SSL_CA_FILE to the CA that signed it") from None
        except ssl.SSLError as exc:
            raise KafkaRefused(
                f"Kafka at {host}:{port} refused the TLS handshake ({exc.reason or exc}): check that the listener "
                "uses TLS and, for mutual TLS, TERRAIN_KAFKA_SSL_CERT_FILE") from None
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            raise KafkaRefused(
                f"Kafka at {host}:{port} took the connection but completed no TLS handshake within {timeout_s:g} s: "
                f"is it a plaintext listener? (TERRAIN_KAFKA_SECURITY_PROTOCOL is {protocol})") from None
        finally:
            writer.transport.abort()  # a probe: nothing to flush, and a TLS goodbye could wait on the peer


def make_broker(settings: TerrainSettings, service: str) -> KafkaBroker:
    """A FastStream Kafka broker for one service, with Prometheus middleware and quiet per-batch logs."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        security=kafka_security(settings),
        client_id=f"{settings.kafka_client_id}-{service}",
        middlewares=(telemetry.kafka_prometheus_middleware(),),
        # Our logger, so FastStream's lines go through the service's (JSON or console) formatting.
        logger=logging.getLogger("terrain.faststream"),
        log_level=logging.DEBUG,
        graceful_timeout=15.0,
        allow_auto_create_topics=False,
        # A message counts as sent only once every in-sync replica has it (the outbox deletes rows after
        # this acknowledgement). The embedded Tansu broker has one replica and accepts acks=all.
        acks="all",
        # Publisher appends a batch's messages to one record batch per partition: room for a few thousand.
        max_batch_size=PRODUCER_BATCH_BYTES,
    )


async def ensure_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    *,
    partitions: int,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
    security: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet, with their partition count. Returns the ones created.
    `security`: the clients' connection arguments (`client_options`); none for a plaintext broker."""
    deadline = time.monotonic() + timeout_s
    wanted = list(dict.fromkeys(names))
    options = dict(security or {})
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000, **options)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in wanted if n not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [NewTopic(n, partitions, replication_factor) for n in missing]
                    )
            return missing
        except (KafkaConnectionError, OSError) as exc:
            await check_tls(bootstrap_servers, options)
            if time.monotonic() > deadline:
                raise TransientError(f"Kafka at {bootstrap_servers} unreachable: {exc}") from exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


class Publisher:
    """Publishes keyed messages in bulk: one record batch per partition, then every acknowledgement awaited.

    Appending to a batch per partition costs about a fifth of FastStream's per-message publish path
    (middlewares, scopes, one send() each), and it is the same records: key, value, headers, and the
    partition the default partitioner picks, in order, so a key keeps its order. With FastStream's
    in-memory test broker there is no Kafka producer underneath: messages then go one by one through it.
    """

    def __init__(self, broker: KafkaBroker, service: str) -> None:
        self._broker = broker
        self._service = service
        self._partitioner: Any = None
        self._partitions: dict[str, list[int]] = {}

    def _kafka_producer(self) -> Any:
        """The broker's aiokafka producer once it is connected, else None (test broker, not started)."""
        from aiokafka import AIOKafkaProducer

        state = getattr(getattr(self._broker.config, "producer", None), "_producer", None)
        producer = getattr(state, "producer", None) if state else None
        return producer if isinstance(producer, AIOKafkaProducer) else None

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if not messages:
            return
        producer = self._kafka_producer()
        if producer is None:  # FastStream's in-memory test broker: it delivers each one as it is published
            for m in messages:
                await self._broker.publish(
                    m.value, topic=m.topic, key=m.key.encode(),
                    headers={"content-type": "application/json", **m.headers},
                )
        else:
            await self._publish_batches(producer, messages)
        counts = collections.Counter(m.topic for m in messages)
        for topic, n in counts.items():
            telemetry.PUBLISHED.labels(service=self._service, topic=topic).inc(n)

    async def _publish_batches(self, producer: Any, messages: Sequence[OutMessage]) -> None:
        if self._partitioner is None:
            from aiokafka.partitioner import DefaultPartitioner

            self._partitioner = DefaultPartitioner()
        await send_record_batches(producer, self._partitioner, self._partitions, messages)


async def send_record_batches(
    producer: Any, partitioner: Any, partitions_of: dict[str, list[int]], messages: Sequence[OutMessage]
) -> None:
    """Send `messages` as one record batch per partition with an aiokafka producer, then await every ack.

    A key goes to the partition a Kafka client's default partitioner picks (murmur2) and keeps its order.
    `partitions_of` caches each topic's partitions: they only grow, and only by an operator.
    """
    json_type = ("content-type", b"application/json")
    open_batches: dict[tuple[str, int], Any] = {}
    futures = []
    for m in messages:
        partitions = partitions_of.get(m.topic)
        if partitions is None:
            partitions = partitions_of[m.topic] = sorted(await producer.partitions_for(m.topic))
        key = m.key.encode()
        part = partitioner(key, partitions, partitions)
        headers = [json_type, *((k, v.encode()) for k, v in m.headers.items())]
        batch = open_batches.get((m.topic, part))
        if batch is None:
            batch = open_batches[(m.topic, part)] = producer.create_batch()
        if batch.append(key=key, value=m.value, timestamp=None, headers=headers) is None:
            futures.append(await producer.send_batch(batch, m.topic, partition=part))
            batch = open_batches[(m.topic, part)] = producer.create_batch()
            if batch.append(key=key, value=m.value, timestamp=None, headers=headers) is None:
                raise ValueError(f"a message of {len(m.value)} bytes is larger than the producer's batch size")
    for (topic, part), batch in open_batches.items():
        futures.append(await producer.send_batch(batch, topic, partition=part))
    await asyncio.gather(*futures)


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line reason naming each bad field, for people reading a dead-letter topic or an HTTP error."""
    return "; ".join(located_error(err, whole="(message)") for err in exc.errors(include_url=False))


async def _skip_decode(message: Any) -> None:
    """The subscribers' decoder: nothing. FastStream parses every body as JSON before it calls a handler, but
    `BatchConsumer` reads the raw records and validates them once, batch-wide (`decode`); the default decoder
    was a second parse of each message, a twelfth of the escalation service's CPU under load."""
    return None


def decode(model: type[M], record: Record) -> M | Rejection:
    try:
        return model.model_validate_json(record.value)
    except ValidationError as exc:
        return Rejection(record, f"invalid message: {describe_validation_error(exc)}"[:1000])
    except (UnicodeDecodeError, ValueError) as exc:
        return Rejection(record, f"undecodable message: {exc}"[:1000])


def dead_letter(rejection: Rejection, consumer_group: str, now: datetime, topic: str | None = None) -> OutMessage:
    """The dead-letter twin of a rejected record: same key and body, origin and reason in headers."""
    rec = rejection.record
    headers = {k: v.decode("utf-8", "replace") for k, v in rec.headers if not k.startswith(DLQ_HEADER_PREFIX)}
    headers.update(
        {
            f"{DLQ_HEADER_PREFIX}origin-topic": rec.topic,
            f"{DLQ_HEADER_PREFIX}origin-partition": str(rec.partition),
            f"{DLQ_HEADER_PREFIX}origin-offset": str(rec.offset),
            f"{DLQ_HEADER_PREFIX}consumer-group": consumer_group,
            f"{DLQ_HEADER_PREFIX}reason": rejection.reason,
            f"{DLQ_HEADER_PREFIX}failed-at": utc_text(now),
        }
    )
    return OutMessage(
        topic=topic or dlq_name(rec.topic),
        key=(rec.key or b"").decode("utf-8", "replace"),
        value=rec.value,
        headers=headers,
    )


class DeadLetterGuard:
    """Bounds the dead-letter rate over a sliding window of recent messages (as Sentry's arroyo does)."""

    def __init__(self, window: int, max_ratio: float, min_samples: int = 20) -> None:
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=window)
        self._max_ratio = max_ratio
        self._min_samples = min(min_samples, window)
        self.tripped: str | None = None

    def check(self, ok: int, failed: int) -> None:
        """Record a batch's outcomes; raise if the failed share of the window is over the bound.

        A batch whose failures alone reach the bound trips it even before the window has its minimum
        of samples: a large batch of poison must not be dead-lettered whole. The window is kept, so
        the guard stays tripped: the consumer stops until the process restarts.
        """
        if self.tripped is not None:
            raise DeadLetterRateExceeded(self.tripped)
        n_before = len(self._outcomes)
        bad_before = n_before - sum(self._outcomes)
        n = n_before + ok + failed
        bad = bad_before + failed
        if failed and n >= self._min_samples and bad / n > self._max_ratio:
            self.tripped = (
                f"{bad} of the last {n} messages failed (bound {self._max_ratio:.0%}); "
                "refusing to dead-letter more"
            )
            raise DeadLetterRateExceeded(self.tripped)
        self._outcomes.extend([True] * ok)
        self._outcomes.extend([False] * failed)


def _topic_partition(topic: str, partition: int) -> Any:
    from aiokafka.structs import TopicPartition

    return TopicPartition(topic, partition)


def _rewind(consumer: Any, records: Sequence[Any]) -> None:
    """Seek every partition a batch spans back to its earliest record, so a failed batch is read again whole.

    FastStream's NACK does the same in the version pinned; doing it here keeps the guarantee whatever
    the library does (a rewind of only the first partition would skip the others' records).
    """
    if consumer is None:
        return
    earliest: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        if key not in earliest or r.offset < earliest[key]:
            earliest[key] = r.offset
    for (topic, partition), offset in earliest.items():
        with contextlib.suppress(Exception):  # a partition revoked meanwhile: its new owner reads from the commit
            consumer.seek(_topic_partition(topic, partition), offset)


ProcessFn = Callable[[list[Decoded[M]]], Awaitable[list[Rejection]]]
TransientCheck = Callable[[BaseException], bool]


def is_transient(exc: BaseException) -> bool:
    """Failures that a retry may cure: connections, timeouts, a broker or database that is away."""
    import asyncpg

    transient_pg = (
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
        # Not InterfaceError: that is misuse of the driver (a closed pool, a concurrent operation), which no
        # retry cures.
    )
    return isinstance(
        exc, (TransientError, ConnectionError, OSError, TimeoutError, KafkaError, *transient_pg)
    )


class BatchConsumer(Generic[M]):
    """Consumes one topic in batches: decode, process, dead-letter what cannot succeed, then commit."""

    def __init__(
        self,
        *,
        spec: TopicSpec,
        group_id: str,
        service: str,
        settings: TerrainSettings,
        publisher: Publisher,
        process: ProcessFn[M],
        health: telemetry.Health,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.spec = spec
        self.group_id = group_id
        self.service = service
        self.settings = settings
        self.publisher = publisher
        self.process = process
        self.health = health
        self.clock = clock
        self.guard = DeadLetterGuard(settings.dlq_window, settings.dlq_max_ratio)
        self.health_key = f"consumer:{spec.name}"
        self.topic_name = spec.name
        self.dlq_topic = spec.dlq
        self.subscriber: Any = None
        # Set when the dead-letter bound trips: the consumer stays stopped until the process restarts.
        self.tripped: str | None = None
        self.health_key_detail_set = False
        self.last_progress = time.monotonic()
        self.lag: dict[int, int] = {}
        health.set(self.health_key, True, "waiting for messages")
        telemetry.DEAD_LETTER_BOUND_TRIPPED.labels(service=service, topic=spec.name).set(0)

    def register(self, broker: KafkaBroker, *, topic: str | None = None, dlq_topic: str | None = None) -> None:
        """Attach to a broker; `topic`/`dlq_topic` override the contract names (tests use unique names)."""
        s = self.settings
        topic_name = topic or self.spec.name
        self.topic_name = topic_name
        self.dlq_topic = dlq_topic or dlq_name(topic_name)

        async def _on_batch(msg: KafkaMessage) -> None:
            raw = msg.raw_message
            # A tuple of records from aiokafka; a list from FastStream's in-memory test broker.
            records = tuple(raw) if isinstance(raw, (tuple, list)) else (raw,)
            consumer = getattr(msg, "consumer", None)
            if self.tripped is not None:
                # Partitions newly assigned after a rebalance are not paused yet: pause them, keep the batch.
                self._halt(consumer, records)
                raise DeadLetterRateExceeded(self.tripped)
            try:
                await self.handle(
                    [
                        Record(r.topic, r.partition, r.offset, r.key, r.value or b"", tuple(r.headers or ()))
                        for r in records
                    ]
                )
            except DeadLetterRateExceeded:
                self._halt(consumer, records)
                raise
            except BaseException:
                _rewind(consumer, records)
                raise
            self._note_progress(consumer, records)

        self.subscriber = broker.subscriber(
            topic_name,
            batch=True,
            group_id=self.group_id,
            auto_offset_reset=s.kafka_auto_offset_reset,
            max_records=s.batch_max_records,
            batch_timeout_ms=s.batch_timeout_ms,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            title=f"{self.service}:{topic_name}",
            decoder=_skip_decode,
        )(_on_batch)

    # --- stopping on the dead-letter bound ---------------------------------------------------------

    def _halt(self, consumer: Any, records: Sequence[Any]) -> None:
        """Stop consuming without leaving the group: pause every assigned partition and rewind the batch."""
        _rewind(consumer, records)
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.pause(*consumer.assignment())
        if self.tripped is None:
            self.tripped = "dead-letter bound tripped"
        if self.health_key_detail_set:
            return
        self.health_key_detail_set = True
        self.health.set(
            self.health_key, False, f"stopped, dead-letter bound tripped: {self.tripped}; fix the cause and restart"
        )
        telemetry.DEAD_LETTER_BOUND_TRIPPED.labels(service=self.service, topic=self.spec.name).set(1)
        log.error(
            "dead-letter bound tripped: consumer stopped",
            extra={"topic": self.topic_name, "group": self.group_id, "reason": self.tripped},
        )

    # --- lag and progress --------------------------------------------------------------------------

    def _note_progress(self, consumer: Any, records: Sequence[Any]) -> None:
        self.last_progress = time.monotonic()
        if consumer is None:
            return
        last: dict[int, int] = {}
        for r in records:
            last[r.partition] = max(last.get(r.partition, -1), r.offset)
        for partition, offset in last.items():
            with contextlib.suppress(Exception):
                end = consumer.highwater(_topic_partition(records[0].topic, partition))
                if end is not None:
                    self._set_lag(partition, max(0, end - offset - 1))

    def _set_lag(self, partition: int, lag: int) -> None:
        self.lag[partition] = lag
        telemetry.CONSUMER_LAG.labels(service=self.service, topic=self.spec.name, partition=str(partition)).set(lag)

    async def refresh_lag(self) -> None:
        """Ask the broker for each assigned partition's end and set the lag gauge; flags a stuck consumer."""
        consumer = getattr(self.subscriber, "consumer", None) if self.subscriber is not None else None
        if consumer is None:
            return
        tps = list(consumer.assignment())
        if not tps:
            return
        ends = await consumer.end_offsets(tps)
        behind = 0
        for tp in tps:
            committed = await consumer.committed(tp)
            lag = max(0, ends.get(tp, 0) - (committed or 0))
            behind += lag
            self._set_lag(tp.partition, lag)
        if self.tripped is not None:
            return
        idle_s = time.monotonic() - self.last_progress
        stuck = behind > 0 and idle_s > self.settings.consumer_stuck_after_s
        check = self.health.check(self.health_key)
        if stuck:
            self.health.set(self.health_key, False, f"stuck: {behind} behind, no progress for {idle_s:.0f}s")
        elif check is not None and check.detail.startswith("stuck:"):
            self.health.set(self.health_key, True, "consuming")

    async def handle(self, records: list[Record]) -> None:
        """Process one batch; returns only when its effects are stored and its rejects dead-lettered."""
        started = time.perf_counter()
        rejections: list[Rejection] = []
        decoded: list[Decoded[M]] = []
        for rec in records:
            out = decode(self.spec.model, rec)
            if isinstance(out, Rejection):
                rejections.append(out)
            else:
                decoded.append(Decoded(rec, out))  # type: ignore[arg-type]
        if decoded:
            rejections += await self._process_isolating_poison(decoded)
        try:
            self.guard.check(ok=len(records) - len(rejections), failed=len(rejections))
        except DeadLetterRateExceeded as exc:
            self.tripped = str(exc)
            raise
        if rejections:
            now = self.clock()
            await self._with_retry(
                lambda: self.publisher.publish(
                    [dead_letter(r, self.group_id, now, self.dlq_topic) for r in rejections]
                )
            )
            for r in rejections:
                log.warning(
                    "dead-lettered",
                    extra={"topic": r.record.topic, "partition": r.record.partition,
                           "offset": r.record.offset, "reason": r.reason[:300]},
                )
        labels = {"service": self.service, "topic": self.spec.name}
        telemetry.CONSUMED.labels(outcome="processed", **labels).inc(len(records) - len(rejections))
        telemetry.CONSUMED.labels(outcome="dead_lettered", **labels).inc(len(rejections))
        telemetry.BATCH_SECONDS.labels(**labels).observe(time.perf_counter() - started)
        self.last_progress = time.monotonic()
        self.health.set(self.health_key, True, "consuming")

    async def _process_isolating_poison(self, items: list[Decoded[M]]) -> list[Rejection]:
        try:
            rejected: list[Rejection] = await self._with_retry(lambda: self.process(items))
            return rejected
        except DeadLetterRateExceeded:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(items) == 1:
                log.exception("message failed processing; dead-lettering it")
                return [Rejection(items[0].record, f"processing error: {type(exc).__name__}: {exc}"[:1000])]
            # One bad message must not block its batch: retry one by one to find it.
            log.warning("batch failed (%s); isolating the failing message", type(exc).__name__)
            out: list[Rejection] = []
            for item in items:
                out += await self._process_isolating_poison([item])
            return out

    async def _with_retry(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        s = self.settings
        for attempt in range(1, s.retry_attempts + 1):
            try:
                return await fn()
            except Exception as exc:
                if not is_transient(exc) or attempt == s.retry_attempts:
                    if is_transient(exc):
                        self.health.set(self.health_key, False, f"retries exhausted: {type(exc).__name__}")
                        log.error("transient failure persists; rewinding the batch to read it again")
                    raise
                delay = min(s.retry_max_delay_s, s.retry_base_delay_s * 2 ** (attempt - 1))
                telemetry.RETRIES.labels(service=self.service, topic=self.spec.name).inc()
                self.health.set(self.health_key, False, f"retrying after {type(exc).__name__}")
                log.warning("transient failure (%s), retry %d in %.1fs", type(exc).__name__, attempt, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
