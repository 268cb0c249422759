"""The behaviour every checker shares (not done / passed / mistake / bad input)."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ExerciseMistake, checker
from bnbook.checks._core import as_array, call


@checker("9.9")
def check_double(fn):
    x = np.arange(4, dtype=np.float32)
    out = as_array(call(fn, x), want_tensor=False)
    if not np.allclose(out, 2 * x):
        raise ExerciseMistake("values are not doubled", "multiply by 2")
    return "doubled"


def stub(x):
    raise NotImplementedError("your code here")


def test_not_done_prints_and_does_not_raise(capsys):
    assert check_double(stub) is None
    assert "Exercise 9.9 is not done yet" in capsys.readouterr().out


def test_right_answer_prints_one_success_line(capsys):
    check_double(lambda x: 2 * x)
    assert capsys.readouterr().out == "✓ Exercise 9.9 passed: doubled\n"


def test_mistake_names_exercise_and_hint():
    with pytest.raises(ExerciseMistake, match=r"Exercise 9\.9: values are not doubled\nHint: "):
        check_double(lambda x: x)


@pytest.mark.parametrize("answer, message", [
    (lambda x: [1.0, 2.0], "Python list"),
    (lambda x: None, "return"),
    (lambda x: tf.constant(2 * x), "TensorFlow tensor; this exercise asks for a NumPy array"),
    (lambda x: (2 * x).astype(np.int32), "dtype int32"),
    (lambda x: (2 * x).astype(np.float64), "dtype float64"),
    (lambda x: np.full_like(x, np.nan), "NaN or infinity"),
    (lambda x: tf.reshape(x, (5, 5)), "raised InvalidArgumentError"),
])
def test_bad_input_gets_a_clear_message(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check_double(answer)


def test_not_a_function():
    with pytest.raises(ExerciseMistake, match="Expected a function"):
        check_double(np.zeros(3))


def test_tensor_required():
    with pytest.raises(ExerciseMistake, match="asks for a TensorFlow tensor"):
        as_array(np.zeros(3, np.float32), want_tensor=True)
