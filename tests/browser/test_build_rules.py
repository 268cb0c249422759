"""The strict build refuses what a reader must never see: stderr stored in a notebook's output.

Builds a one-chapter book with the project's real _config.yml twice: a quiet notebook builds
cleanly, the same notebook with a stderr output fails the build with a message naming it.
"""

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import sitecheck
from tasks import strict_build


def notebook(stderr: bool) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("print('hello')", execution_count=1, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="hello\n")])
    if stderr:
        cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text="W0000 noise\n"))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A chapter"), cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def build(tmp_path: Path, name: str, stderr: bool) -> subprocess.CompletedProcess:
    book = tmp_path / name
    (book / "chapters").mkdir(parents=True)
    shutil.copy(sitecheck.ROOT / "_config.yml", book / "_config.yml")
    (book / "book").symlink_to(sitecheck.ROOT / "book")
    (book / "index.md").write_text("# A one-chapter book\n", encoding="utf-8")
    (book / "_toc.yml").write_text(
        f"format: jb-book\nroot: index\nchapters:\n  - file: chapters/{name}\n", encoding="utf-8")
    nbformat.write(notebook(stderr), book / "chapters" / f"{name}.ipynb")
    return subprocess.run(strict_build(book, path_output=tmp_path / f"{name}-out"),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("stderr", [False, True], ids=["quiet", "noisy"])
def test_stderr_in_a_stored_output_fails_the_strict_build(tmp_path, stderr):
    name = "noisy_chapter" if stderr else "quiet_chapter"
    run = build(tmp_path, name, stderr)
    log = run.stdout + run.stderr
    if not stderr:
        assert run.returncode == 0, f"the quiet notebook should build cleanly:\n{log[-3000:]}"
        return
    assert run.returncode != 0, "a notebook with stderr in its outputs built without error"
    complaints = [line for line in log.splitlines() if name in line and "stderr" in line.lower()]
    assert complaints, f"the build failed without naming {name} and stderr:\n{log[-3000:]}"
