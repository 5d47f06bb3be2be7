"""The benchmark runner behind ``cyconv bench``.

Times every kernel on the layer shapes our users run (the seed model's three convolutions and
pools at batch 32 and 256, ResNet-style 3x3 layers over 56x56x64 and 7x7x512, an ImageNet-style
first layer, a MobileNet-style pointwise layer and depthwise layer),
forward and backward, beside a GEMM peak measured in the same run and, when importable, PyTorch
(channels_last for NHWC, contiguous for NCHW) on the same data.  The machine is shared and
noisy: each figure is a median, and the ratio to PyTorch is the median of per-pair ratios of
runs that alternate between the two libraries, printed with their first and third quartiles
(column IQR; `ratio_quartiles` in the JSON, whiskers in the plot), so that a ratio near 1 shows
whether the noise spans it.  Each timed run follows an untimed run of the
same library's call, as in a training loop, where a layer's call follows its own previous
one: so neither library is timed starting from the caches that the other one's call left
(``warmup=0``, `cyconv bench --interleaved`, times single calls straight after each other
instead; `--warmup K` puts K untimed calls before each timed one, for arrays so large that one
call does not bring back what the other library's calls pushed out of the caches).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from . import _config, ops


@dataclass
class Case:
    """One layer to time: a convolution (cout > 0) or a 2x2 max pool (cout == 0)."""

    name: str
    n: int
    h: int
    w: int
    c: int
    cout: int = 0
    k: int = 3
    stride: int = 1
    pad: int = 0
    groups: int = 1

    @property
    def kind(self):
        return "conv" if self.cout else "maxpool"

    def out_hw(self):
        if self.kind == "maxpool":
            return self.h // 2, self.w // 2
        oh = (self.h + 2 * self.pad - self.k) // self.stride + 1
        ow = (self.w + 2 * self.pad - self.k) // self.stride + 1
        return oh, ow

    def flops(self):
        """Floating-point operations of the forward pass (2 per multiply-add)."""
        oh, ow = self.out_hw()
        if self.kind == "maxpool":
            return self.n * oh * ow * self.c * 4
        return 2 * self.n * oh * ow * self.cout * self.k * self.k * (self.c // self.groups)


def default_cases():
    cases = []
    for n in (32, 256):
        cases += [
            Case(f"seed conv1 b{n}", n, 28, 28, 1, 32),
            Case(f"seed pool1 b{n}", n, 26, 26, 32),
            Case(f"seed conv2 b{n}", n, 13, 13, 32, 64),
            Case(f"seed pool2 b{n}", n, 11, 11, 64),
            Case(f"seed conv3 b{n}", n, 5, 5, 64, 64),
        ]
    cases += [
        Case("resnet 56x56x64 b8", 8, 56, 56, 64, 64, 3, 1, 1),
        # a ResNet's last stage: 3x3 over 7x7 with 512 channels, where most of its weights are
        Case("resnet 7x7x512 b8", 8, 7, 7, 512, 512, 3, 1, 1),
        Case("imagenet 7x7s2 b4", 4, 224, 224, 3, 64, 7, 2, 3),
        # MobileNet's pointwise (1x1) layers, a matrix product over pixels
        Case("pointwise 14x14x256 b8", 8, 14, 14, 256, 512, 1, 1, 0),
        Case("mobilenet dw 56x56x64 b8", 8, 56, 56, 64, 64, 3, 1, 1, groups=64),
    ]
    return cases


@dataclass
class Result:
    case: str
    direction: str
    layout: str
    dtype: str
    threads: int
    seconds: float
    gflops: float
    peak_percent: float | None
    torch_seconds: float | None = None
    ratio_vs_torch: float | None = None
    speedup_vs_1_thread: float | None = None
    # the first and third quartiles of the paired ratios whose median is ratio_vs_torch
    ratio_quartiles: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)


def _time_once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _repeats_for(fn, budget):
    """How many runs fit in `budget` seconds (at least 5)."""
    t = _time_once(fn)
    return int(max(5, min(200, budget / max(t, 1e-6))))


def time_median(fn, budget=0.5):
    fn()
    n = _repeats_for(fn, budget)
    return float(np.median([_time_once(fn) for _ in range(n)]))


def _time_after(fn, warmup):
    """One run timed after `warmup` untimed ones: the time of a call that follows calls of its
    own kind, as in a stream of them, rather than whatever the previous call left behind."""
    for _ in range(warmup):
        fn()
    return _time_once(fn)


class Pairs(NamedTuple):
    """time_pairs' figures: the median seconds of a and of b, the median of the paired ratios
    a/b, and that ratio's first and third quartiles (how far the machine's noise moves it)."""

    a: float
    b: float
    ratio: float
    ratio_quartiles: tuple[float, float]


def time_pairs(fa, fb, budget=1.0, warmup=0):
    """Median time of each, and the median ratio a/b with its quartiles, over runs alternating
    a and b (a Pairs).

    warmup: untimed runs of its own before each timed run (see _time_after).  For comparing
    one function on two thread counts: a call straight after one on the other count starts with
    the caches, and the idle thread, as that call left them."""
    fa()
    fb()

    def once(fn):
        return _time_after(fn, warmup)

    n = _repeats_for(lambda: (once(fa), once(fb)), budget)
    ta, tb = [], []
    for _ in range(n):
        ta.append(once(fa))
        tb.append(once(fb))
    ta, tb = np.array(ta), np.array(tb)
    q1, q2, q3 = np.percentile(ta / tb, [25, 50, 75])
    return Pairs(float(np.median(ta)), float(np.median(tb)), float(q2), (float(q1), float(q3)))


def time_best(fn, budget=0.5):
    fn()
    n = _repeats_for(fn, budget)
    return float(min(_time_once(fn) for _ in range(n)))


def _square_matrices(size, dtype):
    """The two operands of the GEMM figures: the same random values on every run."""
    rng = np.random.default_rng(0)
    return rng.random((size, size)).astype(dtype), rng.random((size, size)).astype(dtype)


def gemm_peak(threads, dtype=np.float32, size=1536, budget=1.0):
    """GFLOP/s of numpy's matmul (its BLAS) on square matrices with the same thread count: the
    best run, since a peak is what the machine can do, and the machine is noisy."""
    a, b = _square_matrices(size, dtype)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without it, numpy's BLAS uses its own default thread count
        t = time_best(lambda: a @ b, budget)
    else:
        with threadpool_limits(threads, user_api="blas"):
            t = time_best(lambda: a @ b, budget)
    return 2 * size**3 / t / 1e9


def gemm_scaling(threads, dtype=np.float32, size=1536, budget=1.0):
    """How much faster numpy's matmul (its BLAS) runs on `threads` threads than on one: the
    median of paired ratios, alternating, each timed run after an untimed one on the same count,
    as --scaling times the kernels.  A compute-bound product that scales by this much shows what
    the machine's cores give at this moment (a shared machine's second core comes and goes):
    the ceiling to read the kernels' x1thr against.  None without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    a, b = _square_matrices(size, dtype)

    def on(n):
        def product():
            with threadpool_limits(n, user_api="blas"):
                a @ b
        return product

    return 1 / time_pairs(on(threads), on(1), budget, warmup=1).ratio


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _make_inputs(case, layout, dtype, rng):
    x = rng.standard_normal((case.n, case.h, case.w, case.c)).astype(dtype)
    w = None
    if case.kind == "conv":
        w = (rng.standard_normal((case.k, case.k, case.c // case.groups, case.cout))
             * 0.1).astype(dtype)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if w is not None:
            w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    return x, w


def _cyconv_fns(case, x, w, layout):
    if case.kind == "conv":
        kw = dict(stride=case.stride, padding=case.pad, groups=case.groups, data_format=layout)
        b = np.zeros(case.cout, dtype=x.dtype)
        y = ops.conv2d(x, w, b, **kw)
        dy = np.ones_like(y)
        fwd = lambda: ops.conv2d(x, w, b, activation="relu", **kw)  # noqa: E731
        bwd = lambda: ops.conv2d_backward(dy, x, w, **kw)  # noqa: E731
        return fwd, bwd
    # what the MaxPooling2D layer runs in training: indices as cells of their windows (uint8)
    kw = dict(return_indices=True, index_format="window", data_format=layout)
    dy = np.ones_like(ops.max_pool2d(x, 2, data_format=layout))

    def fwd():
        return ops.max_pool2d(x, 2, **kw)

    def bwd():
        _, cells = ops.max_pool2d(x, 2, **kw)
        return ops.max_pool2d_backward(dy, x, 2, indices=cells, data_format=layout)

    return fwd, bwd


def _torch_fns(torch, case, x, w, layout):
    """The same computation in PyTorch: forward, and backward giving dx, dw, db (for pools,
    forward + backward, as cyconv's 'bwd' for pools includes its forward)."""
    fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
    xt = torch.from_numpy(x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    xt = xt.contiguous(memory_format=fmt).requires_grad_(True)
    if case.kind == "conv":
        wt = torch.from_numpy(w if layout == "NCHW" else np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        wt = wt.contiguous(memory_format=fmt).requires_grad_(True)
        bt = torch.zeros(case.cout, dtype=wt.dtype, requires_grad=True)
        F = torch.nn.functional

        def fwd():
            with torch.no_grad():
                return torch.relu(F.conv2d(xt, wt, bt, stride=case.stride, padding=case.pad,
                                           groups=case.groups))

        y = F.conv2d(xt, wt, bt, stride=case.stride, padding=case.pad, groups=case.groups)
        dy = torch.ones_like(y)

        def bwd():
            return torch.ops.aten.convolution_backward(
                dy, xt, wt, [case.cout], [case.stride] * 2, [case.pad] * 2, [1, 1], False,
                [0, 0], case.groups, [True, True, True])

        return fwd, bwd
    F = torch.nn.functional

    def fwd():
        with torch.no_grad():
            return F.max_pool2d(xt, 2, return_indices=True)

    def bwd():
        xt.grad = None
        y = F.max_pool2d(xt, 2)
        y.backward(torch.ones_like(y))

    return fwd, bwd


def _on_threads(fn, n):
    def run():
        _config.set_num_threads(n)
        return fn()
    return run


def run(cases=None, *, threads=None, layouts=("NHWC",), dtypes=("float32",), directions=("fwd", "bwd"),
        budget=0.6, with_torch=True, scaling=False, warmup=1, log=None):
    """Time each case; returns a list of Result.  `log` gets one line per result as it comes.

    warmup: untimed calls of the same library's before each timed one; 0 times single calls of
    the two libraries straight after each other (see the module docstring).

    With scaling, each kernel also runs on one thread, alternating with the full thread count,
    each timed run after an untimed one on the same count (a stream's throughput), and the
    result records the speedup (the median of the paired ratios)."""
    cases = default_cases() if cases is None else cases
    threads = threads or _config.get_num_threads()
    old_threads = _config._user_threads
    _config.set_num_threads(threads)
    torch = _torch() if with_torch else None
    if torch is not None:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    results = []
    try:
        peaks = {dt: gemm_peak(threads, np.dtype(dt)) for dt in dtypes}
        for dt in dtypes:
            for layout in layouts:
                for case in cases:
                    x, w = _make_inputs(case, layout, np.dtype(dt), rng)
                    mine = _cyconv_fns(case, x, w, layout)
                    theirs = _torch_fns(torch, case, x, w, layout) if torch is not None else None
                    for d, direction in enumerate(("fwd", "bwd")):
                        if direction not in directions:
                            continue
                        # backward = dx and dw, each as much work as the forward pass
                        flops = case.flops() * (1 if direction == "fwd" else 2)
                        if theirs is not None:
                            t, tt, ratio, quartiles = time_pairs(mine[d], theirs[d], budget,
                                                                 warmup)
                        else:
                            t, tt, ratio, quartiles = time_median(mine[d], budget), None, None, None
                        gf = flops / t / 1e9
                        peak = 100 * gf / peaks[dt] if case.kind == "conv" else None
                        speedup = None
                        if scaling and threads > 1:
                            inverse = time_pairs(_on_threads(mine[d], threads),
                                                 _on_threads(mine[d], 1), budget,
                                                 warmup=1).ratio
                            speedup = 1 / inverse
                            _config.set_num_threads(threads)
                        r = Result(case.name, direction, layout, dt, threads, t, gf, peak, tt, ratio,
                                   speedup, quartiles)
                        results.append(r)
                        if log:
                            log(format_row(r))
    finally:
        _config.set_num_threads(old_threads)
    return results, peaks


HEADER = (f"{'layer':<22} {'dir':<4} {'layout':<6} {'dtype':<8} {'time':>10} {'GFLOP/s':>8} "
          f"{'%peak':>6} {'torch':>10} {'ratio':>6} {'IQR':>9} {'x1thr':>6}")


def _fmt_time(t):
    if t is None:
        return "-"
    return f"{t * 1e3:.3f} ms" if t >= 1e-3 else f"{t * 1e6:.0f} us"


def format_row(r):
    peak = f"{r.peak_percent:.0f}" if r.peak_percent is not None else "-"
    ratio = f"{r.ratio_vs_torch:.2f}" if r.ratio_vs_torch is not None else "-"
    iqr = "-" if r.ratio_quartiles is None else "{:.2f}-{:.2f}".format(*r.ratio_quartiles)
    speedup = f"{r.speedup_vs_1_thread:.2f}" if r.speedup_vs_1_thread is not None else "-"
    return (f"{r.case:<22} {r.direction:<4} {r.layout:<6} {r.dtype:<8} {_fmt_time(r.seconds):>10} "
            f"{r.gflops:>8.1f} {peak:>6} {_fmt_time(r.torch_seconds):>10} {ratio:>6} {iqr:>9} "
            f"{speedup:>6}")


def save_json(path, results, peaks, timing="steady", warmup=1, gemm_scaling=None):
    """timing: how the pairs with PyTorch were timed ('steady' or 'interleaved'; None: none);
    warmup: the untimed calls before each timed one; gemm_scaling: see gemm_scaling (None:
    not measured)."""
    payload = {
        "config": _config.config(),
        "timing": timing,
        "warmup": warmup if timing else None,
        "gemm_peak_gflops": peaks,
        "gemm_speedup_vs_1_thread": gemm_scaling,
        "results": [asdict(r) for r in results],
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def plot_ratios(path, results):
    """Bar chart of time(cyconv) / time(PyTorch) per layer: below 1 means cyconv is faster."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib (or cyconv[plot])") from None
    rows = [r for r in results if r.ratio_vs_torch is not None]
    if not rows:
        raise RuntimeError("--plot needs PyTorch in the same run to have ratios to plot")
    labels = [f"{r.case} {r.direction} {r.layout} {r.dtype}" for r in rows]
    ratios = [r.ratio_vs_torch for r in rows]
    # whiskers from the first to the third quartile of the paired ratios (none where a result
    # came without them)
    quartiles = [r.ratio_quartiles or (r.ratio_vs_torch, r.ratio_vs_torch) for r in rows]
    spread = [[v - q[0] for v, q in zip(ratios, quartiles)],
              [q[1] - v for v, q in zip(ratios, quartiles)]]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5))
    colors = ["tab:green" if v <= 1 else "tab:red" for v in ratios]
    ax.barh(range(len(rows)), ratios, color=colors, xerr=spread, ecolor="black", capsize=2)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time(cyconv) / time(PyTorch)   (< 1: cyconv faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _warmup(args):
    """Untimed calls before each timed one, from --interleaved (0) or --warmup."""
    if args.interleaved:
        return 0
    if args.warmup < 1:
        raise ValueError(f"--warmup must be at least 1 (--interleaved times with none), got "
                         f"{args.warmup}")
    return args.warmup


def main(args, out=sys.stdout):
    """Entry point of `cyconv bench` (args from cli.py's argparse)."""
    warmup = _warmup(args)
    cases = default_cases()
    if args.only:
        cases = [c for c in cases if any(s in c.name for s in args.only)]
        if not cases:
            raise ValueError(f"--only {args.only} matches no benchmark; names: "
                             + ", ".join(c.name for c in default_cases()))
    print(HEADER, file=out)
    results, peaks = run(cases, threads=args.threads, layouts=tuple(args.layout),
                         dtypes=tuple(args.dtype), budget=args.budget,
                         with_torch=not args.no_torch, scaling=args.scaling,
                         warmup=warmup,
                         log=lambda s: print(s, file=out, flush=True))
    for dt, p in peaks.items():
        print(f"GEMM peak ({dt}, numpy matmul, same threads): {p:.0f} GFLOP/s", file=out)
    threads = args.threads or _config.get_num_threads()
    scaling = gemm_scaling(threads, budget=2 * args.budget) if args.scaling and threads > 1 \
        else None
    if scaling is not None:
        print(f"GEMM on {threads} threads against 1 (numpy matmul, alternating): {scaling:.2f}x, "
              f"what this machine's cores gave a compute-bound product in this run", file=out)
    print("GFLOP/s counts a direct convolution's multiply-adds; 3x3 layers with unit stride run "
          "by Winograd, with fewer, and may pass 100% of the peak", file=out)
    if args.json:
        compared = any(r.torch_seconds is not None for r in results)
        save_json(args.json, results, peaks,
                  ("interleaved" if args.interleaved else "steady") if compared else None, warmup,
                  scaling)
    if args.plot:
        plot_ratios(args.plot, results)
    return results


def add_arguments(parser):
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all usable)")
    parser.add_argument("--layout", nargs="+", choices=["NHWC", "NCHW"], default=["NHWC"])
    parser.add_argument("--dtype", nargs="+", choices=["float32", "float64"], default=["float32"])
    parser.add_argument("--only", nargs="+", metavar="TEXT",
                        help="only layers whose name contains TEXT (e.g. 'conv2', 'b256')")
    parser.add_argument("--budget", type=float, default=0.6,
                        help="seconds of timing per measurement (default 0.6)")
    parser.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    parser.add_argument("--scaling", action="store_true",
                        help="also time each kernel on 1 thread, alternating, and print the "
                             "speedup of the full thread count (column x1thr)")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--interleaved", action="store_true",
                        help="time single calls of cyconv and PyTorch straight after each other "
                             "(default: each timed call after an untimed one of its own)")
    timing.add_argument("--warmup", type=int, default=1, metavar="K",
                        help="untimed calls of the same library's before each timed one "
                             "(default 1)")
    parser.add_argument("--json", metavar="FILE", help="write all figures as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart of the ratios to PyTorch")
