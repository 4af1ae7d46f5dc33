"""The V2 endpoints of the real server, driven by NVIDIA's own `tritonclient.http` (sync and asyncio)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

from tests.api.models import Reference, expected, reference
from tests.e2e.conftest import ServerProcess

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-triton-admin-key-0123456789"


def auth() -> dict[str, str]:
    # A new dict per call: tritonclient writes Inference-Header-Content-Length into the headers it is given,
    # so a reused dict would carry one binary request's header length into the next (JSON) request.
    return {"X-API-Key": ADMIN_KEY}


def serve_with_model(start_server: StartServer, tmp_path: Path) -> tuple[ServerProcess, Reference]:
    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/v2/health/ready")
    ref = reference("sklearn-forest-skops", tmp_path / "refs")
    response = httpx.post(
        f"{server.base_url}/api/ml/models/forest/versions",
        files={"file": (ref.path.name, ref.path.read_bytes(), "application/octet-stream")},
        data={"metadata": json.dumps(ref.metadata)},
        headers=auth(),
        timeout=120,
    )
    assert response.status_code == 201, response.text
    return server, ref


def inputs(X: np.ndarray, *, binary: bool) -> list[triton.InferInput]:
    tensor = triton.InferInput("input-0", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X.astype(np.float32), binary_data=binary)
    return [tensor]


def outputs() -> list[triton.InferRequestedOutput]:
    return [
        triton.InferRequestedOutput("predict_proba", binary_data=True),
        triton.InferRequestedOutput("predict", binary_data=False),
    ]


def assert_library_answers(result: triton.InferResult, ref: Reference) -> None:
    labels, probabilities = expected(ref)
    assert probabilities is not None
    predict, proba = result.as_numpy("predict"), result.as_numpy("predict_proba")
    assert predict is not None and proba is not None
    assert predict.dtype == np.int64 and predict.tolist() == labels.tolist()
    assert proba.dtype == np.float64 and proba.shape == probabilities.shape
    np.testing.assert_allclose(proba, probabilities, atol=1e-6)


def test_tritonclient_http(start_server: StartServer, tmp_path: Path) -> None:
    server, ref = serve_with_model(start_server, tmp_path)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.get_server_metadata(headers=auth())["extensions"] == ["binary_tensor_data"]
        metadata = client.get_model_metadata("forest", headers=auth())
        assert metadata["platform"] == "mlplatform-sklearn"
        assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]
        assert client.get_model_metadata("forest", "1", headers=auth()) == metadata
        assert client.get_model_metadata("forest-v1", headers=auth()) == metadata
        assert client.is_model_ready("forest", headers=auth())
        assert client.is_model_ready("forest", "1", headers=auth())
        assert not client.is_model_ready("forest", "9", headers=auth())

        for binary in (True, False):
            result = client.infer("forest", inputs(ref.X, binary=binary), outputs=outputs(), headers=auth())
            assert_library_answers(result, ref)
            response = result.get_response()
            described = {o["name"]: o for o in response["outputs"]}
            assert described["predict_proba"]["parameters"]["binary_data_size"] == len(ref.X) * 2 * 8
            assert "data" in described["predict"]

        # no outputs named: tritonclient asks for all of them in binary; the version and the id come back
        result = client.infer(
            "forest", inputs(ref.X, binary=True), model_version="1", request_id="t-1", headers=auth()
        )
        assert_library_answers(result, ref)
        assert (result.get_response()["model_version"], result.get_response()["id"]) == ("1", "t-1")

        result = client.infer(
            "forest",
            inputs(ref.X, binary=True),
            outputs=outputs(),
            headers=auth(),
            request_compression_algorithm="gzip",
            response_compression_algorithm="gzip",
        )
        assert_library_answers(result, ref)

        with pytest.raises(InferenceServerException) as missing:
            client.infer("nope", inputs(ref.X, binary=True), headers=auth())
        assert missing.value.status() == "404"
        assert "no model named 'nope'" in str(missing.value)  # the protocol's string error
        with pytest.raises(InferenceServerException) as anonymous:
            client.infer("forest", inputs(ref.X, binary=True))
        assert anonymous.value.status() == "401"
    finally:
        client.close()


async def test_tritonclient_http_asyncio(start_server: StartServer, tmp_path: Path) -> None:
    server, ref = serve_with_model(start_server, tmp_path)
    client = triton_aio.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert await client.is_server_live()
        assert await client.is_server_ready()
        assert (await client.get_model_metadata("forest", headers=auth()))["name"] == "forest"
        assert await client.is_model_ready("forest", headers=auth())
        for binary in (True, False):
            result = await client.infer(
                "forest", inputs(ref.X, binary=binary), outputs=outputs(), headers=auth()
            )
            assert_library_answers(result, ref)
        with pytest.raises(InferenceServerException) as missing:
            await client.infer("nope", inputs(ref.X, binary=True), headers=auth())
        assert missing.value.status() == "404"
    finally:
        await client.close()
