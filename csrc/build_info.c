/* Facts about this build and machine that cyconv.show_config() reports. */
#if !defined(_WIN32)
#include <unistd.h>
#endif

#include "cyconv.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef CYCONV_COMPILER
#define CYCONV_COMPILER "cc"
#endif

int cyc_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int cyc_omp_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

const char *cyc_compiler(void)
{
#ifdef __VERSION__
    return CYCONV_COMPILER " " __VERSION__;
#else
    return CYCONV_COMPILER;
#endif
}

size_t cyc_l2_cache_bytes(void)
{
#ifdef _SC_LEVEL2_CACHE_SIZE
    long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return bytes > 0 ? (size_t)bytes : 0;
#else
    return 0;
#endif
}
