"""Every notebook reads well where MyST is unknown (Colab, GitHub, VS Code, classic Notebook).

Each markdown cell is rendered with a plain CommonMark renderer (markdown-it-py in "commonmark"
mode, what those viewers amount to); MyST syntax that would show up as raw text there fails the
test: directives (```` ```{note} ````, ``:::``), roles ({cite}`x`), option lines (``:label:``),
targets (``(label)=``), and Markdown inside an HTML block (no blank line after ``<summary>``: a
viewer then shows the backticks and dollars as they are). The site still gets its exercise blocks
from book/_ext/bnbook_exercises.py, tested at the end of this file.
"""

import json
import re
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from myst_parser.config.main import MdParserConfig
from myst_parser.parsers.mdit import create_md_parser

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import bnbook_exercises  # noqa: E402 - a Sphinx extension, not a package

NOTEBOOKS = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("solutions/*.ipynb"))
COMMONMARK = MarkdownIt("commonmark")
ROLE = re.compile(r"\{[a-zA-Z][\w:.-]*\}<code>")
LEAKED_LINE = [
    (re.compile(r"^:::"), "a ':::' directive fence"),
    (re.compile(r"^:[a-z][\w-]*:(\s|$)"), "a directive option line (':label:', ':class:', ...)"),
    (re.compile(r"^\([\w.:-]+\)=\s*$"), "a MyST target '(label)='"),
    (re.compile(r"^\{[a-zA-Z][\w:-]*\}(\s|$)"), "a directive name"),
]
TAG = re.compile(r"<summary>.*?</summary>|<[^>]+>", re.DOTALL)
MYST = create_md_parser(MdParserConfig(enable_extensions={"dollarmath", "amsmath"}), RendererHTML)


def markdown_cells(path: Path):
    for index, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] == "markdown":
            yield index, "".join(cell["source"])


def leaks(markdown: str) -> list[str]:
    """What a CommonMark viewer would show as raw MyST syntax in this Markdown."""
    found = []
    tokens = COMMONMARK.parse(markdown)
    for token in tokens:
        if token.type == "fence" and token.info.strip().startswith("{"):
            found.append(f"a MyST directive shown as a code block: ```{token.info.strip()}")
        elif token.type == "html_block":
            text = TAG.sub("", token.content).strip()
            if text:
                found.append("Markdown inside an HTML block is shown raw (leave a blank line "
                             f"after <summary>...</summary> and before </details>): {text[:60]!r}")
        elif token.type == "inline":
            for line in token.content.splitlines():
                for pattern, what in LEAKED_LINE:
                    if pattern.search(line.strip()):
                        found.append(f"{what}: {line.strip()[:60]!r}")
    html = COMMONMARK.render(markdown)
    found += [f"a MyST role shown as text: {m.group(0)[:-6]}`...`" for m in ROLE.finditer(html)]
    if markdown.count("<details>") != markdown.count("</details>"):
        found.append("unbalanced <details> ... </details>")
    return found


def stray_dollars(markdown: str) -> list[str]:
    """Dollar signs left outside math after MyST's dollarmath parse: a formula that Markdown split
    (a wrapped line starting with `+ ` or `- ` inside it becomes a list item), shown as raw TeX on
    the site, in Colab and on GitHub alike."""
    html = MYST.render(markdown)
    html = re.sub(r'<(span|div) class="math[^"]*">.*?</\1>', "", html, flags=re.S)
    html = re.sub(r"<code>.*?</code>|<pre>.*?</pre>", "", html, flags=re.S)
    return [f"a formula split by Markdown, its TeX shown raw: {m.group(0)!r}"
            for m in re.finditer(r".{0,30}\$.{0,30}", html)]


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_markdown_reads_without_myst(path):
    problems = [f"{path.relative_to(ROOT)}, cell {index}: {problem}"
                for index, markdown in markdown_cells(path) for problem in leaks(markdown)]
    assert not problems, "\n".join(problems[:20]) + (
        f"\n... and {len(problems) - 20} more" if len(problems) > 20 else "")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_formula_is_one_piece(path):
    problems = [f"{path.relative_to(ROOT)}, cell {index}: {problem}"
                for index, markdown in markdown_cells(path) for problem in stray_dollars(markdown)]
    assert not problems, "\n".join(problems[:20])


def test_split_formula_is_found():
    split = "- the norm $\\lVert w - g\\rVert^2 = \\lVert w\\rVert^2\n  + \\lVert g\\rVert^2$ grows."
    assert stray_dollars(split)
    assert stray_dollars(split.replace("\n  + ", " + ")) == []


# --- the detector itself -------------------------------------------------------------------------

@pytest.mark.parametrize("markdown, what", [
    ("```{note}\nText\n```", "directive shown as a code block"),
    ("````{exercise} Title\n:label: ex-01-x\n\nText\n````", "directive shown as a code block"),
    (":::{note}\nText\n:::", "':::' directive fence"),
    ("As {cite}`ioffe2015batch` showed.", "role shown as text: {cite}"),
    ("See {doc}`setup`.", "role shown as text: {doc}"),
    ("(sec-moments)=\n## Moments", "MyST target"),
    ("<details>\n<summary>Hint</summary>\nUse `tf.nn.moments`.\n</details>", "inside an HTML block"),
    ("<details>\n<summary>Hint</summary>\n\nText\n", "unbalanced"),
])
def test_detector_finds_myst(markdown, what):
    assert any(what in problem for problem in leaks(markdown)), leaks(markdown)


@pytest.mark.parametrize("markdown", [
    "**Exercise 6.1: A residual block**\n\nWrite `f(x)` so that $y = x + F(x)$.\n\n"
    "<details>\n<summary>Hint</summary>\n\nUse `tf.nn.moments` and $\\sigma^2$.\n\n</details>",
    "> **Note.** A blockquote, [a citation](https://arxiv.org/abs/1502.03167), "
    "[chapter 1](01_transform.ipynb).\n\n$$\ny = \\gamma \\hat{x} + \\beta\n$$",
    "```python\nx = {'a': 1}\n```\n\nA dict `{a}` in code is fine.",
])
def test_detector_accepts_plain_markdown(markdown):
    assert leaks(markdown) == []


# --- the site's conversion (book/_ext/bnbook_exercises.py) --------------------------------------

def cell(source, tags=(), label=None):
    metadata = {"tags": list(tags)}
    if label:
        metadata["bnbook"] = {"label": label}
    return {"cell_type": "markdown", "metadata": metadata, "source": source}


STATEMENT = ("**Exercise 6.1: A residual block**\n\nWrite `block(x)`.\n\n```python\nblock(x)\n```\n\n"
             "<details>\n<summary>Hint</summary>\n\nAdd `x` back: $y = x + F(x)$.\n\n</details>\n")


def test_plain_exercise_becomes_sphinx_exercise_blocks():
    cells = [cell("# 6. Topic — solutions"),
             cell(STATEMENT, ["exercise-statement", "remove-cell"], "ex-06-block"),
             cell("**Solution to Exercise 6.1**", ["solution-only", "solution-start"], "ex-06-block"),
             {"cell_type": "code", "metadata": {}, "source": "def block(x): ..."},
             cell("Adding `x` keeps the gradient path.", ["solution-only", "solution-end"])]
    assert bnbook_exercises.convert_cells(cells, chapter=6) == []
    statement = cells[1]["source"]
    assert statement.startswith("````{exercise} A residual block\n:label: ex-06-block\n\n")
    assert statement.endswith("\n````")
    assert "```{hint}\n:class: dropdown\n\nAdd `x` back: $y = x + F(x)$.\n```" in statement
    assert "```python\nblock(x)\n```" in statement and "<details>" not in statement
    assert cells[2]["source"] == "```{solution-start} ex-06-block\n:class: dropdown\n```"
    assert cells[4]["source"] == "Adding `x` keeps the gradient path.\n\n```{solution-end}\n```"
    assert cells[0]["source"] == "# 6. Topic — solutions"


def test_hint_with_code_fence_nests_inside_a_longer_fence():
    source = ("**Exercise 1.1: Fences**\n\nText.\n\n<details>\n<summary>Hint</summary>\n\n"
              "```python\nx = 1\n```\n\n</details>")
    _, block = bnbook_exercises.exercise_block(source, "ex-01-fences")
    assert block.startswith("`````{exercise} Fences") and "````{hint}" in block


def test_old_myst_cells_pass_through_untouched():
    old = ["````{exercise} Title\n:label: ex-01-x\n\nText\n````", "```{solution-start} ex-01-x\n```",
           "```{solution-end}\n```"]
    cells = [cell(old[0], ["exercise-statement", "remove-cell"]), cell(old[1], ["solution-only"]),
             cell(old[2], ["solution-only"])]
    assert bnbook_exercises.convert_cells(cells, chapter=1) == []
    assert [c["source"] for c in cells] == old


def test_wrong_number_or_missing_title_is_reported():
    cells = [cell("**Exercise 6.2: Off by one**\n\nText", ["exercise-statement"], "ex-06-a"),
             cell("Write f.", ["exercise-statement"], "ex-06-b")]
    problems = bnbook_exercises.convert_cells(cells, chapter=6)
    assert "title says Exercise 6.2, but the site and the check number it 6.1" in problems[0]
    assert "must start with '**Exercise N.M: Title**'" in problems[1]


def test_whole_notebook_text_round_trip():
    notebook = {"cells": [cell(STATEMENT, ["exercise-statement"], "ex-06-block")], "metadata": {},
                "nbformat": 4, "nbformat_minor": 5}
    text, problems = bnbook_exercises.convert_notebook(json.dumps(notebook),
                                                       "solutions/06_conv_resnets_solutions")
    assert problems == []
    assert json.loads(text)["cells"][0]["source"].startswith("````{exercise} A residual block")
