"""Stamp the standard first code cell into every notebook (or check that it is there).

    python tools/setup_cell.py           # write the cell into notebooks/*.ipynb, solutions/*.ipynb
    python tools/setup_cell.py --check   # exit 1 if a notebook lacks the current cell
    python tools/setup_cell.py --print   # show the cell

The cell is the same in every notebook. In Colab it installs the book's helper package, bnbook,
from the pinned release (``repository.url`` and ``repository.release`` in _config.yml: the one
place to change them); if the install fails it prints what to do and stops the run, instead of
letting the next cell fail with a bare ``ModuleNotFoundError``. Anywhere else it does nothing. It
never imports TensorFlow: each notebook's own set-up cell comes next (``import bnbook``,
``bnbook.setup(seed=0)``), so a notebook can set environment variables (``TF_USE_LEGACY_KERAS``)
or configure devices before TensorFlow starts.

Stamping is idempotent. A notebook whose first code cell still holds the old ``%pip install``
lines loses them and gets the standard cell in front; stored execution counts are renumbered 1..n
(the stamped cell prints nothing, so no stored output changes).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
CELL_ID = "bnbook-setup"
SIGNATURE = "# Set-up: the same first cell in every notebook (tools/setup_cell.py writes it)."
TAGS = ["remove-cell"]  # the site needs no install step; Colab, Lab and VS Code show the cell
# The set-up lines of the notebooks before this tool: removed from the first code cell.
OLD_COMMENT = "# Set-up. On Colab this installs the book's helper package; elsewhere it does nothing."
OLD_IF = 'if "google.colab" in sys.modules:'

TEMPLATE = '''{signature}
# In Colab it installs the book's helper package, bnbook, at the release these notebooks were
# written for; anywhere else it does nothing (your environment already has bnbook).
import sys

if "google.colab" in sys.modules:
    import importlib.util
    import subprocess

    BNBOOK = "{archive}"
    if importlib.util.find_spec("bnbook") is None:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", BNBOOK],
                             capture_output=True, text=True)
        importlib.invalidate_caches()
        if pip.returncode != 0 or importlib.util.find_spec("bnbook") is None:
            print("Could not install the book's helper package, bnbook. pip said:")
            print("\\n".join((pip.stderr or pip.stdout).strip().splitlines()[-5:]))
            print(f"""
What to do:
1. Run this cell again (a download can fail once).
2. Or run the install yourself in a new cell, and read pip's full message:
       !pip install "{{BNBOOK}}"
3. If this session cannot reach GitHub: download {{BNBOOK}}
   on a computer that can, upload the file with Colab's Files panel (the folder icon on the
   left), and run in a new cell:
       !pip install /content/{filename}
Then run this cell again and go on.""")
            raise RuntimeError("bnbook is not installed: follow the steps printed above.")'''


def settings(root: Path = ROOT) -> tuple[str, str, str]:
    """(repository URL, release tag, package version) from _config.yml and pyproject.toml."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    repository = config["repository"]
    version = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    return repository["url"].rstrip("/"), str(repository["release"]), version


def cell_source(root: Path = ROOT) -> str:
    url, release, _ = settings(root)
    name = url.split("/")[-1]
    # GitHub names a tag's archive <repository>-<tag without a leading v>.zip.
    filename = f"{name}-{release.removeprefix('v')}.zip"
    return TEMPLATE.format(signature=SIGNATURE, archive=f"{url}/archive/refs/tags/{release}.zip",
                           filename=filename)


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted(root.glob("notebooks/*.ipynb")) + sorted(root.glob("solutions/*.ipynb"))


def _without_old_setup(source: str) -> str:
    """The first code cell without the old Colab install lines (the rest is the notebook's own)."""
    lines = source.splitlines()
    out = []
    skip_next = False
    for line in lines:
        if skip_next:
            skip_next = False
            if line.startswith((" ", "\t")) and "pip install" in line:
                continue
        if line.strip() == OLD_IF:
            skip_next = True
            continue
        if line.strip() in (OLD_COMMENT, "import sys"):
            continue
        out.append(line)
    return "\n".join(out).strip("\n")


def stamp(notebook: nbformat.NotebookNode, source: str) -> bool:
    """Put the standard first code cell into ``notebook``; True when something changed."""
    code = [c for c in notebook.cells if c.cell_type == "code"]
    executed = any(c.get("execution_count") is not None for c in code)
    first = code[0] if code else None
    if first is not None and (first.get("id") == CELL_ID or first.source.startswith(SIGNATURE)):
        changed = first.source != source or first.metadata.get("tags") != TAGS
        first.source = source
        first.metadata["tags"] = list(TAGS)
        return changed
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(TAGS)})
    cell.id = CELL_ID
    if first is not None:
        at = notebook.cells.index(first)
        first.source = _without_old_setup(first.source)
        if not first.source.strip():  # it held nothing but the old install lines
            notebook.cells.remove(first)
    else:
        at = len(notebook.cells)
    notebook.cells.insert(at, cell)
    if executed:
        count = 0
        for c in notebook.cells:
            if c.cell_type == "code":
                count += 1
                c.execution_count = count
                for output in c.get("outputs", []):
                    if "execution_count" in output:
                        output["execution_count"] = count
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="do not write; exit 1 if any notebook "
                      "lacks the current cell")
    mode.add_argument("--print", action="store_true", help="print the cell and exit")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: all of the book's)")
    args = parser.parse_args(argv)
    url, release, version = settings()
    if release.removeprefix("v") != version:
        print(f"_config.yml's repository.release ({release}) is not pyproject.toml's version "
              f"({version}): Colab would install another bnbook than this one.")
        return 1
    source = cell_source()
    if args.print:
        print(source)
        return 0
    stale = []
    for path in args.paths or notebooks():
        text = path.read_text(encoding="utf-8")
        notebook = nbformat.reads(text, as_version=4)
        if not stamp(notebook, source):
            continue
        if args.check:
            stale.append(str(path))
        else:
            path.write_text(nbformat.writes(notebook) + "\n", encoding="utf-8")
            print(f"stamped {path}")
    if stale:
        print("Notebooks without the current first cell (run `python tools/setup_cell.py`): "
              + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
