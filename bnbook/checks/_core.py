"""The machinery every checker shares: not-done detection, messages, input validation."""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

NOT_DONE = "Exercise {label} is not done yet: replace `raise NotImplementedError` with your code, "\
    "then run this cell again."
PASSED = "✓ Exercise {label} passed: {detail}"


class ExerciseMistake(AssertionError):
    """A wrong answer. The message names the likely mistake and gives a hint."""

    def __init__(self, mistake: str, hint: str = ""):
        self.mistake = mistake
        self.hint = hint
        super().__init__(mistake + (f"\nHint: {hint}" if hint else ""))

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the message alone, with no checker frames
        (and no file paths) between the learner and what to fix."""
        return [f"\x1b[1;31m{type(self).__name__}\x1b[0m: {self}"]


class NotDone(Exception):
    """Raised inside a checker when the learner's code still raises NotImplementedError."""


def call(fn: Callable, *args, what: str = "your function", **kwargs):
    """Call the learner's code; turn its errors into messages a learner can act on."""
    __tracebackhide__ = True
    if not callable(fn):
        raise ExerciseMistake(
            f"Expected a function, got {type(fn).__name__}.",
            "pass the function itself, without calling it: check(my_function), not "
            "check(my_function()).",
        )
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotDone() from None
    except ExerciseMistake:
        raise
    except Exception as err:  # noqa: BLE001 - any error in learner code gets a readable message
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExerciseMistake(
            f"{what} raised {type(err).__name__}: {first_line[:300]}",
            "run your function on a small input in its own cell to see the full error; "
            "check the shapes and dtypes of what you combine.",
        ) from None


def as_array(value, name: str = "your result", *, want_tensor: bool | None = None,
             dtype=np.float32) -> np.ndarray:
    """Validate a learner's result and return it as a NumPy array.

    want_tensor: True if a ``tf.Tensor``/``tf.Variable`` is required, False if a NumPy array is,
    None if either is fine.
    """
    __tracebackhide__ = True
    import tensorflow as tf

    is_tensor = isinstance(value, (tf.Tensor, tf.Variable))
    if value is None:
        raise ExerciseMistake(f"{name} is None.", "did you forget a `return` statement?")
    if isinstance(value, (list, tuple)):
        raise ExerciseMistake(
            f"{name} is a Python {type(value).__name__}, not an array.",
            "build it with NumPy or TensorFlow operations so it keeps its shape and dtype.",
        )
    if want_tensor is True and not is_tensor:
        raise ExerciseMistake(
            f"{name} is a {type(value).__module__}.{type(value).__name__}; this exercise asks "
            "for a TensorFlow tensor.",
            "use tf.* operations (tf.reduce_mean, tf.nn.moments, ...) rather than np.*.",
        )
    if want_tensor is False and is_tensor:
        raise ExerciseMistake(
            f"{name} is a TensorFlow tensor; this exercise asks for a NumPy array.",
            "use np.* operations, or call .numpy() on the tensor.",
        )
    if not (is_tensor or isinstance(value, (np.ndarray, np.generic, float, int))):
        raise ExerciseMistake(
            f"{name} has type {type(value).__name__}; expected an array.",
            "return the array itself, not a wrapper object.",
        )
    array = value.numpy() if is_tensor else np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise ExerciseMistake(
            f"{name} has dtype {array.dtype}; expected floating point.",
            "integer arithmetic truncates: convert the input with .astype(np.float32) or "
            "tf.cast(x, tf.float32) first.",
        )
    if dtype is not None and array.dtype != dtype:
        raise ExerciseMistake(
            f"{name} has dtype {array.dtype}; expected {np.dtype(dtype).name}.",
            "keep the input's dtype: mixing float64 constants (np.sqrt of a Python float, "
            "np.float64 arrays) into float32 work promotes the result.",
        )
    if not np.all(np.isfinite(array)):
        raise ExerciseMistake(
            f"{name} contains NaN or infinity.",
            "a division by zero? A constant feature has variance 0: that is what epsilon is for.",
        )
    return array


def expect_shape(array: np.ndarray, shape: tuple, name: str = "your result") -> None:
    __tracebackhide__ = True
    if tuple(array.shape) != tuple(shape):
        raise ExerciseMistake(
            f"Wrong output shape: {name} has shape {tuple(array.shape)}, expected {tuple(shape)}.",
            "reduce only over the axes the statistics are taken over, and keep the others; "
            "keepdims=True keeps reduced axes as size 1 so the result broadcasts.",
        )


def checker(label: str):
    """Decorator for a checker function of exercise ``label`` (e.g. "1.1").

    The decorated function raises ExerciseMistake on a wrong answer and returns a short
    success detail (a string) on a right one.
    """

    def wrap(check: Callable[..., str]):
        @functools.wraps(check)
        def run(*args, **kwargs):
            __tracebackhide__ = True
            try:
                detail = check(*args, **kwargs)
            except NotDone:
                print(NOT_DONE.format(label=label))
                return None
            except ExerciseMistake as mistake:
                raise ExerciseMistake(f"Exercise {label}: {mistake.mistake}", mistake.hint) \
                    from None
            print(PASSED.format(label=label, detail=detail))
            # Returns None either way, so a check cell shows only the printed line.

        run.label = label
        return run

    return wrap
