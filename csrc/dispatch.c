/* Run-time choice of instruction set, and the entry points that forward to it.
 *
 * One binary runs on any x86-64: the best path the CPU supports is chosen on first use, unless
 * the environment variable CYCONV_ISA (portable, avx2, avx512) asks for a lower one.  The test
 * suite forces each path in turn through cyc_isa_set().
 */
#include <stdlib.h>
#include <string.h>
#if defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>
#endif

#include "kernels_common.h"

static int cyc_isa_current = -1;

int cyc_isa_best(void)
{
#ifdef CYC_HAVE_X86_ISAS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        return CYC_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return cyc_avx512_emulated() ? CYC_ISA_AVX512 : CYC_ISA_AVX2;
#endif
    return CYC_ISA_PORTABLE;
}

int cyc_avx512_emulated(void)
{
#if defined(CYC_HAVE_X86_ISAS) && defined(CYC_EMULATE_AVX512)
    return 1;
#else
    return 0;
#endif
}

const char *cyc_isa_name(int isa)
{
    switch (isa) {
    case CYC_ISA_AVX512: return "avx512";
    case CYC_ISA_AVX2: return "avx2";
    default: return "portable";
    }
}

int cyc_isa_set(int isa)
{
    int best = cyc_isa_best();
    if (isa < CYC_ISA_PORTABLE) isa = CYC_ISA_PORTABLE;
    cyc_isa_current = isa > best ? best : isa;
    return cyc_isa_current;
}

int cyc_isa_get(void)
{
    if (cyc_isa_current < 0) {
        int want = CYC_ISA_AVX512;
        const char *env = getenv("CYCONV_ISA");
        if (env && *env) {
            if (!strcmp(env, "portable")) want = CYC_ISA_PORTABLE;
            else if (!strcmp(env, "avx2")) want = CYC_ISA_AVX2;
        }
        cyc_isa_set(want);
    }
    return cyc_isa_current;
}

typedef uint8_t cyc_u8x16 __attribute__((vector_size(16)));
typedef uint8_t cyc_u8x16u __attribute__((vector_size(16), aligned(1), may_alias));

/* A 16 x 16 block of bytes transposed in registers: four rounds of byte interleaves (row i
 * with row i + 8, into rows 2i and 2i + 1), the unpack instructions every x86-64 has (one byte
 * at a time took longer than the pool it served, seen on the seed's pool1). */
static void cyc_transpose_u8_block(const uint8_t *s, ptrdiff_t ss, uint8_t *d, ptrdiff_t ds)
{
    cyc_u8x16 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = *(const cyc_u8x16u *)(s + i * ss);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 8; i++) {
            t[2 * i] = __builtin_shufflevector(r[i], r[i + 8], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20,
                                               5, 21, 6, 22, 7, 23);
            t[2 * i + 1] = __builtin_shufflevector(r[i], r[i + 8], 8, 24, 9, 25, 10, 26, 11, 27,
                                                   12, 28, 13, 29, 14, 30, 15, 31);
        }
        memcpy(r, t, sizeof(r));
    }
    for (int j = 0; j < 16; j++) *(cyc_u8x16u *)(d + j * ds) = r[j];
}

void cyc_transpose_u8(const uint8_t *src, ptrdiff_t src_ld, uint8_t *dst, ptrdiff_t dst_ld,
                      ptrdiff_t rows, ptrdiff_t cols)
{
    enum { B = 16 };
    for (ptrdiff_t i0 = 0; i0 < rows; i0 += B) {
        const ptrdiff_t i1 = i0 + B < rows ? i0 + B : rows;
        for (ptrdiff_t j0 = 0; j0 < cols; j0 += B) {
            const ptrdiff_t j1 = j0 + B < cols ? j0 + B : cols;
            if (i1 - i0 == B && j1 - j0 == B) {
                cyc_transpose_u8_block(src + i0 * src_ld + j0, src_ld, dst + j0 * dst_ld + i0,
                                       dst_ld);
                continue;
            }
            for (ptrdiff_t i = i0; i < i1; i++)
                for (ptrdiff_t j = j0; j < j1; j++) dst[j * dst_ld + i] = src[i * src_ld + j];
        }
    }
}

size_t cyc_conv_zeros_len(const cyc_geom_t *g)
{
    /* the longest segment any pixel reads, plus the largest group offset */
    return (size_t)(g->c > g->cout ? g->c : g->cout) * (size_t)(g->kw + 1);
}

static int cyc_is_wino(int transposed)
{
    return transposed == CYC_WINO_FWD || transposed == CYC_WINO_DX;
}

size_t cyc_conv_rows(const cyc_geom_t *g, int transposed)
{
    if (cyc_is_wino(transposed)) return (size_t)cyc_wino(g, transposed).c;
    return (size_t)cyc_plan(g, transposed).K;
}

size_t cyc_conv_packed_len(const cyc_geom_t *g, int transposed, int elem_size)
{
    if (cyc_is_wino(transposed)) {
        cyc_wino_t q = cyc_wino(g, transposed);
        size_t opad = (size_t)cyc_round_up(q.k, 64 / elem_size);
        return (size_t)q.nx * (size_t)q.c * opad + opad;
    }
    cyc_plan_t r = cyc_plan(g, transposed);
    size_t ow = r.dot ? (size_t)r.out_cg : (size_t)cyc_round_up(r.out_cg, 64 / elem_size);
    return (size_t)g->groups * ((size_t)r.K * ow + ow);
}

size_t cyc_conv_scratch_bytes(const cyc_geom_t *g, int transposed, int elem_size)
{
    cyc_plan_t r = cyc_plan(g, transposed);
    size_t nseg = (size_t)r.nseg;
    return sizeof(void *) * (nseg + 1) * CYC_MR_MAX + CYC_TAPS_BYTES(nseg) + 64 +
           (size_t)elem_size * CYC_MR_MAX * (size_t)r.K;
}

/* Share of a tile's vector lanes that compute real values for rows of n values, counted in
 * 64-byte vectors whatever the instruction set, so that every path takes the same route. */
static double cyc_lane_use(int n, int elem_size)
{
    return (double)n / cyc_round_up(n, 64 / elem_size);
}

/* A 1x1 kernel at unit stride without padding or groups: each output pixel is its input
 * pixel times the weights, a matrix product over the pixels (a Dense layer). */
static int cyc_pointwise(const cyc_geom_t *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->groups == 1 &&
           g->pad_top == 0 && g->pad_bottom == 0 && g->pad_left == 0 && g->pad_right == 0;
}

int cyc_conv_dense_dx(const cyc_geom_t *g, int elem_size)
{
    /* A pointwise convolution: dx is dy times the weights' transpose.  The tiles first transpose all the weights, a pass
     * that few pixels do not pay back; the dense kernel instead goes through all of dy for
     * every 4 rows of w, so only while dy stays in cache.  In-process A/B against the tiles
     * (2 threads, AVX2): 576 -> 64 0.83-0.89 of the time at 16 and 32 pixels, 1.03-1.2 at 48
     * to 128; 9216 -> 128 (4.7 MB of weights) 0.69-0.85 up to 96 pixels, 0.90 at 128, 1.08 at
     * 256; 1600 -> 512 (3.2 MB) 0.70-0.98 up to 128. */
    const double pixels = (double)g->n * g->oh * g->ow;
    const double w_bytes = (double)g->c * g->cout * elem_size;
    return cyc_pointwise(g) && g->c > CYC_DOT_MAX_OUT &&
           pixels * g->cout * elem_size <= CYC_DENSE_DX_MAX_DY_BYTES &&
           (pixels <= 32 || (w_bytes >= (1 << 20) && pixels <= 128));
}

/* A pointwise convolution, as for the input gradient above, at most 48 pixels (the packing is what few pixels do not pay back), output channels in whole
 * vectors of every instruction set (the tiles load whole rows of weights).  In-process A/B
 * against the packed tiles (2 threads, AVX2): 0.68-0.90 of the time at 16 to 48 pixels for
 * 576 -> 64, 1600 -> 512 and 9216 -> 128; 1.08-1.19 from 64 pixels for the last two. */
int cyc_conv_dense_fwd_applies(const cyc_geom_t *g, int elem_size)
{
    (void)elem_size;
    return cyc_pointwise(g) && g->cout % 16 == 0 && (double)g->n * g->oh * g->ow <= 48;
}

ptrdiff_t cyc_gemm_planes_col_step(int elem_size)
{
    /* a tile's width on any instruction set (vectors of at most 64 bytes) */
    return CYC_NBLK * 64 / elem_size;
}

size_t cyc_gemm_planes_panel_len(ptrdiff_t K, ptrdiff_t N, int elem_size)
{
    const ptrdiff_t blk = cyc_gemm_planes_col_step(elem_size);
    return (size_t)K * (size_t)((N + blk - 1) / blk * blk);
}

int cyc_conv_bwd_data_scatters(const cyc_geom_t *g, int elem_size)
{
    /* Gathering computes every dx pixel over every tap, also the taps that fall on dy's zero
     * padding: worth avoiding where that is a large share of the work (small images: 13x13
     * from 11x11 is 40% more), not where it is not (56x56 'same', whose longer gathered rows
     * run faster).  Scattering needs enough images to share out (its unit of parallel work).
     * A scatter tile computes one tap's cg channels, or a kernel row's kw x cg values: the
     * latter where that fills more of the vectors (few channels: an RGB image's 3 fill 3 of
     * 16 lanes, its 7-pixel rows 21 of 32).  Few channels also make the gather a dot product
     * per dx value, whose vectors are full: scattering rows beats it where the rows fill most
     * of theirs (measured: 21 of 32 lanes 1.8x faster, 15 of 16 1.25x; 9 of 16 1.3x slower).
     * The choice depends on the problem only, so results are the same on any thread count. */
    const int cg = g->c / g->groups;
    double gathered = (double)g->h * g->w, real = (double)g->sh * g->sw * g->oh * g->ow;
    int rows = g->groups == 1 && g->dw == 1 &&
               cyc_lane_use(g->kw * cg, elem_size) > cyc_lane_use(cg, elem_size);
    if (g->n < 4) return CYC_GATHER;
    if (cyc_plan(g, 1).dot)
        return rows && cyc_lane_use(g->kw * cg, elem_size) >= 0.6 ? CYC_SCATTER_ROWS : CYC_GATHER;
    if (gathered > 1.15 * real) return rows ? CYC_SCATTER_ROWS : CYC_SCATTER_TAPS;
    return CYC_GATHER;
}

size_t cyc_conv_scatter_scratch_bytes(const cyc_geom_t *g, int rows, int elem_size)
{
    /* outs, the sink, and with rows a row per pixel for kernel rows that cross a side (the
     * layout in cyc_conv_bwd_data_scatter) */
    size_t row = (size_t)(rows ? g->kw : 1) * g->c + 2 * 64;
    return sizeof(void *) * CYC_MR_MAX + 64 + (size_t)elem_size * row * (rows ? 1 + CYC_MR_MAX : 1);
}

static int cyc_wino_on = -1;

int cyc_conv_winograd_enabled(void)
{
    if (cyc_wino_on < 0) {
        const char *env = getenv("CYCONV_WINOGRAD");
        cyc_wino_on = env && !strcmp(env, "0") ? 0 : env && !strcmp(env, "2") ? 2 : 1;
    }
    return cyc_wino_on;
}

int cyc_conv_winograd_set(int on)
{
    int previous = cyc_conv_winograd_enabled();
    cyc_wino_on = on == 0 || on == 2 ? on : 1;
    return previous;
}

int cyc_conv_winograd_largest_tile(void)
{
    return cyc_conv_winograd_enabled() == 2 ? 2 : 4;
}

int cyc_conv_winograd(const cyc_geom_t *g, int what, int elem_size)
{
    if (!cyc_conv_winograd_enabled() || g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 ||
        g->dh != 1 || g->dw != 1 || g->groups != 1)
        return 0;
    /* The weight gradient adds every block of tiles into its nx x C x K sums: beyond L2 (F(2x2)
     * at 256 channels in and out: 4 MB) they went through memory each time, 1.2x slower than
     * direct. */
    if (what == 2 &&
        cyc_conv_winograd_dw_acc_len(g, elem_size) * (size_t)elem_size > CYC_WINO_DW_MAX_BYTES)
        return 0;
    cyc_wino_t q = what == 2 ? cyc_wino_dw(g, elem_size)
                             : cyc_wino(g, what == 1 ? CYC_WINO_DX : CYC_WINO_FWD);
    /* Few channels leave the GEMMs short and the transforms most of the work.  Tiles that
     * overhang small outputs waste products: nx per tile against the direct convolution's 9 per
     * output pixel of the forward pass (the scatter computes no more for the input gradient). */
    if (q.c < CYC_WINO_MIN_CHANNELS || q.k < CYC_WINO_MIN_CHANNELS) return 0;
    const double u_bytes = (double)q.nx * q.c * q.k * elem_size;
    const double most = u_bytes > CYC_WINO_BIG_U_BYTES ? CYC_WINO_BIG_U_SHARE : CYC_WINO_MAX_SHARE;
    return (double)q.nx * q.ty * q.tx <= most * 9.0 * g->oh * g->ow;
}

ptrdiff_t cyc_conv_winograd_tiles(const cyc_geom_t *g, int mode)
{
    cyc_wino_t q = cyc_wino(g, mode);
    return (ptrdiff_t)q.n * q.ty * q.tx;
}

ptrdiff_t cyc_conv_winograd_dw_tiles(const cyc_geom_t *g, int elem_size)
{
    cyc_wino_t q = cyc_wino_dw(g, elem_size);
    return (ptrdiff_t)q.n * q.ty * q.tx;
}

int cyc_conv_winograd_dw_tile(const cyc_geom_t *g, int elem_size)
{
    return cyc_wino_dw(g, elem_size).m;
}

int cyc_conv_winograd_tile(const cyc_geom_t *g, int mode)
{
    return cyc_wino(g, mode).m;
}

int cyc_conv_winograd_block(const cyc_geom_t *g, int mode, int elem_size)
{
    cyc_wino_t q = cyc_wino(g, mode);
    return cyc_wino_block(&q, elem_size, 0);
}

size_t cyc_conv_winograd_scratch_bytes(const cyc_geom_t *g, int mode, int elem_size)
{
    /* the layout in FN(cyc_conv_winograd) */
    cyc_wino_t q = cyc_wino(g, mode);
    int vlen = 64 / elem_size;
    size_t cpad = (size_t)cyc_round_up(q.c, vlen), opad = (size_t)cyc_round_up(q.k, vlen);
    size_t block = (size_t)cyc_wino_block(&q, elem_size, 0);
    return 2 * sizeof(void *) * CYC_MR_MAX + 1 + 64 +
           (size_t)elem_size * (size_t)q.nx * block * (cpad + opad);
}

size_t cyc_conv_winograd_dw_acc_len(const cyc_geom_t *g, int elem_size)
{
    /* [nx][C][K to 64 bytes]: whole cache lines */
    return (size_t)cyc_wino_dw(g, elem_size).nx * (size_t)g->c *
           (size_t)cyc_round_up(g->cout, 64 / elem_size);
}

size_t cyc_conv_winograd_dw_scratch_bytes(const cyc_geom_t *g, int elem_size)
{
    /* the layout in FN(cyc_conv_bwd_filter_winograd) */
    cyc_wino_t q = cyc_wino_dw(g, elem_size);
    int vlen = 64 / elem_size;
    size_t cpad = (size_t)cyc_round_up(q.c, vlen), opad = (size_t)cyc_round_up(q.k, vlen);
    size_t block = (size_t)cyc_wino_block(&q, elem_size, 1);
    return block * (sizeof(void *) + sizeof(int)) + CYC_MR_MAX * sizeof(ptrdiff_t) + 64 +
           (size_t)elem_size * (opad + (size_t)q.nx * block * (cpad + opad));
}

int cyc_conv_dw_by_windows(const cyc_geom_t *g)
{
    return g->groups == 1 && g->kh * g->kw * g->c <= CYC_WIN_K;
}

size_t cyc_conv_dw_acc_row(const cyc_geom_t *g, int elem_size)
{
    return (size_t)g->groups * (size_t)cyc_dw_opad(g, elem_size);
}

size_t cyc_conv_dw_acc_len(const cyc_geom_t *g, int elem_size)
{
    int vlen = 64 / elem_size;
    /* whole cache lines, so that accumulators laid end to end never share one */
    size_t len = (size_t)g->kh * g->kw * (g->c / g->groups) * cyc_conv_dw_acc_row(g, elem_size) +
                 (size_t)vlen;
    return (len + (size_t)vlen - 1) / (size_t)vlen * (size_t)vlen;
}

int cyc_conv_dw_big_sums(const cyc_geom_t *g, int elem_size)
{
    return cyc_conv_dw_acc_len(g, elem_size) * (size_t)elem_size > ((size_t)1 << 20);
}

size_t cyc_conv_dw_scratch_bytes(const cyc_geom_t *g, int elem_size)
{
    cyc_plan_t r = cyc_plan(g, 0);
    size_t P = (size_t)cyc_dw_chunk(g, elem_size), nseg = (size_t)r.nseg;
    size_t bytes = (size_t)elem_size * (P * cyc_conv_dw_acc_row(g, elem_size) + g->cout +
                                        (size_t)cyc_dw_opad(g, elem_size)) + 64;
    bytes += (size_t)elem_size * P * CYC_MR_MAX + CYC_DW_PACK_SLACK_BYTES + 64;
    bytes += sizeof(void *) * (nseg * P + 2 * P) + sizeof(int) * P + 8;
    bytes += CYC_TAPS_BYTES(nseg) + 64;
    if (cyc_dw_gathers(g)) bytes += (size_t)elem_size * P * (size_t)r.K;
    return bytes;
}

#define CYC_DW_FINISH(SUF, T)                                                                  \
    void cyc_conv_dw_finish_##SUF(const cyc_geom_t *g, const T *accs, int n_acc, T *dw,        \
                                  ptrdiff_t k0, ptrdiff_t k1)                                  \
    {                                                                                          \
        int og = g->cout / g->groups;                                                          \
        int opad = cyc_dw_opad(g, (int)sizeof(T));                                             \
        size_t acc_len = cyc_conv_dw_acc_len(g, (int)sizeof(T));                               \
        /* the partial sums in a fixed order, 0 + a0 + a1 + ...; the loops over co vectorise. \
         * One partial sum is copied as it is, as the weight gradient's rows shared out over   \
         * threads are written straight into dw (0 + a turned an underflow's -0 into +0). */   \
        for (ptrdiff_t k = k0; k < k1; k++) /* k = (kk, ci) */                                 \
            for (int grp = 0; grp < g->groups; grp++) {                                        \
                const T *a = accs + ((size_t)k * g->groups + grp) * opad;                      \
                T *restrict d = dw + (size_t)k * g->cout + (size_t)grp * og;                   \
                if (n_acc == 1)                                                                \
                    for (int co = 0; co < og; co++) d[co] = a[co];                             \
                else                                                                           \
                    for (int co = 0; co < og; co++) d[co] = (T)0 + a[co];                      \
                for (int t = 1; t < n_acc; t++)                                                \
                    for (int co = 0; co < og; co++) d[co] += a[t * acc_len + co];              \
            }                                                                                  \
    }
CYC_DW_FINISH(f32, float)
CYC_DW_FINISH(f64, double)

/* G^T u of one column of a values (a = 4 or 6) into 3: the weights' side of the Winograd
 * transform, transposed. */
#define CYC_WINO_GT(T, a, u, s0, s1, s2)                                                       \
    do {                                                                                       \
        if ((a) == 4) {                                                                        \
            s0 = u[0] + (u[1] + u[2]) * (T)0.5;                                                \
            s1 = (u[1] - u[2]) * (T)0.5;                                                       \
            s2 = (u[1] + u[2]) * (T)0.5 + u[3];                                                \
        } else {                                                                               \
            const T e12 = u[1] + u[2], e34 = u[3] + u[4];                                      \
            s0 = u[0] * (T)0.25 - e12 * (T)(1.0 / 6) + e34 * (T)(1.0 / 24);                   \
            s1 = (u[2] - u[1]) * (T)(1.0 / 6) + (u[3] - u[4]) * (T)(1.0 / 12);                 \
            s2 = (e34 - e12) * (T)(1.0 / 6) + u[5];                                            \
        }                                                                                      \
    } while (0)

/* G^T U G for nk output channels, U[xi][k] (xi = a * row + column), into dw's 3 x 3 taps of
 * input channel c: the loops over k innermost, with a a constant, so that they vectorise. */
#define CYC_WINO_GTG(T, A, U, S, dw, C, K, c, k0, nk)                                          \
    do {                                                                                       \
        for (int e = 0; e < (A); e++)                                                          \
            for (int k = 0; k < (nk); k++) {                                                   \
                T col[6];                                                                      \
                for (int r = 0; r < (A); r++) col[r] = U[r * (A) + e][k];                      \
                CYC_WINO_GT(T, (A), col, S[0][e][k], S[1][e][k], S[2][e][k]);                  \
            }                                                                                  \
        for (int i = 0; i < 3; i++) {                                                          \
            T *d = (dw) + ((size_t)i * 3 * (C) + (size_t)(c)) * (K) + (k0);                    \
            const size_t tap = (size_t)(C) * (K);                                              \
            for (int k = 0; k < (nk); k++) {                                                   \
                T row[6];                                                                      \
                for (int e = 0; e < (A); e++) row[e] = S[i][e][k];                             \
                CYC_WINO_GT(T, (A), row, d[k], d[tap + k], d[2 * tap + k]);                    \
            }                                                                                  \
        }                                                                                      \
    } while (0)

/* dw = G^T dU G (see FN(cyc_conv_bwd_filter_winograd)) for input channels [c0, c1), dU the sum
 * of the partial sums in a fixed order; 64 output channels at a time. */
#define CYC_DW_FINISH_WINOGRAD(SUF, T)                                                         \
    void cyc_conv_dw_finish_winograd_##SUF(const cyc_geom_t *g, const T *accs, int n_acc,      \
                                           T *dw, ptrdiff_t c0, ptrdiff_t c1)                  \
    {                                                                                          \
        const int C = g->c, K = g->cout, opad = cyc_round_up(K, 64 / (int)sizeof(T));          \
        const size_t acc_len = cyc_conv_winograd_dw_acc_len(g, (int)sizeof(T));                \
        const cyc_wino_t q = cyc_wino_dw(g, (int)sizeof(T));                                   \
        T u[36][64], s[3][6][64];                                                              \
        for (ptrdiff_t c = c0; c < c1; c++)                                                    \
            for (int k0 = 0; k0 < K; k0 += 64) {                                               \
                const int nk = K - k0 < 64 ? K - k0 : 64;                                      \
                for (int xi = 0; xi < q.nx; xi++) {                                            \
                    const T *acc = accs + ((size_t)xi * C + (size_t)c) * opad + k0;            \
                    for (int k = 0; k < nk; k++) u[xi][k] = (T)0 + acc[k];                     \
                    for (int t = 1; t < n_acc; t++)                                            \
                        for (int k = 0; k < nk; k++) u[xi][k] += acc[t * acc_len + k];         \
                }                                                                              \
                if (q.a == 4)                                                                  \
                    CYC_WINO_GTG(T, 4, u, s, dw, C, K, c, k0, nk);                             \
                else                                                                           \
                    CYC_WINO_GTG(T, 6, u, s, dw, C, K, c, k0, nk);                             \
            }                                                                                  \
    }
CYC_DW_FINISH_WINOGRAD(f32, float)
CYC_DW_FINISH_WINOGRAD(f64, double)

/* Subnormal numbers flushed to zero for the calling thread, as results and as inputs (x86's
 * MXCSR FTZ and DAZ bits, ARM's FPCR FZ bit), until cyc_restore_fp_modes gets the returned
 * state back.  Adam's first moment decays by beta_1 at each step where a weight's gradient is
 * 0 (a dead unit) and passes through the subnormals: on the seed model, 10,000 to 20,000 of
 * its 93,000 moments from the 900th step of the first epoch, which made the update 4x slower
 * (111 against 469 us per step).  TensorFlow's CPU kernels run with these modes set.  The
 * compiler does not order arithmetic against the mode switch: the kernels it brackets must stay
 * calls into other files (no link-time inlining). */
static unsigned long cyc_flush_subnormals(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__SSE2__)
    unsigned int csr = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(csr | 0x8040u);   /* FTZ (bit 15) and DAZ (bit 6) */
    return csr;
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040u);
    return csr;
#elif defined(__GNUC__) && defined(__aarch64__)
    unsigned long fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr | (1ul << 24)));   /* FZ */
    return fpcr;
#else
    return 0;
#endif
}

static void cyc_restore_fp_modes(unsigned long modes)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__SSE2__)
    __builtin_ia32_ldmxcsr((unsigned int)modes);
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
    _mm_setcsr((unsigned int)modes);
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(modes));
#else
    (void)modes;
#endif
}

#ifdef CYC_HAVE_X86_ISAS
#define CYC_PICK(name, SUF, ...)                                                               \
    do {                                                                                       \
        switch (cyc_isa_get()) {                                                               \
        case CYC_ISA_AVX512: name##_##SUF##_avx512(__VA_ARGS__); return;                       \
        case CYC_ISA_AVX2: name##_##SUF##_avx2(__VA_ARGS__); return;                           \
        default: name##_##SUF##_portable(__VA_ARGS__); return;                                 \
        }                                                                                      \
    } while (0)
#define CYC_PICK_RET(name, SUF, ...)                                                           \
    do {                                                                                       \
        switch (cyc_isa_get()) {                                                               \
        case CYC_ISA_AVX512: return name##_##SUF##_avx512(__VA_ARGS__);                        \
        case CYC_ISA_AVX2: return name##_##SUF##_avx2(__VA_ARGS__);                            \
        default: return name##_##SUF##_portable(__VA_ARGS__);                                  \
        }                                                                                      \
    } while (0)
#else
#define CYC_PICK(name, SUF, ...) name##_##SUF##_portable(__VA_ARGS__)
#define CYC_PICK_RET(name, SUF, ...) return name##_##SUF##_portable(__VA_ARGS__)
#endif

#define CYC_ENTRY_POINTS(SUF, T)                                                               \
    void cyc_conv_pack_##SUF(const cyc_geom_t *g, const T *w, const T *b, int tr, T *out,      \
                             ptrdiff_t k0, ptrdiff_t k1)                                       \
    {                                                                                          \
        CYC_PICK(cyc_conv_pack, SUF, g, w, b, tr, out, k0, k1);                                \
    }                                                                                          \
    void cyc_conv_fwd_##SUF(const cyc_geom_t *g, const T *x, const T *p, int relu,             \
                            const T *z, T *y, ptrdiff_t m0, ptrdiff_t m1, void *s)             \
    {                                                                                          \
        CYC_PICK(cyc_conv_fwd, SUF, g, x, p, relu, z, y, m0, m1, s);                           \
    }                                                                                          \
    void cyc_conv_bwd_data_##SUF(const cyc_geom_t *g, const T *dy, const T *p, const T *z,     \
                                 T *dx, ptrdiff_t m0, ptrdiff_t m1, void *s)                   \
    {                                                                                          \
        CYC_PICK(cyc_conv_bwd_data, SUF, g, dy, p, z, dx, m0, m1, s);                          \
    }                                                                                          \
    void cyc_conv_bwd_data_scatter_##SUF(const cyc_geom_t *g, int rows, const T *dy,          \
                                         const T *p, T *dx, ptrdiff_t n0, ptrdiff_t n1,        \
                                         void *s)                                              \
    {                                                                                          \
        CYC_PICK(cyc_conv_bwd_data_scatter, SUF, g, rows, dy, p, dx, n0, n1, s);               \
    }                                                                                          \
    void cyc_conv_winograd_##SUF(const cyc_geom_t *g, int mode, const T *src, const T *p,      \
                                 int relu, T *dst, ptrdiff_t t0, ptrdiff_t t1, void *s)        \
    {                                                                                          \
        CYC_PICK(cyc_conv_winograd, SUF, g, mode, src, p, relu, dst, t0, t1, s);               \
    }                                                                                          \
    void cyc_conv_bwd_filter_winograd_##SUF(const cyc_geom_t *g, const T *x, const T *dy,     \
                                            const T *ry, T *du, T *db, ptrdiff_t t0,           \
                                            ptrdiff_t t1, void *s)                             \
    {                                                                                          \
        CYC_PICK(cyc_conv_bwd_filter_winograd, SUF, g, x, dy, ry, du, db, t0, t1, s);          \
    }                                                                                          \
    void cyc_depthwise_fwd_##SUF(const cyc_geom_t *g, const T *x, const T *w, const T *b,      \
                                 int relu, T *y, ptrdiff_t r0, ptrdiff_t r1)                   \
    {                                                                                          \
        CYC_PICK(cyc_depthwise_fwd, SUF, g, x, w, b, relu, y, r0, r1);                         \
    }                                                                                          \
    void cyc_depthwise_bwd_data_##SUF(const cyc_geom_t *g, const T *dy, const T *w, T *dx,     \
                                      ptrdiff_t r0, ptrdiff_t r1)                              \
    {                                                                                          \
        CYC_PICK(cyc_depthwise_bwd_data, SUF, g, dy, w, dx, r0, r1);                           \
    }                                                                                          \
    void cyc_depthwise_bwd_filter_##SUF(const cyc_geom_t *g, const T *x, const T *dy,         \
                                        const T *ry, T *dw, T *db, ptrdiff_t r0, ptrdiff_t r1, \
                                        T *row)                                                \
    {                                                                                          \
        CYC_PICK(cyc_depthwise_bwd_filter, SUF, g, x, dy, ry, dw, db, r0, r1, row);            \
    }                                                                                          \
    void cyc_conv_bwd_filter_##SUF(const cyc_geom_t *g, const T *x, const T *dy,              \
                                   const T *ry, const cyc_unpool_t *up, T *dw, T *db,          \
                                   ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t k0, ptrdiff_t k1,     \
                                   void *s)                                                    \
    {                                                                                          \
        CYC_PICK(cyc_conv_bwd_filter, SUF, g, x, dy, ry, up, dw, db, m0, m1, k0, k1, s);       \
    }                                                                                          \
    void cyc_conv_bwd_filter_by_windows_##SUF(const cyc_geom_t *g, const T *x,               \
                                              const cyc_unpool_t *up, T *dw, T *db,            \
                                              ptrdiff_t w0, ptrdiff_t w1)                      \
    {                                                                                          \
        CYC_PICK(cyc_conv_bwd_filter_by_windows, SUF, g, x, up, dw, db, w0, w1);               \
    }                                                                                          \
    void cyc_max_pool_##SUF(const cyc_geom_t *g, const T *x, T *y, int64_t *idx,              \
                            uint8_t *cell, int relu_in, ptrdiff_t r0, ptrdiff_t r1)            \
    {                                                                                          \
        CYC_PICK(cyc_max_pool, SUF, g, x, y, idx, cell, relu_in, r0, r1);                      \
    }                                                                                          \
    ptrdiff_t cyc_max_pool_bwd_##SUF(const cyc_geom_t *g, const T *dy, const int64_t *idx,    \
                                     const uint8_t *cell, T *dx, int stream, ptrdiff_t n0,     \
                                     ptrdiff_t n1)                                             \
    {                                                                                          \
        CYC_PICK_RET(cyc_max_pool_bwd, SUF, g, dy, idx, cell, dx, stream, n0, n1);             \
    }                                                                                          \
    void cyc_transpose_##SUF(const T *src, ptrdiff_t src_ld, T *dst, ptrdiff_t dst_ld,         \
                             ptrdiff_t rows, ptrdiff_t cols)                                   \
    {                                                                                          \
        CYC_PICK(cyc_transpose, SUF, src, src_ld, dst, dst_ld, rows, cols);                    \
    }                                                                                          \
    void cyc_conv_planar_##SUF(const cyc_geom_t *g, const T *x, const T *packed, int relu,     \
                               T *y, ptrdiff_t n, int oy0, int oy1, T *stage)                  \
    {                                                                                          \
        CYC_PICK(cyc_conv_planar, SUF, g, x, packed, relu, y, n, oy0, oy1, stage);             \
    }                                                                                          \
    void cyc_adam_##SUF(T *var, const T *g, T *m, T *v, ptrdiff_t n, T alpha, T c1, T c2,      \
                        T eps)                                                                 \
    {                                                                                          \
        /* the kernel is called from here, another file: no arithmetic crosses the switch */   \
        unsigned long fp_modes = cyc_flush_subnormals();                                       \
        cyc_adam_picked_##SUF(var, g, m, v, n, alpha, c1, c2, eps);                            \
        cyc_restore_fp_modes(fp_modes);                                                        \
    }                                                                                          \
    void cyc_conv_dense_dx_##SUF(const T *dy, const T *w, T *dx, ptrdiff_t P, ptrdiff_t cin,   \
                                 int cout, ptrdiff_t k0, ptrdiff_t k1)                         \
    {                                                                                          \
        CYC_PICK(cyc_conv_dense_dx, SUF, dy, w, dx, P, cin, cout, k0, k1);                     \
    }                                                                                          \
    void cyc_conv_dense_fwd_##SUF(const T *x, const T *w, const T *bias, int relu, T *y,       \
                                  ptrdiff_t P, ptrdiff_t cin, int cout, int c0, int c1)        \
    {                                                                                          \
        CYC_PICK(cyc_conv_dense_fwd, SUF, x, w, bias, relu, y, P, cin, cout, c0, c1);          \
    }                                                                                          \
    void cyc_gemm_planes_pack_##SUF(const T *b, ptrdiff_t K, ptrdiff_t N, int ones,            \
                                    ptrdiff_t n0, ptrdiff_t n1, T *panels)                     \
    {                                                                                          \
        CYC_PICK(cyc_gemm_planes_pack, SUF, b, K, N, ones, n0, n1, panels);                    \
    }                                                                                          \
    void cyc_gemm_planes_pack_t_##SUF(const T *x, ptrdiff_t K, ptrdiff_t N, int ones,          \
                                      T *panels)                                               \
    {                                                                                          \
        CYC_PICK(cyc_gemm_planes_pack_t, SUF, x, K, N, ones, panels);                          \
    }                                                                                          \
    void cyc_gemm_planes_##SUF(const T *a, const T *panels, int relu, T *y, ptrdiff_t K,       \
                               ptrdiff_t N, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0,          \
                               ptrdiff_t n1, ptrdiff_t k0, ptrdiff_t k1)                       \
    {                                                                                          \
        CYC_PICK(cyc_gemm_planes, SUF, a, panels, relu, y, K, N, m0, m1, n0, n1, k0, k1);      \
    }                                                                                          \
    void cyc_relu_bwd_##SUF(const T *dy, const T *y, T *out, ptrdiff_t n)                      \
    {                                                                                          \
        CYC_PICK(cyc_relu_bwd, SUF, dy, y, out, n);                                            \
    }                                                                                          \
    void cyc_dropout_##SUF(const T *x, uint64_t key, uint32_t threshold, T scale, T *y,        \
                           uint8_t *keep, ptrdiff_t i0, ptrdiff_t i1)                          \
    {                                                                                          \
        CYC_PICK(cyc_dropout, SUF, x, key, threshold, scale, y, keep, i0, i1);                 \
    }                                                                                          \
    void cyc_dropout_bwd_##SUF(const T *dy, const uint8_t *keep, T scale, T *out, ptrdiff_t n) \
    {                                                                                          \
        CYC_PICK(cyc_dropout_bwd, SUF, dy, keep, scale, out, n);                               \
    }                                                                                          \
    void cyc_avg_pool_##SUF(const cyc_geom_t *g, const T *x, T *y, int cip, ptrdiff_t r0,      \
                            ptrdiff_t r1)                                                      \
    {                                                                                          \
        CYC_PICK(cyc_avg_pool, SUF, g, x, y, cip, r0, r1);                                     \
    }                                                                                          \
    void cyc_avg_pool_bwd_##SUF(const cyc_geom_t *g, const T *dy, T *dx, int cip,              \
                                ptrdiff_t n0, ptrdiff_t n1)                                    \
    {                                                                                          \
        CYC_PICK(cyc_avg_pool_bwd, SUF, g, dy, dx, cip, n0, n1);                               \
    }

/* The planar kernel's packed weights and bias (see cyconv.h). */
size_t cyc_conv_planar_packed_len(const cyc_geom_t *g)
{
    const size_t blocks = ((size_t)g->cout + CYC_PLANAR_PK - 1) / CYC_PLANAR_PK;
    return blocks * CYC_PLANAR_PK * ((size_t)g->c * g->kh * g->kw + 1);
}

/* The input rows a band of output rows reads. */
int cyc_conv_planar_stage_rows(const cyc_geom_t *g, int band_rows)
{
    return (band_rows - 1) * g->sh + (g->kh - 1) * g->dh + 1;
}

/* A staged phase row: the output row's pixels rounded up to 64-byte vectors (the widest, so
 * that every instruction set's whole vectors stay inside), and the taps' reach past them. */
int cyc_conv_planar_stage_len(const cyc_geom_t *g, int elem_size)
{
    const int lanes = 64 / elem_size;
    return (g->ow + lanes - 1) / lanes * lanes + (g->kw - 1) * g->dw / g->sw;
}

size_t cyc_conv_planar_stage_bytes(const cyc_geom_t *g, int band_rows, int elem_size)
{
    return (size_t)g->c * g->sw * cyc_conv_planar_stage_rows(g, band_rows) *
           cyc_conv_planar_stage_len(g, elem_size) * elem_size;
}

#define CYC_ADAM_PICKED(SUF, T)                                                                \
    static void cyc_adam_picked_##SUF(T *var, const T *g, T *m, T *v, ptrdiff_t n, T alpha,    \
                                      T c1, T c2, T eps)                                       \
    {                                                                                          \
        CYC_PICK(cyc_adam, SUF, var, g, m, v, n, alpha, c1, c2, eps);                          \
    }
CYC_ADAM_PICKED(f32, float)
CYC_ADAM_PICKED(f64, double)

CYC_ENTRY_POINTS(f32, float)
CYC_ENTRY_POINTS(f64, double)
