/* The kernels for AVX2 + FMA (Haswell and later, Zen).  Empty on other architectures. */
#include "kernels_common.h"

#ifdef CYC_HAVE_X86_ISAS
CYC_TARGET_BEGIN("avx2,fma")

/* 6 pixels x 2 vectors = 12 ymm accumulators of 16 (2 more for the weights, 1 broadcast). */
#define MR 6
#define CYC_VBYTES 32
#define T float
#define SUF f32
#define ISA avx2
#include "kernels_body.h"
#undef T
#undef SUF

#define CYC_T_IS_DOUBLE
#define T double
#define SUF f64
#include "kernels_body.h"
CYC_TARGET_END
#endif
