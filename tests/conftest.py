import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import bnbook  # noqa: E402,F401  (imports TensorFlow quietly once for every test)
