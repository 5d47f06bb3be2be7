"""Whole small models against central finite differences, in float64.

Each check perturbs every weight and every input value of a small model (dropout off) and
compares the loss's change with the gradient the training step computes: the conv, pool, dense
and activation backward passes, the first layer's skipped input gradient, and the softmax/sigmoid
logits shortcut of the cross-entropies all meet the same oracle.
"""

from __future__ import annotations

import numpy as np
import pytest

from cyconv.keras import backend, layers, losses, models, utils
from helpers import assert_close


@pytest.fixture(autouse=True)
def float64():
    # Seeded initial weights: a central difference of step h is wrong where the loss has a kink
    # (a ReLU at 0, a max-pool tie) within h of a weight, and unseeded weights met one in CI.
    utils.set_random_seed(0)
    backend.set_floatx("float64")
    yield
    backend.set_floatx("float32")


def assert_gradients_match(model, x, y, h=1e-6, rtol=1e-5, atol=1e-8, training=False):
    loss, grads, dx = model._gradients(x, y, training=training)
    targets = list(zip(model.weights, grads)) + [(x, dx)]
    for k, (w, g) in enumerate(targets):
        assert g.shape == w.shape
        flat, gflat = w.reshape(-1), g.reshape(-1)
        numeric = np.empty_like(gflat)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            up = model._gradients(x, y, training=training)[0]
            flat[i] = old - h
            down = model._gradients(x, y, training=training)[0]
            flat[i] = old
            numeric[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(gflat, numeric, rtol=rtol, atol=atol,
                                   err_msg=f"array {k} of {len(targets)} (last = input)")


def _random_biases(model, rng):
    for layer in model.layers:
        if getattr(layer, "use_bias", False):
            layer.bias[...] = rng.normal(0, 0.1, layer.bias.shape)


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_conv_pool_dense_model(fmt):
    rng = np.random.default_rng(0)
    shape = (7, 8, 2) if fmt == "channels_last" else (2, 7, 8)
    model = models.Sequential([
        layers.Input(shape=shape),
        layers.ZeroPadding2D(((1, 0), (0, 1)), data_format=fmt),
        layers.Conv2D(3, 3, activation="relu", data_format=fmt),
        layers.MaxPooling2D(2, padding="same", data_format=fmt),
        layers.DepthwiseConv2D(2, depth_multiplier=2, activation="tanh", padding="same",
                               data_format=fmt),
        layers.AveragePooling2D(2, strides=1, padding="same", data_format=fmt),
        layers.Conv2D(4, 1, groups=2, activation="sigmoid", data_format=fmt),
        layers.Flatten(data_format=fmt),
        layers.Dense(5, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(3),
    ])
    _random_biases(model, rng)
    model.compile("sgd", losses.SparseCategoricalCrossentropy(from_logits=True))
    assert_gradients_match(model, rng.random((3,) + shape), rng.integers(0, 3, 3))


def test_global_pools_and_fused_softmax_output():
    rng = np.random.default_rng(1)
    model = models.Sequential([
        layers.Input(shape=(5, 6, 3)),
        layers.Conv2D(4, 2, strides=2, padding="same", activation="tanh"),
        layers.GlobalMaxPooling2D(keepdims=True),
        layers.Flatten(),
        layers.ReLU(max_value=0.8, negative_slope=0.1, threshold=-0.05),
        layers.Dense(4, activation="softmax"),
    ])
    _random_biases(model, rng)
    model.compile("sgd", "sparse_categorical_crossentropy")
    assert_gradients_match(model, rng.normal(size=(3, 5, 6, 3)), rng.integers(0, 4, 3))

    avg = models.Sequential([layers.Input(shape=(3, 4, 5)),
                             layers.GlobalAveragePooling2D(data_format="channels_first"),
                             layers.Dense(2), layers.Softmax()])
    avg.compile("sgd", "categorical_crossentropy")
    assert_gradients_match(avg, rng.normal(size=(2, 3, 4, 5)), np.eye(2)[[0, 1]])


@pytest.mark.parametrize("loss, last, targets", [
    ("categorical_crossentropy", layers.Activation("softmax"), "onehot"),
    (losses.CategoricalCrossentropy(label_smoothing=0.1), layers.Softmax(), "onehot"),
    ("binary_crossentropy", layers.Activation("sigmoid"), "binary"),
    (losses.BinaryCrossentropy(from_logits=True), layers.Activation("linear"), "binary"),
    ("mse", layers.Activation("tanh"), "binary"),
    # Probabilities that are not a softmax's: the clipped-probability formulas.
    (losses.SparseCategoricalCrossentropy(), layers.Activation("sigmoid"), "sparse"),
    (losses.CategoricalCrossentropy(), layers.Activation("sigmoid"), "onehot"),
    (losses.BinaryCrossentropy(), layers.Softmax(), "binary"),
])
def test_losses_and_output_activations(loss, last, targets):
    rng = np.random.default_rng(2)
    model = models.Sequential([layers.Input(shape=(4,)), layers.Dense(5, activation="tanh"),
                               layers.Dense(3), last])
    _random_biases(model, rng)
    model.compile("sgd", loss)
    y = {"onehot": np.eye(3)[rng.integers(0, 3, 4)],
         "binary": rng.integers(0, 2, (4, 3)).astype(float),
         "sparse": rng.integers(0, 3, 4)}[targets]
    assert_gradients_match(model, rng.normal(size=(4, 4)), y)


def test_first_layer_skips_its_input_gradient_in_training():
    model = models.Sequential([layers.Input(shape=(6, 6, 1)), layers.MaxPooling2D(),
                               layers.Conv2D(2, 2), layers.Flatten(), layers.Dense(2)])
    assert [layer.need_input_grad for layer in model.layers] == [False, False, True, True]


def relu_pool_model(fmt="channels_last"):
    shape = (7, 8, 2) if fmt == "channels_last" else (2, 7, 8)
    return shape, models.Sequential([
        layers.Input(shape=shape),
        layers.Conv2D(3, 3, activation="relu", padding="same", data_format=fmt),
        layers.MaxPooling2D(2, strides=1, data_format=fmt),          # overlapping windows
        layers.Conv2D(4, 1, data_format=fmt),
        layers.Activation("relu"),
        layers.MaxPooling2D(2, padding="same", data_format=fmt),
        layers.Flatten(data_format=fmt),
        layers.Dense(3),
    ])


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_max_pools_after_relus_carry_their_gradient_in_training(fmt):
    # In a training step each max-pool after a ReLU records no cell for windows whose maximum
    # is 0, and the ReLU before it skips its own mask; the oracle is the same.
    rng = np.random.default_rng(1)
    shape, model = relu_pool_model(fmt)
    _random_biases(model, rng)
    model.compile("sgd", losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = rng.random((3,) + shape) - 0.3, rng.integers(0, 3, 3)
    assert_gradients_match(model, x, y, training=True)
    pools = [layer for layer in model.layers if isinstance(layer, layers.MaxPooling2D)]
    assert all(pool.relu_grad_applied for pool in pools)


def test_relu_pool_gradient_is_the_same_to_the_bit_as_the_two_apart():
    backend.set_floatx("float32")
    rng = np.random.default_rng(2)
    from cyconv.cli import seed_model

    model = seed_model()
    x, y = rng.random((16, 28, 28, 1), np.float32), rng.integers(0, 10, 16)
    model.build((None, 28, 28, 1))
    fused = model._gradients(x, y, training=True)
    assert model.layers[1].relu_grad_applied
    model._relu_pools = frozenset()          # each layer its own gradient
    apart = model._gradients(x, y, training=True)
    assert not model.layers[1].relu_grad_applied
    # the flags that carried the fusion were for those calls only
    assert not model.layers[0]._relu_grad_done_downstream
    assert not model.layers[1]._input_from_relu
    assert fused[0] == apart[0]
    for a, b in zip(fused[1] + [fused[2]], apart[1] + [apart[2]]):
        assert np.array_equal(a, b)


def test_first_conv_reads_the_pool_gradient_through_its_cells(monkeypatch):
    # A training step of the seed model: its first convolution's weight gradient is read
    # through the first pool's cells (the pool's input gradient is never written), by the
    # pool's windows (its ReLU's gradient is in the cells); the weights after the step are
    # those of the two steps apart, within rounding: the windows add the same products in
    # another order.
    from cyconv.cli import seed_model

    backend.set_floatx("float32")
    rng = np.random.default_rng(3)
    x, y = rng.random((32, 28, 28, 1), np.float32), rng.integers(0, 10, 32)
    fused = seed_model()
    apart = seed_model()
    apart.set_weights(fused.get_weights())
    calls = []
    real = layers.Conv2D.backward_through_pool
    monkeypatch.setattr(layers.Conv2D, "backward_through_pool",
                        lambda self, dy, pool: calls.append(1) or real(self, dy, pool))
    fused.train_on_batch(x, y)
    assert calls == [1]
    monkeypatch.setattr(layers.Conv2D, "takes_gradient_through", lambda self, pool: False)
    apart.train_on_batch(x, y)
    assert calls == [1]
    # (Adam's first step moves each weight by about its learning rate whatever the gradient's
    # size, so the gradients themselves are compared too)
    for a, b in zip(fused.layers[0].gradients, apart.layers[0].gradients):
        assert_close(a, b, "the first layer's gradients")
    for a, b in zip(fused.get_weights(), apart.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["pool same padding", "overlapping pool", "channels_first",
                                  "frozen conv"])
def test_first_conv_takes_the_pool_gradient_only_where_it_may(case, monkeypatch):
    backend.set_floatx("float32")
    fmt = "channels_first" if case == "channels_first" else "channels_last"
    shape = (1, 9, 9) if fmt == "channels_first" else (9, 9, 1)
    pool = {"pool same padding": dict(pool_size=2, padding="same"),
            "overlapping pool": dict(pool_size=3, strides=2)}.get(case, dict(pool_size=2))

    def model():
        m = models.Sequential([
            layers.Input(shape=shape),
            layers.Conv2D(4, 3, activation="relu", padding="same", data_format=fmt,
                          trainable=case != "frozen conv"),
            layers.MaxPooling2D(data_format=fmt, **pool),
            layers.Conv2D(3, 2, data_format=fmt),
            layers.Flatten(data_format=fmt),
            layers.Dense(2),
        ])
        m.compile("sgd", losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    rng = np.random.default_rng(4)
    x, y = rng.random((4,) + shape, np.float32) - 0.5, rng.integers(0, 2, 4)
    a, b = model(), model()
    b.set_weights(a.get_weights())
    monkeypatch.setattr(layers.Conv2D, "backward_through_pool",
                        lambda *args: pytest.fail("took the pool's gradient through its cells"))
    a.train_on_batch(x, y)
    monkeypatch.setattr(layers.Conv2D, "takes_gradient_through", lambda self, pool: False)
    b.train_on_batch(x, y)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(wa, wb)


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_conv_and_pool_in_one_pass_train_and_predict_to_the_bit(monkeypatch, fmt):
    # The seed model's Conv2D + MaxPooling2D pairs run in one pass (the convolution's output is
    # never written); a training step and predictions are those of the layers one by one.
    from cyconv.cli import seed_model

    backend.set_floatx("float32")
    rng = np.random.default_rng(5)
    shape = (28, 28, 1) if fmt == "channels_last" else (1, 28, 28)
    x, y = rng.random((32,) + shape, np.float32), rng.integers(0, 10, 32)
    one, apart = seed_model(data_format=fmt), seed_model(data_format=fmt)
    apart.set_weights(one.get_weights())
    apart.fuse_conv_pool = False
    calls = []
    real = layers.Conv2D.forward_with_pool
    monkeypatch.setattr(layers.Conv2D, "forward_with_pool",
                        lambda self, *a, **k: calls.append(self.name) or real(self, *a, **k))
    assert np.array_equal(one.predict(x, verbose=0), apart.predict(x, verbose=0))
    assert len(calls) == 2                     # both pairs, in inference
    one.train_on_batch(x, y)
    apart.train_on_batch(x, y)
    assert len(calls) == 4
    for a, b in zip(one.get_weights(), apart.get_weights()):
        assert np.array_equal(a, b)
    pool = one.layers[1]
    assert pool.relu_grad_applied and pool._indices.dtype == np.uint8
    conv_out = (32, 26, 26, 32) if fmt == "channels_last" else (32, 32, 26, 26)
    assert pool._x.shape == conv_out and pool._x.strides == (0, 0, 0, 0)


@pytest.mark.parametrize("case", ["linear", "two formats", "pool same padding",
                                  "big pool window"])
def test_conv_and_pool_run_apart_where_one_pass_does_not_apply(case):
    backend.set_floatx("float32")
    fmt = "channels_first" if case == "two formats" else "channels_last"
    shape = (1, 20, 20) if fmt == "channels_first" else (20, 20, 1)
    pool = {"pool same padding": dict(pool_size=2, padding="same"),
            "big pool window": dict(pool_size=16),
            "two formats": dict(pool_size=2, data_format="channels_last")}.get(
                case, dict(pool_size=2, data_format=fmt))
    m = models.Sequential([
        layers.Input(shape=shape),
        layers.Conv2D(4, 3, activation="linear" if case == "linear" else "relu",
                      data_format=fmt),
        layers.MaxPooling2D(**pool),
    ])
    m.build((None,) + shape)
    assert not m._conv_pools


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_gradients_through_a_conv_and_pool_run_in_one_pass(training):
    # a Conv2D + MaxPooling2D pair in one pass in the middle of a model (its input gradient
    # wanted), and as a first layer; gradients after a forward pass in either mode
    model = models.Sequential([
        layers.Input(shape=(9, 8, 2)),
        layers.Conv2D(5, 2, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(3, 1, activation="relu"),
        layers.MaxPooling2D((2, 1)),
        layers.Flatten(),
        layers.Dense(3),
    ])
    model.compile("sgd", losses.SparseCategoricalCrossentropy(from_logits=True))
    model.build((None, 9, 8, 2))
    assert model._conv_pools == {1, 3}   # the pools (the Input is not a layer of the model)
    rng = np.random.default_rng(7)
    x, y = rng.random((2, 9, 8, 2)) - 0.3, rng.integers(0, 3, 2)
    assert_gradients_match(model, x, y, training=training)
