"""The NumPy reference, pinned three ways: hand-computed cases, central finite differences
(float64) for every backward, and, where PyTorch is installed, PyTorch itself.

Peers' conventions that cyconv follows (or knowingly does not) are written down as tests here.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cyconv import reference as ref
from helpers import assert_close, random_array, to_layout, weights_to_layout
from strategies import as_pair, conv_cases, pool_cases


def nhwc1(plane):
    """One image, one channel, NHWC, float64, from a 2-D list."""
    return np.asarray(plane, dtype=np.float64)[None, :, :, None]


def check_both_layouts(op, inputs_nhwc, expected_nhwc, weights=None, **kwargs):
    """op on NHWC inputs and on the same data as NCHW (weights HWIO / OIHW) gives expected
    (in NHWC, or (N, C) for the global pools in both layouts)."""
    expected_nhwc = np.asarray(expected_nhwc)
    for fmt in ("NHWC", "NCHW"):
        args = [to_layout(a, fmt) for a in inputs_nhwc]
        if weights is not None:
            args.append(weights_to_layout(weights, fmt))
        got = op(*args, data_format=fmt, **kwargs)
        want = to_layout(expected_nhwc, fmt) if expected_nhwc.ndim == 4 else expected_nhwc
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=fmt)


# --- hand-computed cases ---------------------------------------------------------------------

X44 = nhwc1(np.arange(16).reshape(4, 4))  # x[i, j] = 4 i + j


def test_seed_convolution_formula_with_bias():
    # The seed's y[i, j] = sum_m sum_n x[i+m, j+n] w[m, n] + b, with w = [[1, 2], [3, 4]] and
    # b = 1: y[i, j] = 40 i + 10 j + 35.
    w = np.array([[1.0, 2.0], [3.0, 4.0]])[:, :, None, None]
    expected = nhwc1([[35, 45, 55], [75, 85, 95], [115, 125, 135]])
    check_both_layouts(lambda x, w, **k: ref.conv2d(x, w, np.array([1.0]), **k), [X44],
                       expected, weights=w)


def test_seed_convolution_backward_by_hand():
    w = np.array([[1.0, 2.0], [3.0, 4.0]])[:, :, None, None]
    dx, dw, db = ref.conv2d_backward(np.ones((1, 3, 3, 1)), X44, w)
    # dw[m, n] = sum of the 3x3 block of x at (m, n) = 9 (4 m + n + 5).
    np.testing.assert_array_equal(dw[:, :, 0, 0], [[45, 54], [81, 90]])
    assert db.tolist() == [9.0]
    # dx[p, q] = sum of the w[m, n] whose output (p - m, q - n) exists.
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 3, 3, 2], [4, 10, 10, 6],
                                                   [4, 10, 10, 6], [3, 7, 7, 4]])


def test_convolution_mixes_input_channels_into_each_output():
    # Two input channels, two outputs: out0 = ch0 + ch1, out1 = ch0 - 2 ch1 (1x1 kernel).
    x = np.stack([np.arange(4.0).reshape(2, 2), np.full((2, 2), 10.0)], axis=-1)[None]
    w = np.array([[[[1.0, 1.0], [1.0, -2.0]]]])  # HWIO (1, 1, 2, 2)
    expected = np.stack([x[0, :, :, 0] + 10, x[0, :, :, 0] - 20], axis=-1)[None]
    check_both_layouts(ref.conv2d, [x], expected, weights=w)


def test_groups_keep_channels_apart():
    # Channel 0 only feeds output 0 (all-ones 2x2 kernel), channel 1 only output 1
    # (kernel [[1, 0], [0, -1]]).
    x = np.stack([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]], axis=-1)[None]
    w = np.zeros((2, 2, 1, 2))
    w[:, :, 0, 0] = 1.0
    w[:, :, 0, 1] = [[1.0, 0.0], [0.0, -1.0]]
    check_both_layouts(ref.conv2d, [x], [[[[10.0, -30.0]]]], weights=w, groups=2)


X33 = nhwc1([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
ONES22 = np.ones((2, 2, 1, 1))


@pytest.mark.parametrize("kwargs, expected", [
    # Zero padding 1 all round: sums of the 2x2 blocks of the 5x5 padded image.
    ({"padding": 1}, [[1, 3, 5, 3], [5, 12, 16, 9], [11, 24, 28, 15], [7, 15, 17, 9]]),
    ({"padding": 1, "stride": 2}, [[1, 5], [11, 28]]),
    ({"padding": ((0, 1), (1, 0))}, [[5, 12, 16], [11, 24, 28], [7, 15, 17]]),
    ({"padding": (1, 0), "stride": (2, 1)}, [[3, 5], [24, 28]]),
    # TensorFlow's 'same' with a 2x2 kernel pads one row and column at the bottom/right.
    ({"padding": "same"}, [[12, 16, 9], [24, 28, 15], [15, 17, 9]]),
], ids=["pad1", "pad1-stride2", "asymmetric", "per-axis", "same"])
def test_padding_and_stride_by_hand(kwargs, expected):
    check_both_layouts(ref.conv2d, [X33], nhwc1(expected), weights=ONES22, **kwargs)


def test_dilation_by_hand():
    # y[i, j] = x[i, j] + x[i, j+2] + x[i+2, j] + x[i+2, j+2] = 20 i + 4 j + 24 for x = 5 i + j.
    x = nhwc1(np.arange(25).reshape(5, 5))
    check_both_layouts(ref.conv2d, [x], nhwc1([[24, 28, 32], [44, 48, 52], [64, 68, 72]]),
                       weights=ONES22, dilation=2)


def test_relu_activation():
    x = nhwc1([[1, -2], [3, -4]])
    y = ref.conv2d(x, np.ones((1, 1, 1, 1)), np.array([-1.5]), activation="relu")
    np.testing.assert_array_equal(y[0, :, :, 0], [[0, 0], [1.5, 0]])


X_POOL = nhwc1([[1, 3, 2, 0], [4, 2, 1, 5], [0, 1, 7, 2], [3, 8, 1, 1]])


def test_seed_max_pool_2x2():
    check_both_layouts(ref.max_pool2d, [X_POOL], nhwc1([[4, 5], [8, 7]]), pool_size=2)
    y, idx = ref.max_pool2d(X_POOL, 2, return_indices=True)
    np.testing.assert_array_equal(idx[0, :, :, 0], [[4, 7], [13, 10]])  # flat i * 4 + j
    dx = ref.max_pool2d_backward(nhwc1([[1, 2], [3, 4]]), X_POOL, 2)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 0, 0, 0], [1, 0, 0, 2],
                                                   [0, 0, 4, 0], [0, 3, 0, 0]])


def test_max_pool_overlapping_ties_send_gradient_to_first_cell():
    x = nhwc1(np.zeros((3, 3)))
    dx = ref.max_pool2d_backward(np.ones((1, 2, 2, 1)), x, 2, 1)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_max_pool_padding_never_wins():
    # All values negative: a zero-padded max would return 0 at the borders.
    x = nhwc1([[-5, -6], [-7, -8]])
    y, idx = ref.max_pool2d(x, 3, 1, 1, return_indices=True)
    np.testing.assert_array_equal(y[0, :, :, 0], [[-5, -5], [-5, -5]])
    np.testing.assert_array_equal(idx[0, :, :, 0], [[0, 0], [0, 0]])


def test_avg_pool_by_hand():
    check_both_layouts(ref.avg_pool2d, [X_POOL], nhwc1([[2.5, 2], [3, 2.75]]), pool_size=2)
    dx = ref.avg_pool2d_backward(np.ones((1, 2, 2, 1)), X_POOL, 2)
    np.testing.assert_array_equal(dx, np.full(X_POOL.shape, 0.25))


def test_global_pools_by_hand():
    x = np.stack([X_POOL[0, :, :, 0], -X_POOL[0, :, :, 0]], axis=-1)[None]
    check_both_layouts(ref.global_max_pool2d, [x], [[8.0, 0.0]])
    check_both_layouts(ref.global_avg_pool2d, [x], [[41 / 16, -41 / 16]])
    dx = ref.global_max_pool2d_backward(np.array([[1.0, 2.0]]), x)
    expected = np.zeros((4, 4, 2))
    expected[3, 1, 0] = 1.0
    # Channel 1's maximum, 0, occurs at (0, 3) and (2, 0): the first in row-major order wins.
    expected[0, 3, 1] = 2.0
    np.testing.assert_array_equal(dx[0], expected)
    dx = ref.global_avg_pool2d_backward(np.array([[16.0, 32.0]]), x)
    np.testing.assert_array_equal(dx[0], np.broadcast_to([1.0, 2.0], (4, 4, 2)))


# --- central finite differences, float64 ----------------------------------------------------


def numerical_gradient(loss, a, eps=1e-6):
    """d loss / d a by central differences, perturbing a in place one cell at a time."""
    grad = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        orig = a[idx]
        a[idx] = orig + eps
        plus = loss()
        a[idx] = orig - eps
        minus = loss()
        a[idx] = orig
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def assert_gradient(analytic, loss, a, what):
    np.testing.assert_allclose(analytic, numerical_gradient(loss, a), rtol=1e-6, atol=1e-7,
                               err_msg=what)


CONV_GRAD_CASES = {
    # name: (x NHWC shape, w HWIO shape, keyword arguments)
    "plain": ((2, 4, 5, 3), (3, 3, 3, 2), {}),
    "stride 2, same": ((1, 5, 6, 2), (3, 2, 2, 3), {"stride": 2, "padding": "same"}),
    "dilation, asymmetric padding": ((1, 5, 5, 2), (2, 3, 2, 2),
                                     {"dilation": (2, 1), "padding": ((1, 0), (2, 1))}),
    "groups 2": ((2, 4, 4, 4), (3, 3, 2, 4), {"groups": 2, "padding": 1}),
    "depthwise": ((1, 4, 5, 3), (2, 2, 1, 6), {"groups": 3, "stride": (1, 2)}),
}


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("name", list(CONV_GRAD_CASES))
def test_conv2d_backward_finite_differences(name, fmt):
    x_shape, w_shape, kwargs = CONV_GRAD_CASES[name]
    rng = np.random.default_rng(7)
    x = to_layout(rng.standard_normal(x_shape), fmt)
    w = weights_to_layout(rng.standard_normal(w_shape), fmt)
    b = rng.standard_normal(w_shape[3])
    kwargs = dict(kwargs, data_format=fmt)
    r = rng.standard_normal(ref.conv2d(x, w, b, **kwargs).shape)

    def loss():
        return float(np.sum(r * ref.conv2d(x, w, b, **kwargs)))

    dx, dw, db = ref.conv2d_backward(r, x, w, **kwargs)
    assert_gradient(dx, loss, x, "dx")
    assert_gradient(dw, loss, w, "dw")
    assert_gradient(db, loss, b, "db")
    none, dw2, db2 = ref.conv2d_backward(r, x, w, compute_dx=False, **kwargs)
    assert none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


def distinct_values(rng, shape):
    """Values at least 0.01 apart, so that a 1e-6 nudge never changes which cell is the max."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 1.0


POOL_GRAD_CASES = {
    # name: (op, keyword arguments); x is (2, 5, 6, 2) NHWC
    "max 2x2": ("max", {"pool_size": 2}),
    "max 3 stride 1 pad 1": ("max", {"pool_size": 3, "stride": 1, "padding": 1}),
    "max dilation 2": ("max", {"pool_size": 2, "stride": 1, "dilation": 2}),
    "max ceil_mode": ("max", {"pool_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    "max same (2, 3)": ("max", {"pool_size": (2, 3), "stride": (2, 1), "padding": "same"}),
    "avg 2x2": ("avg", {"pool_size": 2}),
    "avg count_include_pad": ("avg", {"pool_size": 3, "stride": 2, "padding": 1,
                                      "count_include_pad": True}),
    "avg exclude pad": ("avg", {"pool_size": 3, "stride": 2, "padding": 1}),
    "avg ceil_mode include pad": ("avg", {"pool_size": 2, "stride": 2, "padding": 1,
                                          "ceil_mode": True, "count_include_pad": True}),
    "avg ceil_mode exclude pad": ("avg", {"pool_size": (3, 2), "stride": 2, "ceil_mode": True}),
    "avg same": ("avg", {"pool_size": 3, "stride": 2, "padding": "same"}),
}


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("name", list(POOL_GRAD_CASES))
def test_pool_backward_finite_differences(name, fmt):
    op, kwargs = POOL_GRAD_CASES[name]
    forward = getattr(ref, f"{op}_pool2d")
    backward = getattr(ref, f"{op}_pool2d_backward")
    rng = np.random.default_rng(11)
    x = to_layout(distinct_values(rng, (2, 5, 6, 2)), fmt)
    kwargs = dict(kwargs, data_format=fmt)
    r = rng.standard_normal(forward(x, **kwargs).shape)
    assert_gradient(backward(r, x, **kwargs), lambda: float(np.sum(r * forward(x, **kwargs))), x,
                    name)
    if op == "max":
        _, idx = forward(x, return_indices=True, **kwargs)
        np.testing.assert_array_equal(backward(r, x, indices=idx, **kwargs),
                                      backward(r, x, **kwargs))


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("op", ["max", "avg"])
def test_global_pool_backward_finite_differences(op, fmt):
    forward = getattr(ref, f"global_{op}_pool2d")
    backward = getattr(ref, f"global_{op}_pool2d_backward")
    rng = np.random.default_rng(5)
    x = to_layout(distinct_values(rng, (2, 3, 4, 3)), fmt)
    r = rng.standard_normal((2, 3))
    assert_gradient(backward(r, x, data_format=fmt),
                    lambda: float(np.sum(r * forward(x, data_format=fmt))), x, op)


# --- peers' conventions -----------------------------------------------------------------------


def tf_same_padding(size, k, s, d):
    """TensorFlow's rule as the issue states it, restated independently of cyconv._args."""
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def test_tensorflow_same_puts_the_odd_pixel_bottom_right():
    # [1, 2, 3] * [1, 1] with one pixel of padding: on the right gives [3, 5, 3]; on the left
    # it would be [1, 3, 5].
    y = ref.conv2d(nhwc1([[1, 2, 3]]), np.ones((1, 2, 1, 1)), padding="same")
    assert y.ravel().tolist() == [3, 5, 3]
    y = ref.conv2d(nhwc1([[1], [2], [3]]), np.ones((2, 1, 1, 1)), padding="same")
    assert y.ravel().tolist() == [3, 5, 3]


@given(size=st.integers(1, 20), k=st.integers(1, 5), s=st.integers(1, 3), d=st.integers(1, 3))
def test_tensorflow_same_output_is_ceil_size_over_stride(size, k, s, d):
    x = np.ones((1, size, 1, 1))
    y = ref.conv2d(x, np.ones((k, 1, 1, 1)), stride=(s, 1), dilation=(d, 1), padding="same")
    assert y.shape[1] == -(-size // s)
    explicit = ref.conv2d(x, np.ones((k, 1, 1, 1)), stride=(s, 1), dilation=(d, 1),
                          padding=(tf_same_padding(size, k, s, d), (0, 0)))
    np.testing.assert_array_equal(y, explicit)


def test_keras_average_pooling_same_excludes_padding():
    # Keras AveragePooling2D(2, padding='same') on [1..5]: the last window holds only the 5.
    y = ref.avg_pool2d(nhwc1([[1, 2, 3, 4, 5]]), (1, 2), padding="same")
    assert y.ravel().tolist() == [1.5, 3.5, 5.0]


def test_pytorch_ceil_mode_drops_a_window_that_starts_in_the_padding():
    # Width 2, window 2, stride 3, padding 1: ceil((2 + 2 - 2) / 3) + 1 = 2 windows, but the
    # second would start at padded column 3, in the right padding: PyTorch drops it.
    y = ref.max_pool2d(nhwc1([[1, 2]]), (1, 2), (1, 3), (0, 1), ceil_mode=True)
    assert y.shape == (1, 1, 1, 1) and y.ravel()[0] == 1
    # ceil_mode keeps a window that starts inside the input and hangs over the end.
    y = ref.max_pool2d(nhwc1([[1, 2, 3, 4, 5]]), (1, 2), ceil_mode=True)
    assert y.ravel().tolist() == [2, 4, 5]


# --- against PyTorch ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip(
        "torch", reason="PyTorch is not installed: the reference is not compared with it "
                        "(pip install torch==2.13.0 for the CPU build)")


def nchw(a, fmt):
    return np.ascontiguousarray(a if fmt == "NCHW" else a.transpose(0, 3, 1, 2))


def from_nchw(a, fmt):
    return a if fmt == "NCHW" else a.transpose(0, 2, 3, 1)


def explicit_pads(padding, size_hw, k_hw, s_hw, d_hw):
    """Any padding form as ((top, bottom), (left, right)), 'same' by tf_same_padding."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        return tuple(tf_same_padding(*args) for args in zip(size_hw, k_hw, s_hw, d_hw))
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return tuple(p if isinstance(p, tuple) else (p, p) for p in padding)


def grad_tensor(torch, a):
    return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=True)


@given(conv_cases())
def test_conv2d_matches_pytorch(torch, case):
    F = torch.nn.functional
    kw = case["kwargs"]
    fmt = kw["data_format"]
    x, w = case["x"].astype(np.float64), case["w"].astype(np.float64)
    b = None if case["b"] is None else case["b"].astype(np.float64)
    y = ref.conv2d(x, w, b, **kw)
    dy = random_array(case["rng"], y.shape, np.float64)
    dx, dw, db = ref.conv2d_backward(dy, x, w, **kw)

    xt = grad_tensor(torch, nchw(x, fmt))
    wt = grad_tensor(torch, w if fmt == "NCHW" else w.transpose(3, 2, 0, 1))
    # A zero bias stands for None, so that torch reports db either way.
    bt = grad_tensor(torch, np.zeros(db.shape) if b is None else b)
    (pt, pb), (pl, pr) = explicit_pads(kw["padding"], xt.shape[2:], wt.shape[2:],
                                       as_pair(kw["stride"]), as_pair(kw["dilation"]))
    yt = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wt, bt,
                  stride=kw["stride"], dilation=kw["dilation"], groups=kw["groups"])
    yt.backward(torch.tensor(nchw(dy, fmt)))
    assert_close(y, from_nchw(yt.detach().numpy(), fmt), "y")
    assert_close(dx, from_nchw(xt.grad.numpy(), fmt), "dx")
    assert_close(dw, wt.grad.numpy() if fmt == "NCHW" else wt.grad.numpy().transpose(2, 3, 1, 0),
                 "dw")
    assert_close(db, bt.grad.numpy(), "db")


def symmetric_torch_padding(padding):
    """PyTorch pools take symmetric padding only: an int or (ph, pw)."""
    if padding == "valid":
        return 0
    if isinstance(padding, int) or all(isinstance(p, int) for p in padding):
        return padding
    (top, bottom), (left, right) = padding
    assume(top == bottom and left == right)
    return (top, left)


@given(pool_cases("max"))
def test_max_pool2d_matches_pytorch(torch, case):
    kw = dict(case["kwargs"])
    assume(kw["padding"] != "same" and not np.isnan(case["x"]).any())
    fmt = kw["data_format"]
    x = case["x"].astype(np.float64)
    y, idx = ref.max_pool2d(x, return_indices=True, **kw)
    # PyTorch gives a window that lies wholly in the padding an index outside the image, and
    # its backward then writes out of bounds: such windows are pinned in test_ops instead.
    assume((idx >= 0).all())
    xt = grad_tensor(torch, nchw(x, fmt))
    yt, it = torch.nn.functional.max_pool2d(
        xt, kw["pool_size"], kw["stride"], symmetric_torch_padding(kw["padding"]),
        dilation=kw["dilation"], ceil_mode=kw["ceil_mode"], return_indices=True)
    dy = random_array(case["rng"], y.shape, np.float64)
    yt.backward(torch.tensor(nchw(dy, fmt)))
    assert_close(y, from_nchw(yt.detach().numpy(), fmt), "y")
    np.testing.assert_array_equal(idx, from_nchw(it.numpy(), fmt))
    assert_close(ref.max_pool2d_backward(dy, x, **kw), from_nchw(xt.grad.numpy(), fmt), "dx")


@given(pool_cases("avg"))
def test_avg_pool2d_matches_pytorch(torch, case):
    kw = dict(case["kwargs"])
    assume(kw["padding"] != "same")
    fmt = kw["data_format"]
    x = case["x"].astype(np.float64)
    y = ref.avg_pool2d(x, **kw)
    xt = grad_tensor(torch, nchw(x, fmt))
    yt = torch.nn.functional.avg_pool2d(
        xt, kw["pool_size"], kw["stride"], symmetric_torch_padding(kw["padding"]),
        ceil_mode=kw["ceil_mode"], count_include_pad=kw["count_include_pad"])
    dy = random_array(case["rng"], y.shape, np.float64)
    yt.backward(torch.tensor(nchw(dy, fmt)))
    assert_close(y, from_nchw(yt.detach().numpy(), fmt), "y")
    assert_close(ref.avg_pool2d_backward(dy, x, **kw), from_nchw(xt.grad.numpy(), fmt), "dx")


@pytest.mark.parametrize("op", ["max", "avg"])
def test_global_pools_match_pytorch(torch, op):
    F = torch.nn.functional
    x = np.random.default_rng(2).standard_normal((3, 5, 4, 6))
    xt = grad_tensor(torch, nchw(x, "NHWC"))
    yt = (F.adaptive_max_pool2d if op == "max" else F.adaptive_avg_pool2d)(xt, 1)[:, :, 0, 0]
    dy = np.random.default_rng(3).standard_normal((3, 6))
    yt.backward(torch.tensor(dy))
    assert_close(getattr(ref, f"global_{op}_pool2d")(x), yt.detach().numpy(), "y")
    assert_close(getattr(ref, f"global_{op}_pool2d_backward")(dy, x),
                 from_nchw(xt.grad.numpy(), "NHWC"), "dx")


def test_pytorch_same_padding_matches_tensorflow_rule_at_stride_1(torch):
    # PyTorch's padding='same' (stride 1 only) also puts the odd pixel at the bottom/right.
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 2, 4))
    with warnings.catch_warnings():
        # PyTorch warns that an odd total padding costs it a padded copy: that is the case here.
        warnings.simplefilter("ignore", UserWarning)
        yt = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), padding="same",
                                        dilation=(3, 1))
    assert_close(ref.conv2d(x, w, padding="same", dilation=(3, 1), data_format="NCHW"),
                 yt.numpy(), "y")


def test_pytorch_ceil_mode_window_drop_agrees(torch):
    xt = torch.tensor([[[[1.0, 2.0]]]])
    yt = torch.nn.functional.max_pool2d(xt, (1, 2), (1, 3), (0, 1), ceil_mode=True)
    assert tuple(yt.shape) == ref.max_pool2d(nhwc1([[1, 2]]), (1, 2), (1, 3), (0, 1),
                                             ceil_mode=True, data_format="NHWC").shape


def test_pytorch_nan_and_all_padding_indices_differ_from_ours(torch):
    """Where cyconv knowingly departs from PyTorch's max-pool indices (values agree)."""
    F = torch.nn.functional
    nan = np.nan
    # PyTorch's index goes to the last NaN of a window; ours to the first (the scan-order rule).
    x = np.array([[[[1.0, nan, 2.0, nan]]]])
    yt, it = F.max_pool2d(torch.tensor(x), (1, 4), return_indices=True)
    y, idx = ref.max_pool2d(x, (1, 4), return_indices=True, data_format="NCHW")
    assert np.isnan(yt.item()) and np.isnan(y.item())
    assert (it.item(), idx.item()) == (3, 1)
    # A window wholly in the padding: PyTorch returns an index outside the 2x2 image; ours -1.
    x = np.array([[[[0.0, 1.0], [2.0, 3.0]]]])
    yt, it = F.max_pool2d(torch.tensor(x), 2, 1, 1, dilation=3, return_indices=True)
    y, idx = ref.max_pool2d(x, 2, 1, 1, dilation=3, return_indices=True, data_format="NCHW")
    assert yt.item() == y.item() == -np.inf
    assert it.item() >= 4 and idx.item() == -1
