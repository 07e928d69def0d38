"""What the headless-Chromium tests share: Debian's browser, its flags, and the skip rule.

Debian's chromium is used through Playwright (never `playwright install`). Where it or playwright is
missing the test module is skipped, except under CI, where that is a failure (the module then errors
on the launch, naming what is missing).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# No sandbox: the tests run as root in containers; no QUIC or background traffic: every request a test
# does not serve itself must fail, not leave the machine.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def require_browser() -> None:
    """Skip the calling test module when the browser or playwright is missing (outside CI)."""
    missing = [what for what, ok in (
        ("Debian's chromium (apt-get install chromium)", Path(CHROMIUM).exists()),
        ("playwright (pip install playwright)", importlib.util.find_spec("playwright") is not None)) if not ok]
    if missing and os.environ.get("CI") != "true":
        pytest.skip(f"browser test needs {', '.join(missing)}", allow_module_level=True)
