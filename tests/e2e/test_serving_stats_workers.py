"""Serving stats of a server with two worker processes: whichever worker answers, the series adds up both
workers' counts (each saves its own minutes), and a stopped server saved everything it counted."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.e2e.test_workers import ADMIN_KEY, REQUESTS, StartServer, predict, register_model


def serving_stats(base_url: str) -> dict[str, object]:
    response = httpx.get(
        f"{base_url}/api/ml/models/m/serving-stats", headers={"X-API-Key": ADMIN_KEY}, timeout=30
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def settle(base_url: str, answered: int) -> list[int]:
    """Once every worker saved its counts, each answer (from either worker) counts every prediction: the
    instances that reported, as six answers saw them."""
    deadline = time.monotonic() + 20
    while True:
        found = [serving_stats(base_url) for _ in range(6)]
        counted = [f["totals"]["predictions"] for f in found]  # type: ignore[index]
        if counted == [answered] * 6:
            return [int(f["instances"]) for f in found]  # type: ignore[call-overload]
        assert time.monotonic() < deadline, (answered, counted)
        time.sleep(0.3)


def test_two_workers_counts_add_up_whichever_answers(
    start_server: StartServer, redis_url: str, tmp_path: Path
) -> None:
    env = {
        "MLPLATFORM_SERVER__WORKERS": "2",
        "MLPLATFORM_CACHE__URL": redis_url,
        "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "MLPLATFORM_ML__SERVING__STATS__FLUSH_SECONDS": "0.5",
    }
    server = start_server(env, cwd=tmp_path)
    server.wait_for("/actuator/health/readiness")
    register_model(server, tmp_path)
    deadline = time.monotonic() + 90
    answered = 0
    while True:
        for _ in range(REQUESTS // 3):  # new connections: the kernel hands each to either worker
            status = predict(server, ADMIN_KEY).status_code
            # 404: a worker yet to hear of the model through Redis; 503: one still starting
            assert status in (200, 404, 503), status
            answered += status == 200
        seen = settle(server.base_url, answered)
        if all(instances == 2 for instances in seen):  # both workers answered some: their counts add up
            break
        assert time.monotonic() < deadline, f"one worker answered every prediction: {seen}"
    for _ in range(5):
        answered += predict(server, ADMIN_KEY).status_code == 200
    assert server.terminate() in (0, -signal.SIGTERM)  # stopping saves what was counted since the last round
    again = start_server({k: v for k, v in env.items() if k != "MLPLATFORM_SERVER__WORKERS"}, cwd=tmp_path)
    again.wait_for("/actuator/health/readiness")
    totals = serving_stats(again.base_url)["totals"]
    assert totals["predictions"] == answered and totals["errors"] == 0  # type: ignore[index]
