"""Chapter 4 checkers: each accepts the solution, says "not done yet" for a stub, and rejects every
known-wrong answer with the message meant for it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnbook.checks import ExerciseMistake
from bnbook.checks import ch04 as check


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def passes(checker, answer, capsys):
    checker(answer)
    out = capsys.readouterr().out
    assert out.startswith(f"✓ Exercise {checker.label} passed"), out


def test_stubs_are_not_done(capsys):
    for checker in (check.moving_average_update, check.train_step, check.evaluate_accuracy,
                    check.prepare_for_finetuning):
        assert checker(stub) is None
        assert f"Exercise {checker.label} is not done yet" in capsys.readouterr().out


# --- 4.1 ------------------------------------------------------------------------------------------

def update(mean, var, batch, momentum):
    return (momentum * mean + (1 - momentum) * batch.mean(axis=0),
            momentum * var + (1 - momentum) * batch.var(axis=0))


def test_4_1_solution(capsys):
    passes(check.moving_average_update, update, capsys)


@pytest.mark.parametrize("answer, message", [
    (lambda m, v, b, k: (k * b.mean(0) + (1 - k) * m, k * b.var(0) + (1 - k) * v),
     "PyTorch's convention"),
    (lambda m, v, b, k: (k * m + (1 - k) * b.mean(0), k * v + (1 - k) * b.var(0, ddof=1)),
     "unbiased batch variance"),
    (lambda m, v, b, k: (k * m + (1 - k) * b.mean(0), k * v + (1 - k) * b.std(0)),
     "standard deviation"),
    (lambda m, v, b, k: (k * m + (1 - k) * b.mean(0), v), "was not updated"),
    (lambda m, v, b, k: (b.mean(0), b.var(0)), "batch statistics themselves"),
    (lambda m, v, b, k: update(m, v, b, 0.99), "argument is ignored"),
    (lambda m, v, b, k: update(m, v, b, k)[::-1], "swapped"),
    (lambda m, v, b, k: (k * m + (1 - k) * b.mean(0)[0], k * v + (1 - k) * b.var(0)),
     "new_mean is wrong"),
    (lambda m, v, b, k: update(m, v, b[None], k), "Wrong shapes"),
    (lambda m, v, b, k: update(m, v, b, k)[0], "Expected a pair"),
    (lambda m, v, b, k: [list(a) for a in update(m, v, b, k)], "Python list"),
    (lambda m, v, b, k: tuple(tf.constant(a) for a in update(m, v, b, k)), "NumPy array"),
    (lambda m, v, b, k: tuple(a.astype(np.float64) for a in update(m, v, b, k)), "float64"),
    (lambda m, v, b, k: (m * np.nan, v), "NaN"),
])
def test_4_1_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.moving_average_update(answer)


# --- 4.2 ------------------------------------------------------------------------------------------

def make_step(training=True, apply=True, calls_in_training=1, second_inference_call=False,
              returns="loss", scale_grads=1.0):
    def step(model, optimizer, loss_fn, x, y):
        for _ in range(calls_in_training - 1):
            model(x, training=True)
        if second_inference_call:
            model(x, training=True)
        with tf.GradientTape() as tape:
            logits = model(x, training=False if second_inference_call else training)
            loss = loss_fn(y, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        if apply:
            optimizer.apply_gradients(zip([scale_grads * g for g in grads],
                                          model.trainable_variables))
        if returns == "loss":
            return loss
        if returns == "float":
            return float(loss)
        if returns == "per-sample":
            return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        if returns == "none":
            return None
        return 2 * loss
    return step


def test_4_2_solution(capsys):
    passes(check.train_step, make_step(), capsys)
    passes(check.train_step, tf.function(make_step()), capsys)
    passes(check.train_step, make_step(returns="float"), capsys)


@pytest.mark.parametrize("answer, message", [
    (make_step(training=None), "`training` missing"),
    (make_step(training=False), "`training` missing"),
    (make_step(apply=False), "No trainable weight changed"),
    (make_step(calls_in_training=2), "more than once"),
    (make_step(second_inference_call=True), "inference-mode forward pass"),
    (make_step(scale_grads=0.5), "expected step"),
    (make_step(returns="per-sample"), "expected a scalar"),
    (make_step(returns="none"), "return"),
    (make_step(returns="double"), "not this step's loss"),
])
def test_4_2_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.train_step(answer)


# --- 4.3 ------------------------------------------------------------------------------------------

def make_evaluate(training=False, percent=False, skip_last=False, use_predict=False):
    def evaluate(model, x, y, batch_size=32):
        correct, seen = 0, 0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            if skip_last and len(xb) < batch_size:
                break
            if use_predict:
                logits = model.predict(xb, verbose=0)
            else:
                logits = model(xb, training=training) if training is not None else model(xb)
            correct += int(np.sum(np.argmax(logits, axis=1) == yb))
            seen += len(xb)
        return (100.0 if percent else 1.0) * correct / seen
    return evaluate


def test_4_3_solution(capsys):
    passes(check.evaluate_accuracy, make_evaluate(), capsys)
    passes(check.evaluate_accuracy, make_evaluate(training=None), capsys)
    passes(check.evaluate_accuracy, make_evaluate(use_predict=True), capsys)


@pytest.mark.parametrize("answer, message", [
    (make_evaluate(training=True), "`training` always on"),
    (make_evaluate(percent=True), "percentage"),
    (make_evaluate(skip_last=True), "differs from the inference-mode accuracy"),
    (lambda model, x, y, batch_size: [0.5], "Python list"),
    (lambda model, x, y, batch_size: np.ones(3), "one number"),
    (lambda model, x, y, batch_size: np.int64(1), "dtype int64"),
    (lambda model, x, y, batch_size: float("nan"), "NaN"),
])
def test_4_3_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.evaluate_accuracy(answer)


# --- 4.4 ------------------------------------------------------------------------------------------

def is_bn(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def prepare(base):
    base.trainable = True
    for layer in base.layers:
        if is_bn(layer):
            layer.trainable = False


def prepare_wrong_order(base):
    for layer in base.layers:
        if is_bn(layer):
            layer.trainable = False
    base.trainable = True


def unfreeze_all(base):
    base.trainable = True


def do_nothing(base):
    return base


def unfreeze_only_bn(base):
    for layer in base.layers:
        layer.trainable = is_bn(layer)


def unfreeze_last_dense_only(base):
    dense = [layer for layer in base.layers if isinstance(layer, keras.layers.Dense)]
    base.trainable = True
    for layer in base.layers:
        layer.trainable = layer is dense[-1]


def test_4_4_solution(capsys):
    passes(check.prepare_for_finetuning, prepare, capsys)


@pytest.mark.parametrize("answer, message", [
    (unfreeze_all, "`trainable` left on for the BN layers"),
    (prepare_wrong_order, "`trainable` left on for the BN layers"),
    (do_nothing, "still frozen"),
    (unfreeze_only_bn, "still frozen"),
    (unfreeze_last_dense_only, "1 of the base's 2 Dense layers stayed frozen"),
    (lambda base: base.layers[99], "raised IndexError"),
    (np.zeros(3), "Expected a function"),
])
def test_4_4_mistakes(answer, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.prepare_for_finetuning(answer)
