/* The kernels, written once and compiled once per (instruction set, dtype).
 *
 * The including file defines:
 *   T    the element type (float or double)
 *   SUF  f32 or f64
 *   ISA  portable, avx2 or avx512 (a name suffix; the target itself comes from a pragma)
 *   MR   output pixels per register tile of the convolution micro-kernel
 * and includes this file.  Vectors are GCC vector extensions of 64 bytes (16 floats, 8 doubles):
 * the compiler maps one to a zmm register, two ymm or four xmm, whatever the target has, so one
 * source gives every instruction set.  NBLK (vectors per tile) is fixed for every instruction set
 * so that packed weights have one layout.
 *
 * Convolution is an implicit GEMM in NHWC: a tile of MR output pixels x NBLK*VLEN output channels
 * sits in registers while the kernel reduces over (kh, kw, cin).  Each pixel's input row for a tap
 * is a pointer: the real row, or a row of zeros where the tap falls in the padding, so the inner
 * loop has no branches.  The input gradient is the same computation with the roles of input and
 * output swapped (and a tap valid only where the stride divides), so it reuses the same tiles.
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

typedef T V __attribute__((vector_size(64)));
typedef T UV __attribute__((vector_size(64), aligned(sizeof(T)), may_alias));
#if defined(CYC_T_IS_DOUBLE)
typedef int64_t IV __attribute__((vector_size(64)));
#else
typedef int32_t IV __attribute__((vector_size(64)));
#endif

static inline __attribute__((always_inline)) V FN(relu)(V v)
{
    IV keep = v > (V){0};
    return (V)((IV)v & keep);
}

/* One register tile: acc[p][b] = bias[b] + sum over taps kk and i of xp[kk][p][off + i] * w[...].
 * mr and nv are compile-time constants after inlining (see FN(tile_any)). */
static inline __attribute__((always_inline)) void FN(tile)(
    const int mr, const int nv, const T *const *xp, ptrdiff_t off, int nkk, int len,
    const unsigned char *live, const T *restrict w, int bw, const T *restrict bias, int relu,
    T *out, ptrdiff_t ostride, int nlast)
{
    V acc[MR][CYC_NBLK];
    for (int b = 0; b < nv; b++) {
        V bv = LOADV(bias + b * VLEN);
        for (int p = 0; p < mr; p++) acc[p][b] = bv;
    }
    for (int kk = 0; kk < nkk; kk++) {
        if (live && !live[kk]) continue;
        const T *const *xk = xp + (ptrdiff_t)kk * MR;
        const T *restrict wk = w + (ptrdiff_t)kk * len * bw;
        const T *xr[MR];
        for (int p = 0; p < mr; p++) xr[p] = xk[p] + off;
        for (int i = 0; i < len; i++) {
            V wv[CYC_NBLK];
            for (int b = 0; b < nv; b++) wv[b] = LOADV(wk + (ptrdiff_t)i * bw + b * VLEN);
            for (int p = 0; p < mr; p++) {
                T s = xr[p][i];
                for (int b = 0; b < nv; b++) acc[p][b] += s * wv[b];
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
static void FN(tile_any)(int mr, int nv, const T *const *xp, ptrdiff_t off, int nkk, int len,
                         const unsigned char *live, const T *w, int bw, const T *bias, int relu,
                         T *out, ptrdiff_t ostride, int nlast)
{
    if (mr == MR && nv == CYC_NBLK)
        FN(tile)(MR, CYC_NBLK, xp, off, nkk, len, live, w, bw, bias, relu, out, ostride, nlast);
    else if (mr == MR && nv == 1)
        FN(tile)(MR, 1, xp, off, nkk, len, live, w, bw, bias, relu, out, ostride, nlast);
    else
        FN(tile)(mr, nv, xp, off, nkk, len, live, w, bw, bias, relu, out, ostride, nlast);
}

/* Shared by the forward pass and the input gradient.  "Out" pixels are the flattened
 * (n, row, col) positions being computed; "src" is the tensor read through the taps. */
typedef struct {
    int out_h, out_w;          /* spatial size of the computed tensor */
    int src_h, src_w;          /* spatial size of the tensor read */
    int src_c, src_cg;         /* its channels, per group */
    int out_c, out_cg;         /* computed channels, per group */
    int transposed;
} FN(roles_t);

static FN(roles_t) FN(roles)(const cyc_geom_t *g, int transposed)
{
    FN(roles_t) r;
    int cg = g->c / g->groups, og = g->cout / g->groups;
    r.transposed = transposed;
    if (!transposed) {
        r.out_h = g->oh; r.out_w = g->ow; r.src_h = g->h; r.src_w = g->w;
        r.src_c = g->c; r.src_cg = cg; r.out_c = g->cout; r.out_cg = og;
    } else {
        r.out_h = g->h; r.out_w = g->w; r.src_h = g->oh; r.src_w = g->ow;
        r.src_c = g->cout; r.src_cg = og; r.out_c = g->c; r.out_cg = cg;
    }
    return r;
}

/* The source row that tap (i, j) of output pixel (oy, ox) reads, or -1 if none. */
static inline ptrdiff_t FN(tap_row)(const cyc_geom_t *g, const FN(roles_t) *r, int n, int oy,
                                    int ox, int i, int j)
{
    int sy, sx;
    if (!r->transposed) {
        sy = oy * g->sh - g->pad_top + i * g->dh;
        sx = ox * g->sw - g->pad_left + j * g->dw;
    } else {
        /* dx[iy] collects dy[oy] where oy * sh = iy + pad - i * dh. */
        int ty = oy + g->pad_top - i * g->dh, tx = ox + g->pad_left - j * g->dw;
        if (ty < 0 || tx < 0 || ty % g->sh || tx % g->sw) return -1;
        sy = ty / g->sh;
        sx = tx / g->sw;
    }
    if (sy < 0 || sy >= r->src_h || sx < 0 || sx >= r->src_w) return -1;
    return ((ptrdiff_t)n * r->src_h + sy) * r->src_w + sx;
}

/* Offset of each tap from tap (0, 0), for pixels whose whole window lies inside the source. */
static void FN(tap_offsets)(const cyc_geom_t *g, const FN(roles_t) *r, ptrdiff_t *tapoff)
{
    const int sign = r->transposed ? -1 : 1;
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++)
            tapoff[i * g->kw + j] =
                sign * ((ptrdiff_t)i * g->dh * r->src_w + (ptrdiff_t)j * g->dw) * r->src_c;
}

/* Fill ptrs[kk][p] with the source row of every tap of the tile's pixels m .. m+mr-1 and mark
 * the taps that read anything real.  Pixels away from the borders take the fast path: one base
 * pointer plus the precomputed tap offsets; only border pixels check every tap. */
static void FN(tile_pointers)(const cyc_geom_t *g, const FN(roles_t) *r, const ptrdiff_t *tapoff,
                              const T *src, const T *zeros, ptrdiff_t m, int mr, const T **ptrs,
                              unsigned char *live)
{
    const int nkk = g->kh * g->kw;
    const ptrdiff_t plane = (ptrdiff_t)r->out_h * r->out_w;
    int n = (int)(m / plane);
    int rem = (int)(m - (ptrdiff_t)n * plane);
    int oy = rem / r->out_w, ox = rem - oy * r->out_w;
    /* In the input gradient a tap reads dy only where the stride divides; with stride 1 every
     * tap of an inner pixel is real. */
    const int fast_ok = !r->transposed || (g->sh == 1 && g->sw == 1);
    const int ext_y = (g->kh - 1) * g->dh, ext_x = (g->kw - 1) * g->dw;
    int all_live = 0;
    memset(live, 0, (size_t)nkk);
    for (int p = 0; p < mr; p++) {
        int sy0, sx0, inside;
        if (!r->transposed) {
            sy0 = oy * g->sh - g->pad_top;
            sx0 = ox * g->sw - g->pad_left;
            inside = sy0 >= 0 && sy0 + ext_y < r->src_h && sx0 >= 0 && sx0 + ext_x < r->src_w;
        } else {
            sy0 = oy + g->pad_top;
            sx0 = ox + g->pad_left;
            inside = fast_ok && sy0 - ext_y >= 0 && sy0 < r->src_h && sx0 - ext_x >= 0 &&
                     sx0 < r->src_w;
        }
        if (inside) {
            const T *base = src + (((ptrdiff_t)n * r->src_h + sy0) * r->src_w + sx0) * r->src_c;
            for (int kk = 0; kk < nkk; kk++) ptrs[kk * MR + p] = base + tapoff[kk];
            all_live = 1;
        } else {
            for (int i = 0; i < g->kh; i++)
                for (int j = 0; j < g->kw; j++) {
                    int kk = i * g->kw + j;
                    ptrdiff_t row = FN(tap_row)(g, r, n, oy, ox, i, j);
                    if (row >= 0) {
                        ptrs[kk * MR + p] = src + row * r->src_c;
                        live[kk] = 1;
                    } else {
                        ptrs[kk * MR + p] = zeros;
                    }
                }
        }
        if (++ox == r->out_w) {
            ox = 0;
            if (++oy == r->out_h) { oy = 0; n++; }
        }
    }
    if (all_live) memset(live, 1, (size_t)nkk);
}

static void FN(conv_tiles)(const cyc_geom_t *g, int transposed, const T *src, const T *packed,
                           int relu, const T *zeros, T *dst, ptrdiff_t m0, ptrdiff_t m1,
                           void *scratch)
{
    const FN(roles_t) r = FN(roles)(g, transposed);
    const int nkk = g->kh * g->kw;
    const int K = nkk * r.src_cg;
    const int opad = (r.out_cg + VLEN - 1) / VLEN * VLEN;
    const int gather = r.src_cg <= CYC_GATHER_MAX_CIN;
    /* scratch: ptrs [nkk][MR_MAX] | grows [MR_MAX] | tapoff [nkk] | live [nkk] | gbuf [MR][K] */
    const T **ptrs = (const T **)scratch;
    const T **grows = ptrs + (ptrdiff_t)nkk * CYC_MR_MAX;
    ptrdiff_t *tapoff = (ptrdiff_t *)(grows + CYC_MR_MAX);
    unsigned char *live = (unsigned char *)(tapoff + nkk);
    T *gbuf = (T *)(((uintptr_t)(live + nkk) + 63) & ~(uintptr_t)63);
    FN(tap_offsets)(g, &r, tapoff);

    for (ptrdiff_t m = m0; m < m1; m += MR) {
        const int mr = (int)(m1 - m < MR ? m1 - m : MR);
        FN(tile_pointers)(g, &r, tapoff, src, zeros, m, mr, ptrs, live);
        T *out = dst + m * r.out_c;
        for (int grp = 0; grp < g->groups; grp++) {
            const T *const *xp = ptrs;
            ptrdiff_t off = (ptrdiff_t)grp * r.src_cg;
            int nk = nkk, len = r.src_cg;
            const unsigned char *lv = live;
            if (gather) {
                /* Few input channels: copy each pixel's whole window into one row so that the
                 * reduction runs over kh*kw*cin at once instead of cin at a time. */
                for (int p = 0; p < mr; p++) {
                    T *row = gbuf + (ptrdiff_t)p * K;
                    for (int kk = 0; kk < nkk; kk++)
                        for (int ci = 0; ci < r.src_cg; ci++)
                            row[kk * r.src_cg + ci] = ptrs[kk * MR + p][off + ci];
                    grows[p] = row;
                }
                xp = grows; off = 0; nk = 1; len = K; lv = NULL;
            }
            const T *wg = packed + (ptrdiff_t)grp * K * opad;
            const T *bg = packed + (ptrdiff_t)g->groups * K * opad + (ptrdiff_t)grp * opad;
            for (int co0 = 0; co0 < opad; co0 += CYC_NBLK * VLEN) {
                int nv = (opad - co0) / VLEN;
                if (nv > CYC_NBLK) nv = CYC_NBLK;
                int nlast = r.out_cg - (co0 + (nv - 1) * VLEN);
                if (nlast > VLEN) nlast = VLEN;
                FN(tile_any)(mr, nv, xp, off, nk, len, lv, wg + (ptrdiff_t)co0 * K, nv * VLEN,
                             bg + co0, relu, out + (ptrdiff_t)grp * r.out_cg + co0, r.out_c,
                             nlast);
            }
        }
    }
}

void FN(cyc_conv_pack)(const cyc_geom_t *g, const T *w, const T *bias, int transposed, T *packed)
{
    const FN(roles_t) r = FN(roles)(g, transposed);
    const int nkk = g->kh * g->kw;
    const int K = nkk * r.src_cg;
    const int opad = (r.out_cg + VLEN - 1) / VLEN * VLEN;
    const int cg = g->c / g->groups, og = g->cout / g->groups;
    for (int grp = 0; grp < g->groups; grp++) {
        T *pg = packed + (ptrdiff_t)grp * K * opad;
        for (int co0 = 0; co0 < opad; co0 += CYC_NBLK * VLEN) {
            int bw = opad - co0 < CYC_NBLK * VLEN ? opad - co0 : CYC_NBLK * VLEN;
            T *blk = pg + (ptrdiff_t)co0 * K;
            for (int k = 0; k < K; k++) {
                int kk = k / r.src_cg, s = k - kk * r.src_cg;
                for (int l = 0; l < bw; l++) {
                    int o = co0 + l;
                    T v = 0;
                    if (o < r.out_cg) {
                        /* HWIO: w[kk][ci][grp * og + co] */
                        int ci = transposed ? o : s, co = transposed ? s : o;
                        v = w[((ptrdiff_t)kk * cg + ci) * g->cout + (ptrdiff_t)grp * og + co];
                    }
                    blk[(ptrdiff_t)k * bw + l] = v;
                }
            }
        }
        T *pb = packed + (ptrdiff_t)g->groups * K * opad + (ptrdiff_t)grp * opad;
        for (int o = 0; o < opad; o++)
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

/* Weight gradient: dw[kk][ci][co] += sum over pixels of x[pixel, tap kk][ci] * dy[pixel][co].
 * A chunk of output pixels at a time: dy is copied into padded rows (and summed into db), then
 * for each tap a register tile of MR input channels x NBLK*VLEN output channels runs over the
 * chunk's pixels whose tap is inside the input. */
static inline __attribute__((always_inline)) void FN(dw_tile)(
    const int mr, const int nv, int cnt, const T *const *xrows, ptrdiff_t xoff,
    const int *dj, const T *dyp, int dstride, T *acc_out, ptrdiff_t astride)
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
            T s = xr[p];
            for (int b = 0; b < nv; b++) acc[p][b] += s * dv[b];
        }
    }
    for (int p = 0; p < mr; p++)
        for (int b = 0; b < nv; b++) {
            T *a = acc_out + p * astride + b * VLEN;
            STOREV(a, LOADV(a) + acc[p][b]);
        }
}

static void FN(dw_tile_any)(int mr, int nv, int cnt, const T *const *xrows, ptrdiff_t xoff,
                            const int *dj, const T *dyp, int dstride, T *acc_out, ptrdiff_t astride)
{
    if (mr == MR && nv == CYC_NBLK)
        FN(dw_tile)(MR, CYC_NBLK, cnt, xrows, xoff, dj, dyp, dstride, acc_out, astride);
    else if (mr == MR && nv == 1)
        FN(dw_tile)(MR, 1, cnt, xrows, xoff, dj, dyp, dstride, acc_out, astride);
    else
        FN(dw_tile)(mr, nv, cnt, xrows, xoff, dj, dyp, dstride, acc_out, astride);
}

void FN(cyc_conv_bwd_filter)(const cyc_geom_t *g, const T *x, const T *dy, T *dw_acc, T *db_acc,
                             ptrdiff_t m0, ptrdiff_t m1, void *scratch)
{
    const int cg = g->c / g->groups, og = g->cout / g->groups;
    const int nkk = g->kh * g->kw;
    const int opad = (og + VLEN - 1) / VLEN * VLEN;
    const int P = CYC_DW_CHUNK;
    const int gather = cg <= CYC_GATHER_MAX_CIN;
    const int K = nkk * cg;
    const ptrdiff_t plane = (ptrdiff_t)g->oh * g->ow;
    /* scratch: dyp [groups][P][opad] | rows [P] | dj [P] | pn, py, px [P] | gbuf [P][K] */
    T *dyp = (T *)scratch;
    const T **rows = (const T **)(dyp + (ptrdiff_t)g->groups * P * opad);
    int *dj = (int *)(rows + P);
    int *pn = dj + P, *py = pn + P, *px = py + P;
    T *gbuf = (T *)(((uintptr_t)(px + P) + 63) & ~(uintptr_t)63);
    /* dw_acc layout: [kk][ci][groups][opad] */
    const ptrdiff_t astride = (ptrdiff_t)g->groups * opad;

    for (ptrdiff_t mc = m0; mc < m1; mc += P) {
        const int np = (int)(m1 - mc < P ? m1 - mc : P);
        for (int j = 0; j < np; j++) {
            ptrdiff_t mp = mc + j;
            int n = (int)(mp / plane);
            int rem = (int)(mp - (ptrdiff_t)n * plane);
            int oy = rem / g->ow, ox = rem - oy * g->ow;
            pn[j] = n;
            py[j] = oy * g->sh - g->pad_top;
            px[j] = ox * g->sw - g->pad_left;
            const T *d = dy + mp * g->cout;
            for (int co = 0; co < g->cout; co++) db_acc[co] += d[co];
            for (int grp = 0; grp < g->groups; grp++) {
                T *dst = dyp + ((ptrdiff_t)grp * P + j) * opad;
                memcpy(dst, d + (ptrdiff_t)grp * og, sizeof(T) * (size_t)og);
                for (int l = og; l < opad; l++) dst[l] = 0;
            }
        }
        if (gather) {
            /* Few input channels: one row of kh*kw*cin per pixel, reduced as one long K. */
            for (int grp = 0; grp < g->groups; grp++) {
                for (int j = 0; j < np; j++) {
                    T *row = gbuf + (ptrdiff_t)j * K;
                    for (int i = 0; i < g->kh; i++) {
                        int iy = py[j] + i * g->dh;
                        for (int jj = 0; jj < g->kw; jj++) {
                            int ix = px[j] + jj * g->dw;
                            T *cell = row + (i * g->kw + jj) * cg;
                            if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) {
                                for (int ci = 0; ci < cg; ci++) cell[ci] = 0;
                            } else {
                                const T *xs = x + (((ptrdiff_t)pn[j] * g->h + iy) * g->w + ix) * g->c
                                              + (ptrdiff_t)grp * cg;
                                for (int ci = 0; ci < cg; ci++) cell[ci] = xs[ci];
                            }
                        }
                    }
                    rows[j] = row;
                    dj[j] = j;
                }
                for (int k0 = 0; k0 < K; k0 += MR) {
                    int mr = K - k0 < MR ? K - k0 : MR;
                    for (int co0 = 0; co0 < opad; co0 += CYC_NBLK * VLEN) {
                        int nv = (opad - co0) / VLEN;
                        if (nv > CYC_NBLK) nv = CYC_NBLK;
                        /* row k of dw_acc is (kk, ci) = k; the tile's rows are k0 .. k0+mr */
                        FN(dw_tile_any)(mr, nv, np, rows, k0, dj,
                                        dyp + (ptrdiff_t)grp * P * opad + co0, opad,
                                        dw_acc + (ptrdiff_t)k0 * astride + (ptrdiff_t)grp * opad + co0,
                                        astride);
                    }
                }
            }
            continue;
        }
        for (int i = 0; i < g->kh; i++)
            for (int jj = 0; jj < g->kw; jj++) {
                int kk = i * g->kw + jj, cnt = 0;
                for (int j = 0; j < np; j++) {
                    int iy = py[j] + i * g->dh, ix = px[j] + jj * g->dw;
                    if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                    rows[cnt] = x + (((ptrdiff_t)pn[j] * g->h + iy) * g->w + ix) * g->c;
                    dj[cnt++] = j;
                }
                if (!cnt) continue;
                for (int grp = 0; grp < g->groups; grp++)
                    for (int ci0 = 0; ci0 < cg; ci0 += MR) {
                        int mr = cg - ci0 < MR ? cg - ci0 : MR;
                        for (int co0 = 0; co0 < opad; co0 += CYC_NBLK * VLEN) {
                            int nv = (opad - co0) / VLEN;
                            if (nv > CYC_NBLK) nv = CYC_NBLK;
                            FN(dw_tile_any)(mr, nv, cnt, rows, (ptrdiff_t)grp * cg + ci0, dj,
                                            dyp + (ptrdiff_t)grp * P * opad + co0, opad,
                                            dw_acc + ((ptrdiff_t)kk * cg + ci0) * astride
                                                + (ptrdiff_t)grp * opad + co0,
                                            astride);
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
