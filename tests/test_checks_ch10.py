"""Chapter 10's checkers: the solutions pass, stubs are "not done", every known mistake is named,
hard-coded values are located, and right answers written another way pass."""

import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ch10 as check
from bnbook.checks._core import ExerciseMistake
from bnbook.lessons import distribution_shift as sh


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def passes(capsys, checker, fn, label):
    checker(fn)
    assert capsys.readouterr().out.startswith(f"✓ Exercise {label} passed")


# ---- 10.1: mixed_statistics(source_mean, source_var, batch, prior) -> (mean, variance) -------

def mixed_statistics(source_mean, source_var, batch, prior, how="right"):
    """The solution in NumPy, and (through `how`) the mistakes learners make."""
    axes = tuple(range(batch.ndim - 1))
    mean = batch.mean(axis=axes)
    var = batch.var(axis=axes, ddof=1 if how == "unbiased" else 0)
    n = batch.size // batch.shape[-1] if how == "values_counted" else batch.shape[0]
    prior = {"hard_prior": 16.0}.get(how, prior)
    w = prior / (prior + n)
    if how == "weights_swapped":
        w = n / (prior + n)
    if how == "plain_average":
        w = 0.5
    if how == "batch_only":
        w = 0.0
    if how == "source_only":
        w = 1.0
    new_mean = w * source_mean + (1 - w) * mean
    if how == "std_mixed":
        return new_mean, (w * np.sqrt(source_var) + (1 - w) * np.sqrt(var)) ** 2
    new_var = w * source_var + (1 - w) * var
    if how == "total_variance":
        new_var = new_var + w * (1 - w) * (source_mean - mean) ** 2
    if how == "float64":
        return new_mean.astype(np.float64), new_var.astype(np.float64)
    if how == "one":
        return new_mean
    if how == "axis0":
        return (w * source_mean + (1 - w) * batch.mean(axis=0),
                w * source_var + (1 - w) * batch.var(axis=0))
    return new_mean, new_var


def test_10_1_solution_passes(capsys):
    passes(capsys, check.mixed_statistics, mixed_statistics, "10.1")


def test_10_1_tensorflow_and_the_book_pass(capsys):
    """Right answers written another way: tf.nn.moments, and the lesson's
    mixed_statistics."""
    def with_tf(source_mean, source_var, batch, prior):
        mean, var = tf.nn.moments(tf.constant(batch), axes=list(range(batch.ndim - 1)))
        n = batch.shape[0]
        return ((prior * source_mean + n * mean) / (prior + n),
                (prior * source_var + n * var) / (prior + n))

    def with_book(source_mean, source_var, batch, prior):
        axes = tuple(range(batch.ndim - 1))
        return sh.mixed_statistics(source_mean, source_var, batch.mean(axes), batch.var(axes),
                                   batch.shape[0], prior)
    passes(capsys, check.mixed_statistics, with_tf, "10.1")
    passes(capsys, check.mixed_statistics, with_book, "10.1")


def test_10_1_stub_is_not_done(capsys):
    check.mixed_statistics(stub)
    assert "Exercise 10.1 is not done yet" in capsys.readouterr().out


MIXED_MISTAKES = [
    ("values_counted", "counted the batch's values"),
    ("weights_swapped", "weights are swapped"),
    ("unbiased", r"unbiased batch variance \(divided by m - 1\)"),
    ("std_mixed", "mixed the standard deviations"),
    ("total_variance", "law of total variance"),
    ("plain_average", "equal weights"),
    ("batch_only", "returned the batch's own statistics"),
    ("source_only", "returned the stored statistics unchanged"),
    ("hard_prior", "another prior strength than the one you were given"),
    ("float64", "dtype float64; expected float32"),
    ("one", r"expected 2 results: \(mean, variance\)"),
    ("axis0", r"In case 2 of 4 .*your mean has shape \(4, 4, 3\), expected \(3,\)"),
]


@pytest.mark.parametrize("how, message", MIXED_MISTAKES, ids=[m[0] for m in MIXED_MISTAKES])
def test_10_1_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.mixed_statistics(lambda *args: mixed_statistics(*args, how=how))


def test_10_1_mistakes_differ_from_the_answer():
    """In every case each known-wrong variant is far from the right answer, so a right answer
    cannot be mistaken for one (and a wrong one cannot pass)."""
    for case in check.MIXED_CASES:
        batch, mean_s, var_s = check._shifted_batch(case["batch"], seed=sum(case["batch"]))
        right = check.mixed_numpy(mean_s, var_s, batch, case["prior"])
        hows = ["weights_swapped", "unbiased", "std_mixed", "total_variance", "plain_average"]
        if len(case["batch"]) > 2:
            hows.append("values_counted")
        for how in hows:
            wrong = check.mixed_numpy(mean_s, var_s, batch, case["prior"], how=how)
            gap = max(np.abs(right[0] - wrong[0]).max(), np.abs(right[1] - wrong[1]).max())
            assert gap > 0.01, (case, how)


# ---- 10.2: shift_score(batch, moving_mean, moving_var) -> float -------------------------------

def shift_score(batch, mean, var, how="right"):
    axes = tuple(range(batch.ndim - 1))
    m, v = batch.mean(axis=axes), batch.var(axis=axes, ddof=1 if how == "unbiased" else 0)
    if how == "reversed":
        m, v, mean, var = mean, var, m, v
    if how == "std_for_var":
        v, var = np.sqrt(v), np.sqrt(var)
    log_term = {"log_var": np.log(var / v)}.get(how, 0.5 * np.log(var / v))
    square = 0.0 if how == "no_mean_term" else (m - mean) ** 2
    kl = log_term + (v + square) / (2 * var) - (0.0 if how == "no_half" else 0.5)
    if how == "no_var_term":
        kl = (m - mean) ** 2 / (2 * var)
    if how == "summed":
        return float(np.sum(kl))
    if how == "per_channel":
        return kl
    if how == "hard_axes":                     # the first case's batch is 2-D: axis 0 only
        m0, v0 = batch.mean(axis=0), batch.var(axis=0)
        return float(np.mean(0.5 * np.log(var / v0) + (v0 + (m0 - mean) ** 2) / (2 * var) - 0.5))
    if how == "none":
        return None
    return float(np.mean(kl))


def test_10_2_solution_passes(capsys):
    passes(capsys, check.shift_score, shift_score, "10.2")


def test_10_2_tensorflow_and_the_book_pass(capsys):
    """A TensorFlow scalar tensor is a right answer too, and so is the lesson's
    gaussian_kl."""
    def with_tf(batch, mean, var):
        m, v = tf.nn.moments(tf.constant(batch, tf.float64), axes=list(range(batch.ndim - 1)))
        mean, var = tf.constant(mean, tf.float64), tf.constant(var, tf.float64)
        kl = tf.math.log(tf.sqrt(var / v)) + (v + (m - mean) ** 2) / (2 * var) - 0.5
        return tf.reduce_mean(kl)

    def with_book(batch, mean, var):
        axes = tuple(range(batch.ndim - 1))
        return sh.gaussian_kl(batch.mean(axes), batch.var(axes), mean, var)
    passes(capsys, check.shift_score, with_tf, "10.2")
    passes(capsys, check.shift_score, with_book, "10.2")


def test_10_2_stub_is_not_done(capsys):
    check.shift_score(stub)
    assert "Exercise 10.2 is not done yet" in capsys.readouterr().out


SCORE_MISTAKES = [
    ("reversed", "other way round"),
    ("summed", "summed the divergence over the channels"),
    ("std_for_var", "standard deviations where the formula has variances"),
    ("no_half", "left out the constant -1/2"),
    ("no_mean_term", "ignores how far the batch's mean is"),
    ("no_var_term", "only sees the difference of the means"),
    ("log_var", "ratio of the variances where the formula has the ratio of the standard"),
    ("unbiased", "unbiased batch variance"),
    ("per_channel", "returned one score per channel"),
    ("hard_axes", r"In case 2 of 4 .*case 1 passed; this one changes batch"),
    ("none", "is None"),
]


@pytest.mark.parametrize("how, message", SCORE_MISTAKES, ids=[m[0] for m in SCORE_MISTAKES])
def test_10_2_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.shift_score(lambda *args: shift_score(*args, how=how))


def test_10_2_reference_matches_the_book():
    for case in check.SCORE_CASES:
        batch, mean_s, var_s = check._shifted_batch(case["batch"], seed=3)
        axes = tuple(range(batch.ndim - 1))
        assert np.isclose(check.score_numpy(batch, mean_s, var_s),
                          sh.gaussian_kl(batch.mean(axes), batch.var(axes), mean_s, var_s),
                          rtol=1e-5)
        assert check.score_numpy(batch, mean_s, var_s) > 0.1   # the stored statistics are far off


def test_checks_are_fast():
    import time

    for checker, fn in ((check.mixed_statistics, mixed_statistics),
                        (check.shift_score, shift_score),
                        (check.adapt_bn_layer, adapt_bn_layer)):
        start = time.perf_counter()
        checker(fn)
        assert time.perf_counter() - start < 1.0


# ---- 10.3: adapt_bn_layer(layer, batches) -------------------------------------------------------

def adapt_bn_layer(layer, batches, how="right"):
    """The solution (running sums in float64), and the mistakes learners make."""
    if how == "ema":                         # what training mode does to the moving statistics
        for batch in batches:
            layer(batch, training=True)
        return
    if how == "none":
        return
    count, total, squares = 0, 0.0, 0.0
    means, variances, sizes = [], [], []
    for batch in batches:
        values = np.asarray(batch, np.float64).reshape(-1, batch.shape[-1])
        count += len(values)
        total = total + values.sum(axis=0)
        squares = squares + (values ** 2).sum(axis=0)
        means.append(values.mean(0))
        variances.append(values.var(0))
        sizes.append(len(values))
        if how == "last_batch":
            layer.moving_mean.assign(values.mean(0))
            layer.moving_variance.assign(values.var(0))
    if how == "last_batch":
        return
    mean = total / count
    variance = squares / count - mean ** 2
    if how == "unbiased":
        variance = variance * count / (count - 1)
    if how == "mean_of_variances":
        variance = np.average(variances, axis=0, weights=sizes)
    if how == "unweighted":
        mean, variance = np.mean(means, axis=0), np.mean(variances, axis=0)
    layer.moving_mean.assign(mean)
    layer.moving_variance.assign(variance)
    if how == "gamma":
        layer.gamma.assign(layer.gamma * 2.0)


def test_10_3_solution_passes(capsys):
    passes(capsys, check.adapt_bn_layer, adapt_bn_layer, "10.3")


def test_10_3_concatenation_and_tensorflow_pass(capsys):
    """Concatenating the stream and calling tf.nn.moments is right too, and returning the layer
    does no harm."""
    def concatenated(layer, batches):
        values = tf.concat([tf.reshape(b, [-1, b.shape[-1]]) for b in batches], axis=0)
        mean, variance = tf.nn.moments(values, axes=[0])
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)
        return layer
    passes(capsys, check.adapt_bn_layer, concatenated, "10.3")


def test_10_3_stub_is_not_done(capsys):
    check.adapt_bn_layer(stub)
    assert "Exercise 10.3 is not done yet" in capsys.readouterr().out


STREAM_MISTAKES = [
    ("ema", r"layer\(batch, training=True\) leaves"),
    ("none", "moving statistics did not change"),
    ("last_batch", "those of the last batch only"),
    ("unbiased", r"unbiased variance \(divided by the count - 1\)"),
    ("mean_of_variances", "average of the batches' variances"),
    ("unweighted", "equal weights"),
    ("gamma", "changed the layer's gamma or beta"),
]


@pytest.mark.parametrize("how, message", STREAM_MISTAKES, ids=[m[0] for m in STREAM_MISTAKES])
def test_10_3_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.adapt_bn_layer(lambda layer, batches: adapt_bn_layer(layer, batches, how=how))


def test_10_3_stream_is_shifted_and_drifts():
    """The stream's statistics are far from the stored ones, and the batches' means differ, so
    that forgetting the between-batch spread is caught."""
    for case in check.STREAM_CASES:
        batches, mean_s, var_s = check._stream(case["sizes"], case["tail"], case["channels"],
                                               seed=11 * sum(case["sizes"]))
        right = check.stream_numpy(batches, mean_s, var_s, case["momentum"])
        for how in ("mean_of_variances", "unweighted", "unbiased", "last_batch", "ema"):
            wrong = check.stream_numpy(batches, mean_s, var_s, case["momentum"], how)
            assert max(np.abs(right[0] - wrong[0]).max(), np.abs(right[1] - wrong[1]).max()) > 0.01


# ---- 10.4: tent_step(model, x, learning_rate) -> entropy before the step ----------------------

def tent_step(model, x, learning_rate, how="right"):
    """A learner's TENT step, and (through `how`) the mistakes learners make."""
    import bnbook

    def bn_of(m, nested=True):
        found = []
        for layer in m.layers:
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                found.append(layer)
            elif nested and hasattr(layer, "layers"):
                found += bn_of(layer)
        return found

    layers = bn_of(model, nested=how != "top_level")
    if how == "all_variables":
        params = model.trainable_variables
    else:
        params = [v for layer in layers for v in (layer.gamma, layer.beta) if v is not None]
    stored = [(v, v.numpy()) for layer in bnbook.bn_layers(model)
              for v in (layer.moving_mean, layer.moving_variance)]
    with tf.GradientTape() as tape:
        p = tf.nn.softmax(model(x, training=how != "inference"))
        entropies = -tf.reduce_sum(p * tf.math.log(p + 1e-12), axis=1)
        entropy = tf.reduce_sum(entropies) if how == "summed" else tf.reduce_mean(entropies)
    step = -learning_rate if how == "ascent" else learning_rate
    if how == "hard_rate":
        step = 0.1
    for v, g in zip(params, tape.gradient(entropy, params)):
        v.assign(v - step * g)
    if how != "moving_changed":
        for v, value in stored:
            v.assign(value)
    if how == "entropy_after":
        p = tf.nn.softmax(model(x, training=True))
        entropy = tf.reduce_mean(-tf.reduce_sum(p * tf.math.log(p + 1e-12), axis=1))
        for v, value in stored:
            v.assign(value)
    return entropy.numpy()


def test_10_4_accepts_the_solution_and_a_numpy_scalar(capsys):
    passes(capsys, check.tent_step, tent_step, "10.4")


def test_10_4_stub_is_not_done(capsys):
    check.tent_step(stub)
    assert "Exercise 10.4 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("how, message", [
    ("inference", "used the stored statistics"),
    ("all_variables", "more than gamma and beta"),
    ("ascent", "went up the entropy"),
    ("summed", "summed the entropies"),
    ("top_level", "inside nested models kept"),
    ("moving_changed", "moving statistics changed"),
    ("entropy_after", "the one after the step"),
])
def test_10_4_names_each_known_mistake(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.tent_step(lambda model, x, rate: tent_step(model, x, rate, how))


def test_10_4_locates_a_hard_coded_learning_rate():
    with pytest.raises(ExerciseMistake, match=r"learning_rate"):
        check.tent_step(lambda model, x, rate: tent_step(model, x, rate, "hard_rate"))


def test_10_4_refuses_the_lessons_tent():
    def by_the_book(model, x, rate):
        return float(sh.tent(model, x, steps=1, batch_size=len(x), learning_rate=rate)[0])

    with pytest.raises(ExerciseMistake, match="calls the book's own"):
        check.tent_step(by_the_book)


def test_10_4_answers_within_a_second():
    import time

    check.tent_step(tent_step)                       # the first call builds and traces
    start = time.perf_counter()
    check.tent_step(tent_step)
    assert time.perf_counter() - start < 1.0


# ---- 10.5: adapt_with_prior(model, x, prior) -------------------------------------------------

def adapt_with_prior(model, x, prior, how="right"):
    """A learner's model-wide prior adaptation, and (through `how`) the mistakes learners make."""
    import bnbook

    layers = bnbook.bn_layers(model)
    if how == "top_level":
        layers = [layer for layer in model.layers
                  if isinstance(layer, tf.keras.layers.BatchNormalization)]
    if how == "trainable_only":
        layers = [layer for layer in layers if layer.trainable]

    def inputs_of(targets):
        seen = {}
        for layer in targets:
            own = layer.call

            def rec(inputs, *args, training=None, _own=own, _name=layer.name, **kwargs):
                seen[_name] = tf.cast(inputs, tf.float64).numpy()
                return _own(inputs, *args, training=False, **kwargs)
            layer.call = rec
        model(x, training=False)
        for layer in targets:
            del layer.call
        return [seen[layer.name] for layer in targets]

    first_pass = inputs_of(layers) if how == "one_pass" else None
    for k, layer in enumerate(layers):
        h = first_pass[k] if how == "one_pass" else inputs_of([layer])[0]
        h = h.reshape(-1, h.shape[-1])
        n = len(h) if how == "values_counted" else x.shape[0]
        prior_ = 16.0 if how == "hard_prior" else prior
        w = prior_ / (prior_ + n)
        if how == "weights_swapped":
            w = n / (prior_ + n)
        mean, var = h.mean(0), h.var(0, ddof=1 if how == "unbiased" else 0)
        layer.moving_mean.assign(w * layer.moving_mean.numpy() + (1 - w) * mean)
        layer.moving_variance.assign(w * layer.moving_variance.numpy() + (1 - w) * var)


def test_10_5_accepts_a_solution_written_another_way(capsys):
    passes(capsys, check.adapt_with_prior, adapt_with_prior, "10.5")


def test_10_5_stub_is_not_done(capsys):
    check.adapt_with_prior(stub)
    assert "Exercise 10.5 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("how, message", [
    ("one_pass", "one pass of the unadapted model"),
    ("top_level", "inside nested models kept"),
    ("trainable_only", "frozen BN layers kept"),
    ("weights_swapped", "weights are swapped"),
    ("values_counted", "counted the batch's values"),
    ("unbiased", "unbiased batch variance"),
])
def test_10_5_names_each_known_mistake(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.adapt_with_prior(lambda model, x, prior: adapt_with_prior(model, x, prior, how))


def test_10_5_locates_a_hard_coded_prior():
    with pytest.raises(ExerciseMistake, match=r"prior"):
        check.adapt_with_prior(lambda model, x, prior: adapt_with_prior(model, x, prior,
                                                                        "hard_prior"))


def test_10_5_rejects_a_training_mode_pass_and_the_books_recalibration():
    def training_mode(model, x, prior):
        import bnbook

        for layer in bnbook.bn_layers(model):
            layer.momentum = prior / (prior + len(x))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x, training=True))
        for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)):
            if g is not None:
                v.assign_sub(0.1 * g)

    with pytest.raises(ExerciseMistake, match="changed trainable weights"):
        check.adapt_with_prior(training_mode)

    def by_the_book(model, x, prior):
        import bnbook

        bnbook.recalibrate_bn(model, x)

    with pytest.raises(ExerciseMistake, match="calls the book's own"):
        check.adapt_with_prior(by_the_book)


def test_10_5_answers_within_a_second():
    import time

    check.adapt_with_prior(adapt_with_prior)
    start = time.perf_counter()
    check.adapt_with_prior(adapt_with_prior)
    assert time.perf_counter() - start < 1.0
