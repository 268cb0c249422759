"""`make stability NB=...`: which cells of a notebook change their output with the CPU's kernels.

    python tools/stability.py notebooks/08_small_batches.ipynb [more notebooks]

Runs strict nbval (stored outputs compared) on the notebooks under three kernel sets other than
the default one (``tools/second_pass.py`` defines them: oneDNN capped at SSE4.1, oneDNN's rewrites
off, and the second pass of ``make test``, which also narrows NumPy's SIMD), then prints, for each
cell that failed under any of them, the kernel sets it failed under. Run it on an experiment
before committing it: a cell listed here prints digits that depend on the last bits of some
kernel, and will fail on another machine. Execute the notebook first (``make notebooks NB=...``)
so that its stored outputs are the default kernels' ones. Exit status 1 if any cell changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from second_pass import kernel_sets

ROOT = Path(__file__).resolve().parent.parent
FAILED = re.compile(r"^FAILED (\S+?)::Cell (\d+)")


LOGS = ROOT / "_build" / "stability"


def failing_cells(notebooks: list[str], env: dict[str, str], log: Path) -> set[tuple[str, int]]:
    """(notebook, nbval cell number) of every cell whose strict nbval check fails under ``env``;
    nbval's whole report (what differed, or the error) goes to ``log``."""
    command = [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p",
               "no:cacheprovider", "-q", "-rf", "--color=no", *notebooks]
    out = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True).stdout
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(out)
    return {(m.group(1), int(m.group(2))) for line in out.splitlines()
            if (m := FAILED.match(line))}


def main(notebooks: list[str]) -> int:
    if not notebooks:
        print("usage: stability.py NOTEBOOK [NOTEBOOK ...]   (make stability NB=...)",
              file=sys.stderr)
        return 2
    changed: dict[tuple[str, int], list[str]] = {}
    for number, (name, env) in enumerate(kernel_sets().items(), start=1):
        settings = " ".join(f"{k}={env[k]!r}" for k in sorted(env)
                            if k in ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS",
                                     "NPY_DISABLE_CPU_FEATURES"))
        print(f"kernel set '{name}': {settings}", flush=True)
        log = LOGS / f"kernel-set-{number}.log"
        cells = failing_cells(notebooks, env, log)
        print(f"  {len(cells)} cell(s) changed; nbval's report: {log.relative_to(ROOT)}", flush=True)
        for cell in cells:
            changed.setdefault(cell, []).append(name)
    if not changed:
        print("every cell printed the same output under all three kernel sets")
        return 0
    print("\ncells whose output changed (nbval's cell numbers count code cells from 0):")
    for (notebook, cell), names in sorted(changed.items()):
        print(f"  {notebook} cell {cell}: {', '.join(names)}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
