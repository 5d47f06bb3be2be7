"""cyconv beside NumPy's BLAS threads: a small matmul (a Dense layer's, 32x1600 @ 1600x128)
alternated with the seed model's second convolution (batch 32), each timed on its own, with
both libraries on all cores.  Each setting runs in a fresh interpreter, since the OpenMP and
OpenBLAS runtimes read theirs as they load; the settings take turns, and the table gives the
median of their runs' medians.

    python benchmarks/blas_mix.py [--rounds 3] [--steps 200]

Settings: libgomp's default idle spin (GOMP_SPINCOUNT=300000), cyconv's (what it sets when
the environment does not), and cyconv's with OPENBLAS_THREAD_TIMEOUT=4 (OpenBLAS's threads
sleep at once instead of spinning for about 0.1 s).  'alone' rows time each call without the
other in between.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

SETTINGS = {
    "libgomp's default spin": {"GOMP_SPINCOUNT": "300000"},
    "cyconv's": {},
    "cyconv's, OPENBLAS_THREAD_TIMEOUT=4": {"OPENBLAS_THREAD_TIMEOUT": "4"},
}

ONE_RUN = """
import json, sys, time
import numpy as np
from cyconv import ops
steps = int(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.standard_normal((32, 13, 13, 32)).astype(np.float32)
w = rng.standard_normal((3, 3, 32, 64)).astype(np.float32)
a = rng.standard_normal((32, 1600)).astype(np.float32)
b = rng.standard_normal((1600, 128)).astype(np.float32)

def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t

conv = lambda: ops.conv2d(x, w)
matmul = lambda: a @ b
conv(); matmul()
alone_conv = [timed(conv) for _ in range(steps)]
alone_matmul = [timed(matmul) for _ in range(steps)]
mixed_matmul, mixed_conv = [], []
for _ in range(steps):
    mixed_matmul.append(timed(matmul))
    mixed_conv.append(timed(conv))
print(json.dumps({k: float(np.median(v)) for k, v in [
    ("conv alone", alone_conv), ("matmul alone", alone_matmul),
    ("matmul", mixed_matmul), ("conv", mixed_conv)]}))
"""


def run_once(extra_env, steps):
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    env.update(extra_env)
    done = subprocess.run([sys.executable, "-c", ONE_RUN, str(steps)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"a run with {extra_env or 'no extra settings'} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    runs = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, env in SETTINGS.items():
            runs[name].append(run_once(env, args.steps))
    print(f"{'setting':38s} {'matmul':>9s} {'conv':>9s} {'alone: matmul':>14s} {'conv':>9s}")
    for name, results in runs.items():
        med = {k: 1e3 * float(np.median([r[k] for r in results])) for k in results[0]}
        print(f"{name:38s} {med['matmul']:7.2f}ms {med['conv']:7.2f}ms "
              f"{med['matmul alone']:12.2f}ms {med['conv alone']:7.2f}ms")


if __name__ == "__main__":
    main()
