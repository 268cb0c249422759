"""BN across devices and in deployment (chapter 9): logical devices, moment merging, folding, timing.

The chapter runs ``tf.distribute.MirroredStrategy`` on one CPU split into logical devices, so
every reader can watch replicas at work without a GPU. :func:`split_cpu` must run before
TensorFlow creates its first tensor (it raises a clear error otherwise); the split lasts for the
whole process, so tests that need it run in a subprocess.

Sections:
    devices    -- split_cpu, local_values
    data       -- two_clusters, one_class_per_replica, shuffled_batches
    training   -- train_replicated (a small Dense -> BN -> ReLU -> Dense net under a strategy)
    (moment merging and folding are the practitioner API's: bnbook.statistics, bnbook.folding)
    toolchain  -- quiet_stderr, tflite_ops
    timing     -- inference_seconds, bench_ratios (printed by ``make bench``)
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from ..folding import fold_model

BatchNorm = keras.layers.BatchNormalization


# --- devices ------------------------------------------------------------------------------------

def split_cpu(replicas: int = 2) -> list[str]:
    """Split the CPU into ``replicas`` logical devices and return their names.

    TensorFlow fixes its devices when it first needs them (the first tensor, the first list of
    logical devices), so call this right after ``import bnbook``, before anything else. Calling it
    again with the same number is harmless.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError:
        current = tf.config.get_logical_device_configuration(cpu) or [None]
        if len(current) != replicas:
            raise RuntimeError(
                f"TensorFlow has already set up its devices ({len(current)} logical CPU), so it "
                f"cannot be split into {replicas} any more. Restart the kernel and call "
                "split_cpu() right after `import bnbook`, before anything creates a tensor."
            ) from None
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def local_values(strategy, value) -> list[np.ndarray]:
    """The per-replica parts of a distributed value or the per-replica copies of a variable."""
    if isinstance(value, keras.Variable):
        value = value.value
    return [np.asarray(part) for part in strategy.experimental_local_results(value)]


# --- data ---------------------------------------------------------------------------------------

def two_clusters(n: int, seed: int = 0, n_features: int = 4, distance: float = 2.0):
    """Two Gaussian classes of equal size (class 0 first), unit spread, centres ``distance`` apart
    along every feature. Returns float32 x (n, n_features) and int32 y (n,)."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2).astype(np.int32)
    centres = np.stack([np.zeros(n_features), np.full(n_features, distance)]).astype(np.float32)
    centres[1, n_features // 2:] *= -1          # half the features rise with the class, half fall
    x = centres[y] + rng.normal(size=(len(y), n_features))
    return x.astype(np.float32), y


def one_class_per_replica(x, y, per_replica: int, seed: int = 0):
    """Global batches of ``2 * per_replica`` examples: first ``per_replica`` of class 0, then as
    many of class 1. MirroredStrategy hands each replica a consecutive slice of every global
    batch, so replica 0 only ever sees class 0 and replica 1 only class 1 (as when each device
    reads its own shard of data sorted by source)."""
    rng = np.random.default_rng(seed)
    zeros, ones = rng.permutation(np.flatnonzero(y == 0)), rng.permutation(np.flatnonzero(y == 1))
    order = np.concatenate([np.concatenate([zeros[k:k + per_replica], ones[k:k + per_replica]])
                            for k in range(0, min(len(zeros), len(ones)), per_replica)])
    return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(2 * per_replica)


def shuffled_batches(x, y, batch_size: int, seed: int = 0):
    """The same data in one fixed random order: every replica's slice mixes both classes."""
    order = np.random.default_rng(seed).permutation(len(x))
    return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(batch_size)


# --- training -----------------------------------------------------------------------------------

def train_replicated(strategy, dataset, synchronized: bool, epochs: int = 2, seed: int = 1,
                     n_features: int = 4, units: int = 16, learning_rate: float = 0.1):
    """Build Dense(no bias) -> BN -> ReLU -> Dense(2) under ``strategy`` and ``fit`` it on
    ``dataset`` (already batched with global batches). Returns the trained model."""
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = keras.Sequential([
            keras.Input((n_features,)),
            keras.layers.Dense(units, use_bias=False),
            BatchNorm(momentum=0.9, synchronized=synchronized),
            keras.layers.ReLU(),
            keras.layers.Dense(2),
        ])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    model.fit(dataset, epochs=epochs, shuffle=False, verbose=0)
    return model


def small_conv_net(seed: int = 0, channels: int = 16, size: int = 28, classes: int = 10):
    """Two blocks Conv2D(3x3, stride 2, no bias) -> BN -> ReLU, then Flatten and Dense logits."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((size, size, 1)),
        keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False),
        BatchNorm(momentum=0.9), keras.layers.ReLU(),
        keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False),
        BatchNorm(momentum=0.9), keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(classes),
    ], name="conv_bn_net")


def randomize_bn_statistics(model, seed: int = 0) -> None:
    """Give every BN layer non-trivial gamma, beta and moving statistics (as if trained)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            size = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype(np.float32))
            layer.beta.assign(rng.normal(0.0, 0.5, size).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0.0, 0.5, size).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype(np.float32))


# --- toolchain ----------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_stderr():
    """Silence everything written to standard error for the duration: file descriptor 2, Python's
    ``sys.stderr`` and Python warnings.

    The TFLite converter and interpreter log from C++ (MLIR passes, deprecation notices) straight
    to file descriptor 2, below Python, where ``contextlib.redirect_stderr`` alone cannot reach.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tflite_interpreter(tflite_bytes):
    """A TFLite interpreter for a converted model, tensors allocated (quietly)."""
    with quiet_stderr():
        interpreter = tf.lite.Interpreter(model_content=tflite_bytes)
        interpreter.allocate_tensors()
    return interpreter


def tflite_ops(tflite_bytes) -> list[str]:
    """The op names of a converted TFLite model, in execution order, as the converter wrote them
    (read before the interpreter hands ops to a delegate such as XNNPACK)."""
    with quiet_stderr():
        interpreter = tf.lite.Interpreter(model_content=tflite_bytes)
    return [op["op_name"] for op in interpreter._get_ops_details()]


def tflite_predict(tflite_bytes, x):
    """Run a converted single-input, single-output model on ``x``, one example at a time.

    A model converted with integer input and output (:func:`to_int8_tflite`) gets its input
    quantized with the input tensor's scale and zero point, and its output dequantized, so the
    result is float32 logits either way."""
    interpreter = tflite_interpreter(tflite_bytes)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = source["quantization"]
    out_scale, out_zero = target["quantization"]
    outputs = []
    for example in x:
        example = example[None].astype(np.float32)
        if source["dtype"] == np.int8:
            example = np.clip(np.round(example / in_scale + in_zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(source["index"], example)
        interpreter.invoke()
        output = interpreter.get_tensor(target["index"])[0].astype(np.float32)
        if target["dtype"] == np.int8:
            output = (output - out_zero) * out_scale
        outputs.append(output)
    return np.stack(outputs)


# --- porting from PyTorch -----------------------------------------------------------------------
# PyTorch's BatchNorm2d keeps weight (gamma), bias (beta), running_mean, running_var and
# num_batches_tracked; eps defaults to 1e-5 and momentum to 0.1, where momentum is the weight of
# the NEW batch (Keras' momentum is the weight of the OLD value, default 0.99); its running_var
# averages the UNBIASED batch variance (Keras' the biased one); its images are channels first.

PYTORCH_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def pytorch_bn_reference(x, state, *, eps: float = 1e-5, momentum: float = 0.1,
                         training: bool = False, channel_axis: int = 1):
    """PyTorch's documented BatchNorm semantics in NumPy (float64), for checking a port.

    ``state``: a dict with :data:`PYTORCH_BN_KEYS`. Statistics are per channel (``channel_axis``,
    1 for PyTorch's NCHW images) over every other axis. Inference: ``(x - running_mean) /
    sqrt(running_var + eps) * weight + bias``. Training: the batch mean and biased variance
    normalise, and the running statistics move ``momentum`` of the way to the batch mean and the
    UNBIASED batch variance. Returns ``(output, new_state)``."""
    x = np.asarray(x, np.float64)
    axes = tuple(a for a in range(x.ndim) if a != channel_axis % x.ndim)
    shape = [1] * x.ndim
    shape[channel_axis] = -1

    def per_channel(v):
        return np.asarray(v, np.float64).reshape(shape)

    state = dict(state)
    if training:
        count = x.size // x.shape[channel_axis]
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        state["running_mean"] = (1 - momentum) * np.asarray(state["running_mean"]) + momentum * mean
        state["running_var"] = ((1 - momentum) * np.asarray(state["running_var"])
                                + momentum * var * count / (count - 1))
        state["num_batches_tracked"] = int(state["num_batches_tracked"]) + 1
    else:
        mean, var = state["running_mean"], state["running_var"]
    output = (x - per_channel(mean)) / np.sqrt(per_channel(var) + eps) * per_channel(
        state["weight"]) + per_channel(state["bias"])
    return output, state


# --- integer quantization -----------------------------------------------------------------------

def to_int8_tflite(model, representative, batch_size: int = 20) -> bytes:
    """Post-training full-integer quantization: a TFLite model whose weights, activations, input
    and output are int8. ``representative`` is a few hundred typical inputs: the converter runs
    them through the float model to choose each activation's int8 range (offline, no labels)."""
    def batches():
        for start in range(0, len(representative), batch_size):
            yield [np.asarray(representative[start:start + batch_size], np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = batches
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with quiet_stderr():
        return converter.convert()


def int8_kernel_scales(tflite_bytes) -> list[dict]:
    """For every 4-D int8 tensor of a quantized model that is a convolution kernel (a constant):
    its name, shape, the number of scales it is quantized with and the axis they run along
    (TFLite stores conv kernels as (output channels, height, width, input channels))."""
    interpreter = tflite_interpreter(tflite_bytes)
    activations = {d["index"] for d in interpreter.get_input_details()}
    for op in interpreter._get_ops_details():
        activations.update(op["outputs"])
    kernels = []
    for tensor in interpreter.get_tensor_details():
        if tensor["dtype"] == np.int8 and len(tensor["shape"]) == 4 \
                and tensor["index"] not in activations:
            quantization = tensor["quantization_parameters"]
            kernels.append({"name": tensor["name"], "shape": tuple(int(n) for n in tensor["shape"]),
                            "scales": len(quantization["scales"]),
                            "axis": int(quantization["quantized_dimension"])})
    return kernels


def fake_quantize(kernel, per_channel: bool, bits: int = 8) -> np.ndarray:
    """A kernel rounded to symmetric signed integers and back, as int8 inference sees it.

    Per tensor: one scale, ``max|kernel| / 127``, for the whole kernel. Per channel: one scale
    per output channel (the last axis, Keras' layout), from that channel's own largest value.
    """
    kernel = np.asarray(kernel, np.float64)
    levels = 2 ** (bits - 1) - 1
    largest = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0) if per_channel \
        else np.abs(kernel).max()
    scale = np.where(largest > 0, largest, 1.0) / levels
    return np.clip(np.round(kernel / scale), -levels, levels) * scale


# --- timing -------------------------------------------------------------------------------------

def inference_seconds(models, x, repeats: int = 20) -> list[float]:
    """Median seconds of one compiled inference-mode call of each model on the batch ``x``.

    The models take turns, call by call, so that a change in the machine's load during the
    measurement slows them all alike.
    """
    calls = [tf.function(lambda batch, model=model: model(batch, training=False))
             for model in models]
    for call in calls:
        call(x)                                 # trace and warm up once
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, seconds in zip(calls, times):
            start = time.perf_counter()
            call(x).numpy()
            seconds.append(time.perf_counter() - start)
    return [float(np.median(seconds)) for seconds in times]


def bench_ratios(repeats: int = 30) -> list[tuple[str, float]]:
    """(label, unfolded seconds / folded seconds) for the chapter's two folding examples.

    ``make bench`` prints these; above 1 means folding BN away made inference faster.
    """
    rng = np.random.default_rng(0)
    conv = small_conv_net(seed=0)
    randomize_bn_statistics(conv, seed=1)
    images = rng.normal(size=(64, 28, 28, 1)).astype(np.float32)

    keras.utils.set_random_seed(0)
    dense = keras.Sequential([keras.Input((256,)),
                              keras.layers.Dense(512, use_bias=False), BatchNorm(),
                              keras.layers.ReLU(),
                              keras.layers.Dense(512, use_bias=False), BatchNorm(),
                              keras.layers.ReLU(), keras.layers.Dense(10)])
    randomize_bn_statistics(dense, seed=2)
    vectors = rng.normal(size=(256, 256)).astype(np.float32)

    ratios = []
    for label, model, x in (("ch09 conv net, batch 64: unfolded / folded inference time", conv,
                             images),
                            ("ch09 dense net, batch 256: unfolded / folded inference time", dense,
                             vectors)):
        unfolded_seconds, folded_seconds = inference_seconds([model, fold_model(model)], x,
                                                             repeats)
        ratios.append((label, unfolded_seconds / folded_seconds))
    return ratios
