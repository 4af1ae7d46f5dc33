"""A small Python client for the mlplatform HTTP API (used by the CLI; usable from notebooks and scripts)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NoReturn

import httpx


class ApiError(Exception):
    """A 4xx/5xx answer, with the server's error code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class _CountingReader:
    """A file wrapper that reports how many bytes have been read (for upload progress bars)."""

    def __init__(self, handle: BinaryIO, on_read: Callable[[int], None]) -> None:
        self.handle = handle
        self.on_read = on_read

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.on_read(len(chunk))
        return chunk


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 300.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            self._raise(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    @staticmethod
    def _raise(response: httpx.Response) -> NoReturn:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise ApiError(response.status_code, "http_error", response.text[:500]) from None
        raise ApiError(response.status_code, error["code"], error["message"], error.get("details"))

    def list_models(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return dict(self._call("GET", "/api/ml/models", params=params))

    def get_model(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/ml/models/{name}"))

    def list_versions(self, name: str, limit: int = 100) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/ml/models/{name}/versions", params={"limit": limit}))

    def get_version(self, name: str, version: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/ml/models/{name}/versions/{version}"))

    def upload(
        self,
        name: str,
        path: Path,
        metadata: dict[str, Any] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        with path.open("rb") as handle:
            source: Any = _CountingReader(handle, on_progress) if on_progress else handle
            files = {"file": (path.name, source, "application/octet-stream")}
            data = {"metadata": json.dumps(metadata or {})}
            return dict(self._call("POST", f"/api/ml/models/{name}/versions", files=files, data=data))

    def stage(self, name: str, version: int, stage: str) -> dict[str, Any]:
        return dict(
            self._call("POST", f"/api/ml/models/{name}/versions/{version}/stage", json={"stage": stage})
        )

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        return dict(self._call("PUT", f"/api/ml/models/{name}/aliases/{alias}", json={"version": version}))

    def remove_alias(self, name: str, alias: str) -> None:
        self._call("DELETE", f"/api/ml/models/{name}/aliases/{alias}")

    def history(self, name: str, at: str | None = None, limit: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit} if at is None else {"at": at}
        return dict(self._call("GET", f"/api/ml/models/{name}/history", params=params))

    def delete(self, name: str, version: int | None = None, purge: bool = False) -> None:
        path = f"/api/ml/models/{name}" + (f"/versions/{version}" if version is not None else "")
        self._call("DELETE", path, params={"purge": str(purge).lower()})

    def upload_dataset(
        self,
        path: Path,
        name: str,
        description: str = "",
        tags: dict[str, str] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        with path.open("rb") as handle:
            source: Any = _CountingReader(handle, on_progress) if on_progress else handle
            files = {"file": (path.name, source, "application/octet-stream")}
            data = {"name": name, "description": description, "tags": json.dumps(tags or {})}
            return dict(self._call("POST", "/api/ml/datasets", files=files, data=data))

    def list_datasets(self, name: str | None = None, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if name is not None:
            params["name"] = name
        return dict(self._call("GET", "/api/ml/datasets", params=params))

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/ml/datasets/{dataset_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        self._call("DELETE", f"/api/ml/datasets/{dataset_id}")

    def download_dataset(
        self, dataset_id: str, target: Path, on_progress: Callable[[int], None] | None = None
    ) -> int:
        """Stream the dataset's file into `target` (replaced only once complete); returns its size."""
        partial = target.with_name(f".{target.name}.part")
        with self.http.stream("GET", f"/api/ml/datasets/{dataset_id}/data") as response:
            if response.status_code >= 400:
                response.read()
                self._raise(response)
            size = 0
            try:
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        size += len(chunk)
                        if on_progress:
                            on_progress(len(chunk))
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
        return size

    def send_feedback(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._call("POST", "/api/ml/feedback", json=items))

    def performance(self, name: str, window: str | None = None, version: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("window", window), ("version", version)) if v is not None}
        return dict(self._call("GET", f"/api/ml/models/{name}/monitoring", params=params))

    def timeline(
        self, name: str, window: str | None = None, version: str | None = None, bucket: str | None = None
    ) -> dict[str, Any]:
        given = (("window", window), ("version", version), ("bucket", bucket))
        params = {k: v for k, v in given if v is not None}
        return dict(self._call("GET", f"/api/ml/models/{name}/monitoring/timeline", params=params))

    def drift_check(self, name: str, window: str | None = None, version: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("window", window), ("version", version)) if v is not None}
        return dict(self._call("POST", f"/api/ml/models/{name}/drift-check", params=params))

    def drift_reports(self, name: str, version: str | None = None, limit: int = 20) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit} if version is None else {"limit": limit, "version": version}
        return dict(self._call("GET", f"/api/ml/models/{name}/drift-reports", params=params))

    def drift_report(self, name: str, report_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/ml/models/{name}/drift-reports/{report_id}"))

    def drift_plot(self, name: str, report_id: str) -> bytes:
        response = self.http.get(f"/api/ml/models/{name}/drift-reports/{report_id}/plot.png")
        if response.status_code >= 400:
            self._raise(response)
        return response.content

    def alerts(
        self,
        state: str | None = None,
        model: str | None = None,
        limit: int = 100,
        severity: str | None = None,
    ) -> dict[str, Any]:
        given = (("state", state), ("model", model), ("severity", severity), ("limit", limit))
        params = {k: v for k, v in given if v is not None}
        return dict(self._call("GET", "/api/ml/alerts", params=params))

    def acknowledge(self, alert_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/api/ml/alerts/{alert_id}/acknowledge"))

    def submit_training_job(self, **body: Any) -> dict[str, Any]:
        """Queue a training job (`model`, `dataset`, `target`, `algorithm`, … as the API takes them)."""
        return dict(self._call("POST", "/api/ml/training-jobs", json=body))

    def training_jobs(
        self, model: str | None = None, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        params = {k: v for k, v in (("model", model), ("state", state)) if v is not None}
        return dict(
            self._call("GET", "/api/ml/training-jobs", params={**params, "limit": limit, "offset": offset})
        )

    def training_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/ml/training-jobs/{job_id}"))

    def training_trials(self, job_id: str, limit: int = 500, offset: int = 0) -> dict[str, Any]:
        """The trials of a job's hyperparameter search, by number, the best one marked."""
        params = {"limit": limit, "offset": offset}
        return dict(self._call("GET", f"/api/ml/training-jobs/{job_id}/trials", params=params))

    def cancel_training_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/api/ml/training-jobs/{job_id}/cancel"))

    def training_history(self, name: str, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        params = {"limit": limit, "offset": offset}
        return dict(self._call("GET", f"/api/ml/models/{name}/training-history", params=params))

    def follow_training_job(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll_seconds: float = 0.5,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll the job until it has finished (or `timeout` seconds passed: TimeoutError); `on_update`
        sees every reading. Returns the last one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.training_job(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"training job {job_id} still {job['state']} after {timeout} s")
            time.sleep(poll_seconds)

    def create_experiment(self, **body: Any) -> dict[str, Any]:
        """Start an experiment (`name`, `model`, `type`, `variants`, … as the API takes them)."""
        return dict(self._call("POST", "/api/ml/experiments", json=body))

    def experiments(
        self, model: str | None = None, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        params = {k: v for k, v in (("model", model), ("state", state)) if v is not None}
        return dict(
            self._call("GET", "/api/ml/experiments", params={**params, "limit": limit, "offset": offset})
        )

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/ml/experiments/{experiment_id}"))

    def experiment_results(self, experiment_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/ml/experiments/{experiment_id}/results"))

    def promote_experiment(self, experiment_id: str, variant: str | None = None) -> dict[str, Any]:
        body = {} if variant is None else {"variant": variant}
        return dict(self._call("POST", f"/api/ml/experiments/{experiment_id}/promote", json=body))

    def stop_experiment(self, experiment_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/api/ml/experiments/{experiment_id}/stop"))
