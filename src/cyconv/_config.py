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
import ctypes
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
# LLVM's libomp (what clang builds link; Intel's libiomp5 reads the same variable) spins instead
# for KMP_BLOCKTIME milliseconds, 200 by default: built with clang 14, an idle process burnt a
# whole core (30 ms of CPU in each 30 ms sleep after a convolution; 1 ms with 1 ms).
IDLE_BLOCKTIME_MS = 1
_SPIN_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# what each runtime reads, by its file's name up to the first "." or "-" (PyTorch's wheel
# brings libgomp-<hash>.so.1; libompd and libomptarget are not runtimes)
_RUNTIME_SETTINGS = {"libgomp": ("GOMP_SPINCOUNT", IDLE_SPINS),
                     "libomp": ("KMP_BLOCKTIME", IDLE_BLOCKTIME_MS),
                     "libiomp5": ("KMP_BLOCKTIME", IDLE_BLOCKTIME_MS)}


def _runtime_kind(path):
    kind = os.path.basename(path).split(".")[0].split("-")[0]
    return kind if kind in _RUNTIME_SETTINGS else None


def _blocktime(path):
    """The block time (ms) a running libomp or libiomp5 uses, or None if it cannot say."""
    try:
        return int(ctypes.CDLL(path).kmp_get_blocktime())
    except (OSError, AttributeError):
        return None


def _mapped_openmp_runtimes():
    """Paths of the OpenMP runtimes mapped into this process (None where /proc cannot say)."""
    try:
        with open("/proc/self/maps") as maps:
            return {path for path in (line.split()[-1] for line in maps if "/" in line)
                    if _runtime_kind(path)}
    except OSError:
        return None


@contextlib.contextmanager
def _brief_idle_spin():
    """Load and start the OpenMP runtime with a short idle spin: GOMP_SPINCOUNT=IDLE_SPINS for
    libgomp and KMP_BLOCKTIME=IDLE_BLOCKTIME_MS for libomp, each unless the user set it, and
    neither if the user chose OMP_WAIT_POLICY (which both read).  libgomp reads its variables as
    it loads, libomp at its first call (which the body of the with-block must make).  The
    variables are put back as they were after, so that child processes and runtimes loaded
    later see the user's environment."""
    global _idle_spin
    if os.environ.get("OMP_WAIT_POLICY"):
        _idle_spin = "from the environment: " + ", ".join(
            f"{v}={os.environ[v]}" for v in _SPIN_VARIABLES if os.environ.get(v))
        yield
        return
    before = _mapped_openmp_runtimes()
    # set but empty: the runtimes take it as unset, and so does cyconv
    found = {variable: os.environ.get(variable) for variable, _ in _RUNTIME_SETTINGS.values()}
    for variable, value in _RUNTIME_SETTINGS.values():
        if not found[variable]:
            os.environ[variable] = str(value)
    try:
        yield
    finally:
        for variable, value in found.items():
            if value is None:
                del os.environ[variable]
            else:
                os.environ[variable] = value

    def said(kind):
        variable, value = _RUNTIME_SETTINGS[kind]
        if found[variable]:
            return f"from the environment: {variable}={found[variable]}"
        return f"{variable}={value}"

    after = _mapped_openmp_runtimes()
    if before is None:
        _idle_spin = f"{said('libgomp')}; {said('libomp')} (unverified: no /proc/self/maps)"
    elif after - before:
        _idle_spin = ", ".join(sorted({said(_runtime_kind(p)) for p in after - before}))
    elif not after:
        _idle_spin = "not set: the OpenMP runtime is neither libgomp nor libomp"
    else:
        # loaded before cyconv: libgomp kept what it read as it loaded; libomp reads at its first
        # call, which may have been cyconv's
        _idle_spin = "; ".join(sorted({_preloaded(p, said) for p in after}))


def _preloaded(path, said):
    """What an OpenMP runtime loaded before cyconv runs with, as show_config reports it."""
    kind = _runtime_kind(path)
    if kind != "libgomp":
        variable, _ = _RUNTIME_SETTINGS[kind]
        expected = said(kind)
        ms = _blocktime(path)
        if ms is not None and expected.endswith(f"{variable}={ms}"):
            return expected
        if ms is not None:
            return f"not set: the OpenMP runtime started before cyconv ({variable}={ms})"
    return "not set: the OpenMP runtime was loaded before cyconv"


_idle_spin = None
with _brief_idle_spin():
    from . import _kernels
    _kernels.omp_max_threads()   # starts libomp, which reads its variables now

_user_threads = None
_default_threads = None   # from OMP_NUM_THREADS or the affinity mask, read once
_OPENMP = _kernels.openmp_enabled()   # a fact of the build, asked by every kernel call


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
    if not _OPENMP:
        return 1
    return max(1, min(_default_threads, _kernels.omp_max_threads()))


_cache_bytes = {}

# what config() says of _kernels.winograd_setting() (CYCONV_WINOGRAD=0, unset, =2)
_WINOGRAD_SETTINGS = {0: "off", 1: "F(2x2) and F(4x4)", 2: "F(2x2) only"}


def _sysfs_cache_bytes(level, root="/sys/devices/system/cpu/cpu0/cache"):
    """The size of CPU 0's unified or data cache of `level` as Linux reports it, else 0."""
    try:
        entries = os.listdir(root)
    except OSError:
        return 0
    for entry in sorted(entries):
        try:
            with open(os.path.join(root, entry, "level")) as f:
                if int(f.read()) != level:
                    continue
            with open(os.path.join(root, entry, "type")) as f:
                if f.read().strip() not in ("Unified", "Data"):
                    continue
            with open(os.path.join(root, entry, "size")) as f:
                size = f.read().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        try:
            return int(size.rstrip("KMG")) * scale
        except ValueError:
            return 0
    return 0


def _cache_size(level, default):
    """A cache's bytes: Linux's figure first (glibc's sysconf gives an AMD EPYC's L3 as that of
    all its core complexes, 256 MB where a core shares 32 MB), then the C library's, else
    `default`."""
    if level not in _cache_bytes:
        _cache_bytes[level] = (_sysfs_cache_bytes(level) or _kernels.cache_bytes(level)
                               or default)
    return _cache_bytes[level]


def l2_cache_bytes():
    """A core's L2 cache in bytes; 1 MB where the system cannot say (AMD's Zen 4 and 5 cores
    have 1 MB, Intel's recent server cores 1.25 to 2 MB)."""
    return _cache_size(2, 1 << 20)


def l3_cache_bytes():
    """The L3 cache that a core shares, in bytes; 32 MB where the system cannot say (an AMD Zen
    core complex's; Intel's server parts have 1.5 to 2 MB per core)."""
    return _cache_size(3, 32 << 20)


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
        "avx512_emulated": _kernels.avx512_emulated(),
        "winograd": _WINOGRAD_SETTINGS[_kernels.winograd_setting()],
        "omp_idle_spin": _idle_spin if _kernels.openmp_enabled() else None,
        "l2_cache": f"{l2_cache_bytes() // 1024} KB per core",
        "l3_cache": f"{l3_cache_bytes() // 1024} KB shared",
    }


def show_config(file=None):
    """Print how this cyconv was built and how it runs here; return the same facts as a dict."""
    info = config()
    out = file or sys.stdout
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}} : {value}", file=out)
    return info
