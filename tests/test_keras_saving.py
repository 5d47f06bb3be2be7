"""Saving and loading models: one .npz, no pickle, atomic writes, clear errors naming the file."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from cyconv.keras import layers, losses, models, optimizers, saving


def small_model(dense=10):
    model = models.Sequential([
        layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)),
        layers.MaxPooling2D(),
        layers.DepthwiseConv2D(2, depth_multiplier=2, padding="same"),
        layers.Flatten(),
        layers.Dropout(0.0, seed=1),  # a real rate would draw other masks after loading
        layers.Dense(dense, activation="softmax"),
    ])
    model.compile(optimizers.Adam(learning_rate=0.01), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.random((12, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 12)


@pytest.fixture
def saved(tmp_path, data):
    model = small_model()
    model.fit(*data, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path


def test_round_trip_gives_identical_predictions_and_training(saved, data):
    model, path = saved
    loaded = models.load_model(path)
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in model.layers]
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert loaded.input_shape == (None, 8, 8, 1)
    np.testing.assert_array_equal(loaded.predict(data[0], verbose=0),
                                  model.predict(data[0], verbose=0))
    # Compile settings and the optimizer's state come back: the next step is the same step.
    assert isinstance(loaded.optimizer, optimizers.Adam)
    assert loaded.optimizer.learning_rate == 0.01 and loaded.optimizer.iterations == 3
    assert isinstance(loaded.loss, losses.SparseCategoricalCrossentropy)
    model.train_on_batch(*data)
    loaded.train_on_batch(*data)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.evaluate(*data, verbose=0) == model.evaluate(*data, verbose=0)


def test_the_file_is_a_plain_npz_without_pickle(saved):
    _, path = saved
    with np.load(path, allow_pickle=False) as archive:
        names = set(archive.files)
        config = json.loads(archive["config"].tobytes().decode("utf-8"))
        assert archive["cyconv_format"].tobytes() == b"cyconv.keras/1"
    assert {"weight_0000", "weight_0005", "optimizer_0000"} <= names
    assert config["class_name"] == "Sequential"
    assert [l["class_name"] for l in config["config"]["layers"]] == [
        "Conv2D", "MaxPooling2D", "DepthwiseConv2D", "Flatten", "Dropout", "Dense"]
    assert config["compile_config"]["metrics"] == ["accuracy"]


def test_load_without_compile_and_uncompiled_models(tmp_path, saved, data):
    _, path = saved
    bare = models.load_model(path, compile=False)
    assert not bare.compiled and bare.predict(data[0], verbose=0).shape == (12, 10)
    plain = models.Sequential([layers.Input(shape=(3,)), layers.Dense(2)])
    plain.save(tmp_path / "plain.npz")
    again = models.load_model(tmp_path / "plain.npz")
    np.testing.assert_array_equal(again.get_weights()[0], plain.get_weights()[0])


def test_save_and_load_weights(tmp_path, saved, data):
    model, _ = saved
    path = tmp_path / "weights.npz"
    model.save_weights(path)
    twin = small_model()
    twin.load_weights(path)
    np.testing.assert_array_equal(twin.predict(data[0], verbose=0),
                                  model.predict(data[0], verbose=0))
    other = small_model(dense=7)
    with pytest.raises(saving.ModelFileError, match="another architecture") as info:
        other.load_weights(path)
    assert str(path) in str(info.value)


def test_missing_file_and_folder(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        models.load_model(missing)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        models.load_model(tmp_path)


def test_truncated_file(tmp_path, saved):
    _, path = saved
    blob = path.read_bytes()
    for cut in (len(blob) // 2, len(blob) - 30, 10, 0):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(blob[:cut])
        with pytest.raises(saving.ModelFileError, match=f"cut{cut}.npz") as info:
            models.load_model(bad)
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("kind", ["text", "npy", "foreign_npz", "pickle", "zip"])
def test_files_of_another_format(tmp_path, kind):
    path = tmp_path / f"{kind}.npz"
    if kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "npy":
        np.save(open(path, "wb"), np.arange(3))
    elif kind == "foreign_npz":
        np.savez(open(path, "wb"), weights=np.arange(3))
    elif kind == "pickle":
        np.save(open(path, "wb"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    with pytest.raises(saving.ModelFileError, match=f"{kind}.npz: not a"):
        models.load_model(path)


def _rewrite(path, out, **changes):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(open(out, "wb"), **arrays)


def test_files_for_another_architecture_or_damaged_configs(tmp_path, saved):
    _, path = saved
    cases = {
        "shape.npz": dict(weight_0004=np.zeros((3, 10), np.float32)),
        "count.npz": dict(weight_0005=None),
        "unknown.npz": dict(config=np.frombuffer(json.dumps({
            "class_name": "Sequential", "config": {"layers": [
                {"class_name": "LSTM", "config": {}}]}}).encode(), np.uint8)),
        "json.npz": dict(config=np.frombuffer(b"{not json", np.uint8)),
        "version.npz": dict(cyconv_format=np.frombuffer(b"cyconv.keras/99", np.uint8)),
        "ints.npz": dict(weight_0000=np.zeros((3, 3, 1, 4), np.int32)),
    }
    messages = {"shape.npz": "another architecture", "count.npz": "another architecture",
                "unknown.npz": "LSTM", "json.npz": "not valid JSON",
                "version.npz": "unsupported", "ints.npz": "not a float"}
    for name, change in cases.items():
        out = tmp_path / name
        _rewrite(path, out, **change)
        with pytest.raises(saving.ModelFileError, match=messages[name]) as info:
            models.load_model(out)
        assert str(out) in str(info.value)


def test_a_failed_save_keeps_the_good_file(tmp_path, saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["model.npz"]  # no temporary left behind
    monkeypatch.undo()
    with pytest.raises(FileExistsError):
        model.save(path, overwrite=False)
    with pytest.raises(OSError):
        model.save(tmp_path / "no" / "such" / "folder.npz")
