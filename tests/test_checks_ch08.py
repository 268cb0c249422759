"""Chapter 8's checkers: the solutions pass, stubs are "not done", every known mistake is named,
hard-coded values are located, and right answers written another way pass."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ch08 as check
from bnbook.checks._core import ExerciseMistake


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def passes(capsys, checker, fn, label):
    checker(fn)
    assert capsys.readouterr().out.startswith(f"✓ Exercise {label} passed")


# ---- 8.1: group_norm(x, gamma, beta, groups, eps) ---------------------------------------------

def group_norm(x, gamma, beta, groups, eps, how="right"):
    """The solution in TensorFlow, and (through `how`) the mistakes learners make."""
    n, h, w, c = x.shape
    if how == "interleaved":
        grouped = tf.reshape(x, [-1, h, w, c // groups, groups])
        axes = [1, 2, 3]
    else:
        grouped = tf.reshape(x, [-1, h, w, groups, c // groups])
        axes = {"batch_too": [0, 1, 2, 4], "no_spatial": [4]}.get(how, [1, 2, 4])
    if how == "per_channel":
        grouped, axes = x, [1, 2]
    if how == "whole":
        grouped, axes = x, [1, 2, 3]
    if how == "batch_norm":
        grouped, axes = x, [0, 1, 2]
    if how == "groups_swapped":             # C // groups groups of `groups` channels
        grouped, axes = tf.reshape(x, [-1, h, w, c // groups, groups]), [1, 2, 4]
    if how == "hard_groups":
        fixed = 3 if c % 3 == 0 else 2      # "3 groups", as in the first case
        grouped, axes = tf.reshape(x, [-1, h, w, fixed, c // fixed]), [1, 2, 4]
    mean, var = tf.nn.moments(grouped, axes=axes, keepdims=True)
    if how == "unbiased":
        count = tf.cast(tf.size(grouped) // tf.size(mean), tf.float32)
        var = var * count / (count - 1)
    used_eps = {"no_eps": 0.0, "fixed_eps": 1e-5, "hard_eps": 1e-3}.get(how, eps)
    if how == "std_plus_eps":
        x_hat = (grouped - mean) / (tf.sqrt(var) + eps)
    elif how == "no_sqrt":
        x_hat = (grouped - mean) / (var + eps)
    else:
        x_hat = (grouped - mean) / tf.sqrt(var + used_eps)
    x_hat = tf.reshape(x_hat, tf.shape(x))
    return {"swapped": beta * x_hat + gamma, "no_affine": x_hat,
            "numpy": (gamma * x_hat + beta).numpy(),
            "float64": tf.cast(gamma * x_hat + beta, tf.float64),
            "list": (gamma * x_hat + beta).numpy().tolist(),
            "nan": gamma * x_hat * np.nan,
            "transposed": tf.transpose(gamma * x_hat + beta),
            }.get(how, gamma * x_hat + beta)


def test_8_1_solution_passes(capsys):
    passes(capsys, check.group_norm, group_norm, "8.1")


def test_8_1_numpy_numerics_pass(capsys):
    """Another right answer: NumPy on the tensors' values, returned as a NumPy array."""
    def with_numpy(x, gamma, beta, groups, eps):
        x = np.asarray(x)
        n, h, w, c = x.shape
        g = x.reshape(n, h, w, groups, c // groups)
        g = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(
            g.var(axis=(1, 2, 4), keepdims=True) + np.float32(eps))
        return np.asarray(gamma) * g.reshape(x.shape) + np.asarray(beta)
    passes(capsys, check.group_norm, with_numpy, "8.1")


def test_8_1_stub_is_not_done(capsys):
    check.group_norm(stub)
    assert "Exercise 8.1 is not done yet" in capsys.readouterr().out


GROUP_MISTAKES = [
    ("interleaved", "groups are interleaved"),
    ("batch_too", "over the batch axis too"),
    ("no_spatial", "height and width are missing"),
    ("per_channel", "instance normalisation"),
    ("whole", r"layer normalisation, groups = 1\), ignoring `groups`"),
    ("batch_norm", "You computed batch normalisation"),
    ("unbiased", r"unbiased variance \(divided by n - 1\)"),
    ("no_eps", "matches no epsilon at all"),
    ("fixed_eps", "Forgot epsilon"),
    ("std_plus_eps", "added epsilon to the standard deviation"),
    ("no_sqrt", "not by its square root"),
    ("swapped", "gamma and beta are swapped"),
    ("no_affine", "without the scale and shift"),
    ("hard_eps", "Forgot epsilon: you did not use the `eps` argument"),
    ("groups_swapped", r"C / groups groups of `groups` channels each"),
    ("hard_groups", r"case 2 of 4 .*changes x, groups, eps"),
    ("float64", "dtype float64; expected float32"),
    ("list", "Python list"),
    ("nan", "NaN"),
    ("transposed", r"has shape \(6, 4, 3, 2\), expected \(2, 3, 4, 6\)"),
]


@pytest.mark.parametrize("how, message", GROUP_MISTAKES, ids=[m[0] for m in GROUP_MISTAKES])
def test_8_1_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.group_norm(lambda x, g, b, groups, eps: group_norm(x, g, b, groups, eps, how=how))


def test_8_1_a_crash_is_reported_with_the_case():
    def crashes(x, gamma, beta, groups, eps):
        return tf.reshape(x, [-1, groups])  # wrong on purpose: ignores the spatial axes
    with pytest.raises(ExerciseMistake, match=r"has shape .*expected \(2, 3, 4, 6\)"):
        check.group_norm(crashes)

    def raises(x, gamma, beta, groups, eps):
        raise ValueError("boom")
    with pytest.raises(ExerciseMistake, match=r"In case 1 of 4 .*group_norm raised ValueError: boom"):
        check.group_norm(raises)


def test_8_1_unknown_mistake_is_located_without_the_answer():
    def off(x, gamma, beta, groups, eps):
        return group_norm(x, gamma, beta, groups, eps) + 0.5
    with pytest.raises(ExerciseMistake, match=r"case 1 of 4 .*max abs error 0\.5.*matches no mistake"):
        check.group_norm(off)


def test_8_1_variants_are_distinguishable():
    """In at least one case, every wrong variant differs from the right answer by far more than the
    check's tolerance, so no mistake can pass."""
    for how in ("interleaved", "batch_too", "no_spatial", "per_channel", "whole", "batch_norm",
                "std_plus_eps", "no_sqrt", "swapped", "no_affine"):
        gaps = []
        for case in check.GROUP_CASES:
            x = check._data(case["x"], seed=sum(case["x"]))
            g, b = check._affine(case["x"][-1], seed=sum(case["x"]))
            right = check.group_norm_numpy(x, g, b, case["groups"], case["eps"])
            wrong = check.group_norm_numpy(x, g, b, case["groups"], case["eps"], how=how)
            gaps.append(np.abs(right - wrong).max())
        assert max(gaps) > 0.05, how


def test_8_1_numpy_reference_matches_keras():
    for case in check.GROUP_CASES:
        x = check._data(case["x"], seed=1)
        g, b = check._affine(case["x"][-1], seed=1)
        assert np.allclose(check.group_norm_numpy(x, g, b, case["groups"], case["eps"]),
                           check._keras_group_norm(x, g, b, case["groups"], case["eps"]),
                           atol=1e-4)


# ---- 8.2: layer_norm(x, gamma, beta, axes, eps) ------------------------------------------------

def layer_norm(x, gamma, beta, axes, eps, how="right"):
    reduce = {"last_only": [len(x.shape) - 1], "batch_axis": [0],
              "with_batch": [0] + list(axes), "hard_axes": [1, 2, 3][:len(x.shape) - 1],
              "all_but_batch": list(range(1, len(x.shape))),
              }.get(how, axes)
    mean, var = tf.nn.moments(x, axes=reduce, keepdims=True)
    if how == "unbiased":
        count = tf.cast(tf.size(x) // tf.size(mean), tf.float32)
        var = var * count / (count - 1)
    used_eps = {"no_eps": 0.0, "fixed_eps": 1e-3, "hard_eps": 1e-3}.get(how, eps)
    if how == "std_plus_eps":
        x_hat = (x - mean) / (tf.sqrt(var) + eps)
    elif how == "no_sqrt":
        x_hat = (x - mean) / (var + eps)
    else:
        x_hat = (x - mean) / tf.sqrt(var + used_eps)
    if how == "no_reshape":
        return gamma * x_hat + beta
    shape = [1] * len(x.shape)
    for axis in axes:
        shape[axis] = x.shape[axis]
    g, b = tf.reshape(gamma, shape), tf.reshape(beta, shape)
    return {"swapped": b * x_hat + g, "no_affine": x_hat}.get(how, g * x_hat + b)


def test_8_2_solution_passes(capsys):
    passes(capsys, check.layer_norm, layer_norm, "8.2")


def test_8_2_written_differently_passes(capsys):
    """Moving the normalised axes to the end and flattening them is right too."""
    def flattened(x, gamma, beta, axes, eps):
        axes = [a % len(x.shape) for a in axes]
        rest = [a for a in range(len(x.shape)) if a not in axes]
        moved = tf.transpose(x, rest + list(axes))
        flat = tf.reshape(moved, [*moved.shape[:len(rest)], -1])
        mean = tf.reduce_mean(flat, axis=-1, keepdims=True)
        var = tf.reduce_mean(tf.square(flat - mean), axis=-1, keepdims=True)
        out = tf.reshape((flat - mean) * tf.math.rsqrt(var + eps), moved.shape)
        out = out * gamma + beta                    # gamma now lines up with the last axes
        return tf.transpose(out, np.argsort(rest + list(axes)))
    passes(capsys, check.layer_norm, flattened, "8.2")


def test_8_2_lined_up_by_membership_passes(capsys):
    """The solution's reshape, by `i in axes`, once the axes are counted from the front."""
    def by_membership(x, gamma, beta, axes, eps):
        axes = [a % len(x.shape) for a in axes]
        mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
        lined_up = [x.shape[i] if i in axes else 1 for i in range(len(x.shape))]
        return tf.reshape(gamma, lined_up) * (x - mean) / tf.sqrt(variance + eps) \
            + tf.reshape(beta, lined_up)
    passes(capsys, check.layer_norm, by_membership, "8.2")


def test_8_2_negative_axes_not_made_positive_are_named():
    def no_modulo(x, gamma, beta, axes, eps):  # `i in axes` never sees -3 or -2
        mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
        lined_up = [x.shape[i] if i in axes else 1 for i in range(len(x.shape))]
        return tf.reshape(gamma, lined_up) * (x - mean) / tf.sqrt(variance + eps) \
            + tf.reshape(beta, lined_up)
    with pytest.raises(ExerciseMistake, match=r"In case 3 of 4 \(x=\(4, 5, 3, 2\), axes=\[-3, -2\], "
                                              r".*right for axes=\[1, 2\] but not for axes=\[-3, "
                                              r"-2\].*not turned into a positive index"):
        check.layer_norm(no_modulo)


def test_8_2_stub_is_not_done(capsys):
    check.layer_norm(stub)
    assert "Exercise 8.2 is not done yet" in capsys.readouterr().out


LAYER_MISTAKES = [
    ("last_only", "over the last axis only"),
    ("batch_axis", "that is batch normalisation"),
    ("with_batch", "included the batch axis"),
    ("unbiased", r"unbiased variance \(divided by n - 1\)"),
    ("no_eps", "matches no epsilon at all"),
    ("fixed_eps", "matches a fixed epsilon"),
    ("std_plus_eps", "added epsilon to the standard deviation"),
    ("no_sqrt", "not by its square root"),
    ("swapped", "gamma and beta are swapped"),
    ("no_affine", "without the scale and shift"),
    ("hard_eps", "Forgot epsilon: you did not use the `eps` argument"),
    ("all_but_batch", "normalised over every axis but the batch, not over the axes you were given"),
    # the first case's axes, [1, 2, 3], cut to the rank: on 3-D input that is every axis but the batch
    ("hard_axes", "normalised over every axis but the batch"),
    ("no_reshape", r"In case 3 of 4 .*layer_norm raised .*Incompatible shapes"),
]


@pytest.mark.parametrize("how, message", LAYER_MISTAKES, ids=[m[0] for m in LAYER_MISTAKES])
def test_8_2_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.layer_norm(lambda x, g, b, axes, eps: layer_norm(x, g, b, axes, eps, how=how))


def test_8_2_broadcast_failure_gets_the_gamma_hint():
    with pytest.raises(ExerciseMistake, match=r"(?s)Hint: gamma and beta have the shape of x over"):
        check.layer_norm(lambda x, g, b, axes, eps: layer_norm(x, g, b, axes, eps, how="no_reshape"))


def test_8_2_numpy_reference_matches_keras():
    for case in check.LAYER_CASES:
        shape, axes = case["x"], case["axes"]
        x = check._data(shape, seed=2)
        g, b = check._affine(tuple(shape[a] for a in axes), seed=2)
        assert np.allclose(check.layer_norm_numpy(x, g, b, axes, case["eps"]),
                           check._keras_layer_norm(x, g, b, axes, case["eps"]), atol=1e-4)


# ---- 8.3: renorm_r_d(x, moving_mean, moving_std, eps, step, schedule) -> (r, d) ---------------

def renorm_r_d(x, mu, sigma, eps, rmax, dmax, how="right"):
    axes = (0,) if how == "axis0" else tuple(range(x.ndim - 1))
    var = x.var(axis=axes, ddof=1 if how == "unbiased" else 0)
    used_eps = {"no_eps": 0.0, "fixed_eps": 1e-5, "hard_eps": 1e-3}.get(how, eps)
    std = {"std_plus_eps": np.sqrt(var) + eps, "variance": var + eps}.get(how, np.sqrt(var + used_eps))
    mean = x.mean(axis=axes)
    r = sigma / std if how == "r_inverted" else std / sigma
    d = {"d_sign": (mu - mean) / sigma, "d_batch_std": (mean - mu) / std}.get(how, (mean - mu) / sigma)
    hard_rmax = 3.0 if how == "hard_limits" else rmax
    hard_dmax = 5.0 if how == "hard_limits" else dmax
    if how not in ("no_clip", "no_clip_r"):
        r = np.minimum(r, hard_rmax) if how == "r_no_lower" else np.clip(r, 1 / hard_rmax, hard_rmax)
    if how not in ("no_clip", "no_clip_d"):
        lower = {"d_no_lower": -np.inf, "d_to_zero": 0.0}.get(how, -hard_dmax)
        d = np.clip(d, lower, hard_dmax)
    if how == "swapped":
        return d, r
    if how == "one":
        return r
    return r, d


def limits(step, schedule):
    start = schedule["warmup"]
    r_done = np.clip((step - start) / (schedule["rmax_step"] - start), 0, 1)
    d_done = np.clip((step - start) / (schedule["dmax_step"] - start), 0, 1)
    return 1 + (schedule["rmax"] - 1) * r_done, schedule["dmax"] * d_done


def scheduled(how="right", limits=limits):
    """The exercise's signature: the limits from (step, schedule), then the clipped r and d."""
    def answer(x, mu, sigma, eps, step, schedule):
        return renorm_r_d(x, mu, sigma, eps, *limits(step, schedule), how=how)
    return answer


def test_8_3_solution_passes(capsys):
    passes(capsys, check.renorm_r_d, scheduled(), "8.3")


def test_8_3_tensorflow_version_passes(capsys):
    def with_tf(x, mu, sigma, eps, step, schedule):
        w = schedule["warmup"]
        ramp = lambda end: tf.clip_by_value((step - w) / (end - w), 0.0, 1.0)  # noqa: E731
        rmax = 1 + (schedule["rmax"] - 1) * ramp(schedule["rmax_step"])
        dmax = schedule["dmax"] * ramp(schedule["dmax_step"])
        axes = list(range(x.ndim - 1))
        mean, var = tf.nn.moments(tf.constant(x), axes=axes)
        r = tf.clip_by_value(tf.sqrt(var + eps) / sigma, 1 / rmax, rmax)
        d = tf.clip_by_value((mean - mu) / sigma, -dmax, dmax)
        return r, d
    passes(capsys, check.renorm_r_d, with_tf, "8.3")


def test_8_3_schedule_slips_are_named():
    def final(step, schedule):
        return schedule["rmax"], schedule["dmax"]

    def no_warmup(step, schedule):
        return limits(step, {**schedule, "warmup": 0})

    def no_cap(step, schedule):
        w = schedule["warmup"]
        done = lambda end: max((step - w) / (end - w), 0)  # noqa: E731
        return 1 + (schedule["rmax"] - 1) * done(schedule["rmax_step"]), \
            schedule["dmax"] * done(schedule["dmax_step"])

    def same_end(step, schedule):
        return limits(step, {**schedule, "dmax_step": schedule["rmax_step"]})

    for slip, message in [(final, r"final limits"), (no_warmup, "grow from step 0"),
                          (no_cap, "keep growing after their ramps end"),
                          (same_end, "dmax ramps over rmax's steps")]:
        with pytest.raises(ExerciseMistake, match=message):
            check.renorm_r_d(scheduled(limits=slip))


def test_8_3_stub_is_not_done(capsys):
    check.renorm_r_d(stub)
    assert "Exercise 8.3 is not done yet" in capsys.readouterr().out


RENORM_MISTAKES = [
    ("r_inverted", "r is upside down"),
    ("d_sign", "d has the wrong sign"),
    ("d_batch_std", "divides by the batch standard deviation"),
    ("no_clip", "did not clip r and d"),
    ("no_clip_r", "clipped d but not r"),
    ("no_clip_d", "clipped r but not d"),
    ("r_no_lower", "r is clipped from above only"),
    ("d_no_lower", "d is clipped from above only"),
    ("d_to_zero", r"d is clipped to \[0, dmax\]"),
    ("no_eps", "batch standard deviation is sqrt\\(variance\\)"),
    ("fixed_eps", "Forgot epsilon"),
    ("std_plus_eps", "added epsilon to the standard deviation"),
    ("variance", "uses the batch variance where the batch standard deviation belongs"),
    ("unbiased", r"unbiased variance \(divided by n - 1\)"),
    ("hard_eps", "Forgot epsilon: you did not use the `eps` argument"),
    ("hard_limits", r"case 2 of 4 .*changes x, eps, step, schedule"),
    ("swapped", "r and d are swapped"),
    ("axis0", r"In case 2 of 4 .*your r has shape \(4, 2, 6\): you averaged over axis 0 only"),
    ("one", r"expected 2 results: \(r, d\)"),
]


@pytest.mark.parametrize("how, message", RENORM_MISTAKES, ids=[m[0] for m in RENORM_MISTAKES])
def test_8_3_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.renorm_r_d(scheduled(how))


def test_8_3_every_limit_binds_in_every_case():
    """The cases are built so that r is clipped at both ends and d at both ends: a learner who
    forgets one limit cannot pass."""
    for case in check.RENORM_CASES:
        rmax, dmax = check.renorm_limits(case["step"], case["schedule"])
        assert (rmax, dmax) == pytest.approx(limits(case["step"], case["schedule"]))
        x, mu, sigma = check._renorm_case(case["x"], case["eps"], rmax, dmax, seed=sum(case["x"]))
        raw = check.renorm_numpy(x, mu, sigma, case["eps"], rmax, dmax, how="no_clip")
        assert raw["r"].max() > rmax and raw["r"].min() < 1 / rmax
        if len(raw["d"]) >= 5:
            assert raw["d"].max() > dmax and raw["d"].min() < -dmax
        else:
            assert raw["d"].max() > dmax
        assert sigma.min() > np.sqrt(case["eps"])   # Keras' sqrt(eps) floor never binds


# --- answers that use the Keras layer the exercise asks for (the catalogue found 8.1 passing) ----

def test_8_1_and_8_2_refuse_keras_normalization_layers():
    import keras

    def group_norm_by_keras(x, gamma, beta, groups, eps):
        layer = keras.layers.GroupNormalization(groups=groups, epsilon=eps)
        layer.build(x.shape)
        layer.set_weights([gamma.numpy(), beta.numpy()])
        return layer(x)

    def layer_norm_by_keras(x, gamma, beta, axes, eps):
        layer = keras.layers.LayerNormalization(axis=axes, epsilon=eps)
        layer.build(x.shape)
        layer.set_weights([gamma.numpy(), beta.numpy()])
        return layer(x)

    with pytest.raises(ExerciseMistake, match=r"uses `keras\.layers\.GroupNormalization`"):
        check.group_norm(group_norm_by_keras)
    with pytest.raises(ExerciseMistake, match=r"uses `keras\.layers\.LayerNormalization`"):
        check.layer_norm(layer_norm_by_keras)
