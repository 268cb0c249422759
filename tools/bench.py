"""`make bench`: seconds to execute each notebook in a fresh kernel, the total, and the book build.

Notebooks are executed on temporary copies, so the committed ones are untouched. Run it on an
otherwise idle machine: the numbers are wall-clock seconds on whatever this machine is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def execute_copy(path: Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                                resources={"metadata": {"path": tmp}})
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start


def build_book() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT),
                        "--all", "-W", "-n", "--keep-going", "--path-output", tmp, "-q"],
                       check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        shutil.rmtree(tmp, ignore_errors=True)
        return seconds


def main() -> int:
    notebooks = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("solutions/*.ipynb"))
    rows = []
    for path in notebooks:
        rows.append((str(path.relative_to(ROOT)), execute_copy(path)))
        print(f"  ran {rows[-1][0]} in {rows[-1][1]:.1f} s", file=sys.stderr)
    total = sum(seconds for _, seconds in rows)
    book = build_book()
    width = max(len(name) for name, _ in rows) if rows else 10
    print(f"| {'notebook'.ljust(width)} | seconds |")
    print(f"| {'-' * width} | ------: |")
    for name, seconds in rows:
        print(f"| {name.ljust(width)} | {seconds:7.1f} |")
    print(f"| {'total (notebooks)'.ljust(width)} | {total:7.1f} |")
    print(f"| {'book build (strict, stored outputs)'.ljust(width)} | {book:7.1f} |")
    # Rendered-site check (issue 5): every toc page in headless Chromium, plus a JupyterLab session.
    print(f"| {'site check (tests/browser)'.ljust(width)} | {site_check():7.1f} |")
    return 0


def site_check() -> float:
    """Seconds for `pytest tests/browser` on a fresh strict build (the build is not timed here)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT),
                        "--all", "-W", "-n", "--keep-going", "--path-output", tmp, "-q"],
                       check=True, stdout=subprocess.DEVNULL)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/browser", f"--html-dir={tmp}/_build/html"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
