"""Where a training step of the seed model spends its time: every cyconv.ops call of one epoch,
timed, grouped by function and argument shapes, per step.

    python benchmarks/step_profile.py [--images 12000] [--threads N] [--model seed|mnist-cnn]

--model mnist-cnn profiles Keras 2's MNIST example model instead (see epoch.py).

The first line is the whole step (the fit's wall time over its steps); then each phase of the
step (forward, loss, backward, the optimizer's update, the metrics) with the time spent outside
cyconv.ops's functions (the layers' Python and numpy, the loss, Adam's bookkeeping); then each
op's share, largest first (an op that another op calls counts in its caller's time only).
Wrapping the ops costs about a microsecond per call.
"""

from __future__ import annotations

import argparse
import collections
import functools
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--model", choices=["seed", "mnist-cnn"], default="seed")
    args = parser.parse_args()

    from epoch import keras_model, load

    import cyconv
    from cyconv import keras, ops
    from cyconv.cli import seed_model

    if args.threads:
        cyconv.set_num_threads(args.threads)
    spent = collections.defaultdict(float)
    calls = collections.Counter()
    in_phase = collections.defaultdict(float)   # phase -> time inside ops calls
    phase_time = collections.defaultdict(float)
    state = {"depth": 0, "phase": None}

    def timed(name, fn):
        @functools.wraps(fn)
        def run(*a, **k):
            state["depth"] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                state["depth"] -= 1
                if not state["depth"]:
                    dt = time.perf_counter() - t0
                    shapes = tuple(tuple(v.shape) for v in a if hasattr(v, "shape"))
                    spent[name, shapes] += dt
                    calls[name, shapes] += 1
                    in_phase[state["phase"]] += dt
        return run

    def phase(obj, method, label):
        fn = getattr(obj, method)

        @functools.wraps(fn)
        def run(*a, **k):
            outer, state["phase"] = state["phase"], label
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phase_time[label] += time.perf_counter() - t0
                state["phase"] = outer
        setattr(obj, method, run)

    # the public ops and the private ones the layers call
    private = ("_max_pool2d", "_conv2d", "_adam", "_sparse", "_dropout", "_argmax")
    for name in ops.__all__ + [n for n in dir(ops) if n.startswith(private)]:
        fn = getattr(ops, name)
        if callable(fn):
            setattr(ops, name, timed(name, fn))

    x, y, _, _ = load(args.images)
    model = seed_model() if args.model == "seed" else keras_model(keras, args.model)
    model.fit(x[:640], y[:640], batch_size=32, epochs=1, verbose=0)   # warm up
    phases = [(model, "_forward", "forward"), (model.loss, "value_and_grad", "loss"),
              (model, "_backward", "backward"), (model.optimizer, "apply", "optimizer update"),
              (model, "_update_metrics", "metrics")]
    for obj, method, label in phases:
        phase(obj, method, label)
    for table in (spent, calls, in_phase, phase_time):
        table.clear()
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    total = time.perf_counter() - t0
    steps = -(-len(x) // 32)
    print(f"{'one training step':60s} {total / steps * 1e3:8.3f} ms")
    for *_, label in phases:
        outside = (phase_time[label] - in_phase[label]) / steps * 1e3
        print(f"{'  ' + label:60s} {phase_time[label] / steps * 1e3:8.3f} ms  "
              f"({outside:.3f} ms outside cyconv.ops)")
    for (name, shapes), seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        label = f"{name} {' '.join('x'.join(map(str, s)) for s in shapes)}"
        print(f"{label:60s} {seconds / steps * 1e3:8.3f} ms  "
              f"({calls[name, shapes] / steps:.0f} per step)")


if __name__ == "__main__":
    main()
