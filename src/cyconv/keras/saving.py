"""Saving and loading models: one ``.npz`` file, no pickle.

The archive holds

- ``cyconv_format``: the bytes ``cyconv.keras/1`` (what this file is, and which layout);
- ``config``: the model's JSON config (architecture, build shape, compile settings) as UTF-8
  bytes in a uint8 array;
- ``weight_0000``, ``weight_0001``, ...: ``get_weights()`` in order;
- ``optimizer_0000``, ...: the optimizer's state (iterations, learning rate, slots), when the
  model was compiled and has trained.

It is written to a temporary file in the destination's folder and renamed over the destination
only once complete (cyconv.idx.atomic_write), so a crash or a failed save never leaves a
half-written file where a good one was.  Loading opens it with ``allow_pickle=False`` and checks
everything: a missing file raises FileNotFoundError; a truncated file, a file of another format,
or weights that do not fit the architecture raise ModelFileError (a ValueError).  Every message
names the file.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from ..idx import atomic_write

__all__ = ["ModelFileError", "save_model", "load_model", "save_weights", "load_weights"]

FORMAT = "cyconv.keras/1"


class ModelFileError(ValueError):
    """A file that is not a readable cyconv model, or not one for this architecture."""

    def __init__(self, path, message):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {message}")


def _bytes(text):
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _write(path, arrays, overwrite):
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _payload(model, include_optimizer):
    arrays = {"cyconv_format": _bytes(FORMAT),
              "config": _bytes(json.dumps(model._file_config(include_optimizer)))}
    for i, w in enumerate(model.get_weights()):
        arrays[f"weight_{i:04d}"] = w
    optimizer = getattr(model, "optimizer", None)
    if include_optimizer and optimizer is not None and optimizer.built:
        for i, v in enumerate(optimizer.get_state()):
            arrays[f"optimizer_{i:04d}"] = v
    return arrays


def save_model(model, filepath, overwrite=True, include_optimizer=True):
    """Architecture, weights, compile settings and optimizer state in one file."""
    _write(filepath, _payload(model, include_optimizer), overwrite)


def save_weights(model, filepath, overwrite=True):
    """The same file (load_model can read it); load_weights uses only its weights."""
    _write(filepath, _payload(model, include_optimizer=False), overwrite)


class _Archive:
    """The checked contents of a model file."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(2, "No such model file", self.path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(21, "A model file is expected, not a folder", self.path)
        try:
            data = np.load(self.path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ModelFileError(self.path, "not a cyconv model file (a single .npy "
                                                "array, not an .npz archive)")
            with data:
                names = set(data.files)
                if "cyconv_format" not in names or "config" not in names:
                    raise ModelFileError(self.path, "not a cyconv model file (an .npz archive "
                                                    "without cyconv's 'cyconv_format' and "
                                                    "'config' entries)")
                arrays = {name: data[name] for name in data.files}
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError,
                UnicodeDecodeError) as exc:
            raise ModelFileError(self.path, "not a readable cyconv model file (truncated, "
                                            f"damaged or of another format: {exc})") from None
        fmt = self._text(arrays["cyconv_format"], "cyconv_format")
        if fmt != FORMAT:
            raise ModelFileError(self.path, f"unsupported model file format {fmt!r} (this "
                                            f"cyconv reads {FORMAT!r})")
        try:
            self.config = json.loads(self._text(arrays["config"], "config"))
        except json.JSONDecodeError as exc:
            raise ModelFileError(self.path, f"the model config is not valid JSON ({exc})") \
                from None
        if not isinstance(self.config, dict):
            raise ModelFileError(self.path, "the model config is not a JSON object")
        self.weights = self._series(arrays, "weight_")
        self.optimizer_state = self._series(arrays, "optimizer_")

    def _text(self, array, name):
        if array.dtype != np.uint8 or array.ndim != 1:
            raise ModelFileError(self.path, f"entry {name!r} is not UTF-8 text")
        try:
            return array.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFileError(self.path, f"entry {name!r} is not UTF-8 text") from None

    def _series(self, arrays, prefix):
        keys = sorted(k for k in arrays if k.startswith(prefix))
        expected = [f"{prefix}{i:04d}" for i in range(len(keys))]
        if keys != expected:
            raise ModelFileError(self.path, f"the {prefix.rstrip('_')} entries are not "
                                            f"numbered 0..{len(keys) - 1}: {keys[:5]}...")
        return [arrays[k] for k in keys]


def _check_weights(path, model, weights):
    expected = [w.shape for w in model.weights]
    got = [w.shape for w in weights]
    if len(got) != len(expected):
        raise ModelFileError(path, f"the file has {len(got)} weight arrays but the model "
                                   f"({model.name}) has {len(expected)}: it was saved from "
                                   "another architecture")
    for i, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            raise ModelFileError(path, f"weight {i} has shape {g} in the file but {e} in the "
                                       "model: it was saved from another architecture")
    for i, w in enumerate(weights):
        if w.dtype.kind != "f":
            raise ModelFileError(path, f"weight {i} has dtype {w.dtype}, not a float")


def load_model(filepath, compile=True):
    """The model saved in ``filepath``, with its weights, compiled as it was (and with its
    optimizer state) unless ``compile=False``."""
    from .models import Sequential

    archive = _Archive(filepath)
    path = archive.path
    try:
        model = Sequential.from_file_config(archive.config)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(path, f"cannot rebuild the model from its config ({exc})") \
            from None
    if not model.built:
        if archive.weights:
            raise ModelFileError(path, "the file has weights but its model was never built")
        return model
    _check_weights(path, model, archive.weights)
    model.set_weights(archive.weights)
    compile_config = archive.config.get("compile_config")
    if compile and compile_config:
        try:
            model._compile_from_config(compile_config)
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelFileError(path, f"cannot restore the compile settings ({exc})") \
                from None
        if archive.optimizer_state:
            try:
                model._restore_optimizer_state(archive.optimizer_state)
            except ValueError as exc:
                raise ModelFileError(path, f"the optimizer state does not fit ({exc})") \
                    from None
    return model


def load_weights(model, filepath):
    """Put the weights of a file saved by save/save_weights into ``model``, which must have
    the same architecture (its weight shapes are checked one by one)."""
    archive = _Archive(filepath)
    if not model.built:
        config_shape = archive.config.get("build_input_shape")
        if config_shape is None:
            raise ModelFileError(archive.path, "the file holds no built model")
        model.build(tuple(config_shape))
    _check_weights(archive.path, model, archive.weights)
    model.set_weights(archive.weights)
