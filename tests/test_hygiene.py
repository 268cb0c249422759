"""Stored notebooks are what readers see and what nbval compares: keep them clean."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = sorted(p for p in ROOT.glob("notebooks/*.ipynb") if not p.name.endswith("_exercises.ipynb"))
EXECUTED += sorted(ROOT.glob("solutions/*.ipynb"))
EXERCISES = sorted(ROOT.glob("notebooks/*_exercises.ipynb"))
MEMORY_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
MACHINE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.-]+/){2,}|site-packages|/work/|/root/|/home/|/tmp/")
ALLOWED_TAGS = {"raises-exception", "exercise-statement", "solution-only", "remove-cell",
                "remove-input", "remove-output", "hide-input", "hide-output", "hide-cell",
                "skip-execution"}


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def output_text(output):
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    data = output.get("data", {})
    text = "".join(data.get("text/plain", "")) + "".join(data.get("text/html", ""))
    if output.get("output_type") == "error":
        text += output.get("ename", "") + output.get("evalue", "")
    return text


def test_there_are_notebooks():
    assert EXECUTED and EXERCISES


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: p.name)
def test_executed_top_to_bottom(path):
    code = [c for c in cells(path) if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: execution counts {counts}"
    assert any(c["outputs"] for c in code), f"{path.name} stores no outputs"


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: p.name)
def test_outputs_clean(path):
    for index, cell in enumerate(cells(path)):
        if cell["cell_type"] != "code":
            continue
        tags = set(cell.get("metadata", {}).get("tags", []))
        where = f"{path.name}, code cell {index}"
        for output in cell["outputs"]:
            kind = output["output_type"]
            assert not (kind == "stream" and output["name"] == "stderr"), \
                f"{where} stores stderr: {output_text(output)[:200]!r}"
            assert kind != "error" or "raises-exception" in tags, \
                f"{where} stores an error but is not tagged raises-exception"
            text = output_text(output)
            assert not MEMORY_ADDRESS.search(text), f"{where} shows a memory address"
            assert not MACHINE_PATH.search(text), \
                f"{where} shows a machine path: {MACHINE_PATH.search(text).group(0)}"
            data = output.get("data", {})
            assert "image/svg+xml" not in data, f"{where} stores an SVG (use PNG)"
            assert "application/vnd.jupyter.widget-view+json" not in data, \
                f"{where} stores a widget (progress bar?)"


@pytest.mark.parametrize("path", EXECUTED + EXERCISES, ids=lambda p: p.name)
def test_tags_known_and_size(path):
    for index, cell in enumerate(cells(path)):
        unknown = set(cell.get("metadata", {}).get("tags", [])) - ALLOWED_TAGS
        assert not unknown, f"{path.name}, cell {index}: unknown tags {unknown}"
    assert path.stat().st_size < 2_000_000, f"{path.name} is over 2 MB"


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_exercise_notebooks_store_nothing(path):
    for cell in cells(path):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
        assert "### BEGIN SOLUTION" not in "".join(cell["source"])
