"""Chapter 1 checkers: each accepts the solution, says "not done yet" for a stub, and rejects every
known-wrong answer with the message meant for it."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ExerciseMistake
from bnbook.checks import ch01 as check


def stub(*args):
    raise NotImplementedError("your code here")


# ---- 1.1: batch_norm_numpy(x, gamma, beta, eps) -----------------------------------------------

def bn_numpy(x, gamma, beta, eps, mean_axis=0, ddof=0, where="right"):
    """The solution, and (through `where`) the mistakes learners make."""
    axis = mean_axis
    keep = axis is not None
    mean = x.mean(axis=axis, keepdims=keep)
    var = x.var(axis=axis, ddof=ddof, keepdims=keep)
    std = np.sqrt(var)
    x_hat = (x - mean) / np.sqrt(var + eps)
    with np.errstate(divide="ignore", invalid="ignore"):  # "no_eps" on a constant feature
        no_eps = gamma * (x - mean) / std + beta
    return {
        "right": gamma * x_hat + beta,
        "no_eps": no_eps,
        "fixed_eps": gamma * (x - mean) / np.sqrt(var + np.float32(1e-3)) + beta,
        "std_plus_eps": gamma * (x - mean) / (std + eps) + beta,
        "sqrt_twice": gamma * (x - mean) / np.sqrt(std + eps) + beta,
        "no_sqrt": gamma * (x - mean) / (var + eps) + beta,
        "swapped": beta * x_hat + gamma,
        "no_scale_shift": x_hat,
        "not_centred": gamma * x / np.sqrt(var + eps) + beta,
        "shift_then_scale": gamma * (x_hat + beta),
        "float64": (gamma * x_hat + beta).astype(np.float64),
        "int": (gamma * x_hat + beta).astype(np.int32),
        "list": (gamma * x_hat + beta).tolist(),
        "tensor": tf.constant(gamma * x_hat + beta),
        "nan": np.full_like(x, np.nan),
        "stats_only": mean,
        "transposed": (gamma * x_hat + beta).T,
    }[where]


def test_1_1_solution_passes(capsys):
    check.transform(bn_numpy)
    assert capsys.readouterr().out.startswith("✓ Exercise 1.1 passed")


def test_1_1_stub_is_not_done(capsys):
    assert check.transform(stub) is None
    assert "Exercise 1.1 is not done yet" in capsys.readouterr().out


TRANSFORM_MISTAKES = [
    (dict(where="no_eps"), "Forgot epsilon"),
    (dict(where="fixed_eps"), "Forgot epsilon"),
    (dict(ddof=1), r"unbiased variance \(divided by n - 1\)"),
    (dict(ddof=1, where="no_eps"), r"Two mistakes: you used the unbiased variance .* forgot epsilon"),
    (dict(mean_axis=None), "Wrong axis: you took one mean and one variance over the whole batch"),
    (dict(mean_axis=1), "Wrong axis: you normalised each example across its features"),
    (dict(where="sqrt_twice"), "square root twice"),
    (dict(where="std_plus_eps"), "added epsilon to the standard deviation"),
    (dict(where="no_sqrt"), "not by its square root"),
    (dict(where="swapped"), "gamma and beta are swapped"),
    (dict(where="no_scale_shift"), "without the scale and shift"),
    (dict(where="not_centred"), "did not subtract the mean"),
    (dict(where="shift_then_scale"), "added beta before multiplying by gamma"),
    (dict(where="stats_only"), r"Wrong output shape: .* has shape \(1, 4\), expected \(6, 4\)"),
    (dict(where="transposed"), r"Wrong output shape: .* has shape \(4, 6\)"),
    (dict(where="float64"), "dtype float64; expected float32"),
    (dict(where="int"), "dtype int32"),
    (dict(where="list"), "Python list"),
    (dict(where="tensor"), "asks for a NumPy array"),
    (dict(where="nan"), "NaN"),
]


@pytest.mark.parametrize("variant, message", TRANSFORM_MISTAKES, ids=lambda v: str(v)[:40])
def test_1_1_mistakes_are_named(variant, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.transform(lambda x, g, b, eps: bn_numpy(x, g, b, eps, **variant))


def test_1_1_wrong_axis_without_keepdims_is_named():
    def per_example(x, gamma, beta, eps):
        return gamma * (x - x.mean(axis=1)) / np.sqrt(x.var(axis=1) + eps) + beta
    with pytest.raises(ExerciseMistake, match=r"failed: operands could not be broadcast together "
                       r"with shapes \(6,4\) \(6,\)\. .*wrong axis"):
        check.transform(per_example)


def test_1_1_special_casing_a_constant_feature_is_caught():
    def drops_constant(x, gamma, beta, eps):
        out = bn_numpy(x, gamma, beta, eps)
        out[:, x.std(axis=0) == 0] = 0.0
        return out
    with pytest.raises(ExerciseMistake, match="one feature is constant"):
        check.transform(drops_constant)


def test_1_1_in_place_edits_do_not_fool_the_check(capsys):
    def in_place(x, gamma, beta, eps):
        x -= x.mean(axis=0)
        x /= np.sqrt(x.var(axis=0) + eps)
        return gamma * x + beta
    check.transform(in_place)
    assert "passed" in capsys.readouterr().out


def test_1_1_unknown_mistake_gets_the_general_message():
    with pytest.raises(ExerciseMistake, match="does not match any mistake this check knows"):
        check.transform(lambda x, g, b, eps: bn_numpy(x, g, b, eps) + np.float32(0.5))


@pytest.mark.parametrize("batch", [check.dense_batch, check.image_batch], ids=["dense", "images"])
def test_known_variants_are_distinguishable(batch):
    """Every wrong variant must differ from the right answer and from every other variant by far
    more than the check's tolerance; otherwise a message could name the wrong mistake."""
    x, gamma, beta = batch()
    axes = (0,) if x.ndim == 2 else check.IMAGE_AXES
    outputs = dict(check.transform_variants(x, gamma, beta, check.EPS, axes))
    outputs["right"] = check.reference(x, gamma, beta, check.EPS, axes)
    # The fixed epsilons all mean the same mistake; only compare them with the rest.
    for (a, out_a), (b, out_b) in itertools.combinations(outputs.items(), 2):
        if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0] == "eps":
            continue
        assert np.max(np.abs(out_a - out_b)) > 20 * check.ATOL, (a, b)


# ---- 1.2: image_moments(images) -> (mean, variance) -------------------------------------------

def moments_tf(images, axes=(0, 1, 2), keepdims=False, how="right"):
    mean = tf.reduce_mean(images, axis=axes, keepdims=keepdims)
    var = tf.math.reduce_variance(images, axis=axes, keepdims=keepdims)
    n = tf.cast(tf.size(images) // tf.size(mean), tf.float32)
    return {
        "right": (mean, var),
        "swapped": (var, mean),
        "unbiased": (mean, var * n / (n - 1)),
        "std": (mean, tf.sqrt(var)),
        "not_centred": (mean, tf.reduce_mean(images ** 2, axis=axes, keepdims=keepdims)),
        "numpy": (mean.numpy(), var.numpy()),
        "one": mean,
        "three": (mean, var, var),
        "list": ([1.0, 2.0], var),
        "int": (tf.cast(mean, tf.int32), var),
        "float64": (mean, tf.cast(var, tf.float64)),
        "nan": (mean, var * np.nan),
        "mean_off": (mean + 1.0, var),
        "var_off": (mean, var + 1.0),
    }[how]


def test_1_2_solution_passes(capsys):
    check.image_moments(moments_tf)
    assert capsys.readouterr().out.startswith("✓ Exercise 1.2 passed")


def test_1_2_accepts_tf_nn_moments(capsys):
    check.image_moments(lambda images: tf.nn.moments(images, axes=[0, 1, 2]))
    assert "passed" in capsys.readouterr().out


def test_1_2_stub_is_not_done(capsys):
    check.image_moments(stub)
    assert "Exercise 1.2 is not done yet" in capsys.readouterr().out


MOMENT_MISTAKES = [
    (dict(axes=(0,)), r"Wrong axes: your mean has shape \(3, 5, 2\).*axes \[0\].*per pixel"),
    (dict(axes=(1, 2)), r"axes \[1, 2\].*instance normalisation"),
    (dict(axes=(1, 2, 3)), r"axes \[1, 2, 3\].*layer normalisation"),
    (dict(axes=(3,)), r"axes \[3\].*across the channels"),
    (dict(axes=None), r"shape \(\).*single mean for the whole batch"),
    (dict(axes=(0, 1)), r"axes \[0, 1\] gives: one mean for each column and channel"),
    (dict(axes=(1, 2), keepdims=True), r"shape \(4, 1, 1, 2\).*axes \[1, 2\]"),
    (dict(keepdims=True), r"Right axes, but your mean has shape \(1, 1, 1, 2\)"),
    (dict(how="swapped"), "Mean and variance are swapped"),
    (dict(how="unbiased"), r"unbiased variance \(divided by n - 1\)"),
    (dict(how="std"), "variance is a standard deviation"),
    (dict(how="not_centred"), "mean of x squared"),
    (dict(how="mean_off"), "mean has the right shape but wrong values"),
    (dict(how="var_off"), "variance has the right shape but wrong values"),
    (dict(how="numpy"), "asks for a TensorFlow tensor"),
    (dict(how="one"), r"returned a single array; expected two results, \(mean, variance\)"),
    (dict(how="three"), "returned 3 results"),
    (dict(how="list"), "your mean is a Python list"),
    (dict(how="int"), "your mean has dtype int32"),
    (dict(how="float64"), "your variance has dtype float64"),
    (dict(how="nan"), "your variance contains NaN"),
]


@pytest.mark.parametrize("variant, message", MOMENT_MISTAKES, ids=lambda v: str(v)[:40])
def test_1_2_mistakes_are_named(variant, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.image_moments(lambda images: moments_tf(images, **variant))


def test_reduced_axes_are_recognised_from_shapes():
    full = (4, 3, 5, 2)
    for r in range(1, 5):
        for axes in itertools.combinations(range(4), r):
            for keepdims in (False, True):
                shape = np.zeros(full).sum(axis=axes, keepdims=keepdims).shape
                assert check._reduced_axes(shape, full) == (axes, keepdims)


# ---- 1.3: recovering_gamma_beta(x, eps) -> (gamma, beta) --------------------------------------

def gamma_beta(x, eps, how="right"):
    mean, var = x.mean(axis=0), x.var(axis=0)
    right_gamma = np.sqrt(var + eps)
    return {
        "right": (right_gamma, mean),
        "no_eps": (np.sqrt(var), mean),
        "unbiased": (np.sqrt(x.var(axis=0, ddof=1) + eps), mean),
        "no_sqrt": (var + eps, mean),
        "inverse": (1 / right_gamma, mean),
        "one": (np.ones_like(mean), mean),
        "sqrt_twice": (np.sqrt(np.sqrt(var) + eps), mean),
        "gamma_off": (right_gamma * 2, mean),
        "swapped": (mean, right_gamma),
        "beta_zero": (right_gamma, np.zeros_like(mean)),
        "beta_off": (right_gamma, mean + 1),
        "scalar": (np.sqrt(x.var() + eps), x.mean()),
        "per_example": (np.sqrt(x.var(axis=1) + eps), x.mean(axis=1)),
        "keepdims": (right_gamma[None, :], mean[None, :]),
        "one_array": np.stack([right_gamma, mean]),
        "tensor": (tf.constant(right_gamma), mean),
        "float64": (right_gamma.astype(np.float64), mean),
        "list": (right_gamma.tolist(), mean),
    }[how]


def test_1_3_solution_passes(capsys):
    check.recovering_gamma_beta(gamma_beta)
    assert capsys.readouterr().out.startswith("✓ Exercise 1.3 passed")


def test_1_3_stub_is_not_done(capsys):
    check.recovering_gamma_beta(stub)
    assert "Exercise 1.3 is not done yet" in capsys.readouterr().out


GAMMA_BETA_MISTAKES = [
    ("no_eps", "standard deviation without epsilon"),
    ("unbiased", r"unbiased variance \(divided by n - 1\)"),
    ("no_sqrt", "square root is missing"),
    ("inverse", "upside down"),
    ("one", "gamma is 1"),
    ("sqrt_twice", "square root twice"),
    ("gamma_off", "beta is right but your gamma is wrong"),
    ("swapped", "gamma and beta are swapped"),
    ("beta_zero", "beta is 0"),
    ("beta_off", "Your beta is wrong"),
    ("scalar", "Wrong axis: your gamma is a single number"),
    ("per_example", r"Wrong axis: your gamma has shape \(6,\), one value per example"),
    ("keepdims", r"Wrong output shape: your gamma has shape \(1, 4\), expected \(4,\)"),
    ("one_array", "returned a single array"),
    ("tensor", "asks for a NumPy array"),
    ("float64", "dtype float64"),
    ("list", "Python list"),
]


@pytest.mark.parametrize("how, message", GAMMA_BETA_MISTAKES)
def test_1_3_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.recovering_gamma_beta(lambda x, eps: gamma_beta(x, eps, how))


# ---- 1.4: batch_norm_tf(x, gamma, beta, eps, axes) --------------------------------------------

def bn_tf(x, gamma, beta, eps, axes, how="right"):
    used_axes = {"axis0": [0], "last_axis": [x.shape.rank - 1], "all_axes": None}.get(how, axes)
    mean, var = tf.nn.moments(x, axes=used_axes, keepdims=how in ("keepdims", "last_axis"))
    if how in ("right", "keepdims", "axis0", "last_axis", "all_axes"):
        return tf.nn.batch_normalization(x, mean, var, offset=beta, scale=gamma,
                                         variance_epsilon=eps)
    if how == "unbiased":
        n = tf.cast(tf.size(x) // tf.size(mean), tf.float32)
        return tf.nn.batch_normalization(x, mean, var * n / (n - 1), beta, gamma, eps)
    if how == "no_eps":
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, 0.0)
    if how == "float64":
        return tf.cast(tf.nn.batch_normalization(x, mean, var, beta, gamma, eps), tf.float64)
    if how == "list":
        return [tf.nn.batch_normalization(x, mean, var, beta, gamma, eps)]
    if how == "positional_swap":  # (x, mean, variance, scale, offset, ...) is the wrong order
        return tf.nn.batch_normalization(x, mean, var, gamma, beta, eps)
    if how == "std":
        return tf.nn.batch_normalization(x, mean, tf.sqrt(var), beta, gamma, eps)
    if how == "fixed_eps":
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, 1e-3)
    if how == "numpy":
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, eps).numpy()
    if how == "no_scale_shift":
        return tf.nn.batch_normalization(x, mean, var, None, None, eps)
    raise AssertionError(how)


def test_1_4_solution_passes(capsys):
    check.transform_tf(bn_tf)
    assert capsys.readouterr().out.startswith("✓ Exercise 1.4 passed")


def test_1_4_stub_is_not_done(capsys):
    check.transform_tf(stub)
    assert "Exercise 1.4 is not done yet" in capsys.readouterr().out


def test_1_4_accepts_keepdims(capsys):
    check.transform_tf(lambda *args: bn_tf(*args, how="keepdims"))
    assert "passed" in capsys.readouterr().out


TF_MISTAKES = [
    ("unbiased", r"unbiased variance \(divided by n - 1\)"),
    ("no_eps", "Forgot epsilon"),
    ("last_axis", "Wrong axis: you normalised each example across its features"),
    ("all_axes", "Wrong axis: you took one mean and one variance over the whole batch"),
    ("float64", "dtype float64; expected float32"),
    ("list", "Python list"),
    ("positional_swap", "offset and beta as the scale"),
    ("std", "passed a standard deviation where tf.nn.batch_normalization expects the variance"),
    ("fixed_eps", "Forgot epsilon"),
    ("axis0", "Right on the dense batch, wrong on an image batch .*axis 0 only"),
    ("numpy", "asks for a TensorFlow tensor"),
    ("no_scale_shift", "without the scale and shift"),
]


@pytest.mark.parametrize("how, message", TF_MISTAKES)
def test_1_4_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.transform_tf(lambda *args: bn_tf(*args, how=how))


def test_1_4_broadcast_error_points_at_the_axes():
    def keeps_wrong_dims(x, gamma, beta, eps, axes):
        mean, var = tf.nn.moments(x, axes=[1])
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, eps)
    with pytest.raises(ExerciseMistake,
                       match=r"failed: Incompatible shapes: \[6\] vs\. \[4\]\. .*wrong axis"):
        check.transform_tf(keeps_wrong_dims)


def test_checks_are_fast():
    import time

    start = time.perf_counter()
    check.transform(bn_numpy)
    check.image_moments(moments_tf)
    check.recovering_gamma_beta(gamma_beta)
    check.transform_tf(bn_tf)
    assert time.perf_counter() - start < 3.0
