"""A Keras-style API over cyconv's kernels: ``from cyconv.keras import layers, models``.

With ``import cyconv as tf`` the seed program's ``tf.keras.losses...`` and
``tf.keras.datasets.mnist.load_data()`` resolve here.  Names, arguments, defaults, weight
layouts and the subtle numbers (optimizer steps, reported losses, metric resolution) follow
Keras 3; each module's docstring says where that takes care.
"""

from __future__ import annotations

import importlib

from . import (activations, backend, callbacks, initializers, layers, losses, metrics, models,
               optimizers, saving, utils)
from .layers import Input
from .models import Model, Sequential

__all__ = ["activations", "backend", "callbacks", "datasets", "initializers", "layers", "losses",
           "metrics", "models", "optimizers", "saving", "utils", "Input", "Model", "Sequential"]


def __getattr__(name):
    # The dataset loaders (and their download machinery) load on first use only.
    if name == "datasets":
        return importlib.import_module(".datasets", __name__)
    raise AttributeError(f"module 'cyconv.keras' has no attribute {name!r}")
