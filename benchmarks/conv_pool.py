"""A convolution with a ReLU and the max-pool after it, in one pass against two calls: the seed
model's two pairs on their own, then a training epoch and inference of the whole model with
Sequential.fuse_conv_pool on and off.  Both sides alternate within one process; medians.

    python benchmarks/conv_pool.py [--images 12000] [--rounds 4] [--budget 1.0]
                                   [--data-format channels_last|channels_first]

--data-format builds the model in that layout (the layer pairs above are timed in NHWC).

The one pass (ops._conv2d_relu_max_pool) never writes the convolution's output: each thread
convolves a band of rows into its scratch and pools it there.  Its results are the two calls'
to the bit (tests/test_ops.py), so only the time differs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from epoch import load

LAYERS = [  # (name, x shape, w shape, padding)
    ("seed conv1 + pool1 b32", (32, 28, 28, 1), (3, 3, 1, 32), "valid"),
    ("seed conv2 + pool2 b32", (32, 13, 13, 32), (3, 3, 32, 64), "valid"),
    ("seed conv1 + pool1 b256", (256, 28, 28, 1), (3, 3, 1, 32), "valid"),
    ("seed conv2 + pool2 b256", (256, 13, 13, 32), (3, 3, 32, 64), "valid"),
    ("resnet 56x56x64 + pool b8", (8, 56, 56, 64), (3, 3, 64, 64), "same"),
]


def layers(budget):
    from cyconv import ops
    from cyconv.bench import time_pairs

    rng = np.random.default_rng(0)
    print(f"{'layer':28s} {'one pass':>10s} {'two calls':>10s} {'ratio':>6s} {'[IQR]':>11s}")
    for name, xs, ws, padding in LAYERS:
        x = rng.uniform(-1, 1, xs).astype(np.float32)
        w = (rng.uniform(-1, 1, ws) / np.sqrt(np.prod(ws[:3]))).astype(np.float32)
        b = np.zeros(ws[3], np.float32)

        def one(x=x, w=w, b=b, padding=padding):
            return ops._conv2d_relu_max_pool(x, w, b, 2, padding=padding)

        def two(x=x, w=w, b=b, padding=padding):
            z = ops.conv2d(x, w, b, padding=padding, activation="relu")
            return ops._max_pool2d_after_relu(z, 2, None, "valid", "NHWC")

        t1, t2, ratio, (q1, q3) = time_pairs(one, two, budget)
        print(f"{name:28s} {t1 * 1e6:8.0f}us {t2 * 1e6:8.0f}us {ratio:6.2f} [{q1:.2f}-{q3:.2f}]")


def model(images, rounds, data_format):
    from cyconv.cli import seed_model
    from cyconv.keras import models

    x, y, xt, _ = load(images)
    if data_format == "channels_first":
        x, xt = x.transpose(0, 3, 1, 2).copy(), xt.transpose(0, 3, 1, 2).copy()
    m = seed_model(data_format=data_format)
    m.fit(x[:640], y[:640], batch_size=32, epochs=1, verbose=0)   # warm up
    runs = {True: [], False: []}
    for _ in range(rounds):
        for fused in (True, False):
            models.Sequential.fuse_conv_pool = fused
            t0 = time.perf_counter()
            m.fit(x, y, batch_size=32, epochs=1, verbose=0)
            epoch = time.perf_counter() - t0
            t0 = time.perf_counter()
            m.predict(xt, batch_size=256, verbose=0)
            runs[fused].append((epoch, len(xt) / (time.perf_counter() - t0)))
    models.Sequential.fuse_conv_pool = True
    one, two = np.array(runs[True]), np.array(runs[False])
    print(f"\nseed model ({data_format}), {images} training images at batch 32, {len(xt)} test "
          f"images at 256, {rounds} alternating rounds")
    print(f"{'':10s} {'epoch':>9s} {'inference':>14s}")
    for label, r in (("one pass", one), ("two calls", two)):
        print(f"{label:10s} {np.median(r[:, 0]):8.3f}s {np.median(r[:, 1]):10.0f} img/s")
    print(f"{'ratio':10s} {np.median(one[:, 0] / two[:, 0]):9.2f} "
          f"{np.median(one[:, 1] / two[:, 1]):14.2f} (inference: throughput, above 1 is faster)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--data-format", default="channels_last",
                        choices=["channels_last", "channels_first"])
    args = parser.parse_args()
    layers(args.budget)
    model(args.images, args.rounds, args.data_format)


if __name__ == "__main__":
    main()
