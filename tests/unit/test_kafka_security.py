"""Kafka security settings: how each combination maps onto FastStream's and aiokafka's arguments, the combinations
refused at start with one line, and the TLS context and SASL login as a real TLS listener sees them."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from terrain.kafka import KafkaRefused, KafkaSettingsError, check_tls, client_options, kafka_security, make_broker
from terrain.settings import TerrainSettings
from tests.tls_helpers import KafkaFrontDoor, Pki, make_pki

SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 17, 36, 3


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def settings(**kw: Any) -> TerrainSettings:
    return TerrainSettings(kafka_bootstrap_servers="127.0.0.1:9", **kw)


# --- the mapping ---------------------------------------------------------------------------------------------

LOGIN = {"kafka_sasl_username": "terrain-ingest", "kafka_sasl_password": "s3cret"}


@pytest.mark.parametrize(("given", "kind", "options"), [
    # Local runs and compose: nothing to add (an empty variable, as a ConfigMap may give, counts as unset).
    ({}, type(None), {}),
    ({"kafka_security_protocol": "", "kafka_sasl_mechanism": ""}, type(None), {}),
    # TLS alone (the system's CAs when no CA file is given).
    ({"kafka_security_protocol": "SSL"}, BaseSecurity, {"security_protocol": "SSL"}),
    # Strimzi's SCRAM listener: TLS and SCRAM-SHA-512.
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512", **LOGIN}, SASLScram512,
     {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", **{
         "sasl_plain_username": "terrain-ingest", "sasl_plain_password": "s3cret"}}),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-256", **LOGIN}, SASLScram256,
     {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256"}),
    # Managed services' API keys: PLAIN over TLS.
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN", **LOGIN}, SASLPlaintext,
     {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}),
    # A password without TLS, on a private network: no TLS context at all.
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512", **LOGIN}, SASLScram512,
     {"security_protocol": "SASL_PLAINTEXT", "ssl_context": None}),
    # Kafka's own clients' spelling, in lower case, is taken as well.
    ({"kafka_security_protocol": "sasl_ssl", "kafka_sasl_mechanism": "scram-sha-512", **LOGIN}, SASLScram512,
     {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}),
])
def test_each_protocol_maps_onto_the_clients_arguments(given: dict[str, Any], kind: type, options: dict[str, Any]):
    s = settings(**given)
    assert type(kafka_security(s)) is kind
    got = client_options(s)
    assert got.items() >= options.items()
    tls = s.kafka_security_protocol in ("SSL", "SASL_SSL")
    assert isinstance(got.get("ssl_context"), ssl.SSLContext) is tls


NOT_PEM = "<a file that holds no certificate>"


@pytest.mark.parametrize(("given", "says"), [
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512"},
     "TERRAIN_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs TERRAIN_KAFKA_SASL_USERNAME and TERRAIN_KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_SSL", **LOGIN}, "needs TERRAIN_KAFKA_SASL_MECHANISM"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN",
      "kafka_sasl_username": "u", "kafka_sasl_password": ""}, "needs TERRAIN_KAFKA_SASL_PASSWORD"),
    # A mechanism or a login with a protocol that does not log in would silently connect without them.
    ({"kafka_sasl_mechanism": "SCRAM-SHA-512", **LOGIN},
     "TERRAIN_KAFKA_SASL_MECHANISM, TERRAIN_KAFKA_SASL_USERNAME, TERRAIN_KAFKA_SASL_PASSWORD set, but "
     "TERRAIN_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
    ({"kafka_security_protocol": "SSL", "kafka_sasl_username": "u"}, "TERRAIN_KAFKA_SECURITY_PROTOCOL is SSL"),
    ({"kafka_ssl_ca_file": "/etc/hosts"}, "TERRAIN_KAFKA_SSL_CA_FILE set, but TERRAIN_KAFKA_SECURITY_PROTOCOL is "
     "PLAINTEXT"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_file": "/nonexistent/ca.crt"},
     "TERRAIN_KAFKA_SSL_CA_FILE: no file at /nonexistent/ca.crt"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_file": NOT_PEM},
     f"TERRAIN_KAFKA_SSL_CA_FILE: {NOT_PEM} holds no PEM certificate"),
])
def test_a_combination_that_cannot_work_is_refused_naming_the_variables(given: dict[str, Any], says: str,
                                                                          tmp_path: Path):
    # A file that exists and is not a certificate, written here rather than borrowed from the machine.
    not_pem = tmp_path / "not-a-certificate.txt"
    not_pem.write_text("just text\n")
    given = {k: str(not_pem) if v == NOT_PEM else v for k, v in given.items()}
    with pytest.raises(KafkaSettingsError) as caught:
        kafka_security(settings(**given))
    message = str(caught.value)
    assert says.replace(NOT_PEM, str(not_pem)) in message and "\n" not in message


def test_a_client_key_without_its_certificate_or_the_wrong_key_is_refused(pki: Pki, tmp_path: Path):
    with pytest.raises(KafkaSettingsError, match="TERRAIN_KAFKA_SSL_KEY_FILE set without TERRAIN_KAFKA_SSL_CERT_FILE"):
        kafka_security(settings(kafka_security_protocol="SSL", kafka_ssl_key_file=pki.client_key))
    other = make_pki(tmp_path / "other")
    with pytest.raises(KafkaSettingsError, match="no client certificate and matching private key"):
        kafka_security(settings(kafka_security_protocol="SSL", kafka_ssl_cert_file=pki.client_cert,
                                kafka_ssl_key_file=other.client_key))


def test_the_password_never_prints():
    s = settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512", **LOGIN)
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump())


def test_the_tls_context_trusts_the_given_ca_and_checks_host_names(pki: Pki):
    context = client_options(settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pki.ca))["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    subjects = [dict(item[0] for item in ca["subject"]) for ca in context.get_ca_certs()]
    assert subjects == [{"commonName": "terrain test ca"}]  # that CA, and not the system's
    system = client_options(settings(kafka_security_protocol="SSL"))["ssl_context"]
    assert {"commonName": "terrain test ca"} not in [dict(i[0] for i in c["subject"]) for c in system.get_ca_certs()]


# --- what a TLS listener sees -----------------------------------------------------------------------------------


async def test_the_service_broker_logs_in_with_scram_over_tls_trusting_the_ca(pki: Pki):
    """FastStream's broker, made as every service makes it: the TLS handshake succeeds against our CA, then the
    client asks for SCRAM-SHA-512 and sends the user name in SCRAM's first message."""
    async with KafkaFrontDoor(pki) as door:
        s = TerrainSettings(kafka_bootstrap_servers=door.bootstrap, kafka_security_protocol="SASL_SSL",
                            kafka_sasl_mechanism="SCRAM-SHA-512", kafka_ssl_ca_file=pki.ca, **LOGIN)
        broker = make_broker(s, "ingest")
        with pytest.raises(Exception):  # noqa: B017 (the door closes after the login's first message)
            await asyncio.wait_for(broker.start(), 30)
        await broker.stop()
    requests = dict(door.seen[0].requests)
    assert b"SCRAM-SHA-512" in requests[SASL_HANDSHAKE]
    assert b"n,,n=terrain-ingest,r=" in requests[SASL_AUTHENTICATE]
    assert b"s3cret" not in b"".join(requests.values())  # SCRAM never sends the password


async def test_ingest_bulk_producer_logs_in_like_the_service(pki: Pki):
    """Ingest's own aiokafka producer (HTTP batches, `terrain import`) takes the same arguments as the broker."""
    from services.ingest.handlers import BulkPublisher

    async with KafkaFrontDoor(pki, mechanism="SCRAM-SHA-256") as door:
        s = TerrainSettings(kafka_bootstrap_servers=door.bootstrap, kafka_security_protocol="SASL_SSL",
                            kafka_sasl_mechanism="SCRAM-SHA-256", kafka_ssl_ca_file=pki.ca, **LOGIN)
        with pytest.raises(Exception):  # noqa: B017 (the door closes after the login's first message)
            await asyncio.wait_for(BulkPublisher(s, "ingest").start(), 30)
    requests = dict(door.seen[0].requests)
    assert b"SCRAM-SHA-256" in requests[SASL_HANDSHAKE] and b"n=terrain-ingest" in requests[SASL_AUTHENTICATE]


async def test_a_bare_aiokafka_client_presents_the_client_certificate(pki: Pki):
    """Mutual TLS (Strimzi's tls users): the listener demands a certificate signed by the CA and gets ours; the
    client sends Metadata without any SASL step."""
    async with KafkaFrontDoor(pki, client_ca=pki.ca) as door:
        s = TerrainSettings(kafka_bootstrap_servers=door.bootstrap, kafka_security_protocol="SSL",
                            kafka_ssl_ca_file=pki.ca, kafka_ssl_cert_file=pki.client_cert,
                            kafka_ssl_key_file=pki.client_key)
        admin = AIOKafkaAdminClient(bootstrap_servers=door.bootstrap, request_timeout_ms=5000, **client_options(s))
        with pytest.raises(Exception):  # noqa: B017 (the door closes after the first request past the versions)
            await admin.start()
        await admin.close()
    assert door.seen and door.seen[0].client_cn == "terrain-test"
    assert [key for key, _ in door.seen[0].requests] == [18, METADATA]


async def test_check_tls_says_which_certificate_is_not_trusted(pki: Pki, tmp_path: Path):
    other = make_pki(tmp_path / "other", ca_name="someone else's ca")
    async with KafkaFrontDoor(pki) as door:
        options = client_options(settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=other.ca))
        with pytest.raises(KafkaRefused, match=r"presented a certificate this client does not trust .* set "
                                               r"TERRAIN_KAFKA_SSL_CA_FILE"):
            await check_tls(door.bootstrap, options, timeout_s=5)
        # Trusting the right CA, the handshake works: nothing to say.
        await check_tls(door.bootstrap, client_options(settings(kafka_security_protocol="SSL",
                                                                kafka_ssl_ca_file=pki.ca)), timeout_s=5)


async def test_check_tls_leaves_an_absent_broker_to_the_waiting(pki: Pki):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = client_options(settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pki.ca))
    await check_tls(f"127.0.0.1:{port}", options, timeout_s=2)  # returns: away, not misconfigured


# --- at start --------------------------------------------------------------------------------------------------


def test_a_service_with_a_mechanism_and_no_user_stops_at_start_with_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
    env.update({"TERRAIN_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "TERRAIN_KAFKA_BOOTSTRAP_SERVERS":
                "127.0.0.1:9", "TERRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "TERRAIN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "TERRAIN_API_TOKEN": "t"})
    done = subprocess.run([sys.executable, "-m", "terrain.cli", "serve", "ingest"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "ingest: cannot start: TERRAIN_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs TERRAIN_KAFKA_SASL_USERNAME and "
        "TERRAIN_KAFKA_SASL_PASSWORD"]


def test_the_topics_job_with_a_mechanism_and_no_user_stops_with_one_line(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
    env.update({"TERRAIN_HOME": str(tmp_path), "TERRAIN_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
                "TERRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TERRAIN_KAFKA_SASL_USERNAME": "terrain-topics",
                "TERRAIN_KAFKA_SASL_PASSWORD": "p", "COLUMNS": "200"})
    done = subprocess.run([sys.executable, "-m", "terrain.cli", "topics", "--timeout", "1"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.strip().splitlines() == [
        "error: TERRAIN_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs TERRAIN_KAFKA_SASL_MECHANISM"]


def test_terrain_up_creates_topics_on_an_external_broker_with_its_security(pki: Pki, tmp_path: Path):
    from terrain.stack import Stack

    external = Stack(home=tmp_path, env={"TERRAIN_KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9093",
                                         "TERRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                         "TERRAIN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                                         "TERRAIN_KAFKA_SASL_USERNAME": "me", "TERRAIN_KAFKA_SASL_PASSWORD": "pw",
                                         "TERRAIN_KAFKA_SSL_CA_FILE": str(pki.ca)})
    options = external._kafka_security()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512" and options["sasl_plain_username"] == "me"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert Stack(home=tmp_path, env={})._kafka_security() == {}  # unset: plaintext, as the embedded broker
