"""The book's commands without make (Windows, macOS, Linux). Run it with the project's Python:

    .venv/bin/python tools/tasks.py lab        # macOS, Linux
    .venv\\Scripts\\python tools\\tasks.py lab   # Windows

Commands:
    lab        JupyterLab at the repository's root, opened on notebooks/ (solutions/ is one
               folder up in Lab's file browser)
    book       build the HTML book strictly (any warning fails) into _build/html
    exercises  regenerate the exercise notebooks from the solution notebooks
    test       the checks that run anywhere: ruff, the exercise and first-cell staleness checks,
               the unit tests, strict nbval of lessons and solutions (twice: the second time
               with other numeric kernels, tools/second_pass.py), the exercise notebooks,
               a fresh install of the helper package, the strict build (the browser tests
               need a Chromium: `make site-test`, or `pytest tests/browser` with BNBOOK_BROWSER)

This file is also the one definition of the strict build command (`strict_build`), used by the
Makefile, tools/bench.py and the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def script(name: str) -> str:
    """A console script installed beside this Python (bin/ or Scripts\\)."""
    found = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(
        name, path=str(Path(sys.executable).parent))
    if not found:
        raise SystemExit(f"{name} is not installed in this Python ({sys.executable}): "
                         "install requirements-dev.txt into it first")
    return found


def strict_build(root: Path = ROOT, path_output: Path | None = None, quiet: bool = False) -> list[str]:
    """The strict book build: every warning is an error, every reference must resolve."""
    command = [script("jupyter-book"), "build", str(root), "--all", "-W", "-n", "--keep-going"]
    if path_output is not None:
        command += ["--path-output", str(path_output)]
    if quiet:
        command.append("-q")
    return command


def lab_command() -> list[str]:
    """JupyterLab on the whole repository (lessons, exercises and solutions), opened on notebooks/."""
    command = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={ROOT}",
               "--LabApp.default_url=/lab/tree/notebooks"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI run as root
    return command


def notebook_env() -> dict[str, str]:
    """What the notebooks need in the environment (the Makefile exports the same)."""
    env = dict(os.environ, PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="3")
    shared = ROOT.parent / "shared" / "data" / "mnist.npz"
    if "MNIST_NPZ" not in env and shared.exists():
        env["MNIST_NPZ"] = str(shared)
    return env


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command, cwd=ROOT, env=notebook_env())
    if done.returncode:
        raise SystemExit(done.returncode)


def notebooks() -> tuple[list[str], list[str]]:
    """(lessons and solutions, exercise notebooks) as paths relative to the root."""
    names = [p.relative_to(ROOT).as_posix() for p in sorted(ROOT.glob("notebooks/*.ipynb"))]
    executed = [n for n in names if not n.endswith("_exercises.ipynb")]
    executed += [p.relative_to(ROOT).as_posix() for p in sorted(ROOT.glob("solutions/*.ipynb"))]
    return executed, [n for n in names if n.endswith("_exercises.ipynb")]


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    python = [sys.executable]
    if command == "lab":
        run(lab_command())
    elif command == "book":
        run(strict_build())
        print(f"The book is at {(ROOT / '_build' / 'html' / 'index.html').as_uri()}")
    elif command == "exercises":
        run(python + ["tools/make_exercises.py"])
    elif command == "test":
        executed, _ = notebooks()
        pytest = python + ["-m", "pytest", "-p", "no:cacheprovider", "-q"]
        run([script("ruff"), "check", "."])
        run(python + ["tools/make_exercises.py", "--check"])
        run(python + ["tools/setup_cell.py", "--check"])
        run(pytest + ["tests", "--ignore=tests/notebooks", "--ignore=tests/browser",
                      "--ignore=tests/install"])
        run(pytest + ["--nbval", "--nbval-current-env"] + executed)
        # The same pass with other numeric kernels (tools/second_pass.py says which it turns off).
        run(python + ["tools/second_pass.py", "--"] + pytest + ["--nbval", "--nbval-current-env"]
            + executed)
        run(pytest + ["tests/notebooks"])
        run(pytest + ["tests/install"])
        shutil.rmtree(ROOT / "_build" / "html", ignore_errors=True)
        run(strict_build())
        print("tools/tasks.py test: all checks passed (browser tests: `pytest tests/browser`)")
    else:
        print(__doc__)
        return 0 if command in ("help", "-h", "--help") else 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
