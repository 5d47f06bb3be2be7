"""The ``cyconv`` command (also ``python -m cyconv``): train, predict, info.

``cyconv train`` trains the seed program's CNN (section 4 of the specification) on Fashion-MNIST
or MNIST, shows Keras's progress bar, prints the test accuracy and the speed, and saves the
model.  ``cyconv predict`` classifies image files with a saved model.  ``cyconv info`` prints
how cyconv was built.  Subcommands live in the COMMANDS table at the bottom.

Exit status: 0 on success, 1 when a file is missing or bad (one line on stderr, no traceback),
2 for a wrong command line, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .idx import atomic_write

DATASETS = ("fashion_mnist", "mnist")
_MODEL_NAME = "seed_cnn_{}"  # the saved name of a model `cyconv train` made for a dataset


class CliError(Exception):
    """A failure the user can fix: printed as one line, no traceback, exit status 1."""


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def _plural(n, word):
    return f"{n} {word}{'s' * (n != 1)}"


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _need(module, purpose, extra):
    """Import an optional dependency, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"PIL": "Pillow"}.get(module, module)
        raise CliError(f"{purpose} needs {package}: pip install {package} "
                       f"(or pip install 'cyconv[{extra}]')") from None


def _writable_folder(path, what):
    """Refuse an output path whose folder does not exist before hours of training, not after."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"cannot write the {what} {path}: folder {folder} does not exist")


# --- train ------------------------------------------------------------------------------------

def seed_model(dataset=None, data_format=None):
    """The model of the seed program, compiled as it compiles it.

    Its name records the dataset (saved with the model), so that predict knows the class names.
    ``data_format="channels_first"`` builds the same model on (1, 28, 28) images.
    """
    from .keras import layers, losses, models

    fmt = {"data_format": data_format}
    shape = (1, 28, 28) if data_format == "channels_first" else (28, 28, 1)
    model = models.Sequential(name=_MODEL_NAME.format(dataset) if dataset else None, layers=[
        layers.Conv2D(32, (3, 3), activation="relu", input_shape=shape, **fmt),
        layers.MaxPooling2D((2, 2), **fmt),
        layers.Conv2D(64, (3, 3), activation="relu", **fmt),
        layers.MaxPooling2D((2, 2), **fmt),
        layers.Conv2D(64, (3, 3), activation="relu", **fmt),
        layers.Flatten(**fmt),
        layers.Dense(64, activation="relu"),
        layers.Dense(10),
    ])
    model.compile(optimizer="adam",
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _load_dataset(name):
    from .idx import IdxError
    from .keras import datasets

    try:
        return datasets.load_data(name)
    except (OSError, IdxError) as exc:  # DatasetNotFoundError is an OSError
        raise CliError(_one_line(exc)) from None


def _train_args(p):
    p.add_argument("--dataset", choices=DATASETS, default="fashion_mnist",
                   help="which dataset (default: %(default)s)")
    p.add_argument("--epochs", type=_positive_int, default=5, help="default: %(default)s")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="default: %(default)s")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="kernel threads (default: OMP_NUM_THREADS, else all usable cores)")
    p.add_argument("--out", default="model.npz",
                   help="where to save the trained model (default: %(default)s)")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="also draw the loss and accuracy curves into this PNG (needs matplotlib)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="train on the first N training images only (quick runs)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="0 silent, 1 progress bar, 2 one line per epoch (default: %(default)s)")


def _epoch_timer():
    """A callback timing each epoch, and the validation inside it when fit reports that."""
    from .keras import callbacks

    class EpochTimer(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_seconds, self.validation_seconds = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = time.perf_counter()
            self._validation = 0.0

        def on_test_begin(self, logs=None):
            self._test = time.perf_counter()

        def on_test_end(self, logs=None):
            self._validation += time.perf_counter() - self._test

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_seconds.append(time.perf_counter() - self._epoch)
            self.validation_seconds.append(self._validation)

    return EpochTimer()


def _train(args):
    _writable_folder(args.out, "model")
    if args.plot:
        _writable_folder(args.plot, "plot")
        _need("matplotlib", "--plot", "plot")
    import cyconv

    if args.threads:
        cyconv.set_num_threads(args.threads)
    (x_train, y_train), (x_test, y_test) = _load_dataset(args.dataset)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    # As the seed program: one channel, scaled to [0, 1] (in float32, the model's dtype, which
    # halves the memory of the float64 that `/ 255.0` would give).
    x_train = x_train.reshape(-1, 28, 28, 1).astype(np.float32) / 255.0
    x_test = x_test.reshape(-1, 28, 28, 1).astype(np.float32) / 255.0

    model = seed_model(args.dataset)
    timer = _epoch_timer()
    if args.verbose:
        print(f"Training the seed CNN on {args.dataset}: {len(x_train)} training and "
              f"{len(x_test)} test images, {_plural(args.epochs, 'epoch')}, batch size "
              f"{args.batch_size}, {cyconv.get_num_threads()} threads", flush=True)
    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        validation_data=(x_test, y_test), verbose=args.verbose,
                        callbacks=[timer])
    h = history.history
    if not h.get("val_accuracy"):
        raise CliError("training stopped before the first epoch ended; nothing saved")
    epochs = len(h["val_accuracy"])
    _save_model(model, args.out)
    print(f"test accuracy {h['val_accuracy'][-1]:.4f} (loss {h['val_loss'][-1]:.4f}) after "
          f"{_plural(epochs, 'epoch')}")
    print(_speed(timer, len(x_train), cyconv.get_num_threads()))
    print(f"model saved to {args.out}")
    if args.plot:
        _plot(h, args.plot, args.dataset)
        print(f"curves drawn in {args.plot}")
    return 0


def _speed(timer, n_train, threads):
    if not timer.epoch_seconds:
        return "no epoch finished"
    epoch = float(np.mean(timer.epoch_seconds))
    validation = float(np.mean(timer.validation_seconds))
    training = epoch - validation
    split = f" ({training:.2f} s training, {validation:.2f} s testing)" if validation else ""
    return (f"{epoch:.2f} s per epoch{split}, {n_train / training:.0f} training images/s, "
            f"{threads} threads")


def _plot(h, path, dataset):
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(h["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, h[key], "o-", label="training")
        if f"val_{key}" in h:
            ax.plot(epochs, h[f"val_{key}"], "s-", label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"seed CNN on {dataset}")
    fig.tight_layout()
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=100)
    except OSError as exc:
        raise CliError(f"cannot write the plot {path}: {_one_line(exc)}") from None
    finally:
        plt.close(fig)


def _save_model(model, path):
    try:
        model.save(path)
    except OSError as exc:
        raise CliError(f"cannot save the model to {path}: {_one_line(exc)}") from None


def _model_dataset(model):
    """The dataset `cyconv train` named the model after, or None for other models."""
    return next((d for d in DATASETS if model.name == _MODEL_NAME.format(d)), None)


# --- predict ----------------------------------------------------------------------------------

def _predict_args(p):
    p.add_argument("model", help="a model saved by `cyconv train` (or Model.save)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="whose class names to print (default: the model's own dataset)")
    p.add_argument("--top", type=_positive_int, default=3, help="default: %(default)s")


def _to_input(path, height, width, channels, dataset):
    """An image file as the model sees its data: light object on dark, [0, 1], float32.

    Returns the array (height, width, channels) and a note on what was done, or None.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                # Transparent parts count as background: paper-white, like a photo's.
                img = img.convert("RGBA")
                paper = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(paper, img)
            img = img.convert("L")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CliError(f"{path}: not a readable image ({_one_line(exc)})") from None
    a = np.asarray(img, dtype=np.float32)
    if a.size == 0:
        raise CliError(f"{path}: the image is empty")
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    note = None
    if border.mean() > 127.5:
        # The datasets draw a light object on a black background; most photos are the reverse.
        a = 255.0 - a
        note = "inverted: dark object on a light background"
    if a.shape != (height, width):
        a = _fit(a, height, width, dataset)
        note = (note + ", " if note else "") + f"scaled to {height}x{width}"
    a = a[:, :, None] / 255.0
    if channels != 1:
        a = np.repeat(a, channels, axis=2)
    return a.astype(np.float32), note


def _fit(a, height, width, dataset):
    """Crop to the object, keep its aspect ratio, and centre it as the dataset does: MNIST digits
    in a 20x20 box of the 28x28 image, Fashion-MNIST products across the whole image."""
    from PIL import Image

    mask = a > 0.2 * a.max() if a.max() > 0 else np.ones(a.shape, bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    a = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    box_h, box_w = ((height * 20 // 28, width * 20 // 28) if dataset == "mnist"
                    else (height, width))
    scale = min(box_h / a.shape[0], box_w / a.shape[1])
    h, w = max(1, round(a.shape[0] * scale)), max(1, round(a.shape[1] * scale))
    small = Image.fromarray(a.astype(np.uint8)).resize((w, h), Image.Resampling.LANCZOS)
    out = np.zeros((height, width), np.float32)
    top, left = (height - h) // 2, (width - w) // 2
    out[top:top + h, left:left + w] = np.asarray(small, dtype=np.float32)
    return out


def _load_model(path):
    if not os.path.isfile(path):
        raise CliError(f"{path}: no such model file")
    from .keras import models

    try:
        return models.load_model(path)
    except (OSError, ValueError, KeyError) as exc:
        message = _one_line(exc)
        if path not in message:
            message = f"{path}: {message}"
        raise CliError(f"cannot load the model: {message}") from None


def _class_names(dataset, n):
    if dataset is None:
        return [f"class {i}" for i in range(n)]
    from .keras import datasets

    names = list(getattr(datasets, dataset).CLASS_NAMES)
    if len(names) != n:
        raise CliError(f"the model has {n} outputs but {dataset} has {len(names)} classes")
    return names


def _probabilities(out):
    out = np.asarray(out, dtype=np.float64)
    if np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out  # a softmax output layer already gave probabilities
    z = np.exp(out - out.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _predict(args):
    _need("PIL", "predict", "images")
    model = _load_model(args.model)
    shape = tuple(getattr(model, "input_shape", None) or (None, 28, 28, 1))
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise CliError(f"{args.model}: predict reads images into (height, width, 1 or 3) "
                       f"inputs; this model takes {shape[1:]}")
    dataset = args.dataset or _model_dataset(model)
    height, width, channels = shape[1:]
    inputs, notes = [], []
    for path in args.images:
        a, note = _to_input(path, height, width, channels, dataset)
        inputs.append(a)
        notes.append(note)
    probs = _probabilities(model.predict(np.stack(inputs), verbose=0))
    names = _class_names(dataset, probs.shape[1])
    width_name = max(len(n) for n in names)
    for path, note, p in zip(args.images, notes, probs):
        print(f"{path}" + (f" ({note})" if note else ""))
        for rank, k in enumerate(np.argsort(-p, kind="stable")[:args.top], 1):
            print(f"  {rank}. {names[k]:<{width_name}} {100 * p[k]:5.1f}%")
    return 0


# --- info ---------------------------------------------------------------------------------

def _info(args):
    import cyconv

    cyconv.show_config()
    return 0


# --- bench --------------------------------------------------------------------------------

def _bench_args(p):
    from . import bench

    bench.add_arguments(p)


def _bench(args):
    from . import bench

    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads must be a positive integer, got {args.threads}")
    try:
        bench.main(args)
    except (ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    return 0


# name -> (help, add_arguments(parser), run(args) -> exit status).
COMMANDS = {
    "train": ("train the seed CNN and report accuracy and speed", _train_args, _train),
    "predict": ("classify image files with a saved model", _predict_args, _predict),
    "bench": ("time the kernels on common layer shapes beside a GEMM peak and PyTorch",
              _bench_args, _bench),
    "info": ("how cyconv was built and how it runs here", lambda p: None, _info),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="cyconv", description="cyconv: a small, fast CNN library.",
        epilog="Exit status: 0 ok, 1 a missing or bad file, 2 a wrong command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CliError as exc:
        print(f"cyconv {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cyconv {args.command}: interrupted", file=sys.stderr)
        return 130
