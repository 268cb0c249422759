"""Helper package of the book *Batch Normalization in TensorFlow*.

Import it before TensorFlow: importing it sets ``TF_CPP_MIN_LOG_LEVEL`` so that TensorFlow's C++
start-up lines never reach a notebook's output. Then call :func:`setup` once per notebook.

Modules:
    bnbook.data        -- ``load_mnist()`` (explicit path, ``MNIST_NPZ`` or Keras' download)
    bnbook.mnist_mlp   -- the classic MNIST experiment's data, weights and training loop (ch. 2-3)
    bnbook.keras_demos -- small data sets and models for the Keras layer chapter (ch. 4)
    bnbook.tf1_demos   -- TF1-style graph building blocks (ch. 5)
    bnbook.convnets    -- subsampled NHWC MNIST, small CNNs and ResNets, training, recalibration (ch. 6)
    bnbook.backward    -- BN's backward pass, a custom-gradient op, gradient checks, timing (ch. 7)
    bnbook.small_batch -- the batch-size sweep, batch renorm, ghost batches, sequences (ch. 8)
    bnbook.deploy      -- logical devices, moment merging, BN folding, TFLite, timing (ch. 9)
    bnbook.doctor      -- a BN check-up of any Keras model: examine(model, x) and its command line
    bnbook.plots       -- the book's figures
    bnbook.checks      -- the checkers that exercise notebooks call after each exercise
"""

import os

# Must happen before TensorFlow is imported anywhere: silences its C++ log lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null.

    TF 2.21 writes "Could not find cuda drivers" through absl *before* its logging is set up, so
    TF_CPP_MIN_LOG_LEVEL cannot silence it; in Jupyter those lines would land in the stored output.
    """
    import sys

    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

__all__ = ["setup"]


def setup(seed: int = 0) -> None:
    """Make a notebook quiet and repeatable: seeds, deterministic ops, no log noise, PNG figures."""
    import logging
    import warnings

    import matplotlib as mpl

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("absl").setLevel(logging.ERROR)

    import keras
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    keras.utils.set_random_seed(seed)  # seeds Python's random, NumPy and TensorFlow at once
    tf.config.experimental.enable_op_determinism()
    if hasattr(keras.utils, "disable_interactive_logging"):
        keras.utils.disable_interactive_logging()  # no progress bars in stored outputs

    mpl.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (6.4, 3.6)})
    try:  # inside IPython: store figures as PNG only (SVG embeds a date and never matches nbval)
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except Exception:  # noqa: BLE001 - plain Python has no inline backend; nothing to configure
        pass
