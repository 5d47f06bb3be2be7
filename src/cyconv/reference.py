"""NumPy reference implementation of every kernel: slow, obvious, trusted.

Same signatures as :mod:`cyconv.ops`.  This module is the oracle of the test suite, not a second
fast path: it loops over kernel offsets and output pixels and uses ``np.einsum``.  It works in
NHWC internally (through transposed views) and returns results in the caller's layout.
Argument checking and shapes come from :mod:`cyconv._args`, shared with ``ops``.
"""

from __future__ import annotations

import numpy as np

from . import _args

__all__ = list(_args.FUNCTIONS)


def _window_slice(k, d, s, out):
    """Rows of the zero-padded input that kernel offset k touches for each output position."""
    start = k * d
    return slice(start, start + (out - 1) * s + 1, s)


def _pad(x, g, value=0.0):
    return np.pad(
        x,
        ((0, 0), (g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right), (0, 0)),
        constant_values=value,
    )


def conv2d(x, w, b=None, *, stride=1, padding="valid", dilation=1, groups=1,
           data_format="NHWC", activation=None):
    """y[n, i, j, o] = sum over (m, k, c) of x[n, i*s + m*d - pad, j*s + k*d - pad, c] * w[m, k, c, o] + b[o]."""
    x, w, b, g = _args.conv_call(x, w, b, stride, padding, dilation, groups, data_format)
    act = _args.activation(activation)
    xp = _pad(_args.nhwc(x, g.data_format), g)
    wk = _args.hwio(w, g.data_format)
    cg, og = g.c // g.groups, g.cout // g.groups
    y = np.zeros((g.n, g.oh, g.ow, g.groups, og), dtype=x.dtype)
    for m in range(g.kh):
        for k in range(g.kw):
            patch = xp[:, _window_slice(m, g.dh, g.sh, g.oh),
                       _window_slice(k, g.dw, g.sw, g.ow), :]
            patch = patch.reshape(g.n, g.oh, g.ow, g.groups, cg)
            y += np.einsum("nhwgc,cgo->nhwgo", patch, wk[m, k].reshape(cg, g.groups, og))
    y = y.reshape(g.n, g.oh, g.ow, g.cout)
    if b is not None:
        y += b
    if act == "relu":
        y = np.maximum(y, 0)
    return np.ascontiguousarray(_args.from_nhwc(y, g.data_format))


def conv2d_backward(dy, x, w, *, stride=1, padding="valid", dilation=1, groups=1,
                    data_format="NHWC", compute_dx=True, activation=None, y=None):
    """Gradients of conv2d with respect to x, w and b: (dx, dw, db).

    dx is None when compute_dx is False.  With activation="relu", y is the forward output and dy
    the gradient after the ReLU: it passes only where y > 0.
    """
    dy, x, w, g, y = _args.conv_backward_call(dy, x, w, stride, padding, dilation, groups,
                                              data_format, activation, y)
    compute_dx = _args.bool_arg(compute_dx, "compute_dx")
    if y is not None:
        dy = np.where(y > 0, dy, 0).astype(dy.dtype)
    xp = _pad(_args.nhwc(x, g.data_format), g)
    wk = _args.hwio(w, g.data_format)
    dyn = _args.nhwc(dy, g.data_format)
    cg, og = g.c // g.groups, g.cout // g.groups
    dyg = dyn.reshape(g.n, g.oh, g.ow, g.groups, og)
    dxp = np.zeros_like(xp)
    dw = np.zeros((g.kh, g.kw, cg, g.cout), dtype=x.dtype)
    for m in range(g.kh):
        for k in range(g.kw):
            rows = _window_slice(m, g.dh, g.sh, g.oh)
            cols = _window_slice(k, g.dw, g.sw, g.ow)
            patch = xp[:, rows, cols, :].reshape(g.n, g.oh, g.ow, g.groups, cg)
            wmk = wk[m, k].reshape(cg, g.groups, og)
            dw[m, k] = np.einsum("nhwgc,nhwgo->cgo", patch, dyg).reshape(cg, g.cout)
            if compute_dx:
                contrib = np.einsum("nhwgo,cgo->nhwgc", dyg, wmk)
                dxp[:, rows, cols, :] += contrib.reshape(g.n, g.oh, g.ow, g.c)
    db = dyn.sum(axis=(0, 1, 2))
    dx = None
    if compute_dx:
        dx = dxp[:, g.pad_top:g.pad_top + g.h, g.pad_left:g.pad_left + g.w, :]
        dx = np.ascontiguousarray(_args.from_nhwc(dx, g.data_format))
    return dx, np.ascontiguousarray(_args.from_hwio(dw, g.data_format)), db


def _windows(g):
    """Yield (i, j, flat positions) of every pool window's real (unpadded) cells, in scan order."""
    for i in range(g.oh):
        rows = [i * g.sh + m * g.dh - g.pad_top for m in range(g.kh)]
        for j in range(g.ow):
            cols = [j * g.sw + k * g.dw - g.pad_left for k in range(g.kw)]
            cells = [r * g.w + c for r in rows if 0 <= r < g.h for c in cols if 0 <= c < g.w]
            yield i, j, cells


def _max_pool_nhwc(xn, g):
    """Max and the flat index of the first maximum (NaN counts as the maximum) per window."""
    flat = xn.reshape(g.n, g.h * g.w, g.c)
    y = np.full((g.n, g.oh, g.ow, g.c), -np.inf, dtype=xn.dtype)
    idx = np.full((g.n, g.oh, g.ow, g.c), -1, dtype=np.int64)
    for i, j, cells in _windows(g):
        if not cells:
            continue
        vals = flat[:, cells, :]                       # (n, cells, c), in scan order
        first = np.argmax(vals, axis=1)                # argmax: first max, and first NaN wins
        y[:, i, j, :] = np.take_along_axis(vals, first[:, None, :], axis=1)[:, 0, :]
        idx[:, i, j, :] = np.asarray(cells)[first]
    return y, idx


def _window_origins(g):
    """Input row and column of every output window's first cell, shaped (1, oh, ow, 1)."""
    oy = (np.arange(g.oh) * g.sh - g.pad_top)[None, :, None, None]
    ox = (np.arange(g.ow) * g.sw - g.pad_left)[None, None, :, None]
    return oy, ox


def _flat_to_cells(idx, g):
    """(n, oh, ow, c) flat positions -> the cells' numbers i * kw + j in their windows."""
    oy, ox = _window_origins(g)
    py, px = np.divmod(idx, g.w)
    cells = (py - oy) // g.dh * g.kw + (px - ox) // g.dw
    return np.where(idx < 0, _args.NO_CELL, cells).astype(np.uint8)


def _cells_to_flat(cells, g):
    """The inverse of _flat_to_cells, refusing a number that is no real cell of its window."""
    k = cells.astype(np.int64)
    oy, ox = _window_origins(g)
    iy, ix = oy + k // g.kw * g.dh, ox + k % g.kw * g.dw
    none = k == _args.NO_CELL
    real = (k < g.kh * g.kw) & (iy >= 0) & (iy < g.h) & (ix >= 0) & (ix < g.w)
    if not np.all(real | none):
        raise _args.indices_range_error(g, "window")
    return np.where(none, -1, iy * g.w + ix)


def max_pool2d(x, pool_size=2, stride=None, padding="valid", *, dilation=1, ceil_mode=False,
               return_indices=False, index_format="flat", data_format="NHWC"):
    """Max over each window; padded cells are ignored.  Indices are flat positions in H*W
    (index_format='flat') or the cells' numbers i * kw + j in their windows ('window')."""
    x, g = _args.pool_call(x, pool_size, stride, padding, dilation, ceil_mode, data_format)
    return_indices = _args.bool_arg(return_indices, "return_indices")
    index_format = _args.index_format(index_format, g)
    y, idx = _max_pool_nhwc(_args.nhwc(x, g.data_format), g)
    y = np.ascontiguousarray(_args.from_nhwc(y, g.data_format))
    if return_indices:
        if index_format == "window":
            idx = _flat_to_cells(idx, g)
        return y, np.ascontiguousarray(_args.from_nhwc(idx, g.data_format))
    return y


def max_pool2d_backward(dy, x, pool_size=2, stride=None, padding="valid", *, dilation=1,
                        ceil_mode=False, indices=None, data_format="NHWC"):
    """Each output's gradient goes to one input: the first maximum of its window."""
    dy, x, g = _args.pool_backward_call(dy, x, pool_size, stride, padding, dilation, ceil_mode,
                                        data_format)
    if indices is None:
        _, idx = _max_pool_nhwc(_args.nhwc(x, g.data_format), g)
    else:
        indices = np.asarray(indices)
        idx = _args.nhwc(indices, g.data_format)
        if _args.check_indices(indices, g) == "window":
            idx = _cells_to_flat(idx, g)
        elif idx.size and (idx.max() >= g.h * g.w or idx.min() < -1):
            raise _args.indices_range_error(g, "flat")
    dyn = _args.nhwc(dy, g.data_format)
    dx = np.zeros((g.n, g.h * g.w, g.c), dtype=x.dtype)
    nn, _, _, cc = np.indices(idx.shape)
    real = idx >= 0
    np.add.at(dx, (nn[real], idx[real], cc[real]), dyn[real])
    dx = dx.reshape(g.n, g.h, g.w, g.c)
    return np.ascontiguousarray(_args.from_nhwc(dx, g.data_format))


def _avg_divisors(g, count_include_pad):
    """Divisor of each output window, following PyTorch's avg_pool2d rules."""
    div = np.zeros((g.oh, g.ow))
    for i in range(g.oh):
        r0 = i * g.sh - g.pad_top
        r1 = min(r0 + g.kh, g.h + g.pad_bottom)
        for j in range(g.ow):
            c0 = j * g.sw - g.pad_left
            c1 = min(c0 + g.kw, g.w + g.pad_right)
            if count_include_pad:
                div[i, j] = (r1 - r0) * (c1 - c0)
            else:
                div[i, j] = (min(r1, g.h) - max(r0, 0)) * (min(c1, g.w) - max(c0, 0))
    return div


def _avg_setup(x, pool_size, stride, padding, ceil_mode, count_include_pad, data_format):
    x, g = _args.pool_call(x, pool_size, stride, padding, 1, ceil_mode, data_format)
    count_include_pad = _args.bool_arg(count_include_pad, "count_include_pad")
    return x, g, _avg_divisors(g, count_include_pad)


def _safe_reciprocal(div, dtype):
    # A window with no real cells averages nothing: its output (and gradient) is 0.
    return np.where(div > 0, 1.0 / np.maximum(div, 1), 0.0).astype(dtype)[None, :, :, None]


def avg_pool2d(x, pool_size=2, stride=None, padding="valid", *, ceil_mode=False,
               count_include_pad=False, data_format="NHWC"):
    """Mean over each window. count_include_pad=False divides by the real cells (Keras)."""
    x, g, div = _avg_setup(x, pool_size, stride, padding, ceil_mode, count_include_pad, data_format)
    xn = _args.nhwc(x, g.data_format)
    total = np.zeros((g.n, g.oh, g.ow, g.c), dtype=x.dtype)
    for i, j, cells in _windows(g):
        if cells:
            total[:, i, j, :] = xn.reshape(g.n, g.h * g.w, g.c)[:, cells, :].sum(axis=1)
    y = total * _safe_reciprocal(div, x.dtype)
    return np.ascontiguousarray(_args.from_nhwc(y, g.data_format))


def avg_pool2d_backward(dy, x, pool_size=2, stride=None, padding="valid", *, ceil_mode=False,
                        count_include_pad=False, data_format="NHWC"):
    dy, x, g = _args.pool_backward_call(dy, x, pool_size, stride, padding, 1, ceil_mode, data_format)
    count_include_pad = _args.bool_arg(count_include_pad, "count_include_pad")
    div = _avg_divisors(g, count_include_pad)
    share = _args.nhwc(dy, g.data_format) * _safe_reciprocal(div, x.dtype)
    dx = np.zeros((g.n, g.h * g.w, g.c), dtype=x.dtype)
    for i, j, cells in _windows(g):
        for cell in cells:
            dx[:, cell, :] += share[:, i, j, :]
    dx = dx.reshape(g.n, g.h, g.w, g.c)
    return np.ascontiguousarray(_args.from_nhwc(dx, g.data_format))


def global_max_pool2d(x, data_format="NHWC"):
    """Max over H and W: (N, C) in either layout, as Keras's GlobalMaxPooling2D."""
    x, g = _args.global_call(x, data_format)
    return np.ascontiguousarray(_args.nhwc(x, g.data_format).max(axis=(1, 2)))


def global_max_pool2d_backward(dy, x, data_format="NHWC"):
    dy, x, g = _args.global_backward_call(dy, x, data_format)
    flat = _args.nhwc(x, g.data_format).reshape(g.n, g.h * g.w, g.c)
    first = np.argmax(flat, axis=1)                   # (n, c): first maximum in scan order
    dx = np.zeros((g.n, g.h * g.w, g.c), dtype=x.dtype)
    nn, cc = np.indices((g.n, g.c))
    dx[nn, first, cc] = dy
    dx = dx.reshape(g.n, g.h, g.w, g.c)
    return np.ascontiguousarray(_args.from_nhwc(dx, g.data_format))


def global_avg_pool2d(x, data_format="NHWC"):
    x, g = _args.global_call(x, data_format)
    return np.ascontiguousarray(_args.nhwc(x, g.data_format).mean(axis=(1, 2)))


def global_avg_pool2d_backward(dy, x, data_format="NHWC"):
    dy, x, g = _args.global_backward_call(dy, x, data_format)
    # A copy: a broadcast view is read-only, and stays one for a 1x1 image.
    dx = np.broadcast_to((dy / (g.h * g.w))[:, None, None, :], (g.n, g.h, g.w, g.c)).copy()
    return np.ascontiguousarray(_args.from_nhwc(dx, g.data_format))


def relu_backward(dy, y, out=None):
    """dy where y > 0, else 0."""
    dy, y = _args.relu_backward_call(dy, y, out)
    result = np.ascontiguousarray(np.where(y > 0, dy, 0), dtype=dy.dtype)
    if out is None:
        return result
    out[...] = result
    return out
