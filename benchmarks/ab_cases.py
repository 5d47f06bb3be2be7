"""The default cases of ab_builds.py: the seed model's layers at batch 32 and 256, each
convolution forward (with its ReLU) and backward (dx, dw, db), each 2x2 max-pool forward with
its cells and forward + backward, and the first two convolutions with their pools in one pass;
and Dense layers as the Keras layer runs them (1x1 convolutions of the batch's rows), forward
with its ReLU and backward: the seed's 576 -> 64 and Keras 2's MNIST example's 9216 -> 128.

The input arrays are made once, here, and read by both builds: arrays allocated apart for each
build lie at different addresses (on huge pages or not, a different distance between x and dy),
which moved a depthwise weight gradient of unchanged code by up to 1.4x between the builds."""

import numpy as np

SEED_CONVS = [  # (name, x shape without the batch, w shape)
    ("conv1", (28, 28, 1), (3, 3, 1, 32)),
    ("conv2", (13, 13, 32), (3, 3, 32, 64)),
    ("conv3", (5, 5, 64), (3, 3, 64, 64)),
]
SEED_POOLS = [("pool1", (26, 26, 32)), ("pool2", (11, 11, 64))]
DENSE = [("dense 576->64", 576, 64), ("dense 9216->128", 9216, 128)]
BATCHES = (32, 256)


def _arrays():
    rng = np.random.default_rng(0)
    conv, pool = {}, {}
    for n in BATCHES:
        for name, (h, w_, c), w_shape in SEED_CONVS:
            x = rng.standard_normal((n, h, w_, c)).astype(np.float32)
            w = (rng.standard_normal(w_shape) * 0.1).astype(np.float32)
            # valid 3x3 windows
            dy = np.ones((n, h - 2, w_ - 2, w_shape[3]), np.float32)
            conv[name, n] = x, w, dy
        for name, (h, w_, c) in SEED_POOLS:
            x = rng.standard_normal((n, h, w_, c)).astype(np.float32)
            pool[name, n] = x, np.ones((n, h // 2, w_ // 2, c), np.float32)
        for name, n_in, units in DENSE:
            x = rng.standard_normal((n, 1, 1, n_in)).astype(np.float32)
            w = (rng.standard_normal((1, 1, n_in, units)) * 0.05).astype(np.float32)
            conv[name, n] = x, w, rng.standard_normal((n, 1, 1, units)).astype(np.float32)
    return conv, pool


CONV_ARRAYS, POOL_ARRAYS = _arrays()


def make(ops, cyconv):
    cases = {}
    for n in BATCHES:
        for name in [c[0] for c in SEED_CONVS + DENSE]:
            x, w, dy = CONV_ARRAYS[name, n]
            cases[f"{name} b{n} fwd"] = lambda x=x, w=w: ops.conv2d(x, w, activation="relu")
            cases[f"{name} b{n} bwd"] = lambda x=x, w=w, dy=dy: ops.conv2d_backward(dy, x, w)
            if name in ("conv1", "conv2"):
                cases[f"{name}+pool b{n} one pass"] = (
                    lambda x=x, w=w: ops._conv2d_relu_max_pool(x, w, None, 2))
        for name, _ in SEED_POOLS:
            x, dy = POOL_ARRAYS[name, n]
            kw = dict(return_indices=True, index_format="window")
            cases[f"{name} b{n} fwd"] = lambda x=x, kw=kw: ops.max_pool2d(x, 2, **kw)
            cases[f"{name} b{n} fwd+bwd"] = lambda x=x, kw=kw, dy=dy: ops.max_pool2d_backward(
                dy, x, 2, indices=ops.max_pool2d(x, 2, **kw)[1])
    return cases
