"""pytest-benchmark suite: every kernel on the shapes our users run, beside the NumPy reference
and, when importable, PyTorch in the same session.

Run:  python -m pytest benchmarks --benchmark-only --benchmark-group-by=param:case,param:direction,param:dtype
Not part of the test run's pass/fail (pytest's testpaths is tests/).  `cyconv bench` prints the
same comparison as a table with GFLOP/s and ratios.
"""

import numpy as np
import pytest

from cyconv import bench, reference

CASES = {c.name: c for c in bench.default_cases()}
# The reference is an oracle, not a contender: time it only where it finishes in seconds.
REFERENCE_CASES = {name for name, c in CASES.items() if c.n * c.h * c.w * max(c.cout, 1) * c.c < 3e8}


def _reference_fns(case, x, w, layout):
    if case.kind == "conv":
        kw = dict(stride=case.stride, padding=case.pad, groups=case.groups, data_format=layout)
        b = np.zeros(case.cout, dtype=x.dtype)
        dy = np.ones_like(reference.conv2d(x, w, b, **kw))
        return (lambda: reference.conv2d(x, w, b, activation="relu", **kw),
                lambda: reference.conv2d_backward(dy, x, w, **kw))
    y, idx = reference.max_pool2d(x, 2, return_indices=True, data_format=layout)
    dy = np.ones_like(y)
    return (lambda: reference.max_pool2d(x, 2, return_indices=True, data_format=layout),
            lambda: reference.max_pool2d_backward(dy, x, 2, indices=idx, data_format=layout))


@pytest.mark.parametrize("impl", ["cyconv", "reference", "torch"])
@pytest.mark.parametrize("direction", ["fwd", "bwd"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_kernel(benchmark, case, dtype, layout, direction, impl, rng):
    c = CASES[case]
    x, w = bench._make_inputs(c, layout, np.dtype(dtype), rng)
    if impl == "cyconv":
        fns = bench._cyconv_fns(c, x, w, layout)
    elif impl == "reference":
        if case not in REFERENCE_CASES:
            pytest.skip(f"reference too slow to time on {case}")
        fns = _reference_fns(c, x, w, layout)
    else:
        torch = pytest.importorskip("torch", reason="PyTorch not installed: no comparison")
        torch.set_num_threads(__import__("cyconv").get_num_threads())
        fns = bench._torch_fns(torch, c, x, w, layout)
    benchmark.group = f"{case} {direction} {layout} {dtype}"
    benchmark.extra_info["gflop"] = c.flops() * (1 if direction == "fwd" else 2) / 1e9
    benchmark(fns[0 if direction == "fwd" else 1])


CONV_POOL_CASES = {  # the seed model's Conv2D + MaxPooling2D pairs: x NHWC, w HWIO
    "seed conv1 + pool1 b32": ((32, 28, 28, 1), (3, 3, 1, 32)),
    "seed conv2 + pool2 b32": ((32, 13, 13, 32), (3, 3, 32, 64)),
    "seed conv1 + pool1 b256": ((256, 28, 28, 1), (3, 3, 1, 32)),
    "seed conv2 + pool2 b256": ((256, 13, 13, 32), (3, 3, 32, 64)),
}


@pytest.mark.parametrize("impl", ["one pass", "two calls", "torch"])
@pytest.mark.parametrize("case", list(CONV_POOL_CASES))
def test_conv_relu_max_pool(benchmark, case, impl, rng):
    # what a Conv2D with a ReLU and the MaxPooling2D after it cost in a training step's forward
    # pass (the pool keeps its window cells; PyTorch its indices)
    from cyconv import ops

    x_shape, w_shape = CONV_POOL_CASES[case]
    x = rng.uniform(-1, 1, x_shape).astype(np.float32)
    w = (rng.uniform(-1, 1, w_shape) / np.sqrt(np.prod(w_shape[:3]))).astype(np.float32)
    b = np.zeros(w_shape[3], np.float32)
    if impl == "one pass":
        fn = lambda: ops._conv2d_relu_max_pool(x, w, b, 2)  # noqa: E731
    elif impl == "two calls":
        def fn():
            z = ops.conv2d(x, w, b, activation="relu")
            return ops._max_pool2d_after_relu(z, 2, None, "valid", "NHWC")
    else:
        torch = pytest.importorskip("torch", reason="PyTorch not installed: no comparison")
        torch.set_num_threads(__import__("cyconv").get_num_threads())
        fmt = torch.channels_last
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(
            memory_format=fmt)
        wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).contiguous(
            memory_format=fmt)
        bt = torch.from_numpy(b)
        F = torch.nn.functional

        def fn():
            with torch.no_grad():
                return F.max_pool2d(torch.relu(F.conv2d(xt, wt, bt)), 2, return_indices=True)
    benchmark.group = f"{case} conv+relu+maxpool"
    benchmark(fn)
