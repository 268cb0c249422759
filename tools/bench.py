"""`make bench`: seconds to execute each notebook in a fresh kernel, the total, and the book build.

Notebooks are executed on temporary copies, so the committed ones are untouched. Run it on an
otherwise idle machine: the numbers are wall-clock seconds on whatever this machine is.

    python tools/bench.py                      # every notebook, the book build, the site check
    python tools/bench.py notebooks/10_*.ipynb # only these notebooks (make bench NB="...")
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from run_notebooks import QUIET_KERNEL
from tasks import ROOT, strict_build


def execute_copy(path: Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                                extra_arguments=QUIET_KERNEL, resources={"metadata": {"path": tmp}})
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start


def build_book() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(strict_build(path_output=Path(tmp), quiet=True), check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        shutil.rmtree(tmp, ignore_errors=True)
        return seconds


def main(argv: list[str]) -> int:
    if argv:
        notebooks = [Path(name).resolve() for name in argv]
    else:
        notebooks = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("solutions/*.ipynb"))
    rows = []
    for path in notebooks:
        rows.append((str(path.relative_to(ROOT)), execute_copy(path)))
        print(f"  ran {rows[-1][0]} in {rows[-1][1]:.1f} s", file=sys.stderr)
    total = sum(seconds for _, seconds in rows)
    if argv:
        for name, seconds in rows:
            print(f"| {name} | {seconds:7.1f} |")
        return 0
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
    print(f"| {'doctor: ResNet50, 128 images (target 30 s)'.ljust(width)} | "
          f"{doctor_resnet50():7.1f} |")
    print_ratios()
    return 0


# Modules that measure speed-ups of their own: each may define bench_ratios() -> [(label, ratio)].
RATIO_MODULES = ("bnbook.lessons.backward_pass", "bnbook.lessons.devices_deployment")


def print_ratios() -> None:
    """One table of the ratios that the modules in RATIO_MODULES report (those that exist)."""
    rows = []
    for name in RATIO_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise  # the module exists but cannot import what it needs
            continue
        if hasattr(module, "bench_ratios"):
            rows += [(f"{name}: {label}", ratio) for label, ratio in module.bench_ratios()]
    if not rows:
        return
    width = max(len(label) for label, _ in rows)
    print()
    print(f"| {'ratio'.ljust(width)} |   value |")
    print(f"| {'-' * width} | ------: |")
    for label, ratio in rows:
        print(f"| {label.ljust(width)} | {ratio:7.2f} |")


def doctor_resnet50() -> float:
    """Seconds for `bnbook.doctor.examine` on an untrained ResNet50 with 128 images, in a fresh
    process (the model is built before the clock starts)."""
    out = subprocess.run([sys.executable, "-c", "import bnbook.doctor as d; "
                          "print(d.bench_resnet50(n_images=128))"],
                         check=True, cwd=ROOT, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def site_check() -> float:
    """Seconds for `pytest tests/browser` on a fresh strict build (the build is not timed here)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(strict_build(path_output=Path(tmp), quiet=True), check=True,
                       stdout=subprocess.DEVNULL)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/browser", f"--html-dir={tmp}/_build/html"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
