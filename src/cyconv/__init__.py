"""cyconv: a small, fast CNN library.

- ``cyconv.ops``: compiled conv/pool kernels (OpenMP), NHWC and NCHW, float32 and float64.
- ``cyconv.reference``: the same functions in plain NumPy (the test oracle).
- ``cyconv.keras``: a Keras-style layer API that trains and runs image-recognition models.
"""

__version__ = "0.1.0"

from ._config import get_num_threads, set_num_threads, show_config  # noqa: E402
from . import ops, reference  # noqa: E402

__all__ = ["ops", "reference", "keras", "set_num_threads", "get_num_threads", "show_config",
           "__version__"]


def __getattr__(name):
    # cyconv.keras is imported on first use, so that `import cyconv` stays light; the seed
    # program reaches it as `tf.keras` after `import cyconv as tf`.
    if name == "keras":
        import importlib

        return importlib.import_module(".keras", __name__)
    raise AttributeError(f"module 'cyconv' has no attribute {name!r}")
