"""The install files agree with each other: a lean package, pinned learner and author sets, Binder,
licences, citation, the supported Pythons, and the one definition of the strict build."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import check_python  # noqa: E402 - tools/ is not a package
import tasks  # noqa: E402

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
RUNTIME = {"tensorflow", "keras", "numpy", "matplotlib", "tf-keras"}


def names(lines):
    return {re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
            for line in lines if line.strip() and not line.strip().startswith(("#", "-"))}


def requirement_lines(name):
    return (ROOT / name).read_text(encoding="utf-8").splitlines()


def test_the_package_needs_only_the_runtime():
    assert names(PROJECT["dependencies"]) == RUNTIME
    assert "optional-dependencies" not in PROJECT or not any(
        names(deps) & RUNTIME for deps in PROJECT["optional-dependencies"].values())


def test_learner_set_pins_the_runtime_and_jupyterlab_and_nothing_for_authors():
    lines = requirement_lines("requirements.txt")
    pinned = names(line for line in lines if "==" in line)
    assert RUNTIME <= pinned
    assert pinned - RUNTIME == {"jupyterlab", "jupyterlab-myst", "ipykernel"}
    assert "-e ." in [line.strip() for line in lines]


def test_author_set_adds_the_tools_to_the_learner_set():
    lines = requirement_lines("requirements-dev.txt")
    assert "-r requirements.txt" in [line.strip() for line in lines]
    assert {"jupyter-book", "nbval", "pytest", "ruff", "playwright", "axe-playwright-python",
            "markdown-it-py"} <= names(lines)
    assert all("==" in line for line in lines if line.strip() and line[0] not in "#-")


def test_binder_installs_the_learner_set():
    assert [line.strip() for line in requirement_lines("binder/requirements.txt")
            if line.strip() and not line.startswith("#")] == ["-r ../requirements.txt"]
    low, _ = check_python.supported()
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == f"python-3.{low}"


def test_licences_and_citation():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "CC BY 4.0" in (ROOT / "LICENSE-CONTENT").read_text(encoding="utf-8")
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in intro and "MIT licence" in intro
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["version"] == PROJECT["version"]
    assert citation["license"] == ["MIT", "CC-BY-4.0"]
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert citation["repository-code"] == config["repository"]["url"]


def test_python_check_follows_requires_python():
    assert PROJECT["requires-python"] == ">=3.11,<3.14"
    assert check_python.supported() == (11, 13)
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "check_python.py")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_one_strict_build_command():
    command = tasks.strict_build(ROOT)
    assert command[0].endswith(("jupyter-book", "jupyter-book.exe"))
    assert command[1:] == ["build", str(ROOT), "--all", "-W", "-n", "--keep-going"]
    for path in ("Makefile", "tools/bench.py", "tests/browser/test_build_rules.py"):
        text = (ROOT / path).read_text(encoding="utf-8")
        assert "--keep-going" not in text, f"{path} spells the build out: use tools/tasks.py"


def test_lab_opens_the_whole_repository_at_notebooks():
    command = tasks.lab_command()
    assert f"--notebook-dir={ROOT}" in command
    assert "--LabApp.default_url=/lab/tree/notebooks" in command


def test_bench_prints_the_ratios_of_modules_that_report_them(monkeypatch, capsys):
    import types

    import bench

    backward = types.ModuleType("bnbook.lessons.backward_pass")
    backward.bench_ratios = lambda: [("fused / by hand", 1.5), ("graph / eager", 3.25)]
    monkeypatch.setitem(sys.modules, "bnbook.lessons.backward_pass", backward)
    none = types.ModuleType("bnbook.lessons.devices_deployment")
    monkeypatch.setitem(sys.modules, "bnbook.lessons.devices_deployment", none)
    bench.print_ratios()
    printed = capsys.readouterr().out
    assert "| bnbook.lessons.backward_pass: fused / by hand |    1.50 |" in printed
    assert "| bnbook.lessons.backward_pass: graph / eager   |    3.25 |" in printed
    assert "deploy" not in printed
