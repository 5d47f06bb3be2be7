"""Utilities Keras keeps in ``keras.utils``: seeding, one-hot labels, the progress bar."""

from __future__ import annotations

import contextlib
import math
import random as _pyrandom
import signal
import sys
import threading
import time

import numpy as np

try:
    # signal's own functions without the wrappers that map handlers to enums: those try
    # Handlers(handler) on every call and catch the ValueError, and the two swaps of a step's
    # update took 29 us of it (12 us against 1 for the swaps alone)
    from _signal import getsignal as _getsignal, signal as _setsignal
except ImportError:  # an interpreter without CPython's _signal module
    _getsignal, _setsignal = signal.getsignal, signal.signal

__all__ = ["set_random_seed", "to_categorical", "Progbar"]

_rng = None


def set_random_seed(seed):
    """Seed everything random in cyconv.keras (initialisers without their own seed, shuffling,
    dropout), and Python's and NumPy's global generators, as keras.utils.set_random_seed does."""
    global _rng
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    _pyrandom.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _rng = np.random.default_rng(int(seed))


def global_rng():
    """The generator behind every unseeded random choice; fresh entropy until seeded."""
    global _rng
    if _rng is None:
        _rng = np.random.default_rng()
    return _rng


def rng_from_seed(seed):
    """A seeded generator for an int seed, the global one for None."""
    if seed is None:
        return global_rng()
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be None or an integer, got {seed!r}")
    return np.random.default_rng(int(seed))


def to_categorical(x, num_classes=None):
    """Integer labels -> one-hot float32 rows (a trailing axis of 1 is dropped first, as Keras)."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        if x.dtype.kind == "f" and np.all(np.isfinite(x)) and np.all(x == np.round(x)):
            x = x.astype(np.int64)
        else:
            raise ValueError(f"to_categorical needs integer class labels, got dtype {x.dtype}")
    shape = x.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    x = x.reshape(-1)
    if num_classes is None:
        num_classes = int(x.max()) + 1 if x.size else 0
    if x.size and (x.min() < 0 or x.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values from {x.min()} "
                         f"to {x.max()}")
    out = np.zeros((x.size, num_classes), dtype=np.float32)
    out[np.arange(x.size), x] = 1.0
    return out.reshape(shape + (num_classes,))


def serialize_object(obj):
    """Keras's serialised form: ``{"class_name": ..., "config": obj.get_config()}``."""
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize_object(config, classes, kind):
    """The inverse of serialize_object, for the classes a module knows."""
    try:
        cls = classes[config["class_name"]]
        return cls.from_config(dict(config.get("config", {})))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"Could not interpret {kind} config: {config!r}") from exc


@contextlib.contextmanager
def defer_interrupts():
    """Hold Ctrl-C back while the block runs, then raise it.

    Weight updates run inside this block, so an interrupt can never leave some weights of a
    step updated and others not.  Only the main thread can own signal handlers; elsewhere (and
    when SIGINT is not Python's default handler) the block runs unprotected.
    """
    if (threading.current_thread() is not threading.main_thread()
            or _getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pending = []
    previous = _setsignal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        _setsignal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def _format_step_time(seconds, unit):
    if seconds >= 1 or seconds == 0:
        return f" {seconds:.0f}s/{unit}"
    if seconds >= 1e-3:
        return f" {seconds * 1e3:.0f}ms/{unit}"
    return f" {seconds * 1e6:.0f}us/{unit}"


def _format_value(value):
    if isinstance(value, (float, np.floating)):
        return f" {value:.4f}" if abs(value) > 1e-3 else f" {value:.4e}"
    return f" {value}"


def _format_eta(eta):
    if eta > 3600:
        return "%d:%02d:%02d" % (eta // 3600, (eta % 3600) // 60, eta % 60)
    if eta > 60:
        return "%d:%02d" % (eta // 60, eta % 60)
    return "%ds" % eta


class Progbar:
    """Keras's progress bar: ``32/1875 ━━━━━━━━━━━━━━━━━━━━ 5s 3ms/step - loss: 0.6543``.

    Values passed to ``update`` are shown as given: the caller passes running means (Keras
    averages already-averaged values a second time while an epoch runs; here the bar shows the
    same figure ``fit`` will report).  On a terminal the line is redrawn in place with ``\\r``;
    elsewhere (a log file, a pipe) only the final line of each bar is written, so logs stay short.
    """

    def __init__(self, target, width=20, verbose=1, interval=0.05, unit_name="step",
                 file=None):
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self.file = file if file is not None else sys.stdout
        isatty = getattr(self.file, "isatty", None)
        self._dynamic = bool(isatty and isatty()) or "ipykernel" in sys.modules
        self._start = time.perf_counter()
        self._last_update = 0.0
        self._time_after_first_step = None
        self._prev_width = 0
        self._values = {}

    def _step_time(self, current, now):
        if not current:
            return 0.0
        if self._time_after_first_step is not None and current > 1:
            per = (now - self._time_after_first_step) / (current - 1)
        else:
            per = (now - self._start) / current
        if current == 1:
            self._time_after_first_step = now
        return per

    def update(self, current, values=None, finalize=None, extra=""):
        """Show step ``current``; ``values`` is a list of (name, value); ``extra`` is text put
        after the time per step on the final line (fit puts its images per second there)."""
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        for k, v in values or ():
            self._values[k] = v
        now = time.perf_counter()
        per_step = self._step_time(current, now)
        if self.verbose == 1:
            if not finalize and (not self._dynamic or now - self._last_update < self.interval):
                return
            if self.target:
                digits = int(math.log10(self.target)) + 1
                done = int(self.width * current / self.target)
                # Keras tells the parts apart by colour; a thin line does it without escapes.
                bar = f"{current:>{digits}}/{self.target} " + "━" * done
                bar += "─" * (self.width - done)
            else:
                bar = "%7d/Unknown" % current
            if self.target and not finalize:
                info = " " + _format_eta(per_step * (self.target - current))
            else:
                info = f" {now - self._start:.0f}s"
            info += _format_step_time(per_step, self.unit_name)
            if finalize and extra:
                info += f" - {extra}"
            info += "".join(f" - {k}:{_format_value(v)}" for k, v in self._values.items())
            line = bar + info
            if self._dynamic:
                pad = max(self._prev_width - len(line), 0)
                text = "\r" + line + " " * pad
                self._prev_width = len(line)
            else:
                text = line
            self._write(text + ("\n" if finalize else ""))
        elif self.verbose == 2 and finalize and self.target:
            digits = int(math.log10(self.target)) + 1
            info = f"{current:>{digits}}/{self.target} - {now - self._start:.0f}s -"
            info += _format_step_time(per_step, self.unit_name)
            if extra:
                info += f" - {extra}"
            info += "".join(f" - {k}:{_format_value(v)}" for k, v in self._values.items())
            self._write(info + "\n")
        self._last_update = now

    def _write(self, text):
        try:
            self.file.write(text)
        except UnicodeEncodeError:
            # A terminal that cannot show the bar character gets ASCII.
            self.file.write(text.replace("━", "=").replace("─", "-"))
        self.file.flush()

    def break_line(self):
        """End a bar that was redrawn in place, so a message printed now starts a new line."""
        if self._dynamic and self._prev_width:
            self._write("\n")
            self._prev_width = 0

