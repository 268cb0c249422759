"""Helper package of the book *Batch Normalization in TensorFlow*.

Import it before TensorFlow: importing it sets ``TF_CPP_MIN_LOG_LEVEL`` so that TensorFlow's C++
start-up lines never reach a notebook's output. Then call :func:`setup` once per notebook.

Three parts:

* the practitioner API, for your own Keras models; every name is also on ``bnbook`` itself
  (``bnbook.recalibrate_bn(model, x)``), and importing it loads no lesson helper:
    bnbook.statistics -- bn_layers, moving_stats, recalibrate_bn, bn_input_statistics,
                         merge_moments, merge_replica_moments, moments_from_sums
    bnbook.folding    -- fold_bn, fold_model, bn_arrays, has_bn
    bnbook.doctor     -- examine(model, x): a BN check-up, and ``python -m bnbook.doctor``
* the lesson helpers, one module per chapter, named after the notebook it serves
  (``notebooks/NN_<name>.ipynb`` uses ``bnbook.lessons.<name>``), plus the shared
  ``bnbook.lessons.data`` (MNIST) and ``bnbook.lessons.plots`` (figures);
* the checks, ``bnbook.checks.chNN``, which exercise notebooks call after each exercise.
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

# The practitioner API, loaded on first use (PEP 562): `python -m bnbook.doctor` must find
# bnbook.doctor not yet imported, and `import bnbook` stays as light as it was.
_API = {"examine": "doctor", "Finding": "doctor", "Report": "doctor",
        "bn_layers": "statistics", "moving_stats": "statistics", "recalibrate_bn": "statistics",
        "bn_input_statistics": "statistics", "merge_moments": "statistics",
        "merge_replica_moments": "statistics", "moments_from_sums": "statistics",
        "fold_bn": "folding", "fold_model": "folding", "bn_arrays": "folding", "has_bn": "folding"}

__all__ = ["setup", *_API]


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])


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
