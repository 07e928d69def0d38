"""The web page in a real headless Chromium (Debian's package, driven by Playwright): one photo, then a batch.

Needs `apt-get install chromium` and `pip install playwright` (never `playwright install`: Debian's
browser is used). Skipped where they are missing, except under CI, where that is a failure.
Set MATTING_SCREENSHOTS=DIR to keep screenshots of the page.
"""

from __future__ import annotations

import importlib.util
import io
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from catalog import SAMPLES
from serve.settings import AppArgs
from serve_harness import running_app

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
KEY = "browser-test-key-0c4d"

pytestmark = [pytest.mark.timeout(420), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

_missing = [what for what, ok in (
    ("Debian's chromium (apt-get install chromium)", Path(CHROMIUM).exists()),
    ("playwright (pip install playwright)", importlib.util.find_spec("playwright") is not None)) if not ok]
if _missing and os.environ.get("CI") != "true":
    pytest.skip(f"browser test needs {', '.join(_missing)}", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(KEY + "\n")
    overrides = {"Model_u2netp": {"ray_actor_options": {"num_cpus": 0}},
                 "MattingIngress": {"ray_actor_options": {"num_cpus": 0}}}
    with running_app(AppArgs(cpu_threads=2), overrides, env={"MATTING_API_KEYS_FILE": str(keys)}) as base:
        yield base


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            accept_downloads=True, viewport={"width": 1280, "height": 1000})
        try:
            yield context.new_page()
        finally:
            context.close()


def shot(page, name: str, tmp_path: Path) -> None:
    target = Path(os.environ.get("MATTING_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / name), full_page=True)


def watch_csp(page) -> list[str]:
    """Content-Security-Policy violations the page reports (the server sends a strict CSP; issue 16)."""
    violations: list[str] = []
    page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                         "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    return violations


def wait_until(page, expression: str, timeout: float = 60_000) -> None:
    """page.wait_for_function, by polling page.evaluate: Playwright's wait_for_function compiles its
    expression in the page (new Function), which the server's CSP rightly refuses ('unsafe-eval')."""
    import time

    end = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > end:
            raise TimeoutError(f"not true within {timeout / 1000:g} s: {expression}")
        page.wait_for_timeout(200)


def csp_violations(page, console: list[str]) -> list[str]:
    return list(page.evaluate("window.__csp || []")) + console


def rgba(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.ndim == 3 and img.shape[2] == 4
    fg = float((img[..., 3] > 127).mean())
    assert 0.01 < fg < 0.99, f"no subject in the cut-out (foreground {fg:.3f})"
    return img


def test_single_photo_then_a_batch_zip(server, page, tmp_path):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    csp = watch_csp(page)
    page.goto(server)
    page.wait_for_selector("#key-box:not([hidden])")  # the server said auth is on
    assert "u2netp" in page.inner_text("#server-status")
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")

    # One real photo, with a parameter changed: the cut-out appears over the checkerboard.
    photo = SAMPLES / "chelsea.jpg"
    h, w = cv2.imread(str(photo)).shape[:2]
    page.fill("#erode", "2")
    page.dispatch_event("#erode", "input")
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector("#single-result:not([hidden])", timeout=180_000)
    wait_until(page, "document.querySelector('#result-img').complete && "
                     "document.querySelector('#result-img').naturalWidth > 0")
    assert page.eval_on_selector("#result-img", "i => [i.naturalWidth, i.naturalHeight]") == [w, h]
    assert f"{w}×{h}" in page.inner_text("#single-info")
    assert page.is_hidden("#single-error")
    shot(page, "single.png", tmp_path)
    with page.expect_download() as download:
        page.click("#download-link")
    assert download.value.suggested_filename == "chelsea.png"
    assert rgba(Path(download.value.path()).read_bytes()).shape[:2] == (h, w)

    # A preset fills in what the user has not touched (erode stays at the user's 2); reset clears it.
    page.select_option("#preset", "avatar")
    assert not page.is_checked("#transparent") and page.input_value("#background") == "#f0f0f0"
    assert page.input_value("#alpha_threshold") == "6" and page.input_value("#erode") == "2"
    page.click("#reset")
    assert page.is_checked("#transparent") and page.input_value("#erode") == "0"

    # A small batch, one file corrupt: every good file ends in the ZIP, the bad one in the log.
    page.click("#tab-batch")
    batch = [SAMPLES / n for n in ("astronaut.jpg", "coffee.jpg", "rocket.jpg")]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((SAMPLES / "camera.jpg").read_bytes()[:2000])
    page.set_input_files("#batch-input", [str(p) for p in batch] + [str(broken)])
    assert page.locator("#batch-table tbody tr").count() == 4
    page.click("#batch-start")
    wait_until(page, "document.querySelectorAll('#batch-table tr[data-status=done], "
                     "#batch-table tr[data-status=error]').length === 4", timeout=300_000)
    assert page.locator("tr[data-status=done]").count() == 3
    assert "undecodable" in page.inner_text("tr[data-status=error] td.status")
    log = page.inner_text("#batch-log")
    assert all(f"{p.name}: ok" in log for p in batch) and "broken.jpg: FAILED" in log
    shot(page, "batch.png", tmp_path)
    with page.expect_download() as download:
        page.click("#batch-zip")
    assert download.value.suggested_filename == "matting-batch.zip"
    with zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes())) as z:
        names = sorted(z.namelist())
        assert names == ["astronaut.png", "coffee.png", "matting-log.txt", "rocket.png"]
        for p in batch:
            assert rgba(z.read(p.stem + ".png")).shape[:2] == cv2.imread(str(p)).shape[:2]
        assert "broken.jpg: FAILED" in z.read("matting-log.txt").decode()
    assert not errors, errors
    assert not csp_violations(page, csp)  # the page works whole under the server's CSP


def test_api_docs_render_from_vendored_swagger_ui(server, page, tmp_path):
    errors, external = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: r.url.startswith((server, "data:")) or external.append(r.url))
    csp = watch_csp(page)
    page.goto(f"{server}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)
    assert "unet-matting" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-summary-path[data-path='/v1/matte']")
    shot(page, "docs.png", tmp_path)
    page.click(".opblock-summary-path[data-path='/v1/matte']")  # expand an operation: more of the UI runs
    page.wait_for_selector(".opblock.is-open .parameters")
    assert not external, external  # Swagger UI is vendored: nothing from a CDN
    assert not errors, errors
    assert not csp_violations(page, csp)  # Swagger UI works whole under the server's CSP
