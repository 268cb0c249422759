"""Number exercises by chapter: "Exercise 3.1", as the check cells print, not "Exercise 1".

sphinx-exercise numbers exercises on from page to page (1, 2, ... 12). The chapter is the
two-digit prefix of the page's file name (``notebooks/03_test_time_exercises`` is chapter 3), so
number each page's exercises N.1, N.2, ...
"""

from __future__ import annotations

import re

CHAPTER_PAGE = re.compile(r"^(?:notebooks|solutions)/(\d\d)_")


def number_by_chapter(app, env):
    for docname, numbers in env.toc_fignumbers.items():
        chapter = CHAPTER_PAGE.match(docname)
        if not chapter or "exercise" not in numbers:
            continue
        exercises = numbers["exercise"]
        if all(len(number) == 2 for number in exercises.values()):
            continue  # already renumbered (an incremental build keeps the environment)
        # The numbers run on across the whole book; restart them at 1 on each page, in order.
        in_order = sorted(exercises, key=exercises.get)
        for position, ids in enumerate(in_order, start=1):
            exercises[ids] = (int(chapter.group(1)), position)


def setup(app):
    # Figure numbers (which sphinx-exercise uses) are final by the consistency check, and the
    # pages that show them are written after it.
    app.connect("env-check-consistency", number_by_chapter)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
