/* The kernels for AVX-512 (F, VL, BW, DQ: Skylake-X and later, Zen 4 and later).
 * Empty on other architectures. */
#include "kernels_common.h"

#ifdef CYC_HAVE_X86_ISAS
/* clang takes no "#pragma GCC target"; its own pragma gives every function below the target.
 * clang 18 to 21 also need evex512 for 64-byte vectors to cross calls (without it clang 18
 * refuses them); clang 22 dropped the feature and ignores a whole target string naming it. */
#if defined(__clang__) && !defined(__apple_build_version__) && __clang_major__ >= 18 && \
    __clang_major__ < 22
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,evex512"))), apply_to = function)
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
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
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
