"""Build the compiled part of cyconv: one extension, ``cyconv._kernels``.

Sources: ``src/cyconv/_kernels.pyx`` (Cython, the parallel loops) and ``csrc/*.c`` (plain C, the
inner loops).  The compiler is probed for OpenMP by compiling and linking a tiny program; where it
has none (macOS clang without libomp) or ``CYCONV_NO_OPENMP=1`` is set, the same sources are built
serially and a warning says so.  Flags stay portable (``-O3``, no ``-march=native``) because a
wheel must run on any x86-64; SIMD paths are chosen at run time in csrc/dispatch.c.
``CYCONV_NATIVE=1`` adds ``-march=native`` for a local build.  ``CYCONV_EMULATE_AVX512=1`` makes a
test build whose AVX-512 path is compiled for AVX2 (see csrc/kernels_avx512.c), so that a machine
without AVX-512 tests that path's logic; CI runs the kernel tests on one.
"""

import os
import shutil
import sys
import tempfile
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
    """
)


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or None if the compiler cannot build it."""
    if _env_flag("CYCONV_NO_OPENMP"):
        return None
    if sys.platform == "win32":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    tmp = tempfile.mkdtemp(prefix="cyconv-openmp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        for cflags, lflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(
                    objs, "probe", output_dir=tmp, extra_postargs=lflags
                )
            except Exception:  # any compile or link failure means "not this flag set"
                continue
            return cflags, lflags
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compile_in_parallel(compiler):
    """Let `compiler` (a Unix one) compile an extension's sources side by side, a process per
    usable CPU: the sources are a few large files (each instruction set's copy of the kernels, the
    Cython module) that took 1.5 minutes one after another on 2 cores, about 1 minute side by
    side.  The same steps as distutils' own CCompiler.compile, run by a pool of threads."""
    jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if compiler.compiler_type != "unix" or not jobs or jobs < 2:
        return

    def compile(sources, output_dir=None, macros=None, include_dirs=None, debug=False,
                extra_preargs=None, extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)
        todo = [obj for obj in objects if obj in build]
        with ThreadPoolExecutor(jobs) as pool:
            # list() re-raises the first failure, as the serial loop would
            list(pool.map(lambda obj: compiler._compile(obj, *build[obj], cc_args,
                                                        extra_postargs, pp_opts), todo))
        return objects

    compiler.compile = compile


class BuildExt(build_ext):
    def build_extensions(self):
        _compile_in_parallel(self.compiler)
        omp = _openmp_flags(self.compiler)
        emulate = _env_flag("CYCONV_EMULATE_AVX512")
        if emulate:
            print("*** cyconv: a TEST build: the AVX-512 path compiled for AVX2 "
                  "(CYCONV_EMULATE_AVX512=1); not for timing or distribution ***",
                  file=sys.stderr)
        compiler_name = os.path.basename(
            (getattr(self.compiler, "compiler", None) or ["unknown"])[0]
        )
        if omp is None:
            warnings.warn(
                "cyconv: the C compiler cannot build OpenMP programs (or CYCONV_NO_OPENMP=1 "
                "is set); building the kernels serially. cyconv.show_config() will report "
                "openmp: False. On macOS, `brew install libomp` enables threading.",
                stacklevel=1,
            )
            print("*** cyconv: building WITHOUT OpenMP ***", file=sys.stderr)
        if self.compiler.compiler_type == "msvc":
            base = ["/O2"]
        else:
            # -g0: no debug info in the wheel (it would triple the extension's size);
            # -fno-math-errno: sqrt is then one (vector) instruction; nothing reads errno;
            # -Werror=implicit-function-declaration: GCC 14 and clang 16 refuse such calls by
            # default, so a missing prototype must fail on older compilers too
            base = ["-O3", "-g0", "-std=gnu11", "-fno-strict-aliasing", "-Wno-unused-function",
                    "-fno-math-errno", "-Werror=implicit-function-declaration"]
            if _env_flag("CYCONV_NATIVE"):
                base.append("-march=native")
            if emulate:
                # 64-byte vectors passed between functions compiled for AVX2 change GCC's ABI
                # note; both sides are this file's, so the note says nothing
                base.append("-Wno-psabi")
        for ext in self.extensions:
            ext.extra_compile_args = base + (omp[0] if omp else [])
            ext.extra_link_args = omp[1] if omp else []
            ext.define_macros = list(ext.define_macros or []) + [
                ("CYCONV_COMPILER", '"%s"' % compiler_name.replace('"', "")),
                ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ] + ([("CYC_EMULATE_AVX512", "1")] if emulate else [])
        super().build_extensions()


def _relative(paths):
    # setuptools wants source paths relative to setup.py in an sdist/wheel build.
    return [os.path.relpath(p, HERE) for p in paths]


extensions = [
    Extension(
        "cyconv._kernels",
        sources=_relative(
            [os.path.join(HERE, "src", "cyconv", "_kernels.pyx")]
            + sorted(glob(os.path.join(HERE, "csrc", "*.c")))
        ),
        include_dirs=[os.path.join("csrc"), np.get_include()],
        # the kernels are written once in headers (kernels_body.h) and compiled per ISA: an
        # edit there must rebuild the extension as an edit of a .c file does
        depends=_relative(sorted(glob(os.path.join(HERE, "csrc", "*.h")))),
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
