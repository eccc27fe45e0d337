"""Fixtures for the deployment tests: the overlays built once, the repository root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize import build

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def built() -> dict[str, list[dict[str, Any]]]:
    """Each overlay's resources, as kustomize builds them."""
    return {name: list(yaml.safe_load_all(build(ROOT / "deploy/k8s/overlays" / name))) for name in OVERLAYS}
