"""Checkers for chapter 1, the batch-normalizing transform by hand.

Every checker runs three to seven cases that differ in every size (batch, channels, height, width,
features) and in epsilon (1.4 also in rank and in the feature axis, counted from either end), so
that no hard-coded number passes. Within a case no two axes have the same length (except where a
case is built to catch one broadcasting mistake), the variances are far from 1 and some are small,
so that each mistake with epsilon or the axes gives a different answer.
The known-wrong variants are computed in float64 and matched with :func:`._core.match`.
"""

from __future__ import annotations

import re

import numpy as np

from ._core import ExerciseMistake, Wrong, call, cases, changed_note, checker, match

COMMON_EPSILONS = (0.0, 1e-3, 1e-5)  # what a learner types when they ignore the `eps` argument


# ---------------------------------------------------------------------------------------------
# The transform and its known-wrong variants, in float64
# ---------------------------------------------------------------------------------------------

def _along(values, ndim: int, axis: int):
    """A per-feature vector shaped to broadcast along ``axis`` of an ``ndim``-dimensional array."""
    shape = [1] * ndim
    shape[axis] = -1
    return np.reshape(np.asarray(values, np.float64), shape)


def reference(x, gamma, beta, eps, axis=-1, stats_axes=None, ddof=0):
    """The transform of ``x`` with one gamma/beta per index of ``axis`` (the feature axis), the
    statistics taken over ``stats_axes`` (default: every other axis), in float64."""
    x = np.asarray(x, np.float64)
    axis = axis % x.ndim
    if stats_axes is None:
        stats_axes = tuple(i for i in range(x.ndim) if i != axis)
    mean = x.mean(axis=stats_axes, keepdims=True)
    var = x.var(axis=stats_axes, ddof=ddof, keepdims=True)
    with np.errstate(all="ignore"):  # variants with epsilon 0 divide 0 by 0 on a constant channel
        return _along(gamma, x.ndim, axis) * (x - mean) / np.sqrt(var + eps) + \
            _along(beta, x.ndim, axis)


def _transform_variants(x, gamma, beta, eps, axis, messages):
    """Known-wrong transforms (right axes) as Wrong entries, in the order they are tried."""
    x = np.asarray(x, np.float64)
    axis = axis % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != axis)
    g, b = _along(gamma, x.ndim, axis), _along(beta, x.ndim, axis)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    unbiased = x.var(axis=axes, ddof=1, keepdims=True)
    std = np.sqrt(var)
    x_hat = (x - mean) / np.sqrt(var + eps)
    with np.errstate(all="ignore"):
        out = _wrong_forms(x, g, b, mean, var, unbiased, std, x_hat, eps)
    wrong = [Wrong(value, *messages[key]) for key, value in out.items()]
    wrong += [Wrong(reference(x, gamma, beta, other, axis), *messages["eps"])
              for other in (*COMMON_EPSILONS, 0.1) if other != eps]  # 0.1: the first case's
    return wrong


def _wrong_forms(x, g, b, mean, var, unbiased, std, x_hat, eps):
    return {
        "no_sqrt": g * (x - mean) / (var + eps) + b,
        "std_plus_eps": g * (x - mean) / (std + eps) + b,
        "sqrt_twice": g * (x - mean) / np.sqrt(std + eps) + b,
        "unbiased": g * (x - mean) / np.sqrt(unbiased + eps) + b,
        "unbiased_no_eps": g * (x - mean) / np.sqrt(unbiased) + b,
        "swapped": b * x_hat + g,
        "no_scale_shift": x_hat,
        "not_centred": g * x / np.sqrt(var + eps) + b,
        "shift_then_scale": g * (x_hat + b),
    }


MESSAGES = {
    "no_sqrt": ("You divided by the variance plus epsilon, not by its square root.",
                "x - mean is in the units of x; divide it by something in the same units."),
    "std_plus_eps": ("You added epsilon to the standard deviation instead of to the variance.",
                     "epsilon goes inside the square root, next to the variance."),
    "sqrt_twice": ("You took the square root twice: a standard deviation went where the variance "
                   "belongs.",
                   "the formula takes the square root of (variance + epsilon) once; make sure what "
                   "you put under it is the variance, not the standard deviation."),
    "unbiased": ("You used the unbiased variance (divided by n - 1).",
                 "batch norm uses the biased variance of the mini-batch: divide by n (np.var's "
                 "default ddof=0, tf.math.reduce_variance, tf.nn.moments)."),
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
    "eps": ("Forgot epsilon: you did not use the `eps` argument (your result matches no epsilon, "
            "or a fixed one).",
            "use the `eps` the function is given, inside the square root; without it a constant "
            "feature divides 0 by 0."),
}

def averaged_variances(part: str) -> tuple[str, str]:
    """The mistake of averaging the variances of a batch's parts (weighted by their counts),
    as "averaged the parts' variances: ..." (for "You " or "Layer 1: you " in front), and its
    hint, for parts called ``part`` ("part", "chunk"); chapter 3 reuses it."""
    return (f"averaged the {part}s' variances: that misses how far the {part}s' means lie from "
            "the overall mean.",
            f"each {part}'s values spread around that {part}'s mean; around the overall mean they "
            f"spread more. Use E[x^2] of the whole batch: each {part} gives variance + mean^2, "
            "weighted by its count.")


_TF_MESSAGES = dict(MESSAGES, **{
    "swapped": ("gamma and beta are swapped: tf.nn.batch_normalization got gamma as the offset "
                "and beta as the scale.",
                "its arguments are (x, mean, variance, offset, scale, variance_epsilon): the "
                "offset (beta) comes before the scale (gamma); keyword arguments avoid the trap."),
    "sqrt_twice": ("You passed a standard deviation where tf.nn.batch_normalization expects the "
                   "variance (so the square root was taken twice).",
                   "tf.nn.batch_normalization takes the variance and does the square root itself."),
})


def _broadcast_hint(err: ExerciseMistake, hint: str, case=None) -> ExerciseMistake:
    """A broadcasting error in the learner's code: say what it usually means."""
    text = str(err)
    found = re.search(r"Incompatible shapes: \[[\d, ]*\] vs\. \[[\d, ]*\]", text) or \
        re.search(r"operands could not be broadcast together with shapes [\d(), ]*\)", text) or \
        re.search(r"Dimensions must be equal[^.]*", text)
    if not found:
        return err
    function = err.mistake.split(" raised ")[0]  # "[In case k: ]<what>"
    return ExerciseMistake(f"{function} failed: {found.group(0).strip()}"
                           f"{changed_note(case)}. Shapes that do not "
                           "broadcast usually mean a statistic, gamma or beta is lined up with the "
                           "wrong axis.", hint)


def _call(fn, *args, what, hint, case):
    __tracebackhide__ = True
    try:
        return call(fn, *args, what=what, case=case)
    except ExerciseMistake as err:
        raise _broadcast_hint(err, hint, case) from None


def _data(seed: int, shape, feature_axis: int, constant: int | None = None):
    """float32 data with one very different mean and spread per feature, plus gamma and beta
    (gamma with one negative entry)."""
    rng = np.random.default_rng(seed)
    n = shape[feature_axis]
    scale = _along(np.geomspace(0.2, 5.0, n)[rng.permutation(n)], len(shape), feature_axis)
    shift = _along(rng.uniform(-4, 4, n), len(shape), feature_axis)
    x = (rng.standard_normal(shape) * scale + shift).astype(np.float32)
    if constant is not None:  # one constant feature: the case epsilon exists for
        index = [slice(None)] * len(shape)
        index[feature_axis] = constant
        x[tuple(index)] = 3.0
    gamma = rng.uniform(0.5, 2.5, n).astype(np.float32)
    gamma[rng.integers(n)] *= -1
    beta = rng.uniform(-2, 2, n).astype(np.float32)
    return x, gamma, beta


# ---------------------------------------------------------------------------------------------
# Exercise 1.1: the transform in NumPy, for channels-first (NCHW) images
# ---------------------------------------------------------------------------------------------

_NCHW_MEANING = {
    (0, 1, 2): "the NHWC axes of the lesson: in NCHW they give one mean per pixel column (the "
               "last axis is the width here)",
    (0,): "one mean per channel and pixel position, as if each pixel were a dense feature",
    (2, 3): "one mean per image and channel (instance normalisation), not shared across the batch",
    (1, 2, 3): "one mean per image (layer normalisation)",
    (0, 2): "one mean per channel and column: the width axis (3) is missing",
    (0, 3): "one mean per channel and row: the height axis (2) is missing",
    (0, 1, 2, 3): "a single mean for the whole batch, channels mixed together",
}
_NCHW_HINT = ("in NCHW the channel axis is 1; BN keeps one mean and variance per channel, shared by "
              "every image and pixel, and gamma and beta must line up with axis 1 too: reshape "
              "them to (1, C, 1, 1), or use keepdims=True for the statistics.")


def _nchw_variants(x, gamma, beta, eps):
    wrong = [Wrong(reference(x, gamma, beta, eps, 1, axes),
                   f"Wrong axes: you normalised over axes {list(axes)}, which gives "
                   f"{meaning}.", _NCHW_HINT)
             for axes, meaning in _NCHW_MEANING.items()]
    n, c, h, w = x.shape
    if w == c:  # per-channel vectors that broadcast against the last axis (width) by accident
        xd = np.asarray(x, np.float64)
        mean = xd.mean(axis=(0, 2, 3))
        var = xd.var(axis=(0, 2, 3))
        right_stats = (xd - _along(mean, 4, 1)) / np.sqrt(_along(var, 4, 1) + eps)
        wrong += [
            Wrong(gamma * (xd - mean) / np.sqrt(var + eps) + beta,
                  "Right statistics, lined up with the wrong axis: your per-channel mean, "
                  "variance, gamma and beta of shape (C,) were applied along the last axis "
                  "(the width), not the channel axis.",
                  "NumPy lines shapes up from the right, so a (C,) array meets the width axis "
                  "of an (N, C, H, W) array. Reshape to (1, C, 1, 1), or use keepdims=True for "
                  "the statistics."),
            Wrong(gamma * right_stats + beta,
                  "The normalisation is right, but gamma and beta were applied along the last "
                  "axis (the width), not the channel axis.",
                  "reshape gamma and beta to (1, C, 1, 1) so that they line up with axis 1."),
        ]
    return wrong + _transform_variants(x, gamma, beta, eps, 1, MESSAGES)


@checker("1.1")
def transform_nchw(fn):
    """Check ``batch_norm_nchw(x, gamma, beta, eps)`` on channels-first image batches."""
    __tracebackhide__ = True
    for case in cases(dict(shape=(4, 3, 5, 3), eps=0.1, _seed=11, _constant=None),
                      dict(shape=(2, 5, 3, 4), eps=0.01, _seed=12, _constant=None),
                      dict(shape=(3, 2, 4, 6), eps=0.5, _seed=13, _constant=1)):
        x, gamma, beta = _data(case.seed, case.shape, 1, case.constant)
        out = _call(fn, x.copy(), gamma.copy(), beta.copy(), case.eps, what="batch_norm_nchw",
                    hint=_NCHW_HINT, case=case)
        match(out, reference(x, gamma, beta, case.eps, 1), case=case, tensor=False,
              dtype=np.float32, name="batch_norm_nchw's result",
              wrong=_nchw_variants(x, gamma, beta, case.eps),
              selftest="on your result, each channel (x[:, c]) should have mean beta[c] and "
                       "standard deviation about |gamma[c]|; check which channel is off.")
    return "matches the transform on 3 NCHW batches (sizes, epsilons, a constant channel)"


# ---------------------------------------------------------------------------------------------
# Exercise 1.2: the moments of a whole batch from the moments of its parts (synchronised BN)
# ---------------------------------------------------------------------------------------------

def _parts(seed: int, counts, channels: int):
    """Per-part means and biased variances of made-up parts with these row counts."""
    rng = np.random.default_rng(seed)
    data = [rng.standard_normal((n, channels)) * rng.uniform(0.5, 3, channels)
            + rng.uniform(-3, 3, channels) for n in counts]
    return data, np.array([d.mean(axis=0) for d in data]), np.array([d.var(axis=0) for d in data])


@checker("1.2")
def merged_moments(fn):
    """Check ``merged_moments(means, variances, counts)`` -> (mean, variance), tf.Tensors (C,)."""
    __tracebackhide__ = True
    import tensorflow as tf

    for case in cases(dict(parts=2, channels=3, counts=(6, 2), _seed=21),
                      dict(parts=3, channels=2, counts=(3, 5, 1), _seed=22),
                      dict(parts=4, channels=5, counts=(8, 8, 2, 4), _seed=23)):
        data, means, variances = _parts(case.seed, case.counts, case.channels)
        whole = np.concatenate(data)
        counts = np.array(case.counts, np.float64)[:, None]
        total = counts.sum()
        weighted_mean = (counts * means).sum(axis=0) / total
        within = (counts * variances).sum(axis=0) / total
        result = call(fn, tf.constant(means, tf.float32), tf.constant(variances, tf.float32),
                      tf.constant(case.counts, tf.int32), what="merged_moments", case=case)
        plain_mean = means.mean(axis=0)
        between_plain = ((means - plain_mean) ** 2).mean(axis=0)
        want = {"mean": whole.mean(axis=0), "variance": whole.var(axis=0)}
        match(result, want, case=case, tensor=True, dtype=np.float32,
              name="merged_moments' result", wrong=[
                  Wrong({"mean": whole.var(axis=0), "variance": whole.mean(axis=0)},
                        "Mean and variance are swapped.",
                        "return them in the order (mean, variance), as tf.nn.moments does."),
                  Wrong({"variance": within}, "You " + averaged_variances("part")[0],
                        averaged_variances("part")[1]),
                  Wrong({"mean": plain_mean, "variance": variances.mean(axis=0)},
                        "You averaged the parts' statistics with equal weights, and averaged the "
                        "variances.",
                        "a part with more rows counts more: weight by `counts`, and take the "
                        "spread between the parts' means into account."),
                  Wrong({"mean": plain_mean,
                         "variance": variances.mean(axis=0) + between_plain},
                        "You gave every part the same weight: the parts have different sizes.",
                        "weight each part by its count, and divide by the total count."),
                  Wrong({"mean": plain_mean},
                        "Your mean gives every part the same weight: the parts have different "
                        "sizes.", "weight each part's mean by its count."),
                  Wrong({"variance": whole.var(axis=0, ddof=1)},
                        MESSAGES["unbiased"][0], "the merged variance must equal the biased "
                        "variance of the whole batch: divide by the total count, not by it - 1."),
                  Wrong({"variance": within + ((counts * (means - weighted_mean) ** 2).sum(axis=0)
                                               / (total - 1))},
                        "The spread between the parts is divided by the count minus one.",
                        "divide every sum by the total count."),
              ],
              selftest="split a small array of your own into parts, compute each part's "
                       "tf.nn.moments, merge them with your function and compare with "
                       "tf.nn.moments of the whole array.")
    return "whole-batch mean and variance from 3 sets of unequal parts"


# ---------------------------------------------------------------------------------------------
# Exercise 1.3: find gamma and beta from a layer's input and output
# ---------------------------------------------------------------------------------------------

@checker("1.3")
def infer_gamma_beta(fn):
    """Check ``infer_gamma_beta(x, y, eps)`` -> (gamma, beta), NumPy arrays of shape (F,)."""
    __tracebackhide__ = True
    for case in cases(dict(shape=(6, 4), eps=0.1, _seed=31),
                      dict(shape=(9, 3), eps=0.5, _seed=32),
                      dict(shape=(5, 6), eps=0.01, _seed=33)):
        x, gamma, beta = _data(case.seed, case.shape, -1)
        x = x * np.float32(0.4)  # small variances, so that epsilon matters
        y = reference(x, gamma, beta, case.eps).astype(np.float32)
        result = call(fn, x.copy(), y.copy(), case.eps, what="infer_gamma_beta", case=case)
        xd, yd = x.astype(np.float64), y.astype(np.float64)
        var = xd.var(axis=0)
        spread = yd.std(axis=0)
        sign = np.sign(gamma)
        match(result, {"gamma": gamma, "beta": beta}, case=case, tensor=False, dtype=np.float32,
              name="infer_gamma_beta's result", atol=2e-4, wrong=[
                  Wrong({"gamma": beta, "beta": gamma}, *MESSAGES["swapped"]),
                  Wrong({"gamma": np.abs(gamma)},
                        "Your gamma has the right size but always a positive sign; in this case "
                        "some gamma is negative.",
                        "a spread (a standard deviation) loses the sign: the sign of gamma shows "
                        "in whether y rises or falls with x."),
                  Wrong({"gamma": spread},
                        "Your gamma is the standard deviation of y: that ignores epsilon (the "
                        "normalised values have a spread below 1) and the sign of gamma.",
                        "compute x_hat from x and eps first; then y = gamma * x_hat + beta is a "
                        "straight line in x_hat for each feature."),
                  Wrong({"gamma": sign * spread},
                        "Your gamma is the standard deviation of y with a sign: that ignores "
                        "epsilon, which makes the normalised values' spread smaller than 1.",
                        "divide by the spread of x_hat = (x - mean) / sqrt(var + eps), not by 1."),
                  Wrong({"gamma": spread / xd.std(axis=0)},
                        "Your gamma is std(y) / std(x): the transform does not scale x by gamma, "
                        "it scales the normalised x_hat.",
                        "compute x_hat = (x - mean) / sqrt(var + eps) first."),
                  Wrong({"gamma": gamma * np.sqrt((var + case.eps) / var)},
                        "Your gamma is off by the factor epsilon makes: you normalised x "
                        "without eps.", "use the `eps` the function is given."),
                  Wrong({"beta": yd.mean(axis=0) - xd.mean(axis=0)},
                        "Your beta subtracts the mean of x: the normalised x_hat already has "
                        "mean 0.", "beta is the mean of y."),
              ],
              selftest="apply the transform with your gamma, beta and the given eps to x: it "
                       "must give back y.")
    return "gamma (negative ones included) and beta recovered in 3 cases"


# ---------------------------------------------------------------------------------------------
# Exercise 1.4: the transform with TensorFlow's built-ins, for any feature axis
# ---------------------------------------------------------------------------------------------

_AXIS_HINT = ("`axis` is the feature axis, as in keras.layers.BatchNormalization(axis=...): keep "
              "it, take the statistics over every other axis (keepdims=True), and reshape gamma "
              "and beta so that they line up with `axis`.")


def _is_right(out, x, gamma, beta, eps, axis) -> bool:
    """True if ``out`` is the transform of ``x`` for feature axis ``axis``."""
    try:
        match(out, reference(x, gamma, beta, eps, axis), tensor=True, dtype=np.float32)
    except ExerciseMistake:
        return False
    return True


def _right_for(fn, x, gamma, beta, eps, axis) -> bool:
    """True if ``fn`` gives the right transform for feature axis ``axis`` (an error: False)."""
    import tensorflow as tf

    try:
        out = call(fn, tf.constant(x), tf.constant(gamma), tf.constant(beta), eps, axis)
    except ExerciseMistake:
        return False
    return _is_right(out, x, gamma, beta, eps, axis)


_CASES_1_4 = (  # dense, NCHW, NHWC, sequence; a middle axis; a 5-D volume; negative axes
    dict(shape=(6, 4), axis=-1, eps=0.1, _seed=41),
    dict(shape=(3, 4, 5, 2), axis=1, eps=0.01, _seed=42),
    dict(shape=(4, 3, 5, 2), axis=3, eps=0.2, _seed=43),
    dict(shape=(5, 6, 3), axis=-1, eps=0.05, _seed=44),
    dict(shape=(4, 5, 3), axis=1, eps=0.3, _seed=45),
    dict(shape=(2, 4, 3, 5, 6), axis=-4, eps=0.02, _seed=46),
    dict(shape=(3, 5, 2, 4), axis=-2, eps=0.15, _seed=47),
)


@checker("1.4")
def transform_tf(fn):
    """Check ``batch_norm_tf(x, gamma, beta, eps, axis)`` for seven layouts and feature axes
    (ranks 2 to 5, the axis first after the batch, in the middle or last, counted from either
    end)."""
    __tracebackhide__ = True
    import tensorflow as tf

    for case in cases(*_CASES_1_4):
        x, gamma, beta = _data(case.seed, case.shape, case.axis)
        ndim = x.ndim
        axis = case.axis % ndim
        try:
            out = _call(fn, tf.constant(x), tf.constant(gamma), tf.constant(beta), case.eps,
                        case.axis, what="batch_norm_tf", hint=_AXIS_HINT, case=case)
            failed = None
        except ExerciseMistake as err:
            out, failed = None, err
        if case.axis < 0 and (failed is not None or not _is_right(
                out, x, gamma, beta, case.eps, case.axis)) \
                and _right_for(fn, x, gamma, beta, case.eps, axis):
            raise ExerciseMistake(
                f"In {case}: your function is right for axis={axis} but not for axis="
                f"{case.axis}, the same axis counted from the end: a negative `axis` was not "
                "turned into a positive index.",
                f"start with axis = axis % rank (here {case.axis} % {ndim} = {axis}); a negative "
                "axis in `i != axis` or in a transpose order does not name the feature axis.")
        if failed is not None:
            raise failed
        others = tuple(i for i in range(ndim) if i != axis)
        wrong = []
        if axis != ndim - 1:
            wrong.append(Wrong(reference(x, gamma, beta, case.eps, axis,
                                         stats_axes=tuple(range(ndim - 1))),
                               "You ignored `axis`: your statistics are over every axis but the "
                               "last, whatever `axis` says.", _AXIS_HINT))
        wrong.append(Wrong(reference(x, gamma, beta, case.eps, axis, stats_axes=(axis,)),
                           "You took the statistics over `axis` itself: `axis` names the feature "
                           "axis to keep, not the axes to reduce.", _AXIS_HINT))
        wrong.append(Wrong(reference(x, gamma, beta, case.eps, axis,
                                     stats_axes=tuple(range(ndim))),
                           "You took the statistics over every axis, the feature axis included.",
                           "keep `axis` out of the axes you reduce over (and turn a negative "
                           "`axis` into a positive index first: axis % rank)."))
        if others != (0,):
            wrong.append(Wrong(reference(x, gamma, beta, case.eps, axis, stats_axes=(0,)),
                               "You reduced over axis 0 only; with more than two dimensions the "
                               "statistics are over every axis except `axis`.", _AXIS_HINT))
        match(out, reference(x, gamma, beta, case.eps, case.axis), case=case, tensor=True,
              dtype=np.float32, name="batch_norm_tf's result",
              wrong=wrong + _transform_variants(x, gamma, beta, case.eps, case.axis,
                                                _TF_MESSAGES),
              selftest="compare with keras.layers.BatchNormalization(axis=axis, epsilon=eps) "
                       "called with training=True on the same x (its gamma is 1 and beta 0 at "
                       "the start: pass ones and zeros to yours).")
    return (f"matches the transform for {len(_CASES_1_4)} layouts and feature axes (ranks 2 to "
            "5, negative axes included)")
