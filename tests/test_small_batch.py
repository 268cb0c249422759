"""bnbook.lessons.small_batches: the renorm reference against Keras, ghost batch norm, the trainer's single
trace and repeatability, the noise measurement and the padded sequences."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnbook.lessons import small_batches as sb


def _renorm_layer(x, state, **kwargs):
    layer = keras.layers.BatchNormalization(renorm=True, **kwargs)
    layer.build(x.shape)
    for name, value in state.items():
        getattr(layer, name).assign(value)
    return layer


@pytest.mark.parametrize("shape, clipping, epsilon, momenta", [
    ((6, 3), None, 1e-3, (0.99, 0.99)),
    ((4, 5, 5, 3), {"rmin": 0.5, "rmax": 2.0, "dmax": 1.0}, 1e-3, (0.9, 0.8)),
    ((3, 2, 4, 3), {"rmax": 1.5, "dmax": 0.25}, 0.1, (0.7, 0.95)),
])
def test_renorm_reference_matches_keras(shape, clipping, epsilon, momenta):
    rng = np.random.default_rng(sum(shape))
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    # channel 2's renorm_stddev is below sqrt(eps) when eps = 0.1: Keras' floor must be copied
    state = {"gamma": np.array([1.5, 0.5, 2.0], np.float32),
             "beta": np.array([0.1, -0.2, 0.3], np.float32),
             "renorm_mean": np.array([2.0, 3.0, 6.0], np.float32),
             "renorm_stddev": np.array([2.5, 0.5, 0.2], np.float32),
             "moving_mean": np.array([1.0, 4.0, 2.0], np.float32),
             "moving_stddev": np.array([1.5, 2.5, 0.7], np.float32)}
    momentum, renorm_momentum = momenta
    layer = _renorm_layer(x, state, renorm_clipping=clipping, epsilon=epsilon,
                          momentum=momentum, renorm_momentum=renorm_momentum)
    out = layer(x, training=True).numpy()
    want = sb.renorm_reference(x, **state, epsilon=epsilon, momentum=momentum,
                               renorm_momentum=renorm_momentum, **(clipping or {}))
    assert np.allclose(out, want["output"], atol=1e-5)
    for name in ("renorm_mean", "renorm_stddev", "moving_mean", "moving_stddev"):
        assert np.allclose(getattr(layer, name).numpy(), want[name], atol=1e-5), name
    if clipping:  # the cases are built so that some limit binds
        assert np.any(want["r"] == clipping["rmax"]) or np.any(np.abs(want["d"]) == clipping["dmax"])


def test_unclipped_renorm_output_is_normalised_by_the_moving_statistics():
    x = np.random.default_rng(0).normal(5.0, 2.0, (8, 4)).astype(np.float32)
    mu, sigma = np.full(4, 4.0, np.float32), np.full(4, 1.5, np.float32)
    layer = _renorm_layer(x, {"renorm_mean": mu, "renorm_stddev": sigma})
    assert np.allclose(layer(x, training=True).numpy(), (x - mu) / sigma, atol=1e-5)


def test_ghost_bn_with_one_ghost_is_keras_bn():
    x = np.random.default_rng(1).normal(2.0, 3.0, (8, 3, 3, 4)).astype(np.float32)
    ghost = sb.GhostBatchNormalization(8, momentum=0.9)
    keras_bn = keras.layers.BatchNormalization(momentum=0.9)
    assert np.allclose(ghost(x, training=True), keras_bn(x, training=True), atol=1e-5)
    assert np.allclose(ghost.moving_mean.numpy(), keras_bn.moving_mean.numpy(), atol=1e-5)
    assert np.allclose(ghost.moving_variance.numpy(), keras_bn.moving_variance.numpy(), atol=1e-5)
    assert np.allclose(ghost(x), keras_bn(x), atol=1e-5)  # inference mode


def test_ghost_bn_normalises_each_ghost_on_its_own():
    x = np.random.default_rng(2).normal(0.0, 1.0, (6, 5)).astype(np.float32)
    x[3:] += 10.0                                      # the second ghost is shifted
    out = sb.GhostBatchNormalization(3)(x, training=True).numpy()
    bn = keras.layers.BatchNormalization()
    assert np.allclose(out[:3], bn(x[:3], training=True), atol=1e-5)
    assert np.allclose(out[3:], bn(x[3:], training=True), atol=1e-5)


def test_batch_stat_spread_of_independent_values():
    values = np.random.default_rng(3).standard_normal(20000)
    spread = sb.batch_stat_spread(values, batch_sizes=(2, 16), draws=4000)
    for b, (mean_spread, mean_var, _) in spread.items():
        assert abs(mean_spread - 1 / np.sqrt(b)) < 0.05 * (1 / np.sqrt(b)) + 0.01
        assert abs(mean_var - (b - 1) / b) < 0.05


def test_padded_sequences_do_not_depend_on_the_neighbours():
    a, mask_a = sb.padded_sequences([5, 3])
    b, mask_b = sb.padded_sequences([5, 12])
    assert a.shape == (2, 5, 6) and b.shape == (2, 12, 6)
    assert np.array_equal(a[0], b[0, :5]) and not b[0, 5:].any()
    assert mask_a.sum(axis=1).tolist() == [5, 3] and mask_b.sum(axis=1).tolist() == [5, 12]


def test_small_images():
    (x, y), (xt, yt) = sb.small_images(n_train=64, n_test=32)
    assert x.shape == (64, 14, 14, 1) and xt.shape == (32, 14, 14, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and y.dtype == np.int64


def test_trainer_traces_once_and_repeats_itself():
    (x, y), (xt, yt) = sb.small_images(n_train=64, n_test=64)
    trainer = sb.Trainer(sb.NORMALIZATIONS["batch norm"], seeds=(0, 1))
    first = trainer.fit(x, y, batch_size=8).model.get_weights()
    trainer.fit(x, y, batch_size=32)
    again = trainer.fit(x, y, batch_size=8).model.get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(first, again))
    assert trainer._run.experimental_get_tracing_count() == 1
    assert trainer.accuracy(xt, yt).shape == (2,)
    with pytest.raises(ValueError, match="do not split"):
        trainer.fit(x, y, batch_size=48)


@pytest.mark.parametrize("name", ["none", "batch norm", "batch renorm", "group norm", "layer norm"])
def test_stacked_networks_compute_what_each_computes_alone(name):
    """Network k of the stack is make_net(norm, seed k): the same outputs in both modes, and after
    3 SGD steps (each network on its own data order) the same weights as trained alone."""
    norm = sb.NORMALIZATIONS[name]
    seeds = (3, 5)
    (x, y), _ = sb.small_images(n_train=24, n_test=8)
    stack = sb.make_stack(norm, seeds)
    for training in (False, True):
        out = stack(np.repeat(x[:8], 2, axis=-1), training=training).numpy().reshape(8, 2, 10)
        for k, seed in enumerate(seeds):
            alone = sb.make_net(norm, seed=seed)(x[:8], training=training).numpy()
            np.testing.assert_allclose(out[:, k], alone, atol=1e-5)
    trainer = sb.Trainer(norm, seeds).fit(x, y, batch_size=8)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for k, seed in enumerate(seeds):
        net = sb.make_net(norm, seed=seed)
        sgd = keras.optimizers.SGD(sb.LR_PER_EXAMPLE * 8, momentum=sb.SGD_MOMENTUM)
        order = np.random.default_rng(seed).permutation(len(x))
        for step in range(3):
            batch = order[step * 8:(step + 1) * 8]
            with tf.GradientTape() as tape:
                loss = loss_fn(y[batch], net(x[batch], training=True))
            sgd.apply(tape.gradient(loss, net.trainable_variables), net.trainable_variables)
        for got, want in zip(trainer.network(k).get_weights(), net.get_weights()):
            np.testing.assert_allclose(got, want, atol=1e-4)


def test_conv_and_dense_puts_each_normalization_in_its_layers():
    net = sb.make_net(sb.conv_and_dense(sb.NORMALIZATIONS["batch norm"],
                                        sb.NORMALIZATIONS["layer norm"]))
    kinds = [type(layer).__name__ for layer in net.layers
             if "Normalization" in type(layer).__name__]
    assert kinds == ["BatchNormalization", "BatchNormalization", "GroupNormalization"]
    only_dense = sb.make_net(sb.conv_and_dense(None, sb.NORMALIZATIONS["batch norm"]))
    assert [type(layer).__name__ for layer in only_dense.layers].count("BatchNormalization") == 1


def test_mean_range():
    assert sb.mean_range([0.5, 0.7, 0.6]) == "0.60 (0.50–0.70)"


def test_training_mode_predictions_leave_the_moving_statistics_alone():
    (x, y), (xt, yt) = sb.small_images(n_train=64, n_test=64)
    trainer = sb.Trainer(sb.NORMALIZATIONS["batch norm"], seeds=(0, 1)).fit(x, y, batch_size=16)
    before = [v.numpy() for v in trainer.model.non_trainable_variables]
    predicted = trainer.predictions(xt, training=True, batch_size=4)
    assert predicted.shape == (64, 2)
    after = [v.numpy() for v in trainer.model.non_trainable_variables]
    assert all(np.array_equal(u, v) for u, v in zip(before, after))
    # training mode with batches of 1: every image gives the same prediction (BN outputs beta)
    for k in range(2):
        assert len(set(trainer.predictions(xt[:8], training=True, batch_size=1)[:, k])) == 1


def test_layer_output_is_the_model_up_to_that_layer():
    (x, _), _ = sb.small_images(n_train=16, n_test=16)
    model = sb.make_net(sb.NORMALIZATIONS["group norm"])
    head = keras.Sequential(model.layers[:8])
    assert np.allclose(sb.layer_output(model, 7, x, batch_size=5), head(x), atol=1e-5)


def test_normalizations_build_the_layers_the_chapter_names():
    layers = {name: (factory(8) if factory else None) for name, factory in sb.NORMALIZATIONS.items()}
    stacked = sb.NORMALIZATIONS["group norm"](8, stack=3)
    assert stacked.groups == 12       # 4 groups per network, none spanning two networks
    assert layers["none"] is None
    assert isinstance(layers["batch norm"], keras.layers.BatchNormalization)
    assert layers["batch renorm"].renorm and layers["batch renorm"].renorm_clipping["rmax"] == 3.0
    assert layers["group norm"].groups == 4 and layers["layer norm"].groups == 1
    x = tf.random.normal((2, 3, 3, 8))
    assert np.allclose(layers["layer norm"](x), keras.layers.LayerNormalization(axis=[1, 2, 3])(x),
                       atol=1e-5)
