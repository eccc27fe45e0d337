"""The kustomize subset used where kubectl is missing builds exactly what kubectl builds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.kustomize import build_python, kubectl

ROOT = Path(__file__).resolve().parents[2]


def _key(doc: dict[str, object]) -> tuple[str, str]:
    meta = doc["metadata"]
    assert isinstance(meta, dict)
    return str(doc["kind"]), str(meta["name"])


# What `kubectl kustomize` (v5.5) built from each overlay, kept so the comparison runs where kubectl is
# missing; where it is installed, the test also checks that these files are still what it builds.
KUBECTL_BUILDS = Path(__file__).parent / "kubectl_builds"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_python_build_matches_kubectl(overlay: str) -> None:
    path = ROOT / "deploy/k8s/overlays" / overlay
    recorded = (KUBECTL_BUILDS / f"{overlay}.yaml").read_text(encoding="utf-8")
    exe = kubectl()
    if exe is not None:
        built = subprocess.run([exe, "kustomize", str(path)], check=True, capture_output=True, text=True).stdout
        assert built == recorded, (f"kubectl builds another {overlay} overlay: refresh "
                                   f"{KUBECTL_BUILDS.name}/{overlay}.yaml with `kubectl kustomize {path}`")
    ours = {_key(d): d for d in build_python(path)}
    theirs = {_key(d): d for d in yaml.safe_load_all(recorded)}
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == theirs[key], key


def test_python_build_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(NotImplementedError, match="commonLabels"):
        build_python(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: []\npatches:\n  - target: {kind: Deployment}\n    patch: |-\n      spec: {replicas: 2}\n")
    with pytest.raises(NotImplementedError, match="strategic-merge"):
        build_python(tmp_path)


def test_python_build_applies_images_patches_and_namespace(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "d.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "terrain"}],
                                       "initContainers": [{"name": "i", "image": "terrain:old"}]}}}}))
    (base / "kustomization.yaml").write_text("resources: [d.yaml]\n")
    (tmp_path / "kustomization.yaml").write_text(
        "namespace: ns\nresources: [base]\nimages: [{name: terrain, newName: reg/terrain, newTag: '1'}]\n"
        "patches:\n  - target: {kind: Deployment, name: x}\n    patch: |-\n"
        "      - op: add\n        path: /spec/replicas\n        value: 3\n")
    (doc,) = build_python(tmp_path)
    assert doc["metadata"]["namespace"] == "ns" and doc["spec"]["replicas"] == 3
    pod = doc["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"] + pod["initContainers"]] == ["reg/terrain:1", "reg/terrain:1"]
