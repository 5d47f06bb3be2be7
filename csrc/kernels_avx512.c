/* The kernels for AVX-512 (F, VL, BW, DQ: Skylake-X and later, Zen 4 and later).
 * Empty on other architectures. */
#include "kernels_common.h"

#ifdef CYC_HAVE_X86_ISAS
CYC_TARGET_BEGIN("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma" CYC_EVEX512)

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
