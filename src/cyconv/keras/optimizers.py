"""Keras 3's optimizers, step for step (keras/src/optimizers/{sgd,adam,rmsprop}.py).

- SGD: ``m = momentum * m - lr * g``; then ``w += m``, or with Nesterov
  ``w += momentum * m - lr * g``; without momentum ``w -= lr * g``.
- Adam: ``m += (g - m) * (1 - beta_1)``; ``v += (g*g - v) * (1 - beta_2)``;
  ``w -= m * alpha / (sqrt(v) + epsilon)`` with ``alpha = lr * sqrt(1 - beta_2**t) /
  (1 - beta_1**t)``: epsilon is added to sqrt(v), not to the bias-corrected sqrt(v_hat) (Keras's
  "epsilon hat").  AMSGrad keeps the running maximum of v.
- RMSprop: ``v = rho * v + (1 - rho) * g*g``; ``w -= lr * g / sqrt(v + epsilon)``: here epsilon
  sits *inside* the square root (centered: ``sqrt(v - mg**2 + epsilon)``); momentum accumulates
  that increment.

Hyperparameters are cast to the weights' dtype first, as Keras does.  Updates happen in place on
the layers' arrays, with Ctrl-C held back until every weight of the step is updated.
"""

from __future__ import annotations

import collections

import numpy as np

from .. import ops
from .utils import defer_interrupts, deserialize_object, serialize_object

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "get", "serialize", "deserialize"]


class Optimizer:
    def __init__(self, learning_rate=0.001, name=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None):
        if sum(c is not None for c in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can "
                             "be set.")
        self.learning_rate = learning_rate
        self.name = name or type(self).__name__.lower()
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.iterations = 0
        self.built = False
        self._vars = []

    @property
    def learning_rate(self):
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        value = float(value)
        if not value >= 0:
            raise ValueError(f"learning_rate must be a non-negative number, got {value!r}")
        self._learning_rate = value

    # -- state -----------------------------------------------------------------------------
    _slot_names = ()

    def build(self, var_list):
        """Create the per-weight state (zeros), tied to these arrays."""
        self._vars = list(var_list)
        self._slots = {name: [np.zeros_like(v) for v in self._vars]
                       for name in self._active_slots()}
        self._scratch = [np.empty_like(v) for v in self._vars]
        self.built = True

    def _active_slots(self):
        return self._slot_names

    @property
    def variables(self):
        """Keras's order: iteration count, learning rate, then each kind of slot for every
        weight (copies for the two scalars, the live arrays for the slots)."""
        out = [np.array(self.iterations, dtype=np.int64),
               np.array(self.learning_rate, dtype=np.float32)]
        for name in self._active_slots():
            out.extend(self._slots[name])
        return out

    def get_state(self):
        return [v.copy() for v in self.variables]

    def set_state(self, values):
        values = list(values)
        if not self.built:
            raise ValueError("the optimizer must be built (by a training step or build()) "
                             "before its state is set")
        expected = self.variables
        if len(values) != len(expected):
            raise ValueError(f"optimizer state has {len(values)} arrays, this {self.name} "
                             f"optimizer expects {len(expected)}")
        for got, want in zip(values, expected):
            if np.shape(got) != want.shape:
                raise ValueError(f"optimizer state shape {np.shape(got)} does not match "
                                 f"{want.shape}")
        self.iterations = int(np.asarray(values[0]))
        # The state holds the rate in float32 (as Keras's variable); keep the exact configured
        # value unless the saved one really differs.
        if np.float32(self.learning_rate) != np.asarray(values[1], np.float32):
            self.learning_rate = float(np.asarray(values[1]))
        for got, want in zip(values[2:], expected[2:]):
            np.copyto(want, got, casting="unsafe")

    # -- applying --------------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars):
        grads, variables = zip(*grads_and_vars)
        self.apply(list(grads), list(variables))

    def apply(self, grads, trainable_variables=None):
        """Update the weights in place from their gradients and count one iteration.

        The whole update runs with Ctrl-C held back, so the weights are never half-updated.
        """
        if trainable_variables is None:
            trainable_variables = self._vars
        if not self.built:
            self.build(trainable_variables)
        elif len(trainable_variables) != len(self._vars) or any(
                a is not b for a, b in zip(trainable_variables, self._vars)):
            raise ValueError("this optimizer was built for other weights; make a new one")
        if len(grads) != len(self._vars):
            raise ValueError(f"got {len(grads)} gradients for {len(self._vars)} weights")
        grads = self._clip(grads)
        with defer_interrupts():
            self._update_weights(grads)
            self.iterations += 1

    def _clip(self, grads):
        if self.clipvalue is not None:
            c = self.clipvalue
            return [np.clip(g, -c, c) for g in grads]
        if self.clipnorm is not None:
            out = []
            for g in grads:
                norm = float(np.sqrt(np.sum(np.square(g, dtype=np.float64))))
                out.append(g * (self.clipnorm / norm) if norm > self.clipnorm else g)
            return out
        if self.global_clipnorm is not None:
            norm = float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads)))
            if norm > self.global_clipnorm:
                return [g * (self.global_clipnorm / norm) for g in grads]
        return grads

    def _update_weights(self, grads):
        """Every weight from its gradient: update_step for each, unless an optimizer updates
        several at once."""
        for i, (g, var) in enumerate(zip(grads, self._vars)):
            self.update_step(i, g, var)

    def update_step(self, index, gradient, variable):
        raise NotImplementedError

    # -- config ----------------------------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "learning_rate": self.learning_rate,
                "clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
                "global_clipnorm": self.global_clipnorm}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class SGD(Optimizer):
    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name="SGD",
                 **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError("`momentum` must be a float between [0, 1].")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _active_slots(self):
        return ("momentum",) if self.momentum != 0 else ()

    def update_step(self, i, g, var):
        dt = var.dtype.type
        lr = dt(self.learning_rate)
        t = self._scratch[i]
        np.multiply(g, lr, out=t)
        if self.momentum == 0:
            var -= t
            return
        mom = dt(self.momentum)
        m = self._slots["momentum"][i]
        m *= mom
        m -= t
        if self.nesterov:
            # var += m * momentum - g * lr
            np.subtract(m * mom, t, out=t)
            var += t
        else:
            var += m

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


def _fusable(var, *arrays):
    """Arrays the fused kernels take: C-contiguous, writeable weights, all of one float dtype."""
    return (var.dtype in (np.float32, np.float64) and var.flags.c_contiguous
            and var.flags.writeable and var.size > 0
            and all(a.dtype == var.dtype and a.shape == var.shape and a.flags.c_contiguous
                    for a in arrays))


class Adam(Optimizer):
    _slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name="adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.amsgrad = bool(amsgrad)

    def _active_slots(self):
        return self._slot_names + (("velocity_hat",) if self.amsgrad else ())

    def _constants(self, dt):
        """alpha, 1 - beta_1, 1 - beta_2 and epsilon of this step, in the weights' dtype."""
        step = dt(self.iterations + 1)
        b1, b2 = dt(self.beta_1), dt(self.beta_2)
        alpha = dt(self.learning_rate) * np.sqrt(1 - b2 ** step) / (1 - b1 ** step)
        return alpha, 1 - b1, 1 - b2, dt(self.epsilon)

    def build(self, var_list):
        super().build(var_list)
        # flat views of each weight and its slots where the fused kernel takes them (checked
        # once: their layout stays; the gradients are checked at each step), else None
        slots = zip(self._vars, self._slots["momentum"], self._slots["velocity"])
        self._flat = [[a.reshape(-1) for a in arrays]
                      if not self.amsgrad and _fusable(*arrays) else None for arrays in slots]

    def _update_weights(self, grads):
        # The weights the fused kernel takes, all in one call per dtype, split over the
        # threads; the rest by update_step.  Against a kernel call per weight, the seed
        # model's update took 0.69 of the time (86 against 126 us) and its training step
        # 0.96 (benchmarks/ab_builds.py).
        fused = collections.defaultdict(list)
        for i, (g, var) in enumerate(zip(grads, self._vars)):
            # a weight made read-only since is refused by update_step, as numpy refuses it
            if (self._flat[i] is not None and var.flags.writeable and g.dtype == var.dtype
                    and g.shape == var.shape and g.flags.c_contiguous):
                fused[var.dtype.type].append(i)
            else:
                self.update_step(i, g, var)
        for dt, idx in fused.items():
            var, m, v = zip(*(self._flat[i] for i in idx))
            ops._adam_update(list(var), [grads[i].reshape(-1) for i in idx], list(m), list(v),
                             *map(float, self._constants(dt)))

    def update_step(self, i, g, var):
        """The update of one weight in numpy passes: the arithmetic of the fused kernel
        (cyc_adam), in the same order; except that the kernel flushes subnormal numbers to
        zero (as TensorFlow's kernels do) and numpy does not."""
        alpha, one_minus_b1, one_minus_b2, eps = self._constants(var.dtype.type)
        m = self._slots["momentum"][i]
        v = self._slots["velocity"][i]
        t = self._scratch[i]
        np.subtract(g, m, out=t)
        t *= one_minus_b1
        m += t
        np.square(g, out=t)
        t -= v
        t *= one_minus_b2
        v += t
        if self.amsgrad:
            v_hat = self._slots["velocity_hat"][i]
            np.maximum(v_hat, v, out=v_hat)
            v = v_hat
        np.sqrt(v, out=t)
        t += eps
        np.divide(m * alpha, t, out=t)
        var -= t

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class RMSprop(Optimizer):
    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, name="rmsprop", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.centered = bool(centered)

    def _active_slots(self):
        return (("velocity",) + (("momentum",) if self.momentum > 0 else ())
                + (("average_gradient",) if self.centered else ()))

    def update_step(self, i, g, var):
        dt = var.dtype.type
        rho = dt(self.rho)
        v = self._slots["velocity"][i]
        t = self._scratch[i]
        v *= rho
        np.square(g, out=t)
        t *= 1 - rho
        v += t
        if self.centered:
            mg = self._slots["average_gradient"][i]
            mg *= rho
            mg += (1 - rho) * g
            np.square(mg, out=t)
            np.subtract(v, t, out=t)
            t += dt(self.epsilon)
        else:
            np.add(v, dt(self.epsilon), out=t)
        np.sqrt(t, out=t)
        np.divide(dt(self.learning_rate) * g, t, out=t)
        if self.momentum > 0:
            m = self._slots["momentum"][i]
            m *= dt(self.momentum)
            m += t
            var -= m
        else:
            var -= t

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


_CLASSES = {"SGD": SGD, "Adam": Adam, "RMSprop": RMSprop}


def get(identifier):
    """An optimizer from an instance or a name ('adam', 'sgd', 'rmsprop', any case)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        for name, cls in _CLASSES.items():
            if identifier.lower() == name.lower():
                return cls()
        raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}; known: "
                         "'adam', 'sgd', 'rmsprop'")
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}")


serialize = serialize_object


def deserialize(config):
    return deserialize_object(config, _CLASSES, "optimizer")
