"""The web page in a real headless Chromium (Debian's package, driven by Playwright): one photo, a batch,
paste, an image URL, live backgrounds, the model picker, history, keyboard, phone width, Chinese/English.

Needs `apt-get install chromium` and `pip install playwright` (never `playwright install`: Debian's
browser is used). Skipped where they are missing, except under CI, where that is a failure.
Set MATTING_SCREENSHOTS=DIR to keep screenshots of the page.
"""

from __future__ import annotations

import base64
import io
import os
import re
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from browser import CHROMIUM, FLAGS, require_browser
from catalog import SAMPLES
from serve.settings import AppArgs, ImageUrlSettings
from serve_harness import running_app

KEY = "browser-test-key-0c4d"

pytestmark = [pytest.mark.timeout(420), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

require_browser()


class PhotoHost(BaseHTTPRequestHandler):
    """Serves one sample photo on loopback, for the page's image-URL field."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = (SAMPLES / "coffee.jpg").read_bytes()
        self.send_response(200 if self.path == "/coffee.jpg" else 404)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def photo_host():
    host = ThreadingHTTPServer(("127.0.0.1", 0), PhotoHost)
    host.daemon_threads = True
    threading.Thread(target=host.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{host.server_port}"
    host.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(KEY + "\n")
    overrides = {"Model_u2netp": {"ray_actor_options": {"num_cpus": 0}},
                 "MattingIngress": {"ray_actor_options": {"num_cpus": 0}}}
    # image_url on, with loopback trusted: the page's URL field fetches from the photo host above.
    args = AppArgs(cpu_threads=2, image_url=ImageUrlSettings(enabled=True, allow_networks=["127.0.0.1/32"]))
    with running_app(args, overrides, env={"MATTING_API_KEYS_FILE": str(keys)}) as base:
        yield base


@pytest.fixture
def browser(tmp_path):
    """Opens pages in fresh Chromium profiles: open(locale=..., width=..., height=...)."""
    from playwright.sync_api import sync_playwright

    contexts = []
    with sync_playwright() as p:
        def open_page(locale="en-US", width=1280, height=1000, mobile=False):
            context = p.chromium.launch_persistent_context(
                str(tmp_path / f"profile{len(contexts)}"), executable_path=CHROMIUM, headless=True, args=FLAGS,
                accept_downloads=True, viewport={"width": width, "height": height}, locale=locale,
                is_mobile=mobile, has_touch=mobile, device_scale_factor=1)
            contexts.append(context)
            return context.new_page()

        try:
            yield open_page
        finally:
            for c in contexts:
                c.close()


@pytest.fixture
def page(browser):
    return browser()


def sign_in(page, server) -> None:
    page.goto(server)
    page.wait_for_selector("#key-box:not([hidden])")  # the server said auth is on
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")


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
    wait_until(page, "!document.querySelector('#single-result').hidden || "
                           "!document.querySelector('#single-error').hidden", timeout=240_000)
    assert page.is_hidden("#single-error"), page.inner_text("#single-error")
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
    assert page.is_visible("tr[data-status=error] button.retry")
    log = page.inner_text("#batch-log")
    assert all(f"{p.name}: ok" in log for p in batch) and "broken.jpg: FAILED" in log
    shot(page, "batch.png", tmp_path)
    with page.expect_download() as download:
        page.click("#batch-zip")
    assert re.fullmatch(r"matting-\d{8}-\d{6}\.zip", download.value.suggested_filename)
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


def decoded(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    return img


def wait_result(page, count: int) -> None:
    """Until the history holds `count` results and the shown one has loaded."""
    wait_until(page, f"document.querySelectorAll('#history li').length === {count} || "
                           "!document.querySelector('#single-error').hidden", timeout=240_000)
    assert page.is_hidden("#single-error"), page.inner_text("#single-error")
    wait_until(page, "document.querySelector('#result-img').complete && "
                           "document.querySelector('#result-img').naturalWidth > 0")


def test_format_picker_is_the_servers_table_and_each_format_downloads_as_it_says(server, page):
    """The picker is built from GET /v1/formats (postproc/formats.py): each entry downloads with its
    extension, with alpha where it keeps it, over white where it does not, as the matte for a matte format."""
    from postproc.formats import DEFAULT, OUTPUT_FORMATS

    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, server)
    wait_until(page, "document.querySelectorAll('#format option').length > 0")
    assert page.eval_on_selector_all("#format option", "os => os.map(o => o.value)") == list(OUTPUT_FORMATS)
    assert page.input_value("#format") == DEFAULT
    assert page.inner_text("#format option[value=png]") == "PNG (transparent)"  # the page's own translation
    photo = SAMPLES / "chelsea.jpg"
    h, w = cv2.imread(str(photo)).shape[:2]
    page.set_input_files("#file-input", str(photo))
    wait_result(page, 1)
    results, transparent_where = 1, None
    # Formats with alpha first: a format without it is checked against where their cut-out was clear.
    for f in sorted(OUTPUT_FORMATS.values(), key=lambda f: not f.alpha):
        page.select_option("#format", f.name)
        if f.matte:  # the matte comes from the server: ask again
            page.click("#rerun")
            results += 1
            wait_result(page, results)
        with page.expect_download() as download:
            page.click("#download-link")
        name = download.value.suggested_filename
        out = decoded(Path(download.value.path()).read_bytes())
        assert name.endswith(f.extension) and out.shape[:2] == (h, w), (f.name, name, out.shape)
        if f.matte:
            assert out.ndim == 2, (f.name, out.shape)
        elif f.alpha:
            assert out.shape[2] == 4 and out[..., 3].min() == 0 and out[..., 3].max() == 255, f.name
            transparent_where = out[..., 3] if transparent_where is None else transparent_where  # the PNG's
        else:
            assert out.ndim == 3 and out.shape[2] == 3, (f.name, out.shape)
            clear = transparent_where == 0  # where the cut-out with alpha was fully transparent: white now
            assert clear.mean() > 0.05 and out[clear].min(axis=1).mean() > 240, f.name
    assert not errors, errors


def test_key_field_follows_hidden_and_the_favicon_is_served(server, page):
    missing = []
    page.on("response", lambda r: r.status >= 400 and missing.append(r.url))
    page.goto(server)
    page.wait_for_selector("#key-box:not([hidden])")
    # With auth off the script sets hidden: the stylesheet must not override it (it once did).
    assert page.evaluate("() => { const k = document.querySelector('#key-box'); k.hidden = true; "
                         "return getComputedStyle(k).display }") == "none"
    icon = page.request.get(f"{server}/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"] == "image/x-icon"
    from PIL import Image

    with Image.open(io.BytesIO(icon.body())) as ico:  # OpenCV reads no .ico; Pillow does
        assert ico.format == "ICO" and (16, 16) in ico.info["sizes"] and (32, 32) in ico.info["sizes"]
    page.wait_for_timeout(500)
    assert not missing, missing  # the page and everything it loads, the favicon included


def test_paste_url_live_background_model_picker_and_history(server, page, photo_host, tmp_path):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, server)
    # The model picker is filled from GET /v1/models once the key is known.
    page.wait_for_selector("#model-box:not([hidden])")
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == ["u2netp"]

    # Paste an image from the clipboard (a real ClipboardEvent carrying a PNG file).
    photo = SAMPLES / "chelsea.jpg"
    png = cv2.imencode(".png", cv2.imread(str(photo)))[1].tobytes()
    page.evaluate("""b64 => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "screenshot.png", {type: "image/png"}));
        document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: dt, bubbles: true}));
    }""", base64.b64encode(png).decode())
    wait_result(page, 1)
    h, w = cv2.imread(str(photo)).shape[:2]
    assert page.eval_on_selector("#result-img", "i => [i.naturalWidth, i.naturalHeight]") == [w, h]

    # A swatch changes the preview at once, with no new request; the download is composed over it.
    requests_seen = []
    page.on("request", lambda r: "/v1" in r.url and r.method == "POST" and requests_seen.append(r.url))
    page.click(".swatch.sw-red")
    assert page.eval_on_selector("#compare", "c => getComputedStyle(c).backgroundColor") == "rgb(229, 57, 53)"
    assert page.is_checked("#bg-mode-color") and requests_seen == []
    with page.expect_download() as download:
        page.click("#download-link")
    out = decoded(Path(download.value.path()).read_bytes())
    assert out.shape[:2] == (h, w)
    assert out.shape[2] == 3 or out[..., 3].min() == 255  # opaque: the colour fills the background
    corner = out[:6, :6, :3].reshape(-1, 3).mean(axis=0)  # BGR
    assert corner[2] > 200 and corner[1] < 90 and corner[0] < 90, corner
    # A picture as the background: shown behind the cut-out at once.
    bg = tmp_path / "bg.png"
    cv2.imwrite(str(bg), np.full((60, 90, 3), (255, 120, 0), np.uint8))
    page.set_input_files("#bg-file", str(bg))
    wait_until(page, "getComputedStyle(document.querySelector('#compare')).backgroundImage.startsWith('url(\"blob:')")
    assert page.is_checked("#bg-mode-image") and requests_seen == []
    page.check("#transparent")
    assert page.eval_on_selector("#compare", "c => c.classList.contains('checker')")

    # An image URL (image_url is on for this server; the page shows the field only then).
    page.fill("#image-url", f"{photo_host}/coffee.jpg")
    page.click("#url-form button[type=submit]")
    wait_result(page, 2)
    assert page.eval_on_selector("#result-img", "i => [i.naturalWidth, i.naturalHeight]") == [600, 400]
    assert any(u.endswith("/v1.0/removebg") for u in requests_seen)

    # The history: newest first, each with a loaded thumbnail; choosing one shows it again.
    thumbs = page.eval_on_selector_all("#history img", "is => is.map(i => [i.alt, i.naturalWidth])")
    assert [t[0] for t in thumbs] == ["coffee.png", "screenshot.png"] and all(t[1] > 0 for t in thumbs), thumbs
    page.click("#history li:nth-child(2) button")
    wait_until(page, f"document.querySelector('#result-img').naturalWidth === {w}")
    assert page.is_visible("#history li.current:nth-child(2)")
    page.click(".swatch.sw-blue")
    shot(page, "desktop.png", tmp_path)
    assert not errors, errors


def test_batch_folder_retry_and_429_waits_for_retry_after(server, page, tmp_path):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, server)
    page.click("#tab-batch")
    # A folder chosen with the folder picker keeps its sub-folders in the names.
    folder = tmp_path / "shoot"
    (folder / "day2").mkdir(parents=True)
    (folder / "a.jpg").write_bytes((SAMPLES / "astronaut.jpg").read_bytes())
    (folder / "day2" / "b.jpg").write_bytes((SAMPLES / "coffee.jpg").read_bytes())
    (folder / "notes.txt").write_text("not an image")
    page.set_input_files("#folder-input", str(folder))
    names = sorted(page.eval_on_selector_all("#batch-table td.name", "ts => ts.map(t => t.textContent)"))
    assert names == ["shoot/a.jpg", "shoot/day2/b.jpg"]
    # A dropped folder is walked through the File System entries API, sub-folders included.
    page.evaluate("""b64 => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const file = (name, type) => ({isFile: true, name, file: ok => ok(new File([bytes], name, {type}))});
        const dir = (name, children) => ({isFile: false, name, createReader() {
            let given = false;
            return {readEntries: ok => { ok(given ? [] : children); given = true; }};
        }});
        const tree = dir("dropped", [file("c.jpg", "image/jpeg"), file("skip.txt", "text/plain"),
                                     dir("inner", [file("d.jpg", "image/jpeg")])]);
        const drop = new Event("drop", {bubbles: true, cancelable: true});
        drop.dataTransfer = {items: [{kind: "file", webkitGetAsEntry: () => tree}], files: []};
        document.querySelector("#drop-batch").dispatchEvent(drop);
    }""", base64.b64encode((SAMPLES / "rocket.jpg").read_bytes()).decode())
    wait_until(page, "document.querySelectorAll('#batch-table tbody tr').length === 4")
    names = sorted(page.eval_on_selector_all("#batch-table td.name", "ts => ts.map(t => t.textContent)"))
    assert names == ["dropped/c.jpg", "dropped/inner/d.jpg", "shoot/a.jpg", "shoot/day2/b.jpg"]

    # The server's answers for two requests are replaced: the first by a 429 with Retry-After: 1,
    # the second by a 503. Everything else reaches the real server.
    seen, answered = [], []

    def route(r):
        seen.append(time.monotonic())
        if len(seen) == 1:
            answered.append(429)
            r.fulfill(status=429, headers={"Retry-After": "1", "Content-Type": "application/json"},
                      body='{"error": {"code": "rate_limited", "message": "slow down"}}')
        elif len(seen) == 2:
            answered.append(503)
            r.fulfill(status=503, headers={"Content-Type": "application/json"},
                      body='{"error": {"code": "overloaded", "message": "busy"}}')
        else:
            r.continue_()

    page.route("**/v1/matte", route)
    page.click("#batch-start")
    wait_until(page, "document.querySelectorAll('tr[data-status=done], tr[data-status=error]').length === 4",
                           timeout=300_000)
    assert answered == [429, 503]
    assert page.locator("tr[data-status=done]").count() == 3
    log = page.inner_text("#batch-log")
    assert "HTTP 429, waiting 1 s (Retry-After) and retrying" in log and "overloaded: busy" in log
    # The 429'd file was sent again no sooner than Retry-After: one of the later requests came ≥ 1 s after it.
    assert max(seen[1:]) - seen[0] >= 1.0
    page.click("tr[data-status=error] button.retry")  # the 503'd file, on its own
    wait_until(page, "document.querySelectorAll('tr[data-status=done]').length === 4", timeout=180_000)
    page.click(".swatch.sw-green")  # a background chosen after processing still reaches every file in the ZIP
    with page.expect_download() as download:
        page.click("#batch-zip")
    assert re.fullmatch(r"matting-\d{8}-\d{6}\.zip", download.value.suggested_filename)
    with zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes())) as z:
        assert sorted(z.namelist()) == ["dropped/c.png", "dropped/inner/d.png", "matting-log.txt", "shoot/a.png",
                                        "shoot/day2/b.png"]
        a = decoded(z.read("shoot/a.png"))
        assert a.shape[:2] == (512, 512) and (a.shape[2] == 3 or a[..., 3].min() == 255)
        assert np.abs(a[:4, :4, :3].reshape(-1, 3).astype(int) - (0x47, 0xa0, 0x43)).max() <= 3  # BGR #43a047
    assert not errors, errors


def test_keyboard_and_phone_width(server, browser, tmp_path):
    page = browser(width=375, height=812, mobile=True)
    sign_in(page, server)
    # Nothing is wider than the phone's screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    for sel in ("#drop-single", "#tab-batch", "#params", "#key-box"):
        box = page.locator(sel).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375, (sel, box)
    shot(page, "phone.png", tmp_path)
    # Keyboard: the tabs answer the arrow keys; a drop zone opens the file dialog on Enter.
    page.focus("#tab-single")
    page.keyboard.press("ArrowRight")
    assert page.is_visible("#batch") and page.evaluate("document.activeElement.id") == "tab-batch"
    page.keyboard.press("ArrowLeft")
    assert page.is_visible("#single") and page.evaluate("document.activeElement.id") == "tab-single"
    # Focus and key in one call; a generous wait: on a loaded 2-core box the renderer can take a while.
    with page.expect_file_chooser(timeout=90_000) as chooser:
        page.locator("#drop-single").press("Enter")
    chooser.value.set_files(str(SAMPLES / "chelsea.jpg"))
    wait_result(page, 1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # the result fits too
    # The before/after slider is a focusable range: the arrow keys move the divider.
    page.focus("#compare-slider")
    page.keyboard.press("ArrowRight")
    assert page.eval_on_selector("#compare", "c => c.style.getPropertyValue('--pos')") == "51%"
    shot(page, "phone-result.png", tmp_path)


def test_chinese_from_the_browser_language_with_a_switch(server, browser):
    zh = browser(locale="zh-CN")
    zh.goto(server)
    zh.wait_for_selector("#key-box:not([hidden])")
    assert zh.evaluate("document.documentElement.lang") == "zh-CN"
    assert zh.inner_text("#tab-batch") == "批量" and zh.inner_text("#lang") == "English"
    assert zh.inner_text("#batch-summary") == "没有文件"
    zh.click("#lang")
    assert zh.inner_text("#tab-batch") == "Batch" and zh.inner_text("#batch-summary") == "no files"
    zh.reload()
    zh.wait_for_selector("#key-box:not([hidden])")
    assert zh.inner_text("#tab-batch") == "Batch"  # the choice is kept
    en = browser(locale="en-US")
    en.goto(server)
    assert en.inner_text("#tab-batch") == "Batch" and en.inner_text("#lang") == "中文"
