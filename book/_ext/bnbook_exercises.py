"""Turn the notebooks' plain-Markdown exercises into sphinx-exercise blocks on the site.

The notebooks are written in plain Markdown (CommonMark) so that they read well in Colab, GitHub
and VS Code, which know nothing of MyST. The site still shows numbered exercises, folded
solutions and hint dropdowns: this extension rewrites the exercise cells of each notebook at build
time (Sphinx's ``source-read`` event hands it the notebook's JSON text before myst-nb parses it).
The files on disk are never changed. CONTRIBUTING.md describes the format; in short:

* a markdown cell tagged ``exercise-statement`` with metadata ``bnbook.label`` starts with
  ``**Exercise N.M: Title**`` -> a ``{exercise} Title`` block with ``:label:``; each
  ``<details><summary>Hint</summary> ... </details>`` in it -> a ``{hint}`` dropdown inside it;
* a markdown cell tagged ``solution-start`` (``**Solution to Exercise N.M**``) ->
  ``{solution-start} label`` as a dropdown;
* a markdown cell tagged ``solution-end`` (remarks on the solution) -> the remarks, then
  ``{solution-end}``, so the remarks fold away with the solution.

Cells without these tags or without ``bnbook.label`` (the older MyST format) pass through as they
are. The number in the title must be the exercise's position on the page, as
``book/_ext/bnbook_numbers.py`` numbers it and the check cell prints it; a mismatch is a warning
(an error in the strict build).
"""

from __future__ import annotations

import json
import re

TITLE = re.compile(r"\A\s*\*\*Exercise (?P<number>\d+\.\d+): (?P<title>[^\n]+?)\*\*[ \t]*(?:\n|\Z)")
DETAILS = re.compile(
    r"^<details>\s*<summary>(?P<summary>.*?)</summary>[ \t]*\n(?P<body>.*?)^</details>[ \t]*$",
    re.MULTILINE | re.DOTALL)
CHAPTER = re.compile(r"(?:^|/)(\d\d)_[^/]*$")


class FormatError(ValueError):
    """An exercise cell the extension cannot convert (reported as a Sphinx warning)."""


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _fence(text: str, at_least: int = 3) -> str:
    """A backtick fence longer than any backtick run inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(at_least, longest + 1)


def _hint(summary: str, body: str) -> str:
    body = body.strip("\n")
    fence = _fence(body)
    summary = summary.strip()
    if summary.lower() == "hint":
        return f"{fence}{{hint}}\n:class: dropdown\n\n{body}\n{fence}"
    return f"{fence}{{admonition}} {summary}\n:class: hint dropdown\n\n{body}\n{fence}"


def exercise_block(source: str, label: str) -> tuple[str, str]:
    """(number in the title, the MyST ``{exercise}`` block) for one statement cell's source."""
    title = TITLE.match(source)
    if not title:
        raise FormatError(f"exercise {label}: the cell must start with '**Exercise N.M: Title**'")
    body = DETAILS.sub(lambda m: _hint(m["summary"], m["body"]), source[title.end():]).strip("\n")
    fence = _fence(body, at_least=4)
    block = f"{fence}{{exercise}} {title['title'].strip()}\n:label: {label}\n\n{body}\n{fence}"
    return title["number"], block


def convert_cells(cells: list[dict], chapter: int | None = None) -> list[str]:
    """Rewrite the exercise cells in place; return a list of problems (empty when all is well)."""
    problems = []
    position = 0
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "markdown":
            continue
        metadata = cell.get("metadata", {})
        tags = metadata.get("tags", [])
        label = metadata.get("bnbook", {}).get("label")
        source = _source(cell)
        if "exercise-statement" in tags:
            position += 1
            if not label:
                continue  # the older MyST format: already a directive
            try:
                number, block = exercise_block(source, label)
            except FormatError as error:
                problems.append(f"cell {index}: {error}")
                continue
            if chapter is not None and number != f"{chapter}.{position}":
                problems.append(f"cell {index}: the title says Exercise {number}, but the site and "
                                f"the check number it {chapter}.{position}")
            cell["source"] = block
        elif "solution-start" in tags:
            if not label:
                problems.append(f"cell {index}: a solution-start cell needs metadata bnbook.label")
                continue
            cell["source"] = f"```{{solution-start}} {label}\n:class: dropdown\n```"
        elif "solution-end" in tags:
            remarks = source.strip("\n")
            cell["source"] = (remarks + "\n\n" if remarks else "") + "```{solution-end}\n```"
    return problems


def convert_notebook(text: str, docname: str = "") -> tuple[str, list[str]]:
    """(the notebook's JSON text with its exercise cells converted, problems)."""
    notebook = json.loads(text)
    chapter = CHAPTER.search(docname)
    problems = convert_cells(notebook.get("cells", []), int(chapter[1]) if chapter else None)
    return json.dumps(notebook, ensure_ascii=False, indent=1), problems


def on_source_read(app, docname, source):
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    from sphinx.util import logging

    converted, problems = convert_notebook(source[0], docname)
    source[0] = converted
    logger = logging.getLogger(__name__)
    for problem in problems:
        logger.warning(f"{problem}", location=docname, type="bnbook", subtype="exercise")


def setup(app):
    app.connect("source-read", on_source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
