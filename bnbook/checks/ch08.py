"""Checkers for chapter 8, the normalisations that replace BN when batches are small.

Each checker runs three or four cases that differ in every size a learner could hard-code (batch,
height, width, channels, groups, axes, epsilon, clipping limits). The channels of the test data
have different means and spreads (one spread is small, so that epsilon matters), so every
known mistake gives a different answer. The right answers come from Keras' own layers
(``GroupNormalization``, ``LayerNormalization``) or, for batch renormalization, from
:func:`bnbook.lessons.small_batches.renorm_reference`, which the tests check against
``BatchNormalization(renorm=True)``; the known-wrong answers are computed in float64 and matched
with :func:`._core.match`.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ._core import ExerciseMistake, Wrong, call, cases, checker, match

COMMON_EPSILONS = (1e-3, 1e-5, 0.0)  # what a learner types when they ignore the `eps` argument


def _data(shape, seed, spread=(0.3, 3.0), centre=(2.0, -1.5)):
    """float32 data whose channels (last axis) have different means and spreads."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    scale = np.linspace(*spread, channels)
    shift = np.linspace(*centre, channels)
    order = rng.permutation(channels)  # neighbouring channels differ in scale and mean
    return (rng.standard_normal(shape) * scale[order] + shift[order]).astype(np.float32)


def _affine(shape, seed):
    rng = np.random.default_rng(seed + 100)
    return (rng.uniform(0.5, 2.0, shape).astype(np.float32),
            rng.normal(0.0, 1.0, shape).astype(np.float32))


def _normalise(x, axes, eps, ddof=0, how="right"):
    """(x - mean) / sqrt(var + eps) over ``axes`` (keepdims), in float64, or a known-wrong form."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=tuple(axes), keepdims=True)
    var = x.var(axis=tuple(axes), ddof=ddof, keepdims=True)
    with np.errstate(all="ignore"):
        if how == "std_plus_eps":
            return (x - mean) / (np.sqrt(var) + eps)
        if how == "no_sqrt":
            return (x - mean) / (var + eps)
        return (x - mean) / np.sqrt(var + eps)


def _eps_mistakes(eps, make, messages):
    """Wrong variants for an ignored epsilon: ``make(eps) -> output``."""
    return [Wrong(partial(make, other), *messages["fixed_eps"])
            for other in COMMON_EPSILONS if not np.isclose(other, eps)]


# ---------------------------------------------------------------------------------------------
# Exercise 8.1: group normalisation of NHWC feature maps, by hand
# ---------------------------------------------------------------------------------------------

GROUP_MESSAGES = {
    "interleaved": (
        "Your groups are interleaved: channel c went to group c % groups. GroupNormalization "
        "puts neighbouring channels together (with 6 channels and 3 groups: {0, 1}, {2, 3}, "
        "{4, 5}).",
        "split the channel axis into (groups, channels per group), in that order."),
    "groups_swapped": (
        "You made C / groups groups of `groups` channels each: the two sizes of your reshape are "
        "swapped.",
        "GroupNormalization makes `groups` groups of C / groups channels: reshape the channel "
        "axis to (groups, C // groups)."),
    "batch_too": (
        "You took the statistics over the batch axis too: every image of the batch shares one "
        "mean per group.",
        "group normalisation is computed for each example on its own; the batch axis is kept."),
    "no_spatial": (
        "You took the statistics over the channels of a group at each pixel separately: height and "
        "width are missing from your reduction.",
        "each group's mean averages over its channels AND every pixel position of the image."),
    "per_channel": (
        "You normalised each channel of each image on its own (that is instance normalisation, "
        "groups = C), ignoring `groups`.",
        "a group holds C // groups channels, and they share one mean and one variance."),
    "whole": (
        "You normalised each image over all its channels at once (that is layer normalisation, "
        "groups = 1), ignoring `groups`.",
        "cut the channels into `groups` groups; each group gets its own mean and variance."),
    "batch_norm": (
        "You computed batch normalisation: one mean per channel over the batch and positions.",
        "group normalisation keeps the batch axis and pools channels within a group instead."),
    "unbiased": (
        "You used the unbiased variance (divided by n - 1).",
        "like BN, group normalisation uses the biased variance: divide by n (tf.nn.moments, "
        "tf.math.reduce_variance)."),
    "no_eps": (
        "Forgot epsilon: your result matches no epsilon at all.",
        "use the `eps` the function is given, inside the square root next to the variance."),
    "fixed_eps": (
        "Forgot epsilon: you did not use the `eps` argument (your result matches a fixed epsilon).",
        "use the `eps` the function is given, inside the square root."),
    "std_plus_eps": (
        "You added epsilon to the standard deviation instead of to the variance.",
        "epsilon goes inside the square root, next to the variance."),
    "no_sqrt": (
        "You divided by the variance plus epsilon, not by its square root.",
        "x - mean is in the units of x; divide it by something in the same units."),
    "swapped": (
        "gamma and beta are swapped: you scaled by beta and shifted by gamma.",
        "gamma is the scale (it multiplies), beta is the shift (it is added)."),
    "no_affine": (
        "You returned the normalised values without the scale and shift.",
        "the last step multiplies by gamma and adds beta, one value per channel."),
}


def group_norm_numpy(x, gamma, beta, groups, eps, how="right", ddof=0):
    """Group normalisation of NHWC ``x`` in float64 (consecutive channels form a group), or one of
    its known-wrong forms: how = "interleaved", "batch_too", "no_spatial", "per_channel", "whole",
    "batch_norm", "std_plus_eps", "no_sqrt", "swapped", "no_affine"; ddof=1: unbiased."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    if how == "interleaved":
        grouped = x.reshape(n, h, w, c // groups, groups)
        x_hat = _normalise(grouped, (1, 2, 3), eps, ddof).reshape(x.shape)
    elif how == "per_channel":
        x_hat = _normalise(x, (1, 2), eps, ddof)
    elif how == "whole":
        x_hat = _normalise(x, (1, 2, 3), eps, ddof)
    elif how == "batch_norm":
        x_hat = _normalise(x, (0, 1, 2), eps, ddof)
    else:
        axes = {"batch_too": (0, 1, 2, 4), "no_spatial": (4,)}.get(how, (1, 2, 4))
        grouped = x.reshape(n, h, w, groups, c // groups)
        form = how if how in ("std_plus_eps", "no_sqrt") else "right"
        x_hat = _normalise(grouped, axes, eps, ddof, form).reshape(x.shape)
    if how == "swapped":
        return beta * x_hat + gamma
    if how == "no_affine":
        return x_hat
    return gamma * x_hat + beta


def _keras_normalization():
    """Keras' normalization layers: exercises 8.1 and 8.2 ask for them in TensorFlow ops."""
    import keras

    return tuple(layer.call for layer in (keras.layers.GroupNormalization,
                                          keras.layers.LayerNormalization,
                                          keras.layers.BatchNormalization))


def _keras_group_norm(x, gamma, beta, groups, eps):
    import keras

    layer = keras.layers.GroupNormalization(groups=groups, epsilon=eps)
    layer.build(x.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    return np.asarray(layer(x))


GROUP_CASES = (
    dict(x=(2, 3, 4, 6), groups=3, eps=1e-3),
    dict(x=(3, 2, 5, 8), groups=1, eps=0.1),
    dict(x=(1, 4, 3, 4), groups=4, eps=0.01),
    dict(x=(4, 5, 2, 12), groups=4, eps=0.05),
)


@checker("8.1")
def group_norm(fn):
    """Check ``group_norm(x, gamma, beta, groups, eps)`` against keras.layers.GroupNormalization."""
    __tracebackhide__ = True
    import tensorflow as tf

    for case in cases(*GROUP_CASES):
        shape, groups, eps = case.x, case.groups, case.eps
        x = _data(shape, seed=sum(shape))
        gamma, beta = _affine(shape[-1], seed=sum(shape))
        got = call(fn, tf.constant(x), tf.constant(gamma), tf.constant(beta), groups, eps,
                   what="group_norm", case=case, refuse=_keras_normalization(),
                   hint="x is (N, H, W, C): reshape it to (N, H, W, groups, C // groups) with "
                        "tf.reshape, normalise, then reshape back before the scale and shift.")
        args = (x, gamma, beta, groups, eps)
        wrong = [Wrong(partial(group_norm_numpy, *args, how=how), *GROUP_MESSAGES[how])
                 for how in ("interleaved", "batch_too", "no_spatial", "per_channel", "whole",
                             "batch_norm", "std_plus_eps", "no_sqrt", "swapped", "no_affine")]
        if groups not in (1, shape[-1]) and groups ** 2 != shape[-1]:
            wrong.append(Wrong(partial(group_norm_numpy, x, gamma, beta, shape[-1] // groups, eps),
                               *GROUP_MESSAGES["groups_swapped"]))
        wrong += [Wrong(partial(group_norm_numpy, *args, ddof=1), *GROUP_MESSAGES["unbiased"]),
                  Wrong(partial(group_norm_numpy, x, gamma, beta, groups, 0.0),
                        *GROUP_MESSAGES["no_eps"])]
        wrong += _eps_mistakes(eps, partial(group_norm_numpy, x, gamma, beta, groups),
                               GROUP_MESSAGES)
        match(got, _keras_group_norm(x, gamma, beta, groups, eps), wrong=wrong, case=case,
              name="group_norm's result", dtype=np.float32,
              selftest="with groups=1 your function should agree with "
                       "keras.layers.LayerNormalization(axis=[1, 2, 3]) at its initial weights.")
    return ("matches keras.layers.GroupNormalization in 4 cases: 3 groups, 1 group (layer norm), "
            "one group per channel (instance norm) and 4 groups of 3")


# ---------------------------------------------------------------------------------------------
# Exercise 8.2: layer normalisation over chosen axes
# ---------------------------------------------------------------------------------------------

LAYER_MESSAGES = {
    "last_only": (
        "You normalised over the last axis only, not over the axes you were given.",
        "reduce over every axis in `axes`."),
    "all_but_batch": (
        "You normalised over every axis but the batch, not over the axes you were given.",
        "reduce over `axes` only: with axes=[2] on (N, T, F) each example gets one mean per "
        "time step, not one mean in all."),
    "batch_axis": (
        "You normalised over the batch axis (axis 0): that is batch normalisation.",
        "layer normalisation computes one mean and one variance per example, over `axes`."),
    "with_batch": (
        "You included the batch axis in the statistics: every example of the batch shares one "
        "mean.",
        "layer normalisation keeps axis 0: each example is normalised on its own."),
    "unbiased": GROUP_MESSAGES["unbiased"],
    "no_eps": GROUP_MESSAGES["no_eps"],
    "fixed_eps": GROUP_MESSAGES["fixed_eps"],
    "std_plus_eps": GROUP_MESSAGES["std_plus_eps"],
    "no_sqrt": GROUP_MESSAGES["no_sqrt"],
    "swapped": GROUP_MESSAGES["swapped"],
    "no_affine": (
        "You returned the normalised values without the scale and shift.",
        "the last step multiplies by gamma and adds beta."),
}


def _lined_up(value, shape, axes):
    """gamma or beta (shape of x over ``axes``) reshaped to broadcast against x."""
    target = [1] * len(shape)
    for axis in axes:
        target[axis] = shape[axis]
    return np.reshape(value, target)


def layer_norm_numpy(x, gamma, beta, axes, eps, how="right", ddof=0):
    """Layer normalisation over ``axes`` in float64 (gamma and beta have the shape of x over
    ``axes``), or a known-wrong form: how = "last_only", "all_but_batch", "batch_axis", "with_batch",
    "std_plus_eps", "no_sqrt", "swapped", "no_affine"; ddof=1: unbiased."""
    x = np.asarray(x, np.float64)
    reduce = {"last_only": (x.ndim - 1,), "batch_axis": (0,),
              "all_but_batch": tuple(range(1, x.ndim)),
              "with_batch": (0, *axes)}.get(how, tuple(axes))
    form = how if how in ("std_plus_eps", "no_sqrt") else "right"
    x_hat = _normalise(x, reduce, eps, ddof, form)
    g, b = _lined_up(gamma, x.shape, axes), _lined_up(beta, x.shape, axes)
    if how == "swapped":
        return b * x_hat + g
    if how == "no_affine":
        return x_hat
    return g * x_hat + b


def _keras_layer_norm(x, gamma, beta, axes, eps):
    import keras

    layer = keras.layers.LayerNormalization(axis=list(axes), epsilon=eps)
    layer.build(x.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    return np.asarray(layer(x))


LAYER_CASES = (  # axes counted from the front and from the end
    dict(x=(3, 6, 4), axes=[2], eps=1e-3),
    dict(x=(2, 3, 4, 5), axes=[1, 2, 3], eps=0.1),
    dict(x=(4, 5, 3, 2), axes=[-3, -2], eps=0.01),
    dict(x=(5, 7), axes=[-1], eps=0.05),
)


def _layer_norm_right(fn, x, gamma, beta, axes, eps) -> bool:
    """True if ``fn`` gives layer normalisation of ``x`` over ``axes`` (an error: False)."""
    import tensorflow as tf

    try:
        got = call(fn, tf.constant(x), tf.constant(gamma), tf.constant(beta), list(axes), eps)
        match(got, layer_norm_numpy(x, gamma, beta, axes, eps), dtype=np.float32)
    except ExerciseMistake:
        return False
    return True


@checker("8.2")
def layer_norm(fn):
    """Check ``layer_norm(x, gamma, beta, axes, eps)`` against keras.layers.LayerNormalization."""
    __tracebackhide__ = True
    import tensorflow as tf

    for case in cases(*LAYER_CASES):
        shape, given, eps = case.x, list(case.axes), case.eps
        axes = tuple(a % len(shape) for a in given)  # the same axes, counted from the front
        x = _data(shape, seed=sum(shape))
        gamma, beta = _affine(tuple(shape[a] for a in axes), seed=sum(shape))
        try:
            got = call(fn, tf.constant(x), tf.constant(gamma), tf.constant(beta), list(given),
                       eps, what="layer_norm", case=case, refuse=_keras_normalization(),
                       hint="gamma and beta have the shape of x over `axes` only; to broadcast, "
                            "they need size-1 axes where x has the axes that are not "
                            "normalised.")
            failed = None
        except ExerciseMistake as err:
            got, failed = None, err
        if list(axes) != given and (failed is not None or not _is_close(
                got, layer_norm_numpy(x, gamma, beta, axes, eps))) \
                and _layer_norm_right(fn, x, gamma, beta, axes, eps):
            raise ExerciseMistake(
                f"In {case}: your function is right for axes={list(axes)} but not for axes="
                f"{given}, the same axes with some counted from the end: a negative axis was not "
                "turned into a positive index.",
                "start with axes = [a % rank for a in axes]; a negative axis in `i in axes` or "
                "`i not in axes` (i from range(rank)) never matches.")
        if failed is not None:
            raise failed
        args = (x, gamma, beta, axes, eps)
        wrong = [Wrong(partial(layer_norm_numpy, *args, how=how), *LAYER_MESSAGES[how])
                 for how in ("last_only", "batch_axis", "with_batch", "std_plus_eps", "no_sqrt",
                             "swapped", "no_affine")]
        if sorted(axes) != list(range(1, len(shape))):
            wrong.append(Wrong(partial(layer_norm_numpy, *args, how="all_but_batch"),
                               *LAYER_MESSAGES["all_but_batch"]))
        wrong += [Wrong(partial(layer_norm_numpy, *args, ddof=1), *LAYER_MESSAGES["unbiased"]),
                  Wrong(partial(layer_norm_numpy, x, gamma, beta, axes, 0.0),
                        *LAYER_MESSAGES["no_eps"])]
        wrong += _eps_mistakes(eps, partial(layer_norm_numpy, x, gamma, beta, axes),
                               LAYER_MESSAGES)
        match(got, _keras_layer_norm(x, gamma, beta, axes, eps), wrong=wrong, case=case,
              name="layer_norm's result", dtype=np.float32,
              selftest="with gamma = 1 and beta = 0, every example's values over `axes` should "
                       "have mean 0 and variance var / (var + eps).")
    return ("matches keras.layers.LayerNormalization in 4 cases: the last axis of a sequence "
            "batch, (H, W, C), (H, W) and a dense layer's features, with axes counted from "
            "either end")


def _is_close(got, want) -> bool:
    try:
        match(got, want, dtype=np.float32)
    except ExerciseMistake:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Exercise 8.3: batch renormalization's r and d, clipped
# ---------------------------------------------------------------------------------------------

RENORM_MESSAGES = {
    "r_inverted": (
        "Your r is upside down: moving standard deviation / batch standard deviation.",
        "r rescales the batch-normalised value so that it becomes normalised by the moving "
        "statistics: r = sigma_B / sigma."),
    "d_sign": (
        "Your d has the wrong sign.",
        "d = (batch mean - moving mean) / moving standard deviation."),
    "d_batch_std": (
        "Your d divides by the batch standard deviation; it divides by the moving one.",
        "x_hat * r + d should equal (x - moving mean) / moving std when nothing is clipped."),
    "no_clip": (
        "You did not clip r and d.",
        "clip r to [1 / rmax, rmax] and d to [-dmax, dmax]."),
    "no_clip_r": (
        "You clipped d but not r.",
        "r is clipped to [1 / rmax, rmax]."),
    "no_clip_d": (
        "You clipped r but not d.",
        "d is clipped to [-dmax, dmax]."),
    "r_no_lower": (
        "r is clipped from above only: values below 1 / rmax were kept.",
        "r is clipped to [1 / rmax, rmax]: both ends."),
    "d_no_lower": (
        "d is clipped from above only: values below -dmax were kept.",
        "d is clipped to [-dmax, dmax]: both ends."),
    "d_to_zero": (
        "d is clipped to [0, dmax]: negative corrections were set to 0.",
        "d may be negative: clip it to [-dmax, dmax]."),
    "no_eps": (
        "Forgot epsilon: your batch standard deviation is sqrt(variance).",
        "as in BN, sigma_B = sqrt(variance + eps), with the `eps` the function is given."),
    "fixed_eps": GROUP_MESSAGES["fixed_eps"],
    "std_plus_eps": GROUP_MESSAGES["std_plus_eps"],
    "swapped": (
        "r and d are swapped.",
        "return them in the order asked for: (r, d), r the scale and d the shift."),
    "variance": (
        "Your r uses the batch variance where the batch standard deviation belongs.",
        "r compares two standard deviations: take the square root of (variance + eps)."),
    "unbiased": (
        "You used the unbiased variance (divided by n - 1).",
        "the batch statistics are BN's: the biased variance, divided by n."),
}


def renorm_numpy(x, moving_mean, moving_std, eps, rmax, dmax, how="right", ddof=0):
    """{"r": ..., "d": ...} per channel (the last axis), in float64, or a known-wrong form."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axis=axes), x.var(axis=axes, ddof=ddof)
    std = {"no_eps": np.sqrt(var), "std_plus_eps": np.sqrt(var) + eps,
           "variance": var + eps}.get(how, np.sqrt(var + eps))
    mu, sigma = np.asarray(moving_mean, np.float64), np.asarray(moving_std, np.float64)
    r = {"r_inverted": sigma / std}.get(how, std / sigma)
    d = {"d_sign": (mu - mean) / sigma, "d_batch_std": (mean - mu) / std}.get(how,
                                                                              (mean - mu) / sigma)
    if how not in ("no_clip", "no_clip_r"):
        r = np.minimum(r, rmax) if how == "r_no_lower" else np.clip(r, 1 / rmax, rmax)
    if how not in ("no_clip", "no_clip_d"):
        lower = {"d_no_lower": -np.inf, "d_to_zero": 0.0}.get(how, -dmax)
        d = np.clip(d, lower, dmax)
    return {"r": r, "d": d}


def _renorm_case(shape, eps, rmax, dmax, seed):
    """x, and moving statistics chosen so that, channel by channel: r and d inside their limits;
    r above rmax; r below 1 / rmax; d above dmax; d below -dmax; and one more inside.

    The channel whose r is clipped from above has the largest spread, so that its moving standard
    deviation stays above sqrt(eps) (Keras would raise it to sqrt(eps); that detail is not asked).
    """
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    scale = np.array([1.0, 4.0, 0.5, 2.0, 1.5, 3.0])[:channels]
    shift = np.array([0.5, -2.0, 3.0, 1.0, -1.0, 2.0])[:channels]
    x = (rng.standard_normal(shape) * scale + shift).astype(np.float32)
    axes = tuple(range(len(shape) - 1))
    mean = x.astype(np.float64).mean(axis=axes)
    std = np.sqrt(x.astype(np.float64).var(axis=axes) + eps)
    r_want = np.array([0.8, 2.5 * rmax, 0.3 / rmax, 1.1, 0.9, 1.2])[:channels]
    d_want = np.array([0.4, -0.3, 0.2, 3.0 * dmax, -2.5 * dmax, -0.6 * dmax])[:channels]
    sigma = std / r_want
    mu = mean - d_want * sigma
    return x, mu.astype(np.float32), sigma.astype(np.float32)


def _check_renorm_shapes(got, shape, case):
    """r and d have one value per channel; name the axes mistake a shape reveals."""
    __tracebackhide__ = True
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return  # match() says what is wrong with the structure
    for name, value in zip(("r", "d"), got):
        found = tuple(np.shape(value))
        if len(shape) > 2 and found == tuple(shape[1:]):
            raise ExerciseMistake(
                f"In {case}: your {name} has shape {found}: you averaged over axis 0 only, as "
                "for a dense batch.",
                "the channels are the last axis; a channel's statistics pool every other axis: "
                "tuple(range(x.ndim - 1)).")


def renorm_limits(step, schedule, *, warmup=True, cap=True, d_steps="dmax_step"):
    """(rmax, dmax) at ``step`` under the exercise's schedule: plain BN (1, 0) until
    ``warmup``, then each limit grows linearly to its final value, reached at its own step.
    The keywords give a learner's slips: no warm-up (ramps from step 0), no cap (the ramp goes
    on past the final value), dmax ramped over rmax's steps."""
    start = schedule["warmup"] if warmup else 0

    def progress(end):
        fraction = (step - start) / (end - start)
        return min(max(fraction, 0.0), 1.0) if cap else max(fraction, 0.0)
    rmax = 1.0 + (schedule["rmax"] - 1.0) * progress(schedule["rmax_step"])
    return rmax, schedule["dmax"] * progress(schedule[d_steps])


def _schedule(warmup, rmax, rmax_step, dmax, dmax_step):
    return {"warmup": warmup, "rmax": rmax, "rmax_step": rmax_step, "dmax": dmax,
            "dmax_step": dmax_step}


# Case 1 is past both ramps (the paper's numbers), case 2 inside both, case 3 in the warm-up
# (plain BN: r = 1, d = 0), case 4 past dmax's ramp but inside rmax's.
RENORM_CASES = (
    dict(x=(8, 5), eps=1e-3, step=60_000, schedule=_schedule(5000, 3.0, 40_000, 5.0, 25_000)),
    dict(x=(3, 4, 2, 6), eps=0.1, step=350, schedule=_schedule(100, 2.0, 1100, 1.0, 600)),
    dict(x=(5, 3, 3, 4), eps=0.01, step=500, schedule=_schedule(1000, 4.0, 7000, 2.0, 3000)),
    dict(x=(6, 7, 5), eps=0.01, step=1500, schedule=_schedule(0, 3.0, 2000, 4.0, 1000)),
)


SCHEDULE_MESSAGES = {
    "final": ("You clipped with the schedule's final limits: at this step they are still "
              "growing (or not yet started).",
              "until `warmup` the limits are rmax = 1 and dmax = 0 (plain BN); then each grows "
              "linearly, reaching its final value at its own step."),
    "no_warmup": ("Your limits grow from step 0: the schedule keeps them at rmax = 1, dmax = 0 "
                  "until `warmup`, and only then starts the ramps.",
                  "the fraction of a ramp done is (step - warmup) / (end - warmup), clipped to "
                  "[0, 1]."),
    "no_cap": ("Your limits keep growing after their ramps end: past rmax_step (dmax_step) the "
               "limit stays at its final value.",
               "clip the fraction of the ramp done to [0, 1]."),
    "same_end": ("Your dmax ramps over rmax's steps: each limit has its own end step.",
                 "dmax reaches its final value at `dmax_step`, rmax at `rmax_step`."),
}


@checker("8.3")
def renorm_r_d(fn):
    """Check ``renorm_r_d(x, moving_mean, moving_std, eps, step, schedule)`` -> (r, d)."""
    __tracebackhide__ = True
    from ..lessons.small_batches import renorm_reference

    for case in cases(*RENORM_CASES):
        shape, eps, step, schedule = case.x, case.eps, case.step, case.schedule
        rmax, dmax = renorm_limits(step, schedule)
        x, mu, sigma = _renorm_case(shape, eps, rmax, dmax, seed=sum(shape))
        got = call(fn, x.copy(), mu.copy(), sigma.copy(), eps, step, dict(schedule),
                   what="renorm_r_d", case=case)
        _check_renorm_shapes(got, shape, case)
        ones = np.ones(shape[-1])
        right = renorm_reference(x, ones, 0 * ones, mu, sigma, mu, sigma, epsilon=eps,
                                 rmin=1 / rmax, rmax=rmax, dmax=dmax)
        args = (x, mu, sigma, eps, rmax, dmax)
        wrong = [Wrong(partial(renorm_numpy, *args, how=how), *RENORM_MESSAGES[how])
                 for how in ("r_inverted", "d_sign", "d_batch_std", "no_clip", "no_clip_r",
                             "no_clip_d", "r_no_lower", "d_no_lower", "d_to_zero", "no_eps",
                             "std_plus_eps", "variance")]
        wrong.append(Wrong(partial(renorm_numpy, *args, ddof=1), *RENORM_MESSAGES["unbiased"]))
        wrong.append(Wrong({"r": right["d"], "d": right["r"]}, *RENORM_MESSAGES["swapped"]))
        wrong += _eps_mistakes(eps, lambda e, x=x, mu=mu, sigma=sigma, rmax=rmax, dmax=dmax:
                               renorm_numpy(x, mu, sigma, e, rmax, dmax), RENORM_MESSAGES)
        slips = {"final": (schedule["rmax"], schedule["dmax"]),
                 "no_warmup": renorm_limits(step, schedule, warmup=False),
                 "no_cap": renorm_limits(step, schedule, cap=False),
                 "same_end": renorm_limits(step, schedule, d_steps="rmax_step")}
        wrong += [Wrong(partial(renorm_numpy, x, mu, sigma, eps, *limits), *SCHEDULE_MESSAGES[key])
                  for key, limits in slips.items() if not np.allclose(limits, (rmax, dmax))]
        match(got, {"r": right["r"], "d": right["d"]}, wrong=wrong, case=case,
              name="renorm_r_d's result",
              selftest="print the rmax and dmax your code uses at this case's step and check "
                       "them by hand against the schedule; with limits that never bind, "
                       "x_hat * r + d should equal (x - moving_mean) / moving_std.")
    return ("r and d match Keras' batch renormalization in 4 cases (dense, sequence, NHWC), with the "
            "limits of the warm-up schedule at steps in the warm-up, inside the ramps and after "
            "them, every limit binding")
