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

size_t cyc_cache_bytes(int level)
{
    long bytes = 0;
#if defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
    if (level == 2) bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (level == 3) bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
#else
    (void)level;
#endif
    return bytes > 0 ? (size_t)bytes : 0;
}
