"""The default cases of ab_builds.py: the seed model's layers at batch 32 and 256, each
convolution forward (with its ReLU) and backward (dx, dw, db), each 2x2 max-pool forward with
its cells and forward + backward, and the first two convolutions with their pools in one pass."""

import numpy as np

SEED_CONVS = [  # (name, x shape without the batch, w shape)
    ("conv1", (28, 28, 1), (3, 3, 1, 32)),
    ("conv2", (13, 13, 32), (3, 3, 32, 64)),
    ("conv3", (5, 5, 64), (3, 3, 64, 64)),
]
SEED_POOLS = [("pool1", (26, 26, 32)), ("pool2", (11, 11, 64))]


def make(ops, cyconv):
    rng = np.random.default_rng(0)
    cases = {}
    for n in (32, 256):
        for name, shape, w_shape in SEED_CONVS:
            x = rng.standard_normal((n, *shape)).astype(np.float32)
            w = (rng.standard_normal(w_shape) * 0.1).astype(np.float32)
            dy = np.ones_like(ops.conv2d(x, w))
            cases[f"{name} b{n} fwd"] = lambda x=x, w=w: ops.conv2d(x, w, activation="relu")
            cases[f"{name} b{n} bwd"] = lambda x=x, w=w, dy=dy: ops.conv2d_backward(dy, x, w)
            if name != "conv3":
                cases[f"{name}+pool b{n} one pass"] = (
                    lambda x=x, w=w: ops._conv2d_relu_max_pool(x, w, None, 2))
        for name, shape in SEED_POOLS:
            x = rng.standard_normal((n, *shape)).astype(np.float32)
            kw = dict(return_indices=True, index_format="window")
            dy = np.ones_like(ops.max_pool2d(x, 2))
            cases[f"{name} b{n} fwd"] = lambda x=x, kw=kw: ops.max_pool2d(x, 2, **kw)
            cases[f"{name} b{n} fwd+bwd"] = lambda x=x, kw=kw, dy=dy: ops.max_pool2d_backward(
                dy, x, 2, indices=ops.max_pool2d(x, 2, **kw)[1])
    return cases
