"""Every page of the toc, opened in headless Chromium as a reader would (see tools/sitecheck.py).

Each page's axe-core results (any impact) are written to axe.txt beside the screenshots
(_build/axe.txt for _build/html).
"""

import pytest
import sitecheck

PAGES = sitecheck.toc_pages()


@pytest.mark.parametrize("docname", PAGES)
def test_page(docname, browser, site, screenshot_dir, axe_report):
    base_url, links = site
    result = sitecheck.check_page(browser, base_url, docname, links, screenshot_dir)
    axe_report.append(f"{docname}: {sitecheck.axe_summary(result)}")
    assert not result.problems, "\n".join(result.problems)
    assert result.screenshot.stat().st_size > 0


def test_search_finds_the_lessons(browser, site):
    base_url, _ = site
    assert sitecheck.search_hits(browser, base_url, "normalization") > 0, \
        "search.html finds nothing for 'normalization'"


def test_toc_has_every_chapter_in_three_parts():
    """Each chapter's lesson, exercises and solutions are all on the site."""
    exercises = [p for p in PAGES if p.endswith("_exercises")]
    assert exercises, "the toc lists no exercise notebook"
    for page in exercises:
        chapter = page.removeprefix("notebooks/").removesuffix("_exercises")
        assert f"notebooks/{chapter}" in PAGES, f"{page}: its lesson is not in the toc"
        assert f"solutions/{chapter}_solutions" in PAGES, f"{page}: its solutions are not in the toc"
