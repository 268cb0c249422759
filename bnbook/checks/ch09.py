"""Checkers for chapter 9: BN across devices, and BN in deployment.

Each checker runs four cases that differ in every size (replicas and their counts, features,
kernel height and width, input and output channels) and in epsilon; one case per checker is
built to catch one specific mistake (a large mean that float32 cannot square, a square kernel that
hides a wrong axis, a convolution without a bias). References are computed in float64, except
where the exercise is about float32 (the merge is compared with ``tf.nn.moments`` of the
concatenated float32 batch).
"""

from __future__ import annotations

import re

import numpy as np

from ._core import ExerciseMistake, Wrong, call, cases, checker, match

COMMON_EPSILONS = (0.0, 1e-3, 1e-5)  # what a learner types when they ignore the `eps` argument


def _broadcast_hint(err: ExerciseMistake, hint: str) -> ExerciseMistake:
    """A broadcasting error in the learner's code: say what it usually means here."""
    found = re.search(r"operands could not be broadcast together with shapes [\d(), ]*\)",
                      str(err)) or re.search(r"Incompatible shapes: \[[\d, ]*\] vs\. \[[\d, ]*\]",
                                             str(err))
    if not found:
        return err
    function = err.mistake.split(" raised ")[0]
    return ExerciseMistake(f"{function} failed: {found.group(0).strip()}. The per-channel vector "
                           "was lined up with the wrong axis of the kernel.", hint)


def _book_folding():
    """The book's own folding (bnbook.folding): 9.3 asks the learner to write it."""
    from .. import folding

    return (folding.fold_bn, folding.fold_model)


def _book_merging():
    from .. import statistics

    return (statistics.merge_moments, statistics.merge_replica_moments)


def _call(fn, *args, what, hint, case, refuse=(), **kwargs):
    __tracebackhide__ = True
    try:
        return call(fn, *args, what=what, case=case, refuse=refuse, **kwargs)
    except ExerciseMistake as err:
        raise _broadcast_hint(err, hint) from None


# ---------------------------------------------------------------------------------------------
# Exercise 9.1: merge per-replica (count, mean, M2) triples
# ---------------------------------------------------------------------------------------------

def _replicas(seed: int, counts, features: int, centre: float):
    """float32 values per replica (each replica with its own offset), and their triples
    (count, mean, M2) computed per replica with tf.nn.moments, as a replica would."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    spread = rng.uniform(0.5, 3.0, features)
    data = [(centre + rng.uniform(-2, 2, features) + spread * rng.standard_normal((n, features)))
            .astype(np.float32) for n in counts]
    triples = []
    for values in data:
        if len(values) == 0:        # a replica that got no examples: 0/0 in its moments
            triples.append((0, np.full(features, np.nan, np.float32),
                            np.full(features, np.nan, np.float32)))
            continue
        mean, variance = tf.nn.moments(tf.constant(values), axes=[0])
        triples.append((len(values), mean.numpy(), (variance * len(values)).numpy()))
    return data, triples


def _merge64(triples, *, weight: str = "b", sign: float = 1.0, carry: bool = True):
    """The right merge, in float64, one triple at a time; or, with the other arguments, the
    same loop with a learner's slip: the mean moved by delta * n_a / n (``weight="a"``), or
    away from the new replica (``sign=-1``), or the running count never updated
    (``carry=False``: returns the count of the last ``total``)."""
    n, mean, m2 = triples[0][0], np.float64(triples[0][1]), np.float64(triples[0][2])
    for n_b, mean_b, m2_b in triples[1:]:
        total = n + n_b
        delta = np.float64(mean_b) - mean
        step = delta * (n_b if weight == "b" else n) / total
        mean, m2 = mean + sign * step, m2 + m2_b + delta ** 2 * n * n_b / total
        n = total if carry else n
    return (n if carry else total), mean, m2


def _merge_variants(triples):
    """Known-wrong merges, in float64: {name: (count, mean, M2)}."""
    counts = np.array([t[0] for t in triples], np.float64)[:, None]
    means = np.array([t[1] for t in triples], np.float64)
    m2s = np.array([t[2] for t in triples], np.float64)
    total = counts.sum()
    weighted = (counts * means).sum(axis=0) / total
    plain = means.mean(axis=0)
    between = (counts * (means - weighted) ** 2).sum(axis=0)
    n2, mean2, m2_2 = _merge64(triples[:2])
    return {
        "within_only": (total, weighted, m2s.sum(axis=0)),
        "plain_mean": (total, plain, m2s.sum(axis=0) + (counts * (means - plain) ** 2).sum(axis=0)),
        "variance": (total, weighted, (m2s.sum(axis=0) + between) / total),
        "between_over_n": (total, weighted, m2s.sum(axis=0) + between / total),
        "first_two": (n2, mean2, m2_2),
        "replicas_counted": (len(triples), weighted, m2s.sum(axis=0) + between),
        "count_not_carried": _merge64(triples, carry=False),
        "count_not_carried_first": (triples[0][0], *_merge64(triples, carry=False)[1:]),
        "weight_swapped": _merge64(triples, weight="a"),
        "delta_sign": _merge64(triples, sign=-1.0),
    }


_MERGE_MESSAGES = {
    "within_only": ("You added the replicas' M2 and stopped: that misses how far the replicas' "
                    "means lie from each other.",
                    "each M2 measures spread around its own replica's mean; merging adds a term "
                    "for the distance between the two means (delta), weighted by the counts."),
    "plain_mean": ("Your merged mean gives every replica the same weight; the replicas have "
                   "different sizes.",
                   "weight each replica's mean by its count."),
    "variance": ("You returned the merged variance (M2 divided by the count), not M2.",
                 "keep M2 a sum of squared deviations, so that your result can be merged again; "
                 "divide by the count only when you need the variance."),
    "between_over_n": ("The term for the distance between the replicas' means is too small: it "
                       "is divided by the count once too often.",
                       "merging two triples adds delta^2 * n_a * n_b / n to the sum of their M2."),
    "first_two": ("Only the first two replicas were merged.",
                  "merge any number of replicas: fold the triples in one at a time."),
    "replicas_counted": ("Your count is the number of replicas, not the number of values.",
                         "the merged count is the sum of the replicas' counts."),
    "count_not_carried": ("Right for two replicas, wrong from the third: your loop does not "
                          "carry the merged count forward.",
                          "after each merge, the running count is the number of values merged "
                          "so far, and the next merge weights with it."),
    "weight_swapped": ("Your merged mean leans towards the wrong replica: it moved by delta "
                       "times the first replica's share of the values.",
                       "the merged mean moves from the first mean towards the second one in "
                       "proportion to the second replica's share, n_b / n."),
    "delta_sign": ("Your merged mean moved away from the second replica's mean instead of "
                   "towards it: a sign slip in delta or in the mean's update.",
                   "with delta = mean_b - mean_a, the merged mean lies between mean_a and "
                   "mean_b."),
}
_MERGE_MESSAGES["count_not_carried_first"] = _MERGE_MESSAGES["count_not_carried"]


@checker("9.1")
def merge_moments(fn):
    """Check ``merge_moments(triples) -> (count, mean, m2)`` against tf.nn.moments of the whole."""
    __tracebackhide__ = True
    import tensorflow as tf

    # The last two cases hold replicas without examples (the trailing global batch of a data
    # set split over more replicas than it has examples), one of them in first place.
    for case in cases(dict(counts=(5, 3), features=2, centre=1.0, _seed=91),
                      dict(counts=(7, 1, 4), features=3, centre=-2.0, _seed=92),
                      dict(counts=(2, 9, 3, 6), features=5, centre=0.5, _seed=93),
                      dict(counts=(64, 32, 48), features=8, centre=10_000.0, _seed=94),
                      dict(counts=(6, 0, 4, 0), features=3, centre=2.0, _seed=95),
                      dict(counts=(0, 3, 5), features=4, centre=-1.0, _seed=96)):
        data, triples = _replicas(case.seed, case.counts, case.features, case.centre)
        whole = np.concatenate(data)
        mean, variance = (t.numpy() for t in tf.nn.moments(tf.constant(whole), axes=[0]))
        want = {"count": len(whole), "mean": mean, "M2": variance * len(whole)}
        given = [(n, m.copy(), q.copy()) for n, m, q in triples]
        result = call(fn, given, what="merge_moments", case=case, refuse=_book_merging())
        empty = [i + 1 for i, n in enumerate(case.counts) if n == 0]
        if empty and any(part is not None and np.isnan(part).any()
                         for part in (_part(result, 1), _part(result, 2))):
            raise ExerciseMistake(
                f"In {case}: replica {' and '.join(map(str, empty))} got no examples (count 0; "
                "its mean and M2 are NaN, the 0/0 of an empty batch's moments), and your merged "
                "mean or M2 is NaN.",
                "an empty replica adds nothing: leave out the triples whose count is 0 (one of "
                "them may come first).")
        large = case.centre > 1000
        variants = _merge_variants([t for t in triples if t[0] > 0])
        wrong = [Wrong(dict(zip(want, variants[key])), *_MERGE_MESSAGES[key])
                 for key in _MERGE_MESSAGES]
        if large:
            # float32 cannot hold x^2 ~ 1e8 to better than 8: anything but a stable merge drifts.
            result_m2 = _m2_of(result)
            if result_m2 is not None and np.allclose(_mean_of(result), mean, rtol=1e-5) and \
                    np.max(np.abs(result_m2 - want["M2"]) / want["M2"]) > 0.01:
                raise ExerciseMistake(
                    f"In {case}: the first three cases passed, but with values near 10,000 your "
                    "M2 is off by more than 1%: float32 lost the precision (did you go through "
                    "sums of squares, E[x^2] - E[x]^2?).",
                    "merge with the (count, mean, M2) formula: it subtracts means, which are "
                    "close to each other, and never squares the large values themselves.")
        match(result, want, case=case, tensor=False, dtype=np.float32,
              name="merge_moments' result", wrong=wrong,
              rtol=1e-3 if large else 1e-4, atol=1e-3 if large else 1e-4,
              selftest="split a small float32 array into unequal parts, make each part's triple "
                       "with tf.nn.moments (M2 = variance * count), merge them and compare "
                       "M2 / count with tf.nn.moments of the whole array.")
    return "count, mean and M2 match tf.nn.moments of the concatenated batch for 2 to 4 " \
        "replicas of unequal size, also with values near 10,000 in float32 and with replicas " \
        "that got no examples"


def _part(result, index):
    if isinstance(result, (tuple, list)) and len(result) == 3:
        try:
            return np.asarray(result[index].numpy() if hasattr(result[index], "numpy")
                              else result[index], np.float64)
        except (TypeError, ValueError):
            return None
    return None


def _mean_of(result):
    value = _part(result, 1)
    return value if value is not None else np.nan


def _m2_of(result):
    return _part(result, 2)


# ---------------------------------------------------------------------------------------------
# Exercises 9.2 and 9.3: folding BN into a Dense layer after it, and into a Conv2D before it
# ---------------------------------------------------------------------------------------------

def _bn_params(rng, channels: int):
    """gamma (one negative), beta, moving mean and variance (some small, so epsilon matters)."""
    gamma = rng.uniform(0.5, 2.0, channels)
    gamma[rng.integers(channels)] *= -1
    beta = rng.uniform(-1.0, 1.0, channels)
    mean = rng.uniform(-3.0, 3.0, channels)
    variance = np.geomspace(0.01, 4.0, channels)[rng.permutation(channels)]
    return [a.astype(np.float32) for a in (gamma, beta, mean, variance)]


def _scale(gamma, variance, eps):
    return np.float64(gamma) / np.sqrt(np.float64(variance) + eps)


def _scale_variants(gamma, variance, eps):
    """{name: s} for known-wrong scales: no square root, std + eps, and other epsilons."""
    g, v = np.float64(gamma), np.float64(variance)
    out = {"no_sqrt": g / (v + eps), "std_plus_eps": g / (np.sqrt(v) + eps)}
    for other in COMMON_EPSILONS:
        if other != eps:
            out[f"eps={other}"] = g / np.sqrt(v + other)
    return out


_SCALE_MESSAGES = {
    "no_sqrt": ("You divided gamma by the variance plus epsilon, not by its square root.",
                "s = gamma / sqrt(moving_variance + eps)."),
    "std_plus_eps": ("You added epsilon to the standard deviation instead of to the variance.",
                     "epsilon goes inside the square root, next to the variance."),
    "eps": ("Forgot epsilon: you did not use the `eps` argument (your result matches no "
            "epsilon, or a fixed one).",
            "BN in inference mode divides by sqrt(moving_variance + eps), with the layer's own "
            "eps."),
}


def _scale_wrongs(gamma, variance, eps, fold, args):
    """Wrong entries for every wrong scale s: the answer ``fold(*args, s=s)`` would give."""
    out = []
    for name, s in _scale_variants(gamma, variance, eps).items():
        message = _SCALE_MESSAGES["eps" if name.startswith("eps=") else name]
        out.append(Wrong(dict(zip(("kernel", "bias"), fold(*args, s=s))), *message))
    return out


# --- 9.2: BN -> Dense ------------------------------------------------------------------------

def _dense_case(seed: int, inputs: int, units: int):
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.5, (inputs, units)).astype(np.float32)
    bias = rng.uniform(-1, 1, units).astype(np.float32)
    return (*_bn_params(rng, inputs), kernel, bias)


def _fold_next(gamma, beta, mean, variance, eps, kernel, bias, s=None):
    """BN (on the inputs) followed by Dense, as one Dense, in float64."""
    s = _scale(gamma, variance, eps) if s is None else s
    kernel, bias = np.float64(kernel), np.float64(bias)
    shift = np.float64(beta) - np.float64(mean) * s
    return s[:, None] * kernel, bias + shift @ kernel


_NEXT_HINT = ("here BN comes BEFORE the Dense layer: it normalises the Dense layer's inputs, so "
              "s belongs to the kernel's rows (axis 0), and BN's shift beta - s * mean passes "
              "through the kernel into the bias.")


@checker("9.2")
def fold_into_next_dense(fn):
    """Check ``fold_into_next_dense(gamma, beta, mean, variance, eps, kernel, bias)``."""
    __tracebackhide__ = True
    for case in cases(dict(inputs=3, units=5, eps=1e-3, _seed=921),
                      dict(inputs=6, units=2, eps=1e-5, _seed=922),
                      dict(inputs=4, units=4, eps=0.1, _seed=923),
                      dict(inputs=1, units=3, eps=0.01, _seed=924)):
        gamma, beta, mean, variance, kernel, bias = _dense_case(case.seed, case.inputs, case.units)
        args = [a.copy() for a in (gamma, beta, mean, variance)] + [case.eps, kernel.copy(),
                                                                    bias.copy()]
        result = _call(fn, *args, what="fold_into_next_dense", hint=_NEXT_HINT, case=case,
                       refuse=_book_folding())
        right_kernel, right_bias = _fold_next(gamma, beta, mean, variance, case.eps, kernel, bias)
        s = _scale(gamma, variance, case.eps)
        k64, b64 = np.float64(kernel), np.float64(bias)
        wrong = []
        if case.inputs == case.units:  # a square kernel: scaling the wrong axis broadcasts
            wrong += [
                Wrong({"kernel": k64 * s, "bias": (b64 - mean) * s + beta},
                      "You folded as if BN came after the Dense layer (the lesson's case): "
                      "scaled the kernel's columns and applied BN to the bias.", _NEXT_HINT),
                Wrong({"kernel": k64 * s},
                      "You scaled the kernel's columns (one per output unit); BN here "
                      "normalises the inputs.", _NEXT_HINT),
            ]
        wrong += [
            Wrong({"bias": b64}, "The bias is unchanged: BN's shift was dropped.",
                  "BN adds beta - s * mean to every input; through the kernel that becomes "
                  "(beta - s * mean) @ kernel, added to the bias."),
            Wrong({"bias": b64 + (np.float64(beta) - mean) @ k64},
                  "The bias misses the scale on the mean: BN's shift is beta - s * mean.",
                  "write BN in inference mode as s * x + (beta - s * mean)."),
            Wrong({"bias": b64 - (np.float64(beta) - mean * s) @ k64},
                  "The bias has BN's shift with the wrong sign.",
                  "BN's shift beta - s * mean is added to each input before the kernel."),
            Wrong({"bias": b64 + np.float64(beta) @ k64},
                  "The bias ignores the moving mean.", "BN's shift is beta - s * mean."),
            Wrong({"bias": b64 + (np.float64(beta) - s * mean) @ (s[:, None] * k64)},
                  "BN's shift went through the folded kernel, so it was scaled by s twice.",
                  "BN's shift is added after BN's scaling: it meets the original kernel."),
            Wrong({"bias": b64 + (s * (np.float64(beta) - mean)) @ k64},
                  "Your bias scales beta by s as well: BN adds beta after scaling.",
                  "BN(x) = s * (x - mean) + beta: only x - mean is scaled."),
        ]
        wrong += _scale_wrongs(gamma, variance, case.eps, _fold_next,
                               (gamma, beta, mean, variance, case.eps, kernel, bias))
        match(result, {"kernel": right_kernel, "bias": right_bias}, case=case, tensor=False,
              dtype=np.float32, name="fold_into_next_dense's result", wrong=wrong,
              selftest="build keras.Sequential([BatchNormalization(), Dense(...)]) with these "
                       "weights, and a lone Dense with your folded ones; compare their outputs "
                       "in inference mode on a few random inputs.")
    return "kernel and bias match BN -> Dense in 4 cases (inputs, units, epsilon)"


# --- 9.3: Conv2D -> BN ------------------------------------------------------------------------

def _conv_case(seed: int, kernel_size, channels_in: int, channels_out: int, with_bias: bool,
               multiplier: int = 0):
    """A Conv2D kernel (h, w, in, out), or with ``multiplier`` a DepthwiseConv2D kernel
    (h, w, in, multiplier) whose in * multiplier output channels BN normalises."""
    rng = np.random.default_rng(seed)
    last = multiplier or channels_out
    outputs = channels_in * multiplier if multiplier else channels_out
    kernel = rng.normal(0, 0.5, (*kernel_size, channels_in, last)).astype(np.float32)
    bias = rng.uniform(-1, 1, outputs).astype(np.float32) if with_bias else None
    return (kernel, bias, *_bn_params(rng, outputs))


def _fold_conv(kernel, bias, gamma, beta, mean, variance, eps, s=None, depthwise=False):
    s = _scale(gamma, variance, eps) if s is None else s
    b = np.zeros_like(s) if bias is None else np.float64(bias)
    scale = s.reshape(kernel.shape[2], kernel.shape[3]) if depthwise else s
    return np.float64(kernel) * scale, (b - mean) * s + beta


_CONV_HINT = ("Keras stores a Conv2D kernel as (height, width, input channels, output channels): "
              "BN's channels are the output channels, the kernel's LAST axis. Each output "
              "channel's filter is scaled by its s.")


_DEPTHWISE_HINT = ("a DepthwiseConv2D kernel is (height, width, input channels, depth multiplier), "
                   "and output channel c * multiplier + k comes from filter kernel[:, :, c, k]: "
                   "lay s out as (input channels, multiplier) before you scale the kernel.")


_NONE_BIAS_HINT = ("this case's convolution has no bias (use_bias=False), so `bias` is None; "
                   "your function must handle that.")


@checker("9.3")
def fold_into_conv(fn):
    """Check ``fold_into_conv(kernel, bias, gamma, beta, mean, variance, eps, depthwise=False)``;
    bias may be None. The last two cases are DepthwiseConv2D kernels (``depthwise=True``)."""
    __tracebackhide__ = True
    from functools import partial

    for case in cases(dict(kernel=(3, 3), channels_in=2, channels_out=4, bias=False, eps=1e-3,
                           _seed=931),
                      dict(kernel=(1, 1), channels_in=5, channels_out=3, bias=True, eps=1e-5,
                           _seed=932),
                      dict(kernel=(5, 3), channels_in=4, channels_out=4, bias=True, eps=0.1,
                           _seed=933),
                      dict(kernel=(2, 4), channels_in=3, channels_out=6, bias=False, eps=0.01,
                           _seed=934),
                      dict(kernel=(3, 3), channels_in=3, depth_multiplier=2, bias=True,
                           eps=1e-3, _seed=935),
                      dict(kernel=(5, 5), channels_in=4, depth_multiplier=1, bias=False,
                           eps=1e-5, _seed=936)):
        multiplier = case.params.get("depth_multiplier", 0)
        depthwise = bool(multiplier)
        kernel, bias, gamma, beta, mean, variance = _conv_case(
            case.seed, case["kernel"], case.channels_in, case.params.get("channels_out", 0),
            case["bias"], multiplier)
        args = [kernel.copy(), None if bias is None else bias.copy()] + \
            [a.copy() for a in (gamma, beta, mean, variance)] + [case.eps]
        kwargs = {"depthwise": True} if depthwise else {}
        hint = _DEPTHWISE_HINT if depthwise else _CONV_HINT
        try:
            result = _call(fn, *args, **kwargs, what="fold_into_conv", hint=hint, case=case,
                           refuse=_book_folding())
        except ExerciseMistake as err:
            if bias is None and "NoneType" in err.mistake:
                raise ExerciseMistake(err.mistake, _NONE_BIAS_HINT) from None
            if depthwise and "depthwise" in err.mistake and "argument" in err.mistake:
                raise ExerciseMistake(err.mistake, "keep the signature of the exercise: "
                                      "fold_into_conv(kernel, bias, gamma, beta, mean, variance, "
                                      "eps, depthwise=False).") from None
            raise
        if isinstance(result, (tuple, list)) and len(result) == 2 and result[1] is None:
            raise ExerciseMistake(
                f"In {case}: your folded bias is None. A convolution without a bias still needs "
                "one after folding: BN's shift has to go somewhere.",
                "treat a missing bias as zeros: the folded bias is then beta - s * mean.")
        if depthwise and isinstance(result, (tuple, list)) and len(result) == 2 and \
                np.shape(result[0]) != kernel.shape:
            raise ExerciseMistake(
                f"In {case}: your folded kernel has shape {np.shape(result[0])}, the depthwise "
                f"kernel {kernel.shape}: s, one value per output channel ({len(gamma)} of "
                "them), was broadcast against the kernel's last axis as for a Conv2D.",
                _DEPTHWISE_HINT)
        fold = partial(_fold_conv, depthwise=depthwise)
        right_kernel, right_bias = fold(kernel, bias, gamma, beta, mean, variance, case.eps)
        s = _scale(gamma, variance, case.eps)
        b64 = np.zeros_like(s) if bias is None else np.float64(bias)
        wrong = []
        if depthwise and multiplier > 1:
            wrong.append(Wrong({"kernel": np.float64(kernel) * s.reshape(multiplier, -1).T},
                               "Your scales reach the wrong filters: output channel "
                               "c * multiplier + k belongs to input channel c, not "
                               "k * input channels + c.", _DEPTHWISE_HINT))
        if not depthwise and case.channels_in == case.channels_out:
            wrong.append(Wrong({"kernel": np.float64(kernel) * s[:, None]},
                               "You scaled the kernel's input channels (axis 2), not its output "
                               "channels.", _CONV_HINT))
        wrong += [
            Wrong({"kernel": kernel}, "The kernel is unchanged: it was not scaled.",
                  "multiply each output channel's filter by s = gamma / sqrt(variance + eps)."),
            Wrong({"bias": b64 * s + beta}, "The bias ignores the moving mean.",
                  "BN subtracts the moving mean before scaling: b' = s * (b - mean) + beta."),
            Wrong({"bias": (b64 - mean) * s}, "The bias is missing beta.",
                  "BN adds beta after scaling: b' = s * (b - mean) + beta."),
            Wrong({"bias": b64 - mean * s + beta},
                  "The conv's own bias was not scaled: BN scales everything that reaches it.",
                  "b' = s * (b - mean) + beta: the bias goes through BN too."),
            Wrong({"bias": (b64 - mean) / s + beta}, "The bias was divided by s where BN "
                  "multiplies.", "s = gamma / sqrt(variance + eps) multiplies (b - mean)."),
        ]
        wrong.append(Wrong({"bias": (b64 - mean + beta) * s},
                           "Your bias scales beta by s as well: BN adds beta after scaling.",
                           "BN(z) = s * (z - mean) + beta: only z - mean is scaled."))
        if bias is not None:
            wrong.append(Wrong({"bias": -mean * s + beta},
                               "The conv's own bias is missing from the folded bias.",
                               "b' = s * (b - mean) + beta, with b the conv's bias."))
        else:
            wrong.append(Wrong({"bias": np.zeros_like(s)},
                               "Your folded bias is zero for a convolution without a bias: "
                               "BN's shift was dropped.",
                               "a missing bias counts as zeros, and then goes through BN like "
                               "any other bias."))
        wrong += _scale_wrongs(gamma, variance, case.eps, fold,
                               (kernel, bias, gamma, beta, mean, variance, case.eps))
        match(result, {"kernel": right_kernel, "bias": right_bias}, case=case, tensor=False,
              dtype=np.float32, name="fold_into_conv's result", wrong=wrong,
              selftest="build Conv2D (or DepthwiseConv2D) -> BatchNormalization with these "
                       "weights and the same layer with your folded ones (use_bias=True); "
                       "compare their inference-mode outputs on a random image batch.")
    return "kernel and bias match Conv2D -> BN in 4 cases (kernel sizes, channels, with and " \
        "without a bias, epsilon) and DepthwiseConv2D -> BN in 2 (depth multipliers 2 and 1)"


# ---------------------------------------------------------------------------------------------
# Exercise 9.4: a Keras BN layer from a PyTorch state, for either image layout
# ---------------------------------------------------------------------------------------------

_PYTORCH_ORDER = ("weight", "bias", "running_mean", "running_var")


def _pytorch_case(seed: int, channels: int):
    """A PyTorch BatchNorm2d state (one channel with a variance near epsilon's size, so that a
    wrong epsilon shows) and a channels-first image batch whose width differs from ``channels``."""
    rng = np.random.default_rng(seed)
    state = {"weight": rng.uniform(0.5, 1.5, channels), "bias": rng.normal(0.0, 0.5, channels),
             "running_mean": rng.normal(0.0, 1.0, channels),
             "running_var": rng.uniform(0.5, 2.0, channels), "num_batches_tracked": np.array(300)}
    state["running_var"][channels // 2] = 5e-4
    images = rng.normal(0.5, 1.5, (3, channels, 4, channels + 2))       # N, C, H, W
    return state, images


def _keras_output(state, images, *, eps, order=_PYTORCH_ORDER):
    """What a Keras BN layer with these weights (in ``order``) computes in inference mode, in
    float64, on channels-first ``images``."""
    weight, bias, mean, var = (np.asarray(state[key], np.float64).reshape(1, -1, 1, 1)
                               for key in order)
    with np.errstate(invalid="ignore"):          # a swapped "variance" may be negative: NaN
        return (images - mean) / np.sqrt(var + eps) * weight + bias


def _layout(images, channels_first: bool):
    return images if channels_first else images.transpose(0, 2, 3, 1)


@checker("9.4")
def bn_from_pytorch(fn):
    """Check ``bn_from_pytorch(state, eps, momentum, channels_first)`` -> a Keras BN layer."""
    __tracebackhide__ = True
    import keras

    from ..lessons.devices_deployment import pytorch_bn_reference

    for case in cases(dict(channels=3, eps=1e-5, momentum=0.1, channels_first=True, _seed=941),
                      dict(channels=5, eps=2e-4, momentum=0.05, channels_first=False, _seed=942),
                      dict(channels=4, eps=1e-3, momentum=0.3, channels_first=True, _seed=943),
                      dict(channels=6, eps=2e-5, momentum=0.01, channels_first=False, _seed=944)):
        state, images = _pytorch_case(case.seed, case.channels)
        given = {key: np.array(value) for key, value in state.items()}
        layer = call(fn, given, case.eps, case.momentum, case.channels_first,
                     what="bn_from_pytorch", case=case)
        if not isinstance(layer, keras.layers.BatchNormalization):
            raise ExerciseMistake(
                f"In {case}: bn_from_pytorch returned {type(layer).__name__}, not a "
                "keras.layers.BatchNormalization layer.",
                "create the layer, build it, set its weights, and return the layer itself.")
        x = _layout(images, case.channels_first).astype(np.float32)
        layout = "channels-first (N, C, H, W)" if case.channels_first else \
            "channels-last (N, H, W, C)"
        try:
            got = layer(x, training=False)
        except Exception as err:  # noqa: BLE001 - the learner's layer meets the case's images
            raise ExerciseMistake(
                f"In {case}: your layer cannot take this case's {layout} images of shape "
                f"{x.shape}: {type(err).__name__}.",
                "BN's `axis` is the channel axis of the images the layer receives: 1 for "
                "channels first, -1 for channels last; build the layer for 4-D batches.") from None
        if np.any(np.asarray(layer.moving_variance) < 0):
            raise ExerciseMistake(
                f"In {case}: your layer's moving variance has negative entries, so it holds "
                "something else: did you swap the moving mean and the moving variance?",
                "set_weights takes [gamma, beta, moving_mean, moving_variance]: PyTorch's "
                "weight, bias, running_mean, running_var, in that order.")
        want, _ = pytorch_bn_reference(images, state, eps=case.eps)
        wrong = [Wrong(_layout(_keras_output(state, images, eps=eps), case.channels_first),
                       f"Your layer uses epsilon {eps:g}, not this case's eps ({case.eps:g}).",
                       "pass PyTorch's eps to BatchNormalization(epsilon=...); Keras' default "
                       "is 1e-3, PyTorch's 1e-5.")
                 for eps in COMMON_EPSILONS if eps != case.eps]
        wrong += [Wrong(_layout(_keras_output(state, images, eps=case.eps, order=order),
                                case.channels_first), message,
                        "set_weights takes [gamma, beta, moving_mean, moving_variance]: "
                        "PyTorch's weight, bias, running_mean, running_var, in that order.")
                  for order, message in (
                      (("bias", "weight", "running_mean", "running_var"),
                       "Your layer swapped gamma and beta (PyTorch's weight and bias)."),
                      (("bias", "running_mean", "running_var", "weight"),
                       "Your layer's weights are in alphabetical order of PyTorch's keys."),
                      (("weight", "bias", "running_var", "running_mean"),
                       "Your layer swapped the moving mean and the moving variance."))]
        match(got, _layout(want, case.channels_first), case=case, tensor=True, dtype=np.float32,
              name="your layer's inference-mode output", wrong=wrong,
              selftest="compare layer(x, training=False) with (x - running_mean) / "
                       "sqrt(running_var + eps) * weight + bias, per channel.")
        _, stepped = pytorch_bn_reference(images, state, eps=case.eps, momentum=case.momentum,
                                          training=True)
        layer(x, training=True)
        batch_mean = images.mean(axis=(0, 2, 3))
        copied = case.momentum * state["running_mean"] + (1 - case.momentum) * batch_mean
        match(layer.moving_mean, stepped["running_mean"], case=case,
              dtype=np.float32, name="your layer's moving mean after one training step",
              wrong=[Wrong(copied, f"Your layer's momentum is {case.momentum:g}, PyTorch's "
                           "number copied as is.",
                           "PyTorch's momentum is the weight of the new batch, Keras' the weight "
                           "of the old value: use 1 - momentum.")],
              selftest="after layer(x, training=True) the moving mean must move momentum of the "
                       "way from the running mean towards the batch mean.")
    return "inference output and moving-mean update match PyTorch's BatchNorm2d in 4 cases " \
        "(channels, eps, momentum, both image layouts)"
