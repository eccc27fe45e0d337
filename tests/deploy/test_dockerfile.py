"""deploy/Dockerfile essentials, checked by reading it (no Docker engine in CI; hadolint is not at hand)."""

from __future__ import annotations

import re
from pathlib import Path

from terrain.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy/Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            found.append([])
        found[-1].append(ins)
    return found


def test_multi_stage_on_a_pinned_slim_python() -> None:
    froms = [args for ins, args in instructions() if ins == "FROM"]
    assert len(froms) >= 2
    for args in froms:
        image = args.split()[0]
        # An exact patch version (python:3.12.8-slim-...) or a digest; never a floating tag.
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image


def test_final_stage_runs_as_a_non_root_user_without_build_tools() -> None:
    final = stages()[-1]
    users = [args for ins, args in final if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(args for ins, args in final if ins == "RUN")
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in runs, tool
    assert any(ins == "COPY" and args.startswith("--from=") for ins, args in final)


def test_entrypoint_runs_any_service_by_argument_and_ports_are_exposed() -> None:
    final = dict(stages()[-1])
    assert final["ENTRYPOINT"] == '["terrain"]'
    assert final["CMD"].startswith('["serve",')
    assert sorted(int(p) for p in final["EXPOSE"].split()) == sorted(s.default_port for s in SERVICES)
    text = DOCKERFILE.read_text()
    assert "/healthz" in text and "/readyz" in text  # the probes are documented beside the image


def test_no_secret_is_baked_in() -> None:
    for ins, args in instructions():
        if ins in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(TOKEN|SECRET|PASSWORD|DATABASE_URL)\s*=", args, re.I), args
    ignore = [line for line in (ROOT / "deploy/Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "**"  # the build context is an allow-list: no .env or local state gets in
