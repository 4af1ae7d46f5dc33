"""What the console's browser tests share: Debian's Chromium through Playwright, signing in, API keys made
through the API, and `check_page` (a screenshot for the README and axe-core's serious or critical
violations, which fail the test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import REPO, ServerProcess

StartServer = Callable[..., ServerProcess]
CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / ".cache" / "ui-assets" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 860}


def require_browser() -> None:
    """Fail loudly (never skip) when the browser or axe-core is missing: `make test` installs both."""
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: `make chromium` installs Debian's package", pytrace=False)
    if not AXE.exists():
        pytest.fail(f"no {AXE}: `make ui-assets` installs axe-core", pytrace=False)


def create_key(base_url: str, admin_key: str, role: str, owner: str | None = None) -> str:
    created = httpx.post(
        f"{base_url}/api/admin/api-keys",
        json={"name": f"console {role}", "role": role, "owner": owner or f"ada-{role}"},
        headers={"X-API-Key": admin_key},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


@dataclass
class Browser:
    """One signed-out page in a fresh context; `errors` collects the page's uncaught script errors."""

    page: Any
    base_url: str
    errors: list[str] = field(default_factory=list)

    def sign_in(self, key: str, path: str = "/ui/models") -> None:
        from playwright.sync_api import expect

        self.page.goto(f"{self.base_url}{path}")
        self.page.get_by_label("API key").fill(key)
        self.page.keyboard.press("Enter")
        expect(self.page).to_have_url(f"{self.base_url}{path}")


@contextmanager
def chromium(base_url: str) -> Iterator[Browser]:
    """Headless Debian Chromium. axe-core is injected as a script, so the context bypasses the pages'
    own policy (which allows no script but their own files). Script errors on the page fail the test."""
    from playwright.sync_api import sync_playwright

    require_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT, bypass_csp=True)
            found = Browser(context.new_page(), base_url)
            found.page.on("pageerror", lambda exc: found.errors.append(str(exc)))
            yield found
            assert not found.errors, found.errors
        finally:
            browser.close()


def check_page(page: Any, name: str) -> None:
    """A screenshot for the README, and axe-core's serious and critical violations, which fail the test."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    report = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}" for v in bad
    ]
    assert not bad, f"axe-core on the {name} page:\n" + "\n".join(report)
