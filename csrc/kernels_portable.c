/* The kernels in plain C for any CPU (SSE2 on x86-64): the path every test also runs. */
#include "kernels_common.h"

/* 6 pixels x 2 vectors = 12 xmm accumulators of 16 (2 more for the weights, 1 broadcast). */
#define MR 6
#define CYC_VBYTES 16
#define T float
#define SUF f32
#define ISA portable
#include "kernels_body.h"
#undef T
#undef SUF

#define CYC_T_IS_DOUBLE
#define T double
#define SUF f64
#include "kernels_body.h"
