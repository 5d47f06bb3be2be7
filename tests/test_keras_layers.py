"""cyconv.keras layers: Keras's shapes, parameter counts, weight layouts, orders and errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from cyconv import reference
from cyconv.keras import activations, backend, initializers, layers, losses, models, utils

from helpers import kernel_path


def seed_model():
    model = models.Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(10))
    return model


def test_seed_model_shapes_params_and_summary(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # Keras: min(88, terminal columns - 4)
    model = seed_model()
    shapes = [layer.output_shape for layer in model.layers]
    assert shapes == [(None, 26, 26, 32), (None, 13, 13, 32), (None, 11, 11, 64),
                      (None, 5, 5, 64), (None, 3, 3, 64), (None, 576), (None, 64), (None, 10)]
    assert [layer.count_params() for layer in model.layers] == [
        320, 0, 18496, 0, 36928, 0, 36928, 650]
    assert model.count_params() == 93322
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert text.startswith(f'Model: "{model.name}"')
    assert "Layer (type)" in text and "Output Shape" in text and "Param #" in text
    assert re.search(r"conv2d(_\d+)? \(Conv2D\)\s+│ \(None, 26, 26, 32\)\s+│\s+320 │", text)
    assert re.search(r"dense(_\d+)? \(Dense\)\s+│ \(None, 64\)\s+│\s+36,928 │", text)
    # 93,322 float32 parameters are 373,288 bytes = 364.54 KB (Keras's 1024-based units).
    assert " Total params: 93,322 (364.54 KB)" in text
    assert " Trainable params: 93,322 (364.54 KB)" in text
    assert " Non-trainable params: 0 (0.00 B)" in text
    assert "Optimizer params" not in text
    assert {len(line) for line in text.splitlines()[1:-3]} == {88}
    narrow = []
    model.summary(print_fn=narrow.append, line_length=70)
    assert {len(line) for line in narrow[0].splitlines()[1:-3]} == {70}


def test_summary_after_training_counts_optimizer_state_as_keras3():
    model = models.Sequential([layers.Input(shape=(4,)), layers.Dense(3)])
    model.compile("adam", "mse")
    model.fit(np.ones((2, 4)), np.ones((2, 3)), verbose=0)
    lines = []
    model.summary(print_fn=lines.append)
    # Adam: iterations + learning rate + 2 slots of 15 -> 32 values, 8 + 4 + 120 bytes.
    assert " Optimizer params: 32 (132.00 B)" in lines[0]
    assert " Total params: 47 (192.00 B)" in lines[0]


def test_summary_of_unbuilt_model_says_so():
    model = models.Sequential([layers.Dense(3)])
    lines = []
    model.summary(print_fn=lines.append)
    assert "?" in lines[0] and "0 (unbuilt)" in lines[0]


CASES = [
    # (layer, input shape, Keras's output shape, Keras's parameter count)
    (lambda: layers.Conv2D(32, 3), (None, 28, 28, 1), (None, 26, 26, 32), 320),
    (lambda: layers.Conv2D(8, 3, strides=2, padding="same"), (None, 7, 7, 3),
     (None, 4, 4, 8), 3 * 3 * 3 * 8 + 8),
    (lambda: layers.Conv2D(8, (3, 1), dilation_rate=2, use_bias=False), (None, 10, 10, 2),
     (None, 6, 10, 8), 3 * 1 * 2 * 8),
    (lambda: layers.Conv2D(6, 3, groups=3, data_format="channels_first"), (None, 6, 9, 9),
     (None, 6, 7, 7), 3 * 3 * 2 * 6 + 6),
    (lambda: layers.Conv2D(4, 2, padding="SAME"), (None, 5, 5, 1), (None, 5, 5, 4), 20),
    (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2), (None, 8, 8, 3), (None, 6, 6, 6),
     3 * 3 * 3 * 2 + 6),
    (lambda: layers.DepthwiseConv2D((1, 2), strides=(1, 2), padding="same",
                                    data_format="channels_first"),
     (None, 4, 5, 5), (None, 4, 5, 3), 1 * 2 * 4 + 4),
    (lambda: layers.MaxPooling2D(), (None, 13, 13, 32), (None, 6, 6, 32), 0),
    (lambda: layers.MaxPooling2D(3, strides=2, padding="same"), (None, 7, 7, 4),
     (None, 4, 4, 4), 0),
    (lambda: layers.AveragePooling2D((2, 3), data_format="channels_first"), (None, 5, 8, 9),
     (None, 5, 4, 3), 0),
    (lambda: layers.GlobalAveragePooling2D(), (None, 5, 6, 7), (None, 7), 0),
    (lambda: layers.GlobalAveragePooling2D(keepdims=True), (None, 5, 6, 7), (None, 1, 1, 7), 0),
    (lambda: layers.GlobalMaxPooling2D(data_format="channels_first"), (None, 5, 6, 7),
     (None, 5), 0),
    (lambda: layers.Flatten(), (None, 3, 3, 64), (None, 576), 0),
    (lambda: layers.Dense(64), (None, 576), (None, 64), 576 * 64 + 64),
    (lambda: layers.Dense(5, use_bias=False), (None, 4, 3), (None, 4, 5), 15),
    (lambda: layers.ZeroPadding2D(((1, 2), (3, 4))), (None, 5, 5, 2), (None, 8, 12, 2), 0),
    (lambda: layers.ZeroPadding2D(2, data_format="channels_first"), (None, 2, 5, 5),
     (None, 2, 9, 9), 0),
    (lambda: layers.Activation("tanh"), (None, 3, 4), (None, 3, 4), 0),
    (lambda: layers.ReLU(), (None, 6), (None, 6), 0),
    (lambda: layers.Softmax(), (None, 6), (None, 6), 0),
    (lambda: layers.Dropout(0.5), (None, 6), (None, 6), 0),
]


@pytest.mark.parametrize("make, in_shape, out_shape, params", CASES)
def test_output_shape_and_params_follow_keras(make, in_shape, out_shape, params):
    layer = make()
    layer.build(in_shape)
    assert layer.output_shape == out_shape
    assert layer.count_params() == params
    y = layer(np.random.default_rng(0).random((2,) + in_shape[1:]))
    assert y.shape == (2,) + out_shape[1:]
    assert y.dtype == np.float32


# Keras 3's compute_output_shape on these (checked with TensorFlow 2.21's Keras): an unknown
# image size stays unknown through the layer, the known one is computed as usual.
ANY_SIZE_CASES = [
    (lambda: layers.Conv2D(8, 3, strides=2, padding="same"), (None, None, 7, 3),
     (None, None, 4, 8)),
    (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2), (None, 8, None, 3),
     (None, 6, None, 6)),
    (lambda: layers.MaxPooling2D(3, strides=2, padding="same"), (None, None, None, 4),
     (None, None, None, 4)),
    (lambda: layers.AveragePooling2D((2, 3), data_format="channels_first"), (None, 5, None, 9),
     (None, 5, None, 3)),
    (lambda: layers.Conv2D(6, 3, groups=3, data_format="channels_first"), (None, 6, None, None),
     (None, 6, None, None)),
    (lambda: layers.MaxPooling2D(), (None, 8, 8, None), (None, 4, 4, None)),
]


@pytest.mark.parametrize("make, in_shape, out_shape", ANY_SIZE_CASES)
def test_layers_take_images_of_any_size(make, in_shape, out_shape):
    layer = make()
    layer.build(in_shape)
    assert layer.output_shape == out_shape
    x = np.random.default_rng(0).random(tuple(9 if d is None else d for d in (2,) + in_shape[1:]))
    y = layer(x)
    concrete = make()
    concrete.build((None,) + x.shape[1:])
    assert y.shape == (2,) + concrete.output_shape[1:]
    assert all(got == want for got, want in zip(y.shape, out_shape) if want is not None)


def test_a_fully_convolutional_model_trains_predicts_and_reloads_at_any_size(tmp_path):
    model = models.Sequential([
        layers.Input(shape=(None, None, 1)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(5, 3, padding="same"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(3),
    ])
    assert model.output_shape == (None, 3)
    model.compile(optimizer="adam",
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    model.fit(rng.random((4, 12, 10, 1), dtype=np.float32), np.array([0, 1, 2, 0]), epochs=1,
              verbose=0)
    path = tmp_path / "any_size.keras"
    model.save(path)
    again = models.load_model(path)
    for size in [(12, 10), (7, 19)]:
        x = rng.random((3,) + size + (1,), dtype=np.float32)
        y = model.predict(x, verbose=0)
        assert y.shape == (3, 3)
        np.testing.assert_array_equal(again.predict(x, verbose=0), y)


def test_a_model_whose_output_size_is_open_predicts_fits_and_evaluates():
    # a segmentation-like model: its output is as large as its input, whatever that is
    model = models.Sequential([layers.Input(shape=(None, None, 1)),
                               layers.Conv2D(3, 3, padding="same")])
    assert model.output_shape == (None, None, None, 3)
    rng = np.random.default_rng(1)
    for size in [(8, 8), (5, 11)]:
        x = rng.random((2,) + size + (1,), dtype=np.float32)
        assert model.predict(x, verbose=0).shape == (2,) + size + (3,)
    assert model.predict(np.zeros((0, 4, 4, 1), np.float32), verbose=0).shape[0] == 0
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.random((2, 5, 7, 1), dtype=np.float32)
    labels = rng.integers(0, 3, (2, 5, 7))
    model.fit(x, labels, epochs=1, verbose=0)
    assert np.isfinite(model.evaluate(x, labels, verbose=0))
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="must have the same shape"):
        model.fit(x, np.zeros((2, 5, 7, 4), np.float32), verbose=0)


def test_a_large_known_size_beside_an_unknown_one():
    # the unknown side stands in as the window's own extent, not as a large size
    model = models.Sequential([layers.Input(shape=(None, 65536, 1)), layers.MaxPooling2D((1, 2)),
                               layers.Conv2D(2, (50000, 3))])
    assert model.output_shape == (None, None, 32766, 2)


def test_weight_layouts_and_order_are_keras():
    conv = layers.Conv2D(6, (3, 2), groups=2)
    conv.build((None, 9, 9, 4))
    assert [w.shape for w in conv.get_weights()] == [(3, 2, 2, 6), (6,)]
    dense = layers.Dense(7)
    dense.build((None, 5))
    assert [w.shape for w in dense.get_weights()] == [(5, 7), (7,)]
    dw = layers.DepthwiseConv2D(3, depth_multiplier=4)
    dw.build((None, 8, 8, 3))
    assert [w.shape for w in dw.get_weights()] == [(3, 3, 3, 4), (12,)]
    cf = layers.Conv2D(5, 3, data_format="channels_first")
    cf.build((None, 2, 8, 8))
    assert cf.kernel.shape == (3, 3, 2, 5)  # HWIO whatever the data format, as Keras
    assert all(np.all(w == 0) for w in (conv.bias, dense.bias, dw.bias, cf.bias))


def test_layer_names_are_keras_snake_case_and_unique():
    names = [layers.Conv2D(1, 1).name, layers.Conv2D(1, 1).name, layers.ReLU().name,
             layers.GlobalAveragePooling2D().name, layers.DepthwiseConv2D(1).name,
             layers.MaxPooling2D().name]
    assert re.fullmatch(r"conv2d(_\d+)?", names[0])
    assert names[1] != names[0] and names[1].startswith("conv2d_")
    assert re.fullmatch(r"re_lu(_\d+)?", names[2])
    assert re.fullmatch(r"global_average_pooling2d(_\d+)?", names[3])
    assert re.fullmatch(r"depthwise_conv2d(_\d+)?", names[4])
    assert re.fullmatch(r"max_pooling2d(_\d+)?", names[5])
    assert layers.Dense(2, name="head").name == "head"


def test_conv2d_is_cross_correlation_with_bias_and_fused_relu():
    rng = np.random.default_rng(0)
    layer = layers.Conv2D(4, 3, padding="same", activation="relu")
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    layer.build((None, 6, 5, 3))
    layer.bias[...] = rng.normal(size=4)
    want = np.maximum(reference.conv2d(x, layer.kernel, layer.bias, padding="same"), 0)
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-5)


def test_channels_first_uses_the_same_hwio_kernel():
    rng = np.random.default_rng(1)
    last = layers.Conv2D(3, (2, 3), strides=(1, 2), activation="tanh")
    first = layers.Conv2D(3, (2, 3), strides=(1, 2), activation="tanh",
                          data_format="channels_first")
    x = rng.normal(size=(2, 5, 7, 2)).astype(np.float32)
    y_last = last(x)
    first.build((None, 2, 5, 7))
    first.set_weights(last.get_weights())
    np.testing.assert_allclose(first(x.transpose(0, 3, 1, 2)), y_last.transpose(0, 3, 1, 2),
                               rtol=1e-5, atol=1e-6)


def test_depthwise_output_channel_is_c_times_multiplier_plus_m():
    rng = np.random.default_rng(2)
    c, m = 3, 2
    layer = layers.DepthwiseConv2D(2, depth_multiplier=m, use_bias=False)
    x = rng.normal(size=(1, 4, 4, c)).astype(np.float32)
    y = layer(x)
    k = layer.kernel  # (2, 2, c, m)
    for ci in range(c):
        for mi in range(m):
            want = np.zeros((3, 3), np.float32)
            for i in range(3):
                for j in range(3):
                    want[i, j] = np.sum(x[0, i:i + 2, j:j + 2, ci] * k[:, :, ci, mi])
            np.testing.assert_allclose(y[0, :, :, ci * m + mi], want, rtol=1e-5, atol=1e-6)


def test_flatten_orders():
    x = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3)
    # channels_last: row-major over H, W, C (the array as it is).
    np.testing.assert_array_equal(layers.Flatten()(x), np.arange(12).reshape(1, 12))
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    # Flatten's default data_format flattens an NCHW array as it is: C first.
    np.testing.assert_array_equal(layers.Flatten()(nchw), nchw.reshape(1, 12))
    # data_format='channels_first' moves channels last first (Keras 3's Flatten.call), so the
    # NCHW image flattens in the same H, W, C order as its NHWC twin.
    np.testing.assert_array_equal(layers.Flatten(data_format="channels_first")(nchw),
                                  np.arange(12).reshape(1, 12))
    flat = layers.Flatten(data_format="channels_first")
    flat(nchw)
    dy = np.arange(12, dtype=np.float32).reshape(1, 12)
    np.testing.assert_array_equal(flat.backward(dy.copy()), nchw)


def test_relu_layer_matches_keras_docstring():
    x = np.array([[-3.0, -1.0, 0.0, 2.0]])
    assert layers.ReLU()(x).tolist() == [[0.0, 0.0, 0.0, 2.0]]
    assert layers.ReLU(max_value=1.0)(x).tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert layers.ReLU(negative_slope=1.0)(x).tolist() == [[-3.0, -1.0, 0.0, 2.0]]
    assert layers.ReLU(threshold=1.5)(x).tolist() == [[0.0, 0.0, 0.0, 2.0]]
    # Below the threshold: negative_slope * (x - threshold).
    np.testing.assert_allclose(layers.ReLU(negative_slope=0.5, threshold=1.0)(x),
                               [[-2.0, -1.0, -0.5, 2.0]])


def test_activations_by_name_and_function():
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    np.testing.assert_allclose(layers.Activation("sigmoid")(x), 1 / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_allclose(layers.Activation(activations.tanh)(x), np.tanh(x), rtol=1e-6)
    e = np.exp(x - 2)
    np.testing.assert_allclose(layers.Softmax()(x), e / e.sum(), rtol=1e-6)
    np.testing.assert_array_equal(layers.Activation(None)(x), x)
    np.testing.assert_array_equal(layers.Dense(3, activation="linear").activation(x), x)
    # Large logits neither overflow nor warn.
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert activations.sigmoid(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]


def test_dropout_scales_kept_units_and_is_identity_at_inference():
    x = np.ones((200, 50), np.float32)
    layer = layers.Dropout(0.25, seed=3)
    y = layer(x, training=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_array_equal(layer(x, training=False), x)
    again = layers.Dropout(0.25, seed=3)(x, training=True)
    np.testing.assert_array_equal(again, y)
    shared = layers.Dropout(0.5, noise_shape=(None, 1), seed=0)(x[:20], training=True)
    assert all(len(set(row)) == 1 for row in shared.tolist())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_in_one_pass_as_the_numpy_mask(dtype, isa, threads):
    """Dropout's forward and backward (ops._dropout, ops._dropout_backward) give the bits of
    the float mask's products, from random bits computed here the kernel's way, on every SIMD
    path and thread count: zeros keep their sign, an infinite input dropped gives NaN, NaN
    stays NaN."""
    rng = np.random.default_rng(5)
    # odd sized (the last pair's high half unused), past one thread's chunk of 32768
    x = rng.standard_normal((7, 51, 31, 9)).astype(dtype)
    x.flat[:6] = [np.inf, -np.inf, np.nan, -0.0, 0.0, -1.0]
    dy = rng.standard_normal(x.shape).astype(dtype)
    layer = layers.Dropout(0.3, seed=11, dtype=dtype)
    with kernel_path(isa, threads):
        y = layer(x, training=True)
        dx = layer.backward(dy.copy())
    # each element's 32 bits: a half of SplitMix64's hash of the layer's 64-bit key and its
    # pair's number (cyc_mix64), low half first
    key = np.uint64(utils.rng_from_seed(11).bit_generator.random_raw())
    z = key + (np.arange((x.size + 1) // 2, dtype=np.uint64) + np.uint64(1)) * np.uint64(
        0x9e3779b97f4a7c15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
    z ^= z >> np.uint64(31)
    bits = np.stack([z & np.uint64(0xffffffff), z >> np.uint64(32)], axis=1).ravel()
    keep = bits[:x.size].reshape(x.shape) >= round(0.3 * 2.0 ** 32)
    mask = keep.astype(dtype) * dtype(1 / 0.7)
    with np.errstate(invalid="ignore"):   # inf * 0
        wants = x * mask, dy * mask
    for got, want in zip((y, dx), wants):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    # a read-only gradient is not written
    ro = dy.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(layer.backward(ro), dy * mask)


def test_zero_padding_values():
    x = np.ones((1, 1, 2, 1), np.float32)
    y = layers.ZeroPadding2D(((1, 0), (0, 2)))(x)
    assert y[0, :, :, 0].tolist() == [[0, 0, 0, 0], [1, 1, 0, 0]]


def test_compute_fans_uses_the_receptive_field():
    assert initializers.compute_fans((3, 3, 32, 64)) == (288, 576)
    assert initializers.compute_fans((576, 64)) == (576, 64)
    assert initializers.compute_fans((7,)) == (7, 7)


def test_glorot_uniform_limit_with_receptive_field():
    kernel = layers.Conv2D(64, 3, kernel_initializer=initializers.GlorotUniform(seed=1))
    kernel.build((None, 8, 8, 32))
    limit = math.sqrt(6 / (288 + 576))
    k = kernel.kernel
    assert np.abs(k).max() <= limit
    assert np.abs(k).max() > 0.99 * limit
    assert abs(k.std() - limit / math.sqrt(3)) < 0.02 * limit  # uniform on [-l, l]
    dense = layers.Dense(64)
    dense.build((None, 576))
    assert np.abs(dense.kernel).max() <= math.sqrt(6 / (576 + 64))


def test_he_normal_is_truncated_with_keras_correction():
    w = initializers.HeNormal(seed=0)((3, 3, 64, 256))
    fan_in = 3 * 3 * 64
    stddev = math.sqrt(2 / fan_in) / 0.87962566103423978
    assert np.abs(w).max() <= 2 * stddev  # cut at two standard deviations
    # The correction makes the truncated samples' spread the nominal sqrt(2 / fan_in).
    assert abs(w.std() / math.sqrt(2 / fan_in) - 1) < 0.01
    u = initializers.get("he_uniform")((100, 200))
    assert np.abs(u).max() <= math.sqrt(6 / 100)
    g = initializers.get("glorot_normal")((100, 300))
    assert abs(g.std() / math.sqrt(2 / 400) - 1) < 0.03


def test_seeds_are_honoured():
    a = initializers.GlorotUniform(seed=7)((4, 5))
    np.testing.assert_array_equal(a, initializers.GlorotUniform(seed=7)((4, 5)))
    assert not np.array_equal(a, initializers.GlorotUniform(seed=8)((4, 5)))
    utils.set_random_seed(11)
    first = seed_model().get_weights()
    utils.set_random_seed(11)
    second = seed_model().get_weights()
    assert all(np.array_equal(p, q) for p, q in zip(first, second))
    assert not np.array_equal(first[0], seed_model().get_weights()[0])


def test_dtype_follows_floatx():
    backend.set_floatx("float64")
    try:
        layer = layers.Dense(2)
        assert layer(np.ones((1, 3), np.float32)).dtype == np.float64
    finally:
        backend.set_floatx("float32")
    assert layers.Dense(2, dtype="float64").dtype == "float64"


@pytest.mark.parametrize("make, message", [
    (lambda: layers.Conv2D(0, 3), "filters"),
    (lambda: layers.Conv2D(8, 3, padding="full"), "padding"),
    (lambda: layers.Conv2D(8, 3, strides=2, dilation_rate=2), "dilation_rate"),
    (lambda: layers.Conv2D(5, 3, groups=2), "divisible"),
    (lambda: layers.Conv2D(8, (3, 3, 3)), "kernel_size"),
    (lambda: layers.Conv2D(8, 3, activation="swishy"), "swishy"),
    (lambda: layers.Conv2D(8, 3, activation=np.sin), "cannot differentiate"),
    (lambda: layers.Conv2D(8, 3, kernel_initializer="nope"), "initializer"),
    (lambda: layers.Conv2D(8, 3, data_format="NHWC"), "data_format"),
    (lambda: layers.Dense(0), "units"),
    (lambda: layers.Dropout(1.5), "rate"),
    (lambda: layers.ReLU(max_value=-1), "max_value"),
    (lambda: layers.MaxPooling2D(0), "pool_size"),
])
def test_bad_layer_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="kernel_sise"):
        layers.Conv2D(8, 3, kernel_sise=3)


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="expected ndim=4, found ndim=3"):
        layers.Conv2D(8, 3).build((None, 28, 28))
    with pytest.raises(ValueError, match="too small"):
        layers.Conv2D(8, 5).build((None, 3, 3, 1))
    with pytest.raises(ValueError, match="too small"):
        models.Sequential([layers.Input(shape=(4, 4, 1)), layers.MaxPooling2D(5)])
    with pytest.raises(ValueError, match="groups"):
        layers.Conv2D(4, 3, groups=2).build((None, 8, 8, 3))
    dense = layers.Dense(3)
    dense(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"expected shape=\(None, 4\), found shape=\(2, 5\)"):
        dense(np.ones((2, 5)))
