"""Chapter 9's checkers: the solutions pass, stubs are 'not done yet', known mistakes are named."""

import numpy as np
import pytest
import tensorflow as tf

import bnbook
from bnbook.checks import ExerciseMistake
from bnbook.checks import ch09 as check


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def passes(checker, answer, capsys):
    checker(answer)
    out = capsys.readouterr().out
    assert out.startswith(f"✓ Exercise {checker.label} passed"), out


def test_stubs_are_not_done(capsys):
    for checker in (check.merge_moments, check.fold_into_next_dense, check.fold_into_conv):
        assert checker(stub) is None
        assert f"Exercise {checker.label} is not done yet" in capsys.readouterr().out


# --- 9.1 ------------------------------------------------------------------------------------------

def merge(triples):
    triples = [t for t in triples if t[0] > 0]     # an empty replica adds nothing
    count, mean, m2 = triples[0]
    for count_b, mean_b, m2_b in triples[1:]:
        total = count + count_b
        delta = mean_b - mean
        mean = mean + delta * (count_b / total)
        m2 = m2 + m2_b + delta * delta * (count * count_b / total)
        count = total
    return count, mean, m2


def merge_as_a_tree(triples):
    """Pairs, then pairs of pairs (an all-reduce's order), in TensorFlow."""
    level = [(n, tf.constant(m), tf.constant(q)) for n, m, q in triples]
    while len(level) > 1:
        paired = [merge(level[i:i + 2]) for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    n, mean, m2 = level[0]
    return n, mean.numpy(), m2.numpy()


def merge_in_float64(triples):
    """The textbook sums are fine in float64; cast back at the end."""
    triples = [t for t in triples if t[0]]
    n = sum(t[0] for t in triples)
    total = sum(t[0] * t[1].astype(np.float64) for t in triples)
    squares = sum(t[2].astype(np.float64) + t[0] * t[1].astype(np.float64) ** 2 for t in triples)
    mean = total / n
    return n, mean.astype(np.float32), (squares - n * mean ** 2).astype(np.float32)


def naive_float32(triples):
    n = sum(t[0] for t in triples)
    total = sum(t[0] * t[1] for t in triples)
    squares = sum(t[2] + t[0] * t[1] * t[1] for t in triples)
    mean = total / n
    return n, mean, squares - n * mean * mean


def merge_slip(weight="b", sign=1.0, carry=True, give_back="total"):
    """The solution's loop with one learner's slip in it."""
    def answer(triples):
        count, mean, m2 = triples[0]
        for count_b, mean_b, m2_b in triples[1:]:
            total = count + count_b
            delta = mean_b - mean
            mean = mean + sign * delta * ((count_b if weight == "b" else count) / total)
            m2 = m2 + m2_b + delta * delta * (count * count_b / total)
            count = total if carry else count
        return (total if give_back == "total" else count), mean, m2
    return answer


def merge_variant(within=True, between_scale=1.0, plain=False, first=None, as_variance=False,
                  replica_count=False):
    def answer(triples):
        triples = [t for t in triples if t[0] > 0]
        triples = triples[:first] if first else triples
        counts = np.array([t[0] for t in triples], np.float32)[:, None]
        means = np.stack([t[1] for t in triples])
        m2s = np.stack([t[2] for t in triples])
        n = counts.sum()
        mean = means.mean(axis=0) if plain else (counts * means).sum(axis=0) / n
        m2 = (m2s.sum(axis=0) if within else 0) + between_scale * (
            counts * (means - mean) ** 2).sum(axis=0)
        if as_variance:
            m2 = m2 / n
        return (len(triples) if replica_count else int(n)), mean, m2
    return answer


def test_9_1_solution(capsys):
    passes(check.merge_moments, merge, capsys)


def merge_with_nan_to_num(triples):
    """Empty replicas made harmless: (0, 0, 0) merges as nothing."""
    return merge_slip()([(n, np.nan_to_num(m), np.nan_to_num(q)) for n, m, q in triples])


@pytest.mark.parametrize("answer", [merge_as_a_tree, merge_in_float64, merge_variant(),
                                    merge_with_nan_to_num])
def test_9_1_other_right_answers(answer, capsys):
    passes(check.merge_moments, answer, capsys)


@pytest.mark.parametrize("answer, message", [
    (merge_slip(), r"case 5 of 6 .*replica 2 and 4 got no examples"),
    (lambda t: merge_slip()(t[1:] if t[0][0] == 0 else t), r"case 5 of 6 .*got no examples"),
    (lambda t: merge_slip()(t[:1] + [x for x in t[1:] if x[0]]), r"case 6 of 6 .*replica 1 got"),
])
def test_9_1_empty_replicas(answer, message):
    """The lesson's two-replica merge in a loop is right until a replica holds no examples."""
    with pytest.raises(ExerciseMistake, match=message):
        check.merge_moments(answer)


@pytest.mark.parametrize("answer, message", [
    (naive_float32, r"case 4 of 6 .*float32 lost the precision"),
    (merge_variant(between_scale=0.0), "misses how far the replicas' means lie"),
    (merge_variant(plain=True), "same weight"),
    (merge_variant(as_variance=True), "returned the merged variance"),
    (lambda t: (merge(t)[0], merge(t)[1], sum(x[2] for x in t)
                + sum(x[0] * (x[1] - merge(t)[1]) ** 2 for x in t) / merge(t)[0]),
     "divided by the count once too often"),
    (merge_variant(first=2), "Only the first two replicas"),
    (merge_variant(replica_count=True), "number of replicas"),
    (merge_slip(carry=False), "does not carry the merged count forward"),
    (merge_slip(carry=False, give_back="count"), "does not carry the merged count forward"),
    (merge_slip(weight="a"), "leans towards the wrong replica"),
    (merge_slip(sign=-1.0), "away from the second replica's mean"),
    (lambda t: (sum(x[0] for x in t), merge(t)[1] + 0.1, merge(t)[2]), "matches no mistake"),
    (lambda t: (merge(t)[0], *(a.astype(np.float64) for a in merge(t)[1:])), "dtype float64"),
    (lambda t: (merge(t)[0], *(tf.constant(a) for a in merge(t)[1:])), "NumPy array"),
    (lambda t: merge(t)[1:], "2 parts; expected 3"),
    (lambda t: t[5], "raised IndexError"),
])
def test_9_1_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.merge_moments(answer)


# --- 9.2 ------------------------------------------------------------------------------------------

def fold_next(gamma, beta, mean, variance, eps, kernel, bias):
    s = gamma / np.sqrt(variance + eps)
    shift = beta - s * mean
    return s[:, None] * kernel, bias + shift @ kernel


def fold_next_with_diag(gamma, beta, mean, variance, eps, kernel, bias):
    s = gamma / np.sqrt(variance + eps)
    return np.diag(s) @ kernel, bias + np.einsum("i,ij->j", beta - s * mean, kernel)


def fold_next_tf(gamma, beta, mean, variance, eps, kernel, bias):
    s = gamma * tf.math.rsqrt(variance + eps)
    kernel_f = tf.reshape(s, (-1, 1)) * kernel
    bias_f = bias + tf.linalg.matvec(kernel, beta - s * mean, transpose_a=True)
    return kernel_f.numpy(), bias_f.numpy()


def fold_next_by_probing_keras(gamma, beta, mean, variance, eps, kernel, bias):
    """A learner's detour: run BN -> Dense on 0 and on the unit vectors, read off the affine map."""
    import keras

    features = kernel.shape[0]
    bn = keras.layers.BatchNormalization(epsilon=eps)
    bn.build((None, features))
    bn.set_weights([gamma, beta, mean, variance])
    dense = keras.layers.Dense(kernel.shape[1])
    dense.build((None, features))
    dense.set_weights([kernel, bias])
    new_bias = dense(bn(np.zeros((1, features), np.float32))).numpy()[0]
    return dense(bn(np.eye(features, dtype=np.float32))).numpy() - new_bias, new_bias


def next_variant(scale="right", eps=None, kernel_axis=0, bias="right"):
    def answer(gamma, beta, mean, variance, eps_given, kernel, b):
        e = eps_given if eps is None else eps
        s = {"right": gamma / np.sqrt(variance + e), "no_sqrt": gamma / (variance + e),
             "std": gamma / (np.sqrt(variance) + e)}[scale]
        k = s[:, None] * kernel if kernel_axis == 0 else kernel * s
        new_bias = {"right": lambda: b + (beta - s * mean) @ kernel, "unchanged": lambda: b,
                    "unscaled_mean": lambda: b + (beta - mean) @ kernel,
                    "sign": lambda: b - (beta - s * mean) @ kernel,
                    "no_mean": lambda: b + beta @ kernel,
                    "through_folded": lambda: b + (beta - s * mean) @ k,
                    "beta_scaled": lambda: b + (s * (beta - mean)) @ kernel,
                    "lesson": lambda: (b - mean) * s + beta}[bias]()
        return k, new_bias
    return answer


def test_9_2_solution(capsys):
    passes(check.fold_into_next_dense, fold_next, capsys)


@pytest.mark.parametrize("answer", [fold_next_with_diag, fold_next_tf,
                                    fold_next_by_probing_keras])
def test_9_2_other_right_answers(answer, capsys):
    passes(check.fold_into_next_dense, answer, capsys)


@pytest.mark.parametrize("answer, message", [
    (next_variant(kernel_axis=1, bias="lesson"), r"case 1 of 4 .*could not be broadcast.*wrong "
                                                 r"axis"),
    (next_variant(kernel_axis=1), r"could not be broadcast.*wrong axis"),
    (next_variant(bias="unchanged"), "BN's shift was dropped"),
    (next_variant(bias="unscaled_mean"), "misses the scale on the mean"),
    (next_variant(bias="sign"), "wrong sign"),
    (next_variant(bias="no_mean"), "ignores the moving mean"),
    (next_variant(bias="through_folded"), "scaled by s twice"),
    (next_variant(bias="beta_scaled"), "scales beta by s as well"),
    (next_variant(scale="no_sqrt"), "not by its square root"),
    (next_variant(scale="std"), "standard deviation"),
    (next_variant(eps=1e-3), "Forgot epsilon"),
    (next_variant(eps=0.0), "Forgot epsilon"),
    (lambda *a: tuple(x.astype(np.float64) for x in fold_next(*a)), "dtype float64"),
    (lambda *a: tuple(tf.constant(x) for x in fold_next(*a)), "NumPy array"),
    (lambda *a: fold_next(*a)[0], "expected 2 results"),
    (lambda *a: (fold_next(*a)[0], fold_next(*a)[1] * 1.5), "matches no mistake"),
])
def test_9_2_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.fold_into_next_dense(answer)


def test_9_2_square_kernel_names_the_lessons_formula():
    """Only the square case (3 of 4) lets the after-BN formula run: it is named there."""
    def lesson_formula_when_it_runs(gamma, beta, mean, variance, eps, kernel, bias):
        if kernel.shape[0] != kernel.shape[1]:
            return fold_next(gamma, beta, mean, variance, eps, kernel, bias)
        return next_variant(kernel_axis=1, bias="lesson")(gamma, beta, mean, variance, eps,
                                                          kernel, bias)
    with pytest.raises(ExerciseMistake, match="as if BN came after the Dense layer"):
        check.fold_into_next_dense(lesson_formula_when_it_runs)


# --- 9.3 ------------------------------------------------------------------------------------------

def fold_conv(kernel, bias, gamma, beta, mean, variance, eps, depthwise=False):
    s = gamma / np.sqrt(variance + eps)
    if bias is None:
        bias = np.zeros_like(mean)
    per_filter = s.reshape(kernel.shape[2], kernel.shape[3]) if depthwise else s
    return kernel * per_filter, (bias - mean) * s + beta


def fold_conv_reshaped(kernel, bias, gamma, beta, mean, variance, eps, depthwise=False):
    s = (gamma / np.sqrt(variance + eps)).reshape(1, 1, *kernel.shape[2:] if depthwise else (1, -1))
    b = 0.0 if bias is None else bias
    return (kernel * s).astype(np.float32), ((b - mean) * s.ravel() + beta).astype(np.float32)


def fold_conv_tf(kernel, bias, gamma, beta, mean, variance, eps, depthwise=False):
    s = gamma * tf.math.rsqrt(variance + eps)
    b = tf.zeros_like(mean) if bias is None else tf.constant(bias)
    k = kernel * (tf.reshape(s, kernel.shape[2:]) if depthwise else s)
    return k.numpy(), (b * s + (beta - mean * s)).numpy()


def fold_conv_einsum(kernel, bias, gamma, beta, mean, variance, eps, depthwise=False):
    s = gamma / np.sqrt(variance + eps)
    b = 0 if bias is None else bias
    if depthwise:       # output channel c * multiplier + k: filter [:, :, c, k]
        return np.einsum("hwck,ck->hwck", kernel, s.reshape(kernel.shape[2], -1)), \
            s * b + (beta - s * mean)
    return np.einsum("hwio,o->hwio", kernel, s), s * b + (beta - s * mean)


def conv_only(kernel, bias, gamma, beta, mean, variance, eps, depthwise=False):
    """The lesson's Conv2D fold, the flag ignored."""
    return fold_conv(kernel, bias, gamma, beta, mean, variance, eps)


def depthwise_order_swapped(kernel, bias, gamma, beta, mean, variance, eps, depthwise=False):
    if not depthwise:
        return fold_conv(kernel, bias, gamma, beta, mean, variance, eps)
    s = gamma / np.sqrt(variance + eps)
    b = np.zeros_like(mean) if bias is None else bias
    return kernel * s.reshape(kernel.shape[3], kernel.shape[2]).T, (b - mean) * s + beta


def test_9_3_depthwise_fold_matches_keras():
    """The check's depthwise channel order is Keras': DepthwiseConv2D -> BN equals the folded
    DepthwiseConv2D on a random batch (inference mode)."""
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=True)
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    model = keras.Model(inputs, bn(conv(inputs)))
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6),
                    rng.uniform(0.1, 2, 6)])
    conv.set_weights([rng.normal(size=(3, 3, 3, 2)), rng.normal(size=6)])
    kernel, bias = conv.get_weights()
    folded = fold_conv(kernel, bias, *bn.get_weights(), 1e-3, depthwise=True)
    alone = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=True)
    alone.build((None, 6, 6, 3))
    alone.set_weights(list(folded))
    x = rng.normal(size=(4, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(alone(x).numpy(), model(x, training=False).numpy(),
                               rtol=1e-4, atol=1e-4)


def conv_variant(axis=3, bias="right", scale="right", eps=None, none_bias="zeros"):
    def answer(kernel, b, gamma, beta, mean, variance, eps_given):
        e = eps_given if eps is None else eps
        s = {"right": gamma / np.sqrt(variance + e), "no_sqrt": gamma / (variance + e),
             "std": gamma / (np.sqrt(variance) + e)}[scale]
        if b is None:
            if none_bias == "none":
                return kernel * s, None
            if none_bias == "zeros":
                b = np.zeros_like(mean)
            if none_bias == "zero_result":
                return kernel * s, np.zeros_like(mean)
        k = {3: lambda: kernel * s, 2: lambda: kernel * s[:, None], None: lambda: kernel}[axis]()
        new_bias = {"right": lambda: (b - mean) * s + beta, "no_mean": lambda: b * s + beta,
                    "no_beta": lambda: (b - mean) * s, "unscaled": lambda: b - mean * s + beta,
                    "divided": lambda: (b - mean) / s + beta,
                    "own_bias_dropped": lambda: -mean * s + beta,
                    "beta_scaled": lambda: (b - mean + beta) * s}[bias]()
        return k, new_bias
    return answer


def test_9_3_solution(capsys):
    passes(check.fold_into_conv, fold_conv, capsys)


@pytest.mark.parametrize("answer", [fold_conv_reshaped, fold_conv_tf, fold_conv_einsum])
def test_9_3_other_right_answers(answer, capsys):
    passes(check.fold_into_conv, answer, capsys)


@pytest.mark.parametrize("answer, message", [
    (conv_variant(axis=2), r"case 1 of 6 .*could not be broadcast.*wrong axis"),
    (conv_variant(none_bias="none"), "your folded bias is None"),
    (conv_variant(none_bias="crash"), r"raised TypeError(.|\n)*Hint: .*`bias` is None"),
    (conv_variant(none_bias="zero_result"), "zero for a convolution without a bias"),
    (conv_variant(bias="beta_scaled"), "scales beta by s as well"),
    (conv_variant(axis=None), "kernel is unchanged"),
    (conv_variant(bias="no_mean"), "ignores the moving mean"),
    (conv_variant(bias="no_beta"), "missing beta"),
    (conv_variant(bias="unscaled"), "own bias was not scaled"),
    (conv_variant(bias="divided"), "divided by s"),
    (conv_variant(bias="own_bias_dropped"), "own bias is missing"),
    (conv_variant(scale="no_sqrt"), "not by its square root"),
    (conv_variant(scale="std"), "standard deviation"),
    (conv_variant(eps=1e-3), "Forgot epsilon"),
    (lambda *a: tuple(x.astype(np.float64) for x in fold_conv(*a)), "dtype float64"),
    (lambda *a: (fold_conv(*a)[0][..., :2], fold_conv(*a)[1]), "has shape"),
    (lambda *a: (fold_conv(*a)[0] + 0.01, fold_conv(*a)[1]), "matches no mistake"),
])
def test_9_3_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.fold_into_conv(answer)


@pytest.mark.parametrize("answer, message", [
    (conv_only, r"case 5 of 6 .*could not be broadcast(.|\n)*depth multiplier"),
    (depthwise_order_swapped, "reach the wrong filters"),
    (lambda kernel, bias, gamma, beta, mean, variance, eps: fold_conv(   # no `depthwise`
        kernel, bias, gamma, beta, mean, variance, eps), r"case 5 of 6 (.|\n)*keep the signature"),
])
def test_9_3_depthwise_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.fold_into_conv(answer)


def test_9_3_depthwise_multiplier_one_names_the_shape():
    def broadcast_to_a_square(kernel, bias, gamma, beta, mean, variance, eps, depthwise=False):
        if kernel.shape[3] == 1:                    # case 6: (5, 5, 4, 1) * (4,) broadcasts
            return conv_only(kernel, bias, gamma, beta, mean, variance, eps)
        return fold_conv(kernel, bias, gamma, beta, mean, variance, eps, depthwise)
    with pytest.raises(ExerciseMistake, match=r"case 6 of 6 .*shape \(5, 5, 4, 4\)"):
        check.fold_into_conv(broadcast_to_a_square)


def test_9_3_square_channels_name_the_input_axis():
    """Case 3 has as many input as output channels: scaling axis 2 runs and is named there."""
    def input_axis_when_it_runs(kernel, bias, gamma, beta, mean, variance, eps):
        if kernel.shape[2] != kernel.shape[3]:
            return fold_conv(kernel, bias, gamma, beta, mean, variance, eps)
        return conv_variant(axis=2)(kernel, bias, gamma, beta, mean, variance, eps)
    with pytest.raises(ExerciseMistake, match=r"input channels \(axis 2\)"):
        check.fold_into_conv(input_axis_when_it_runs)


def test_checks_are_fast():
    import time

    for checker, answer in ((check.merge_moments, merge),
                            (check.fold_into_next_dense, fold_next),
                            (check.fold_into_conv, fold_conv),
                            (check.bn_from_pytorch, bn_from_pytorch)):
        start = time.perf_counter()
        checker(answer)
        assert time.perf_counter() - start < 5  # < 1 s on an idle machine; slack for loaded CI


# --- answers that call the book's own implementation (issue: they used to pass) -----------------

def test_9_1_merging_with_the_books_merge_is_refused():

    def loop_of_the_books_merge(triples):      # right, but the book does the work
        merged = triples[0]
        for triple in triples[1:]:
            merged = bnbook.merge_moments(merged, triple)
        return merged
    with pytest.raises(ExerciseMistake, match=r"`bnbook\.statistics\.merge_moments`"):
        check.merge_moments(loop_of_the_books_merge)


def test_9_3_folding_with_the_books_fold_bn_is_refused():

    def by_the_book(kernel, bias, gamma, beta, mean, variance, eps):
        return bnbook.fold_bn(kernel, bias, gamma, beta, mean, variance, eps)
    with pytest.raises(ExerciseMistake, match=r"`bnbook\.folding\.fold_bn`"):
        check.fold_into_conv(by_the_book)


# --- 9.4 ------------------------------------------------------------------------------------------

import keras  # noqa: E402

PYTORCH_ORDER = ("weight", "bias", "running_mean", "running_var")


def bn_from_pytorch(state, eps, momentum, channels_first, *, order=PYTORCH_ORDER, keras_eps=None,
                    keras_momentum=None, axis=None):
    channels = len(state["weight"])
    layer = keras.layers.BatchNormalization(
        axis=(1 if channels_first else -1) if axis is None else axis,
        epsilon=eps if keras_eps is None else keras_eps,
        momentum=1 - momentum if keras_momentum is None else keras_momentum)
    layer.build((None, channels, None, None) if channels_first else (None, None, None, channels))
    layer.set_weights([np.asarray(state[key], np.float32) for key in order])
    return layer


def test_9_4_solution(capsys):
    passes(check.bn_from_pytorch, bn_from_pytorch, capsys)


def test_9_4_stub_is_not_done(capsys):
    assert check.bn_from_pytorch(stub) is None
    assert "Exercise 9.4 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("answer, message", [
    (lambda s, e, m, cf: bn_from_pytorch(s, e, m, cf, keras_eps=1e-3), "epsilon 0.001"),
    (lambda s, e, m, cf: bn_from_pytorch(s, e, m, cf, keras_momentum=m), "copied as is"),
    (lambda s, e, m, cf: bn_from_pytorch(s, e, m, cf, order=sorted(k for k in s
                                                                  if k != "num_batches_tracked")),
     "alphabetical order"),
    (lambda s, e, m, cf: bn_from_pytorch(s, e, m, cf, order=("bias", "weight", "running_mean",
                                                             "running_var")),
     "swapped gamma and beta"),
    (lambda s, e, m, cf: bn_from_pytorch(s, e, m, cf, order=("weight", "bias", "running_var",
                                                             "running_mean")),
     "swap the moving mean and the moving variance"),
    (lambda s, e, m, cf: bn_from_pytorch(s, e, m, False), "cannot take this case's"),
    (lambda s, e, m, cf: bn_from_pytorch(s, e, m, cf, order=tuple(s)), "raised ValueError"),
    (lambda s, e, m, cf: (s["weight"], s["bias"]), "not a keras.layers.BatchNormalization"),
    (lambda s, e, m, cf: bn_from_pytorch(s, e * 1.5, m, cf), "matches no mistake"),
])
def test_9_4_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.bn_from_pytorch(answer)


def test_9_4_hard_coded_defaults_are_caught():
    """PyTorch's defaults typed in pass case 1 only."""
    with pytest.raises(ExerciseMistake, match="epsilon 1e-05"):
        check.bn_from_pytorch(lambda s, e, m, cf: bn_from_pytorch(s, 1e-5, 0.1, cf))
