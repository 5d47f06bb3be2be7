"""Argument normalisation, padding arithmetic and output shapes.

The one place where these truths live: ``ops`` (compiled kernels) and ``reference`` (NumPy) both
call in here, so the two can only disagree about numerics, never about what an argument means.
Everything here works on shapes and plain Python values; nothing touches array data.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import numpy as np

# The functional API: ops (compiled) and reference (NumPy) both define exactly these.
FUNCTIONS = [
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "global_max_pool2d",
    "global_max_pool2d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "relu_backward",
]

DATA_FORMATS = ("NHWC", "NCHW")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
ACTIVATIONS = (None, "relu")


def positive_int(value, name):
    """Return ``value`` as an int, raising TypeError/ValueError naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    try:
        ivalue = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer, got {value!r}") from None
    if ivalue < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(ivalue)


def _nonnegative_int(value, name):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a non-negative integer, got {value!r}")
    try:
        ivalue = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a non-negative integer, got {value!r}") from None
    if ivalue < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(ivalue)


def pair(value, name):
    """Normalise an int or an (h, w) pair of positive ints to a tuple of two ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return (positive_int(value[0], name), positive_int(value[1], name))
    v = positive_int(value, name)
    return (v, v)


def data_format(value):
    """Validate and normalise the data_format argument (also accepts Keras's spellings)."""
    if type(value) is str and value in DATA_FORMATS:
        return value
    if not isinstance(value, str):
        raise TypeError(f"data_format must be 'NHWC' or 'NCHW', got {value!r}")
    aliases = {"channels_last": "NHWC", "channels_first": "NCHW"}
    fmt = aliases.get(value.lower(), value.upper())
    if fmt not in DATA_FORMATS:
        raise ValueError(f"data_format must be 'NHWC' or 'NCHW', got {value!r}")
    return fmt


def activation(value):
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in ("relu", "linear", "none"):
        raise ValueError(f"activation must be None or 'relu', got {value!r}")
    return "relu" if value.lower() == "relu" else None


# A window's cells are numbered i * kw + j in uint8; 255 marks a window with no real cell.
NO_CELL = 255


def index_format(value, g):
    """max_pool2d's index_format: 'flat' (int64 positions in the H*W plane, as PyTorch) or
    'window' (uint8 cell numbers in the window: an eighth of the memory)."""
    if not isinstance(value, str):
        raise TypeError(f"index_format must be 'flat' or 'window', got {value!r}")
    if value not in ("flat", "window"):
        raise ValueError(f"index_format must be 'flat' or 'window', got {value!r}")
    if value == "window" and g.kh * g.kw > NO_CELL:
        raise ValueError(f"index_format='window' numbers a window's cells in uint8, so windows "
                         f"of at most {NO_CELL} cells: got {g.kh}x{g.kw}")
    return value


def same_padding(in_size, kernel, stride, dilation):
    """TensorFlow's 'same' rule: the output has ceil(in / stride) pixels; odd pixel at the end."""
    effective = (kernel - 1) * dilation + 1
    out = -(-in_size // stride)
    total = max((out - 1) * stride + effective - in_size, 0)
    return (total // 2, total - total // 2)


def padding(value, in_hw, kernel_hw, stride_hw, dilation_hw, name="padding"):
    """Normalise any padding form to ((top, bottom), (left, right)).

    Accepted: "valid", "same", an int, (ph, pw), or ((top, bottom), (left, right)).
    """
    if isinstance(value, str):
        mode = value.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            return tuple(
                same_padding(in_hw[i], kernel_hw[i], stride_hw[i], dilation_hw[i]) for i in (0, 1)
            )
        raise ValueError(f"{name} must be 'valid', 'same', an int or pairs, got {value!r}")
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"{name} must be an int, (ph, pw) or ((top, bottom), (left, right)), got {value!r}"
            )
        out = []
        for side in value:
            if isinstance(side, (tuple, list)):
                if len(side) != 2:
                    raise ValueError(
                        f"{name} must be an int, (ph, pw) or ((top, bottom), (left, right)), "
                        f"got {value!r}"
                    )
                out.append((_nonnegative_int(side[0], name), _nonnegative_int(side[1], name)))
            else:
                p = _nonnegative_int(side, name)
                out.append((p, p))
        return tuple(out)
    if value is None:
        raise TypeError(f"{name} must be 'valid', 'same', an int or pairs, got None")
    p = _nonnegative_int(value, name)
    return ((p, p), (p, p))


def float_dtype(**arrays):
    """Check that the given arrays share one float dtype (float32 or float64) and return it.

    Keyword names are the argument names used in error messages; None values are skipped.
    """
    dtype = None
    first = None
    for name, arr in arrays.items():
        if arr is None:
            continue
        dt = arr.dtype
        if dt not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got dtype {dt}")
        if dtype is None:
            dtype, first = dt, name
        elif dt != dtype:
            raise TypeError(
                f"{name} has dtype {dt} but {first} has dtype {dtype}; "
                "they must agree (cast one of them)"
            )
    return dtype


def as_array(value, name):
    """Accept ndarrays (any strides, read-only) and array-likes; reject what cannot be numeric."""
    if isinstance(value, np.ndarray):
        return value
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # numpy raises many kinds for ragged or odd input
        raise TypeError(f"{name} must be an array, got {type(value).__name__}: {exc}") from None
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}")
    if arr.dtype.kind == "f" and arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {arr.dtype}")
    if arr.dtype.kind in "iub":
        raise TypeError(f"{name} must be float32 or float64, got dtype {arr.dtype}")
    return arr


def to_nhwc_shape(shape, fmt):
    """(N, C, H, W) -> (N, H, W, C) for NCHW; NHWC shapes pass through."""
    if fmt == "NCHW":
        n, c, h, w = shape
        return (n, h, w, c)
    return tuple(shape)


def from_nhwc_shape(shape, fmt):
    if fmt == "NCHW":
        n, h, w, c = shape
        return (n, c, h, w)
    return tuple(shape)


def _output_size(in_size, pad_lo, pad_hi, kernel, stride, dilation, ceil_mode):
    effective = (kernel - 1) * dilation + 1
    span = in_size + pad_lo + pad_hi - effective
    if span < 0:
        return None
    if ceil_mode:
        out = -(-span // stride) + 1
        # PyTorch: the last window must start inside the input or the top/left padding.
        if (out - 1) * stride >= in_size + pad_lo:
            out -= 1
    else:
        out = span // stride + 1
    return out


@dataclass(frozen=True)
class Geometry:
    """Everything a kernel needs about one conv/pool call, in NHWC terms, as plain ints."""

    n: int
    h: int
    w: int
    c: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    oh: int
    ow: int
    cout: int = 0
    groups: int = 1
    data_format: str = "NHWC"

    @property
    def x_shape(self):
        """Input shape in the caller's layout."""
        return from_nhwc_shape((self.n, self.h, self.w, self.c), self.data_format)

    @property
    def y_shape(self):
        """Output shape in the caller's layout."""
        c = self.cout if self.cout else self.c
        return from_nhwc_shape((self.n, self.oh, self.ow, c), self.data_format)

    @property
    def y_shape_nhwc(self):
        c = self.cout if self.cout else self.c
        return (self.n, self.oh, self.ow, c)


def _spatial(h, w, kh, kw, stride, pad, dilation, ceil_mode, what):
    sh, sw = stride
    dh, dw = dilation
    (pt, pb), (pl, pr) = pad
    oh = _output_size(h, pt, pb, kh, sh, dh, ceil_mode)
    ow = _output_size(w, pl, pr, kw, sw, dw, ceil_mode)
    if oh is None or ow is None:
        raise ValueError(
            f"{what} window ({(kh - 1) * dh + 1}, {(kw - 1) * dw + 1}) (after dilation) is "
            f"larger than the padded input ({h + pt + pb}, {w + pl + pr})"
        )
    if oh < 1 or ow < 1:
        raise ValueError(f"{what} output would be empty: output size ({oh}, {ow})")
    return oh, ow


_PLAIN = (int, str, bool, type(None))


def _dims(shape, name):
    """A shape's dimensions as ints, or TypeError: array shapes are ints already, but the
    layers pass on their users' input shapes, and the geometry cache does not look into
    shapes (_typed_key), so a float must not get that far."""
    for d in shape:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"{name} must have integer dimensions, got shape {tuple(shape)}")
    return tuple(int(d) for d in shape)


def _typed_key(args, n_shapes=0):
    """A cache key that tells 1 from True and 1.0 (equal, same hash, not the same argument),
    or None unless every argument is a plain int, string, bool or None, or a tuple of ints
    (shapes, strides; nested padding pairs are simply not cached).  The first n_shapes
    arguments are array shapes, not looked into (16 keys per training step): the geometry
    functions check them with _dims before anything is cached."""
    for a in args[n_shapes:]:
        t = type(a)
        if t is tuple:
            # a loop, not all() over a generator: 3.2 -> 1.1 us a key with two pairs
            for v in a:
                if type(v) is not int:
                    return None
        elif t not in _PLAIN:
            return None
    return args, tuple(map(type, args))


def _remembered(n_shapes):
    """Cache a geometry by its arguments (the first n_shapes of them array shapes): a training
    step asks the same questions every batch, and the answer costs more than the smallest
    kernels.  Errors are not cached (they raise)."""
    def decorate(fn):
        cache = {}

        @functools.wraps(fn)
        def geometry(*args):
            key = _typed_key(args, n_shapes)
            if key is None:
                return fn(*args)
            g = cache.get(key)
            if g is None:
                if len(cache) >= 256:
                    cache.clear()
                g = cache[key] = fn(*args)
            return g

        return geometry

    return decorate


@_remembered(n_shapes=2)
def conv_geometry(x_shape, w_shape, stride, padding_, dilation, groups, fmt):
    """Validate a convolution's shapes and arguments and return its Geometry.

    Weights are HWIO ``(kh, kw, cin // groups, cout)`` for NHWC, OIHW for NCHW.
    """
    x_shape, w_shape = _dims(x_shape, "x"), _dims(w_shape, "w")
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D ({'N, H, W, C' if fmt == 'NHWC' else 'N, C, H, W'}), "
                         f"got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        layout = "(kh, kw, cin // groups, cout)" if fmt == "NHWC" else "(cout, cin // groups, kh, kw)"
        raise ValueError(f"w must be 4-D {layout} for data_format={fmt!r}, got shape {tuple(w_shape)}")
    n, h, w, c = to_nhwc_shape(x_shape, fmt)
    if fmt == "NHWC":
        kh, kw, cin_g, cout = w_shape
    else:
        cout, cin_g, kh, kw = w_shape
    groups = positive_int(groups, "groups")
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"x must have non-empty spatial and channel dimensions, got shape {tuple(x_shape)}")
    if kh < 1 or kw < 1 or cin_g < 1 or cout < 1:
        raise ValueError(f"w must have non-empty dimensions, got shape {tuple(w_shape)}")
    if c % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({c})")
    if cout % groups:
        raise ValueError(f"groups={groups} must divide the output channels of w ({cout})")
    if cin_g * groups != c:
        raise ValueError(
            f"x has {c} channels but w expects {cin_g * groups} "
            f"(w's input-channel dimension {cin_g} x groups={groups}); w has shape {tuple(w_shape)}"
        )
    pad = padding(padding_, (h, w), (kh, kw), stride, dilation)
    oh, ow = _spatial(h, w, kh, kw, stride, pad, dilation, False, "convolution")
    return Geometry(n, h, w, c, kh, kw, stride[0], stride[1], dilation[0], dilation[1],
                    pad[0][0], pad[0][1], pad[1][0], pad[1][1], oh, ow, cout, groups, fmt)


@_remembered(n_shapes=1)
def pool_geometry(x_shape, pool_size, stride, padding_, dilation, ceil_mode, fmt):
    """Validate a pooling call's arguments and return its Geometry (cout = 0: channels kept)."""
    x_shape = _dims(x_shape, "x")
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D ({'N, H, W, C' if fmt == 'NHWC' else 'N, C, H, W'}), "
                         f"got shape {tuple(x_shape)}")
    n, h, w, c = to_nhwc_shape(x_shape, fmt)
    kh, kw = pair(pool_size, "pool_size")
    stride = (kh, kw) if stride is None else pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"ceil_mode must be True or False, got {ceil_mode!r}")
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"x must have non-empty spatial and channel dimensions, got shape {tuple(x_shape)}")
    if h * w >= 2**31:
        # the kernels carry window positions in 32-bit lanes beside float32 values
        raise ValueError(f"x's H*W must be below 2**31 for pooling, got {h}x{w}")
    explicit = not isinstance(padding_, str)
    pad = padding(padding_, (h, w), (kh, kw), stride, dilation)
    if explicit:
        (pt, pb), (pl, pr) = pad
        if max(pt, pb) > kh // 2 or max(pl, pr) > kw // 2:
            raise ValueError(
                f"padding {padding_!r} is larger than half the pool window ({kh}, {kw}); "
                "each side may be at most pool_size // 2 (PyTorch's rule)"
            )
    oh, ow = _spatial(h, w, kh, kw, stride, pad, dilation, bool(ceil_mode), "pool")
    return Geometry(n, h, w, c, kh, kw, stride[0], stride[1], dilation[0], dilation[1],
                    pad[0][0], pad[0][1], pad[1][0], pad[1][1], oh, ow, 0, 1, fmt)


def check_grad(dy, expected_shape, dtype, name="dy"):
    """dy must have the forward output's shape and the inputs' dtype."""
    if tuple(dy.shape) != tuple(expected_shape):
        raise ValueError(f"{name} must have the output's shape {tuple(expected_shape)}, got {dy.shape}")
    if dy.dtype != dtype:
        raise TypeError(f"{name} has dtype {dy.dtype} but x has dtype {dtype}; they must agree")


def check_bias(b, cout):
    if b.ndim != 1 or b.shape[0] != cout:
        raise ValueError(f"b must have shape ({cout},) to match w's output channels, got {b.shape}")


def check_indices(indices, g):
    """Dtype and shape of max-pool indices (their range is checked by whoever reads them: the
    kernels as they go, to spare a pass).  Returns their index_format."""
    if indices.dtype == np.int64:
        fmt = "flat"
    elif indices.dtype == np.uint8:
        fmt = index_format("window", g)
    else:
        raise TypeError("indices must be int64 (index_format='flat') or uint8 "
                        f"(index_format='window'), as max_pool2d returns them; got dtype "
                        f"{indices.dtype}")
    if tuple(indices.shape) != tuple(g.y_shape):
        raise ValueError(f"indices must have the output's shape {tuple(g.y_shape)}, got {indices.shape}")
    return fmt


def indices_range_error(g, fmt):
    if fmt == "window":
        what = (f"uint8 indices must each name a real cell of their window (i * kw + j, below "
                f"{g.kh * g.kw} and not in the padding) or be {NO_CELL} for none")
    else:
        what = (f"indices must lie in [0, {g.h * g.w}) (flat positions in each H*W plane), "
                "each inside its own window, or be -1 for none")
    return ValueError(f"{what}: pass the indices max_pool2d returned for the same x and "
                      "arguments")


def bool_arg(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def flops_conv(g: Geometry):
    """Multiply-adds x 2 of one forward convolution."""
    return 2 * g.n * g.oh * g.ow * g.cout * g.kh * g.kw * (g.c // g.groups)


# ---------------------------------------------------------------------------------------------
# Whole-call validation shared by ops and reference: arrays in, validated views and Geometry out.


def nhwc(x, fmt):
    """A view of x in NHWC order (no copy)."""
    return x.transpose(0, 2, 3, 1) if fmt == "NCHW" else x


def from_nhwc(y, fmt):
    """A view of an NHWC array in the caller's layout (no copy)."""
    return y.transpose(0, 3, 1, 2) if fmt == "NCHW" else y


def hwio(w, fmt):
    """A view of the weights as HWIO (kh, kw, cin // groups, cout)."""
    return w.transpose(2, 3, 1, 0) if fmt == "NCHW" else w


def from_hwio(w, fmt):
    return w.transpose(3, 2, 0, 1) if fmt == "NCHW" else w


def conv_call(x, w, b, stride, padding_, dilation, groups, fmt):
    """Validate a conv2d call. Returns (x, w, b, geometry) with arrays as ndarrays."""
    fmt = data_format(fmt)
    x = as_array(x, "x")
    w = as_array(w, "w")
    b = None if b is None else as_array(b, "b")
    float_dtype(x=x, w=w, b=b)
    g = conv_geometry(x.shape, w.shape, stride, padding_, dilation, groups, fmt)
    if b is not None:
        check_bias(b, g.cout)
    return x, w, b, g


def conv_backward_call(dy, x, w, stride, padding_, dilation, groups, fmt, act=None, y=None):
    """Validate a conv2d_backward call.  Returns (dy, x, w, geometry, y): y is the forward
    output of a fused ReLU (activation="relu"), else None."""
    fmt = data_format(fmt)
    x = as_array(x, "x")
    w = as_array(w, "w")
    dy = as_array(dy, "dy")
    dtype = float_dtype(x=x, w=w)
    g = conv_geometry(x.shape, w.shape, stride, padding_, dilation, groups, fmt)
    check_grad(dy, g.y_shape, dtype)
    if activation(act) == "relu":
        if y is None:
            raise ValueError("activation='relu' needs y, the forward output, to mask dy with")
        y = as_array(y, "y")
        check_grad(y, g.y_shape, dtype, name="y")
    elif y is not None:
        raise ValueError("y is only used with activation='relu'")
    return dy, x, w, g, y


def pool_call(x, pool_size, stride, padding_, dilation, ceil_mode, fmt):
    fmt = data_format(fmt)
    x = as_array(x, "x")
    float_dtype(x=x)
    g = pool_geometry(x.shape, pool_size, stride, padding_, dilation, ceil_mode, fmt)
    return x, g


def pool_backward_call(dy, x, pool_size, stride, padding_, dilation, ceil_mode, fmt):
    x, g = pool_call(x, pool_size, stride, padding_, dilation, ceil_mode, fmt)
    dy = as_array(dy, "dy")
    check_grad(dy, g.y_shape, x.dtype)
    return dy, x, g


def global_call(x, fmt):
    """Global pools are pools whose window is the whole image."""
    fmt = data_format(fmt)
    x = as_array(x, "x")
    float_dtype(x=x)
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D ({'N, H, W, C' if fmt == 'NHWC' else 'N, C, H, W'}), "
                         f"got shape {x.shape}")
    n, h, w, c = to_nhwc_shape(x.shape, fmt)
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"x must have non-empty spatial and channel dimensions, got shape {x.shape}")
    return x, pool_geometry(x.shape, (h, w), None, "valid", 1, False, fmt)


def global_backward_call(dy, x, fmt):
    x, g = global_call(x, fmt)
    dy = as_array(dy, "dy")
    check_grad(dy, (g.n, g.c), x.dtype)
    return dy, x, g


def relu_backward_call(dy, y, out):
    """Validate relu_backward's arguments; returns (dy, y) as ndarrays."""
    dy = as_array(dy, "dy")
    y = as_array(y, "y")
    float_dtype(dy=dy, y=y)
    if dy.shape != y.shape:
        raise ValueError(f"dy must have y's shape {y.shape}, got {dy.shape}")
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != dy.shape or out.dtype != dy.dtype:
            raise ValueError(f"out must be an ndarray of shape {dy.shape} and dtype {dy.dtype}")
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError("out must be C-contiguous and writeable")
    return dy, y
