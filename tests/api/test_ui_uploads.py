"""The console's upload forms (/ui/upload/model, /ui/upload/dataset) through `create_app`: an editor's upload
goes through the registry and datasets services as the API's does; refusals show the form again naming the
field and leave nothing stored; viewers, forged forms and bodies past the upload limit are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.api.conftest import AppFactory
from tests.api.models import FEATURES, reference
from tests.api.test_ui import browser_of, create_key, csrf_of, sign_in


@asynccontextmanager
async def signed_in(client: httpx.AsyncClient, role: str) -> AsyncIterator[httpx.AsyncClient]:
    key = (await create_key(client, role))["key"]
    async with browser_of(client) as browser:
        await sign_in(browser, key)
        yield browser


async def token(browser: httpx.AsyncClient, path: str = "/ui/upload/model") -> str:
    page = await browser.get(path)
    assert page.status_code == 200, page.text[:500]
    return csrf_of(page)


def csv_rows(rows: int = 60) -> bytes:
    x = np.random.default_rng(5).normal(size=(rows, len(FEATURES)))
    lines = [",".join(FEATURES)] + [",".join(f"{v:.5f}" for v in row) for row in x]
    return ("\n".join(lines) + "\n").encode()


async def test_an_editor_uploads_a_version_with_its_metadata_and_reference(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    ref = reference("sklearn-forest-skops", tmp_path)
    async with signed_in(client, "editor") as browser:
        models = await browser.get("/ui/models")
        assert 'href="/ui/upload/model"' in models.text  # shown to editors
        form: dict[str, Any] = {
            "csrf": await token(browser),
            "name": "fraud",
            "description": "card fraud score",
            "features": ", ".join(FEATURES),
            "tags": "team=risk\nowner = ada",
        }
        files = {
            "file": ("model.skops", ref.path.read_bytes(), "application/octet-stream"),
            "reference": ("reference.csv", csv_rows(), "text/csv"),
        }
        created = await browser.post("/ui/upload/model", data=form, files=files)
        assert created.status_code == 303, created.text[:1000]
        assert created.headers["location"] == "/ui/models/fraud/versions/1"
        page = await browser.get(created.headers["location"])
        assert page.status_code == 200 and "card fraud score" in page.text

        second = {**form, "csrf": await token(browser, "/ui/upload/model?name=fraud"), "parent": "fraud/1"}
        files.pop("reference")
        again = await browser.post("/ui/upload/model", data=second, files=files)
        assert again.headers["location"] == "/ui/models/fraud/versions/2"

    version = (await client.get("/api/ml/models/fraud/versions/1")).json()
    assert version["description"] == "card fraud score"
    assert version["tags"] == {"team": "risk", "owner": "ada"}
    assert [f["name"] for f in version["features"]] == FEATURES
    assert (await client.get("/api/ml/models/fraud/versions/1/reference")).status_code == 200
    assert (await client.get("/api/ml/models/fraud/versions/2")).json()["parent"] == version["id"]
    history = (await client.get("/api/ml/models/fraud/history")).json()["items"]
    assert any("web console" in (entry.get("actor") or "") for entry in history)
    assert platform  # the app is the one that stored them


async def test_a_refused_upload_shows_the_form_again_and_stores_nothing(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    ref = reference("sklearn-forest-skops", tmp_path)
    async with signed_in(client, "editor") as browser:
        base = {"name": "fraud", "description": "kept in the form", "features": "", "parent": "", "tags": ""}
        cases = [
            ({"file": ("model.skops", b"not a model at all", "application/octet-stream")}, {}, "file"),
            (
                {"file": ("model.skops", ref.path.read_bytes(), "application/octet-stream")},
                {"tags": "team"},
                "tags",
            ),
            (
                {"file": ("model.skops", ref.path.read_bytes(), "application/octet-stream")},
                {"name": "Bad Name!"},
                "name",
            ),
            (
                {"file": ("model.skops", ref.path.read_bytes(), "application/octet-stream")},
                {"parent": "nope/9"},
                "parent",
            ),
            ({"file": ("", b"", "application/octet-stream")}, {}, "file"),  # a file input left empty
        ]
        for files, change, field in cases:
            data = {**base, **change, "csrf": await token(browser)}
            refused = await browser.post("/ui/upload/model", data=data, files=files)
            assert 400 <= refused.status_code < 500, (field, refused.status_code)
            assert 'role="alert"' in refused.text and field in refused.text, (field, refused.text[:2000])
            assert "kept in the form" in refused.text  # the form comes back filled in
    assert (await client.get("/api/ml/models")).json()["total"] == 0
    assert await platform.artifacts.list("models/") == []


async def test_viewers_and_forged_forms_upload_nothing(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    ref = reference("sklearn-forest-skops", tmp_path)
    files = {"file": ("model.skops", ref.path.read_bytes(), "application/octet-stream")}
    async with signed_in(client, "viewer") as browser:
        assert 'href="/ui/upload/model"' not in (await browser.get("/ui/models")).text
        assert (await browser.get("/ui/upload/model")).status_code == 403
        page = await browser.get("/ui/models")
        refused = await browser.post(
            "/ui/upload/model", data={"csrf": csrf_of(page), "name": "x"}, files=files
        )
        assert refused.status_code == 403
    async with signed_in(client, "editor") as browser:
        forged = await browser.post("/ui/upload/model", data={"name": "x", "csrf": "guessed"}, files=files)
        assert forged.status_code == 403
    assert (await client.get("/api/ml/models")).json()["total"] == 0


async def test_a_body_past_the_upload_limit_is_refused(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app(security={"limits": {"max-upload-size": 4096}})
    async with signed_in(client, "editor") as browser:
        data = {"csrf": await token(browser, "/ui/upload/dataset"), "name": "big"}
        big = {"file": ("big.csv", csv_rows(400), "text/csv")}
        refused = await browser.post("/ui/upload/dataset", data=data, files=big)
        assert refused.status_code == 413
    assert (await client.get("/api/ml/datasets")).json()["total"] == 0
    assert await platform.artifacts.list("datasets/") == []


async def test_an_editor_uploads_a_dataset_and_a_bad_file_names_the_problem(make_app: AppFactory) -> None:
    client, platform = await make_app()
    async with signed_in(client, "editor") as browser:
        assert 'href="/ui/upload/dataset"' in (await browser.get("/ui/datasets")).text
        form = {"csrf": await token(browser, "/ui/upload/dataset"), "name": "loans", "tags": "team=risk"}
        bad = await browser.post(
            "/ui/upload/dataset", data=form, files={"file": ("loans.csv", b"\xff\xfe\x00garbage", "text/csv")}
        )
        assert 400 <= bad.status_code < 500 and 'role="alert"' in bad.text
        assert await platform.artifacts.list("datasets/") == []
        form["csrf"] = await token(browser, "/ui/upload/dataset")
        created = await browser.post(
            "/ui/upload/dataset", data=form, files={"file": ("loans.csv", csv_rows(), "text/csv")}
        )
        assert created.status_code == 303, created.text[:1000]
        page = await browser.get(created.headers["location"])
        assert page.status_code == 200 and "60 rows" in page.text
    listed = (await client.get("/api/ml/datasets")).json()["items"]
    assert [(d["name"], d["rows"], d["tags"]) for d in listed] == [("loans", 60, {"team": "risk"})]
