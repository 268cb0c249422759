"""Checkers for chapter 12, BN in recurrent networks.

Each checker runs three cases that differ in everything a learner could hard-code: the batch size,
the number of inputs, units or channels, the number of steps, BN's epsilon, the gammas and betas,
the sizes of the batches in a list and the sequences' lengths. The right answers and the
known-wrong ones are computed in float64 here and matched with :func:`._core.match`; the book's
own implementations (``bnbook.lessons.recurrent_bn``) are refused.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..lessons import recurrent_bn as rb
from ._core import Wrong, call, cases, checker, match

OTHER_EPSILONS = (1e-3, 1e-5, 1e-4, 1e-2)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _normalise(z, gamma, beta, epsilon, how="right", axis=0):
    """gamma (z - mean) / sqrt(var + eps) + beta over ``axis``, or a known-wrong form."""
    mean = z.mean(axis=axis, keepdims=True)
    var = z.var(axis=axis, keepdims=True, ddof=1 if how == "unbiased" else 0)
    if how == "eps_outside":
        return gamma * (z - mean) / (np.sqrt(var) + epsilon) + beta
    return gamma * (z - mean) / np.sqrt(var + epsilon) + beta


# ---------------------------------------------------------------------------------------------
# Exercise 12.1: one BN-LSTM step with the batch's statistics
# ---------------------------------------------------------------------------------------------

STEP_MESSAGES = {
    "one_bn": (
        "You normalised W_x x_t + W_h h_{t-1} with one BN; the BN-LSTM normalises the two terms "
        "separately.",
        "BN(x_t W_x; gamma_x) + BN(h W_h; gamma_h) + bias: two normalisations, each with its own "
        "gamma, added before the bias."),
    "bias_inside": (
        "Your bias disappeared: it was added before a BN, which subtracts it again with the mean.",
        "add the bias after the two normalised terms."),
    "no_c_bn": (
        "Your h' uses tanh(c') without normalising c': the BN-LSTM normalises the cell state "
        "before its tanh.",
        "h' = sigmoid(o) * tanh(BN(c'; gamma_c, beta_c)), with the batch's statistics of c'."),
    "c_normalised": (
        "Your new cell state is the normalised one. Only the input of tanh is normalised; the "
        "memory c' carried to the next step stays raw.",
        "return c' = sigmoid(f) c + sigmoid(i) tanh(g) itself, and use BN(c') only inside h'."),
    "unbiased": (
        "You used the unbiased variance (divided by n - 1).",
        "like BN, use the biased variance over the batch: divide by n (np.var, tf.nn.moments)."),
    "eps_outside": (
        "You added epsilon to the standard deviation; BN adds it to the variance.",
        "divide by sqrt(variance + epsilon)."),
    "over_units": (
        "You normalised each example over its units (layer norm); BN normalises each unit over "
        "the batch.",
        "take the mean and variance over axis 0, the examples."),
    "gate_order": (
        "Your gates are in another order: the four blocks of the gate pre-activations are i, f, "
        "g, o.",
        "split z into four blocks of `units` columns: input gate, forget gate, candidate, output "
        "gate."),
    "sigmoid_g": (
        "You passed the candidate g through a sigmoid; it goes through tanh.",
        "c' = sigmoid(f) c + sigmoid(i) tanh(g)."),
    "beta_everywhere": (
        "You added beta_c to the gate terms as well; the gate BNs have no beta (the bias does "
        "that job).",
        "beta_c goes only into BN(c')."),
    "fixed_epsilon": (
        "Your result matches another epsilon than the one you were given: a hard-coded epsilon?",
        "use the `epsilon` argument."),
}


def step_numpy(x_t, h, c, kernel_x, kernel_h, bias, gamma_x, gamma_h, gamma_c, beta_c,
               epsilon, how="right"):
    """(h', c') of one BN-LSTM step in float64, or a known-wrong form (how: a key of
    STEP_MESSAGES)."""
    x_t, h, c = (np.asarray(a, np.float64) for a in (x_t, h, c))
    zx, zh = x_t @ kernel_x, h @ kernel_h
    norm_how = how if how in ("unbiased", "eps_outside") else "right"
    axis = 1 if how == "over_units" else 0
    bn = partial(_normalise, epsilon=epsilon, how=norm_how, axis=axis)
    if how == "one_bn":
        z = bn(zx + zh, gamma_x, 0.0) + bias
    elif how == "bias_inside":
        z = bn(zx + bias, gamma_x, 0.0) + bn(zh, gamma_h, 0.0)
    else:
        z = bn(zx, gamma_x, 0.0) + bn(zh, gamma_h, 0.0) + bias
    units = h.shape[1]
    if how == "beta_everywhere":
        z = z + np.tile(beta_c, 4)
    i, f, g, o = (z[:, k * units:(k + 1) * units] for k in range(4))
    if how == "gate_order":
        g, o = o, g
    cand = _sigmoid(g) if how == "sigmoid_g" else np.tanh(g)
    c_new = _sigmoid(f) * c + _sigmoid(i) * cand
    c_in = c_new if how == "no_c_bn" else bn(c_new, gamma_c, beta_c)
    h_new = _sigmoid(o) * np.tanh(c_in)
    return h_new, (c_in if how == "c_normalised" else c_new)


STEP_CASES = (
    dict(batch=6, inputs=3, units=2, epsilon=1e-3, first_step=False),
    dict(batch=9, inputs=5, units=3, epsilon=1e-5, first_step=False),
    dict(batch=4, inputs=2, units=4, epsilon=0.01, first_step=True),
)


def _step_inputs(case, seed):
    rng = np.random.default_rng(seed)
    n, d, u = case.batch, case.inputs, case.units
    f32 = np.float32
    if case.first_step:
        h, c = np.zeros((n, u), f32), np.zeros((n, u), f32)
    else:
        h = rng.uniform(-0.9, 0.9, (n, u)).astype(f32)
        c = rng.normal(0.5, 1.5, (n, u)).astype(f32)
    return dict(
        x_t=rng.normal(1.0, 2.0, (n, d)).astype(f32), h=h, c=c,
        kernel_x=rng.normal(0, 0.7, (d, 4 * u)).astype(f32),
        kernel_h=rng.normal(0, 0.7, (u, 4 * u)).astype(f32),
        bias=rng.normal(0, 1.0, 4 * u).astype(f32),
        gamma_x=rng.uniform(0.3, 1.5, 4 * u).astype(f32),
        gamma_h=rng.uniform(0.3, 1.5, 4 * u).astype(f32),
        gamma_c=rng.uniform(0.3, 1.5, u).astype(f32),
        beta_c=rng.normal(0, 0.5, u).astype(f32),
        epsilon=case.epsilon)


def _step_dict(inputs, how="right", **changes):
    h, c = step_numpy(**{**inputs, **changes}, how=how)
    return {"new hidden state": h, "new cell state": c}


@checker("12.1")
def bn_lstm_step(fn):
    """Check ``bn_lstm_step(x_t, h, c, kernel_x, kernel_h, bias, gamma_x, gamma_h, gamma_c,
    beta_c, epsilon) -> (h_new, c_new)``."""
    __tracebackhide__ = True
    for case in cases(*STEP_CASES):
        inputs = _step_inputs(case, seed=10 * case.units + case.batch)
        args = [inputs[k] for k in ("x_t", "h", "c", "kernel_x", "kernel_h", "bias", "gamma_x",
                                    "gamma_h", "gamma_c", "beta_c", "epsilon")]
        got = call(fn, *[np.copy(a) if isinstance(a, np.ndarray) else a for a in args],
                   what="bn_lstm_step", case=case,
                   refuse=(rb.bn_lstm_step, rb.bn_lstm_reference, rb._bn, rb.NormLSTM.call,
                           rb.NormLSTM._normalise),
                   hint="compute the two gate terms, normalise each over the batch, then the "
                        "LSTM's gates and the cell state.")
        want = _step_dict(inputs)
        wrong = [Wrong(partial(_step_dict, inputs, how), *STEP_MESSAGES[how])
                 for how in ("one_bn", "bias_inside", "no_c_bn", "c_normalised", "unbiased",
                             "eps_outside", "over_units", "gate_order", "sigmoid_g",
                             "beta_everywhere")]
        wrong += [Wrong(partial(_step_dict, inputs, epsilon=e), *STEP_MESSAGES["fixed_epsilon"])
                  for e in OTHER_EPSILONS if e != case.epsilon]
        match(got, want, wrong=wrong, case=case, name="bn_lstm_step's result",
              selftest="with all gammas 1, beta_c 0 and a bias of 0, each gate term's columns "
                       "should have mean 0 and variance close to 1 over the batch.")
    return ("one BN-LSTM step matches in 3 cases: batch sizes, inputs, units, epsilons, and a "
            "first step with h = c = 0")


# ---------------------------------------------------------------------------------------------
# Exercise 12.2: population statistics per time step, and the t > T_max rule
# ---------------------------------------------------------------------------------------------

POPULATION_MESSAGES = {
    "mean_of_variances": (
        "Your variances are the average of the batches' variances: they miss the spread between "
        "the batches' means.",
        "pool the values, not the variances: per step, the variance of all examples of all "
        "batches together (or add each batch's (mean - pooled mean)^2 to its variance)."),
    "equal_weights": (
        "You weighted every batch equally; each example counts once, so a batch of 40 weighs "
        "four times a batch of 10.",
        "weight each batch by its number of examples, or concatenate the batches."),
    "shared": (
        "Your statistics are the same at every step: you pooled over time as well. The BN-LSTM "
        "keeps separate statistics per step.",
        "take the mean and variance over the examples only (axis 0 after concatenating), one "
        "set per step."),
    "unbiased": (
        "You used the unbiased variance (divided by m - 1).",
        "like BN, use the biased variance: divide by the number of examples."),
    "initial_after": (
        "For the steps after the last training step you returned mean 0 and variance 1 (BN's "
        "initial values); the rule reuses the last step's statistics.",
        "for t >= T_max use the statistics of step T_max - 1."),
    "wrapped": (
        "For the steps after the last training step you started again from step 0 (t mod "
        "T_max); the rule reuses the last step's statistics.",
        "for t >= T_max use the statistics of step T_max - 1, for every such t."),
    "first_after": (
        "For the steps after the last training step you used the first step's statistics; the "
        "rule reuses the last step's.",
        "for t >= T_max use the statistics of step T_max - 1."),
    "mean_after": (
        "For the steps after the last training step you used statistics averaged over all "
        "steps; the rule reuses the last step's.",
        "for t >= T_max use the statistics of step T_max - 1."),
}


def population_numpy(batches, length, how="right"):
    """(means, variances), each (length, C), in float64, or a known-wrong form."""
    batches = [np.asarray(b, np.float64) for b in batches]
    values = np.concatenate(batches)                       # (examples, T, C)
    steps = values.shape[1]
    if how == "equal_weights":
        means = np.mean([b.mean(axis=0) for b in batches], axis=0)
        variances = np.mean([b.var(axis=0) for b in batches], axis=0)
    elif how == "mean_of_variances":
        means = values.mean(axis=0)
        sizes = np.array([len(b) for b in batches], np.float64)
        variances = np.tensordot(sizes / sizes.sum(), [b.var(axis=0) for b in batches], axes=1)
    elif how == "shared":
        flat = values.reshape(-1, values.shape[-1])
        means = np.repeat(flat.mean(axis=0)[None], steps, 0)
        variances = np.repeat(flat.var(axis=0)[None], steps, 0)
    else:
        means = values.mean(axis=0)
        variances = values.var(axis=0, ddof=1 if how == "unbiased" else 0)
    t = np.arange(length)
    index = np.minimum(t, steps - 1)
    if how == "wrapped":
        index = t % steps
    if how == "first_after":
        index = np.where(t < steps, t, 0)
    means, variances = means[index], variances[index]
    later = t >= steps
    if how == "initial_after":
        means[later], variances[later] = 0.0, 1.0
    if how == "mean_after":
        means[later] = values.mean(axis=(0, 1))
        variances[later] = values.var(axis=0).mean(axis=0)
    return means, variances


POPULATION_CASES = (
    dict(batch_sizes=(10, 40, 20), steps=4, channels=3, length=7),
    dict(batch_sizes=(8, 8, 24, 16), steps=6, channels=2, length=9),
    dict(batch_sizes=(30, 5), steps=3, channels=5, length=2),
)


def _population_batches(case, seed):
    """Batches whose statistics differ from step to step and from batch to batch."""
    rng = np.random.default_rng(seed)
    step_mean = rng.normal(0, 2, (case.steps, case.channels))
    step_scale = rng.uniform(0.5, 2.5, (case.steps, case.channels))
    out = []
    for n in case.batch_sizes:
        shift = rng.normal(0, 1.0, (case.steps, case.channels))   # this batch's own offset
        out.append((rng.standard_normal((n, case.steps, case.channels)) * step_scale
                    + step_mean + shift).astype(np.float32))
    return out


def _population_dict(batches, length, how="right"):
    return dict(zip(("means", "variances"), population_numpy(batches, length, how)))


@checker("12.2")
def population_per_step(fn):
    """Check ``population_per_step(batches, length) -> (means, variances)``."""
    __tracebackhide__ = True
    for case in cases(*POPULATION_CASES):
        batches = _population_batches(case, seed=case.steps * 7 + case.channels)
        got = call(fn, [b.copy() for b in batches], case.length, what="population_per_step",
                   case=case, refuse=(rb.population_statistics, rb.extend_statistics,
                                      rb.shared_statistics),
                   hint="work with NumPy arrays of shape (examples, steps, channels).")
        want = _population_dict(batches, case.length)
        hows = ["mean_of_variances", "equal_weights", "shared", "unbiased"]
        if case.length > case.steps:
            hows += ["initial_after", "wrapped", "first_after", "mean_after"]
        wrong = [Wrong(partial(_population_dict, batches, case.length, how),
                       *POPULATION_MESSAGES[how]) for how in hows]
        match(got, want, wrong=wrong, case=case, name="population_per_step's result",
              selftest="with one batch, step t's mean and variance should equal that batch's "
                       "np.mean and np.var over axis 0 at step t.")
    return ("population statistics per step match in 3 cases: batches of different sizes, "
            "steps past T_max, and a length shorter than T_max")


# ---------------------------------------------------------------------------------------------
# Exercise 12.3: sequence-wise BN over a padded batch with a mask
# ---------------------------------------------------------------------------------------------

MASKED_MESSAGES = {
    "pads_counted": (
        "Your statistics include the padded steps; only the real steps count.",
        "select the values where mask is 1 (x[mask.astype(bool)] gives them as (m, C)) and take "
        "their mean and variance."),
    "wrong_count": (
        "You summed the real steps only, but divided by every position (n x T), padding "
        "included.",
        "divide by the number of real steps, mask.sum()."),
    "per_step": (
        "You computed statistics per time step (as the BN-LSTM does); sequence-wise BN pools the "
        "batch and all real steps.",
        "one mean and one variance per channel, over every real (example, step) pair."),
    "per_sequence": (
        "You normalised each sequence with its own statistics; sequence-wise BN pools the whole "
        "batch.",
        "one mean and one variance per channel, over every real (example, step) pair."),
    "sequence_weights": (
        "You averaged the sequences' means, so a short sequence weighs as much as a long one; "
        "every real step counts once.",
        "pool the real steps of all sequences, then take the mean and variance."),
    "pads_kept": (
        "Your padded steps are not 0: the normalised garbage of the padding went through.",
        "multiply the result by the mask (or use np.where) so that padded steps are 0."),
    "unbiased": (
        "You used the unbiased variance (divided by m - 1).",
        "like BN, divide by the number of real steps."),
    "eps_outside": (
        "You added epsilon to the standard deviation; BN adds it to the variance.",
        "divide by sqrt(variance + epsilon)."),
    "fixed_epsilon": (
        "Your result matches another epsilon than the one you were given: a hard-coded epsilon?",
        "use the `epsilon` argument."),
}


def masked_numpy(x, mask, gamma, beta, epsilon, how="right"):
    """Sequence-wise BN of x (n, T, C) over the real steps, pads 0; or a known-wrong form."""
    x = np.asarray(x, np.float64)
    m = np.asarray(mask, bool)
    real = x[m]                                            # (real steps, C)
    keep = m[..., None]
    if how == "pads_counted":
        mean, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
    elif how == "wrong_count":
        total = x.shape[0] * x.shape[1]
        mean = real.sum(axis=0) / total
        var = (real ** 2).sum(axis=0) / total - mean ** 2
    elif how == "per_step":
        count = np.maximum(m.sum(axis=0), 1)[:, None]     # (T, 1)
        mean = (x * keep).sum(axis=0) / count
        var = ((x - mean) ** 2 * keep).sum(axis=0) / count
    elif how == "per_sequence":
        count = m.sum(axis=1)[:, None, None]
        mean = (x * keep).sum(axis=1, keepdims=True) / count
        var = ((x - mean) ** 2 * keep).sum(axis=1, keepdims=True) / count
    elif how == "sequence_weights":
        count = m.sum(axis=1)[:, None]
        seq_means = (x * keep).sum(axis=1) / count         # (n, C)
        mean = seq_means.mean(axis=0)
        var = (((x - mean) ** 2 * keep).sum(axis=1) / count).mean(axis=0)
    else:
        mean = real.mean(axis=0)
        var = real.var(axis=0, ddof=1 if how == "unbiased" else 0)
    if how == "eps_outside":
        y = gamma * (x - mean) / (np.sqrt(var) + epsilon) + beta
    else:
        y = gamma * (x - mean) / np.sqrt(var + epsilon) + beta
    return y if how == "pads_kept" else np.where(keep, y, 0.0)


MASKED_CASES = (
    dict(lengths=(5, 2, 4), steps=5, channels=3, epsilon=1e-3, pad="garbage"),
    dict(lengths=(3, 6, 1, 6, 2), steps=6, channels=2, epsilon=1e-5, pad="zeros"),
    dict(lengths=(4, 4, 2, 1), steps=4, channels=4, epsilon=0.01, pad="zeros"),
)


def _masked_inputs(case, seed):
    rng = np.random.default_rng(seed)
    n = len(case.lengths)
    mask = (np.arange(case.steps)[None] < np.array(case.lengths)[:, None]).astype(np.float32)
    x = rng.normal(rng.uniform(-2, 3, case.channels), rng.uniform(0.5, 2, case.channels),
                   (n, case.steps, case.channels))
    x += rng.normal(0, 1.0, (1, case.steps, 1))            # the steps differ on average
    pad = 0.0 if case.pad == "zeros" else rng.normal(5, 3, x.shape)
    x = np.where(mask[..., None] > 0, x, pad).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, case.channels).astype(np.float32)
    beta = rng.normal(0, 1.0, case.channels).astype(np.float32)
    return x, mask, gamma, beta


@checker("12.3")
def masked_sequence_bn(fn):
    """Check ``masked_sequence_bn(x, mask, gamma, beta, epsilon) -> y``."""
    __tracebackhide__ = True
    for case in cases(*MASKED_CASES):
        x, mask, gamma, beta = _masked_inputs(case, seed=sum(case.lengths) + case.channels)
        got = call(fn, x.copy(), mask.copy(), gamma.copy(), beta.copy(), case.epsilon,
                   what="masked_sequence_bn", case=case,
                   hint="x has shape (batch, time, channels) and mask (batch, time).")
        args = (x, mask, gamma, beta)
        want = masked_numpy(*args, case.epsilon)
        wrong = [Wrong(partial(masked_numpy, *args, case.epsilon, how), *MASKED_MESSAGES[how])
                 for how in ("pads_counted", "wrong_count", "per_step", "per_sequence",
                             "sequence_weights", "pads_kept", "unbiased", "eps_outside")]
        wrong += [Wrong(partial(masked_numpy, *args, e), *MASKED_MESSAGES["fixed_epsilon"])
                  for e in OTHER_EPSILONS if e != case.epsilon]
        match(got, want, wrong=wrong, case=case, name="masked_sequence_bn's result",
              selftest="with a mask of all ones, your result should equal plain BN over the "
                       "batch and time axes together.")
    return ("sequence-wise BN over the real steps matches in 3 cases: sequences of different "
            "lengths, zero and garbage padding, other epsilons")
