"""bnbook.lessons.devices_deployment: logical devices (in a subprocess), moment merging, BN folding,
TFLite, timing.

Splitting the CPU into logical devices lasts for the whole process and must happen before
TensorFlow sets up its devices, so every test that needs two replicas runs in a fresh Python
process; this process (shared with the other tests) keeps its single CPU device.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import bnbook
from bnbook.lessons import devices_deployment as deploy

ROOT = Path(__file__).resolve().parent.parent


def run_fresh(code: str, timeout: int = 300) -> dict:
    """Run ``code`` in a fresh Python process; it prints one JSON object last."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- devices (subprocess) ---------------------------------------------------------------------

REPLICA_FACTS = """
    import json
    import bnbook
    from bnbook.lessons import devices_deployment as deploy
    devices = deploy.split_cpu(2)
    again = deploy.split_cpu(2)               # harmless
    bnbook.setup(seed=0)
    import numpy as np, tensorflow as tf, keras
    strategy = tf.distribute.MirroredStrategy(devices)
    batch = np.array([10.0] * 4 + [0.0] * 4, np.float32).reshape(8, 1)
    facts = {"devices": devices, "again": again, "replicas": strategy.num_replicas_in_sync}
    for synchronized in (False, True):
        with strategy.scope():
            layer = keras.layers.BatchNormalization(momentum=0.0, synchronized=synchronized)
            layer.build((None, 1))
        slices = next(iter(strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(batch).batch(8))))
        tf.function(lambda s: strategy.run(lambda x: layer(x, training=True), args=(s,)))(slices)
        facts[str(synchronized)] = {
            "read": [float(layer.moving_mean.numpy()[0]), float(layer.moving_variance.numpy()[0])],
            "copies": [float(c[0]) for c in deploy.local_values(strategy, layer.moving_mean)],
            "slices": [c.ravel().tolist() for c in deploy.local_values(strategy, slices)]}
    try:
        deploy.split_cpu(3)
        facts["late"] = "no error"
    except RuntimeError as err:
        facts["late"] = str(err)
    print(json.dumps(facts))
"""


@pytest.fixture(scope="module")
def replica_facts():
    return run_fresh(REPLICA_FACTS)


def test_two_logical_devices(replica_facts):
    assert replica_facts["devices"] == ["/device:CPU:0", "/device:CPU:1"]
    assert replica_facts["again"] == replica_facts["devices"]
    assert replica_facts["replicas"] == 2


def test_unsynchronized_bn_keeps_the_first_replicas_statistics(replica_facts):
    facts = replica_facts["False"]
    assert facts["slices"] == [[10.0] * 4, [0.0] * 4]
    assert facts["read"] == [10.0, 0.0]          # the measured fact
    assert facts["copies"] == [10.0, 0.0]        # each replica kept its own


def test_synchronized_bn_uses_the_whole_batch(replica_facts):
    assert replica_facts["True"]["read"] == pytest.approx([5.0, 25.0])
    assert replica_facts["True"]["copies"] == pytest.approx([5.0, 5.0])


def test_split_after_start_says_restart(replica_facts):
    assert "Restart the kernel" in replica_facts["late"]


def test_this_process_is_not_split():
    """The subprocess's split did not leak here (nor does importing the lesson module split)."""
    assert len(tf.config.list_logical_devices("CPU")) == 1


# --- moments ----------------------------------------------------------------------------------

def test_moments_from_sums_exact_on_the_lessons_batch():
    mean, variance = bnbook.moments_from_sums(8, np.float32(40.0), np.float32(400.0))
    assert (mean, variance) == (5.0, 25.0)


@pytest.mark.parametrize("counts, centre", [((5, 3), 0.0), ((7, 1, 4, 9), -3.0),
                                            ((64, 32, 48), 10_000.0)])
def test_merge_matches_tf_nn_moments_of_the_whole(counts, centre):
    rng = np.random.default_rng(len(counts))
    parts = [(centre + rng.normal(size=(n, 3))).astype(np.float32) for n in counts]
    means = [p.mean(axis=0, dtype=np.float64).astype(np.float32) for p in parts]
    variances = [p.var(axis=0, dtype=np.float64).astype(np.float32) for p in parts]
    mean, variance = bnbook.merge_replica_moments(list(counts), means, variances)
    want_mean, want_variance = tf.nn.moments(tf.constant(np.concatenate(parts)), axes=[0])
    assert mean.dtype == variance.dtype == np.float32
    np.testing.assert_allclose(mean, want_mean.numpy(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(variance, want_variance.numpy(), rtol=1e-3)


def test_textbook_sums_lose_float32_precision_at_a_large_mean():
    rng = np.random.default_rng(0)
    x = (10_000.0 + rng.normal(size=(96, 8))).astype(np.float32)
    truth = x.astype(np.float64).var(axis=0)
    _, naive = bnbook.moments_from_sums(np.float32(96), x.sum(axis=0), (x * x).sum(axis=0))
    assert np.max(np.abs(naive - truth) / truth) > 0.1


# --- folding ----------------------------------------------------------------------------------

def _trained_like(model, seed=0):
    deploy.randomize_bn_statistics(model, seed)
    return model


def test_fold_model_dense_and_conv():
    keras.utils.set_random_seed(0)
    dense = _trained_like(keras.Sequential([
        keras.Input((5,)), keras.layers.Dense(7), keras.layers.BatchNormalization(epsilon=0.01),
        keras.layers.ReLU(), keras.layers.Dense(3, use_bias=False),
        keras.layers.BatchNormalization(), keras.layers.Dense(2)]))
    conv = _trained_like(deploy.small_conv_net(seed=1, channels=4, size=12, classes=3))
    rng = np.random.default_rng(0)
    for model, x in ((dense, rng.normal(size=(6, 5))), (conv, rng.normal(size=(6, 12, 12, 1)))):
        x = x.astype(np.float32)
        folded = bnbook.fold_model(model)
        assert bnbook.has_bn(model) and not bnbook.has_bn(folded)
        assert len(folded.layers) == len(model.layers) - len(
            [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)])
        want = model(x, training=False).numpy()
        np.testing.assert_allclose(folded(x).numpy(), want, rtol=1e-5,
                                   atol=1e-5 * np.abs(want).max())


def test_fold_bn_per_output_channel_any_kernel():
    rng = np.random.default_rng(1)
    layer = keras.layers.Conv2D(3, (5, 2), padding="valid", use_bias=True)
    bn = keras.layers.BatchNormalization(epsilon=0.1)
    x = rng.normal(size=(2, 9, 8, 4)).astype(np.float32)
    bn(layer(x))
    deploy.randomize_bn_statistics(keras.Sequential([bn]), seed=2)
    layer.bias.assign(rng.normal(size=3).astype(np.float32))
    kernel, bias = bnbook.fold_bn(layer.kernel.numpy(), layer.bias.numpy(), *bnbook.bn_arrays(bn))
    folded = keras.layers.Conv2D(3, (5, 2), padding="valid")
    folded.build(x.shape)
    folded.set_weights([kernel, bias])
    np.testing.assert_allclose(folded(x).numpy(), bn(layer(x), training=False).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_fold_model_refuses_a_bn_it_cannot_fold():
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(),
                              keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="first layer"):
        bnbook.fold_model(model)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.ReLU(),
                              keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="does not follow a Dense or Conv2D"):
        bnbook.fold_model(model)


def test_fold_model_refuses_to_fold_through_an_activation():
    """Dense(relu) -> BN: folding the BN's scale and shift into the kernel would move them before
    the ReLU, which changes the outputs (by up to 2.4 on this model)."""
    keras.utils.set_random_seed(0)
    model = _trained_like(keras.Sequential([
        keras.Input((5,)), keras.layers.Dense(16, activation="relu"),
        keras.layers.BatchNormalization(), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="activation 'relu'"):
        bnbook.fold_model(model)
    linear = _trained_like(keras.Sequential([
        keras.Input((5,)), keras.layers.Dense(16, activation="linear"),
        keras.layers.BatchNormalization(), keras.layers.Dense(2)]))
    assert not bnbook.has_bn(bnbook.fold_model(linear))


@pytest.mark.parametrize("layer", [keras.layers.DepthwiseConv2D(3),
                                   keras.layers.Conv2DTranspose(4, 3),
                                   keras.layers.SeparableConv2D(4, 3)])
def test_fold_model_names_kernels_with_the_channel_elsewhere(layer):
    model = keras.Sequential([keras.Input((8, 8, 2)), layer, keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="another axis"):
        bnbook.fold_model(model)


def test_fold_model_refuses_a_bn_over_another_axis():
    model = keras.Sequential([keras.Input((6, 5)), keras.layers.Dense(4),
                              keras.layers.BatchNormalization(axis=1)])
    with pytest.raises(ValueError, match="not the channel axis"):
        bnbook.fold_model(model)


# --- toolchain and timing ---------------------------------------------------------------------

def test_quiet_stderr_silences_file_descriptor_2(capfd):
    with deploy.quiet_stderr():
        os.write(2, b"C++ log line\n")
        print("python stderr", file=sys.stderr)
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_tflite_folds_bn_away():
    model = _trained_like(deploy.small_conv_net(seed=0, channels=4, size=12, classes=3))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with deploy.quiet_stderr():
        flat_buffer = converter.convert()
    ops = deploy.tflite_ops(flat_buffer)
    assert ops.count("CONV_2D") == 2 and "FULLY_CONNECTED" in ops
    assert not {"MUL", "ADD", "SUB", "RSQRT", "SQRT", "DIV"} & set(ops)
    x = np.random.default_rng(0).normal(size=(3, 12, 12, 1)).astype(np.float32)
    np.testing.assert_allclose(deploy.tflite_predict(flat_buffer, x), model(x).numpy(),
                               rtol=1e-4, atol=1e-4)


def test_bench_ratios_are_labelled_positive_numbers():
    ratios = deploy.bench_ratios(repeats=2)
    assert [label.startswith("ch09 ") for label, _ in ratios] == [True, True]
    assert all(isinstance(ratio, float) and ratio > 0 for _, ratio in ratios)


# --- integer quantization -------------------------------------------------------------------------

def test_fake_quantize_per_tensor_and_per_channel():
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 3, 2, 4))
    kernel[..., 1] *= 0.001                        # a channel 1000x smaller than the others
    per_tensor, per_channel = deploy.fake_quantize(kernel, False), deploy.fake_quantize(kernel, True)
    step = np.abs(kernel).max() / 127
    assert np.allclose(per_tensor / step, np.round(per_tensor / step))          # on the grid
    assert np.abs(per_tensor - kernel).max() <= step / 2 + 1e-12
    assert not per_tensor[..., 1].any()                 # the small channel rounds to 0
    relative = np.abs(per_channel[..., 1] - kernel[..., 1]).max() / np.abs(kernel[..., 1]).max()
    assert relative <= 0.5 / 127 + 1e-12


def test_int8_conversion_quantizes_conv_kernels_per_channel():
    model = _trained_like(deploy.small_conv_net(seed=2, channels=4, size=12, classes=3))
    images = np.random.default_rng(0).uniform(size=(40, 12, 12, 1)).astype(np.float32)
    int8 = deploy.to_int8_tflite(model, images)
    scales = deploy.int8_kernel_scales(int8)
    assert len(scales) == 2 and all(k["scales"] == 4 and k["axis"] == 0 for k in scales)
    out = deploy.tflite_predict(int8, images[:8])
    want = model(images[:8], training=False).numpy()
    assert out.dtype == np.float32 and out.shape == want.shape
    assert np.abs(out - want).max() < 0.3 * np.abs(want).max()
