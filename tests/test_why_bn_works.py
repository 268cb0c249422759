"""Chapter 11's helpers: the side-by-side MLPs, the ICS and along-the-gradient measurements, the
depth probe and the dropout models. Small inputs, a few seconds in all."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnbook.lessons import why_bn_works as wb

SIZES = (12, 8, 8, 3)


def batch(seeds, n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], size=n).astype(np.int64)
    return (tf.constant(np.broadcast_to(x, (len(seeds), n, SIZES[0]))),
            tf.constant(np.broadcast_to(y, (len(seeds), n))))


@pytest.mark.parametrize("kind", wb.KINDS)
def test_each_seed_computes_what_it_would_alone(kind):
    x, _ = batch((0, 3))
    stack = wb.StackedMLP(kind, (0, 3), SIZES)
    alone = wb.StackedMLP(kind, (3,), SIZES)
    both = stack.forward(stack.params, x).numpy()
    single = alone.forward(alone.params, x[1:]).numpy()
    np.testing.assert_allclose(both[1], single[0], rtol=1e-5, atol=1e-6)


def test_bn_normalises_each_seed_and_unit_in_training_mode():
    x, _ = batch((0, 1), n=64)
    net = wb.StackedMLP("bn", (0, 1), SIZES)
    record = []
    net.forward(net.params, x, record=record)
    z = record[0].numpy()                                # gamma 1, beta 0 at the start
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-5)
    assert np.all(np.abs(z.std(axis=1) - 1) < 0.01)


def test_noise_is_fixed_by_the_step_and_only_for_noisy_bn():
    net = wb.StackedMLP("noisy bn", (0, 1), SIZES)
    first, again, other = net.noise(5), net.noise(5), net.noise(6)
    np.testing.assert_array_equal(first[0][0].numpy(), again[0][0].numpy())
    assert not np.array_equal(first[0][0].numpy(), other[0][0].numpy())
    scale, shift = first[1]
    assert np.all(scale.numpy() >= 1 / wb.NOISE_SCALE) and np.all(scale.numpy() <= wb.NOISE_SCALE)
    assert np.all(np.abs(shift.numpy()) <= wb.NOISE_SHIFT)
    assert wb.StackedMLP("bn", (0,), SIZES).noise(5) is None


def test_ics_is_zero_without_a_step_and_changes_nothing():
    x, y = batch((0, 1))
    net = wb.StackedMLP("bn", (0, 1), SIZES)
    before = [v.numpy() for v in net.params]
    distance, relative, cosine = wb.ics(net, x, y, layer=1, learning_rate=0.0)
    np.testing.assert_allclose(distance.numpy(), 0, atol=1e-7)
    np.testing.assert_allclose(cosine.numpy(), 1, atol=1e-5)
    distance, relative, cosine = wb.ics(net, x, y, layer=1, learning_rate=0.5)
    assert np.all(distance.numpy() > 0) and np.all(cosine.numpy() < 1)
    assert np.all(relative.numpy() > 0)
    for variable, value in zip(net.params, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_ics_of_the_first_layer_is_zero():
    """Nothing is below the first layer: its gradient cannot change."""
    x, y = batch((0,))
    net = wb.StackedMLP("plain", (0,), SIZES)
    distance, _, _ = wb.ics(net, x, y, layer=0, learning_rate=1.0)
    np.testing.assert_allclose(distance.numpy(), 0, atol=1e-7)


def test_along_gradient_one_step_and_beta():
    x, y = batch((0, 1))
    net = wb.StackedMLP("plain", (0, 1), SIZES)
    one = wb.along_gradient(net, x, y, [0.1])
    np.testing.assert_allclose(one["loss variation"], 0, atol=1e-7)
    np.testing.assert_allclose(one["beta"], one["gradient predictiveness"]
                               / (0.1 * one["gradient norm"]), rtol=1e-5)
    small = wb.along_gradient(net, x, y, [1e-4, 2e-4])
    big = wb.along_gradient(net, x, y, [0.1, 0.5])
    assert np.all(small["gradient predictiveness"] < big["gradient predictiveness"])


def test_percentile_movement():
    rng = np.random.default_rng(0)
    still = np.broadcast_to(rng.standard_normal(200), (5, 2, 200))
    np.testing.assert_allclose(wb.percentile_movement(still), 0)
    moving = still + np.arange(5)[:, None, None]          # shifts by 1 every record
    spread = np.percentile(still[0, 0], 85) - np.percentile(still[0, 0], 15)
    np.testing.assert_allclose(wb.percentile_movement(moving), 1 / spread, rtol=1e-6)


def test_train_records_every_measurement():
    (x_train, y_train), (x_test, y_test) = wb.mnist_flat_subsample(256, 64)
    net = wb.StackedMLP("bn", (0, 1), (784, 16, 10))
    record = wb.train(net, (x_train, y_train), (x_test, y_test), steps=20, learning_rate=0.1,
                      record_every=10, probe=x_test[:32], unit=(0, 3), ics_layer=0,
                      step_sizes=[0.1])
    assert record.steps == [0, 10, 20]
    assert record.array("accuracy").shape == (3, 2)
    assert record.array("unit").shape == (3, 2, 32)
    assert record.array("ics").shape == (3, 3, 2)
    assert len(record.smoothness) == 3
    assert np.mean(record.array("accuracy")[-1]) > np.mean(record.array("accuracy")[0])


def test_depth_probe():
    rng = np.random.default_rng(0)
    x = rng.random((32, 20)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    norms = wb.input_gradient_norms("residual bn, gamma 0", 5, x, y, seeds=(0, 1), width=8)
    assert norms.shape == (2, 5)
    np.testing.assert_allclose(norms / norms[:, :1], 1, rtol=1e-5)
    bn = wb.input_gradient_norms("bn", 12, x, y, seeds=(0, 1), width=16)
    assert np.all(bn[:, 0] > bn[:, -1])
    with pytest.raises(ValueError):
        wb.input_gradient_norms("layer norm", 3, x, y)


def test_dropout_models_and_bn_inputs():
    before = wb.dropout_mlp("before bn", units=8, seed=0)
    after = wb.dropout_mlp("after last bn", units=8, seed=0)
    dropouts = [sum(isinstance(layer, keras.layers.Dropout) for layer in m.layers)
                for m in (before, after)]
    assert dropouts == [3, 1]
    x = np.random.default_rng(0).random((32, 784)).astype(np.float32)
    stored = [v.numpy() for v in before.non_trainable_variables]
    inference = wb.bn_inputs(before, x)
    training = wb.bn_inputs(before, x, training=True)
    assert [h.shape for h in inference] == [(32, 8)] * 3
    np.testing.assert_array_equal(inference[0], training[0])        # no dropout before BN 1
    assert not np.array_equal(inference[1], training[1])
    for variable, value in zip(before.non_trainable_variables, stored):
        np.testing.assert_array_equal(variable.numpy(), value)
    with pytest.raises(ValueError):
        wb.dropout_mlp("everywhere")


def test_ghost_batches_normalise_each_sub_batch():
    x, _ = batch((0, 1), n=16)
    whole = wb.StackedMLP("bn", (0, 1), SIZES, ghost=16)
    plain_bn = wb.StackedMLP("bn", (0, 1), SIZES)
    np.testing.assert_allclose(whole.forward(whole.params, x).numpy(),
                               plain_bn.forward(plain_bn.params, x).numpy(), rtol=1e-5, atol=1e-6)
    ghost = wb.StackedMLP("bn", (0, 1), SIZES, ghost=4)
    record, stats = [], []
    ghost.forward(ghost.params, x, record=record, stats=stats)
    groups = record[0].numpy().reshape(2, 4, 4, -1)          # (seeds, ghost batches, 4, units)
    np.testing.assert_allclose(groups.mean(axis=2), 0, atol=1e-5)
    assert stats[0][0].shape == (2, SIZES[1])
