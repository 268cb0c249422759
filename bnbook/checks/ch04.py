"""Checkers for chapter 4: the Keras BatchNormalization layer.

Each checker builds a tiny model on small synthetic data, runs the learner's code once, and
recognises the usual mistakes by what they do: did the moving statistics change when they should
(or should not) have, did the weights take the expected step, does the answer depend on the batch?
"""

from __future__ import annotations

import numpy as np

from ._core import ExerciseMistake, as_array, call, checker


def _keras():
    import keras  # imported lazily: `from bnbook.checks import ch04` stays cheap

    return keras


def _pair(result, names=("new_mean", "new_variance")):
    """Validate a (mean, variance) pair of NumPy arrays."""
    __tracebackhide__ = True
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ExerciseMistake(
            f"Expected a pair ({names[0]}, {names[1]}), got {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "") + ".",
            f"end with `return {names[0]}, {names[1]}`.",
        )
    return tuple(as_array(value, name, want_tensor=False) for value, name in zip(result, names))


def _keras_update(moving_mean, moving_variance, batch, momentum):
    """What keras.layers.BatchNormalization itself stores after one training-mode call."""
    layer = _keras().layers.BatchNormalization(momentum=momentum)
    layer.build(batch.shape)
    layer.moving_mean.assign(moving_mean)
    layer.moving_variance.assign(moving_variance)
    layer(batch, training=True)
    return layer.moving_mean.numpy(), layer.moving_variance.numpy()


@checker("4.1")
def moving_average_update(fn):
    """Check ``fn(moving_mean, moving_variance, batch, momentum) -> (new_mean, new_variance)``."""
    __tracebackhide__ = True
    rng = np.random.default_rng(41)
    batch = rng.normal(3.0, 2.0, size=(6, 3)).astype(np.float32)
    old_mean = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    old_var = np.array([1.0, 2.0, 0.5], dtype=np.float32)
    mean, var_biased = batch.mean(axis=0), batch.var(axis=0)
    var_unbiased = batch.var(axis=0, ddof=1)

    for momentum in (0.9, 0.99):
        new_mean, new_var = _pair(call(fn, old_mean.copy(), old_var.copy(), batch.copy(), momentum))
        if new_mean.shape != old_mean.shape or new_var.shape != old_var.shape:
            raise ExerciseMistake(
                f"Wrong shapes: got {new_mean.shape} and {new_var.shape} for 3 features, "
                f"expected {old_mean.shape} each.",
                "one statistic per feature: reduce over the batch axis (axis=0) only.",
            )
        want_mean, want_var = _keras_update(old_mean, old_var, batch, momentum)

        def close(a, b):
            return np.allclose(a, b, rtol=1e-5, atol=1e-6)

        if close(new_mean, want_var) and close(new_var, want_mean):
            raise ExerciseMistake("The two results are swapped.",
                                  "return the mean first, then the variance.")
        if close(new_mean, momentum * mean + (1 - momentum) * old_mean):
            raise ExerciseMistake(
                "You weighted the batch statistic by `momentum` and the old value by "
                "`1 - momentum`: that is PyTorch's convention.",
                "in Keras, `momentum` is the weight of the OLD moving value (0.99 keeps 99% of "
                "it).",
            )
        if close(new_mean, mean) and close(new_var, var_biased):
            raise ExerciseMistake(
                "You returned the batch statistics themselves, not a moving average.",
                "blend them with the old moving values, weighted by momentum and 1 - momentum.",
            )
        other = 0.99 if momentum == 0.9 else 0.9
        if close(new_mean, other * old_mean + (1 - other) * mean) and not close(new_mean,
                                                                                want_mean):
            raise ExerciseMistake(
                f"Called with momentum={momentum}, your result is the update for "
                f"momentum={other}: the `momentum` argument is ignored.",
                "use the argument, not a hard-coded number.",
            )
        if not close(new_mean, want_mean):
            raise ExerciseMistake(
                f"new_mean is wrong (momentum={momentum}).",
                "new = momentum * old + (1 - momentum) * batch mean, with the batch mean taken "
                "per feature over axis 0.",
            )
        if close(new_var, old_var):
            raise ExerciseMistake("new_variance equals the old moving variance: it was not "
                                  "updated.", "apply the same rule to the variance.")
        if close(new_var, momentum * old_var + (1 - momentum) * var_unbiased):
            raise ExerciseMistake(
                "You used the unbiased batch variance (divided by n - 1).",
                "Keras stores the biased batch variance in its moving average: np.var with the "
                "default ddof=0.",
            )
        if close(new_var, momentum * old_var + (1 - momentum) * np.sqrt(var_biased)):
            raise ExerciseMistake("You averaged the standard deviation, not the variance.",
                                  "the layer keeps a moving VARIANCE: do not take a square root.")
        if not close(new_var, want_var):
            raise ExerciseMistake(
                f"new_variance is wrong (momentum={momentum}).",
                "new = momentum * old + (1 - momentum) * batch variance (biased, per feature).",
            )
    return "matches the moving statistics keras.layers.BatchNormalization stores " \
        "(momentum 0.9 and 0.99)"


# --- exercise 4.2: the train step ----------------------------------------------------------------

def _tiny_problem():
    """A tiny BN network and one batch of far-from-normalised synthetic data."""
    from .. import keras_demos as kd

    x, y = kd.far_clusters(n=32, seed=42)
    return kd, x, y


def _twin_models(kd, seed=4):
    """Two independent models with identical initial weights."""
    first = kd.dense_bn_model(seed=seed, momentum=0.9)
    second = kd.dense_bn_model(seed=seed, momentum=0.9)
    second.set_weights(first.get_weights())
    return first, second


def _reference_step(model, optimizer, loss_fn, x, y, training=True):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=training))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return float(loss)


def _trainable_arrays(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def _all_close(a, b, atol=1e-5):
    return len(a) == len(b) and all(np.allclose(u, v, atol=atol) for u, v in zip(a, b))


@checker("4.2")
def train_step(fn):
    """Check ``fn(model, optimizer, loss_fn, x, y) -> loss``: one SGD step in training mode."""
    __tracebackhide__ = True
    keras = _keras()
    kd, x, y = _tiny_problem()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    mine, reference = _twin_models(kd)
    start_weights = _trainable_arrays(mine)
    start_stats = kd.moving_stats(mine)
    loss = call(fn, mine, keras.optimizers.SGD(0.1), loss_fn, x, y, what="your train_step")
    want_loss = _reference_step(reference, keras.optimizers.SGD(0.1), loss_fn, x, y)

    stats_moved = not kd.same_arrays(start_stats, kd.moving_stats(mine))
    weights_moved = not kd.same_arrays(start_weights, _trainable_arrays(mine))
    if not stats_moved:
        raise ExerciseMistake(
            "`training` missing: the BN moving statistics did not change, so the model ran in "
            "inference mode during the train step.",
            "Keras layers run in inference mode unless told otherwise: pass training=True when "
            "you call the model inside the GradientTape.",
        )
    if not weights_moved:
        raise ExerciseMistake(
            "No trainable weight changed.",
            "compute the gradients with tape.gradient(loss, model.trainable_variables) and apply "
            "them with optimizer.apply_gradients(zip(grads, model.trainable_variables)).",
        )
    if not _all_close(kd.moving_stats(mine), kd.moving_stats(reference)):
        raise ExerciseMistake(
            "The moving statistics moved further than one training-mode call moves them: the "
            "model ran in training mode more than once in your step.",
            "call the model once per step, inside the tape, with training=True.",
        )
    # Same start, one step from an inference-mode pass, with the statistics before or after
    # one training-mode call (a learner may call the model twice, in either order).
    twin, twin_updated = _twin_models(kd)
    inference_loss = _reference_step(twin, keras.optimizers.SGD(0.1), loss_fn, x, y,
                                     training=False)
    twin_updated(x, training=True)
    _reference_step(twin_updated, keras.optimizers.SGD(0.1), loss_fn, x, y, training=False)
    if any(_all_close(_trainable_arrays(mine), _trainable_arrays(t))
           for t in (twin, twin_updated)):
        raise ExerciseMistake(
            "The gradients were computed from an inference-mode forward pass: the loss inside "
            "the tape came from a call without training=True (a second call?).",
            "compute the loss from the training-mode call, inside the tape.",
        )
    if not _all_close(_trainable_arrays(mine), _trainable_arrays(reference)):
        raise ExerciseMistake(
            "The weights did not take the expected step of the optimizer you were given.",
            "use the loss_fn and optimizer passed in; take the gradient of the loss with respect "
            "to model.trainable_variables.",
        )
    value = as_array(loss, "the returned loss", dtype=None)
    if value.size != 1:
        raise ExerciseMistake(f"The returned loss has shape {value.shape}; expected a scalar.",
                              "return loss_fn(y, logits), the mean over the batch.")
    if np.isclose(float(value), inference_loss, rtol=1e-5) and not np.isclose(
            float(value), want_loss, rtol=1e-5):
        raise ExerciseMistake("The returned loss is the inference-mode loss.",
                              "return the loss computed inside the tape.")
    if not np.isclose(float(value), want_loss, rtol=1e-4):
        raise ExerciseMistake(f"The returned loss {float(value):.4f} is not this step's loss.",
                              "return the loss computed inside the tape, before the update.")
    return "training mode inside the tape, one optimizer step, the same weights as a reference step"


# --- exercise 4.3: evaluation in inference mode --------------------------------------------------

def _trained_model_and_sorted_test():
    """A tiny BN network trained for a few steps, and a test set sorted by label."""
    keras = _keras()
    kd, _, _ = _tiny_problem()
    x, y = kd.far_clusters(n=352, seed=43)
    x_train, y_train, x_test, y_test = x[:192], y[:192], x[192:], y[192:]
    model = kd.dense_bn_model(seed=5, momentum=0.5)   # low momentum: statistics settle fast
    optimizer = keras.optimizers.SGD(0.2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for xb, yb in kd.batches(x_train, y_train, 32):       # one short epoch: 6 steps
        _reference_step(model, optimizer, loss_fn, xb, yb)
    order = np.argsort(y_test, kind="stable")
    return kd, model, x_test[order], y_test[order]


@checker("4.3")
def evaluate_accuracy(fn):
    """Check ``fn(model, x, y, batch_size) -> accuracy`` runs BN in inference mode."""
    __tracebackhide__ = True
    kd, model, x, y = _trained_model_and_sorted_test()
    want = kd.inference_accuracy(model, x, y)
    start_stats = kd.moving_stats(model)
    result = call(fn, model, x, y, 48, what="your evaluate_accuracy")  # last batch: 16
    if not kd.same_arrays(start_stats, kd.moving_stats(model)):
        raise ExerciseMistake(
            "`training` always on: evaluating changed the BN moving statistics, so the model "
            "ran in training mode (batch statistics) at evaluation.",
            "at evaluation call the model without `training=True` (or with training=False); "
            "predictions must not depend on the other samples in the batch.",
        )
    value = as_array(result, "your accuracy", dtype=None)
    if value.size != 1:
        raise ExerciseMistake(f"Your accuracy has shape {value.shape}; expected one number.",
                              "average the correct predictions over ALL samples.")
    value = float(value)
    if np.isclose(value, 100 * want, atol=1e-6) and want > 0:
        raise ExerciseMistake("Your accuracy is a percentage.",
                              "return a fraction between 0 and 1.")
    if not np.isclose(value, want, atol=1e-6):
        raise ExerciseMistake(
            f"Your accuracy {value:.4f} differs from the inference-mode accuracy on the same "
            "data.",
            "compare np.argmax(logits, axis=1) with the labels over every sample, including "
            "the last, smaller batch, and divide by the number of samples.",
        )
    return f"inference mode; accuracy {value:.3f} on a test set sorted by label, statistics " \
        "untouched"


# --- exercise 4.4: fine-tuning with frozen BN ----------------------------------------------------

def _pretrained_base_and_model():
    """A frozen 'pretrained' base (non-trivial moving statistics) with a new head on top."""
    keras = _keras()
    from .. import keras_demos as kd

    keras.utils.set_random_seed(6)
    base = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, use_bias=False), keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(8, use_bias=False), keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
    ])
    rng = np.random.default_rng(44)
    for layer in kd.bn_layers(base):     # pretend these were learned on the old data
        layer.moving_mean.assign(rng.normal(size=8).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=8).astype(np.float32))
    base.trainable = False                # the state after training the new head (step 1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(base(inputs, training=False)))
    return kd, base, model


@checker("4.4")
def prepare_for_finetuning(fn):
    """Check ``fn(base)``: the base's layers trainable again, except its BN layers."""
    __tracebackhide__ = True
    keras = _keras()
    kd, base, model = _pretrained_base_and_model()
    call(fn, base, what="your prepare_for_finetuning")
    dense_layers = [layer for layer in base.layers if isinstance(layer, keras.layers.Dense)]
    kernels = [layer.kernel.numpy().copy() for layer in dense_layers]
    stats = kd.moving_stats(base)
    bn_weights = [w.numpy().copy() for layer in kd.bn_layers(base)
                  for w in (layer.gamma, layer.beta)]

    x, y = kd.far_clusters(n=64, seed=45)
    kd.compile_classifier(model, keras.optimizers.SGD(0.1), run_eagerly=True)
    model.fit(x / 10.0, y, batch_size=32, epochs=1, verbose=0)

    frozen = [i for i, (layer, k) in enumerate(zip(dense_layers, kernels))
              if np.array_equal(layer.kernel.numpy(), k)]
    if len(frozen) == len(dense_layers):
        raise ExerciseMistake(
            "The base is still frozen: no Dense kernel of the base changed during fit.",
            "make the base trainable again first (base.trainable = True), then refreeze only "
            "the BN layers.",
        )
    if frozen:
        raise ExerciseMistake(
            f"{len(frozen)} of the base's {len(dense_layers)} Dense layers stayed frozen.",
            "unfreeze every layer of the base except the BN layers.",
        )
    if not kd.same_arrays(stats, kd.moving_stats(base)):
        raise ExerciseMistake(
            "`trainable` left on for the BN layers: their moving statistics changed during "
            "fit, so the pretrained statistics were overwritten.",
            "set trainable = False on each BatchNormalization layer AFTER unfreezing the base "
            "(base.trainable = True turns them all back on). In Keras 3, building the model "
            "with base(inputs, training=False) does not protect them: fit overrides it.",
        )
    if not kd.same_arrays(bn_weights, [w.numpy() for layer in kd.bn_layers(base)
                                       for w in (layer.gamma, layer.beta)]):
        raise ExerciseMistake("The BN layers' gamma or beta changed.",
                              "keep the whole BN layer frozen: trainable = False.")
    return "the base trains, its BN layers keep their pretrained statistics (inference mode " \
        "inside fit)"
