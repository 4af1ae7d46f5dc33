"""What every console page shares: templates, the signed-in visitor, CSRF checks, the cookie and the
`PageRoute` that answers a page's errors as HTML (a sign-in redirect, or an error page)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse, Response

from mlplatform.api.errors import STATUS
from mlplatform.api.pipeline import client_address
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.clock import as_utc
from mlplatform.errors import DomainError, Forbidden, Unauthorized
from mlplatform.platform import Platform
from mlplatform.ui.assets import Assets
from mlplatform.ui.sessions import ConsoleSession

COOKIE = "mlp_session"
SIGN_IN_COOKIE = "mlp_sign_in"  # the sign-in form's own CSRF token (double submit: no session exists yet)
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
TEMPLATES = Path(__file__).parent / "templates"
# Pages load nothing from elsewhere, run no inline script and may not be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> Markup:
    if value is None:
        return Markup('<span class="muted">never</span>')
    at = as_utc(value)
    return Markup('<time datetime="{}">{}</time>').format(
        at.isoformat(), at.strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def build_templates() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["quote"] = lambda value: quote(str(value), safe="")
    return environment


# Why a visitor is on the sign-in page: the page shows the text of a known code, never text from the URL.
SIGN_IN_REASONS = {
    "signed-out": "You signed out.",
    "revoked": "Your session ended: its API key was revoked.",
    "expired": "Your session ended: its API key expired.",
    "key-gone": "Your session ended: its API key no longer exists.",
}


class SignInRequired(Exception):
    """No live session: the visitor is sent to the sign-in page (then back). `reason`: a SIGN_IN_REASONS
    code, for a session that was ended rather than never begun or timed out."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "sign in to continue")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Visit:
    """One request of a signed-in visitor."""

    request: Request
    platform: Platform
    session: ConsoleSession
    principal: Principal

    @property
    def actor(self) -> str:
        """Who acted, as the histories and audit entries of console actions name them."""
        return f"{self.principal.owner} ({self.principal.key_id}, web console)"

    @property
    def partial(self) -> bool:
        """An htmx refresh wants the page's live fragment; a history restore (Back) wants the whole page."""
        headers = self.request.headers
        return headers.get("hx-request") == "true" and headers.get("hx-history-restore-request") != "true"

    def can(self, permission: Permission) -> bool:
        return self.principal.can(permission)

    def require(self, permission: Permission) -> None:
        """The server-side check behind every action a page offers (the page hides what a role may not do);
        the request was counted against the key's rate limit once already, by `visit`."""
        self.platform.auth.check(self.principal, permission)

    async def check_csrf(self) -> None:
        """Every POST carries the session's token, as a form field or (htmx) a header."""
        presented = self.request.headers.get(CSRF_HEADER)
        if presented is None:
            form = await self.request.form()
            value = form.get(CSRF_FIELD)
            presented = value if isinstance(value, str) else None
        if not self.session.csrf_matches(presented):
            raise CsrfRefused()

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return render(self.request, template, status_code, visit=self, **context)


class CsrfRefused(Forbidden):
    """A form without this session's CSRF token (an old page, or another site)."""

    def __init__(self) -> None:
        super().__init__(
            "the form's security token is missing or out of date: reload the page and try again",
            details={"field": CSRF_FIELD, "problem": "missing or does not match the session"},
        )


@dataclass(frozen=True, slots=True)
class Console:
    """What `create_app` builds once for the console: its compiled templates and static files."""

    templates: Environment
    assets: Assets


def build_console() -> Console:
    return Console(templates=build_templates(), assets=Assets())


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    console: Console = request.app.state.ui
    page = console.templates.get_template(template).render(
        request=request, missing_assets=console.assets.missing(), **context
    )
    return HTMLResponse(page, status_code=status_code, headers=SECURITY_HEADERS)


def redirect(location: str) -> Response:
    """303 See Other, with a body of its own (a link) for clients that do not follow it."""
    body = Markup('<!doctype html><title>See other</title><a href="{}">Continue</a>\n').format(location)
    return Response(
        body.encode(), 303, headers={**SECURITY_HEADERS, "Location": location}, media_type="text/html"
    )


def secure_cookie(platform: Platform) -> bool:
    configured = platform.settings.ui.secure_cookie
    return not platform.settings.development if configured is None else configured


def set_session_cookie(response: Response, platform: Platform, session_id: str) -> None:
    response.set_cookie(
        COOKIE, session_id, path="/ui", httponly=True, samesite="strict", secure=secure_cookie(platform)
    )


def clear_session_cookie(response: Response, platform: Platform) -> None:
    response.delete_cookie(
        COOKIE, path="/ui", httponly=True, samesite="strict", secure=secure_cookie(platform)
    )


async def visit(request: Request) -> Visit:
    """The signed-in visitor, or `SignInRequired`. The key behind the session is looked up by id on every
    request (a revoked key ends the session), counted against its rate limit and checked for `read`."""
    platform: Platform = request.app.state.platform
    sessions = platform.sessions
    session = await sessions.find(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired()
    try:
        principal = await platform.auth.principal_of(session.key_id)
    except Unauthorized as exc:
        await sessions.end(session.id)
        reason = next((r for r in ("revoked", "expired") if r in exc.message), "key-gone")
        raise SignInRequired(reason) from None
    decision = await platform.auth.admit(principal, Permission.READ)
    request.scope["state"]["rate_headers"] = decision.headers() if decision is not None else []
    return Visit(request=request, platform=platform, session=session, principal=principal)


VisitDep = Annotated[Visit, Depends(visit)]


def sign_in_location(request: Request, reason: str | None) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = "/ui/login?next=" + quote(here if request.method == "GET" else "/ui/models", safe="")
    return location + ("&reason=" + quote(reason, safe="") if reason else "")


def status_of(exc: DomainError) -> int:
    """The status the API answers the error with (`api.errors.STATUS`)."""
    return next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status, status=status, message=message)


class PageRoute(APIRoute):
    """A console route: a missing session redirects to sign-in, and errors are pages, not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as exc:
                response: Response = redirect(sign_in_location(request, exc.reason))
                if exc.reason:
                    clear_session_cookie(response, request.app.state.platform)
                return response
            except DomainError as exc:
                return error_page(request, status_of(exc), exc.message)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors()[:5]
                )
                return error_page(request, 422, f"invalid request: {problems}")

        return page


def client_of(request: Request) -> str:
    return client_address(request.scope)
