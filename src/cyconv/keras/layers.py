"""Keras layers over cyconv.ops: same names, arguments, defaults, weight shapes and orders.

Every layer builds its weights from its input shape (batch dimension first, ``None`` while
unknown), runs ``forward(x, training)`` and ``backward(dy)``.  Layers hold no numerics of their
own beyond calls into :mod:`cyconv.ops`, matmul for Dense and elementwise activations.

Contract of ``backward(dy, wrt_logits=False)``:

- ``dy`` is the gradient of the loss with respect to the output of the latest ``forward``; the
  layer may overwrite it (the model hands each gradient to exactly one layer).
- It returns the gradient with respect to the input, or None when ``need_input_grad`` is False
  (the model clears it on layers before the first one with weights, so the first convolution
  never computes an input gradient).
- Weight gradients are left in ``gradients`` (same order and shapes as ``weights``).  Their
  buffers may be reused by the next step: the optimizer consumes them at once.
- ``wrt_logits=True`` says ``dy`` is already the gradient with respect to the pre-activation
  (the model does this when it computes a cross-entropy from a softmax or sigmoid layer's logits,
  as Keras does).
"""

from __future__ import annotations

import math
import re

import numpy as np

from .. import _args, ops
from . import activations, backend, initializers
from .utils import rng_from_seed, serialize_object

__all__ = ["Layer", "InputLayer", "Input", "Conv2D", "DepthwiseConv2D", "MaxPooling2D",
           "AveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling2D", "MaxPool2D",
           "AvgPool2D", "GlobalMaxPool2D", "GlobalAvgPool2D", "Flatten", "Dense", "Activation",
           "ReLU", "Softmax", "Dropout", "ZeroPadding2D", "serialize", "deserialize"]

_name_uids = {}


def _snake_case(name):
    # Keras's to_snake_case: MaxPooling2D -> max_pooling2d, ReLU -> re_lu.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def unique_name(base):
    """Keras's automatic names: conv2d, conv2d_1, conv2d_2, ... (one counter per process)."""
    n = _name_uids.get(base, 0)
    _name_uids[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def _shape_str(shape):
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _window_output_size(layer, input_shape, geometry, what, window):
    """(oh, ow) of a convolution or pooling layer by the shared rule in cyconv._args
    (geometry: a (1, ...) input shape to its Geometry); an unknown input size (None: images of
    any size, as Keras allows) gives an unknown output size.  window: the window's extent
    (after dilation), which stands in for an unknown size while the rule computes the other."""
    axes = (1, 2) if layer.data_format == "channels_last" else (2, 3)
    shape = [1] + list(input_shape[1:])
    unknown = [shape[a] is None for a in axes]
    for a, extent in zip(axes, window):
        shape[a] = extent if shape[a] is None else shape[a]
    # (an unknown channel count leaves a pool's sizes as they are; a convolution's build has
    # already asked for it)
    shape = [1 if d is None else d for d in shape]
    try:
        g = geometry(tuple(shape))
    except ValueError as exc:
        raise ValueError(f"Layer '{layer.name}': input shape {_shape_str(input_shape)} is "
                         f"too small for this {what}: {exc}") from None
    return (None if unknown[0] else g.oh), (None if unknown[1] else g.ow)


def _int_tuple(value, n, name, allow_zero=False):
    """Keras's standardize_tuple: an int or n ints, all positive (or >= 0)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        values = (int(value),) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise ValueError(f"The `{name}` argument must be a tuple of {n} integers. "
                             f"Received {name}={value!r}") from None
        if len(values) != n or not all(isinstance(v, (int, np.integer))
                                       and not isinstance(v, bool) for v in values):
            raise ValueError(f"The `{name}` argument must be a tuple of {n} integers. "
                             f"Received {name}={value!r}")
        values = tuple(int(v) for v in values)
    low = 0 if allow_zero else 1
    if any(v < low for v in values):
        raise ValueError(f"The `{name}` argument must be a tuple of {n} "
                         f"{'non-negative' if allow_zero else 'positive'} integers. "
                         f"Received {name}={value!r}")
    return values


def _padding_mode(value):
    mode = str(value).lower() if isinstance(value, str) else None
    if mode not in ("valid", "same"):
        raise ValueError(f"The `padding` argument must be one of 'valid', 'same'. "
                         f"Received: padding={value!r}")
    return mode


def _ops_format(data_format):
    return "NHWC" if data_format == "channels_last" else "NCHW"


class Layer:
    """Base layer: naming, dtype, weights, build bookkeeping, config."""

    def __init__(self, name=None, dtype=None, trainable=True, input_shape=None,
                 batch_input_shape=None, batch_size=None, input_dim=None, **kwargs):
        if kwargs:
            raise TypeError(f"Unrecognized keyword arguments passed to "
                            f"{type(self).__name__}: {kwargs}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.name = name or unique_name(_snake_case(type(self).__name__))
        self.dtype = backend.standardize_dtype(dtype or backend.floatx())
        self.trainable = bool(trainable)
        self.built = False
        self.need_input_grad = True
        self._weight_names = []
        self._grads = {}
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if batch_input_shape is not None:
            self._batch_input_shape = tuple(batch_input_shape)
        elif input_shape is not None:
            self._batch_input_shape = (batch_size,) + tuple(input_shape)
        else:
            self._batch_input_shape = None
        self.input_shape = None
        self.output_shape = None

    # -- weights ---------------------------------------------------------------------------
    def add_weight(self, name, shape, initializer):
        value = initializers.get(initializer)(tuple(shape), dtype=self.dtype)
        value = np.ascontiguousarray(value, dtype=self.dtype)
        setattr(self, name, value)
        self._weight_names.append(name)
        return value

    @property
    def weights(self):
        return [getattr(self, n) for n in self._weight_names]

    @property
    def trainable_weights(self):
        return self.weights if self.trainable else []

    @property
    def non_trainable_weights(self):
        return [] if self.trainable else self.weights

    @property
    def gradients(self):
        return [self._grads[n] for n in self._weight_names]

    def _keep_grads(self, dw, db):
        """Keep the arrays the kernels returned as the kernel's and bias's gradients (no copy)."""
        self._grads["kernel"] = dw.reshape(self.kernel.shape)
        if self.use_bias:
            self._grads["bias"] = db

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        weights = list(weights)
        if len(weights) != len(self._weight_names):
            raise ValueError(
                f"You called `set_weights(weights)` on layer '{self.name}' with a weight list "
                f"of length {len(weights)}, but the layer was expecting "
                f"{len(self._weight_names)} weights.")
        values = [np.asarray(w) for w in weights]
        for name, value in zip(self._weight_names, values):
            current = getattr(self, name)
            if value.shape != current.shape:
                raise ValueError(
                    f"Layer {self.name} weight shape {current.shape} is not compatible with "
                    f"provided weight shape {value.shape}.")
        # Copy in place: the optimizer's slots are tied to these very arrays.
        for name, value in zip(self._weight_names, values):
            np.copyto(getattr(self, name), value, casting="unsafe")

    def count_params(self):
        if not self.built:
            raise ValueError(f"You tried to call `count_params` on layer '{self.name}', but "
                             "the layer isn't built. You can build it manually via: "
                             f"`{self.name}.build(batch_input_shape)`.")
        return int(sum(w.size for w in self.weights))

    # -- building --------------------------------------------------------------------------
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self._check_input_shape(input_shape)
        self.input_shape = input_shape
        self._build(input_shape)
        self.output_shape = self.compute_output_shape(input_shape)
        self.built = True

    def _build(self, input_shape):
        """Create weights; layers without weights have nothing to do."""

    _input_ndim = None  # exact rank the layer accepts, batch included; None = any >= 2

    def _check_input_shape(self, input_shape):
        ndim = self._input_ndim
        if (ndim is not None and len(input_shape) != ndim) or len(input_shape) < 2:
            want = f"ndim={ndim}" if ndim is not None else "min_ndim=2"
            raise ValueError(
                f'Input 0 of layer "{self.name}" is incompatible with the layer: expected '
                f"{want}, found ndim={len(input_shape)}. Full shape received: "
                f"{_shape_str(input_shape)}")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def __call__(self, x, training=False):
        """Run the layer eagerly on an array, building it on first use, as a Keras layer."""
        x = np.asarray(x, dtype=self.dtype)
        if not self.built:
            self.build((None,) + x.shape[1:])
        else:
            self._check_call_shape(x.shape)
        return self.forward(x, training=training)

    def _check_call_shape(self, shape):
        expected = self.input_shape
        if len(shape) != len(expected) or any(
                e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
            raise ValueError(
                f'Input 0 of layer "{self.name}" is incompatible with the layer: expected '
                f"shape={_shape_str(expected)}, found shape={_shape_str(shape)}")

    # -- running ---------------------------------------------------------------------------
    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dy, wrt_logits=False):
        raise NotImplementedError

    # The output activation whose logits a cross-entropy may use (softmax/sigmoid), or None.
    output_activation = None

    @property
    def logits(self):
        """Pre-activation output of the latest forward (only kept for softmax/sigmoid)."""
        return getattr(self, "_z", None)

    # -- config ----------------------------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._batch_input_shape is not None:
            config["batch_input_shape"] = list(self._batch_input_shape)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


class _ActivationMixin:
    """Shared by layers with an ``activation`` argument: apply it and differentiate it."""

    # Set by Sequential for a backward pass when the max-pool after this layer has already
    # applied this ReLU's gradient (see MaxPooling2D): dy then goes through as it is.
    _relu_grad_done_downstream = False

    def _set_activation(self, activation):
        self.activation = activations.get(activation)
        fn = self.activation
        self.output_activation = fn if fn in (activations.softmax, activations.sigmoid) else None

    def _activate(self, z):
        fn = self.activation
        if self.output_activation is not None:
            self._z = z
        else:
            self._z = None
        if fn is activations.linear:
            return z
        if fn is activations.relu:
            return np.maximum(z, 0, out=z)
        return fn(z)

    def _activation_grad(self, dy, wrt_logits):
        if wrt_logits or (self._relu_grad_done_downstream and self.activation is activations.relu):
            return dy
        return activations.backward(self.activation, self._y, dy)

    def _fused_relu_grad(self, wrt_logits):
        """Whether the kernels are to apply this layer's ReLU gradient (masking dy by y > 0)."""
        return (self.activation is activations.relu and not wrt_logits
                and not self._relu_grad_done_downstream)


class InputLayer(Layer):
    """The model's input: a shape without the batch dimension (``Input(shape=(28, 28, 1))``)."""

    def __init__(self, shape=None, batch_size=None, dtype=None, batch_shape=None, name=None,
                 **kwargs):
        if "input_shape" in kwargs and shape is None:
            shape = kwargs.pop("input_shape")
        if "batch_input_shape" in kwargs and batch_shape is None:
            batch_shape = kwargs.pop("batch_input_shape")
        if shape is None and batch_shape is None:
            raise ValueError("You must pass a `shape` argument to Input/InputLayer.")
        if batch_shape is None:
            batch_shape = (batch_size,) + tuple(shape)
        batch_shape = tuple(None if d is None else int(d) for d in batch_shape)
        if any(d is not None and d < 1 for d in batch_shape):
            raise ValueError(f"Input shape must be positive, got {batch_shape}")
        super().__init__(name=name or unique_name("input_layer"), dtype=dtype, **kwargs)
        self._batch_input_shape = batch_shape
        self.build(batch_shape)

    def _check_input_shape(self, input_shape):
        pass

    def forward(self, x, training=False):
        return x

    def backward(self, dy, wrt_logits=False):
        return dy

    def get_config(self):
        return {"batch_shape": list(self._batch_input_shape), "dtype": self.dtype,
                "name": self.name}


def Input(shape=None, batch_size=None, dtype=None, batch_shape=None, name=None):
    """Keras's ``Input``: here it is the InputLayer itself, for ``Sequential([Input(...), ...])``."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, batch_shape=batch_shape,
                      name=name)


class _BaseConv(_ActivationMixin, Layer):
    _input_ndim = 4

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True,
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = _int_tuple(kernel_size, 2, "kernel_size")
        self.strides = _int_tuple(strides, 2, "strides")
        self.padding = _padding_mode(padding)
        self.data_format = backend.standardize_data_format(data_format)
        self.dilation_rate = _int_tuple(dilation_rate, 2, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError("`strides > 1` not supported in conjunction with "
                             f"`dilation_rate > 1`. Received: strides={self.strides} and "
                             f"dilation_rate={self.dilation_rate}")
        self._set_activation(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = initializers.get(bias_initializer)
        self._fmt = _ops_format(self.data_format)

    def _channels(self, input_shape):
        c = input_shape[-1] if self.data_format == "channels_last" else input_shape[1]
        if c is None:
            raise ValueError(f"The channel dimension of the inputs to {type(self).__name__} "
                             f"should be defined. Found shape {_shape_str(input_shape)}")
        return c

    def _out_shape(self, input_shape, cout, w_shape_hwio, groups):
        w_shape = w_shape_hwio if self._fmt == "NHWC" else (
            w_shape_hwio[3], w_shape_hwio[2], w_shape_hwio[0], w_shape_hwio[1])
        oh, ow = _window_output_size(
            self, input_shape, lambda shape: _args.conv_geometry(
                shape, w_shape, self.strides, self.padding, self.dilation_rate, groups,
                self._fmt), "convolution",
            [(k - 1) * d + 1 for k, d in zip(w_shape_hwio[:2], self.dilation_rate)])
        if self.data_format == "channels_last":
            return (input_shape[0], oh, ow, cout)
        return (input_shape[0], cout, oh, ow)

    def _ops_kernel(self, k):
        # ops wants OIHW with NCHW: a transposed view, which ops turns back into this very
        # HWIO array without a copy.
        return k if self._fmt == "NHWC" else k.transpose(3, 2, 0, 1)

    def _conv(self, x, kernel_hwio, groups):
        fused_relu = self.activation is activations.relu
        z = ops.conv2d(x, self._ops_kernel(kernel_hwio), self.bias if self.use_bias else None,
                       stride=self.strides, padding=self.padding, dilation=self.dilation_rate,
                       groups=groups, data_format=self._fmt,
                       activation="relu" if fused_relu else None)
        self._x = x
        self._y = z if fused_relu else self._activate(z)
        if fused_relu:
            self._z = None
        return self._y

    def _conv_backward(self, dy, kernel_hwio, groups, wrt_logits):
        # A fused ReLU's gradient is applied inside the kernels (for free without dx).
        fused_relu = self._fused_relu_grad(wrt_logits)
        dz = dy if fused_relu else self._activation_grad(dy, wrt_logits)
        dx, dw, db = ops.conv2d_backward(
            dz, self._x, self._ops_kernel(kernel_hwio), stride=self.strides,
            padding=self.padding, dilation=self.dilation_rate, groups=groups,
            data_format=self._fmt, compute_dx=self.need_input_grad,
            activation="relu" if fused_relu else None, y=self._y if fused_relu else None)
        if self._fmt == "NCHW":
            dw = dw.transpose(2, 3, 1, 0)
        return dx, dw, db

    def get_config(self):
        config = super().get_config()
        config.update({
            "kernel_size": list(self.kernel_size), "strides": list(self.strides),
            "padding": self.padding, "data_format": self.data_format,
            "dilation_rate": list(self.dilation_rate),
            "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
            "bias_initializer": initializers.serialize(self.bias_initializer)})
        return config


class Conv2D(_BaseConv):
    """2-D convolution; kernel (kh, kw, cin // groups, filters), as Keras."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation,
                         use_bias, bias_initializer, **kwargs)
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters < 1:
            raise ValueError("Invalid value for argument `filters`. Expected a strictly "
                             f"positive value. Received filters={filters!r}.")
        self.filters = int(filters)
        self.groups = _int_tuple(groups, 1, "groups")[0]
        if self.filters % self.groups:
            raise ValueError("The number of filters must be evenly divisible by the number "
                             f"of groups. Received: groups={self.groups}, "
                             f"filters={self.filters}.")
        self.kernel_initializer = initializers.get(kernel_initializer)

    def _kernel_shape(self, input_shape):
        c = self._channels(input_shape)
        if c % self.groups:
            raise ValueError("The number of input channels must be evenly divisible by the "
                             f"number of groups. Received groups={self.groups}, but the input "
                             f"has {c} channels (full input shape is "
                             f"{_shape_str(input_shape)}).")
        return self.kernel_size + (c // self.groups, self.filters)

    def _build(self, input_shape):
        self.add_weight("kernel", self._kernel_shape(input_shape), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)

    def compute_output_shape(self, input_shape):
        return self._out_shape(input_shape, self.filters, self._kernel_shape(input_shape),
                               self.groups)

    def forward(self, x, training=False):
        return self._conv(x, self.kernel, self.groups)

    def backward(self, dy, wrt_logits=False):
        dx, dw, db = self._conv_backward(dy, self.kernel, self.groups, wrt_logits)
        self._keep_grads(dw, db)
        return dx

    def pools_in_one_pass(self, pool):
        """Whether forward_with_pool may stand for ``pool.forward(self.forward(x))``: a ReLU
        activation, one data format, a max-pool without padding whose windows fit uint8 cells,
        and neither layer's forward replaced by a subclass."""
        return (self.activation is activations.relu
                and isinstance(pool, MaxPooling2D) and pool._fmt == self._fmt
                and pool.padding == "valid"
                and pool.pool_size[0] * pool.pool_size[1] <= _args.NO_CELL
                and type(self).forward is Conv2D.forward
                and type(pool).forward is MaxPooling2D.forward)

    _last_out_shape = None   # (input shape, output shape) for forward_with_pool

    def forward_with_pool(self, x, pool, cells=False):
        """``pool.forward(self.forward(x))`` (see pools_in_one_pass) in one pass that never
        writes this layer's output, the largest array of the seed model's step (see
        ops._conv2d_relu_max_pool).  With ``cells`` (for a backward pass: the pool's input
        gradient needs them, and this layer's ReLU mask is not kept) the pool keeps its cells,
        which also carry this ReLU's gradient, as MaxPooling2D.forward's after a ReLU do."""
        y, cells = ops._conv2d_relu_max_pool(
            x, self._ops_kernel(self.kernel), self.bias if self.use_bias else None,
            pool.pool_size, pool.strides, stride=self.strides, padding=self.padding,
            dilation=self.dilation_rate, groups=self.groups, data_format=self._fmt,
            cells=bool(cells))
        self._x = x
        self._y = self._z = None
        # the output shape of the last input shape, kept: the weights' shape is fixed once
        # built, and each training step asks (9 us a call, more with the caches cold)
        if self._last_out_shape is None or self._last_out_shape[0] != x.shape:
            self._last_out_shape = x.shape, self._out_shape(x.shape, self.filters,
                                                            self.kernel.shape, self.groups)
        pool._pooled_in_conv(self._last_out_shape[1], x.dtype, cells)
        return y

    def takes_gradient_through(self, pool):
        """Whether backward_through_pool may stand for ``self.backward(pool.backward(dy))``:
        this layer needs no input gradient (a first layer) but its weights do (it is trainable),
        its activation is linear or a ReLU, both run NHWC, and the pool recorded window cells of
        windows that do not overlap."""
        return (not self.need_input_grad and bool(self.trainable_weights)
                and pool.need_input_grad and self._fmt == "NHWC"
                and self.activation in (activations.linear, activations.relu)
                and isinstance(pool, MaxPooling2D) and pool._fmt == "NHWC"
                and pool.padding == "valid"
                and pool.strides[0] >= pool.pool_size[0] and pool.strides[1] >= pool.pool_size[1]
                and pool._indices is not None and pool._indices.dtype == np.uint8)

    def backward_through_pool(self, dy_pool, pool):
        """The weight gradient from the gradient of the max-pool after this layer, read through
        the pool's cells: its input gradient (this layer's largest array) is never written."""
        relu = self.activation is activations.relu and not pool.relu_grad_applied
        dw, db = ops._conv2d_weight_grad_through_max_pool(
            dy_pool, pool._indices, pool.pool_size, pool.strides, self._x, self.kernel,
            stride=self.strides, padding=self.padding, dilation=self.dilation_rate,
            groups=self.groups, y=self._y if relu else None)
        self._keep_grads(dw, db)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "groups": self.groups,
                       "kernel_initializer": initializers.serialize(self.kernel_initializer)})
        return config


class DepthwiseConv2D(_BaseConv):
    """Depthwise convolution: kernel (kh, kw, cin, depth_multiplier); output channel
    ``c * depth_multiplier + m`` comes from input channel c and multiplier m, as in Keras.

    It runs as ops.conv2d with groups=cin on the kernel reshaped (no copy) to
    (kh, kw, 1, cin * depth_multiplier), whose output channels are in exactly that order.
    """

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", depth_multiplier=1,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation,
                         use_bias, bias_initializer, **kwargs)
        self.depth_multiplier = _int_tuple(depth_multiplier, 1, "depth_multiplier")[0]
        self.depthwise_initializer = initializers.get(depthwise_initializer)

    def _build(self, input_shape):
        c = self._channels(input_shape)
        self.add_weight("kernel", self.kernel_size + (c, self.depth_multiplier),
                        self.depthwise_initializer)
        if self.use_bias:
            self.add_weight("bias", (c * self.depth_multiplier,), self.bias_initializer)

    def compute_output_shape(self, input_shape):
        c = self._channels(input_shape)
        cout = c * self.depth_multiplier
        return self._out_shape(input_shape, cout, self.kernel_size + (1, cout), c)

    def _grouped(self):
        kh, kw, c, m = self.kernel.shape
        return self.kernel.reshape(kh, kw, 1, c * m), c

    def forward(self, x, training=False):
        kernel, c = self._grouped()
        return self._conv(x, kernel, c)

    def backward(self, dy, wrt_logits=False):
        kernel, c = self._grouped()
        dx, dw, db = self._conv_backward(dy, kernel, c, wrt_logits)
        self._keep_grads(dw, db)
        return dx

    def get_config(self):
        config = super().get_config()
        config.update({"depth_multiplier": self.depth_multiplier,
                       "depthwise_initializer":
                           initializers.serialize(self.depthwise_initializer)})
        return config


class _Pooling2D(Layer):
    _input_ndim = 4

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _int_tuple(pool_size, 2, "pool_size")
        self.strides = self.pool_size if strides is None else _int_tuple(strides, 2, "strides")
        self.padding = _padding_mode(padding)
        self.data_format = backend.standardize_data_format(data_format)
        self._fmt = _ops_format(self.data_format)

    def compute_output_shape(self, input_shape):
        oh, ow = _window_output_size(
            self, input_shape, lambda shape: _args.pool_geometry(
                shape, self.pool_size, self.strides, self.padding, 1, False, self._fmt),
            "pooling", self.pool_size)
        if self.data_format == "channels_last":
            return (input_shape[0], oh, ow, input_shape[3])
        return (input_shape[0], input_shape[1], oh, ow)

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": list(self.pool_size), "strides": list(self.strides),
                       "padding": self.padding, "data_format": self.data_format})
        return config


class MaxPooling2D(_Pooling2D):
    """Max pooling.  In a Sequential's training step right after a ReLU activation, its records
    also carry the ReLU's gradient (relu_grad_applied): its backward pass then gives the
    gradient before that ReLU, and the layer before skips its mask."""

    # Set by Sequential, for one forward pass, when x is the output of the layer before's ReLU.
    _input_from_relu = False
    relu_grad_applied = False
    _stand_in = None   # see _pooled_in_conv

    def forward(self, x, training=False):
        self._x = x
        # whether this forward's indices also carry the ReLU's gradient (see backward)
        self.relu_grad_applied = False
        if not training:
            # inference has no backward pass: no indices to write
            self._indices = None
            return ops.max_pool2d(x, self.pool_size, self.strides, self.padding,
                                  data_format=self._fmt)
        # a byte per output (the cell in its window), not an int64 position
        small = self.pool_size[0] * self.pool_size[1] <= _args.NO_CELL
        if small and self._input_from_relu:
            # windows whose maximum is 0 record no cell: their gradient stops here, as the
            # ReLU's would at that maximum, and the layer before skips its mask
            y, self._indices = ops._max_pool2d_after_relu(x, self.pool_size, self.strides,
                                                          self.padding, self._fmt)
            self.relu_grad_applied = True
            return y
        y, self._indices = ops.max_pool2d(x, self.pool_size, self.strides, self.padding,
                                          return_indices=True,
                                          index_format="window" if small else "flat",
                                          data_format=self._fmt)
        return y

    def _pooled_in_conv(self, x_shape, dtype, cells):
        """The state forward leaves, for a forward the convolution before ran for this layer
        (Conv2D.forward_with_pool): its output was never written, and the backward pass needs
        only its shape and dtype, so _x stands for it without memory (the same read-only view
        from step to step)."""
        stand_in = self._stand_in
        if stand_in is None or stand_in.shape != tuple(x_shape) or stand_in.dtype != dtype:
            stand_in = self._stand_in = np.broadcast_to(np.zeros((), dtype=dtype), x_shape)
        self._x = stand_in
        self._indices = cells
        self.relu_grad_applied = cells is not None

    def backward(self, dy, wrt_logits=False):
        if not self.need_input_grad:
            return None
        return ops.max_pool2d_backward(dy, self._x, self.pool_size, self.strides,
                                       self.padding, indices=self._indices,
                                       data_format=self._fmt)


class AveragePooling2D(_Pooling2D):
    """Average pooling; with padding='same' the border windows average only real pixels."""

    def forward(self, x, training=False):
        self._x = x
        return ops.avg_pool2d(x, self.pool_size, self.strides, self.padding,
                              count_include_pad=False, data_format=self._fmt)

    def backward(self, dy, wrt_logits=False):
        if not self.need_input_grad:
            return None
        return ops.avg_pool2d_backward(dy, self._x, self.pool_size, self.strides, self.padding,
                                       count_include_pad=False, data_format=self._fmt)


class _GlobalPooling2D(Layer):
    _input_ndim = 4
    _forward_op = _backward_op = None

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = backend.standardize_data_format(data_format)
        self.keepdims = bool(keepdims)
        self._fmt = _ops_format(self.data_format)

    def compute_output_shape(self, input_shape):
        n = input_shape[0]
        c = input_shape[3] if self.data_format == "channels_last" else input_shape[1]
        if not self.keepdims:
            return (n, c)
        return (n, 1, 1, c) if self.data_format == "channels_last" else (n, c, 1, 1)

    def forward(self, x, training=False):
        self._x = x
        y = type(self)._forward_op(x, data_format=self._fmt)
        return y.reshape(self.compute_output_shape(x.shape)) if self.keepdims else y

    def backward(self, dy, wrt_logits=False):
        if not self.need_input_grad:
            return None
        return type(self)._backward_op(dy.reshape(dy.shape[0], -1), self._x,
                                       data_format=self._fmt)

    def get_config(self):
        config = super().get_config()
        config.update({"data_format": self.data_format, "keepdims": self.keepdims})
        return config


class GlobalMaxPooling2D(_GlobalPooling2D):
    _forward_op = ops.global_max_pool2d
    _backward_op = ops.global_max_pool2d_backward


class GlobalAveragePooling2D(_GlobalPooling2D):
    _forward_op = ops.global_avg_pool2d
    _backward_op = ops.global_avg_pool2d_backward


class Flatten(Layer):
    """Flatten all but the batch axis.

    As Keras: with the default data_format ('channels_last') the array is flattened as it is, in
    row-major order (for an NHWC image: H, then W, then C; an NCHW image therefore comes out
    C-first); with ``data_format='channels_first'`` the channel axis is first moved last, so the
    order is H, W, C either way.
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = backend.standardize_data_format(data_format)

    def _check_input_shape(self, input_shape):
        # Any rank: a (batch,) input becomes (batch, 1), as in Keras.
        pass

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        size = None if any(d is None for d in rest) else math.prod(rest)
        return (input_shape[0], size)

    def _moves_channels(self, ndim):
        return self.data_format == "channels_first" and ndim > 2

    def forward(self, x, training=False):
        self._in_shape = x.shape
        if self._moves_channels(x.ndim):
            x = x.transpose((0, *range(2, x.ndim), 1))
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, wrt_logits=False):
        if not self.need_input_grad:
            return None
        shape = self._in_shape
        if self._moves_channels(len(shape)):
            moved = (shape[0], *shape[2:], shape[1])
            nd = len(shape)
            return dy.reshape(moved).transpose((0, nd - 1, *range(1, nd - 1)))
        return dy.reshape(shape)

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


class Dense(_ActivationMixin, Layer):
    """Densely connected layer on the last axis: kernel (in, units), bias (units,)."""

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units < 1:
            raise ValueError("Received an invalid value for `units`, expected a positive "
                             f"integer. Received: units={units!r}")
        self.units = int(units)
        self._set_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def _build(self, input_shape):
        n_in = input_shape[-1]
        if n_in is None:
            raise ValueError(f"The last dimension of the inputs to Dense '{self.name}' should "
                             f"be defined. Found shape {_shape_str(input_shape)}")
        self.add_weight("kernel", (n_in, self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, training=False):
        # The matmuls run as 1x1 convolutions of (rows, 1, 1, in) in cyconv's own kernels and
        # thread pool: a multi-threaded BLAS between the OpenMP kernels makes the two pools spin
        # against each other (3x slower training steps measured on 2 cores).
        self._x = x
        x4 = self._as_pixels(x)
        fused_relu = self.activation is activations.relu
        z = ops.conv2d(x4, self.kernel.reshape(1, 1, *self.kernel.shape),
                       self.bias if self.use_bias else None,
                       activation="relu" if fused_relu else None)
        z = z.reshape(x.shape[:-1] + (self.units,))
        if fused_relu:
            self._z = None
            self._y = z
        else:
            self._y = self._activate(z)
        return self._y

    @staticmethod
    def _as_pixels(a):
        return a.reshape(-1, 1, 1, a.shape[-1])

    def backward(self, dy, wrt_logits=False):
        fused_relu = self._fused_relu_grad(wrt_logits)
        dz = dy if fused_relu else self._activation_grad(dy, wrt_logits)
        dx, dw, db = ops.conv2d_backward(
            self._as_pixels(dz), self._as_pixels(self._x),
            self.kernel.reshape(1, 1, *self.kernel.shape), compute_dx=self.need_input_grad,
            activation="relu" if fused_relu else None,
            y=self._as_pixels(self._y) if fused_relu else None)
        # dw comes new from the kernels: kept as it is (a copy into a buffer of the layer's was
        # another pass over a 9216 x 128 kernel's 4.7 MB each step)
        self._keep_grads(dw, db)
        if dx is None:
            return None
        return dx.reshape(self._x.shape)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units,
                       "activation": activations.serialize(self.activation),
                       "use_bias": self.use_bias,
                       "kernel_initializer": initializers.serialize(self.kernel_initializer),
                       "bias_initializer": initializers.serialize(self.bias_initializer)})
        return config


class Activation(_ActivationMixin, Layer):
    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self._set_activation(activation)

    def forward(self, x, training=False):
        self._z = x if self.output_activation is not None else None
        fn = self.activation
        self._y = x if fn is activations.linear else fn(x)
        return self._y

    def backward(self, dy, wrt_logits=False):
        return self._activation_grad(dy, wrt_logits)

    def get_config(self):
        config = super().get_config()
        config["activation"] = activations.serialize(self.activation)
        return config


class ReLU(Layer):
    """Keras's ReLU layer: ``max_value``, ``negative_slope`` and ``threshold`` as Keras applies
    them (x above the threshold is kept as x, clipped to [0, max_value] when max_value is set;
    below it, ``negative_slope * (x - threshold)``)."""

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        if max_value is not None and max_value < 0.0:
            raise ValueError("max_value of a ReLU layer cannot be a negative value. "
                             f"Received: max_value={max_value}")
        if negative_slope is None or negative_slope < 0.0:
            raise ValueError("negative_slope of a ReLU layer cannot be a negative value. "
                             f"Received: negative_slope={negative_slope}")
        if threshold is None:
            raise ValueError("threshold of a ReLU layer cannot be None.")
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope = float(negative_slope)
        self.threshold = float(threshold)
        self._plain = self.max_value is None and self.negative_slope == 0 and self.threshold == 0

    def forward(self, x, training=False):
        if self._plain:
            self._y = activations.relu(x)
            return self._y
        self._x = x
        t = x.dtype.type(self.threshold)
        y = x * (x > t)
        if self.max_value is not None:
            np.clip(y, 0, self.max_value, out=y)
        if self.negative_slope:
            y += x.dtype.type(self.negative_slope) * np.minimum(x - t, 0)
        return y

    def backward(self, dy, wrt_logits=False):
        if self._plain:
            return activations.backward(activations.relu, self._y, dy)
        x = self._x
        t = x.dtype.type(self.threshold)
        slope = (x > t).astype(x.dtype)
        if self.max_value is not None:
            slope *= (x >= 0) & (x <= self.max_value)
        if self.negative_slope:
            slope += x.dtype.type(self.negative_slope) * (x < t)
        dy *= slope
        return dy

    def get_config(self):
        config = super().get_config()
        config.update({"max_value": self.max_value, "negative_slope": self.negative_slope,
                       "threshold": self.threshold})
        return config


class Softmax(Layer):
    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(axis, (int, np.integer)):
            raise ValueError(f"axis must be an integer, got {axis!r}")
        self.axis = int(axis)

    def build(self, input_shape):
        super().build(input_shape)
        if self.axis in (-1, len(input_shape) - 1):
            self.output_activation = activations.softmax

    def forward(self, x, training=False):
        self._z = x if self.output_activation is not None else None
        self._y = activations.softmax(x, axis=self.axis)
        return self._y

    def backward(self, dy, wrt_logits=False):
        if wrt_logits:
            return dy
        return activations.backward(activations.softmax, self._y, dy, axis=self.axis)

    def get_config(self):
        config = super().get_config()
        config["axis"] = self.axis
        return config


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale the
    rest by 1 / (1 - rate); at inference, the identity."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(rate, (int, float, np.number)) or not 0 <= rate < 1:
            raise ValueError("Invalid value received for argument `rate`. Expected a float "
                             f"value between 0 and 1. Received: rate={rate!r}")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        self._rng = rng_from_seed(seed)
        self._mask = None   # the float mask of a noise_shape, or None
        self._keep = None   # else the uint8 one of ops._dropout, with its scale

    def forward(self, x, training=False):
        self._mask = self._keep = None
        if not training or self.rate == 0:
            return x
        shape = x.shape
        if self.noise_shape is not None:
            shape = tuple(s if n is None else n for s, n in zip(x.shape, self.noise_shape))
        # 32 random bits per unit against rate * 2**32
        threshold = min(round(self.rate * 2.0 ** 32), 2 ** 32 - 1)
        scale = x.dtype.type(1.0 / (1.0 - self.rate))
        if shape == x.shape and x.dtype in (np.float32, np.float64):
            # drawn by the kernel from one 64-bit key of this layer's generator (a hash of
            # the key and each unit's place), the products in the same pass, the mask kept
            # in bytes (a mask of 32x12x12x64: 0.6 ms against 0.15)
            key = int(self._rng.bit_generator.random_raw())
            y, self._keep = ops._dropout(x, key, threshold, float(scale))
            self._scale = float(scale)
            return y
        # a mask broadcast along noise_shape's axes: straight from the bit generator, a third
        # of the time of Generator.random's doubles
        n = math.prod(shape)
        bits = self._rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]
        self._mask = (bits.reshape(shape) >= np.uint32(threshold)).astype(x.dtype) * scale
        return x * self._mask

    def backward(self, dy, wrt_logits=False):
        if self._keep is not None:
            return ops._dropout_backward(dy, self._keep, self._scale)
        if self._mask is not None:
            dy *= self._mask
        return dy

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed,
                       "noise_shape": None if self.noise_shape is None
                       else list(self.noise_shape)})
        return config


class ZeroPadding2D(Layer):
    """Zero rows and columns around an image: an int, (sym_h, sym_w), or
    ((top, bottom), (left, right))."""

    _input_ndim = 4

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(padding, (int, np.integer)):
            pads = ((int(padding),) * 2,) * 2
        elif len(padding) == 2 and all(isinstance(p, (int, np.integer)) for p in padding):
            pads = ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
        elif len(padding) == 2:
            pads = (_int_tuple(padding[0], 2, "padding", True),
                    _int_tuple(padding[1], 2, "padding", True))
        else:
            raise ValueError("`padding` should have two elements. Received: "
                             f"padding={padding!r}.")
        if any(p < 0 for side in pads for p in side):
            raise ValueError(f"`padding` must be non-negative, got {padding!r}")
        self.padding = tuple(tuple(side) for side in pads)
        self.data_format = backend.standardize_data_format(data_format)

    def _np_pads(self):
        (t, b), (l, r) = self.padding
        if self.data_format == "channels_last":
            return ((0, 0), (t, b), (l, r), (0, 0))
        return ((0, 0), (0, 0), (t, b), (l, r))

    def compute_output_shape(self, input_shape):
        out = list(input_shape)
        for axis, (lo, hi) in enumerate(self._np_pads()):
            if out[axis] is not None:
                out[axis] += lo + hi
        return tuple(out)

    def forward(self, x, training=False):
        return np.pad(x, self._np_pads())

    def backward(self, dy, wrt_logits=False):
        if not self.need_input_grad:
            return None
        index = tuple(slice(lo, dy.shape[a] - hi) for a, (lo, hi) in enumerate(self._np_pads()))
        return dy[index]

    def get_config(self):
        config = super().get_config()
        config.update({"padding": [list(p) for p in self.padding],
                       "data_format": self.data_format})
        return config


MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D
GlobalAvgPool2D = GlobalAveragePooling2D

_CLASSES = {cls.__name__: cls for cls in (
    InputLayer, Conv2D, DepthwiseConv2D, MaxPooling2D, AveragePooling2D, GlobalMaxPooling2D,
    GlobalAveragePooling2D, Flatten, Dense, Activation, ReLU, Softmax, Dropout, ZeroPadding2D)}


serialize = serialize_object


def deserialize(config):
    """A layer from ``{"class_name": ..., "config": {...}}``; unknown classes are refused."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"A layer config must be a dict with 'class_name', got {config!r}")
    cls = _CLASSES.get(config["class_name"])
    if cls is None:
        raise ValueError(f"Unknown layer class {config['class_name']!r}; cyconv knows "
                         f"{', '.join(sorted(_CLASSES))}")
    kwargs = dict(config.get("config", {}))
    for key in ("kernel_initializer", "bias_initializer", "depthwise_initializer"):
        if isinstance(kwargs.get(key), dict):
            kwargs[key] = initializers.deserialize(kwargs[key])
    return cls.from_config(kwargs)
