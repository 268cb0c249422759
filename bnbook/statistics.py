"""BN statistics of any Keras model: find its BN layers, read, recompute and merge their moments.

Part of the practitioner API (``import bnbook`` exposes every name here):

* :func:`bn_layers` -- every ``BatchNormalization`` layer of a model, nested models included;
* :func:`moving_stats` -- copies of their moving means and variances, in order;
* :func:`recalibrate_bn` -- replace every BN layer's moving statistics by the exact statistics
  of its inputs over a data set, the whole model in inference mode (Dropout off);
* :func:`bn_input_statistics` -- the same statistics, without changing the model;
* :func:`merge_moments`, :func:`merge_replica_moments` -- combine (count, mean, M2) exactly
  (Chan, Golub & LeVeque), as a data-parallel BN or a streaming pass must;
* :func:`moments_from_sums` -- the textbook E[x^2] - E[x]^2, for comparison.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

__all__ = ["bn_layers", "moving_stats", "recalibrate_bn", "bn_input_statistics",
           "merge_moments", "merge_replica_moments", "moments_from_sums"]

BatchNorm = keras.layers.BatchNormalization


# --- finding BN layers --------------------------------------------------------------------------

def _sublayers(layer):
    """The layers directly inside ``layer``: a model's ``layers``, or the layers a custom layer
    holds as attributes (in the order it created them)."""
    if hasattr(layer, "layers"):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))


def bn_layers(model):
    """Every BatchNormalization layer inside a model, in order: nested models included, and the
    BN layers a custom layer holds (in the order it created them). A layer shared by several
    parts of the model is listed once."""
    found, seen = [], set()

    def visit(layer):
        for sub in _sublayers(layer):
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            if isinstance(sub, BatchNorm):
                found.append(sub)
            else:
                visit(sub)
    visit(model)
    return found


def moving_stats(model):
    """Copies (NumPy) of every BN layer's moving mean and moving variance, in order."""
    return [v.numpy().copy() for layer in bn_layers(model)
            for v in (layer.moving_mean, layer.moving_variance)]


# --- recalibration ---------------------------------------------------------------------------

def _reduction_axes(layer, ndim: int) -> list[int]:
    """The axes a BN layer takes its statistics over: every axis but its feature axis."""
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    keep = {axis % ndim for axis in axes}
    return [axis for axis in range(ndim) if axis not in keep]


class _InputMoments:
    """Exact float64 mean and biased variance of everything a BN layer receives, per feature,
    pooled over calls: each call's count, mean and sum of squared deviations, combined exactly
    (Chan, Golub & LeVeque's pairwise update), so that no E[x^2] - E[x]^2 cancellation occurs.
    A mask (one dimension less than the inputs, as Keras' BN takes it) weights the values."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0.0, 0.0, 0.0

    def add(self, layer, inputs, mask=None):
        x = tf.cast(inputs, tf.float64)
        axes = _reduction_axes(layer, len(x.shape))
        if mask is None:
            weights = tf.ones_like(x)
        else:
            weights = tf.broadcast_to(tf.cast(tf.expand_dims(mask, -1), tf.float64), tf.shape(x))
        count = tf.reduce_sum(weights, axes)
        mean = tf.math.divide_no_nan(tf.reduce_sum(weights * x, axes), count)
        centred = x - tf.reshape(mean, [1 if a in axes else -1 for a in range(len(x.shape))])
        m2 = tf.reduce_sum(weights * centred ** 2, axes)
        count, mean, m2 = count.numpy(), mean.numpy(), m2.numpy()
        total = self.count + count
        share = np.divide(count, total, out=np.zeros_like(total), where=total > 0)
        delta = mean - self.mean
        self.m2 = self.m2 + m2 + delta ** 2 * self.count * share
        self.mean = self.mean + delta * share
        self.count = total

    def statistics(self, old_mean, old_variance):
        """(mean, variance) as float32; features that received no value keep the old ones."""
        seen = np.asarray(self.count) > 0
        variance = np.divide(self.m2, self.count, out=np.zeros_like(np.asarray(self.count)),
                             where=seen)
        return (np.where(seen, self.mean, old_mean).astype(np.float32),
                np.where(seen, variance, old_variance).astype(np.float32))


def _recording(layer, moments, original):
    """A replacement for ``layer.call`` that records its inputs, then runs the layer's own call
    in inference mode (its moving statistics, which stay as they are during the pass)."""
    def call(inputs, *args, training=None, mask=None, **kwargs):
        moments.add(layer, inputs, mask)
        if mask is not None:
            kwargs["mask"] = mask
        return original(inputs, *args, training=False, **kwargs)
    return call


def _exact_bn_statistics(model, x, batch_size: int, assign: bool) -> list[np.ndarray]:
    """The exact mean and variance of each BN layer's inputs over ``x``, layer after layer, the
    whole model in inference mode, each layer's moving statistics set to them before the next
    layer's pass. With ``assign=False``, or if a pass fails, every layer's moving statistics are
    put back as they were at the end."""
    layers = bn_layers(model)
    saved = moving_stats(model)
    found, done = [], False
    try:
        for layer in layers:
            moments = _InputMoments()
            own_call = layer.__dict__.get("call")      # an instance attribute, if there is one
            layer.call = _recording(layer, moments, layer.call)
            try:
                for start in range(0, len(x), batch_size):
                    model(x[start:start + batch_size], training=False)
            finally:
                if own_call is None:
                    del layer.call                      # back to the class's own call
                else:
                    layer.call = own_call
            found += moments.statistics(layer.moving_mean.numpy(), layer.moving_variance.numpy())
            _set_moving_stats(layer, *found[-2:])
        done = True
    finally:
        if not (assign and done):
            for layer, mean, variance in zip(layers, saved[::2], saved[1::2]):
                _set_moving_stats(layer, mean, variance)
    return found


def _set_moving_stats(layer, mean, variance):
    layer.moving_mean.assign(mean)
    layer.moving_variance.assign(variance)
    if getattr(layer, "renorm", False):        # batch renorm keeps a moving stddev as well
        layer.moving_stddev.assign(np.sqrt(variance + np.float32(layer.epsilon)))


def recalibrate_bn(model, x, batch_size: int = 500) -> int:
    """Set every BN layer's moving statistics to the exact mean and (biased) variance of its
    inputs over ``x``, computed with the whole model in inference mode. Returns the number of
    BN layers.

    Works for functional and ``Sequential`` models, nested models included, and changes nothing
    but the moving statistics (no flag is touched). The BN layers are done one at a time, in
    order, one pass over ``x`` each, so that each one sees its inputs as they will be at
    inference, with the layers before it already recalibrated. During layer k's pass
    the model is called with ``training=False`` (Dropout and every other layer in inference
    mode), and layer k's ``call`` is replaced, for that pass only, by one that accumulates the
    count, mean and sum of squared deviations of its inputs over every axis but its feature
    axis (in float64, weighted by the mask if the layer gets one) and then runs the layer's own
    call in inference mode. The original ``call`` is restored even if a pass fails.
    """
    _exact_bn_statistics(model, x, batch_size, assign=True)
    return len(bn_layers(model))


def bn_input_statistics(model, x, batch_size: int = 500) -> list[np.ndarray]:
    """What :func:`recalibrate_bn` would store, without changing ``model``: for every BN layer,
    in order, the exact mean and variance of its inputs over ``x`` (a flat list, like
    :func:`moving_stats`), the earlier BN layers recalibrated, everything in inference mode."""
    return _exact_bn_statistics(model, x, batch_size, assign=False)


# --- moments ------------------------------------------------------------------------------------

def moments_from_sums(count, total, total_of_squares):
    """Mean and (biased) variance from a count, a sum and a sum of squares: the textbook
    E[x^2] - E[x]^2, which is what Keras' ``synchronized=True`` computes from its all-reduced
    sums. Exact in real numbers; in float32 it cancels catastrophically when ``|mean| >> std``."""
    mean = total / count
    return mean, total_of_squares / count - mean * mean


def merge_moments(first, second):
    """Merge two (count, mean, M2) triples, M2 being the sum of squared deviations from the mean
    (Chan, Golub & LeVeque): no large numbers are subtracted, so float32 keeps its precision."""
    n_a, mean_a, m2_a = first
    n_b, mean_b, m2_b = second
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n)


def merge_replica_moments(counts, means, variances):
    """Global (mean, biased variance) of replicas given as per-replica count, mean and variance."""
    merged = (counts[0], means[0], variances[0] * counts[0])
    for n, mean, variance in zip(counts[1:], means[1:], variances[1:]):
        merged = merge_moments(merged, (n, mean, variance * n))
    n, mean, m2 = merged
    return mean, m2 / n
