"""`mlplatform models …` against the real server: upload, list, show, stage, alias, history, delete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.api.models import reference
from tests.e2e.conftest import ServerProcess, run_cli

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-cli-bootstrap-admin-key-0123456789"


def test_the_models_commands_drive_a_running_server(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/actuator/health/readiness")
    env = {"MLPLATFORM_URL": server.base_url, "MLPLATFORM_API_KEY": ADMIN_KEY, "COLUMNS": "200"}
    ref = reference("xgboost-ubj", tmp_path / "refs")

    def cli(*args: str) -> str:
        result = run_cli(list(args), env, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    uploaded = cli(
        "models", "upload", "fraud", str(ref.path), "--metadata", '{"feature_names": ["f0","f1","f2","f3"]}'
    )
    assert "registered fraud-v1-" in uploaded and "xgboost" in uploaded
    cli("models", "upload", "fraud", str(ref.path), "--description", "second")
    assert "fraud" in cli("models", "list") and "1 models" in cli("models", "list")
    assert "v2" in cli("models", "show", "fraud")
    assert "production" in cli("models", "stage", "fraud", "1", "production")
    assert "champion" in cli("models", "alias", "fraud", "champion", "2")
    history = cli("models", "history", "fraud")
    assert "alias_set" in history and "registered" in history
    cli("models", "alias", "fraud", "champion", "--remove")
    assert "archived fraud v2" in cli("models", "delete", "fraud", "2")
    assert "purged fraud" in cli("models", "delete", "fraud", "--purge")

    refused = run_cli(["models", "show", "fraud"], env, tmp_path)
    assert refused.returncode == 1 and "no model named 'fraud'" in refused.stderr
    wrong_key = run_cli(["models", "list"], {**env, "MLPLATFORM_API_KEY": "mlp_wrong"}, tmp_path)
    assert wrong_key.returncode == 1 and "invalid API key" in wrong_key.stderr
