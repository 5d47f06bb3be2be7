"""How much a second thread can speed up a pass bound by memory on this machine, beside what it
does for cyconv's max-pool forward over the same bytes.

    python benchmarks/memory_scaling.py [--rounds 25] [--batch 256]

For the seed's two pools it times, alternating one thread and two (each timed call after an
untimed one on the same count), a plain C loop that reads each 4 values and writes their max
(the pool's bytes without its windows or records), a plain copy, and ``ops.max_pool2d`` with
window cells; it prints the median of the paired speedups with its quartiles.  The C loops are
built here with the system's C compiler (``cc``, OpenMP).  Where the loops themselves gain
little from a second thread, so does any pass over the same bytes: the limit is the memory's.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import tempfile
import time

import numpy as np

C_SOURCE = r"""
#include <stddef.h>
void max4(float *restrict y, const float *restrict x, ptrdiff_t n, int threads)
{
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (ptrdiff_t i = 0; i < n / 4; i++) {
        float a = x[4 * i] > x[4 * i + 1] ? x[4 * i] : x[4 * i + 1];
        float b = x[4 * i + 2] > x[4 * i + 3] ? x[4 * i + 2] : x[4 * i + 3];
        y[i] = a > b ? a : b;
    }
}
void copy(float *restrict y, const float *restrict x, ptrdiff_t n, int threads)
{
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i];
}
"""


def build(folder):
    src, lib = os.path.join(folder, "loops.c"), os.path.join(folder, "loops.so")
    with open(src, "w") as f:
        f.write(C_SOURCE)
    subprocess.run(["cc", "-O3", "-fopenmp", "-shared", "-fPIC", src, "-o", lib], check=True)
    loops = ctypes.CDLL(lib)
    for fn in (loops.max4, loops.copy):
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
    return loops


def paired_speedups(run, rounds):
    """run(threads) timed on 1 and 2 threads, alternating which goes first."""
    ratios, times = [], {1: [], 2: []}
    for r in range(rounds):
        t = {}
        for threads in ((1, 2) if r % 2 else (2, 1)):
            run(threads)
            t0 = time.perf_counter()
            run(threads)
            t[threads] = time.perf_counter() - t0
            times[threads].append(t[threads])
        ratios.append(t[1] / t[2])
    return ratios, {k: float(np.median(v)) for k, v in times.items()}


def runs_for(loops, x):
    """The three passes over x, each a function of the thread count."""
    import cyconv
    from cyconv import ops

    y4, y1 = np.empty(x.size // 4, np.float32), np.empty_like(x)

    def pool(threads):
        cyconv.set_num_threads(threads)
        ops.max_pool2d(x, 2, return_indices=True, index_format="window")

    return {"C loop, max of 4": lambda t: loops.max4(y4.ctypes.data, x.ctypes.data, x.size, t),
            "C loop, copy": lambda t: loops.copy(y1.ctypes.data, x.ctypes.data, x.size, t),
            "cyconv max_pool2d": pool}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    import cyconv

    with tempfile.TemporaryDirectory() as folder:
        loops = build(folder)
        rng = np.random.default_rng(0)
        for name, shape in (("pool1", (26, 26, 32)), ("pool2", (11, 11, 64))):
            x = rng.standard_normal((args.batch, *shape)).astype(np.float32)
            print(f"{name} batch {args.batch} ({x.nbytes / 2**20:.1f} MB read)")
            for label, run in runs_for(loops, x).items():
                ratios, med = paired_speedups(run, args.rounds)
                q1, q2, q3 = np.percentile(ratios, [25, 50, 75])
                print(f"  {label:20s} 2 threads {q2:.2f}x [{q1:.2f}-{q3:.2f}]   "
                      f"1 thread {med[1] * 1e6:7.0f} us, 2 threads {med[2] * 1e6:7.0f} us")
        cyconv.set_num_threads(None)


if __name__ == "__main__":
    main()
