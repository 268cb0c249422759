"""The exercise notebooks are generated from the solutions: the generator's rules and staleness."""

import re

import nbformat
import pytest

from bnbook import exercises


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


LABEL = re.compile(r"^:label:\s*(\S+)", re.MULTILINE)
SOLUTION_START = re.compile(r"\{solution-start\}\s*(\S+)")


@pytest.mark.parametrize("solution", [s for s, _ in exercises.pairs()], ids=lambda p: p.name)
def test_each_exercise_has_solution_region_and_a_passing_stored_check(solution):
    """Statement -> solution-start -> code with a solution region -> solution-end -> check cell,
    and the stored output of that check cell says the solution passed."""
    cells = nbformat.read(solution, as_version=4).cells
    chapter = solution.name[:2]
    statements = [i for i, c in enumerate(cells)
                  if "exercise-statement" in c.metadata.get("tags", [])]
    assert statements, f"{solution.name} has no exercise-statement cells"
    for position, i in enumerate(statements, start=1):
        assert ":nonumber:" not in cells[i].source, \
            f"{solution.name}, cell {i}: the book numbers exercises as the checks do"
        label = LABEL.search(cells[i].source)
        assert label and label.group(1).startswith(f"ex-{chapter}-"), \
            f"{solution.name}, cell {i}: label must be ex-{chapter}-..."
        assert "remove-cell" in cells[i].metadata.get("tags", [])
        starts = [j for j in range(i + 1, len(cells))
                  if SOLUTION_START.search(cells[j].source or "")
                  and SOLUTION_START.search(cells[j].source).group(1) == label.group(1)]
        assert starts, f"{solution.name}: no {{solution-start}} {label.group(1)}"
        j = starts[0]
        assert "solution-only" in cells[j].metadata.get("tags", [])
        code = cells[j + 1]
        assert code.cell_type == "code" and exercises.BEGIN in code.source, \
            f"{solution.name}: the cell after solution-start {label.group(1)} has no solution region"
        assert "{solution-end}" in cells[j + 2].source
        check = cells[j + 3]
        printed = "".join(o.get("text", "") for o in check.get("outputs", []))
        assert check.cell_type == "code" and "check." in check.source, \
            f"{solution.name}: no check cell after the solution of {label.group(1)}"
        # The book shows this exercise as "Exercise N.position" (book/_ext/bnbook_numbers.py):
        # the check must say the same number.
        number = f"{int(chapter)}.{position}"
        assert f"✓ Exercise {number} passed" in printed, \
            f"{solution.name}: the stored check of {label.group(1)} (Exercise {number} in the " \
            f"book) did not print '✓ Exercise {number} passed': {printed!r}"
