/* Constants shared by every compiled copy of kernels_body.h and by dispatch.c. */
#ifndef CYCONV_KERNELS_COMMON_H
#define CYCONV_KERNELS_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cyconv.h"

/* Vectors of output channels per register tile; the same for every instruction set so that
 * packed weights have a single layout. */
#define CYC_NBLK 2
/* The largest MR of any instruction set (sizes scratch buffers). */
#define CYC_MR_MAX 16
/* Input channels per group at or below which a pixel's whole window is gathered into one row. */
#define CYC_GATHER_MAX_CIN 4
/* Output pixels per chunk in the weight gradient. */
#define CYC_DW_CHUNK 256

#define CYC_DECLARE_ISA(SUF, ISA, T)                                                             \
    void cyc_conv_pack_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, int, T *);       \
    void cyc_conv_fwd_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, int, const T *,   \
                                    T *, ptrdiff_t, ptrdiff_t, void *);                         \
    void cyc_conv_bwd_data_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, const T *,   \
                                         T *, ptrdiff_t, ptrdiff_t, void *);                    \
    void cyc_conv_bwd_filter_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, T *, T *,  \
                                           ptrdiff_t, ptrdiff_t, void *);                       \
    void cyc_max_pool_##SUF##_##ISA(const cyc_geom_t *, const T *, T *, int64_t *, ptrdiff_t,   \
                                    ptrdiff_t);                                                 \
    void cyc_max_pool_bwd_##SUF##_##ISA(const cyc_geom_t *, const T *, const int64_t *, T *,    \
                                        ptrdiff_t, ptrdiff_t);                                  \
    void cyc_avg_pool_##SUF##_##ISA(const cyc_geom_t *, const T *, T *, int, ptrdiff_t,         \
                                    ptrdiff_t);                                                 \
    void cyc_avg_pool_bwd_##SUF##_##ISA(const cyc_geom_t *, const T *, T *, int, ptrdiff_t,     \
                                        ptrdiff_t);

CYC_DECLARE_ISA(f32, portable, float)
CYC_DECLARE_ISA(f64, portable, double)
#if defined(__GNUC__) && defined(__x86_64__)
#define CYC_HAVE_X86_ISAS 1
CYC_DECLARE_ISA(f32, avx2, float)
CYC_DECLARE_ISA(f64, avx2, double)
CYC_DECLARE_ISA(f32, avx512, float)
CYC_DECLARE_ISA(f64, avx512, double)
#endif

#endif
