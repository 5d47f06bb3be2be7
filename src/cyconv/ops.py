"""The functional API over the compiled kernels.

Each function validates and normalises its arguments (through :mod:`cyconv._args`, shared with
:mod:`cyconv.reference`, which has the same signatures), computes the output shape, brings the
inputs to C-contiguous NHWC (NCHW convolutions and pools mostly transpose a few images or a
block of an image's planes at a time into each thread's cache instead of whole arrays),
allocates the outputs, decides how many threads the call is worth and calls
:mod:`cyconv._kernels`.  Inputs are never modified; any strides and read-only arrays are
accepted.

Layouts: ``data_format="NHWC"`` (Keras) takes HWIO weights ``(kh, kw, cin // groups, cout)``;
``"NCHW"`` (PyTorch) takes OIHW weights ``(cout, cin // groups, kh, kw)``.  Results come back in
the input's layout.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

from . import _args, _kernels
from ._config import get_num_threads, l2_cache_bytes, l3_cache_bytes

__all__ = list(_args.FUNCTIONS)

# Below this much work (in multiply-adds or element visits) per thread, starting another thread
# costs more than it saves: small layers run on one thread.
_WORK_PER_THREAD = 200_000
# A pool's element visit (a load, a compare, a store) costs about two multiply-adds: a second
# thread pays from about 100,000 visits (measured on the seed model's pools).
_POOL_VISIT = 2
# ReLU's gradient: a second thread pays from about 20,000 elements (one thread streams 250,000
# in 115 us, two in 27: each core's L2 then holds its half).
_RELU_VISIT = 10
# A dropout element: half a 64-bit hash, a compare and a product.
_DROPOUT_VISIT = 10
# An Adam update of an element (a square root and a division among seven reads and writes).
_ADAM_VISIT = 20


def _threads(work):
    n = get_num_threads()
    if n <= 1:
        return 1
    return int(max(1, min(n, work // _WORK_PER_THREAD)))


def _c(a):
    """C-contiguous (a copy only when needed); read-only arrays are fine."""
    return a if a is None or a.flags.c_contiguous else np.ascontiguousarray(a)


def _bits(a):
    """The transposing kernel moves float32/float64 words: int64 indices travel as float64."""
    return a.view(np.float64) if a.dtype == np.int64 else a


# Temporaries of at least this many bytes (an NCHW call's arrays on their way to NHWC and back)
# come from buffers kept from call to call: glibc maps each allocation past 32 MB afresh, and
# the system faults in and zeroes every page of it on first touch (a 33.5 MB transpose took
# 6.3 ms into a fresh array, 3.1 into one already mapped).  At most _TEMP_KEEP_BYTES are kept.
_TEMP_MIN_BYTES = 32 << 20
_TEMP_KEEP_BYTES = 256 << 20
_temps = threading.local()


def _holders(pool):
    """How many references hold each buffer of `pool`: one more for every array that views it
    (numpy's views hold their base)."""
    return [sys.getrefcount(buf) for buf in pool]


# what _holders counts for a buffer that only its pool's list holds (measured, not assumed: the
# count of the references a call itself makes differs between Python versions)
_FREE_HOLDERS = _holders([np.empty(1, dtype=np.uint8)])[0]


def _temp_empty(shape, dtype):
    """np.empty for a temporary that never leaves ops: from _TEMP_MIN_BYTES, a view of one of
    this thread's kept buffers that no array views (the smallest that holds it), else of a new
    one kept for the calls after."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < _TEMP_MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    pool = _temps.__dict__.setdefault("pool", [])
    free = [h <= _FREE_HOLDERS for h in _holders(pool)]
    fits = [i for i, buf in enumerate(pool) if free[i] and buf.nbytes >= nbytes]
    if fits:
        buf = pool[min(fits, key=lambda i: pool[i].nbytes)]
    else:
        buf = np.empty(-(-nbytes // (1 << 20)) << 20, dtype=np.uint8)
        # the new one and the newest others within _TEMP_KEEP_BYTES (one that is dropped
        # while in use lives on in its views, only not for later calls)
        keep, total = [], 0
        for old in [*pool, buf][::-1]:
            if total + old.nbytes <= _TEMP_KEEP_BYTES:
                keep.append(old)
                total += old.nbytes
        pool[:] = keep[::-1]
    return buf[:nbytes].view(dtype).reshape(shape)


def _transpose_images(a, rows, cols, temp=False):
    """(N, rows, cols) -> (N, cols, rows), C-contiguous, through the blocked C kernel (numpy's
    strided copy of a large image is up to 18x slower than a plain copy); temp: the result is
    a temporary (see _temp_empty)."""
    if rows == 1 or cols == 1:
        # the same bytes either way (one channel, or one pixel per image): no copy
        return a.reshape(a.shape[0], cols, rows)
    if a.dtype == np.uint8:
        # window indices: an eighth of a float64's bytes, numpy's copy will do
        return np.ascontiguousarray(a.reshape(a.shape[0], rows, cols).transpose(0, 2, 1))
    out = (_temp_empty if temp else np.empty)((a.shape[0], cols, rows), a.dtype)
    if a.size:
        # an element moved costs about two multiply-adds (32 images of 26x26x32 float32, 2.8 MB,
        # with AVX2: 124 us on one thread, 83 on two; a plain copy 91)
        _kernels.transpose(_bits(a.reshape(a.shape[0], rows, cols)), _bits(out),
                           _threads(2 * a.size))
    return out


def _hwio_weights(w, fmt):
    """C-contiguous HWIO weights, the kernels' layout, from the caller's (OIHW for NCHW).  Large
    ones in one blocked pass, (O, I, T) -> (T, I, O) over the T = kh * kw taps: a 512 x 512 x 3
    x 3 float32 array (2 threads, AVX2) 1.35 ms, and 1.25 the way back (_oihw_weights), where a
    blocked transpose and a copy of whole rows took 3.6 and 2.7, numpy's strided copy 5.3."""
    if fmt == "NHWC":
        return _c(w)
    as_hwio = _args.hwio(w, fmt)
    if as_hwio.flags.c_contiguous or w.size < _WEIGHTS_BLOCKED:
        # a view of HWIO weights (a channels_first layer's kernel) needs no copy
        return _c(as_hwio)
    o, i, kh, kw = w.shape
    return _swap_outer_axes(_c(w).reshape(o, i, kh * kw)).reshape(kh, kw, i, o)


def _oihw_weights(dw):
    """The converse of _hwio_weights: C-contiguous OIHW from C-contiguous HWIO (the weight
    gradient of an NCHW call)."""
    kh, kw, i, o = dw.shape
    if dw.size < _WEIGHTS_BLOCKED:
        return np.ascontiguousarray(_args.from_hwio(dw, "NCHW"))
    return _swap_outer_axes(dw.reshape(kh * kw, i, o)).reshape(o, i, kh, kw)


def _swap_outer_axes(a):
    """(A, B, C) -> (C, B, A), C-contiguous, through the blocked C kernels."""
    n_a, n_b, n_c = a.shape
    # 1x1 weights, (O, I, 1) <-> (1, I, O): one matrix's transpose, in whole 16 x 16 tiles
    if n_c == 1:
        return _transpose_images(a.reshape(1, n_a, n_b), n_a, n_b).reshape(1, n_b, n_a)
    if n_a == 1:
        return _transpose_images(a.reshape(1, n_b, n_c), n_b, n_c).reshape(n_c, n_b, 1)
    out = np.empty((n_c, n_b, n_a), dtype=a.dtype)
    _kernels.swap_outer_axes(a, out, _threads(2 * a.size))
    return out


# Weights from this many values on go through the blocked kernels: numpy's copies of a
# 64 x 64 x 3 x 3 array took 29 and 63 us, the kernel's 34 and 26; 128 x 64 x 3 x 3 74 and 139
# against 59 and 48.
_WEIGHTS_BLOCKED = 1 << 15


def _nhwc(a, fmt):
    """An input in the kernels' layout: C-contiguous NHWC (for NCHW, one transposing pass, into
    a temporary: see _temp_empty)."""
    if fmt == "NHWC":
        return _c(a)
    n, c, h, w = a.shape
    if not a.flags.c_contiguous:
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1))
    return _transpose_images(a, c, h * w, temp=True).reshape(n, h, w, c)


def _nhwc_empty(shape, dtype, fmt):
    """An NHWC array for a result that _out then gives in fmt: a temporary (see _temp_empty)
    where _out copies it into the NCHW result, else the result itself (NHWC, or one channel or
    one pixel, whose NHWC bytes are the NCHW result's)."""
    n, h, w, c = shape
    if fmt == "NCHW" and c > 1 and h * w > 1:
        return _temp_empty(shape, dtype)
    return np.empty(shape, dtype=dtype)


def _out(y_nhwc, fmt):
    """Return an NHWC result in the caller's layout, C-contiguous."""
    if fmt == "NHWC":
        return y_nhwc
    n, h, w, c = y_nhwc.shape
    return _transpose_images(y_nhwc, h * w, c).reshape(n, c, h, w)


def conv2d(x, w, b=None, *, stride=1, padding="valid", dilation=1, groups=1,
           data_format="NHWC", activation=None):
    """2-D convolution (cross-correlation, as in Keras and PyTorch), optional bias and ReLU.

    Parameters
    ----------
    x : (N, H, W, C) for NHWC or (N, C, H, W) for NCHW; float32 or float64.
    w : HWIO (kh, kw, C // groups, cout) for NHWC, OIHW (cout, C // groups, kh, kw) for NCHW.
    b : (cout,) or None.
    stride, dilation : int or (h, w).
    padding : "valid", "same" (TensorFlow's rule), int, (ph, pw) or ((top, bottom), (left, right)).
    groups : input and output channels are split into this many independent groups.
    activation : None or "relu", applied in the kernel's epilogue.
    """
    x, w, b, g = _args.conv_call(x, w, b, stride, padding, dilation, groups, data_format)
    relu = _args.activation(activation) == "relu"
    if _straight_into_planes(g):
        y = np.empty(g.y_shape, dtype=x.dtype)
        n_threads = _threads(_args.flops_conv(g) // 2)
        _kernels.conv2d_forward_planar(_c(x), _hwio_weights(w, "NCHW"), _c(b), g, relu, y,
                                       n_threads, _planar_band_rows(g, x.itemsize, n_threads))
        return y
    if _pointwise_in_planes(g):
        y = np.empty(g.y_shape, dtype=x.dtype)
        a = _oi_matrix(w, g)
        if b is not None:
            # a bias per row of the products: a last column of the weights, met by a row of
            # ones
            a = np.concatenate([a, b.reshape(g.cout, 1)], axis=1)
        n_threads = _threads(_args.flops_conv(g) // 2)
        _kernels.gemm_planes(a, _pixels_read(x, g), relu, y.reshape(g.n, g.cout, g.oh * g.ow),
                             n_threads, _planes_group(g, x.itemsize, n_threads))
        return y
    if _depthwise_in_planes(g, x.dtype):
        y = np.empty(g.y_shape, dtype=x.dtype)
        _depthwise_planes(_c(x), w, _c(b), g, relu, y, input_grad=False)
        return y
    per_stage = _images_per_stage(g, x.dtype, False) if g.n else 0
    n_threads = _threads(_args.flops_conv(g) // 2) if per_stage else 0
    # at least 4 images per thread: fewer units leave a thread idle (a batch of one took 1.7x
    # as long as the whole input transposed, whose pixels are shared out)
    if per_stage and g.n >= 4 * n_threads:
        # a few images at a time through each thread's stage, 4 units per thread at least.
        # In-process A/B against the whole input transposed (and the output written into the
        # planes from the tiles, or transposed whole after Winograd), 2 threads: the seed's
        # conv2 and conv3 at batch 32 0.79 and 0.84 of the time, at 256 0.96 and 0.86, conv1
        # 0.94 and 1.01.
        y = np.empty(g.y_shape, dtype=x.dtype)
        _kernels.conv2d_forward_images(_c(x), _hwio_weights(w, "NCHW"), _c(b), g, relu, y,
                                       n_threads, min(per_stage, -(-g.n // (4 * n_threads))))
        return y
    # NCHW output straight from the direct tiles, each block transposed while in cache (else
    # a pass of its own; nothing to do where a channel or a pixel per image is all there is)
    planes = (g.data_format == "NCHW" and g.n and g.cout > 1 and g.oh * g.ow > 1
              and _kernels.conv2d_forward_route(g, x.dtype) == "direct")
    y = (np.empty(g.y_shape, dtype=x.dtype) if planes
         else _nhwc_empty(g.y_shape_nhwc, x.dtype, g.data_format))
    if g.n:
        xk = _nhwc(x, g.data_format)
        wk = _hwio_weights(w, g.data_format)
        _kernels.conv2d_forward(xk, wk, _c(b), g, relu, y, _threads(_args.flops_conv(g) // 2),
                                planes)
    return y if planes else _out(y, g.data_format)


def conv2d_backward(dy, x, w, *, stride=1, padding="valid", dilation=1, groups=1,
                    data_format="NHWC", compute_dx=True, activation=None, y=None):
    """Gradients of :func:`conv2d`: returns ``(dx, dw, db)``.

    ``dy`` has the forward output's shape; ``dw`` has ``w``'s layout.  With ``compute_dx=False``
    the input gradient is skipped and ``dx`` is None (a network's first layer never needs it).
    ``activation="relu"`` with ``y``, the forward output, takes dy as the gradient after a fused
    ReLU (it passes only where y > 0); without dx the mask costs nothing extra in NHWC (NCHW
    arrays that go a few images at a time are masked in a pass of their own first).
    """
    dy, x, w, g, y = _args.conv_backward_call(dy, x, w, stride, padding, dilation, groups,
                                              data_format, activation, y)
    compute_dx = _args.bool_arg(compute_dx, "compute_dx")
    if _pointwise_in_planes(g):
        return _pointwise_backward_in_planes(dy, x, w, g, y, compute_dx)
    if _depthwise_in_planes(g, x.dtype):
        return _depthwise_backward_in_planes(dy, x, w, g, y, compute_dx)
    per_stage = _backward_images_per_stage(g, x.dtype)
    if per_stage:
        return _backward_in_images(dy, x, w, g, y, compute_dx, per_stage)
    fmt = g.data_format
    dyk = _nhwc(dy, fmt)
    yk = None if y is None else _nhwc(y, fmt)
    dx = None
    if compute_dx:
        dx = _nhwc_empty((g.n, g.h, g.w, g.c), x.dtype, fmt)
        if g.n:
            if yk is not None:
                # both kernels read dy: mask it once
                dyk = _relu_mask(dyk, yk)
                yk = None
            _kernels.conv2d_backward_data(dyk, _hwio_weights(w, fmt), g, dx,
                                          _threads(_args.flops_conv(g) // 2))
    dw, db = _weight_grads(g, _nhwc(x, fmt), dyk, yk)
    dw = dw if fmt == "NHWC" else _oihw_weights(dw)
    return (_out(dx, fmt) if compute_dx else None), dw, db


# The depthwise kernels' block of channels on AVX-512: two vectors.
_DEPTHWISE_BLOCK_BYTES = 128


def _pointwise_in_planes(g):
    """Whether an NCHW convolution goes by _kernels.gemm_planes (where not by the planar kernel):
    a pointwise one (1x1, no padding, one group), each image's planes a matrix product with the
    weights, no transposes to NHWC and back; the backward pass too (see
    _pointwise_backward_in_planes).  In-process A/B against the images staged in NHWC (2
    threads, AVX2, float32, batch 8), forward: 14x14x256 -> 512 0.84-0.91 of the time,
    28x28x128 -> 256 0.79, 56x56x64 -> 128 0.87-0.93; backward 0.82-0.93, 0.78-0.85 and
    0.41-0.66, 13x13x32 -> 64 at batch 32 0.94-0.98 (7x7 images: see
    _POINTWISE_PLANES_MIN_PIXELS).  With a stride, the pixels read are copied out first:
    ResNet's 1x1 projections of stride 2 at batch 8, 56x56x256 -> 512, 28x28x512 -> 1024 and
    56x56x64 -> 256, forward 0.83, 0.90 and 0.82 of the time, backward 0.60, 0.95 and 0.71.
    (The input gradient alone this way, the weight gradient through NHWC, took 0.89-1.28: the
    whole backward pass there shares dy's transpose.)"""
    return (g.data_format == "NCHW" and g.kh == g.kw == 1
            and g.pad_top == g.pad_bottom == g.pad_left == g.pad_right == 0 and g.groups == 1
            and g.oh * g.ow >= _POINTWISE_PLANES_MIN_PIXELS and g.n * g.c * g.cout > 0)


# Output pixels per image from which NCHW pointwise layers go by gemm_planes, whose vectors
# run along an image's pixels: a row's part block wastes lanes (an image of one pixel, a
# network's head after a global pool, would use one of each vector).  At 7x7 the part blocks
# cost more than the transposes save: 7x7x512 -> 2048 with bias and ReLU took 1.13 of the
# time, 7x7x1024 -> 1024 1.08 (in-process, AVX2, 2 threads, batch 8).
_POINTWISE_PLANES_MIN_PIXELS = 64


def _pointwise_backward_in_planes(dy, x, w, g, y, compute_dx):
    """conv2d_backward where _pointwise_in_planes: products of the planes as the forward pass
    goes, no transposes of the arrays.  dx[n] = w.T dy[n]; dw and db in one product,
    sum over n of dy[n] [x[n].T | 1] (x's transpose, a block at a time, into the panels)."""
    dy = _c(dy) if y is None else _relu_mask(dy, y)
    n_threads = _threads(_args.flops_conv(g) // 2)
    dy_planes = dy.reshape(g.n, g.cout, g.oh * g.ow)
    dx = None
    if compute_dx:
        dx = np.empty((g.n, g.c, g.oh, g.ow), dtype=x.dtype)
        _kernels.gemm_planes(_io_matrix(w, g), dy_planes, False,
                             dx.reshape(g.n, g.c, g.oh * g.ow), n_threads,
                             _planes_group(g, x.itemsize, n_threads, g.cout))
        if dx.shape != x.shape:
            # a stride: the pixels it skips get no gradient
            read, dx = dx, np.zeros(x.shape, dtype=x.dtype)
            dx[:, :, ::g.sh, ::g.sw] = read
    dwb = np.empty((g.cout, g.c + 1), dtype=x.dtype)
    _kernels.gemm_planes_weight_grad(dy_planes, _pixels_read(x, g), dwb, n_threads,
                                     _planes_group(g, x.itemsize, n_threads))
    return dx, dwb[:, :g.c].reshape(g.cout, g.c, 1, 1).copy(), dwb[:, g.c].copy()


def _planes_group(g, itemsize, n_threads, channels=None):
    """Images per group for gemm_planes and gemm_planes_weight_grad: their panels (about a
    copy of the images read, `channels` of them per pixel, x's by default) a group at a time,
    _PLANES_GROUP_BYTES at most, else 2 images a thread."""
    image = (g.c if channels is None else channels) * g.oh * g.ow * itemsize
    return max(2 * n_threads, _PLANES_GROUP_BYTES // max(1, image))


_PLANES_GROUP_BYTES = 4 << 20


def _pixels_read(x, g):
    """The planes of the pixels a pointwise convolution reads, (n, c, oh * ow), C-contiguous:
    with a stride, every sh-th row's every sw-th pixel, copied out."""
    return _c(x[:, :, ::g.sh, ::g.sw]).reshape(g.n, g.c, g.oh * g.ow)


def _oi_matrix(w, g):
    """1x1 OIHW weights as a C-contiguous (cout, cin) matrix; an OIHW view of HWIO weights (a
    channels_first layer's kernel) through the blocked transpose, not numpy's strided copy."""
    io = _io_view(w, g)
    return _c(w).reshape(g.cout, g.c) if io is None else _transposed_matrix(io)


def _io_matrix(w, g):
    """The transpose of _oi_matrix: (cin, cout), C-contiguous; an OIHW view of HWIO weights is
    that already."""
    io = _io_view(w, g)
    return _transposed_matrix(_c(w).reshape(g.cout, g.c)) if io is None else io


def _io_view(w, g):
    """1x1 OIHW weights that are a view of C-contiguous HWIO ones, as that (cin, cout) matrix;
    else None."""
    hwio = _args.hwio(w, "NCHW")
    if w.flags.c_contiguous or not hwio.flags.c_contiguous:
        return None
    return hwio.reshape(g.c, g.cout)


def _transposed_matrix(a):
    """a.T, C-contiguous; large ones through the blocked kernel (see _WEIGHTS_BLOCKED)."""
    if a.size < _WEIGHTS_BLOCKED:
        return np.ascontiguousarray(a.T)
    return _transpose_images(_c(a).reshape(1, *a.shape), *a.shape)[0]


def _straight_into_planes(g):
    """Whether an NCHW convolution goes by _kernels.conv2d_forward_planar: one group of at most
    PLANAR_MAX_CHANNELS input channels (a first layer's grayscale or colour images), whose
    output, the layer's largest array, is then written once, into its planes.  In-process A/B
    against the images through the NHWC tiles and transposed out (2 threads, AVX2): the seed's
    conv1 at batch 32 and 256 0.62-0.67 and 0.55 of the time, 3-channel 32x32 images (3x3, 5x5)
    0.58-0.67, the ImageNet-style 7x7 stride-2 stem 0.93."""
    return (g.data_format == "NCHW" and g.groups == 1 and g.c <= _kernels.PLANAR_MAX_CHANNELS
            and g.c * g.kh * g.kw <= _kernels.PLANAR_MAX_TAPS and g.n * g.oh * g.ow * g.cout > 0)


# A band's staged input rows for conv2d_forward_planar: well inside a core's L2, beside the
# output rows it writes.
_PLANAR_STAGE_BYTES = 128 * 1024


def _planar_band_rows(g, itemsize, n_threads):
    """Output rows per unit of conv2d_forward_planar: whole images where there are 4 per
    thread, else bands of them for 4 units per thread; fewer rows where their stage would
    pass _PLANAR_STAGE_BYTES."""
    bands = min(g.oh, -(-4 * n_threads // g.n))
    rows = -(-g.oh // bands)
    while rows > 1 and _kernels.planar_stage_bytes(g, rows, itemsize) > _PLANAR_STAGE_BYTES:
        rows = -(-rows // 2)
    return rows


def _depthwise_in_planes(g, dtype):
    """Whether an NCHW convolution goes through _depthwise_planes: a depthwise one without a
    channel multiplier, with at least 4 units (the whole arrays transposed share out rows
    instead: a batch of one 32-channel float32 image, a single unit, took 1.3x as long on 2
    threads).  The count depends on the problem only, as the weight gradient's bits do."""
    if not (g.data_format == "NCHW" and g.n and g.cout == g.c
            and _kernels.conv2d_forward_route(g, dtype) == "depthwise"):
        return False
    return g.n * -(-g.c // (_DEPTHWISE_BLOCK_BYTES // np.dtype(dtype).itemsize)) >= 4


def _depthwise_planes(src, w, b, g, relu, dst, input_grad):
    """A depthwise convolution's forward pass (src x, dst y) or input gradient (src dy, dst
    dx) over NCHW arrays, a block of an image's channel planes at a time through each thread's
    cache (see _kernels.depthwise_planes); w is OIHW (c, 1, kh, kw).  In-process A/B against
    the whole arrays transposed to NHWC and back (benchmarks/ab_builds.py, 2 threads): the
    forward pass took 0.49 to 0.61 of the time and the backward 0.59 to 0.69 (MobileNet's
    56x56x64 at batch 8, 28x28x128 stride 2 at 8, 14x14x256 at 32)."""
    n_threads = _threads(_args.flops_conv(g) // 2)
    block = _depthwise_block(g, src.itemsize, n_threads)
    unit_stride = g.sh == 1 and g.sw == 1
    # the input gradient of a unit-stride layer is a forward pass with the flipped weights
    taps = (w[:, 0, ::-1, ::-1] if input_grad and unit_stride else w[:, 0]).reshape(g.c, -1)
    wblocks = np.concatenate([taps[c0:c0 + block].T.ravel() for c0 in range(0, g.c, block)])
    _kernels.depthwise_planes(src, wblocks, b, g, relu, dst, n_threads, block, input_grad)


def _depthwise_backward_in_planes(dy, x, w, g, y, compute_dx):
    """conv2d_backward for _depthwise_in_planes: (dx, dw, db), NCHW and OIHW, each pass a block
    of an image's planes at a time through each thread's cache."""
    dy = _c(dy) if y is None else _relu_mask(dy, y)
    dx = None
    if compute_dx:
        dx = np.empty(x.shape, dtype=x.dtype)
        _depthwise_planes(dy, w, None, g, False, dx, input_grad=True)
    dw = np.empty(g.kh * g.kw * g.c, dtype=x.dtype)
    db = np.empty(g.c, dtype=x.dtype)
    n_threads = _threads(_args.flops_conv(g) // 2)
    block = _depthwise_block(g, x.itemsize, n_threads)
    _kernels.depthwise_weight_grads_planes(_c(x), dy, g, dw, db, n_threads, block)
    dw = np.ascontiguousarray(dw.reshape(g.kh, g.kw, 1, g.c).transpose(3, 2, 0, 1))
    return dx, dw, db


def _depthwise_block(g, itemsize, n_threads):
    """Channels per unit of the NCHW depthwise passes (see _plane_block): a multiple of the
    depthwise kernels' channel block."""
    return _plane_block(g, itemsize, 0, n_threads, unit=_DEPTHWISE_BLOCK_BYTES // itemsize)


# A thread's stage for an NCHW convolution a few images at a time: half the 2 MB L2 of the
# machine this was measured on (a quarter took as long).  A constant rather than the L2 the
# machine reports: how many images the backward pass takes at a time orders its sums, whose
# bits then depend on the problem only.
_IMAGES_STAGE_BYTES = 1 << 20


def _images_per_stage(g, dtype, backward):
    """How many images' arrays (see _kernels.image_stage_bytes) a stage holds, for an NCHW
    convolution a few images at a time (_kernels.conv2d_forward_images and
    conv2d_backward_images): 0 for NHWC, or where not one image's fit, or for the depthwise
    kernels (see _depthwise_planes)."""
    if g.data_format != "NCHW" or _kernels.conv2d_forward_route(g, dtype) == "depthwise":
        return 0
    stage = _kernels.image_stage_bytes(g, 1, np.dtype(dtype).itemsize, backward)
    return _IMAGES_STAGE_BYTES // stage


def _backward_images_per_stage(g, dtype):
    """How many images at a time an NCHW convolution's backward pass takes, or 0 where it does
    not go a few images at a time: it needs at least 4 images (the groups of its weight
    gradient), not depthwise, one image's arrays within a stage, and a weight gradient whose
    sums stay within 1 MB where it runs the direct kernel.  Each group of images keeps a
    partial sum of its own: past that size they went through memory, where the whole arrays
    transposed to NHWC share one (in-process, AVX2, 2 threads: 3x3x512 -> 512 over 7x7 at
    batch 8 0.55 of the time, 1x1 512 -> 2048 over 7x7 0.57, 3x3x256 -> 256 over 14x14
    0.87)."""
    if g.n < 4 or (_kernels.conv2d_backward_filter_route(g, dtype) == "direct"
                   and _kernels.direct_weight_grad_sums_big(g, np.dtype(dtype).itemsize)):
        return 0
    return _images_per_stage(g, dtype, True)


def _backward_in_images(dy, x, w, g, y, compute_dx, per_stage):
    """conv2d_backward a few images at a time (see _backward_images_per_stage): (dx, dw, db),
    NCHW and OIHW, per_stage images at a time (at most a group's: 4 or 8 groups, see the
    kernel).  In-process A/B against the whole arrays transposed to NHWC and back
    (benchmarks/ab_builds.py, 2 threads, with half of this machine's 2 MB L2 per stage): 0.80,
    0.87 and 0.88 of the time for the seed's three layers at batch 32, 0.95 and 0.87 for conv2
    and conv3 at 256, 0.82 for a 16x16x32 layer by Winograd at 16 (a quarter of L2 per stage:
    the same)."""
    dy = _c(dy) if y is None else _relu_mask(dy, y)
    dx = np.empty(x.shape, dtype=x.dtype) if compute_dx else None
    dw = np.empty((g.kh, g.kw, g.c // g.groups, g.cout), dtype=x.dtype)
    db = np.empty(g.cout, dtype=x.dtype)
    _kernels.conv2d_backward_images(dy, _c(x), _hwio_weights(w, "NCHW"), g, dx, dw, db,
                                    _threads(_args.flops_conv(g) // 2), per_stage)
    return dx, _oihw_weights(dw), db


def _empty_or_zeros(g, shape, dtype):
    """An output the kernels write whole; an empty batch leaves it (a gradient) zero."""
    return (np.empty if g.n else np.zeros)(shape, dtype=dtype)


def _weight_grads(g, x, dy, y=None, pool_cell=None, pool_geom=None):
    """dw (HWIO) and db from NHWC arrays (see conv2d_backward_filter for y and the pool)."""
    dw = _empty_or_zeros(g, (g.kh, g.kw, g.c // g.groups, g.cout), x.dtype)
    db = _empty_or_zeros(g, g.cout, x.dtype)
    if g.n:
        _kernels.conv2d_backward_filter(x, dy, g, dw, db, _threads(_args.flops_conv(g) // 2), y,
                                        pool_cell=pool_cell, pool_geom=pool_geom)
    return dw, db


def _conv2d_weight_grad_through_max_pool(dy_pool, cells, pool_size, pool_stride, x, w, *,
                                         stride=1, padding="valid", dilation=1, groups=1,
                                         y=None):
    """``(dw, db)`` of a convolution (NHWC) whose output went through ``max_pool2d(...,
    index_format="window")`` (which returned ``cells``), from that pool's output gradient: what
    ``conv2d_backward(max_pool2d_backward(dy_pool, conv_out, ..., indices=cells), x, w,
    compute_dx=False)`` gives, without writing out the pool's input gradient and reading it
    back (for a network's first layer).  A layer of one group with at most 12 weights per
    output channel and no ``y`` goes by the pool's windows (each window's gradient masked once
    per cell, the weights' sums in registers): the same within rounding.  Others run the direct
    weight-gradient kernel: to the bit what conv2d_backward gives where that takes the direct
    kernel too, within rounding where it would take Winograd or the depthwise kernels
    (conv2d_backward_filter_route says which).
    ``y``: the output of a fused ReLU, as in :func:`conv2d_backward`.  The pool's windows must
    not overlap; it has no padding."""
    x, w, _, g = _args.conv_call(x, w, None, stride, padding, dilation, groups, "NHWC")
    pg = _args.pool_geometry(g.y_shape_nhwc, pool_size, pool_stride, "valid", 1, False, "NHWC")
    if pg.sh < pg.kh or pg.sw < pg.kw:
        raise ValueError("the pool's windows must not overlap (stride >= pool_size)")
    dy_pool, cells = _args.as_array(dy_pool, "dy"), _args.as_array(cells, "indices")
    _args.check_grad(dy_pool, pg.y_shape, x.dtype)
    if _args.check_indices(cells, pg) != "window":
        raise TypeError("indices must be uint8 window cells (index_format='window')")
    if y is not None:
        y = _args.as_array(y, "y")
        _args.check_grad(y, g.y_shape_nhwc, x.dtype, "y")
    return _weight_grads(g, _c(x), _c(dy_pool), _c(y), pool_cell=_c(cells), pool_geom=pg)


# A band of the convolution's output that a thread pools from its scratch: at most this many
# bytes, to stay in L2 between the convolution writing it and the pool reading it.  Measured
# against 256 KB: 32 KB bands took 1.06x as long for the seed's first layer (per-band setup),
# 128 KB 1.04x for a 56x56x64 layer, 512 KB and 1 MB the same or up to 1.05x.
_BAND_BYTES = 256 * 1024


def _pool_rows_per_band(g, pg, dtype, n_threads):
    """Pool rows per band of conv2d_forward_max_pool: the convolution rows under them within
    _BAND_BYTES; with several threads, at least two bands per thread where the batch allows,
    unless the next rule takes rows away; and a multiple of Winograd's tile side of
    convolution rows before each band (its tiles then start on the rows they start on over the
    whole output, so the sums are the same to the bit)."""
    conv_rows = max(1, _BAND_BYTES // (g.ow * g.cout * np.dtype(dtype).itemsize))
    rows = max(1, min(pg.oh, (conv_rows - pg.kh) // pg.sh + 1))
    if n_threads > 1:
        bands_wanted = -(-2 * n_threads // g.n)
        rows = min(rows, -(-pg.oh // bands_wanted))
    tile = _kernels.winograd_tile(g, dtype)
    step = tile // math.gcd(tile, pg.sh)
    if rows < pg.oh:
        rows = -(-rows // step) * step
    return rows


def _pool_images_per_band(g, pg, rows, dtype, n_threads):
    """Whole images per band of conv2d_forward_max_pool where a band is a whole image (rows,
    from _pool_rows_per_band, covers the pool's height): as many as stay within _BAND_BYTES,
    leaving at least two bands per thread where the batch allows."""
    if rows < pg.oh:
        return 1
    images = _BAND_BYTES // (g.oh * g.ow * g.cout * np.dtype(dtype).itemsize)
    if n_threads > 1:
        images = min(images, g.n // (2 * n_threads))
    return max(1, min(images, g.n))


def _conv2d_relu_max_pool(x, w, b, pool_size, pool_stride=None, *, stride=1, padding="valid",
                          dilation=1, groups=1, data_format="NHWC", cells=True):
    """``max_pool2d(conv2d(x, w, b, activation="relu"), pool_size, pool_stride)`` (valid pool)
    without writing out the convolution's output: each thread convolves a band of rows into its
    scratch and pools it there.  For a Conv2D layer with a ReLU and the MaxPooling2D after it
    (see keras.Sequential).  With ``cells``, also the window cells as
    :func:`_max_pool2d_after_relu` records them.  Returns ``(y, cells or None)``: to the bit what
    the two calls give, for finite weights (a tile of pixels skips the kernel rows that lie in
    the padding for all of its pixels, and bands group pixels into tiles differently, so an
    infinite weight may meet a padded 0 in one and not in the other: NaN or not)."""
    x, w, b, g = _args.conv_call(x, w, b, stride, padding, dilation, groups, data_format)
    fmt = g.data_format
    pg = _args.pool_geometry(g.y_shape, pool_size, pool_stride, "valid", 1, False, fmt)
    cells = _args.bool_arg(cells, "cells")
    if cells:
        _args.index_format("window", pg)
    reach = (g.kh - 1) * g.dh
    if (not g.n or _kernels.conv2d_forward_route(g, x.dtype) == "depthwise"
            or _straight_into_planes(g) or g.pad_top > reach or g.pad_bottom > reach):
        # rows wholly in the padding, or the depthwise or planar kernels' own loops: the two
        # calls
        z = conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                   data_format=fmt, activation="relu")
        if cells:
            return _max_pool2d_after_relu(z, pool_size, pool_stride, "valid", fmt)
        return max_pool2d(z, pool_size, pool_stride, data_format=fmt), None
    y = np.empty(pg.y_shape_nhwc, dtype=x.dtype)
    cell = np.empty(pg.y_shape_nhwc, dtype=np.uint8) if cells else None
    threads = _threads(_args.flops_conv(g) // 2)
    rows = _pool_rows_per_band(g, pg, x.dtype, threads)
    _kernels.conv2d_forward_max_pool(_nhwc(x, fmt), _hwio_weights(w, fmt), _c(b), g, pg,
                                     rows, _pool_images_per_band(g, pg, rows, x.dtype, threads),
                                     y, cell, threads)
    return _out(y, fmt), (None if cell is None else _out(cell, fmt))


def _pool_threads(g, itemsize, visits=None):
    """Threads for a pass over every window's cells (or over `visits` elements), and whether
    each thread keeps the same share of the images from call to call: where a thread's share
    of the input fits in its core's L2, the next pass over the same images (the backward pass
    reading the cells that the same thread wrote in the forward) finds them there.  In-process
    A/B on 2 threads: the seed's pool2 at batch 32 (1 MB) forward and backward took 0.80 to 0.84
    of the time with the shares kept; pool1 at batch 256 (22 MB, far past the L2s) 1.04, so
    larger inputs go out in chunks as threads free up (the machine is shared)."""
    if visits is None:
        visits = g.n * g.oh * g.ow * g.c * g.kh * g.kw
    n = _threads(_POOL_VISIT * visits)
    return n, n > 1 and g.n * g.h * g.w * g.c * itemsize <= n * l2_cache_bytes()


def _plane_block(g, itemsize, record_bytes, n_threads, unit=16):
    """Channels per unit of a pass over NCHW arrays (see _kernels._pool_planes), 0 for NHWC:
    all of an image's, unless the unit's stage would not fit in half a core's L2 or there
    would be too few units to share out (4 per thread); then a multiple of `unit` (for the
    pools 16, a cache line of float32)."""
    if g.data_format != "NCHW":
        return 0
    block = g.c
    while block > unit and (
            _kernels.plane_stage_bytes(g, block, itemsize, record_bytes) > l2_cache_bytes() // 2
            or n_threads > 1 and g.n * -(-g.c // block) < 4 * n_threads):
        block = max(unit, -(-(block // 2) // unit) * unit)
    return block


def _pool_schedule(g, itemsize, record_bytes=0, visits=None):
    """A pool kernel's threads, keep_shares and NCHW channel block (see _pool_threads and
    _plane_block)."""
    n, keep = _pool_threads(g, itemsize, visits)
    return n, keep, _plane_block(g, itemsize, record_bytes, n)


def _stream_output(out):
    """Whether a kernel that writes `out` once should store it past the caches: where it is more
    than half the L3, it would only push out what the caches hold and come back from memory
    anyway, and a store that misses first reads the line it overwrites.  In-process, one AVX2
    machine (32 MB L3, 2 threads): max_pool2d_backward of the seed's pool1 at batch 256 (22 MB)
    took 0.78 of the time, of pool2 at batch 256 (7.9 MB) 1.10."""
    return out.nbytes > l3_cache_bytes() // 2


def _max_pool_indices(x, g, index_format=None, relu_in=False):
    """Maxima and the indices of the first maxima in index_format (None: no indices, nothing
    written), in g's layout; relu_in: see _max_pool2d_after_relu."""
    y = np.empty(g.y_shape, dtype=x.dtype)
    idx = np.empty(g.y_shape, dtype=np.int64) if index_format == "flat" else None
    cell = np.empty(g.y_shape, dtype=np.uint8) if index_format == "window" else None
    if g.n:
        record = idx if cell is None else cell
        n, keep, block = _pool_schedule(g, x.itemsize,
                                        0 if record is None else record.itemsize)
        _kernels.max_pool(_c(x), g, y, idx, cell, n, keep, relu_in, block)
    return y, (cell if idx is None else idx)


def _max_pool2d_after_relu(x, pool_size, stride, padding, data_format):
    """max_pool2d with window indices, for a training step whose x is a ReLU's output: a window
    whose maximum is not positive records no cell (255), so max_pool2d_backward gives its window
    no gradient.  That is the ReLU's own gradient at the maximum (the only input a window's
    gradient reaches), so the layer before the pool can skip its mask: one pass over its output
    fewer.  For the layers (see keras.Sequential); windows of at most 255 cells."""
    x, g = _args.pool_call(x, pool_size, stride, padding, 1, False, data_format)
    _args.index_format("window", g)
    return _max_pool_indices(x, g, "window", relu_in=True)


def max_pool2d(x, pool_size=2, stride=None, padding="valid", *, dilation=1, ceil_mode=False,
               return_indices=False, index_format="flat", data_format="NHWC"):
    """Max over each window; padded cells never win (they count as -inf); NaN propagates.

    ``stride=None`` means ``stride = pool_size``.  With ``return_indices=True`` also returns, per
    output, where the first maximum in row-major window order is:

    - ``index_format="flat"``: int64, its flat index in its image's H*W plane (per channel, as
      PyTorch); -1 marks a window that lies entirely in the padding.
    - ``index_format="window"``: uint8, its cell's number ``i * kw + j`` in the window; 255 marks
      a window with no real cell.  An eighth of the memory: what the layers keep for
      :func:`max_pool2d_backward` (windows of at most 255 cells).
    """
    x, g = _args.pool_call(x, pool_size, stride, padding, dilation, ceil_mode, data_format)
    return_indices = _args.bool_arg(return_indices, "return_indices")
    index_format = _args.index_format(index_format, g)
    y, idx = _max_pool_indices(x, g, index_format if return_indices else None)
    return (y, idx) if return_indices else y


def max_pool2d_backward(dy, x, pool_size=2, stride=None, padding="valid", *, dilation=1,
                        ceil_mode=False, indices=None, data_format="NHWC"):
    """Gradient of :func:`max_pool2d`: each output's gradient goes to exactly one input, the
    first maximum of its window.  Passing the forward's ``indices`` (either index_format; the
    dtype tells which) skips the search."""
    dy, x, g = _args.pool_backward_call(dy, x, pool_size, stride, padding, dilation, ceil_mode,
                                        data_format)
    if indices is None:
        index_format = "window" if g.kh * g.kw <= _args.NO_CELL else "flat"
        _, idx = _max_pool_indices(x, g, index_format)
    else:
        indices = np.asarray(indices)
        index_format = _args.check_indices(indices, g)
        idx = _c(indices)
    dx = np.empty(g.x_shape, dtype=x.dtype)
    if g.n:
        flat = index_format == "flat"
        stray = _kernels.max_pool_backward(
            _c(dy), idx if flat else None, None if flat else idx, g, dx,
            *_pool_schedule(g, x.itemsize, idx.itemsize, visits=g.n * g.h * g.w * g.c),
            stream=_stream_output(dx))
        if stray:
            raise _args.indices_range_error(g, index_format)
    return dx


def avg_pool2d(x, pool_size=2, stride=None, padding="valid", *, ceil_mode=False,
               count_include_pad=False, data_format="NHWC"):
    """Mean over each window.  ``count_include_pad=False`` divides by the window's real cells
    (Keras); ``True`` by the window clipped to the padded input (PyTorch's default)."""
    x, g = _args.pool_call(x, pool_size, stride, padding, 1, ceil_mode, data_format)
    cip = _args.bool_arg(count_include_pad, "count_include_pad")
    y = np.empty(g.y_shape, dtype=x.dtype)
    if g.n:
        _kernels.avg_pool(_c(x), g, y, cip, *_pool_schedule(g, x.itemsize))
    return y


def avg_pool2d_backward(dy, x, pool_size=2, stride=None, padding="valid", *, ceil_mode=False,
                        count_include_pad=False, data_format="NHWC"):
    """Gradient of :func:`avg_pool2d`."""
    dy, x, g = _args.pool_backward_call(dy, x, pool_size, stride, padding, 1, ceil_mode,
                                        data_format)
    cip = _args.bool_arg(count_include_pad, "count_include_pad")
    dx = np.empty(g.x_shape, dtype=x.dtype)
    if g.n:
        _kernels.avg_pool_backward(_c(dy), g, dx, cip, *_pool_schedule(g, x.itemsize))
    return dx


def global_max_pool2d(x, data_format="NHWC"):
    """Max over H and W: shape (N, C) in either layout (as Keras's GlobalMaxPooling2D)."""
    x, g = _args.global_call(x, data_format)
    y = max_pool2d(x, (g.h, g.w), data_format=g.data_format)
    return y.reshape(g.n, g.c)


def global_max_pool2d_backward(dy, x, data_format="NHWC"):
    dy, x, g = _args.global_backward_call(dy, x, data_format)
    return max_pool2d_backward(_global_grad_as_pool(dy, g), x, (g.h, g.w),
                               data_format=g.data_format)


def global_avg_pool2d(x, data_format="NHWC"):
    """Mean over H and W: shape (N, C) in either layout."""
    x, g = _args.global_call(x, data_format)
    y = avg_pool2d(x, (g.h, g.w), data_format=g.data_format)
    return y.reshape(g.n, g.c)


def global_avg_pool2d_backward(dy, x, data_format="NHWC"):
    dy, x, g = _args.global_backward_call(dy, x, data_format)
    return avg_pool2d_backward(_global_grad_as_pool(dy, g), x, (g.h, g.w),
                               data_format=g.data_format)


def _global_grad_as_pool(dy, g):
    """(N, C) gradient of a global pool as the (1 x 1)-pixel output of a whole-image pool."""
    shape = (g.n, 1, 1, g.c) if g.data_format == "NHWC" else (g.n, g.c, 1, 1)
    return np.ascontiguousarray(dy).reshape(shape)


def relu_backward(dy, y, out=None):
    """Gradient of ReLU from its output: ``dy`` where ``y > 0``, else 0 (NaN in y gives 0).

    ``out`` (optional, C-contiguous, same shape and dtype; it may be ``dy`` itself) receives the
    result without an allocation.  One pass, threaded for large arrays: the layers call this
    after every ReLU in a training step.
    """
    dy, y = _args.relu_backward_call(dy, y, out)
    return _relu_mask(dy, y, np.empty(dy.shape, dtype=dy.dtype) if out is None else out)


def _relu_mask(dy, y, out=None):
    """relu_backward for arrays already checked (one shape, one float dtype): the convolutions'
    backward passes mask dy with their forward output this way, into a temporary (see
    _temp_empty) unless `out` is given."""
    if out is None:
        out = _temp_empty(dy.shape, dy.dtype)
    if dy.size:
        _kernels.relu_backward(_c(dy).reshape(-1), _c(y).reshape(-1), out.reshape(-1),
                               _threads(_RELU_VISIT * dy.size))
    return out


def _sparse_softmax_xent(z, labels, scale, want_grad):
    """For keras.losses: ``(total, grad, bad)`` of logits z (N, K), float32 or float64, and
    integer labels (N,): the sum over rows of log(sum(exp(z))) - z[label] (float64), the
    gradient of that sum divided by scale (z's dtype) or None, and -1, or the first row whose
    label lies outside [0, K) (total and grad then mean nothing)."""
    z = _c(z)
    labels = np.ascontiguousarray(labels, dtype=np.intp)
    grad = np.empty(z.shape, dtype=z.dtype) if want_grad else None
    total, bad = _kernels.sparse_softmax_xent(z, labels, grad, scale)
    return total, grad, bad


def _dropout(x, key, threshold, scale):
    """For keras.layers.Dropout: ``(y, keep)``, y = x * (scale where an element's 32 random
    bits (see _kernels.dropout_forward: a hash of key and the element's place) are at least
    threshold, else 0) and keep the uint8 mask, in x's shape.  One pass where numpy drew the
    bits (PCG64, 3 ns a 64-bit draw here) and made four more over the array (a compare, a cast,
    a scaling and the product): 1.5 ms of a Keras MNIST example's training step."""
    x = _c(x)
    y = np.empty(x.shape, dtype=x.dtype)
    keep = np.empty(x.shape, dtype=np.uint8)
    _kernels.dropout_forward(x.reshape(-1), key, threshold, scale, y.reshape(-1),
                             keep.reshape(-1), _threads(_DROPOUT_VISIT * x.size))
    return y, keep


def _dropout_backward(dy, keep, scale):
    """dy * (scale where keep, else 0), in dy's memory where it may be written."""
    out = dy if dy.flags.c_contiguous and dy.flags.writeable else np.array(dy)
    _kernels.dropout_backward(out.reshape(-1), keep.reshape(-1), scale, out.reshape(-1))
    return out


def _argmax_hits(scores, labels):
    """For keras.metrics: how many rows of scores (N, K), float32 or float64, have their
    first largest value (NaN counting as largest, as np.argmax) at their integer label (N,):
    sparse categorical accuracy's count in one call instead of numpy's four."""
    return _kernels.argmax_hits(_c(scores), np.ascontiguousarray(labels, dtype=np.intp))


def _adam_update(variables, grads, ms, vs, alpha, one_minus_b1, one_minus_b2, eps):
    """One Adam step in place over several weights at once (see cyc_adam), for the layers'
    optimizer: lists of contiguous 1-D arrays of one float dtype, each weight's gradient, m and
    v of its size (the optimizer checks)."""
    _kernels.adam_update(variables, grads, ms, vs, alpha, one_minus_b1, one_minus_b2, eps,
                         _threads(_ADAM_VISIT * sum(a.size for a in variables)))
