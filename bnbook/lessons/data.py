"""The MNIST loader used by every chapter.

Order of preference:
1. an explicit ``path`` argument;
2. the environment variable ``MNIST_NPZ`` (CI and ``make`` set it to ``../shared/data/mnist.npz``);
3. Keras' own download (``keras.datasets.mnist.load_data()``), which needs internet once and then
   reads its cache in ``~/.keras/datasets``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ENV_VAR = "MNIST_NPZ"
KEYS = ("x_train", "y_train", "x_test", "y_test")
SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28),
          "y_test": (10000,)}


class MNISTUnavailableError(RuntimeError):
    """Raised when MNIST can be neither read from a file nor downloaded."""


HOW_TO_FIX = (
    "MNIST could not be loaded.\n"
    "  * With internet access, keras.datasets.mnist.load_data() downloads it once (about 11 MB).\n"
    "  * Offline, point the book at a copy of mnist.npz in Keras' layout (arrays x_train, y_train,\n"
    "    x_test, y_test): set the environment variable MNIST_NPZ before starting Jupyter, e.g.\n"
    "        export MNIST_NPZ=/path/to/mnist.npz\n"
    "    or pass it directly: load_mnist(path='/path/to/mnist.npz')."
)


def _read_npz(path: Path):
    if not path.is_file():
        raise MNISTUnavailableError(
            f"{ENV_VAR} or path names a file that does not exist: {path.name!r}.\n" + HOW_TO_FIX
        )
    with np.load(path) as data:
        missing = [k for k in KEYS if k not in data.files]
        if missing:
            raise MNISTUnavailableError(
                f"{path.name!r} is not MNIST in Keras' layout: it lacks {missing}.\n" + HOW_TO_FIX
            )
        arrays = {k: data[k] for k in KEYS}
    for key, shape in SHAPES.items():
        if arrays[key].shape != shape:
            raise MNISTUnavailableError(
                f"{path.name!r}: {key} has shape {arrays[key].shape}, expected {shape} "
                "(the full MNIST)."
            )
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def load_mnist(path: str | os.PathLike | None = None):
    """Return ``(x_train, y_train), (x_test, y_test)`` exactly as ``keras.datasets.mnist`` does.

    Images are uint8 arrays of shape (n, 28, 28) with values 0..255; labels are uint8 0..9.
    """
    if path is None and os.environ.get(ENV_VAR):
        path = os.environ[ENV_VAR]
    if path is not None:
        return _read_npz(Path(path).expanduser())
    import keras

    try:
        return keras.datasets.mnist.load_data()
    except Exception as err:  # noqa: BLE001 - any download failure gets the same advice
        raise MNISTUnavailableError(
            f"Keras could not download MNIST ({type(err).__name__}).\n" + HOW_TO_FIX
        ) from None


def mnist_flat(path: str | os.PathLike | None = None):
    """MNIST as float32 vectors in [0, 1] (shape (n, 784)) with int64 labels, for dense networks."""
    (x_train, y_train), (x_test, y_test) = load_mnist(path)
    def flat(x):
        return (x.reshape(len(x), -1) / 255.0).astype(np.float32)
    return (flat(x_train), y_train.astype(np.int64)), (flat(x_test), y_test.astype(np.int64))
