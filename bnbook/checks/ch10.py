"""Checkers for chapter 10, BN under distribution shift.

Each checker runs three or four cases that differ in everything a learner could hard-code: the
batch size, the feature-map shape (dense or convolutional), the number of channels, the prior
strength, the sizes of a stream's batches and BN's momentum. The stored (source) statistics and
the batch's differ a lot, channel by channel, so that each known mistake gives a different
answer. The right answers and the known-wrong ones are computed in float64 here and matched with
:func:`._core.match`.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ._core import ExerciseMistake, Wrong, call, cases, checker, match


def _shifted_batch(shape, seed):
    """float32 data whose channels (last axis) have means and spreads far from the stored ones,
    and the stored mean and variance (float32, shape (C,))."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    scale = rng.uniform(0.5, 3.0, channels)
    centre = rng.uniform(-2.0, 2.0, channels)
    batch = (rng.standard_normal(shape) * scale + centre).astype(np.float32)
    stored_mean = (centre + rng.uniform(1.0, 3.0, channels) * rng.choice([-1, 1], channels))
    stored_var = scale ** 2 * rng.uniform(0.2, 0.6, channels)
    return batch, stored_mean.astype(np.float32), stored_var.astype(np.float32)


def _batch_moments(batch, ddof=0):
    x = np.asarray(batch, np.float64)
    axes = tuple(range(x.ndim - 1))
    return x.mean(axes), x.var(axes, ddof=ddof)


# ---------------------------------------------------------------------------------------------
# Exercise 10.1: source and test-batch statistics mixed with a prior strength N
# ---------------------------------------------------------------------------------------------

MIXED_MESSAGES = {
    "values_counted": (
        "You counted the batch's values (N x H x W per channel) as its n, not its examples.",
        "n is the number of examples in the batch, batch.shape[0]: the prior N is counted in "
        "examples too."),
    "weights_swapped": (
        "Your weights are swapped: the prior strength N weighs the batch, n the stored statistics.",
        "the stored statistics count as N examples, the batch as its n: weight the source by "
        "N / (N + n)."),
    "unbiased": (
        "You used the unbiased batch variance (divided by m - 1).",
        "like BN, use the biased variance: divide by the number of values (tf.nn.moments, "
        "np.var)."),
    "std_mixed": (
        "You mixed the standard deviations and squared the result; the mix is of variances.",
        "mix the variances themselves with the same two weights as the means."),
    "total_variance": (
        "You added the spread between the two means (the law of total variance); Schneider et "
        "al.'s estimate mixes the two variances only.",
        "the variance is N / (N + n) times the stored variance plus n / (N + n) times the batch's, "
        "nothing else."),
    "batch_only": (
        "You returned the batch's own statistics: the prior strength N is not used.",
        "with N > 0 the stored statistics get the weight N / (N + n)."),
    "source_only": (
        "You returned the stored statistics unchanged: the batch has no weight.",
        "the batch's statistics get the weight n / (N + n)."),
    "plain_average": (
        "You averaged the two with equal weights, whatever N and n are.",
        "the weights are N / (N + n) for the stored statistics and n / (N + n) for the batch's."),
    "fixed_prior": (
        "Your result matches another prior strength than the one you were given: a hard-coded N?",
        "use the `prior` argument."),
}


def mixed_numpy(source_mean, source_var, batch, prior, how="right"):
    """(mean, variance) of Schneider et al.'s mix in float64, or a known-wrong form: how =
    "values_counted", "weights_swapped", "unbiased", "std_mixed", "total_variance",
    "plain_average"."""
    mean_b, var_b = _batch_moments(batch, ddof=1 if how == "unbiased" else 0)
    mean_s, var_s = np.asarray(source_mean, np.float64), np.asarray(source_var, np.float64)
    n = batch.shape[0]
    if how == "values_counted":
        n = int(np.prod(batch.shape[:-1]))
    w = prior / (prior + n)
    if how == "weights_swapped":
        w = n / (prior + n)
    if how == "plain_average":
        w = 0.5
    mean = w * mean_s + (1 - w) * mean_b
    if how == "std_mixed":
        return mean, (w * np.sqrt(var_s) + (1 - w) * np.sqrt(var_b)) ** 2
    var = w * var_s + (1 - w) * var_b
    if how == "total_variance":
        var = var + w * (1 - w) * (mean_s - mean_b) ** 2
    return mean, var


def _mixed_dict(source_mean, source_var, batch, prior, how="right"):
    return dict(zip(("mean", "variance"), mixed_numpy(source_mean, source_var, batch, prior, how)))


MIXED_CASES = (
    dict(batch=(8, 5), prior=16.0),
    dict(batch=(2, 4, 4, 3), prior=3.0),
    dict(batch=(5, 3, 2, 6), prior=40.0),
    dict(batch=(3, 7), prior=0.5),
)


@checker("10.1")
def mixed_statistics(fn):
    """Check ``mixed_statistics(source_mean, source_var, batch, prior) -> (mean, variance)``."""
    __tracebackhide__ = True
    for case in cases(*MIXED_CASES):
        batch, mean_s, var_s = _shifted_batch(case.batch, seed=sum(case.batch))
        got = call(fn, mean_s, var_s, batch, case.prior, what="mixed_statistics", case=case,
                   hint="take the batch's mean and biased variance over every axis but the last, "
                        "then weight them against the stored ones.")
        want = _mixed_dict(mean_s, var_s, batch, case.prior)
        named = partial(_mixed_dict, mean_s, var_s, batch, case.prior)
        wrong = [Wrong(partial(named, how), *MIXED_MESSAGES[how])
                 for how in ("weights_swapped", "unbiased", "std_mixed", "total_variance",
                             "plain_average")]
        if len(case.batch) > 2:
            wrong.insert(0, Wrong(partial(named, "values_counted"),
                                  *MIXED_MESSAGES["values_counted"]))
        mean_b, var_b = _batch_moments(batch)
        wrong += [Wrong({"mean": mean_b, "variance": var_b}, *MIXED_MESSAGES["batch_only"]),
                  Wrong({"mean": mean_s, "variance": var_s}, *MIXED_MESSAGES["source_only"])]
        wrong += [Wrong(_mixed_dict(mean_s, var_s, batch, other), *MIXED_MESSAGES["fixed_prior"])
                  for other in (16.0, 2.0, 1.0, 8.0, 32.0) if other != case.prior]
        match(got, want, wrong=wrong, case=case, name="mixed_statistics' result",
              dtype=np.float32,
              selftest="with prior=0 your function should return the batch's own mean and biased "
                       "variance; with a huge prior, almost the stored ones.")
    return ("matches Schneider et al.'s mix in 4 cases: dense and convolutional batches, priors "
            "from 0.5 to 40")


# ---------------------------------------------------------------------------------------------
# Exercise 10.2: the shift score of one BN layer
# ---------------------------------------------------------------------------------------------

SCORE_MESSAGES = {
    "reversed": (
        "Your KL divergence is the other way round: KL(stored || batch).",
        "the stored Gaussian is the model, the batch the data: the variance you divide by "
        "(and the one in the numerator of the log) is the stored one."),
    "summed": (
        "You summed the divergence over the channels instead of averaging it.",
        "the score is the mean over channels, so that layers of different widths compare."),
    "std_for_var": (
        "You used standard deviations where the formula has variances.",
        "the squared terms are variances: sigma^2, not sigma."),
    "no_half": (
        "You left out the constant -1/2: your score is not 0 when the batch matches the stored "
        "statistics.",
        "check your function on a batch whose moments equal the stored ones: it must give 0."),
    "no_mean_term": (
        "Your score ignores how far the batch's mean is from the stored mean.",
        "the numerator of the second term is the batch variance plus the squared difference of "
        "the means."),
    "no_var_term": (
        "Your score only sees the difference of the means: the variances' log-ratio and ratio "
        "are missing.",
        "KL of two Gaussians has three parts: the log-ratio of the standard deviations, the ratio "
        "with the squared mean difference, and -1/2."),
    "log_var": (
        "Your log term uses the ratio of the variances where the formula has the ratio of the "
        "standard deviations (a factor of 2).",
        "log(sigma / sigma_hat) = 0.5 * log(sigma^2 / sigma_hat^2)."),
    "unbiased": MIXED_MESSAGES["unbiased"],
    "per_channel": (
        "You returned one score per channel; the score is one number for the layer.",
        "average the per-channel divergences."),
}


def score_numpy(batch, mean, var, how="right"):
    """The mean over channels of KL(N(batch moments) || N(mean, var)) in float64, or a
    known-wrong form (see SCORE_MESSAGES)."""
    mean_b, var_b = _batch_moments(batch, ddof=1 if how == "unbiased" else 0)
    mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    if how == "reversed":
        mean_b, var_b, mean, var = mean, var, mean_b, var_b
    if how == "std_for_var":
        var_b, var = np.sqrt(var_b), np.sqrt(var)
    log_term = 0.5 * np.log(var / var_b)
    if how == "log_var":
        log_term = 2 * log_term
    square = 0.0 if how == "no_mean_term" else (mean_b - mean) ** 2
    kl = log_term + (var_b + square) / (2 * var) - (0.0 if how == "no_half" else 0.5)
    if how == "no_var_term":
        kl = (mean_b - mean) ** 2 / (2 * var)
    if how == "summed":
        return float(np.sum(kl))
    if how == "per_channel":
        return kl
    return float(np.mean(kl))


SCORE_CASES = (
    dict(batch=(16, 4)),
    dict(batch=(4, 3, 3, 6)),
    dict(batch=(2, 5, 4, 3)),
    dict(batch=(9, 8)),
)


@checker("10.2")
def shift_score(fn):
    """Check ``shift_score(batch, moving_mean, moving_var) -> float``."""
    __tracebackhide__ = True
    for case in cases(*SCORE_CASES):
        batch, mean_s, var_s = _shifted_batch(case.batch, seed=7 * sum(case.batch))
        got = call(fn, batch, mean_s, var_s, what="shift_score", case=case,
                   hint="take the batch's mean and biased variance per channel (every axis but "
                        "the last), compute the divergence per channel, then average.")
        if np.size(got) > 1:
            raise ExerciseMistake(f"In {case}: " + SCORE_MESSAGES["per_channel"][0],
                                  SCORE_MESSAGES["per_channel"][1])
        wrong = [Wrong(partial(score_numpy, batch, mean_s, var_s, how), *SCORE_MESSAGES[how])
                 for how in ("reversed", "summed", "std_for_var", "no_half", "no_mean_term",
                             "no_var_term", "log_var", "unbiased")]
        want = score_numpy(batch, mean_s, var_s)
        match(got, want, wrong=wrong, case=case, name="shift_score's result",
              selftest="on a batch whose per-channel mean and variance equal moving_mean and "
                       "moving_var your score should be 0, and it should grow as they move apart.")
    return "matches the mean per-channel KL divergence in 4 cases, dense and convolutional"


# ---------------------------------------------------------------------------------------------
# Exercise 10.3: AdaBN for one layer, over a stream of batches
# ---------------------------------------------------------------------------------------------

STREAM_MESSAGES = {
    "mean_of_variances": (
        "Your variance is the average of the batches' variances: it misses how far the batches' "
        "means are from each other.",
        "pool the values, not the variances: accumulate the count, the sum and the sum of squares "
        "(or use the parallel update of chapter 9's moment merging)."),
    "unweighted": (
        "You averaged the batches' statistics with equal weights, but the batches have different "
        "sizes.",
        "every value counts once: a batch of 8 weighs four times a batch of 2."),
    "unbiased": (
        "You used the unbiased variance (divided by the count - 1).",
        "BN's moving variance is the biased one: divide by the number of values."),
    "last_batch": (
        "Your moving statistics are those of the last batch only: each batch overwrote the one "
        "before.",
        "accumulate over the whole stream, then assign once at the end."),
    "ema": (
        "Your moving statistics are the exponential moving averages that "
        "layer(batch, training=True) leaves: they still remember the stored statistics.",
        "AdaBN replaces them with the exact statistics of the stream: compute those and assign."),
    "unchanged": (
        "The layer's moving statistics did not change.",
        "assign the new values: layer.moving_mean.assign(...) and layer.moving_variance.assign(...)."),
    "gamma_changed": (
        "You changed the layer's gamma or beta; AdaBN changes only the moving statistics.",
        "leave layer.gamma and layer.beta as they are."),
}


def _stream(sizes, tail, channels, seed):
    """A stream of batches of different sizes whose means drift from batch to batch, and the
    stored mean and variance, far from the stream's."""
    rng = np.random.default_rng(seed)
    batches = []
    for i, n in enumerate(sizes):
        drift = 1.5 * i * rng.choice([-1.0, 1.0], channels)
        batch, _, _ = _shifted_batch((n, *tail, channels), seed + i)
        batches.append((batch + drift).astype(np.float32))
    _, stored_mean, stored_var = _shifted_batch((2, channels), seed + 99)
    return batches, stored_mean, stored_var


def stream_numpy(batches, stored_mean, stored_var, momentum, how="right"):
    """The moving (mean, variance) AdaBN stores, in float64, or a known-wrong form."""
    flat = [np.asarray(b, np.float64).reshape(-1, b.shape[-1]) for b in batches]
    if how == "last_batch":
        flat = flat[-1:]
    values = np.concatenate(flat)
    means = np.array([f.mean(0) for f in flat])
    variances = np.array([f.var(0) for f in flat])
    counts = np.array([len(f) for f in flat], np.float64)[:, None]
    if how == "mean_of_variances":
        return values.mean(0), (counts * variances).sum(0) / counts.sum()
    if how == "unweighted":
        return means.mean(0), variances.mean(0)
    if how == "ema":
        mean, var = np.asarray(stored_mean, np.float64), np.asarray(stored_var, np.float64)
        for m, v in zip(means, variances):
            mean, var = momentum * mean + (1 - momentum) * m, momentum * var + (1 - momentum) * v
        return mean, var
    return values.mean(0), values.var(0, ddof=1 if how == "unbiased" else 0)


def _stream_dict(batches, stored_mean, stored_var, momentum, how="right"):
    return dict(zip(("moving mean", "moving variance"),
                    stream_numpy(batches, stored_mean, stored_var, momentum, how)))


STREAM_CASES = (
    dict(sizes=(4, 2, 6), tail=(), channels=3, momentum=0.9),
    dict(sizes=(3, 1, 5, 2), tail=(4, 4), channels=5, momentum=0.5),
    dict(sizes=(8, 3), tail=(3, 2), channels=4, momentum=0.99),
)


@checker("10.3")
def adapt_bn_layer(fn):
    """Check ``adapt_bn_layer(layer, batches)``: the layer's moving statistics become the exact
    mean and biased variance of every value of the stream; nothing else changes."""
    __tracebackhide__ = True
    import keras

    for case in cases(*STREAM_CASES):
        batches, stored_mean, stored_var = _stream(case.sizes, case.tail, case.channels,
                                                   seed=11 * sum(case.sizes))
        layer = keras.layers.BatchNormalization(momentum=case.momentum)
        layer.build((None, *case.tail, case.channels))
        layer.moving_mean.assign(stored_mean)
        layer.moving_variance.assign(stored_var)
        gamma, beta = layer.gamma.numpy().copy(), layer.beta.numpy().copy()
        call(fn, layer, [b.copy() for b in batches], what="adapt_bn_layer", case=case,
             hint="loop over the batches, accumulating per channel, then assign to "
                  "layer.moving_mean and layer.moving_variance.")
        if not (np.array_equal(layer.gamma.numpy(), gamma)
                and np.array_equal(layer.beta.numpy(), beta)):
            raise ExerciseMistake(f"In {case}: " + STREAM_MESSAGES["gamma_changed"][0],
                                  STREAM_MESSAGES["gamma_changed"][1])
        got = {"moving mean": layer.moving_mean.numpy(),
               "moving variance": layer.moving_variance.numpy()}
        named = partial(_stream_dict, batches, stored_mean, stored_var, case.momentum)
        wrong = [Wrong({"moving mean": stored_mean, "moving variance": stored_var},
                       *STREAM_MESSAGES["unchanged"])]
        wrong += [Wrong(partial(named, how), *STREAM_MESSAGES[how])
                  for how in ("mean_of_variances", "unweighted", "unbiased", "last_batch", "ema")]
        match(got, named("right"), wrong=wrong, case=case, name="the layer's moving statistics",
              selftest="with a stream of one batch, the moving statistics should equal that "
                       "batch's mean and biased variance over every axis but the last.")
    return ("sets the exact statistics of the stream in 3 cases: dense and convolutional inputs, "
            "batches of 1 to 8 examples, momentum 0.5 to 0.99 ignored as it should be")


# ---------------------------------------------------------------------------------------------
# Exercise 10.4: one TENT step on any Keras model
# ---------------------------------------------------------------------------------------------

TENT_MESSAGES = {
    "inference": (
        "Your forward pass used the stored statistics (training=False): TENT normalises with the "
        "target batch's own statistics.",
        "call the model with training=True inside the tape, so that every BN layer uses the "
        "batch's mean and variance."),
    "all_variables": (
        "You updated more than gamma and beta: every trainable weight moved.",
        "collect only the BN layers' gamma and beta (nested models included) and take the "
        "gradient with respect to those."),
    "ascent": (
        "Your step went up the entropy, not down: the sign of the update is flipped.",
        "plain SGD subtracts learning_rate * gradient."),
    "summed": (
        "You summed the entropies over the batch; TENT minimises their mean.",
        "average the per-example entropies (tf.reduce_mean) so the step does not grow with the "
        "batch size."),
    "top_level": (
        "Only the top-level BN layers moved: the BN layers inside nested models kept their gamma "
        "and beta.",
        "walk into nested models (a layer that has .layers) when you collect the BN layers."),
    "moving_changed": (
        "The moving statistics changed: calling the model with training=True updated them, and "
        "TENT leaves them as they were.",
        "save every BN layer's moving mean and variance before the forward pass and assign them "
        "back after it."),
    "entropy_after": (
        "The entropy you returned is the one after the step; return the one the step minimised.",
        "return the mean entropy you computed inside the tape, before applying the gradient."),
}

TENT_CASES = (
    dict(model="Dense-BN-ReLU-Dense", batch=16, features=5, learning_rate=0.1),
    dict(model="conv block nested in a functional model, BN(center=False) after a Dense",
         batch=8, features=(6, 6, 2), learning_rate=0.05),
    dict(model="BN(scale=False), a frozen Dense", batch=12, features=3, learning_rate=0.5),
)


def _tent_model(index):
    """One of the three models of TENT_CASES, seeded, with moving statistics away from 0 and 1."""
    import keras

    keras.utils.set_random_seed(40 + index)
    layers = keras.layers
    if index == 0:
        model = keras.Sequential([keras.Input((5,)), layers.Dense(6, use_bias=False),
                                  layers.BatchNormalization(), layers.ReLU(), layers.Dense(3)])
    elif index == 1:
        block = keras.Sequential([keras.Input((6, 6, 2)), layers.Conv2D(4, 3, use_bias=False),
                                  layers.BatchNormalization(), layers.ReLU()], name="block")
        inputs = keras.Input((6, 6, 2))
        h = layers.GlobalAveragePooling2D()(block(inputs))
        h = layers.BatchNormalization(center=False)(layers.Dense(5, use_bias=False)(h))
        model = keras.Model(inputs, layers.Dense(4)(layers.ReLU()(h)))
    else:
        frozen = layers.Dense(7)
        model = keras.Sequential([keras.Input((3,)), frozen, layers.BatchNormalization(scale=False),
                                  layers.ReLU(), layers.Dense(3)])
        frozen.trainable = False
    rng = np.random.default_rng(index)
    from ..statistics import bn_layers

    for layer in bn_layers(model):
        size = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(0.0, 0.5, size).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype(np.float32))
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype(np.float32))
    return model


def _tent_inputs(case, index):
    shape = (case.batch, *np.atleast_1d(case.features))
    rng = np.random.default_rng(100 + index)
    return (rng.standard_normal(shape) * 1.5 + 0.7).astype(np.float32)


def _tent_reference(model, x, learning_rate, how="right"):
    """One TENT step on ``model`` done here (in place), the right way or a known wrong one;
    returns the entropy it reports."""
    import tensorflow as tf

    from ..statistics import bn_layers

    layers = bn_layers(model) if how != "top_level" else [
        layer for layer in model.layers if layer in bn_layers(model)]
    if how == "all_variables":
        variables = list(model.trainable_variables)
    else:
        variables = [v for layer in layers for v in (layer.gamma, layer.beta) if v is not None]
    saved = [(v, v.numpy()) for layer in bn_layers(model)
             for v in (layer.moving_mean, layer.moving_variance)]
    with tf.GradientTape() as tape:
        log_p = tf.nn.log_softmax(model(x, training=how != "inference"))
        per_example = -tf.reduce_sum(tf.exp(log_p) * log_p, axis=1)
        entropy = tf.reduce_sum(per_example) if how == "summed" else tf.reduce_mean(per_example)
    sign = -1.0 if how == "ascent" else 1.0
    for variable, gradient in zip(variables, tape.gradient(entropy, variables)):
        variable.assign_sub(sign * learning_rate * gradient)
    if how != "moving_changed":
        for variable, value in saved:
            variable.assign(value)
    if how == "entropy_after":
        log_p = tf.nn.log_softmax(model(x, training=True))
        entropy = -tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * log_p, axis=1))
        for variable, value in saved:
            variable.assign(value)
    return float(entropy)


def _tent_state(model, entropy, names):
    state = {"entropy": entropy}
    state.update({name: v.numpy().copy() for name, v in zip(names, model.variables)})
    return state


@checker("10.4")
def tent_step(fn):
    """Check ``tent_step(model, x, learning_rate)``: one SGD step on the mean prediction entropy
    of a training-mode pass, on every BN layer's gamma and beta only (nested models, BN without
    gamma or beta, frozen layers), moving statistics restored, the entropy before the step."""
    __tracebackhide__ = True
    from .. import statistics
    from ..lessons import distribution_shift

    for index, case in enumerate(cases(*TENT_CASES)):
        model = _tent_model(index)
        x = _tent_inputs(case, index)
        names = [f"variable {k} ({v.path.split('/', 1)[-1]})" for k, v in enumerate(model.variables)]
        start = [v.numpy().copy() for v in model.variables]

        def outcome(how, model=model, x=x, names=names, start=start, rate=case.learning_rate):
            for variable, value in zip(model.variables, start):
                variable.assign(value)
            entropy = _tent_reference(model, x, rate, how)
            return _tent_state(model, entropy, names)

        want = outcome("right")
        wrong = [Wrong(partial(outcome, how), *TENT_MESSAGES[how]) for how in TENT_MESSAGES]
        if index != 1:      # no nested model: the top-level layers are all of them
            wrong = [w for w in wrong if w.mistake != TENT_MESSAGES["top_level"][0]]
        for variable, value in zip(model.variables, start):
            variable.assign(value)
        entropy = call(fn, model, x.copy(), case.learning_rate, what="tent_step", case=case,
                       refuse=(distribution_shift.tent, statistics.recalibrate_bn),
                       hint="compute the entropy under a tf.GradientTape, then assign_sub the "
                            "gradients to the BN variables.")
        try:
            entropy = float(entropy)
        except (TypeError, ValueError):
            raise ExerciseMistake(
                f"In {case}: tent_step returned {type(entropy).__name__}, not the entropy.",
                "return the mean entropy before the step as a Python float.") from None
        match(_tent_state(model, entropy, names), want, wrong=wrong, case=case,
              name="the model after your step", atol=1e-5, rtol=1e-4,
              selftest="with learning_rate=0, every variable should be unchanged and the "
                       "entropy should be that of a training-mode pass.")
    return ("one TENT step matches in 3 cases: dense and convolutional models, a nested block, "
            "BN without gamma or without beta, a frozen Dense, learning rates 0.05 to 0.5")


# ---------------------------------------------------------------------------------------------
# Exercise 10.5: a prior strength for every BN layer of any Keras model
# ---------------------------------------------------------------------------------------------

PRIOR_MESSAGES = {
    "one_pass": (
        "Every layer's batch statistics came from one pass of the unadapted model; the layers "
        "after the first see inputs that the earlier, already adapted layers produce.",
        "adapt the BN layers one at a time, in order, with one inference-mode pass of the model "
        "per layer."),
    "top_level": (
        "The BN layers inside nested models kept their stored statistics.",
        "collect the BN layers with bnbook.bn_layers(model), which walks into nested models."),
    "trainable_only": (
        "The frozen BN layers kept their stored statistics: their statistics describe the "
        "source data just as much.",
        "adapt every BN layer, trainable or not: trainable only says whether gamma and beta "
        "learn."),
    "weights_swapped": MIXED_MESSAGES["weights_swapped"],
    "values_counted": MIXED_MESSAGES["values_counted"],
    "unbiased": MIXED_MESSAGES["unbiased"],
}

PRIOR_CASES = (
    dict(model="Dense-BN-ReLU-Dense-BN-ReLU-Dense", batch=8, features=5, prior=16.0),
    dict(model="a nested conv block, then a frozen BN", batch=4, features=(5, 5, 2), prior=4.0),
    dict(model="a frozen nested block, then a BN", batch=32, features=(4, 4, 3), prior=64.0),
)


def _prior_model(index):
    """One of PRIOR_CASES' models, seeded, its stored statistics far from 0 and 1."""
    import keras

    from ..statistics import bn_layers

    keras.utils.set_random_seed(60 + index)
    layers = keras.layers
    if index == 0:
        model = keras.Sequential([keras.Input((5,)), layers.Dense(6), layers.BatchNormalization(),
                                  layers.ReLU(), layers.Dense(4), layers.BatchNormalization(),
                                  layers.ReLU(), layers.Dense(3)])
    else:
        shape = (5, 5, 2) if index == 1 else (4, 4, 3)
        block = keras.Sequential([keras.Input(shape), layers.Conv2D(4, 3, padding="same"),
                                  layers.BatchNormalization(), layers.ReLU()], name="block")
        inputs = keras.Input(shape)
        h = layers.Dense(5)(layers.GlobalAveragePooling2D()(block(inputs)))
        last_bn = layers.BatchNormalization()
        model = keras.Model(inputs, layers.Dense(3)(layers.ReLU()(last_bn(h))))
        (last_bn if index == 1 else block).trainable = False
    rng = np.random.default_rng(index)
    for layer in bn_layers(model):
        size = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(0.0, 1.0, size).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.3, 3.0, size).astype(np.float32))
    return model


def _prior_reference(model, x, prior, how="right"):
    """Adapt ``model`` in place, the right way or a known wrong one (float64 statistics)."""
    from ..statistics import bn_layers

    layers = bn_layers(model)
    if how == "top_level":
        layers = [layer for layer in layers if layer in model.layers]
    if how == "trainable_only":
        layers = [layer for layer in layers if layer.trainable and _parents_trainable(model, layer)]
    inputs = _bn_inputs(model, x, layers) if how == "one_pass" else None
    for k, layer in enumerate(layers):
        h = inputs[k] if how == "one_pass" else _bn_inputs(model, x, [layer])[0]
        axes = tuple(range(h.ndim - 1))
        n = h.size // h.shape[-1] if how == "values_counted" else len(x)
        w = prior / (prior + n)
        if how == "weights_swapped":
            w = 1.0 - w
        mean, var = h.mean(axes), h.var(axes, ddof=1 if how == "unbiased" else 0)
        layer.moving_mean.assign((w * layer.moving_mean.numpy() + (1 - w) * mean).astype(np.float32))
        layer.moving_variance.assign(
            (w * layer.moving_variance.numpy() + (1 - w) * var).astype(np.float32))


def _parents_trainable(model, target) -> bool:
    """False if ``target`` sits inside a nested model that is frozen."""
    for layer in model.layers:
        if layer is target:
            return True
        if hasattr(layer, "layers"):
            if target in _all_layers(layer):
                return layer.trainable and _parents_trainable(layer, target)
    return True


def _all_layers(model):
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found += _all_layers(layer)
    return found


def _bn_inputs(model, x, layers):
    """What each of ``layers`` receives in one inference-mode pass of ``model`` on ``x``."""
    seen = {}
    for layer in layers:
        def recording(inputs, *args, _layer=layer, _own=layer.call, training=None, **kwargs):
            seen[id(_layer)] = np.asarray(inputs, np.float64)
            return _own(inputs, *args, training=False, **kwargs)
        layer.call = recording
    try:
        model(x, training=False)
    finally:
        for layer in layers:
            del layer.call
    return [seen[id(layer)] for layer in layers]


def _prior_state(model):
    from ..statistics import bn_layers

    return {f"BN layer {k} ({layer.name}) {what}": v.numpy().copy()
            for k, layer in enumerate(bn_layers(model))
            for what, v in (("moving mean", layer.moving_mean),
                            ("moving variance", layer.moving_variance))}


@checker("10.5")
def adapt_with_prior(fn):
    """Check ``adapt_with_prior(model, x, prior)``: every BN layer (nested, frozen) gets Schneider
    et al.'s mix of its stored statistics and its inputs' on x, layer after layer."""
    __tracebackhide__ = True
    from .. import statistics

    for index, case in enumerate(cases(*PRIOR_CASES)):
        model = _prior_model(index)
        rng = np.random.default_rng(200 + index)
        x = (rng.standard_normal((case.batch, *np.atleast_1d(case.features))) * 2.0 + 1.0
             ).astype(np.float32)
        start = [v.numpy().copy() for v in model.variables]

        def outcome(how, model=model, x=x, start=start, prior=case.prior):
            for variable, value in zip(model.variables, start):
                variable.assign(value)
            _prior_reference(model, x, prior, how)
            return _prior_state(model)

        want = outcome("right")
        wrong = [Wrong(partial(outcome, how), *PRIOR_MESSAGES[how]) for how in PRIOR_MESSAGES]
        for variable, value in zip(model.variables, start):
            variable.assign(value)
        weights = [v.numpy().copy() for v in model.trainable_variables]
        call(fn, model, x.copy(), case.prior, what="adapt_with_prior", case=case,
             refuse=(statistics.recalibrate_bn, statistics.bn_input_statistics),
             hint="for each BN layer in turn, record what it receives in one inference-mode pass, "
                  "then assign the mixed statistics.")
        if not all(np.array_equal(a, v.numpy()) for a, v in zip(weights, model.trainable_variables)):
            raise ExerciseMistake(
                f"In {case}: adapt_with_prior changed trainable weights (gamma, beta or a kernel); "
                "only the moving statistics should change.",
                "a training-mode call or an optimizer step moves weights; use inference-mode "
                "passes and assign only moving_mean and moving_variance.")
        match(_prior_state(model), want, wrong=wrong, case=case,
              name="the model's moving statistics", atol=1e-5, rtol=1e-4,
              selftest="with a very large prior, every BN layer should keep its stored statistics; "
                       "with prior 0, model(x, training=False) should equal model(x, "
                       "training=True) for a model without Dropout.")
    return ("every BN layer adapted with the prior in 3 cases: dense and convolutional models, "
            "nested blocks, frozen BN layers and a frozen block, priors 4 to 64, batches 4 to 32")
