"""The exercise notebooks are generated from the solutions: the generator's rules and staleness."""

import re
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import make_exercises as exercises  # noqa: E402 - tools/ is not a package


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def test_regions_become_stubs_keeping_indentation():
    source = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n"
    assert exercises.stub_source(source, "t") == (
        "def f(x):\n    y = 1\n    # Your code here.\n    raise NotImplementedError(\"your code here\")"
    )


@pytest.mark.parametrize("source, problem", [
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "inside a function body"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1", "without ### END"),
    ("def f():\n    return 1\n    ### END SOLUTION", "without ### BEGIN"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION", "nested"),
])
def test_malformed_regions_are_refused(source, problem):
    with pytest.raises(exercises.GeneratorError, match=problem):
        exercises.stub_source(source, "t")


def test_solution_only_dropped_statement_shown_title_changed_outputs_cleared():
    statement = nbformat.v4.new_markdown_cell("```{exercise}\n:label: ex\n```")
    statement.metadata["tags"] = ["exercise-statement", "remove-cell"]
    hidden = nbformat.v4.new_markdown_cell("```{solution-start} ex\n```")
    hidden.metadata["tags"] = ["solution-only"]
    code = nbformat.v4.new_code_cell("print(1)", execution_count=3,
                                     outputs=[nbformat.v4.new_output("stream", text="1\n")])
    out = exercises.make_exercises(
        notebook(nbformat.v4.new_markdown_cell("# 9. Topic — solutions\ntext"), statement, hidden,
                 code), "t")
    assert [c.cell_type for c in out.cells] == ["markdown", "markdown", "code"]
    assert out.cells[0].source == "# 9. Topic — exercises\ntext"
    assert out.cells[1].metadata["tags"] == ["exercise-statement"]
    assert out.cells[2].outputs == [] and out.cells[2].execution_count is None


def test_title_must_say_solutions():
    with pytest.raises(exercises.GeneratorError, match="solutions"):
        exercises.make_exercises(notebook(nbformat.v4.new_markdown_cell("# Topic")), "t")


def test_every_solution_has_an_up_to_date_exercise_notebook():
    pairs = list(exercises.pairs())
    assert pairs, "no solution notebooks found"
    for solution, target in pairs:
        assert target.exists(), f"{target.name} missing: run `make exercises`"
        assert target.read_text(encoding="utf-8") == exercises.render(solution), \
            f"{target.name} is stale: run `make exercises`"


LABEL = re.compile(r"^:label:\s*(\S+)", re.MULTILINE)  # the old MyST format (chapters 1-5 until converted)
SOLUTION_START = re.compile(r"\{solution-start\}\s*(\S+)")
TITLE = re.compile(r"^\*\*Exercise (\d+\.\d+): [^*\n]+\*\*\s*$", re.MULTILINE)


def tags(cell):
    return cell.metadata.get("tags", [])


def label_of(cell):
    """An exercise's label: cell metadata bnbook.label (plain format) or a MyST :label: line."""
    label = cell.metadata.get("bnbook", {}).get("label")
    if label:
        return label
    found = LABEL.search(cell.source) if cell.cell_type == "markdown" else None
    return found.group(1) if found else None


def is_solution_start(cell, label):
    if "solution-start" in tags(cell):
        return cell.metadata.get("bnbook", {}).get("label") == label
    found = SOLUTION_START.search(cell.source or "")
    return bool(found) and found.group(1) == label


def is_solution_end(cell):
    return "solution-end" in tags(cell) or "{solution-end}" in cell.source


@pytest.mark.parametrize("solution", [s for s, _ in exercises.pairs()], ids=lambda p: p.name)
def test_each_exercise_has_solution_region_and_a_passing_stored_check(solution):
    """Statement -> solution-start -> code with a solution region -> solution-end -> check cell,
    and the stored output of that check cell says the solution passed."""
    cells = nbformat.read(solution, as_version=4).cells
    chapter = solution.name[:2]
    statements = [i for i, c in enumerate(cells) if "exercise-statement" in tags(c)]
    assert statements, f"{solution.name} has no exercise-statement cells"
    for position, i in enumerate(statements, start=1):
        # The book shows this exercise as "Exercise N.position" (book/_ext/bnbook_numbers.py):
        # the check must say the same number.
        number = f"{int(chapter)}.{position}"
        assert ":nonumber:" not in cells[i].source, \
            f"{solution.name}, cell {i}: the book numbers exercises as the checks do"
        label = label_of(cells[i])
        assert label and label.startswith(f"ex-{chapter}-"), \
            f"{solution.name}, cell {i}: label (metadata bnbook.label) must be ex-{chapter}-..."
        assert "remove-cell" in tags(cells[i])
        if "bnbook" in cells[i].metadata:  # the plain format: the title line carries the number
            title = TITLE.match(cells[i].source)
            assert title and title.group(1) == number, \
                f"{solution.name}, cell {i}: must start with '**Exercise {number}: Title**'"
        starts = [j for j in range(i + 1, len(cells)) if is_solution_start(cells[j], label)]
        assert starts, f"{solution.name}: no solution-start cell for {label}"
        j = starts[0]
        assert "solution-only" in tags(cells[j])
        if "solution-start" in tags(cells[j]):
            assert cells[j].source.strip() == f"**Solution to Exercise {number}**", \
                f"{solution.name}, cell {j}: must say '**Solution to Exercise {number}**'"
        code = cells[j + 1]
        assert code.cell_type == "code" and exercises.BEGIN in code.source, \
            f"{solution.name}: the cell after solution-start {label} has no solution region"
        assert is_solution_end(cells[j + 2]) and "solution-only" in tags(cells[j + 2]), \
            f"{solution.name}: no solution-end cell after the solution of {label}"
        if "solution-end" in tags(cells[j + 2]):
            assert cells[j + 2].source.strip(), \
                f"{solution.name}, cell {j + 2}: a solution-end cell holds remarks (not empty)"
        check = cells[j + 3]
        printed = "".join(o.get("text", "") for o in check.get("outputs", []))
        assert check.cell_type == "code" and "check." in check.source, \
            f"{solution.name}: no check cell after the solution of {label}"
        assert f"✓ Exercise {number} passed" in printed, \
            f"{solution.name}: the stored check of {label} (Exercise {number} in the " \
            f"book) did not print '✓ Exercise {number} passed': {printed!r}"
