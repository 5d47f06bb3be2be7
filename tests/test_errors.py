"""Bad arguments: the right exception, a message naming the argument, inputs untouched.

Every case runs against both ops and reference: they share their validation (cyconv._args), and
a difference between them here would be a bug in one of them.  Also: a batch of zero images
gives empty outputs of the right shape from every op.
"""

from __future__ import annotations

import numpy as np
import pytest

from cyconv import keras, ops
from cyconv import reference as ref
from helpers import assert_results_close, check_against_reference, unchanged

IMPLS = pytest.mark.parametrize("impl", [ops, ref], ids=["ops", "reference"])

X = np.zeros((2, 5, 5, 3))            # NHWC, float64
W = np.zeros((3, 3, 3, 4))            # HWIO
B = np.zeros(4)
DY = np.zeros((2, 3, 3, 4))           # conv2d(X, W) output
PY = np.zeros((2, 2, 2, 3))           # max/avg_pool2d(X, 2) output
IDX = np.zeros((2, 2, 2, 3), np.int64)
G = np.zeros((2, 3))                  # global pool output
X32, W32 = X.astype(np.float32), W.astype(np.float32)
XC = np.zeros((2, 3, 5, 5))           # NCHW

CASES = {
    # id: (op, args, kwargs, exception, message pattern)
    # wrong ndim
    "conv x 3-D": ("conv2d", (X[0], W), {}, ValueError, r"x must be 4-D"),
    "conv w 3-D": ("conv2d", (X, W[0]), {}, ValueError, r"w must be 4-D"),
    "conv backward x 5-D": ("conv2d_backward", (DY, X[None], W), {}, ValueError, r"x must be 4-D"),
    "max pool x 3-D": ("max_pool2d", (X[0],), {}, ValueError, r"x must be 4-D"),
    "avg pool x 2-D": ("avg_pool2d", (X[0, 0],), {}, ValueError, r"x must be 4-D"),
    "global max x 3-D": ("global_max_pool2d", (X[0],), {}, ValueError, r"x must be 4-D"),
    "global avg backward x 3-D": ("global_avg_pool2d_backward", (G, X[0]), {}, ValueError,
                                  r"x must be 4-D"),
    # channels and groups
    "channels differ from w": ("conv2d", (X, np.zeros((3, 3, 2, 4))), {}, ValueError,
                               r"x has 3 channels but w expects 2"),
    "channels differ from OIHW w": ("conv2d", (XC, np.zeros((4, 2, 3, 3))),
                                    {"data_format": "NCHW"}, ValueError, r"x has 3 channels"),
    "groups not dividing cin": ("conv2d", (X, np.zeros((3, 3, 1, 4))), {"groups": 2},
                                ValueError, r"groups=2 must divide the input channels"),
    "groups not dividing cout": ("conv2d", (np.zeros((1, 5, 5, 4)), np.zeros((3, 3, 2, 3))),
                                 {"groups": 2}, ValueError, r"groups=2 must divide the output"),
    "groups 0": ("conv2d", (X, W), {"groups": 0}, ValueError, r"groups"),
    "groups float": ("conv2d", (X, W), {"groups": 1.0}, TypeError, r"groups"),
    "groups bool": ("conv2d", (X, W), {"groups": True}, TypeError, r"groups"),
    # non-positive integers, and non-integers where integers are expected
    "stride 0": ("conv2d", (X, W), {"stride": 0}, ValueError, r"stride"),
    "stride (1, -1)": ("conv2d", (X, W), {"stride": (1, -1)}, ValueError, r"stride"),
    "stride 3 values": ("conv2d", (X, W), {"stride": (1, 1, 1)}, ValueError, r"stride"),
    "stride bool": ("conv2d", (X, W), {"stride": True}, TypeError, r"stride"),
    "stride float": ("conv2d", (X, W), {"stride": 1.0}, TypeError, r"stride"),
    "stride str": ("conv2d", (X, W), {"stride": "1"}, TypeError, r"stride"),
    "dilation 0": ("conv2d", (X, W), {"dilation": 0}, ValueError, r"dilation"),
    "dilation float pair": ("conv2d_backward", (DY, X, W), {"dilation": (1, 2.0)}, TypeError,
                            r"dilation"),
    "pool_size 0": ("max_pool2d", (X, 0), {}, ValueError, r"pool_size"),
    "pool_size -2": ("avg_pool2d", (X, -2), {}, ValueError, r"pool_size"),
    "pool_size float": ("max_pool2d", (X, 2.5), {}, TypeError, r"pool_size"),
    "pool_size str": ("avg_pool2d", (X, "2"), {}, TypeError, r"pool_size"),
    "pool_size 3 values": ("max_pool2d", (X, (2, 2, 2)), {}, ValueError, r"pool_size"),
    "pool stride 0": ("max_pool2d", (X, 2, 0), {}, ValueError, r"stride"),
    "pool stride bool": ("avg_pool2d", (X, 2, False), {}, TypeError, r"stride"),
    "pool dilation 0": ("max_pool2d", (X, 2), {"dilation": 0}, ValueError, r"dilation"),
    "padding negative": ("conv2d", (X, W), {"padding": -1}, ValueError, r"padding"),
    "padding float": ("conv2d", (X, W), {"padding": 1.5}, TypeError, r"padding"),
    "padding bool": ("conv2d", (X, W), {"padding": True}, TypeError, r"padding"),
    "padding None": ("conv2d", (X, W), {"padding": None}, TypeError, r"padding"),
    "padding str in pair": ("conv2d", (X, W), {"padding": (1, "1")}, TypeError, r"padding"),
    "padding 3 values": ("conv2d", (X, W), {"padding": (1, 1, 1)}, ValueError, r"padding"),
    "padding 3 per side": ("conv2d", (X, W), {"padding": ((1, 1, 1), (0, 0))}, ValueError,
                           r"padding"),
    # windows that do not fit
    "kernel larger than input": ("conv2d", (np.zeros((1, 2, 2, 1)), np.zeros((3, 3, 1, 1))), {},
                                 ValueError, r"window \(3, 3\).*larger than the padded input"),
    "dilated kernel larger": ("conv2d", (X, W), {"dilation": 3}, ValueError,
                              r"window \(7, 7\).*larger than the padded input \(5, 5\)"),
    "pool window larger": ("max_pool2d", (X, 6), {}, ValueError,
                           r"pool window.*larger than the padded input"),
    "dilated pool window larger": ("max_pool2d", (X, 2), {"dilation": 5}, ValueError,
                                   r"pool window.*larger"),
    "pool padding over half": ("max_pool2d", (X, 2), {"padding": 2}, ValueError,
                               r"padding.*half the pool window"),
    "avg pool padding over half, one side": ("avg_pool2d", (X, 3), {"padding": ((0, 2), (0, 0))},
                                             ValueError, r"padding.*half the pool window"),
    # unknown strings
    "padding 'full'": ("conv2d", (X, W), {"padding": "full"}, ValueError, r"padding.*'full'"),
    "pool padding 'causal'": ("avg_pool2d", (X,), {"padding": "causal"}, ValueError,
                              r"padding.*'causal'"),
    "data_format 'NWHC'": ("conv2d", (X, W), {"data_format": "NWHC"}, ValueError,
                           r"data_format.*'NWHC'"),
    "data_format None": ("max_pool2d", (X,), {"data_format": None}, TypeError, r"data_format"),
    "global data_format 'HWC'": ("global_avg_pool2d", (X,), {"data_format": "HWC"}, ValueError,
                                 r"data_format"),
    "activation 'sigmoid'": ("conv2d", (X, W), {"activation": "sigmoid"}, ValueError,
                             r"activation.*'sigmoid'"),
    "activation callable": ("conv2d", (X, W), {"activation": np.tanh}, ValueError, r"activation"),
    # flags that must be booleans
    "compute_dx str": ("conv2d_backward", (DY, X, W), {"compute_dx": "no"}, TypeError,
                       r"compute_dx"),
    "ceil_mode int": ("max_pool2d", (X,), {"ceil_mode": 1}, TypeError, r"ceil_mode"),
    "return_indices None": ("max_pool2d", (X,), {"return_indices": None}, TypeError,
                            r"return_indices"),
    "count_include_pad str": ("avg_pool2d", (X,), {"count_include_pad": "yes"}, TypeError,
                              r"count_include_pad"),
    # dtypes
    "x int32": ("conv2d", (X.astype(np.int32), W), {}, TypeError, r"x must be float32 or float64"),
    "x int64 pool": ("max_pool2d", (X.astype(np.int64),), {}, TypeError, r"x must be float"),
    "x uint8 global": ("global_max_pool2d", (X.astype(np.uint8),), {}, TypeError, r"x must be"),
    "x bool": ("avg_pool2d", (X.astype(bool),), {}, TypeError, r"x must be float"),
    "x complex": ("conv2d", (X.astype(complex), W), {}, TypeError, r"x must be float.*complex"),
    "x float16": ("max_pool2d", (X.astype(np.float16),), {}, TypeError, r"x must be.*float16"),
    "x longdouble": ("avg_pool2d", (X.astype(np.longdouble),), {}, TypeError, r"x must be"),
    "x object": ("conv2d", (X.astype(object), W), {}, TypeError, r"x must be"),
    "x str": ("global_avg_pool2d", ("abc",), {}, TypeError, r"x must be"),
    "x None": ("max_pool2d", (None,), {}, TypeError, r"x must be an array"),
    "x ragged list": ("conv2d", ([[1.0, 2.0], [3.0]], W), {}, TypeError, r"x must be an array"),
    "w int": ("conv2d", (X, W.astype(np.int16)), {}, TypeError, r"w must be float"),
    "w float32 with x float64": ("conv2d", (X, W32), {}, TypeError,
                                 r"w has dtype float32 but x has dtype float64"),
    "x float32 with w float64, backward": ("conv2d_backward", (DY, X32, W), {}, TypeError,
                                           r"w has dtype float64 but x has dtype float32"),
    "b float32 with x, w float64": ("conv2d", (X, W, B.astype(np.float32)), {}, TypeError,
                                    r"b has dtype float32 but x has dtype float64"),
    "b int": ("conv2d", (X, W, B.astype(int)), {}, TypeError, r"b must be float"),
    # bias shape
    "b too short": ("conv2d", (X, W, np.zeros(3)), {}, ValueError, r"b must have shape \(4,\)"),
    "b 2-D": ("conv2d", (X, W, np.zeros((1, 4))), {}, ValueError, r"b must have shape \(4,\)"),
    "b scalar": ("conv2d", (X, W, np.float64(0.0)), {}, ValueError, r"b must have shape"),
    # gradients
    "conv dy shape": ("conv2d_backward", (DY[:, :2], X, W), {}, ValueError,
                      r"dy must have the output's shape \(2, 3, 3, 4\)"),
    "conv dy dtype": ("conv2d_backward", (DY.astype(np.float32), X, W), {}, TypeError,
                      r"dy has dtype float32 but x has dtype float64"),
    "conv dy int": ("conv2d_backward", (DY.astype(np.int64), X, W), {}, TypeError,
                    r"dy has dtype int64 but x has dtype float64"),
    "max pool dy shape": ("max_pool2d_backward", (PY[:, :1], X), {}, ValueError, r"dy must have"),
    "max pool dy NCHW for NHWC": ("max_pool2d_backward", (PY.transpose(0, 3, 1, 2), X), {},
                                  ValueError, r"dy must have the output's shape"),
    "avg pool dy dtype": ("avg_pool2d_backward", (PY.astype(np.float32), X), {}, TypeError,
                          r"dy has dtype float32"),
    "global dy shape": ("global_max_pool2d_backward", (G[:, :2], X), {}, ValueError,
                        r"dy must have the output's shape \(2, 3\)"),
    "global dy 4-D": ("global_avg_pool2d_backward", (G[:, None, None, :], X), {}, ValueError,
                      r"dy must have"),
    "global dy dtype": ("global_max_pool2d_backward", (G.astype(np.float32), X), {}, TypeError,
                        r"dy has dtype float32"),
    # max-pool indices
    "indices int32": ("max_pool2d_backward", (PY, X), {"indices": IDX.astype(np.int32)},
                      TypeError, r"indices must be int64"),
    "indices float": ("max_pool2d_backward", (PY, X), {"indices": IDX.astype(float)},
                      TypeError, r"indices must be int64"),
    "indices shape": ("max_pool2d_backward", (PY, X), {"indices": IDX[:1]}, ValueError,
                      r"indices must have the output's shape"),
    "indices past the plane": ("max_pool2d_backward", (PY, X), {"indices": IDX + 25}, ValueError,
                               r"indices must lie in \[0, 25\)"),
    "indices below -1": ("max_pool2d_backward", (PY, X), {"indices": IDX - 2}, ValueError,
                         r"indices must lie in"),
    "index_format 'cells'": ("max_pool2d", (X,), {"return_indices": True,
                                                  "index_format": "cells"},
                             ValueError, r"index_format must be 'flat' or 'window'"),
    "index_format None": ("max_pool2d", (X,), {"index_format": None}, TypeError,
                          r"index_format must be"),
    "index_format window 16x16": ("max_pool2d", (np.zeros((1, 16, 16, 1)), 16),
                                  {"index_format": "window"}, ValueError,
                                  r"windows of at most 255 cells: got 16x16"),
    "cell indices for 16x16": ("max_pool2d_backward",
                               (np.zeros((1, 1, 1, 1)), np.zeros((1, 16, 16, 1)), 16),
                               {"indices": np.zeros((1, 1, 1, 1), np.uint8)}, ValueError,
                               r"windows of at most 255 cells"),
    "cell past the window": ("max_pool2d_backward", (PY, X),
                             {"indices": np.full(PY.shape, 4, np.uint8)}, ValueError,
                             r"uint8 indices must each name a real cell of their window"),
    "cell in the padding": ("max_pool2d_backward", (np.zeros((2, 3, 3, 3)), X, 2, 2, 1),
                            {"indices": np.zeros((2, 3, 3, 3), np.uint8)}, ValueError,
                            r"not in the padding"),
    "cell in overlapping windows": ("max_pool2d_backward", (np.zeros((2, 4, 4, 3)), X, 2, 1),
                                    {"indices": np.full((2, 4, 4, 3), 7, np.uint8)},
                                    ValueError, r"uint8 indices must each name a real cell"),
    # the fused ReLU's gradient in conv2d_backward
    "conv relu without y": ("conv2d_backward", (DY, X, W), {"activation": "relu"}, ValueError,
                            r"activation='relu' needs y"),
    "conv y without relu": ("conv2d_backward", (DY, X, W), {"y": DY}, ValueError,
                            r"y is only used with activation='relu'"),
    "conv relu y shape": ("conv2d_backward", (DY, X, W), {"activation": "relu", "y": DY[:1]},
                          ValueError, r"y must have the output's shape"),
    "conv relu y dtype": ("conv2d_backward", (DY, X, W),
                          {"activation": "relu", "y": DY.astype(np.float32)}, TypeError,
                          r"y has dtype float32"),
    "conv backward activation": ("conv2d_backward", (DY, X, W), {"activation": "tanh", "y": DY},
                                 ValueError, r"activation must be None or 'relu'"),
    # relu_backward
    "relu dy shape": ("relu_backward", (PY[:1], PY), {}, ValueError, r"dy must have y's shape"),
    "relu dtypes differ": ("relu_backward", (PY.astype(np.float32), PY), {}, TypeError,
                           r"y has dtype float64 but dy has dtype float32"),
    "relu int y": ("relu_backward", (PY, IDX), {}, TypeError, r"y must be float32 or float64"),
    "relu out shape": ("relu_backward", (PY, PY), {"out": PY[:1].copy()}, ValueError,
                       r"out must be an ndarray of shape"),
    "relu out not contiguous": ("relu_backward", (PY, PY),
                                {"out": np.zeros((2, 2, 2, 6))[..., ::2]}, ValueError,
                                r"out must be C-contiguous"),
    # empty spatial or channel dimensions: the output would be empty
    "x no rows": ("conv2d", (np.zeros((2, 0, 5, 3)), np.zeros((1, 1, 3, 4))), {}, ValueError,
                  r"x must have non-empty spatial and channel dimensions"),
    "x no channels": ("max_pool2d", (np.zeros((2, 5, 5, 0)),), {}, ValueError,
                      r"x must have non-empty"),
    "x no columns, global": ("global_avg_pool2d", (np.zeros((2, 5, 0, 3)),), {}, ValueError,
                             r"x must have non-empty"),
    "w no outputs": ("conv2d", (X, np.zeros((3, 3, 3, 0))), {}, ValueError,
                     r"w must have non-empty dimensions"),
    "w no rows": ("conv2d", (X, np.zeros((0, 3, 3, 4))), {}, ValueError, r"w must have non-empty"),
}


@IMPLS
@pytest.mark.parametrize("case", list(CASES))
def test_bad_argument_raises_naming_it(impl, case):
    op, args, kwargs, exc, match = CASES[case]
    arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
    with unchanged(*arrays), pytest.raises(exc, match=match):
        getattr(impl, op)(*args, **kwargs)


def test_every_op_has_bad_argument_cases():
    tested = {op for op, *_ in CASES.values()}
    assert tested == set(ops.__all__) == set(ref.__all__)


@IMPLS
def test_pool_padding_limit_applies_to_explicit_padding_only(impl):
    # 'same' may pad more than half the window (TensorFlow allows it); explicit padding may not.
    x = np.zeros((1, 1, 9, 1))
    assert impl.max_pool2d(x, (1, 2), 1, "same", dilation=3).shape == (1, 1, 9, 1)
    assert impl.max_pool2d(x, (1, 4), 1, (0, 2)).shape == (1, 1, 10, 1)


@IMPLS
def test_numpy_integers_and_lists_are_accepted_as_integers(impl):
    x = np.random.default_rng(0).standard_normal((1, 7, 7, 2))
    w = np.ones((3, 3, 2, 2))
    want = impl.conv2d(x, w, stride=(2, 1), padding=((1, 1), (0, 0)), dilation=2)
    got = impl.conv2d(x, w, stride=[np.int64(2), 1], padding=[[np.int32(1), 1], [0, 0]],
                      dilation=np.uint8(2), groups=np.int16(1))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(impl.max_pool2d(x, [2, np.int64(3)], np.int8(1)),
                                  impl.max_pool2d(x, (2, 3), 1))


@IMPLS
def test_array_likes_are_accepted(impl):
    y = impl.conv2d([[[[1.0], [2.0]], [[3.0], [4.0]]]], [[[[1.0]]]])
    assert y.dtype == np.float64 and y.ravel().tolist() == [1.0, 2.0, 3.0, 4.0]


# --- a batch of zero images -------------------------------------------------------------------


def empty_batch_calls(fmt, dtype):
    """(op name, args, kwargs, expected output shapes) for every op on a batch of zero images."""
    def img(h, w, c):
        return np.zeros((0, h, w, c) if fmt == "NHWC" else (0, c, h, w), dtype)

    w = np.zeros((3, 3, 3, 4) if fmt == "NHWC" else (4, 3, 3, 3), dtype)
    x = img(6, 5, 3)
    fk = {"data_format": fmt}
    idx = np.zeros(img(3, 2, 3).shape, np.int64)
    return [
        ("conv2d", (x, w, np.zeros(4, dtype)), fk, [img(4, 3, 4).shape]),
        ("conv2d_backward", (img(4, 3, 4), x, w), fk, [x.shape, w.shape, (4,)]),
        ("max_pool2d", (x, 2), dict(fk, return_indices=True), [img(3, 2, 3).shape] * 2),
        ("max_pool2d_backward", (img(3, 2, 3), x, 2), fk, [x.shape]),
        ("max_pool2d_backward", (img(3, 2, 3), x, 2), dict(fk, indices=idx), [x.shape]),
        ("max_pool2d", (x, 2), dict(fk, return_indices=True, index_format="window"),
         [img(3, 2, 3).shape] * 2),
        ("max_pool2d_backward", (img(3, 2, 3), x, 2), dict(fk, indices=idx.astype(np.uint8)),
         [x.shape]),
        ("avg_pool2d", (x, 3, 1, 1), dict(fk, ceil_mode=True), [img(6, 5, 3).shape]),
        ("avg_pool2d_backward", (img(6, 5, 3), x, 3, 1, 1), fk, [x.shape]),
        ("global_max_pool2d", (x,), fk, [(0, 3)]),
        ("global_max_pool2d_backward", (np.zeros((0, 3), dtype), x), fk, [x.shape]),
        ("global_avg_pool2d", (x,), fk, [(0, 3)]),
        ("global_avg_pool2d_backward", (np.zeros((0, 3), dtype), x), fk, [x.shape]),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
def test_zero_images_give_empty_outputs_of_the_right_shape(fmt, dtype):
    for op, args, kwargs, shapes in empty_batch_calls(fmt, dtype):
        want, _ = check_against_reference(op, *args, **kwargs)
        got = want if isinstance(want, tuple) else (want,)
        assert [r.shape for r in got] == shapes, op
        index_dtype = np.uint8 if kwargs.get("index_format") == "window" else np.int64
        want_dtypes = [index_dtype if op == "max_pool2d" and i else dtype
                       for i in range(len(got))]
        assert [r.dtype for r in got] == [np.dtype(d) for d in want_dtypes], op
        if op == "conv2d_backward":
            # Nothing to sum over: the weight and bias gradients are zero, not garbage.
            assert_results_close(got[1:], (np.zeros(shapes[1], dtype), np.zeros(4, dtype)), op)


@IMPLS
def test_remembered_geometry_still_tells_true_from_1(impl):
    # Geometries are cached by argument; True == 1 and hash alike, but True is no stride.
    impl.conv2d(X, W, stride=1)
    impl.max_pool2d(X, 2, ceil_mode=False)
    with unchanged(X, W), pytest.raises(TypeError, match="stride"):
        impl.conv2d(X, W, stride=True)
    with pytest.raises(TypeError, match="pool_size"):
        impl.max_pool2d(X, True)
    with pytest.raises(TypeError, match="ceil_mode"):
        impl.max_pool2d(X, 2, ceil_mode=0)
    # nor inside a pair (the shapes' ints are not looked into: arrays give them)
    impl.conv2d(X, W, stride=(1, 1))
    with pytest.raises(TypeError, match="stride"):
        impl.conv2d(X, W, stride=(1.0, 1))
    with pytest.raises(TypeError, match="stride"):
        impl.conv2d(X, W, stride=(1, True))


def test_a_layer_given_a_float_dimension_leaves_the_geometry_cache_as_it_was():
    # The cache keys do not look into shapes: a float one must raise before it is cached, or
    # a later call with the equal int shape would get its geometry back.
    x = np.ones((1, 6, 6, 1), np.float32)
    with pytest.raises(TypeError, match="integer dimensions"):
        keras.layers.MaxPooling2D((3, 3)).compute_output_shape((None, 6.0, 6, 1))
    assert ops.max_pool2d(x, (3, 3)).shape == (1, 2, 2, 1)
    with pytest.raises(TypeError, match="integer dimensions"):
        keras.layers.Conv2D(2, (5, 5)).compute_output_shape((None, 6.0, 6, 1))
    assert ops.conv2d(x, np.ones((5, 5, 1, 2), np.float32)).shape == (1, 2, 2, 2)
