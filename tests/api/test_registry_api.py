"""The registry through HTTP, on SQLite + local files and on PostgreSQL + Redis + SeaweedFS S3."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlplatform import formats
from mlplatform.formats import ArtifactFormat
from mlplatform.platform import Platform
from mlplatform.serving.runtimes import native_runtime
from tests import fixtures_models as fm
from tests.api.conftest import AppFactory, two_instances
from tests.api.models import (
    FEATURES,
    REFERENCES,
    Reference,
    expected,
    migrate,
    mlflow_reference,
    onnx_reference,
    reference,
    upload,
)
from tests.services import execute_sql


def all_references(folder: Path) -> list[Reference]:
    return [reference(label, folder) for label in REFERENCES] + [
        onnx_reference(folder),
        mlflow_reference(folder),
    ]


async def stored_keys(platform: Platform) -> list[str]:
    return [info.key for info in await platform.artifacts.list("models/")]


async def test_every_format_round_trips(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app(**backend)
    for ref in all_references(tmp_path / "refs"):
        name = ref.label.replace("_", "-")
        created = await upload(client, name, ref.path, ref.metadata)
        assert created["framework"] == ref.framework, ref.label
        assert created["task"] == ref.task, ref.label
        assert [f["name"] for f in created["features"]] == FEATURES
        assert created["runtime"]["runtime"], ref.label  # the engine chosen at registration is recorded
        downloaded = await client.get(f"/api/ml/models/{name}/versions/1/artifact")
        assert downloaded.status_code == 200
        assert downloaded.headers["x-artifact-sha256"] == created["artifact"]["sha256"]
        copy = tmp_path / f"download-{name}"
        copy.write_bytes(downloaded.content)
        description = formats.inspect_artifact(
            copy,
            filename=ref.path.name,
            allow_pickle=False,
            hints=formats.ModelHints(feature_names=FEATURES),
            workdir=tmp_path,
        ).description
        loaded = formats.load_model(copy, description, allow_pickle=False)
        labels, probabilities = expected(ref)
        got = native_runtime(loaded, description).predict(
            ref.X
        )  # the library itself, on the downloaded bytes
        if ref.task == "classification":
            np.testing.assert_array_equal(got.values, labels, err_msg=ref.label)
            if probabilities is not None and got.probabilities is not None:
                np.testing.assert_allclose(got.probabilities, probabilities, atol=1e-6, err_msg=ref.label)
        else:
            np.testing.assert_allclose(got.values, labels, rtol=1e-6, err_msg=ref.label)
        assert description.framework.value == ref.framework


async def test_ids_numbering_and_reads(backend: dict[str, Any], make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app(**backend)
    ref = reference("sklearn-forest-skops", tmp_path)
    first = await upload(
        client, "churn", ref.path, {**ref.metadata, "description": "first", "tags": {"team": "a"}}
    )
    second = await upload(client, "churn", ref.path, {**ref.metadata, "metrics": {"auc": 0.91}})
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    assert first["id"].startswith(f"churn-v1-{stamp}") and second["id"].startswith(f"churn-v2-{stamp}")
    assert second["metrics"] == {"auc": 0.91} and first["tags"] == {"team": "a"}
    model = (await client.get("/api/ml/models/churn")).json()
    assert model["latest_version"] == 2 and model["default_version"] == 2 and model["versions"] == 2
    versions = (await client.get("/api/ml/models/churn/versions", params={"limit": 1})).json()
    assert versions["total"] == 2 and [v["version"] for v in versions["items"]] == [2]
    assert (await client.get("/api/ml/models/churn/versions/3")).status_code == 404
    patched = await client.patch("/api/ml/models/churn/versions/1", json={"description": "better"})
    assert patched.json()["description"] == "better"
    model_patch = await client.patch("/api/ml/models/churn", json={"tags": {"owner": "risk"}})
    assert model_patch.json()["tags"] == {"owner": "risk"}
    listed = (await client.get("/api/ml/models", params={"tag": "owner:risk", "framework": "sklearn"})).json()
    assert [m["name"] for m in listed["items"]] == ["churn"]


async def test_stages_aliases_history_and_lineage(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(**backend)
    ref = reference("xgboost-ubj", tmp_path)
    await upload(client, "fraud", ref.path, ref.metadata)
    await upload(
        client, "fraud", ref.path, {**ref.metadata, "parent": "fraud/1", "training_dataset_id": "ds-7"}
    )
    await upload(client, "fraud", ref.path, {**ref.metadata, "parent": "fraud-v2"})
    before = datetime.now(UTC)
    staged = await client.post("/api/ml/models/fraud/versions/1/stage", json={"stage": "production"})
    assert staged.status_code == 200 and staged.json()["aliases"] == ["production"]
    await asyncio.sleep(0.01)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await client.post("/api/ml/models/fraud/versions/2/stage", json={"stage": "production"})
    assert (await client.put("/api/ml/models/fraud/aliases/champion", json={"version": 3})).status_code == 200
    assert platform.registry.resolve("fraud").version == 2
    assert platform.registry.resolve("fraud@champion").version == 3
    at_middle = (await client.get("/api/ml/models/fraud/history", params={"at": middle.isoformat()})).json()
    assert at_middle["aliases"] == {"production": 1}
    at_before = (await client.get("/api/ml/models/fraud/history", params={"at": before.isoformat()})).json()
    assert at_before["aliases"] == {}
    history = (await client.get("/api/ml/models/fraud/history")).json()["items"]
    assert history[0]["action"] == "alias_set" and history[0]["alias"] == "champion"
    assert {"admin" in h["actor"] or "bootstrap" in h["actor"] for h in history} == {True}
    lineage = (await client.get("/api/ml/models/fraud/versions/3/lineage")).json()
    assert [p["version"] for p in lineage["parents"]] == [2, 1]
    assert (await client.get("/api/ml/models/fraud/versions/1/lineage")).json()["children"][0]["version"] == 2
    second = (await client.get("/api/ml/models/fraud/versions/2")).json()
    assert second["training_dataset_id"] == "ds-7" and second["parent"].startswith("fraud-v1-")
    archived = await client.post("/api/ml/models/fraud/versions/3/stage", json={"stage": "archived"})
    assert archived.json()["status"] == "archived" and archived.json()["aliases"] == []
    refused = await client.put("/api/ml/models/fraud/aliases/champion", json={"version": 3})
    assert refused.status_code == 422
    assert (await client.delete("/api/ml/models/fraud/aliases/champion")).status_code == 404
    unknown_parent = await upload(client, "fraud", ref.path, {"parent": "fraud/9"}, expect=422)
    assert unknown_parent["error"]["details"][0]["field"] == "metadata.parent"


async def test_delete_archives_by_default_and_purges_on_request(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(**backend)
    ref = reference("lightgbm-text", tmp_path)
    await upload(client, "gone", ref.path, {**ref.metadata, "reference_sample": ref.X[:5].tolist()})
    await upload(client, "gone", ref.path, ref.metadata)
    assert len(await stored_keys(platform)) == 3  # two artifacts and one reference sample
    assert (await client.delete("/api/ml/models/gone/versions/2")).status_code == 204
    assert (await client.get("/api/ml/models/gone/versions/2")).json()["status"] == "archived"
    assert platform.registry.resolve("gone").version == 1
    assert (
        await client.delete("/api/ml/models/gone/versions/1", params={"purge": "true"})
    ).status_code == 204
    assert len(await stored_keys(platform)) == 1
    assert (await client.delete("/api/ml/models/gone", params={"purge": "true"})).status_code == 204
    assert await stored_keys(platform) == []
    assert (await client.get("/api/ml/models/gone")).status_code == 404
    assert (await client.get("/api/ml/models/gone/history")).json()["items"][0]["action"] == "purged"


@pytest.mark.parametrize(
    "name",
    ["%2e%2e", "..", "UPPER", "modèle", "a" * 200, "name-v2", "-leading", "sp ace", "x%2Fy", "dot..dot%2F"],
)
async def test_odd_names_are_refused_without_touching_storage(
    make_app: AppFactory, tmp_path: Path, name: str
) -> None:
    client, _ = await make_app()
    ref = reference("sklearn-forest-skops", tmp_path)
    files = {"file": ("m.skops", ref.path.read_bytes())}
    response = await client.post(f"/api/ml/models/{name}/versions", files=files, data={"metadata": "{}"})
    assert response.status_code in (404, 422), response.text
    if response.status_code == 422:
        assert response.json()["error"]["details"][0]["field"] == "name"
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*.skops"))


async def test_traversal_through_the_path_never_reaches_storage(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    ref = reference("sklearn-forest-skops", tmp_path)
    for path in ("/api/ml/models/../x/versions", "/api/ml/models/a/b/versions"):
        response = await client.post(path, files={"file": ("m", ref.path.read_bytes())})
        assert response.status_code in (404, 405, 422)
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*"))


async def test_pickle_is_refused_and_never_executed(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(**backend)
    marker = tmp_path / "pwned"
    bomb = fm.write_pickle_bomb(marker, tmp_path / "model.pkl", protocol=4)
    refused = await upload(client, "evil", bomb, expect=415)
    assert "skops" in refused["error"]["message"]
    joblib_bomb = fm.write_pickle_bomb(marker, tmp_path / "model.joblib", protocol=None, compress=3)
    await upload(client, "evil", joblib_bomb, expect=415)
    inner = fm.write_pickle_bomb(marker, tmp_path / "model.pkl", protocol=4)
    mlflow_zip = fm.write_mlflow_zip(inner, "sklearn", tmp_path, serialization_format="pickle")
    await upload(client, "evil", mlflow_zip, expect=415)
    assert not marker.exists()
    assert (await client.get("/api/ml/models/evil")).status_code == 404
    assert await stored_keys(platform) == []


async def test_pickle_is_accepted_when_an_operator_allows_it(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app(ml={"models": {"allow-pickle": True}})
    model, X, _ = fm.train_sklearn_classifier()
    path = fm.write_artifact(model, ArtifactFormat.PICKLE, tmp_path)
    created = await upload(client, "legacy", path, {"feature_names": FEATURES})
    assert created["artifact"]["format"] == "pickle"


async def test_bad_uploads_name_the_field(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(**backend)
    ref = reference("sklearn-forest-skops", tmp_path)
    bad_json = await client.post(
        "/api/ml/models/x/versions", files={"file": ("m", ref.path.read_bytes())}, data={"metadata": "{nope"}
    )
    assert bad_json.status_code == 422 and bad_json.json()["error"]["details"][0]["field"] == "metadata"
    unknown = await upload(client, "x", ref.path, {"colour": "red"}, expect=422)
    assert unknown["error"]["details"][0]["field"] == "metadata.colour"
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00not a model at all" * 10)
    broken = await upload(client, "x", garbage, expect=422)
    assert broken["error"]["details"][0]["field"] == "file"
    wrong_width = await upload(client, "x", ref.path, {"feature_names": ["a", "b"]}, expect=422)
    assert wrong_width["error"]["details"][0]["field"] == "file"
    bad_sample = await upload(client, "x", ref.path, {"reference_sample": [[1.0, 2.0]]}, expect=422)
    assert bad_sample["error"]["details"][0]["field"] == "metadata.reference_sample"
    missing_file = await client.post("/api/ml/models/x/versions", data={"metadata": "{}"})
    assert missing_file.status_code == 422 and missing_file.json()["error"]["details"][0]["field"] == "file"
    assert (await client.get("/api/ml/models/x")).status_code == 404
    assert await stored_keys(platform) == []


async def test_storage_failure_leaves_no_version(
    s3_credentials: dict[str, str],
    make_app: AppFactory,
    tmp_path: Path,
) -> None:
    from tests.services import free_port

    url = f"s3://nowhere?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    client, _ = await make_app(storage={"url": url, **s3_credentials})
    ref = reference("sklearn-forest-skops", tmp_path)
    failed = await upload(client, "m", ref.path, ref.metadata, expect=503)
    assert failed["error"]["code"] == "unavailable"
    assert (await client.get("/api/ml/models/m")).status_code == 404


async def test_database_failure_after_the_object_was_written_removes_it(
    postgres_url: str, postgres_dsn: str, make_app: AppFactory, tmp_path: Path
) -> None:
    await migrate(postgres_url)
    client, platform = await make_app(database={"url": postgres_url})
    ref = reference("sklearn-forest-skops", tmp_path)
    await upload(client, "m", ref.path, ref.metadata)
    schema = postgres_url.rsplit("%3D", 1)[1]
    # a real failure inside the insert
    await execute_sql(
        postgres_dsn, f'ALTER TABLE "{schema}".model_versions ADD CONSTRAINT no_more CHECK (version < 2)'
    )
    response = await client.post(
        "/api/ml/models/m/versions",
        files={"file": ("m.skops", ref.path.read_bytes())},
        data={"metadata": "{}"},
    )
    assert response.status_code == 500
    assert len(await stored_keys(platform)) == 1  # only version 1's artifact
    assert (await client.get("/api/ml/models/m")).json()["latest_version"] == 1


async def test_orphans_are_swept(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app()
    ref = reference("sklearn-forest-skops", tmp_path)
    await upload(client, "kept", ref.path, ref.metadata)
    await platform.artifacts.put("models/kept/01orphan/model.skops", b"left behind by a crash")
    assert await platform.registry.sweep_orphans(min_age=timedelta(hours=1)) == []  # too young to judge
    assert await platform.registry.sweep_orphans(min_age=timedelta(0)) == ["models/kept/01orphan/model.skops"]
    assert len(await stored_keys(platform)) == 1


async def test_concurrent_uploads_from_two_instances_get_gap_free_numbers(
    postgres_url: str, redis_url: str, make_app: AppFactory, tmp_path: Path
) -> None:
    (first, _), (second, _) = await two_instances(make_app, postgres_url, redis_url)
    ref = reference("sklearn-forest-skops", tmp_path)
    created = await asyncio.gather(
        *(upload(client, "race", ref.path, ref.metadata) for client in [first, second] * 4)
    )
    assert sorted(v["version"] for v in created) == list(range(1, 9))


async def test_an_alias_moved_on_one_instance_is_served_by_the_other_within_a_second(
    postgres_url: str, redis_url: str, make_app: AppFactory, tmp_path: Path
) -> None:
    (first, _), (second, other) = await two_instances(make_app, postgres_url, redis_url)
    ref = reference("sklearn-forest-skops", tmp_path)
    for _ in range(2):
        await upload(first, "live", ref.path, ref.metadata)
    await first.put("/api/ml/models/live/aliases/champion", json={"version": 1})
    async with asyncio.timeout(1):
        while (
            "live" not in other.registry.watcher.snapshot.models
            or not other.registry.watcher.snapshot.models["live"].aliases
        ):
            await asyncio.sleep(0.01)
    assert other.registry.resolve("live@champion").version == 1
    await first.put("/api/ml/models/live/aliases/champion", json={"version": 2})
    async with asyncio.timeout(1):
        while other.registry.resolve("live@champion").version != 2:
            await asyncio.sleep(0.01)
