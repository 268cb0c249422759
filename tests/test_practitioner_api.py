"""The practitioner API: the names users call on their own models, on `bnbook` itself, loaded
without any lesson helper, each documented, and each module on the API reference page."""

import inspect
import os
import pathlib
import subprocess
import sys

import pytest

import bnbook

ROOT = pathlib.Path(__file__).resolve().parents[1]
API_MODULES = ("statistics", "folding", "doctor")


def test_importing_the_api_loads_no_lesson_helper():
    # A fresh interpreter: this test process has imported lesson helpers already.
    code = ("import sys, bnbook; "
            "[getattr(bnbook, n) for n in bnbook.__all__]; "
            "print(sorted(m for m in sys.modules if m.startswith('bnbook.')))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    loaded = eval(out.stdout.strip())   # noqa: S307 - our own printed list
    assert {"bnbook.statistics", "bnbook.folding", "bnbook.doctor"} <= set(loaded)
    assert not [m for m in loaded if m.startswith(("bnbook.lessons", "bnbook.checks"))], loaded


@pytest.mark.parametrize("name", [n for n in bnbook.__all__ if n != "setup"])
def test_every_api_name_is_the_modules_own_and_documented(name):
    value = getattr(bnbook, name)
    module = sys.modules[value.__module__]
    assert module.__name__ in {f"bnbook.{m}" for m in API_MODULES}
    assert name in module.__all__
    assert inspect.getdoc(value), f"{name} has no docstring"


def test_unknown_names_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'recalibrate'"):
        bnbook.recalibrate  # noqa: B018


def test_the_api_page_documents_every_api_module_and_is_in_the_toc():
    page = (ROOT / "book" / "api.md").read_text()
    for module in API_MODULES:
        assert f".. automodule:: bnbook.{module}" in page
    assert "file: book/api" in (ROOT / "_toc.yml").read_text()
    assert "sphinx.ext.autodoc" in (ROOT / "_config.yml").read_text()


def test_lesson_helpers_are_named_after_the_notebooks_they_serve():
    slugs = {p.stem.split("_", 1)[1] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
             if not p.stem.endswith("_exercises")}
    shared = {"data", "plots"}
    modules = {p.stem for p in (ROOT / "bnbook" / "lessons").glob("*.py") if p.stem != "__init__"}
    assert modules - shared <= slugs, modules - shared - slugs
