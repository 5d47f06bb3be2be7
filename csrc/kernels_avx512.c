/* The kernels for AVX-512 (F, VL, BW, DQ: Skylake-X and later, Zen 4 and later).
 * Empty on other architectures.
 *
 * A test build (CYCONV_EMULATE_AVX512=1 at build time, see setup.py) compiles the same code for
 * AVX2 instead: GCC splits each 64-byte vector in two, and the few AVX-512 intrinsics give way to
 * the portable code.  So a machine without AVX-512 runs this path's own tiling (MR 12, vectors of
 * 16 floats or 8 doubles), though not its instructions, and slowly (see kernels_body.h). */
#include "kernels_common.h"

#ifdef CYC_HAVE_X86_ISAS
#ifdef CYC_EMULATE_AVX512
#define CYC_AVX512_ON_AVX2 1
CYC_TARGET_BEGIN("avx2,fma")
#else
CYC_TARGET_BEGIN("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma" CYC_EVEX512)
#endif

/* 12 pixels x 2 zmm = 24 accumulators of 32 registers. */
#define MR 12
#define CYC_VBYTES 64
#define T float
#define SUF f32
#define ISA avx512
#include "kernels_body.h"
#undef T
#undef SUF

#define CYC_T_IS_DOUBLE
#define T double
#define SUF f64
#include "kernels_body.h"
CYC_TARGET_END
#endif
