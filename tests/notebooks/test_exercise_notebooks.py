"""What a learner sees on opening an exercise notebook, unchanged: it runs top to bottom, and the
check cell after every exercise says "not done yet" (rather than failing or, worse, passing).

Slow (it executes the notebooks): `make nbval-exercises` runs it, `make unit` does not.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
EXERCISES = sorted(ROOT.glob("notebooks/*_exercises.ipynb"))
STUB = 'raise NotImplementedError("your code here")'


def stdout_of(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_runs_and_every_check_says_not_done(path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    stubs = [i for i, c in enumerate(code) if STUB in c.source]
    assert stubs, f"{path.name} has no exercise stubs"
    for i in stubs:
        check = code[i + 1]
        assert "check." in check.source, \
            f"{path.name}: the cell after exercise stub {i} is not a check cell"
        assert "is not done yet" in stdout_of(check), \
            f"{path.name}: the check after stub {i} printed {stdout_of(check)!r}"
