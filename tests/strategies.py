"""Hypothesis strategies that draw only valid conv/pool calls.

Each strategy first draws the arguments (kernel, stride, dilation, padding), then a spatial size
that fits them (at least the effective window minus the padding), so no example is wasted on an
argument error.  A case is a dict: the input arrays, in their layout and memory form, and the
keyword arguments, ready for ``ops.<op>(**case)``-style calls through ``call_args``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from helpers import (DTYPES, LAYOUTS, MEMORY_LAYOUTS, in_memory_layout, random_array, sprinkle,
                     to_layout, weights_to_layout)

MAX_BATCH = 4
MAX_CHANNELS = 16
MAX_SPATIAL = 20

int_or_pair = lambda lo, hi: st.one_of(  # noqa: E731
    st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


def as_pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


@st.composite
def explicit_padding(draw, max_h, max_w):
    """One of the explicit padding forms, and its ((top, bottom), (left, right)) meaning."""
    form = draw(st.sampled_from(["int", "pair", "pairs"]))
    if form == "int":
        p = draw(st.integers(0, min(max_h, max_w)))
        return p, ((p, p), (p, p))
    if form == "pair":
        ph, pw = draw(st.integers(0, max_h)), draw(st.integers(0, max_w))
        return (ph, pw), ((ph, ph), (pw, pw))
    pads = ((draw(st.integers(0, max_h)), draw(st.integers(0, max_h))),
            (draw(st.integers(0, max_w)), draw(st.integers(0, max_w))))
    return pads, pads


def _fitting_size(draw, effective, pad_lo, pad_hi, same):
    """A spatial size in 1..MAX_SPATIAL that holds the window (any size does for 'same')."""
    low = 1 if same else max(1, effective - pad_lo - pad_hi)
    return draw(st.integers(low, max(low, MAX_SPATIAL)))


@st.composite
def memory_form(draw):
    return draw(st.sampled_from(MEMORY_LAYOUTS)), draw(st.booleans())


def _window_and_padding(draw, k, d, pad_limit):
    """Draw a padding argument and the spatial size (h, w) it and the window fit."""
    kind = draw(st.sampled_from(["valid", "same", "explicit"]))
    if kind == "explicit":
        padding, ((pt, pb), (pl, pr)) = draw(explicit_padding(*pad_limit))
    else:
        padding, ((pt, pb), (pl, pr)) = kind, ((0, 0), (0, 0))
    same = kind == "same"
    h = _fitting_size(draw, (k[0] - 1) * d[0] + 1, pt, pb, same)
    w = _fitting_size(draw, (k[1] - 1) * d[1] + 1, pl, pr, same)
    return padding, h, w


def _arrays(draw, shapes, dtype, kind="uniform"):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [random_array(rng, s, dtype, kind) for s in shapes], rng


@st.composite
def conv_cases(draw):
    """A conv2d call: x, w, b (or None) and keyword arguments, with dy for the backward."""
    fmt = draw(st.sampled_from(LAYOUTS))
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(0, MAX_BATCH))
    grouping = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
    if grouping == "plain":
        groups = 1
        cin, cout = draw(st.integers(1, MAX_CHANNELS)), draw(st.integers(1, MAX_CHANNELS))
    elif grouping == "grouped":
        groups = draw(st.integers(2, 4))
        cin = groups * draw(st.integers(1, MAX_CHANNELS // groups))
        cout = groups * draw(st.integers(1, MAX_CHANNELS // groups))
    else:
        cin = groups = draw(st.integers(1, MAX_CHANNELS // 2))
        cout = cin * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride, dilation = draw(int_or_pair(1, 3)), draw(int_or_pair(1, 3))
    padding, h, w = _window_and_padding(draw, (kh, kw), as_pair(dilation), (3, 3))
    return _conv_case(draw, fmt, dtype, (n, h, w, cin), (kh, kw, cin // groups, cout),
                      dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


@st.composite
def winograd_cases(draw):
    """A conv2d call of the kind the Winograd path takes where its tiles waste little: 3x3, unit
    stride and dilation, one group, 16 to 40 channels in and out."""
    fmt = draw(st.sampled_from(LAYOUTS))
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(0, MAX_BATCH))
    cin, cout = draw(st.integers(16, 40)), draw(st.integers(16, 40))
    padding, h, w = _window_and_padding(draw, (3, 3), (1, 1), (3, 3))
    return _conv_case(draw, fmt, dtype, (n, h, w, cin), (3, 3, cin, cout),
                      dict(padding=padding))


@st.composite
def depthwise_cases(draw):
    """A depthwise conv2d call (groups equal to the input channels) with enough channels for
    the kernels' whole blocks of vectors (up to 2 x 16 float32 lanes) and a remainder: windows
    3, 5 or 7 wide, which slide along rows with stride 1 or 2, and others; a dilation down the
    rows only, or both ways."""
    fmt = draw(st.sampled_from(LAYOUTS))
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(0, 3))
    c = draw(st.integers(1, 70))
    m = draw(st.sampled_from([1, 1, 1, 2]))
    kh, kw = draw(st.integers(1, 7)), draw(st.sampled_from([3, 5, 7, 3, 5, 7, 1, 2, 4]))
    stride = (draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, 1, 2, 3])))
    dilation = (draw(st.integers(1, 3)), draw(st.sampled_from([1, 1, 1, 2])))
    padding, h, w = _window_and_padding(draw, (kh, kw), dilation, (3, 3))
    w += draw(st.integers(0, 16))   # rows long enough for blocks of 8 pixels
    return _conv_case(draw, fmt, dtype, (n, h, w, c), (kh, kw, 1, c * m),
                      dict(stride=stride, padding=padding, dilation=dilation, groups=c))


@st.composite
def planar_cases(draw):
    """An NCHW conv2d call of the kind the planar kernel takes: one group of 1 to 4 input
    channels; windows up to 7 wide, strides and dilations up to 3, rows long enough for
    several blocks of pixels and a remainder (up to 6 x 16 float32 lanes), output channels
    past a block of 4."""
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(0, 3))
    cin, cout = draw(st.integers(1, 4)), draw(st.integers(1, 13))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    stride, dilation = draw(int_or_pair(1, 3)), draw(int_or_pair(1, 3))
    padding, h, w = _window_and_padding(draw, (kh, kw), as_pair(dilation), (3, 3))
    w += draw(st.sampled_from([0, 0, 5, 17, 40, 100]))
    return _conv_case(draw, "NCHW", dtype, (n, h, w, cin), (kh, kw, cin, cout),
                      dict(stride=stride, padding=padding, dilation=dilation))


@st.composite
def pointwise_planes_cases(draw):
    """An NCHW 1x1 conv2d call of the kind that goes by products of the planes: one group, more
    input channels than the planar kernel takes, no padding, strides up to 3, outputs of 64
    pixels or more; the panels a few images at a time or the whole batch at once (group_bytes,
    for ops._PLANES_GROUP_BYTES)."""
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(1, 5))
    cin, cout = draw(st.integers(5, 70)), draw(st.integers(1, 60))
    stride = draw(int_or_pair(1, 3))
    sh, sw = as_pair(stride)
    # oh x ow outputs, each stride's last window anywhere in its step
    h, w = sh * draw(st.integers(7, 11)) + 1 + draw(st.integers(0, sh - 1)), \
        sw * draw(st.integers(7, 13)) + 1 + draw(st.integers(0, sw - 1))
    padding = draw(st.sampled_from(["valid", 0, ((0, 0), (0, 0))]))
    case = _conv_case(draw, "NCHW", dtype, (n, h, w, cin), (1, 1, cin, cout),
                      dict(stride=stride, padding=padding))
    case["group_bytes"] = draw(st.sampled_from([0, 4 << 20]))
    return case


def _conv_case(draw, fmt, dtype, x_shape, w_shape, kwargs):
    """The case dict of a conv2d call: arrays of these NHWC / HWIO shapes, in fmt's layouts and
    drawn memory forms, a bias or none, an activation, and whether dx is wanted."""
    (x, wt, b), rng = _arrays(draw, [x_shape, w_shape, (w_shape[3],)], dtype)
    return {
        "x": in_memory_layout(to_layout(x, fmt), *draw(memory_form())),
        "w": in_memory_layout(weights_to_layout(wt, fmt), *draw(memory_form())),
        "b": draw(st.sampled_from([None, b])),
        "activation": draw(st.sampled_from([None, "relu"])),
        "compute_dx": draw(st.booleans()),
        "kwargs": dict(kwargs, data_format=fmt),
        "rng": rng,
    }


@st.composite
def pool_cases(draw, op):
    """A max_pool2d (op="max") or avg_pool2d (op="avg") call: x and keyword arguments.

    Max-pool inputs are often small integers (exact ties) with NaN or -inf sprinkled in.
    """
    fmt = draw(st.sampled_from(LAYOUTS))
    dtype = draw(st.sampled_from(DTYPES))
    n, c = draw(st.integers(0, MAX_BATCH)), draw(st.integers(1, MAX_CHANNELS))
    pool_size = draw(int_or_pair(1, 5))
    k = as_pair(pool_size)
    stride = draw(st.one_of(st.none(), int_or_pair(1, 3)))
    dilation = draw(int_or_pair(1, 3)) if op == "max" else 1
    # PyTorch's rule: explicit pool padding is at most half the window on each side.
    padding, h, w = _window_and_padding(draw, k, as_pair(dilation), (k[0] // 2, k[1] // 2))
    kind = draw(st.sampled_from(["uniform", "ties"])) if op == "max" else "uniform"
    (x,), rng = _arrays(draw, [(n, h, w, c)], dtype, kind)
    special = draw(st.sampled_from([None, np.nan, -np.inf])) if op == "max" else None
    if special is not None:
        x = sprinkle(rng, x, special)
    kwargs = dict(pool_size=pool_size, stride=stride, padding=padding,
                  ceil_mode=draw(st.booleans()), data_format=fmt)
    if op == "max":
        kwargs["dilation"] = dilation
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
    return {"x": in_memory_layout(to_layout(x, fmt), *draw(memory_form())),
            "kwargs": kwargs, "rng": rng}


@st.composite
def global_cases(draw):
    fmt = draw(st.sampled_from(LAYOUTS))
    dtype = draw(st.sampled_from(DTYPES))
    shape = (draw(st.integers(0, MAX_BATCH)), draw(st.integers(1, MAX_SPATIAL)),
             draw(st.integers(1, MAX_SPATIAL)), draw(st.integers(1, MAX_CHANNELS)))
    (x,), rng = _arrays(draw, [shape], dtype, draw(st.sampled_from(["uniform", "ties"])))
    return {"x": in_memory_layout(to_layout(x, fmt), *draw(memory_form())),
            "data_format": fmt, "rng": rng}


@st.composite
def conv_pool_cases(draw):
    """A convolution with a ReLU and a max-pool over its output (ops._conv2d_relu_max_pool):
    either layout; plain, grouped or depthwise, or 3x3 with channels enough for Winograd; a pool
    window and stride that fit the convolution's output.  Inputs are often small integers (exact
    ties, and windows of zeros after the ReLU), sometimes with NaN."""
    fmt = draw(st.sampled_from(LAYOUTS))
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(0, 3))
    grouping = draw(st.sampled_from(["plain", "winograd", "grouped", "depthwise"]))
    kh = kw = 3
    stride = dilation = groups = 1
    if grouping == "winograd":
        cin, cout = draw(st.integers(16, 24)), draw(st.integers(16, 24))
    else:
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        stride, dilation = draw(int_or_pair(1, 2)), draw(int_or_pair(1, 2))
        if grouping == "plain":
            cin, cout = draw(st.integers(1, MAX_CHANNELS)), draw(st.integers(1, MAX_CHANNELS))
        elif grouping == "grouped":
            groups = draw(st.integers(2, 3))
            cin, cout = groups * draw(st.integers(1, 5)), groups * draw(st.integers(1, 5))
        else:
            cin = groups = draw(st.integers(1, 8))
            cout = cin * draw(st.integers(1, 2))
    padding, h, w = _window_and_padding(draw, (kh, kw), as_pair(dilation), (3, 3))
    h, w = h + draw(st.integers(0, 8)), w + draw(st.integers(0, 8))
    pool_size = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pool_stride = draw(st.one_of(st.none(), int_or_pair(1, 4)))
    kind = draw(st.sampled_from(["uniform", "ties"]))
    (x, wt, b), rng = _arrays(draw, [(n, h, w, cin), (kh, kw, cin // groups, cout), (cout,)],
                              dtype, kind)
    if draw(st.integers(0, 4)) == 0:
        x = sprinkle(rng, x, np.nan)
    return {
        "x": in_memory_layout(to_layout(x, fmt), *draw(memory_form())),
        "w": in_memory_layout(weights_to_layout(wt, fmt), *draw(memory_form())),
        "b": draw(st.sampled_from([None, b])),
        "pool": (pool_size, pool_stride),
        "cells": draw(st.booleans()),
        "kwargs": dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                       data_format=fmt),
        "nhwc_shapes": ((n, h, w, cin), (kh, kw, cin // groups, cout)),
    }
