"""Keras's Sequential model: compile / fit / evaluate / predict / summary / save.

Where Keras's behaviour is subtle, this follows Keras 3 (the TensorFlow backend, which the seed
program runs on):

- The loss ``fit`` reports for an epoch is the running mean of the batch losses weighted by
  batch size (Keras's ``Mean`` loss tracker), computed in each step's forward pass, i.e. with
  the weights before that step's update; ``evaluate`` averages the same way, so uneven last
  batches count by their sample count.
- ``validation_split=v`` holds out the *last* ``n - floor(n * (1 - v))`` samples, taken before
  any shuffling; shuffling then permutes the remaining training samples every epoch.
- Logs (and so ``History.history``) are sorted by name: accuracy, loss, val_accuracy, val_loss.
- A cross-entropy on a model whose last layer ends in softmax (or sigmoid, for the binary one)
  is computed from that layer's logits, exactly and without clipping, as TensorFlow's Keras does
  (``_keras_logits`` / the Softmax op); ``predict`` still returns the probabilities.

The model computes in its layers' dtype (``backend.floatx()``, float32): each batch is cast once
on the way in, whatever the dtype of ``x`` (uint8, float64 ...).  A training step computes the
whole gradient first and only then updates the weights, with Ctrl-C held back during the update;
a Ctrl-C during ``fit`` ends training cleanly, keeps the weights of the last finished step and
returns the History of the finished epochs (``history.interrupted`` is then True).
"""

from __future__ import annotations

import math
import shutil
import sys
import warnings

import numpy as np

from . import activations, backend, callbacks as callbacks_module, layers as layers_module
from . import losses as losses_module, metrics as metrics_module, optimizers, saving
from .layers import InputLayer, Layer, unique_name
from .utils import global_rng

__all__ = ["Sequential", "Model", "load_model", "save_model"]


def _shape_str(shape):
    return layers_module._shape_str(shape)


def _readable_size(n_bytes):
    # Keras's readable_memory_size.
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes / 1024 < 1:
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.2f} PB"


def _as_data(a, name):
    if a is None:
        raise ValueError(f"{name} is required")
    a = np.asarray(a)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if a.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, got a scalar")
    return a


def _check_cardinality(x, y):
    if y is not None and len(x) != len(y):
        raise ValueError("Data cardinality is ambiguous. Make sure all arrays contain the "
                         f"same number of samples. 'x' sizes: {len(x)}; 'y' sizes: {len(y)}")


def _verbosity(verbose):
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return int(verbose)


def _batch_size(batch_size):
    if batch_size is None:
        return 32
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _not_supported(**kwargs):
    for name, value in kwargs.items():
        if value is not None:
            raise NotImplementedError(f"cyconv's fit/evaluate do not support {name}")


def _with_flag(layer, name, on, method, *args, **kwargs):
    """method(*args, **kwargs) with the layer's flag `name` set if `on`, for this call only: the
    layer may also be called on its own, or by another model."""
    if not on:
        return method(*args, **kwargs)
    setattr(layer, name, True)
    try:
        return method(*args, **kwargs)
    finally:
        setattr(layer, name, False)


class Sequential:
    """A stack of layers: ``Sequential([layers.Conv2D(...), ...])`` or ``.add(layer)``."""

    # A Conv2D with a ReLU and the MaxPooling2D after it run in one pass (forward_with_pool);
    # the same bits as the two layers apart (for finite weights), so this is for comparing.
    fuse_conv_pool = True

    def __init__(self, layers=None, trainable=True, name=None):
        self.name = name or unique_name("sequential")
        self.trainable = bool(trainable)
        self._layers = []
        self._relu_pools = frozenset()
        self._conv_pools = frozenset()
        self.built = False
        self._build_input_shape = None
        self.compiled = False
        self.optimizer = None
        self.loss = None
        self._metric_ids = []
        self._loss_tracker = metrics_module.Mean(name="loss")
        self._compiled_metrics = None
        self.stop_training = False
        self.history = None
        self._warned_logits = False
        for layer in layers or ():
            self.add(layer)

    # -- structure -------------------------------------------------------------------------
    def add(self, layer, rebuild=True):
        if not isinstance(layer, Layer):
            raise TypeError("Only instances of `cyconv.keras.layers.Layer` can be added to a "
                            f"Sequential model. Received: {layer!r} (of type {type(layer)})")
        if isinstance(layer, InputLayer) and self._layers:
            raise ValueError("An Input/InputLayer can only be the first layer of a Sequential "
                             f"model; {self.name!r} already has layers")
        if any(existing.name == layer.name for existing in self._layers):
            raise ValueError("All layers added to a Sequential model should have unique "
                             f"names. Name '{layer.name}' is already the name of a layer in "
                             "this model. Update the `name` argument to pass a unique name.")
        self._layers.append(layer)
        if rebuild:
            self._maybe_build()

    def pop(self):
        if not self.layers:
            raise TypeError("There are no layers in the model.")
        layer = self._layers.pop()
        self.built = False
        self._maybe_build()
        return layer

    @property
    def layers(self):
        return [l for l in self._layers if not isinstance(l, InputLayer)]

    def get_layer(self, name=None, index=None):
        if index is not None:
            if name is not None:
                raise ValueError("Provide only a layer name or a layer index, not both")
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"Was asked to retrieve layer at index {index} but model only "
                                 f"has {len(self.layers)} layers.")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No such layer: {name}. Existing layers are: "
                         f"{[l.name for l in self.layers]}.")

    def _declared_input_shape(self):
        return self._layers[0]._batch_input_shape if self._layers else None

    def _maybe_build(self):
        shape = self._declared_input_shape()
        if shape is not None and self.layers:
            self.build(shape)
        elif shape is not None:
            self._build_input_shape = tuple(shape)

    def build(self, input_shape=None):
        """Build every layer from the input shape (batch dimension included, None allowed)."""
        if input_shape is None:
            input_shape = self._declared_input_shape()
            if input_shape is None:
                raise ValueError("You must provide an `input_shape` argument.")
        shape = tuple(None if d is None else int(d) for d in input_shape)
        if not self.layers:
            raise ValueError(f"Sequential model {self.name!r} has no layers to build")
        first_shape = shape
        for layer in self.layers:
            if not layer.built:
                layer.build(shape)
            elif not _compatible(layer.input_shape, shape):
                raise ValueError(
                    f'Input 0 of layer "{layer.name}" is incompatible with the layer: expected '
                    f"shape={_shape_str(layer.input_shape)}, found shape={_shape_str(shape)}")
            shape = layer.compute_output_shape(shape)
        self._build_input_shape = first_shape
        self.built = True
        # Layers before the first one with trainable weights never need an input gradient:
        # in the seed model the first convolution skips its (largest) backward-data pass.
        seen_weights = False
        for layer in self.layers:
            layer.need_input_grad = seen_weights
            seen_weights = seen_weights or bool(layer.trainable_weights)
        # Max-pools right after a ReLU activation take its gradient over (see MaxPooling2D).
        ls = self.layers
        self._relu_pools = frozenset(
            i + 1 for i, (a, b) in enumerate(zip(ls, ls[1:]))
            if isinstance(b, layers_module.MaxPooling2D)
            and getattr(a, "activation", None) is activations.relu)
        # Those of them that run in one pass with the Conv2D before (Conv2D.forward_with_pool).
        self._conv_pools = frozenset(
            i + 1 for i, (a, b) in enumerate(zip(ls, ls[1:]))
            if isinstance(a, layers_module.Conv2D) and a.pools_in_one_pass(b))

    @property
    def input_shape(self):
        return self._build_input_shape

    @property
    def output_shape(self):
        if not self.built:
            raise AttributeError(f"The model {self.name!r} has not been built yet")
        return self.layers[-1].output_shape

    @property
    def dtype(self):
        return self._layers[0].dtype if self._layers else backend.floatx()

    # -- weights ---------------------------------------------------------------------------
    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return [w for layer in self.layers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return self.weights
        return [w for layer in self.layers for w in layer.non_trainable_weights]

    def get_weights(self):
        """Copies of every weight, layer by layer, each layer's in Keras's order
        (kernel, then bias)."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        """Keras's order and shapes; every shape is checked before any weight changes."""
        weights = [np.asarray(w) for w in weights]
        current = self.weights
        if len(weights) != len(current):
            raise ValueError(f"You called `set_weights(weights)` on layer '{self.name}' with "
                             f"a weight list of length {len(weights)}, but the layer was "
                             f"expecting {len(current)} weights.")
        for i, (new, old) in enumerate(zip(weights, current)):
            if new.shape != old.shape:
                raise ValueError(f"Weight {i} of '{self.name}' has shape {old.shape}; the "
                                 f"provided weight has shape {new.shape}.")
        for new, old in zip(weights, current):
            np.copyto(old, new, casting="unsafe")

    def count_params(self):
        if not self.built:
            raise ValueError(f"You tried to call `count_params` on model '{self.name}', but "
                             "the model isn't built.")
        return sum(layer.count_params() for layer in self.layers)

    # -- compile ---------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, run_eagerly=False, steps_per_execution=1,
                jit_compile="auto", auto_scale_loss=True):
        _not_supported(loss_weights=loss_weights, weighted_metrics=weighted_metrics)
        self.optimizer = optimizers.get(optimizer)
        self.loss = None if loss is None else losses_module.get(loss)
        if metrics is None:
            metrics = []
        elif not isinstance(metrics, (list, tuple)):
            raise ValueError("Expected `metrics` argument to be a list, tuple, or dict. "
                             f"Received instead: metrics={metrics!r}")
        for m in metrics:
            metrics_module.check(m)
        self._metric_ids = list(metrics)
        self._compiled_metrics = None
        self._loss_tracker = metrics_module.Mean(name="loss")
        self._warned_logits = False
        self.compiled = True

    def _assert_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"You must call `compile()` before using the model ({what}).")
        if self.loss is None:
            raise ValueError(f"The model has no loss to optimise or evaluate; pass `loss=` to "
                             f"compile() before {what}().")

    @property
    def metrics(self):
        out = [self._loss_tracker] if self.compiled else []
        return out + list(self._compiled_metrics or [])

    @property
    def metrics_names(self):
        return [m.name for m in self.metrics]

    def reset_metrics(self):
        for m in self.metrics:
            m.reset_state()

    def _logits_layer(self):
        """The last layer when the loss should use its logits (see the module docstring)."""
        want = {"softmax": activations.softmax, "sigmoid": activations.sigmoid}.get(
            getattr(self.loss, "logits_activation", None))
        last = self.layers[-1] if self.layers else None
        if want is None or last is None or last.output_activation is not want:
            return None
        if self.loss.from_logits and not self._warned_logits:
            self._warned_logits = True
            warnings.warn(
                f"`{self.loss.name}` received `from_logits=True`, but the `output` argument "
                f"was produced by a {want.__name__} activation and thus does not represent "
                "logits. Was this intended?", stacklevel=3)
        return last

    # -- running ---------------------------------------------------------------------------
    def _check_input(self, x):
        if not self.built:
            self.build((None,) + x.shape[1:])
        expected = self._build_input_shape
        if len(x.shape) != len(expected) or any(
                e is not None and e != s for e, s in zip(expected[1:], x.shape[1:])):
            raise ValueError(
                f'Input 0 of layer "{self.name}" is incompatible with the layer: expected '
                f"shape={_shape_str(expected)}, found shape={_shape_str(x.shape)}")

    def _forward(self, x, training, backward=None):
        """The layers' outputs in turn; ``backward``: whether a backward pass follows (by
        default in training only), for which the pools run with their convolution keep their
        cells."""
        x = np.asarray(x, dtype=self.dtype)
        relu_pools = self._relu_pools
        conv_pools = self._conv_pools if self.fuse_conv_pool else ()
        backward = training if backward is None else backward
        ls = self.layers
        i = 0
        while i < len(ls):
            # (the one pass leaves the ReLU's gradient to the pool: only where _backward lets it)
            if i + 1 in conv_pools and i + 1 in relu_pools:
                x = ls[i].forward_with_pool(x, ls[i + 1], cells=backward)
                i += 2
                continue
            x = _with_flag(ls[i], "_input_from_relu", i in relu_pools, ls[i].forward, x,
                           training=training)
            i += 1
        return x

    def __call__(self, x, training=False):
        x = _as_data(x, "x")
        self._check_input(x)
        return self._forward(x, training)

    def _backward(self, grad, wrt_logits):
        dy = grad
        ls = self.layers
        for i in range(len(ls) - 1, -1, -1):
            layer = ls[i]
            before = ls[i - 1] if i else None
            if isinstance(before, layers_module.Conv2D) and before.takes_gradient_through(layer):
                # a first convolution reads the pool's gradient through its cells
                before.backward_through_pool(dy, layer)
                return None
            # the pool after this layer may have applied its ReLU's gradient
            done = i + 1 in self._relu_pools and ls[i + 1].relu_grad_applied
            dy = _with_flag(layer, "_relu_grad_done_downstream", done, layer.backward, dy,
                            wrt_logits=wrt_logits and i == len(ls) - 1)
            if dy is None:
                break
        return dy

    def _gradients(self, x, y, training=False):
        """(loss, weight gradients, input gradient) of one batch, changing nothing: the
        training step's arithmetic, exposed for gradient checks."""
        saved = [layer.need_input_grad for layer in self.layers]
        try:
            for layer in self.layers:
                layer.need_input_grad = True
            x = np.asarray(x, dtype=self.dtype)
            self._check_input(x)
            y_pred = self._forward(x, training, backward=True)
            logits_layer = self._logits_layer()
            value, grad = self.loss.value_and_grad(
                y, y_pred, logits=None if logits_layer is None else logits_layer.logits)
            dx = self._backward(grad, logits_layer is not None)
            grads = [g.copy() for layer in self.layers for g in layer.gradients]
            return value, grads, dx
        finally:
            for layer, flag in zip(self.layers, saved):
                layer.need_input_grad = flag

    def _update_metrics(self, y, y_pred, loss_value):
        self._loss_tracker.update_state(loss_value, sample_weight=len(y_pred))
        if self._compiled_metrics is None:
            self._compiled_metrics = [metrics_module.resolve(m, y, y_pred)
                                      for m in self._metric_ids]
        for m in self._compiled_metrics:
            m.update_state(y, y_pred)

    def _logs(self):
        logs = {m.name: float(m.result()) for m in self.metrics}
        return dict(sorted(logs.items()))

    def _train_step(self, x, y):
        """Forward, loss, the whole backward pass, then the update: the weights change only
        once every gradient exists."""
        y_pred = self._forward(x, training=True)
        logits_layer = self._logits_layer()
        value, grad = self.loss.value_and_grad(
            y, y_pred, logits=None if logits_layer is None else logits_layer.logits)
        variables = self.trainable_weights
        if variables:
            self._backward(grad, logits_layer is not None)
            grads = [g for layer in self.layers if layer.trainable_weights
                     for g in layer.gradients] if self.trainable else []
            self.optimizer.apply(grads, variables)
        self._update_metrics(y, y_pred, value)
        return self._logs()

    def _test_step(self, x, y):
        y_pred = self._forward(x, training=False)
        logits_layer = self._logits_layer()
        value = self.loss.value(y, y_pred,
                                logits=None if logits_layer is None else logits_layer.logits)
        self._update_metrics(y, y_pred, value)
        return self._logs()

    def _prepare(self, x, y):
        x = _as_data(x, "x")
        if len(x) == 0:
            raise ValueError("Expected input data to be non-empty.")
        y = _as_data(y, "y")
        _check_cardinality(x, y)
        self._check_input(x)
        self.loss.check_targets(y, self.output_shape)
        return x, y

    # -- fit / evaluate / predict ----------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1):
        """Train for ``epochs`` epochs; returns the History (see the module docstring)."""
        self._assert_compiled("fit")
        _not_supported(class_weight=class_weight, sample_weight=sample_weight,
                       steps_per_epoch=steps_per_epoch, validation_steps=validation_steps)
        batch_size = _batch_size(batch_size)
        verbose = _verbosity(verbose)
        x, y = _as_data(x, "x"), _as_data(y, "y")
        _check_cardinality(x, y)
        if validation_split and validation_data is None:
            if not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            n = len(x)
            split_at = int(math.floor(n * (1.0 - validation_split)))
            if split_at == 0 or split_at == n:
                raise ValueError(f"Training data contains {n} samples, which is not sufficient "
                                 "to split it into a validation and training set as specified "
                                 f"by `validation_split={validation_split}`. Either provide "
                                 "more data, or a different value for the `validation_split` "
                                 "argument.")
            validation_data = (x[split_at:], y[split_at:])
            x, y = x[:split_at], y[:split_at]
        x, y = self._prepare(x, y)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (x_val, y_val), got "
                                 f"{type(validation_data).__name__}")
            if len(validation_data) == 3 and validation_data[2] is not None:
                raise NotImplementedError("cyconv's fit does not support validation sample "
                                          "weights")
            x_val, y_val = self._prepare(validation_data[0], validation_data[1])
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        val_batch_size = _batch_size(validation_batch_size or batch_size)

        n = len(x)
        steps = -(-n // batch_size)
        cbs = callbacks_module.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, model=self,
            verbose=verbose, epochs=epochs, steps=steps, samples=n)
        self.stop_training = False
        self._logits_layer()  # warn about from_logits=True on a softmax output before training
        where = _Progress(initial_epoch)
        validation = None if validation_data is None else (x_val, y_val, val_batch_size,
                                                           validation_freq)
        cbs.on_train_begin()
        try:
            self._run_epochs(x, y, batch_size, range(initial_epoch, epochs), shuffle, cbs,
                             validation, where)
        except KeyboardInterrupt:
            if cbs.progbar is not None:
                cbs.progbar.break_line()
            print(f"Training interrupted in epoch {where.epoch + 1}, step "
                  f"{where.step + 1}/{steps}: the model keeps the weights of its last finished "
                  "step.", file=sys.stderr, flush=True)
            cbs.history.interrupted = True
            self.stop_training = True
        cbs.on_train_end(where.logs)
        return cbs.history

    def _run_epochs(self, x, y, batch_size, epochs, shuffle, cbs, validation, where):
        n = len(x)
        steps = -(-n // batch_size)
        for epoch in epochs:
            where.epoch, where.step = epoch, 0
            self.reset_metrics()
            cbs.on_epoch_begin(epoch)
            order = global_rng().permutation(n) if shuffle else None
            for step in range(steps):
                where.step = step
                cbs.on_train_batch_begin(step)
                if order is None:
                    batch = slice(step * batch_size, (step + 1) * batch_size)
                else:
                    batch = order[step * batch_size:(step + 1) * batch_size]
                logs = self._train_step(x[batch], y[batch])
                cbs.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            logs = self._logs()
            if validation is not None and _should_validate(epoch, validation[3]):
                val_logs = self._run_evaluation(*validation[:3], cbs)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            cbs.on_epoch_end(epoch, logs)
            where.logs = logs
            if self.stop_training:
                break

    def _run_evaluation(self, x, y, batch_size, cbs):
        self.reset_metrics()
        n = len(x)
        steps = -(-n // batch_size)
        cbs.on_test_begin()
        logs = {}
        for step in range(steps):
            cbs.on_test_batch_begin(step)
            batch = slice(step * batch_size, (step + 1) * batch_size)
            logs = self._test_step(x[batch], y[batch])
            cbs.on_test_batch_end(step, logs)
        logs = self._logs()
        cbs.on_test_end(logs)
        return logs

    def _in_order(self, logs):
        """Keras's _flatten_metrics_in_order: loss, then metrics in compile order; a single
        value is returned bare."""
        out = [logs[m.name] for m in self.metrics if m.name in logs]
        return out[0] if len(out) == 1 else out

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict=False):
        """Loss and metrics over all of ``x``: exact per-sample means, whatever the batches."""
        self._assert_compiled("evaluate")
        _not_supported(sample_weight=sample_weight, steps=steps)
        batch_size = _batch_size(batch_size)
        verbose = _verbosity(verbose)
        x, y = self._prepare(x, y)
        cbs = callbacks_module.CallbackList(callbacks, add_progbar=verbose != 0, model=self,
                                            verbose=verbose, epochs=1,
                                            steps=-(-len(x) // batch_size))
        logs = self._run_evaluation(x, y, batch_size, cbs)
        return logs if return_dict else self._in_order(logs)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The model's outputs (probabilities for a softmax output), batch by batch."""
        _not_supported(steps=steps)
        batch_size = _batch_size(batch_size)
        verbose = _verbosity(verbose)
        x = _as_data(x, "x")
        self._check_input(x)
        n = len(x)
        # the output's size may depend on the input's (a model built for images of any size)
        out = None if n else np.empty(
            (0,) + tuple(0 if d is None else d for d in self.output_shape[1:]), self.dtype)
        n_steps = -(-n // batch_size)
        cbs = callbacks_module.CallbackList(callbacks, add_progbar=verbose != 0, model=self,
                                            verbose=verbose, epochs=1, steps=n_steps)
        cbs.on_predict_begin()
        for step in range(n_steps):
            cbs.on_predict_batch_begin(step)
            batch = slice(step * batch_size, (step + 1) * batch_size)
            y = self._forward(x[batch], training=False)
            if out is None:
                out = np.empty((n,) + y.shape[1:], dtype=self.dtype)
            out[batch] = y
            cbs.on_predict_batch_end(step)
        cbs.on_predict_end()
        return out

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None,
                       return_dict=False):
        """One training step on one batch; like Keras 3, metrics accumulate across calls
        until reset_metrics()."""
        self._assert_compiled("train_on_batch")
        _not_supported(sample_weight=sample_weight, class_weight=class_weight)
        x, y = self._prepare(x, y)
        logs = self._train_step(x, y)
        return logs if return_dict else self._in_order(logs)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._assert_compiled("test_on_batch")
        _not_supported(sample_weight=sample_weight)
        x, y = self._prepare(x, y)
        logs = self._test_step(x, y)
        return logs if return_dict else self._in_order(logs)

    def predict_on_batch(self, x):
        return self(x)

    # -- summary ---------------------------------------------------------------------------
    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None):
        """Keras 3's table: name (type), output shape and parameter count of every layer,
        then total, trainable and non-trainable parameters (and the optimizer's, once it has
        state) with their memory."""
        text = self._summary_text(line_length, positions)
        try:
            text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
        except (UnicodeEncodeError, LookupError):
            text = text.translate(_ASCII_BOX)
        (print_fn or print)(text)

    def _summary_text(self, line_length=None, positions=None):
        line_length = line_length or min(88, shutil.get_terminal_size().columns - 4)
        positions = positions or [0.45, 0.80, 1.0]
        if positions[-1] <= 1:
            positions = [int(p * line_length) for p in positions]
        widths = [b - a for a, b in zip([0] + list(positions[:-1]), positions)]
        if min(widths) < 4:
            raise ValueError("Insufficient console width to print summary.")
        inner = [w - 3 for w in widths[:-1]] + [widths[-1] - 4]

        def row(cells, left, mid, right, fill=" ", aligns=("<", "<", ">")):
            wrapped = [_wrap(c, w) for c, w in zip(cells, inner)]
            height = max(len(w) for w in wrapped)
            lines = []
            for i in range(height):
                parts = [f"{(w[i] if i < len(w) else ''):{a}{n}}"
                         for w, n, a in zip(wrapped, inner, aligns)]
                lines.append(left + fill + (fill + mid + fill).join(parts) + fill + right)
            return lines

        def rule(left, mid, right, fill):
            return left + mid.join(fill * (n + 2) for n in inner) + right

        lines = [f'Model: "{self.name}"', rule("┏", "┳", "┓", "━")]
        lines += row(["Layer (type)", "Output Shape", "Param #"], "┃", "┃", "┃")
        lines.append(rule("┡", "╇", "┩", "━"))
        body = []
        for layer in self.layers:
            if layer.built:
                shape, params = _shape_str(layer.output_shape), f"{layer.count_params():,}"
            else:
                shape, params = "?", "0 (unbuilt)"
            body.append(row([f"{layer.name} ({type(layer).__name__})", shape, params],
                            "│", "│", "│"))
        for i, r in enumerate(body):
            if i:
                lines.append(rule("├", "┼", "┤", "─"))
            lines += r
        lines.append(rule("└", "┴", "┘", "─"))

        def size(arrays):
            return sum(a.size for a in arrays), sum(a.nbytes for a in arrays)

        trainable = size(self.trainable_weights)
        frozen = size(self.non_trainable_weights)
        total = [trainable[0] + frozen[0], trainable[1] + frozen[1]]
        opt = None
        if self.optimizer is not None and self.optimizer.built:
            opt = size(self.optimizer.variables)
            total = [total[0] + opt[0], total[1] + opt[1]]
        lines.append(f" Total params: {total[0]:,} ({_readable_size(total[1])})")
        lines.append(f" Trainable params: {trainable[0]:,} ({_readable_size(trainable[1])})")
        lines.append(f" Non-trainable params: {frozen[0]:,} ({_readable_size(frozen[1])})")
        if opt is not None:
            lines.append(f" Optimizer params: {opt[0]:,} ({_readable_size(opt[1])})")
        return "\n".join(lines)

    # -- config and files ------------------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "layers": [layers_module.serialize(l) for l in self._layers]}

    @classmethod
    def from_config(cls, config):
        model = cls(name=config.get("name"), trainable=config.get("trainable", True))
        for layer_config in config["layers"]:
            model.add(layers_module.deserialize(layer_config), rebuild=False)
        model._maybe_build()
        return model

    def _file_config(self, include_optimizer=True):
        import cyconv

        config = {"class_name": "Sequential", "config": self.get_config(),
                  "build_input_shape": list(self._build_input_shape) if self.built else None,
                  "cyconv_version": cyconv.__version__}
        if include_optimizer and self.compiled:
            config["compile_config"] = {
                "optimizer": optimizers.serialize(self.optimizer),
                "loss": None if self.loss is None else losses_module.serialize(self.loss),
                "metrics": [metrics_module.serialize(m) for m in self._metric_ids]}
        return config

    @classmethod
    def from_file_config(cls, config):
        if config.get("class_name") != "Sequential":
            raise ValueError(f"expected a Sequential model, got {config.get('class_name')!r}")
        model = cls.from_config(config["config"])
        shape = config.get("build_input_shape")
        if shape is not None and not model.built:
            model.build(tuple(shape))
        return model

    def _compile_from_config(self, config):
        metrics = [m if isinstance(m, str) else metrics_module.get(m)
                   for m in config.get("metrics") or []]
        loss = config.get("loss")
        self.compile(optimizer=optimizers.deserialize(config["optimizer"]),
                     loss=None if loss is None else losses_module.deserialize(loss),
                     metrics=metrics)

    def _restore_optimizer_state(self, state):
        self.optimizer.build(self.trainable_weights)
        self.optimizer.set_state(state)

    def save(self, filepath, overwrite=True, include_optimizer=True):
        """Everything in one .npz file, written atomically (see saving.py)."""
        saving.save_model(self, filepath, overwrite=overwrite,
                          include_optimizer=include_optimizer)

    def save_weights(self, filepath, overwrite=True):
        saving.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath):
        saving.load_weights(self, filepath)

    def __repr__(self):
        return f"<Sequential name={self.name}, built={self.built}>"


Model = Sequential

_ASCII_BOX = str.maketrans("┏┳┓┃┡╇┩│├┼┤└┴┘━─", "+++|+++|++++++=-")


def _wrap(text, width):
    text = str(text)
    return [text[i:i + width] for i in range(0, len(text), width)] or [""]


class _Progress:
    """Where fit is, for the message a Ctrl-C prints and the logs on_train_end gets."""

    def __init__(self, epoch):
        self.epoch, self.step, self.logs = epoch, 0, {}


def _compatible(expected, shape):
    return len(expected) == len(shape) and all(
        e is None or s is None or e == s for e, s in zip(expected[1:], shape[1:]))


def _should_validate(epoch, validation_freq):
    if isinstance(validation_freq, int):
        return (epoch + 1) % validation_freq == 0
    return (epoch + 1) in validation_freq


def load_model(filepath, compile=True):
    return saving.load_model(filepath, compile=compile)


def save_model(model, filepath, overwrite=True, include_optimizer=True):
    saving.save_model(model, filepath, overwrite=overwrite, include_optimizer=include_optimizer)
