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
/* The most weights per output channel whose sums the weight gradient through a pool's windows
 * keeps in registers (a 3x3 first layer has 9; 12 leave AVX2 room for the rest). */
#define CYC_WIN_K 12
/* Computed channels per group at or below which a convolution reduces with vectors along its
 * input (a dot product per output channel) instead of vectors across output channels. */
#define CYC_DOT_MAX_OUT 4

/* How a convolution (forward, or the input gradient when transposed) is cut up.
 * Each output pixel reads `nseg` segments of `len` contiguous source values:
 *  - tap mode: one segment per kernel tap, the tap's `src_cg` channels;
 *  - row mode (no horizontal dilation, one group, unit stride for the input gradient): one
 *    segment per kernel row, its kw pixels x all channels, contiguous in NHWC.
 * Packed weights are ordered (segment, position in segment), which is the same flattening
 * (kh, kw, channel) in both modes; the input gradient reverses kw so that its segments run in
 * memory order. */
typedef struct {
    int transposed;
    int out_h, out_w;      /* spatial size of the computed tensor */
    int src_h, src_w;      /* spatial size of the tensor read */
    int src_c, src_cg;     /* its channels, per group */
    int out_c, out_cg;     /* computed channels, per group */
    int row_mode;
    int nseg, len;
    int K;                 /* nseg * len: the reduction length per group */
    int dot;               /* few computed channels: one dot product per output value */
} cyc_plan_t;

static inline cyc_plan_t cyc_plan(const cyc_geom_t *g, int transposed)
{
    cyc_plan_t r;
    int cg = g->c / g->groups, og = g->cout / g->groups;
    r.transposed = transposed;
    if (!transposed) {
        r.out_h = g->oh; r.out_w = g->ow; r.src_h = g->h; r.src_w = g->w;
        r.src_c = g->c; r.src_cg = cg; r.out_c = g->cout; r.out_cg = og;
    } else {
        r.out_h = g->h; r.out_w = g->w; r.src_h = g->oh; r.src_w = g->ow;
        r.src_c = g->cout; r.src_cg = og; r.out_c = g->c; r.out_cg = cg;
    }
    if (transposed == CYC_ROW_TAPS) {
        /* the scatter over kernel rows: each of kh taps meets dy's og channels and computes a
         * whole row of kw x cg input-gradient values (groups == 1, no horizontal dilation) */
        r.out_cg = r.out_c = g->kw * cg;
        r.row_mode = 0;
        r.nseg = g->kh;
        r.len = og;
        r.K = r.nseg * r.len;
        r.dot = 0;
        return r;
    }
    r.row_mode = g->dw == 1 && g->groups == 1 && (!transposed || (g->sh == 1 && g->sw == 1));
    if (r.row_mode) {
        /* A row segment that straddles the left or right border is copied with zeros; when
         * most columns straddle (images not much wider than the kernel), taps are cheaper. */
        int inner = 0;
        for (int x = 0; x < r.out_w; x++) {
            int first = transposed ? x + g->pad_left - (g->kw - 1) : x * g->sw - g->pad_left;
            inner += first >= 0 && first + g->kw <= r.src_w;
        }
        r.row_mode = 2 * inner >= r.out_w;
    }
    r.nseg = r.row_mode ? g->kh : g->kh * g->kw;
    r.len = r.row_mode ? g->kw * r.src_c : r.src_cg;
    r.K = r.nseg * r.len;
    r.dot = r.out_cg <= CYC_DOT_MAX_OUT;
    return r;
}

/* Tiles of dy pixels the input gradient's scatter takes through each tap in turn. */
#ifndef CYC_SCATTER_TILES
#define CYC_SCATTER_TILES 4
#endif

/* v rounded up to a multiple of m (channels to whole vectors, layouts to 64 bytes). */
static inline int cyc_round_up(int v, int m) { return (v + m - 1) / m * m; }

/* The direct weight gradient's accumulators: a group's output channels, rounded up to whole
 * 64-byte lines (the kernels write them, cyc_conv_dw_finish reads them, and dw takes rows
 * straight from the kernels where this is its own row length). */
static inline int cyc_dw_opad(const cyc_geom_t *g, int elem_size)
{
    return cyc_round_up(g->cout / g->groups, 64 / elem_size);
}

/* The first 64-byte boundary at or after p (scratch blocks carve aligned rows out of one). */
static inline void *cyc_align64(const void *p)
{
    return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

/* CYC_ADD as a tile's epilogue: add to the outputs instead of storing (scattered gradients). */
#define CYC_ADD 2

/* Bytes of scratch for one phase class's tap table (kernels_body.h, FN(taps_t)) and live flags. */
#define CYC_TAPS_BYTES(nseg) (8 + (sizeof(ptrdiff_t) + 2 * sizeof(int) + 2) * (size_t)(nseg))

/* Whether the direct weight gradient copies windows into its scratch (P x K values, see
 * cyc_dw_chunk): row-mode windows cut by the left or right padding, and whole windows of at most
 * CYC_MR_MAX values (reduced by one tile each). */
static inline int cyc_dw_gathers(const cyc_geom_t *g)
{
    cyc_plan_t r = cyc_plan(g, 0);
    return r.K <= CYC_MR_MAX || (r.row_mode && (g->pad_left > 0 || g->pad_right > 0));
}

/* Whether a weight-gradient tile's x values, a line per pixel for cnt pixels whose rows lie
 * stride bytes apart, crowd L1 (64 sets of 8 lines on Zen and on Intel's cores before Ice
 * Lake, of 12 since): lines a multiple of 64 bytes apart fall into 64 / gcd(stride / 64, 64)
 * of its sets, 4 of them for 256 float32 channels, which hold fewer than the cnt lines. */
static inline int cyc_dw_x_crowds_l1(ptrdiff_t stride, int cnt)
{
    if (stride % 64) return 0;
    ptrdiff_t a = stride / 64 % 64, b = 64;
    while (a) {
        const ptrdiff_t t = b % a;
        b = a;
        a = t;
    }
    return 8 * (64 / b) < cnt;
}

/* Bytes past a weight-gradient tile's packed x values that its whole-vector copies may write
 * (a vector at most). */
#define CYC_DW_PACK_SLACK_BYTES 64

/* Output pixels per chunk of the weight gradient: each chunk's tiles load and store all of dw's
 * accumulators once.  Few enough that the chunk's copied windows and its staged dy stay in cache
 * (a 3x3x64 -> 64 layer took 1.06x the time in chunks of 128 instead of 113), but the most where
 * the sums lie past L2: a 9216 -> 128 Dense layer's 4.7 MB of sums went through memory once per
 * 16 pixels.  That holds where windows are copied too: a 3x3x512 -> 512 layer over 7x7 (9.4 MB
 * of sums, its windows 18 KB each) in chunks of 16 moved its sums 25 times at batch 8; in
 * chunks of 128, 0.80-0.83 of the time (in-process A/B, AVX2, 2 threads), 3x3x256 -> 256 over
 * 14x14 0.86-0.91, 5x5x128 -> 128 0.78-0.80. */
static inline int cyc_dw_chunk(const cyc_geom_t *g, int elem_size)
{
    cyc_plan_t r = cyc_plan(g, 0);
    int p = cyc_conv_dw_big_sums(g, elem_size) ? 128 : 65536 / (r.K > 0 ? r.K : 1);
    if (p > 128) p = 128;
    if (p < 16) p = 16;
    return p;
}


/* A Winograd convolution (CYC_WINO_FWD or CYC_WINO_DX) as the forward convolution it computes:
 * the input gradient of a 3x3 convolution with unit stride reads dy padded by 2 - pad (negative:
 * cropped) through the flipped, transposed weights.  Tiles are F(m x m, 3x3): m x m computed
 * pixels from (m + 2) x (m + 2) read, nx = (m + 2)^2 products per pair of channels. */
typedef struct {
    int n, h, w, c;          /* the tensor read */
    int oh, ow, k;           /* the tensor computed */
    int pad_top, pad_left;
    int m, a, nx;            /* computed pixels per tile side, read pixels per side, products */
    int ty, tx;              /* tiles per image, down and across */
} cyc_wino_t;

/* F(4x4, 3x3) takes 36 products per 16 pixels where F(2x2, 3x3) takes 16 per 4, but its tiles
 * overhang narrow outputs further and its transforms cost more: it is taken for outputs at
 * least CYC_WINO4_MIN_WIDTH wide where a row of its tiles does at most CYC_WINO4_MAX_SHARE of
 * the products of a row of F(2x2)'s (the seed's conv3, 3x3 from 5x5, one tile of 36 products
 * against the direct 81, took 1.5x the direct time).  Its rounding error is larger (its
 * transforms multiply by up to 8 and divide by up to 24): in float32 about 4e-6 of the largest
 * output where F(2x2)'s is 3e-7, growing with the channels summed (6e-6 at 128, 1.3e-5 at
 * 256), so it is taken for at most CYC_WINO4_MAX_CHANNELS read channels (a 28x28x128 layer
 * gained nothing from it either: forward 0.94, weight gradient 1.05 of F(2x2)'s time).  By
 * the width and channels alone, so that a band of an image's rows (conv2d_forward_max_pool)
 * gets the tiles the whole image gets (an output of 2 rows may then go direct where F(2x2)'s
 * tiles would have wasted little enough). */
#define CYC_WINO4_MIN_WIDTH 8
#define CYC_WINO4_MAX_SHARE 0.8
#define CYC_WINO4_MAX_CHANNELS 64

static inline int cyc_wino_m(int computed_width, int read_channels)
{
    const int t2 = (computed_width + 1) / 2, t4 = (computed_width + 3) / 4;
    return cyc_conv_winograd_largest_tile() >= 4 && computed_width >= CYC_WINO4_MIN_WIDTH &&
                   read_channels <= CYC_WINO4_MAX_CHANNELS &&
                   36.0 / 4 * t4 <= CYC_WINO4_MAX_SHARE * 16.0 / 2 * t2
               ? 4
               : 2;
}

static inline cyc_wino_t cyc_wino_tiled(const cyc_geom_t *g, int mode, int m)
{
    cyc_wino_t q;
    q.n = g->n;
    if (mode == CYC_WINO_FWD) {
        q.h = g->h; q.w = g->w; q.c = g->c; q.oh = g->oh; q.ow = g->ow; q.k = g->cout;
        q.pad_top = g->pad_top; q.pad_left = g->pad_left;
    } else {
        q.h = g->oh; q.w = g->ow; q.c = g->cout; q.oh = g->h; q.ow = g->w; q.k = g->c;
        q.pad_top = 2 - g->pad_top; q.pad_left = 2 - g->pad_left;
    }
    q.m = m; q.a = m + 2; q.nx = q.a * q.a;
    q.ty = (q.oh + m - 1) / m; q.tx = (q.ow + m - 1) / m;
    return q;
}

static inline cyc_wino_t cyc_wino(const cyc_geom_t *g, int mode)
{
    return cyc_wino_tiled(g, mode, mode == CYC_WINO_FWD ? cyc_wino_m(g->ow, g->c)
                                                        : cyc_wino_m(g->w, g->cout));
}

/* The weight gradient's sums of the nx products' gradients at most this large (measured for
 * F(2x2): 1 MB, 128 channels in and out, 0.7 of the direct time; 4 MB 1.2x slower). */
#define CYC_WINO_DW_MAX_BYTES (1 << 20)

/* The weight gradient's tiles: the forward pass's, unless F(4x4)'s 36 x C x K sums would
 * leave the cache where F(2x2)'s 16 x C x K do not. */
static inline cyc_wino_t cyc_wino_dw(const cyc_geom_t *g, int elem_size)
{
    cyc_wino_t q = cyc_wino(g, CYC_WINO_FWD);
    const size_t per_x = (size_t)g->c * (size_t)cyc_round_up(g->cout, 64 / elem_size) *
                         (size_t)elem_size;
    if (q.m == 4 && 36 * per_x > CYC_WINO_DW_MAX_BYTES && 16 * per_x <= CYC_WINO_DW_MAX_BYTES)
        q = cyc_wino_tiled(g, CYC_WINO_FWD, 2);
    return q;
}

/* Tiles transformed at a time: as many as keep their transformed inputs and products within
 * about 300 KB (in L2, beside the weights; each of the products' weights is then read once
 * per block), a multiple of every instruction set's tile height, 12 to 48.  The weight
 * gradient (dw) reduces over the block's tiles into nx x C x K sums, which it reads and
 * writes once per block: twice the memory for half the passes, up to 96 tiles. */
static inline int cyc_wino_block(const cyc_wino_t *q, int elem_size, int dw)
{
    int vlen = 64 / elem_size;
    int bytes = q->nx * elem_size * (cyc_round_up(q->c, vlen) + cyc_round_up(q->k, vlen));
    int b = (dw ? 2 : 1) * 300 * 1024 / bytes / 12 * 12, most = dw ? 96 : 48;
    return b < 12 ? 12 : b > most ? most : b;
}

/* When cyc_conv_winograd takes the Winograd path: channels read and computed, at least; its
 * products at most this share of the direct convolution's, or CYC_WINO_BIG_U_SHARE where its
 * transformed weights (nx x C x K values, which each call writes and its GEMMs read back once
 * per block of tiles) pass CYC_WINO_BIG_U_BYTES.  In-process on AVX2 (2 threads), F(2x2) over
 * a 7x7 output (0.58 of the direct products) against the direct kernels: 512 channels in and
 * out (16 MB of transformed weights) took 1.2x the time at batch 8 forward and backward, 2x at
 * batch 1, 1.1x at 32; 256 (4 MB) the same time; 160 and 128 (1.6 and 1 MB) 0.75-0.8 forward;
 * F(2x2) over 9x9x256 (0.55, 4 MB) 0.89 forward. */
#define CYC_WINO_MIN_CHANNELS 16
#define CYC_WINO_MAX_SHARE 0.6
#define CYC_WINO_BIG_U_BYTES (4 << 20)
#define CYC_WINO_BIG_U_SHARE 0.5

#define CYC_DECLARE_ISA(SUF, ISA, T)                                                             \
    void cyc_conv_pack_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, int, T *,        \
                                     ptrdiff_t, ptrdiff_t);                                     \
    void cyc_conv_fwd_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, int, const T *,   \
                                    T *, ptrdiff_t, ptrdiff_t, void *);                         \
    void cyc_conv_bwd_data_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, const T *,   \
                                         T *, ptrdiff_t, ptrdiff_t, void *);                    \
    void cyc_conv_bwd_data_scatter_##SUF##_##ISA(const cyc_geom_t *, int, const T *, const T *, \
                                                 T *, ptrdiff_t, ptrdiff_t, void *);            \
    void cyc_conv_winograd_##SUF##_##ISA(const cyc_geom_t *, int, const T *, const T *, int,   \
                                         T *, ptrdiff_t, ptrdiff_t, void *);                    \
    void cyc_conv_bwd_filter_winograd_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *,  \
                                                    const T *, T *, T *, ptrdiff_t, ptrdiff_t, \
                                                    void *);                                   \
    void cyc_depthwise_fwd_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, const T *,  \
                                         int, T *, ptrdiff_t, ptrdiff_t);                      \
    void cyc_depthwise_bwd_data_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, T *,   \
                                              ptrdiff_t, ptrdiff_t);                           \
    void cyc_depthwise_bwd_filter_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *,      \
                                                const T *, T *, T *, ptrdiff_t, ptrdiff_t,     \
                                                T *);                                          \
    void cyc_conv_bwd_filter_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, const T *, \
                                           const cyc_unpool_t *, T *, T *, ptrdiff_t,           \
                                           ptrdiff_t, ptrdiff_t, ptrdiff_t, void *);            \
    void cyc_conv_bwd_filter_by_windows_##SUF##_##ISA(const cyc_geom_t *, const T *,            \
                                                      const cyc_unpool_t *, T *, T *,           \
                                                      ptrdiff_t, ptrdiff_t);                    \
    void cyc_max_pool_##SUF##_##ISA(const cyc_geom_t *, const T *, T *, int64_t *, uint8_t *,   \
                                    int, ptrdiff_t, ptrdiff_t);                                 \
    ptrdiff_t cyc_max_pool_bwd_##SUF##_##ISA(const cyc_geom_t *, const T *, const int64_t *,    \
                                             const uint8_t *, T *, int, ptrdiff_t, ptrdiff_t);  \
    void cyc_relu_bwd_##SUF##_##ISA(const T *, const T *, T *, ptrdiff_t);                      \
    void cyc_conv_dense_dx_##SUF##_##ISA(const T *, const T *, T *, ptrdiff_t, ptrdiff_t, int,   \
                                         ptrdiff_t, ptrdiff_t);                                 \
    void cyc_conv_dense_fwd_##SUF##_##ISA(const T *, const T *, const T *, int, T *, ptrdiff_t, \
                                          ptrdiff_t, int, int, int);                            \
    void cyc_gemm_planes_pack_##SUF##_##ISA(const T *, ptrdiff_t, ptrdiff_t, int, ptrdiff_t,    \
                                            ptrdiff_t, T *);                                    \
    void cyc_gemm_planes_pack_t_##SUF##_##ISA(const T *, ptrdiff_t, ptrdiff_t, int, T *);       \
    void cyc_gemm_planes_##SUF##_##ISA(const T *, const T *, int, T *, ptrdiff_t, ptrdiff_t,    \
                                       ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,   \
                                       ptrdiff_t);                                              \
    void cyc_dropout_##SUF##_##ISA(const T *, uint64_t, uint32_t, T, T *, uint8_t *, ptrdiff_t,  \
                                   ptrdiff_t);                                                  \
    void cyc_dropout_bwd_##SUF##_##ISA(const T *, const uint8_t *, T, T *, ptrdiff_t);          \
    void cyc_adam_##SUF##_##ISA(T *, const T *, T *, T *, ptrdiff_t, T, T, T, T);               \
    void cyc_transpose_##SUF##_##ISA(const T *, ptrdiff_t, T *, ptrdiff_t, ptrdiff_t,           \
                                     ptrdiff_t);                                                \
    void cyc_conv_planar_##SUF##_##ISA(const cyc_geom_t *, const T *, const T *, int, T *,     \
                                       ptrdiff_t, int, int, T *);                               \
    void cyc_avg_pool_##SUF##_##ISA(const cyc_geom_t *, const T *, T *, int, ptrdiff_t,         \
                                    ptrdiff_t);                                                 \
    void cyc_avg_pool_bwd_##SUF##_##ISA(const cyc_geom_t *, const T *, T *, int, ptrdiff_t,     \
                                        ptrdiff_t);

/* The instruction set of every function from CYC_TARGET_BEGIN(isa) to CYC_TARGET_END in an
 * ISA file: gcc's pragma, or clang's attribute pragma (clang takes no "#pragma GCC target").
 * CYC_EVEX512 goes after an AVX-512 target: clang 18 to 21 need evex512 for 64-byte vectors to
 * cross calls (clang 18 refused them without it); clang 22 dropped the feature and ignores a
 * whole target string that names it. */
#define CYC_PRAGMA_(text) _Pragma(#text)
#if defined(__clang__)
#define CYC_TARGET_BEGIN(isa) \
    CYC_PRAGMA_(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define CYC_TARGET_END _Pragma("clang attribute pop")
#else
#define CYC_TARGET_BEGIN(isa) CYC_PRAGMA_(GCC target(isa))
#define CYC_TARGET_END
#endif
#if defined(__clang__) && !defined(__apple_build_version__) && __clang_major__ >= 18 && \
    __clang_major__ < 22
#define CYC_EVEX512 ",evex512"
#else
#define CYC_EVEX512 ""
#endif

CYC_DECLARE_ISA(f32, portable, float)
CYC_DECLARE_ISA(f64, portable, double)
#if defined(__GNUC__) && defined(__x86_64__)
#define CYC_HAVE_X86_ISAS 1
#include <immintrin.h>   /* a few conversions GCC's vector extensions compile poorly */
CYC_DECLARE_ISA(f32, avx2, float)
CYC_DECLARE_ISA(f64, avx2, double)
CYC_DECLARE_ISA(f32, avx512, float)
CYC_DECLARE_ISA(f64, avx512, double)
#endif

#endif
