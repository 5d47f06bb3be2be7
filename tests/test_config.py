"""Build facts and threads: show_config, OpenMP, set/get_num_threads, OMP_NUM_THREADS,
threadpoolctl, and the CYCONV_ISA and CYCONV_WINOGRAD overrides."""

from __future__ import annotations

import functools
import io
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import cyconv
from cyconv import _kernels


@pytest.fixture(autouse=True)
def default_threads():
    cyconv.set_num_threads(None)
    yield
    cyconv.set_num_threads(None)


def run_python(code, **env):
    """Run code in a fresh interpreter with extra environment variables; return its stdout."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("OMP_NUM_THREADS", "CYCONV_ISA", "CYCONV_WINOGRAD", "GOMP_SPINCOUNT",
                             "OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    full_env.update(env)
    done = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_show_config_prints_and_returns_the_facts():
    out = io.StringIO()
    info = cyconv.show_config(file=out)
    for key in ("version", "compiler", "openmp", "threads", "numpy", "simd", "winograd",
                "omp_idle_spin", "l2_cache", "l3_cache"):
        assert key in info
        assert f"{key}" in out.getvalue()
    assert info["version"] == cyconv.__version__
    assert info["numpy"] == np.__version__
    assert info["threads"] == cyconv.get_num_threads()
    assert info["simd"] == _kernels.isa_get() and info["simd"] in ("portable", "avx2", "avx512")
    assert info["compiler"] and info["compiler"] != "unknown"
    assert info["l2_cache"] == f"{cyconv._config.l2_cache_bytes() // 1024} KB per core"
    assert info["l3_cache"] == f"{cyconv._config.l3_cache_bytes() // 1024} KB shared"
    printed = dict(line.split(" : ", 1) for line in out.getvalue().splitlines())
    assert {k.strip(): v for k, v in printed.items()}["version"] == cyconv.__version__


def test_show_config_prints_to_stdout_by_default(capsys):
    info = cyconv.show_config()
    assert "openmp" in capsys.readouterr().out and isinstance(info, dict)


def test_normal_build_has_openmp():
    if os.environ.get("CYCONV_NO_OPENMP") == "1":
        pytest.skip("CYCONV_NO_OPENMP=1: this build was made without OpenMP on purpose")
    assert cyconv.show_config(file=io.StringIO())["openmp"] is True, (
        "cyconv was built without OpenMP: the compiler probe in setup.py failed")


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                      (True, TypeError), ("2", TypeError), ([2], TypeError)])
def test_set_num_threads_rejects_non_positive_and_non_integers(bad, exc):
    before = cyconv.get_num_threads()
    with pytest.raises(exc, match=r"positive integer"):
        cyconv.set_num_threads(bad)
    assert cyconv.get_num_threads() == before


def test_set_num_threads_sets_and_none_restores():
    default = cyconv.get_num_threads()
    cyconv.set_num_threads(1)
    assert cyconv.get_num_threads() == 1
    cyconv.set_num_threads(np.int64(3))
    assert cyconv.get_num_threads() == 3
    cyconv.set_num_threads(None)
    assert cyconv.get_num_threads() == default


def test_default_is_the_usable_cores():
    if os.environ.get("OMP_NUM_THREADS"):
        pytest.skip("OMP_NUM_THREADS is set in this environment; see the subprocess tests")
    expected = len(os.sched_getaffinity(0)) if _kernels.openmp_enabled() else 1
    assert cyconv.get_num_threads() == expected


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), ("2,1", 2)])
def test_default_respects_omp_num_threads(value, expected):
    if not _kernels.openmp_enabled():
        expected = 1
    assert run_python("import cyconv; print(cyconv.get_num_threads())",
                      OMP_NUM_THREADS=value) == str(expected)


def test_default_respects_cpu_affinity():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("this platform cannot restrict a process's CPU affinity")
    one_cpu = min(os.sched_getaffinity(0))
    code = (f"import os; os.sched_setaffinity(0, {{{one_cpu}}}); import cyconv; "
            "print(cyconv.get_num_threads())")
    assert run_python(code) == "1"


def test_threadpoolctl_sees_and_limits_the_openmp_pool():
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed")
    if not _kernels.openmp_enabled():
        pytest.skip("built without OpenMP: there is no OpenMP pool to limit")
    before = cyconv.get_num_threads()
    apis = {lib["user_api"] for lib in threadpoolctl.threadpool_info()}
    assert "openmp" in apis
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cyconv.get_num_threads() == 1
        x = np.ones((2, 6, 6, 3))
        np.testing.assert_array_equal(cyconv.ops.conv2d(x, np.ones((3, 3, 3, 2))),
                                      np.full((2, 4, 4, 2), 27.0))
    assert cyconv.get_num_threads() == before


def test_cyconv_isa_env_forces_the_portable_path():
    code = ("import numpy as np, cyconv; from cyconv import _kernels, ops, reference as ref; "
            "x = np.random.default_rng(0).standard_normal((2, 7, 7, 5)); "
            "w = np.random.default_rng(1).standard_normal((3, 3, 5, 17)); "
            "ok = np.allclose(ops.conv2d(x, w), ref.conv2d(x, w)); "
            "import io; simd = cyconv.show_config(file=io.StringIO())['simd']; "
            "print(_kernels.isa_get(), simd, ok)")
    assert run_python(code, CYCONV_ISA="portable") == "portable portable True"


def test_best_path_is_what_the_cpu_has_unless_the_build_emulates_avx512():
    if not os.path.exists("/proc/cpuinfo") or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the CPU's features are read from Linux's /proc/cpuinfo on x86-64")
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    has_avx512 = {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= set(flags)
    has_avx2 = {"avx2", "fma"} <= set(flags)
    info = cyconv.show_config(file=io.StringIO())
    assert info["avx512_emulated"] is _kernels.avx512_emulated()
    if info["avx512_emulated"]:
        # a test build (CYCONV_EMULATE_AVX512=1): its AVX-512 path runs wherever AVX2 does
        want = "avx512" if has_avx2 else "portable"
    else:
        want = "avx512" if has_avx512 else "avx2" if has_avx2 else "portable"
    assert info["simd_best"] == want


def test_cyconv_isa_env_cannot_ask_for_more_than_the_cpu_has():
    best = _kernels.isa_best()
    assert run_python("from cyconv import _kernels; print(_kernels.isa_get())",
                      CYCONV_ISA="avx512") == best


@pytest.mark.parametrize("value, said, route, tile", [
    ("0", "off", "direct", 1),
    ("1", "F(2x2) and F(4x4)", "winograd", 4),
    ("", "F(2x2) and F(4x4)", "winograd", 4),
    ("2", "F(2x2) only", "winograd", 2),   # for F(2x2)'s smaller rounding error
])
def test_cyconv_winograd_env_turns_winograd_off_or_to_2x2_tiles(value, said, route, tile):
    code = ("import io, cyconv; from cyconv import _args, _kernels; "
            "g = _args.conv_geometry((2, 8, 8, 16), (3, 3, 16, 16), 1, 'same', 1, 1, 'NHWC'); "
            "print(cyconv.show_config(file=io.StringIO())['winograd'], '|', "
            "_kernels.conv2d_forward_route(g, 'float32'), _kernels.winograd_tile(g, 'float32'))")
    assert run_python(code, CYCONV_WINOGRAD=value) == f"{said} | {route} {tile}"


IDLE_CPU = """
import io, time, numpy as np, cyconv
from cyconv import ops
cyconv.set_num_threads(2)
x = np.random.default_rng(0).random((32, 13, 13, 32), dtype=np.float32)
w = np.random.default_rng(1).random((3, 3, 32, 64), dtype=np.float32)
ops.conv2d(x, w)
burnt = []
for _ in range(15):
    ops.conv2d(x, w)
    t = time.process_time()
    time.sleep(0.03)   # the main thread sleeps: what the process burns now is idle spinning
    burnt.append(time.process_time() - t)
print(np.median(burnt), cyconv.show_config(file=io.StringIO())['omp_idle_spin'])
"""


# what cyconv sets, by the variable of the runtime it starts
OURS = {"GOMP_SPINCOUNT": "GOMP_SPINCOUNT=10000", "KMP_BLOCKTIME": "KMP_BLOCKTIME=1"}


@functools.lru_cache(maxsize=None)
def _runtime():
    """The OpenMP runtime this build links (GCC's libgomp, or LLVM's libomp with clang): its
    idle-spin variable, the runtime's default for it, and its path, from the libraries a fresh
    interpreter maps as it imports cyconv after NumPy (this one may hold PyTorch's libgomp
    beside a clang build's libomp, and NumPy's BLAS may bring an OpenMP runtime of its own)."""
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc/self/maps to see which OpenMP runtime is loaded")
    paths = run_python(
        "import os, numpy\n"
        "def mapped(): return {line.split()[-1] for line in open('/proc/self/maps') "
        "if '/' in line}\n"
        "before = mapped()\n"
        "import cyconv\n"
        "print(*(mapped() - before or mapped()))").split()
    for path in paths:
        kind = cyconv._config._runtime_kind(path)
        if kind == "libgomp":
            return "GOMP_SPINCOUNT", "300000", path
        if kind in ("libomp", "libiomp5"):
            return "KMP_BLOCKTIME", "200", path
    pytest.skip("neither libgomp nor libomp is loaded")


PRELOAD = """
import ctypes, io
runtime = ctypes.CDLL({path!r})
if {start}:
    runtime.omp_get_max_threads()
import cyconv
blocktime = runtime.kmp_get_blocktime() if hasattr(runtime, "kmp_get_blocktime") else None
print(cyconv.show_config(file=io.StringIO())["omp_idle_spin"], blocktime, sep="|")
"""


@pytest.mark.parametrize("start", [False, True])
def test_a_runtime_loaded_before_cyconv_is_reported_as_it_runs(start):
    """libgomp reads its variables as it loads, so one loaded before cyconv keeps its own spin;
    libomp reads them at its first call, so cyconv's setting holds unless the runtime started
    before (started is started: the report says its block time)."""
    if not _kernels.openmp_enabled():
        pytest.skip("built without OpenMP: there is no runtime to configure")
    variable, default, path = _runtime()
    said, blocktime = run_python(PRELOAD.format(path=path, start=start)).split("|")
    if variable == "GOMP_SPINCOUNT":
        assert said == "not set: the OpenMP runtime was loaded before cyconv"
    elif start:
        assert (said, blocktime) == (
            f"not set: the OpenMP runtime started before cyconv (KMP_BLOCKTIME={default})",
            default)
    else:
        assert (said, blocktime) == ("KMP_BLOCKTIME=1", "1")


def test_idle_openmp_threads_spin_briefly_unless_the_user_says_otherwise():
    """libgomp's default spin (300,000 pauses) and libomp's (200 ms) hold a core for
    milliseconds after every call, where NumPy's BLAS threads then wait for it; cyconv starts
    either with a short one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not _kernels.openmp_enabled() or (cores or 1) < 2:
        pytest.skip("needs OpenMP and 2 usable cores to have an idle thread to watch")
    variable, default, _ = _runtime()
    ours, ours_says = run_python(IDLE_CPU).split(" ", 1)
    theirs, theirs_say = run_python(IDLE_CPU, **{variable: default}).split(" ", 1)
    assert ours_says == OURS[variable]
    assert theirs_say == f"from the environment: {variable}={default}"
    assert float(ours) < 0.5 * float(theirs), (ours, theirs)


@pytest.mark.parametrize("env", [
    {},
    {"GOMP_SPINCOUNT": "5"},
    {"KMP_BLOCKTIME": "7"},
    {"GOMP_SPINCOUNT": "5", "KMP_BLOCKTIME": "7"},
    {"OMP_WAIT_POLICY": "passive"},
    {"OMP_WAIT_POLICY": "active", "GOMP_SPINCOUNT": "5"},
    # set but empty counts as unset, as the runtimes take it; the empty variable is put back
    {"GOMP_SPINCOUNT": ""},
    {"KMP_BLOCKTIME": ""},
])
def test_the_spin_setting_leaves_the_environment_as_it_found_it(env):
    """Each runtime's variable is cyconv's unless the user set it (what the user set for the
    other runtime does not count); OMP_WAIT_POLICY, which both read, leaves both alone."""
    if not _kernels.openmp_enabled():
        pytest.skip("built without OpenMP: there is no runtime to configure")
    variable, _, _ = _runtime()
    names = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
    if env.get("OMP_WAIT_POLICY"):
        says = "from the environment: " + ", ".join(f"{v}={env[v]}" for v in names if env.get(v))
    elif env.get(variable):
        says = f"from the environment: {variable}={env[variable]}"
    else:
        says = OURS[variable]
    code = ("import os, io, cyconv; "
            f"print(*(os.environ.get(v) for v in {names!r}), "
            "cyconv.show_config(file=io.StringIO())['omp_idle_spin'], sep='|')")
    *left, reported = run_python(code, **env).split("|")
    assert left == [env.get(v, "None") for v in names]
    assert reported == says


def test_cache_sizes_come_from_linux_as_lscpu_reads_them(tmp_path):
    """Linux's cache entries (what lscpu prints), read before the C library's figure: glibc
    gives an AMD EPYC's L3 as all its core complexes' together."""
    def entry(name, level, kind, size):
        (tmp_path / name).mkdir()
        for field, value in (("level", level), ("type", kind), ("size", size)):
            (tmp_path / name / field).write_text(f"{value}\n")

    entry("index0", 1, "Data", "48K")
    entry("index1", 1, "Instruction", "32K")
    entry("index2", 2, "Unified", "2048K")
    entry("index3", 3, "Unified", "32M")
    (tmp_path / "uevent").write_text("")   # not an entry
    read = cyconv._config._sysfs_cache_bytes
    assert read(1, str(tmp_path)) == 48 << 10   # the data cache, not the instructions'
    assert read(2, str(tmp_path)) == 2 << 20
    assert read(3, str(tmp_path)) == 32 << 20
    assert read(4, str(tmp_path)) == 0
    assert read(3, str(tmp_path / "missing")) == 0
    (tmp_path / "index3" / "size").write_text("lots\n")
    assert read(3, str(tmp_path)) == 0


def test_cache_sizes_are_positive():
    assert cyconv._config.l2_cache_bytes() > 0
    assert cyconv._config.l3_cache_bytes() >= cyconv._config.l2_cache_bytes()
    assert _kernels.cache_bytes(2) >= 0 and _kernels.cache_bytes(7) == 0
