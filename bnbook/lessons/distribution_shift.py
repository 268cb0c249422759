"""Distribution shift at test time (chapter 10): corrupted MNIST and BN's test-time adaptations.

Corruptions, in the spirit of MNIST-C (Mu & Gilmer, 2019, https://arxiv.org/abs/1906.02337), all
in NumPy and seeded, no downloads. Each takes NHWC float32 images in [0, 1] and a severity 1..3
and returns new images in [0, 1] of the same shape:

* :data:`CORRUPTIONS` -- the names, in the order the chapter shows them;
* :func:`corrupt` -- apply one of them (``corrupt(x, "rotation", severity=2, seed=0)``).

Adaptation helpers for a BN network built by :func:`bnbook.lessons.conv_resnets.make_cnn` (a ``Sequential``
whose BN layers are direct layers of the model):

* :func:`mixed_statistics` -- Schneider et al.'s (2020) mix of source and target statistics with
  a prior strength ``N``;
* :func:`forward_with_batch_stats` -- the network's logits with every BN layer normalising each
  group of ``batch_size`` consecutive images by that group's own statistics, optionally mixed with
  the stored ones; ``prior=0`` is ``model(batch, training=True)`` without moving anything;
* :func:`accuracy_with_batch_stats` -- the accuracy of the same;
* :func:`tent` -- TENT (Wang et al., 2021): entropy minimisation on BN's gamma and beta only;
* :func:`gaussian_kl`, :func:`shift_scores` -- per-BN-layer distance between a target batch's
  moments and the stored ones, for detecting shift before any label arrives;
* :func:`auroc` -- how well a score separates two sets (probability that a shifted batch scores
  higher than a clean one).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "mixed_statistics", "forward_with_batch_stats",
           "accuracy_with_batch_stats", "tent", "gaussian_kl", "shift_scores",
           "layer_inputs", "auroc", "label_sorted", "plot_corruptions"]

SEVERITIES = (1, 2, 3)

# Parameters per corruption, one per severity 1, 2, 3.
_LEVELS = {
    "gaussian noise": (0.2, 0.35, 0.5),        # standard deviation of the added noise
    "impulse noise": (0.05, 0.12, 0.2),        # fraction of pixels set to 0 or 1
    "contrast": (0.5, 0.3, 0.15),              # factor applied around each image's mean
    "brightness": (0.2, 0.35, 0.5),            # offset added (then clipped)
    "inversion": (0.25, 0.75, 1.0),            # weight of the inverted image
    "rotation": (15.0, 30.0, 45.0),            # largest angle in degrees (random sign and size)
    "translation": (1, 2, 3),                  # largest shift in pixels, each axis
    "blur": (0.7, 1.0, 1.5),                   # standard deviation of the Gaussian kernel
}
CORRUPTIONS = tuple(_LEVELS)


def _bilinear_rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """One HxW image rotated about its centre by ``degrees`` (bilinear, zeros outside)."""
    h, w = image.shape
    theta = np.deg2rad(degrees)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # inverse map: where in the source each output pixel comes from
    sy = np.cos(theta) * (yy - cy) - np.sin(theta) * (xx - cx) + cy
    sx = np.sin(theta) * (yy - cy) + np.cos(theta) * (xx - cx) + cx
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    fy, fx = sy - y0, sx - x0
    padded = np.pad(image.astype(np.float64), 1)

    def at(y, x):
        return padded[np.clip(y, -1, h) + 1, np.clip(x, -1, w) + 1]

    out = (at(y0, x0) * (1 - fy) * (1 - fx) + at(y0, x0 + 1) * (1 - fy) * fx
           + at(y0 + 1, x0) * fy * (1 - fx) + at(y0 + 1, x0 + 1) * fy * fx)
    return out


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of NHW images (kernel radius 3 sigma, zero padding)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    out = x.astype(np.float64)
    for axis in (1, 2):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(3)])
        length = out.shape[axis]
        out = sum(k * np.take(padded, np.arange(i, i + length), axis=axis)
                  for i, k in enumerate(kernel))
    return out


def corrupt(x: np.ndarray, name: str, severity: int = 2, seed: int = 0) -> np.ndarray:
    """Images ``x`` (NHWC float32 in [0, 1], one channel) with corruption ``name`` at ``severity``.

    ``name`` is one of :data:`CORRUPTIONS`; ``severity`` is 1, 2 or 3 (3 the strongest). Random
    corruptions (the noises, rotation, translation) draw from a NumPy generator seeded by ``seed``:
    the same arguments always give the same images. Returns float32 in [0, 1], shape of ``x``.

    * gaussian noise: add N(0, s^2) noise to every pixel;
    * impulse noise: set a fraction of the pixels to 0 or 1 (salt and pepper);
    * contrast: move every pixel towards its image's mean, ``mean + c (x - mean)``;
    * brightness: add a constant offset;
    * inversion: blend with the inverted image, ``(1 - a) x + a (1 - x)`` (a = 1: white
      background, black digit);
    * rotation: rotate each image by a random angle of up to the level, either sign;
    * translation: shift each image by a random whole number of pixels in each direction (zeros
      come in);
    * blur: a Gaussian blur.
    """
    if name not in _LEVELS:
        raise ValueError(f"unknown corruption {name!r}: use one of {CORRUPTIONS}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1, 2 or 3, not {severity!r}")
    level = _LEVELS[name][severity - 1]
    rng = np.random.default_rng(seed)
    images = np.asarray(x, np.float64)[..., 0]
    n = len(images)
    if name == "gaussian noise":
        out = images + rng.normal(0.0, level, images.shape)
    elif name == "impulse noise":
        u = rng.random(images.shape)
        out = np.where(u < level / 2, 0.0, np.where(u < level, 1.0, images))
    elif name == "contrast":
        mean = images.mean(axis=(1, 2), keepdims=True)
        out = mean + level * (images - mean)
    elif name == "brightness":
        out = images + level
    elif name == "inversion":
        out = (1 - level) * images + level * (1 - images)
    elif name == "rotation":
        angles = rng.uniform(level / 2, level, n) * rng.choice([-1.0, 1.0], n)
        out = np.stack([_bilinear_rotate(im, a) for im, a in zip(images, angles)])
    elif name == "translation":
        shifts = rng.integers(-level, level + 1, size=(n, 2))
        out = np.zeros_like(images)
        h, w = images.shape[1:]
        for i, (dy, dx) in enumerate(shifts):
            src = images[i, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            out[i, max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    else:  # blur
        out = _gaussian_blur(images, level)
    return np.clip(out, 0.0, 1.0).astype(np.float32)[..., None]


def label_sorted(x: np.ndarray, y: np.ndarray):
    """``(x, y)`` sorted by label (stable): a stream whose consecutive batches hold one or two
    classes, the label-skewed target stream of the chapter's control."""
    order = np.argsort(y, kind="stable")
    return x[order], y[order]


# --- statistics -------------------------------------------------------------------------------

def mixed_statistics(source_mean, source_var, batch_mean, batch_var, batch_size, prior):
    """Schneider et al.'s (2020) mix of the stored (source) statistics with a target batch's:

    ``mean = (N * source_mean + n * batch_mean) / (N + n)`` and the same for the variance, where
    ``n = batch_size`` (the number of examples in the batch, not of values) and ``N = prior``
    (the prior strength, counted in examples). ``prior=0`` is the batch's statistics alone,
    ``prior=np.inf`` the source statistics alone. Works on NumPy arrays and tensors alike.
    """
    w_source = _source_weight(batch_size, prior)
    w_batch = 1.0 - w_source
    return (w_source * source_mean + w_batch * batch_mean,
            w_source * source_var + w_batch * batch_var)


def _source_weight(batch_size, prior) -> float:
    """N / (N + n): the weight :func:`mixed_statistics` gives the source statistics."""
    return 1.0 if np.isinf(prior) else float(prior) / (float(prior) + batch_size)


def _bn_in_groups(layer, x, batch_size, source_weight):
    """BN ``layer`` applied to ``x`` in groups of ``batch_size`` consecutive examples, each group
    normalised with its own biased moments mixed with the layer's moving ones, the moving ones
    weighted by ``source_weight`` (N / (N + n))."""
    shape = tf.shape(x)
    grouped = tf.reshape(x, tf.concat([[-1, batch_size], shape[1:]], axis=0))
    axes = list(range(1, len(x.shape)))          # the group's examples and positions
    mean, var = tf.nn.moments(grouped, axes=axes, keepdims=True)
    mean = source_weight * layer.moving_mean + (1.0 - source_weight) * mean
    var = source_weight * layer.moving_variance + (1.0 - source_weight) * var
    out = tf.nn.batch_normalization(grouped, mean, var, layer.beta, layer.gamma, layer.epsilon)
    return tf.reshape(out, shape)


def _forward(model, x, batch_size, source_weight):
    h = x
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            h = _bn_in_groups(layer, h, batch_size, source_weight)
        else:
            h = layer(h, training=False)
    return h


_FORWARDS: dict = {}   # (id of the model, batch size) -> (model, traced forward pass)


def forward_with_batch_stats(model, x, batch_size: int, prior: float = 0.0):
    """Logits of ``model`` (a ``Sequential`` of :func:`bnbook.lessons.conv_resnets.make_cnn`) on ``x`` with
    every BN layer using test-batch statistics: the images are cut into consecutive groups of
    ``batch_size`` (``len(x)`` must be a multiple of it) and each group is normalised by its own
    mean and biased variance, mixed with the stored moving statistics as
    :func:`mixed_statistics` does with prior strength ``prior`` (0: the batch alone, as
    ``model(group, training=True)``; ``np.inf``: the stored statistics, as
    ``model(x, training=False)``). Every other layer runs in inference mode. Nothing in the model
    changes. Traced once per model and batch size (the prior is an input of the trace).
    """
    if len(x) % batch_size:
        raise ValueError(f"{len(x)} images do not split into batches of {batch_size}")
    key = (id(model), batch_size)
    if key not in _FORWARDS:
        _FORWARDS[key] = (model, tf.function(
            lambda images, weight: _forward(model, images, batch_size, weight),
            reduce_retracing=True))
    weight = tf.constant(_source_weight(batch_size, prior), tf.float32)
    return _FORWARDS[key][1](tf.convert_to_tensor(x), weight)


def accuracy_with_batch_stats(model, x, y, batch_size: int, prior: float = 0.0) -> float:
    """Fraction of ``y`` that :func:`forward_with_batch_stats` gets right."""
    logits = forward_with_batch_stats(model, x, batch_size, prior)
    return float(np.mean(np.argmax(logits.numpy(), axis=1) == y))


def _bn_affine(model):
    return [w for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
            for w in (layer.gamma, layer.beta)]


_TENT_STEPS: dict = {}   # (id of the model, batch size) -> traced step


def _tent_step(model, batch_size):
    """One traced TENT step for ``model``, traced once per model and batch size and reused."""
    key = (id(model), batch_size)
    if key not in _TENT_STEPS:
        variables = _bn_affine(model)

        @tf.function
        def step(batch, learning_rate):
            with tf.GradientTape() as tape:
                logits = _forward(model, batch, batch_size, 0.0)
                log_p = tf.nn.log_softmax(logits)
                entropy = -tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * log_p, axis=1))
            for variable, gradient in zip(variables, tape.gradient(entropy, variables)):
                variable.assign_sub(learning_rate * gradient)
            return entropy

        _TENT_STEPS[key] = (model, step)       # the model is kept so that its id stays its own
    return _TENT_STEPS[key][1]


def tent(model, x, *, steps: int, batch_size: int = 128, learning_rate: float = 0.05,
         seed: int = 0) -> np.ndarray:
    """TENT (Wang et al., 2021, https://arxiv.org/abs/2006.10726): ``steps`` steps of plain SGD
    minimising the mean entropy of the softmax predictions on unlabeled batches of ``batch_size``
    images drawn from ``x`` without labels (a fresh random batch each step, seeded by ``seed``),
    every BN layer normalising with the batch's own statistics (as in training mode), and only
    BN's gamma and beta updated: they change in place; the moving statistics and every other
    weight do not. Returns each step's mean entropy (nats), measured before its update.
    """
    step = _tent_step(model, batch_size)
    rng = np.random.default_rng(seed)
    rate = tf.constant(learning_rate, tf.float32)
    entropies = [step(tf.constant(x[rng.choice(len(x), batch_size, replace=False)]), rate).numpy()
                 for _ in range(steps)]
    return np.asarray(entropies, np.float32)


# --- detecting shift ---------------------------------------------------------------------------

def gaussian_kl(batch_mean, batch_var, mean, var):
    """Mean over features of KL( N(batch_mean, batch_var) || N(mean, var) ), in nats: how badly
    the stored Gaussian (``mean``, ``var``) describes what a batch shows; 0 when they agree."""
    batch_mean, batch_var = np.asarray(batch_mean, np.float64), np.asarray(batch_var, np.float64)
    mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    kl = 0.5 * (np.log(var / batch_var) + (batch_var + (batch_mean - mean) ** 2) / var - 1.0)
    return float(np.mean(kl))


def layer_inputs(model, x) -> list[np.ndarray]:
    """What each BN layer of ``model`` (a ``Sequential``) receives for images ``x``, the whole
    model in inference mode: one array per BN layer, in order."""
    found, h = [], tf.convert_to_tensor(x)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(h.numpy())
        h = layer(h, training=False)
    return found


def shift_scores(model, batches) -> np.ndarray:
    """For each batch of images in ``batches`` (an array of shape (B, n, H, W, C): B batches of n
    images) and each BN layer: :func:`gaussian_kl` of the batch's per-channel moments of that
    layer's inputs against the layer's moving statistics, BN's epsilon added to both variances.
    The inputs come from one inference-mode pass over all the images (in inference mode an
    image's features do not depend on the other images). Shape (B, number of BN layers)."""
    batches = np.asarray(batches)
    count, size = batches.shape[:2]
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    everything = layer_inputs(model, batches.reshape(count * size, *batches.shape[2:]))
    scores = np.zeros((count, len(bns)))
    for j, (layer, inputs) in enumerate(zip(bns, everything)):
        grouped = inputs.astype(np.float64).reshape(count, -1, inputs.shape[-1])
        mean_s = layer.moving_mean.numpy()
        var_s = layer.moving_variance.numpy() + layer.epsilon
        for i in range(count):
            scores[i, j] = gaussian_kl(grouped[i].mean(0), grouped[i].var(0) + layer.epsilon,
                                       mean_s, var_s)
    return scores


def auroc(negatives, positives) -> float:
    """Area under the ROC curve of a score that should be higher for ``positives``: the chance
    that a random positive scores above a random negative (ties count half). 1: perfect
    separation, 0.5: none."""
    neg, pos = np.asarray(negatives, np.float64), np.asarray(positives, np.float64)
    above = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(above + 0.5 * ties)


# --- figure ------------------------------------------------------------------------------------

def plot_corruptions(x: np.ndarray, n_images: int = 2, seed: int = 0):
    """A grid of examples: one row per corruption of :data:`CORRUPTIONS`, the first ``n_images``
    images of ``x`` clean and then at severities 1, 2 and 3 (one block of columns per image)."""
    import matplotlib.pyplot as plt

    columns = n_images * (1 + len(SEVERITIES))
    fig, axes = plt.subplots(len(CORRUPTIONS), columns, figsize=(columns * 0.9, len(CORRUPTIONS) * 0.95))
    for row, name in enumerate(CORRUPTIONS):
        versions = [x[:n_images]] + [corrupt(x[:n_images], name, s, seed) for s in SEVERITIES]
        for i in range(n_images):
            for j, images in enumerate(versions):
                ax = axes[row, i * len(versions) + j]
                ax.imshow(images[i, :, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title("clean" if j == 0 else f"sev. {j}", fontsize=8)
        axes[row, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("The eight corruptions at severities 1 to 3")
    fig.supxlabel("image and severity", fontsize=9)
    fig.tight_layout()
    return fig
