import numpy as np

from ._core import ExerciseMistake, as_array, call, checker


@checker("0.1")
def standardise(fn):
    __tracebackhide__ = True
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = as_array(call(fn, x), want_tensor=False)
    if not np.allclose(out, (x - x.mean(0)) / x.std(0), atol=1e-5):
        raise ExerciseMistake("values differ", "mean over axis 0")
    return "ok"
