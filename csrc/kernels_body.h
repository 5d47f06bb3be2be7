/* The kernels, written once and compiled once per (instruction set, dtype).
 *
 * The including file defines:
 *   T    the element type (float or double)
 *   SUF  f32 or f64
 *   ISA  portable, avx2 or avx512 (a name suffix; the target itself comes from a pragma)
 *   MR   output pixels per register tile of the convolution micro-kernel (at most CYC_MR_MAX)
 * and includes this file.  Vectors are GCC vector extensions of 64 bytes (16 floats, 8 doubles):
 * the compiler maps one to a zmm register, two ymm or four xmm, whatever the target has, so one
 * source gives every instruction set.  NBLK (vectors per tile) is fixed for every instruction set
 * so that packed weights have one layout.
 *
 * Convolution is an implicit GEMM in NHWC: a tile of MR output pixels x NBLK*VLEN output channels
 * sits in registers while the kernel reduces over (kh, kw, cin), read as segments (see
 * cyc_plan_t).  Each pixel's segment is a pointer: into the source, into a row of zeros where the
 * segment lies in the padding, or into a small gathered copy where it straddles a border, so the
 * inner loop has no branches.  The input gradient is the same computation with the roles of input
 * and output swapped, so it reuses the same tiles.  Few computed channels (a first layer's input
 * gradient, a 3-channel output) waste most vector lanes that way; those reduce with vectors along
 * the segments instead (dot mode).
 */

#define CYC_CAT3_(a, b, c) a##_##b##_##c
#define CYC_CAT3(a, b, c) CYC_CAT3_(a, b, c)
#define FN(name) CYC_CAT3(name, SUF, ISA)
#define V FN(vec)
#define UV FN(uvec)
#define IV FN(ivec)
#define VLEN ((int)(64 / sizeof(T)))
#define LOADV(p) (*(const UV *)(p))
#define STOREV(p, v) (*(UV *)(p) = (v))
#define ALWAYS_INLINE static inline __attribute__((always_inline))

typedef T V __attribute__((vector_size(64)));
typedef T UV __attribute__((vector_size(64), aligned(sizeof(T)), may_alias));
#if defined(CYC_T_IS_DOUBLE)
typedef int64_t IV __attribute__((vector_size(64)));
#else
typedef int32_t IV __attribute__((vector_size(64)));
#endif

ALWAYS_INLINE V FN(relu)(V v)
{
    IV keep = v > (V){0};
    return (V)((IV)v & keep);
}

ALWAYS_INLINE T FN(hsum)(V v)
{
    T lanes[VLEN];
    memcpy(lanes, &v, sizeof(lanes));
    T s = 0;
    for (int l = 0; l < VLEN; l++) s += lanes[l];
    return s;
}

/* One register tile: acc[p][b] = bias[b] + sum over segments s and i of xp[s][p][off + i] * w.
 * mr and nv are compile-time constants after inlining (see FN(tile_any)). */
ALWAYS_INLINE void FN(tile)(const int mr, const int nv, const T *const *xp, ptrdiff_t off,
                            int nseg, int len, const unsigned char *live, const T *restrict w,
                            int bw, const T *restrict bias, int relu, T *out, ptrdiff_t ostride,
                            int nlast)
{
    V acc[MR][CYC_NBLK];
    for (int b = 0; b < nv; b++) {
        V bv = LOADV(bias + b * VLEN);
        for (int p = 0; p < mr; p++) acc[p][b] = bv;
    }
    for (int s = 0; s < nseg; s++) {
        if (!live[s]) continue;
        const T *const *xs = xp + (ptrdiff_t)s * MR;
        const T *restrict ws = w + (ptrdiff_t)s * len * bw;
        const T *xr[MR];
        for (int p = 0; p < mr; p++) xr[p] = xs[p] + off;
        for (int i = 0; i < len; i++) {
            V wv[CYC_NBLK];
            for (int b = 0; b < nv; b++) wv[b] = LOADV(ws + (ptrdiff_t)i * bw + b * VLEN);
            for (int p = 0; p < mr; p++) {
                T x = xr[p][i];
                for (int b = 0; b < nv; b++) acc[p][b] += x * wv[b];
            }
        }
    }
    if (relu) {
        for (int p = 0; p < mr; p++)
            for (int b = 0; b < nv; b++) acc[p][b] = FN(relu)(acc[p][b]);
    }
    for (int p = 0; p < mr; p++) {
        T *o = out + p * ostride;
        for (int b = 0; b < nv - 1; b++) STOREV(o + b * VLEN, acc[p][b]);
        if (nlast == VLEN) {
            STOREV(o + (nv - 1) * VLEN, acc[p][nv - 1]);
        } else {
            T lanes[VLEN];
            memcpy(lanes, &acc[p][nv - 1], sizeof(lanes));
            for (int l = 0; l < nlast; l++) o[(nv - 1) * VLEN + l] = lanes[l];
        }
    }
}

/* Full tiles get code specialised for their shape; the remainder tile takes the generic one. */
static void FN(tile_any)(int mr, int nv, const T *const *xp, ptrdiff_t off, int nseg, int len,
                         const unsigned char *live, const T *w, int bw, const T *bias, int relu,
                         T *out, ptrdiff_t ostride, int nlast)
{
    if (mr == MR && nv == CYC_NBLK)
        FN(tile)(MR, CYC_NBLK, xp, off, nseg, len, live, w, bw, bias, relu, out, ostride, nlast);
    else if (mr == MR && nv == 1)
        FN(tile)(MR, 1, xp, off, nseg, len, live, w, bw, bias, relu, out, ostride, nlast);
    else
        FN(tile)(mr, nv, xp, off, nseg, len, live, w, bw, bias, relu, out, ostride, nlast);
}

/* Dot mode: out[p][o] = bias[o] + sum over segments of xp[s][p][off + l] * w[o][s * len + l],
 * with vectors along l; all the tile's pixels share each weight vector. */
ALWAYS_INLINE void FN(dot)(const int mr, const T *const *xp, ptrdiff_t off, int nseg, int len,
                           const unsigned char *live, const T *restrict w, int nout,
                           const T *bias, int relu, T *out, ptrdiff_t ostride)
{
    const int K = nseg * len;
    for (int o = 0; o < nout; o++) {
        V acc[MR];
        T tail[MR];
        for (int p = 0; p < mr; p++) { acc[p] = (V){0}; tail[p] = 0; }
        const T *wo = w + (ptrdiff_t)o * K;
        for (int s = 0; s < nseg; s++) {
            if (!live[s]) continue;
            const T *restrict ws = wo + (ptrdiff_t)s * len;
            const T *xr[MR];
            for (int p = 0; p < mr; p++) xr[p] = xp[(ptrdiff_t)s * MR + p] + off;
            int l = 0;
            for (; l + VLEN <= len; l += VLEN) {
                V wv = LOADV(ws + l);
                for (int p = 0; p < mr; p++) acc[p] += LOADV(xr[p] + l) * wv;
            }
            for (; l < len; l++)
                for (int p = 0; p < mr; p++) tail[p] += xr[p][l] * ws[l];
        }
        for (int p = 0; p < mr; p++) {
            T v = FN(hsum)(acc[p]) + tail[p] + (bias ? bias[o] : (T)0);
            if (relu && !(v > 0)) v = 0;
            out[p * ostride + o] = v;
        }
    }
}

static void FN(dot_any)(int mr, const T *const *xp, ptrdiff_t off, int nseg, int len,
                        const unsigned char *live, const T *w, int nout, const T *bias, int relu,
                        T *out, ptrdiff_t ostride)
{
    if (mr == MR)
        FN(dot)(MR, xp, off, nseg, len, live, w, nout, bias, relu, out, ostride);
    else
        FN(dot)(mr, xp, off, nseg, len, live, w, nout, bias, relu, out, ostride);
}

/* The source pixel that tap (i, jj) of computed pixel (oy, ox) reads, as a flat pixel index, or
 * -1 if it reads padding (or, in the input gradient, a position the stride skips). */
static inline ptrdiff_t FN(tap_pixel)(const cyc_geom_t *g, const cyc_plan_t *r, int n, int oy,
                                      int ox, int i, int jj)
{
    int sy, sx;
    if (!r->transposed) {
        sy = oy * g->sh - g->pad_top + i * g->dh;
        sx = ox * g->sw - g->pad_left + jj * g->dw;
    } else {
        /* dx[iy] collects dy[oy] where oy * sh = iy + pad - i * dh; kw runs reversed. */
        int j = g->kw - 1 - jj;
        int ty = oy + g->pad_top - i * g->dh, tx = ox + g->pad_left - j * g->dw;
        if (ty < 0 || tx < 0 || ty % g->sh || tx % g->sw) return -1;
        sy = ty / g->sh;
        sx = tx / g->sw;
    }
    if (sy < 0 || sy >= r->src_h || sx < 0 || sx >= r->src_w) return -1;
    return ((ptrdiff_t)n * r->src_h + sy) * r->src_w + sx;
}

/* Offset of each tap from the window's origin, for tap-mode pixels away from the borders. */
static void FN(tap_offsets)(const cyc_geom_t *g, const cyc_plan_t *r, ptrdiff_t *tapoff)
{
    for (int i = 0; i < g->kh; i++)
        for (int jj = 0; jj < g->kw; jj++) {
            ptrdiff_t dy = (ptrdiff_t)i * g->dh, dx = (ptrdiff_t)jj * g->dw;
            if (r->transposed) {
                dy = -dy;
                dx = -(ptrdiff_t)(g->kw - 1 - jj) * g->dw;
            }
            tapoff[i * g->kw + jj] = (dy * r->src_w + dx) * r->src_c;
        }
}

/* The segments of computed pixel (n, oy, ox): seg[s * stride] points at segment s's values
 * (into src, into `zeros` if it lies wholly in the padding, or into gbuf, a copy with zeros where
 * it straddles a border).  live[s] is set where a segment reads anything real. */
static void FN(pixel_segments)(const cyc_geom_t *g, const cyc_plan_t *r, const ptrdiff_t *tapoff,
                               const T *src, const T *zeros, int n, int oy, int ox,
                               const T **seg, ptrdiff_t stride, T *gbuf, unsigned char *live)
{
    if (r->row_mode) {
        int sy0, sxa, sdy;
        if (!r->transposed) {
            sy0 = oy * g->sh - g->pad_top; sdy = g->dh;
            sxa = ox * g->sw - g->pad_left;
        } else {
            sy0 = oy + g->pad_top; sdy = -g->dh;
            sxa = ox + g->pad_left - (g->kw - 1);
        }
        const int inside_x = sxa >= 0 && sxa + g->kw <= r->src_w;
        for (int i = 0; i < g->kh; i++) {
            int sy = sy0 + i * sdy;
            if (sy < 0 || sy >= r->src_h) { seg[i * stride] = zeros; continue; }
            const T *row = src + ((ptrdiff_t)n * r->src_h + sy) * r->src_w * r->src_c;
            live[i] = 1;
            if (inside_x) { seg[i * stride] = row + (ptrdiff_t)sxa * r->src_c; continue; }
            T *buf = gbuf + (ptrdiff_t)i * r->len;
            for (int j = 0; j < g->kw; j++) {
                int sx = sxa + j;
                if (sx >= 0 && sx < r->src_w)
                    memcpy(buf + j * r->src_c, row + (ptrdiff_t)sx * r->src_c,
                           sizeof(T) * (size_t)r->src_c);
                else
                    memset(buf + j * r->src_c, 0, sizeof(T) * (size_t)r->src_c);
            }
            seg[i * stride] = buf;
        }
        return;
    }
    const int ext_y = (g->kh - 1) * g->dh, ext_x = (g->kw - 1) * g->dw;
    int sy0, sx0, inside;
    if (!r->transposed) {
        sy0 = oy * g->sh - g->pad_top;
        sx0 = ox * g->sw - g->pad_left;
        inside = sy0 >= 0 && sy0 + ext_y < r->src_h && sx0 >= 0 && sx0 + ext_x < r->src_w;
    } else {
        /* with stride 1 every tap of an inner pixel is real; otherwise check each tap */
        sy0 = oy + g->pad_top;
        sx0 = ox + g->pad_left;
        inside = g->sh == 1 && g->sw == 1 && sy0 - ext_y >= 0 && sy0 < r->src_h &&
                 sx0 - ext_x >= 0 && sx0 < r->src_w;
    }
    const int nseg = r->nseg;
    if (inside) {
        const T *base = src + (((ptrdiff_t)n * r->src_h + sy0) * r->src_w + sx0) * r->src_c;
        for (int s = 0; s < nseg; s++) { seg[s * stride] = base + tapoff[s]; live[s] = 1; }
        return;
    }
    for (int i = 0; i < g->kh; i++)
        for (int jj = 0; jj < g->kw; jj++) {
            int s = i * g->kw + jj;
            ptrdiff_t px = FN(tap_pixel)(g, r, n, oy, ox, i, jj);
            if (px >= 0) {
                seg[s * stride] = src + px * r->src_c;
                live[s] = 1;
            } else {
                seg[s * stride] = zeros;
            }
        }
}

/* Walks flattened pixels (n, y, x) of an h x w image without divisions. */
typedef struct { int n, y, x; } FN(cursor_t);

ALWAYS_INLINE FN(cursor_t) FN(cursor_at)(ptrdiff_t m, int h, int w)
{
    FN(cursor_t) c;
    ptrdiff_t plane = (ptrdiff_t)h * w;
    c.n = (int)(m / plane);
    int rem = (int)(m - (ptrdiff_t)c.n * plane);
    c.y = rem / w;
    c.x = rem - c.y * w;
    return c;
}

ALWAYS_INLINE void FN(cursor_next)(FN(cursor_t) *c, int h, int w)
{
    if (++c->x == w) {
        c->x = 0;
        if (++c->y == h) { c->y = 0; c->n++; }
    }
}

static void FN(conv_tiles)(const cyc_geom_t *g, int transposed, const T *src, const T *packed,
                           int relu, const T *zeros, T *dst, ptrdiff_t m0, ptrdiff_t m1,
                           void *scratch)
{
    const cyc_plan_t r = cyc_plan(g, transposed);
    const int nseg = r.nseg, K = r.K;
    const int opad = (r.out_cg + VLEN - 1) / VLEN * VLEN;
    /* scratch: ptrs [nseg][MR_MAX] | tapoff [nseg] | live [nseg] | gbuf [MR_MAX][K] */
    const T **ptrs = (const T **)scratch;
    ptrdiff_t *tapoff = (ptrdiff_t *)(ptrs + (ptrdiff_t)nseg * CYC_MR_MAX);
    unsigned char *live = (unsigned char *)(tapoff + nseg);
    T *gbuf = (T *)(((uintptr_t)(live + nseg) + 63) & ~(uintptr_t)63);
    const T *bias_all = packed + (ptrdiff_t)g->groups * K * (r.dot ? r.out_cg : opad);
    FN(tap_offsets)(g, &r, tapoff);

    FN(cursor_t) cur = FN(cursor_at)(m0, r.out_h, r.out_w);
    for (ptrdiff_t m = m0; m < m1; m += MR) {
        const int mr = (int)(m1 - m < MR ? m1 - m : MR);
        memset(live, 0, (size_t)nseg);
        for (int p = 0; p < mr; p++) {
            FN(pixel_segments)(g, &r, tapoff, src, zeros, cur.n, cur.y, cur.x, ptrs + p, MR,
                               gbuf + (ptrdiff_t)p * K, live);
            FN(cursor_next)(&cur, r.out_h, r.out_w);
        }
        T *out = dst + m * r.out_c;
        for (int grp = 0; grp < g->groups; grp++) {
            /* tap mode reads group grp's channels of each source pixel; row mode has 1 group */
            const ptrdiff_t off = r.row_mode ? 0 : (ptrdiff_t)grp * r.src_cg;
            T *og = out + (ptrdiff_t)grp * r.out_cg;
            if (r.dot) {
                FN(dot_any)(mr, ptrs, off, nseg, r.len, live,
                            packed + (ptrdiff_t)grp * r.out_cg * K, r.out_cg,
                            transposed ? NULL : bias_all + (ptrdiff_t)grp * r.out_cg, relu, og,
                            r.out_c);
                continue;
            }
            const T *wg = packed + (ptrdiff_t)grp * K * opad;
            const T *bg = bias_all + (ptrdiff_t)grp * opad;
            for (int co0 = 0; co0 < opad; co0 += CYC_NBLK * VLEN) {
                int nv = (opad - co0) / VLEN;
                if (nv > CYC_NBLK) nv = CYC_NBLK;
                int nlast = r.out_cg - (co0 + (nv - 1) * VLEN);
                if (nlast > VLEN) nlast = VLEN;
                FN(tile_any)(mr, nv, ptrs, off, nseg, r.len, live, wg + (ptrdiff_t)co0 * K,
                             nv * VLEN, bg + co0, relu, og + co0, r.out_c, nlast);
            }
        }
    }
}

/* Weights in the micro-kernels' order.  Tiles: per group, per block of NBLK*VLEN computed
 * channels, [K][block width] (lanes past the last channel are zero).  Dot mode: per group,
 * [computed channel][K].  Then the bias: [groups][opad] for tiles, [groups][out_cg] for dot. */
void FN(cyc_conv_pack)(const cyc_geom_t *g, const T *w, const T *bias, int transposed, T *packed)
{
    const cyc_plan_t r = cyc_plan(g, transposed);
    const int K = r.K;
    const int opad = (r.out_cg + VLEN - 1) / VLEN * VLEN;
    const int cg = g->c / g->groups, og = g->cout / g->groups;
    const int ow = r.dot ? r.out_cg : opad;
    for (int grp = 0; grp < g->groups; grp++) {
        T *pg = packed + (ptrdiff_t)grp * K * ow;
        for (int k = 0; k < K; k++) {
            /* k flattens (i, jj, channel) in both modes; jj runs reversed when transposed */
            int tap = k / r.src_cg, sch = k - tap * r.src_cg;
            int i = tap / g->kw, jj = tap - i * g->kw;
            int j = transposed ? g->kw - 1 - jj : jj;
            for (int o = 0; o < ow; o++) {
                T v = 0;
                if (o < r.out_cg) {
                    int ci = transposed ? o : sch, co = transposed ? sch : o;
                    v = w[(((ptrdiff_t)i * g->kw + j) * cg + ci) * g->cout + (ptrdiff_t)grp * og + co];
                }
                if (r.dot) {
                    pg[(ptrdiff_t)o * K + k] = v;
                } else {
                    int co0 = o / (CYC_NBLK * VLEN) * (CYC_NBLK * VLEN);
                    int bw = opad - co0 < CYC_NBLK * VLEN ? opad - co0 : CYC_NBLK * VLEN;
                    pg[(ptrdiff_t)co0 * K + (ptrdiff_t)k * bw + (o - co0)] = v;
                }
            }
        }
        T *pb = packed + (ptrdiff_t)g->groups * K * ow + (ptrdiff_t)grp * ow;
        for (int o = 0; o < ow; o++)
            pb[o] = (!transposed && bias && o < r.out_cg) ? bias[grp * og + o] : (T)0;
    }
}

void FN(cyc_conv_fwd)(const cyc_geom_t *g, const T *x, const T *packed, int relu, const T *zeros,
                      T *y, ptrdiff_t m0, ptrdiff_t m1, void *scratch)
{
    FN(conv_tiles)(g, 0, x, packed, relu, zeros, y, m0, m1, scratch);
}

void FN(cyc_conv_bwd_data)(const cyc_geom_t *g, const T *dy, const T *packed_t, const T *zeros,
                           T *dx, ptrdiff_t m0, ptrdiff_t m1, void *scratch)
{
    FN(conv_tiles)(g, 1, dy, packed_t, 0, zeros, dx, m0, m1, scratch);
}

/* Weight gradient: dw[k][co] += sum over pixels of x[pixel, k] * dy[pixel][co], k = (i, j, ci).
 * A chunk of output pixels at a time: dy is copied into padded rows (and summed into db), every
 * pixel's segments are found as in the forward pass, then for each segment a register tile of
 * MR reduction rows x NBLK*VLEN output channels runs over the chunk's pixels that read it. */
ALWAYS_INLINE void FN(dw_tile)(const int mr, const int nv, int cnt, const T *const *xrows,
                               ptrdiff_t xoff, const int *dj, const T *dyp, int dstride,
                               T *acc_out, ptrdiff_t astride)
{
    V acc[MR][CYC_NBLK];
    for (int p = 0; p < mr; p++)
        for (int b = 0; b < nv; b++) acc[p][b] = (V){0};
    for (int t = 0; t < cnt; t++) {
        const T *xr = xrows[t] + xoff;
        const T *dr = dyp + (ptrdiff_t)dj[t] * dstride;
        V dv[CYC_NBLK];
        for (int b = 0; b < nv; b++) dv[b] = LOADV(dr + b * VLEN);
        for (int p = 0; p < mr; p++) {
            T x = xr[p];
            for (int b = 0; b < nv; b++) acc[p][b] += x * dv[b];
        }
    }
    for (int p = 0; p < mr; p++)
        for (int b = 0; b < nv; b++) {
            T *a = acc_out + p * astride + b * VLEN;
            STOREV(a, LOADV(a) + acc[p][b]);
        }
}

/* Every tile height gets specialised code: segments are split into nearly equal tiles, so all
 * heights occur (a segment of 9 values is one tile of 9, one of 32 is 11 + 11 + 10). */
#define CYC_DW_CASE(M)                                                                         \
    case M:                                                                                    \
        if (nv == CYC_NBLK)                                                                    \
            FN(dw_tile)(M, CYC_NBLK, cnt, xrows, xoff, dj, dyp, dstride, acc_out, astride);    \
        else                                                                                   \
            FN(dw_tile)(M, 1, cnt, xrows, xoff, dj, dyp, dstride, acc_out, astride);           \
        return;

static void FN(dw_tile_any)(int mr, int nv, int cnt, const T *const *xrows, ptrdiff_t xoff,
                            const int *dj, const T *dyp, int dstride, T *acc_out, ptrdiff_t astride)
{
    if (nv == CYC_NBLK || nv == 1) {
        switch (mr) {
            CYC_DW_CASE(1)
            CYC_DW_CASE(2)
#if MR >= 3
            CYC_DW_CASE(3)
#endif
#if MR >= 4
            CYC_DW_CASE(4)
            CYC_DW_CASE(5)
            CYC_DW_CASE(6)
            CYC_DW_CASE(7)
            CYC_DW_CASE(8)
#endif
#if MR >= 12
            CYC_DW_CASE(9)
            CYC_DW_CASE(10)
            CYC_DW_CASE(11)
            CYC_DW_CASE(12)
#endif
        default: break;
        }
    }
    FN(dw_tile)(mr, nv, cnt, xrows, xoff, dj, dyp, dstride, acc_out, astride);
}
#undef CYC_DW_CASE

void FN(cyc_conv_bwd_filter)(const cyc_geom_t *g, const T *x, const T *dy, T *dw_acc, T *db_acc,
                             ptrdiff_t m0, ptrdiff_t m1, void *scratch)
{
    const cyc_plan_t r = cyc_plan(g, 0);
    const int og = g->cout / g->groups;
    const int nseg = r.nseg, K = r.K, len = r.len;
    const int opad = (og + VLEN - 1) / VLEN * VLEN;
    const int P = cyc_dw_chunk(g);
    /* scratch: dyp [groups][P][opad] | ptrs [nseg][P] | rows [P] | dj [P] | tapoff [nseg] |
     *          live [nseg] | gbuf [P][K] */
    T *dyp = (T *)scratch;
    const T **ptrs = (const T **)(dyp + (ptrdiff_t)g->groups * P * opad);
    const T **rows = ptrs + (ptrdiff_t)nseg * P;
    int *dj = (int *)(rows + P);
    ptrdiff_t *tapoff = (ptrdiff_t *)(((uintptr_t)(dj + P) + 7) & ~(uintptr_t)7);
    unsigned char *live = (unsigned char *)(tapoff + nseg);
    T *gbuf = (T *)(((uintptr_t)(live + nseg) + 63) & ~(uintptr_t)63);
    /* dw_acc layout: [k][groups][opad] */
    const ptrdiff_t astride = (ptrdiff_t)g->groups * opad;
    /* the zero row that padded segments point at: any pointer that is not into x or gbuf */
    static const T no_data[1] = {0};
    const int ntile = (len + MR - 1) / MR;
    FN(tap_offsets)(g, &r, tapoff);

    FN(cursor_t) cur = FN(cursor_at)(m0, g->oh, g->ow);
    for (ptrdiff_t mc = m0; mc < m1; mc += P) {
        const int np = (int)(m1 - mc < P ? m1 - mc : P);
        for (int j = 0; j < np; j++) {
            const T *d = dy + (mc + j) * g->cout;
            for (int co = 0; co < g->cout; co++) db_acc[co] += d[co];
            for (int grp = 0; grp < g->groups; grp++) {
                T *dst = dyp + ((ptrdiff_t)grp * P + j) * opad;
                memcpy(dst, d + (ptrdiff_t)grp * og, sizeof(T) * (size_t)og);
                for (int l = og; l < opad; l++) dst[l] = 0;
            }
            FN(pixel_segments)(g, &r, tapoff, x, no_data, cur.n, cur.y, cur.x, ptrs + j, P,
                               gbuf + (ptrdiff_t)j * K, live);
            FN(cursor_next)(&cur, g->oh, g->ow);
        }
        for (int s = 0; s < nseg; s++) {
            int cnt = 0;
            for (int j = 0; j < np; j++) {
                const T *p = ptrs[(ptrdiff_t)s * P + j];
                if (p == no_data) continue;
                rows[cnt] = p;
                dj[cnt++] = j;
            }
            if (!cnt) continue;
            for (int grp = 0; grp < g->groups; grp++) {
                const ptrdiff_t off = r.row_mode ? 0 : (ptrdiff_t)grp * r.src_cg;
                for (int t = 0, l0 = 0; t < ntile; t++) {
                    int mr = len / ntile + (t < len % ntile);
                    for (int co0 = 0; co0 < opad; co0 += CYC_NBLK * VLEN) {
                        int nv = (opad - co0) / VLEN;
                        if (nv > CYC_NBLK) nv = CYC_NBLK;
                        FN(dw_tile_any)(mr, nv, cnt, rows, off + l0, dj,
                                        dyp + (ptrdiff_t)grp * P * opad + co0, opad,
                                        dw_acc + ((ptrdiff_t)s * len + l0) * astride
                                            + (ptrdiff_t)grp * opad + co0,
                                        astride);
                    }
                    l0 += mr;
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- pooling ----
 * NHWC: the innermost loops run over channels, which the compiler vectorises. */

void FN(cyc_max_pool)(const cyc_geom_t *g, const T *x, T *y, int64_t *idx, ptrdiff_t r0,
                      ptrdiff_t r1)
{
    const int C = g->c;
    for (ptrdiff_t rr = r0; rr < r1; rr++) {
        int n = (int)(rr / g->oh), oy = (int)(rr % g->oh);
        int y0 = oy * g->sh - g->pad_top;
        for (int ox = 0; ox < g->ow; ox++) {
            int x0 = ox * g->sw - g->pad_left;
            T *yo = y + (rr * g->ow + ox) * C;
            int64_t *io = idx + (rr * g->ow + ox) * C;
            int first = 1;
            for (int i = 0; i < g->kh; i++) {
                int iy = y0 + i * g->dh;
                if (iy < 0 || iy >= g->h) continue;
                for (int j = 0; j < g->kw; j++) {
                    int ix = x0 + j * g->dw;
                    if (ix < 0 || ix >= g->w) continue;
                    const T *xr = x + (((ptrdiff_t)n * g->h + iy) * g->w + ix) * C;
                    const int64_t pos = (int64_t)iy * g->w + ix;
                    if (first) {
                        for (int c = 0; c < C; c++) { yo[c] = xr[c]; io[c] = pos; }
                        first = 0;
                        continue;
                    }
                    /* strictly greater keeps the first maximum; a NaN replaces a number, and
                     * the first NaN stays (NaN propagates, as in PyTorch) */
                    for (int c = 0; c < C; c++) {
                        T v = xr[c], b = yo[c];
                        int take = (v > b) | ((v != v) & (b == b));
                        yo[c] = take ? v : b;
                        io[c] = take ? pos : io[c];
                    }
                }
            }
            if (first) {
                /* a window entirely in the padding: max of nothing */
                for (int c = 0; c < C; c++) { yo[c] = -(T)INFINITY; io[c] = -1; }
            }
        }
    }
}

void FN(cyc_max_pool_bwd)(const cyc_geom_t *g, const T *dy, const int64_t *idx, T *dx,
                          ptrdiff_t n0, ptrdiff_t n1)
{
    const int C = g->c;
    const ptrdiff_t in_plane = (ptrdiff_t)g->h * g->w, out_plane = (ptrdiff_t)g->oh * g->ow;
    for (ptrdiff_t n = n0; n < n1; n++) {
        T *dxn = dx + n * in_plane * C;
        memset(dxn, 0, sizeof(T) * (size_t)(in_plane * C));
        const T *dyn = dy + n * out_plane * C;
        const int64_t *in = idx + n * out_plane * C;
        for (ptrdiff_t o = 0; o < out_plane; o++)
            for (int c = 0; c < C; c++) {
                int64_t p = in[o * C + c];
                if (p >= 0) dxn[p * C + c] += dyn[o * C + c];
            }
    }
}

/* PyTorch's avg_pool2d window: the divisor counts the cells inside the padded input
 * (count_include_pad) or inside the real input. */
static inline void FN(avg_window)(const cyc_geom_t *g, int oy, int ox, int cip, int *ya, int *yb,
                                  int *xa, int *xb, T *inv)
{
    int y0 = oy * g->sh - g->pad_top, x0 = ox * g->sw - g->pad_left;
    int y1 = y0 + g->kh, x1 = x0 + g->kw;
    if (y1 > g->h + g->pad_bottom) y1 = g->h + g->pad_bottom;
    if (x1 > g->w + g->pad_right) x1 = g->w + g->pad_right;
    int padded = (y1 - y0) * (x1 - x0);
    *ya = y0 < 0 ? 0 : y0;
    *yb = y1 > g->h ? g->h : y1;
    *xa = x0 < 0 ? 0 : x0;
    *xb = x1 > g->w ? g->w : x1;
    int real = (*yb - *ya) * (*xb - *xa);
    if (*yb <= *ya || *xb <= *xa) real = 0;
    int div = cip ? padded : real;
    *inv = (real > 0 && div > 0) ? (T)1 / (T)div : (T)0;
}

void FN(cyc_avg_pool)(const cyc_geom_t *g, const T *x, T *y, int cip, ptrdiff_t r0, ptrdiff_t r1)
{
    const int C = g->c;
    for (ptrdiff_t rr = r0; rr < r1; rr++) {
        int n = (int)(rr / g->oh), oy = (int)(rr % g->oh);
        for (int ox = 0; ox < g->ow; ox++) {
            int ya, yb, xa, xb;
            T inv;
            FN(avg_window)(g, oy, ox, cip, &ya, &yb, &xa, &xb, &inv);
            T *yo = y + (rr * g->ow + ox) * C;
            for (int c = 0; c < C; c++) yo[c] = 0;
            for (int iy = ya; iy < yb; iy++)
                for (int ix = xa; ix < xb; ix++) {
                    const T *xr = x + (((ptrdiff_t)n * g->h + iy) * g->w + ix) * C;
                    for (int c = 0; c < C; c++) yo[c] += xr[c];
                }
            for (int c = 0; c < C; c++) yo[c] *= inv;
        }
    }
}

void FN(cyc_avg_pool_bwd)(const cyc_geom_t *g, const T *dy, T *dx, int cip, ptrdiff_t n0,
                          ptrdiff_t n1)
{
    const int C = g->c;
    const ptrdiff_t in_plane = (ptrdiff_t)g->h * g->w;
    for (ptrdiff_t n = n0; n < n1; n++) {
        T *dxn = dx + n * in_plane * C;
        memset(dxn, 0, sizeof(T) * (size_t)(in_plane * C));
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int ya, yb, xa, xb;
                T inv;
                FN(avg_window)(g, oy, ox, cip, &ya, &yb, &xa, &xb, &inv);
                const T *d = dy + (((ptrdiff_t)n * g->oh + oy) * g->ow + ox) * C;
                for (int iy = ya; iy < yb; iy++)
                    for (int ix = xa; ix < xb; ix++) {
                        T *dr = dxn + ((ptrdiff_t)iy * g->w + ix) * C;
                        for (int c = 0; c < C; c++) dr[c] += d[c] * inv;
                    }
            }
    }
}

#undef FN
#undef V
#undef UV
#undef IV
#undef VLEN
#undef LOADV
#undef STOREV
#undef CYC_CAT3
#undef CYC_CAT3_
#undef ALWAYS_INLINE
