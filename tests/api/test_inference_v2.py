"""Open Inference Protocol V2 in-process: metadata, health, JSON and binary tensors, errors, metrics."""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlplatform.errors import InvalidInput
from mlplatform.formats import ArtifactFormat
from mlplatform.formats.base import Feature, FeatureType
from mlplatform.serving.features import Signature
from mlplatform.serving.v2_codec import Tensor, to_matrix
from tests import fixtures_models as fm
from tests.api.conftest import AppFactory
from tests.api.models import FEATURES, Reference, expected, reference, upload

HEADER_LENGTH = "Inference-Header-Content-Length"


def matrix_input(X: np.ndarray, name: str = "input-0") -> dict[str, Any]:
    return {"name": name, "shape": list(X.shape), "datatype": "FP32", "data": X.astype(np.float32).tolist()}


def feature_inputs(X: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"name": name, "shape": [len(X)], "datatype": "FP64", "data": X[:, i].tolist()}
        for i, name in enumerate(FEATURES)
    ]


def outputs_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in body["outputs"]}


async def infer(client: httpx.AsyncClient, model: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return dict(response.json())


async def anonymous(client: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    request = client.build_request(method, path)
    del request.headers["X-API-Key"]
    return await client.send(request)


def assert_error(response: httpx.Response, status: int, field: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "details"}  # the protocol's shape: the message is a string
    assert field in body["error"], body
    for word in words:
        assert word in body["error"], body


async def registered(client: httpx.AsyncClient, label: str, folder: Path, name: str) -> Reference:
    ref = reference(label, folder)
    await upload(client, name, ref.path, ref.metadata)
    return ref


async def test_server_metadata_and_health(make_app: AppFactory) -> None:
    client, _ = await make_app()
    server = await client.get("/v2")
    assert server.status_code == 200
    assert server.json()["name"] == "mlplatform"
    assert "binary_tensor_data" in server.json()["extensions"]
    live = await anonymous(client, "GET", "/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = await anonymous(client, "GET", "/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


async def test_model_metadata_and_readiness_for_every_reference_form(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    await registered(client, "sklearn-forest-skops", tmp_path, "forest")
    alias = await client.put("/api/ml/models/forest/aliases/champion", json={"version": 1})
    assert alias.status_code == 200, alias.text
    version_id = platform.registry.resolve("forest").id
    forms = ["forest", "forest@champion", "forest/versions/1", "forest-v1", version_id]
    for form in forms:
        response = await client.get(f"/v2/models/{form}")
        assert response.status_code == 200, (form, response.text)
        metadata = response.json()
        assert metadata["name"] == "forest"
        assert metadata["versions"] == ["1"]
        assert metadata["platform"] == "mlplatform-sklearn"
        assert metadata["inputs"] == [
            {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]},
            *({"name": name, "datatype": "FP64", "shape": [-1]} for name in FEATURES),
        ]
        assert metadata["outputs"] == [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
        ]
        assert metadata["parameters"] == {"id": version_id, "features": FEATURES, "classes": [0, 1]}
        ready = await client.get(f"/v2/models/{form}/ready")
        assert (ready.status_code, ready.json()) == (200, {"name": "forest", "ready": True})
    assert (await client.get("/v2/models/forest/versions/2/ready")).status_code == 404

    await registered(client, "lightgbm-regressor-text", tmp_path, "sales")
    regressor = (await client.get("/v2/models/sales")).json()
    assert regressor["platform"] == "mlplatform-lightgbm"
    assert regressor["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]


@pytest.mark.parametrize("label", ["sklearn-forest-skops", "xgboost-ubj", "lightgbm-regressor-text"])
async def test_json_inference_equals_the_library(make_app: AppFactory, tmp_path: Path, label: str) -> None:
    client, _ = await make_app()
    ref = await registered(client, label, tmp_path, "model")
    labels, probabilities = expected(ref)
    as_matrix = await infer(client, "model", {"id": "r-1", "inputs": [matrix_input(ref.X)]})
    per_feature = await infer(client, "model/versions/1", {"inputs": feature_inputs(ref.X)})
    assert (as_matrix["model_name"], as_matrix["model_version"], as_matrix["id"]) == ("model", "1", "r-1")
    assert "id" not in per_feature
    for body in (as_matrix, per_feature):
        outputs = outputs_by_name(body)
        predict = outputs["predict"]
        assert predict["shape"] == [len(ref.X)]
        if probabilities is None:
            assert list(outputs) == ["predict"]
            assert predict["datatype"] == "FP64"
            # the compiled runtime answers in float32; the values are the library's to float32 precision
            np.testing.assert_allclose(predict["data"], labels, rtol=1e-6)
        else:
            assert predict["datatype"] == "INT64"
            assert predict["data"] == labels.tolist()
            proba = outputs["predict_proba"]
            assert (proba["datatype"], proba["shape"]) == ("FP64", list(probabilities.shape))
            np.testing.assert_allclose(np.reshape(proba["data"], proba["shape"]), probabilities, atol=1e-6)


async def test_string_labels_are_bytes_tensors(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    model, X, _ = fm.train_sklearn_classifier(labels=["cat", "dog"])
    path = fm.write_artifact(model, ArtifactFormat.SKOPS, tmp_path / "pets")
    await upload(client, "pets", path, {"feature_names": FEATURES})
    metadata = (await client.get("/v2/models/pets")).json()
    assert outputs_by_name(metadata)["predict"]["datatype"] == "BYTES"
    assert metadata["parameters"]["classes"] == ["cat", "dog"]
    body = await infer(client, "pets", {"inputs": [matrix_input(X)], "outputs": [{"name": "predict"}]})
    assert body["outputs"] == [
        {"name": "predict", "shape": [len(X)], "datatype": "BYTES", "data": model.predict(X).tolist()}
    ]
    request = {"inputs": [matrix_input(X)], "parameters": {"binary_data_output": True}}
    response = await client.post("/v2/models/pets/infer", json=request)
    header, blobs = split_response(response)
    predict = outputs_by_name(header)["predict"]
    assert predict["datatype"] == "BYTES"
    assert decode_bytes(blobs["predict"]) == model.predict(X).tolist()


def split_response(response: httpx.Response) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The JSON header and each binary output's bytes, read the way the extension lays them out."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[HEADER_LENGTH])
    header = json.loads(response.content[:length])
    blobs, offset = {}, length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            blobs[output["name"]] = response.content[offset : offset + size]
            offset += size
    assert offset == len(response.content)
    return header, blobs


def decode_bytes(blob: bytes) -> list[str]:
    items, offset = [], 0
    while offset < len(blob):
        (size,) = struct.unpack_from("<I", blob, offset)
        items.append(blob[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    return items


def binary_request(X: np.ndarray, **extra: Any) -> tuple[bytes, dict[str, str]]:
    raw = X.astype("<f4").tobytes()
    tensor = {"name": "input-0", "shape": list(X.shape), "datatype": "FP32"}
    header = {"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}], **extra}
    text = json.dumps(header).encode()
    headers = {HEADER_LENGTH: str(len(text)), "Content-Type": "application/octet-stream"}
    return text + raw, headers


async def test_binary_tensors_by_hand(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    ref = await registered(client, "sklearn-forest-skops", tmp_path, "forest")
    labels, probabilities = expected(ref)
    assert probabilities is not None
    outputs = [
        {"name": "predict_proba", "parameters": {"binary_data": True}},
        {"name": "predict", "parameters": {"binary_data": False}},
    ]
    content, headers = binary_request(ref.X, id="bin-1", outputs=outputs)
    response = await client.post("/v2/models/forest/infer", content=content, headers=headers)
    header, blobs = split_response(response)
    assert (header["model_name"], header["id"]) == ("forest", "bin-1")
    proba, predict = header["outputs"]
    assert (proba["name"], proba["datatype"], proba["shape"]) == ("predict_proba", "FP64", [len(ref.X), 2])
    assert proba["parameters"] == {"binary_data_size": len(ref.X) * 2 * 8}
    decoded = np.frombuffer(blobs["predict_proba"], dtype="<f8").reshape(proba["shape"])
    np.testing.assert_allclose(decoded, probabilities, atol=1e-6)
    assert predict == {"name": "predict", "shape": [len(ref.X)], "datatype": "INT64", "data": labels.tolist()}

    # binary_data_output is the default for every output; an output's own binary_data: false wins
    content, headers = binary_request(
        ref.X,
        parameters={"binary_data_output": True},
        outputs=[{"name": "predict"}, {"name": "predict_proba", "parameters": {"binary_data": False}}],
    )
    header, blobs = split_response(
        await client.post("/v2/models/forest/infer", content=content, headers=headers)
    )
    assert list(blobs) == ["predict"]
    assert np.frombuffer(blobs["predict"], dtype="<i8").tolist() == labels.tolist()
    proba = outputs_by_name(header)["predict_proba"]
    np.testing.assert_allclose(np.reshape(proba["data"], proba["shape"]), probabilities, atol=1e-6)


async def test_errors_name_the_problem(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app(security={"limits": {"max-batch-rows": 50}})
    ref = await registered(client, "sklearn-forest-skops", tmp_path, "forest")
    X = ref.X[:5]

    async def post(body: dict[str, Any], model: str = "forest") -> httpx.Response:
        return await client.post(f"/v2/models/{model}/infer", json=body)

    assert_error(await post({"inputs": [matrix_input(X[:, :3])]}), 422, "inputs[0].shape", "[n, 4]")
    assert_error(await post({"inputs": [matrix_input(X)]}, "nope"), 404, "'nope'")
    bad_type = {**matrix_input(X), "datatype": "FP128"}
    assert_error(await post({"inputs": [bad_type]}), 422, "inputs[0].datatype", "'FP128'")
    strings = {"name": "input-0", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}
    assert_error(await post({"inputs": [strings]}), 422, "inputs[0].datatype", "BYTES")
    nulls = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, None, 2, 3]}
    assert_error(await post({"inputs": [nulls]}), 422, "inputs[0].data", "FP32")
    too_many = {"inputs": [matrix_input(ref.X)]}
    assert_error(await post(too_many), 422, "inputs", "at most 50", "max-batch-rows")
    empty = {"name": "input-0", "shape": [0, 4], "datatype": "FP32", "data": []}
    assert_error(await post({"inputs": [empty]}), 422, "inputs[0].shape", "n ≥ 1")
    unknown_output = {"inputs": [matrix_input(X)], "outputs": [{"name": "probs"}]}
    assert_error(await post(unknown_output), 422, "outputs[0].name", "'probs'", "predict_proba")
    missing = await post({"inputs": feature_inputs(X)[:3]})
    assert_error(missing, 422, "inputs")
    assert {"field": "inputs.f3", "problem": "missing"} in missing.json()["details"]

    content, headers = binary_request(X)
    lying = json.loads(content[: int(headers[HEADER_LENGTH])])
    lying["inputs"][0]["parameters"]["binary_data_size"] = 10_000
    text = json.dumps(lying).encode()
    response = await client.post(
        "/v2/models/forest/infer",
        content=text + X.astype("<f4").tobytes(),
        headers={HEADER_LENGTH: str(len(text))},
    )
    assert_error(response, 422, "inputs[0].parameters.binary_data_size", "10000")
    headers[HEADER_LENGTH] = str(len(content) + 1)
    response = await client.post("/v2/models/forest/infer", content=content, headers=headers)
    assert_error(response, 422, "Inference-Header-Content-Length")
    assert_error(await client.get("/v2/models/forest/versions/one"), 422, "version", "'one'")
    assert_error(await client.get("/v2/models/forest/versions/7"), 404, "forest")

    assert_error(await anonymous(client, "POST", "/v2/models/forest/infer"), 401, "API key")
    assert (await anonymous(client, "GET", "/v2/models/forest")).status_code == 401
    created = await client.post("/api/admin/api-keys", json={"name": "v", "role": "viewer", "owner": "t"})
    viewer = {"X-API-Key": created.json()["key"]}
    assert (await client.get("/v2/models/forest", headers=viewer)).status_code == 200
    assert (await client.get("/v2/models/forest/ready", headers=viewer)).status_code == 200
    forbidden = await client.post(
        "/v2/models/forest/infer", json={"inputs": [matrix_input(X)]}, headers=viewer
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "forbidden"


async def test_each_inference_counts_in_the_prediction_metrics(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    ref = await registered(client, "xgboost-ubj", tmp_path, "fraud")
    await infer(client, "fraud", {"inputs": [matrix_input(ref.X[:7])]})
    content, headers = binary_request(ref.X[:5])
    response = await client.post("/v2/models/fraud/infer", content=content, headers=headers)
    assert response.status_code == 200
    exposition = (await client.get("/actuator/prometheus")).text
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if re.match(r'ml_predictions_total\{.*model_id="fraud".*\}', line)
    ]
    assert counted == [12.0]


def test_mixed_signatures_keep_strings_and_make_numbers_floats() -> None:
    signature = Signature([Feature("city", FeatureType.STRING), Feature("age", FeatureType.INT)], "people")
    rows = np.array([["paris", "31"], ["lyon", "47"]], dtype=object)
    one = to_matrix([Tensor("input-0", [2, 2], "BYTES", rows)], signature)
    assert one.tolist() == [["paris", 31.0], ["lyon", 47.0]]
    per_feature = [
        Tensor("age", [2], "INT64", np.array([31, 47])),
        Tensor("city", [2], "BYTES", np.array(["paris", "lyon"], dtype=object)),
    ]
    assert to_matrix(per_feature, signature).tolist() == [["paris", 31.0], ["lyon", 47.0]]
    with pytest.raises(InvalidInput, match="'city' takes strings"):
        to_matrix([Tensor("input-0", [1, 2], "FP64", np.array([[1.0, 2.0]]))], signature)
    with pytest.raises(InvalidInput, match="'age' takes numbers"):
        to_matrix([Tensor("input-0", [1, 2], "BYTES", np.array([["nice", "old"]], dtype=object))], signature)


async def test_compressed_binary_requests_get_the_same_answer_as_plain_ones(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """Plain and gzip bodies (tritonclient's `request_compression_algorithm`) get the same bytes back, both
    timed under their route."""
    client, _ = await make_app()
    ref = await registered(client, "sklearn-forest-skops", tmp_path, "forest")
    outputs = [{"name": "predict_proba", "parameters": {"binary_data": True}}, {"name": "predict"}]
    content, headers = binary_request(ref.X, id="same", outputs=outputs)
    answers = []
    for path in ("/v2/models/forest/infer", "/v2/models/forest/versions/1/infer"):
        plain = await client.post(path, content=content, headers=headers)
        packed = await client.post(
            path, content=gzip.compress(content), headers={**headers, "Content-Encoding": "gzip"}
        )
        for response in (plain, packed):
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/octet-stream"
            answers.append((response.headers["inference-header-content-length"], response.content))
    assert len(set(answers)) == 1
    text = (await client.get("/actuator/prometheus")).text
    for route in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"):
        assert f'http_server_requests_seconds_count{{method="POST",route="{route}",status="200"}} 2.0' in text
    missing = await client.post("/v2/models/nothing/versions/1/infer", content=content, headers=headers)
    assert_error(missing, 404, "nothing")
