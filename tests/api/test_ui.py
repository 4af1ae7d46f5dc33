"""The web console through `create_app`: sign-in sessions, cookies, CSRF, roles, and every registry page."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlplatform.ui.sessions import session_key
from tests.api.conftest import AppFactory, two_instances
from tests.api.models import Reference, reference, upload
from tests.api.test_training_api import TERMINAL, app_with_dataset, job_body, scheduler, wait_for

__all__ = ["scheduler"]  # a module fixture: one Dask LocalCluster for the training jobs below

TOKEN = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = TOKEN.search(page.text)
    assert found, page.text[:2000]
    return found.group(1)


def browser_of(client: httpx.AsyncClient, base_url: str | None = None) -> httpx.AsyncClient:
    """A client of the same app that sends no API key: a browser."""
    return httpx.AsyncClient(transport=client._transport, base_url=base_url or str(client.base_url))


async def sign_in(browser: httpx.AsyncClient, key: str, next_page: str = "/ui/models") -> httpx.Response:
    form = await browser.get("/ui/login", params={"next": next_page})
    assert form.status_code == 200
    return await browser.post("/ui/login", data={"key": key, "csrf": csrf_of(form), "next": next_page})


async def create_key(client: httpx.AsyncClient, role: str) -> dict[str, Any]:
    created = await client.post(
        "/api/admin/api-keys", json={"name": f"ui {role}", "role": role, "owner": role}
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


async def register(client: httpx.AsyncClient, tmp_path: Path, name: str = "clf") -> Reference:
    ref = reference("sklearn-forest-skops", tmp_path)
    metadata = {**ref.metadata, "metrics": {"auc": 0.91}, "reference_sample": ref.X[:200].tolist()}
    await upload(client, name, ref.path, metadata)
    await upload(client, name, ref.path, {**ref.metadata, "parent": f"{name}/1"})
    return ref


async def test_pages_need_a_session_and_an_api_key_is_not_one(make_app: AppFactory) -> None:
    client, _ = await make_app()
    for path in ("/ui/models", "/ui/models/clf", "/ui/models/clf/versions/1"):
        response = await client.get(path)  # carries X-API-Key: pages want the session
        assert response.status_code == 303, (path, response.status_code)
        assert response.headers["location"].startswith("/ui/login?next=" + path.replace("/", "%2F"))
    forged = await client.post("/ui/models/clf/versions/1/stage", data={"stage": "production"})
    assert forged.status_code == 303 and forged.headers["location"].startswith("/ui/login")
    css = await client.get("/ui/static/ui.css")  # public: the sign-in page needs it
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    again = await client.get("/ui/static/ui.css", headers={"If-None-Match": css.headers["etag"]})
    assert again.status_code == 304
    assert (await client.get("/ui/static/vendor/htmx.min.js")).status_code == 200  # `make ui-assets`
    for outside in ("../console.py", "..%2Fconsole.py", "/etc/passwd", "vendor/.installed-stamp"):
        assert (await client.get(f"/ui/static/{outside}")).status_code == 404, outside


async def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session(
    make_app: AppFactory,
) -> None:
    client, platform = await make_app()
    viewer = await create_key(client, "viewer")
    async with browser_of(client) as browser:
        signed = await sign_in(browser, viewer["key"], "/ui/models?q=c")
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/models?q=c"
        cookie = next(v for k, v in signed.headers.multi_items() if k == "set-cookie" and "mlp_session=" in v)
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/ui"} <= flags
        assert "secure" not in flags  # the default profile serves plain http on a laptop
        assert viewer["key"] not in cookie
        where = session_key(signed.cookies["mlp_session"])  # the id's digest, not the id
        stored = await platform.cache.get(where)
        assert stored is not None and viewer["key"].encode() not in stored
        assert signed.cookies["mlp_session"].encode() not in stored
        page = await browser.get("/ui/models")
        assert page.status_code == 200 and "viewer" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["x-ratelimit-limit"]  # counted against the signed-in key's limit
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

        first = signed.cookies["mlp_session"]
        again = await sign_in(browser, viewer["key"])  # signing in again replaces the session
        assert await platform.cache.get(where) is None
        assert again.cookies["mlp_session"] != first
        page = await browser.get("/ui/models")
        where = session_key(again.cookies["mlp_session"])
        out = await browser.post("/ui/logout", data={"csrf": csrf_of(page)})
        assert out.status_code == 303
        assert await platform.cache.get(where) is None
        assert (await browser.get("/ui/models")).status_code == 303


async def test_secure_cookie_in_every_profile_but_the_default(make_app: AppFactory) -> None:
    client, _ = await make_app(ui={"secure-cookie": True})
    async with browser_of(client, "https://test") as browser:  # a browser sends Secure cookies on HTTPS only
        signed = await sign_in(browser, (await create_key(client, "viewer"))["key"])
        cookie = next(v for k, v in signed.headers.multi_items() if k == "set-cookie" and "mlp_session=" in v)
        assert "secure" in {part.strip().lower() for part in cookie.split(";")}


async def test_a_wrong_key_or_a_forged_sign_in_form_is_refused(make_app: AppFactory) -> None:
    client, _ = await make_app()
    async with browser_of(client) as browser:
        wrong = await sign_in(browser, "mlp_not-a-key")
        assert wrong.status_code == 401 and "invalid API key" in wrong.text
        assert "mlp_session" not in wrong.headers.get("set-cookie", "")
        forged = await browser.post("/ui/login", data={"key": "x", "csrf": "guessed"})
        assert forged.status_code == 403
        elsewhere = await sign_in(
            browser, (await create_key(client, "viewer"))["key"], "https://evil.example/"
        )
        assert elsewhere.headers["location"] == "/ui/models"


async def test_a_post_without_the_session_token_is_refused(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app()
    await register(client, tmp_path)
    editor = await create_key(client, "editor")
    async with browser_of(client) as browser:
        await sign_in(browser, editor["key"])
        page = await browser.get("/ui/models/clf")
        token = csrf_of(page)
        for data in ({"stage": "production"}, {"stage": "production", "csrf": "old-" + token}):
            refused = await browser.post("/ui/models/clf/versions/1/stage", data=data)
            assert refused.status_code == 403 and "security token" in refused.text
        assert "production" not in (await platform.registry.get_model("clf")).aliases
        # An old token: from a session that ended.
        await browser.post("/ui/logout", data={"csrf": token})
        await sign_in(browser, editor["key"])
        stale = await browser.post(
            "/ui/models/clf/versions/1/stage", data={"stage": "production", "csrf": token}
        )
        assert stale.status_code == 403
        done = await browser.post(
            "/ui/models/clf/versions/1/stage",
            data={"stage": "production", "csrf": csrf_of(await browser.get("/ui/models/clf"))},
        )
        assert done.status_code == 303
    model = await platform.registry.get_model("clf")
    assert model.aliases["production"] == 1
    history = await platform.registry.history("clf", limit=10, offset=0)
    assert "web console" in history.items[0].actor and "editor" in history.items[0].actor


async def test_a_viewer_sees_no_action_and_a_forged_one_is_refused(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    await register(client, tmp_path)
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        page = await browser.get("/ui/models/clf")
        assert page.status_code == 200
        assert "/stage" not in page.text and "/aliases" not in page.text and "Point alias" not in page.text
        token = csrf_of(page)  # the sign-out form's: a viewer's session has a token too
        for path, data in (
            ("/ui/models/clf/versions/1/stage", {"stage": "production"}),
            ("/ui/models/clf/aliases", {"alias": "champion", "version": "1"}),
        ):
            refused = await browser.post(path, data={**data, "csrf": token})
            assert refused.status_code == 403 and "may not write" in refused.text, refused.text
    assert (await platform.registry.get_model("clf")).aliases == {}


async def test_an_editor_stages_and_points_and_removes_aliases(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app()
    await register(client, tmp_path)
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "editor"))["key"])
        token = csrf_of(await browser.get("/ui/models/clf"))
        staged = await browser.post(
            "/ui/models/clf/versions/2/stage", data={"stage": "staging", "csrf": token}
        )
        pointed = await browser.post(
            "/ui/models/clf/aliases", data={"alias": "champion", "version": "1", "csrf": token}
        )
        assert (staged.status_code, pointed.status_code) == (303, 303)
        page = await browser.get("/ui/models/clf")
        assert 'badge-staging">staging' in page.text and 'badge-alias">champion' in page.text
        bad = await browser.post(
            "/ui/models/clf/aliases", data={"alias": "no way", "version": "1", "csrf": token}
        )
        assert bad.status_code == 422 and "alias" in bad.text
        removed = await browser.post("/ui/models/clf/aliases/champion/remove", data={"csrf": token})
        assert removed.status_code == 303
    assert (await platform.registry.get_model("clf")).aliases == {"staging": 2}


async def test_every_page_renders_for_a_registered_model(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    ref = await register(client, tmp_path)
    predicted = await client.post("/api/ml/predict", json={"model": "clf", "features": ref.X[0].tolist()})
    assert predicted.status_code == 200, predicted.text
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        models = await browser.get("/ui/models")
        assert models.status_code == 200
        assert '<a href="/ui/models/clf">clf</a>' in models.text and "v2" in models.text
        async with asyncio.timeout(30):  # the prediction log is written in the background
            while "<time" not in models.text:  # the last prediction's time
                await asyncio.sleep(0.05)
                models = await browser.get("/ui/models")
        rows = await browser.get("/ui/models", params={"q": "zz"}, headers={"HX-Request": "true"})
        assert rows.status_code == 200 and "<html" not in rows.text and "No model matches" in rows.text

        model = await browser.get("/ui/models/clf")
        assert model.status_code == 200
        assert '<svg class="lineage"' in model.text and "clf v1" in model.text  # v2's parent
        assert "registered" in model.text or "History" in model.text
        for related in ("/ui/serving/clf", "/ui/models/clf/monitoring", "/ui/experiments?model=clf"):
            assert f'href="{related}"' in model.text, related  # the model's other pages
            assert (await browser.get(related)).status_code == 200, related

        version = await browser.get("/ui/models/clf/versions/1")
        assert version.status_code == 200
        for expected in ("auc", "f0", "Reference sample", '<svg class="histogram"', "Download the artifact"):
            assert expected in version.text, expected
        v2 = await browser.get("/ui/models/clf/versions/2")
        assert "No reference sample" in v2.text and "No metrics" in v2.text

        artifact = await browser.get("/ui/models/clf/versions/1/artifact")
        direct = await client.get("/api/ml/models/clf/versions/1/artifact")
        assert artifact.status_code == 200 and artifact.content == direct.content

        missing = await browser.get("/ui/models/nope")
        assert missing.status_code == 404 and "no model named" in missing.text and "<html" in missing.text


async def test_a_revoked_key_ends_its_sessions(make_app: AppFactory) -> None:
    client, _ = await make_app()
    editor = await create_key(client, "editor")
    async with browser_of(client) as browser:
        await sign_in(browser, editor["key"])
        assert (await browser.get("/ui/models")).status_code == 200
        assert (await client.delete(f"/api/admin/api-keys/{editor['id']}")).status_code == 200
        ended = await browser.get("/ui/models")
        assert ended.status_code == 303 and "reason=revoked" in ended.headers["location"]
        assert (await browser.get("/ui/models")).status_code == 303


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_session_in_redis_is_known_to_every_instance(
    make_app: AppFactory, postgres_url: str, redis_url: str
) -> None:
    (first, _), (second, _) = await two_instances(make_app, postgres_url, redis_url)
    viewer = await create_key(first, "viewer")
    async with browser_of(first) as on_first, browser_of(second) as on_second:
        signed = await sign_in(on_first, viewer["key"])
        cookie = {"Cookie": f"mlp_session={signed.cookies['mlp_session']}"}
        page = await on_second.get("/ui/models", headers=cookie)
        assert page.status_code == 200 and "viewer" in page.text
        out = await on_second.post("/ui/logout", data={"csrf": csrf_of(page)}, headers=cookie)
        assert out.status_code == 303  # ended on the other instance
        assert (await on_first.get("/ui/models")).status_code == 303


async def test_the_jobs_page_follows_jobs_and_an_editor_cancels_one(
    make_app: AppFactory, scheduler: str
) -> None:
    client, _, dataset = await app_with_dataset(make_app, scheduler, rows=2000)
    short = (await client.post("/api/ml/training-jobs", json=job_body(dataset))).json()
    done = await wait_for(client, short["id"], TERMINAL)
    assert done["state"] == "succeeded", done
    long_body = job_body(dataset, hyperparameters={"n_estimators": 200_000, "max_depth": 6})
    running = (await client.post("/api/ml/training-jobs", json=long_body)).json()
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        page = await browser.get("/ui/jobs")
        assert page.status_code == 200 and 'aria-current="page">Training jobs' in page.text
        assert page.text.index(running["id"]) < page.text.index(short["id"])  # newest first
        assert 'hx-trigger="every 2s"' in page.text  # a job runs: the table polls
        assert "badge-job-succeeded" in page.text and "<progress" in page.text
        assert f'href="/ui/models/houses/versions/1">{done["version_id"]}</a>' in page.text
        assert "/cancel" not in page.text  # a viewer is offered no cancel
        refused = await browser.post(f"/ui/jobs/{running['id']}/cancel", data={"csrf": csrf_of(page)})
        assert refused.status_code == 403 and "may not write" in refused.text
        only = await browser.get("/ui/jobs", params={"state": "succeeded"}, headers={"HX-Request": "true"})
        assert "<html" not in only.text and short["id"] in only.text and running["id"] not in only.text
        assert 'hx-trigger="every 2s"' not in only.text  # no job shown runs: no polling
        bad = await browser.get("/ui/jobs", params={"state": "sleeping"})
        assert bad.status_code == 422 and "state" in bad.text

    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "editor"))["key"])
        page = await browser.get("/ui/jobs")
        cancel = f"/ui/jobs/{running['id']}/cancel"
        assert (
            f'action="{cancel}"' in page.text and f'action="/ui/jobs/{short["id"]}/cancel"' not in page.text
        )
        for data in ({}, {"csrf": "forged"}):
            forged = await browser.post(cancel, data=data)
            assert forged.status_code == 403 and "security token" in forged.text
        assert (await client.get(f"/api/ml/training-jobs/{running['id']}")).json()[
            "cancel_requested"
        ] is False
        cancelled = await browser.post(cancel, data={"csrf": csrf_of(page)})
        assert cancelled.status_code == 303 and cancelled.headers["location"] == "/ui/jobs"
        job = await wait_for(client, running["id"], TERMINAL)
        assert job["state"] == "cancelled", job
        page = await browser.get("/ui/jobs")
        assert "badge-job-cancelled" in page.text and 'hx-trigger="every 2s"' not in page.text


async def test_the_datasets_pages_show_the_schema_and_an_editor_trains_from_them(
    make_app: AppFactory, scheduler: str
) -> None:
    client, _, dataset = await app_with_dataset(make_app, scheduler)
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        listed = await browser.get("/ui/datasets")
        assert listed.status_code == 200 and f'href="/ui/datasets/{dataset}">houses</a>' in listed.text
        page = await browser.get(f"/ui/datasets/{dataset}")
        assert page.status_code == 200 and "300 rows" in page.text
        for column in ("x1", "city", "price", "double", "string"):
            assert f">{column}<" in page.text, column
        assert "Train a model" not in page.text and "/train" not in page.text  # not for a viewer
        refused = await browser.post(
            f"/ui/datasets/{dataset}/train",
            data={"csrf": csrf_of(page), "model": "m", "target": "label", "algorithm": "ridge"},
        )
        assert refused.status_code == 403 and "may not write" in refused.text
        assert (await browser.get("/ui/datasets/nope")).status_code == 404

    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "editor"))["key"])
        page = await browser.get(f"/ui/datasets/{dataset}")
        assert "Train a model" in page.text
        form = {"csrf": csrf_of(page), "model": "houses", "target": "label", "algorithm": "random_forest"}
        forged = await browser.post(f"/ui/datasets/{dataset}/train", data={**form, "csrf": "x"})
        assert forged.status_code == 403
        for changes, field in (
            ({"target": "nope"}, "target: the dataset has no column"),
            ({"hyperparameters": "n_trees=5"}, "hyperparameters: n_trees: not a parameter"),
            ({"hyperparameters": "just words"}, "hyperparameters: line 1"),
            ({"algorithm": "magic"}, "algorithm:"),
            ({"model": "no way"}, "model"),
        ):
            bad = await browser.post(f"/ui/datasets/{dataset}/train", data={**form, **changes})
            assert bad.status_code == 422 and field in bad.text, (changes, bad.text[-3000:])
            assert 'role="alert"' in bad.text and "Start training" in bad.text  # the form, filled in again
        assert (await client.get("/api/ml/training-jobs")).json()["total"] == 0
        started = await browser.post(
            f"/ui/datasets/{dataset}/train",
            data={**form, "hyperparameters": "n_estimators=5\n# a comment\nmax_depth = 3\n"},
        )
        assert started.status_code == 303 and started.headers["location"] == "/ui/jobs"
    jobs = (await client.get("/api/ml/training-jobs")).json()["items"]
    assert len(jobs) == 1 and jobs[0]["hyperparameters"] == {"n_estimators": 5, "max_depth": 3}
    assert "web console" in jobs[0]["created_by"]
    assert (await wait_for(client, jobs[0]["id"], TERMINAL))["state"] == "succeeded"
