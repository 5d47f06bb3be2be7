"""Cases for ab_builds.py: NCHW layers beyond the seed model's (float32), forward with bias and
ReLU and backward (dx, dw, db), and weight gradients alone where the output channels are few:

- pointwise (1x1) layers as MobileNet and ResNet have them, at batch 8 (and a stride of 2 for
  ResNet's projections), the seed's conv2 shape as 1x1 at batch 32, 28x28x64 at batch 64;
- pointwise layers over large images (128x128, 96x96) and with few output channels, as a
  segmentation network's head has them, at batch 1 to 16;
- 3x3 layers whose arrays pass 32 MB (their NHWC temporaries come from kept buffers).

    python benchmarks/ab_builds.py OLD_SRC NEW_SRC --cases benchmarks/ab_cases_nchw.py \\
        [--only pointwise] [--only "batch 1"] [--only 3x3]

The arrays are made once, here, and read by both builds (see ab_cases.py); all of them take
about 1 GB."""

import numpy as np

# (name, batch, input channels, image side, output channels, kernel side, stride)
LAYERS = [
    ("pointwise", 8, 256, 14, 512, 1, 1),
    ("pointwise", 8, 128, 28, 256, 1, 1),
    ("pointwise", 8, 64, 56, 128, 1, 1),
    ("pointwise", 32, 32, 13, 64, 1, 1),
    ("pointwise", 64, 64, 28, 64, 1, 1),
    ("pointwise", 8, 256, 56, 512, 1, 2),
    ("pointwise", 8, 64, 56, 256, 1, 2),
    ("pointwise large", 8, 64, 128, 64, 1, 1),
    ("pointwise large", 4, 128, 96, 128, 1, 1),
    ("pointwise few out", 8, 64, 128, 2, 1, 1),
    ("pointwise few out", 8, 64, 128, 10, 1, 1),
    ("pointwise few out", 16, 32, 64, 4, 1, 1),
    ("pointwise few out", 8, 128, 56, 12, 1, 1),
    ("pointwise batch 1", 1, 64, 56, 128, 1, 1),
    ("pointwise batch 1", 1, 32, 256, 1, 1, 1),
    ("pointwise batch 1", 1, 32, 112, 16, 1, 1),
    ("pointwise batch 1", 1, 64, 56, 12, 1, 1),
    ("3x3", 4, 32, 256, 32, 3, 1),
    ("3x3", 8, 64, 128, 64, 3, 1),
    ("3x3", 8, 64, 128, 2, 3, 1),
]


def _arrays():
    rng = np.random.default_rng(0)
    arrays = []
    for _, n, c, side, cout, k, stride in LAYERS:
        out = (side - 1) // stride + 1
        arrays.append((rng.standard_normal((n, c, side, side)).astype(np.float32),
                       (rng.standard_normal((cout, c, k, k)) * 0.1).astype(np.float32),
                       rng.standard_normal(cout).astype(np.float32),
                       rng.standard_normal((n, cout, out, out)).astype(np.float32)))
    return arrays


ARRAYS = _arrays()


def make(ops, cyconv):
    cases = {}
    for (kind, n, c, side, cout, k, stride), (x, w, b, dy) in zip(LAYERS, ARRAYS):
        kw = dict(stride=stride, padding=k // 2, data_format="NCHW")
        name = f"{kind} {k}x{k}/{stride} {side}x{side}x{c}->{cout} b{n}"
        cases[name + " fwd"] = lambda x=x, w=w, b=b, kw=kw: ops.conv2d(x, w, b,
                                                                        activation="relu", **kw)
        cases[name + " bwd"] = lambda x=x, w=w, dy=dy, kw=kw: ops.conv2d_backward(dy, x, w, **kw)
        if cout <= 24:
            cases[name + " dw"] = lambda x=x, w=w, dy=dy, kw=kw: ops.conv2d_backward(
                dy, x, w, compute_dx=False, **kw)
    return cases
