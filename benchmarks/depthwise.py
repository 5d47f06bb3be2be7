"""Depthwise convolutions (groups equal to the input channels) against PyTorch channels_last,
forward (with bias) and backward (dx, dw, db), alternating between the two libraries in one
process (medians of the per-pair ratios; the machine is noisy).

    python benchmarks/depthwise.py [--repeat 20]

A ratio below 1 means cyconv is faster.  Needs PyTorch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

LAYERS = [
    # (batch, size, channels, multiplier, kernel, stride)
    (8, 56, 64, 1, 3, 1),
    (8, 28, 128, 1, 3, 2),
    (32, 112, 32, 1, 3, 1),
    (32, 14, 96, 1, 3, 1),
    (8, 14, 512, 1, 5, 1),
    (8, 56, 32, 3, 3, 1),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    import torch

    import cyconv
    from cyconv import ops

    torch.set_num_threads(cyconv.get_num_threads())
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    print(f"{'layer':34s} {'forward':>8s} {'backward':>8s}")
    for n, size, c, m, k, stride in LAYERS:
        pad = k // 2
        x = rng.standard_normal((n, size, size, c)).astype(np.float32)
        w = rng.standard_normal((k, k, 1, c * m)).astype(np.float32)
        b = np.zeros(c * m, np.float32)
        kw = dict(stride=stride, padding=pad, groups=c)
        dy = np.ones_like(ops.conv2d(x, w, b, **kw))
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(
            memory_format=torch.channels_last).requires_grad_(True)
        wt = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).contiguous(
            memory_format=torch.channels_last).requires_grad_(True)
        bt = torch.zeros(c * m)
        dyt = torch.ones_like(F.conv2d(xt, wt, bt, stride=stride, padding=pad, groups=c))

        def torch_fwd():
            with torch.no_grad():
                return F.conv2d(xt, wt, bt, stride=stride, padding=pad, groups=c)

        def torch_bwd():
            return torch.ops.aten.convolution_backward(
                dyt, xt, wt, [c * m], [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], c,
                [True, True, True])

        pairs = [(lambda: ops.conv2d(x, w, b, **kw), torch_fwd),
                 (lambda: ops.conv2d_backward(dy, x, w, **kw), torch_bwd)]
        ratios = []
        for ours, theirs in pairs:
            r = []
            for _ in range(args.repeat):
                t = []
                for fn in (ours, theirs):
                    fn()
                    t0 = time.perf_counter()
                    fn()
                    t.append(time.perf_counter() - t0)
                r.append(t[0] / t[1])
            ratios.append(np.median(r))
        label = f"{size}x{size}x{c} {k}x{k}" + (f" stride {stride}" if stride > 1 else "")
        label += (f" x{m}" if m > 1 else "") + f" b{n}"
        print(f"{label:34s} {ratios[0]:8.2f} {ratios[1]:8.2f}", flush=True)


if __name__ == "__main__":
    main()
