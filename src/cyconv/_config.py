"""Threads and build facts: set_num_threads, get_num_threads, show_config.

One helper decides the thread count for every parallel loop: a count set with
``set_num_threads`` wins; otherwise ``OMP_NUM_THREADS`` when set, else the cores this process may
run on (its CPU affinity).  A limit placed by threadpoolctl on the OpenMP runtime is respected
too, because the default is capped by ``omp_get_max_threads()``.

How long an idle OpenMP thread spins is set here too, as the runtime loads (see
``_brief_idle_spin``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys

import numpy as np

from . import _args

# libgomp keeps a thread that finished its share spinning for GOMP_SPINCOUNT rounds before it
# sleeps: 300,000 by default.  On the Xeon we measured, an idle process then burns about 6 ms of
# CPU after every kernel call, with 10,000 rounds about 1 ms.  While it spins the thread holds a
# core, and NumPy's BLAS threads (which spin in their turn, yielding, for about 0.1 s after a
# matmul) fight it for the core.  On 2 cores, alternating a small matmul with a 0.5 ms
# convolution, the matmul took 3.6 ms and the convolution 4.4 ms; with 10,000 rounds 0.15 ms
# and 1.5 ms.  Fewer rounds stop bridging the gaps between the kernel calls of a training step:
# 3,000 made an epoch 8% slower, 10,000 2% (within the noise).
IDLE_SPINS = 10000
_SPIN_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _mapped_openmp_runtimes():
    """Paths of the OpenMP runtimes mapped into this process (None where /proc cannot say)."""
    try:
        with open("/proc/self/maps") as maps:
            return {line.split()[-1] for line in maps if "libgomp" in line}
    except OSError:
        return None


@contextlib.contextmanager
def _brief_idle_spin():
    """Load the OpenMP runtime with GOMP_SPINCOUNT=IDLE_SPINS, unless the user chose a wait
    policy or a spin count; libgomp reads them once, as it loads.  The variable is put back as
    it was after, so that child processes and runtimes loaded later see the user's environment."""
    global _idle_spin
    if any(os.environ.get(v) for v in _SPIN_VARIABLES):
        _idle_spin = "from the environment: " + ", ".join(
            f"{v}={os.environ[v]}" for v in _SPIN_VARIABLES if os.environ.get(v))
        yield
        return
    before = _mapped_openmp_runtimes()
    found = os.environ.get("GOMP_SPINCOUNT")   # set but empty: libgomp takes it as unset
    os.environ["GOMP_SPINCOUNT"] = str(IDLE_SPINS)
    try:
        yield
    finally:
        if found is None:
            del os.environ["GOMP_SPINCOUNT"]
        else:
            os.environ["GOMP_SPINCOUNT"] = found
    after = _mapped_openmp_runtimes()
    if before is None:
        _idle_spin = f"GOMP_SPINCOUNT={IDLE_SPINS} (unverified: no /proc/self/maps)"
    elif after - before:
        _idle_spin = f"GOMP_SPINCOUNT={IDLE_SPINS}"
    elif not after:
        _idle_spin = "not set: the OpenMP runtime is not libgomp"
    else:
        # the runtime cyconv links was loaded before cyconv: it kept the spin count it read then
        _idle_spin = "not set: libgomp was loaded before cyconv"


_idle_spin = None
with _brief_idle_spin():
    from . import _kernels

_user_threads = None
_default_threads = None   # from OMP_NUM_THREADS or the affinity mask, read once


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _env_threads():
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n > 0 else None


def set_num_threads(n):
    """Use ``n`` threads in every kernel from now on; ``None`` restores the default."""
    global _user_threads
    if n is None:
        _user_threads = None
        return
    _user_threads = _args.positive_int(n, "n")


def get_num_threads():
    """The number of threads the kernels use."""
    global _default_threads
    if _user_threads is not None:
        return _user_threads
    if _default_threads is None:
        # every kernel call asks: read the environment and the affinity mask once
        _default_threads = _env_threads() or _usable_cores()
    default = _default_threads
    if _kernels.openmp_enabled():
        default = min(default, _kernels.omp_max_threads())
    else:
        default = 1
    return max(1, default)


_l2_bytes = None


def l2_cache_bytes():
    """A core's L2 cache in bytes, as the C library reports it; 1 MB where it cannot say (AMD's
    Zen 4 and 5 cores have 1 MB, Intel's recent server cores 1.25 to 2 MB)."""
    global _l2_bytes
    if _l2_bytes is None:
        _l2_bytes = _kernels.l2_cache_bytes() or 1 << 20
    return _l2_bytes


def config():
    """The facts show_config() prints, as a dict."""
    from . import __version__

    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "compiler": _kernels.compiler(),
        "openmp": _kernels.openmp_enabled(),
        "threads": get_num_threads(),
        "simd": _kernels.isa_get(),
        "simd_best": _kernels.isa_best(),
        "winograd": _kernels.winograd_enabled(),
        "omp_idle_spin": _idle_spin if _kernels.openmp_enabled() else None,
        "l2_cache": f"{l2_cache_bytes() // 1024} KB per core",
    }


def show_config(file=None):
    """Print how this cyconv was built and how it runs here; return the same facts as a dict."""
    info = config()
    out = file or sys.stdout
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}} : {value}", file=out)
    return info
