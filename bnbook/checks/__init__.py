"""Exercise checkers: one module per chapter (``ch01``, ``ch02``, ...), built on :mod:`._core`.

Every checker behaves the same way:

* exercise not done yet (the stub raises ``NotImplementedError``): prints a "not done yet" line
  and returns ``None``, so an exercise notebook runs top to bottom;
* right answer: prints one line starting with ``✓`` (checkers return None);
* wrong answer: raises :class:`ExerciseMistake` (an ``AssertionError``) whose message names the
  likely mistake and gives a hint, never the solution;
* unusable input (a list, wrong dtype, NaN, an error inside the learner's code): also an
  :class:`ExerciseMistake`, with a plain-language message instead of a deep traceback.
"""

from ._core import ExerciseMistake, checker

__all__ = ["ExerciseMistake", "checker"]
