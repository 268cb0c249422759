"""Checkers for chapter 1, the batch-normalizing transform by hand.

Each checker runs the learner's function on small synthetic data built so that every known mistake
gives a different answer: the variances are far from 1 and some are small, so that ``eps = 0.1``
matters; ``gamma`` differs from ``beta``; and no two axes have the same length, so reducing over
the wrong axes changes the shape of the statistics. Each mistake is recognised by computing the
wrong variant and comparing.
"""

from __future__ import annotations

import re

import numpy as np

from ._core import ExerciseMistake, as_array, call, checker, expect_shape

EPS = 0.1  # large on purpose: forgetting epsilon, or putting it in the wrong place, shows
ATOL = 1e-4  # float32 results against float64 references
COMMON_EPSILONS = (0.0, 1e-3, 1e-5)  # what a learner types when they ignore the `eps` argument
IMAGE_AXES = (0, 1, 2)
# What normalising an NHWC batch over other axes gives, for the messages.
_AXES_MEANING = {
    (0,): "one mean per pixel position and channel, as if each pixel were a dense feature",
    (1, 2): "one mean per image and channel: each image on its own (that is instance "
            "normalisation), not shared across the batch",
    (1, 2, 3): "one mean per image (that is layer normalisation)",
    (3,): "one mean per pixel of each image, averaged across the channels",
    (0, 1, 2, 3): "a single mean for the whole batch, channels mixed together",
}


# ---------------------------------------------------------------------------------------------
# Test data (fixed, so that every learner sees the same messages)
# ---------------------------------------------------------------------------------------------

def dense_batch():
    """x of shape (6, 4): 6 examples, 4 features with different means and small or large spreads."""
    rng = np.random.default_rng(1)
    scale = np.array([0.3, 2.0, 0.5, 4.0])
    shift = np.array([1.0, -3.0, 5.0, 0.5])
    x = (rng.standard_normal((6, 4)) * scale + shift).astype(np.float32)
    gamma = np.array([1.5, 0.5, 2.0, 0.8], np.float32)
    beta = np.array([-1.0, 0.25, 3.0, -0.5], np.float32)
    return x, gamma, beta


def image_batch():
    """NHWC images of shape (4, 3, 5, 2): 4 images, 3 x 5 pixels, 2 channels, with gamma, beta."""
    rng = np.random.default_rng(2)
    scale = np.array([0.4, 3.0])
    shift = np.array([2.0, -1.0])
    images = (rng.standard_normal((4, 3, 5, 2)) * scale + shift).astype(np.float32)
    gamma = np.array([1.5, 0.6], np.float32)
    beta = np.array([-0.5, 2.0], np.float32)
    return images, gamma, beta


# ---------------------------------------------------------------------------------------------
# References: the transform and its known-wrong variants, in float64
# ---------------------------------------------------------------------------------------------

def _moments(x, axes, ddof=0):
    x = np.asarray(x, np.float64)
    axes = None if axes is None else tuple(axes)
    return x.mean(axis=axes, keepdims=True), x.var(axis=axes, ddof=ddof, keepdims=True)


def reference(x, gamma, beta, eps, axes=(0,)):
    """The batch-normalizing transform, in float64."""
    mean, var = _moments(x, axes)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def transform_variants(x, gamma, beta, eps, axes=(0,)):
    """Known-wrong versions of the transform: {key: output}.

    A key is a mistake's name, or ("eps", value) for a fixed epsilon used instead of ``eps``, or
    ("axes", axes) for statistics taken over the wrong axes (None: over everything).
    """
    x = np.asarray(x, np.float64)
    mean, var = _moments(x, axes)
    std = np.sqrt(var)
    x_hat = (x - mean) / np.sqrt(var + eps)
    variants = {
        "no_sqrt": gamma * (x - mean) / (var + eps) + beta,
        "std_plus_eps": gamma * (x - mean) / (std + eps) + beta,
        "sqrt_twice": gamma * (x - mean) / np.sqrt(std + eps) + beta,
        "unbiased": gamma * (x - mean) / np.sqrt(_moments(x, axes, ddof=1)[1] + eps) + beta,
        # x.std(ddof=1) with no epsilon: two mistakes at once, common enough to name
        "unbiased_no_eps": gamma * (x - mean) / np.sqrt(_moments(x, axes, ddof=1)[1]) + beta,
        "swapped": beta * x_hat + gamma,
        "no_scale_shift": x_hat,
        "not_centred": gamma * x / np.sqrt(var + eps) + beta,
        "shift_then_scale": gamma * (x_hat + beta),
    }
    for other in COMMON_EPSILONS:
        variants["eps", other] = reference(x, gamma, beta, other, axes)
    wrong_axes = [None, (1,)] if x.ndim == 2 else [None, (0,), (1, 2), (1, 2, 3), (3,)]
    for wrong in wrong_axes:
        variants["axes", wrong] = reference(x, gamma, beta, eps, wrong)
    return variants


def _axes_mistake(axes, ndim):
    """(mistake, hint) for statistics taken over ``axes`` instead of the right ones."""
    if ndim == 2:
        hint = ("each feature is normalised with the mean and variance of that feature over the "
                "examples of the batch; check the axis you reduce over.")
        if axes is None:
            return ("Wrong axis: you took one mean and one variance over the whole batch (no "
                    "axis), not one per feature.", hint)
        return ("Wrong axis: you normalised each example across its features (axis 1), not each "
                "feature across the examples of the batch.", hint)
    hint = ("batch norm for images keeps one mean and one variance per channel, shared by every "
            "image in the batch and every pixel position.")
    axes = tuple(range(ndim)) if axes is None else axes
    return (f"Wrong axes: you normalised over axes {list(axes)}, which gives "
            f"{_AXES_MEANING[axes]}.", hint)


def _close(a, b):
    return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=0, atol=ATOL)


def _mistake_messages(eps_name: str = "eps"):
    """{mistake: (message, hint)} for the transform. eps_name: what the epsilon is called."""
    return {
        "no_sqrt": ("You divided by the variance plus epsilon, not by its square root.",
                    "x - mean is in the units of x; divide it by something in the same units."),
        "std_plus_eps": ("You added epsilon to the standard deviation instead of to the variance.",
                         "epsilon goes inside the square root, next to the variance."),
        "sqrt_twice": ("You took the square root twice: a standard deviation went where the "
                       "variance belongs.",
                       "the formula takes the square root of (variance + epsilon) once; make sure "
                       "what you put under it is the variance, not the standard deviation."),
        "unbiased": ("You used the unbiased variance (divided by n - 1).",
                     "batch norm uses the biased variance of the mini-batch: divide by n "
                     "(np.var's default ddof=0, tf.math.reduce_variance, tf.nn.moments)."),
        "unbiased_no_eps": ("Two mistakes: you used the unbiased variance (divided by n - 1) and "
                            "forgot epsilon.",
                            "divide by n (np.var's default ddof=0) and add epsilon to the variance "
                            "inside the square root."),
        "swapped": ("gamma and beta are swapped: you scaled by beta and shifted by gamma.",
                    "gamma is the scale (it multiplies), beta is the shift (it is added)."),
        "no_scale_shift": ("You returned the normalised values without the scale and shift.",
                           "the last step multiplies by gamma and adds beta."),
        "not_centred": ("You did not subtract the mean before dividing.",
                        "the normalised value is (x - mean) / sqrt(variance + epsilon)."),
        "shift_then_scale": ("You added beta before multiplying by gamma.",
                             "scale first, then shift: the output's mean should be beta."),
        "eps": (f"Forgot epsilon: you did not use the `{eps_name}` argument (your result matches "
                "no epsilon, or a fixed one).",
                f"use the `{eps_name}` the function is given, inside the square root; without it "
                "a constant feature divides 0 by 0."),
    }


def _diagnose(out, x, gamma, beta, eps, axes, messages=None):
    """Raise ExerciseMistake naming the first known-wrong variant ``out`` matches, or a general one."""
    __tracebackhide__ = True
    known = _mistake_messages()
    known.update(messages or {})
    for key, wrong in transform_variants(x, gamma, beta, eps, axes).items():
        if _close(out, wrong):
            if isinstance(key, tuple) and key[0] == "axes":
                raise ExerciseMistake(*_axes_mistake(key[1], x.ndim))
            raise ExerciseMistake(*known[key[0] if isinstance(key, tuple) else key])
    error = float(np.max(np.abs(out - reference(x, gamma, beta, eps, axes))))
    raise ExerciseMistake(
        f"Your result differs from the batch-normalizing transform by up to {error:.3g}, and it "
        "does not match any mistake this check knows.",
        "go through the four steps one at a time on a tiny input: mean, variance (divide by n), "
        "normalise with epsilon inside the square root, then scale by gamma and shift by beta.",
    )


def _broadcast_failure_hint(err: ExerciseMistake) -> ExerciseMistake:
    """A broadcasting error in the learner's code almost always means a mean or variance taken over
    the wrong axis: say so, in place of NumPy's or TensorFlow's wording alone."""
    text = str(err)
    found = re.search(r"Incompatible shapes: \[[\d, ]*\] vs\. \[[\d, ]*\]", text) or \
        re.search(r"operands could not be broadcast together with shapes [\d(), ]*\)", text)
    if not found:
        return err
    function = err.mistake.split(" raised ")[0]
    return ExerciseMistake(
        f"{function} failed: {found.group(0).strip()}. Shapes that do not broadcast usually mean "
        "a mean or variance was taken over the wrong axis.",
        "print the shapes of your mean and variance: there should be one value per feature "
        "(per channel for images).")


# ---------------------------------------------------------------------------------------------
# Exercise 1.1: the transform in NumPy
# ---------------------------------------------------------------------------------------------

@checker("1.1")
def transform(fn):
    """Check ``batch_norm_numpy(x, gamma, beta, eps)`` on a (6, 4) float32 batch with eps=0.1."""
    __tracebackhide__ = True
    x, gamma, beta = dense_batch()
    try:  # copies: a learner's in-place `x -= mean` must not change the check's data
        result = call(fn, x.copy(), gamma.copy(), beta.copy(), EPS, what="batch_norm_numpy")
    except ExerciseMistake as err:
        raise _broadcast_failure_hint(err) from None
    out = as_array(result, "batch_norm_numpy's result", want_tensor=False)
    expect_shape(out, x.shape, "batch_norm_numpy's result")
    if not _close(out, reference(x, gamma, beta, EPS)):
        _diagnose(out, x, gamma, beta, EPS, (0,))
    # A constant feature: the case epsilon exists for. The right answer there is beta.
    constant = x.copy()
    constant[:, 2] = 7.0
    out = as_array(call(fn, constant.copy(), gamma.copy(), beta.copy(), EPS, what="batch_norm_numpy"),
                   "batch_norm_numpy's result for a batch with a constant feature",
                   want_tensor=False)
    if not _close(out, reference(constant, gamma, beta, EPS)):
        raise ExerciseMistake(
            "Right on the first batch, wrong on a batch where one feature is constant.",
            "a constant feature has variance 0; with epsilon its normalised value is 0, so the "
            "output is beta. Does your code special-case something?")
    return "matches the batch-normalizing transform (float32, within 1e-4), constant feature included"


# ---------------------------------------------------------------------------------------------
# Exercise 1.2: per-channel moments of an NHWC image batch, in TensorFlow
# ---------------------------------------------------------------------------------------------


def _expect_pair(result, function, names):
    """A function that must return two results (a tuple) returned something else: say what."""
    __tracebackhide__ = True
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return
    if isinstance(result, (tuple, list)):
        got = f"{len(result)} results"
    elif hasattr(result, "shape"):
        got = "a single array"
    else:
        got = f"a {type(result).__name__}"
    raise ExerciseMistake(f"{function} returned {got}; expected two results, ({names}).",
                          f"end with `return {names}`.")


def _reduced_axes(shape, full_shape):
    """Which axes of ``full_shape`` a statistic of ``shape`` was reduced over, or None.

    Works because the test images have four different axis lengths. Returns (axes, keepdims).
    """
    shape, full_shape = tuple(shape), tuple(full_shape)
    ndim = len(full_shape)
    for mask in range(1, 2 ** ndim):
        axes = tuple(i for i in range(ndim) if mask >> i & 1)
        kept = tuple(n for i, n in enumerate(full_shape) if i not in axes)
        ones = tuple(1 if i in axes else n for i, n in enumerate(full_shape))
        if shape == kept:
            return axes, False
        if shape == ones:
            return axes, True
    return None


def _check_moment_shape(stat, name, full_shape):
    __tracebackhide__ = True
    want = (full_shape[-1],)
    if tuple(stat.shape) == want:
        return
    found = _reduced_axes(stat.shape, full_shape)
    if found == (IMAGE_AXES, True):
        raise ExerciseMistake(
            f"Right axes, but {name} has shape {tuple(stat.shape)}; this exercise asks for shape "
            f"{want}, one value per channel.",
            "keepdims=True keeps the reduced axes as size 1; leave it out here.")
    if found is not None:
        axes, _ = found
        kept = [name for i, name in enumerate(("image", "row", "column", "channel")) if i not in axes]
        meaning = _AXES_MEANING.get(axes, "one mean for each " + " and ".join(kept))
        raise ExerciseMistake(
            f"Wrong axes: {name} has shape {tuple(stat.shape)}, which is what reducing over axes "
            f"{list(axes)} gives: {meaning}.",
            "batch norm for images keeps one mean and one variance per channel, shared by every "
            "image in the batch and every pixel position.")
    expect_shape(stat, want, name)


@checker("1.2")
def image_moments(fn):
    """Check ``image_moments(images)`` -> (mean, variance), tf.Tensors of shape (C,)."""
    __tracebackhide__ = True
    import tensorflow as tf

    images, _, _ = image_batch()
    result = call(fn, tf.constant(images), what="image_moments")
    _expect_pair(result, "image_moments", "mean, variance")
    mean = as_array(result[0], "your mean", want_tensor=True)
    var = as_array(result[1], "your variance", want_tensor=True)
    _check_moment_shape(mean, "your mean", images.shape)
    _check_moment_shape(var, "your variance", images.shape)

    x = images.astype(np.float64)
    right_mean, right_var = x.mean(axis=IMAGE_AXES), x.var(axis=IMAGE_AXES)
    if _close(mean, right_var) and _close(var, right_mean):
        raise ExerciseMistake("Mean and variance are swapped.", "return them in the order "
                              "(mean, variance), the same order tf.nn.moments uses.")
    if not _close(mean, right_mean):
        raise ExerciseMistake(
            "Your mean has the right shape but wrong values.",
            "each channel's mean averages all N x H x W values of that channel.")
    if _close(var, x.var(axis=IMAGE_AXES, ddof=1)):
        raise ExerciseMistake(*_mistake_messages()["unbiased"])
    if _close(var, x.std(axis=IMAGE_AXES)):
        raise ExerciseMistake(
            "Your variance is a standard deviation (you took a square root).",
            "the variance is the mean of the squared deviations, with no square root.")
    if _close(var, (x ** 2).mean(axis=IMAGE_AXES)):
        raise ExerciseMistake(
            "Your variance is the mean of x squared: you did not subtract the mean first.",
            "variance = mean of (x - mean) squared.")
    if not _close(var, right_var):
        raise ExerciseMistake(
            "Your variance has the right shape but wrong values.",
            "variance = mean of (x - mean) squared, over the same axes as the mean.")
    return "one mean and one variance per channel, matching tf.nn.moments"


# ---------------------------------------------------------------------------------------------
# Exercise 1.3: gamma and beta that undo the normalisation
# ---------------------------------------------------------------------------------------------

@checker("1.3")
def recovering_gamma_beta(fn):
    """Check ``recovering_gamma_beta(x, eps)`` -> (gamma, beta), NumPy arrays of shape (F,)."""
    __tracebackhide__ = True
    x, _, _ = dense_batch()
    result = call(fn, x.copy(), EPS, what="recovering_gamma_beta")
    _expect_pair(result, "recovering_gamma_beta", "gamma, beta")
    gamma = as_array(result[0], "your gamma", want_tensor=False)
    beta = as_array(result[1], "your beta", want_tensor=False)
    n, features = x.shape
    for value, name in ((gamma, "your gamma"), (beta, "your beta")):
        if value.shape in ((), (1,), (1, 1)):
            raise ExerciseMistake(
                f"Wrong axis: {name} is a single number; each of the {features} features needs "
                "its own.",
                "take the statistics per feature, over the examples of the batch.")
        if value.shape in ((n,), (n, 1)):
            raise ExerciseMistake(
                f"Wrong axis: {name} has shape {value.shape}, one value per example; each of the "
                f"{features} features needs its own.",
                "take the statistics per feature, over the examples of the batch.")
        expect_shape(value, (features,), name)

    xd = x.astype(np.float64)
    mean, var = xd.mean(axis=0), xd.var(axis=0)
    recovered = reference(x, gamma, beta, EPS)
    if _close(recovered, x):
        return "the transform with your gamma and beta gives back x (to float32 rounding)"
    if _close(gamma, mean) and _close(beta, np.sqrt(var + EPS)):
        raise ExerciseMistake(*_mistake_messages()["swapped"])
    if not _close(beta, mean):
        if _close(beta, np.zeros_like(mean)):
            raise ExerciseMistake("beta is 0, so the output's mean stays 0 instead of the "
                                  "input's mean.", "beta sets the mean of the output.")
        raise ExerciseMistake("Your beta is wrong.", "beta is added last, so it sets the "
                              "output's mean: which mean do you want back?")
    wrong_gammas = {
        "std": (np.sqrt(var), "Your gamma is the standard deviation without epsilon.",
                "the transform divided by sqrt(variance + eps), not by the standard deviation."),
        "unbiased": (np.sqrt(xd.var(axis=0, ddof=1) + EPS), *_mistake_messages()["unbiased"]),
        "no_sqrt": (var + EPS, "Your gamma is variance + eps: the square root is missing.",
                    "gamma must undo a division by sqrt(variance + eps)."),
        "inverse": (1 / np.sqrt(var + EPS), "Your gamma is upside down: you divided where the "
                    "transform multiplies back.", "gamma must undo a division, so it multiplies "
                    "by the same amount."),
        "one": (np.ones_like(var), "gamma is 1, so the output keeps the normalised spread.",
                "gamma sets the spread of the output."),
        "sqrt_twice": (np.sqrt(np.sqrt(var) + EPS), *_mistake_messages()["sqrt_twice"]),
    }
    for wrong, mistake, hint in wrong_gammas.values():
        if _close(gamma, wrong):
            raise ExerciseMistake(mistake, hint)
    raise ExerciseMistake("Your beta is right but your gamma is wrong.",
                          "gamma multiplies x_hat = (x - mean) / sqrt(variance + eps): what must "
                          "it be to give back x - mean?")


# ---------------------------------------------------------------------------------------------
# Exercise 1.4: the transform with tf.nn.moments and tf.nn.batch_normalization
# ---------------------------------------------------------------------------------------------

_TF_MESSAGES = {
    "swapped": ("gamma and beta are swapped: tf.nn.batch_normalization got gamma as the offset "
                "and beta as the scale.",
                "its arguments are (x, mean, variance, offset, scale, variance_epsilon): the "
                "offset (beta) comes before the scale (gamma); keyword arguments avoid the trap."),
    "sqrt_twice": ("You passed a standard deviation where tf.nn.batch_normalization expects the "
                   "variance (so the square root was taken twice).",
                   "tf.nn.batch_normalization takes the variance and does the square root itself."),
}


@checker("1.4")
def transform_tf(fn):
    """Check ``batch_norm_tf(x, gamma, beta, eps, axes)`` on a dense batch and an image batch."""
    __tracebackhide__ = True
    import tensorflow as tf

    cases = (("a dense batch of shape (6, 4) with axes [0]", dense_batch(), [0]),
             ("an image batch of shape (4, 3, 5, 2) with axes [0, 1, 2]", image_batch(), [0, 1, 2]))
    for where, (x, gamma, beta), axes in cases:
        try:
            result = call(fn, tf.constant(x), tf.constant(gamma), tf.constant(beta), EPS,
                          list(axes), what=f"batch_norm_tf on {where}")
        except ExerciseMistake as err:
            raise _broadcast_failure_hint(err) from None
        out = as_array(result, f"batch_norm_tf's result on {where}", want_tensor=True)
        expect_shape(out, x.shape, f"batch_norm_tf's result on {where}")
        if _close(out, reference(x, gamma, beta, EPS, axes)):
            continue
        if len(axes) > 1 and _close(out, reference(x, gamma, beta, EPS, (0,))):
            raise ExerciseMistake(
                f"Right on the dense batch, wrong on {where}: you normalised over axis 0 only.",
                "use the `axes` argument the function is given instead of a fixed axis.")
        _diagnose(out, x, gamma, beta, EPS, axes, messages=_TF_MESSAGES)
    return "matches the batch-normalizing transform on dense and image batches"
