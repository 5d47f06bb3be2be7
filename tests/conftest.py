"""Hypothesis profiles and the kernel-path fixtures shared by the whole suite.

Profiles: "default" keeps the suite to a couple of minutes on 2 cores; "ci" (chosen when CI is
set, as .ci/run's environment does, or with HYPOTHESIS_PROFILE=ci) is the same size but
derandomized, so that a CI failure reproduces.  HYPOTHESIS_PROFILE=thorough runs many more
examples for a local soak.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from helpers import ALL_ISAS, SUPPORTED_ISAS, THREAD_COUNTS, kernel_path

_COMMON = {
    "deadline": None,  # kernel timings vary with the other core's load
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("default", max_examples=30, **_COMMON)
settings.register_profile("ci", max_examples=30, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("thorough", max_examples=500, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or
                      ("ci" if os.environ.get("CI") else "default"))


@pytest.fixture(params=ALL_ISAS)
def isa(request):
    """Each SIMD path in turn; a level this CPU lacks is skipped, saying so."""
    if request.param not in SUPPORTED_ISAS:
        pytest.skip(f"this CPU has no {request.param} (best: {SUPPORTED_ISAS[-1]}); "
                    f"that kernel path is not exercised here (a CYCONV_EMULATE_AVX512=1 build "
                    f"runs the AVX-512 path's logic on AVX2)")
    return request.param


@pytest.fixture(params=THREAD_COUNTS, ids=[f"{t}thr" for t in THREAD_COUNTS])
def threads(request):
    return request.param


@pytest.fixture
def kernel(isa, threads):
    """Run the test body under one (SIMD level, thread count); the previous ones come back."""
    with kernel_path(isa, threads):
        yield isa, threads


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture(params=["NHWC", "NCHW"])
def fmt(request):
    return request.param
