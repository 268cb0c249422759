"""Chapter 11's checkers: the solutions pass, stubs are "not done", every known mistake is named,
hard-coded values are located, and right answers written another way pass."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ch11 as check
from bnbook.checks._core import ExerciseMistake
from bnbook.lessons import why_bn_works as wb


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def passes(capsys, checker, fn, label):
    start = time.perf_counter()
    checker(fn)
    seconds = time.perf_counter() - start
    assert capsys.readouterr().out.startswith(f"✓ Exercise {label} passed")
    return seconds


def mean_loss(model, x, y, training=True, reduce=tf.reduce_mean):
    return reduce(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=y, logits=model(x, training=training)))


# ---- 11.1: ics_of_layer(model, x, y, layer_index, learning_rate) -> (distance, cosine) -------

def ics_of_layer(model, x, y, k, lr, how="right"):
    """The solution, and (through `how`) the mistakes learners make."""
    training = how != "inference"
    reduce = tf.reduce_sum if how == "sum" else tf.reduce_mean
    lr = 0.1 if how == "rate" else lr
    layer = model.layers[k]
    targets = [layer.kernel] + ([layer.bias] if how == "bias" and layer.bias is not None else [])
    moved_layers = {"and itself": model.layers[:k + 1], "all": model.layers,
                    "above": model.layers[k + 1:]}.get(how, model.layers[:k])
    lower = [v for m in moved_layers for v in m.trainable_variables]

    def grads():
        with tf.GradientTape() as tape:
            loss = mean_loss(model, x, y, training, reduce)
        g = tape.gradient(loss, targets + lower)
        return tf.concat([tf.reshape(t, [-1]) for t in g[:len(targets)]], 0), g[len(targets):]

    before, lower_grads = grads()
    saved = [v.numpy() for v in lower]
    for v, g in zip(lower, lower_grads):
        v.assign_sub(lr * g)
    after = before if how == "not recomputed" else grads()[0]
    if how != "not restored":
        for v, value in zip(lower, saved):
            v.assign(value)
    distance = float(tf.norm(before - after))
    cosine = float(tf.tensordot(before, after, 1) / (tf.norm(before) * tf.norm(after)))
    if how == "squared":
        distance = distance ** 2
    if how == "relative":
        distance = distance / float(tf.norm(before))
    if how == "one minus":
        cosine = 1 - cosine
    if how == "angle":
        cosine = float(np.arccos(cosine))
    if how == "swapped":
        return cosine, distance
    return distance, cosine


def test_11_1_solution_passes(capsys):
    seconds = passes(capsys, check.ics_of_layer, ics_of_layer, "11.1")
    assert seconds < 3      # under a second on an idle machine; room for a loaded one


def test_11_1_another_way_passes(capsys):
    """A Keras SGD optimizer for the step and set_weights to restore everything."""
    def with_optimizer(model, x, y, k, lr):
        saved = model.get_weights()
        lower = [v for layer in model.layers[:k] for v in layer.trainable_variables]
        kernel = model.layers[k].kernel
        with tf.GradientTape() as tape:
            loss = mean_loss(model, x, y)
        first = tape.gradient(loss, [kernel] + lower)
        keras.optimizers.SGD(lr).apply_gradients(zip(first[1:], lower))
        with tf.GradientTape() as tape:
            loss = mean_loss(model, x, y)
        second = tape.gradient(loss, kernel)
        model.set_weights(saved)
        a, b = first[0].numpy().ravel(), second.numpy().ravel()
        return np.linalg.norm(a - b), a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    passes(capsys, check.ics_of_layer, with_optimizer, "11.1")


def test_11_1_stub_is_not_done(capsys):
    check.ics_of_layer(stub)
    assert "Exercise 11.1 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("how, message", [
    ("and itself", "layer k had taken its own step"),
    ("all", "after every layer had taken its step"),
    ("above", "layers above layer k"),
    ("inference", "inference mode"),
    ("sum", "sum over the batch"),
    ("bias", "includes the bias"),
    ("squared", "distance is squared"),
    ("relative", "divided by the norm of G"),
    ("one minus", "1 - cosine"),
    ("angle", "the angle"),
    ("rate", "fixed learning rate"),
    ("not restored", "left the model's weights changed"),
])
def test_11_1_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.ics_of_layer(lambda *args: ics_of_layer(*args, how=how))


def test_11_1_hard_coded_layer_is_located():
    with pytest.raises(ExerciseMistake, match="case 2 of 3.*layer"):
        check.ics_of_layer(lambda model, x, y, k, lr: ics_of_layer(model, x, y, 6, lr))


def test_11_1_refuses_the_book():
    def with_book(model, x, y, k, lr):
        return wb.ics(model, x, y, k, lr)
    with pytest.raises(ExerciseMistake, match="book's own `.*ics`"):
        check.ics_of_layer(with_book)


# ---- 11.2: along_gradient(model, x, y, step_sizes) -> (variation, predictiveness) -----------

def along_gradient(model, x, y, step_sizes, how="right"):
    variables = model.trainable_variables
    training = how != "inference"
    reduce = tf.reduce_sum if how == "sum" else tf.reduce_mean

    def loss_and_grads():
        with tf.GradientTape() as tape:
            loss = mean_loss(model, x, y, training, reduce)
        return float(loss), tape.gradient(loss, variables)

    saved = [v.numpy() for v in variables]
    loss0, g = loss_and_grads()
    scale = 1.0
    if how == "unit":
        scale = 1 / float(tf.sqrt(sum(tf.reduce_sum(t ** 2) for t in g)))
    sign = 1.0 if how == "ascent" else -1.0
    losses, changes = [], []
    for eta in step_sizes:
        for v, value, grad in zip(variables, saved, g):
            v.assign(value + sign * eta * scale * grad)
        loss, moved = loss_and_grads()
        losses.append(loss)
        parts = [m if how == "new gradient" else a - m for a, m in zip(g, moved)]
        if how == "per variable":
            changes.append(sum(float(tf.norm(p)) for p in parts))
        else:
            changes.append(float(tf.sqrt(sum(tf.reduce_sum(p ** 2) for p in parts))))
    if how != "not restored":
        for v, value in zip(variables, saved):
            v.assign(value)
    if how == "start":
        losses.append(loss0)
    variation = max(losses) - loss0 if how == "from start" else max(losses) - min(losses)
    return variation, (np.mean(changes) if how == "mean" else max(changes))


def test_11_2_solution_passes(capsys):
    seconds = passes(capsys, check.along_gradient, along_gradient, "11.2")
    assert seconds < 3


def test_11_2_another_way_passes(capsys):
    """Step sizes in reverse order, NumPy norms, set_weights to restore."""
    def reversed_numpy(model, x, y, step_sizes):
        saved = model.get_weights()
        variables = model.trainable_variables
        start = [v.numpy() for v in variables]
        with tf.GradientTape() as tape:
            loss = mean_loss(model, x, y)
        g = [t.numpy() for t in tape.gradient(loss, variables)]
        losses, changes = [], []
        for eta in reversed(list(step_sizes)):
            for v, w, grad in zip(variables, start, g):
                v.assign(w - eta * grad)
            with tf.GradientTape() as tape:
                loss = mean_loss(model, x, y)
            moved = tape.gradient(loss, variables)
            losses.append(float(loss))
            changes.append(np.sqrt(sum(((a - m.numpy()) ** 2).sum() for a, m in zip(g, moved))))
        model.set_weights(saved)
        return np.ptp(losses), np.max(changes)
    passes(capsys, check.along_gradient, reversed_numpy, "11.2")


def test_11_2_stub_is_not_done(capsys):
    check.along_gradient(stub)
    assert "Exercise 11.2 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("how, message", [
    ("ascent", "stepped up the gradient"),
    ("start", "includes the loss at the starting point"),
    ("from start", "measured from the starting loss"),
    ("unit", "normalised gradient"),
    ("inference", "inference mode"),
    ("sum", "sum over the batch"),
    ("mean", "mean over the step sizes"),
    ("per variable", "adds up the norms"),
    ("new gradient", "norm of the new gradient"),
    ("not restored", "left the model's weights changed"),
])
def test_11_2_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.along_gradient(lambda *args: along_gradient(*args, how=how))


def test_11_2_hard_coded_steps_are_located():
    with pytest.raises(ExerciseMistake, match="case 2 of 3.*step_sizes"):
        check.along_gradient(lambda model, x, y, steps: along_gradient(model, x, y, [0.1, 0.3, 0.9]))


def test_11_2_refuses_the_book():
    def with_book(model, x, y, step_sizes):
        return wb.along_gradient(model, x, y, step_sizes)
    with pytest.raises(ExerciseMistake, match="book's own `.*along_gradient`"):
        check.along_gradient(with_book)


# ---- 11.3: variance_shift_ratio(h, kernel, rate) -> (units,) -----------------------------------

def variance_shift_ratio(h, kernel, rate, how="right"):
    h, kernel = np.asarray(h, np.float64), np.asarray(kernel, np.float64)
    if how == "rate":
        rate = 0.5
    p = 1 - rate if how == "keep" else rate
    factor = {"no rescale": p * (1 - p), "p": p}.get(how, p / (1 - p))
    z = h @ kernel
    inference = z.var(axis=0, ddof=1 if how == "unbiased" else 0)
    if how == "mean squared":
        noise = factor * (h.mean(axis=0) ** 2) @ (kernel ** 2)
    elif how == "squared after":
        noise = factor * (z ** 2).mean(axis=0)
    else:
        noise = factor * ((h ** 2) @ (kernel ** 2)).mean(axis=0)
    if how == "single":
        inference = h.var(axis=0) @ kernel ** 2
        noise = (h ** 2).mean(axis=0) * p / (1 - p) @ kernel ** 2
    ratio = inference / (inference + noise)
    if how == "invert":
        return 1 / ratio
    if how == "scalar":
        return float(ratio.mean())
    return ratio


def test_11_3_solution_passes(capsys):
    seconds = passes(capsys, check.variance_shift_ratio, variance_shift_ratio, "11.3")
    assert seconds < 1


def test_11_3_covariance_way_passes(capsys):
    """The training covariance of the dropped-out inputs, through the kernel, in TensorFlow."""
    def with_covariance(h, kernel, rate):
        h = tf.constant(h, tf.float64)
        w = tf.constant(kernel, tf.float64)
        centred = h - tf.reduce_mean(h, axis=0)
        cov = tf.transpose(centred) @ centred / h.shape[0]
        cov_train = cov + tf.linalg.diag(rate / (1 - rate) * tf.reduce_mean(h ** 2, axis=0))
        inference = tf.linalg.diag_part(tf.transpose(w) @ cov @ w)
        train = tf.linalg.diag_part(tf.transpose(w) @ cov_train @ w)
        return (inference / train).numpy()
    passes(capsys, check.variance_shift_ratio, with_covariance, "11.3")


def test_11_3_stub_is_not_done(capsys):
    check.variance_shift_ratio(stub)
    assert "Exercise 11.3 is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("how, message", [
    ("no rescale", "without the division"),
    ("p", "factor p instead of"),
    ("keep", "swapped the drop rate"),
    ("invert", "upside down"),
    ("unbiased", "unbiased variance"),
    ("mean squared", "squared mean"),
    ("single", "ignoring how the inputs"),
    ("scalar", "one ratio"),
    ("rate", "fixed dropout rate"),
])
def test_11_3_mistakes_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.variance_shift_ratio(lambda *args: variance_shift_ratio(*args, how=how))


@pytest.mark.parametrize("how, message", [("swapped", "distance and cosine are swapped"),
                                          ("not recomputed", "Your G' equals G")])
def test_11_1_swapped_and_stale_gradient_are_named(how, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.ics_of_layer(lambda *args: ics_of_layer(*args, how=how))


def test_11_3_squaring_after_the_kernel_is_named():
    with pytest.raises(ExerciseMistake, match=r"squares z = h @ kernel"):
        check.variance_shift_ratio(lambda *args: variance_shift_ratio(*args, how="squared after"))
