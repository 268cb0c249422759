"""A learner's install: `pip install .` into a fresh virtual environment, without extras, brings
only what the notebooks need at run time, and chapter 1's exercise notebook runs with it.

Slow (a virtual environment with TensorFlow): `make fresh-install` runs it, `make unit` does not.
The packages come from a local wheelhouse (BNBOOK_WHEELHOUSE, default ~/.cache/bnbook/wheels),
filled from PyPI on the first run only (about 630 MB), at the versions requirements.txt pins; after
that the install is offline. Writing TensorFlow into a new environment takes minutes on a small
machine, so the environment is kept beside the wheelhouse and made anew only when what it was
made from changes: the Python version, pyproject.toml's dependencies and the pins (the key in its
name). bnbook itself is reinstalled on every run. BNBOOK_FRESH=1 forces a new environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = Path(os.environ.get("BNBOOK_WHEELHOUSE", Path.home() / ".cache" / "bnbook" / "wheels"))
STUB = 'raise NotImplementedError("your code here")'
# What `pip install .` may bring: the runtime needs and their own dependencies. Authoring tools
# (and anything that would pull them in) must not be among them.
AUTHORING = {"jupyter-book", "sphinx", "nbformat", "nbconvert", "nbclient", "nbval", "pytest",
             "ruff", "playwright", "axe-playwright-python", "jupyterlab", "notebook", "ipykernel",
             "myst-nb", "myst-parser", "sphinx-exercise", "pyyaml"}


def name_of(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pinned_runtime() -> list[str]:
    """pyproject's dependencies at the versions requirements.txt pins (the versions tested)."""
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = {name_of(line): line.split("#")[0].strip()
            for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
            if "==" in line and not line.lstrip().startswith("#")}
    return [pins.get(name_of(dep), dep) for dep in runtime]


def package_copy(tmp: Path) -> Path:
    """The helper package's files only (a build must not write into the work tree)."""
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "LICENSE", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "bnbook", source / "bnbook", ignore=shutil.ignore_patterns("__pycache__"))
    return source


def pip(python: Path, *args: str, offline: bool) -> subprocess.CompletedProcess:
    where = ["--no-index", "--find-links", str(WHEELHOUSE)] if offline else []
    return subprocess.run([str(python), "-m", "pip", *args, *where], capture_output=True, text=True,
                          timeout=1800, env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))


def script_of(notebook: Path) -> str:
    """The notebook's code cells as one Python script (IPython syntax turned into plain calls)."""
    cells = nbformat.read(notebook, as_version=4).cells
    transform = TransformerManager().transform_cell
    return "\n".join(transform(c.source) for c in cells if c.cell_type == "code")


def environment_key() -> str:
    """What the environment was made from: Python's version, the dependencies, the pins."""
    made_from = [sys.version.split()[0], dependency_spec(), *pinned_runtime()]
    return hashlib.sha256(repr(made_from).encode()).hexdigest()[:12]


def dependency_spec() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return repr((project["dependencies"], project.get("requires-python")))


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory) -> tuple[Path, list[str]]:
    """(the environment's python, the distributions installed in it)."""
    tmp = tmp_path_factory.mktemp("fresh")
    source = package_copy(tmp)
    venv = WHEELHOUSE.parent / f"venv-{environment_key()}"
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    if os.environ.get("BNBOOK_FRESH") == "1" or not (venv / "complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        install = pip(python, "install", "--quiet", "--no-compile", str(source), *pinned_runtime(),
                      offline=True)
        if install.returncode:  # the first run: fill the wheelhouse from PyPI, then offline
            download = pip(python, "download", "--quiet", "--dest", str(WHEELHOUSE),
                           "setuptools>=77", "wheel", *pinned_runtime(), offline=False)
            assert download.returncode == 0, \
                f"could not fill {WHEELHOUSE}:\n{download.stderr[-3000:]}"
            install = pip(python, "install", "--quiet", "--no-compile", str(source),
                          *pinned_runtime(), offline=True)
        assert install.returncode == 0, f"pip install . failed:\n{install.stderr[-3000:]}"
        (venv / "complete").touch()
    else:  # the same dependencies as when it was made: put this bnbook in, nothing else
        install = pip(python, "install", "--quiet", "--no-deps", "--force-reinstall", str(source),
                      offline=True)
        assert install.returncode == 0, f"pip install . failed:\n{install.stderr[-3000:]}"
        check = pip(python, "check", offline=False)
        assert check.returncode == 0, f"the kept environment is broken:\n{check.stdout}"
    listed = pip(python, "list", "--format=freeze", offline=False)
    names = [line.split("==")[0] for line in listed.stdout.splitlines() if "==" in line]
    return python, names


def test_the_install_brings_the_runtime_and_no_authoring_tool(fresh_python):
    _, names = fresh_python
    lowered = {n.lower().replace("_", "-") for n in names}
    for needed in ("bnbook", "tensorflow", "keras", "numpy", "matplotlib", "tf-keras"):
        assert needed in lowered, f"`pip install .` did not install {needed}"
    assert not lowered & AUTHORING, f"authoring tools in a learner's install: {lowered & AUTHORING}"
    print(f"\nfresh install without extras: {len(names)} distributions (pip included)")


def test_chapter_1_exercise_notebook_runs(fresh_python, tmp_path):
    python, _ = fresh_python
    notebook = sorted(ROOT.glob("notebooks/01_*_exercises.ipynb"))[0]
    (tmp_path / "run.py").write_text(script_of(notebook), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    run = subprocess.run([str(python), "run.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=env)
    assert run.returncode == 0, f"{notebook.name} failed in the fresh environment:\n{run.stderr[-3000:]}"
    assert run.stderr == "", f"{notebook.name} wrote to stderr:\n{run.stderr[-3000:]}"
    stubs = script_of(notebook).count(STUB)
    assert stubs and run.stdout.count("is not done yet") == stubs, run.stdout
    assert "✓ Exercise" not in run.stdout
