"""TLS asked for, a plaintext Kafka listener found (the embedded Tansu broker speaks neither TLS nor SASL): every
client that connects says so in one line and stops, where it used to wait out the start timeout."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from terrain.kafka import KafkaRefused, check_tls, client_options
from terrain.ops.jobs import Unreachable, ensure_planned_topics
from terrain.ops.plan import topic_plans
from terrain.runtime import ServiceRuntime
from terrain.settings import TerrainSettings
from tests.tls_helpers import make_pki

pytestmark = pytest.mark.integration

# Far beyond what the refusal takes: without it, a start waits the whole of TERRAIN_KAFKA_START_TIMEOUT_S.
START_TIMEOUT_S = 600.0
PLAINTEXT_LISTENER = "completed no TLS handshake within"


@pytest.fixture
def tls_settings(settings_kwargs: dict, tmp_path: Path) -> TerrainSettings:
    return TerrainSettings(**settings_kwargs, kafka_security_protocol="SSL", kafka_ssl_ca_file=make_pki(tmp_path).ca,
                           kafka_start_timeout_s=START_TIMEOUT_S)


async def test_the_probe_tells_a_plaintext_listener_from_an_absent_broker(tls_settings, kafka_bootstrap):
    started = time.monotonic()
    with pytest.raises(KafkaRefused) as caught:
        await check_tls(kafka_bootstrap, client_options(tls_settings), timeout_s=3)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert PLAINTEXT_LISTENER in message and "plaintext listener" in message and "\n" not in message
    assert f"Kafka at {kafka_bootstrap}" in message


@pytest.mark.parametrize("create_topics", [True, False], ids=["topics-first", "broker-first"])
async def test_a_service_asking_for_tls_stops_with_one_line_instead_of_waiting(
    tls_settings, topic_overrides, create_topics, caplog
):
    settings = tls_settings.model_copy(update={"create_topics": create_topics})
    rt = ServiceRuntime("tlsprobe", settings, use_database=False, topic_overrides=topic_overrides)
    started = time.monotonic()
    with pytest.raises(KafkaRefused, match=PLAINTEXT_LISTENER):
        # A guard against the old behaviour (retrying for START_TIMEOUT_S), not a measurement.
        await asyncio.wait_for(rt.start(), START_TIMEOUT_S / 4)
    took = time.monotonic() - started
    lines = [r.getMessage() for r in caplog.records if r.name == "terrain.runtime" and r.levelname == "ERROR"]
    assert len(lines) == 1 and lines[0].startswith("cannot start: Kafka at ") and "\n" not in lines[0]
    assert took < START_TIMEOUT_S / 4
    print(f"refused after {took:.1f} s ({'topic creation' if create_topics else 'broker start'} first)")


async def test_the_topics_job_stops_with_one_line(tls_settings, kafka_bootstrap, topic_overrides):
    with pytest.raises(Unreachable, match=PLAINTEXT_LISTENER):
        await ensure_planned_topics(kafka_bootstrap, topic_plans(1), replication_factor=1, check_only=True,
                                    timeout_s=START_TIMEOUT_S, rename=topic_overrides,
                                    security=client_options(tls_settings))
