"""Builds a kustomization: `kubectl kustomize` when kubectl is installed, else the small subset used here.

The subset (resources, namespace, labels without selectors, images, inline JSON 6902 patches with a kind/name
target) is enough for deploy/k8s; anything else is refused rather than ignored, and test_kustomize.py checks
that it builds what kubectl builds wherever kubectl is present.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]
_SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}


def kubectl() -> str | None:
    return shutil.which("kubectl")


def build(path: Path) -> str:
    exe = kubectl()
    if exe:
        return subprocess.run([exe, "kustomize", str(path)], check=True, capture_output=True, text=True).stdout
    return yaml.safe_dump_all(build_python(path), sort_keys=True)


def build_python(path: Path) -> list[Doc]:
    spec = yaml.safe_load((path / "kustomization.yaml").read_text())
    unknown = set(spec) - _SUPPORTED
    if unknown:
        raise NotImplementedError(f"{path}: kustomization fields outside the supported subset: {sorted(unknown)}")
    docs: list[Doc] = []
    for res in spec.get("resources", []):
        target = path / res
        if target.is_dir():
            docs += build_python(target)
        else:
            docs += [d for d in yaml.safe_load_all(target.read_text()) if d]
    for entry in spec.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise NotImplementedError("labels on selectors or templates")
        for d in docs:
            d.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    for image in spec.get("images", []):
        for d in docs:
            _set_image(d, image)
    for patch in spec.get("patches", []):
        if "path" in patch or "target" not in patch:
            raise NotImplementedError("only inline JSON 6902 patches with a target")
        ops = yaml.safe_load(patch["patch"])
        if not isinstance(ops, list):
            raise NotImplementedError("strategic-merge patches")
        for d in docs:
            if _matches(d, patch["target"]):
                for op in ops:
                    _apply(d, op)
    if "namespace" in spec:
        for d in docs:
            d.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return docs


def _matches(doc: Doc, target: dict[str, str]) -> bool:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise NotImplementedError(f"patch target fields {sorted(unknown)}")
    return all(
        (doc.get("kind") if key == "kind" else doc.get("metadata", {}).get("name")) == value
        for key, value in target.items()
    )


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _apply(doc: Doc, op: dict[str, Any]) -> None:
    *parents, last = _pointer(op["path"])
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if kind in ("replace", "add"):
        value = copy.deepcopy(op["value"])
        if isinstance(node, list):
            if last == "-":
                node.append(value)
            elif kind == "add":
                node.insert(int(last), value)
            else:
                node[int(last)] = value
        else:
            if kind == "replace" and last not in node:
                raise KeyError(f"replace of a missing path {op['path']}")
            node[last] = value
    elif kind == "remove":
        del node[int(last) if isinstance(node, list) else last]
    else:
        raise NotImplementedError(f"patch op {kind}")


def _set_image(doc: Doc, image: dict[str, str]) -> None:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
        "template", {}).get("spec")
    if not pod:
        return
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        ref = c.get("image", "")
        name = ref.split("@")[0].rsplit(":", 1)[0] if ":" in ref.split("/")[-1] or "@" in ref else ref
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            c["image"] = f"{new}@{image['digest']}"
        elif "newTag" in image:
            c["image"] = f"{new}:{image['newTag']}"
        else:
            c["image"] = new + ref[len(name):]
