"""bnbook.lessons.conv_resnets: data, model builders, the training loop and recalibration
(chapters 6 and 8)."""

import keras
import numpy as np
import pytest

import bnbook
from bnbook.lessons import conv_resnets as cn


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    np.savez(path, x_train=rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8),
             y_train=np.arange(60000, dtype=np.uint8) % 10,
             x_test=rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
             y_test=np.arange(10000, dtype=np.uint8) % 10)
    return path


def test_mnist_images(fake_mnist):
    (x, y), (xt, yt) = cn.mnist_images(300, 100, seed=1, path=fake_mnist)
    assert x.shape == (300, 28, 28, 1) and xt.shape == (100, 28, 28, 1)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert len(np.unique(x.reshape(300, -1), axis=0)) == 300          # no image drawn twice
    (x2, y2), _ = cn.mnist_images(300, 100, seed=1, path=fake_mnist)
    (x3, _), _ = cn.mnist_images(300, 100, seed=2, path=fake_mnist)
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and not np.array_equal(x, x3)


def test_make_cnn_parameters_and_bias():
    net = cn.make_cnn()
    convs = [layer for layer in net.layers if isinstance(layer, (keras.layers.Conv2D,
                                                                  keras.layers.Dense))]
    assert [layer.use_bias for layer in convs] == [False, False, False, True]
    assert len(bnbook.bn_layers(net)) == 3
    assert net(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)
    plain = cn.make_cnn(norm=None)
    assert not bnbook.bn_layers(plain)
    assert all(layer.use_bias for layer in plain.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)))
    assert cn.make_cnn(filters=(4,), dense_units=0).count_params() == 3 * 3 * 4 + 4 * 4 + \
        14 * 14 * 4 * 10 + 10


@pytest.mark.parametrize("norm, kind", [("layer", keras.layers.LayerNormalization),
                                        ("group", keras.layers.GroupNormalization),
                                        (lambda c: keras.layers.GroupNormalization(c),
                                         keras.layers.GroupNormalization)])
def test_make_cnn_other_norms(norm, kind):
    net = cn.make_cnn(norm=norm)
    assert sum(isinstance(layer, kind) for layer in net.layers) == 3
    assert not bnbook.bn_layers(net)


def test_init_scale_multiplies_the_weights():
    small, large = cn.make_cnn(init_scale=0.1, seed=3), cn.make_cnn(init_scale=10.0, seed=3)
    ratio = np.std(large.layers[0].kernel.numpy()) / np.std(small.layers[0].kernel.numpy())
    assert 50 < ratio < 200


def test_mixed_precision_keeps_bn_in_float32():
    net = cn.make_cnn(dtype="mixed_float16")
    bn = bnbook.bn_layers(net)[0]
    assert bn.compute_dtype == "float16"
    assert all(w.dtype == "float32" for w in bn.weights)
    assert net(np.zeros((2, 28, 28, 1), np.float32)).dtype == "float32"


def test_residual_blocks_start_as_identity():
    inputs = keras.Input((6, 6, 3))
    block = keras.Model(inputs, cn.residual_block(inputs))
    x = np.abs(np.random.default_rng(0).normal(size=(4, 6, 6, 3))).astype(np.float32)
    assert np.array_equal(block(x, training=True), x)
    block_one = keras.Model(inputs, cn.residual_block(inputs, gamma_zero=False))
    assert not np.allclose(block_one(x), x)
    resnet = cn.make_resnet(blocks=2, filters=4)
    assert len(bnbook.bn_layers(resnet)) == 5 and resnet.output.shape == (None, 10)


def small_problem(n=96):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n)
    x = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32) * 0.5
    x[np.arange(n), 2 * y + 3, 10, 0] = 1.0
    return x, y.astype(np.int64)


def test_train_is_repeatable_and_cached_loop_matches_a_fresh_one():
    x, y = small_problem()
    first, second, own = (cn.make_cnn(filters=(4,), dense_units=8, momentum=0.9)
                          for _ in range(3))
    losses = cn.train(first, x, y, steps=6, batch_size=16, learning_rate=0.1)
    again = cn.train(second, x, y, steps=6, batch_size=16, learning_rate=0.1)
    assert losses.shape == (6,) and losses.dtype == np.float32
    assert np.array_equal(losses, again)                        # the cached loop, reused
    assert cn.same_arrays(first.get_weights(), second.get_weights())
    other = cn.train(own, x, y, steps=6, batch_size=16,
                     optimizer=keras.optimizers.SGD(0.1))       # a loop traced for this model
    assert np.allclose(losses, other, atol=1e-5)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(first.get_weights(),
                                                             own.get_weights()))


def test_train_in_order_and_learning_rate():
    x, y = small_problem()
    a, b = (cn.make_cnn(filters=(4,), dense_units=0, seed=1) for _ in range(2))
    cn.train(a, x, y, steps=3, batch_size=32, learning_rate=0.0, shuffle=False)
    assert cn.same_arrays(
        [w.numpy() for w in a.trainable_weights], [w.numpy() for w in b.trainable_weights])
    # in order, three batches of 32 cover the data once: the moving mean saw every example once
    assert not cn.same_arrays(bnbook.moving_stats(a), bnbook.moving_stats(b))


def dense_model(momentum=0.99):
    keras.utils.set_random_seed(5)
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, use_bias=False),
                              keras.layers.BatchNormalization(momentum=momentum),
                              keras.layers.ReLU()], name="inner")
    return keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(2, use_bias=False),
                             keras.layers.BatchNormalization(momentum=0.5),
                             keras.layers.Dense(2)])


def test_recalibrate_gives_exact_statistics_and_restores_flags():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(50, 4)).astype(np.float32)
    model = dense_model()
    bnbook.bn_layers(model)[1].trainable = False
    before = bnbook.moving_stats(model)
    exact = bnbook.bn_input_statistics(model, x, batch_size=16)
    assert cn.same_arrays(before, bnbook.moving_stats(model))          # unchanged by the preview
    assert bnbook.recalibrate_bn(model, x, batch_size=16) == 2           # nested layer found
    first = x.astype(np.float64) @ model.layers[0].layers[0].kernel.numpy()
    assert np.allclose(bnbook.moving_stats(model)[0], first.mean(axis=0), rtol=1e-5, atol=1e-5)
    assert np.allclose(bnbook.moving_stats(model)[1], first.var(axis=0), rtol=1e-4)
    inner_out = model.layers[0](x, training=False).numpy().astype(np.float64)
    second = inner_out @ model.layers[1].kernel.numpy()
    assert np.allclose(bnbook.moving_stats(model)[3], second.var(axis=0), rtol=1e-4)
    assert all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(exact,
                                                                       bnbook.moving_stats(model)))
    assert [(layer.trainable, layer.momentum) for layer in bnbook.bn_layers(model)] == \
        [(True, 0.99), (False, 0.5)]


class DenseBN(keras.layers.Layer):
    """A custom layer holding its own Dense and BN (not a model: no ``.layers``)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(units, use_bias=False)
        self.norm = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        return self.norm(self.dense(x), training=training)


def test_bn_layers_open_custom_layers_and_recalibrate_them():
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 3.0, size=(40, 4)).astype(np.float32)
    shared = keras.layers.BatchNormalization()
    inputs = keras.Input((4,))
    block = DenseBN(3, name="block")
    h = shared(keras.layers.Dense(3, use_bias=False)(block(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    assert bnbook.bn_layers(model) == [block.norm, shared]      # custom layer's BN found, in order
    assert bnbook.recalibrate_bn(model, x, batch_size=16) == 2
    inputs_of_block_bn = x.astype(np.float64) @ block.dense.kernel.numpy()
    assert np.allclose(block.norm.moving_mean.numpy(), inputs_of_block_bn.mean(axis=0),
                       rtol=1e-5, atol=1e-5)
    assert np.allclose(block.norm.moving_variance.numpy(), inputs_of_block_bn.var(axis=0),
                       rtol=1e-4)


def test_each_dtype_policy_gets_its_own_sgd_runner():
    plain, mixed = cn.make_cnn(filters=(4,), dense_units=8), \
        cn.make_cnn(filters=(4,), dense_units=8, dtype="mixed_float16")
    plain_worker, plain_sgd, _ = cn._sgd_runner(plain, 16)
    mixed_worker, mixed_sgd, _ = cn._sgd_runner(mixed, 16)
    assert mixed_worker is not plain_worker
    assert isinstance(mixed_sgd, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(plain_sgd, keras.optimizers.LossScaleOptimizer)
    assert cn._uses_float16(mixed_worker) and not cn._uses_float16(plain_worker)
    assert cn._sgd_runner(cn.make_cnn(filters=(4,), dense_units=8, dtype="mixed_float16",
                                      seed=2), 16)[0] is mixed_worker       # and it is reused


def test_models_of_one_architecture_share_one_runner():
    # Keras names the layers of every new model afresh (conv2d_7, ...): the key must not see it
    resnets = [cn.make_resnet(blocks=1, filters=4, gamma_zero=g, seed=s)
               for g, s in ((True, 0), (False, 1))]
    assert cn._sgd_runner(resnets[0], 16)[0] is cn._sgd_runner(resnets[1], 16)[0]
    nested = [keras.Sequential([keras.Input((28, 28, 1)), cn.make_cnn(filters=(4,), dense_units=0)])
              for _ in range(2)]
    assert cn._sgd_runner(nested[0], 16)[0] is cn._sgd_runner(nested[1], 16)[0]
    assert cn._sgd_runner(cn.make_resnet(blocks=2, filters=4), 16)[0] is not \
        cn._sgd_runner(resnets[0], 16)[0]                                    # another architecture
    assert cn._sgd_runner(cn.make_resnet(blocks=1, filters=4, momentum=0.9), 16)[0] is not \
        cn._sgd_runner(resnets[0], 16)[0]                                    # another momentum


def test_float16_models_train_and_predict_through_xla():
    x, y = small_problem(32)
    net = cn.make_cnn(filters=(4,), dense_units=8, dtype="mixed_float16")
    start = [w.numpy() for w in net.trainable_weights]
    losses = cn.train(net, x, y, steps=3, batch_size=16, learning_rate=0.1)
    assert np.all(np.isfinite(losses))
    assert not cn.same_arrays(start, [w.numpy() for w in net.trainable_weights])
    _, _, run = cn._sgd_runner(net, 16)
    assert run._jit_compile                                        # an XLA-compiled loop
    stats = bnbook.moving_stats(net)
    assert cn.predict_classes(net, x, batch_size=16).shape == (32,)
    assert cn.same_arrays(stats, bnbook.moving_stats(net))            # inference mode moves nothing
    cn.predict_classes(net, x, batch_size=16, training=True)
    assert not cn.same_arrays(stats, bnbook.moving_stats(net))        # training mode moves them back


def dropout_models():
    """The same layers, Dense -> Dropout(0.5) -> BN -> Dense, as a functional model, a
    Sequential and a Sequential nested in a functional model."""
    def layers():
        keras.utils.set_random_seed(7)
        return [keras.layers.Dense(6, use_bias=False), keras.layers.Dropout(0.5, seed=1),
                keras.layers.BatchNormalization(momentum=0.9), keras.layers.Dense(2)]

    inputs = keras.Input((4,))
    x = inputs
    for layer in layers():
        x = layer(x)
    functional = keras.Model(inputs, x)
    sequential = keras.Sequential([keras.Input((4,)), *layers()])
    inputs = keras.Input((4,))
    inner = keras.Sequential([keras.Input((4,)), *layers()[:3]], name="inner")
    nested = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    return {"functional": functional, "sequential": sequential, "nested": nested}


@pytest.mark.parametrize("kind", ["functional", "sequential", "nested"])
def test_recalibrate_runs_dropout_in_inference_mode(kind):
    model = dropout_models()[kind]
    x = np.random.default_rng(2).normal(1.0, 2.0, size=(40, 4)).astype(np.float32)
    bn = bnbook.bn_layers(model)[0]
    kernel = next(layer for layer in model._flatten_layers()
                  if isinstance(layer, keras.layers.Dense)).kernel.numpy().astype(np.float64)
    inputs = x.astype(np.float64) @ kernel         # what BN receives with Dropout off
    preview = bnbook.bn_input_statistics(model, x, batch_size=16)
    assert cn.same_arrays(bnbook.moving_stats(model), [np.zeros(6, np.float32),
                                                   np.ones(6, np.float32)])
    assert bnbook.recalibrate_bn(model, x, batch_size=16) == 1
    mean, variance = bnbook.moving_stats(model)
    assert np.allclose(mean, inputs.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert np.allclose(variance, inputs.var(axis=0), rtol=1e-5)
    assert cn.same_arrays(preview, [mean, variance])
    assert "call" not in bn.__dict__ and bn.momentum == 0.9 and bn.trainable


def test_recalibrate_honours_a_mask_and_restores_after_an_error():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.Masking(0.0),
                              keras.layers.BatchNormalization()])
    x = np.random.default_rng(4).normal(2.0, 1.5, size=(8, 5, 3)).astype(np.float32)
    x[:, 3:] = 0.0                                  # the last two steps are masked out
    x[0, 1:] = 0.0
    bnbook.recalibrate_bn(model, x, batch_size=3)
    kept = np.concatenate([x[0, :1], x[1:, :3].reshape(-1, 3)]).astype(np.float64)
    mean, variance = bnbook.moving_stats(model)
    assert np.allclose(mean, kept.mean(axis=0), rtol=1e-5)
    assert np.allclose(variance, kept.var(axis=0), rtol=1e-5)
    bn = bnbook.bn_layers(model)[0]
    with pytest.raises(Exception):                  # noqa: B017 - whatever Keras raises
        bnbook.recalibrate_bn(model, np.ones((2, 5, 4), np.float32))      # 4 features, not 3
    assert "call" not in bn.__dict__
    assert cn.same_arrays(bnbook.moving_stats(model), [mean, variance])


def test_accuracy_modes():
    x, y = small_problem(40)
    net = cn.make_cnn(filters=(4,), dense_units=8)
    stats = bnbook.moving_stats(net)
    assert 0.0 <= cn.accuracy(net, x, y, batch_size=16) <= 1.0
    assert cn.same_arrays(stats, bnbook.moving_stats(net))
    cn.accuracy(net, x, y, batch_size=16, training=True)
    assert not cn.same_arrays(stats, bnbook.moving_stats(net))
