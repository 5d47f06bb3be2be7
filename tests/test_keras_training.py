"""Training with cyconv.keras: Keras's numbers, pinned by hand-computed cases.

Sources of the Keras facts (Keras 3, keras/src/...): optimizers/{adam,rmsprop,sgd}.py for the
update rules; backend/tensorflow/nn.py for the cross-entropies (clipping, and _get_logits, which
takes a softmax/sigmoid output's logits); trainers/compile_utils.py for how 'accuracy' resolves;
backend/tensorflow/trainer.py for the Mean loss tracker weighted by batch size;
trainers/data_adapters/array_slicing.py for validation_split; utils/python_utils.py
(pythonify_logs sorts the logs); callbacks/early_stopping.py.
"""

from __future__ import annotations

import io
import math
import os
import re
import signal
import sys
import types

import numpy as np
import pytest

import cyconv
from cyconv import _args, _kernels, keras, ops
from cyconv.keras import callbacks, layers, losses, metrics, models, optimizers

from keras_data import fashion_subset

SEED_PROGRAM = """\
import tensorflow as tf
from tensorflow.keras import layers, models

# 定义卷积神经网络模型
model = models.Sequential()
model.add(layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation='relu'))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation='relu'))
model.add(layers.Flatten())
model.add(layers.Dense(64, activation='relu'))
model.add(layers.Dense(10))

# 编译模型
model.compile(optimizer='adam',
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=['accuracy'])

# 加载数据集
(train_images, train_labels), (test_images, test_labels) = tf.keras.datasets.mnist.load_data()

# 数据预处理
train_images = train_images.reshape((60000, 28, 28, 1))
train_images = train_images / 255.0
test_images = test_images.reshape((10000, 28, 28, 1))
test_images = test_images / 255.0

# 训练模型
model.fit(train_images, train_labels, epochs=5, validation_data=(test_images, test_labels))
"""


def test_seed_program_runs_with_only_the_imports_changed(monkeypatch, capsys):
    n_train, n_test = 2000, 500
    program = (SEED_PROGRAM
               .replace("import tensorflow as tf", "import cyconv as tf")
               .replace("from tensorflow.keras import", "from cyconv.keras import")
               .replace("(60000, 28, 28, 1)", f"({n_train}, 28, 28, 1)")
               .replace("(10000, 28, 28, 1)", f"({n_test}, 28, 28, 1)")
               .replace("epochs=5", "epochs=1"))
    assert program.count("cyconv") == 2 and "tensorflow" not in program
    data = fashion_subset(n_train, n_test)
    # tf.keras.datasets.mnist.load_data() gives real Fashion-MNIST subsets, to keep this fast.
    fake = types.SimpleNamespace(mnist=types.SimpleNamespace(load_data=lambda: data))
    monkeypatch.setattr(keras, "datasets", fake, raising=False)
    assert cyconv.keras is keras
    namespace = {}
    exec(compile(program, "seed_program", "exec"), namespace)
    out = capsys.readouterr().out
    assert "img/s" in out and "val_accuracy" in out
    model = namespace["model"]
    assert model.count_params() == 93322
    loss, accuracy = model.evaluate(namespace["test_images"], namespace["test_labels"],
                                    verbose=0)
    assert accuracy > 0.6, accuracy  # chance is 0.1
    assert model.history.history["val_accuracy"] == [pytest.approx(accuracy)]


def test_small_cnn_learns_fashion_mnist_quickly():
    (x, y), (xt, yt) = fashion_subset(2000, 1000)
    keras.utils.set_random_seed(0)
    model = models.Sequential([
        layers.Input(shape=(28, 28, 1)),
        layers.Conv2D(16, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(16, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dropout(0.2),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x[..., None] / 255.0, y, epochs=3, verbose=0,
                        validation_data=(xt[..., None] / 255.0, yt))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] > 0.7, history.history


# --- optimizers: one step at a time, against Keras's update rules -------------------------

def steps(optimizer, grad_of, w0, n):
    w = np.array(w0, dtype=np.float32)
    for _ in range(n):
        optimizer.apply([grad_of(w)], [w])
    return w


def test_adam_defaults_are_keras():
    opt = optimizers.Adam()
    assert (opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    assert optimizers.get("adam").get_config() == opt.get_config()


def test_adam_adds_epsilon_to_sqrt_v_not_to_sqrt_v_hat():
    # One step with g = 1e-6, lr = 0.1: Keras computes alpha = lr*sqrt(1-b2)/(1-b1) and
    # m*alpha/(sqrt(v)+eps) = 0.0240253; adding eps to sqrt(v_hat) would step by 0.0909.
    w = steps(optimizers.Adam(learning_rate=0.1), lambda w: np.full_like(w, 1e-6), [1.0], 1)
    np.testing.assert_allclose(w, [1 - 0.024025307335204225], rtol=1e-6)


def test_adam_bias_correction_over_two_steps():
    grads = iter([0.5, -0.25])
    w = steps(optimizers.Adam(learning_rate=0.01), lambda w: np.full_like(w, next(grads)),
              [1.0], 2)
    np.testing.assert_allclose(w, [0.9873367079207922], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_fused_kernel_matches_the_numpy_steps_bit_for_bit(dtype, kernel, monkeypatch):
    """All the fusable weights go through the kernel in one call per dtype, in pieces spread
    over the threads (the kernel fixture runs 1 and 2 threads, every SIMD level): the same bits
    as the numpy passes, weight by weight."""
    rng = np.random.default_rng(3)
    other = np.float64 if dtype == np.float32 else np.float32
    # odd sizes (vector body and scalar tail), one of several pieces, a single element, a
    # weight of the other dtype, and a non-contiguous one that only numpy can take
    w0 = [rng.standard_normal(shape).astype(dt) for shape, dt in [
        ((3, 3, 8, 17), dtype), ((2 * _kernels.ADAM_PIECE + 5,), dtype), ((1,), dtype),
        ((7, 3), other), ((33,), dtype)]]

    def run():
        ws = [w.copy() for w in w0]
        ws[-1] = np.repeat(ws[-1], 2)[::2]   # strided: not fusable
        opt = optimizers.Adam(learning_rate=0.01)
        for step in range(4):
            opt.apply([rng_g.standard_normal(w.shape).astype(w.dtype) for w in ws], ws)
        return ws

    rng_g = np.random.default_rng(4)
    fused = run()
    monkeypatch.setattr(optimizers, "_fusable", lambda *arrays: False)
    rng_g = np.random.default_rng(4)
    apart = run()
    for a, b, w in zip(fused, apart, w0):
        assert a.dtype == w.dtype and np.array_equal(a, b)
        assert not np.array_equal(a, w)


def test_adam_momentum_of_a_dead_weight_stops_where_tensorflow_stops_it(kernel):
    """TensorFlow runs its CPU kernels with subnormal numbers flushed to zero.  Keras's Adam on
    TF 2.21, one step with gradient 1e-3 then 900 with 0: the momentum (x 0.9 per step) stops
    at 1.1339839e-37, where its decay (a tenth of it) would be subnormal, and velocity is
    4.0638692e-10.  The fused kernel runs so too: the subnormals had made it 4x slower once
    dead units' moments decayed into them."""
    w = np.ones(1, np.float32)
    opt = optimizers.Adam()
    opt.apply([np.full(1, 1e-3, np.float32)], [w])
    for _ in range(900):
        opt.apply([np.zeros(1, np.float32)], [w])
    np.testing.assert_allclose(opt._slots["momentum"][0], [1.1339839e-37], rtol=1e-4)
    np.testing.assert_allclose(opt._slots["velocity"][0], [4.0638692e-10], rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_kernel_flushes_subnormals_and_gives_the_threads_modes_back(dtype, kernel):
    tiny = np.finfo(dtype).tiny   # the smallest normal number
    n = 3 * _kernels.ADAM_PIECE + 7   # pieces for both threads
    var, g = np.ones(n, dtype), np.zeros(n, dtype)
    m, v = np.full(n, tiny * 1.05, dtype), np.full(n, 1e-6, dtype)
    m[1::3] = tiny / 4    # subnormal: read as 0
    m[2::3] = 0.5         # normal throughout: numpy's arithmetic
    expect = m[2::3] + (g[2::3] - m[2::3]) * dtype(0.1)
    ops._adam_update([var], [g], [m], [v], 1e-3, 0.1, 0.001, 1e-7)
    assert np.all(m[0::3] == dtype(tiny * 1.05))   # a tenth of it is subnormal: 0
    assert not m[1::3].any()
    assert np.array_equal(m[2::3], expect)
    # the modes came back: numpy on this thread and the convolutions on every thread still
    # make subnormals (256 pixels: chunks for both threads where the fixture runs 2)
    assert dtype(tiny) * dtype(0.5) > 0
    half = np.sqrt(tiny, dtype=dtype)
    x = np.full((1, 16, 16, 4), half, dtype)
    w = np.full((1, 1, 4, 8), half / 8, dtype)
    y = np.empty((1, 16, 16, 8), dtype)
    geom = _args.conv_geometry(x.shape, w.shape, 1, "valid", 1, 1, "NHWC")
    _kernels.conv2d_forward(x, w, None, geom, False, y, cyconv.get_num_threads())
    assert np.all(y == dtype(tiny) / 2)


def test_adam_refuses_a_weight_made_read_only_after_it_was_built():
    w = np.ones(5, np.float32)
    opt = optimizers.Adam()
    opt.apply([np.ones(5, np.float32)], [w])
    w.flags.writeable = False
    before = w.copy()
    with pytest.raises(ValueError, match="read-only"):
        opt.apply([np.ones(5, np.float32)], [w])
    assert np.array_equal(w, before)


def test_adam_updates_the_fusable_weights_in_one_call(monkeypatch):
    calls = []
    real = ops._adam_update
    monkeypatch.setattr(ops, "_adam_update", lambda *a: calls.append(len(a[0])) or real(*a))
    ws = [np.ones(5, np.float32), np.ones((2, 3), np.float32), np.ones(4)]
    optimizers.Adam().apply([np.ones_like(w) for w in ws], ws)
    assert sorted(calls) == [1, 2]   # the float32 pair together, the float64 one apart


def test_rmsprop_puts_epsilon_inside_the_square_root():
    # Keras's RMSprop docstring: var 10, lr 0.1, loss var**2 / 2 -> 9.683772.
    w = steps(optimizers.RMSprop(learning_rate=0.1), lambda w: w.copy(), [10.0], 1)
    np.testing.assert_allclose(w, [9.683772], rtol=1e-6)
    # g = 1e-4: lr*g/sqrt(v + eps) = 0.0314658; lr*g/(sqrt(v) + eps) would be 0.3152.
    w = steps(optimizers.RMSprop(learning_rate=0.1), lambda w: np.full_like(w, 1e-4), [1.0], 1)
    np.testing.assert_allclose(w, [1 - 0.03146583877637763], rtol=1e-6)


def test_rmsprop_momentum_and_centered():
    w = steps(optimizers.RMSprop(learning_rate=0.01, momentum=0.5), lambda w: w.copy(), [1.0], 2)
    np.testing.assert_allclose(w, [0.9299766661118093], rtol=1e-6)
    w = steps(optimizers.RMSprop(learning_rate=0.01, centered=True), lambda w: w.copy(), [1.0], 2)
    np.testing.assert_allclose(w, [0.9415901692607475], rtol=1e-6)


def test_sgd_momentum_and_nesterov_as_keras3():
    assert steps(optimizers.SGD(0.1), lambda w: w.copy(), [1.0], 1) == pytest.approx([0.9])
    # velocity = 0.9*velocity - lr*g; w += velocity:  1 -> 0.9 -> 0.72.
    w = steps(optimizers.SGD(0.1, momentum=0.9), lambda w: w.copy(), [1.0], 2)
    np.testing.assert_allclose(w, [0.72], rtol=1e-6)
    # Nesterov: w += 0.9*velocity - lr*g:  1 -> 0.81 -> 0.5751.
    w = steps(optimizers.SGD(0.1, momentum=0.9, nesterov=True), lambda w: w.copy(), [1.0], 2)
    np.testing.assert_allclose(w, [0.5751], rtol=1e-6)
    assert optimizers.SGD().learning_rate == 0.01


def test_optimizer_state_and_clipping():
    opt = optimizers.Adam()
    w = np.ones(3, np.float32)
    opt.apply([np.ones(3, np.float32)], [w])
    state = opt.get_state()
    assert [np.shape(s) for s in state] == [(), (), (3,), (3,)]
    assert int(state[0]) == 1 and opt.iterations == 1
    clipped = steps(optimizers.SGD(1.0, clipnorm=1.0), lambda w: np.full_like(w, 3.0),
                    [0.0, 0.0, 0.0, 0.0], 1)
    np.testing.assert_allclose(clipped, [-0.5] * 4, rtol=1e-6)  # |g| = 6 scaled to 1
    clipped = steps(optimizers.SGD(1.0, clipvalue=0.5), lambda w: np.array([2.0, -0.1], "f4"),
                    [0.0, 0.0], 1)
    np.testing.assert_allclose(clipped, [-0.5, 0.1], rtol=1e-6)


def test_ctrl_c_during_an_update_is_held_until_every_weight_is_updated(monkeypatch):
    opt = optimizers.SGD(1.0)
    a, b = np.zeros(2, np.float32), np.zeros(3, np.float32)
    original = optimizers.SGD.update_step
    calls = []

    def interrupted_step(self, i, g, var):
        calls.append(i)
        if i == 0:
            os.kill(os.getpid(), signal.SIGINT)
        original(self, i, g, var)

    monkeypatch.setattr(optimizers.SGD, "update_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        opt.apply([np.ones(2, np.float32), np.ones(3, np.float32)], [a, b])
    assert calls == [0, 1]
    assert a.tolist() == [-1, -1] and b.tolist() == [-1, -1, -1]
    assert opt.iterations == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- losses -----------------------------------------------------------------------------

def test_loss_values_match_hand_computation():
    scce = losses.SparseCategoricalCrossentropy(from_logits=True)
    assert float(scce([2], [[1.0, 2.0, 3.0]])) == pytest.approx(0.40760596444438013, rel=1e-6)
    # Keras's docstring examples.
    y_pred = [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]
    assert float(losses.SparseCategoricalCrossentropy()([1, 2], y_pred)) == pytest.approx(
        1.1769392436907955, rel=1e-6)
    assert float(losses.CategoricalCrossentropy()([[0, 1, 0], [0, 0, 1]], y_pred)) == \
        pytest.approx(1.176939193690798, rel=1e-6)
    bce = losses.BinaryCrossentropy(from_logits=True)
    assert float(bce([0, 1, 0, 0], [-18.6, 0.51, 2.94, -12.8])) == pytest.approx(
        0.8654579497810972, rel=1e-6)
    assert float(losses.BinaryCrossentropy()([[1], [0]], [[0.9], [0.2]])) == pytest.approx(
        0.164252033486018, rel=1e-6)
    assert float(losses.MeanSquaredError()([[1.0, 2.0]], [[0.0, 0.0]])) == 2.5
    assert float(losses.get("mse")([[0.0], [0.0]], [[1.0], [3.0]])) == 5.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum"])
def test_sparse_cross_entropy_of_logits_in_one_kernel_call_as_numpy(dtype, reduction,
                                                                     monkeypatch):
    """A training step's loss (integer labels, one per row of logits) goes through one kernel
    call (ops._sparse_softmax_xent); the numpy passes that call() reduces give the same
    within rounding, a NaN or infinite logit making its row NaN in both."""
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((37, 10)) * 6).astype(dtype)
    scce = losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    scale = 37 if reduction == "sum_over_batch_size" else 1
    for labels in (rng.integers(0, 10, 37).astype(np.uint8), rng.integers(0, 10, (37, 1))):
        per_sample, want = scce._value_and_grad(labels, z, None, True)
        with monkeypatch.context() as m:
            # the numpy path is not taken
            m.setattr(losses, "_sparse_xent_from_logits", None)
            value, grad = scce.value_and_grad(labels, z)
            assert scce.value(labels, z) == value
        assert grad.dtype == dtype and grad.shape == z.shape
        # each row's loss is rounded to z's dtype (exp and log are numpy's own in one path,
        # the C library's in the other)
        assert value == pytest.approx(float(np.sum(per_sample, dtype=np.float64)) / scale,
                                      rel=1e-6 if dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(grad, want / dtype(scale), rtol=1e-5 if dtype == np.float32
                                   else 1e-13, atol=1e-7 / scale)
    z[4, 2], z[9, 0] = np.nan, np.inf
    value, grad = scce.value_and_grad(labels, z)
    assert math.isnan(value)
    assert np.isnan(grad).any(axis=1).tolist() == [i in (4, 9) for i in range(37)]
    # by hand: log(e + e^2 + e^3) - 3
    assert scce.value_and_grad(np.array([2]), np.array([[1.0, 2.0, 3.0]]))[0] == \
        pytest.approx(0.40760596444438013, rel=1e-12)
    with pytest.raises(ValueError, match="label value of 10 which is outside the valid range "
                                         r"of \[0, 10\)"):
        scce.value_and_grad(np.array([1, 10]), z[:2])


def test_cross_entropies_from_probabilities_as_tensorflow():
    # Sparse: clipped probabilities are logged and fed to a softmax cross-entropy, which
    # renormalises them: -log(0.2) + log(0.6) = log(3).
    scce = losses.SparseCategoricalCrossentropy()
    assert float(scce([0], [[0.2, 0.2, 0.2]])) == pytest.approx(math.log(3), rel=1e-6)
    # A zero probability is clipped to epsilon = 1e-7.
    assert float(scce([0], [[0.0, 1.0]])) == pytest.approx(16.11809565095832, rel=1e-5)
    # Categorical: divided by their sum first: [1, 1, 2] -> 0.5 for the true class.
    cce = losses.CategoricalCrossentropy()
    assert float(cce([[0, 0, 1]], [[1.0, 1.0, 2.0]])) == pytest.approx(math.log(2), rel=1e-6)
    assert float(losses.BinaryCrossentropy()([[0.0]], [[1.0]])) == pytest.approx(
        16.11809565095832, rel=1e-5)
    # From logits nothing is clipped: a logit of 100 on the wrong side costs 100.
    assert float(losses.BinaryCrossentropy(from_logits=True)([[0.0]], [[100.0]])) == 100.0


def test_softmax_output_cross_entropy_uses_the_logits_as_tensorflow_keras():
    model = models.Sequential([layers.Input(shape=(1,)),
                               layers.Dense(2, use_bias=False, activation="softmax")])
    model.set_weights([np.array([[0.0, 200.0]])])
    model.compile("sgd", "sparse_categorical_crossentropy")
    # Logits [0, 200], label 0: log-sum-exp gives 200; clipped probabilities would give 16.1.
    assert model.evaluate(np.ones((1, 1)), np.array([0]), verbose=0) == pytest.approx(200.0)
    assert model.predict(np.ones((1, 1)), verbose=0).tolist() == [[0.0, 1.0]]
    binary = models.Sequential([layers.Input(shape=(1,)),
                                layers.Dense(1, use_bias=False, activation="sigmoid")])
    binary.set_weights([np.array([[100.0]])])
    binary.compile("sgd", "binary_crossentropy")
    assert binary.evaluate(np.ones((1, 1)), np.zeros((1, 1)), verbose=0) == pytest.approx(100.0)


def test_from_logits_on_a_softmax_output_warns_and_uses_the_logits():
    model = models.Sequential([layers.Input(shape=(1,)), layers.Dense(2, use_bias=False),
                               layers.Softmax()])
    model.set_weights([np.array([[0.0, 200.0]])])
    model.compile("sgd", losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.warns(UserWarning, match="does not represent logits"):
        assert model.evaluate(np.ones((1, 1)), np.array([0]), verbose=0) == pytest.approx(200.0)


# --- what fit and evaluate report --------------------------------------------------------

def linear_model(w=1.0, optimizer=None, loss="mse", metrics=None):
    model = models.Sequential([layers.Input(shape=(1,)), layers.Dense(1, use_bias=False)])
    model.set_weights([np.array([[w]])])
    model.compile(optimizer or optimizers.SGD(0.0), loss, metrics=metrics)
    return model


X5 = np.arange(1.0, 6.0).reshape(5, 1)


def test_fit_reports_the_batch_size_weighted_mean_of_pre_update_losses():
    # Frozen weights: per-sample losses 1, 4, 9, 16, 25.  Batches of 2, 2, 1 have means
    # 2.5, 12.5, 25; Keras's Mean tracker weighs them 2:2:1 -> 11 (not 13.33).
    h = linear_model().fit(X5, np.zeros(5), batch_size=2, shuffle=False, verbose=0)
    assert h.history["loss"] == [pytest.approx(11.0)]
    # Learning (SGD 0.01): each batch's loss is taken before its own update:
    # w 1 -> 0.95 -> 0.7125 -> 0.35625, losses 2.5, 11.28125, 12.69140625 -> 8.05078125.
    model = linear_model(optimizer=optimizers.SGD(0.01))
    h = model.fit(X5, np.zeros(5), batch_size=2, shuffle=False, verbose=0)
    assert h.history["loss"] == [pytest.approx(8.05078125, rel=1e-6)]
    assert model.get_weights()[0].item() == pytest.approx(0.35625, rel=1e-6)


def test_evaluate_averages_uneven_batches_by_sample_count():
    model = models.Sequential([layers.Input(shape=(2,)), layers.Dense(2, use_bias=False)])
    model.set_weights([np.eye(2)])
    model.compile("sgd", losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x = np.array([[2, 0], [2, 0], [2, 0], [0, 2], [2, 0]], np.float32)
    y = np.array([0, 0, 1, 0, 0])
    # Correct, correct | wrong, wrong | correct: 3/5 = 0.6 (the mean of batch means: 0.667);
    # losses log1p(e**-2) x3 and log1p(e**2) x2 -> 0.926928 (mean of batch means: 0.7936).
    loss, accuracy = model.evaluate(x, y, batch_size=2, verbose=0)
    assert accuracy == pytest.approx(0.6)
    assert loss == pytest.approx(0.9269280110429725, rel=1e-6)
    assert model.evaluate(x, y, batch_size=5, verbose=0) == pytest.approx([loss, accuracy])
    assert model.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(
        {"accuracy": 0.6, "loss": loss})


def test_validation_split_holds_out_the_last_samples_before_shuffling():
    x = np.arange(10.0).reshape(10, 1)
    # floor(10 * 0.75) = 7: training on 0..6 (loss 91/7 = 13), validation on 7, 8, 9.
    h = linear_model().fit(x, np.zeros(10), validation_split=0.25, verbose=0)
    assert h.history["loss"] == [pytest.approx(13.0)]
    assert h.history["val_loss"] == [pytest.approx((49 + 64 + 81) / 3)]
    # floor(10 * 0.3) = 3 (10 * (1 - 0.7) is 3.0000000000000004): validation on 3..9.
    h = linear_model().fit(x, np.zeros(10), validation_split=0.7, verbose=0)
    assert h.history["loss"] == [pytest.approx(5 / 3)]
    assert h.history["val_loss"] == [pytest.approx(280 / 7)]
    with pytest.raises(ValueError, match="not sufficient"):
        linear_model().fit(x[:1], np.zeros(1), validation_split=0.5, verbose=0)


def test_history_keys_are_sorted_as_keras_logs():
    model = linear_model(metrics=["mse"])
    h = model.fit(X5, np.zeros(5), epochs=2, validation_data=(X5, np.zeros(5)), verbose=0)
    assert list(h.history) == ["loss", "mse", "val_loss", "val_mse"]
    assert h.epoch == [0, 1] and model.history is h
    clf = models.Sequential([layers.Input(shape=(2,)), layers.Dense(3)])
    clf.compile("adam", losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    h = clf.fit(np.ones((4, 2)), np.arange(4) % 3, validation_data=(np.ones((2, 2)), [0, 1]),
                verbose=0)
    assert list(h.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert clf.metrics_names == ["loss", "accuracy"]


def test_accuracy_resolves_from_shapes_as_keras3():
    pred = np.zeros((4, 10))
    assert type(metrics.resolve("accuracy", np.zeros(4), pred)).__name__ == \
        "SparseCategoricalAccuracy"
    assert type(metrics.resolve("acc", np.zeros((4, 1)), pred)).__name__ == \
        "SparseCategoricalAccuracy"
    assert type(metrics.resolve("accuracy", np.zeros((4, 10)), pred)).__name__ == \
        "CategoricalAccuracy"
    # A one-column output is binary, even against sparse-looking labels.
    assert type(metrics.resolve("accuracy", np.zeros(4), np.zeros((4, 1)))).__name__ == \
        "BinaryAccuracy"
    assert metrics.resolve("acc", np.zeros(4), pred).name == "acc"
    m = metrics.BinaryAccuracy()
    m.update_state([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]])  # Keras's docstring
    assert m.result() == 0.75
    m = metrics.SparseCategoricalAccuracy()
    m.update_state([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]])
    assert m.result() == 0.5
    m = metrics.CategoricalAccuracy()
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
    assert m.result() == 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_accuracy_of_integer_labels_in_one_kernel_call(dtype, monkeypatch):
    """SparseCategoricalAccuracy counts a batch of integer labels by ops._argmax_hits: the
    same running mean as the numpy function's per-sample values, ties going to the first
    largest score and a NaN counting as largest (np.argmax's rules), labels out of range
    missing."""
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 4, (300, 6)).astype(dtype)   # many ties
    scores[5, 3] = scores[9, 0] = scores[11, 5] = np.nan
    labels = rng.integers(0, 6, 300)
    labels[:3] = [-1, 6, 200]
    # two hits at a NaN, one miss at the largest number beside a NaN
    labels[5], labels[9] = 3, 0
    scores[11, :5] = [0, 1, 9, 2, 3]
    labels[11] = 2
    for y in (labels.astype(np.uint8), labels, labels.reshape(-1, 1)):
        fast, slow = metrics.SparseCategoricalAccuracy(), metrics.Mean()
        with monkeypatch.context() as m:
            m.setattr(metrics, "sparse_categorical_accuracy", None)   # not called
            fast.update_state(y, scores)
            fast.update_state(y[:7], scores[:7])
        values = np.concatenate([metrics.sparse_categorical_accuracy(y, scores),
                                 metrics.sparse_categorical_accuracy(y[:7], scores[:7])])
        slow.update_state(values)
        assert (fast.total, fast.count) == (slow.total, slow.count)


def test_binary_accuracy_in_a_model():
    model = models.Sequential([layers.Input(shape=(1,)),
                               layers.Dense(1, use_bias=False, activation="sigmoid")])
    model.set_weights([np.array([[1.0]])])
    model.compile("sgd", "binary_crossentropy", metrics=["accuracy"])
    logs = model.evaluate(np.array([[-3.0], [2.0], [1.0]]), np.array([0, 1, 0]), verbose=0,
                          return_dict=True)
    assert logs["accuracy"] == pytest.approx(2 / 3)


def test_labels_of_any_integer_dtype_and_inputs_cast_once():
    model = models.Sequential([layers.Input(shape=(3, 3, 1)), layers.Conv2D(2, 3),
                               layers.Flatten()])
    model.compile("adam", losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.arange(36, dtype=np.uint8).reshape(4, 3, 3, 1)
    for labels in (np.array([0, 1, 1, 0], np.int8), np.array([0, 1, 1, 0], np.uint16),
                   [0, 1, 1, 0], np.array([[0], [1], [1], [0]])):
        model.fit(x, labels, verbose=0)
    out = model.predict(x.astype(np.float64), verbose=0)
    assert out.dtype == np.float32 and out.shape == (4, 2)


def test_get_weights_and_set_weights_round_trip():
    model = models.Sequential([layers.Input(shape=(6, 6, 2)), layers.Conv2D(3, 3),
                               layers.DepthwiseConv2D(2, depth_multiplier=2), layers.Flatten(),
                               layers.Dense(4)])
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(3, 3, 2, 3), (3,), (2, 2, 3, 2), (6,), (54, 4), (4,)]
    new = [np.random.default_rng(i).normal(size=s) for i, s in enumerate(shapes)]
    kernel = model.layers[0].kernel
    model.set_weights(new)
    assert model.layers[0].kernel is kernel  # in place: optimizer slots stay attached
    for got, want in zip(model.get_weights(), new):
        np.testing.assert_allclose(got, want.astype(np.float32))
        assert got.dtype == np.float32
    with pytest.raises(ValueError, match="length 5, but the layer was expecting 6"):
        model.set_weights(new[:5])
    bad = list(new)
    bad[4] = np.zeros((4, 54))
    with pytest.raises(ValueError, match=r"\(54, 4\)"):
        model.set_weights(bad)
    np.testing.assert_allclose(model.get_weights()[0], new[0].astype(np.float32))


# --- callbacks, interruption, progress ---------------------------------------------------

def test_early_stopping_patience_as_keras_docstring():
    # Keras's docstring: a loss that does not improve stops after patience + 1 epochs.
    model = linear_model()
    h = model.fit(X5, np.zeros(5), epochs=10, verbose=0,
                  callbacks=[callbacks.EarlyStopping(monitor="loss", patience=3)])
    assert len(h.history["loss"]) == 4


def test_early_stopping_min_delta_and_mode():
    def epochs_run(**kwargs):
        model = linear_model(optimizer=optimizers.SGD(0.001))  # the loss falls a little
        stop = callbacks.EarlyStopping(monitor="loss", patience=1, **kwargs)
        return len(model.fit(X5, np.zeros(5), epochs=6, verbose=0,
                             callbacks=[stop]).history["loss"])

    assert epochs_run() == 6
    # Falls smaller than min_delta are no improvement: stop after epoch 2 (patience 1).
    assert epochs_run(min_delta=100.0) == 2
    # mode='max' wants the loss to rise.
    assert epochs_run(mode="max") == 2


def test_early_stopping_restores_the_best_weights():
    model = linear_model(optimizer=optimizers.SGD(1.0))  # diverges from the first step
    seen = []
    record = callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
        model.get_weights()))
    stop = callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    h = model.fit(X5, np.zeros(5), epochs=10, verbose=0, callbacks=[record, stop])
    losses_seen = h.history["loss"]
    best = int(np.argmin(losses_seen))
    assert len(losses_seen) < 10 and stop.best_epoch == best
    np.testing.assert_array_equal(model.get_weights()[0], seen[best][0])
    with pytest.raises(ValueError, match="mode='max'"):
        linear_model().fit(X5, np.zeros(5), verbose=0,
                           callbacks=[callbacks.EarlyStopping(monitor="something")])


def test_model_checkpoint_saves_only_improvements(tmp_path):
    model = linear_model(optimizer=optimizers.SGD(1.0))
    seen = []
    record = callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
        model.get_weights()))
    path = tmp_path / "best.npz"
    every = tmp_path / "ckpt-{epoch:02d}.npz"
    model.fit(X5, np.zeros(5), epochs=3, verbose=0, callbacks=[
        record, callbacks.ModelCheckpoint(path, monitor="loss", save_best_only=True),
        callbacks.ModelCheckpoint(str(every), save_weights_only=True)])
    best = models.load_model(path)
    np.testing.assert_array_equal(best.get_weights()[0], seen[0][0])
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "ckpt-01.npz", "ckpt-02.npz",
                                            "ckpt-03.npz"]


class InterruptAt(callbacks.Callback):
    def __init__(self, epoch, step):
        super().__init__()
        self.at = (epoch, step)
        self.weights = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.weights = self.model.get_weights()
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def test_ctrl_c_ends_fit_cleanly_with_the_last_finished_step(capsys):
    model = linear_model(optimizer=optimizers.SGD(0.001))
    stop = InterruptAt(1, 1)
    h = model.fit(X5, np.zeros(5), batch_size=2, epochs=5, callbacks=[stop], verbose=0)
    assert h.interrupted and list(h.history["loss"]) == h.history["loss"][:1]
    assert model.stop_training
    np.testing.assert_array_equal(model.get_weights()[0], stop.weights[0])
    assert "interrupted in epoch 2, step 2/3" in capsys.readouterr().err


def test_ctrl_c_inside_a_step_leaves_the_weights_of_the_previous_step(monkeypatch):
    model = linear_model(optimizer=optimizers.SGD(0.001))
    record = InterruptAt(-1, -1)
    layer = model.layers[0]
    forward = layer.forward
    calls = []

    def flaky_forward(x, training=False):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return forward(x, training)

    monkeypatch.setattr(layer, "forward", flaky_forward)
    h = model.fit(X5, np.zeros(5), batch_size=2, epochs=3, callbacks=[record], verbose=0)
    assert h.interrupted and h.history["loss"] and len(h.history["loss"]) == 1
    np.testing.assert_array_equal(model.get_weights()[0], record.weights[0])


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_output_by_verbosity(capsys, monkeypatch):
    model = linear_model(optimizer=optimizers.SGD(0.001))
    data = dict(x=X5, y=np.zeros(5), batch_size=2, validation_data=(X5, np.zeros(5)))
    model.fit(**data, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(**data, epochs=2, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2" and len(lines) == 4
    assert lines[1].startswith("3/3 - ") and "img/s - loss: " in lines[1]
    assert "val_loss:" in lines[1]
    model.fit(**data, verbose=1)  # not a terminal: only each epoch's closing line
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("3/3 ━━━━━━━━━━━━━━━━━━━━ ") and re.search(r" \d+(m|u)s/step", line)
    assert "img/s - loss:" in line and " - val_loss:" in line
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stdout", tty)
    many = np.arange(400.0).reshape(400, 1) / 400
    model.fit(many, np.zeros(400), batch_size=1, verbose=1)
    text = tty.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "  1/400 ────" in text and "400/400 ━━━━" in text


def test_evaluate_and_predict_print_a_bar_at_verbose_1(capsys):
    model = linear_model()
    model.evaluate(X5, np.zeros(5), batch_size=2)
    model.predict(X5)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("3/3 ") and "loss: 11.0000" in out[0]
    assert out[1].startswith("1/1 ")


def test_train_on_batch_matches_a_hand_step():
    model = linear_model(optimizer=optimizers.SGD(0.01))
    # One step on x = [1, 2]: loss 2.5, gradient 5, w = 1 - 0.05.
    assert model.train_on_batch(X5[:2], np.zeros(2)) == pytest.approx(2.5)
    assert model.get_weights()[0].item() == pytest.approx(0.95)
    # Keras 3 does not reset metrics between *_on_batch calls: (2.5*2 + 0.9025) / 3.
    assert model.test_on_batch(X5[:1], np.zeros(1)) == pytest.approx(1.9675, rel=1e-6)
    model.reset_metrics()
    assert model.test_on_batch(X5[:1], np.zeros(1)) == pytest.approx(0.9025, rel=1e-6)
    np.testing.assert_allclose(model.predict_on_batch(X5[:2]), [[0.95], [1.9]], rtol=1e-6)


# --- bad arguments -----------------------------------------------------------------------

def test_bad_compile_arguments():
    model = linear_model()
    with pytest.raises(ValueError, match="optimizer identifier: 'adamw2'"):
        model.compile("adamw2", "mse")
    with pytest.raises(ValueError, match="loss identifier: 'hinge_me'"):
        model.compile("sgd", "hinge_me")
    with pytest.raises(ValueError, match="metric identifier: 'acuracy'"):
        model.compile("sgd", "mse", metrics=["acuracy"])
    with pytest.raises(ValueError, match="list"):
        model.compile("sgd", "mse", metrics="accuracy")
    with pytest.raises(ValueError, match="cannot differentiate"):
        model.compile("sgd", lambda y_true, y_pred: y_pred)


def test_bad_fit_arguments():
    with pytest.raises(RuntimeError, match="compile"):
        models.Sequential([layers.Dense(1)]).fit(X5, X5)
    model = models.Sequential([layers.Input(shape=(28, 28, 1)), layers.Flatten(),
                               layers.Dense(10)])
    model.compile("adam", losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.zeros((4, 28, 28, 1))
    with pytest.raises(ValueError, match=r"expected shape=\(None, 28, 28, 1\), found "
                                         r"shape=\(4, 28, 28\)"):
        model.fit(np.zeros((4, 28, 28)), np.zeros(4), verbose=0)
    with pytest.raises(ValueError, match="label value of 10 which is outside the valid range "
                                         r"of \[0, 10\)"):
        model.fit(x, np.array([0, 1, 10, 2]), verbose=0)
    with pytest.raises(ValueError, match="cardinality"):
        model.fit(x, np.zeros(3), verbose=0)
    with pytest.raises(ValueError, match="same shape up until the last dimension"):
        model.fit(x, np.zeros((4, 2)), verbose=0)
    with pytest.raises(ValueError, match="non-empty"):
        model.fit(x[:0], np.zeros(0), verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, np.zeros(4), batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="verbose"):
        model.fit(x, np.zeros(4), verbose=3)
    with pytest.raises(TypeError, match="numeric"):
        model.predict(np.array([["a"] * 784] * 2).reshape(2, 28, 28, 1))
    with pytest.raises(ValueError, match="label value of 10"):
        model.evaluate(x, np.array([0, 1, 10, 2]), verbose=0)
    with pytest.raises(TypeError, match="Only instances"):
        model.add("dense")
    with pytest.raises(ValueError, match="unique"):
        models.Sequential([layers.Dense(1, name="a"), layers.Dense(1, name="a")])
