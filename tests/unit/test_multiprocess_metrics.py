"""Metrics of a multi-process server: the shared folder `serve` prepares, and what a scrape adds up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlplatform.metrics import MULTIPROCESS_ENV
from mlplatform.server import multiprocess_metrics


def test_a_fresh_folder_is_made_for_the_workers_and_removed_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROCESS_ENV, raising=False)
    with multiprocess_metrics() as folder:
        assert folder.is_dir() and os.environ[MULTIPROCESS_ENV] == str(folder)
        (folder / "counter_123.db").write_bytes(b"x")
    assert not folder.exists() and MULTIPROCESS_ENV not in os.environ


def test_an_operators_folder_is_kept_but_emptied_of_old_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"old run")
    (tmp_path / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROCESS_ENV, str(tmp_path))
    with multiprocess_metrics() as folder:
        assert folder == tmp_path and not (tmp_path / "counter_1.db").exists()
    assert (tmp_path / "notes.txt").exists() and os.environ[MULTIPROCESS_ENV] == str(tmp_path)


WORKER = textwrap.dedent(
    """
    import os
    import sys
    from mlplatform.metrics import Metrics
    from mlplatform.serving.metrics import ServingMetrics, register_models

    metrics = Metrics(application="app", environment="test")
    serving = ServingMetrics(metrics)
    register_models(metrics, lambda: int(sys.argv[1]), lambda: {"m": 2.0})
    serving.observe("m", "m-v1", 1.5, count=int(sys.argv[1]))
    metrics.sample()
    print(os.getpid())
    """
)
SCRAPE = textwrap.dedent(
    """
    import sys
    from prometheus_client import generate_latest
    from prometheus_client.multiprocess import mark_process_dead
    from mlplatform.metrics import Metrics

    for pid in sys.argv[1:]:  # what a worker's shutdown does for itself (`Metrics.run_sampler`)
        mark_process_dead(int(pid))
    print(generate_latest(Metrics(application="app", environment="test").exposition()).decode())
    """
)


def python(code: str, *args: str, folder: Path) -> str:
    env = {**os.environ, MULTIPROCESS_ENV: str(folder)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def test_a_scrape_adds_up_every_workers_counters_and_sampled_gauges(tmp_path: Path) -> None:
    """Each worker is a process of its own, as uvicorn's are; the scrape runs in a third."""
    first = python(WORKER, "4", folder=tmp_path).strip()
    python(WORKER, "3", folder=tmp_path)
    tags = 'application="app",environment="test"'

    page = python(SCRAPE, folder=tmp_path)
    assert f'ml_predictions_total{{{tags},model_id="m"}} 7.0' in page
    assert f'ml_predictions_latency_count{{{tags},model_id="m"}} 2.0' in page
    assert f'ml_predictions_throughput{{{tags},model_id="m"}} 7.0' in page  # livesum
    assert f"ml_models_active{{{tags}}} 4.0" in page  # livemax
    assert f'ml_model_age_days{{{tags},model_id="m"}} 2.0' in page

    page = python(SCRAPE, first, folder=tmp_path)  # the first worker has stopped
    assert f'ml_predictions_total{{{tags},model_id="m"}} 7.0' in page  # counters keep what it counted
    assert f'ml_predictions_throughput{{{tags},model_id="m"}} 3.0' in page  # gauges forget it
    assert f"ml_models_active{{{tags}}} 3.0" in page
