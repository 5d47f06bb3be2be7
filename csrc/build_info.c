/* Facts about this build that cyconv.show_config() reports. */
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
