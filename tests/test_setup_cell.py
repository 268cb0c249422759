"""The first code cell of every notebook (tools/setup_cell.py): stamped everywhere, and in Colab it
installs bnbook from the pinned release or says what to do; it never strands a learner with a bare
ModuleNotFoundError, and it never imports TensorFlow."""

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import setup_cell  # noqa: E402 - tools/ is not a package

SOURCE = setup_cell.cell_source()


def test_release_matches_the_package_version_and_repository():
    url, release, version = setup_cell.settings()
    assert release == f"v{version}", \
        f"_config.yml repository.release {release} is not 'v' + pyproject's version {version}"
    assert f'BNBOOK = "{url}/archive/refs/tags/{release}.zip"' in SOURCE


@pytest.mark.parametrize("path", setup_cell.notebooks(), ids=lambda p: p.name)
def test_every_notebook_starts_with_the_current_cell(path):
    notebook = nbformat.read(path, as_version=4)
    stale = setup_cell.stamp(notebook, SOURCE)
    assert not stale, \
        f"{path.name}: run `python tools/setup_cell.py` (its first code cell is not the standard one)"


class FakePip:
    def __init__(self, returncode, stderr=""):
        self.calls = []
        self.returncode, self.stderr = returncode, stderr

    def __call__(self, args, **kwargs):
        self.calls.append(args)
        return subprocess.CompletedProcess(args, self.returncode, stdout="", stderr=self.stderr)


@pytest.fixture
def colab(monkeypatch):
    """Pretend to be Colab, without bnbook installed; return a function that sets pip's fate."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    real_find_spec = importlib.util.find_spec
    installed = {"bnbook": False}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: (
        (real_find_spec(name, *args) if installed["bnbook"] else None) if name == "bnbook"
        else real_find_spec(name, *args)))

    def pip(returncode, stderr="", installs=False):
        fake = FakePip(returncode, stderr)

        def run(args, **kwargs):
            installed["bnbook"] = installs
            return fake(args, **kwargs)

        monkeypatch.setattr(subprocess, "run", run)
        return fake

    return pip


def test_colab_install_fails_the_learner_is_told_what_to_do(colab, capsys):
    pip = colab(1, stderr="ERROR: Could not find a version that satisfies the requirement\n"
                          "ERROR: No matching distribution found for bnbook")
    with pytest.raises(RuntimeError, match="bnbook is not installed: follow the steps printed above"):
        exec(SOURCE, {})
    printed = capsys.readouterr().out
    url, release, _ = setup_cell.settings()
    archive = f"{url}/archive/refs/tags/{release}.zip"
    assert pip.calls == [[sys.executable, "-m", "pip", "install", "-q", archive]]
    assert "No matching distribution found for bnbook" in printed  # pip's reason
    assert f'!pip install "{archive}"' in printed  # the exact command
    assert "Files panel" in printed and "!pip install /content/batchnorm-tensorflow-0.1.0.zip" in printed
    assert "ModuleNotFoundError" not in printed


def test_colab_pip_succeeds_but_nothing_importable_is_a_failure_too(colab, capsys):
    colab(0, installs=False)
    with pytest.raises(RuntimeError):
        exec(SOURCE, {})
    assert "What to do:" in capsys.readouterr().out


def test_colab_install_works_silently(colab, capsys):
    pip = colab(0, installs=True)
    exec(SOURCE, {})
    assert len(pip.calls) == 1 and capsys.readouterr().out == ""


def test_colab_with_bnbook_already_installed_does_nothing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    pip = FakePip(1)
    monkeypatch.setattr(subprocess, "run", pip)
    exec(SOURCE, {})  # bnbook is installed here: a re-run of the cell installs nothing
    assert pip.calls == [] and capsys.readouterr().out == ""


def test_outside_colab_the_cell_does_nothing_and_never_imports_tensorflow():
    """In a fresh interpreter: no pip, no output, TensorFlow not imported (a notebook's own set-up
    cell may still set TF_USE_LEGACY_KERAS or configure devices before TensorFlow starts)."""
    probe = SOURCE + ("\nimport sys\n"
                      "print(sorted(m for m in ('tensorflow', 'keras', 'bnbook') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "" and run.stdout == "[]\n", run


def test_colab_path_never_imports_tensorflow(colab):
    colab(0, installs=True)
    before = {m for m in ("tensorflow", "keras") if m in sys.modules}
    namespace = {}
    exec(SOURCE, namespace)
    assert not any(isinstance(v, types.ModuleType) and v.__name__.startswith(("tensorflow", "keras"))
                   for v in namespace.values())
    assert {m for m in ("tensorflow", "keras") if m in sys.modules} == before


# --- the stamping tool --------------------------------------------------------------------------

OLD_FIRST_CELL = """# Set-up. On Colab this installs the book's helper package; elsewhere it does nothing.
import sys
if "google.colab" in sys.modules:
    %pip install -q "bnbook @ git+https://github.com/bnbook/batchnorm-tensorflow"
import bnbook  # before TensorFlow
bnbook.setup(seed=0)
import tensorflow as tf"""


def old_notebook(executed: bool) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_markdown_cell("# 5. Topic"),
             nbformat.v4.new_code_cell(OLD_FIRST_CELL),
             nbformat.v4.new_code_cell("print(1)")]
    if executed:
        cells[1].execution_count, cells[2].execution_count = 1, 2
        cells[2].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "1"},
                                                   execution_count=2)]
    return nbformat.v4.new_notebook(cells=cells)


@pytest.mark.parametrize("executed", [True, False], ids=["executed", "exercise"])
def test_stamping_splits_the_old_first_cell_and_is_idempotent(executed):
    notebook = old_notebook(executed)
    assert setup_cell.stamp(notebook, SOURCE)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code[0].source == SOURCE and code[0].id == setup_cell.CELL_ID and code[0].outputs == []
    assert code[1].source == ("import bnbook  # before TensorFlow\nbnbook.setup(seed=0)\n"
                              "import tensorflow as tf")
    counts = [c.execution_count for c in code]
    assert counts == ([1, 2, 3] if executed else [None, None, None])
    if executed:
        assert code[2].outputs[0]["execution_count"] == 3
    once = json.dumps(notebook, sort_keys=True)
    assert not setup_cell.stamp(notebook, SOURCE)
    assert json.dumps(notebook, sort_keys=True) == once
    nbformat.validate(notebook)


def test_a_changed_release_restamps_the_cell():
    notebook = old_notebook(True)
    setup_cell.stamp(notebook, SOURCE)
    newer = SOURCE.replace("v0.1.0", "v0.2.0")
    assert setup_cell.stamp(notebook, newer)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code[0].source == newer and len(code) == 3 and [c.execution_count for c in code] == [1, 2, 3]


def test_a_first_cell_with_only_the_old_install_lines_is_replaced():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(OLD_FIRST_CELL.split("import bnbook")[0].strip()),
        nbformat.v4.new_code_cell("import bnbook")])
    setup_cell.stamp(notebook, SOURCE)
    assert [c.source for c in notebook.cells] == [SOURCE, "import bnbook"]
