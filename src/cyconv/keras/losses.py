"""Keras's losses, with their values and gradients, numerically stable.

From logits, cross-entropies use log-sum-exp (and ``max(z, 0) - z*t + log1p(exp(-|z|))`` for
the binary one).  From probabilities they follow TensorFlow's Keras exactly:

- sparse categorical: probabilities clipped to [eps, 1 - eps], logged, then fed to a softmax
  cross-entropy, i.e. ``-log(c_y) + log(sum_j c_j)`` with c the clipped probabilities;
- categorical: probabilities divided by their sum, clipped, then ``-sum t log c``;
- binary: clipped, then ``-(t log c + (1 - t) log(1 - c))``, averaged over the last axis;

with eps = ``backend.epsilon()`` = 1e-7.  A model whose last layer is a softmax (or sigmoid)
does not use these: like TensorFlow's Keras, it computes the cross-entropy from that layer's
logits (see models.py).

Reduction is Keras's "sum_over_batch_size": the mean of the per-sample losses.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from . import backend
from .utils import deserialize_object, serialize_object

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy",
           "BinaryCrossentropy", "MeanSquaredError", "sparse_categorical_crossentropy",
           "categorical_crossentropy", "binary_crossentropy", "mean_squared_error", "mse",
           "get", "serialize", "deserialize"]

_REDUCTIONS = ("sum_over_batch_size", "sum", "none", None)


def _as_float(y_pred):
    y_pred = np.asarray(y_pred)
    if y_pred.dtype not in (np.float32, np.float64):
        y_pred = y_pred.astype(backend.floatx())
    return y_pred


def _match_rank(y_true, y_pred):
    """Keras's squeeze_or_expand_to_same_rank for targets and predictions."""
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true.reshape(y_true.shape[:-1])
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        y_true = y_true.reshape(y_true.shape + (1,))
    return y_true


def _check_same_shape(y_true, y_pred):
    if y_true.shape != y_pred.shape:
        raise ValueError("Arguments `target` and `output` must have the same shape. "
                         f"Received: target.shape={y_true.shape}, "
                         f"output.shape={y_pred.shape}")


def _sparse_labels(y_true, y_pred):
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.ndim and y_true.shape[-1] == 1:
        y_true = y_true.reshape(y_true.shape[:-1])
    if y_true.shape != y_pred.shape[:-1]:
        raise ValueError("Arguments `target` and `output` must have the same shape up until "
                         f"the last dimension: target.shape={y_true.shape}, "
                         f"output.shape={y_pred.shape}")
    if y_true.dtype.kind == "f":
        labels = y_true.astype(np.int64)
        if not np.array_equal(labels, y_true):
            raise ValueError("sparse labels must be whole numbers (class indices), got "
                             f"non-integer values such as {y_true[labels != y_true][:1]}")
        y_true = labels
    elif y_true.dtype.kind not in "iub":
        raise ValueError(f"sparse labels must be integers, got dtype {y_true.dtype}")
    n_classes = y_pred.shape[-1]
    if y_true.size and (y_true.min() < 0 or y_true.max() >= n_classes):
        raise _label_range_error(y_true[(y_true < 0) | (y_true >= n_classes)].flat[0],
                                 n_classes)
    return y_true.astype(np.intp, copy=False)


def _labels_per_row(y_true, scores):
    """y_true as one integer label per row of a (N, K) float32/float64 scores array ((N,) or
    (N, 1) integer labels), or None for anything else: what the one-call loss and accuracy
    take; the rest goes by numpy."""
    if not (isinstance(y_true, np.ndarray) and isinstance(scores, np.ndarray)
            and y_true.dtype.kind in "iu" and scores.ndim == 2 and scores.shape[1]
            and scores.dtype in (np.float32, np.float64)):
        return None
    n = len(scores)
    return y_true.reshape(n) if n and y_true.shape in ((n,), (n, 1)) else None


def _label_range_error(label, n_classes):
    return ValueError(f"Received a label value of {label} which is outside the valid range of "
                      f"[0, {n_classes}).")


def _log_sum_exp(z):
    m = np.max(z, axis=-1, keepdims=True)
    return (m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True)))[..., 0]


def _softmax(z):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    e /= np.sum(e, axis=-1, keepdims=True)
    return e


def _pick(a, labels):
    """a[..., labels] elementwise over the leading axes."""
    return np.take_along_axis(a, labels[..., None], axis=-1)[..., 0]


def _sparse_xent_from_logits(z, labels, want_grad):
    """(per-sample log_sum_exp(z) - z[label], and softmax(z) - one_hot(label) or None): the
    exponentials computed once for both, rows picked by indexing (a training step's loss,
    where every numpy call counts: its caches are cold after the kernels)."""
    k = z.shape[-1]
    z2 = z.reshape(-1, k)
    rows, lab = np.arange(z2.shape[0]), labels.reshape(-1)
    m = np.max(z2, axis=-1, keepdims=True)
    e = np.exp(z2 - m)
    s = np.sum(e, axis=-1, keepdims=True)
    losses = ((m + np.log(s))[:, 0] - z2[rows, lab]).reshape(labels.shape)
    if not want_grad:
        return losses, None
    e /= s
    e[rows, lab] -= 1
    return losses, e.reshape(z.shape)


def _clip(p):
    eps = p.dtype.type(backend.epsilon())
    return np.clip(p, eps, 1 - eps), (p >= eps) & (p <= 1 - eps)


class Loss:
    """Base class: ``loss(y_true, y_pred)`` is the reduced loss; ``call`` the per-sample one."""

    # Which output activation's logits this loss can use instead of its probabilities.
    logits_activation = None
    from_logits = False

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"Invalid value for argument `reduction`: {reduction!r}; expected "
                             "one of 'sum_over_batch_size', 'sum', 'none' or None")
        self.name = name or _snake(type(self).__name__)
        self.reduction = reduction
        self.dtype = dtype

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = _as_float(y_pred)
        losses = self.call(y_true, y_pred)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=losses.dtype)
            sw = sw.reshape(sw.shape + (1,) * (losses.ndim - sw.ndim))
            losses = losses * sw
        if self.reduction in ("none", None):
            return losses
        total = np.sum(losses, dtype=losses.dtype)
        if self.reduction == "sum":
            return total
        return total / losses.dtype.type(max(losses.size, 1))

    def call(self, y_true, y_pred):
        return self._value_and_grad(y_true, _as_float(y_pred), None, False)[0]

    def value_and_grad(self, y_true, y_pred, logits=None):
        """The reduced loss and its gradient with respect to ``y_pred``, or with respect to
        ``logits`` when those are given (the pre-activation of a softmax/sigmoid output)."""
        if self.reduction in ("none", None):
            raise ValueError(f"loss {self.name!r} has reduction={self.reduction!r}; training "
                             "needs a scalar loss ('sum_over_batch_size' or 'sum')")
        use_logits = logits is not None
        z = logits if use_logits else _as_float(y_pred)
        fused = self._fused(y_true, z, True if use_logits else None, True)
        if fused is not None:
            return fused
        losses, grad = self._value_and_grad(y_true, z, True if use_logits else None, True)
        scale = 1 if self.reduction == "sum" else max(losses.size, 1)
        value = float(np.sum(losses, dtype=np.float64)) / scale
        if scale != 1:
            grad /= grad.dtype.type(scale)
        return value, grad

    def value(self, y_true, y_pred, logits=None):
        """The loss as ``value_and_grad`` computes it, without the gradient."""
        use_logits = logits is not None
        z = logits if use_logits else _as_float(y_pred)
        fused = self._fused(y_true, z, True if use_logits else None, False)
        if fused is not None:
            return fused[0]
        losses, _ = self._value_and_grad(y_true, z, True if use_logits else None, False)
        scale = 1 if self.reduction == "sum" else max(losses.size, 1)
        return float(np.sum(losses, dtype=np.float64)) / scale

    def check_targets(self, y_true, output_shape):
        """Refuse, before any training, targets that do not fit the model's output shape
        (and, for sparse labels, labels outside [0, classes))."""
        y_true = np.asarray(y_true)
        # an output size the model leaves open (images of any size) is the targets' own
        shape = [len(y_true)] + [
            d if d is not None else y_true.shape[i] if i < y_true.ndim else 1
            for i, d in enumerate(output_shape[1:], start=1)]
        self._check_targets(y_true, np.broadcast_to(np.zeros((), np.float32), tuple(shape)))

    def _check_targets(self, y_true, dummy):
        _check_same_shape(_match_rank(y_true, dummy), dummy)

    def _value_and_grad(self, y_true, y_pred, from_logits, want_grad):
        """(per-sample losses, gradient of their sum or None)."""
        raise NotImplementedError

    def _fused(self, y_true, y_pred, from_logits, want_grad):
        """(reduced loss, its gradient or None) in one kernel call where this loss has one for
        these arguments, else None (then _value_and_grad's numpy passes)."""
        return None

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _snake(name):
    out = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return out


class SparseCategoricalCrossentropy(Loss):
    logits_activation = "softmax"

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size",
                 name="sparse_categorical_crossentropy", dtype=None):
        super().__init__(name, reduction, dtype)
        if ignore_class is not None:
            raise NotImplementedError("ignore_class is not supported by cyconv")
        self.from_logits = bool(from_logits)
        self.ignore_class = None

    def _check_targets(self, y_true, dummy):
        _sparse_labels(y_true, dummy)

    def _fused(self, y_true, y_pred, from_logits, want_grad):
        """Logits in rows of classes and one integer label per row (a classifier's training
        step): ops._sparse_softmax_xent, the arithmetic of _sparse_xent_from_logits."""
        from_logits = self.from_logits if from_logits is None else from_logits
        labels = _labels_per_row(y_true, y_pred) if from_logits else None
        if labels is None:
            return None
        scale = 1 if self.reduction == "sum" else len(labels)
        total, grad, bad = ops._sparse_softmax_xent(y_pred, labels, scale, want_grad)
        if bad >= 0:
            raise _label_range_error(labels[bad], y_pred.shape[1])
        return total / scale, grad

    def _value_and_grad(self, y_true, y_pred, from_logits, want_grad):
        from_logits = self.from_logits if from_logits is None else from_logits
        if y_pred.ndim < 1:
            raise ValueError(f"Argument `output` must be at least rank 1, got {y_pred.shape}")
        labels = _sparse_labels(y_true, y_pred)
        if from_logits:
            return _sparse_xent_from_logits(y_pred, labels, want_grad)
        c, inside = _clip(y_pred)
        total = np.sum(c, axis=-1)
        c_y = _pick(c, labels)
        losses = np.log(total) - np.log(c_y)
        if not want_grad:
            return losses, None
        grad = np.broadcast_to((1 / total)[..., None], c.shape).copy()
        np.put_along_axis(grad, labels[..., None], (1 / total - 1 / c_y)[..., None], -1)
        grad *= inside
        return losses, grad

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "ignore_class": self.ignore_class}


class _SmoothedCrossentropy(Loss):
    """Categorical and binary cross-entropy share their arguments."""

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name, reduction, dtype)
        if axis != -1:
            raise NotImplementedError("cyconv's cross-entropies work on the last axis")
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.axis = -1

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class CategoricalCrossentropy(_SmoothedCrossentropy):
    logits_activation = "softmax"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_crossentropy", dtype=None):
        super().__init__(from_logits, label_smoothing, axis, reduction, name, dtype)

    def _targets(self, y_true, y_pred):
        t = _match_rank(np.asarray(y_true, dtype=y_pred.dtype), y_pred)
        _check_same_shape(t, y_pred)
        if self.label_smoothing:
            ls = self.label_smoothing
            t = t * (1 - ls) + ls / y_pred.shape[-1]
        return t

    def _value_and_grad(self, y_true, y_pred, from_logits, want_grad):
        from_logits = self.from_logits if from_logits is None else from_logits
        t = self._targets(y_true, y_pred)
        if from_logits:
            t_sum = np.sum(t, axis=-1)
            losses = _log_sum_exp(y_pred) * t_sum - np.sum(t * y_pred, axis=-1)
            if not want_grad:
                return losses, None
            grad = _softmax(y_pred) * t_sum[..., None]
            grad -= t
            return losses, grad
        s = np.sum(y_pred, axis=-1, keepdims=True)
        q = y_pred / s
        c, inside = _clip(q)
        losses = -np.sum(t * np.log(c), axis=-1)
        if not want_grad:
            return losses, None
        g = -t / c * inside  # with respect to q
        grad = (g - np.sum(g * q, axis=-1, keepdims=True)) / s
        return losses, grad


class BinaryCrossentropy(_SmoothedCrossentropy):
    logits_activation = "sigmoid"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="binary_crossentropy", dtype=None):
        super().__init__(from_logits, label_smoothing, axis, reduction, name, dtype)

    def _value_and_grad(self, y_true, y_pred, from_logits, want_grad):
        from_logits = self.from_logits if from_logits is None else from_logits
        t = _match_rank(np.asarray(y_true, dtype=y_pred.dtype), y_pred)
        _check_same_shape(t, y_pred)
        if self.label_smoothing:
            t = t * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        k = y_pred.shape[-1] if y_pred.ndim else 1
        if from_logits:
            z = y_pred
            elementwise = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
            grad = None
            if want_grad:
                e = np.exp(-np.abs(z))
                grad = np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype) - t
        else:
            c, inside = _clip(y_pred)
            elementwise = -(t * np.log(c) + (1 - t) * np.log(1 - c))
            grad = ((1 - t) / (1 - c) - t / c) * inside if want_grad else None
        losses = np.mean(elementwise, axis=-1)
        if grad is not None:
            grad /= grad.dtype.type(k)
        return losses, grad


class MeanSquaredError(Loss):
    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(name, reduction, dtype)

    def _value_and_grad(self, y_true, y_pred, from_logits, want_grad):
        t = _match_rank(np.asarray(y_true, dtype=y_pred.dtype), y_pred)
        _check_same_shape(t, y_pred)
        diff = y_pred - t
        losses = np.mean(diff * diff, axis=-1)
        if not want_grad:
            return losses, None
        diff *= diff.dtype.type(2.0 / diff.shape[-1])
        return losses, diff


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    return SparseCategoricalCrossentropy(from_logits=from_logits).call(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    return CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing,
                                   axis=axis).call(y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    return BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing,
                              axis=axis).call(y_true, y_pred)


def mean_squared_error(y_true, y_pred):
    return MeanSquaredError().call(y_true, y_pred)


mse = MSE = mean_squared_error

_CLASSES = {cls.__name__: cls for cls in (SparseCategoricalCrossentropy,
                                          CategoricalCrossentropy, BinaryCrossentropy,
                                          MeanSquaredError)}
_FUNCTIONS = {sparse_categorical_crossentropy: SparseCategoricalCrossentropy,
              categorical_crossentropy: CategoricalCrossentropy,
              binary_crossentropy: BinaryCrossentropy, mean_squared_error: MeanSquaredError}
_NAMES = {"sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
          "categorical_crossentropy": CategoricalCrossentropy,
          "binary_crossentropy": BinaryCrossentropy, "mean_squared_error": MeanSquaredError,
          "mse": MeanSquaredError}


def get(identifier):
    """A Loss from an instance, a name (Keras's function or class names), or one of this
    module's functions."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier) or _NAMES.get(identifier.lower()) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"Could not interpret loss identifier: {identifier!r}; known: "
                             f"{', '.join(sorted(set(_NAMES) | set(_CLASSES)))}")
        loss = cls()
        loss.name = identifier
        return loss
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier) and identifier in _FUNCTIONS:
        loss = _FUNCTIONS[identifier]()
        loss.name = identifier.__name__
        return loss
    if callable(identifier):
        raise ValueError(f"loss {identifier!r} is a callable cyconv cannot differentiate; use a "
                         "cyconv.keras.losses class or name")
    raise ValueError(f"Could not interpret loss identifier: {identifier!r}")


serialize = serialize_object


def deserialize(config):
    return deserialize_object(config, _CLASSES, "loss")
