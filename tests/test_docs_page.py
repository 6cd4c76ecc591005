"""/docs and /redoc render in a real headless Chromium with every host but 127.0.0.1 unreachable: the
API reference needs no CDN (service/docs.py)."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest
from helpers import Server, tiny_model_args

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory):
    srv = Server(["--data-dir", str(tmp_path_factory.mktemp("data")), *tiny_model_args(tiny_llama)])
    yield srv
    srv.stop()


def rendered(url: str, tmp_path) -> str:
    """The page's DOM after its scripts ran, in a Chromium that can reach nothing but 127.0.0.1."""
    out = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
@pytest.mark.parametrize(("page", "marker"), [("/docs", 'class="opblock'), ("/redoc", "/v2/rerank")])
def test_api_reference_renders_offline(server, page, marker, tmp_path):
    html = httpx.get(server.url + page).text
    assert "cdn." not in html and "googleapis" not in html  # every asset is served here
    dom = rendered(server.url + page, tmp_path)
    assert marker not in html and marker in dom and "/v1/search" in dom, dom[-2000:]  # drawn by its scripts
