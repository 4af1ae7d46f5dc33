"""`mlplatform datasets …` against the real server: upload, list, show, download, delete."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import ServerProcess, run_cli

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-cli-bootstrap-admin-key-0123456789"
CSV = b"age,income,city\n30,1.5,paris\n40,,berlin\n50,4.5,\n"


def test_the_datasets_commands_drive_a_running_server(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(
        {
            "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "MLPLATFORM_SECURITY__LIMITS__MAX_UPLOAD_ROWS": "5",
        }
    )
    server.wait_for("/actuator/health/readiness")
    env = {"MLPLATFORM_URL": server.base_url, "MLPLATFORM_API_KEY": ADMIN_KEY, "COLUMNS": "200"}
    source = tmp_path / "customers.csv"
    source.write_bytes(CSV)

    def cli(*args: str) -> str:
        result = run_cli(list(args), env, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    uploaded = cli(
        "datasets",
        "upload",
        str(source),
        "--name",
        "customers",
        "--description",
        "weekly",
        "--tag",
        "team=risk",
    )
    match = re.search(r"uploaded dataset (\w+) \(3 rows, csv\)", uploaded)
    assert match, uploaded
    dataset_id = match[1]
    listed = cli("datasets", "list", "--name", "customers")
    assert "1 datasets" in listed and dataset_id in listed
    shown = cli("datasets", "show", dataset_id)
    assert "weekly" in shown and "team" in shown and "income" in shown and "double" in shown
    target = tmp_path / "copy.csv"
    assert f"wrote {len(CSV)} bytes" in cli("datasets", "download", dataset_id, "-o", str(target))
    assert target.read_bytes() == CSV
    assert f"deleted dataset {dataset_id}" in cli("datasets", "delete", dataset_id)

    gone = run_cli(["datasets", "show", dataset_id], env, tmp_path)
    assert gone.returncode == 1 and "no dataset with id" in gone.stderr
    big = tmp_path / "big.csv"
    big.write_bytes(b"a\n" + b"1\n" * 6)
    refused = run_cli(["datasets", "upload", str(big), "--name", "big"], env, tmp_path)
    assert refused.returncode == 1 and "max-upload-rows" in refused.stderr
    bad_tag = run_cli(["datasets", "upload", str(source), "--name", "x", "--tag", "oops"], env, tmp_path)
    assert bad_tag.returncode == 2 and "expected key=value" in bad_tag.stderr
