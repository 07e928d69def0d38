"""The two HTML pages (`matting eval --report`, `matting report --html`) in headless Debian Chromium, driven
by Playwright as tests/test_serve_browser.py does: each renders offline with every picture loaded.

Skipped where chromium or playwright is missing, except under CI, where that is a failure.
Set MATTING_SCREENSHOTS=DIR to keep screenshots of the pages.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser import CHROMIUM, FLAGS, require_browser
from pipelines.cli import main
from test_evaluate import make_set
from test_outputs_cli import make_run
from postproc import PostprocParams


pytestmark = [pytest.mark.timeout(420), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

require_browser()


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            # Offline: any request that is not a local file fails the test below.
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                          else route.abort())
            yield context.new_page()
        finally:
            browser.close()


def render(page, html_file: Path, shot: str, tmp_path: Path) -> list[dict]:
    """Open the page from disk; return every <img> with its natural size, once all have settled."""
    failed, errors = [], []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(html_file.as_uri())
    page.wait_for_load_state("load")
    page.wait_for_function("[...document.images].every(i => i.complete)")
    target = Path(os.environ.get("MATTING_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / shot), full_page=True)
    assert not failed and not errors, (failed, errors)
    return page.eval_on_selector_all("img", "imgs => imgs.map(i => ({src: i.getAttribute('src'), "
                                            "w: i.naturalWidth, h: i.naturalHeight, "
                                            "bg: getComputedStyle(i).backgroundImage}))")


def test_eval_report_renders_with_every_picture(page, tmp_path):
    data = make_set(tmp_path / "set", n=2, trimaps=())
    report = tmp_path / "report"
    assert main(["eval", "--data", str(data), "--runtime", "onnxruntime", "--device", "cpu", "--tta", "none,flip",
                 "--report", str(report)]) == 0
    imgs = render(page, report / "index.html", "eval-report.png", tmp_path)
    assert len(imgs) == 2 * (2 + 2 * 2)
    assert all(i["w"] > 0 and i["h"] > 0 for i in imgs), [i for i in imgs if not i["w"]]
    cutouts = [i for i in imgs if i["src"].endswith("-cut.png")]
    assert len(cutouts) == 4 and all("linear-gradient" in i["bg"] for i in cutouts)  # over the checkerboard
    assert page.locator("table.metrics tr").count() == 3  # header + none + flip


def test_contact_sheet_renders_with_every_picture(page, tmp_path):
    make_run(tmp_path, PostprocParams.create())
    sheet = tmp_path / "sheet.html"
    assert main(["report", str(tmp_path / "dst"), "--html", str(sheet)]) == 0
    imgs = render(page, sheet, "contact-sheet.png", tmp_path)
    assert len(imgs) == 2 and all(i["w"] > 0 and i["h"] > 0 for i in imgs)
    assert all("linear-gradient" in i["bg"] for i in imgs)
    assert "bad.jpg" in page.inner_text("table.metrics")
    # The thumbnail links to the full output, which opens.
    page.click("img >> nth=0")
    page.wait_for_load_state("load")
    assert page.url.startswith((tmp_path / "dst").as_uri())
