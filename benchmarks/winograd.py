"""Winograd against the direct kernels on 3x3 layers: the forward pass, the input gradient and
the weight gradient, each alternating between the two paths in one process (medians of the
per-pair ratios; the machine is noisy).

    python benchmarks/winograd.py [--repeat 20]

A ratio below 1 means Winograd is faster.  A pass the route gives to the direct kernels either
way says so (`direct`).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

LAYERS = {
    # name: (x NHWC shape, output channels, padding)
    "resnet 56x56x64 b8": ((8, 56, 56, 64), 64, "same"),
    "28x28x128 b8": ((8, 28, 28, 128), 128, "same"),
    "seed conv2 b256": ((256, 13, 13, 32), 64, "valid"),
    "seed conv2 b32": ((32, 13, 13, 32), 64, "valid"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    import cyconv
    from cyconv import _args, _kernels, ops

    # Winograd as CYCONV_WINOGRAD has it (2: F(2x2) tiles only), against the direct kernels
    on_setting = _kernels.winograd_setting() or 1
    rng = np.random.default_rng(0)
    print(f"{'layer':22s} {'forward':>10s} {'input grad':>10s} {'weight grad':>11s}")
    for name, (shape, cout, padding) in LAYERS.items():
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((3, 3, shape[3], cout)).astype(np.float32)
        g = _args.conv_geometry(x.shape, w.shape, 1, padding, 1, 1, "NHWC")
        dy = rng.standard_normal(ops.conv2d(x, w, padding=padding).shape).astype(np.float32)
        dx = np.empty_like(x)
        passes = {
            "forward": (_kernels.conv2d_forward_route(g, x.dtype),
                        lambda: ops.conv2d(x, w, padding=padding)),
            "input grad": (_kernels.conv2d_backward_data_route(g, x.dtype),
                           lambda: _kernels.conv2d_backward_data(dy, w, g, dx,
                                                                 cyconv.get_num_threads())),
            "weight grad": (_kernels.conv2d_backward_filter_route(g, x.dtype),
                            lambda: ops.conv2d_backward(dy, x, w, padding=padding,
                                                        compute_dx=False)),
        }
        row = []
        for route, fn in passes.values():
            if route != "winograd":
                row.append("direct")
                continue
            ratios = []
            for _ in range(args.repeat):
                t = {}
                for on in (True, False):
                    _kernels.winograd_set(on_setting if on else 0)
                    fn()
                    t0 = time.perf_counter()
                    fn()
                    t[on] = time.perf_counter() - t0
                ratios.append(t[True] / t[False])
            _kernels.winograd_set(on_setting)
            row.append(f"{np.median(ratios):.2f}")
        print(f"{name:22s} {row[0]:>10s} {row[1]:>10s} {row[2]:>11s}", flush=True)


if __name__ == "__main__":
    main()
