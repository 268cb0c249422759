"""Run the wrong-answer catalogue (tests/catalogue/wrong_answers.py) against the checkers.

Every right answer must pass; at least 98% of the wrong answers must be rejected, and at least
two thirds of the rejected ones must get a message that names the mistake: one that contains one
of the entry's expected words and is not the checkers' generic "matches no mistake" message.
Run with -s for the per-exercise table.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict

import pytest

from bnbook.checks import ExerciseMistake

from .wrong_answers import ENTRIES, Entry

GENERIC = "matches no mistake this check knows"   # _core.match's locating message
PASSED = "✓ Exercise"
MIN_REJECTED = 0.98
MIN_NAMED = 2 / 3


def run(entry: Entry) -> tuple[str, str]:
    """('passed' | 'rejected' | 'crashed', message). A checker that prints instead of raising
    (the "not done yet" line) is a rejection with the printed text as its message."""
    out = io.StringIO()
    args = entry.answer if isinstance(entry.answer, tuple) else (entry.answer,)
    try:
        with contextlib.redirect_stdout(out):
            entry.checker(*args)
    except ExerciseMistake as err:
        return "rejected", str(err)
    except Exception as err:  # noqa: BLE001 - a checker that crashes: reported, counted apart
        return "crashed", f"{type(err).__name__}: {err}"
    printed = out.getvalue().strip()
    if printed.startswith(PASSED):
        return "passed", printed
    return "rejected", printed


def named(entry: Entry, message: str) -> bool:
    if entry.keywords is None or GENERIC in message:
        return False
    text = message.lower()
    return any(word.lower() in text for word in entry.keywords)


_RESULTS: dict[int, tuple[str, str]] = {}


def results() -> dict[int, tuple[str, str]]:
    if not _RESULTS:
        for i, entry in enumerate(ENTRIES):
            _RESULTS[i] = run(entry)
    return _RESULTS


def _label_key(label: str):
    return tuple(int(p) for p in label.split("."))


def test_catalogue_is_complete():
    by_label = defaultdict(lambda: [0, 0])
    for entry in ENTRIES:
        by_label[entry.label][entry.right] += 1
    for label, (wrongs, rights) in by_label.items():
        assert wrongs >= 4, f"exercise {label}: {wrongs} wrong answers"
        assert rights >= 2, f"exercise {label}: {rights} right answers"
    chapters = {_label_key(label)[0] for label in by_label}
    assert chapters == set(range(1, 12))


@pytest.mark.parametrize("index", [i for i, e in enumerate(ENTRIES) if e.right],
                         ids=lambda i: f"{ENTRIES[i].label}-right-{i}")
def test_right_answer_passes(index):
    outcome, message = results()[index]
    assert outcome == "passed", f"{ENTRIES[index].description}: {message}"


def _table() -> tuple[dict, list[str]]:
    rows = defaultdict(lambda: {"right": 0, "right_ok": 0, "wrong": 0, "rejected": 0,
                                "named": 0})
    problems = []
    for i, entry in enumerate(ENTRIES):
        outcome, message = results()[i]
        row = rows[entry.label]
        if entry.right:
            row["right"] += 1
            row["right_ok"] += outcome == "passed"
            continue
        row["wrong"] += 1
        if outcome == "passed":
            problems.append(f"{entry.label} ACCEPTED: {entry.description}")
            continue
        row["rejected"] += 1
        if named(entry, message):
            row["named"] += 1
        else:
            kind = "CRASH" if outcome == "crashed" else \
                "GENERIC" if GENERIC in message else "UNNAMED"
            problems.append(f"{entry.label} {kind}: {entry.description}\n      -> "
                            + message.replace("\n", " | ")[:400])
    return rows, problems


def test_thresholds():
    rows, problems = _table()
    totals = {k: sum(r[k] for r in rows.values()) for k in ("right", "right_ok", "wrong",
                                                          "rejected", "named")}
    print("\n\nexercise  right ok/total  wrong rejected/total  named/rejected")
    for label in sorted(rows, key=_label_key):
        r = rows[label]
        print(f"{label:>8}  {r['right_ok']:>5}/{r['right']:<8} {r['rejected']:>8}/{r['wrong']:<13}"
              f"{r['named']:>4}/{r['rejected']}")
    print(f"{'total':>8}  {totals['right_ok']:>5}/{totals['right']:<8} "
          f"{totals['rejected']:>8}/{totals['wrong']:<13}{totals['named']:>4}/{totals['rejected']}")
    rejected = totals["rejected"] / totals["wrong"]
    named_share = totals["named"] / max(totals["rejected"], 1)
    print(f"rejected {rejected:.1%} (need {MIN_REJECTED:.0%}), named {named_share:.1%} "
          f"(need {MIN_NAMED:.1%})")
    print("\nwrong answers accepted or rejected without naming the mistake:")
    for line in problems:
        print("  " + line)
    assert rejected >= MIN_REJECTED, f"only {rejected:.1%} of the wrong answers rejected"
    assert named_share >= MIN_NAMED, f"only {named_share:.1%} of the rejections name the mistake"
