"""The machinery every checker shares: not-done detection, messages, input validation, matching.

A chapter's checker file holds only its cases and its messages; this module does the rest.

* :func:`call` runs the learner's code. Only the generator's exact stub,
  ``raise NotImplementedError("your code here")``, means "not done yet"; any other exception
  (a ``NotImplementedError`` from NumPy on a symbolic tensor included) is the learner's code
  failing, reported as its type and first line, with TensorFlow's internals
  (``{{function_node __wrapped__...}}``, ``[Op:AddV2]``, Keras' "Exception encountered" frame)
  removed.
* :func:`cases` numbers a checker's cases; :func:`match` compares one case's result with the right
  answer: within tolerance it returns; else it raises the :class:`ExerciseMistake` of the first
  known-wrong variant the result matches; else it raises a locating message: which case (shapes
  and parameters, and which of them differ from the earlier cases that passed), which output,
  where (index), how far off (max absolute and relative error) and a self-test. It never prints
  the right values.

Example, a checker with three cases and two outputs::

    from ._core import Wrong, call, cases, checker, match

    @checker("4.1")
    def update(fn):
        for case in cases(dict(units=3, momentum=0.9), dict(units=5, momentum=0.7),
                          dict(units=2, momentum=0.99)):
            old, batch = make_inputs(case.units)              # data sized by the case
            got = call(fn, old, batch, case.momentum, what="update")
            match(got, {"moving mean": right_mean(...), "moving variance": right_var(...)},
                  case=case,
                  wrong=[Wrong({"moving mean": swapped_mean(...)},       # other outputs: right
                               "You swapped momentum and 1 - momentum.", "the old value ..."),
                         Wrong(lambda: ..., "...", "...")],               # computed when needed
                  selftest="with momentum 0 the moving mean becomes the batch mean.")
        return "both moving statistics match in 3 cases"

``got`` may be a NumPy array, a tensor, a ``tf.Variable``/Keras variable, a Python number or bool,
a Keras layer or model (read as ``{variable.path: value}``), or a tuple/list/dict of these. With a
dict ``want``, a tuple ``got`` is read in the dict's order, a key is read as a noun in messages
("your moving variance is wrong at ..."), and a ``Wrong`` variant names only the outputs it gets
wrong (the others are taken from ``want``). Run the cases in order and stop at the first failure:
the locating message for case k says that the earlier cases passed and which parameters case k
changes (the usual sign of a hard-coded value).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

NOT_DONE = "Exercise {label} is not done yet: replace `raise NotImplementedError` with your code, "\
    "then run this cell again."
PASSED = "✓ Exercise {label} passed: {detail}"
STUB_MESSAGE = "your code here"  # the generator's stub: raise NotImplementedError("your code here")
ATOL = 1e-4  # float32 results against float64 references
RTOL = 1e-4


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
    """Raised inside a checker when the learner's code still raises the generator's stub."""


# ---------------------------------------------------------------------------------------------
# Calling the learner's code
# ---------------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TF_NOISE = (
    re.compile(r"\{\{function_node [^}]*\}\}\s*"),      # {{function_node __wrapped__AddV2_...}}
    re.compile(r"\s*\[Op:[^\]]*\]"),                    # [Op:AddV2]
    re.compile(r"\s*name:\s*$"),                        # trailing " name: "
    re.compile(r"\s*\(defined at [^)]*\)"),
)


_AUTOGRAPH_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit): (.+)$")


def _autograph_line(lines: list[str]) -> str:
    """tf.function's "in user code:" report: the inner error's message and the learner's line
    (the frame marked ``*``), without file paths."""
    message = next((m.group(2) for line in reversed(lines)
                    if (m := _AUTOGRAPH_ERROR.match(line))), "")
    for i, line in enumerate(lines[:-1]):
        if line.startswith("File ") and line.endswith("*") and not line.endswith("**"):
            return f"{message} (in tf.function, at `{lines[i + 1]}`)"[:300]
    return message[:300]


def error_line(err: BaseException) -> str:
    """The first meaningful line of an exception's message, without TensorFlow/Keras internals."""
    lines = [_ANSI.sub("", line).strip() for line in str(err).splitlines()]
    if lines and lines[0] == "in user code:":
        return _autograph_line(lines)
    for line in lines:
        if not line or line.startswith("Exception encountered when calling") \
                or line.startswith("Arguments received by") or line.startswith("Traceback"):
            continue
        for noise in _TF_NOISE:
            line = noise.sub("", line)
        line = line.strip()
        if line:
            return line[:300]
    return ""


def is_stub(err: BaseException) -> bool:
    """True only for the generator's stub, ``NotImplementedError("your code here")`` (also when
    Keras wraps it in its "Exception encountered when calling ..." frame)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err) is NotImplementedError and error_line(err) == STUB_MESSAGE:
            return True
        err = err.__cause__ or err.__context__
    return False


def raised(err: BaseException, what: str = "your function", hint: str | None = None) \
        -> ExerciseMistake:
    """The ExerciseMistake for an exception raised by the learner's code: its type and first
    line, no traceback and no TensorFlow internals."""
    line = error_line(err)
    return ExerciseMistake(
        f"{what} raised {type(err).__name__}" + (f": {line}" if line else "."),
        hint or "run your function on a small input in its own cell to see the full error; "
                "check the shapes and dtypes of what you combine.")


@contextlib.contextmanager
def _watching(functions: Iterable[Callable]):
    """Record which of ``functions`` run inside the block (their dotted names, in call order).

    A profile hook sees every Python call, however the function was imported or renamed (and
    during a tf.function's tracing too), so the learner's code cannot reach the book's own
    implementation unseen."""
    codes = {f.__code__: _shown_name(f) for f in functions}
    seen: list[str] = []
    if not codes or sys.getprofile() is not None:
        # Nothing to watch: no hook (a profile hook slows every Python call down). A profiler
        # already running (cProfile) cannot be put back with sys.setprofile: leave it alone.
        yield seen
        return
    previous = sys.getprofile()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            seen.append(codes[frame.f_code])

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def _shown_name(function: Callable) -> str:
    """How a refused function is named to the learner: its dotted name, or for a Keras layer's
    ``call`` the layer as the learner wrote it (``keras.layers.GroupNormalization``)."""
    if function.__module__.startswith("keras") and function.__name__ == "call":
        return f"keras.layers.{function.__qualname__.split('.')[0]}"
    return f"{function.__module__}.{function.__qualname__}"


def _book_call(seen: list[str], what: str) -> ExerciseMistake:
    if seen[0].startswith("keras."):
        return ExerciseMistake(
            f"{what} uses `{seen[0]}`, the layer this exercise asks you to write with "
            "TensorFlow operations: the check compares your code with that layer, so it cannot "
            "tell what your code does if the layer does it.",
            "compute the statistics with tf.nn.moments (or tf.reduce_mean) and normalise, "
            "scale and shift yourself.")
    return ExerciseMistake(
        f"{what} calls the book's own `{seen[0]}`. This exercise asks you to write that step "
        "yourself: the check cannot tell what your code does if the book does it.",
        "write it with NumPy or TensorFlow operations, from the formula in the lesson.")


def call(fn: Callable, *args, what: str = "your function", hint: str | None = None,
         case: Case | str | None = None, refuse: Iterable[Callable] = (), **kwargs):
    """Call the learner's code; turn its errors into messages a learner can act on.

    The generator's stub raises :class:`NotDone` (the checker prints "not done yet"); any other
    exception becomes an ExerciseMistake "[In <case>: ]<what> raised <Type>: <first line>" with
    ``hint``; in a case after passing ones, followed by the parameters this case changes (see
    :func:`changed_note`), as in :func:`match`'s locating message. ``refuse`` names the book's
    own implementations of the exercise's step: if the learner's code calls one of them, that is
    the mistake reported. (``case`` and ``refuse`` are keyword-only and not passed on to ``fn``.)
    """
    __tracebackhide__ = True
    if not callable(fn):
        raise ExerciseMistake(
            f"Expected a function, got {type(fn).__name__}.",
            "pass the function itself, without calling it: check(my_function), not "
            "check(my_function()).",
        )
    where = f"In {case}: {what}" if case is not None else what
    with _watching(refuse) as seen:
        try:
            result = fn(*args, **kwargs)
        except ExerciseMistake:
            raise
        except NotDone:
            raise
        except Exception as err:  # noqa: BLE001 - any error in learner code gets a readable message
            if is_stub(err):
                raise NotDone() from None
            if seen:
                raise _book_call(seen, where) from None
            mistake = raised(err, where, hint)
            note = changed_note(case, sentence=True)  # the earlier cases ran: what changed?
            if note:
                text = mistake.mistake if mistake.mistake.endswith(".") else mistake.mistake + "."
                mistake = ExerciseMistake(text + note, mistake.hint)
            raise mistake from None
    if seen:
        raise _book_call(seen, where)
    return result


# ---------------------------------------------------------------------------------------------
# Validating a result
# ---------------------------------------------------------------------------------------------

def as_array(value, name: str = "your result", *, want_tensor: bool | None = None,
             dtype=np.float32) -> np.ndarray:
    """Validate a learner's result and return it as a NumPy array.

    want_tensor: True if a ``tf.Tensor``/``tf.Variable`` is required, False if a NumPy array is,
    None if either is fine.
    """
    __tracebackhide__ = True
    import tensorflow as tf

    is_tensor = isinstance(value, (tf.Tensor, tf.Variable)) or _is_keras_variable(value)
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
    try:
        array = np.asarray(value.numpy() if is_tensor else value)
    except Exception as err:  # noqa: BLE001 - e.g. a symbolic tensor returned from a graph
        raise ExerciseMistake(f"{name} has no value ({type(err).__name__}: {error_line(err)}).",
                              "return a concrete (eager) tensor or array.") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise ExerciseMistake(
            f"{name} has dtype {array.dtype}; expected floating point.",
            "integer arithmetic truncates: convert the input with .astype(np.float32) or "
            "tf.cast(x, tf.float32) first.",
        )
    if dtype is not None and array.dtype != dtype:
        raise ExerciseMistake(f"{name} has dtype {array.dtype}; expected {np.dtype(dtype).name}.",
                              _dtype_hint(array.dtype, np.dtype(dtype)))
    if not np.all(np.isfinite(array)):
        raise ExerciseMistake(
            f"{name} contains NaN or infinity.",
            "a division by zero? A constant feature has variance 0: that is what epsilon is for.",
        )
    return array


def _dtype_hint(got: np.dtype, want: np.dtype) -> str:
    """What a wrong float dtype usually means, in the direction it went."""
    if got.itemsize > want.itemsize:  # promoted, e.g. float32 work that came back float64
        return (f"keep the input's dtype: mixing {got.name} constants (np.sqrt of a Python float, "
                f"np.{got.name} arrays) into {want.name} work promotes the result to {got.name}.")
    return (f"your result was cast down from {want.name} to {got.name} (a tf.cast, .astype or "
            f"tf.constant(..., tf.{got.name}), or {got.name} arrays of your own), which drops "
            f"precision: keep the {want.name} you were given from start to end.")


def expect_shape(array: np.ndarray, shape: tuple, name: str = "your result") -> None:
    __tracebackhide__ = True
    if tuple(array.shape) != tuple(shape):
        raise ExerciseMistake(
            f"Wrong output shape: {name} has shape {tuple(array.shape)}, expected {tuple(shape)}.",
            "reduce only over the axes the statistics are taken over, and keep the others; "
            "keepdims=True keeps reduced axes as size 1 so the result broadcasts.",
        )


# ---------------------------------------------------------------------------------------------
# Cases and the matcher
# ---------------------------------------------------------------------------------------------

def changed_note(case, sentence: bool = False) -> str:
    """" (cases 1-2 passed; this one changes batch, eps: a hard-coded value? ...)" for a case
    after passing ones that changes some parameters; "" otherwise. ``sentence``: the same note
    as a sentence of its own (" Cases 1-2 passed; ... given?")."""
    if not isinstance(case, Case) or case.index == 0 or not case.changed():
        return ""
    earlier = "case 1 passed" if case.index == 1 else f"cases 1-{case.index} passed"
    note = (f"{earlier}; this one changes {', '.join(case.changed())}: a hard-coded value? "
            "Is one of them fixed in your code instead of taken from what it is given?")
    return f" {note[0].upper()}{note[1:]}" if sentence else f" ({note})"


def _describe(value) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"shape {tuple(value.shape)}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class Case:
    """One case of a checker: its number and its parameters (also readable as attributes).

    ``str(case)`` reads "case 2 of 3 (batch=5, units=3, eps=0.01)"; arrays show as their shape.
    Parameters whose names start with ``_`` are data for the checker, not shown.
    """

    def __init__(self, index: int, total: int, params: dict, first: dict | None = None):
        self.index, self.total, self.params = index, total, dict(params)
        self._first = first if first is not None else self.params
        for key, value in params.items():
            setattr(self, key.lstrip("_"), value)

    def __getitem__(self, key):
        return self.params[key]

    def shown(self) -> dict:
        return {k: v for k, v in self.params.items() if not k.startswith("_")}

    def __str__(self) -> str:
        text = ", ".join(f"{k}={_describe(v)}" for k, v in self.shown().items())
        head = f"case {self.index + 1} of {self.total}" if self.total > 1 else "the test case"
        return f"{head} ({text})" if text else head

    def changed(self) -> list[str]:
        """The shown parameters that differ from the first case."""
        out = []
        for key, value in self.shown().items():
            other = self._first.get(key, None)
            same = (np.shape(value) == np.shape(other) and np.array_equal(value, other)) \
                if hasattr(value, "shape") else value == other
            if not same:
                out.append(key)
        return out


def cases(*params: dict) -> list[Case]:
    """Number a checker's cases: ``for case in cases(dict(n=6, eps=0.1), dict(n=5, eps=1e-3))``."""
    return [Case(i, len(params), p, params[0]) for i, p in enumerate(params)]


@dataclass
class Wrong:
    """A known-wrong answer: its value (same structure as the right one, or a dict with only the
    outputs it gets wrong, or a function computing it, or None when it does not apply to this
    case) and the mistake and hint to raise when the learner's result matches it."""

    value: Any
    mistake: str
    hint: str = ""


def _is_keras_variable(value) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, keras.Variable)


def values_of(obj):
    """A learner's result as plain values: arrays, numbers and bools, in dicts and tuples.

    Tensors and variables become NumPy arrays; a Keras layer or model becomes
    ``{variable.path: value}`` over its weights.
    """
    import tensorflow as tf

    if isinstance(obj, dict):
        return {k: values_of(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return tuple(values_of(v) for v in obj)
    if isinstance(obj, (tf.Tensor, tf.Variable)) or _is_keras_variable(obj):
        return np.asarray(obj.numpy() if hasattr(obj, "numpy") else obj)
    if hasattr(obj, "weights") and hasattr(obj, "trainable"):  # a Keras layer or model
        return {getattr(v, "path", v.name): np.asarray(v.numpy()) for v in obj.weights}
    return obj


def _numeric(value) -> bool:
    """A number or numeric array (bools are not: they compare by equality)."""
    return isinstance(value, (np.ndarray, np.generic, float, int)) and \
        not isinstance(value, (bool, np.bool_)) and np.issubdtype(np.asarray(value).dtype, np.number)


class _Missing:
    def __repr__(self):
        return "missing"


_MISSING = _Missing()


def _order(want: dict) -> str:
    return ", ".join(map(str, want))


def _flatten(value, want, name: str) -> list[tuple[str, Any, Any]]:
    """[(output name, got, want)] for a structured result; a missing output has got=_MISSING."""
    __tracebackhide__ = True
    if isinstance(want, dict):
        if isinstance(value, (tuple, list)):
            if len(value) != len(want):
                raise ExerciseMistake(
                    f"{name} has {len(value)} parts; expected {len(want)}: ({_order(want)}).",
                    f"return them in this order: {_order(want)}.")
            value = dict(zip(want, value))
        if not isinstance(value, dict):
            got = "a single array" if hasattr(value, "shape") else f"a {type(value).__name__}"
            raise ExerciseMistake(
                f"{name} is {got}; expected {len(want)} results: ({_order(want)}).",
                f"return them in this order: {_order(want)}.")
        out = []
        for key, sub in want.items():
            out += _flatten(value.get(key, _MISSING), sub, str(key))
        return out
    if isinstance(want, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(want):
            count = f"{len(value)} parts" if isinstance(value, (tuple, list)) else "one part"
            raise ExerciseMistake(f"{name} has {count}; expected {len(want)}.",
                                  f"return a tuple of {len(want)} values.")
        out = []
        for i, (v, w) in enumerate(zip(value, want)):
            out += _flatten(v, w, f"{name} (item {i + 1} of {len(want)})")
        return out
    return [(name, value, want)]


def _close(got, want, atol: float, rtol: float) -> bool:
    if got is _MISSING:
        return False
    if _numeric(want):
        if not _numeric(got):
            return False
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        return got.shape == want.shape and bool(np.all(np.isfinite(got))) \
            and np.allclose(got, want, rtol=rtol, atol=atol)
    if isinstance(want, np.ndarray) or isinstance(got, np.ndarray):
        return np.shape(got) == np.shape(want) and bool(np.all(np.asarray(got) == np.asarray(want)))
    return bool(got == want)


def _resolve(variant: Wrong, want):
    """A variant's full value (outputs it does not name are taken from ``want``), or None."""
    value = variant.value() if callable(variant.value) else variant.value
    if value is None:
        return None
    if isinstance(want, dict) and isinstance(value, dict):
        return {**want, **value}
    return value


def distance(got, want, atol: float = ATOL, rtol: float = RTOL) -> str:
    """Where and how far ``got`` is from ``want`` (same shape), for a message: the count of wrong
    elements, the first wrong index, the max absolute and relative error. No values."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    error = np.abs(got - want)
    bad = ~np.isclose(got, want, rtol=rtol, atol=atol)
    finite = np.isfinite(error)
    max_abs = float(error[finite].max()) if finite.any() else float("inf")
    max_rel = float((error / np.maximum(np.abs(want), atol))[finite].max()) \
        if finite.any() else float("inf")
    sizes = f"max abs error {max_abs:.3g}, max rel error {max_rel:.3g}"
    if bad.size == 1:
        return f"is off by {max_abs:.3g} (rel {max_rel:.3g})"
    first = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else ()
    return f"is wrong at {int(bad.sum())} of {bad.size} elements, first at index {first}: {sizes}"


def match(got, want, *, wrong: Iterable[Wrong] = (), case: Case | str | None = None,
          name: str = "your result", selftest: str = "", atol: float = ATOL,
          rtol: float = RTOL, tensor: bool | None = None, dtype=None) -> None:
    """Accept ``got`` if it equals ``want`` within tolerance; else raise the ExerciseMistake of the
    first ``wrong`` variant it matches; else raise a message that locates the difference.

    got:      the learner's result (arrays, tensors, variables, Keras layers/models, numbers, bools,
              or tuples/lists/dicts of them; see :func:`values_of`).
    want:     the right answer in the same structure; a dict names several outputs
              ({"moving mean": ..., "moving variance": ...}), and then a tuple ``got`` is read in
              the dict's order.
    wrong:    known-wrong variants, tried in order (see :class:`Wrong`); a variant is named when
              every output matches it.
    case:     the :class:`Case` (or a description) this result is for, named in the locating
              message (with the parameters that differ from the first case, once that passed).
    name:     what ``got`` is called in messages ("batch_norm_nchw's result").
    selftest: one sentence the learner can try to find the mistake; never the solution.
    tensor:   True/False: each numeric output must be a TensorFlow tensor / a NumPy array.
    dtype:    e.g. np.float32: each numeric output must have it.
    Numbers compare within ``atol + rtol * |want|``; other values (bools, strings) by equality.
    """
    __tracebackhide__ = True
    where = f"In {case}: " if case is not None else ""
    try:
        flat = _flatten(values_of(got), values_of(want), name)
    except ExerciseMistake as err:
        raise ExerciseMistake(where + err.mistake, err.hint) from None
    try:  # the outputs as returned (tensor or array), to check their type
        raw = _flatten(got, want, name)
    except ExerciseMistake:  # e.g. a Keras model read as its variables
        raw = flat
    several = len(flat) > 1
    for (label, value, right), (_, original, _) in zip(flat, raw):
        if value is _MISSING:
            raise ExerciseMistake(f"{where}{name} has no `{label}`.",
                                  f"return all of: {', '.join(n for n, _, _ in flat)}.")
        if _numeric(right) and np.issubdtype(np.asarray(right).dtype, np.floating) \
                and not isinstance(original, (int, np.integer)):  # a count is compared below
            # type, dtype, NaN: before any comparison
            try:
                as_array(original, f"your {label}" if several else name, want_tensor=tensor,
                         dtype=dtype)
            except ExerciseMistake as err:
                raise ExerciseMistake(where + err.mistake, err.hint) from None
    got_flat = [value for _, value, _ in flat]
    if all(_close(g, w, atol, rtol) for _, g, w in flat):
        return
    for variant in wrong:
        value = _resolve(variant, want)
        if value is None:
            continue
        try:
            wrong_flat = [v for _, v, _ in _flatten(values_of(value), values_of(want), name)]
        except ExerciseMistake:  # pragma: no cover - a variant of another structure
            continue
        if all(_close(g, w, atol, rtol) for g, w in zip(got_flat, wrong_flat)):
            raise ExerciseMistake(variant.mistake, variant.hint)
    # Not a known mistake: locate the first output that differs.
    label, value, right = next((n, g, w) for n, g, w in flat if not _close(g, w, atol, rtol))
    what = f"your {label}" if several else name
    if _numeric(right):
        if np.shape(value) != np.shape(right):
            message = f"{what} has shape {np.shape(value)}, expected {np.shape(right)}"
        else:
            message = f"{what} {distance(value, right, atol, rtol)}"
    else:
        message = f"{what} is {value!r}, which is not right"  # a flag or a name, not numbers
    raise ExerciseMistake(
        f"{where}{message}{changed_note(case)}. That matches no mistake this check knows.",
        selftest or "rebuild the answer step by step on a tiny input you can work out by hand, "
                    "and compare each intermediate value.")


# ---------------------------------------------------------------------------------------------
# The decorator
# ---------------------------------------------------------------------------------------------

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
