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
                "skip-execution", "nbval-ignore-output", "solution-start", "solution-end"}
# A number in e-notation below 1e-6 is round-off (or a quantity that means "zero"): it depends on
# the CPU's kernels, so it must not be printed. "< 1e-07" (a bound) is fine.
E_NOTATION = re.compile(r"(?<![\w.])([-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+)(?![\w.])")
BOUND_BEFORE = re.compile(r"(?:<|>|<=|>=|≤|≥)\s*$")
NEGATIVE_ZERO = re.compile(r"(?<![\w.])-0\.?0*(?![\d.])")  # "-0.", "-0.000": a round-off's sign


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


def round_off_values(text):
    """The numbers printed in e-notation with |value| < 1e-6 that are not a bound ("< 1e-07"),
    and negative zeros ("-0.", "-0.000")."""
    found = [match.group(0) for match in NEGATIVE_ZERO.finditer(text)]
    for match in E_NOTATION.finditer(text):
        if abs(float(match.group(1))) < 1e-6 and not BOUND_BEFORE.search(text[:match.start()]):
            found.append(match.group(1))
    return found


def test_round_off_detector():
    assert round_off_values("largest |gradient| of the bias: 1.2e-07") == ["1.2e-07"]
    assert round_off_values("[ 3.1e-08 -2e-09  0.5 ]") == ["3.1e-08", "-2e-09"]
    assert round_off_values("difference 0e+00") == ["0e+00"]
    assert round_off_values("gradient < 1e-07: True; kernel 3.6e-01, lr 1e-3") == []
    assert round_off_values("weight 2.7e-05, x1e-9, 5e-7b") == []
    assert round_off_values("means [-0.  0.5 -0.000] and -0.05, -0.5, -0.01") == ["-0.", "-0.000"]


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


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: p.name)
def test_no_round_off_printed(path):
    """Stored outputs (outside cells tagged nbval-ignore-output) print no round-off-level values:
    show what they mean instead, e.g. "bias gradient < 1e-6: True" (CONTRIBUTING.md)."""
    for index, cell in enumerate(cells(path)):
        if cell["cell_type"] != "code" or "nbval-ignore-output" in cell.get("metadata", {}).get(
                "tags", []):
            continue
        for output in cell["outputs"]:
            found = round_off_values(output_text(output))
            assert not found, (f"{path.name}, code cell {index} prints round-off-level values "
                               f"{found[:5]}: print what they mean, e.g. '< 1e-6: True'")
