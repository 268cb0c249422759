"""The behaviour every checker shares (not done / passed / mistake / bad input) and the matcher."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ExerciseMistake, checker
from bnbook.checks._core import NotDone, Wrong, as_array, call, cases, error_line, match


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


# --- "not done yet" only for the generator's exact stub ----------------------------------------

def test_other_not_implemented_error_is_the_learners_failure():
    with pytest.raises(ExerciseMistake, match=r"raised NotImplementedError: not this one"):
        check_double(lambda x: (_ for _ in ()).throw(NotImplementedError("not this one")))


def test_numpy_on_a_symbolic_tensor_is_not_not_done():
    @tf.function
    def mean(x):
        return np.mean(x)

    with pytest.raises(ExerciseMistake, match=r"raised NotImplementedError: Cannot convert a "
                                              r"symbolic tf\.Tensor"):
        call(mean, tf.constant([1.0, 2.0]), what="your function")


def test_stub_inside_a_keras_layer_is_not_done():
    class Stubbed(keras.layers.Layer):
        def call(self, x):
            raise NotImplementedError("your code here")

    with pytest.raises(NotDone):
        call(Stubbed(), tf.zeros((2, 3)))


def test_stub_inside_tf_function_is_not_done():
    with pytest.raises(NotDone):
        call(tf.function(stub), tf.zeros(2))


def test_no_tensorflow_internals_in_messages():
    def broken(x):
        return tf.constant([1.0, 2.0]) + tf.constant([1.0, 2.0, 3.0])

    with pytest.raises(ExerciseMistake) as info:
        call(broken, 0, what="your function")
    text = str(info.value)
    assert "raised InvalidArgumentError: Incompatible shapes: [2] vs. [3]" in text
    assert "function_node" not in text and "[Op:" not in text and "name:" not in text


def test_keras_frame_and_ansi_codes_are_removed():
    class Broken(keras.layers.Layer):
        def call(self, x):
            return x + tf.zeros((5,))

    with pytest.raises(ExerciseMistake) as info:
        call(Broken(), tf.zeros((2, 3)), what="your layer")
    text = str(info.value)
    assert "your layer raised InvalidArgumentError: Incompatible shapes: [2,3] vs. [5]" in text
    assert "\x1b" not in text and "Exception encountered" not in text


def test_error_line_of_an_empty_message():
    assert error_line(ValueError()) == ""


# --- the matcher -------------------------------------------------------------------------------

WANT = {"moving mean": np.array([1.0, 2.0, 3.0]), "moving variance": np.array([1.0, 0.5, 2.0])}
NOT_UPDATED = Wrong({"moving variance": np.ones(3)}, "The moving variance was not updated.",
                    "update both statistics.")
CASES = cases(dict(x=np.zeros((6, 4)), eps=0.1, momentum=0.9),
              dict(x=np.zeros((5, 3)), eps=0.01, momentum=0.9),
              dict(x=np.zeros((7, 2)), eps=0.02, momentum=0.8))


def _f32(*arrays):
    return tuple(np.asarray(a, np.float32) for a in arrays)


@pytest.mark.parametrize("got", [
    _f32([1, 2, 3], [1, 0.5, 2]),
    [tf.constant([1.0, 2.0, 3.00001]), tf.Variable([1.0, 0.5, 2.0])],
    {"moving variance": np.array([1.0, 0.5, 2.0]), "moving mean": np.array([1.0, 2.0, 3.0])},
])
def test_match_accepts_the_right_answer_in_any_container(got):
    match(got, WANT, case=CASES[0])


def test_match_names_a_known_wrong_variant_by_the_outputs_it_changes():
    with pytest.raises(ExerciseMistake, match=r"^The moving variance was not updated\.\nHint"):
        match(_f32([1, 2, 3], [1, 1, 1]), WANT, wrong=[NOT_UPDATED], case=CASES[1])


def test_match_tries_variants_in_order_and_skips_those_that_do_not_apply():
    first = Wrong(lambda: None, "never", "")
    second = Wrong(lambda: {"moving mean": np.zeros(3)}, "The mean was not updated.", "")
    with pytest.raises(ExerciseMistake, match="The mean was not updated"):
        match(_f32([0, 0, 0], [1, 0.5, 2]), WANT, wrong=[first, NOT_UPDATED, second])


def test_match_locates_an_unknown_mistake_without_printing_the_answer():
    with pytest.raises(ExerciseMistake) as info:
        match(_f32([1, 2, 3], [1, 0.75, 2]), WANT, wrong=[NOT_UPDATED], case=CASES[1],
              selftest="with momentum 0 the moving variance is the batch variance.")
    text = str(info.value)
    assert text.startswith("In case 2 of 3 (x=shape (5, 3), eps=0.01, momentum=0.9): your "
                           "moving variance is wrong at 1 of 3 elements, first at index (1,): "
                           "max abs error 0.25, max rel error 0.5")
    assert "case 1 passed; this one changes x, eps:" in text  # momentum is the same as case 1's
    assert "matches no mistake this check knows" in text
    assert text.endswith("Hint: with momentum 0 the moving variance is the batch variance.")
    assert "0.5," not in text.replace("max rel error 0.5", "")  # no right value printed


def test_match_says_which_earlier_cases_passed():
    with pytest.raises(ExerciseMistake, match=r"cases 1-2 passed; this one changes x, eps, "
                                              r"momentum"):
        match(_f32([1, 2, 3], [1, 0.75, 2]), WANT, case=CASES[2])


def test_match_reports_a_single_value_and_a_description():
    with pytest.raises(ExerciseMistake, match=r"^In the second batch: the loss is off by 0\.5 "
                                              r"\(rel 0\.25\)"):
        match(2.5, 2.0, case="the second batch", name="the loss")


@pytest.mark.parametrize("got, message", [
    (np.zeros(4, np.float32), r"your result has shape \(4,\), expected \(3,\)"),
    (np.zeros(3, np.float32), r"^In case 1 of 3 \(.*\): your result is a single array; expected "
                              r"2 results: \(moving mean, moving variance\)"),
    ((np.zeros(3, np.float32),) * 3, r"your result has 3 parts; expected 2"),
    ({"moving mean": np.zeros(3)}, r"your result has no `moving variance`"),
    (([1.0, 2.0, 3.0], np.zeros(3)), r"your moving mean is a Python list"),
    ((np.arange(3), np.zeros(3)), r"your moving mean has dtype int64; expected floating point"),
    ((np.full(3, np.nan), np.zeros(3)), r"your moving mean contains NaN"),
])
def test_match_rejects_malformed_results(got, message):
    want = WANT if isinstance(got, (tuple, dict)) or got.shape == (3,) else WANT["moving mean"]
    with pytest.raises(ExerciseMistake, match=message):
        match(got, want, case=CASES[0])


def test_match_checks_tensor_type_and_dtype():
    with pytest.raises(ExerciseMistake, match="your moving mean is a numpy.ndarray; this exercise "
                                              "asks for a TensorFlow tensor"):
        match(_f32([1, 2, 3], [1, 0.5, 2]), WANT, tensor=True)
    with pytest.raises(ExerciseMistake, match="has dtype float64; expected float32"):
        match(np.array([1.0]), np.array([1.0]), dtype=np.float32)


def test_match_reads_keras_variables_layers_and_flags():
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3))
    match(bn.moving_variance, np.ones(3))
    match(bn, {v.path: np.full(3, v.path.endswith(("gamma", "variance")), float)
               for v in bn.weights})
    want = {v.path: v.numpy() for v in bn.weights}
    want[bn.moving_mean.path] = np.ones(3)
    with pytest.raises(ExerciseMistake, match=rf"your {bn.moving_mean.path} is wrong at 3 of 3"):
        match(bn, want)
    with pytest.raises(ExerciseMistake, match=r"your dense is False, which is not right"):
        match({"bn": True, "dense": False}, {"bn": True, "dense": True})


def test_match_tolerance():
    match(np.float32(1.00005), 1.0)
    with pytest.raises(ExerciseMistake):
        match(np.float32(1.001), 1.0)
    match(np.float32(1.001), 1.0, atol=1e-2)


def test_dtype_hint_says_which_way_the_dtype_went():
    with pytest.raises(ExerciseMistake, match=r"(?s)dtype float64; expected float32\.\nHint: .*"
                                              r"promotes the result to float64"):
        match(np.array([1.0]), np.array([1.0]), dtype=np.float32)
    with pytest.raises(ExerciseMistake) as info:  # a down-cast is not a promotion
        match(np.array([1.0], np.float32), np.array([1.0]), dtype=np.float64)
    text = str(info.value)
    assert "dtype float32; expected float64" in text
    assert "cast down from float64 to float32" in text and "promotes" not in text


def test_error_in_a_later_case_says_what_changed_since_the_passing_cases():
    def fits_the_first_case(x):
        return np.reshape(x, (6, 4))  # the first case's shape, hard-coded
    call(fits_the_first_case, CASES[0].x, case=CASES[0])
    with pytest.raises(ExerciseMistake) as info:
        call(fits_the_first_case, CASES[1].x, case=CASES[1])
    text = str(info.value)
    assert text.startswith(f"In {CASES[1]}: your function raised ValueError")
    assert ". Case 1 passed; this one changes x, eps: a hard-coded value?" in text
    with pytest.raises(ExerciseMistake) as info:  # the first case: nothing passed before it
        call(fits_the_first_case, CASES[1].x, case=CASES[0])
    assert "hard-coded" not in str(info.value)


def test_refusing_leaves_a_running_profiler_alone():
    """Under cProfile the check still runs (the refusal hook steps aside instead of breaking it)."""
    import cProfile

    from bnbook.checks._core import call

    def helper():
        return 1

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        assert call(lambda: helper() + 1, refuse=(helper,)) == 2
    finally:
        profiler.disable()
