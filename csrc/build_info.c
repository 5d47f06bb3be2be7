/* Facts about this build and machine that cyconv.show_config() reports, and the one OpenMP
 * setting the kernels change as they run (the schedule of their memory-bound loops). */
#include <unistd.h>

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

void cyc_omp_keep_shares(int keep)
{
#ifdef _OPENMP
    /* for the loops declared schedule(runtime) that this thread starts next */
    if (keep) omp_set_schedule(omp_sched_static, 0);
    else omp_set_schedule(omp_sched_dynamic, 1);
#else
    (void)keep;
#endif
}
