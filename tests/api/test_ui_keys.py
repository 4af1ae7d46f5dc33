"""The console's API keys page through `create_app`: admins only, a new key shown once, bad fields named,
revoke (CSRF, and a revoked key's sessions end, the signed-in admin's own included)."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY, AppFactory, two_instances
from tests.api.test_ui import browser_of, create_key, csrf_of, sign_in

NEW_KEY = re.compile(r'id="new-key" class="secret" value="([^"]+)"')


async def test_only_an_admin_sees_the_page_or_its_navigation(make_app: AppFactory) -> None:
    client, platform = await make_app()
    admin = await create_key(client, "admin")
    for role in ("viewer", "predictor", "editor"):
        async with browser_of(client) as browser:
            await sign_in(browser, (await create_key(client, role))["key"])
            models = await browser.get("/ui/models")
            assert models.status_code == 200 and "/ui/api-keys" not in models.text, role
            page = await browser.get("/ui/api-keys")
            assert page.status_code == 403 and "may not admin" in page.text, role
            forged = await browser.post(
                "/ui/api-keys", data={"csrf": csrf_of(models), "name": "mine", "owner": role, "role": "admin"}
            )
            assert forged.status_code == 403, role
            revoke = await browser.post(f"/ui/api-keys/{admin['id']}/revoke", data={"csrf": csrf_of(models)})
            assert revoke.status_code == 403, role
    assert all(k.name != "mine" for k in await platform.auth.list_keys(include_revoked=True))
    assert (await platform.auth.get_key(admin["id"])).revoked_at is None
    async with browser_of(client) as browser:
        await sign_in(browser, admin["key"])
        models = await browser.get("/ui/models")
        assert '<a href="/ui/api-keys">API keys</a>' in models.text
        page = await browser.get("/ui/api-keys")
        assert page.status_code == 200 and 'aria-current="page">API keys' in page.text
        assert "your session" in page.text and admin["key"] not in page.text
        for role in ("viewer", "predictor", "editor", "admin"):
            assert f"<td>{role}</td>" in page.text
        assert f"<code>{admin['prefix']}…</code>" in page.text


async def test_a_created_key_is_shown_once_and_works(make_app: AppFactory) -> None:
    client, platform = await make_app()
    admin = await create_key(client, "admin")
    async with browser_of(client) as browser:
        await sign_in(browser, admin["key"])
        page = await browser.get("/ui/api-keys")
        form = {
            "csrf": csrf_of(page),
            "name": "fraud-service prod",
            "owner": "fraud team",
            "role": "predictor",
            "expires_in_days": "30",
            "rate_limit": "200/second",
        }
        for data in ({**form, "csrf": ""}, {**form, "csrf": "forged"}):
            forged = await browser.post("/ui/api-keys", data=data)
            assert forged.status_code == 403 and "security token" in forged.text
        created = await browser.post("/ui/api-keys", data=form)
        assert created.status_code == 201, created.text[-2000:]
        assert created.headers["cache-control"] == "no-store"
        found = NEW_KEY.search(created.text)
        assert found and "shown this once" in created.text
        key = found.group(1)
        stored = next(k for k in await platform.auth.list_keys() if k.name == "fraud-service prod")
        assert (stored.owner, stored.role.value, stored.rate_limit) == (
            "fraud team",
            "predictor",
            "200/second",
        )
        assert stored.expires_at is not None and key.startswith(stored.prefix)
        works = await client.get("/api/ml/models", headers={"X-API-Key": key})
        assert works.status_code == 200
        again = await browser.get("/ui/api-keys")
        assert key not in again.text and "fraud-service prod" in again.text  # never shown again
        assert f"<code>{stored.prefix}…</code>" in again.text


async def test_bad_fields_are_named_and_the_form_kept(make_app: AppFactory) -> None:
    client, platform = await make_app()
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "admin"))["key"])
        token = csrf_of(await browser.get("/ui/api-keys"))
        form = {"csrf": token, "name": "batch job", "owner": "ops", "role": "viewer"}
        for changes, message in (
            ({"name": "no/slash"}, "name: Value error, 1-128 characters"),
            ({"role": "root"}, "role: Input should be"),
            ({"expires_in_days": "0"}, "expires_in_days: Input should be greater than or equal to 1"),
            ({"expires_in_days": "soon"}, "expires_in_days: Input should be a valid integer"),
            ({"expires_at": "2027-01-01T00:00:00"}, "expires_at: Value error, must include a timezone"),
            ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at must be in the future"),
            ({"expires_at": "2031-01-01T00:00:00Z", "expires_in_days": "3"}, "not both"),
            ({"rate_limit": "lots"}, "rate_limit"),
        ):
            bad = await browser.post("/ui/api-keys", data={**form, **changes})
            assert bad.status_code == 422, (changes, bad.status_code)
            assert message in bad.text, (changes, bad.text[-3000:])
            assert 'role="alert"' in bad.text and 'value="ops"' in bad.text  # the form, filled in
            assert "new-key" not in bad.text
        at = await browser.post("/ui/api-keys", data={**form, "expires_at": "2031-01-01T00:00:00+02:00"})
        assert at.status_code == 201
    stored = [k for k in await platform.auth.list_keys() if k.name == "batch job"]
    assert len(stored) == 1 and stored[0].expires_at is not None
    assert stored[0].expires_at.isoformat() == "2030-12-31T22:00:00+00:00"


async def test_revoking_a_key_ends_its_sessions_and_revoking_ones_own_signs_out(make_app: AppFactory) -> None:
    client, platform = await make_app()
    admin = await create_key(client, "admin")
    editor = await create_key(client, "editor")
    async with browser_of(client) as as_admin, browser_of(client) as as_editor:
        await sign_in(as_admin, admin["key"])
        await sign_in(as_editor, editor["key"])
        assert (await as_editor.get("/ui/models")).status_code == 200
        page = await as_admin.get("/ui/api-keys")
        action = f'action="/ui/api-keys/{editor["id"]}/revoke"'
        assert action in page.text and "Revoke key ui editor" in page.text
        forged = await as_admin.post(f"/ui/api-keys/{editor['id']}/revoke", data={"csrf": "forged"})
        assert forged.status_code == 403
        assert (await platform.auth.get_key(editor["id"])).revoked_at is None
        revoked = await as_admin.post(f"/ui/api-keys/{editor['id']}/revoke", data={"csrf": csrf_of(page)})
        assert revoked.status_code == 303 and revoked.headers["location"].startswith(
            "/ui/api-keys?revoked=true"
        )
        assert (await platform.auth.get_key(editor["id"])).revoked_at is not None
        ended = await as_editor.get("/ui/models")
        assert ended.status_code == 303 and "reason=revoked" in ended.headers["location"]
        assert (await client.get("/api/ml/models", headers={"X-API-Key": editor["key"]})).status_code == 401

        listed = await as_admin.get("/ui/api-keys")
        assert action not in listed.text and "ui editor" not in listed.text  # in use only, by default
        everything = await as_admin.get("/ui/api-keys", params={"revoked": "true"})
        row = everything.text[everything.text.index(f'id="key-{editor["id"]}"') :]
        assert "<time" in row[: row.index("</tr>")].split("<td>")[-2]  # the revoked column has a time
        assert "You signed in with it: this ends your session." in everything.text

        own = await as_admin.post(f"/ui/api-keys/{admin['id']}/revoke", data={"csrf": csrf_of(page)})
        assert own.status_code == 303
        signed_out = await as_admin.get(own.headers["location"])
        assert signed_out.status_code == 303 and "reason=revoked" in signed_out.headers["location"]
        login = await as_admin.get(signed_out.headers["location"])
        assert "its API key was revoked" in login.text


async def test_a_visitor_without_a_session_is_sent_to_sign_in(make_app: AppFactory) -> None:
    client, _ = await make_app()
    async with httpx.AsyncClient(transport=client._transport, base_url="http://test") as browser:
        page = await browser.get("/ui/api-keys")
        assert page.status_code == 303 and page.headers["location"].startswith(
            "/ui/login?next=%2Fui%2Fapi-keys"
        )
        post = await browser.post("/ui/api-keys", data={"name": "x", "owner": "y", "role": "admin"})
        assert post.status_code == 303


async def test_the_configured_bootstrap_key_is_said_to_be_unlisted(make_app: AppFactory) -> None:
    client, _ = await make_app()
    async with browser_of(client) as browser:
        await sign_in(browser, ADMIN_KEY)
        page = await browser.get("/ui/api-keys")
        assert page.status_code == 200 and "No key is stored in use." in page.text
        assert "You signed in with the configured bootstrap key" in page.text


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_key_revoked_on_one_instance_ends_its_sessions_on_the_other(
    make_app: AppFactory, postgres_url: str, redis_url: str
) -> None:
    (first, _), (second, _) = await two_instances(make_app, postgres_url, redis_url)
    admin = await create_key(first, "admin")
    editor = await create_key(first, "editor")
    async with browser_of(first) as on_first, browser_of(second) as on_second:
        await sign_in(on_first, admin["key"])
        signed = await sign_in(on_second, editor["key"])
        assert signed.status_code == 303
        assert (await on_second.get("/ui/models")).status_code == 200
        page = await on_first.get("/ui/api-keys")
        assert "ui editor" in page.text
        revoked = await on_first.post(f"/ui/api-keys/{editor['id']}/revoke", data={"csrf": csrf_of(page)})
        assert revoked.status_code == 303
        async with asyncio.timeout(2):  # the change reaches the other instance through Redis
            while (ended := await on_second.get("/ui/models")).status_code == 200:
                await asyncio.sleep(0.02)
        assert ended.status_code == 303 and "reason=revoked" in ended.headers["location"]
