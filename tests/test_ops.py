"""Every compiled op against the NumPy reference, on every SIMD path, with 1 and 2 threads.

``check_against_reference`` runs the op under each SIMD level the CPU has, with 1 and 2 threads
(which must agree bit for bit), compares with the reference within the dtype's tolerance (indices
exactly), and checks that no input was modified.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, given

from cyconv import _args, _kernels, ops, reference
from helpers import (assert_bitwise_equal, assert_close, assert_results_close,
                     check_against_reference, in_memory_layout, kernel_path, on_every_path,
                     random_array, to_layout, unchanged, weights_to_layout)
from strategies import (conv_cases, conv_pool_cases, depthwise_cases, global_cases, planar_cases,
                        pointwise_planes_cases, pool_cases, winograd_cases)

RNG_SEED = 20240611


def check_conv(x, w, b, kwargs, activation=None, compute_dx=True, dy_form=("contiguous", False),
               rng=None):
    """Forward (with the activation) and backward of one convolution on every path."""
    rng = rng or np.random.default_rng(RNG_SEED)
    y, _ = check_against_reference("conv2d", x, w, b, activation=activation, **kwargs)
    dy = in_memory_layout(random_array(rng, y.shape, y.dtype), *dy_form)
    check_against_reference("conv2d_backward", dy, x, w, compute_dx=compute_dx, **kwargs)
    if activation == "relu":
        # the gradient through the fused ReLU, masked by the output (in the weight-gradient
        # kernel when there is no dx)
        check_against_reference("conv2d_backward", dy, x, w, compute_dx=compute_dx,
                                activation="relu", y=y, **kwargs)


def record_kernel_calls(monkeypatch, name, arg):
    """Let _kernels.<name> run as before, recording its positional argument `arg` of each
    call in the list returned (which route a call took, with what units)."""
    seen = []
    real = getattr(_kernels, name)
    monkeypatch.setattr(_kernels, name, lambda *a: seen.append(a[arg]) or real(*a))
    return seen


def nhwc_geometry(x_shape, w_shape, kwargs):
    """The Geometry of an NHWC conv2d call with these keyword arguments (for its routes)."""
    return _args.conv_geometry(x_shape, w_shape, kwargs.get("stride", 1),
                               kwargs.get("padding", "valid"), kwargs.get("dilation", 1),
                               kwargs.get("groups", 1), "NHWC")


def check_max_pool(x, kwargs, rng=None):
    """Forward with and without indices (both formats), backward searching and backward from
    either kind of indices."""
    rng = rng or np.random.default_rng(RNG_SEED)
    (y, idx), got = check_against_reference("max_pool2d", x, return_indices=True, **kwargs)
    assert_bitwise_equal(ops.max_pool2d(x, **kwargs), got[_kernels.isa_get()][0],
                         "without indices")
    dy = in_memory_layout(random_array(rng, y.shape, y.dtype), "sliced", readonly=True)
    check_against_reference("max_pool2d_backward", dy, x, **kwargs)
    check_against_reference("max_pool2d_backward", dy, x,
                            indices=in_memory_layout(idx, "reversed", readonly=True), **kwargs)
    if np.prod(np.broadcast_to(kwargs.get("pool_size", 2), 2)) < 255:
        (y_w, cells), _ = check_against_reference("max_pool2d", x, return_indices=True,
                                                  index_format="window", **kwargs)
        assert_bitwise_equal(y_w, y, "the same maxima in either index format")
        check_against_reference("max_pool2d_backward", dy, x,
                                indices=in_memory_layout(cells, "reversed", readonly=True),
                                **kwargs)
    return y, idx


def check_avg_pool(x, kwargs, rng=None):
    rng = rng or np.random.default_rng(RNG_SEED)
    y, _ = check_against_reference("avg_pool2d", x, **kwargs)
    dy = in_memory_layout(random_array(rng, y.shape, y.dtype), "fortran", readonly=True)
    check_against_reference("avg_pool2d_backward", dy, x, **kwargs)


def check_global(x, data_format, rng=None):
    rng = rng or np.random.default_rng(RNG_SEED)
    for op in ("global_max_pool2d", "global_avg_pool2d"):
        y, _ = check_against_reference(op, x, data_format=data_format)
        assert y.shape == (x.shape[0], x.shape[3] if data_format == "NHWC" else x.shape[1])
        dy = random_array(rng, y.shape, y.dtype)
        check_against_reference(op + "_backward", dy, x, data_format=data_format)


# --- hypothesis: shapes and arguments -------------------------------------------------------


@given(conv_cases())
def test_conv2d_matches_reference(case):
    check_conv(case["x"], case["w"], case["b"], case["kwargs"], case["activation"],
               case["compute_dx"], ("sliced", True), case["rng"])


@given(pool_cases("max"))
def test_max_pool2d_matches_reference(case):
    check_max_pool(case["x"], case["kwargs"], case["rng"])


@given(pool_cases("avg"))
def test_avg_pool2d_matches_reference(case):
    check_avg_pool(case["x"], case["kwargs"], case["rng"])


@given(global_cases())
def test_global_pools_match_reference(case):
    check_global(case["x"], case["data_format"], case["rng"])


# --- awkward convolutions, named ------------------------------------------------------------


def conv_arrays(x_nhwc, w_hwio, fmt, dtype, bias=True, seed=RNG_SEED):
    """x, w and b of the given NHWC/HWIO shapes, in ``fmt``'s layouts."""
    rng = np.random.default_rng(seed)
    x = random_array(rng, x_nhwc, dtype)
    w = random_array(rng, w_hwio, dtype)
    b = random_array(rng, (w_hwio[3],), dtype) if bias else None
    return to_layout(x, fmt), weights_to_layout(w, fmt), b


AWKWARD_CONVS = {
    # name: (x NHWC shape, w HWIO shape, keyword arguments)
    "1x1 input, 1x1 kernel": ((2, 1, 1, 3), (1, 1, 3, 5), {}),
    # one channel in and out: NCHW and NHWC hold the same bytes, so no transposing copy
    "one channel in and out": ((2, 6, 5, 1), (3, 3, 1, 1), {"padding": 1}),
    "1x1 input, 5x5 same": ((2, 1, 1, 3), (5, 5, 3, 4), {"padding": "same"}),
    "1x1 input, 3x3 pad 1 stride 3": ((1, 1, 1, 2), (3, 3, 2, 2), {"padding": 1, "stride": 3}),
    "kernel as large as input": ((3, 5, 4, 2), (5, 4, 2, 3), {}),
    "kernel as large as input, dilated": ((2, 7, 5, 2), (4, 3, 2, 3), {"dilation": 2}),
    "stride larger than kernel": ((2, 9, 8, 3), (2, 1, 3, 4), {"stride": (3, 3)}),
    "1x1 kernel stride 3": ((2, 7, 7, 5), (1, 1, 5, 6), {"stride": 3}),
    "odd asymmetric padding": ((2, 6, 5, 3), (3, 2, 3, 4), {"padding": ((0, 1), (2, 1))}),
    "padding wider than the kernel": ((1, 4, 4, 2), (1, 1, 2, 3), {"padding": ((3, 0), (0, 2))}),
    "same, stride 2, even input": ((2, 8, 6, 3), (3, 3, 3, 2), {"padding": "same", "stride": 2}),
    "same, stride 3, dilation 2": ((2, 7, 9, 3), (3, 2, 3, 2),
                                   {"padding": "same", "stride": 3, "dilation": 2}),
    "per-axis stride and dilation": ((2, 11, 9, 4), (3, 2, 4, 5),
                                     {"stride": (1, 2), "dilation": (3, 1), "padding": (1, 0)}),
    "depthwise": ((2, 6, 6, 6), (3, 3, 1, 6), {"groups": 6, "padding": "same"}),
    "depthwise, multiplier 3": ((2, 6, 5, 4), (3, 3, 1, 12), {"groups": 4}),
    "groups 3, odd channels": ((2, 7, 6, 9), (3, 3, 3, 15), {"groups": 3, "padding": 1}),
}


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(AWKWARD_CONVS))
def test_awkward_convolutions(name, dtype, fmt):
    x_shape, w_shape, kwargs = AWKWARD_CONVS[name]
    x, w, b = conv_arrays(x_shape, w_shape, fmt, dtype)
    check_conv(x, w, b, dict(kwargs, data_format=fmt), activation="relu")


# Layers big enough for the vectorised full tiles (not only the remainders): the seed model's
# three convolutions at batch 8, and channel counts that are no multiple of the vector width.
BIG_CONVS = {
    "seed conv1 28x28x1->32": ((8, 28, 28, 1), (3, 3, 1, 32), {}),
    "seed conv2 13x13x32->64": ((8, 13, 13, 32), (3, 3, 32, 64), {}),
    "seed conv3 5x5x64->64": ((8, 5, 5, 64), (3, 3, 64, 64), {}),
    "19->37 same stride 2": ((4, 11, 11, 19), (3, 3, 19, 37), {"padding": "same", "stride": 2}),
    "33->17 5x5 pad 2": ((3, 12, 10, 33), (5, 5, 33, 17), {"padding": 2}),
    "groups 2, 48->80": ((2, 9, 9, 48), (3, 3, 24, 80), {"groups": 2, "padding": "same"}),
    "depthwise 40": ((4, 10, 10, 40), (3, 3, 1, 40), {"groups": 40, "padding": 1}),
    # small windows (kh * kw * cin <= the tile's rows) get one weight-gradient tile per window,
    # read in place inside the image and gathered at its borders
    "first layer same 28x28x1->32": ((8, 28, 28, 1), (3, 3, 1, 32), {"padding": "same"}),
    "first layer stride 2 dilated rows": ((4, 15, 13, 1), (3, 3, 1, 16),
                                          {"stride": 2, "dilation": (2, 1), "padding": 1}),
    "1x3 kernel over 4 channels": ((4, 9, 12, 4), (1, 3, 4, 24), {"padding": (0, 1)}),
    # rows of several whole tiles (of 6 or 12 pixels) whose windows lie inside the image, which
    # the forward pass runs one after another from the first tile's pointers, strided and not,
    # by register tiles and by dot products (few output channels)
    "long rows, stride (1, 2)": ((2, 5, 61, 3), (3, 3, 3, 20), {"stride": (1, 2),
                                                               "padding": (0, 2)}),
    "long rows, 3 outputs": ((2, 4, 57, 5), (2, 3, 5, 3), {"stride": (1, 2)}),
    "long rows, unit stride": ((1, 4, 40, 2), (3, 3, 2, 9), {"padding": (1, 1)}),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(BIG_CONVS))
def test_big_convolutions(name, dtype):
    x_shape, w_shape, kwargs = BIG_CONVS[name]
    x, w, b = conv_arrays(x_shape, w_shape, "NHWC", dtype)
    check_conv(x, w, b, kwargs, activation="relu", compute_dx=name != "seed conv1 28x28x1->32")


def test_big_convolution_nchw():
    x, w, b = conv_arrays((4, 13, 13, 32), (3, 3, 32, 48), "NCHW", np.float32)
    check_conv(x, w, b, {"padding": "same", "data_format": "NCHW"})


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_big_pools(dtype, fmt):
    rng = np.random.default_rng(RNG_SEED)
    x = to_layout(random_array(rng, (8, 26, 26, 32), dtype), fmt)
    check_max_pool(x, {"pool_size": 2, "data_format": fmt})
    check_avg_pool(x, {"pool_size": 3, "stride": 2, "padding": 1, "data_format": fmt})
    check_global(x, fmt)


@pytest.mark.parametrize("keep", [True, False], ids=["shares-kept", "chunks-as-free"])
def test_pools_on_either_schedule(monkeypatch, keep):
    """The pools' threads keep their shares of the images (a static schedule) where the input
    fits in the L2s, else take chunks as they free up: both schedules, forced here on shapes
    that do not divide evenly among the threads, give the reference's results and the same bits
    as one thread."""
    monkeypatch.setattr(ops, "l2_cache_bytes", lambda: 1 << 40 if keep else 0)
    rng = np.random.default_rng(RNG_SEED)
    for shape in [(7, 11, 11, 5), (3, 9, 13, 17)]:
        x = random_array(rng, shape, np.float32)
        with kernel_path(_kernels.isa_get(), 2):
            kg = _args.pool_geometry(shape, 2, None, "valid", 1, False, "NHWC")
            assert ops._pool_threads(kg, 4) == (2, keep)
        check_max_pool(x, {"pool_size": 2})
        check_max_pool(x, {"pool_size": 3, "stride": 2, "padding": 1})
        check_avg_pool(x, {"pool_size": 2})


@pytest.mark.parametrize("bad", [2**32, 2**32 - 1, -2**32 - 1], ids=["2**32+i", "2**32-1",
                                                                    "-2**32-1"])
def test_max_pool_backward_rejects_flat_indices_past_int32(kernel, dtype, fmt, bad):
    """The float32 kernels carry positions in int32 lanes: an int64 index that int32 cannot
    hold must raise, not land on its low 32 bits (2**32 + i on i; 2**32 - 1 read as -1, none)."""
    x = to_layout(random_array(np.random.default_rng(RNG_SEED), (2, 4, 4, 16), dtype), fmt)
    y, idx = ops.max_pool2d(x, 2, return_indices=True, data_format=fmt)
    bad_idx = idx + 2**32 if bad == 2**32 else np.full_like(idx, bad)
    with pytest.raises(ValueError, match="indices must lie in"):
        ops.max_pool2d_backward(np.ones_like(y), x, 2, indices=bad_idx, data_format=fmt)


@pytest.mark.parametrize("l2, threads, block", [
    (1 << 40, 1, 40),   # a whole image per unit
    (0, 1, 16),         # units past the stage budget: blocks of 16 channels (16, 16, 8)
    (1 << 40, 2, 16),   # three images, too few units for two threads: blocks of 16
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_nchw_pools_run_in_units_of_channels(monkeypatch, l2, threads, block, dtype):
    """NCHW pools transpose a unit of an image's channels at a time into a per-thread stage
    and pool it there in NHWC: whole images where they fit the stage budget and share out
    among the threads, else blocks of 16 channels, the last one short.  Against the reference,
    and the same bits as the NHWC call transposed."""
    monkeypatch.setattr(ops, "l2_cache_bytes", lambda: l2)
    rng = np.random.default_rng(RNG_SEED)
    x = random_array(rng, (3, 9, 11, 40), dtype)
    xc = to_layout(x, "NCHW")
    g = _args.pool_geometry(xc.shape, 3, 2, 1, 1, False, "NCHW")
    assert ops._plane_block(g, x.itemsize, 1, threads) == block
    with kernel_path(_kernels.isa_get(), threads):
        for kwargs in [{"pool_size": 3, "stride": 2, "padding": 1}, {"pool_size": 2}]:
            check_max_pool(xc, dict(kwargs, data_format="NCHW"))
            check_avg_pool(xc, dict(kwargs, data_format="NCHW", count_include_pad=True))
            y, cells = ops.max_pool2d(xc, return_indices=True, index_format="window",
                                      data_format="NCHW", **kwargs)
            y_nhwc, cells_nhwc = ops.max_pool2d(x, return_indices=True, index_format="window",
                                                **kwargs)
            assert_bitwise_equal(y, to_layout(y_nhwc, "NCHW"), "NCHW maxima")
            assert_bitwise_equal(cells, to_layout(cells_nhwc, "NCHW"), "NCHW cells")
            dy = random_array(rng, y.shape, dtype)
            assert_bitwise_equal(
                ops.max_pool2d_backward(dy, xc, indices=cells, data_format="NCHW", **kwargs),
                to_layout(ops.max_pool2d_backward(np.ascontiguousarray(dy.transpose(0, 2, 3, 1)),
                                                  x, indices=cells_nhwc, **kwargs), "NCHW"),
                "NCHW max-pool gradient")


@pytest.mark.parametrize("index_format", ["flat", "window"])
def test_nchw_max_pool_backward_rejects_indices_out_of_their_windows(index_format):
    """The NCHW units count the records they cannot place, as the NHWC kernel does."""
    x = random_array(np.random.default_rng(RNG_SEED), (2, 20, 6, 6), np.float32)
    y, idx = ops.max_pool2d(x, 2, return_indices=True, index_format=index_format,
                            data_format="NCHW")
    bad = idx.copy()
    bad[1, 17, 2, 0] = 4 if index_format == "window" else 0   # not a cell of that window
    with pytest.raises(ValueError, match="indices must"):
        ops.max_pool2d_backward(np.ones_like(y), x, 2, indices=bad, data_format="NCHW")


@pytest.mark.parametrize("shape, threads, kept", [
    ((32, 11, 11, 64), 2, True),     # the seed's pool2 at batch 32: 1 MB
    ((256, 26, 26, 32), 2, False),   # its pool1 at batch 256: 22 MB
    ((32, 11, 11, 64), 1, False),    # one thread has nothing to share out
])
def test_pools_keep_shares_where_the_input_fits_in_the_l2s(monkeypatch, shape, threads, kept):
    monkeypatch.setattr(ops, "l2_cache_bytes", lambda: 2 << 20)
    monkeypatch.setattr(ops, "get_num_threads", lambda: threads)
    kg = _args.pool_geometry(shape, 2, None, "valid", 1, False, "NHWC")
    assert ops._pool_threads(kg, 4) == (threads, kept)


@contextlib.contextmanager
def l3_cache_of(nbytes):
    """ops sees an L3 cache of nbytes (0: every max-pool gradient is stored past the caches)."""
    saved = ops.l3_cache_bytes
    ops.l3_cache_bytes = lambda: nbytes
    try:
        yield
    finally:
        ops.l3_cache_bytes = saved


@given(pool_cases("max"))
def test_max_pool_backward_stored_past_the_caches_matches_reference(case):
    with l3_cache_of(0):
        check_max_pool(case["x"], case["kwargs"], case["rng"])


@pytest.mark.parametrize("shape, pool_size", [
    ((3, 26, 26, 32), 2),    # the seed's pool1: windows tile the input
    ((2, 11, 11, 48), 2),    # odd sizes: the last row and column get zeros the usual way
    ((2, 9, 10, 16), 3),     # 3x3 windows
    ((1, 2, 2, 16), 2),      # one window
])
@pytest.mark.parametrize("index_format", ["window", "flat"])
def test_max_pool_backward_past_the_caches_gives_the_same_bits(kernel, dtype, shape, pool_size,
                                                               index_format):
    """Where the windows tile the input and the channels fill whole vectors, the gradient can
    go past the caches (non-temporal stores, 16 bytes at a time): the same bits as through them,
    also into a dx off a 16-byte boundary (where the kernel keeps to plain stores)."""
    rng = np.random.default_rng(RNG_SEED)
    x = random_array(rng, shape, dtype)
    y, idx = ops.max_pool2d(x, pool_size, return_indices=True, index_format=index_format)
    dy = random_array(rng, y.shape, dtype)
    with l3_cache_of(1 << 60):
        assert not ops._stream_output(x)
        plain = ops.max_pool2d_backward(dy, x, pool_size, indices=idx)
    with l3_cache_of(0):
        assert ops._stream_output(x)
        assert_bitwise_equal(ops.max_pool2d_backward(dy, x, pool_size, indices=idx), plain)
    assert_close(plain, reference.max_pool2d_backward(dy, x, pool_size, indices=idx))
    g = _args.pool_geometry(shape, pool_size, None, "valid", 1, False, "NHWC")
    flat = index_format == "flat"
    for offset in (1, 2):   # dx 4 or 8 bytes past a boundary (float32); 8 or 16 (float64)
        raw = np.empty(x.size + 4, dtype)
        start = (-raw.ctypes.data // x.itemsize) % (16 // x.itemsize) + offset
        dx = raw[start:start + x.size].reshape(shape)
        assert _kernels.max_pool_backward(dy, idx if flat else None, None if flat else idx, g,
                                          dx, 2, False, stream=True) == 0
        assert_bitwise_equal(dx, plain)


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
def test_global_pools_on_1x1_images(fmt):
    check_global(np.random.default_rng(0).standard_normal((3, 1, 1, 5)), fmt)


def test_relu_is_applied_after_the_bias(kernel):
    # A bias that pushes every output below zero: ReLU must see the biased value.
    x = np.ones((1, 3, 3, 1))
    w = np.ones((2, 2, 1, 1))
    assert np.all(ops.conv2d(x, w, np.array([-3.5]), activation="relu") == 0.5)
    assert np.all(ops.conv2d(x, w, np.array([-4.5]), activation="relu") == 0.0)


def test_compute_dx_false_gives_same_weight_gradient(kernel):
    x, w, _ = conv_arrays((2, 6, 6, 5), (3, 3, 5, 7), "NHWC", np.float64)
    dy = np.random.default_rng(1).standard_normal((2, 4, 4, 7))
    dx, dw, db = ops.conv2d_backward(dy, x, w)
    none, dw2, db2 = ops.conv2d_backward(dy, x, w, compute_dx=False)
    assert dx is not None and none is None
    assert_bitwise_equal((dw, db), (dw2, db2))


# --- max-pool semantics under every kernel path, worked out by hand --------------------------


def nhwc1(plane, dtype=np.float64):
    """A single-image, single-channel NHWC array from a 2-D list."""
    return np.asarray(plane, dtype=dtype)[None, :, :, None]


def test_max_pool_ties_first_maximum_gets_gradient_in_overlapping_windows(kernel, dtype):
    x = nhwc1(np.ones((4, 4)), dtype)
    y, idx = ops.max_pool2d(x, 2, 1, return_indices=True)
    # Every 2x2 window is a tie; its first (top-left) cell wins.
    np.testing.assert_array_equal(idx[0, :, :, 0], [[0, 1, 2], [4, 5, 6], [8, 9, 10]])
    dx = ops.max_pool2d_backward(np.ones_like(y), x, 2, 1)
    expected = np.zeros((4, 4))
    expected[:3, :3] = 1
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)


def test_max_pool_tie_across_rows_prefers_row_major_first(kernel, dtype):
    # The tie is between (0, 1) and (1, 0): row-major scan order reaches (0, 1) first.
    x = nhwc1([[0, 5], [5, 1]], dtype)
    _, idx = ops.max_pool2d(x, 2, return_indices=True)
    assert idx.ravel().tolist() == [1]


def test_max_pool_nan_propagates_and_first_nan_wins(kernel, dtype):
    nan = np.nan
    x = nhwc1([[1, nan, 9, 2], [nan, 3, 4, 5]], dtype)
    y, idx = ops.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 0] == 9
    assert idx.ravel().tolist() == [1, 2]
    dx = ops.max_pool2d_backward(np.array([[[[10.0], [20.0]]]], dtype), x, 2)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 10, 20, 0], [0, 0, 0, 0]])


def test_max_pool_all_minus_inf_window_picks_first_real_cell(kernel, dtype):
    x = nhwc1([[-np.inf, -np.inf], [-np.inf, -np.inf]], dtype)
    y, idx = ops.max_pool2d(x, 2, padding=1, stride=1, return_indices=True)
    assert np.all(y == -np.inf)
    # Real cells count even when they are -inf; padding never wins.
    np.testing.assert_array_equal(idx[0, :, :, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])


def test_max_pool_window_entirely_in_padding(kernel, dtype, fmt):
    # A 2x2 window dilated by 3 with padding 1 on a 2x2 image touches rows/cols -1 and 2 only.
    x = to_layout(nhwc1([[1, 2], [3, 4]], dtype), fmt)
    y, idx = ops.max_pool2d(x, 2, 1, 1, dilation=3, return_indices=True, data_format=fmt)
    assert y.shape == idx.shape == (1, 1, 1, 1)
    assert y.ravel()[0] == -np.inf and idx.ravel()[0] == -1
    for indices in (None, idx):
        dx = ops.max_pool2d_backward(np.ones_like(y), x, 2, 1, 1, dilation=3, indices=indices,
                                     data_format=fmt)
        np.testing.assert_array_equal(dx, np.zeros_like(x))


def test_max_pool_same_dilated_edge_windows_match_reference():
    # 'same' with dilation leaves edge windows whose every cell is padding on small images.
    x = np.random.default_rng(3).standard_normal((2, 1, 5, 3))
    y, idx = check_max_pool(x, {"pool_size": (2, 3), "stride": 1, "padding": "same",
                                "dilation": 3})
    assert (idx == -1).any() and (y[idx == -1] == -np.inf).all()


def test_max_pool_nchw_indices_are_per_channel_plane_positions(kernel):
    x = np.zeros((2, 3, 4, 4))
    x[1, 2, 3, 1] = 1.0
    _, idx = ops.max_pool2d(x, 2, return_indices=True, data_format="NCHW")
    assert idx[1, 2, 1, 0] == 3 * 4 + 1
    assert idx[0, 0].tolist() == [[0, 2], [8, 10]]


def test_max_pool_window_indices_by_hand(kernel, dtype, fmt):
    # 3x3 windows, stride 2, padding 1 on a 4x4 image: the first window's cells (0, 0), (0, 1),
    # (1, 0) lie in the padding, so its cell numbers start at 4 (row 1, column 1).
    plane = np.array([[1, 9, 2, 0], [3, 4, 8, 8], [0, 7, 6, 5], [9, 1, 1, 2]])
    x = to_layout(nhwc1(plane, dtype), fmt)
    y, cells = ops.max_pool2d(x, 3, 2, 1, return_indices=True, index_format="window",
                              data_format=fmt)
    _, flat = ops.max_pool2d(x, 3, 2, 1, return_indices=True, data_format=fmt)
    assert cells.dtype == np.uint8 and cells.shape == flat.shape == y.shape
    np.testing.assert_array_equal(y.reshape(2, 2), [[9, 9], [9, 8]])
    # maxima at (0, 1), (0, 1) [first of the 9 and the 8s], (3, 0), (1, 2)
    np.testing.assert_array_equal(flat.reshape(2, 2), [[1, 1], [12, 6]])
    np.testing.assert_array_equal(cells.reshape(2, 2), [[5, 3], [7, 1]])
    dy = to_layout(nhwc1([[1, 2], [3, 4]], dtype), fmt)
    for indices in (cells, flat, None):
        dx = ops.max_pool2d_backward(dy, x, 3, 2, 1, indices=indices, data_format=fmt)
        np.testing.assert_array_equal(dx.reshape(4, 4), [[0, 3, 0, 0], [0, 0, 4, 0],
                                                         [0, 0, 0, 0], [3, 0, 0, 0]])


def test_max_pool_window_indices_mark_an_all_padding_window_255(kernel, dtype):
    x = nhwc1([[1, 2], [3, 4]], dtype)
    y, cells = ops.max_pool2d(x, 2, 1, 1, dilation=3, return_indices=True, index_format="window")
    assert y.ravel()[0] == -np.inf and cells.ravel().tolist() == [255]
    dx = ops.max_pool2d_backward(np.ones_like(y), x, 2, 1, 1, dilation=3, indices=cells)
    np.testing.assert_array_equal(dx, np.zeros_like(x))


@pytest.mark.parametrize("size", [9, 15, 16])
def test_max_pool_windows_past_the_cell_table(kernel, size, fmt):
    # 81 and 225 cells take the kernels' large-window path; 256 cells (16x16) no longer fit
    # uint8 cell numbers, so only flat indices are offered (the backward search uses them).
    x = to_layout(np.random.default_rng(size).standard_normal((2, size + 1, size, 3)), fmt)
    kwargs = {"pool_size": size, "stride": 1, "data_format": fmt}
    check_max_pool(x, kwargs)
    if size * size > 255:
        with pytest.raises(ValueError, match="windows of at most 255 cells"):
            ops.max_pool2d(x, return_indices=True, index_format="window", **kwargs)


@pytest.mark.parametrize("pool", [(2, None, "valid"), (3, 1, "same"), (9, 2, "valid")],
                         ids=["2x2", "3x3 stride 1 same", "9x9 (large-window path)"])
def test_max_pool_after_relu_gives_the_relu_gradient_too(kernel, dtype, fmt, pool):
    # x is a ReLU's output (zeros, whole zero windows, a NaN); the pool's records alone must give
    # what the pool's gradient followed by the ReLU's mask (x > 0) gives, to the bit.
    rng = np.random.default_rng(5)
    x = np.maximum(rng.standard_normal((3, 12, 11, 5)), 0).astype(dtype)
    x[0, :4, :4] = 0
    x[1, 5, 5, 2] = np.nan
    x = to_layout(x, fmt)
    size, stride, padding = pool
    kwargs = dict(pool_size=size, stride=stride, padding=padding, data_format=fmt)
    y, cells = ops._max_pool2d_after_relu(x, size, stride, padding, fmt)
    assert_bitwise_equal(y, ops.max_pool2d(x, **kwargs), "the same maxima")
    assert (cells == 255).any() and (cells != 255).any()
    dy = random_array(rng, y.shape, dtype)
    fused = ops.max_pool2d_backward(dy, x, indices=cells, **kwargs)
    plain = ops.relu_backward(ops.max_pool2d_backward(dy, x, **kwargs), x)
    assert_bitwise_equal(fused, plain, "pool and ReLU gradients in one")


# --- avg-pool divisors, by hand --------------------------------------------------------------


@pytest.mark.parametrize("count_include_pad, expected", [
    (False, [[2.5, 2.5], [2.5, 2.5]]),  # every window holds the 4 real cells
    (True, [[10 / 9, 10 / 9], [10 / 9, 10 / 9]]),
])
def test_avg_pool_count_include_pad(kernel, count_include_pad, expected):
    x = nhwc1([[1, 2], [3, 4]])
    y = ops.avg_pool2d(x, 3, 1, 1, count_include_pad=count_include_pad)
    np.testing.assert_allclose(y[0, :, :, 0], expected, rtol=1e-12)


@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avg_pool_ceil_mode_partial_window(kernel, count_include_pad):
    # PyTorch: avg_pool1d([1, 2, 3, 4, 5], 2, 2, ceil_mode=True) == [1.5, 3.5, 5]; the last
    # window hangs past the (unpadded) input and is divided by its one real cell either way.
    x = nhwc1([[1, 2, 3, 4, 5]])
    y = ops.avg_pool2d(x, (1, 2), ceil_mode=True, count_include_pad=count_include_pad)
    np.testing.assert_allclose(y.ravel(), [1.5, 3.5, 5.0], rtol=1e-12)
    dx = ops.avg_pool2d_backward(np.ones_like(y), x, (1, 2), ceil_mode=True,
                                 count_include_pad=count_include_pad)
    np.testing.assert_allclose(dx.ravel(), [0.5, 0.5, 0.5, 0.5, 1.0], rtol=1e-12)


def test_avg_pool_ceil_mode_with_padding_clips_divisor_to_padded_input(kernel):
    # PyTorch: avg_pool1d([1..5], 3, 2, padding=1, ceil_mode=True, count_include_pad=True)
    # == [1, 3, 3]: the last window [3, 6) ends exactly at the padded input's end.
    x = nhwc1([[1, 2, 3, 4, 5]])
    kw = dict(pool_size=(1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True)
    np.testing.assert_allclose(ops.avg_pool2d(x, count_include_pad=True, **kw).ravel(),
                               [1, 3, 3], rtol=1e-12)
    np.testing.assert_allclose(ops.avg_pool2d(x, count_include_pad=False, **kw).ravel(),
                               [1.5, 3, 4.5], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    # a stage holds many small images (one image's planes get runs from several stages)
    ((40, 9, 11, 3), (3, 3, 3, 5), {"padding": "same"}),
    # several stages per image, and per chunk on one thread (64 float32 channels: 512 pixels a
    # stage, 3,600 an image)
    ((2, 62, 62, 8), (3, 3, 8, 64), {}),
    # strided, grouped, dilated, odd padding, the first layer's single input channel
    ((5, 17, 13, 6), (3, 2, 2, 12), {"stride": (2, 3), "groups": 3, "dilation": (1, 2),
                                     "padding": ((0, 2), (1, 0))}),
    ((33, 28, 28, 1), (3, 3, 1, 32), {}),
])
def test_nchw_forward_writes_planes_from_the_direct_tiles(monkeypatch, dtype, x_shape, w_shape,
                                                          kwargs):
    """In NCHW the direct route's tiles go through a per-thread stage into the planes (where
    images do not go a few at a time, see the next test): the same bits as the NHWC forward
    pass transposed, on every path."""
    x, w, b = conv_arrays(x_shape, w_shape, "NHWC", dtype)
    assert _kernels.conv2d_forward_route(nhwc_geometry(x_shape, w_shape, kwargs),
                                         dtype) == "direct"
    want = on_every_path(lambda: ops.conv2d(x, w, b, activation="relu", **kwargs))
    monkeypatch.setattr(ops, "_images_per_stage", lambda *a: 0)
    # (inputs of up to 4 channels in one group go by the planar kernel unless told not to)
    monkeypatch.setattr(ops, "_straight_into_planes", lambda g: False)
    planes = record_kernel_calls(monkeypatch, "conv2d_forward", -1)
    xc, wc = to_layout(x, "NCHW"), weights_to_layout(w, "NCHW")
    got = on_every_path(lambda: ops.conv2d(xc, wc, b, activation="relu", data_format="NCHW",
                                           **kwargs))
    assert planes and all(planes)
    for isa in want:
        assert_bitwise_equal(got[isa], np.ascontiguousarray(to_layout(want[isa], "NCHW")), isa)


@pytest.mark.parametrize("shape", [(32, 32, 3, 3), (96, 700, 1, 1), (20, 120, 5, 7)],
                         ids=["numpy's copy", "blocked, 1x1", "blocked, 5x7"])
def test_nchw_weights_to_the_kernels_layout_and_back(dtype, shape):
    # OIHW -> HWIO and back: small arrays by numpy's copy, from 32768 values by the blocked
    # kernels (1x1: a matrix's transpose); a channels_first layer's kernel (an OIHW view of
    # HWIO weights) without a copy
    w = np.random.default_rng(0).random(shape).astype(dtype)
    hwio = ops._hwio_weights(w, "NCHW")
    assert hwio.flags.c_contiguous
    np.testing.assert_array_equal(hwio, w.transpose(2, 3, 1, 0))
    back = ops._oihw_weights(hwio)
    assert back.flags.c_contiguous and back.shape == w.shape
    np.testing.assert_array_equal(back, w)
    view = hwio.transpose(3, 2, 0, 1)
    assert np.shares_memory(ops._hwio_weights(view, "NCHW"), hwio)


@pytest.mark.parametrize("x_shape, w_shape, per_stage", [
    ((8, 32, 13, 13), (64, 32, 5, 5), True),      # 205 KB of sums
    ((4, 128, 7, 7), (288, 128, 3, 3), False),    # 1.3 MB
], ids=["small sums", "sums past 1 MB"])
def test_nchw_backward_goes_a_few_images_at_a_time_only_with_small_weight_sums(
        x_shape, w_shape, per_stage, winograd_on):
    """Each group of images keeps a partial sum of dw of its own: where the direct kernel's sums
    pass 1 MB, the whole arrays go through NHWC instead (one sum for all the images); the
    reference's gradients either way."""
    g = _args.conv_geometry(x_shape, w_shape, 1, "same", 1, 1, "NCHW")
    assert _kernels.conv2d_backward_filter_route(g, np.float32) == "direct"
    assert bool(ops._backward_images_per_stage(g, np.float32)) == per_stage
    x, w, b = conv_arrays((x_shape[0],) + x_shape[2:] + (x_shape[1],),
                          w_shape[2:] + (w_shape[1], w_shape[0]), "NCHW", np.float32)
    check_conv(x, w, b, {"padding": "same", "data_format": "NCHW"})


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("x_shape, w_shape", [
    ((2, 9, 9, 9), (1, 1, 9, 5)),        # 81 pixels: a part vector; 5 rows: one short tile
    ((3, 8, 9, 300), (1, 1, 300, 50)),   # 50 rows: units of 48 and 2; 300 input channels
    ((1, 8, 8, 7), (1, 1, 7, 16)),       # 64 pixels, the fewest it takes: whole blocks
    ((4, 4, 16, 6), (1, 1, 6, 3)),       # rows of 16 pixels
    ((2, 8, 10, 32), (1, 1, 32, 20)),    # the bias's column a block of its own in dw's panels
    ((1, 8, 8, 256), (1, 1, 256, 160)),  # weights through the blocked transpose
], ids=["part vector", "two units", "whole blocks", "short rows", "bias block", "blocked"])
@pytest.mark.parametrize("stride", [1, (2, 3)], ids=["stride 1", "stride (2, 3)"])
def test_nchw_pointwise_convolutions_are_products_of_the_planes(monkeypatch, dtype, x_shape,
                                                               w_shape, stride):
    """An NCHW 1x1 convolution (no padding, one group, more input channels than the planar
    kernel takes; with a stride, the pixels read copied out first) goes by gemm_planes: each image's planes times the weights, the
    bias a last column of them, met by a row of ones; dx as the transposed weights times dy's
    planes, dw and db as dy's planes times the image's transposed and a column of ones.  The
    reference's results on every path, from inputs in any memory layout, read-only too."""
    if stride != 1:
        # the same number of pixels read, 64 at least: every second row, every third pixel
        x_shape = (x_shape[0], 2 * x_shape[1] - 1, 3 * x_shape[2] - 2, x_shape[3])
    x, w, b = conv_arrays(x_shape, w_shape, "NHWC", dtype)
    xc, wc = to_layout(x, "NCHW"), weights_to_layout(w, "NCHW")
    kwargs = {"data_format": "NCHW", "stride": stride}
    calls = record_kernel_calls(monkeypatch, "gemm_planes", -1)
    grads = record_kernel_calls(monkeypatch, "gemm_planes_weight_grad", -1)
    check_conv(xc, wc, b, kwargs, activation="relu")
    check_conv(xc, wc, b, kwargs, compute_dx=False)
    assert calls and grads, "gemm_planes did not run"
    check_against_reference("conv2d", in_memory_layout(xc, "sliced", readonly=True),
                            in_memory_layout(wc, "reversed", readonly=True), None, **kwargs)
    # a channels_first layer's kernel: an OIHW view of HWIO weights
    check_conv(xc, w.transpose(3, 2, 0, 1), b, kwargs)
    calls.clear()
    grads.clear()
    # padding, or images of fewer than 64 pixels (7x7): the general route
    for xs, pad in ((xc, 1), (xc[:, :, :7, :7], 0)):
        y = ops.conv2d(xs, wc, b, data_format="NCHW", padding=pad)
        ops.conv2d_backward(y, xs, wc, data_format="NCHW", padding=pad)
    assert not calls and not grads


def test_gemm_planes_checks_its_shapes():
    a, b = np.ones((4, 3)), np.ones((2, 3, 5))
    for a_, y in [(np.ones((4, 5)), np.empty((2, 4, 5))), (a, np.empty((2, 4, 6))),
                  (a, np.empty((1, 4, 5)))]:
        with pytest.raises(ValueError, match="do not fit"):
            _kernels.gemm_planes(a_, b, False, y, 1)
    with pytest.raises(ValueError, match="no input channels"):
        _kernels.gemm_planes(np.ones((4, 0)), np.ones((2, 0, 5)), False, np.empty((2, 4, 5)), 1)
    # one column more than b has rows: a bias, met by a row of ones
    y = np.empty((2, 4, 5))
    _kernels.gemm_planes(np.concatenate([a, np.full((4, 1), 0.5)], axis=1), b, False, y, 1)
    np.testing.assert_array_equal(y, np.full((2, 4, 5), 3.5))
    # the weight gradient: the sum over images of dy[n] times x[n] transposed, and of dy[n]'s
    # rows (the bias's column); 30 rows in several units on 2 threads
    dy = np.arange(2 * 30 * 5, dtype=float).reshape(2, 30, 5) % 7
    x = np.arange(2 * 3 * 5, dtype=float).reshape(2, 3, 5) % 5
    for dwb in (np.empty((30, 3)), np.empty((3, 31))):
        with pytest.raises(ValueError, match="do not fit"):
            _kernels.gemm_planes_weight_grad(dy, x, dwb, 1)
    with pytest.raises(ValueError, match="no pixels"):
        _kernels.gemm_planes_weight_grad(np.ones((2, 4, 0)), np.ones((2, 3, 0)),
                                         np.empty((4, 4)), 1)
    for threads in (1, 2):
        dwb = np.empty((30, 4))
        _kernels.gemm_planes_weight_grad(dy, x, dwb, threads)
        np.testing.assert_array_equal(dwb[:, :3], np.einsum("nop,nip->oi", dy, x))
        np.testing.assert_array_equal(dwb[:, 3], dy.sum(axis=(0, 2)))


@pytest.mark.parametrize("rows, images, pixels", [(50, 5, 70), (5, 11, 70), (5, 3, 2100)],
                         ids=["rows in units", "few rows", "few rows and images"])
def test_gemm_planes_by_groups_of_images_gives_the_same_bits(rows, images, pixels):
    """The panels a group of images at a time (memory for a group, not the batch): the same
    products, and each weight-gradient sum in the same order, whatever the group (a last group
    short) and the thread count.  With few rows the weight gradient sums parts of the images
    apart (11 images dealt into 8 parts: groups of 1 to 4 images each feed several; 3 images
    of 2100 pixels in 2 pieces each, 6 parts) and adds the parts in order."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((rows, 7)).astype(np.float32)
    b = rng.standard_normal((images, 6, pixels)).astype(np.float32)
    x = rng.standard_normal((images, 9, pixels)).astype(np.float32)
    whole = np.empty((images, rows, pixels), np.float32)
    _kernels.gemm_planes(a, b, True, whole, 1)
    dwb_whole = np.empty((rows, 10), np.float32)
    _kernels.gemm_planes_weight_grad(whole, x, dwb_whole, 1)
    np.testing.assert_allclose(whole, np.maximum(np.einsum("oi,nip->nop", a[:, :6], b)
                                                 + a[:, 6:], 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dwb_whole[:, :9], np.einsum("nop,nip->oi", whole, x), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(dwb_whole[:, 9], whole.sum(axis=(0, 2)), rtol=1e-4, atol=1e-4)
    for group, threads in ((1, 1), (2, 2), (3, 1), (4, 2)):
        y = np.empty_like(whole)
        _kernels.gemm_planes(a, b, True, y, threads, group)
        np.testing.assert_array_equal(y, whole)
        dwb = np.empty_like(dwb_whole)
        _kernels.gemm_planes_weight_grad(whole, x, dwb, threads, group)
        np.testing.assert_array_equal(dwb, dwb_whole)


def test_nchw_pointwise_layers_in_groups_of_images_match_reference(monkeypatch):
    """With the panels' budget at nothing, each group is 2 images a thread: a batch of 7
    goes in several groups, the last one short, and every result is the reference's."""
    monkeypatch.setattr(ops, "_PLANES_GROUP_BYTES", 0)
    calls = record_kernel_calls(monkeypatch, "gemm_planes", -1)
    x, w, b = conv_arrays((7, 8, 9, 16), (1, 1, 16, 24), "NHWC", np.float64)
    check_conv(to_layout(x, "NCHW"), weights_to_layout(w, "NCHW"), b, {"data_format": "NCHW"},
               activation="relu")
    assert calls and all(0 < c < 7 for c in calls), calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_nchw_pointwise_layers_of_one_large_image_match_reference(dtype):
    """A batch of one image of 2304 pixels and few output channels: the forward pass and dx in
    parts of the pixels, the weight gradient in pieces of them (2 of 1152), on every path."""
    x, w, b = conv_arrays((1, 48, 48, 9), (1, 1, 9, 5), "NHWC", dtype)
    check_conv(to_layout(x, "NCHW"), weights_to_layout(w, "NCHW"), b, {"data_format": "NCHW"},
               activation="relu")


@given(planar_cases())
def test_planar_convolutions_of_drawn_shapes_match_reference(case):
    check_conv(case["x"], case["w"], case["b"], case["kwargs"], case["activation"],
               case["compute_dx"], ("sliced", True), case["rng"])


def test_temporaries_come_from_kept_buffers_that_no_array_still_views(monkeypatch):
    """Large temporaries (an NCHW call's arrays on their way to NHWC and back) reuse this
    thread's kept buffers, never one that an array still views, and keep at most
    _TEMP_KEEP_BYTES; below _TEMP_MIN_BYTES they are plain arrays."""
    monkeypatch.setattr(ops._temps, "pool", [], raising=False)
    monkeypatch.setattr(ops, "_TEMP_MIN_BYTES", 1000)
    monkeypatch.setattr(ops, "_TEMP_KEEP_BYTES", 3 << 20)
    small = ops._temp_empty((10,), np.float32)
    assert small.base is None and not ops._temps.pool
    a = ops._temp_empty((500,), np.float32)
    b = ops._temp_empty((20, 25), np.float64)
    assert not np.shares_memory(a, b) and a.shape == (500,) and b.dtype == np.float64
    a_at = a.ctypes.data
    del a
    c = ops._temp_empty((250,), np.float64)   # a's buffer, free again
    assert c.ctypes.data == a_at and not np.shares_memory(b, c)
    # buffers of whole MBs: a new one keeps the newest others within 3 MB; one dropped while
    # in use lives on in its views (and is never handed out again)
    d = ops._temp_empty((600,), np.float32)
    assert len({x.ctypes.data for x in (b, c, d)}) == 3 and len(ops._temps.pool) == 3
    e = ops._temp_empty((700,), np.float32)
    assert len(ops._temps.pool) == 3 and ops._temps.pool[-1] is e.base
    assert not any(buf is c.base for buf in ops._temps.pool)   # the oldest
    del c, d
    big = ops._temp_empty((2 << 20,), np.uint8)
    assert [id(buf) for buf in ops._temps.pool] == [id(e.base), id(big.base)]
    b[:] = 7
    for _ in range(3):
        assert not np.shares_memory(ops._temp_empty((500,), np.float32), b)
    assert (b == 7).all()
    # one past the cap is not kept
    kept = [id(buf) for buf in ops._temps.pool]
    ops._temp_empty((4 << 20,), np.uint8)
    assert [id(buf) for buf in ops._temps.pool] == kept


def test_nchw_layers_with_every_temporary_kept_match_reference(monkeypatch):
    """Every temporary of the NCHW routes through NHWC from the kept buffers: results as the
    reference's, on every path, call after call, and never a kept buffer (one output channel,
    or one input channel: the NHWC array is the result itself)."""
    monkeypatch.setattr(ops._temps, "pool", [], raising=False)
    monkeypatch.setattr(ops, "_TEMP_MIN_BYTES", 0)
    for x_shape, w_shape in [((2, 9, 10, 5), (3, 3, 5, 7)), ((3, 6, 7, 4), (2, 2, 4, 1))]:
        x, w, b = conv_arrays(x_shape, w_shape, "NHWC", np.float64)
        xc, wc = to_layout(x, "NCHW"), weights_to_layout(w, "NCHW")
        check_conv(xc, wc, b, {"data_format": "NCHW", "padding": 1}, activation="relu")
        first = ops.conv2d(xc, wc, b, padding=1, data_format="NCHW")
        kept = first.copy()
        ops.conv2d(xc * 2, wc, b, padding=1, data_format="NCHW")
        dx, _, _ = ops.conv2d_backward(first, xc, wc, padding=1, data_format="NCHW")
        np.testing.assert_array_equal(first, kept)
        assert not any(np.shares_memory(r, buf) for r in (first, dx)
                       for buf in ops._temps.pool)
    assert ops._temps.pool


@given(pointwise_planes_cases())
def test_nchw_pointwise_convolutions_of_drawn_shapes_match_reference(case):
    with mock.patch.object(ops, "_PLANES_GROUP_BYTES", case["group_bytes"]):
        check_conv(case["x"], case["w"], case["b"], case["kwargs"], case["activation"],
                   case["compute_dx"], ("sliced", True), case["rng"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((33, 28, 28, 1), (3, 3, 1, 32), {}),                         # the seed's conv1
    ((3, 40, 37, 3), (7, 7, 3, 10), {"stride": 2, "padding": 3}),  # an ImageNet-style stem
    ((2, 1, 1, 2), (1, 1, 2, 5), {}),                             # 1x1 input
    ((2, 5, 9, 4), (5, 9, 4, 6), {}),                             # window as large as the input
    ((3, 11, 30, 1), (2, 2, 1, 7), {"stride": (3, 4), "dilation": (1, 2),
                                    "padding": ((0, 1), (2, 0))}),  # strides past the window
    ((1, 9, 3, 2), (3, 3, 2, 4), {"padding": ((2, 1), (1, 2))}),  # rows shorter than a vector
])
def test_nchw_few_input_channels_go_straight_into_planes(monkeypatch, dtype, x_shape, w_shape,
                                                         kwargs):
    """An NCHW convolution of one group of at most 4 input channels goes by the planar kernel
    (vectors along the output rows, no transposes): the reference's results on every path, and
    the same bits in bands of one row as in whole images (each pixel is summed whole)."""
    x, w, b = conv_arrays(x_shape, w_shape, "NHWC", dtype)
    xc, wc = to_layout(x, "NCHW"), weights_to_layout(w, "NCHW")
    bands = record_kernel_calls(monkeypatch, "conv2d_forward_planar", -1)
    _, got = check_against_reference("conv2d", xc, wc, b, activation="relu",
                                     data_format="NCHW", **kwargs)
    assert bands, "the planar kernel did not run"
    monkeypatch.setattr(ops, "_PLANAR_STAGE_BYTES", 1)
    one_row = ops.conv2d(xc, wc, b, activation="relu", data_format="NCHW", **kwargs)
    assert bands[-1] == 1
    assert_bitwise_equal(one_row, got[_kernels.isa_get()], "bands of one row")


@pytest.mark.parametrize("fmt, x_shape, w_shape, kwargs", [
    ("NCHW", (4, 12, 12, 5), (3, 3, 5, 8), {}),
    ("NCHW", (4, 12, 12, 4), (3, 3, 2, 8), {"groups": 2}),
    ("NHWC", (4, 12, 12, 2), (3, 3, 2, 8), {}),
], ids=["5 channels", "grouped", "NHWC"])
def test_planar_kernel_is_for_one_group_of_few_channels_in_nchw(monkeypatch, fmt, x_shape,
                                                                w_shape, kwargs):
    x, w, b = conv_arrays(x_shape, w_shape, "NHWC", np.float32)
    bands = record_kernel_calls(monkeypatch, "conv2d_forward_planar", -1)
    y = ops.conv2d(to_layout(x, fmt), weights_to_layout(w, fmt), b, data_format=fmt, **kwargs)
    assert not bands
    assert_close(y, reference.conv2d(to_layout(x, fmt), weights_to_layout(w, fmt), b,
                                     data_format=fmt, **kwargs))


def test_planar_kernel_refuses_what_it_cannot_take():
    g = _args.conv_geometry((2, 5, 8, 8), (4, 5, 3, 3), 1, "valid", 1, 1, "NCHW")
    x = np.zeros((2, 5, 8, 8), np.float32)
    with pytest.raises(ValueError, match="at most 4 input channels"):
        _kernels.conv2d_forward_planar(x, np.zeros((3, 3, 5, 4), np.float32), None, g, False,
                                       np.zeros(g.y_shape, np.float32), 1, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs, route", [
    ((9, 13, 13, 32), (3, 3, 32, 64), {}, "winograd"),
    ((11, 9, 7, 12), (3, 3, 6, 20), {"stride": 2, "padding": 1, "groups": 2}, "direct"),
    ((12, 28, 28, 1), (3, 3, 1, 32), {}, "direct"),
], ids=["winograd", "direct", "one channel"])
@pytest.mark.parametrize("one", [True, False], ids=["1 image", "a stage's worth"])
def test_nchw_forward_goes_a_few_images_at_a_time(monkeypatch, dtype, x_shape, w_shape, kwargs,
                                                  route, one, winograd_on):
    """An NCHW forward pass whose images' arrays fit a stage (1 MB), with 4 images per thread
    or more, transposes a few images at a time into each thread's stage for the direct tiles
    or Winograd and their output back: the same bits as the NHWC pass transposed, on every
    path, one image or several per stage."""
    g = nhwc_geometry(x_shape, w_shape, kwargs)
    assert _kernels.conv2d_forward_route(g, dtype) == route
    x, w, b = conv_arrays(x_shape, w_shape, "NHWC", dtype)
    want = on_every_path(lambda: ops.conv2d(x, w, b, activation="relu", **kwargs))
    if one:
        # a stage of one image's arrays
        monkeypatch.setattr(ops, "_IMAGES_STAGE_BYTES",
                            _kernels.image_stage_bytes(g, 1, x.itemsize, False))
    units = record_kernel_calls(monkeypatch, "conv2d_forward_images", -1)
    monkeypatch.setattr(ops, "_straight_into_planes", lambda g: False)   # (for the 1 channel)
    xc, wc = to_layout(x, "NCHW"), weights_to_layout(w, "NCHW")
    got = on_every_path(lambda: ops.conv2d(xc, wc, b, activation="relu", data_format="NCHW",
                                           **kwargs))
    for isa in want:
        assert_bitwise_equal(got[isa], np.ascontiguousarray(to_layout(want[isa], "NCHW")), isa)
    if one:
        assert set(units) == {1}
    else:
        assert units and max(units) > 1


@pytest.mark.parametrize("x_shape, w_shape, kwargs, dx_route", [
    ((9, 9, 9, 32), (3, 3, 32, 64), {}, "scatter taps"),
    ((9, 9, 7, 12), (3, 3, 6, 20), {"stride": 2, "padding": 1, "groups": 2}, "gather"),
    ((9, 11, 11, 3), (5, 5, 3, 8), {"padding": 2}, "scatter rows"),
    ((6, 10, 10, 16), (3, 3, 16, 24), {"padding": 1}, "winograd"),
], ids=["scatter taps", "gather", "scatter rows", "winograd"])
@pytest.mark.parametrize("one", [True, False], ids=["1 image", "a stage's worth"])
def test_nchw_backward_goes_a_few_images_at_a_time(monkeypatch, x_shape, w_shape, kwargs,
                                                   dx_route, one, winograd_on):
    """An NCHW backward pass (not depthwise, 4+ images of small arrays) transposes as many
    images as a stage (1 MB) holds at a time into each thread's stage for the NHWC kernels,
    in groups of images whose partial sums of dw add up in a fixed order: the reference's
    results and the same bits on every thread count, one image or several per stage, on
    every input-gradient route and with either weight-gradient route."""
    g = nhwc_geometry(x_shape, w_shape, kwargs)
    assert _kernels.conv2d_backward_data_route(g, np.float32) == dx_route
    if one:
        # a stage of one image's arrays
        monkeypatch.setattr(ops, "_IMAGES_STAGE_BYTES", _kernels.image_stage_bytes(g, 1, 4, True))
    units = record_kernel_calls(monkeypatch, "conv2d_backward_images", -1)
    x, w, b = conv_arrays(x_shape, w_shape, "NCHW", np.float32)
    check_conv(x, w, b, dict(kwargs, data_format="NCHW"), activation="relu")
    check_conv(x, w, b, dict(kwargs, data_format="NCHW"), activation="relu", compute_dx=False)
    if one:
        assert set(units) == {1}
    else:
        assert units and min(units) > 1


def test_nchw_backward_bits_do_not_depend_on_the_l2_cache_size(monkeypatch):
    """How many images the backward pass stages at a time orders its sums: that count comes
    from a fixed budget, not from the L2 size the machine reports."""
    x, w, b = conv_arrays((12, 13, 13, 32), (3, 3, 32, 64), "NCHW", np.float32)
    dy = random_array(np.random.default_rng(7), (12, 64, 11, 11), np.float32)
    runs = []
    for l2 in (256 << 10, 2 << 20, 32 << 20):
        monkeypatch.setattr(ops, "l2_cache_bytes", lambda: l2)
        runs.append(ops.conv2d_backward(dy, x, w, data_format="NCHW"))
    assert_bitwise_equal(runs[0], runs[1])
    assert_bitwise_equal(runs[0], runs[2])


def test_nchw_planes_are_for_the_direct_route_only(winograd_on):
    x, w, b = conv_arrays((2, 8, 8, 16), (3, 3, 16, 16), "NHWC", np.float32)
    g = nhwc_geometry(x.shape, w.shape, {})
    assert _kernels.conv2d_forward_route(g, np.float32) == "winograd"
    y = np.empty((2, 16, 6, 6), np.float32)
    with pytest.raises(ValueError, match="direct route only"):
        _kernels.conv2d_forward(x, w, b, g, False, y, 1, True)


def test_big_layer_same_bits_on_1_and_2_threads_with_the_shipped_threshold():
    """Without the lowered threshold of kernel_path: a layer this big is split across 2 threads
    by ops itself, and must still match 1 thread bit for bit."""
    import cyconv

    x, w, b = conv_arrays((8, 13, 13, 32), (3, 3, 32, 64), "NHWC", np.float32)
    try:
        results = []
        for t in (1, 2):
            cyconv.set_num_threads(t)
            results.append((ops.conv2d(x, w, b), *ops.conv2d_backward(
                np.ones((8, 11, 11, 64), np.float32), x, w)))
    finally:
        cyconv.set_num_threads(None)
    assert_bitwise_equal(tuple(results[0]), tuple(results[1]), "1 vs 2 threads")


@pytest.mark.parametrize("cin, cout, groups", [(64, 16, 1), (40, 24, 1), (64, 32, 2)],
                         ids=["into-dw", "through-sums", "groups-into-dw"])
def test_dense_weight_gradient_by_rows_keeps_its_bits_down_to_the_sign_of_zero(cin, cout,
                                                                                groups):
    """Few pixels make one partial sum, whose rows of dw 2 threads share out, written straight
    into dw where each group's rows are whole cache lines (64 x 16; 2 groups of 32 x 16) and
    through the sums otherwise (40 x 24): products that underflow (to -0 where a fused
    multiply-add rounds them) must give the same bits as on 1 thread, which copies its one
    partial sum as it is."""
    x = np.full((4, 1, 1, cin), 1e-30, np.float32)
    dy = np.full((4, 1, 1, cout), -1e-30, np.float32)
    dy[:, :, :, ::2] = 3.0   # half the channels an ordinary sum, against the reference
    w = np.ones((1, 1, cin // groups, cout), np.float32)
    got = on_every_path(lambda: ops.conv2d_backward(dy, x, w, groups=groups, compute_dx=False))
    for isa, (_, dw, db) in got.items():
        assert not dw[..., 1::2].any(), isa
        assert_close(dw, reference.conv2d_backward(dy, x, w, groups=groups)[1], isa)


@pytest.mark.parametrize("x_shape, cout", [
    ((32, 1, 1, 576), 64),
    ((31, 1, 1, 37), 10),
    ((1, 1, 1, 9), 3),
    ((2, 3, 3, 8), 20),
], ids=["seed-dense", "tails", "one-pixel", "1x1-over-3x3"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_dense_input_gradient_reads_the_weights_in_place(x_shape, cout, dtype):
    """A 1x1 kernel at unit stride without padding (a Dense layer, or a 1x1 convolution of a
    few small images): dx is dy times the weights' transpose (cyc_conv_dense_dx), on every SIMD
    path and thread count, with the reference's values and the same bits on 1 and 2 threads:
    pixels and input channels past whole register blocks, output channels past whole vectors.
    Strided, padded, NCHW-in-images or larger problems keep the tiles' routes; more weights
    (past 1 MB) take it up to 128 pixels."""
    w_shape = (1, 1, x_shape[3], cout)
    g = nhwc_geometry(x_shape, w_shape, {})
    assert _kernels.conv2d_backward_data_route(g, dtype) == "dense"
    x, w, b = conv_arrays(x_shape, w_shape, "NHWC", dtype)
    check_conv(x, w, b, {})
    check_conv(*conv_arrays(x_shape, w_shape, "NCHW", dtype), {"data_format": "NCHW"})
    assert _kernels.conv2d_backward_data_route(nhwc_geometry(
        (128, 1, 1, 2048), (1, 1, 2048, 128), {}), np.float32) == "dense"
    assert _kernels.conv2d_backward_data_route(nhwc_geometry(
        (129, 1, 1, 2048), (1, 1, 2048, 128), {}), np.float32) != "dense"
    for kwargs in ({"stride": 2}, {"padding": 1}):
        assert _kernels.conv2d_backward_data_route(nhwc_geometry(x_shape, w_shape, kwargs),
                                                    dtype) != "dense"
    # more pixels than 32 (the weights under 1 MB)
    assert _kernels.conv2d_backward_data_route(nhwc_geometry((33, 1, 1, 576), (1, 1, 576, 64),
                                                             {}), dtype) != "dense"


@pytest.mark.parametrize("x_shape, cout", [
    ((32, 1, 1, 576), 64),
    ((47, 1, 1, 300), 48),
    ((1, 1, 1, 5), 16),
    ((2, 3, 3, 8), 32),
], ids=["seed-dense", "pieces-and-tails", "one-pixel", "1x1-over-3x3"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_dense_forward_reads_the_weights_in_place(x_shape, cout, dtype):
    """The forward pass of a 1x1 kernel at unit stride without padding, at most 48 pixels and
    output channels a multiple of 16 (cyc_conv_dense_fwd): pieces of 128 input channels (300 is
    two and a part) copied out of the weights, blocks of output channels, tiles of pixels and
    their tails, with bias and ReLU or neither, NHWC and NCHW, on every path: the reference's
    values, the same bits on 1 and 2 threads.  More pixels, or other channel counts, take the
    packed tiles."""
    w_shape = (1, 1, x_shape[3], cout)
    assert _kernels.conv2d_forward_route(nhwc_geometry(x_shape, w_shape, {}), dtype) == "dense"
    for fmt in ("NHWC", "NCHW"):
        x, w, b = conv_arrays(x_shape, w_shape, fmt, dtype)
        check_against_reference("conv2d", x, w, b, activation="relu", data_format=fmt)
        check_against_reference("conv2d", x, w, None, data_format=fmt)
    for other in ((49, 1, 1, 576), (1, 1, 576, 64)), ((1, 1, 1, 576), (1, 1, 576, 24)):
        assert _kernels.conv2d_forward_route(nhwc_geometry(*other, {}), dtype) == "direct"


@pytest.mark.parametrize("x_shape, w_shape, padding", [
    ((40, 1, 1, 4200), (1, 1, 4200, 64), "valid"),
    ((4, 10, 10, 256), (3, 3, 256, 128), "valid"),
    ((4, 7, 7, 256), (3, 3, 256, 128), "same"),
], ids=["dense-4200", "sums-over-1MB", "sums-over-1MB-padded"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_weight_gradient_with_sums_past_1mb(x_shape, w_shape, padding, dtype):
    """Weight gradients whose partial sums lie past 1 MB: one sum, which the threads share by
    rows, straight into dw, in chunks of 128 pixels (a Dense layer of 4200 inputs, 40 pixels:
    16 a chunk before; 3x3x256 -> 128 valid, 256 pixels), also where border windows are copied
    (the same layer with padding: 196 pixels, a chunk of 128 and one of 68; 28 a chunk
    before).  The reference's results, the same bits on 1 and 2 threads."""
    g = nhwc_geometry(x_shape, w_shape, {"padding": padding})
    assert _kernels.conv2d_backward_filter_route(g, dtype) == "direct"
    rng = np.random.default_rng(RNG_SEED)
    x, w, _ = conv_arrays(x_shape, w_shape, "NHWC", dtype)
    dy = random_array(rng, ops.conv2d(x, w, padding=padding).shape, dtype)
    check_against_reference("conv2d_backward", dy, x, w, padding=padding)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("form", ["contiguous", "sliced", "fortran"])
def test_relu_backward_matches_reference(dtype, form):
    rng = np.random.default_rng(RNG_SEED)
    y = random_array(rng, (3, 7, 5, 33), dtype)
    y[0, 0, 0, :4] = [0, -0.0, np.nan, np.inf]   # zero and NaN outputs pass no gradient
    dy = in_memory_layout(random_array(rng, y.shape, dtype), form, readonly=True)
    out, _ = check_against_reference("relu_backward", dy, in_memory_layout(y, form))
    assert not out[0, 0, 0, :3].any() and out[0, 0, 0, 3] == dy[0, 0, 0, 3]


def test_relu_backward_in_place(kernel):
    # large enough for two threads, which go through an OpenMP loop; one thread calls the C
    # pass directly
    rng = np.random.default_rng(RNG_SEED)
    y = random_array(rng, (64, 1000), np.float32)
    dy = random_array(rng, y.shape, np.float32)
    want = np.where(y > 0, dy, 0)
    assert ops.relu_backward(dy, y, out=dy) is dy
    assert_bitwise_equal(dy, want, "in place")


@pytest.mark.parametrize("kwargs, route", [
    (dict(), "scatter rows"),
    (dict(stride=2), "scatter rows"),
    (dict(stride=(3, 2), dilation=(1, 2), padding=((1, 0), (0, 1))), "scatter taps"),
    (dict(groups=2), "scatter taps"),
    (dict(stride=2, dilation=2, groups=4, padding=1), "scatter taps"),
], ids=["valid", "stride2", "stride3x2-dilated-asymmetric", "groups", "everything"])
def test_input_gradient_by_scattering_matches_reference(kwargs, route):
    # Batches of 4 and more of small images take the scattering input gradient (whole images per
    # thread); 1-pixel outputs fill tiles from several images, and from 9 images on, the eighths
    # of the batch that threads take hold several images each, which tiles run across.  24
    # channels fill 24 of 32 lanes a tap, 3 pixels' worth 72 of 80: kernel rows where they can
    # be (one group, no horizontal dilation), taps elsewhere.
    rng = np.random.default_rng(RNG_SEED)
    for n, hw in [(5, 9), (7, 5), (6, 3), (17, 4)]:
        # 24 channels: more than 4 per group, so not the dot-product path
        x = random_array(rng, (n, hw, hw + 1, 24), np.float32)
        w = random_array(rng, (3, 3, 24 // kwargs.get("groups", 1), 20), np.float32)
        g = nhwc_geometry(x.shape, w.shape, kwargs)
        assert _kernels.conv2d_backward_data_route(g, np.float32) == route, (n, hw)
        check_conv(x, w, None, kwargs, activation="relu")


@pytest.mark.parametrize("shape, kernel, kwargs", [
    ((4, 9, 9, 5), 3, dict()),
    ((4, 9, 9, 3), 5, dict()),
    # an RGB first layer: 7-pixel kernel rows cross both sides, stride 2 (4 classes of pixels)
    ((5, 15, 14, 3), 7, dict(stride=2, padding=3)),
    ((4, 7, 8, 4), 3, dict(padding="same")),
    ((4, 8, 7, 4), 4, dict(stride=3, padding=((2, 1), (0, 3)))),
    # one output row per image, narrower than the classes: a class ends and the next begins in
    # the same tile
    ((4, 3, 4, 4), 3, dict()),
    ((6, 3, 9, 4), 3, dict(stride=(1, 2), padding=((0, 0), (1, 0)))),
    # 3 images per eighth of the batch: each class of pixels runs over all three, and tiles
    # cross from one image to the next
    ((17, 3, 5, 4), 3, dict(padding=1)),
], ids=["5-channels", "5x5-rgb", "rgb-7x7-stride2", "4-channels-same", "stride3-asymmetric",
        "one-row", "one-row-stride2", "images-per-thread-chunk"])
def test_input_gradient_scattered_by_kernel_rows(shape, kernel, kwargs):
    # Few channels fill few lanes of a tap's tile: a kernel row of pixels x channels is computed
    # at once, into dx directly or, where it crosses a side, through a row of its own.  With 4
    # channels or fewer it replaces the gather's dot products where the rows fill 60% of their
    # vectors or more.
    rng = np.random.default_rng(RNG_SEED)
    for dtype in (np.float32, np.float64):
        x = random_array(rng, shape, dtype)
        w = random_array(rng, (kernel, kernel, shape[3], 9), dtype)
        g = nhwc_geometry(x.shape, w.shape, kwargs)
        assert _kernels.conv2d_backward_data_route(g, dtype) == "scatter rows"
        check_conv(x, w, None, kwargs)


def test_input_gradient_gathers_for_large_same_padded_images():
    # 3x3 is Winograd's; the direct route it replaces for 3x3 is the same
    for k in (5, 3):
        g = _args.conv_geometry((8, 56, 56, 64), (k, k, 64, 64), 1, "same", 1, 1, "NHWC")
        with winograd_off():
            assert _kernels.conv2d_backward_data_route(g, np.float32) == "gather"


# --- Winograd F(2x2, 3x3) and F(4x4, 3x3) -----------------------------------------------------


@contextlib.contextmanager
def winograd_set(on):
    previous = _kernels.winograd_set(on)
    try:
        yield
    finally:
        _kernels.winograd_set(previous)


def winograd_off():
    return winograd_set(False)


@pytest.fixture
def winograd_on():
    """The Winograd path on (CYCONV_WINOGRAD=0 may have turned it off for the whole run)."""
    with winograd_set(True):
        yield


WINOGRAD_CONVS = {
    # name: (x NHWC shape, cout, keyword arguments, whether dx is by Winograd too, the forward
    # pass's tile side: F(4x4) from 8 pixels wide and up to 64 channels read)
    "whole vectors, even sizes": ((2, 8, 8, 16), 16, {"padding": "same"}, True, 4),
    # 17 and 19 channels leave a partial vector on every instruction set; 9x7 outputs leave
    # tiles past the last row and column
    "partial vectors, odd sizes": ((3, 9, 7, 17), 19, {"padding": "same"}, True, 2),
    "partial vectors, F(4x4)": ((3, 11, 10, 17), 19, {"padding": "same"}, True, 4),
    # valid: dx (12x11 from 10x9) by F(4x4) computes fewer products than the scatter, which
    # computes no padding
    "valid": ((4, 12, 11, 24), 20, {}, True, 4),
    # 7 wide: the forward pass by F(2x2); dx (9x9 from 7x7) would waste more than the scatter
    "valid, narrow": ((2, 9, 9, 24), 20, {}, False, 2),
    "asymmetric padding": ((1, 10, 10, 16), 33, {"padding": ((0, 2), (1, 0))}, True, 4),
    # dx of a padding wider than the kernel crops dy instead of padding it
    "padding wider than the kernel": ((2, 9, 9, 20), 16, {"padding": 3}, True, 4),
    # 576 tiles of 4x4: several blocks per thread and 4 partial sums of the weight gradient,
    # and blocks that run from one image into the next; 40 and 72 channels fill two weight
    # blocks and a part
    "many tiles, wide outputs": ((9, 32, 32, 40), 72, {"padding": 1}, True, 4),
    # F(4x4) forward, but the weight gradient's 36 x 64 x 128 sums would pass 1 MB: F(2x2)'s
    "weight gradient by 2x2 tiles": ((2, 10, 10, 64), 128, {"padding": 1}, True, 4),
    # 70 in, 140 out: the input gradient computes 70 channels, over two weight blocks too
    "wide both ways": ((2, 9, 9, 70), 140, {"padding": 1}, True, 2),
    # 256 in and out: blocks of the fewest tiles (12); the weight gradient goes direct
    "256 channels": ((1, 8, 8, 256), 256, {"padding": 1}, True, 2),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(WINOGRAD_CONVS))
def test_winograd_convolutions_match_reference(name, dtype, winograd_on):
    x_shape, cout, kwargs, dx_winograd, tile = WINOGRAD_CONVS[name]
    x, w, b = conv_arrays(x_shape, (3, 3, x_shape[3], cout), "NHWC", dtype)
    g = nhwc_geometry(x.shape, w.shape, kwargs)
    assert _kernels.conv2d_forward_route(g, dtype) == "winograd"
    assert _kernels.winograd_tile(g, dtype) == tile
    # F(2x2)'s 16 x C x K sums where F(4x4)'s 36 x C x K would not stay in cache
    dw_winograd = x_shape[3] * cout * 16 * np.dtype(dtype).itemsize <= 1 << 20
    big = x_shape[3] * -(-cout // 16) * 16 * 36 * np.dtype(dtype).itemsize > 1 << 20
    assert _kernels.winograd_weight_grad_tile(g, dtype) == (
        1 if not dw_winograd else 2 if tile == 2 or big else 4)
    assert (_kernels.conv2d_backward_filter_route(g, dtype) == "winograd") == dw_winograd
    assert _kernels.conv2d_backward_filter_route(g, dtype, through_pool=True) == "direct"
    assert (_kernels.conv2d_backward_data_route(g, dtype) == "winograd") == dx_winograd
    check_conv(x, w, b, kwargs, activation="relu")
    # without dx, the fused ReLU's gradient is applied inside the weight gradient's kernel
    check_conv(x, w, b, kwargs, activation="relu", compute_dx=False)


@given(winograd_cases())
def test_winograd_sized_convolutions_match_reference(case):
    # most of these take the Winograd path (all but outputs of a few pixels with odd sides)
    with winograd_set(True):
        check_conv(case["x"], case["w"], case["b"], case["kwargs"], case["activation"],
                   case["compute_dx"], ("sliced", True), case["rng"])


def test_winograd_in_nchw(winograd_on):
    x, w, b = conv_arrays((3, 10, 9, 16), (3, 3, 16, 24), "NCHW", np.float32)
    check_conv(x, w, b, dict(padding="same", data_format="NCHW"), activation="relu")


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 12, 12, 16), (3, 3, 16, 16), {"stride": 2, "padding": 1}),
    ((2, 12, 12, 16), (3, 3, 16, 16), {"dilation": 2, "padding": 2}),
    ((2, 12, 12, 32), (3, 3, 16, 32), {"groups": 2, "padding": 1}),
    ((2, 12, 12, 15), (3, 3, 15, 32), {"padding": 1}),   # too few channels in
    ((2, 12, 12, 32), (3, 3, 32, 15), {"padding": 1}),   # too few out
    ((2, 12, 12, 32), (5, 5, 32, 32), {"padding": 2}),
    # 3x3 outputs: 4 tiles cover 16 pixels, 64 products against the direct 81
    ((8, 5, 5, 64), (3, 3, 64, 64), {}),
], ids=["stride 2", "dilation 2", "groups 2", "15 in", "15 out", "5x5", "3x3 outputs"])
def test_convolutions_winograd_does_not_take(x_shape, w_shape, kwargs):
    g = nhwc_geometry(x_shape, w_shape, kwargs)
    assert _kernels.conv2d_forward_route(g, np.float32) == "direct"
    assert _kernels.conv2d_backward_filter_route(g, np.float32) == "direct"
    assert _kernels.conv2d_backward_data_route(g, np.float32) != "winograd"


@pytest.mark.parametrize("channels, dtype, dw_route", [
    (128, np.float32, "winograd"), (128, np.float64, "direct"), (256, np.float32, "direct")])
def test_winograd_weight_gradient_only_where_its_sums_stay_in_cache(channels, dtype, dw_route,
                                                                    winograd_on):
    # 16 x C x K sums, added into per block of tiles: 1 MB at most (128 channels in and out)
    g = _args.conv_geometry((8, 28, 28, channels), (3, 3, channels, channels), 1, "same", 1, 1,
                            "NHWC")
    assert _kernels.conv2d_forward_route(g, dtype) == "winograd"
    assert _kernels.conv2d_backward_data_route(g, dtype) == "winograd"
    assert _kernels.conv2d_backward_filter_route(g, dtype) == dw_route


@pytest.mark.parametrize("width, channels, dtype, route", [
    (7, 256, np.float32, "winograd"),   # F(2x2): 16 x 256 x 256 float32, 4 MB
    (7, 512, np.float32, "direct"),     # 16 MB
    (7, 256, np.float64, "direct"),     # 8 MB
    (14, 512, np.float32, "winograd"),  # F(2x2) (512 channels): 16 MB, but 0.44 of the direct
                                        # products
])
def test_winograd_over_narrow_outputs_only_where_its_weights_stay_small(width, channels, dtype,
                                                                        route, winograd_on):
    # F(2x2) over a 7x7 output computes 0.58 of the direct products: enough where its
    # transformed weights take at most 4 MB, not past that (then at most 0.5)
    g = _args.conv_geometry((8, width, width, channels), (3, 3, channels, channels), 1, "same",
                            1, 1, "NHWC")
    assert _kernels.conv2d_forward_route(g, dtype) == route
    assert (_kernels.conv2d_backward_data_route(g, dtype) == "winograd") == (route == "winograd")


def test_winograd_turns_an_infinity_into_nan_where_the_direct_sum_keeps_it(winograd_on):
    # The transforms add and subtract pixels: inf - inf.  cuDNN's and oneDNN's Winograd kernels
    # do the same; CYCONV_WINOGRAD=0 keeps the direct sums.
    x, w, b = conv_arrays((1, 6, 6, 16), (3, 3, 16, 16), "NHWC", np.float32)
    x = x.copy()
    x[0, 2, 2, 0] = np.inf
    reached = reference.conv2d(x, w, b, padding=1)
    assert np.isinf(reached).any()
    got = ops.conv2d(x, w, b, padding=1)
    assert np.isnan(got).any() and not np.isnan(reached).any()
    assert np.array_equal(np.isfinite(got), np.isfinite(reached)), "the same outputs stay finite"
    with winograd_off():
        direct = ops.conv2d(x, w, b, padding=1)
    np.testing.assert_allclose(direct, reached, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("width, tile", [(7, 2), (14, 4)])
def test_a_nan_input_reaches_only_the_outputs_of_winograd_tiles_that_read_it(width, tile,
                                                                           winograd_on):
    # F(2x2)'s transforms keep a NaN to the outputs whose windows hold it, as the direct sums
    # do; F(4x4)'s spread it over the other outputs of the tiles that read it (output row 0 of
    # a tile reads input rows 0 to 4), never further
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 14, width, 16)).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    g = _args.conv_geometry(x.shape, w.shape, 1, "same", 1, 1, "NHWC")
    assert _kernels.winograd_tile(g, np.float32) == tile
    for r, c in [(0, 0), (5, 5), (4, 6), (13, width - 1)]:
        x_nan = x.copy()
        x_nan[0, r, c, 3] = np.nan
        got = np.isnan(ops.conv2d(x_nan, w, padding="same"))[0].any(-1)
        want = np.isnan(reference.conv2d(x_nan, w, padding="same"))[0].any(-1)
        reached = np.zeros_like(want)
        for ty in range(0, 14, tile):   # tiles whose (tile + 2)-wide input holds (r, c)
            for tx in range(0, width, tile):
                if ty - 1 <= r <= ty + tile and tx - 1 <= c <= tx + tile:
                    reached[ty:ty + tile, tx:tx + tile] = True
        assert (got >= want).all() and not (got & ~reached).any(), (r, c)
        if tile == 2:
            assert np.array_equal(got, want), (r, c)


def test_winograd_can_be_turned_off(winograd_on):
    x, w, b = conv_arrays((2, 8, 8, 16), (3, 3, 16, 16), "NHWC", np.float32)
    g = _args.conv_geometry(x.shape, w.shape, 1, "same", 1, 1, "NHWC")
    on = ops.conv2d(x, w, b, padding="same")
    with winograd_off():
        assert _kernels.winograd_setting() == 0
        assert _kernels.conv2d_forward_route(g, np.float32) == "direct"
        assert _kernels.winograd_tile(g, np.float32) == 1
        assert _kernels.conv2d_backward_filter_route(g, np.float32) == "direct"
        assert _kernels.conv2d_backward_data_route(g, np.float32) == "gather"
        off = ops.conv2d(x, w, b, padding="same")
    assert _kernels.winograd_setting() != 0
    assert_close(on, off)
    assert not np.array_equal(on, off), "Winograd rounds differently from the direct path"


def test_winograd_can_keep_to_2x2_tiles(winograd_on):
    # setting 2 (CYCONV_WINOGRAD=2): F(2x2)'s rounding, for every pass
    x, w, b = conv_arrays((2, 12, 12, 16), (3, 3, 16, 24), "NHWC", np.float32)
    g = _args.conv_geometry(x.shape, w.shape, 1, "same", 1, 1, "NHWC")
    assert _kernels.winograd_tile(g, np.float32) == 4
    with winograd_set(2):
        assert _kernels.winograd_setting() == 2
        assert _kernels.winograd_tile(g, np.float32) == 2
        assert _kernels.winograd_weight_grad_tile(g, np.float32) == 2
        check_conv(x, w, b, {"padding": "same"}, activation="relu")
    assert _kernels.winograd_setting() == 1
    with pytest.raises(ValueError, match="on must be 0, 1 or 2"):
        _kernels.winograd_set(3)


@pytest.mark.parametrize("x_shape, cout, padding, tile", [
    ((32, 13, 13, 32), 64, "valid", 4),     # the seed's conv2: 11 wide
    ((8, 56, 56, 64), 64, "same", 4),       # a ResNet block
    ((8, 56, 56, 128), 128, "same", 2),     # more than 64 channels read: F(4x4) rounds worse
    ((8, 7, 7, 64), 64, "same", 2),         # 7 wide
    ((8, 5, 5, 64), 64, "valid", 1),        # 3x3 outputs: direct (F(4x4): 1.5x slower)
])
def test_winograd_takes_4x4_tiles_on_wide_outputs_with_few_channels(x_shape, cout, padding,
                                                                    tile, winograd_on):
    g = _args.conv_geometry(x_shape, (3, 3, x_shape[3], cout), 1, padding, 1, 1, "NHWC")
    assert _kernels.winograd_tile(g, np.float32) == tile


def test_winograd_4x4_tiles_round_within_a_few_millionths_of_the_largest_output(winograd_on):
    # F(4x4)'s transforms multiply by up to 8 and divide by up to 24: its float32 error is
    # about ten times F(2x2)'s, still well within the tolerance the tests hold every path to
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 14, 14, 64)).astype(np.float32)
    w = (rng.standard_normal((3, 3, 64, 64)) / 24).astype(np.float32)
    g = _args.conv_geometry(x.shape, w.shape, 1, "same", 1, 1, "NHWC")
    assert _kernels.winograd_tile(g, np.float32) == 4
    want = reference.conv2d(x.astype(np.float64), w.astype(np.float64), padding="same")
    got = ops.conv2d(x, w, padding="same")
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


# --- depthwise convolutions ---------------------------------------------------------------------

DEPTHWISE_CONVS = {
    # name: (x NHWC shape, kernel, channel multiplier, keyword arguments)
    # 64 channels: whole blocks of vectors for the 3x3 kernel that keeps its weights in
    # registers, 4 pixels at a time and the rest one by one; the borders by lists of taps
    "3x3 same, whole blocks": ((3, 9, 11, 64), 3, 1, {"padding": "same"}),
    # 40 and 33 channels: a block and a remainder of vectors, and a partial vector
    "3x3 stride 2 dilated, remainder": ((2, 12, 10, 40), 3, 1,
                                        {"stride": 2, "dilation": 2, "padding": 2}),
    "3x3 valid, partial vector": ((2, 7, 8, 33), 3, 1, {}),
    "5x5 asymmetric padding": ((2, 9, 8, 24), 5, 1, {"padding": ((2, 1), (0, 3))}),
    # a multiplier runs on x's channels repeated: output channel co reads input co // m
    "3x3 dilated, unit stride": ((2, 11, 10, 36), 3, 1, {"dilation": 2, "padding": 3}),
    "multiplier 2": ((2, 8, 8, 20), 3, 2, {"padding": 1}),
    "multiplier 3, stride 2": ((3, 9, 7, 5), 3, 3, {"stride": 2, "padding": "same"}),
    # 3, 5 and 7 columns with stride 1 or 2 slide along rows with a window row's weights in
    # registers, 8 pixels at a time (4 for 7 columns) and then one by one, also on the rows
    # whose window crosses the top or bottom
    "3x3 stride 2, sliding": ((2, 10, 21, 32), 3, 1, {"stride": 2, "padding": 1}),
    "5x5 stride 2, sliding": ((2, 13, 23, 64), 5, 1, {"stride": 2, "padding": "same"}),
    "7x7, sliding with a remainder": ((2, 12, 16, 40), 7, 1, {"padding": 3}),
    "7x7 stride 2, sliding": ((1, 17, 19, 32), 7, 1, {"stride": 2, "padding": "same"}),
    "3x5 dilated down, sliding": ((2, 14, 13, 32), (3, 5), 1,
                                  {"dilation": (2, 1), "padding": "same"}),
    "5x1, not sliding": ((2, 9, 7, 32), (5, 1), 1, {"padding": "same"}),
}


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(DEPTHWISE_CONVS))
def test_depthwise_convolutions_match_reference(name, dtype, fmt):
    x_shape, k, m, kwargs = DEPTHWISE_CONVS[name]
    kh, kw = (k, k) if isinstance(k, int) else k
    c = x_shape[3]
    g = nhwc_geometry(x_shape, (kh, kw, 1, c * m), dict(kwargs, groups=c))
    assert _kernels.conv2d_forward_route(g, dtype) == "depthwise"
    assert _kernels.conv2d_backward_data_route(g, dtype) == "depthwise"
    assert _kernels.conv2d_backward_filter_route(g, dtype) == "depthwise"
    assert _kernels.conv2d_backward_filter_route(g, dtype, through_pool=True) == "direct"
    x, w, b = conv_arrays(x_shape, (kh, kw, 1, c * m), fmt, dtype)
    kwargs = dict(kwargs, groups=c, data_format=fmt)
    check_conv(x, w, b, kwargs, activation="relu")
    check_conv(x, w, b, kwargs, activation="relu", compute_dx=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("x_shape, k, kwargs", [
    ((3, 9, 11, 64), 3, {"padding": "same"}),
    ((2, 12, 10, 40), 3, {"stride": 2, "padding": 1}),    # dx gathered per row
    ((4, 7, 8, 72), 5, {"padding": ((2, 1), (0, 3)), "dilation": (1, 2)}),
    ((2, 1, 1, 33), 1, {}),
], ids=["same", "stride 2", "5x5 dilated", "1x1 pixel"])
def test_nchw_depthwise_goes_through_planes(monkeypatch, dtype, x_shape, k, kwargs):
    """In NCHW a depthwise convolution without a multiplier takes a block of an image's
    planes at a time through each thread's stage, transposed there for the NHWC kernels: the
    forward pass and the input gradient give the same bits as the NHWC calls transposed, with
    units of all of an image's channels or of blocks of 128 bytes with a short last one; the
    weight gradient, summed over groups of images, is close to the NHWC one and the same bits
    on every thread count and block."""
    c = x_shape[3]
    x, w, b = conv_arrays(x_shape, (k, k, 1, c), "NHWC", dtype)
    kwargs = dict(kwargs, groups=c)
    y = ops.conv2d(x, w, b, **kwargs)
    dy = np.random.default_rng(5).standard_normal(y.shape).astype(dtype)
    want_y = on_every_path(lambda: ops.conv2d(x, w, b, activation="relu", **kwargs))
    want_g = on_every_path(lambda: ops.conv2d_backward(dy, x, w, activation="relu", y=y,
                                                       **kwargs))
    xc, wc, dyc, yc = (to_layout(x, "NCHW"), weights_to_layout(w, "NCHW"),
                       to_layout(dy, "NCHW"), to_layout(y, "NCHW"))
    blocks = record_kernel_calls(monkeypatch, "depthwise_planes", -2)
    by_block = []
    unit = 128 // np.dtype(dtype).itemsize
    for block in (None, unit):
        if block:
            monkeypatch.setattr(ops, "_depthwise_block", lambda *a: block)
        got_y = on_every_path(lambda: ops.conv2d(xc, wc, b, activation="relu",
                                                 data_format="NCHW", **kwargs))
        got_g = on_every_path(lambda: ops.conv2d_backward(
            dyc, xc, wc, activation="relu", y=yc, data_format="NCHW", **kwargs))
        for isa in want_y:
            assert_bitwise_equal(got_y[isa], to_layout(want_y[isa], "NCHW"), isa)
            assert_bitwise_equal(got_g[isa][0], to_layout(want_g[isa][0], "NCHW"), isa)
            assert_close(got_g[isa][1], weights_to_layout(want_g[isa][1], "NCHW"), isa)
            assert_close(got_g[isa][2], want_g[isa][2], isa)
        by_block.append(got_g)
    assert set(blocks) >= {c, unit} if c > unit else set(blocks) == {c}
    for isa in by_block[0]:
        assert_bitwise_equal(by_block[0][isa][1:], by_block[1][isa][1:], isa)


def test_nchw_depthwise_with_too_few_units_transposes_the_whole_arrays():
    """Fewer than 4 units (here 3 images of a 32-channel float32 block) would leave threads
    idle, so the whole arrays go to NHWC and back (their rows shared out)."""
    x, w, b = conv_arrays((3, 20, 20, 32), (3, 3, 1, 32), "NCHW", np.float32)
    assert not ops._depthwise_in_planes(
        _args.conv_geometry(x.shape, w.shape, 1, 1, 1, 32, "NCHW"), np.float32)
    assert ops._depthwise_in_planes(
        _args.conv_geometry((4,) + x.shape[1:], w.shape, 1, 1, 1, 32, "NCHW"), np.float32)
    check_conv(x, w, b, {"padding": 1, "groups": 32, "data_format": "NCHW"}, activation="relu")


@given(depthwise_cases())
def test_depthwise_convolutions_of_drawn_shapes_match_reference(case):
    check_conv(case["x"], case["w"], case["b"], case["kwargs"], case["activation"],
               case["compute_dx"], ("sliced", True), case["rng"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 6, 5, 20), (1, 1, 20, 80), {}),
    ((3, 5, 7, 8), (3, 3, 4, 90), {"groups": 2, "padding": 1, "stride": 2}),
    ((2, 7, 7, 20), (2, 2, 20, 136), {"stride": 2}),
], ids=["1x1, 80 channels", "2 groups of 45", "136 channels"])
def test_direct_weight_gradient_over_panels_of_output_channels(x_shape, w_shape, kwargs, dtype):
    """The direct weight gradient reads dy in panels of a tile's width (AVX2: 16 float32
    channels, AVX-512: 64): several panels, on AVX-512 the last narrower (80 = 64 + 16, 136 =
    128 + 8 rounded up to 16), a group's channels padded within a panel (45 of 48); without dx
    the ReLU's mask is applied in the kernel, on the row copied into the panels."""
    g = nhwc_geometry(x_shape, w_shape, kwargs)
    assert _kernels.conv2d_backward_filter_route(g, dtype) == "direct"
    x, w, b = conv_arrays(x_shape, w_shape, "NHWC", dtype)
    check_conv(x, w, b, kwargs, activation="relu")
    check_conv(x, w, b, kwargs, activation="relu", compute_dx=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 6, 6, 256), (1, 1, 256, 256), {}),
    ((2, 5, 5, 256), (3, 3, 256, 264), {"padding": 1}),
    ((1, 4, 9, 128), (1, 3, 128, 256), {"padding": "same", "stride": (1, 2)}),
], ids=["1x1", "3x3, padded", "strided"])
def test_direct_weight_gradient_with_packed_rows_of_x(x_shape, w_shape, kwargs, dtype):
    """Where x's rows lie a multiple of 1 KB apart (256 float32 channels: 4 of L1's sets), a
    tile's x values are copied into a packed block first, whole vectors where the segment holds
    them and value by value at its end (a 256-value segment in tiles of 5 or 6 values), from
    rows in place and from windows copied at the padding; at least 16 vectors of output
    channels on every SIMD level."""
    g = nhwc_geometry(x_shape, w_shape, kwargs)
    assert _kernels.conv2d_backward_filter_route(g, dtype) == "direct"
    x, w, b = conv_arrays(x_shape, w_shape, "NHWC", dtype)
    check_conv(x, w, b, kwargs)
    check_conv(x, w, b, kwargs, activation="relu", compute_dx=False)


def test_grouped_but_not_depthwise_takes_the_tiles():
    g = _args.conv_geometry((2, 8, 8, 16), (3, 3, 2, 16), 1, 1, 1, 8, "NHWC")
    assert _kernels.conv2d_forward_route(g, np.float32) == "direct"


def test_depthwise_windows_past_the_tap_tables_take_the_tiles():
    # the depthwise kernels keep a table of 256 taps on the stack; a window of 17x17 (289 cells)
    # goes to the tile kernels, which are right for it too
    g = _args.conv_geometry((1, 20, 20, 2), (17, 17, 1, 2), 1, "valid", 1, 2, "NHWC")
    assert _kernels.conv2d_forward_route(g, np.float32) == "direct"
    assert _kernels.conv2d_backward_data_route(g, np.float32) != "depthwise"
    x, w, b = conv_arrays((1, 20, 20, 2), (17, 17, 1, 2), "NHWC", np.float64)
    check_conv(x, w, b, dict(groups=2))


@pytest.mark.parametrize("cout, groups", [(100, 1), (140, 2), (64, 1)])
def test_wide_outputs_take_double_blocks_and_their_remainders(cout, groups):
    # 64 and more output channels per group run two weight blocks per tile on AVX-512; 100 and
    # 70 per group also leave a partial block, and 7 pixels per image leave partial tiles.
    rng = np.random.default_rng(RNG_SEED)
    x = random_array(rng, (3, 7, 9, 8 * groups), np.float32)
    w = random_array(rng, (3, 3, 8, cout), np.float32)
    check_conv(x, w, random_array(rng, (cout,), np.float32), dict(groups=groups, padding=1),
               activation="relu")


@pytest.mark.parametrize("cin, groups", [(1, 1), (2, 1), (4, 2)],
                         ids=["window per tile", "segments", "groups"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("pool", [(2, None), ((2, 3), (3, 3)), (3, 4)],
                         ids=["2x2", "2x3 stride 3", "3x3 stride 4"])
def test_weight_gradient_through_a_max_pool_is_the_two_steps(kernel, dtype, pool, relu, cin,
                                                             groups):
    # The first layer's weight gradient read through the pool's cells (odd sizes leave rows
    # and columns that no window covers; with a ReLU its mask comes from the conv's output;
    # one input channel without that mask goes by the pool's windows, whose border pixels read
    # zeros past the padding).  By the direct kernel, the same bits as the two steps; by the
    # windows, their sums in another order: the same within rounding.
    rng = np.random.default_rng(6)
    x = random_array(rng, (3, 15, 14, cin), dtype)
    w = random_array(rng, (3, 3, cin // groups, 20), dtype)
    kwargs = dict(padding=1, stride=(1, 1), groups=groups)
    y = ops.conv2d(x, w, activation="relu" if relu else None, **kwargs)
    size, stride = pool
    p, cells = ops.max_pool2d(y, size, stride, return_indices=True, index_format="window")
    dy = random_array(rng, p.shape, dtype)
    fused = ops._conv2d_weight_grad_through_max_pool(dy, cells, size, stride, x, w,
                                                     y=y if relu else None, **kwargs)
    dyc = ops.max_pool2d_backward(dy, y, size, stride, indices=cells)
    apart = ops.conv2d_backward(dyc, x, w, compute_dx=False, activation="relu" if relu else None,
                                y=y if relu else None, **kwargs)[1:]
    g = nhwc_geometry(x.shape, w.shape, kwargs)
    route = _kernels.conv2d_backward_filter_route(g, dtype, through_pool=True, relu_mask=relu)
    assert route == ("pool windows" if cin == 1 and not relu else "direct")
    if route == "direct":
        assert_bitwise_equal(fused, apart, "dw, db")
    else:
        assert_results_close(fused, apart, "dw, db")


@pytest.mark.parametrize("x_shape, w_shape, kwargs, pool", [
    ((4, 28, 28, 1), (3, 3, 1, 32), {}, (2, None)),                      # the seed's first layer
    ((3, 11, 10, 1), (3, 3, 1, 20), {"padding": "same"}, (2, None)),     # tail lanes, borders
    ((2, 13, 12, 3), (2, 2, 3, 17), {"padding": 1}, (3, None)),          # 12 weights, 3x3 pool
    ((2, 15, 16, 1), (1, 3, 1, 8), {"dilation": (1, 2)}, ((2, 1), (3, 2))),  # gaps between windows
    ((2, 17, 17, 2), (2, 1, 2, 40), {"stride": 2, "padding": 2}, (2, None)),
    ((5, 6, 5, 1), (1, 1, 1, 3), {}, (1, None)),                         # one weight, 1x1 pool
], ids=["seed", "same", "rgb 2x2", "dilated", "strided", "1x1"])
def test_weight_gradient_by_the_pool_windows(dtype, x_shape, w_shape, kwargs, pool):
    """Layers with at most 12 weights per output channel (one group, no ReLU mask) take their
    weight gradient through a pool by its windows: on every path and thread count (the same bits
    with 1 and 2 threads), the two steps' gradient and the reference's within rounding."""
    rng = np.random.default_rng(9)
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    size, stride = pool
    y = ops.conv2d(x, w, **kwargs)
    g = nhwc_geometry(x_shape, w_shape, kwargs)
    assert _kernels.conv2d_backward_filter_route(g, dtype, through_pool=True) == "pool windows"
    _, cells = ops.max_pool2d(y, size, stride, return_indices=True, index_format="window")
    dy = random_array(rng, cells.shape, dtype)
    dyc = reference.max_pool2d_backward(dy, y, size, stride, indices=cells)
    want = reference.conv2d_backward(dyc, x, w, compute_dx=False, **kwargs)[1:]
    with unchanged(x, w, dy, cells):
        got = on_every_path(lambda: ops._conv2d_weight_grad_through_max_pool(
            dy, cells, size, stride, x, w, **kwargs))
    for isa, result in got.items():
        assert_results_close(result, want, f"[{isa}] dw, db")


@pytest.mark.parametrize("x_shape, w_shape, groups, route", [
    ((2, 16, 16, 16), (3, 3, 16, 16), 1, "winograd"),
    ((2, 16, 16, 3), (3, 3, 1, 12), 3, "depthwise"),
], ids=["winograd", "depthwise"])
def test_weight_gradient_through_a_max_pool_runs_the_direct_kernel(dtype, x_shape, w_shape,
                                                                   groups, route, winograd_on):
    # where conv2d_backward would take Winograd or the depthwise kernels, the weight gradient
    # through the pool's cells still runs the direct one: the same gradient within rounding
    rng = np.random.default_rng(8)
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    y = ops.conv2d(x, w, groups=groups)
    g = nhwc_geometry(x_shape, w_shape, {"groups": groups})
    assert _kernels.conv2d_backward_filter_route(g, dtype) == route
    assert _kernels.conv2d_backward_filter_route(g, dtype, through_pool=True) == "direct"
    p, cells = ops.max_pool2d(y, 2, return_indices=True, index_format="window")
    dy = random_array(rng, p.shape, dtype)
    fused = ops._conv2d_weight_grad_through_max_pool(dy, cells, 2, 2, x, w, groups=groups)
    apart = ops.conv2d_backward(ops.max_pool2d_backward(dy, y, 2, indices=cells), x, w,
                                groups=groups, compute_dx=False)[1:]
    assert_results_close(fused, apart, "dw, db")


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 37, 53), (4, 64, 48), (1, 17, 16),
                                   (2, 32, 8), (1, 1, 5)])
def test_layout_transpose_kernel(kernel, dtype, shape):
    # whole 16 x 16 blocks (in registers, VLEN x VLEN at a time), partial blocks and thin
    # matrices
    a = np.random.default_rng(0).random(shape).astype(dtype)
    np.testing.assert_array_equal(ops._transpose_images(a, shape[1], shape[2]),
                                  a.transpose(0, 2, 1))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(1, 100, 40), (1, 64, 300), (3, 130, 17), (1, 600, 20)])
def test_transpose_in_bands_and_pieces(kernel, dtype, shape, threads):
    # bands of 256 rows or columns (300 columns: two; 600 rows: three); with 2 threads and
    # fewer matrices than 4, each matrix in pieces of rows, whole tiles of 16 and a short last
    a = np.random.default_rng(0).random(shape).astype(dtype)
    out = np.empty((shape[0], shape[2], shape[1]), dtype)
    _kernels.transpose(a, out, threads)
    np.testing.assert_array_equal(out, a.transpose(0, 2, 1))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(9, 5, 130), (130, 3, 9), (64, 2, 64), (1, 4, 7), (70, 1, 1),
                                   (17, 33, 49)])
def test_swap_outer_axes(kernel, dtype, shape, threads):
    # (A, B, C) -> (C, B, A): OIHW weights to HWIO and back; blocks of 64 of A and of C, whole
    # and partial (130: two and a short third), thin and single values
    a = np.random.default_rng(0).random(shape).astype(dtype)
    out = np.empty(shape[::-1], dtype)
    _kernels.swap_outer_axes(a, out, threads)
    np.testing.assert_array_equal(out, a.transpose(2, 1, 0))
    with pytest.raises(ValueError, match="dst: expected shape"):
        _kernels.swap_outer_axes(a, np.empty(shape, dtype) if shape != shape[::-1]
                                 else np.empty((1, 1, 2), dtype), threads)


# --- a convolution and the max-pool after it, in one pass ------------------------------------


def conv_then_pool(x, w, b, pool, cells, kwargs):
    """What ops._conv2d_relu_max_pool stands for: the two calls."""
    fmt = kwargs.get("data_format", "NHWC")
    z = ops.conv2d(x, w, b, activation="relu", **kwargs)
    if cells:
        return ops._max_pool2d_after_relu(z, *pool, "valid", fmt)
    return ops.max_pool2d(z, *pool, data_format=fmt), None


def check_conv_pool(x, w, b, pool, cells, kwargs):
    def both():
        return (ops._conv2d_relu_max_pool(x, w, b, *pool, cells=cells, **kwargs),
                conv_then_pool(x, w, b, pool, cells, kwargs))

    with unchanged(*[a for a in (x, w, b) if a is not None]):
        for isa, (fused, apart) in on_every_path(both).items():
            assert_bitwise_equal(fused, apart, f"[{isa}] one pass vs conv2d then max_pool2d")


@given(conv_pool_cases())
def test_conv_relu_max_pool_in_one_pass_is_the_two_calls_to_the_bit(case):
    kwargs = {k: v for k, v in case["kwargs"].items() if k != "data_format"}
    g = nhwc_geometry(*case["nhwc_shapes"], kwargs)
    assume(g.oh >= case["pool"][0][0] and g.ow >= case["pool"][0][1])
    check_conv_pool(case["x"], case["w"], case["b"], case["pool"], case["cells"],
                    case["kwargs"])


@pytest.mark.parametrize("x_shape, w_shape, kwargs, pool", [
    ((3, 28, 28, 1), (3, 3, 1, 32), {}, (2, None)),                   # the seed's first layer
    ((3, 13, 13, 32), (3, 3, 32, 64), {}, (2, None)),                 # its second (Winograd)
    # bands of whole images: of conv2 2 per band on 2 threads, 8 on one (and a last band of
    # one); of conv1 2 and 3
    ((9, 13, 13, 32), (3, 3, 32, 64), {}, (2, None)),
    ((9, 28, 28, 1), (3, 3, 1, 32), {}, (2, None)),
    ((1, 9, 11, 20), (3, 3, 20, 24), {"padding": "same"}, (3, 3)),    # odd pool stride
    ((2, 12, 10, 17), (3, 3, 17, 33), {}, ((3, 2), (2, 3))),          # overlapping rows
    ((2, 7, 9, 4), (3, 3, 4, 6), {"padding": ((3, 0), (1, 1))}, (2, None)),  # a row all padding
    ((2, 6, 6, 4), (3, 3, 1, 4), {"groups": 4}, (2, None)),           # depthwise
    # at most 4 outputs (per group): the dot kernel, whose blocks of pixels a band shifts
    ((2, 11, 9, 3), (3, 3, 3, 3), {}, (2, None)),
    ((1, 7, 5, 4), (1, 1, 2, 2), {"groups": 2}, (1, None)),
], ids=["seed conv1", "seed conv2", "seed conv2 batch 9", "seed conv1 batch 9", "odd stride",
        "overlapping", "padding row", "depthwise", "3 outputs", "2 outputs per group"])
@pytest.mark.parametrize("cells", [True, False], ids=["cells", "no cells"])
def test_conv_relu_max_pool_named_cases(dtype, fmt, x_shape, w_shape, kwargs, pool, cells):
    x, w, b = conv_arrays(x_shape, w_shape, fmt, dtype, seed=11)
    kwargs = dict(kwargs, data_format=fmt)
    check_conv_pool(x, w, b, pool, cells, kwargs)
    want = reference.max_pool2d(reference.conv2d(x, w, b, activation="relu", **kwargs), *pool,
                                data_format=fmt)
    assert_close(ops._conv2d_relu_max_pool(x, w, b, *pool, cells=cells, **kwargs)[0], want)


def test_conv_relu_max_pool_runs_in_bands_where_it_can(monkeypatch):
    # the one-pass kernel for plain and Winograd convolutions; the two calls where a band
    # could start in rows wholly in the padding, and for depthwise convolutions
    calls = record_kernel_calls(monkeypatch, "conv2d_forward_max_pool", 5)
    rng = np.random.default_rng(12)
    for x_shape, w_shape, kwargs, used in [
            ((2, 28, 28, 1), (3, 3, 1, 32), {}, True),
            ((2, 13, 13, 32), (3, 3, 32, 64), {}, True),
            ((2, 7, 9, 4), (3, 3, 4, 6), {"padding": ((3, 0), (1, 1))}, False),
            ((2, 6, 6, 4), (3, 3, 1, 4), {"groups": 4}, False)]:
        x, w = random_array(rng, x_shape, np.float32), random_array(rng, w_shape, np.float32)
        before = len(calls)
        ops._conv2d_relu_max_pool(x, w, None, 2, **kwargs)
        assert (len(calls) > before) == used, (x_shape, w_shape, kwargs)


@pytest.mark.parametrize("n, threads, pool_stride, want, images", [
    (32, 2, 2, 13, 3),   # the seed's first layer: a band is 3 whole images (13 pool rows, 86 KB)
    (32, 1, 2, 13, 3),
    (3, 2, 2, 7, 1),     # 3 images for 2 threads: two bands per image
    (1, 2, 2, 4, 1),     # one image, two threads: four bands of at most 4 pool rows
    (1, 2, 3, 3, 1),     # stride 3: 9 pool rows in bands of 3
    (1, 1, 2, 13, 1),    # one image, one thread: one band
])
def test_pool_bands_stay_small_and_split_for_the_threads(n, threads, pool_stride, want, images):
    g = nhwc_geometry((n, 28, 28, 1), (3, 3, 1, 32), {})
    pg = _args.pool_geometry(g.y_shape_nhwc, 2, pool_stride, "valid", 1, False, "NHWC")
    rows = ops._pool_rows_per_band(g, pg, np.float32, threads)
    assert rows == want
    assert ops._pool_images_per_band(g, pg, rows, np.float32, threads) == images


@pytest.mark.parametrize("x_shape, pool_stride, tile, want", [
    ((1, 30, 12, 16), 2, 4, 4),   # F(4x4): 4 pool rows (8 convolution rows) per band
    ((1, 30, 12, 16), 3, 4, 4),   # stride 3: 3 rows would start bands on row 9
    ((1, 30, 7, 16), 3, 2, 4),    # F(2x2), stride 3: an even number of rows
    ((1, 30, 7, 16), 2, 2, 4),
])
def test_pool_bands_start_where_winograd_tiles_start(x_shape, pool_stride, tile, want,
                                                     winograd_on):
    g = nhwc_geometry(x_shape, (3, 3, 16, 24), {"padding": "same"})
    assert _kernels.winograd_tile(g, np.float32) == tile
    pg = _args.pool_geometry(g.y_shape_nhwc, 2, pool_stride, "valid", 1, False, "NHWC")
    rows = ops._pool_rows_per_band(g, pg, np.float32, 2)
    assert rows == want and rows < pg.oh and rows * pool_stride % tile == 0


def test_pool_bands_count_the_rows_overlapping_windows_share(monkeypatch):
    # 3x3 windows at stride 2: a band of r pool rows holds 2r + 1 rows of the convolution
    monkeypatch.setattr(ops, "_BAND_BYTES", 11 * 26 * 32 * 4)
    g = nhwc_geometry((32, 28, 28, 1), (3, 3, 1, 32), {})
    pg = _args.pool_geometry(g.y_shape_nhwc, 3, 2, "valid", 1, False, "NHWC")
    assert ops._pool_rows_per_band(g, pg, np.float32, 1) == 5
