/* The kernels for AVX2 + FMA (Haswell and later, Zen).  Empty on other architectures. */
#include "kernels_common.h"

#ifdef CYC_HAVE_X86_ISAS
/* clang takes no "#pragma GCC target"; its own pragma gives every function below the target */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

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
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
