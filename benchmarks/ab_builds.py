"""Two builds of cyconv timed against each other in one process, alternating call by call.

    python benchmarks/ab_builds.py OLD_SRC NEW_SRC [--cases benchmarks/ab_cases.py]
                                   [--rounds 16] [--budget 0.2] [--only TEXT ...]

OLD_SRC and NEW_SRC are the `src` folders of two checkouts, each built in place (`python
setup.py build_ext --inplace`), for example the commit before a change:

    git worktree add /tmp/old HEAD~1 && (cd /tmp/old && python setup.py build_ext --inplace)
    python benchmarks/ab_builds.py /tmp/old/src src

Both builds are imported into this process (the package is loaded twice under its own name, so
each keeps its own extension module and C state), and each round times every case on one build
and then on the other, in alternating order, as the median of the calls within --budget seconds.
The ratio reported is the median over rounds of new/old, with its quartiles.  On a shared,
noisy machine, separate processes drift apart by 10-40% from one minute to the next; within one
process the quartiles of a change that cannot matter stay within about 2% (a case on one thread
when the change is in the threaded schedule).

A cases file defines ``make(ops, cyconv)``, which returns {name: function of no arguments}; it
is called once per build with that build's modules, just after loading it, so that what it
imports from cyconv (``cyconv.keras``, ``cyconv.cli``) comes from that build too.  An import
that cyconv's own code makes only when a function runs resolves to the build loaded last:
import such modules in ``make``.  The file is run once: make the input arrays at its top level,
so that both builds read the same memory (arrays made in ``make``, one set per build, differ in
where they lie, and that alone moved a case by up to 1.4x).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def load(src):
    """Import the cyconv package found in `src`, as a fresh copy beside any loaded before."""
    for name in [m for m in sys.modules if m == "cyconv" or m.startswith("cyconv.")]:
        del sys.modules[name]
    sys.path.insert(0, os.path.abspath(src))
    try:
        import cyconv
        import cyconv.ops
    finally:
        sys.path.pop(0)
    return cyconv


def median_time(fn, budget):
    """Median seconds per call of fn within `budget` seconds (at least 3), after 2 untimed."""
    fn()
    fn()
    times = []
    end = time.perf_counter() + budget
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def compare(cases, rounds, budget, log=print):
    """{name: (old seconds, new seconds, median new/old, (25th, 75th percentile of new/old))}"""
    times = {name: ([], []) for name in cases["old"]}
    for r in range(rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for name in times:
            for side in order:
                times[name][side == "new"].append(median_time(cases[side][name], budget))
    out = {}
    for name, (old, new) in times.items():
        ratio = np.array(new) / np.array(old)
        out[name] = (float(np.median(old)), float(np.median(new)), float(np.median(ratio)),
                     (float(np.percentile(ratio, 25)), float(np.percentile(ratio, 75))))
        log(f"{name:34s} old {out[name][0] * 1e6:10.1f} us  new {out[name][1] * 1e6:10.1f} us  "
            f"new/old {out[name][2]:.3f} [{out[name][3][0]:.2f}-{out[name][3][1]:.2f}]")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the src folder of the baseline build")
    parser.add_argument("new", help="the src folder of the build to compare")
    parser.add_argument("--cases", default=os.path.join(os.path.dirname(__file__), "ab_cases.py"))
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per case and round")
    parser.add_argument("--only", nargs="+", metavar="TEXT",
                        help="only cases whose name contains TEXT")
    args = parser.parse_args(argv)
    if os.path.realpath(args.old) == os.path.realpath(args.new):
        parser.error("old and new are the same folder")
    spec = {}
    with open(args.cases) as f:
        exec(compile(f.read(), args.cases, "exec"), spec)
    modules, cases = {}, {}
    for side in ("old", "new"):
        # the cases are made while the build is the one `import cyconv...` finds
        modules[side] = load(getattr(args, side))
        cases[side] = spec["make"](modules[side].ops, modules[side])
    if modules["old"]._kernels is modules["new"]._kernels:
        sys.exit("both folders gave the same extension module")
    if args.only:
        cases = {side: {k: f for k, f in c.items() if any(t in k for t in args.only)}
                 for side, c in cases.items()}
    for side, m in modules.items():
        print(f"{side}: {os.path.dirname(m.__file__)}  ({m._kernels.isa_get()}, "
              f"{m.get_num_threads()} threads)")
    compare(cases, args.rounds, args.budget)


if __name__ == "__main__":
    main()
