"""Fixtures for the browser tests: the built site served on loopback and one headless Chromium.

    .venv/bin/pytest tests/browser --html-dir=/tmp/site-build/_build/html

`make unit` ignores this folder (it needs a built book and a Chromium: BNBOOK_BROWSER, default
Debian's /usr/bin/chromium, see tools/sitecheck.py); `make site-test` runs it, and `make test` runs
it after the strict book build.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import sitecheck  # noqa: E402 - tools/sitecheck.py, also used by tools/bench.py


def pytest_addoption(parser):
    parser.addoption("--html-dir", default=str(sitecheck.ROOT / "_build" / "html"),
                     help="the built book to check (default: _build/html)")


@pytest.fixture(scope="session")
def html_dir(request) -> Path:
    path = Path(request.config.getoption("--html-dir")).resolve()
    if not (path / "index.html").is_file():
        pytest.fail(f"no built book at {path}: run `make book-strict` (or pass --html-dir)")
    return path


@pytest.fixture(scope="session")
def screenshot_dir(request) -> Path:
    """Screenshots go beside the checked site: _build/screenshots for _build/html."""
    path = Path(request.config.getoption("--html-dir")).resolve().parent / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser():
    with sitecheck.chromium() as browser:
        yield browser


@pytest.fixture(scope="session")
def site(html_dir, browser):
    """(base URL, link checker) for the built book."""
    with sitecheck.serve(html_dir) as base_url:
        yield base_url, sitecheck.LinkChecker(browser.context.request)


@pytest.fixture(scope="session")
def axe_report(screenshot_dir):
    """Collects each page's axe-core results; writes them beside the screenshots (axe.txt)."""
    lines: list[str] = []
    yield lines
    (screenshot_dir.parent / "axe.txt").write_text("".join(f"{line}\n" for line in lines),
                                                     encoding="utf-8")
