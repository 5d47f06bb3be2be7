"""Keras's metrics: stateful running means over samples.

``compile(metrics=['accuracy'])`` resolves 'accuracy' (or 'acc') as Keras 3's compile_utils
does, from the shapes of the first batch's targets and predictions only (not from the loss):
binary_accuracy when the predictions' last axis is 1; else sparse_categorical_accuracy when the
targets have lower rank than the predictions, or a last axis of 1 against a wider prediction;
else categorical_accuracy.  The metric keeps the name it was asked by ('accuracy').

Every metric here averages per-sample values weighted by sample count, so an epoch's or an
evaluation's figure is the exact mean over its samples however the batches fall.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from . import losses as losses_module

__all__ = ["Metric", "Mean", "MeanMetricWrapper", "Accuracy", "BinaryAccuracy",
           "CategoricalAccuracy", "SparseCategoricalAccuracy", "accuracy", "binary_accuracy",
           "categorical_accuracy", "sparse_categorical_accuracy", "get", "resolve"]


class Metric:
    _direction = None  # "up" when larger is better, "down" when smaller is

    def __init__(self, name=None, dtype=None):
        self.name = name or type(self).__name__.lower()
        self.dtype = dtype
        self.reset_state()

    def reset_state(self):
        raise NotImplementedError

    def update_state(self, *args, **kwargs):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __call__(self, *args, **kwargs):
        self.update_state(*args, **kwargs)
        return self.result()


class Mean(Metric):
    """Weighted running mean: ``update_state(values, sample_weight)``."""

    def __init__(self, name="mean", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.total = 0.0
        self.count = 0.0

    def update_state(self, values, sample_weight=None):
        if isinstance(values, float) and isinstance(sample_weight, int):
            # Keras's loss tracker, every training step: one batch's mean weighted by its size,
            # the arithmetic of the 0-d case below without numpy
            self.total += float(values) * sample_weight
            self.count += sample_weight
            return
        values = np.asarray(values, dtype=np.float64)
        if sample_weight is None:
            self.total += float(np.sum(values))
            self.count += values.size
            return
        sw = np.asarray(sample_weight, dtype=np.float64)
        if sw.ndim == 0 and values.ndim == 0:
            # Keras's loss tracker: one batch mean weighted by the batch size.
            self.total += float(values) * float(sw)
            self.count += float(sw)
            return
        sw = np.broadcast_to(sw.reshape(sw.shape + (1,) * (values.ndim - sw.ndim)), values.shape)
        self.total += float(np.sum(values * sw))
        self.count += float(np.sum(sw))

    def result(self):
        return self.total / self.count if self.count else 0.0


class MeanMetricWrapper(Mean):
    """The running mean of ``fn(y_true, y_pred)``'s per-sample values."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        self._fn = fn
        self._fn_kwargs = kwargs
        super().__init__(name=name or fn.__name__, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(self._fn(y_true, y_pred, **self._fn_kwargs), sample_weight)


def _match_rank(y_true, y_pred):
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        return y_true.reshape(y_true.shape[:-1]), y_pred
    if y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        return y_true, y_pred.reshape(y_pred.shape[:-1])
    return y_true, y_pred


def accuracy(y_true, y_pred):
    """Exact equality of targets and predictions, averaged over the last axis."""
    y_pred = np.asarray(y_pred)
    y_true, y_pred = _match_rank(np.asarray(y_true, dtype=y_pred.dtype), y_pred)
    return np.mean(y_true == y_pred, axis=-1, dtype=np.float32)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    y_true, y_pred = _match_rank(np.asarray(y_true), np.asarray(y_pred))
    return np.mean(y_true == (y_pred > threshold), axis=-1, dtype=np.float32)


def categorical_accuracy(y_true, y_pred):
    y_pred = np.asarray(y_pred)
    labels = np.argmax(np.asarray(y_true), axis=-1)
    return (labels == np.argmax(y_pred, axis=-1)).astype(np.float32)


def sparse_categorical_accuracy(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true.reshape(y_true.shape[:-1])
    return (y_true == np.argmax(y_pred, axis=-1)).astype(np.float32)


class Accuracy(MeanMetricWrapper):
    _direction = "up"

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(accuracy, name=name, dtype=dtype)


class BinaryAccuracy(MeanMetricWrapper):
    _direction = "up"

    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        if threshold is not None and not 0 < threshold < 1:
            raise ValueError("Invalid value for argument `threshold`. Expected a value in "
                             f"interval (0, 1). Received: threshold={threshold}")
        self.threshold = threshold
        super().__init__(binary_accuracy, name=name, dtype=dtype, threshold=threshold)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


class CategoricalAccuracy(MeanMetricWrapper):
    _direction = "up"

    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name=name, dtype=dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    _direction = "up"

    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(sparse_categorical_accuracy, name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        # a classifier's batch (integer labels, one per row of scores) by one kernel call: the
        # hits are the sum of sparse_categorical_accuracy's ones
        labels = (losses_module._labels_per_row(y_true, y_pred) if sample_weight is None
                  else None)
        if labels is not None:
            self.total += float(ops._argmax_hits(y_pred, labels))
            self.count += len(labels)
            return
        super().update_state(y_true, y_pred, sample_weight)


_CLASSES = {cls.__name__: cls for cls in (Mean, Accuracy, BinaryAccuracy, CategoricalAccuracy,
                                          SparseCategoricalAccuracy)}
_FUNCTIONS = {"accuracy": Accuracy, "binary_accuracy": BinaryAccuracy,
              "categorical_accuracy": CategoricalAccuracy,
              "sparse_categorical_accuracy": SparseCategoricalAccuracy}
_LOSS_FUNCTIONS = {"sparse_categorical_crossentropy": losses_module.sparse_categorical_crossentropy,
                   "categorical_crossentropy": losses_module.categorical_crossentropy,
                   "binary_crossentropy": losses_module.binary_crossentropy,
                   "mean_squared_error": losses_module.mean_squared_error,
                   "mse": losses_module.mean_squared_error}


def get(identifier):
    """A Metric from an instance, a class or function name, or a function of this module or
    of losses (wrapped as a running mean)."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        if identifier in _FUNCTIONS:
            return _FUNCTIONS[identifier]()
        if identifier in _CLASSES:
            return _CLASSES[identifier]()
        if identifier in _LOSS_FUNCTIONS:
            metric = MeanMetricWrapper(_LOSS_FUNCTIONS[identifier], name=identifier)
            metric._direction = "down"
            return metric
        raise ValueError(f"Could not interpret metric identifier: {identifier!r}; known: "
                         f"{', '.join(sorted({'acc', *_FUNCTIONS, *_CLASSES, *_LOSS_FUNCTIONS}))}")
    if isinstance(identifier, dict):
        try:
            return _CLASSES[identifier["class_name"]].from_config(identifier.get("config", {}))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"Could not interpret metric config: {identifier!r}") from exc
    if callable(identifier):
        for name, cls in _FUNCTIONS.items():
            if identifier is globals()[name]:
                return cls()
        return MeanMetricWrapper(identifier)
    raise ValueError(f"Could not interpret metric identifier: {identifier!r}")


def check(identifier):
    """Fail at compile time, as Keras does, on a metric name that will never resolve."""
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        return
    get(identifier)


def resolve(identifier, y_true, y_pred):
    """Keras's compile_utils.get_metric: 'accuracy'/'acc' chosen from the shapes."""
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        t_rank, p_rank = np.ndim(y_true), np.ndim(y_pred)
        t_last = np.shape(y_true)[-1] if t_rank else None
        p_last = np.shape(y_pred)[-1] if p_rank else None
        if p_last == 1:
            metric = BinaryAccuracy(name=identifier)
        elif t_rank < p_rank or (t_last == 1 and p_last > 1):
            metric = SparseCategoricalAccuracy(name=identifier)
        else:
            metric = CategoricalAccuracy(name=identifier)
        return metric
    metric = get(identifier)
    if isinstance(identifier, str):
        metric.name = identifier
    return metric


def serialize(identifier):
    """What compile() was given, in JSON terms (strings stay strings)."""
    if isinstance(identifier, str):
        return identifier
    if isinstance(identifier, Metric) and type(identifier).__name__ in _CLASSES:
        return {"class_name": type(identifier).__name__, "config": identifier.get_config()}
    raise ValueError(f"metric {identifier!r} cannot be saved; use a name or a cyconv metric "
                     "class")
