"""Check the built book the way a reader meets it: every page of the toc in headless Chromium.

Used by tests/browser (``make site-test``) and tools/bench.py; also runnable on its own:

    .venv/bin/python tools/sitecheck.py /tmp/site-build/_build/html

Nothing leaves the machine: the site is served on 127.0.0.1 and every request to any other host
is aborted and counted. The browser is a Chromium driven by Playwright's Python package, named by
the environment variable BNBOOK_BROWSER: by default Debian's /usr/bin/chromium (installed by
tools/install_system_deps.sh); a path to another Chromium; or ``playwright`` for Playwright's own
build (after ``python -m playwright install chromium``, e.g. on macOS or Windows).

Every page is also checked with axe-core (bundled in axe-playwright-python, so it runs offline):
no serious or critical accessibility violation, except the rules in AXE_ALLOWED, each with its
reason.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PAGE_BUDGET_BYTES = 1_000_000  # one page's HTML plus its images
TIMEOUT_MS = 30_000


# --- what to check: the pages of the toc ------------------------------------------------------

def toc_pages(toc: Path = ROOT / "_toc.yml") -> list[str]:
    """Docnames (``book/intro``, ``notebooks/01_x``, ...) in the order the toc lists them."""
    data = yaml.safe_load(toc.read_text(encoding="utf-8"))
    pages = [data["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in data.get("parts", []):
        walk(part.get("chapters"))
    walk(data.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", page) for page in pages]


def is_notebook(docname: str) -> bool:
    return (ROOT / f"{docname}.ipynb").exists()


def repository() -> tuple[str, str]:
    """(owner/name, branch) from _config.yml: the one setting the launch buttons are built from."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    url = config["repository"]["url"].rstrip("/")
    return "/".join(url.split("/")[-2:]), config["repository"].get("branch", "main")


# --- a static server and a browser, both local ------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # keep the test output clean


@contextmanager
def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1 at a free port; yield the base URL (ends with '/')."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in ("127.0.0.1",)


def chromium_path() -> str | None:
    """The Chromium to drive (BNBOOK_BROWSER); None means Playwright's own build."""
    name = os.environ.get("BNBOOK_BROWSER", "").strip() or DEBIAN_CHROMIUM
    if name.lower() == "playwright":
        return None
    if not Path(name).exists():
        hint = ("run `make browser-deps` (tools/install_system_deps.sh installs Debian's chromium)"
                if name == DEBIAN_CHROMIUM else "check the path in BNBOOK_BROWSER")
        raise RuntimeError(f"no browser at {name}: {hint}, or set BNBOOK_BROWSER=playwright after "
                           "`python -m playwright install chromium`")
    return name


class Browser:
    """Headless Chromium with a fresh profile; aborts and records every non-local request."""

    def __init__(self, playwright, profile: Path):
        executable = chromium_path()
        self.blocked: list[str] = []
        self.context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, service_workers="block",
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        if is_local(url):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")

    def close(self):
        self.context.close()


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bnbook-chromium-") as profile, \
            sync_playwright() as playwright:
        browser = Browser(playwright, Path(profile))
        try:
            yield browser
        finally:
            browser.close()


# --- the checks on one page --------------------------------------------------------------------

# Everything measured inside the page in one round trip. Returns plain data; Python judges it.
_INSPECT = r"""
async () => {
  // Images: make lazy ones load now, then wait for every image to finish (or fail).
  const images = [...document.images];
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.complete ? null :
    new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done);
                          setTimeout(done, 10000); })));
  // Math: wait until MathJax (if the page loads it) has typeset everything.
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const article = document.querySelector('main') || document.body;
  const prose = article.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, mjx-container, mjx-assistive-mml, textarea')
       .forEach(el => el.remove());
  const text = el => (el.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 80);
  const nav = performance.getEntriesByType('navigation')[0];
  const imageBytes = performance.getEntriesByType('resource')
    .filter(e => e.initiatorType === 'img').reduce((sum, e) => sum + e.decodedBodySize, 0);
  const cellWithTag = (el, tag) => el.closest('.cell') && el.closest('.cell').classList.contains(tag);
  return {
    images: images.map(img => ({src: img.getAttribute('src') || '', alt: img.getAttribute('alt'),
                                width: img.naturalWidth})),
    mathElements: [...document.querySelectorAll('.math')].map(el => ({
      text: text(el), typeset: !!el.querySelector('mjx-container')})),
    // A TeX error, or an undefined macro (MathJax's noundefined shows it as red text); both are
    // readable in the hidden MathML that MathJax adds for screen readers.
    mathErrors: [...document.querySelectorAll('mjx-assistive-mml merror, mjx-assistive-mml mtext')]
      .filter(el => el.tagName.toLowerCase() === 'merror' ||
                    (el.getAttribute('mathcolor') === 'red' && el.textContent.startsWith('\\')))
      .map(el => el.getAttribute('data-mjx-error') || text(el)),
    rawMath: (prose.textContent.match(/\$\$|\\\(|\\\[|\$\\[a-zA-Z]/g) || []),
    stderr: [...document.querySelectorAll('.output.stderr, .stderr')].map(text),
    tracebacks: [...document.querySelectorAll('.output.traceback, .output.error')]
      .filter(el => !cellWithTag(el, 'tag_raises-exception')).map(text),
    tracebackText: [...document.querySelectorAll('.cell_output')]
      .filter(el => !cellWithTag(el, 'tag_raises-exception'))
      .some(el => el.textContent.includes('Traceback (most recent call last)')),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    codeBlocks: document.querySelectorAll('div.highlight pre').length,
    copyButtons: document.querySelectorAll('button.copybtn').length,
    // Each exercise's title, and the heading of the section it sits in (some chapters number
    // exercises in their headings, "1.2 ...", to match the check messages, "Exercise 1.2").
    exercises: [...document.querySelectorAll('.exercise')].map(el => {
      const section = el.closest('section');
      const heading = section && section.querySelector(':scope > h1, :scope > h2, :scope > h3');
      return {title: text(el.querySelector('.admonition-title') || el),
              heading: heading ? text(heading) : ''};
    }),
    solutions: document.querySelectorAll('.solution').length,
    hints: document.querySelectorAll('.exercise .admonition.hint.dropdown').length,
    // Exercise markup that reached the reader as text: the plain format or MyST not converted.
    rawMarkup: (prose.textContent.match(new RegExp(
      String.raw`\*\*(?:Solution to )?Exercise \d|\{(?:exercise|solution-start|solution-end|hint)\}` +
      String.raw`|:label:|<\/?details>`, 'g')) || []),
    solutionCode: document.body.textContent.includes('BEGIN SOLUTION') &&
      document.querySelectorAll('.solution').length === 0,
    pageBytes: (nav ? nav.decodedBodySize : 0) + imageBytes,
    title: document.title,
  };
}
"""


# axe-core: every page must have no serious or critical violation. Moderate and minor ones are
# reported (PageResult.axe, and axe.txt from the tests), not failed. The rules allowed on every
# page whatever their impact, each with its reason:
AXE_FAILING_IMPACTS = ("serious", "critical")
AXE_ALLOWED: dict[str, str] = {
    "region": "moderate: sphinx-book-theme puts the book's title link at the top of the sidebar "
              "outside any landmark; the theme's template, not the book's content",
}


def expected_blocks(docname: str) -> dict[str, int] | None:
    """What the page of a notebook must show: its exercises, solutions and hint dropdowns."""
    path = ROOT / f"{docname}.ipynb"
    if not path.exists():
        return None
    import json

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]

    def tagged(cell, tag):
        return tag in cell.get("metadata", {}).get("tags", [])

    statements = ["".join(c["source"]) for c in cells if tagged(c, "exercise-statement")]
    solutions = [c for c in cells if tagged(c, "solution-start")
                 or "{solution-start}" in "".join(c["source"])]
    hints = sum(s.count("<details>") + s.count("{hint}") for s in statements)
    return {"exercises": len(statements), "solutions": len(solutions), "hints": hints}


@dataclass
class PageResult:
    name: str
    problems: list[str] = field(default_factory=list)
    axe: list[dict] = field(default_factory=list)  # every axe-core violation: id, impact, nodes
    checks: list[str] = field(default_factory=list)  # the checks that applied to this page
    blocked: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    def check(self, what: str, ok: bool, problem: str) -> None:
        self.checks.append(what)
        if not ok:
            self.problems.append(problem)


class LinkChecker:
    """Fetches each same-site URL once; answers whether it is 200 and whether an anchor exists."""

    def __init__(self, request_context):
        self.request = request_context
        self.pages: dict[str, tuple[int, str]] = {}

    def fetch(self, url: str) -> tuple[int, str]:
        if url not in self.pages:
            response = self.request.get(url, timeout=TIMEOUT_MS)
            is_html = "html" in response.headers.get("content-type", "")
            self.pages[url] = (response.status, response.text() if is_html and response.ok else "")
        return self.pages[url]

    def problem(self, href: str) -> str | None:
        url, fragment = urldefrag(href)
        status, html = self.fetch(url)
        if status != 200:
            return f"broken link {href} (HTTP {status})"
        fragment = unquote(fragment)
        if fragment and html and not re.search(rf'id="{re.escape(fragment)}"', html):
            return f"link {href} points to a missing anchor #{fragment}"
        return None


def check_page(browser: Browser, base_url: str, docname: str, links: LinkChecker,
               screenshot_dir: Path | None = None) -> PageResult:
    """Open one page and check what a reader would notice. Every problem names the page."""
    result = PageResult(docname)
    console_errors: list[str] = []
    browser.blocked.clear()
    page = browser.context.new_page()
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: console_errors.append(f"uncaught {err}"))
    try:
        url = base_url + docname + ".html"
        response = page.goto(url, wait_until="load")
        status = response.status if response else None
        result.check("HTTP 200", status == 200, f"HTTP {status}: the page was not built")
        if status == 200:
            _inspect(page, result, browser, base_url, docname, links, console_errors, screenshot_dir)
    finally:
        page.close()
    result.problems = [f"{docname}: {problem}" for problem in result.problems]
    return result


def _inspect(page, result, browser, base_url, docname, links, console_errors, screenshot_dir):
    """The checks on a page that was served (HTTP 200)."""
    info = page.evaluate(_INSPECT)
    _judge(result, info, base_url, docname, links)
    _check_accessibility(page, result)
    if screenshot_dir is not None:
        screenshot_dir.mkdir(parents=True, exist_ok=True)
        result.screenshot = screenshot_dir / (docname.replace("/", "__") + ".png")
        page.screenshot(path=str(result.screenshot), full_page=True)
    _check_dropdowns(page, result)
    page.wait_for_timeout(200)  # let late console messages arrive
    result.check("no console errors", not console_errors,
                 f"console errors: {console_errors[:3]}")
    result.blocked = list(browser.blocked)
    result.check("no request leaves the machine", not result.blocked,
                 f"{len(result.blocked)} request(s) to other hosts (blocked): "
                 f"{list(dict.fromkeys(result.blocked))[:3]}")


def _judge(result: PageResult, info: dict, base_url: str, docname: str, links: LinkChecker):
    check = result.check
    missing = [img["src"] for img in info["images"] if not img["width"]]
    check("every image loaded", not missing, f"image(s) did not load: {missing[:3]}")
    no_alt = [img["src"][:60] for img in info["images"] if not (img["alt"] or "").strip()]
    check("every image has alt text", not no_alt, f"image(s) without alt text: {no_alt[:3]}")
    if info["mathElements"] or info["rawMath"]:
        untypeset = [m["text"] for m in info["mathElements"] if not m["typeset"]]
        check("math typeset", not untypeset, f"formula(s) not typeset: {untypeset[:3]}")
        check("no raw TeX left", not info["rawMath"],
              f"raw TeX delimiters left in the text: {sorted(set(info['rawMath']))}")
        check("no MathJax errors", not info["mathErrors"],
              f"MathJax could not typeset: {info['mathErrors'][:3]}")
    check("no stderr shown", not info["stderr"], f"stderr shown: {info['stderr'][:2]}")
    check("no traceback shown", not (info["tracebacks"] or info["tracebackText"]),
          "a traceback is shown outside a cell tagged raises-exception")
    check("copy button on every code block", info["copyButtons"] >= info["codeBlocks"],
          f"{info['codeBlocks']} code blocks but {info['copyButtons']} copy buttons")
    check("page + images < 1 MB", info["pageBytes"] < PAGE_BUDGET_BYTES,
          f"HTML with its images weighs {info['pageBytes']:,} bytes (budget {PAGE_BUDGET_BYTES:,})")

    internal = sorted({href for href in info["links"] if href.startswith(base_url)})
    broken = [p for p in (links.problem(href) for href in internal) if p]
    check("internal links resolve", not broken, "; ".join(broken[:5]))

    if docname.endswith("_exercises"):
        unnumbered = [e["title"] for e in info["exercises"]
                      if not (re.match(r"Exercise \d", e["title"]) or re.match(r"\d+\.\d+", e["heading"]))]
        check("exercise page: numbered exercises", bool(info["exercises"]) and not unnumbered,
              "no exercise blocks" if not info["exercises"] else
              f"exercise(s) with no number in their title or section heading: {unnumbered[:3]}")
        check("exercise page: no solutions", not info["solutions"], "shows solution blocks")
    if docname.endswith("_solutions"):
        check("solution page: has solutions", info["solutions"] > 0, "no solution blocks")
    check("no exercise markup shown as text", not info["rawMarkup"],
          f"exercise markup shown as text: {sorted(set(info['rawMarkup']))}")
    expected = expected_blocks(docname)
    if expected and docname.endswith("_exercises"):
        check("every exercise shown", len(info["exercises"]) == expected["exercises"],
              f"{len(info['exercises'])} exercise blocks for {expected['exercises']} exercises")
        check("every hint is a dropdown", info["hints"] == expected["hints"],
              f"{info['hints']} hint dropdowns for {expected['hints']} hints")
    if expected and docname.endswith("_solutions"):
        check("every solution shown", info["solutions"] == expected["solutions"],
              f"{info['solutions']} solution blocks for {expected['solutions']} solutions")
    if info["solutionCode"]:
        check("no solution markers outside solutions", False,
              "solution code markers (BEGIN SOLUTION) outside a solution block")
    if is_notebook(docname):
        repo, branch = repository()
        wanted = {
            "Colab": f"https://colab.research.google.com/github/{repo}/blob/{branch}/{docname}.ipynb",
            "Binder": f"https://mybinder.org/v2/gh/{repo}/{branch}?urlpath=lab/tree/{docname}.ipynb",
            "download": f"{base_url}_sources/{docname}.ipynb",
        }
        for label, href in wanted.items():
            check(f"{label} button", href in info["links"], f"no {label} button linking to {href}")


def _check_accessibility(page, result: PageResult) -> None:
    """axe-core on the page as loaded (bundled with axe-playwright-python: nothing is fetched)."""
    from axe_playwright_python.sync_playwright import Axe

    # preload off: axe would fetch the stylesheets again to build a CSSOM, and resolves the
    # theme's `@import url("basic.css")` against the page instead of the stylesheet (a 404 in the
    # console). Only the css-orientation-lock rule needs the CSSOM.
    violations = Axe().run(page, options={"resultTypes": ["violations"], "preload": False}
                           ).response["violations"]
    result.axe = [{"id": v["id"], "impact": v["impact"], "nodes": len(v["nodes"]),
                   "help": v["help"], "where": [n["target"] for n in v["nodes"][:3]]}
                  for v in violations]
    failing = [v for v in result.axe
               if v["impact"] in AXE_FAILING_IMPACTS and v["id"] not in AXE_ALLOWED]
    result.check("axe: no serious or critical violations", not failing,
                 "accessibility (axe-core): " + "; ".join(
                     f"{v['id']} ({v['impact']}, {v['nodes']} element(s), e.g. {v['where'][0]}): "
                     f"{v['help']}" for v in failing))


def _check_dropdowns(page, result: PageResult) -> None:
    """Solution (and hint) dropdowns start closed and open when their title is clicked."""
    dropdowns = page.locator(".admonition.dropdown")
    for index in range(dropdowns.count()):
        box = dropdowns.nth(index)
        kind = "solution" if "solution" in (box.get_attribute("class") or "") else "hint"
        title = box.locator(".admonition-title").first
        body = box.locator(":scope > :not(.admonition-title)").first
        label = f"{kind} dropdown {index + 1} ({title.inner_text().strip()[:40]!r})"
        result.check(f"{kind} dropdown closed", not body.is_visible(),
                     f"{label} is open before it is clicked")
        # Click the toggle button, as a reader does: a solution's title text is a link to its
        # exercise, so clicking the middle of the title would leave the page.
        button = box.locator(".toggle-button")
        if not button.count():
            result.check(f"{kind} dropdown has a toggle button", False, f"{label} has no toggle button")
            continue
        button.first.click()
        try:
            body.wait_for(state="visible", timeout=3000)
            opened = True
        except Exception:  # noqa: BLE001 - a timeout is the failure we report
            opened = False
        result.check(f"{kind} dropdown opens", opened, f"{label} does not open when clicked")


def search_hits(browser: Browser, base_url: str, query: str) -> int:
    """Number of results the site's own search page lists for ``query``."""
    page = browser.context.new_page()
    try:
        page.goto(f"{base_url}search.html?q={query}", wait_until="load")
        page.wait_for_function(
            "() => { const s = document.querySelector('#search-results p.search-summary, "
            "#search-results > p'); return s && s.textContent.trim().length > 0; }",
            timeout=TIMEOUT_MS)
        return page.locator("#search-results li").count()
    finally:
        page.close()


def check_site(html_dir: Path, pages: list[str], screenshot_dir: Path | None = None):
    """Check every page; yield PageResult objects (used by the command line below)."""
    with serve(html_dir) as base_url, chromium() as browser:
        links = LinkChecker(browser.context.request)
        for docname in pages:
            yield check_page(browser, base_url, docname, links, screenshot_dir)


def axe_summary(result: PageResult) -> str:
    """'no violations' or 'region (moderate, 3)' and so on, for a report."""
    return ", ".join(f"{v['id']} ({v['impact']}, {v['nodes']})" for v in result.axe) or "no violations"


def main(argv: list[str]) -> int:
    html_dir = Path(argv[0] if argv else ROOT / "_build" / "html").resolve()
    start = time.perf_counter()
    failed = 0
    for result in check_site(html_dir, toc_pages(), html_dir.parent / "screenshots"):
        failed += bool(result.problems)
        print(f"{'FAIL' if result.problems else 'ok  '} {result.name}: {len(result.checks)} checks; "
              f"axe: {axe_summary(result)}")
        for problem in result.problems:
            print(f"     {problem}")
    print(f"{time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
