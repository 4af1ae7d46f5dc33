"""Dependencies point one way: the HTTP edge calls domain services; a domain's core never imports the edge."""

from __future__ import annotations

import ast
from pathlib import Path

import mlplatform

SRC = Path(mlplatform.__file__).parent
DOMAINS = ("serving", "registry", "datasets", "auth", "monitoring", "training", "experiments")


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_domain_services_and_stores_never_import_the_http_edge() -> None:
    offenders = []
    for domain in DOMAINS:
        for path in (SRC / domain).rglob("*.py"):
            if path.name == "router.py":  # a domain's routes sit at the edge, beside it
                continue
            offenders += [
                (str(path.relative_to(SRC)), m) for m in imports_of(path) if m.startswith("mlplatform.api")
            ]
    assert not offenders


def test_serving_has_no_http_layer_of_its_own() -> None:
    assert not (SRC / "serving" / "router.py").exists()
    for path in (SRC / "serving").rglob("*.py"):
        assert not any(m.startswith(("mlplatform.api", "fastapi")) for m in imports_of(path)), path


def test_the_edge_never_imports_a_domain_router() -> None:
    for path in (SRC / "api").rglob("*.py"):
        routers = [
            m for m in imports_of(path) if m.endswith(".router") and not m.startswith("mlplatform.api")
        ]
        assert not routers, (path, routers)
