"""Run the escalation service in its own process on test topics (a test can kill it with SIGKILL).

Configured by TERRAIN_* variables like the real service, plus TERRAIN_TEST_TOPIC_OVERRIDES (JSON: contract
topic name -> test topic name).
"""

from __future__ import annotations

import json
import os

from services.escalation.app import EscalationSettings, build_app
from terrain import telemetry
from terrain.runtime import serve


def main() -> None:
    settings = EscalationSettings()
    telemetry.configure_logging(settings, "escalation")
    overrides = json.loads(os.environ.get("TERRAIN_TEST_TOPIC_OVERRIDES", "{}"))
    serve(build_app(settings, topic_overrides=overrides), settings, settings.escalation_port)


if __name__ == "__main__":
    main()
