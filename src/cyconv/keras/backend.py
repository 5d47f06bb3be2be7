"""The few global settings Keras keeps in ``keras.backend`` / ``keras.config``.

``floatx()`` is the dtype layers are built in and inputs are cast to (float32, as Keras);
``epsilon()`` is the fuzz factor cross-entropies clip probabilities with (1e-7, as Keras);
``image_data_format()`` is the default ``data_format`` of image layers ("channels_last").
"""

from __future__ import annotations

import numpy as np

__all__ = ["floatx", "set_floatx", "epsilon", "set_epsilon", "image_data_format",
           "set_image_data_format", "standardize_data_format", "standardize_dtype"]

_FLOATX = "float32"
_EPSILON = 1e-7
_IMAGE_DATA_FORMAT = "channels_last"
_FLOAT_DTYPES = ("float32", "float64")


def floatx():
    """The default float dtype, as a string ("float32" unless set_floatx changed it)."""
    return _FLOATX


def set_floatx(value):
    global _FLOATX
    _FLOATX = standardize_dtype(value)


def standardize_dtype(value):
    """"float32" or "float64" from any spelling numpy understands; anything else is refused,
    because the kernels exist for these two only."""
    try:
        name = np.dtype(value).name
    except TypeError:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {value!r}") from None
    if name not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {value!r}")
    return name


def epsilon():
    return _EPSILON


def set_epsilon(value):
    global _EPSILON
    _EPSILON = float(value)


def image_data_format():
    return _IMAGE_DATA_FORMAT


def set_image_data_format(value):
    global _IMAGE_DATA_FORMAT
    _IMAGE_DATA_FORMAT = standardize_data_format(value)


def standardize_data_format(value):
    """None -> image_data_format(); otherwise "channels_last" or "channels_first" (any case)."""
    if value is None:
        return _IMAGE_DATA_FORMAT
    fmt = str(value).lower()
    if fmt not in ("channels_last", "channels_first"):
        raise ValueError("data_format must be 'channels_last' or 'channels_first', "
                         f"got {value!r}")
    return fmt
