"""Write each exercise notebook from its solution notebook (the single source of truth).

    python tools/make_exercises.py            # regenerate notebooks/*_exercises.ipynb
    python tools/make_exercises.py --check    # exit 1 if any exercise notebook is stale

Rules applied to ``solutions/NN_name_solutions.ipynb`` to make ``notebooks/NN_name_exercises.ipynb``:

* code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (always inside a function body) is
  replaced by a stub that raises ``NotImplementedError``, so the learner's function is easy to find
  and the notebook still runs top to bottom;
* cells tagged ``solution-only`` (e.g. the ``{solution-start}``/``{solution-end}`` markup, remarks
  on the solution) are dropped;
* cells tagged ``exercise-statement`` are kept and lose their ``remove-cell`` tag: on the solutions
  page of the book the statement is hidden (the solution links to it), on the exercises page it is
  shown as a numbered ``{exercise}`` block;
* the title's trailing "— solutions" becomes "— exercises";
* outputs and execution counts are cleared.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent  # the repository (this file is tools/make_exercises.py)
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = "raise NotImplementedError(\"your code here\")"
TITLE = re.compile(r"^(# .+?) — solutions\s*$", re.MULTILINE)


class GeneratorError(ValueError):
    pass


def stub_source(source: str, where: str) -> str:
    """Replace each BEGIN/END SOLUTION region of one cell's source by a stub."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise GeneratorError(f"{where}, line {number}: nested {BEGIN}")
            indent = line[: len(line) - len(line.lstrip())]
            if not indent:
                raise GeneratorError(
                    f"{where}, line {number}: a solution region must sit inside a function body "
                    "so the exercise notebook still runs top to bottom"
                )
            out.append(f"{indent}# Your code here.")
            out.append(f"{indent}{STUB}")
            inside = True
        elif stripped == END:
            if not inside:
                raise GeneratorError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise GeneratorError(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


def make_exercises(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    exercises = nbformat.v4.new_notebook(metadata=solution.metadata)
    retitled = False
    for index, cell in enumerate(solution.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if "solution-only" in tags:
            continue
        new = nbformat.from_dict(cell)
        if "exercise-statement" in tags:
            new.metadata["tags"] = [t for t in tags if t != "remove-cell"]
        if cell.cell_type == "markdown" and not retitled:
            new.source, count = TITLE.subn(r"\1 — exercises", cell.source, count=1)
            if not count:
                raise GeneratorError(f"{name}: the first markdown cell's title must end with "
                                     "' — solutions'")
            retitled = True
        if cell.cell_type == "code":
            new.source = stub_source(cell.source, f"{name}, cell {index}")
            new.outputs = []
            new.execution_count = None
        exercises.cells.append(new)
    return exercises


def pairs(root: Path = ROOT):
    """(solution notebook, exercise notebook) paths, one pair per chapter."""
    for solution in sorted((root / "solutions").glob("*_solutions.ipynb")):
        target = root / "notebooks" / solution.name.replace("_solutions.ipynb", "_exercises.ipynb")
        yield solution, target


def render(solution_path: Path) -> str:
    solution = nbformat.read(solution_path, as_version=4)
    exercises = make_exercises(solution, solution_path.name)
    return nbformat.writes(exercises) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if any exercise notebook differs")
    args = parser.parse_args(argv)
    stale = []
    for solution, target in pairs():
        text = render(solution)
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(target.relative_to(ROOT))
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print("Stale exercise notebooks (run `make exercises`): "
              + ", ".join(str(s) for s in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
