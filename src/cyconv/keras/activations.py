"""Elementwise activations, by name or as these functions, with the gradients layers need.

Each activation's gradient is written in terms of its output ``y`` (all five allow it), so a
layer keeps only its output for the backward pass.  ``softmax`` and ``sigmoid`` outputs also
mark a model whose cross-entropy Keras computes from the logits (see models.py).
"""

from __future__ import annotations

import numpy as np

from .. import ops

__all__ = ["relu", "sigmoid", "tanh", "softmax", "linear", "get", "serialize", "deserialize"]


def relu(x):
    return np.maximum(x, 0, dtype=x.dtype)


def sigmoid(x):
    # exp of a negative argument only, so large |x| neither overflows nor warns.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def tanh(x):
    return np.tanh(x)


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def linear(x):
    return x


_BY_NAME = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax,
            "linear": linear}


def get(identifier):
    """None, a name or one of this module's functions -> the function (None means linear)."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        fn = _BY_NAME.get(identifier.lower())
        if fn is None:
            raise ValueError(f"Could not interpret activation function identifier: "
                             f"{identifier!r}; known: {', '.join(sorted(_BY_NAME))}")
        return fn
    if callable(identifier):
        if identifier in _BY_NAME.values():
            return identifier
        raise ValueError(
            f"activation {identifier!r} is a callable cyconv cannot differentiate; use one of "
            f"{', '.join(sorted(_BY_NAME))} (by name or from cyconv.keras.activations)")
    raise ValueError(f"Could not interpret activation function identifier: {identifier!r}")


def serialize(fn):
    return fn.__name__


def deserialize(name):
    return get(name)


def backward(fn, y, dy, axis=-1):
    """Gradient with respect to the activation's input, from its output ``y``.

    ``dy`` is overwritten when that saves an allocation: callers pass gradients they own.
    """
    if fn is linear:
        return dy
    if fn is relu:
        if dy.flags.c_contiguous and dy.flags.writeable and dy.dtype == y.dtype:
            return ops.relu_backward(dy, y, out=dy)
        return np.multiply(dy, y > 0, out=dy)
    if fn is sigmoid:
        dy *= y
        dy *= 1 - y
        return dy
    if fn is tanh:
        dy *= 1 - y * y
        return dy
    if fn is softmax:
        s = np.sum(dy * y, axis=axis, keepdims=True)
        dy -= s
        dy *= y
        return dy
    raise AssertionError(f"no gradient for {fn!r}")
