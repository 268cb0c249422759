"""Execute notebooks in place, top to bottom in a fresh kernel, the way nbval will re-run them.

    python tools/run_notebooks.py notebooks/01_transform.ipynb solutions/01_transform_solutions.ipynb

Used by `make notebooks` after a notebook is edited. It stores outputs and execution counts 1..n,
no timing metadata (which would churn the diffs), and fails on the first error in a cell that is
not tagged `raises-exception`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

# The kernel's own log (e.g. "Kernel is running over TCP without encryption", on a loopback
# connection) is not the notebook's output: show only its errors. Used by tools/bench.py too.
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


def run(path: Path, timeout: int = 600) -> float:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                            extra_arguments=QUIET_KERNEL,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(notebook, path)
    return seconds


def main(paths: list[str]) -> int:
    for name in paths:
        seconds = run(Path(name))
        print(f"{name}: executed in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
