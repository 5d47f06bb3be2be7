"""End-to-end: one epoch of the seed model (Fashion-MNIST, batch 32, Adam) and batch-256
inference, in cyconv and, when installed, PyTorch (channels_last and NCHW) and Keras/TensorFlow.

    python benchmarks/epoch.py [--images 60000] [--frameworks cyconv torch torch-nchw keras]
                               [--repeat 1] [--threads N] [--model seed|mnist-cnn]

--model mnist-cnn trains Keras 2's examples/mnist_cnn.py instead (two convolutions, one
max-pool, a 9216 -> 128 Dense layer, dropout), a model many Keras programs start from.

Each framework trains the same architecture from its own initialisation on the same images;
the figure is wall time of the training loop (data already in memory, no validation) and
images per second of inference.  The machine is shared and noisy: with --repeat > 1 the
frameworks alternate and the median is reported.  Each run is a fresh interpreter that imports
its framework first, so that each framework runs with its own OpenMP runtime and settings
(PyTorch's wheel brings a libgomp of the same name as the one cyconv links; whichever loads
first serves both).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time

import numpy as np


def load(n):
    from cyconv.keras.datasets import fashion_mnist

    (x, y), (xt, yt) = fashion_mnist.load_data()
    x = (x[:n].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    xt = (xt.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    return x, y[:n].astype(np.int64), xt, yt.astype(np.int64)


def keras_model(keras, name):
    """mnist-cnn in a Keras API (cyconv.keras or tf.keras), compiled as the seed model is."""
    assert name == "mnist-cnn", name
    layers = keras.layers
    model = keras.Sequential([
        layers.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Dropout(0.25), layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.Dropout(0.5), layers.Dense(10),
    ])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def run_cyconv(x, y, xt, yt, threads, model="seed"):
    import cyconv
    from cyconv import keras
    from cyconv.cli import seed_model

    if threads:
        cyconv.set_num_threads(threads)
    return time_keras_api(seed_model() if model == "seed" else keras_model(keras, model),
                          x, y, xt, yt)


def time_keras_api(model, x, y, xt, yt):
    """(training seconds, inference images/s, test accuracy) of a compiled Keras-API model."""
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    train = time.perf_counter() - t0
    model.predict(xt[:256], batch_size=256, verbose=0)
    t0 = time.perf_counter()
    model.predict(xt, batch_size=256, verbose=0)
    infer = time.perf_counter() - t0
    acc = model.evaluate(xt, yt, batch_size=256, verbose=0)[1]
    return train, len(xt) / infer, acc


def run_torch(x, y, xt, yt, threads, model="seed", channels_last=True):
    import torch
    from torch import nn

    if threads:
        torch.set_num_threads(threads)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if model == "seed":
        layers = [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
                  nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10)]
    else:
        layers = [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                  nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
                  nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10)]
    model = nn.Sequential(*layers).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    xs = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt)
    ys = torch.from_numpy(y)
    xts = torch.from_numpy(xt.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt)
    t0 = time.perf_counter()
    perm = torch.randperm(len(xs))
    model.train()
    for i in range(0, len(xs), 32):
        idx = perm[i:i + 32]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xs[idx].contiguous(memory_format=fmt)), ys[idx])
        loss.backward()
        opt.step()
    train = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        model(xts[:256])
        t0 = time.perf_counter()
        preds = [model(xts[i:i + 256]).argmax(1) for i in range(0, len(xts), 256)]
        infer = time.perf_counter() - t0
    acc = float((torch.cat(preds).numpy() == yt).mean())
    return train, len(xts) / infer, acc


def run_keras(x, y, xt, yt, threads, model="seed"):
    import tensorflow as tf
    from tensorflow.keras import layers, models

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    if model != "seed":
        model = keras_model(tf.keras, model)
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # build the graph first
        return time_keras_api(model, x, y, xt, yt)
    model = models.Sequential([
        layers.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.Flatten(),
        layers.Dense(64, activation="relu"), layers.Dense(10),
    ])
    model.compile(optimizer="adam",
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # build the graph first
    return time_keras_api(model, x, y, xt, yt)


RUNNERS = {
    "cyconv": run_cyconv,
    "torch": lambda *a: run_torch(*a, channels_last=True),
    "torch-nchw": lambda *a: run_torch(*a, channels_last=False),
    "keras": run_keras,
}


# what each run imports before anything else
FIRST_IMPORT = {"cyconv": "cyconv", "torch": "torch", "torch-nchw": "torch",
                "keras": "tensorflow"}


def run_in_child(framework, images, threads, model):
    cmd = [sys.executable, __file__, "--one", framework, "--images", str(images),
           "--model", model]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        sys.exit(f"{framework} failed (exit code {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=60000)
    p.add_argument("--frameworks", nargs="+", default=["cyconv", "torch"], choices=list(RUNNERS))
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--model", choices=["seed", "mnist-cnn"], default="seed")
    p.add_argument("--one", choices=list(RUNNERS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        importlib.import_module(FIRST_IMPORT[args.one])
        print(json.dumps(RUNNERS[args.one](*load(args.images), args.threads, args.model)))
        return
    results = {f: [] for f in args.frameworks}
    for _ in range(args.repeat):
        for f in args.frameworks:
            results[f].append(run_in_child(f, args.images, args.threads, args.model))
    print(f"{'framework':<12} {'epoch (s)':>10} {'train img/s':>12} {'infer img/s':>12} {'test acc':>9}")
    for f, runs in results.items():
        train = statistics.median(r[0] for r in runs)
        infer = statistics.median(r[1] for r in runs)
        acc = statistics.median(r[2] for r in runs)
        print(f"{f:<12} {train:>10.2f} {args.images / train:>12.0f} {infer:>12.0f} {acc:>9.4f}")


if __name__ == "__main__":
    main()
