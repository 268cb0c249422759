"""The page checks can fail: a tiny site with one deliberate fault of each kind.

Each fault must be reported, with the page's name, by sitecheck.check_page; a clean page must
pass, so the checks do not cry wolf either.
"""

import base64

import pytest
import sitecheck

# A 1x1 PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==")
MATHJAX = '<script defer src="_static/mathjax/tex-chtml.js"></script>'

CLEAN = f"""<!DOCTYPE html><html lang="en"><head><title>clean</title>{MATHJAX}</head><body><main>
<h1 id="top">A clean page</h1>
<p>Inline math <span class="math">\\(x^2\\)</span>, shown math:</p>
<div class="math">\\[\\hat{{x}} = \\frac{{x - \\mu}}{{\\sqrt{{\\sigma^2 + \\epsilon}}}}\\]</div>
<img src="pixel.png" alt="one pixel"><a href="#top">top</a> <a href="texerror.html">next</a>
</main></body></html>"""

BROKEN = f"""<!DOCTYPE html><html><head><title>broken</title></head><body><main>
<img src="missing.png" alt="a plot that was never written">
<img src="pixel.png" alt="">
<img src="https://example.org/remote.png" alt="a remote image">
<a href="nope.html">a page that does not exist</a>
<a href="clean.html#no-such-anchor">an anchor that does not exist</a>
<div class="math">\\[ \\gamma \\hat{{x}} + \\beta \\]</div>
<p>Raw TeX the page never typeset: $$y = x$$</p>
<div class="cell"><div class="cell_output"><div class="output stderr"><pre>W0000 a warning</pre>
</div></div></div>
<div class="cell"><div class="cell_output"><div class="output traceback"><pre>Traceback (most recent
call last): ValueError</pre></div></div></div>
<div class="highlight"><pre>print("no copy button")</pre></div>
<div class="solution dropdown admonition"><p class="admonition-title">Solution</p>
<p>the answer, visible from the start</p></div>
<p>**Exercise 1.1: A title as the notebook writes it** and a hint &lt;details&gt; left as text</p>
<script>console.error("boom");</script>
<!-- {"x" * 1_100_000} -->
</main></body></html>"""

EXERCISES = """<!DOCTYPE html><html lang="en"><head><title>exercises</title></head><body><main>
<section><h2>2.1 Numbered by its heading</h2>
<div class="exercise admonition"><p class="admonition-title">Exercise (Moments)</p></div></section>
<section><h2>Numbered by sphinx-exercise</h2>
<div class="exercise admonition"><p class="admonition-title">Exercise 2 (Scale)</p></div></section>
<section><h2>Not numbered at all</h2>
<div class="exercise admonition"><p class="admonition-title">Exercise (Shift)</p></div></section>
</main></body></html>"""

TEX_ERROR = f"""<!DOCTYPE html><html lang="en"><head><title>tex</title>{MATHJAX}</head><body><main>
<p><span class="math">\\(\\notamacro{{x}}\\)</span> <span class="math">\\(\\frac{{1}}\\)</span></p>
</main></body></html>"""

EXPECTED_IN_BROKEN = {
    "missing image": "image(s) did not load: ['missing.png'",
    "image without alt text": "image(s) without alt text: ['pixel.png']",
    "broken link": "broken link http://127.0.0.1",
    "missing anchor": "points to a missing anchor #no-such-anchor",
    "untypeset formula": "formula(s) not typeset",
    "raw TeX": "raw TeX delimiters left in the text: ['$$'",
    "stderr": "stderr shown",
    "traceback": "a traceback is shown",
    "copy button": "1 code blocks but 0 copy buttons",
    "console error": ("console errors: [", "'boom'"),  # any order: messages arrive as they come
    "request to the internet": "request(s) to other hosts (blocked): ['https://example.org/remote.png']",
    "too heavy": "HTML with its images weighs",
    "open solution": "solution dropdown 1 ('Solution') is open before it is clicked",
    "no toggle": "solution dropdown 1 ('Solution') has no toggle button",
    "exercise page without exercises": "no exercise blocks",
    "exercise page with solutions": "shows solution blocks",
    "exercise markup as text": "exercise markup shown as text: ['**Exercise 1', '<details>']",
    # The page has no lang attribute (the other pages of this tiny site have one).
    "accessibility": "accessibility (axe-core): html-has-lang (serious",
}


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory, browser):
    root = tmp_path_factory.mktemp("tiny-site")
    (root / "_static").mkdir()
    (root / "_static" / "mathjax").symlink_to(sitecheck.ROOT / "book" / "_static" / "mathjax")
    (root / "pixel.png").write_bytes(PIXEL)
    (root / "clean.html").write_text(CLEAN, encoding="utf-8")
    (root / "broken_exercises.html").write_text(BROKEN, encoding="utf-8")
    (root / "texerror.html").write_text(TEX_ERROR, encoding="utf-8")
    (root / "some_exercises.html").write_text(EXERCISES, encoding="utf-8")
    with sitecheck.serve(root) as base_url:
        yield base_url, sitecheck.LinkChecker(browser.context.request)


def check(browser, tiny_site, name):
    base_url, links = tiny_site
    return sitecheck.check_page(browser, base_url, name, links)


def test_clean_page_passes(browser, tiny_site):
    result = check(browser, tiny_site, "clean")
    assert result.problems == []
    assert "math typeset" in result.checks and "every image loaded" in result.checks


@pytest.fixture(scope="module")
def broken_problems(browser, tiny_site):
    return check(browser, tiny_site, "broken_exercises").problems


@pytest.mark.parametrize("fault", EXPECTED_IN_BROKEN)
def test_each_fault_is_reported_with_the_page_name(broken_problems, fault):
    problems = broken_problems
    expected = EXPECTED_IN_BROKEN[fault]
    fragments = expected if isinstance(expected, tuple) else (expected,)
    assert any(p.startswith("broken_exercises: ") and all(f in p for f in fragments)
               for p in problems), \
        f"{fault!r} not reported; got:\n" + "\n".join(problems)


def test_tex_error_is_reported(browser, tiny_site):
    problems = check(browser, tiny_site, "texerror").problems
    tex = [p for p in problems if "MathJax could not typeset" in p]
    assert len(tex) == 1 and tex[0].startswith("texerror: MathJax could not typeset"), problems
    assert "\\notamacro" in tex[0] and "argument" in tex[0], problems
    # MathJax shows the unknown macro in red, which axe-core rightly reports as too little contrast.
    assert all("color-contrast" in p for p in problems if p not in tex), problems


def test_page_that_was_not_built_is_named(browser, tiny_site):
    assert check(browser, tiny_site, "chapter_that_failed").problems == [
        "chapter_that_failed: HTTP 404: the page was not built"]


def test_exercise_numbers_come_from_title_or_heading(browser, tiny_site):
    assert check(browser, tiny_site, "some_exercises").problems == [
        "some_exercises: exercise(s) with no number in their title or section heading: "
        "['Exercise (Shift)']"]
