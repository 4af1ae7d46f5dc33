"""The image without a container daemon: the wheel built from the Docker build context, installed into a clean
venv, served as an unprivileged user on a read-only root filesystem, as deploy/Dockerfile runs it.

The server runs in a mount namespace of its own (unshare) where `/` is read-only, as `docker run --read-only`
makes it: writable are only the data folder (bind-mounted, as the volume at /app/data would be) and a tmpfs
for TMPDIR. It runs from an empty working folder as `nobody` (setpriv), with the final stage's ENV.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from tests.deploy.dockerfile import DOCKERIGNORE, exec_form, instructions
from tests.e2e.conftest import ServerProcess
from tests.services import free_port

REPO = Path(__file__).parents[2]
UNPRIVILEGED = 65534  # nobody
ADMIN_KEY = "mlp_e2e-container-admin-key-0123456789abcdef"
FEATURES = ["a", "b", "c"]


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pytest.fail(
            f"{name} is needed by this test and is not installed (uv: the dev extra; others: util-linux)"
        )
    return found


def as_unprivileged(command: list[str]) -> list[str]:
    ids = str(UNPRIVILEGED)
    drop = ["--clear-groups", "--inh-caps=-all", "--no-new-privs"]
    return [tool("setpriv"), f"--reuid={ids}", f"--regid={ids}", *drop, *command]


def succeeds(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


def python_for_unprivileged_user() -> str:
    """A Python >= 3.11 that `nobody` can run: the one running the tests, unless it lives in a private home
    (pyenv under /root), else the system's."""
    candidates = [str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")]
    candidates += ["/usr/local/bin/python3.11", "/usr/bin/python3.11", "/usr/bin/python3"]
    check = "import sys; sys.exit(sys.version_info < (3, 11))"
    for candidate in candidates:
        if succeeds(as_unprivileged(["test", "-x", candidate])) and succeeds(
            as_unprivileged([candidate, "-c", check])
        ):
            return candidate
    pytest.fail(f"no Python >= 3.11 that an unprivileged user can run among {candidates}")


def build_context(target: Path) -> Path:
    """What `docker build` sends: the files .dockerignore lets in (an allow-list: test_dockerfile.py)."""
    target.mkdir()
    for line in DOCKERIGNORE.read_text().splitlines():
        if line.startswith("!"):
            source = REPO / line[1:].rstrip("/")
            if source.is_dir():
                shutil.copytree(
                    source, target / source.name, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]")
                )
            else:
                shutil.copy2(source, target / source.name)
    return target


def image_environment(tmp: Path) -> dict[str, str]:
    """The final stage's ENV, with /tmp moved to this test's tmpfs."""
    steps = instructions()
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    env: dict[str, str] = {}
    for keyword, arguments in final:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = str(tmp) + value[4:] if value.startswith("/tmp") else value
    return env


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder `nobody` can reach (pytest's own tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="mlplatform-container-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_wheel_serves_as_nobody_on_a_read_only_root_filesystem(base: Path) -> None:
    # 1. The builder stage: the project's wheel from the build context alone.
    context = build_context(base / "context")
    wheelhouse = base / "wheelhouse"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheelhouse)]
    built = subprocess.run([*pip_wheel, str(context)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = wheelhouse.glob("mlplatform-*.whl")
    check_wheel_contents(wheel)

    # 2. The final stage: the wheel and its dependencies in a clean venv (uv links them from its cache).
    venv = base / "venv"
    python = python_for_unprivileged_user()
    started = time.monotonic()
    for command in (["venv", "--quiet", "--python", python, str(venv)], ["pip", "install", "--quiet"]):
        if command[0] == "pip":
            command += ["--python", str(venv / "bin" / "python"), str(wheel)]
        done = subprocess.run([tool("uv"), *command], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    print(f"clean venv with the wheel and its dependencies: {time.monotonic() - started:.1f} s")

    # 3. Run it as the image does: nobody, an empty read-only working folder, writable only data and tmpfs.
    app, data, tmp = base / "app", base / "data", base / "tmp"
    for folder in (app, data, tmp):
        folder.mkdir()
    os.chown(data, UNPRIVILEGED, UNPRIVILEGED)
    port = free_port()
    env = {
        "PATH": f"{venv}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        **image_environment(tmp),
        "GIT_COMMIT": "e2e",
        "MLPLATFORM_SERVER__HOST": "127.0.0.1",  # the image listens on 0.0.0.0; a test stays on loopback
        "MLPLATFORM_SERVER__PORT": str(port),
        "MLPLATFORM_DATABASE__URL": f"sqlite+aiosqlite:///{data}/mlplatform.db",
        "MLPLATFORM_STORAGE__URL": f"file://{data}/artifacts",
        "MLPLATFORM_ML__MODELS__LOCAL_CACHE_DIR": f"{data}/model-cache",
        "MLPLATFORM_LOGGING__FILE__NAME": f"{data}/logs/application.log",
        "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
    }
    log = base / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            sandboxed(data, tmp, app, [str(venv / "bin" / "mlplatform"), "serve"]),
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = ServerProcess(process=process, port=port, log=log)
    try:
        server.wait_for("/actuator/health/liveness")
        server.wait_for("/actuator/health/readiness")
        status = Path(f"/proc/{process.pid}/status").read_text()
        assert f"Uid:\t{UNPRIVILEGED}\t{UNPRIVILEGED}" in status, status
        root = [
            line
            for line in Path(f"/proc/{process.pid}/mountinfo").read_text().splitlines()
            if " / / " in line
        ]
        assert root and root[0].split()[5].startswith("ro"), root

        register_and_predict(server, base)
        train_on_the_embedded_cluster(server)  # a dataset upload and the Dask LocalCluster's worker processes

        [health] = [exec_form(a) for k, a in instructions() if k == "HEALTHCHECK"]
        check = subprocess.run(sandboxed(data, tmp, app, health), env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr  # the image's HEALTHCHECK, run as the image would

        # The prod profile comes with the wheel (asked of the settings loader alone: the whole CLI would cost
        # another start-up's worth of imports).
        show = "from mlplatform.config import load_settings; print(load_settings().database.url)"
        prod = subprocess.run(
            sandboxed(data, tmp, app, ["python", "-c", show]),
            env={k: v for k, v in env.items() if "_URL" not in k} | PROD_VARIABLES,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert prod.returncode == 0, prod.stderr
        assert prod.stdout.strip() == "postgresql+psycopg://db.internal:5432/mlplatform"
    finally:
        server.terminate()
    assert process.returncode in (0, -15), server.output()
    down = subprocess.run(sandboxed(data, tmp, app, health), env=env, capture_output=True, text=True)
    assert down.returncode != 0  # and it notices when nothing answers
    assert list(app.iterdir()) == []
    assert (data / "mlplatform.db").is_file() and any((data / "artifacts").rglob("*"))
    assert (data / "logs" / "application.log").stat().st_uid == UNPRIVILEGED


PROD_VARIABLES = {
    "MLPLATFORM_PROFILE": "prod",
    "DB_HOST": "db.internal",
    "DB_NAME": "mlplatform",
    "DB_USER": "ml",
    "DB_PASSWORD": "unused",
    "REDIS_HOST": "redis.internal",
    "ML_MODELS_BUCKET": "models",
    "AWS_REGION": "eu-west-1",
}


def sandboxed(data: Path, tmp: Path, workdir: Path, command: list[str]) -> list[str]:
    """`command` as nobody in `workdir`, in a mount namespace where / is read-only but for `data` and a tmpfs
    on `tmp` (unshare execs, so the process id is the command's own)."""
    script = (
        'set -e; mount --bind "$1" "$1"; mount -o remount,bind,ro /; '
        'mount -t tmpfs -o mode=1777,size=512m tmpfs "$2"; cd "$3"; shift 3; exec "$@"'
    )
    return [tool("unshare"), "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"] + [
        str(data),
        str(tmp),
        str(workdir),
        *as_unprivileged(command),
    ]


def check_wheel_contents(wheel: Path) -> None:
    """Everything serving reads besides code: the configuration profiles, the migrations, any package data."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for profile in (REPO / "config").glob("application*.yml"):
        assert f"mlplatform/bundled_config/{profile.name}" in names
    package = REPO / "src" / "mlplatform"
    for path in package.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert f"mlplatform/{path.relative_to(package)}" in names
    assert any(n.startswith("mlplatform/migrations/versions/") for n in names)


def register_and_predict(server: ServerProcess, folder: Path) -> None:
    x = np.random.default_rng(0).normal(size=(200, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    artifact = folder / "model.skops"
    skops.io.dump(model, artifact)
    headers = {"X-API-Key": ADMIN_KEY}
    with artifact.open("rb") as file:
        created = httpx.post(
            f"{server.base_url}/api/ml/models/m/versions",
            files={"file": ("model.skops", file, "application/octet-stream")},
            data={"metadata": json.dumps({"feature_names": FEATURES})},
            headers=headers,
            timeout=60,
        )
    assert created.status_code == 201, created.text
    body = {"model": "m", "features": [2.0, -1.0, 0.5]}
    predicted = httpx.post(f"{server.base_url}/api/ml/predict", json=body, headers=headers, timeout=60)
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["prediction"] == model.predict(np.array([[2.0, -1.0, 0.5]]))[0]


def train_on_the_embedded_cluster(server: ServerProcess) -> None:
    x = np.random.default_rng(1).normal(size=(200, 2))
    rows = "\n".join(f"{a:.5f},{b:.5f},{int(a + b > 0)}" for a, b in x)
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": ADMIN_KEY}, timeout=60) as client:
        dataset = client.post(
            "/api/ml/datasets", files={"file": ("d.csv", f"a,b,y\n{rows}\n".encode())}, data={"name": "ab"}
        )
        assert dataset.status_code == 201, dataset.text
        body = {"model": "ab", "dataset": dataset.json()["id"], "target": "y", "algorithm": "lightgbm"}
        submitted = client.post(
            "/api/ml/training-jobs", json={**body, "hyperparameters": {"n_estimators": 10}}
        )
        assert submitted.status_code == 202, submitted.text
        deadline = time.monotonic() + 120
        path = f"/api/ml/training-jobs/{submitted.json()['id']}"
        while (job := client.get(path).json())["state"] in {"queued", "running"}:
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["state"] == "succeeded", (job, server.output())
        predicted = client.post("/api/ml/predict", json={"model": "ab", "features": {"a": 2.0, "b": 1.0}})
        assert predicted.status_code == 200 and predicted.json()["prediction"] == 1, predicted.text
