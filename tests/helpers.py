"""Shared test machinery: kernel paths (SIMD level x thread count), tolerances, memory layouts.

Imported by the test modules and by conftest.py (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import contextlib

import numpy as np

import cyconv
from cyconv import _kernels, ops

ALL_ISAS = ("portable", "avx2", "avx512")
# Every level up to the best one the CPU has can be forced (dispatch caps requests at the best).
SUPPORTED_ISAS = ALL_ISAS[: ALL_ISAS.index(_kernels.isa_best()) + 1]
THREAD_COUNTS = (1, 2)
DTYPES = (np.float32, np.float64)
LAYOUTS = ("NHWC", "NCHW")

# Relative tolerance, and an absolute one that is scaled by the largest magnitude in the expected
# result: the kernels sum in another order than the reference, so their error grows with the
# size of the sums, not with the size of each output.
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 2e-4, "atol": 2e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}


def assert_close(got, want, what=""):
    """Compare a kernel result with the reference within the tolerance of its dtype.

    Shapes and dtypes must match exactly; NaN must sit where the reference has NaN and
    infinities must match exactly.
    """
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    tol = TOLERANCES[want.dtype]
    finite = want[np.isfinite(want)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * scale,
                               err_msg=what)


def assert_results_close(got, want, what=""):
    """assert_close over (possibly nested) tuples of arrays and Nones, as the ops return."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), f"{what}: {got!r} vs {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_results_close(g, w, f"{what}[{i}]")
    elif want is None:
        assert got is None, f"{what}: expected None"
    elif np.issubdtype(np.asarray(want).dtype, np.integer):
        np.testing.assert_array_equal(got, want, err_msg=what)
        assert np.asarray(got).dtype == np.asarray(want).dtype, what
    else:
        assert_close(got, want, what)


def assert_bitwise_equal(a, b, what=""):
    """The same bits (so -0.0 != 0.0 and NaN payloads count), over tuples of arrays and Nones."""
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{what}[{i}]")
    elif a is None:
        assert b is None, what
    else:
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape} vs {b.shape}"
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), (
            f"{what}: results differ, max |diff| {np.nanmax(np.abs(a - b)) if a.size else 0}")


@contextlib.contextmanager
def kernel_path(isa, threads):
    """Run the block with one SIMD level and thread count, restoring the previous ones after."""
    previous_isa = _kernels.isa_get()
    # ops keeps small problems on one thread; without lowering that threshold the small shapes
    # hypothesis draws would never run threaded.
    assert hasattr(ops, "_WORK_PER_THREAD"), "ops' threading threshold moved: update helpers.py"
    previous_work = ops._WORK_PER_THREAD
    try:
        assert _kernels.isa_set(isa) == isa, f"could not select {isa}"
        cyconv.set_num_threads(threads)
        ops._WORK_PER_THREAD = 1
        yield
    finally:
        ops._WORK_PER_THREAD = previous_work
        cyconv.set_num_threads(None)
        _kernels.isa_set(previous_isa)


def on_every_path(call):
    """Run ``call()`` under every supported SIMD level with 1 and 2 threads.

    The thread count must not change a single bit of the result.  Returns {isa: result}.
    """
    results = {}
    for isa in SUPPORTED_ISAS:
        per_threads = []
        for threads in THREAD_COUNTS:
            with kernel_path(isa, threads):
                per_threads.append(call())
        for other, threads in zip(per_threads[1:], THREAD_COUNTS[1:]):
            assert_bitwise_equal(per_threads[0], other, f"{isa}: 1 vs {threads} threads")
        results[isa] = per_threads[0]
    return results


def check_against_reference(name, *args, **kwargs):
    """ops.<name> on every kernel path against reference.<name>; inputs must stay unchanged."""
    arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
    with unchanged(*arrays):
        want = getattr(cyconv.reference, name)(*args, **kwargs)
        got = on_every_path(lambda: getattr(ops, name)(*args, **kwargs))
    assert_fresh_outputs(want, arrays, f"reference.{name}")
    for isa, result in got.items():
        assert_results_close(result, want, f"ops.{name} [{isa}]")
        assert_fresh_outputs(result, arrays, f"ops.{name} [{isa}]")
    return want, got


def assert_fresh_outputs(results, inputs, what):
    """Outputs are new, writeable, C-contiguous arrays: a caller may modify them in place
    without touching its inputs."""
    for i, r in enumerate(results if isinstance(results, tuple) else (results,)):
        if r is None:
            continue
        assert r.flags.writeable and r.flags.c_contiguous, f"{what}[{i}]: {r.flags}"
        assert not any(np.shares_memory(r, a) for a in inputs), f"{what}[{i}] aliases an input"


@contextlib.contextmanager
def unchanged(*arrays):
    """Fail if the block modifies any of the arrays (also when the block raises)."""
    before = [(a.copy(), a.flags.writeable) for a in arrays]
    try:
        yield
    finally:
        for i, (a, (copy, writeable)) in enumerate(zip(arrays, before)):
            np.testing.assert_array_equal(a, copy, err_msg=f"input {i} was modified")
            assert a.flags.writeable == writeable, f"input {i}'s writeable flag changed"


MEMORY_LAYOUTS = ("contiguous", "sliced", "fortran", "reversed")


def in_memory_layout(a, layout, readonly=False):
    """An array equal to ``a`` stored another way: a strided slice of a bigger buffer, Fortran
    order (a transposed view of a C array), or negative strides; optionally read-only."""
    if layout == "contiguous":
        out = np.array(a, copy=True)
    elif layout == "sliced":
        big = np.full(a.shape[:-1] + (2 * a.shape[-1],), 7.0, dtype=a.dtype)
        big[..., ::2] = a
        out = big[..., ::2]
    elif layout == "fortran":
        out = np.asfortranarray(a)
    elif layout == "reversed":
        flip = (slice(None, None, -1),) * a.ndim
        out = np.ascontiguousarray(a[flip])[flip]
    else:
        raise ValueError(layout)
    if readonly:
        out.setflags(write=False)
    return out


def random_array(rng, shape, dtype, kind="uniform"):
    """Values for kernel tests: uniform in [-1, 1), or small integers (many exact ties)."""
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    if kind == "ties":
        return rng.integers(-2, 3, size=shape).astype(dtype)
    raise ValueError(kind)


def sprinkle(rng, a, value, fraction=0.1):
    """A copy of ``a`` with about ``fraction`` of its cells set to ``value`` (NaN, -inf...)."""
    out = a.copy()
    out[rng.random(a.shape) < fraction] = value
    return out


def to_layout(a_nhwc, fmt):
    """NHWC data to the given layout, C-contiguous."""
    return np.ascontiguousarray(a_nhwc.transpose(0, 3, 1, 2)) if fmt == "NCHW" else a_nhwc


def weights_to_layout(w_hwio, fmt):
    """HWIO weights to the layout that pairs with ``fmt`` (OIHW for NCHW), C-contiguous."""
    return np.ascontiguousarray(w_hwio.transpose(3, 2, 0, 1)) if fmt == "NCHW" else w_hwio
