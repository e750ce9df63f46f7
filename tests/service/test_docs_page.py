"""/docs in a real browser with no way out to the internet: Swagger UI's files come from this service (the
installed flask-swagger-ui package), so the page renders the operations on a machine without internet.

Headless Chromium (Debian's `chromium`; `.ci/run` installs it) loads /docs from a real gunicorn with every host
but 127.0.0.1 unresolvable and every connection sent to a dead proxy. Without chromium the test is skipped
with its reason, unless CI_REQUIRE_BROWSER=1 (set by .ci/run), where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from support import serve

from store import upgrade

pytestmark = pytest.mark.slow


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "no chromium on PATH (apt-get install chromium): the /docs page is not checked in a browser"
        if os.environ.get("CI_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + ", and CI_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    return path


def offline_chromium(browser: str, profile, *args: str) -> list[str]:
    """Chromium that can reach 127.0.0.1 and nothing else: other names do not resolve, and any connection
    that is not to 127.0.0.1 goes to a proxy on a port where nothing listens."""
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1", "--virtual-time-budget=10000",
            *args]


def test_the_docs_page_renders_every_operation_without_internet(tmp_path):
    browser = chromium()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    (tmp_path / "models").mkdir()  # no model: /docs needs none
    with serve(url, tmp_path / "models", tmp_path, workers=1) as server:
        page = f"{server.base}/docs"
        dom = subprocess.run(offline_chromium(browser, tmp_path / "profile", "--dump-dom", page),
                             capture_output=True, text=True, timeout=120)
        shot = tmp_path / "docs.png"
        subprocess.run(offline_chromium(browser, tmp_path / "profile-shot", f"--screenshot={shot}",
                                        "--window-size=1280,1600", page),
                       capture_output=True, text=True, timeout=120)
    html = dom.stdout
    assert dom.returncode == 0, dom.stderr[-2000:]
    # Swagger UI ran (its script came from this service) and rendered the document's operations
    assert 'class="swagger-ui"' in html and "opblock" in html, html[:2000]
    for path in ("/v1/decisions", "/v1/decisions/{decision_id}/outcome", "/v1/events", "/v1/offers",
                 "/v1/customers/{customer_id}/decisions", "/v1/experiments/{name}/results"):
        assert f">{path}<" in html.replace("\u200b", "") or path in html, path
    assert "retention-offers decision API" in html
    assert shot.exists() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    keep = os.environ.get("RETENTION_DOCS_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
