"""Chapter 4 checkers: each accepts the solution and right answers written another way, says "not
done yet" for the stub, and rejects plausible wrong answers (hard-coded momentum, optimizer, layer
positions and flat loops included) with the message meant for them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import bnbook
from bnbook.checks import ExerciseMistake
from bnbook.checks import ch04 as check

LOCATED = "matches no mistake this check knows"


def stub(*args):
    raise NotImplementedError("your code here")


# ---- 4.1: moving_statistics(moving_mean, moving_variance, batches, momentum) -------------------

def moving(moving_mean, moving_variance, batches, momentum):
    for batch in batches:
        axes = tuple(range(batch.ndim - 1))
        moving_mean = momentum * moving_mean + (1 - momentum) * batch.mean(axis=axes)
        moving_variance = momentum * moving_variance + (1 - momentum) * batch.var(axis=axes)
    return moving_mean, moving_variance


def moving_keras(moving_mean, moving_variance, batches, momentum):
    layer = keras.layers.BatchNormalization(momentum=momentum)
    layer.build(batches[0].shape)
    layer.moving_mean.assign(moving_mean)
    layer.moving_variance.assign(moving_variance)
    for batch in batches:
        layer(batch, training=True)
    return layer.moving_mean.numpy(), layer.moving_variance.numpy()


def moving_flat(moving_mean, moving_variance, batches, momentum):
    mean, var = moving_mean.copy(), moving_variance.copy()
    for batch in batches:
        flat = batch.reshape(-1, batch.shape[-1])
        mean -= (1 - momentum) * (mean - flat.mean(axis=0))
        var -= (1 - momentum) * (var - flat.var(axis=0))
    return mean, var


def moving_with(weight_new=False, ddof=0, axis0=False, momentum_fixed=None, last_only=False,
                pooled=False, form="right"):
    def fn(moving_mean, moving_variance, batches, momentum):
        m = momentum if momentum_fixed is None else momentum_fixed
        keep = 1 - m if weight_new else m
        if pooled:
            batches = [np.concatenate([b.reshape(-1, b.shape[-1]) for b in batches])]
        if last_only:
            batches = batches[-1:]
        mean, var = moving_mean, moving_variance
        for batch in batches:
            axes = (0,) if axis0 else tuple(range(batch.ndim - 1))
            mean = keep * mean + (1 - keep) * batch.mean(axis=axes)
            if form != "no_var":
                var = keep * var + (1 - keep) * batch.var(axis=axes, ddof=ddof)
        return {"right": (mean, var), "no_var": (mean, var), "swapped": (var, mean),
                "float64": (mean.astype(np.float64), var), "tensor": (tf.constant(mean), var),
                "one": mean, "var_from_std": (mean, np.sqrt(var))}[form]
    return fn


def moving_first_batch_only(moving_mean, moving_variance, batches, momentum):
    return moving(moving_mean, moving_variance, batches[:1], momentum)


def moving_new_mean_variance(moving_mean, moving_variance, batches, momentum):
    for batch in batches:  # variance around the new moving mean instead of the batch mean
        axes = tuple(range(batch.ndim - 1))
        moving_mean = momentum * moving_mean + (1 - momentum) * batch.mean(axis=axes)
        moving_variance = momentum * moving_variance + (1 - momentum) * \
            ((batch - moving_mean) ** 2).mean(axis=axes)
    return moving_mean, moving_variance


RIGHT_4_1 = [moving, moving_keras, moving_flat]
WRONG_4_1 = [
    (moving_with(weight_new=True), "momentum weights the wrong value"),
    (moving_with(ddof=1), "unbiased batch variance"),
    (moving_with(axis0=True), "statistics over axis 0 only"),
    (moving_with(momentum_fixed=0.99), "Keras' default momentum 0.99"),
    (moving_with(momentum_fixed=0.9), "momentum 0.9 \\(the first case's\\)"),
    (moving_with(momentum_fixed=0.8), r"In case 1 of 3 .*" + LOCATED),
    (moving_with(last_only=True), "Only the last batch counted"),
    (moving_with(pooled=True), "pooled all batches into one"),
    (moving_with(form="no_var"), "the moving variance did not move"),
    (moving_with(form="swapped"), LOCATED),
    (moving_with(form="float64"), "dtype float64; expected float32"),
    (moving_with(form="tensor"), "asks for a NumPy array"),
    (moving_with(form="one"), "expected 2 results"),
    (moving_with(form="var_from_std"), r"your moving variance is wrong at .*" + LOCATED),
    (moving_first_batch_only, r"In case 1 of 3 .*" + LOCATED),
    (moving_new_mean_variance, LOCATED),
]


# ---- 4.2: train_step(model, optimizer, loss_fn, x, y) -> (loss, accuracy) ----------------------

def step(model, optimizer, loss_fn, x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = loss_fn(y, logits)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    correct = tf.equal(tf.argmax(logits, axis=1), tf.cast(y, tf.int64))
    return loss, tf.reduce_mean(tf.cast(correct, tf.float32))


def step_keras_metric(model, optimizer, loss_fn, x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = loss_fn(y, logits)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))
    accuracy = keras.metrics.sparse_categorical_accuracy(y, logits)
    return loss, tf.reduce_mean(accuracy)


def step_minimize_style(model, optimizer, loss_fn, x, y):
    variables = model.trainable_weights
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = loss_fn(y, logits)
    optimizer.apply(tape.gradient(loss, variables), variables)
    hits = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == tf.cast(y, tf.int32), tf.float32)
    return loss, tf.reduce_sum(hits) / tf.cast(tf.shape(x)[0], tf.float32)


def step_labels_dtype(model, optimizer, loss_fn, x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    predicted = tf.argmax(logits, axis=1, output_type=y.dtype)     # int32 or int64, as y
    return loss, tf.reduce_mean(tf.cast(predicted == y, tf.float32))


def step_with(training=True, twice=False, inference_grads=False, own_optimizer=False,
              apply=1, accuracy="right", returns="both"):
    def fn(model, optimizer, loss_fn, x, y):
        before = model(x, training=False) if accuracy == "inference_before" else None
        if inference_grads:
            model(x, training=True)
        opt = keras.optimizers.SGD(0.1) if own_optimizer else optimizer
        with tf.GradientTape(persistent=apply > 1) as tape:
            logits = model(x, training=training and not inference_grads)
            loss = loss_fn(y, logits)
        if twice:
            model(x, training=True)
        for _ in range(apply):
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                    model.trainable_variables))
        hits = tf.cast(tf.equal(tf.argmax(logits, axis=1), tf.cast(y, tf.int64)), tf.float32)
        acc = {"right": lambda: tf.reduce_mean(hits),
               "percent": lambda: 100 * tf.reduce_mean(hits),
               "count": lambda: tf.reduce_sum(hits),
               "numpy": lambda: np.mean(np.argmax(logits, axis=1) == y),
               "dotnumpy": lambda: tf.reduce_mean(hits).numpy(),
               "inference": lambda: tf.reduce_mean(tf.cast(tf.equal(
                   tf.argmax(model(x, training=False), axis=1), tf.cast(y, tf.int64)), tf.float32)),
               "inference_before": lambda: tf.reduce_mean(tf.cast(tf.equal(
                   tf.argmax(before, axis=1), tf.cast(y, tf.int64)), tf.float32)),
               "nocast": lambda: tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, axis=1), y),
                                                        tf.float32)),
               "nocast_op": lambda: tf.reduce_mean(tf.cast(tf.argmax(logits, axis=1) == y,
                                                           tf.float32)),
               "int32_argmax": lambda: tf.reduce_mean(tf.cast(tf.equal(
                   tf.argmax(logits, axis=1, output_type=tf.int32), tf.cast(y, tf.int64)),
                   tf.float32)),
               "int": lambda: tf.reduce_mean(tf.cast(hits, tf.int32)),
               "axis0": lambda: tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, axis=0),
                                                                 tf.cast(y[:1], tf.int64)),
                                                        tf.float32)),
               }[accuracy]()
        return {"both": (loss, acc), "loss": loss, "swapped": (acc, loss)}[returns]
    return fn


RIGHT_4_2 = [step, step_keras_metric, step_minimize_style, step_labels_dtype]
INT32 = r"In case 2 of 3 .*labels=int32.*your train_step fails on int32 labels"
WRONG_4_2 = [
    (step_with(training=False), "`training` missing"),
    (step_with(twice=True), "moving statistics moved twice"),
    (step_with(inference_grads=True), "gradients came from an inference-mode forward pass"),
    (step_with(own_optimizer=True), "took a step of SGD\\(0.1\\), not of the optimizer"),
    (step_with(apply=0), "No trainable weight changed"),
    (step_with(apply=2), r"In case 1 of 3 .*your trainable weights \(item 1 of \d+\) is wrong .*" + LOCATED),
    (step_with(accuracy="percent"), "accuracy is a percentage"),
    (step_with(accuracy="count"), "accuracy is a count"),
    (step_with(accuracy="numpy"), "In case 3 of 3 .*NumPy function on a tensor inside tf.function"),
    (step_with(accuracy="dotnumpy"), "calls .numpy\\(\\) inside tf.function"),
    (step_with(accuracy="inference"), "accuracy comes from an inference-mode call after the step"),
    (step_with(accuracy="inference_before"),
     "accuracy comes from an inference-mode call before the step"),
    (step_with(accuracy="nocast"), INT32),
    (step_with(accuracy="nocast_op"), INT32),
    (step_with(accuracy="int32_argmax"), r"In case 1 of 3 .*raised InvalidArgumentError"),
    (step_with(accuracy="int"), "dtype int32; expected floating point"),
    (step_with(accuracy="axis0"), LOCATED),
    (step_with(returns="loss"), r"expected 2 results: \(loss, accuracy\)"),
    (step_with(returns="swapped"), LOCATED),
]


# ---- 4.3: evaluate(model, x, y, batch_size) -> (accuracy, loss) --------------------------------

def evaluate(model, x, y, batch_size):
    correct, total = 0, 0.0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size], training=False)
        labels = y[start:start + batch_size]
        correct += int(np.sum(np.argmax(logits, axis=1) == labels))
        total += float(tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)))
    return correct / len(x), total / len(x)


def evaluate_weighted(model, x, y, batch_size):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    accs, losses, sizes = [], [], []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model.predict_on_batch(xb)
        accs.append(np.mean(np.argmax(logits, axis=1) == yb))
        losses.append(float(loss_fn(yb, logits)))
        sizes.append(len(xb))
    return float(np.average(accs, weights=sizes)), float(np.average(losses, weights=sizes))


def evaluate_keras(model, x, y, batch_size):
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    loss, accuracy = model.evaluate(x, y, batch_size=batch_size, verbose=0)
    return accuracy, loss


def evaluate_with(training=False, freeze=False, mean_of_means=False, drop_last=False,
                  accuracy="right", loss="right", returns="both"):
    def fn(model, x, y, batch_size):
        if freeze:
            model.trainable = False
        correct, losses, sizes = 0, [], []
        stop = len(x) - len(x) % batch_size if drop_last else len(x)
        for start in range(0, stop, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = model(xb, training=training)
            correct += int(np.sum(np.argmax(logits, axis=1) == yb))
            losses.append(float(tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))))
            sizes.append(len(yb))
        n = stop
        acc = {"right": correct / n, "percent": 100 * correct / n, "count": correct}[accuracy]
        mean_loss = np.mean(losses) if mean_of_means else np.dot(losses, sizes) / n
        mean_loss = {"right": mean_loss, "sum": mean_loss * n}[loss]
        return {"both": (acc, float(mean_loss)), "acc": acc}[returns]
    return fn


RIGHT_4_3 = [evaluate, evaluate_weighted, evaluate_keras]
WRONG_4_3 = [
    (evaluate_with(training=True), "`training` on: evaluating changed the BN moving statistics"),
    (evaluate_with(freeze=True), "Evaluating changed `trainable`"),
    (evaluate_with(mean_of_means=True), "plain mean of the batches' mean losses"),
    (evaluate_with(drop_last=True), "skipped the last, smaller batch"),
    (evaluate_with(accuracy="percent"), "accuracy is a percentage"),
    (evaluate_with(accuracy="count"), "accuracy is a count"),
    (evaluate_with(loss="sum"), "sum over samples, not the mean"),
    (evaluate_with(returns="acc"), r"expected 2 results: \(accuracy, loss\)"),
    (lambda model, x, y, batch_size: tuple(v * len(x) / 160 for v in evaluate(model, x, y, 48)),
     r"In case 2 of 3 .*" + LOCATED),  # divides by case 1's 160 samples
]


# ---- 4.4: prepare_for_finetuning(base) ---------------------------------------------------------

def unfreeze(base):
    base.trainable = True

    def freeze_bn(model):
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
            elif hasattr(layer, "layers"):
                freeze_bn(layer)

    freeze_bn(base)


def unfreeze_flatten(base):
    base.trainable = True
    for layer in base._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def unfreeze_with_helper(base):
    base.trainable = True
    for layer in bnbook.bn_layers(base):
        layer.trainable = False


def unfreeze_with(order="right", flat=False, inverted=False, only_trainable=False,
                  freeze_blocks=False, positions=None):
    def fn(base):
        def bns(model):
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    yield layer
                elif hasattr(layer, "layers") and not flat:
                    yield from bns(layer)

        if order == "bn_first":
            for layer in bns(base):
                layer.trainable = False
            base.trainable = True
            return
        if order == "never":
            return
        if order == "no_bn":
            base.trainable = True
            return
        base.trainable = True
        if inverted:
            for layer in base._flatten_layers(include_self=False):
                layer.trainable = isinstance(layer, keras.layers.BatchNormalization)
            return
        if positions is not None:  # the layer positions of the first base
            for i in positions:
                if i < len(base.layers):
                    base.layers[i].trainable = False
            return
        for layer in bns(base):
            layer.trainable = False
        if freeze_blocks:
            for layer in base.layers:
                if hasattr(layer, "layers"):
                    layer.trainable = False
    return fn


RIGHT_4_4 = [unfreeze, unfreeze_flatten, unfreeze_with_helper]
WRONG_4_4 = [
    (unfreeze_with(order="never"), "The base is still frozen"),
    (unfreeze_with(order="bn_first"), "`trainable` left on for the BN layers"),
    (unfreeze_with(order="no_bn"), "`trainable` left on for the BN layers"),
    (unfreeze_with(inverted=True), "Inverted: your BN layers are trainable"),
    (unfreeze_with(flat=True), r"In case 2 of 3.*|A BN layer inside a nested model stayed "
                               r"trainable: your loop looks only at base.layers"),
    (unfreeze_with(flat=True, freeze_blocks=True), "You froze the whole nested model"),
    (unfreeze_with(positions=(1, 4)), r"In case 2 of 3 .*" + LOCATED),
]


# ---- the tests --------------------------------------------------------------------------------

CHECKS = {"4.1": (check.moving_statistics, RIGHT_4_1, WRONG_4_1),
          "4.2": (check.train_step, RIGHT_4_2, WRONG_4_2),
          "4.3": (check.evaluate, RIGHT_4_3, WRONG_4_3),
          "4.4": (check.prepare_for_finetuning, RIGHT_4_4, WRONG_4_4)}
RIGHT = [(label, fn) for label, (_, right, _) in CHECKS.items() for fn in right]
WRONG = [(label, fn, message) for label, (_, _, wrong) in CHECKS.items() for fn, message in wrong]


@pytest.mark.parametrize("label", CHECKS)
def test_stub_is_not_done(label, capsys):
    assert CHECKS[label][0](stub) is None
    assert f"Exercise {label} is not done yet" in capsys.readouterr().out


@pytest.mark.parametrize("label, fn", RIGHT, ids=[f"{lab}-{fn.__name__}" for lab, fn in RIGHT])
def test_right_answers_pass(label, fn, capsys):
    CHECKS[label][0](fn)
    assert capsys.readouterr().out.startswith(f"✓ Exercise {label} passed")


@pytest.mark.parametrize("label, fn, message", WRONG,
                         ids=[f"{lab}-{i}" for i, (lab, _, _) in enumerate(WRONG)])
def test_wrong_answers_are_rejected_with_their_message(label, fn, message):
    with pytest.raises(ExerciseMistake, match=message) as info:
        CHECKS[label][0](fn)
    text = str(info.value)
    assert text.startswith(f"Exercise {label}: ")
    assert "function_node" not in text and "Traceback" not in text


def test_4_2_inference_accuracy_names_before_or_after_only_when_it_can_tell():
    def named(before, after, got):
        for wrong in check._inference_accuracy_wrongs(lambda: before, lambda: after):
            value = wrong.value()
            if value is not None and value["accuracy"] == got:
                return wrong.mistake
        return None
    assert "after the step" in named(0.25, 0.5, 0.5)
    assert "before the step" in named(0.25, 0.5, 0.25)
    assert "before or after the step" in named(0.5, 0.5, 0.5)
    assert named(0.25, 0.5, 0.75) is None


def _evaluate_variant(model, x, y, batch_size, means_of_batches=False, swap=False, floor=False):
    correct, losses, sizes = [], [], []
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size], training=False)
        labels = y[start:start + batch_size]
        correct.append(int(np.sum(np.argmax(logits, 1) == labels)))
        losses.append(float(tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))))
        sizes.append(len(labels))
    if means_of_batches:
        accuracy = float(np.mean(np.divide(correct, sizes)))
        loss = float(np.mean(np.divide(losses, sizes)))
    else:
        accuracy = sum(correct) // len(x) if floor else sum(correct) / len(x)
        loss = sum(losses) / len(x)
    return (loss, accuracy) if swap else (accuracy, loss)


@pytest.mark.parametrize("kwargs, message", [
    (dict(means_of_batches=True), "plain means of the batches' means"),
    (dict(swap=True), "accuracy and loss are swapped"),
    (dict(floor=True), r"integer division \(//\)"),
])
def test_4_3_more_mistakes_are_named(kwargs, message):
    with pytest.raises(ExerciseMistake, match=message):
        check.evaluate(lambda *args: _evaluate_variant(*args, **kwargs))


def test_4_3_the_variant_without_mistakes_passes(capsys):
    check.evaluate(_evaluate_variant)
    assert capsys.readouterr().out.startswith("✓ Exercise 4.3 passed")
