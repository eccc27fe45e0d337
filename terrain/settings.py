"""Environment-driven settings (prefix ``TERRAIN_``); each service extends :class:`TerrainSettings`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TerrainSettings(BaseSettings):
    """Settings every service shares. Per-service settings subclass this and add fields."""

    model_config = SettingsConfigDict(env_prefix="TERRAIN_", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # How every Kafka client of a service connects (terrain.kafka.kafka_security turns these into the clients'
    # arguments and refuses a combination that cannot work).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How Kafka clients connect: PLAINTEXT (a private network, local runs), SSL (TLS, and mutual TLS "
        "with a client certificate), SASL_SSL (TLS and a user name and password: Strimzi's SCRAM listeners, "
        "managed services) or SASL_PLAINTEXT (a password without TLS: only on a network nobody else reads).",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = Field(
        default=None, description="SASL mechanism with SASL_SSL or SASL_PLAINTEXT: SCRAM-SHA-512 (Strimzi's "
        "KafkaUser), SCRAM-SHA-256, or PLAIN (managed services' API keys; only over TLS).")
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name (a Strimzi KafkaUser's name).")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password; from a Secret (Strimzi writes it in the KafkaUser's Secret).")
    kafka_ssl_ca_file: Path | None = Field(
        default=None, description="PEM file of the CA that signed the brokers' certificates (Strimzi: ca.crt of the "
        "<cluster>-cluster-ca-cert Secret); unset: the system's trusted CAs.")
    kafka_ssl_cert_file: Path | None = Field(
        default=None, description="PEM client certificate for mutual TLS (Strimzi's tls authentication: user.crt).")
    kafka_ssl_key_file: Path | None = Field(
        default=None, description="PEM private key of the client certificate (Strimzi: user.key); unset when the "
        "certificate file holds the key too.")
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    api_token: SecretStr | None = Field(
        default=None,
        description="The bootstrap admin credential (Authorization: Bearer ...), like a database superuser's "
        "password: every role, every community. Unset, and with no OIDC issuer, a service answers anyone as an "
        "admin and refuses to start on anything but loopback.",
    )
    oidc_issuer: str | None = Field(
        default=None, description="OIDC provider whose access tokens people present (e.g. "
        "https://keycloak.example/realms/terrain); its signing keys come from its discovery document.")
    oidc_audience: str = Field(default="terrain", description="The audience (aud) an access token must carry.")
    oidc_jwks_url: str | None = Field(
        default=None, description="The provider's JWKS URL, when its discovery document is not to be used.")
    oidc_groups_claim: str = Field(default="groups", description="The token claim that lists the person's groups.")
    oidc_name_claim: str = Field(
        default="preferred_username", description="The token claim that names the person in timelines.")
    oidc_role_groups: str = Field(
        default="", description="Groups to roles: 'terrain-admins=admin,terrain-agents=agent,...' (the strongest "
        "role of a person's groups applies; a person in none is refused).")
    oidc_scope_groups: str = Field(
        default="", description="Groups to communities: 'brand-acme=acme-*,acme-hq;all-brands=*' (groups "
        "separated by ';'; the union of a person's groups applies).")
    access_groups: str = Field(
        default="",
        description="Named groups of communities for scopes (@name): 'acme=acme-*,acme-hq;bistro=bistro-lyon'.")
    access_cache_s: float = Field(
        default=10.0, ge=0, le=300, description="How long a service trusts a key or session it has checked: a "
        "revoked key stops working within this many seconds on every service.")
    access_session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="How long a local user's sign-in lasts.")

    host: str = "127.0.0.1"
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Serve Prometheus metrics on this port of TERRAIN_HOST, apart from the API, and no longer at "
        "/metrics on the API port (a cluster lets Prometheus reach this port only). Unset: /metrics on the API port.",
    )
    public_docs: bool = Field(
        default=False, description="Serve /docs and /openapi.json without a credential even where authentication "
        "is configured (terrain up sets it: a local run's documentation is for whoever runs it).")
    http_max_body_bytes: int = Field(
        default=1_000_000, ge=1_000,
        description="Largest request body a route takes unless it declares its own limit (ingest's routes: "
        "TERRAIN_INGEST_MAX_BODY_BYTES); a larger one answers 413 before it is read.",
    )
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"

    # Consumer-group timing: production-safe defaults; the local runner lowers them for fast rejoins.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    kafka_auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    kafka_client_id: str = "terrain"
    kafka_group_prefix: str = Field(
        default="terrain", description="Consumer groups are named <prefix>-<service>[-<stream>]."
    )
    topic_partitions: int = Field(default=4, ge=1, description="Partitions per topic when Terrain creates it.")
    topic_replication_factor: int = Field(default=1, ge=1)
    create_topics: bool = Field(default=True, description="Create the topics a service uses at start.")
    migrate_on_start: bool = Field(
        default=True, description="Apply pending migrations at start; false where `terrain migrate` runs as a Job."
    )

    kafka_fetch_max_wait_ms: int = Field(
        default=50, ge=1,
        description="Longest a fetch waits on the broker for data; bounds the latency a quiet partition adds.",
    )
    # A busy consumer gets everything fetched so far, up to this many records, in one batch (one transaction,
    # one publish); a quiet one gets what came within the fetch wait. Batching never waits for a batch to fill.
    # The fetch wait stays at 50 ms: on the embedded broker an idle consumer polling every 20 ms cost the broker
    # about 5% of a core each (3% at 50 ms), and six groups poll it.
    batch_max_records: int = Field(default=2000, ge=1)
    batch_timeout_ms: int = Field(default=100, ge=1)

    # Dead-letter bound: inside a window of recent messages, too large a failed share stops the consumer.
    dlq_window: int = Field(default=200, ge=10)
    dlq_max_ratio: float = Field(default=0.5, gt=0, le=1)

    # Transient failures (database down) are retried this many times with exponential backoff.
    retry_attempts: int = Field(default=6, ge=1)
    retry_base_delay_s: float = Field(default=0.2, gt=0)
    retry_max_delay_s: float = Field(default=5.0, gt=0)

    db_pool_min_size: int = 1
    db_pool_max_size: int = 5

    outbox_relay_interval_s: float = Field(default=2.0, gt=0)
    outbox_relay_min_age_s: float = Field(
        default=5.0, ge=0,
        description="The relay leaves younger rows to the transaction that wrote them (it sends them itself).",
    )

    gc_young_threshold: int = Field(
        default=50_000, ge=0,
        description="Allocations between two collections of Python's youngest generation (0: Python's own 700). "
        "A batch allocates objects by the hundred thousand, nearly all freed by reference counting.",
    )

    kafka_start_timeout_s: float = Field(
        default=120.0, gt=0, description="How long a starting service waits for an unreachable broker."
    )

    # Readiness: the database and broker are probed, and a consumer behind with no progress is stuck.
    health_probe_interval_s: float = Field(default=5.0, gt=0)
    consumer_stuck_after_s: float = Field(
        default=120.0, gt=0, description="A consumer with lag and no finished batch for this long is not ready."
    )

    # Processed-message records make redeliveries no-ops; keep them longer than any redelivery can come.
    processed_retention_hours: float = Field(default=168.0, gt=0)
    processed_prune_batch: int = Field(default=10_000, ge=1, description="Rows deleted per prune statement.")
    processed_prune_interval_s: float = Field(default=600.0, gt=0)

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _kafka_names_any_case(cls, value: Any, info: ValidationInfo) -> Any:
        # Kafka's own clients take `sasl_ssl` or `scram-sha-512`; so do these, and an empty value means unset.
        if isinstance(value, str):
            value = value.strip().upper()
            if not value:
                return "PLAINTEXT" if info.field_name == "kafka_security_protocol" else None
        return value
