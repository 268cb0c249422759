"""Folding an inference-mode BN into the Dense or Conv2D before it, for deployment.

Part of the practitioner API (``import bnbook`` exposes every name here):

* :func:`fold_bn` -- the folded kernel and bias of one layer, from BN's four arrays and epsilon;
* :func:`fold_model` -- a copy of a ``Sequential`` model with every BN folded, or a
  ``ValueError`` that says why a BN cannot be folded exactly;
* :func:`bn_arrays`, :func:`has_bn` -- BN's arrays as NumPy, and whether a model has any BN.
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["fold_bn", "fold_model", "bn_arrays", "has_bn"]

BatchNorm = keras.layers.BatchNormalization


def fold_bn(kernel, bias, gamma, beta, mean, variance, epsilon):
    """Fold an inference-mode BN into the layer before it, one output channel at a time.

    Works for Dense kernels (in, out) and Conv2D kernels (kh, kw, in, out): Keras keeps the output
    channel on the kernel's last axis. ``bias`` may be None (``use_bias=False``).
    Returns (kernel', bias') with W' = W * s and b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps).
    """
    scale = gamma / np.sqrt(variance + epsilon)
    if bias is None:
        bias = np.zeros_like(mean)
    return kernel * scale, (bias - mean) * scale + beta


def bn_arrays(layer):
    """(gamma, beta, moving_mean, moving_variance, epsilon) of a BN layer, as NumPy arrays."""
    size = layer.moving_mean.shape[0]
    gamma = layer.gamma.numpy() if layer.scale else np.ones(size, np.float32)
    beta = layer.beta.numpy() if layer.center else np.zeros(size, np.float32)
    return gamma, beta, layer.moving_mean.numpy(), layer.moving_variance.numpy(), layer.epsilon


def _why_not_foldable(layer, bn) -> str | None:
    """Why ``bn`` cannot be folded exactly into ``layer`` (the layer just before it), or None."""
    if isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                          keras.layers.Conv2DTranspose)):
        return (f"{layer.name} is a {type(layer).__name__}, whose kernel keeps the output channel "
                "on another axis than the last; fold_bn scales the last axis")
    if not isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
        return f"it does not follow a Dense or Conv2D (it follows {layer.name})"
    if layer.activation is not keras.activations.linear:
        return (f"{layer.name} applies the activation {layer.activation.__name__!r} before the "
                "BN: the BN's scale and shift cannot move through it into the kernel")
    if bn.axis not in (-1, len(bn.input.shape) - 1):
        return f"it normalises axis {bn.axis}, not the channel axis (the last)"
    return None


def fold_model(model):
    """A copy of a Sequential model with each BN that follows a Dense or Conv2D folded into it.

    Only exact folds are made: the layer before the BN must be a ``Dense`` or ``Conv2D`` without
    an activation of its own, and the BN must normalise the last axis. Any other BN raises a
    ``ValueError`` that says why (an activation between them; a depthwise, separable or
    transposed convolution, whose kernels keep the output channel on another axis; anything
    else before it). The copy has no BN left, and in inference mode it computes what ``model``
    computes in inference mode.
    """
    layers, pending = [], None
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            reason = ("it is the first layer" if pending is None
                      else _why_not_foldable(pending, layer))
            if reason:
                raise ValueError(f"cannot fold {layer.name}: {reason}")
            source = pending
            kernel, bias = fold_bn(source.kernel.numpy(),
                                   source.bias.numpy() if source.use_bias else None,
                                   *bn_arrays(layer))
            config = dict(source.get_config(), use_bias=True, name=source.name + "_folded")
            folded = type(source).from_config(config)
            layers[-1] = (folded, [kernel, bias])
            pending = None
            continue
        pending = layer
        layers.append((type(layer).from_config(layer.get_config()), layer.get_weights()))
    folded_model = keras.Sequential([keras.Input(model.input_shape[1:])]
                                    + [layer for layer, _ in layers], name=model.name + "_folded")
    for layer, weights in layers:
        layer.set_weights(weights)
    return folded_model


def has_bn(model) -> bool:
    """True if any layer of the model (nested models included) is a BatchNormalization."""
    return any(isinstance(layer, BatchNorm) or (hasattr(layer, "layers") and has_bn(layer))
               for layer in model.layers)


