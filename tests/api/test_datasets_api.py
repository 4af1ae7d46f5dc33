"""Datasets through HTTP, on SQLite + local files and on PostgreSQL + Redis + SeaweedFS S3."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from datetime import timedelta
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlplatform.platform import Platform
from tests.api.conftest import AppFactory
from tests.api.models import migrate
from tests.services import execute_sql, free_port

CSV = b"age,income,city\n30,1.5,paris\n40,,berlin\n50,4.5,\n"


def parquet_bytes(rows: int = 4) -> bytes:
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "score": [i / 2 for i in range(rows)],
            "label": ["yes" if i % 2 else None for i in range(rows)],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


async def upload(
    client: httpx.AsyncClient,
    name: str,
    content: bytes,
    *,
    expect: int = 201,
    filename: str = "data",
    **form: str,
) -> dict[str, Any]:
    response = await client.post(
        "/api/ml/datasets", files={"file": (filename, content)}, data={"name": name, **form}
    )
    assert response.status_code == expect, response.text
    return dict(response.json())


async def stored_keys(platform: Platform) -> list[str]:
    return [info.key for info in await platform.artifacts.list("datasets/")]


async def nothing_stored(client: httpx.AsyncClient, platform: Platform) -> bool:
    listed = (await client.get("/api/ml/datasets")).json()
    return listed["total"] == 0 and await stored_keys(platform) == []


def field_of(body: dict[str, Any]) -> str:
    details = body["error"]["details"]
    return str(details[0]["field"])


async def test_csv_upload_profiles_stores_and_downloads_the_same_bytes(
    backend: dict[str, Any], make_app: AppFactory
) -> None:
    client, platform = await make_app(**backend)
    created = await upload(
        client, "customers", CSV, filename="x.csv", description="weekly", tags='{"team": "risk"}'
    )
    assert created["name"] == "customers" and created["format"] == "csv"
    assert created["rows"] == 3 and created["size_bytes"] == len(CSV)
    assert created["sha256"] == hashlib.sha256(CSV).hexdigest()
    assert (created["description"], created["tags"]) == ("weekly", {"team": "risk"})
    assert "bootstrap" in created["created_by"]
    assert created["columns"] == [
        {"name": "age", "type": "int64", "nulls": 0, "min": 30, "max": 50, "mean": 40.0},
        {"name": "income", "type": "double", "nulls": 1, "min": 1.5, "max": 4.5, "mean": 3.0},
        {"name": "city", "type": "string", "nulls": 1, "min": None, "max": None, "mean": None},
    ]
    assert created["storage_key"] == f"datasets/customers/{created['id']}/data.csv"
    assert await stored_keys(platform) == [created["storage_key"]]
    assert (await client.get(f"/api/ml/datasets/{created['id']}")).json() == created
    downloaded = await client.get(f"/api/ml/datasets/{created['id']}/data")
    assert downloaded.status_code == 200 and downloaded.content == CSV
    assert downloaded.headers["content-type"].startswith("text/csv")
    assert downloaded.headers["x-dataset-sha256"] == created["sha256"]


async def test_parquet_upload_is_told_by_content_and_round_trips(
    backend: dict[str, Any], make_app: AppFactory
) -> None:
    client, _ = await make_app(**backend)
    data = parquet_bytes(6)
    created = await upload(client, "scores", data, filename="scores.csv")  # the name of the file is no hint
    assert created["format"] == "parquet" and created["rows"] == 6
    assert created["sha256"] == hashlib.sha256(data).hexdigest()
    identity, score, label = created["columns"]
    assert (identity["type"], identity["min"], identity["max"], identity["mean"]) == ("int64", 0, 5, 2.5)
    assert (score["type"], score["max"]) == ("double", 2.5)
    assert (label["type"], label["nulls"], label["mean"]) == ("string", 3, None)
    assert created["storage_key"].endswith("/data.parquet")
    downloaded = await client.get(f"/api/ml/datasets/{created['id']}/data")
    assert downloaded.content == data
    assert downloaded.headers["content-type"] == "application/vnd.apache.parquet"
    assert pq.read_table(io.BytesIO(downloaded.content)).num_rows == 6


async def test_listing_filters_by_name_and_pages_newest_first(
    backend: dict[str, Any], make_app: AppFactory
) -> None:
    client, _ = await make_app(**backend)
    made = [(await upload(client, name, CSV))["id"] for name in ("a", "b", "a", "a")]
    everything = (await client.get("/api/ml/datasets")).json()
    assert everything["total"] == 4 and [d["id"] for d in everything["items"]] == made[::-1]
    page = (await client.get("/api/ml/datasets", params={"name": "a", "limit": 2, "offset": 1})).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)
    assert [d["id"] for d in page["items"]] == [made[2], made[0]]
    too_many = await client.get("/api/ml/datasets", params={"limit": 5000})
    assert too_many.status_code == 422 and field_of(too_many.json()) == "limit"


async def test_delete_removes_the_file_and_the_record(backend: dict[str, Any], make_app: AppFactory) -> None:
    client, platform = await make_app(**backend)
    kept = await upload(client, "kept", CSV)
    gone = await upload(client, "gone", parquet_bytes())
    assert len(await stored_keys(platform)) == 2
    assert (await client.delete(f"/api/ml/datasets/{gone['id']}")).status_code == 204
    assert await stored_keys(platform) == [kept["storage_key"]]
    assert (await client.get(f"/api/ml/datasets/{gone['id']}")).status_code == 404
    assert (await client.get(f"/api/ml/datasets/{gone['id']}/data")).status_code == 404
    assert (await client.delete(f"/api/ml/datasets/{gone['id']}")).status_code == 404
    assert [d["id"] for d in (await client.get("/api/ml/datasets")).json()["items"]] == [kept["id"]]


async def test_too_many_rows_is_413_and_leaves_nothing(backend: dict[str, Any], make_app: AppFactory) -> None:
    client, platform = await make_app(**backend, security={"limits": {"max-upload-rows": 5}})
    many = b"a,b\n" + b"1,2\n" * 6
    refused = await upload(client, "big", many, expect=413)
    assert refused["error"]["code"] == "payload_too_large"
    assert "max-upload-rows" in refused["error"]["message"]
    detail = refused["error"]["details"][0]
    assert (detail["field"], detail["limit_rows"]) == ("file", 5)
    refused_parquet = await upload(client, "big", parquet_bytes(6), expect=413)
    assert field_of(refused_parquet) == "file"
    assert await nothing_stored(client, platform)
    assert (await upload(client, "fits", b"a,b\n" + b"1,2\n" * 5))["rows"] == 5


async def test_too_many_bytes_is_413_also_when_the_body_was_compressed(make_app: AppFactory) -> None:
    client, platform = await make_app(security={"limits": {"max-upload-size": 4096}})
    big = b"a,b\n" + b"1,2\n" * 2000  # 8 KB
    by_body = await client.post("/api/ml/datasets", files={"file": ("d.csv", big)}, data={"name": "big"})
    assert by_body.status_code == 413 and by_body.json()["error"]["details"]["limit_bytes"] == 4096
    # Gzip gets the body past the raw-body check; the received file is checked again.
    request = httpx.Request(
        "POST", "http://test/api/ml/datasets", files={"file": ("d.csv", big)}, data={"name": "big"}
    )
    body = gzip.compress(request.read())
    assert len(body) < 4096
    headers = {"Content-Type": request.headers["content-type"], "Content-Encoding": "gzip"}
    by_file = await client.post("/api/ml/datasets", content=body, headers=headers)
    assert by_file.status_code == 413, by_file.text
    detail = by_file.json()["error"]["details"][0]
    assert (detail["field"], detail["limit_bytes"]) == ("file", 4096)
    assert "max-upload-size" in by_file.json()["error"]["message"]
    assert await nothing_stored(client, platform)


async def test_unreadable_files_are_422_naming_the_file(
    backend: dict[str, Any], make_app: AppFactory
) -> None:
    client, platform = await make_app(**backend)
    garbage = b"\x89\x00" + os.urandom(4000)
    cases = {
        b"": "empty",
        b"a,b\n1,2,3\n": "Expected 2 columns",
        garbage: "neither Parquet nor a UTF-8 CSV file",
        "name,city\nzoë,köln\n".encode("latin-1"): "not UTF-8 text",
        b"PAR1 pretending": "not a readable Parquet file",
        b",\n1,2\n": "has no name",
    }
    for content, problem in cases.items():
        refused = await upload(client, "bad", content, expect=422)
        assert field_of(refused) == "file", content[:20]
        assert problem in refused["error"]["details"][0]["problem"], refused
    missing = await client.post("/api/ml/datasets", data={"name": "bad"})
    assert missing.status_code == 422 and field_of(missing.json()) == "file"
    for tags, field in (("{nope", "tags"), ('["a"]', "tags"), ('{"k": 1}', "tags.k")):
        refused = await upload(client, "bad", CSV, expect=422, tags=tags)
        assert field_of(refused) == field
    assert await nothing_stored(client, platform)


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "UPPER", "x%2Fy", "a" * 200, " lead", ""])
async def test_bad_names_are_refused_before_anything_is_stored(
    backend: dict[str, Any], make_app: AppFactory, name: str
) -> None:
    client, platform = await make_app(**backend)
    refused = await upload(client, name, CSV, expect=422)
    assert field_of(refused) == "name"
    assert await nothing_stored(client, platform)


async def test_unknown_ids_are_404_with_the_json_body(make_app: AppFactory) -> None:
    client, _ = await make_app()
    for method, path in (
        ("GET", "/api/ml/datasets/0190abcdef0123456789abcdef"),
        ("GET", "/api/ml/datasets/0190abcdef0123456789abcdef/data"),
        ("DELETE", "/api/ml/datasets/0190abcdef0123456789abcdef"),
        ("GET", "/api/ml/datasets/..%2F..%2Fetc"),
    ):
        response = await client.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


async def test_a_database_failure_after_the_file_was_written_removes_it(
    postgres_url: str, postgres_dsn: str, make_app: AppFactory
) -> None:
    await migrate(postgres_url)
    client, platform = await make_app(database={"url": postgres_url})
    schema = postgres_url.rsplit("%3D", 1)[1]
    # a real failure inside the insert
    await execute_sql(
        postgres_dsn, f'ALTER TABLE "{schema}".datasets ADD CONSTRAINT no_rows CHECK (row_count < 0)'
    )
    response = await client.post("/api/ml/datasets", files={"file": ("d.csv", CSV)}, data={"name": "d"})
    assert response.status_code == 500
    assert await nothing_stored(client, platform)


async def test_a_storage_failure_is_503_and_leaves_no_record(
    s3_credentials: dict[str, str], make_app: AppFactory
) -> None:
    url = f"s3://nowhere?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    client, _ = await make_app(storage={"url": url, **s3_credentials})
    failed = await upload(client, "d", CSV, expect=503)
    assert failed["error"]["code"] == "unavailable"
    assert (await client.get("/api/ml/datasets")).json()["total"] == 0


async def test_orphaned_files_are_swept(make_app: AppFactory) -> None:
    client, platform = await make_app()
    kept = await upload(client, "kept", CSV)
    await platform.artifacts.put("datasets/kept/01orphan/data.csv", b"left behind by a crash")
    assert await platform.datasets.sweep_orphans(min_age=timedelta(hours=1)) == []
    assert await platform.datasets.sweep_orphans(min_age=timedelta(0)) == ["datasets/kept/01orphan/data.csv"]
    assert await stored_keys(platform) == [kept["storage_key"]]
