"""A BN check-up for your own model (chapter 13): the gallery of broken models the lesson runs
:func:`bnbook.examine` on, one planted bug each, drawn from the book's chapters.

* :func:`dense_net` -- Input -> Dense -> BN -> ReLU -> Dense logits, with switches for the bugs
  that live in a model's layers (a bias, Dropout or an activation before BN, float16 BN);
* :class:`TrainingBlock` -- a custom layer whose BN is always called with ``training=True``;
* :func:`tape_trained` -- a dense network trained by a ``GradientTape`` loop that calls
  ``model(x)`` without ``training=True`` (chapter 5's classic bug: the moving statistics never
  move);
* :func:`stale_cnn` -- chapter 6's CNN trained for a few steps with Keras' default momentum 0.99:
  the weights moved, the moving statistics did not follow;
* :func:`gallery` -- every patient of the lesson: its model, the arguments ``examine`` needs for
  it, the rule that must fire and the layer it must name;
* :func:`rule_table` -- one line per patient: which rules the doctor reported, and whether the
  planted one is among them, at the right layer;
* :func:`save_quietly` -- ``model.save`` for the command line, without Keras' NumPy 2 warning.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from ..statistics import recalibrate_bn
from . import conv_resnets as cn

layers = keras.layers

__all__ = ["normal", "dense_net", "TrainingBlock", "batch_stats_net", "tape_trained",
           "frozen_base_model", "channels_first_net", "stale_cnn", "Patient", "gallery",
           "rule_table", "save_quietly"]


def normal(*shape, seed: int = 0, scale: float = 1.0, loc: float = 0.0) -> np.ndarray:
    """float32 Gaussian inputs of ``shape``, seeded."""
    return (loc + scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def dense_net(n_features: int = 8, units: int = 16, n_classes: int = 3, *, bias: bool = False,
              dropout: float | None = None, activation=None, relu_first: bool = False,
              bn_dtype=None, momentum: float = 0.9, seed: int = 0, name: str = "net"):
    """Input(n_features) -> Dense(units, name "dense") -> [ReLU "relu_first"] -> [Dropout "drop"]
    -> BN "bn" -> ReLU -> Dense(n_classes, name "logits").

    ``bias``: the Dense before BN has a bias; ``activation``: its activation; ``relu_first``: a
    ReLU between it and BN; ``dropout``: a Dropout of that rate right before BN; ``bn_dtype``: the
    BN layer's dtype (``"float16"`` plants float16 statistics)."""
    keras.utils.set_random_seed(seed)
    stack = [keras.Input((n_features,)),
             layers.Dense(units, use_bias=bias, activation=activation, name="dense")]
    if relu_first:
        stack.append(layers.ReLU(name="relu_first"))
    if dropout:
        stack.append(layers.Dropout(dropout, name="drop"))
    stack += [layers.BatchNormalization(momentum=momentum, dtype=bn_dtype, name="bn"),
              layers.ReLU(name="relu"), layers.Dense(n_classes, name="logits")]
    return keras.Sequential(stack, name=name)


@keras.saving.register_keras_serializable(package="bnbook")
class TrainingBlock(layers.Layer):
    """Dense(no bias) -> BN, the BN called with ``training=True`` whatever the block is told:
    in inference mode it still normalises with the batch's statistics (chapter 3's mistake,
    hidden in a custom layer)."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = layers.Dense(units, use_bias=False, name="dense")
        self.norm = layers.BatchNormalization(name="norm")

    def call(self, inputs, training=None):
        return self.norm(self.dense(inputs), training=True)      # the bug: not `training`

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def batch_stats_net(n_features: int = 8, seed: int = 0):
    """Input -> TrainingBlock(16, name "block") -> ReLU -> Dense(3): batch-dependent inference."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((n_features,)), TrainingBlock(16, name="block"),
                             layers.ReLU(), layers.Dense(3, name="logits")], name="custom_layer")


def tape_trained(x, y, steps: int = 3, learning_rate: float = 0.1, seed: int = 0):
    """:func:`dense_net` after ``steps`` steps of a tape loop that calls ``model(x)``, not
    ``model(x, training=True)``: gamma and beta learn, the moving statistics never move."""
    model = dense_net(n_features=x.shape[1], n_classes=int(np.max(y)) + 1, seed=seed,
                      name="tape_loop")
    optimizer = keras.optimizers.SGD(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))                          # the bug: no training=True
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return model


def frozen_base_model(n_features: int = 8, units: int = 16, seed: int = 0):
    """A nested base (Dense -> BN -> ReLU, twice) whose Dense layers are frozen one by one while
    its BN layers are left trainable, under a new Dense head (chapter 4's fine-tuning trap)."""
    keras.utils.set_random_seed(seed)
    base = keras.Sequential([keras.Input((n_features,)),
                             layers.Dense(units, use_bias=False, name="dense_1"),
                             layers.BatchNormalization(name="bn_1"), layers.ReLU(),
                             layers.Dense(units, use_bias=False, name="dense_2"),
                             layers.BatchNormalization(name="bn_2"), layers.ReLU()], name="base")
    for layer in base.layers:
        if not isinstance(layer, layers.BatchNormalization):
            layer.trainable = False                              # the bug: BN not frozen
    return keras.Sequential([keras.Input((n_features,)), base, layers.Dense(3, name="head")],
                            name="fine_tuned")


def channels_first_net(seed: int = 0):
    """Conv2D(channels_first) -> BN(axis=-1): BN normalises over the width, not the channels."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((3, 8, 8)),
        layers.Conv2D(4, 3, data_format="channels_first", use_bias=False, name="conv"),
        layers.BatchNormalization(axis=-1, name="bn"),            # the bug: axis=1 is right
        layers.ReLU(), layers.GlobalAveragePooling2D(data_format="channels_first"),
        layers.Dense(3, name="logits")], name="channels_first")


def stale_cnn(x, y, steps: int = 64, batch_size: int = 64, momentum: float = 0.99,
              seed: int = 0):
    """Chapter 6's CNN (``cn.make_cnn``) trained for ``steps`` SGD steps with BN's ``momentum``:
    with 0.99 and 64 steps, the moving statistics keep 0.99 ** 64, about half, of their
    starting values 0 and 1, while the weights have moved far from theirs."""
    model = cn.make_cnn(momentum=momentum, seed=seed, name=f"cnn_momentum_{momentum}")
    cn.train(model, x, y, steps=steps, batch_size=batch_size, learning_rate=0.05, seed=seed)
    return model


@dataclasses.dataclass
class Patient:
    """One broken model of the gallery: what is wrong (``bug``), where the book explains it
    (``chapter``), the model, the keyword arguments for ``examine`` (``data``: x, y, batch_size,
    training_steps), the rule that must fire and the layer it must name."""

    bug: str
    chapter: str
    model: keras.Model
    data: dict
    rule: str
    layer: str


def gallery(x_images, y_images, seed: int = 0) -> list[Patient]:
    """The lesson's broken models, one planted bug each. ``x_images``, ``y_images``: MNIST
    training images (NHWC) for the stale CNN; the others use seeded Gaussian inputs."""
    x8 = normal(256, 8, seed=seed)
    y8 = (np.arange(256) % 3).astype(np.int64)
    stale = stale_cnn(x_images, y_images, seed=seed)
    n = min(len(x_images), 1024)
    patients = [
        Patient("custom layer calls BN with training=True", "3, 6", batch_stats_net(seed=seed),
                dict(x=x8[:64]), "batch-dependent-inference", "block/norm"),
        Patient("tape loop without training=True", "5", tape_trained(x8, y8, seed=seed), {},
                "untrained-statistics", "bn"),
        Patient("momentum 0.99, 64 steps: statistics behind the weights", "6", stale,
                dict(x=x_images[:n], y=y_images[:n], training_steps=64), "stale-statistics",
                stale.layers[1].name),
        Patient("Dropout right before BN", "3", dense_net(dropout=0.5, name="dropout_first",
                                                          seed=seed),
                dict(x=x8), "dropout-before-bn", "bn"),
        Patient("Dense with a bias before BN", "1, 4", dense_net(bias=True, name="biased",
                                                                 seed=seed),
                {}, "bias-before-bn", "bn"),
        Patient("BN axis=-1 after channels_first", "4", channels_first_net(seed=seed), {},
                "wrong-axis", "bn"),
        Patient("frozen base, BN left trainable", "4", frozen_base_model(seed=seed), {},
                "frozen-but-training", "base/bn_1"),
        Patient("batches of 4", "8", dense_net(name="small_batches", seed=seed),
                dict(batch_size=4), "small-batch", ""),
        Patient("257 examples in batches of 64", "6", dense_net(name="trailing", seed=seed),
                dict(x=normal(257, 8, seed=seed + 1), batch_size=64), "trailing-batch-of-one",
                ""),
        Patient("BN after a ReLU", "9", dense_net(relu_first=True, name="relu_first", seed=seed),
                {}, "unfoldable", "bn"),
        Patient("BN with dtype float16", "6", dense_net(bn_dtype="float16", name="float16_bn",
                                                        seed=seed),
                {}, "float16-statistics", "bn"),
    ]
    for patient in patients:      # as if trained long enough: only the planted bug is left
        if patient.model is not stale and "x" in patient.data:
            recalibrate_bn(patient.model, patient.data["x"])
    # The custom layer calls its BN in training mode, so every pass over data moves that BN's
    # moving statistics: set them directly to its inputs' statistics.
    block = patients[0].model.get_layer("block")
    inputs = block.dense(patients[0].data["x"]).numpy().astype(np.float64)
    block.norm.moving_mean.assign(inputs.mean(0).astype(np.float32))
    block.norm.moving_variance.assign(inputs.var(0).astype(np.float32))
    return patients


def rule_table(patients, reports) -> list[dict]:
    """Per patient: its bug, the planted rule, whether the report has that rule at the planted
    layer (``found``), and every rule the report holds (``rules``, sorted)."""
    rows = []
    for patient, report in zip(patients, reports):
        hits = [f for f in report.by_rule(patient.rule) if f.layer == patient.layer]
        rows.append(dict(bug=patient.bug, chapter=patient.chapter, rule=patient.rule,
                         layer=patient.layer or "(whole model)", found=bool(hits),
                         rules=sorted(report.rules)))
    return rows


def save_quietly(model, path) -> None:
    """``model.save(path)`` without Keras' own NumPy 2 DeprecationWarning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(path)
