"""Threads and build facts: set_num_threads, get_num_threads, show_config.

One helper decides the thread count for every parallel loop: a count set with
``set_num_threads`` wins; otherwise ``OMP_NUM_THREADS`` when set, else the cores this process may
run on (its CPU affinity).  A limit placed by threadpoolctl on the OpenMP runtime is respected
too, because the default is capped by ``omp_get_max_threads()``.
"""

from __future__ import annotations

import os
import platform
import sys

import numpy as np

from . import _args, _kernels

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
    }


def show_config(file=None):
    """Print how this cyconv was built and how it runs here; return the same facts as a dict."""
    info = config()
    out = file or sys.stdout
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}} : {value}", file=out)
    return info
