"""Chapter 7's checkers: the solutions pass, stubs are "not done", known mistakes are named,
hard-coded values are located, and right answers written another way pass."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ch07 as check
from bnbook.checks._core import ExerciseMistake


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def passes(capsys, checker, fn, label):
    checker(fn)
    assert capsys.readouterr().out.startswith(f"✓ Exercise {label} passed")


# ---- 7.1: bn_backward_images(dy, x, gamma, eps) -> (dx, dgamma, dbeta) ------------------------

def backward_images(dy, x, gamma, eps, how="right"):
    axes = {"per_image": [1, 2], "axis0": [0]}.get(how, [0, 1, 2])
    mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
    if how == "unbiased":
        n = tf.cast(tf.size(x) // tf.size(mean), x.dtype)
        variance = variance * n / (n - 1)
    used_eps = {"no_eps": 0.0, "fixed_eps": 1e-3, "hard_eps": 0.1}.get(how, eps)
    s = 1 / (tf.sqrt(variance) + eps) if how == "std_plus_eps" else tf.math.rsqrt(variance + used_eps)
    x_hat = (x - mean) * s
    m = tf.cast(tf.size(x) // tf.size(mean), x.dtype)
    if how == "batch_m":
        m = tf.cast(tf.shape(x)[0], x.dtype)
    if how == "hard_m":
        m = 60.0
    sum_dy = tf.reduce_sum(dy, axis=axes, keepdims=True)
    sum_dy_x_hat = tf.reduce_sum(dy * x_hat, axis=axes, keepdims=True)
    bracket = {"no_mean_term": m * dy - x_hat * sum_dy_x_hat,
               "no_var_term": m * dy - sum_dy,
               "no_batch_terms": m * dy}.get(how, m * dy - sum_dy - x_hat * sum_dy_x_hat)
    factor = {"no_gamma": s / m, "m_minus_1": gamma * s / (m - 1),
              "no_divide_m": gamma * s}.get(how, gamma * s / m)
    if how == "m_minus_1":
        bracket = (m - 1) * dy - sum_dy - x_hat * sum_dy_x_hat
    dx = factor * bracket
    if how == "sign":
        dx = -dx
    dgamma = {"dgamma_x": tf.reduce_sum(dy * x, axis=axes, keepdims=True),
              "dgamma_centred": tf.reduce_sum(dy * (x - mean), axis=axes, keepdims=True)
              }.get(how, sum_dy_x_hat)
    dbeta = sum_dy
    if how in ("means", "dbeta_mean"):
        dbeta = dbeta / m
    if how == "means":
        dgamma = dgamma / m
    if how == "swapped":
        dgamma, dbeta = dbeta, dgamma
    if how in ("keepdims", "per_image", "axis0"):  # sums kept with keepdims=True
        return dx, dgamma, dbeta
    dgamma, dbeta = tf.reshape(dgamma, [-1]), tf.reshape(dbeta, [-1])
    if how == "numpy":
        return dx.numpy(), dgamma.numpy(), dbeta.numpy()
    if how == "float64":
        return tf.cast(dx, tf.float64), dgamma, dbeta
    if how == "two":
        return dx, dgamma
    return dx, dgamma, dbeta


def backward_images_any_layout(dy, x, gamma, eps, data_format="channels_last", how="right"):
    """NCHW handled by transposing to NHWC and back: a right answer written another way."""
    if data_format == "channels_first":
        dx, dgamma, dbeta = backward_images(tf.transpose(dy, [0, 2, 3, 1]),
                                            tf.transpose(x, [0, 2, 3, 1]), gamma, eps, how)
        return tf.transpose(dx, [0, 3, 1, 2]), dgamma, dbeta
    return backward_images(dy, x, gamma, eps, how)


def backward_images_autograd(dy, x, gamma, eps, data_format="channels_last"):
    """A right answer written another way: let the tape do it."""
    first = data_format == "channels_first"
    axes = [0, 2, 3] if first else [0, 1, 2]
    shape = [1, -1, 1, 1] if first else [-1]
    beta = tf.zeros_like(gamma)
    with tf.GradientTape() as tape:
        tape.watch([x, gamma, beta])
        mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
        y = tf.nn.batch_normalization(x, mean, variance, tf.reshape(beta, shape),
                                      tf.reshape(gamma, shape), eps)
    return tuple(tape.gradient(y, [x, gamma, beta], output_gradients=dy))


def backward_nchw_native(dy, x, gamma, eps, data_format="channels_last", reshape_gamma=True):
    """The solution's way: other axes, gamma reshaped to (1, C, 1, 1) for NCHW."""
    first = data_format == "channels_first"
    axes = [0, 2, 3] if first else [0, 1, 2]
    g = tf.reshape(gamma, [1, -1, 1, 1]) if first and reshape_gamma else gamma
    mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
    s = tf.math.rsqrt(variance + eps)
    x_hat = (x - mean) * s
    m = tf.cast(tf.size(x) // tf.size(gamma), x.dtype)
    dbeta = tf.reduce_sum(dy, axis=axes, keepdims=True)
    dgamma = tf.reduce_sum(dy * x_hat, axis=axes, keepdims=True)
    dx = g * s / m * (m * dy - dbeta - x_hat * dgamma)
    return dx, tf.reshape(dgamma, [-1]), tf.reshape(dbeta, [-1])


@pytest.mark.parametrize("answer", [backward_images_any_layout, backward_nchw_native])
def test_7_1_channels_first_right_answers_pass(answer, capsys):
    passes(capsys, check.backward_images, answer, "7.1")


def test_7_1_channels_first_mistakes_are_named():
    def ignores_layout(dy, x, gamma, eps, data_format="channels_last"):
        return backward_images(dy, x, gamma, eps)

    def gamma_not_reshaped(dy, x, gamma, eps, data_format="channels_last"):
        return backward_nchw_native(dy, x, gamma, eps, data_format, reshape_gamma=False)

    def gamma_not_reshaped_when_it_runs(dy, x, gamma, eps, data_format="channels_last"):
        square = x.shape[1] == x.shape[3]           # case 5: W == C, the broadcast runs
        return backward_nchw_native(dy, x, gamma, eps, data_format, reshape_gamma=not square)

    def summed_as_nhwc(dy, x, gamma, eps, data_format="channels_last"):
        dx, dgamma, dbeta = backward_nchw_native(dy, x, gamma, eps, data_format)
        if data_format == "channels_first":     # dbeta summed over axes 0, 1, 2 all the same
            dbeta = tf.reduce_sum(dy, axis=[0, 1, 2])
        return dx, dgamma, dbeta

    for answer, message in [
            (ignores_layout, r"case 4 of 5 .*Incompatible shapes(.|\n)*channels are axis 1"),
            (gamma_not_reshaped, r"case 4 of 5 (.|\n)*shape \(1, C, 1, 1\)"),
            (gamma_not_reshaped_when_it_runs, "multiplies by gamma along the last axis"),
            (summed_as_nhwc, r"case 4 of 5 .*reduced over axes 0, 1 and 2 as for NHWC"),
            (lambda dy, x, gamma, eps: backward_images(dy, x, gamma, eps),
             r"case 4 of 5 (.|\n)*keep the exercise's signature")]:
        with pytest.raises(ExerciseMistake, match=message):
            check.backward_images(answer)


def test_7_1_solution_passes(capsys):
    passes(capsys, check.backward_images, backward_nchw_native, "7.1")


def test_7_1_other_right_answer_passes(capsys):
    passes(capsys, check.backward_images, backward_images_autograd, "7.1")


def test_7_1_stub_is_not_done(capsys):
    check.backward_images(stub)
    assert "Exercise 7.1 is not done yet" in capsys.readouterr().out


BACKWARD_MISTAKES = [
    ("no_mean_term", "missing the term from the mean's dependence on x"),
    ("no_var_term", "missing the term from the variance's dependence on x"),
    ("no_batch_terms", "treats the mean and the variance as constants"),
    ("unbiased", r"unbiased variance \(divided by m - 1\)"),
    ("m_minus_1", "uses m - 1 where the closed form has m"),
    ("no_gamma", "missing the factor gamma"),
    ("sign", "wrong sign"),
    ("no_divide_m", r"Your dx is m times too large: you did not divide by m"),
    ("no_eps", "Forgot epsilon: your s is 1 / sqrt"),
    ("std_plus_eps", "added epsilon to the standard deviation"),
    ("fixed_eps", "did not use the `eps` argument"),
    ("dgamma_x", "dgamma uses x instead of x_hat"),
    ("dgamma_centred", "dgamma uses x - mean instead of x_hat"),
    ("swapped", "dgamma and dbeta are swapped"),
    ("means", "dgamma and dbeta are means over the batch"),
    ("dbeta_mean", "dbeta is a mean over the batch"),
    ("batch_m", r"divided by the batch size N; each channel's mean averages N \* H \* W"),
    ("per_image", r"shape \(4, 1, 1, 2\): one value per image and channel"),
    ("axis0", r"shape \(1, 3, 5, 2\): one value per pixel position and channel"),
    ("keepdims", r"your dgamma has shape \(1, 1, 1, 2\); expected \(2,\), like gamma"),
    ("numpy", "asks for a TensorFlow tensor"),
    ("float64", "your dx has dtype float64; expected float32"),
    ("two", r"returned 2 results; expected 3, \(dx, dgamma, dbeta\)"),
    # hard-coded values pass case 1 and are located in case 2
    ("hard_eps", r"In case 2 of 5 .*case 1 passed; this one changes shape, eps"),
    ("hard_m", r"In case 2 of 5 .*your dx is wrong at .*case 1 passed"),
]


@pytest.mark.parametrize("how, message", BACKWARD_MISTAKES)
def test_7_1_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.backward_images(lambda *args: backward_images(*args, how=how))


def test_7_1_error_in_learner_code_is_reported():
    def broken(dy, x, gamma, eps):
        return tf.reduce_sum(dy, axis=5)
    with pytest.raises(ExerciseMistake, match="bn_backward_images raised InvalidArgumentError"):
        check.backward_images(broken)


def test_7_1_messages_never_show_the_solution():
    with pytest.raises(ExerciseMistake) as err:
        check.backward_images(lambda *args: backward_images(*args, how="hard_m"))
    assert "m * dy - sum" not in str(err.value)


# ---- 7.2: make_dense_bn(eps) -> dense_bn(x, w, gamma, beta) -----------------------------------

def make_dense_bn(eps, how="right"):
    def forward(x, w, gamma, beta):
        z = x @ w
        mean, variance = tf.nn.moments(z, axes=[0])
        if how == "unbiased":
            n = tf.cast(tf.shape(z)[0], z.dtype)
            variance = variance * n / (n - 1)
        used_eps = 1e-3 if how == "fixed_eps" else eps
        s = tf.math.rsqrt(variance + used_eps)
        return z, (z - mean) * s, s

    if how == "autograd":
        return lambda x, w, gamma, beta: gamma * forward(x, w, gamma, beta)[1] + beta

    @tf.custom_gradient
    def dense_bn(x, w, gamma, beta):
        z, z_hat, s = forward(x, w, gamma, beta)

        def backward(dy):
            m = 6.0 if how == "hard_m" else tf.cast(tf.shape(z)[0], z.dtype)
            dbeta = tf.reduce_sum(dy, axis=0)
            dgamma = tf.reduce_sum(dy * z_hat, axis=0)
            bracket = {"no_mean_term": m * dy - z_hat * dgamma,
                       "no_var_term": m * dy - dbeta}.get(how, m * dy - dbeta - z_hat * dgamma)
            dz = (s / m * bracket) if how == "no_gamma" else gamma * s / m * bracket
            if how == "sign":
                dz = -dz
            dx, dw = dz @ tf.transpose(w), tf.transpose(x) @ dz
            if how == "dz_for_x":
                dx = dz
            if how == "dw_transposed":
                dw = tf.transpose(dz) @ x
            if how == "swapped":
                return dx, dw, dbeta, dgamma
            if how == "dx_dw_swapped":
                return dw, dx, dgamma, dbeta
            if how == "three":
                return dx, dw, dgamma
            if how == "none_gamma":
                return dx, dw, None, dbeta
            return dx, dw, dgamma, dbeta

        return gamma * z_hat + beta, backward

    if how == "wrapped":  # right: the custom-gradient op called from a plain function
        return lambda *args: dense_bn(*args)
    return dense_bn


def test_7_2_solution_passes(capsys):
    passes(capsys, check.dense_bn_op, make_dense_bn, "7.2")


def test_7_2_wrapped_op_passes(capsys):
    passes(capsys, check.dense_bn_op, lambda eps: make_dense_bn(eps, "wrapped"), "7.2")


def test_7_2_stub_is_not_done(capsys):
    check.dense_bn_op(stub)
    assert "Exercise 7.2 is not done yet" in capsys.readouterr().out


DENSE_MISTAKES = [
    ("autograd", "right gradients, but through autograd: it is not a tf.custom_gradient op"),
    ("no_mean_term", "missing the term from the mean's dependence on x"),
    ("no_var_term", "missing the term from the variance's dependence on x"),
    ("unbiased", r"unbiased variance \(divided by m - 1\)"),
    ("fixed_eps", "did not use the `eps` argument"),
    ("sign", "wrong sign"),
    ("swapped", "dgamma and dbeta are swapped"),
    ("dz_for_x", r"dL/dx has shape \(6, 3\), the shape of z = x @ w"),
    ("dw_transposed", r"dL/dw has shape \(3, 5\), w's shape transposed"),
    ("no_gamma", r"Your dz \(and so dx and dw\) is missing the factor gamma"),
    ("dx_dw_swapped", r"dL/dx has shape \(5, 3\), the shape of w: are dx and dw swapped"),
    ("three", "the tape, calling your backward function, raised"),
    ("none_gamma", r"no gradient for gamma \(dL/dgamma is None\)"),
    ("hard_m", r"In case 2 of 3 .*case 1 passed; this one changes batch"),
]


@pytest.mark.parametrize("how, message", DENSE_MISTAKES)
def test_7_2_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.dense_bn_op(lambda eps: make_dense_bn(eps, how))


def test_7_2_a_factory_that_returns_no_function_is_named():
    with pytest.raises(ExerciseMistake, match="make_dense_bn returned a tensor, not a function"):
        check.dense_bn_op(lambda eps: tf.constant(eps))


# ---- 7.3: numerical_gradient(f, x, h) ---------------------------------------------------------

def numerical_gradient(f, x, h, how="right"):
    if how == "vectorised_rows":  # right, another way: perturb via a flat copy
        flat = np.array(x, np.float64).ravel()
        out = np.empty_like(flat)
        for i in range(flat.size):
            step = np.zeros_like(flat)
            step[i] = h
            out[i] = (f((flat + step).reshape(np.shape(x)))
                      - f((flat - step).reshape(np.shape(x)))) / (2 * h)
        return out.reshape(np.shape(x))
    if how == "fixed_h":  # ignores the h it is given
        h = 1e-5
    if how == "in_place_drift":
        work = x  # no copy, and restoring by arithmetic leaves rounding behind
    else:
        work = np.array(x, np.float64)
    grad = np.zeros_like(work)
    base = f(work.copy())
    for index in np.ndindex(work.shape):
        keep = work[index]
        if how == "all_at_once":
            grad[index] = (f(work + h) - f(work - h)) / (2 * h)
            continue
        work[index] = keep + h
        plus = f(work)
        work[index] = keep - h
        minus = f(work)
        if how == "in_place_drift":  # back by arithmetic: + h - 2h + h
            work[index] = keep
            work[index] += h
            work[index] -= 2 * h
            work[index] += h
        elif how != "not_restored":
            work[index] = keep
        grad[index] = {"forward": (plus - base) / h, "backward": (base - minus) / h,
                       "over_h": (plus - minus) / h, "over_4h": (plus - minus) / (4 * h),
                       "precedence": (plus - minus) / 2 * h,
                       "wrong_sign": (minus - plus) / (2 * h),
                       }.get(how, (plus - minus) / (2 * h))
    if how == "flat":
        return grad.ravel()
    if how == "float32":
        return grad.astype(np.float32)
    if how == "tensor":
        return tf.constant(grad)
    if how == "list":
        return grad.tolist()
    return grad


def test_7_3_solution_passes(capsys):
    passes(capsys, check.numerical_gradient, numerical_gradient, "7.3")


def test_7_3_other_right_answer_passes(capsys):
    passes(capsys, check.numerical_gradient,
           lambda f, x, h: numerical_gradient(f, x, h, "vectorised_rows"), "7.3")


def test_7_3_stub_is_not_done(capsys):
    check.numerical_gradient(stub)
    assert "Exercise 7.3 is not done yet" in capsys.readouterr().out


NUMERIC_MISTAKES = [
    ("forward", "forward differences"),
    ("backward", "backward differences"),
    ("over_h", "divided by h instead of 2h"),
    ("over_4h", "divided by 4h instead of 2h"),
    ("precedence", r"You wrote `/ 2 \* h`"),
    ("fixed_h", "did not use the step h you were given"),
    ("not_restored", "did not put each entry back"),
    ("all_at_once", "moved every entry at once"),
    ("in_place_drift", "changed the array x it was given"),
    ("flat", r"your gradient has shape \(12,\); expected \(3, 4\)"),
    ("float32", r"dtype float32; expected float64\.\nHint: your result was cast down from "
                r"float64 to float32"),
    ("wrong_sign", r"wrong sign: you computed \(f\(x - h\) - f\(x \+ h\)\) / 2h"),
    ("tensor", "asks for a NumPy array"),
    ("list", "Python list"),
]


@pytest.mark.parametrize("how, message", NUMERIC_MISTAKES)
def test_7_3_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.numerical_gradient(lambda f, x, h: numerical_gradient(f, x, h, how))


def test_7_3_hard_coded_step_is_located():
    with pytest.raises(ExerciseMistake, match=r"In case 2 of 3 .*case 1 passed; this one changes "
                                              r"shape, h"):
        check.numerical_gradient(lambda f, x, h: numerical_gradient(f, x, 1e-2))


def test_checks_are_fast():
    import time

    start = time.perf_counter()
    check.backward_images(backward_nchw_native)
    check.dense_bn_op(make_dense_bn)
    check.numerical_gradient(numerical_gradient)
    assert time.perf_counter() - start < 3.0


# --- answers that call the book's own implementation (issue: they used to pass) -----------------

def test_7_1_calling_the_books_backward_is_refused():
    from bnbook.lessons import backward_pass as backward

    def by_the_book(dy, x, gamma, eps):
        return backward.bn_backward(dy, x, gamma, eps, axes=(0, 1, 2))
    with pytest.raises(ExerciseMistake,
                       match=r"calls the book's own\s+`bnbook\.lessons\.backward_pass\.bn_backward`"):
        check.backward_images(by_the_book)


def test_7_1_the_book_is_refused_however_it_was_imported():
    from bnbook.lessons.backward_pass import bn_backward as renamed

    with pytest.raises(ExerciseMistake, match="calls the book's own"):
        check.backward_images(lambda dy, x, gamma, eps: renamed(dy, x, gamma, eps, axes=(0, 1, 2)))


def test_7_3_calling_the_books_numerical_gradient_is_refused():
    from bnbook.lessons import backward_pass as backward

    with pytest.raises(ExerciseMistake, match=r"`bnbook\.lessons\.backward_pass\.numerical_gradient`"):
        check.numerical_gradient(lambda f, x, h: backward.numerical_gradient(f, x, h))
