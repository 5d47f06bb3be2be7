"""Real Fashion-MNIST subsets for the Keras-API tests, read straight from Debian's IDX files.

Only the first n images of a file are decompressed, so a test pays for the data it uses.
"""

from __future__ import annotations

import functools
import gzip
import os

import numpy as np
import pytest

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@functools.lru_cache(maxsize=None)
def _read(kind, n):
    images = os.path.join(FASHION_DIR, f"{kind}-images-idx3-ubyte.gz")
    labels = os.path.join(FASHION_DIR, f"{kind}-labels-idx1-ubyte.gz")
    if not (os.path.exists(images) and os.path.exists(labels)):
        pytest.skip(f"Fashion-MNIST is not in {FASHION_DIR} (apt-get install "
                    "dataset-fashion-mnist)")
    with gzip.open(images) as f:
        x = np.frombuffer(f.read(16 + n * 784)[16:], np.uint8).reshape(n, 28, 28)
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(8 + n)[8:], np.uint8)
    return x, y


def fashion_subset(n_train, n_test):
    """((x_train, y_train), (x_test, y_test)) as load_data returns them: uint8 (n, 28, 28)."""
    return _read("train", n_train), _read("t10k", n_test)
