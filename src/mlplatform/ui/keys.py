"""`/ui/api-keys` (admins only): the keys, a form that creates one (shown once, on the answer to the form) and
Revoke; a revoked key's console sessions end at their next request."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query
from pydantic import ValidationError
from starlette.responses import Response

from mlplatform.auth.schemas import ApiKeyCreate, ApiKeyCreated, Permission, Role
from mlplatform.clock import utcnow
from mlplatform.errors import InvalidInput
from mlplatform.ui.console import PageRoute, Visit, VisitDep, redirect

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
ROLES = tuple(r.value for r in Role)
FIELDS = ("name", "owner", "role", "expires_in_days", "expires_at", "rate_limit")
EMPTY_FORM = {**dict.fromkeys(FIELDS, ""), "role": Role.VIEWER.value}


async def _keys_page(
    visit: Visit,
    *,
    show_revoked: bool,
    form: dict[str, str],
    error: str | None = None,
    created: ApiKeyCreated | None = None,
    status_code: int = 200,
) -> Response:
    keys = await visit.platform.auth.list_keys(include_revoked=show_revoked)
    return visit.render(
        "api_keys.html",
        status_code,
        keys=keys,
        show_revoked=show_revoked,
        roles=ROLES,
        form=form,
        error=error,
        created=created,
        now=utcnow(),
    )


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}" for e in exc.errors()[:5])


def parse_key_form(form: dict[str, str]) -> ApiKeyCreate:
    """The form's fields as `POST /api/admin/api-keys` takes them (an empty optional field is absent)."""
    if form["expires_in_days"] and form["expires_at"]:
        raise InvalidInput(
            "expires_in_days: give the days or the date it expires at, not both",
            details=[{"field": "expires_in_days", "problem": "given with expires_at"}],
        )
    body = {k: v for k, v in form.items() if v}
    return ApiKeyCreate.model_validate(body)


@router.get("/api-keys")
async def keys_page(visit: VisitDep, revoked: Annotated[bool, Query()] = False) -> Response:
    visit.require(Permission.ADMIN)
    return await _keys_page(visit, show_revoked=revoked, form=EMPTY_FORM)


@router.post("/api-keys")
async def create_key(
    visit: VisitDep,
    name: Annotated[str, Form(max_length=256)] = "",
    owner: Annotated[str, Form(max_length=256)] = "",
    role: Annotated[str, Form(max_length=32)] = "",
    expires_in_days: Annotated[str, Form(max_length=16)] = "",
    expires_at: Annotated[str, Form(max_length=64)] = "",
    rate_limit: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    await visit.check_csrf()
    visit.require(Permission.ADMIN)  # as POST /api/admin/api-keys
    form = {
        "name": name.strip(),
        "owner": owner.strip(),
        "role": role,
        "expires_in_days": expires_in_days.strip(),
        "expires_at": expires_at.strip(),
        "rate_limit": rate_limit.strip(),
    }
    try:
        created = await visit.platform.auth.create_key(parse_key_form(form))
    except ValidationError as exc:
        return await _keys_page(visit, show_revoked=False, form=form, error=_problems(exc), status_code=422)
    except InvalidInput as exc:
        return await _keys_page(visit, show_revoked=False, form=form, error=exc.message, status_code=422)
    # The key is in this answer only (never stored, never in a URL): no redirect, and no-store as every page.
    return await _keys_page(visit, show_revoked=False, form=EMPTY_FORM, created=created, status_code=201)


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(key_id: str, visit: VisitDep) -> Response:
    await visit.check_csrf()
    visit.require(Permission.ADMIN)  # as DELETE /api/admin/api-keys/{id}
    await visit.platform.auth.revoke_key(key_id[:64])
    # Revoking the key of this very session ends it: the next page sends the visitor to sign in.
    return redirect(f"/ui/api-keys?revoked=true#key-{quote(key_id[:64], safe='')}")
