/* The kernels, written once and compiled once per (instruction set, dtype).
 *
 * The including file defines:
 *   T    the element type (float or double)
 *   SUF  f32 or f64
 *   ISA  portable, avx2 or avx512 (a name suffix; the target itself comes from a pragma)
 *   MR   output pixels per register tile of the convolution micro-kernel (at most CYC_MR_MAX)
 *   CYC_VBYTES  the target's register width: 64 (AVX-512), 32 (AVX2), 16 (SSE2)
 * and includes this file.  Vectors are GCC vector extensions of one register, so one source
 * gives every instruction set.  (Vectors wider than the target's registers compile correctly
 * but 10x to 90x slower: GCC splits them after the pass that keeps arrays of accumulators in
 * registers.)  Layouts that dispatch.c also computes (the weight gradient's accumulators) round
 * channels to 64 bytes whatever the width.
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
#define VLEN ((int)(CYC_VBYTES / sizeof(T)))
#define CYC_L64 ((int)(64 / sizeof(T)))   /* lanes of 64 bytes: the shared layouts' unit */
#define LOADV(p) (*(const UV *)(p))
#define STOREV(p, v) (*(UV *)(p) = (v))
#define ALWAYS_INLINE static inline __attribute__((always_inline))

typedef T V __attribute__((vector_size(CYC_VBYTES)));
typedef T UV __attribute__((vector_size(CYC_VBYTES), aligned(sizeof(T)), may_alias));
#if defined(CYC_T_IS_DOUBLE)
#define CYC_IT int64_t
#else
#define CYC_IT int32_t
#endif
/* integers of the values' lane width: comparison masks, and pool positions */
typedef CYC_IT IV __attribute__((vector_size(CYC_VBYTES)));

ALWAYS_INLINE V FN(relu)(V v)
{
    IV keep = v > (V){0};
    return (V)((IV)v & keep);
}

/* Sum of the lanes, by halving in registers (taking the vector's address would keep whole
 * arrays of accumulators in memory). */
ALWAYS_INLINE T FN(hsum)(V v)
{
    typedef T Q __attribute__((vector_size(16)));
#if CYC_VBYTES == 64
    typedef T H __attribute__((vector_size(32)));
#if defined(CYC_T_IS_DOUBLE)
    H h = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
#else
    H h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
          __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
#endif
#else
    V h = v;
#endif
#if CYC_VBYTES >= 32
#if defined(CYC_T_IS_DOUBLE)
    Q q = __builtin_shufflevector(h, h, 0, 1) + __builtin_shufflevector(h, h, 2, 3);
#else
    Q q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
#endif
#else
    Q q = h;
#endif
#if defined(CYC_T_IS_DOUBLE)
    return q[0] + q[1];
#else
    return (q[0] + q[2]) + (q[1] + q[3]);
#endif
}

/* The x86 intrinsics below are chosen by this file's vector width, not by the compiler's target
 * macros: with -march=native every file sees __AVX2__, also the 16-byte portable one. */
#if defined(CYC_HAVE_X86_ISAS) && CYC_VBYTES == 64 && !defined(CYC_AVX512_ON_AVX2)
#define CYC_X86_512 1
#else
#define CYC_X86_512 0
#endif
#if defined(CYC_HAVE_X86_ISAS) && CYC_VBYTES == 32
#define CYC_X86_256 1
#else
#define CYC_X86_256 0
#endif
/* The target has FMA: both x86 paths, also the AVX-512 path's test build on AVX2. */
#if CYC_X86_512 || CYC_X86_256 || defined(CYC_AVX512_ON_AVX2)
#define CYC_X86_FMA 1
#else
#define CYC_X86_FMA 0
#endif

/* Keeps a loaded vector in a register: GCC otherwise folds its load into every multiply-add that
 * uses it, doubling the loads.  Not for 64-byte vectors under clang, which folds only a load
 * with one use anyway, and whose version 18 refused a 64-byte "v" operand without evex512. */
#if (CYC_X86_512 && !defined(__clang__)) || CYC_X86_256
#define CYC_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define CYC_IN_REGISTER(v) ((void)0)
#endif

/* A scalar multiply-add, rounded alike wherever it is inlined.  GCC contracts a * b + c into an
 * FMA where the target has one, but not in every copy of a loop alike: the dot kernel's blocks of
 * pixels and its last partial block differed in the last bit, so a pixel's value depended on
 * where its tile began (which a convolution run in bands moves).  Where FMA exists, say so. */
ALWAYS_INLINE T FN(madd)(T a, T b, T c)
{
#if defined(CYC_T_IS_DOUBLE) && (CYC_X86_FMA || defined(__FP_FAST_FMA))
    return __builtin_fma(a, b, c);
#elif !defined(CYC_T_IS_DOUBLE) && (CYC_X86_FMA || defined(__FP_FAST_FMAF))
    return __builtin_fmaf(a, b, c);
#else
    return a * b + c;
#endif
}

/* The first n < VLEN lanes of a vector, loaded or stored without touching the others (masked
 * instructions on x86: a copy through memory stalls the load that reads it back). */
#if CYC_X86_256
ALWAYS_INLINE __m256i FN(first_lanes)(int n)
{
#if defined(CYC_T_IS_DOUBLE)
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
#else
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#endif
}
#endif

ALWAYS_INLINE V FN(load_part)(const T *p, int n)
{
#if CYC_X86_512 && defined(CYC_T_IS_DOUBLE)
    return (V)_mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1), p);
#elif CYC_X86_512
    return (V)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#elif CYC_X86_256 && defined(CYC_T_IS_DOUBLE)
    return (V)_mm256_maskload_pd(p, FN(first_lanes)(n));
#elif CYC_X86_256
    return (V)_mm256_maskload_ps(p, FN(first_lanes)(n));
#else
    V v = {0};
    for (int l = 0; l < n; l++) v[l] = p[l];
    return v;
#endif
}

ALWAYS_INLINE void FN(store_part)(T *p, V v, int n)
{
#if CYC_X86_512 && defined(CYC_T_IS_DOUBLE)
    _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1), (__m512d)v);
#elif CYC_X86_512
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#elif CYC_X86_256 && defined(CYC_T_IS_DOUBLE)
    _mm256_maskstore_pd(p, FN(first_lanes)(n), (__m256d)v);
#elif CYC_X86_256
    _mm256_maskstore_ps(p, FN(first_lanes)(n), (__m256)v);
#else
    for (int l = 0; l < n; l++) p[l] = v[l];
#endif
}

/* The first n <= VLEN lanes: a whole vector, or the masked part (a row's last vector). */
ALWAYS_INLINE V FN(load_n)(const T *p, int n)
{
    return n == VLEN ? (V)LOADV(p) : FN(load_part)(p, n);
}

ALWAYS_INLINE void FN(store_n)(T *p, V v, int n)
{
    if (n == VLEN)
        STOREV(p, v);
    else
        FN(store_part)(p, v, n);
}

/* Runs BLOCK(nv, nl, c) over the channels [c0, c1): blocks of 4 whole vectors, then one of 3,
 * 2 or 1, then the partial vector; nv and nl are constants in every call but the last, so the
 * block's sums stay in registers. */
#define CYC_CHANNEL_BLOCKS(c0, c1, BLOCK)                                                      \
    do {                                                                                       \
        int c_ = (c0);                                                                         \
        for (; c_ + 4 * VLEN <= (c1); c_ += 4 * VLEN) BLOCK(4, VLEN, c_);                      \
        const int full_ = ((c1) - c_) / VLEN;                                                  \
        if (full_ == 3) BLOCK(3, VLEN, c_);                                                    \
        if (full_ == 2) BLOCK(2, VLEN, c_);                                                    \
        if (full_ == 1) BLOCK(1, VLEN, c_);                                                    \
        c_ += full_ * VLEN;                                                                    \
        if (c_ < (c1)) BLOCK(1, (c1) - c_, c_);                                                \
    } while (0)

static const T FN(zero_bias)[2 * CYC_NBLK * (64 / sizeof(T))] = {0};   /* any tile width */

/* One segment's share of a register tile: acc[p][b] += sum over i of x(p, i) * w[i][b].  x(p, i)
 * is xr[p][i], or with xstep (bytes) the pixels' rows evenly spaced from xr[0]: then a pixel's
 * address is one of four running bases plus 0, 1 or 2 steps, so 12 rows need 5 general registers
 * instead of 12 pointers (which spilled: a 12-pixel tile's inner loop moved pointers back from
 * vector registers on an FMA port). */
ALWAYS_INLINE void FN(tile_segment)(const int mr, const int nv, const int S, V *acc,
                                    const T *const *xs, ptrdiff_t off, const ptrdiff_t xstep,
                                    int len, const T *restrict ws, int bw, ptrdiff_t bstep)
{
    const char *xb[(MR + 2) / 3];
    const T *xr[MR];
    if (xstep)
        for (int q = 0; q < (mr + 2) / 3; q++) xb[q] = (const char *)(xs[0] + off) + 3 * q * xstep;
    else
        for (int p = 0; p < mr; p++) xr[p] = xs[p] + off;
    for (int i = 0; i < len; i++) {
        V wv[2 * CYC_NBLK];
        for (int b = 0; b < nv; b++)
            wv[b] = LOADV(ws + (ptrdiff_t)i * bw + (b % CYC_NBLK) * VLEN + (b / CYC_NBLK) * bstep);
        for (int p = 0; p < mr; p++) {
            T x = xstep ? *(const T *)(xb[p / 3] + (p % 3) * xstep) : xr[p][i];
            for (int b = 0; b < nv; b++) acc[p * S + b] += x * wv[b];
        }
        if (xstep)
            for (int q = 0; q < (mr + 2) / 3; q++) xb[q] += sizeof(T);
    }
}

/* One register tile: acc[p][b] = bias[b] + sum over segments s and i of xp[s][p][off + i] * w.
 * mr and nv are compile-time constants after inlining (see FN(tile_any)); xstep, if not 0, says
 * that each segment's pixel rows lie xstep bytes apart (see FN(tile_segment)). */
ALWAYS_INLINE void FN(tile)(const int mr, const int nv, const int S, const T *const *xp,
                            ptrdiff_t off,
                            ptrdiff_t xstep, int nseg, int len, const unsigned char *live,
                            const T *restrict w, int bw, ptrdiff_t bstep, const T *restrict bias,
                            int relu, T *const *outs, ptrdiff_t ooff, int nlast)
{
    /* nv may span two packed blocks (nv > CYC_NBLK): the second starts bstep further on.  The
     * tile's mr x nv vectors (at most MR x NBLK, or MR/2 x 2 NBLK) in one flat array, pixel p's
     * at p * S: as acc[MR][2 * NBLK], twice that size, GCC kept them on the stack and moved
     * them in and out of registers around each segment (a 3x3 first layer's tiles, 3 segments
     * of 3 values, ran 1.4x slower; AVX2's and the portable build's tiles gained as much).  S is
     * nv where that is a constant; the generic tile takes a constant S >= nv too, since its
     * sums live in memory anyway and p * nv at run time made a Dense layer's input gradient's
     * last tiles 1.16x slower. */
    V acc[MR * CYC_NBLK];
    for (int b = 0; b < nv; b++) {
        V bv = LOADV(bias + b * VLEN);
        for (int p = 0; p < mr; p++) acc[p * S + b] = bv;
    }
    for (int s = 0; s < nseg; s++) {
        if (!live[s]) continue;
        const T *const *xs = xp + (ptrdiff_t)s * MR;
        const T *restrict ws = w + (ptrdiff_t)s * len * bw;
        /* two copies of the loop, one per addressing */
        if (xstep)
            FN(tile_segment)(mr, nv, S, acc, xs, off, xstep, len, ws, bw, bstep);
        else
            FN(tile_segment)(mr, nv, S, acc, xs, off, 0, len, ws, bw, bstep);
    }
    /* relu: 1 applies a ReLU; CYC_ADD adds the tile to what the outputs hold.  Each sum is
     * finished on its way out: a pass of its own wrote the sums back to the stack and read
     * them again (GCC keeps acc in memory here; a 3x3 first layer's tiles, K = 9, spent a
     * third of their time in this epilogue) */
    for (int p = 0; p < mr; p++) {
        T *o = outs[p] + ooff;
        for (int b = 0; b < nv; b++) {
            V v = acc[p * S + b];
            const int n = b < nv - 1 ? VLEN : nlast;
            /* not past the row's end: it may be the array's */
            if (relu == CYC_ADD) v += FN(load_n)(o + b * VLEN, n);
            if (relu == 1) v = FN(relu)(v);
            FN(store_n)(o + b * VLEN, v, n);
        }
    }
}

/* A tile of one block and fewer than MR pixels (a chunk's last pixels, a Dense layer's batch
 * of 32 split into tiles of 6), in code for its height: the generic tile kept its sums in
 * memory, and the last 2 pixels of 32 took a quarter of a 576 -> 64 Dense layer's
 * multiply-adds' time.  Every caller writes each pixel's own pointers for a tile shorter than
 * MR, so these go without xstep (one copy of the loop, not two). */
static void FN(short_tile)(int mr, const T *const *xp, ptrdiff_t off, int nseg, int len,
                           const unsigned char *live, const T *w, int bw, ptrdiff_t bstep,
                           const T *bias, int relu, T *const *outs, ptrdiff_t ooff, int nlast)
{
#define CYC_SHORT_TILE(H)                                                                      \
    case H:                                                                                    \
        FN(tile)(H, CYC_NBLK, CYC_NBLK, xp, off, 0, nseg, len, live, w, bw, bstep, bias, relu, \
                 outs, ooff, nlast);                                                           \
        return;
    switch (mr) {
        CYC_SHORT_TILE(1)
        CYC_SHORT_TILE(2)
        CYC_SHORT_TILE(3)
        CYC_SHORT_TILE(4)
        CYC_SHORT_TILE(5)
#if MR > 6
        CYC_SHORT_TILE(6)
        CYC_SHORT_TILE(7)
        CYC_SHORT_TILE(8)
        CYC_SHORT_TILE(9)
        CYC_SHORT_TILE(10)
        CYC_SHORT_TILE(11)
#endif
#if MR > 12
#error "short_tile covers tiles of up to 11 pixels"
#endif
    }
#undef CYC_SHORT_TILE
}

/* Full tiles get code specialised for their shape, and so do tiles of one block shorter than
 * MR (short_tile); the rest take the generic one. */
static void FN(tile_any)(int mr, int nv, const T *const *xp, ptrdiff_t off, ptrdiff_t xstep,
                         int nseg, int len, const unsigned char *live, const T *w, int bw,
                         ptrdiff_t bstep, const T *bias, int relu, T *const *outs, ptrdiff_t ooff,
                         int nlast)
{
    if (mr == MR && nv == CYC_NBLK)
        FN(tile)(MR, CYC_NBLK, CYC_NBLK, xp, off, xstep, nseg, len, live, w, bw, bstep, bias,
                 relu, outs, ooff, nlast);
    else if (mr == MR && nv == 1)
        FN(tile)(MR, 1, 1, xp, off, xstep, nseg, len, live, w, bw, bstep, bias, relu, outs, ooff,
                 nlast);
#if MR >= 12
    else if (mr == MR / 2 && nv == 2 * CYC_NBLK)
        FN(tile)(MR / 2, 2 * CYC_NBLK, 2 * CYC_NBLK, xp, off, 0, nseg, len, live, w, bw, bstep,
                 bias, relu, outs, ooff, nlast);
#endif
    else if (mr < MR && nv == CYC_NBLK)
        FN(short_tile)(mr, xp, off, nseg, len, live, w, bw, bstep, bias, relu, outs, ooff, nlast);
    else if (nv > CYC_NBLK)
        FN(tile)(mr, nv, 2 * CYC_NBLK, xp, off, 0, nseg, len, live, w, bw, bstep, bias, relu,
                 outs, ooff, nlast);
    else
        FN(tile)(mr, nv, CYC_NBLK, xp, off, 0, nseg, len, live, w, bw, bstep, bias, relu, outs,
                 ooff, nlast);
}

/* Dot mode: out[p][o] = bias[o] + sum over segments of xp[s][p][off + l] * w[o][s * len + l],
 * with vectors along l.  A block of nb pixels x nout outputs sits in registers: each source
 * vector is loaded once for all outputs, each weight vector once for all pixels. */
#define CYC_DOT_ACC (2 * MR)
ALWAYS_INLINE void FN(dot)(const int nb, const int nout, const T *const *xp, int p0, ptrdiff_t off,
                           int nseg, int len, const unsigned char *live, const T *restrict w,
                           const T *bias, int relu, T *const *outs, ptrdiff_t ooff)
{
    const int K = nseg * len;
    V acc[CYC_DOT_ACC];
    T tail[CYC_DOT_ACC];
    for (int a = 0; a < nb * nout; a++) { acc[a] = (V){0}; tail[a] = 0; }
    for (int s = 0; s < nseg; s++) {
        if (!live[s]) continue;
        const T *restrict ws = w + (ptrdiff_t)s * len;
        const T *xr[CYC_DOT_ACC];
        for (int p = 0; p < nb; p++) xr[p] = xp[(ptrdiff_t)s * MR + p0 + p] + off;
        int l = 0;
        for (; l + VLEN <= len; l += VLEN) {
            V wv[CYC_DOT_MAX_OUT];
            for (int o = 0; o < nout; o++) wv[o] = LOADV(ws + (ptrdiff_t)o * K + l);
            for (int p = 0; p < nb; p++) {
                V xv = LOADV(xr[p] + l);
#if CYC_X86_512
                CYC_IN_REGISTER(xv);
#endif
                for (int o = 0; o < nout; o++) acc[p * nout + o] += xv * wv[o];
            }
        }
        for (; l < len; l++)
            for (int p = 0; p < nb; p++)
                for (int o = 0; o < nout; o++)
                    tail[p * nout + o] = FN(madd)(xr[p][l], ws[(ptrdiff_t)o * K + l],
                                                  tail[p * nout + o]);
    }
    for (int p = 0; p < nb; p++)
        for (int o = 0; o < nout; o++) {
            T v = FN(hsum)(acc[p * nout + o]) + tail[p * nout + o] + (bias ? bias[o] : (T)0);
            if (relu && !(v > 0)) v = 0;
            outs[p0 + p][ooff + o] = v;
        }
}

/* Blocks as large as the registers allow for this many outputs, specialised per output count. */
#define CYC_DOT_CASE(NOUT)                                                                     \
    case NOUT: {                                                                               \
        enum { B = CYC_DOT_ACC / NOUT < MR ? CYC_DOT_ACC / NOUT : MR };                        \
        int p0 = 0;                                                                            \
        for (; p0 + B <= mr; p0 += B)                                                          \
            FN(dot)(B, NOUT, xp, p0, off, nseg, len, live, w, bias, relu, outs, ooff);         \
        if (p0 < mr)                                                                           \
            FN(dot)(mr - p0, NOUT, xp, p0, off, nseg, len, live, w, bias, relu, outs, ooff);   \
        return;                                                                                \
    }

static void FN(dot_any)(int mr, const T *const *xp, ptrdiff_t off, int nseg, int len,
                        const unsigned char *live, const T *w, int nout, const T *bias, int relu,
                        T *const *outs, ptrdiff_t ooff)
{
    switch (nout) {
        CYC_DOT_CASE(1)
        CYC_DOT_CASE(2)
        CYC_DOT_CASE(3)
        CYC_DOT_CASE(4)
    default: break;
    }
}
#undef CYC_DOT_CASE

/* The taps of one phase class, in tap mode.  A computed pixel has an origin (qy, qx) in the
 * source; tap s reads source pixel (qy + toy[s], qx + tox[s]) if valid[s].  Forward: origin
 * (y * sh - pad, x * sw - pad), every tap valid.  Input gradient: dx[y] collects dy[q] where
 * q * sh = y + pad - i * dh, so for pixels of class (py, px) (y + pad = py mod sh) the valid taps
 * are those with (py - i * dh) divisible by sh, and the origin is (y + pad - py) / sh.  Offsets
 * are also kept premultiplied (tapoff) for pixels whose every valid tap is inside the source. */
typedef struct {
    int *toy, *tox;
    unsigned char *valid;
    ptrdiff_t *tapoff;
    int ymin, ymax, xmin, xmax;
    int py, px;
} FN(taps_t);

static void FN(class_taps)(const cyc_geom_t *g, const cyc_plan_t *r, int py, int px,
                           FN(taps_t) *t)
{
    t->py = py; t->px = px;
    t->ymin = t->xmin = 1 << 30;
    t->ymax = t->xmax = -(1 << 30);
    for (int i = 0; i < g->kh; i++)
        for (int jj = 0; jj < g->kw; jj++) {
            int s = i * g->kw + jj, oy, ox, ok = 1;
            if (!r->transposed) {
                oy = i * g->dh;
                ox = jj * g->dw;
            } else {
                int j = g->kw - 1 - jj;           /* kw runs reversed in the input gradient */
                int ty = py - i * g->dh, tx = px - j * g->dw;
                ok = ty % g->sh == 0 && tx % g->sw == 0;
                oy = ok ? ty / g->sh : 0;
                ox = ok ? tx / g->sw : 0;
            }
            t->toy[s] = oy; t->tox[s] = ox; t->valid[s] = (unsigned char)ok;
            t->tapoff[s] = ((ptrdiff_t)oy * r->src_w + ox) * r->src_c;
            if (ok) {
                if (oy < t->ymin) t->ymin = oy;
                if (oy > t->ymax) t->ymax = oy;
                if (ox < t->xmin) t->xmin = ox;
                if (ox > t->xmax) t->xmax = ox;
            }
        }
}

/* The segments of computed pixel n with source origin (qy, qx) (see FN(taps_t); in row mode the
 * origin of the kernel's first row and leftmost column): seg[s * stride] points at segment s's
 * values (into src, into `zeros` if it lies wholly in the padding, or into gbuf, a copy with
 * zeros where it straddles a border).  live[s] is set where a segment reads anything real. */
static void FN(pixel_segments)(const cyc_geom_t *g, const cyc_plan_t *r, const FN(taps_t) *t,
                               const T *src, const T *zeros, int n, int qy, int qx,
                               const T **seg, ptrdiff_t stride, T *gbuf, unsigned char *live)
{
    if (r->row_mode) {
        /* forward: rows qy + i * dh; input gradient (stride 1): rows qy - i * dh */
        const int sdy = r->transposed ? -g->dh : g->dh;
        const int inside_x = qx >= 0 && qx + g->kw <= r->src_w;
        for (int i = 0; i < g->kh; i++) {
            int sy = qy + i * sdy;
            if (sy < 0 || sy >= r->src_h) { seg[i * stride] = zeros; continue; }
            const T *row = src + ((ptrdiff_t)n * r->src_h + sy) * r->src_w * r->src_c;
            live[i] = 1;
            if (inside_x) { seg[i * stride] = row + (ptrdiff_t)qx * r->src_c; continue; }
            T *buf = gbuf + (ptrdiff_t)i * r->len;
            for (int j = 0; j < g->kw; j++) {
                int sx = qx + j;
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
    const int nseg = r->nseg;
    const ptrdiff_t plane = (ptrdiff_t)n * r->src_h;
    if (qy + t->ymin >= 0 && qy + t->ymax < r->src_h && qx + t->xmin >= 0 &&
        qx + t->xmax < r->src_w) {
        const T *base = src + ((plane + qy) * r->src_w + qx) * r->src_c;
        for (int s = 0; s < nseg; s++) {
            seg[s * stride] = t->valid[s] ? base + t->tapoff[s] : zeros;
            live[s] |= t->valid[s];
        }
        return;
    }
    for (int s = 0; s < nseg; s++) {
        int sy = qy + t->toy[s], sx = qx + t->tox[s];
        if (t->valid[s] && sy >= 0 && sy < r->src_h && sx >= 0 && sx < r->src_w) {
            seg[s * stride] = src + ((plane + sy) * r->src_w + sx) * r->src_c;
            live[s] = 1;
        } else {
            seg[s * stride] = zeros;
        }
    }
}

/* The forward pass's inner pixels in row mode (most of any image): the window's first row plus
 * a fixed step per kernel row, written inline (pixel_segments is the general, slower walk).
 * Returns 0, having written nothing, for any other pixel. */
ALWAYS_INLINE int FN(inner_rows)(const cyc_geom_t *g, const cyc_plan_t *r, const T *src, int n,
                                 int qy, int qx, const T **seg, ptrdiff_t stride)
{
    if (!r->row_mode || r->transposed || qy < 0 || qy + (g->kh - 1) * g->dh >= r->src_h ||
        qx < 0 || qx + g->kw > r->src_w)
        return 0;
    const T *base = src + (((ptrdiff_t)n * r->src_h + qy) * r->src_w + qx) * r->src_c;
    const ptrdiff_t step = (ptrdiff_t)g->dh * r->src_w * r->src_c;
    for (int s = 0; s < r->nseg; s++) seg[s * stride] = base + s * step;
    return 1;
}

/* Scratch for a FN(taps_t) of nseg taps: ints, flags and offsets, carved from `mem`. */
static unsigned char *FN(taps_init)(FN(taps_t) *t, int nseg, unsigned char *mem)
{
    mem = (unsigned char *)(((uintptr_t)mem + 7) & ~(uintptr_t)7);
    t->tapoff = (ptrdiff_t *)mem;
    t->toy = (int *)(t->tapoff + nseg);
    t->tox = t->toy + nseg;
    t->valid = (unsigned char *)(t->tox + nseg);
    t->py = t->px = -1;
    return t->valid + nseg;
}

/* The source origin of the cursor's pixel (see FN(taps_t)). */
#define CYC_ORIGIN(g, r, cur, qy, qx)                                                          \
    do {                                                                                       \
        if (!(r).transposed) {                                                                 \
            qy = (cur).y * (g)->sh - (g)->pad_top;                                             \
            qx = (cur).x * (g)->sw - (g)->pad_left;                                            \
        } else {                                                                               \
            qy = (cur).qy0 + (cur).ky;                                                         \
            qx = (cur).qx0 + (cur).kx;                                                         \
            if ((r).row_mode) qx -= (g)->kw - 1;                                               \
        }                                                                                      \
    } while (0)

/* Walks the pixels (n, y, x) of N images of h x w without divisions, in phase classes: with
 * phases (ph, pw), pixel y belongs to class (y + oy) mod ph (x likewise), and classes come one
 * after another within each image.  The input gradient of a strided convolution uses this: all
 * pixels of one class read the same taps of dy, so a tile of them skips the taps that the stride
 * leaves out.  With ph = pw = 1 it is plain row-major order. */
typedef struct {
    int h, w, ph, pw, offy, offx;   /* the walk */
    int n, py, px, ky, kx;          /* class and position in it */
    int y0, x0, ry, cx;             /* the current class: first row/column and their counts */
    int qy0, qx0;                   /* (y0 + offy - py) / ph: the class's first origin row */
    int y, x;                       /* the pixel */
} FN(cursor_t);

static inline int FN(first_in_class)(int cls, int off, int step)
{
    return ((cls - off) % step + step) % step;
}

static inline void FN(cursor_class)(FN(cursor_t) *c)
{
    c->y0 = FN(first_in_class)(c->py, c->offy, c->ph);
    c->x0 = FN(first_in_class)(c->px, c->offx, c->pw);
    c->ry = c->y0 < c->h ? (c->h - c->y0 + c->ph - 1) / c->ph : 0;
    c->cx = c->x0 < c->w ? (c->w - c->x0 + c->pw - 1) / c->pw : 0;
    c->qy0 = (c->y0 + c->offy - c->py) / c->ph;
    c->qx0 = (c->x0 + c->offx - c->px) / c->pw;
}

/* Move to the next non-empty class (wrapping to the next image). */
static void FN(cursor_next_class)(FN(cursor_t) *c)
{
    do {
        if (++c->px == c->pw) {
            c->px = 0;
            if (++c->py == c->ph) { c->py = 0; c->n++; }
        }
        FN(cursor_class)(c);
    } while (c->ry == 0 || c->cx == 0);
    c->ky = c->kx = 0;
}

static FN(cursor_t) FN(cursor_at)(ptrdiff_t m, int h, int w, int ph, int pw, int offy, int offx)
{
    FN(cursor_t) c;
    c.h = h; c.w = w; c.ph = ph; c.pw = pw; c.offy = offy; c.offx = offx;
    ptrdiff_t plane = (ptrdiff_t)h * w;
    c.n = (int)(m / plane);
    ptrdiff_t rem = m - (ptrdiff_t)c.n * plane;
    for (c.py = 0; c.py < ph; c.py++)
        for (c.px = 0; c.px < pw; c.px++) {
            FN(cursor_class)(&c);
            ptrdiff_t size = (ptrdiff_t)c.ry * c.cx;
            if (rem < size) {
                c.ky = (int)(rem / c.cx);
                c.kx = (int)(rem - (ptrdiff_t)c.ky * c.cx);
                goto found;
            }
            rem -= size;
        }
found:
    c.y = c.y0 + c.ky * ph;
    c.x = c.x0 + c.kx * pw;
    return c;
}

ALWAYS_INLINE void FN(cursor_next)(FN(cursor_t) *c)
{
    if (++c->kx == c->cx) {
        c->kx = 0;
        if (++c->ky == c->ry) FN(cursor_next_class)(c);
    }
    c->y = c->y0 + c->ky * c->ph;
    c->x = c->x0 + c->kx * c->pw;
}

/* The forward pass's common case, in one go: a tile's mr pixels lie in one output row and all
 * read inside the image (row mode).  Their segments and outputs are then a fixed step apart,
 * so the per-pixel walk (a third of a first layer's time, where the window is 9 values) is
 * skipped.  Returns 0, having written nothing, if the tile is not such a row.  Else returns
 * the run: how many tiles of mr pixels, at most `most`, lie one after another in the row
 * with every window inside (only a whole tile of MR pixels starts a run of more than one);
 * tile t of the run reads and writes at the first one's pointers plus t * mr pixels' steps.
 * Advances the cursor past the run. */
ALWAYS_INLINE int FN(row_of_inner_pixels)(const cyc_geom_t *g, const cyc_plan_t *r,
                                          FN(cursor_t) *cur, int mr, ptrdiff_t most,
                                          const T *src, T *dst, const T **ptrs, T **outs)
{
    if (r->transposed || !r->row_mode || cur->kx + mr > cur->cx) return 0;
    const int qy = cur->y * g->sh - g->pad_top, qx = cur->x * g->sw - g->pad_left;
    if (qy < 0 || qy + (g->kh - 1) * g->dh >= r->src_h || qx < 0 ||
        qx + (mr - 1) * g->sw + g->kw > r->src_w)
        return 0;
    const T *base = src + (((ptrdiff_t)cur->n * r->src_h + qy) * r->src_w + qx) * r->src_c;
    const ptrdiff_t step = (ptrdiff_t)g->dh * r->src_w * r->src_c;
    const ptrdiff_t pstep = (ptrdiff_t)g->sw * r->src_c;
    /* offsets by running sums (a first layer's tiles are short enough for this setup to
     * count), kept as integers so that no pointer steps past the arrays.  Full tiles of at most
     * CYC_NBLK vectors step from each segment's first pixel by xstep; only the dot products,
     * tiles shorter than MR and AVX-512's tiles of two blocks (see tile_blocks and tile_any)
     * read each pixel's own pointers (writing them all took a tenth of a first layer's forward
     * pass on AVX2). */
    const int np = r->dot || mr < MR || MR >= 12 ? mr : 1;
    for (ptrdiff_t s = 0, so = 0; s < r->nseg; s++, so += step)
        for (ptrdiff_t p = 0, po = so; p < np; p++, po += pstep) ptrs[s * MR + p] = base + po;
    T *o = dst + (((ptrdiff_t)cur->n * r->out_h + cur->y) * r->out_w + cur->x) * r->out_c;
    for (ptrdiff_t p = 0, po = 0; p < mr; p++, po += r->out_c) outs[p] = o + po;
    int run = 1;
    if (mr == MR) {
        /* pixels from this one whose windows end inside the image's width, and in the row */
        const int inside = (r->src_w - g->kw - qx) / g->sw + 1, left = cur->cx - cur->kx;
        run = (inside < left ? inside : left) / MR;
        if (run > most) run = (int)most;
    }
    /* the run lies within its row: one step past its last pixel */
    cur->kx += run * mr - 1;
    FN(cursor_next)(cur);
    return run;
}

/* A tile of mr pixels through every block of computed channels: out_cg of them, whose weights
 * are packed per block of NBLK vectors ([K][block width], K = nseg * len); bias NULL for none. */
static void FN(tile_blocks)(int mr, const T *const *ptrs, ptrdiff_t off, ptrdiff_t xstep,
                            int nseg, int len, const unsigned char *live, const T *wg, int out_cg,
                            const T *bg, int relu, T *const *outs, ptrdiff_t ooff)
{
    const int K = nseg * len, opad = cyc_round_up(out_cg, VLEN), blk = CYC_NBLK * VLEN;
    for (int co0 = 0; co0 < opad; co0 += blk) {
        const T *bias = bg ? bg + co0 : FN(zero_bias);
#if MR >= 12
        if (out_cg - co0 >= 2 * blk) {
            /* two whole blocks at once, half the pixels: each x value broadcast meets
             * 4 weight vectors (10 loads per 24 multiply-adds instead of 14) */
            for (int h = 0; h < mr; h += MR / 2) {
                int mh = mr - h < MR / 2 ? mr - h : MR / 2;
                FN(tile_any)(mh, 2 * CYC_NBLK, ptrs + h, off, 0, nseg, len, live,
                             wg + (ptrdiff_t)co0 * K, blk, (ptrdiff_t)K * blk, bias, relu,
                             outs + h, ooff + co0, VLEN);
            }
            co0 += blk;
            continue;
        }
#endif
        int nv = (opad - co0) / VLEN;
        if (nv > CYC_NBLK) nv = CYC_NBLK;
        int nlast = out_cg - (co0 + (nv - 1) * VLEN);
        if (nlast > VLEN) nlast = VLEN;
        FN(tile_any)(mr, nv, ptrs, off, xstep, nseg, len, live, wg + (ptrdiff_t)co0 * K,
                     nv * VLEN, 0, bias, relu, outs, ooff + co0, nlast);
    }
}

static void FN(conv_tiles)(const cyc_geom_t *g, int transposed, const T *src, const T *packed,
                           int relu, const T *zeros, T *dst, ptrdiff_t m0, ptrdiff_t m1,
                           void *scratch)
{
    const cyc_plan_t r = cyc_plan(g, transposed);
    const int nseg = r.nseg, K = r.K;
    const int opad = cyc_round_up(r.out_cg, VLEN);
    /* scratch: ptrs [nseg][MR_MAX] | outs [MR_MAX] | live [nseg] | taps | gbuf [MR_MAX][K] */
    const T **ptrs = (const T **)scratch;
    T **outs = (T **)(ptrs + (ptrdiff_t)nseg * CYC_MR_MAX);
    unsigned char *live = (unsigned char *)(outs + CYC_MR_MAX);
    FN(taps_t) taps;
    unsigned char *end = FN(taps_init)(&taps, nseg, live + nseg);
    T *gbuf = (T *)cyc_align64(end);
    const T *bias_all = packed + (ptrdiff_t)g->groups * K * (r.dot ? r.out_cg : opad);

    /* the input gradient of a strided convolution walks its pixels by phase class */
    const int ph = transposed ? g->sh : 1, pw = transposed ? g->sw : 1;
    FN(cursor_t) cur = FN(cursor_at)(m0, r.out_h, r.out_w, ph, pw, g->pad_top, g->pad_left);
    int run;
    for (ptrdiff_t m = m0; m < m1; m += (ptrdiff_t)run * MR) {
        const int mr = (int)(m1 - m < MR ? m1 - m : MR);
        /* bytes between the tile's pixels in every segment, if they are evenly spaced */
        ptrdiff_t xstep = 0;
        /* tiles one after another along a row, each mr pixels' steps further (see
         * row_of_inner_pixels): a first layer's driver took a quarter of its forward pass
         * tile by tile */
        run = FN(row_of_inner_pixels)(g, &r, &cur, mr, (m1 - m) / MR, src, dst, ptrs, outs);
        if (run) {
            memset(live, 1, (size_t)nseg);
            xstep = (ptrdiff_t)g->sw * r.src_c * (ptrdiff_t)sizeof(T);
            goto tiles;
        }
        run = 1;
        memset(live, 0, (size_t)nseg);
        int inner = 0;
        for (int p = 0; p < mr; p++) {
            int qy, qx;
            if (cur.py != taps.py || cur.px != taps.px)
                FN(class_taps)(g, &r, cur.py, cur.px, &taps);
            CYC_ORIGIN(g, r, cur, qy, qx);
            if (FN(inner_rows)(g, &r, src, cur.n, qy, qx, ptrs + p, MR))
                inner = 1;
            else
                FN(pixel_segments)(g, &r, &taps, src, zeros, cur.n, qy, qx, ptrs + p, MR,
                                   gbuf + (ptrdiff_t)p * K, live);
            outs[p] = dst + (((ptrdiff_t)cur.n * r.out_h + cur.y) * r.out_w + cur.x) * r.out_c;
            FN(cursor_next)(&cur);
        }
        if (inner) memset(live, 1, (size_t)nseg);
    tiles:
        for (int t = 0; t < run; t++)
            for (int grp = 0; grp < g->groups; grp++) {
                /* tap mode reads group grp's channels of each source pixel; row mode has 1
                 * group */
                const ptrdiff_t off = (r.row_mode ? 0 : (ptrdiff_t)grp * r.src_cg) +
                                      (ptrdiff_t)t * mr * g->sw * r.src_c;
                const ptrdiff_t ooff = (ptrdiff_t)grp * r.out_cg + (ptrdiff_t)t * mr * r.out_c;
                if (r.dot) {
                    FN(dot_any)(mr, ptrs, off, nseg, r.len, live,
                                packed + (ptrdiff_t)grp * r.out_cg * K, r.out_cg,
                                transposed ? NULL : bias_all + (ptrdiff_t)grp * r.out_cg,
                                relu, (T *const *)outs, ooff);
                    continue;
                }
                FN(tile_blocks)(mr, ptrs, off, xstep, nseg, r.len, live,
                                packed + (ptrdiff_t)grp * K * opad, r.out_cg,
                                bias_all + (ptrdiff_t)grp * opad, relu, outs, ooff);
            }
    }
}

/* Weights in the micro-kernels' order.  Tiles: per group, per block of NBLK*VLEN computed
 * channels, [K][block width] (lanes past the last channel are zero).  Dot mode: per group,
 * [computed channel][K].  Then the bias: [groups][opad] for tiles, [groups][out_cg] for dot. */
/* The input gradient's tiles, rows [k0, k1) of group grp: row k = (tap, output channel sch)
 * holds the weights w[i][j][ci][sch] of every input channel ci, which lie cout apart: for each
 * tap and block of ci, a block of the weights transposed, in registers (element by element, a
 * Dense layer's input gradient spent a sixth of its time here). */
static void FN(pack_transposed_tiles)(const cyc_geom_t *g, const cyc_plan_t *r, const T *w,
                                      int grp, T *pg, ptrdiff_t k0, ptrdiff_t k1)
{
    const int K = r->K, opad = cyc_round_up(r->out_cg, VLEN), blk = CYC_NBLK * VLEN;
    const int cg = g->c / g->groups, og = g->cout / g->groups;
    for (ptrdiff_t k = k0; k < k1;) {
        const int tap = (int)(k / r->src_cg), sch = (int)(k - (ptrdiff_t)tap * r->src_cg);
        const int i = tap / g->kw, j = g->kw - 1 - (tap - i * g->kw);
        int kb = r->src_cg - sch;   /* rows of this tap */
        if (kb > k1 - k) kb = (int)(k1 - k);
        const T *base = w + ((ptrdiff_t)(i * g->kw + j) * cg) * g->cout + (ptrdiff_t)grp * og + sch;
        for (int co0 = 0; co0 < opad; co0 += blk) {
            const int bw = opad - co0 < blk ? opad - co0 : blk;
            const int real = r->out_cg - co0 < bw ? r->out_cg - co0 : bw;
            T *dst = pg + (ptrdiff_t)co0 * K + k * bw;
            FN(cyc_transpose)(base + (ptrdiff_t)co0 * g->cout, g->cout, dst, bw, real, kb);
            for (int kk = 0; kk < kb; kk++)
                for (int l = real; l < bw; l++) dst[(ptrdiff_t)kk * bw + l] = 0;
        }
        k += kb;
    }
}

/* The scatter by kernel rows' tiles (groups == 1), rows [k0, k1): row k = (kernel row i, output
 * channel co) holds w[i][j][ci][co] at lane j * cg + ci, as dx holds a row of kw pixels. */
static void FN(pack_row_taps)(const cyc_geom_t *g, const cyc_plan_t *r, const T *w, T *pg,
                              ptrdiff_t k0, ptrdiff_t k1)
{
    const int K = r->K, opad = cyc_round_up(r->out_cg, VLEN), blk = CYC_NBLK * VLEN;
    const int og = g->cout;
    for (ptrdiff_t k = k0; k < k1; k++) {
        const int i = (int)(k / og), co = (int)(k % og);
        /* lane l = j * cg + ci is weight ((i * kw + j) * cg + ci) * cout + co */
        const T *src = w + (ptrdiff_t)i * g->kw * g->c * og + co;
        for (int co0 = 0; co0 < opad; co0 += blk) {
            const int bw = opad - co0 < blk ? opad - co0 : blk;
            T *dst = pg + (ptrdiff_t)co0 * K + k * bw;
            for (int l = 0; l < bw; l++)
                dst[l] = co0 + l < r->out_cg ? src[(ptrdiff_t)(co0 + l) * og] : (T)0;
        }
    }
}

static void FN(wino_pack)(const cyc_geom_t *g, int mode, const T *w, const T *bias, T *packed,
                          ptrdiff_t k0, ptrdiff_t k1);

void FN(cyc_conv_pack)(const cyc_geom_t *g, const T *w, const T *bias, int transposed, T *packed,
                       ptrdiff_t k0, ptrdiff_t k1)
{
    /* rows k in [k0, k1) of every group (threads share the packing out); bias with row 0 */
    if (transposed == CYC_WINO_FWD || transposed == CYC_WINO_DX) {
        FN(wino_pack)(g, transposed, w, bias, packed, k0, k1);
        return;
    }
    const cyc_plan_t r = cyc_plan(g, transposed);
    const int K = r.K;
    const int opad = cyc_round_up(r.out_cg, VLEN);
    const int cg = g->c / g->groups, og = g->cout / g->groups;
    const int ow = r.dot ? r.out_cg : opad;
    const int blk = CYC_NBLK * VLEN;
    for (int grp = 0; grp < g->groups; grp++) {
        T *pg = packed + (ptrdiff_t)grp * K * ow;
        if (transposed == CYC_ROW_TAPS) {
            FN(pack_row_taps)(g, &r, w, pg, k0, k1);
            goto bias;
        }
        if (transposed && !r.dot) {
            FN(pack_transposed_tiles)(g, &r, w, grp, pg, k0, k1);
            goto bias;
        }
        for (ptrdiff_t k = k0; k < k1; k++) {
            /* k flattens (i, jj, channel) in both modes; jj runs reversed when transposed */
            const int tap = (int)(k / r.src_cg), sch = (int)(k - (ptrdiff_t)tap * r.src_cg);
            const int i = tap / g->kw, jj = tap - i * g->kw;
            const int j = transposed ? g->kw - 1 - jj : jj;
            /* HWIO: the weights this k meets, one per computed channel o, lie at row + o * ostep
             * (forward: contiguous output channels; input gradient: input channels, cout apart) */
            const T *row = w + ((ptrdiff_t)(i * g->kw + j) * cg) * g->cout + (ptrdiff_t)grp * og;
            ptrdiff_t ostep;
            if (!transposed) { row += (ptrdiff_t)sch * g->cout; ostep = 1; }
            else { row += sch; ostep = g->cout; }
            if (r.dot) {
                for (int o = 0; o < r.out_cg; o++) pg[(ptrdiff_t)o * K + k] = row[o * ostep];
                continue;
            }
            /* forward tiles (ostep 1: the input gradient's took the branch above) */
            for (int co0 = 0; co0 < opad; co0 += blk) {
                int bw = opad - co0 < blk ? opad - co0 : blk;
                T *dst = pg + (ptrdiff_t)co0 * K + k * bw;
                int real = r.out_cg - co0 < bw ? r.out_cg - co0 : bw;
                if (real == bw) {
                    /* whole vectors in registers: a call to memcpy per block of a row took
                     * most of the packing (a 9216 -> 128 Dense layer: 9216 x 8 calls per
                     * forward pass, a third of its time) */
                    for (int l = 0; l < bw; l += VLEN) STOREV(dst + l, LOADV(row + co0 + l));
                    continue;
                }
                memcpy(dst, row + co0, sizeof(T) * (size_t)real);
                for (int l = real; l < bw; l++) dst[l] = 0;
            }
        }
    bias:
        if (k0 > 0) continue;
        T *pb = packed + (ptrdiff_t)g->groups * K * ow + (ptrdiff_t)grp * ow;
        for (int o = 0; o < ow; o++)
            pb[o] = (!transposed && bias && o < r.out_cg) ? bias[grp * og + o] : (T)0;
    }
}

/* ---- the input gradient of a Dense layer (cyc_conv_dense_dx) ----
 * dx[p][k] = sum over o of dy[p][o] * w[k][o]: the HWIO weights' rows are read in place, with
 * vectors along o, where the tiles' route first transposed all of them (a 9216 -> 128 layer:
 * a third of its input gradient's time).  A block of nk input channels x np pixels of dot
 * products sits in registers: np dy vectors loaded once for the nk rows, each row's vector
 * once for the np pixels (AVX2: 4 x 3 sums, 3 dy vectors and a weight vector, 16 registers).
 * Each thread takes whole rows of w and every pixel (dy stays in cache). */
#define CYC_DDX_K 4
#define CYC_DDX_P (MR / 2)
ALWAYS_INLINE void FN(ddx_block)(const int nk, const int np, const T *dy, const T *w, T *dx,
                                 ptrdiff_t cin, int cout)
{
    V acc[CYC_DDX_K * CYC_DDX_P];
    for (int a = 0; a < nk * np; a++) acc[a] = (V){0};
    int o = 0;
    for (; o + VLEN <= cout; o += VLEN) {
        V yv[CYC_DDX_P];
        for (int p = 0; p < np; p++) yv[p] = LOADV(dy + (ptrdiff_t)p * cout + o);
        for (int i = 0; i < nk; i++) {
            const V wv = LOADV(w + (ptrdiff_t)i * cout + o);
            for (int p = 0; p < np; p++) acc[p * nk + i] += yv[p] * wv;
        }
    }
    if (o < cout) {
        const int n = cout - o;
        V yv[CYC_DDX_P];
        for (int p = 0; p < np; p++) yv[p] = FN(load_n)(dy + (ptrdiff_t)p * cout + o, n);
        for (int i = 0; i < nk; i++) {
            const V wv = FN(load_n)(w + (ptrdiff_t)i * cout + o, n);
            for (int p = 0; p < np; p++) acc[p * nk + i] += yv[p] * wv;
        }
    }
    for (int p = 0; p < np; p++)
        for (int i = 0; i < nk; i++) dx[(ptrdiff_t)p * cin + i] = FN(hsum)(acc[p * nk + i]);
}

/* Input channels [k0, k1) of dx for all P pixels (see above). */
void FN(cyc_conv_dense_dx)(const T *dy, const T *w, T *dx, ptrdiff_t P, ptrdiff_t cin, int cout,
                           ptrdiff_t k0, ptrdiff_t k1)
{
    for (ptrdiff_t k = k0; k < k1; k += CYC_DDX_K) {
        const int nk = k1 - k < CYC_DDX_K ? (int)(k1 - k) : CYC_DDX_K;
        const T *wk = w + k * cout;
        ptrdiff_t p = 0;
        if (nk == CYC_DDX_K)
            for (; p + CYC_DDX_P <= P; p += CYC_DDX_P)
                FN(ddx_block)(CYC_DDX_K, CYC_DDX_P, dy + p * cout, wk, dx + p * cin + k, cin,
                              cout);
        if (p == P) continue;
        const int np = P - p < CYC_DDX_P ? (int)(P - p) : CYC_DDX_P;
        if (nk == CYC_DDX_K) {
            /* the last pixels (2 of a batch of 32 on AVX2) in code for their count: the
             * generic block keeps its sums in memory, and took 3x as long a pixel */
            switch (np) {
#define CYC_DDX_TAIL(NP)                                                                       \
    case NP:                                                                                   \
        FN(ddx_block)(CYC_DDX_K, NP, dy + p * cout, wk, dx + p * cin + k, cin, cout);          \
        continue;
                CYC_DDX_TAIL(1)
                CYC_DDX_TAIL(2)
#if CYC_DDX_P > 3
                CYC_DDX_TAIL(3)
                CYC_DDX_TAIL(4)
                CYC_DDX_TAIL(5)
#endif
#undef CYC_DDX_TAIL
            }
        }
        /* the last rows: blocks of any size */
        for (; p < P; p += CYC_DDX_P) {
            const int m = P - p < CYC_DDX_P ? (int)(P - p) : CYC_DDX_P;
            FN(ddx_block)(nk, m, dy + p * cout, wk, dx + p * cin + k, cin, cout);
        }
    }
}
#undef CYC_DDX_K
#undef CYC_DDX_P

/* ---- a Dense layer's forward pass (cyc_conv_dense_fwd) ----
 * y[p][o] = bias[o] + sum over k of x[p][k] * w[k][o]: a block of output channels (NBLK
 * vectors) at a time, through the input channels in pieces of CYC_DENSE_KB rows, each piece of
 * the HWIO weights copied into a small block that stays in L1 while every pixel's register
 * tiles go through it (the partial sums of y added by the tiles' CYC_ADD epilogue).  The
 * packed path copies all the weights into memory first (a fifth of a 9216 -> 128 layer's
 * time); read in place, the rows of a block lie cout apart, all in a few sets of L1. */
#define CYC_DENSE_KB 128
void FN(cyc_conv_dense_fwd)(const T *x, const T *w, const T *bias, int relu, T *y, ptrdiff_t P,
                            ptrdiff_t cin, int cout, int c0, int c1)
{
    enum { BLK = CYC_NBLK * VLEN };
    T b[BLK] __attribute__((aligned(64)));
    T piece[CYC_DENSE_KB * BLK] __attribute__((aligned(64)));
    const T *xp[MR];
    T *outs[MR];
    const unsigned char live = 1;
    /* the pieces of the input channels outermost: x's columns for a piece (all pixels) and y
     * stay in cache while the blocks of output channels go by */
    for (ptrdiff_t k0 = 0; k0 < cin; k0 += CYC_DENSE_KB) {
        const int len = cin - k0 < CYC_DENSE_KB ? (int)(cin - k0) : CYC_DENSE_KB;
        for (int co = c0; co < c1; co += BLK) {
            /* cout is a multiple of every instruction set's vector (see
             * cyc_conv_dense_fwd_applies) */
            const int nv = (c1 - co < BLK ? c1 - co : BLK) / VLEN, bw = nv * VLEN;
            if (!k0)
                for (int j = 0; j < bw; j++) b[j] = bias ? bias[co + j] : (T)0;
            for (int i = 0; i < len; i++)
                for (int v = 0; v < nv; v++) {
                    /* through a register: GCC made the loop a call to memmove per row */
                    V r = LOADV(w + (k0 + i) * cout + co + v * VLEN);
                    CYC_IN_REGISTER(r);
                    STOREV(piece + i * bw + v * VLEN, r);
                }
            for (ptrdiff_t p = 0; p < P; p += MR) {
                const int mr = P - p < MR ? (int)(P - p) : MR;
                for (int i = 0; i < mr; i++) {
                    xp[i] = x + (p + i) * cin;
                    outs[i] = y + (p + i) * cout + co;
                }
                FN(tile_any)(mr, nv, xp, k0, 0, 1, len, &live, piece, bw, 0,
                             k0 ? FN(zero_bias) : b, k0 ? CYC_ADD : 0, outs, 0, VLEN);
            }
        }
    }
    if (relu)
        for (ptrdiff_t p = 0; p < P; p++)
            for (int o = c0; o < c1; o += VLEN) STOREV(y + p * cout + o,
                                                       FN(relu)(LOADV(y + p * cout + o)));
}

/* One NCHW image's pointwise convolution as the matrix product it is, y = a b, then a ReLU if
 * relu is 1 (added to y if it is CYC_ADD): rows [m0, m1) and columns [n0, n1) of y (M x N, N
 * apart), the sums over k in [k0, k1) of K (the weight gradient's pieces of an image's
 * pixels), a's rows K apart, b K x N (N apart): the OIHW weights as a, the image's planes as b
 * (for the weight gradient, dy's planes as a and the image's transposed,
 * FN(cyc_gemm_planes_pack_t)).  The NHWC tiles with the roles of the weights and the pixels
 * swapped: b in panels of a tile's columns (FN(cyc_gemm_planes_pack), once per image and
 * part of its columns), a's rows read in place.  The tiles' bias is one per column: a bias per
 * row goes in as a last column of a, met by a row of ones that the panels end with (ones). */
enum { FN(PLANES_BLK) = CYC_NBLK * VLEN };

/* The columns of the panels' block from column c0 of N (a tile's width at most), and its
 * vectors. */
ALWAYS_INLINE int FN(planes_block)(ptrdiff_t N, ptrdiff_t c0, int *nv)
{
    const int cols = N - c0 < FN(PLANES_BLK) ? (int)(N - c0) : FN(PLANES_BLK);
    *nv = (cols + VLEN - 1) / VLEN;
    return cols;
}

void FN(cyc_gemm_planes_pack)(const T *b, ptrdiff_t K, ptrdiff_t N, int ones, ptrdiff_t n0,
                              ptrdiff_t n1, T *panels)
{
    const ptrdiff_t rows = K + !!ones;
    /* a row at a time, as b lies (a block's column of rows at a time, N apart, missed the
     * caches on every row: the prefetchers stop at each page) */
    int nv;
    for (ptrdiff_t i = 0; i < rows; i++)
        for (ptrdiff_t c0 = n0; c0 < n1; c0 += FN(PLANES_BLK)) {
            const int cols = FN(planes_block)(N, c0, &nv), bw = nv * VLEN;
            /* (the columns past N are never stored: any value will do there) */
            for (int v = 0; v < nv; v++)
                STOREV(panels + c0 * rows + i * bw + v * VLEN,
                       i < K ? FN(load_n)(b + i * N + c0 + v * VLEN,
                                          v < nv - 1 ? VLEN : cols - v * VLEN)
                             : (V){0} + (T)1);
        }
}

void FN(cyc_gemm_planes)(const T *a, const T *panels, int relu, T *y, ptrdiff_t K, ptrdiff_t N,
                         ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1, ptrdiff_t k0,
                         ptrdiff_t k1)
{
    const T *ap[MR];
    T *outs[MR];
    const unsigned char live = 1;
    int nv;
    /* each tile of a's rows meets every block of columns while it is in L1, the panels coming
     * from L2 in turn (as the NHWC tiles meet the weights) */
    for (ptrdiff_t m = m0; m < m1; m += MR) {
        const int mr = m1 - m < MR ? (int)(m1 - m) : MR;
        for (int i = 0; i < mr; i++) ap[i] = a + (m + i) * K;
        for (ptrdiff_t c0 = n0; c0 < n1; c0 += FN(PLANES_BLK)) {
            const int cols = FN(planes_block)(N, c0, &nv), bw = nv * VLEN;
            for (int i = 0; i < mr; i++) outs[i] = y + (m + i) * N + c0;
            FN(tile_any)(mr, nv, ap, k0, 0, 1, (int)(k1 - k0), &live, panels + c0 * K + k0 * bw,
                         bw, 0, FN(zero_bias), relu, outs, 0, cols - (nv - 1) * VLEN);
        }
    }
}
#undef CYC_DENSE_KB

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

/* The input gradient by scattering, for whole images [n0, n1): each tile of dy pixels meets
 * each tap's weights (a GEMM with no zero padding in it) and the result is added into dx where
 * the tap points; positions in the padding go to a per-thread sink.  No work is wasted on
 * borders or on taps a stride skips, but images are the unit of parallel work (they do not
 * overlap in dx).  A tap is a kernel tap, whose tile computes its cg channels (weights packed
 * as for the transposed gather), or with `rows` a kernel row, whose tile computes kw pixels x
 * cg channels, contiguous in dx (weights packed by pack_row_taps).  A kernel row that crosses
 * the left or right side goes through a row of its own, and only its inner part into dx. */
void FN(cyc_conv_bwd_data_scatter)(const cyc_geom_t *g, int rows, const T *dy, const T *packed_t,
                                   T *dx, ptrdiff_t n0, ptrdiff_t n1, void *scratch)
{
    const cyc_plan_t r = cyc_plan(g, rows ? CYC_ROW_TAPS : 1);
    const int cg = g->c / g->groups, og = g->cout / g->groups;
    const int chans = r.out_cg;                /* computed per tap: cg, or kw * cg */
    const int opad = cyc_round_up(chans, VLEN);
    const int K = r.K;                         /* taps * og, tap-major */
    const int taps_x = rows ? 1 : g->kw;
    const ptrdiff_t plane = (ptrdiff_t)g->oh * g->ow;
    /* scratch: outs [MR] | sink [row] | with rows, edge [MR][row]; row = kw * c + 2 * 64 with
     * rows, else c + 2 * 64 (see cyc_conv_scatter_scratch_bytes) */
    const ptrdiff_t srow = (ptrdiff_t)(rows ? g->kw : 1) * g->c + 2 * 64;
    T **outs = (T **)scratch;
    T *sink = (T *)cyc_align64(outs + CYC_MR_MAX);
    T *edge = sink + srow;
    static const unsigned char one = 1;
    const ptrdiff_t img = (ptrdiff_t)g->h * g->w * g->c;
    memset(dx + n0 * img, 0, sizeof(T) * (size_t)((n1 - n0) * img));
    /* Tiles run across rows and images (small images fill them too).  With rows, the kernel
     * rows of neighbouring pixels overlap in dx: a tile whose pixels overlap adds each pixel's
     * values into stores still in flight from the one before (a store-forwarding stall per
     * vector, which cost a third of the time).  So pixels go in classes x mod q, each class
     * over all rows: a tile's pixels of one row lie q apart, and their kernel rows do not
     * overlap. */
    const int q = rows ? (g->kw + g->sw - 1) / g->sw : 1;
    const ptrdiff_t row0 = n0 * g->oh, row1 = n1 * g->oh;
    ptrdiff_t left = (n1 - n0) * plane, prow = row0;
    int cls = 0, px = 0;   /* the walk: class, row (n, y) flattened, x */
    /* Tiles go in groups of CYC_SCATTER_TILES, each tap meeting every tile of the group in
     * turn: the tap's packed weights then stay in L1 between tiles (the taps of a 7x7 kernel
     * together do not fit).  Where each pixel's window starts in dx (its tap (0, 0)) is found
     * once per group. */
    enum { TILES = CYC_SCATTER_TILES };
    const T *pix[TILES * MR];
    int oy[TILES * MR], ox[TILES * MR], tmr[TILES];
    ptrdiff_t obase[TILES * MR], xstep[TILES];
    while (left > 0) {
        int ntiles = 0;
        for (; ntiles < TILES && left > 0; ntiles++) {
            const int mr = (int)(left < MR ? left : MR);
            left -= mr;
            int even = 1;   /* dy's rows for the tile lie q pixels apart (always so if q == 1) */
            for (int p = ntiles * MR; p < ntiles * MR + mr; p++) {
                const int n = (int)(prow / g->oh), y = (int)(prow % g->oh);
                pix[p] = dy + (prow * g->ow + px) * g->cout;
                even &= p == ntiles * MR || pix[p] - pix[p - 1] == (ptrdiff_t)q * g->cout;
                oy[p] = y * g->sh - g->pad_top;
                ox[p] = px * g->sw - g->pad_left;
                obase[p] = n * img + ((ptrdiff_t)oy[p] * g->w + ox[p]) * g->c;
                if ((px += q) >= g->ow) {
                    if (++prow == row1) {
                        prow = row0;
                        cls++;
                    }
                    px = cls;
                }
            }
            tmr[ntiles] = mr;
            xstep[ntiles] = even ? (ptrdiff_t)q * g->cout * (ptrdiff_t)sizeof(T) : 0;
        }
        for (int i = 0; i < g->kh; i++)
            for (int jj = 0; jj < taps_x; jj++) {
                /* packed taps run kw reversed: tap (i, jj) is kernel column kw-1-jj */
                const int j = rows ? 0 : g->kw - 1 - jj, tap = i * taps_x + jj;
                const int ty = i * g->dh, tx = j * g->dw;
                const ptrdiff_t toff = ((ptrdiff_t)ty * g->w + tx) * g->c;
                for (int t = 0; t < ntiles; t++) {
                    const int mr = tmr[t], p0 = t * MR;
                    int edges = 0;
                    for (int p = 0; p < mr; p++) {
                        const int ix = ox[p0 + p] + tx;
                        if ((unsigned)(oy[p0 + p] + ty) >= (unsigned)g->h) {
                            outs[p] = sink;
                        } else if (rows ? ix >= 0 && ix + g->kw <= g->w
                                        : (unsigned)ix < (unsigned)g->w) {
                            outs[p] = dx + (obase[p0 + p] + toff);
                        } else if (!rows) {
                            outs[p] = sink;
                        } else {
                            outs[p] = edge + p * srow;
                            memset(outs[p], 0, sizeof(T) * (size_t)chans);
                            edges = 1;
                        }
                    }
                    for (int grp = 0; grp < g->groups; grp++) {
                        const T *wg = packed_t + (ptrdiff_t)grp * K * opad;
                        for (int c0 = 0; c0 < opad; c0 += CYC_NBLK * VLEN) {
                            int nv = (opad - c0) / VLEN;
                            if (nv > CYC_NBLK) nv = CYC_NBLK;
                            int nlast = chans - (c0 + (nv - 1) * VLEN);
                            if (nlast > VLEN) nlast = VLEN;
                            /* the sink and edge rows hold any group's channel block */
                            FN(tile_any)(mr, nv, pix + p0, (ptrdiff_t)grp * og, xstep[t], 1, og,
                                         &one,
                                         wg + (ptrdiff_t)c0 * K + (ptrdiff_t)tap * og * nv * VLEN,
                                         nv * VLEN, 0, FN(zero_bias), CYC_ADD, (T *const *)outs,
                                         (ptrdiff_t)grp * cg + c0, nlast);
                        }
                    }
                    if (!edges) continue;
                    for (int p = 0; p < mr; p++) {
                        if (outs[p] != edge + p * srow) continue;
                        for (int jx = 0; jx < g->kw; jx++) {
                            if ((unsigned)(ox[p0 + p] + jx) >= (unsigned)g->w) continue;
                            T *d = dx + (obase[p0 + p] + toff + (ptrdiff_t)jx * g->c);
                            const T *e = outs[p] + (ptrdiff_t)jx * g->c;
                            for (int c = 0; c < g->c; c++) d[c] += e[c];
                        }
                    }
                }
            }
    }
}

/* ---- Winograd F(2x2, 3x3) and F(4x4, 3x3) (Lavin and Gray, 2016) ----
 * y = A^T [(G g G^T) * (B^T d B)] A per a x a input tile d and m x m output tile y (a = m + 2).
 * The nx = a^2 elementwise products, summed over input channels, are nx GEMMs [tiles x C] x
 * [C x K], which run on the direct convolution's register tiles (one segment of C values); the
 * transforms are additions on vectors of channels.  F(4x4)'s matrices use the points 0, +-1,
 * +-2 (its B^T, G and A^T are written out below, by rows, in the 1-D transforms). */

/* G g of one column of 3 weights (or rows of columns), a values. */
ALWAYS_INLINE void FN(wino_g)(int m, const V *g, V *u)
{
    if (m == 2) {
        u[0] = g[0];
        u[1] = (g[0] + g[1] + g[2]) * (T)0.5;
        u[2] = (g[0] - g[1] + g[2]) * (T)0.5;
        u[3] = g[2];
        return;
    }
    const V e = g[0] + g[2];
    u[0] = g[0] * (T)0.25;
    u[1] = (e + g[1]) * (T)(-1.0 / 6);
    u[2] = (e - g[1]) * (T)(-1.0 / 6);
    const V f = g[0] * (T)(1.0 / 24) + g[2] * (T)(1.0 / 6), h = g[1] * (T)(1.0 / 12);
    u[3] = f + h;
    u[4] = f - h;
    u[5] = g[2];
}

/* One input channel c's transformed weights U[xi] for the vector of computed channels at kv
 * (nl of them real). */
ALWAYS_INLINE void FN(wino_weights)(const cyc_wino_t *q, int mode, const T *w, ptrdiff_t c,
                                    int kv, int nl, V *u)
{
    const int C = q->c, K = q->k;
    /* row's last two zeroed for the compiler, which cannot see that F(2x2) reads only the 4
     * of its 6 values that wino_g writes (a maybe-uninitialized warning); all six zeroed, by
     * `= {{0}}`, took a rep stos per call and a fifth of the packing's time */
    V gg[3][3], col[3], t[6][3], row[6];
    row[4] = row[5] = (V){0};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            if (mode == CYC_WINO_FWD) {
                /* HWIO: the computed channels are contiguous */
                gg[i][j] = FN(load_n)(w + ((ptrdiff_t)(i * 3 + j) * C + c) * K + kv, nl);
            } else {
                /* flipped, input and output swapped: C apart (the next channels read the same
                 * cache lines) */
                const T *p = w + ((ptrdiff_t)((2 - i) * 3 + 2 - j) * K + kv) * C + c;
                V v = {0};
                for (int l = 0; l < nl; l++) v[l] = p[(ptrdiff_t)l * C];
                gg[i][j] = v;
            }
        }
    for (int j = 0; j < 3; j++) {
        for (int i = 0; i < 3; i++) col[i] = gg[i][j];
        FN(wino_g)(q->m, col, row);
        for (int a = 0; a < q->a; a++) t[a][j] = row[a];
    }
    for (int a = 0; a < q->a; a++) FN(wino_g)(q->m, t[a], u + a * q->a);
}

/* Input channels whose transformed weights wino_pack gathers before storing them. */
#define CYC_WINO_PACK_CB 8

/* Packed weights: U[xi] = (G g G^T)[xi] for xi = 0..nx-1, each laid out as the forward tiles'
 * weights with K = C (per block of NBLK vectors of computed channels, [C][block width]), then
 * the bias [opad].  Rows [k0, k1) are input channels of the computed problem.  A block of
 * channels' products go through a buffer on the stack, then out as one run per product: stored
 * straight from the transform, each vector went to its own product's plane, nx lines at once
 * that lie C * opad apart (a multiple of 4 KB, all in one set of L1), and those stores took
 * most of the packing's time. */
static void FN(wino_pack)(const cyc_geom_t *g, int mode, const T *w, const T *bias, T *packed,
                          ptrdiff_t k0, ptrdiff_t k1)
{
    enum { CB = CYC_WINO_PACK_CB, BLK = CYC_NBLK * VLEN };
    const cyc_wino_t q = cyc_wino(g, mode);
    const int C = q.c, K = q.k, opad = cyc_round_up(K, VLEN);
    T buf[36 * CB * BLK] __attribute__((aligned(64)));
    V u[36];
    for (int co0 = 0; co0 < opad; co0 += BLK) {
        const int bw = opad - co0 < BLK ? opad - co0 : BLK;
        for (ptrdiff_t c0 = k0; c0 < k1; c0 += CB) {
            const int nc = k1 - c0 < CB ? (int)(k1 - c0) : CB;
            for (int ci = 0; ci < nc; ci++)
                for (int kv = co0; kv < co0 + bw; kv += VLEN) {
                    FN(wino_weights)(&q, mode, w, c0 + ci, kv, K - kv < VLEN ? K - kv : VLEN, u);
                    for (int xi = 0; xi < q.nx; xi++)
                        STOREV(buf + ((ptrdiff_t)xi * CB + ci) * bw + (kv - co0), u[xi]);
                }
            /* product xi's rows c0 .. c0 + nc of this block of computed channels: contiguous */
            const int run = nc * bw;
            for (int xi = 0; xi < q.nx; xi++) {
                const T *src = buf + (ptrdiff_t)xi * CB * bw;
                T *dst = packed + (ptrdiff_t)xi * C * opad + (ptrdiff_t)co0 * C + c0 * bw;
                for (int e = 0; e < run; e += VLEN) STOREV(dst + e, LOADV(src + e));
            }
        }
    }
    if (k0 == 0)
        for (int k = 0; k < opad; k++)
            packed[(ptrdiff_t)q.nx * C * opad + k] =
                mode == CYC_WINO_FWD && bias && k < K ? bias[k] : (T)0;
}
#undef CYC_WINO_PACK_CB

/* Where a tile's input pixels lie: pixel (y, x) of an h x w image at img + y * rs + x * C, C
 * channels; outside the image (only checked for a tile that crosses its border, `edge`) the
 * padding's zeros. */
typedef struct {
    const T *img;
    int h, w, C, edge;
    ptrdiff_t rs;
} FN(wino_src_t);

ALWAYS_INLINE V FN(wino_load)(const FN(wino_src_t) *s, int y, int x, int c0, int nl)
{
    if (s->edge && ((unsigned)y >= (unsigned)s->h || (unsigned)x >= (unsigned)s->w))
        return (V){0};
    return FN(load_n)(s->img + y * s->rs + (ptrdiff_t)x * s->C + c0, nl);
}

/* B^T d B of the tile whose pixel (0, 0) is (y0, x0), v[xi * vstride + channel] (xi = 4 * row +
 * column). */
ALWAYS_INLINE void FN(wino_input)(const FN(wino_src_t) *s, int y0, int x0, T *v,
                                  ptrdiff_t vstride)
{
    for (int c0 = 0; c0 < s->C; c0 += VLEN) {
        const int nl = s->C - c0 < VLEN ? s->C - c0 : VLEN;
        V d[4][4], t[4][4];
        for (int a = 0; a < 4; a++)
            for (int e = 0; e < 4; e++) d[a][e] = FN(wino_load)(s, y0 + a, x0 + e, c0, nl);
        for (int e = 0; e < 4; e++) {
            t[0][e] = d[0][e] - d[2][e];
            t[1][e] = d[1][e] + d[2][e];
            t[2][e] = d[2][e] - d[1][e];
            t[3][e] = d[1][e] - d[3][e];
        }
        T *vc = v + c0;
        for (int a = 0; a < 4; a++) {
            STOREV(vc + (a * 4 + 0) * vstride, t[a][0] - t[a][2]);
            STOREV(vc + (a * 4 + 1) * vstride, t[a][1] + t[a][2]);
            STOREV(vc + (a * 4 + 2) * vstride, t[a][2] - t[a][1]);
            STOREV(vc + (a * 4 + 3) * vstride, t[a][1] - t[a][3]);
        }
    }
}

/* B^T d of one column of 6 values (F(4x4)). */
ALWAYS_INLINE void FN(wino_bt4)(V d0, V d1, V d2, V d3, V d4, V d5, V *t)
{
    const V p = d4 - d2, q = d3 - d1;
    t[0] = d0 * (T)4 - d2 * (T)5 + d4;
    t[1] = (d3 + d4) - (d1 + d2) * (T)4;
    t[2] = (d4 - d3) + (d1 - d2) * (T)4;
    t[3] = p + q * (T)2;
    t[4] = p - q * (T)2;
    t[5] = d1 * (T)4 - d3 * (T)5 + d5;
}

/* F(4x4)'s B^T d B, as FN(wino_input) with xi = 6 * row + column: the columns' transforms go
 * through a 6 x 6 block of vectors on the stack (36 vectors in registers at once would spill
 * anyway). */
ALWAYS_INLINE void FN(wino_input4)(const FN(wino_src_t) *s, int y0, int x0, T *v,
                                   ptrdiff_t vstride)
{
    for (int c0 = 0; c0 < s->C; c0 += VLEN) {
        const int nl = s->C - c0 < VLEN ? s->C - c0 : VLEN;
        V t[6][6], o[6];
        for (int e = 0; e < 6; e++) {
            const int x = x0 + e;
            V col[6];
            FN(wino_bt4)(FN(wino_load)(s, y0, x, c0, nl), FN(wino_load)(s, y0 + 1, x, c0, nl),
                         FN(wino_load)(s, y0 + 2, x, c0, nl), FN(wino_load)(s, y0 + 3, x, c0, nl),
                         FN(wino_load)(s, y0 + 4, x, c0, nl), FN(wino_load)(s, y0 + 5, x, c0, nl),
                         col);
            for (int a = 0; a < 6; a++) t[a][e] = col[a];
        }
        T *vc = v + c0;
        for (int a = 0; a < 6; a++) {
            FN(wino_bt4)(t[a][0], t[a][1], t[a][2], t[a][3], t[a][4], t[a][5], o);
            for (int e = 0; e < 6; e++) STOREV(vc + (a * 6 + e) * vstride, o[e]);
        }
    }
}

/* A^T m of one column of 6 values (F(4x4)). */
ALWAYS_INLINE void FN(wino_at4)(V m0, V m1, V m2, V m3, V m4, V m5, V *o)
{
    const V s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
    o[0] = m0 + s12 + s34;
    o[1] = d12 + d34 * (T)2;
    o[2] = s12 + s34 * (T)4;
    o[3] = d12 + d34 * (T)8 + m5;
}

/* F(4x4)'s A^T m A plus the bias, optional ReLU, as FN(wino_output). */
ALWAYS_INLINE void FN(wino_output4)(const T *m, ptrdiff_t mstride, const T *bias, int relu,
                                    int K, T *dst, ptrdiff_t rs, ptrdiff_t cs, int rows, int cols)
{
    for (int k0 = 0; k0 < K; k0 += VLEN) {
        const int nl = K - k0 < VLEN ? K - k0 : VLEN;
        const T *mk = m + k0;
        const V bv = LOADV(bias + k0);
        V s[4][6], o[4];
        for (int e = 0; e < 6; e++) {
            const T *p = mk + e * mstride;
            FN(wino_at4)(LOADV(p), LOADV(p + 6 * mstride), LOADV(p + 12 * mstride),
                         LOADV(p + 18 * mstride), LOADV(p + 24 * mstride),
                         LOADV(p + 30 * mstride), o);
            for (int a = 0; a < 4; a++) s[a][e] = o[a];
        }
        for (int a = 0; a < rows; a++) {
            FN(wino_at4)(s[a][0], s[a][1], s[a][2], s[a][3], s[a][4], s[a][5], o);
            for (int e = 0; e < cols; e++) {
                const V r = o[e] + bv;
                FN(store_n)(dst + a * rs + e * cs + k0, relu ? FN(relu)(r) : r, nl);
            }
        }
    }
}

/* A^T m A of one tile plus the bias, optional ReLU, for its K computed channels: m holds
 * product xi at m[xi * mstride + channel]; output pixel (a, e) goes to dst + a * rs + e * cs,
 * for the first `rows` rows and `cols` columns (fewer past the output's last ones). */
ALWAYS_INLINE void FN(wino_output)(const T *m, ptrdiff_t mstride, const T *bias, int relu, int K,
                                   T *dst, ptrdiff_t rs, ptrdiff_t cs, int rows, int cols)
{
    for (int k0 = 0; k0 < K; k0 += VLEN) {
        const int nl = K - k0 < VLEN ? K - k0 : VLEN;
        const T *mk = m + k0;
        V s[2][4], o[2][2], bv = LOADV(bias + k0);
        for (int e = 0; e < 4; e++) {
            V m0 = LOADV(mk + (0 * 4 + e) * mstride), m1 = LOADV(mk + (1 * 4 + e) * mstride);
            V m2 = LOADV(mk + (2 * 4 + e) * mstride), m3 = LOADV(mk + (3 * 4 + e) * mstride);
            s[0][e] = m0 + m1 + m2;
            s[1][e] = m1 - m2 - m3;
        }
        for (int a = 0; a < 2; a++) {
            o[a][0] = s[a][0] + s[a][1] + s[a][2] + bv;
            o[a][1] = s[a][1] - s[a][2] - s[a][3] + bv;
        }
        for (int a = 0; a < rows; a++)
            for (int e = 0; e < cols; e++) {
                V r = relu ? FN(relu)(o[a][e]) : o[a][e];
                FN(store_n)(dst + a * rs + e * cs + k0, r, nl);
            }
    }
}

/* B^T d B of tiles [tb, tb + nb) into v[xi * vstride + b * cpad + channel]; a tile that crosses
 * the border reads the padding's zeros (copying it into a patch first took 6% of a forward
 * pass of 13x13 images by F(4x4), whose tiles mostly cross it). */
static void FN(wino_inputs)(const cyc_wino_t *qp, const T *src, ptrdiff_t tb, int nb, T *v,
                            ptrdiff_t vstride)
{
    const cyc_wino_t q = *qp;
    const int cpad = cyc_round_up(q.c, VLEN);
    const ptrdiff_t per_image = (ptrdiff_t)q.ty * q.tx, src_rs = (ptrdiff_t)q.w * q.c;
    FN(wino_src_t) s = {src, q.h, q.w, q.c, 0, src_rs};
    for (int b = 0; b < nb; b++) {
        const ptrdiff_t t = tb + b, n = t / per_image, r = t - n * per_image;
        const int y0 = (int)(r / q.tx) * q.m - q.pad_top, x0 = (int)(r % q.tx) * q.m - q.pad_left;
        T *vb = v + (ptrdiff_t)b * cpad;
        s.img = src + n * q.h * src_rs;
        s.edge = y0 < 0 || x0 < 0 || y0 + q.a > q.h || x0 + q.a > q.w;
        /* the same code with and without the checks: the compiler drops them from the first */
        if (q.m == 4) {
            if (s.edge) FN(wino_input4)(&s, y0, x0, vb, vstride);
            else { s.edge = 0; FN(wino_input4)(&s, y0, x0, vb, vstride); }
        } else {
            if (s.edge) FN(wino_input)(&s, y0, x0, vb, vstride);
            else { s.edge = 0; FN(wino_input)(&s, y0, x0, vb, vstride); }
        }
    }
}

void FN(cyc_conv_winograd)(const cyc_geom_t *g, int mode, const T *src, const T *packed,
                           int relu, T *dst, ptrdiff_t t0, ptrdiff_t t1, void *scratch)
{
    const cyc_wino_t q = cyc_wino(g, mode);
    const int C = q.c, K = q.k, cpad = cyc_round_up(C, VLEN), opad = cyc_round_up(K, VLEN);
    const ptrdiff_t per_image = (ptrdiff_t)q.ty * q.tx;
    const int BLOCK = cyc_wino_block(&q, (int)sizeof(T), 0);
    /* scratch: ptrs [MR_MAX] | outs [MR_MAX] | live | v [nx][BLOCK][cpad] | m [nx][BLOCK][opad] */
    const T **ptrs = (const T **)scratch;
    T **outs = (T **)(ptrs + CYC_MR_MAX);
    unsigned char *live = (unsigned char *)(outs + CYC_MR_MAX);
    T *v = (T *)cyc_align64(live + 1);
    T *m = v + (ptrdiff_t)q.nx * BLOCK * cpad;
    const ptrdiff_t vstride = (ptrdiff_t)BLOCK * cpad;
    const ptrdiff_t mstride = (ptrdiff_t)BLOCK * opad;
    const T *bias = packed + (ptrdiff_t)q.nx * C * opad;
    const ptrdiff_t dst_rs = (ptrdiff_t)q.ow * K;
    live[0] = 1;
    for (ptrdiff_t tb = t0; tb < t1; tb += BLOCK) {
        const int nb = (int)(t1 - tb < BLOCK ? t1 - tb : BLOCK);
        FN(wino_inputs)(&q, src, tb, nb, v, vstride);
        for (int xi = 0; xi < q.nx; xi++)
            for (int b0 = 0; b0 < nb; b0 += MR) {
                const int mr = nb - b0 < MR ? nb - b0 : MR;
                for (int p = 0; p < mr; p++) {
                    ptrs[p] = v + xi * vstride + (ptrdiff_t)(b0 + p) * cpad;
                    outs[p] = m + xi * mstride + (ptrdiff_t)(b0 + p) * opad;
                }
                FN(tile_blocks)(mr, ptrs, 0, (ptrdiff_t)cpad * (ptrdiff_t)sizeof(T), 1, C, live,
                                packed + (ptrdiff_t)xi * C * opad, opad, NULL, 0,
                                (T *const *)outs, 0);
            }
        for (int b = 0; b < nb; b++) {
            const ptrdiff_t t = tb + b, n = t / per_image, r = t - n * per_image;
            const int y0 = (int)(r / q.tx) * q.m, x0 = (int)(r % q.tx) * q.m;
            T *img = dst + (ptrdiff_t)n * q.oh * dst_rs;
            const T *mb = m + (ptrdiff_t)b * opad;
            T *out = img + y0 * dst_rs + (ptrdiff_t)x0 * K;
            const int rows = q.oh - y0 < q.m ? q.oh - y0 : q.m;
            const int cols = q.ow - x0 < q.m ? q.ow - x0 : q.m;
            /* tiles past the last row or column store the pixels inside; the others the same
             * code with the bounds known */
            if (q.m == 4) {
                if (rows < 4 || cols < 4)
                    FN(wino_output4)(mb, mstride, bias, relu, K, out, dst_rs, K, rows, cols);
                else
                    FN(wino_output4)(mb, mstride, bias, relu, K, out, dst_rs, K, 4, 4);
            } else {
                if (rows < 2 || cols < 2)
                    FN(wino_output)(mb, mstride, bias, relu, K, out, dst_rs, K, rows, cols);
                else
                    FN(wino_output)(mb, mstride, bias, relu, K, out, dst_rs, K, 2, 2);
            }
        }
    }
}

/* Weight gradient: dw[k][co] += sum over pixels of x[pixel, k] * dy[pixel][co], k = (i, j, ci).
 * A chunk of output pixels at a time: dy is copied into panels of a tile's width (padded rows
 * for whole-window tiles; see FN(dy_to_panels)) and summed into db, every pixel's segments
 * are found as in the forward pass, then for each segment a register tile of MR reduction
 * rows x NBLK*VLEN output channels runs over the chunk's pixels that read it. */
/* Vectors of output channels per weight-gradient tile: up to 4 on AVX-512 (64 floats), so that
 * each x value broadcast meets a whole row of dy; rows per tile then shrink so that rows x vectors
 * stays within the 2 * MR accumulators the registers hold.  With 16 registers, 2: 4 dy vectors
 * would leave rows for 3 pixels and a spill (AVX2 weight gradients 20-30% slower). */
#if MR >= 12
#define CYC_DW_NBLK 4
#else
#define CYC_DW_NBLK 2
#endif
/* Row tiles' x values are packed (FN(pack_tile_x)) where a chunk's x lines crowd L1 (see
 * cyc_dw_x_crowds_l1) and the output channels make at least this many vectors, each block of
 * which reads the packed values again.  In-process A/B, AVX2, 2 threads, float32 weight
 * gradients: 1x1 256 -> 512 over 14x14 at batch 8 0.82-0.90 of the time, 512 -> 2048 over 7x7
 * 0.88, 3x3x512 -> 512 over 7x7 0.81-0.86, 3x3x128 -> 256 over 14x14 0.94-0.98, a 9216 -> 128
 * Dense layer at batch 32 0.93; packed where the lines fit (64 -> 128, a row of x 256 bytes),
 * 1.10, and for 64 output channels, 1.09. */
#define CYC_DW_PACK_VECTORS 16
#define CYC_DW_PACK_SLACK (CYC_DW_PACK_SLACK_BYTES / (int)sizeof(T))

/* Row p of the tile reads xrows[t][xoff + xo[p]] for pixel t: xo is 0, 1, 2, ... for a segment
 * or a gathered window, and the window's layout in the image for a window read in place. */
ALWAYS_INLINE void FN(dw_tile)(const int mr, const int nv, int cnt, const T *const *xrows,
                               ptrdiff_t xoff, const ptrdiff_t *restrict xo, const int *dj,
                               const T *dyp, int dstride, T *acc_out, ptrdiff_t astride)
{
    V acc[2 * MR];
    ptrdiff_t o[MR];
    for (int p = 0; p < mr; p++) o[p] = xoff + xo[p];
    /* the sums start from acc_out's: zeroed instead, GCC cleared the whole array with a rep
     * stosq per tile (a tenth of the seed conv3's weight gradient in perf) and added acc_out at
     * the end (in-process A/B, 2 threads: conv3 0.94, a 576 -> 64 Dense layer's 0.90) */
    for (int p = 0; p < mr; p++)
        for (int b = 0; b < nv; b++) acc[p * nv + b] = LOADV(acc_out + p * astride + b * VLEN);
    for (int t = 0; t < cnt; t++) {
        const T *xr = xrows[t];
        const T *dr = dyp + (ptrdiff_t)dj[t] * dstride;
        V dv[CYC_DW_NBLK];
        for (int b = 0; b < nv; b++) dv[b] = LOADV(dr + b * VLEN);
        for (int p = 0; p < mr; p++) {
            T x = xr[o[p]];
            for (int b = 0; b < nv; b++) acc[p * nv + b] += x * dv[b];
        }
    }
    for (int p = 0; p < mr; p++)
        for (int b = 0; b < nv; b++) STOREV(acc_out + p * astride + b * VLEN, acc[p * nv + b]);
}

/* Tiles of every shape that occurs get specialised code: segments are split into nearly equal
 * tiles, so all heights occur (a segment of 9 values is one tile of 9, one of 96 is 16 of 6). */
#define CYC_DW_CASE(NV, M)                                                                     \
    case (NV) * 64 + (M):                                                                      \
        FN(dw_tile)(M, NV, cnt, xrows, xoff, xo, dj, dyp, dstride, acc_out, astride);          \
        return;
#define CYC_DW_CASES_UP_TO_2(NV) CYC_DW_CASE(NV, 1) CYC_DW_CASE(NV, 2)
#define CYC_DW_CASES_UP_TO_6(NV)                                                               \
    CYC_DW_CASES_UP_TO_2(NV) CYC_DW_CASE(NV, 3) CYC_DW_CASE(NV, 4) CYC_DW_CASE(NV, 5)          \
    CYC_DW_CASE(NV, 6)
#define CYC_DW_CASES_UP_TO_12(NV)                                                              \
    CYC_DW_CASES_UP_TO_6(NV) CYC_DW_CASE(NV, 7) CYC_DW_CASE(NV, 8) CYC_DW_CASE(NV, 9)          \
    CYC_DW_CASE(NV, 10) CYC_DW_CASE(NV, 11) CYC_DW_CASE(NV, 12)

static void FN(dw_tile_any)(int mr, int nv, int cnt, const T *const *xrows, ptrdiff_t xoff,
                            const ptrdiff_t *xo, const int *dj, const T *dyp, int dstride,
                            T *acc_out, ptrdiff_t astride)
{
    switch (nv * 64 + mr) {
#if MR >= 12
        CYC_DW_CASES_UP_TO_6(4)
        CYC_DW_CASES_UP_TO_12(2)
        CYC_DW_CASES_UP_TO_12(1)
#else   /* MR 6, tiles of at most 2 vectors */
        CYC_DW_CASES_UP_TO_6(2)
        CYC_DW_CASES_UP_TO_6(1)
#endif
    default: break;
    }
    FN(dw_tile)(mr, nv, cnt, xrows, xoff, xo, dj, dyp, dstride, acc_out, astride);
}
#undef CYC_DW_CASE
#undef CYC_DW_CASES_UP_TO_2
#undef CYC_DW_CASES_UP_TO_6
#undef CYC_DW_CASES_UP_TO_12

/* The widest block of output-channel vectors at co0 (at most CYC_DW_NBLK), and the most rows a
 * tile of that width may have. */
static inline int FN(dw_block)(int opad, int co0, int *mrmax)
{
    int nv = (opad - co0) / VLEN;
    if (nv > CYC_DW_NBLK) nv = CYC_DW_NBLK;
    *mrmax = 2 * MR / nv < MR ? 2 * MR / nv : MR;
    return nv;
}

/* VLEN bytes as a vector (a max-pool's window cells). */
typedef uint8_t FN(c8) __attribute__((vector_size(VLEN)));
typedef uint8_t FN(uc8) __attribute__((vector_size(VLEN), aligned(1), may_alias));

/* VLEN window cells widened to the lanes of IV.  GCC 12 widens a byte vector four or eight times
 * by assembling it from single bytes (16 loads and 16 inserts per vector: the pool's backward
 * pass was slower than its forward), so the x86 paths say which instruction they mean. */
ALWAYS_INLINE IV FN(widen_cells)(const uint8_t *ic)
{
#if CYC_X86_512 && defined(CYC_T_IS_DOUBLE)
    return (IV)_mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)ic));
#elif CYC_X86_512
    return (IV)_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)ic));
#elif CYC_X86_256 && defined(CYC_T_IS_DOUBLE)
    int32_t four;
    memcpy(&four, ic, sizeof(four));
    return (IV)_mm256_cvtepu8_epi64(_mm_cvtsi32_si128(four));
#elif CYC_X86_256
    return (IV)_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)ic));
#else
    return __builtin_convertvector(*(const FN(uc8) *)ic, IV);
#endif
}

/* The converse: VLEN cell numbers (each in [0, 255]) stored as bytes.  GCC compiles the
 * generic conversion to one extract, shift and or per lane on AVX2: the seed's pool1 forward
 * spent most of its time there (perf). */
ALWAYS_INLINE void FN(narrow_cells)(uint8_t *ic, IV v)
{
#if CYC_X86_512 && defined(CYC_T_IS_DOUBLE)
    _mm_storel_epi64((__m128i *)ic, _mm512_cvtepi64_epi8((__m512i)v));
#elif CYC_X86_512
    _mm_storeu_si128((__m128i *)ic, _mm512_cvtepi32_epi8((__m512i)v));
#elif CYC_X86_256 && defined(CYC_T_IS_DOUBLE)
    /* byte 0 of each 64-bit lane to bytes 0 and 1 of its 128-bit half */
    const __m256i pick = _mm256_setr_epi8(0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, 0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1);
    const __m256i p = _mm256_shuffle_epi8((__m256i)v, pick);
    const uint32_t four = (uint32_t)_mm256_extract_epi16(p, 0) |
                          (uint32_t)_mm256_extract_epi16(p, 8) << 16;
    memcpy(ic, &four, sizeof(four));
#elif CYC_X86_256
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128((__m256i)v),
                                       _mm256_extracti128_si256((__m256i)v, 1));
    _mm_storel_epi64((__m128i *)ic, _mm_packus_epi16(w, w));
#else
    *(FN(uc8) *)ic = __builtin_convertvector(v, FN(c8));
#endif
}

/* Channels [o0, o0 + og) of the gradient at output pixel (n, y, x), rebuilt from the max-pool
 * after the convolution (see cyc_unpool_t): what max_pool_bwd would have written there. */
ALWAYS_INLINE void FN(unpool_row)(const cyc_unpool_t *up, int cout, int n, int y, int x, int o0,
                                  int og, T *restrict dst)
{
    const int wy = y / up->sh, wx = x / up->sw, iy = y - wy * up->sh, ix = x - wx * up->sw;
    if (wy >= up->oh || wx >= up->ow || iy >= up->kh || ix >= up->kw) {
        for (int l = 0; l < og; l++) dst[l] = 0;
        return;
    }
    const ptrdiff_t o = (((ptrdiff_t)n * up->oh + wy) * up->ow + wx) * cout + o0;
    const T *restrict d = (const T *)up->dy + o;
    const uint8_t *restrict c = up->cell + o;
    const uint8_t k = (uint8_t)(iy * up->kw + ix);
    /* whole vectors: GCC's own (masked 8-lane steps, og being known only at run time) took 30%
     * of a first layer's weight gradient through its pool; these made it 0.88-0.90 of the time */
    int l = 0;
    for (; l + VLEN <= og; l += VLEN) {
        IV m = FN(widen_cells)(c + l) == (CYC_IT)k;
        STOREV(dst + l, (V)((IV)LOADV(d + l) & m));
    }
    for (; l < og; l++) dst[l] = c[l] == k ? d[l] : (T)0;
}

/* db[l] += sum over j < np of r[j * stride + l] for nv vectors, the last nl wide, and l < n_out. */
ALWAYS_INLINE void FN(sum_block)(const int nv, const int nl, const T *r, int np,
                                 ptrdiff_t stride, T *db, int n_out)
{
    V acc[4];
    for (int b = 0; b < nv; b++) acc[b] = (V){0};
    for (int j = 0; j < np; j++)
        for (int b = 0; b < nv; b++)
            acc[b] += FN(load_n)(r + j * stride + b * VLEN, b == nv - 1 ? nl : VLEN);
    for (int b = 0; b < nv; b++)
        for (int l = 0; l < (b == nv - 1 ? nl : VLEN) && b * VLEN + l < n_out; l++)
            db[b * VLEN + l] += acc[b][l];
}

/* db[grp * og + l] += sum over j < np of rows[grp][j][l] (rows [groups][P][opad], lanes past og
 * zero; opad need not be whole vectors), in vector registers: a sum through memory per pixel
 * waits for its own last store (a fifth of a first layer's weight gradient). */
static void FN(sum_rows)(const T *rows, int groups, int P, int np, int og, int opad, T *db)
{
    for (int grp = 0; grp < groups; grp++) {
        const T *rg = rows + (ptrdiff_t)grp * P * opad;
#define CYC_BLOCK(nv, nl, c)                                                                   \
    FN(sum_block)(nv, nl, rg + (c), np, opad, db + grp * og + (c), og - (c))
        CYC_CHANNEL_BLOCKS(0, opad, CYC_BLOCK);
#undef CYC_BLOCK
    }
}

/* A chunk of dy for the weight gradient's tiles in panels, one per block of output channels
 * that a tile reads (CYC_DW_NBLK vectors, the last block what is left of opad): block b0's
 * panel starts b0 * P values in and holds each pixel's wb values in turn, so that a tile reads
 * its P pixels' dy as one run of wb * P values.  In rows opad apart (the earlier layout) a
 * tile's reads were a line per pixel, 2 KB apart for 512 output channels: a page per two
 * pixels, and few of L1's sets.  In-process A/B on AVX2, 2 threads, float32: the 1x1
 * 7x7x512 -> 2048 weight gradient at batch 8 0.72-0.75 of the time, 14x14x256 -> 512
 * 0.84-0.88, a Dense 1600 -> 512 at batch 32 0.92-0.94, 3x3x512 -> 512 over 7x7 0.94-1.0;
 * 128 output channels or fewer 0.98-1.02. */
ALWAYS_INLINE int FN(panel_width)(int opad, int b0)
{
    return opad - b0 < CYC_DW_NBLK * VLEN ? opad - b0 : CYC_DW_NBLK * VLEN;
}

/* Row j of a chunk of dy (one group's og values, zeros after them to opad) into its panels at
 * base. */
static void FN(dy_to_panels)(const T *row, int og, T *base, int P, int opad, int j)
{
    for (int b0 = 0; b0 < opad; b0 += CYC_DW_NBLK * VLEN) {
        const int wb = FN(panel_width)(opad, b0);
        T *d = base + (ptrdiff_t)b0 * P + (ptrdiff_t)j * wb;
        /* whole vectors: memcpy and memset would be two library calls per 64 bytes */
        for (int l = 0; l < wb; l += VLEN) {
            const int left = og - b0 - l;
            STOREV(d + l, left >= VLEN ? (V)LOADV(row + b0 + l)
                          : left > 0   ? FN(load_part)(row + b0 + l, left)
                                       : (V){0});
        }
    }
}

/* FN(sum_rows) over dy in panels: the same sums, in the same order per channel. */
static void FN(sum_panels)(const T *dyp, int groups, int P, int np, int og, int opad, T *db)
{
    for (int grp = 0; grp < groups; grp++)
        for (int b0 = 0; b0 < opad; b0 += CYC_DW_NBLK * VLEN) {
            const int wb = FN(panel_width)(opad, b0);
            const T *rg = dyp + (ptrdiff_t)grp * P * opad + (ptrdiff_t)b0 * P;
#define CYC_BLOCK(nv, nl, c)                                                                   \
    FN(sum_block)(nv, nl, rg + (c), np, wb, db + grp * og + b0 + (c), og - b0 - (c))
            CYC_CHANNEL_BLOCKS(0, wb, CYC_BLOCK);
#undef CYC_BLOCK
        }
}

/* A row tile's x values, rows[j][xoff .. xoff + mr) for j < cnt, copied pixel after pixel into
 * xpk (mr apart, CYC_DW_PACK_SLACK values past the last), xpr[j] pointing at pixel j's (room:
 * the values the segment holds from xoff on, mr or more): read
 * in place, a tile's x lines lie a row of x apart, which for 256 or 512 channels is 1 or 2 KB,
 * and fall into 4 or 2 of L1's 64 sets, so that a chunk's 128 pixels came from L2 for every
 * block of output channels.  In whole vectors where the segment holds them (the stores
 * overlap the next pixel's, written after). */
static void FN(pack_tile_x)(const T *const *rows, int cnt, ptrdiff_t xoff, int mr, int room,
                            T *restrict xpk, const T **xpr)
{
    const int nvx = (mr + VLEN - 1) / VLEN, whole = nvx * VLEN <= room;
    for (int j = 0; j < cnt; j++) {
        const T *src = rows[j] + xoff;
        T *dst = xpk + (ptrdiff_t)j * mr;
        if (whole)
            for (int b = 0; b < nvx; b++) STOREV(dst + b * VLEN, (V)LOADV(src + b * VLEN));
        else
            for (int p = 0; p < mr; p++) dst[p] = src[p];
        xpr[j] = dst;
    }
}

void FN(cyc_conv_bwd_filter)(const cyc_geom_t *g, const T *x, const T *dy, const T *relu_y,
                             const cyc_unpool_t *pool, T *dw_acc, T *db_acc, ptrdiff_t m0,
                             ptrdiff_t m1, ptrdiff_t k0, ptrdiff_t k1, void *scratch)
{
    const cyc_plan_t r = cyc_plan(g, 0);
    const int og = g->cout / g->groups;
    const int nseg = r.nseg, K = r.K, len = r.len;
    /* the accumulators' layout, which dw_finish in dispatch.c reads */
    const int opad = cyc_dw_opad(g, (int)sizeof(T));
    const int P = cyc_dw_chunk(g, (int)sizeof(T));
    /* scratch: dbl [cout] | dyp [groups][P][opad] | drow [opad] | xpk [P * CYC_MR_MAX + slack]
     *          | ptrs [nseg][P] | rows [P] | xpr [P] | dj [P] | live [nseg] | taps |
     *          gbuf [P][K] (where cyc_dw_gathers) */
    T *dbl = (T *)scratch;
    T *dyp = (T *)cyc_align64(dbl + g->cout);
    T *drow = dyp + (ptrdiff_t)g->groups * P * opad;
    T *xpk = drow + opad;
    const T **ptrs = (const T **)cyc_align64(xpk + P * CYC_MR_MAX + CYC_DW_PACK_SLACK);
    const T **rows = ptrs + (ptrdiff_t)nseg * P;
    const T **xpr = rows + P;
    int *dj = (int *)(xpr + P);
    unsigned char *live = (unsigned char *)(dj + P);
    FN(taps_t) taps;
    unsigned char *end = FN(taps_init)(&taps, nseg, live + nseg);
    T *gbuf = (T *)cyc_align64(end);
    /* dw_acc layout: [k][groups][opad] */
    const ptrdiff_t astride = (ptrdiff_t)g->groups * opad;
    /* the zero row that padded segments point at: any pointer that is not into x or gbuf */
    static const T no_data[1] = {0};
    /* A window of at most MR values (a first layer's 3x3x1) is reduced by a single tile instead
     * of one short segment at a time: read in place (offsets in_off from its first value) where
     * its rows lie inside the image, else copied whole into one row of gbuf (offsets seq).
     * rows and dj list the first kind from the front, the second from the back. */
    const int gather_all = g->groups == 1 && K <= MR && k0 == 0 && k1 >= K;
    ptrdiff_t in_off[CYC_MR_MAX], seq[CYC_MR_MAX];
    for (int p = 0; p < CYC_MR_MAX; p++) {
        seq[p] = p;
        in_off[p] = gather_all && p < K
                        ? (ptrdiff_t)(p / len) * g->dh * r.src_w * r.src_c + p % len
                        : 0;
    }
    FN(class_taps)(g, &r, 0, 0, &taps);
    const int pack_x = opad >= CYC_DW_PACK_VECTORS * VLEN &&
                       cyc_dw_x_crowds_l1((ptrdiff_t)g->sw * g->c * (ptrdiff_t)sizeof(T), P);
    /* db goes through a local sum: threads writing neighbouring accumulators per pixel would
     * share cache lines */
    for (int co = 0; co < g->cout; co++) dbl[co] = 0;

    FN(cursor_t) cur = FN(cursor_at)(m0, g->oh, g->ow, 1, 1, 0, 0);
    for (ptrdiff_t mc = m0; mc < m1; mc += P) {
        const int np = (int)(m1 - mc < P ? m1 - mc : P);
        int n_in = 0, n_gathered = 0;
        for (int j = 0; j < np; j++) {
            const T *d = pool ? NULL : dy + (mc + j) * g->cout;
            const T *ry = relu_y ? relu_y + (mc + j) * g->cout : NULL;
            for (int grp = 0; grp < g->groups; grp++) {
                /* rows of dy in place for the whole-window tiles (blocks of any width), else a
                 * row at a time into the panels */
                T *dst = gather_all ? dyp + ((ptrdiff_t)grp * P + j) * opad : drow;
                const ptrdiff_t o0 = (ptrdiff_t)grp * og;
                if (!gather_all && !pool && !ry) {
                    /* straight from dy */
                    FN(dy_to_panels)(d + o0, og, dyp + (ptrdiff_t)grp * P * opad, P, opad, j);
                    continue;
                }
                if (pool) {
                    FN(unpool_row)(pool, g->cout, cur.n, cur.y, cur.x, (int)o0, og, dst);
                    if (ry)
                        for (int l = 0; l < og; l++) dst[l] = ry[o0 + l] > 0 ? dst[l] : (T)0;
                } else if (ry) {
                    /* the fused ReLU's gradient, applied while dy is copied anyway */
                    for (int l = 0; l < og; l++) dst[l] = ry[o0 + l] > 0 ? d[o0 + l] : (T)0;
                } else {
                    for (int l = 0; l < og; l++) dst[l] = d[o0 + l];
                }
                for (int l = og; l < opad; l++) dst[l] = 0;
                if (!gather_all)
                    FN(dy_to_panels)(drow, og, dyp + (ptrdiff_t)grp * P * opad, P, opad, j);
            }
            int qy, qx;
            CYC_ORIGIN(g, r, cur, qy, qx);
            if (FN(inner_rows)(g, &r, x, cur.n, qy, qx, ptrs + j, P)) {
                if (gather_all) {
                    rows[n_in] = ptrs[j];
                    dj[n_in++] = j;
                    FN(cursor_next)(&cur);
                    continue;
                }
            } else {
                FN(pixel_segments)(g, &r, &taps, x, no_data, cur.n, qy, qx, ptrs + j, P,
                                   gbuf + (ptrdiff_t)j * K, live);
            }
            if (gather_all) {
                T *row = gbuf + (ptrdiff_t)j * K;
                /* a few values per segment: a library call each would cost more than the copy;
                 * src may be this very row (pixel_segments gathers border pixels into it) */
                for (int s = 0; s < nseg; s++) {
                    const T *src = ptrs[(ptrdiff_t)s * P + j];
                    T *dst = row + s * len;
                    if (src == no_data) {
                        for (int l = 0; l < len; l++) dst[l] = 0;
                    } else if (src != dst) {
                        for (int l = 0; l < len; l++) dst[l] = src[l];
                    }
                }
                n_gathered++;
                rows[P - n_gathered] = row;
                dj[P - n_gathered] = j;
            }
            FN(cursor_next)(&cur);
        }
        if (db_acc && gather_all) FN(sum_rows)(dyp, g->groups, P, np, og, opad, dbl);
        else if (db_acc) FN(sum_panels)(dyp, g->groups, P, np, og, opad, dbl);
        if (gather_all) {
            for (int co0 = 0, nv, mrmax; co0 < opad; co0 += nv * VLEN) {
                nv = FN(dw_block)(opad, co0, &mrmax);
                /* a whole window (K <= MR rows) per tile: narrower blocks if need be */
                while (nv > 1 && K * nv > 2 * MR) nv--;
                if (n_in)
                    FN(dw_tile_any)(K, nv, n_in, rows, 0, in_off, dj, dyp + co0, opad,
                                    dw_acc + co0, astride);
                if (n_gathered)
                    FN(dw_tile_any)(K, nv, n_gathered, rows + P - n_gathered, 0, seq,
                                    dj + P - n_gathered, dyp + co0, opad, dw_acc + co0, astride);
            }
            continue;
        }
        for (int s = 0; s < nseg; s++) {
            /* this segment's rows [l_lo, l_hi) within [k0, k1) */
            const int l_lo = k0 > (ptrdiff_t)s * len ? (int)(k0 - (ptrdiff_t)s * len) : 0;
            const int l_hi = k1 < (ptrdiff_t)(s + 1) * len ? (int)(k1 - (ptrdiff_t)s * len) : len;
            if (l_lo >= l_hi) continue;
            int cnt = 0;
            for (int j = 0; j < np; j++) {
                const T *p = ptrs[(ptrdiff_t)s * P + j];
                if (p == no_data) continue;
                rows[cnt] = p;
                dj[cnt++] = j;
            }
            if (!cnt) continue;
            /* Each tile of rows meets every block of channels while its x values are in L1: with
             * the blocks outside, a Dense layer's x (its batch's rows of 9216 values) came back
             * from L3 once per block of 16 channels.  Tiles as tall as the widest block allows
             * (narrower ones would allow taller). */
            int mrmax;
            FN(dw_block)(opad, 0, &mrmax);
            const int span = l_hi - l_lo;
            const int ntile = (span + mrmax - 1) / mrmax;
            for (int grp = 0; grp < g->groups; grp++) {
                const ptrdiff_t off = r.row_mode ? 0 : (ptrdiff_t)grp * r.src_cg;
                for (int t = 0, l0 = l_lo; t < ntile; t++) {
                    const int mr = span / ntile + (t < span % ntile);
                    const T *const *xr = rows;
                    ptrdiff_t xoff = off + l0;
                    if (pack_x) {
                        FN(pack_tile_x)(rows, cnt, xoff, mr, l_hi - l0, xpk, xpr);
                        xr = xpr;
                        xoff = 0;
                    }
                    for (int co0 = 0, nv, unused; co0 < opad; co0 += nv * VLEN) {
                        nv = FN(dw_block)(opad, co0, &unused);
                        FN(dw_tile_any)(mr, nv, cnt, xr, xoff, seq, dj,
                                        dyp + (ptrdiff_t)grp * P * opad + (ptrdiff_t)co0 * P,
                                        FN(panel_width)(opad, co0),
                                        dw_acc + ((ptrdiff_t)s * len + l0) * astride
                                            + (ptrdiff_t)grp * opad + co0,
                                        astride);
                    }
                    l0 += mr;
                }
            }
        }
    }
    if (db_acc)
        for (int co = 0; co < g->cout; co++) db_acc[co] += dbl[co];
}

/* Cell k's share of a window's gradient d (NV vectors of channels): the lanes whose record
 * names cell k, into dk, and added to the bias gradient's sums dbv. */
ALWAYS_INLINE void FN(cell_grad)(const int NV, const V *d, const IV *cells, int k, V *dk, V *dbv)
{
    for (int b = 0; b < NV; b++) {
        dk[b] = (V)((IV)d[b] & (cells[b] == (CYC_IT)k));
        dbv[b] += dk[b];
    }
}

/* The weight gradient through a max-pool by its windows (see cyc_conv_dw_by_windows): windows
 * [w0, w1) of the flattened (n, wy, wx), into one thread's accumulators as
 * cyc_conv_bwd_filter's.  Each window's gradient reaches one pixel per channel, the recorded
 * cell, so per window and vector of channels the pool's gradient is masked once per cell and
 * multiplied into the K weights' sums, which stay in registers over the windows: per pixel, the
 * pixel-by-pixel kernel rebuilt the whole gradient row and its pointers (most of a first
 * layer's weight gradient through its pool).  NK, a compile-time multiple of 3 from K up,
 * unrolls the sums; those past K read the pixel's first value and are never stored. */
ALWAYS_INLINE void FN(dw_windows)(const int NK, const int NV, const cyc_geom_t *g, const T *x,
                                  const cyc_unpool_t *up, T *dw_acc, T *db_acc, ptrdiff_t w0,
                                  ptrdiff_t w1, const ptrdiff_t *off, const int *qi,
                                  const int *qj, const int *qc)
{
    const int C = g->c, cout = g->cout, K = g->kh * g->kw * C;
    const int opad = cyc_dw_opad(g, (int)sizeof(T)), pk = up->kh * up->kw; /* groups 1 */
    const ptrdiff_t plane = (ptrdiff_t)up->oh * up->ow;
    const T *dy = (const T *)up->dy;
    /* the rows and columns past a window's first cell that its cells' reads reach, and where
     * cell k reads from relative to the first cell's reads */
    const int span_y = (up->kh - 1) * g->sh + (g->kh - 1) * g->dh;
    const int span_x = (up->kw - 1) * g->sw + (g->kw - 1) * g->dw;
    ptrdiff_t coff[CYC_POOL_NO_CELL];   /* a window has fewer cells than its "none" record */
    for (int ki = 0; ki < up->kh; ki++)
        for (int kj = 0; kj < up->kw; kj++)
            coff[ki * up->kw + kj] = ((ptrdiff_t)ki * g->sh * g->w + (ptrdiff_t)kj * g->sw) * C;
    /* NV vectors of channels at a time: each input value read serves them all */
    for (int co0 = 0; co0 < cout; co0 += NV * VLEN) {
        int nl[2];
        for (int b = 0; b < NV; b++) {
            const int left = cout - co0 - b * VLEN;
            nl[b] = left < 0 ? 0 : left < VLEN ? left : VLEN;
        }
        V acc[2][CYC_WIN_K], dbv[2];
        for (int b = 0; b < NV; b++) {
            dbv[b] = (V){0};
            for (int q = 0; q < NK; q++) acc[b][q] = (V){0};
        }
        ptrdiff_t n = w0 / plane;
        int wy = (int)(w0 % plane / up->ow), wx = (int)(w0 % up->ow);
        for (ptrdiff_t wi = w0; wi < w1; wi++) {
            V d[2];
            IV cells[2];
            for (int b = 0; b < NV; b++) {
                const ptrdiff_t o = wi * cout + co0 + b * VLEN;
                if (nl[b] == VLEN) {
                    d[b] = LOADV(dy + o);
                    cells[b] = FN(widen_cells)(up->cell + o);
                } else {
                    /* past the channels: no gradient, no cell */
                    uint8_t part[VLEN];
                    memset(part, CYC_POOL_NO_CELL, sizeof(part));
                    if (nl[b]) memcpy(part, up->cell + o, (size_t)nl[b]);
                    d[b] = nl[b] ? FN(load_n)(dy + o, nl[b]) : (V){0};
                    cells[b] = FN(widen_cells)(part);
                }
            }
            const T *xn = x + n * g->h * g->w * C;
            /* the input origin of the window's first cell; whether every cell's reads lie
             * inside the image (then cell k reads from that origin + coff[k]: the seed's
             * first layer took 0.79-0.86 of the time against each cell working out and
             * checking its own origin, in-process A/B on AVX2) */
            const int qy0 = wy * up->sh * g->sh - g->pad_top;
            const int qx0 = wx * up->sw * g->sw - g->pad_left;
            const int inside = qy0 >= 0 && qx0 >= 0 && qy0 + span_y < g->h && qx0 + span_x < g->w;
            const T *xw = inside ? xn + ((ptrdiff_t)qy0 * g->w + qx0) * C : xn;
            if (inside && pk == 4) {
                /* a 2x2 window inside the image: each weight's input offset read once for
                 * the four cells (cell by cell, the NK offsets did not stay in registers
                 * beside the cells' pointers: two loads per multiply-add).  Each sum still
                 * takes the cells in order, so the bits are the same. */
                V dk4[4][2];
                for (int k = 0; k < 4; k++) FN(cell_grad)(NV, d, cells, k, dk4[k], dbv);
                for (int q = 0; q < NK; q++) {
                    const T *xq = xw + off[q];
                    for (int k = 0; k < 4; k++) {
                        const T v = xq[coff[k]];
                        for (int b = 0; b < NV; b++) acc[b][q] += v * dk4[k][b];
                    }
                }
                goto next_window;
            }
            /* cell k = (ki, kj) of the window, stepped along */
            for (int k = 0, ki = 0, kj = 0; k < pk; k++) {
                V dk[2];
                FN(cell_grad)(NV, d, cells, k, dk, dbv);
                const int qy = qy0 + ki * g->sh, qx = qx0 + kj * g->sw;
                if (inside || (qy >= 0 && qy + (g->kh - 1) * g->dh < g->h && qx >= 0 &&
                               qx + (g->kw - 1) * g->dw < g->w)) {
                    const T *xp = inside ? xw + coff[k]
                                         : xn + ((ptrdiff_t)qy * g->w + qx) * C;
                    for (int q = 0; q < NK; q++) {
                        const T v = xp[off[q]];
                        for (int b = 0; b < NV; b++) acc[b][q] += v * dk[b];
                    }
                } else {
                    /* the pixel's window crosses the image's edge: zeros there (the sums
                     * past K read the pixel's own corner, in bounds too; a loop to the
                     * run-time K would keep the sums in memory instead of registers) */
                    for (int q = 0; q < NK; q++) {
                        const int iy = qy + qi[q], ix = qx + qj[q];
                        const T v = iy >= 0 && iy < g->h && ix >= 0 && ix < g->w
                                        ? xn[((ptrdiff_t)iy * g->w + ix) * C + qc[q]]
                                        : (T)0;
                        for (int b = 0; b < NV; b++) acc[b][q] += v * dk[b];
                    }
                }
                if (++kj == up->kw) {
                    kj = 0;
                    ki++;
                }
            }
        next_window:
            if (++wx == up->ow) {
                wx = 0;
                if (++wy == up->oh) {
                    wy = 0;
                    n++;
                }
            }
        }
        for (int b = 0; b < NV; b++) {
            for (int q = 0; q < NK; q++) {
                if (q >= K || !nl[b]) break;
                T *a = dw_acc + (ptrdiff_t)q * opad + co0 + b * VLEN;
                STOREV(a, LOADV(a) + acc[b][q]);
            }
            for (int l = 0; l < nl[b]; l++) db_acc[co0 + b * VLEN + l] += dbv[b][l];
        }
    }
}

void FN(cyc_conv_bwd_filter_by_windows)(const cyc_geom_t *g, const T *x, const cyc_unpool_t *up,
                                        T *dw_acc, T *db_acc, ptrdiff_t w0, ptrdiff_t w1)
{
    /* where weight q = (i, j, c) reads its pixel's input: from the window's first value, or by
     * row and column where the window crosses the image's edge */
    ptrdiff_t off[CYC_WIN_K] = {0};
    int qi[CYC_WIN_K] = {0}, qj[CYC_WIN_K] = {0}, qc[CYC_WIN_K] = {0};
    const int C = g->c, K = g->kh * g->kw * C;
    for (int i = 0, q = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++)
            for (int c = 0; c < C; c++, q++) {
                off[q] = ((ptrdiff_t)i * g->dh * g->w + (ptrdiff_t)j * g->dw) * C + c;
                qi[q] = i * g->dh;
                qj[q] = j * g->dw;
                qc[q] = c;
            }
    /* two vectors of channels at a time where their sums fit in registers (AVX-512's 32) */
#define CYC_WIN(NK, NV) FN(dw_windows)(NK, NV, g, x, up, dw_acc, db_acc, w0, w1, off, qi, qj, qc)
    const int two = MR >= 12 && g->cout > VLEN;
    switch ((K + 2) / 3) {
    case 1: if (two) CYC_WIN(3, 2); else CYC_WIN(3, 1); break;
    case 2: if (two) CYC_WIN(6, 2); else CYC_WIN(6, 1); break;
    case 3: if (two) CYC_WIN(9, 2); else CYC_WIN(9, 1); break;
    default: if (two) CYC_WIN(12, 2); else CYC_WIN(12, 1); break;
    }
#undef CYC_WIN
}

/* One vector of a Winograd tile's dy pixel at off (0 past the output, off < 0), masked by the
 * fused ReLU's output where relu_y is given. */
ALWAYS_INLINE V FN(wino_dy)(const T *dy, const T *relu_y, ptrdiff_t off, int k0, int nl)
{
    if (off < 0 || nl <= 0) return (V){0};
    const V d = FN(load_n)(dy + off + k0, nl);
    return relu_y ? (V)((IV)d & (IV)(FN(load_n)(relu_y + off + k0, nl) > (V){0})) : d;
}

/* A dy of one column of 4 values (F(4x4)): A's rows are A^T's columns. */
ALWAYS_INLINE void FN(wino_a4)(V d0, V d1, V d2, V d3, V *r)
{
    const V s02 = d0 + d2, s13 = d1 + d3, e02 = d0 + d2 * (T)4, e13 = d1 * (T)2 + d3 * (T)8;
    r[0] = d0;
    r[1] = s02 + s13;
    r[2] = s02 - s13;
    r[3] = e02 + e13;
    r[4] = e02 - e13;
    r[5] = d3;
}

/* dM = A dy A^T of one F(4x4) tile, channels [k0, k0 + nl), into w[xi * mstride]; dy's pixels
 * at off[a][e] (-1 past the output), masked by the fused ReLU's outputs where relu_y is given;
 * their sum added to dbl. */
static inline void FN(wino_dm4)(const T *dy, const T *relu_y, ptrdiff_t off[4][4],
                                int k0, int nl, T *dbl, T *w, ptrdiff_t mstride)
{
    V d[4][4], t[6][4], r[6], sum = (V){0};
    for (int a = 0; a < 4; a++)
        for (int e = 0; e < 4; e++) d[a][e] = FN(wino_dy)(dy, relu_y, off[a][e], k0, nl);
    for (int a = 0; a < 4; a++) sum += (d[a][0] + d[a][1]) + (d[a][2] + d[a][3]);
    STOREV(dbl + k0, LOADV(dbl + k0) + sum);
    for (int e = 0; e < 4; e++) {
        FN(wino_a4)(d[0][e], d[1][e], d[2][e], d[3][e], r);
        for (int a = 0; a < 6; a++) t[a][e] = r[a];
    }
    for (int a = 0; a < 6; a++) {
        FN(wino_a4)(t[a][0], t[a][1], t[a][2], t[a][3], r);
        for (int e = 0; e < 6; e++) STOREV(w + (a * 6 + e) * mstride, r[e]);
    }
}

/* The weight gradient by Winograd, tiles [t0, t1) of the forward convolution (see
 * cyc_conv_winograd; the tiles are cyc_wino_dw's, which may be F(2x2)'s where the forward pass
 * takes F(4x4)):
 * y = A^T M A with M = U * V makes dM = A dy A^T per tile, and dU[xi] = sum over tiles of
 * V[xi] (x) dM[xi], C x K per xi: nx reductions over the tiles, run on the direct weight
 * gradient's register tiles.  dw = G^T dU G once the partial sums are added
 * (cyc_conv_dw_finish_winograd).  du_acc: [nx][C][opad], opad = K to 64 bytes. */
void FN(cyc_conv_bwd_filter_winograd)(const cyc_geom_t *g, const T *x, const T *dy,
                                      const T *relu_y, T *du_acc, T *db_acc, ptrdiff_t t0,
                                      ptrdiff_t t1, void *scratch)
{
    const cyc_wino_t q = cyc_wino_dw(g, (int)sizeof(T));
    const int C = q.c, K = q.k, cpad = cyc_round_up(C, VLEN), opad = cyc_round_up(K, CYC_L64);
    const ptrdiff_t per_image = (ptrdiff_t)q.ty * q.tx, dy_rs = (ptrdiff_t)q.ow * K;
    const int BLOCK = cyc_wino_block(&q, (int)sizeof(T), 1);
    /* scratch: xrows [BLOCK] | seq [MR_MAX] | dj [BLOCK] | dbl [opad] | v [nx][BLOCK][cpad] |
     *          dm [nx][BLOCK][opad] */
    const T **xrows = (const T **)scratch;
    ptrdiff_t *seq = (ptrdiff_t *)(xrows + BLOCK);
    int *dj = (int *)(seq + CYC_MR_MAX);
    T *dbl = (T *)cyc_align64(dj + BLOCK);
    T *v = dbl + opad;
    T *dm = v + (ptrdiff_t)q.nx * BLOCK * cpad;
    const ptrdiff_t vstride = (ptrdiff_t)BLOCK * cpad, mstride = (ptrdiff_t)BLOCK * opad;
    for (int b = 0; b < BLOCK; b++) { xrows[b] = v + (ptrdiff_t)b * cpad; dj[b] = b; }
    for (int p = 0; p < CYC_MR_MAX; p++) seq[p] = p;
    for (int k = 0; k < opad; k++) dbl[k] = 0;
    for (ptrdiff_t tb = t0; tb < t1; tb += BLOCK) {
        const int nb = (int)(t1 - tb < BLOCK ? t1 - tb : BLOCK);
        FN(wino_inputs)(&q, x, tb, nb, v, vstride);
        for (int b = 0; b < nb; b++) {
            const ptrdiff_t t = tb + b, n = t / per_image, r = t - n * per_image;
            const int y0 = (int)(r / q.tx) * q.m, x0 = (int)(r % q.tx) * q.m;
            /* the tile's dy pixels (and the fused ReLU's outputs), NULL past the output */
            ptrdiff_t off[4][4];
            for (int a = 0; a < q.m; a++)
                for (int e = 0; e < q.m; e++) {
                    const ptrdiff_t row = ((ptrdiff_t)n * q.oh + y0 + a) * dy_rs;
                    off[a][e] = y0 + a < q.oh && x0 + e < q.ow ? row + (ptrdiff_t)(x0 + e) * K : -1;
                }
            for (int k0 = 0; k0 < opad; k0 += VLEN) {
                const int nl = K - k0 < VLEN ? K - k0 : VLEN;
                V d[2][2], rr[4][2];
                T *w = dm + (ptrdiff_t)b * opad + k0;
                if (q.m == 4) {
                    FN(wino_dm4)(dy, relu_y, off, k0, nl, dbl, w, mstride);
                    continue;
                }
                for (int a = 0; a < 2; a++)
                    for (int e = 0; e < 2; e++)
                        d[a][e] = FN(wino_dy)(dy, relu_y, off[a][e], k0, nl);
                STOREV(dbl + k0, LOADV(dbl + k0) + (d[0][0] + d[0][1]) + (d[1][0] + d[1][1]));
                for (int e = 0; e < 2; e++) {
                    rr[0][e] = d[0][e];
                    rr[1][e] = d[0][e] + d[1][e];
                    rr[2][e] = d[0][e] - d[1][e];
                    rr[3][e] = -d[1][e];
                }
                for (int a = 0; a < 4; a++) {
                    STOREV(w + (a * 4 + 0) * mstride, rr[a][0]);
                    STOREV(w + (a * 4 + 1) * mstride, rr[a][0] + rr[a][1]);
                    STOREV(w + (a * 4 + 2) * mstride, rr[a][0] - rr[a][1]);
                    STOREV(w + (a * 4 + 3) * mstride, -rr[a][1]);
                }
            }
        }
        for (int xi = 0; xi < q.nx; xi++)
            for (int co0 = 0, nv, mrmax; co0 < opad; co0 += nv * VLEN) {
                nv = FN(dw_block)(opad, co0, &mrmax);
                const int ntile = (C + mrmax - 1) / mrmax;
                for (int i = 0, c0 = 0; i < ntile; i++) {
                    const int mr = C / ntile + (i < C % ntile);
                    FN(dw_tile_any)(mr, nv, nb, xrows, xi * vstride + c0, seq, dj,
                                    dm + xi * mstride + co0, opad,
                                    du_acc + ((ptrdiff_t)xi * C + c0) * opad + co0, opad);
                    c0 += mr;
                }
            }
    }
    for (int k = 0; k < K; k++) db_acc[k] += dbl[k];
}

static inline void FN(valid_taps)(int start, int step, int k, int size, int *lo, int *hi);

/* ---- Depthwise convolutions (groups == c == cout) ----
 * Each channel is its own convolution, so the work is a multiply-add per tap on vectors of
 * channels; the weights need no packing (HWIO (kh, kw, 1, c) holds a tap's channels
 * contiguous).  (The tile kernels ran these as dot products of one value per group, 26x slower
 * than PyTorch.)  A channel multiplier m > 1 is run by the caller as m = 1 on x's channels
 * repeated m times. */

/* out[c] = bias[c] + sum over the nt taps of src[off[t] + c] * w[woff[t] + c] for nv vectors of
 * channels, the last nl wide; then an optional ReLU. */
ALWAYS_INLINE void FN(dwc_block)(const int nv, const int nl, const T *src, const ptrdiff_t *off,
                                 const T *w, const ptrdiff_t *woff, int nt, const T *bias,
                                 int relu, T *out)
{
    V acc[4];
    for (int b = 0; b < nv; b++)
        acc[b] = bias ? FN(load_n)(bias + b * VLEN, b == nv - 1 ? nl : VLEN) : (V){0};
    for (int t = 0; t < nt; t++) {
        const T *s = src + off[t], *wt = w + woff[t];
        for (int b = 0; b < nv; b++) {
            const int n = b == nv - 1 ? nl : VLEN;
            acc[b] += FN(load_n)(s + b * VLEN, n) * FN(load_n)(wt + b * VLEN, n);
        }
    }
    for (int b = 0; b < nv; b++)
        FN(store_n)(out + b * VLEN, relu ? FN(relu)(acc[b]) : acc[b], b == nv - 1 ? nl : VLEN);
}

/* One pixel's C channels through FN(dwc_block). */
static void FN(dwc_pixel)(int C, const T *src, const ptrdiff_t *off, const T *w,
                          const ptrdiff_t *woff, int nt, const T *bias, int relu, T *out)
{
#define CYC_BLOCK(nv, nl, c)                                                                   \
    FN(dwc_block)(nv, nl, src + (c), off, w + (c), woff, nt, bias ? bias + (c) : NULL, relu,  \
                  out + (c))
    CYC_CHANNEL_BLOCKS(0, C, CYC_BLOCK);
#undef CYC_BLOCK
}

/* Vectors of channels per block of FN(dw_pixels) and FN(dw_slide); FN(dw_slide)'s pixels per
 * block (half that for 7 columns) and widest window: its sums, a window row's weights and an
 * input vector fill at most 28 of AVX-512's 32 registers, 14 of AVX2's 16. */
#if MR >= 12
#define CYC_DW_NB 2
#else
#define CYC_DW_NB 1
#endif
#define CYC_DW_SLIDE_PX 8
#define CYC_DW_SLIDE_KW 7

/* The bias of channels [c0, c0 + NB * VLEN) of the depthwise kernels' blocks, or zeros. */
ALWAYS_INLINE void FN(dw_bias)(const T *bias, int c0, V *bv)
{
    for (int b = 0; b < CYC_DW_NB; b++) bv[b] = bias ? (V)LOADV(bias + c0 + b * VLEN) : (V){0};
}

/* PX pixels of FN(dw_pixels), NB vectors of channels from sp and op on. */
ALWAYS_INLINE void FN(dw_pixel_block)(const int PX, const T *sp, ptrdiff_t step,
                                      const ptrdiff_t *off, const T *w, const ptrdiff_t *woff,
                                      int nt, const V *bv, int relu, T *op, ptrdiff_t ostep)
{
    enum { NB = CYC_DW_NB };
    V acc[4][NB];   /* PX <= 4 */
    for (int q = 0; q < PX; q++)
        for (int b = 0; b < NB; b++) acc[q][b] = bv[b];
    for (int t = 0; t < nt; t++) {
        const T *s = sp + off[t];
        V wv[NB];
        for (int b = 0; b < NB; b++) wv[b] = LOADV(w + woff[t] + b * VLEN);
        for (int q = 0; q < PX; q++)
            for (int b = 0; b < NB; b++) acc[q][b] += LOADV(s + q * step + b * VLEN) * wv[b];
    }
    for (int q = 0; q < PX; q++)
        for (int b = 0; b < NB; b++)
            STOREV(op + q * ostep + b * VLEN, relu ? FN(relu)(acc[q][b]) : acc[q][b]);
}

/* count pixels of a row whose windows lie inside the image, for channels [0, cfast): pixel p's
 * tap t reads src[p * step + off[t]] and weights w[woff[t]].  PX pixels at a time: a pixel's
 * multiply-adds form one dependent chain per vector, so one pixel alone waited on each add's
 * latency; each tap's weights are loaded once for the PX pixels.  Each block of channels of
 * those pixels in turn, as FN(dw_slide_row) does. */
static void FN(dw_pixels)(const T *src, ptrdiff_t step, const ptrdiff_t *off, const T *w,
                          const ptrdiff_t *woff, int nt, const T *bias, int relu, T *out,
                          ptrdiff_t ostep, int count, int cfast)
{
    enum { NB = CYC_DW_NB, PX = 4, BLK = CYC_DW_NB * VLEN };
    for (int p = 0; p < count; p += PX) {
        const int np = count - p < PX ? count - p : PX;
        for (int c0 = 0; c0 < cfast; c0 += BLK) {
            V bv[NB];
            FN(dw_bias)(bias, c0, bv);
            const T *sp = src + p * step + c0;
            T *op = out + p * ostep + c0;
            if (np == PX)
                FN(dw_pixel_block)(PX, sp, step, off, w + c0, woff, nt, bv, relu, op, ostep);
            else
                for (int q = 0; q < np; q++)
                    FN(dw_pixel_block)(1, sp + q * step, step, off, w + c0, woff, nt, bv, relu,
                                       op + q * ostep, ostep);
        }
    }
}

/* nout <= PX pixels of a row through KW-wide windows of stride SW (no dilation across), rows
 * window rows rs apart, NB vectors of channels; pixels are C apart, so are a window row's
 * weights.  The block's windows span input columns m = 0 .. (PX - 1) * SW + KW - 1 from `row`
 * (a window row's first, column 0 of the image) + x0; only those in [mlo, mhi), inside the
 * image, are read (the padding adds nothing).  Each input vector is loaded once per window row
 * and meets every (pixel, tap) pair that reads it, with the window row's KW weights in
 * registers, where FN(dw_pixels) loads a vector per multiply-add.  (Those loads miss L1 more
 * than they need to: with 512 channels the pixels lie 2 KB apart and all fall in a few of its
 * sets.)  Against FN(dw_pixels), for the pixels whose windows lie inside and the top and bottom
 * rows: 0.76 of the time for 5x5 over 14x14x512, 0.75 for 7x7, 0.86 to 0.96 for 3x3.  CLIP
 * (a compile-time constant) 0 says that the whole span is inside. */
ALWAYS_INLINE void FN(dw_slide)(const int KW, const int SW, const int PX, const int CLIP,
                                const T *row, ptrdiff_t x0, int mlo, int mhi, ptrdiff_t C,
                                ptrdiff_t rs, int rows, const T *w, const V *bv, int relu, T *out,
                                int nout)
{
    enum { NB = CYC_DW_NB };
    V acc[CYC_DW_SLIDE_PX][NB];
    for (int q = 0; q < PX; q++)
        for (int b = 0; b < NB; b++) acc[q][b] = bv[b];
    for (int i = 0; i < rows; i++) {
        /* one pointer stepped along the row: every m * C in a register spilled them (a block
         * with no column inside, past the right side, reads nothing) */
        const T *s = row + i * rs + (mhi > mlo ? (x0 + mlo) * C : 0);
        const T *wr = w + (ptrdiff_t)i * KW * C;
        V wv[CYC_DW_SLIDE_KW][NB];
        for (int j = 0; j < KW; j++, wr += C)
            for (int b = 0; b < NB; b++) wv[j][b] = LOADV(wr + b * VLEN);
#pragma GCC unroll 32
        for (int m = 0; m < (PX - 1) * SW + KW; m++) {
            /* CLIP 0: every column inside, no test */
            if (CLIP && (m < mlo || m >= mhi)) continue;
            V xv[NB];
            for (int b = 0; b < NB; b++) {
                xv[b] = LOADV(s + b * VLEN);
                CYC_IN_REGISTER(xv[b]);
            }
            s += C;
#pragma GCC unroll 16
            for (int q = 0; q < PX; q++) {
                const int j = m - q * SW;
                if (j >= 0 && j < KW)
                    for (int b = 0; b < NB; b++) acc[q][b] += xv[b] * wv[j][b];
            }
        }
    }
    for (int q = 0; q < PX && q < nout; q++)
        for (int b = 0; b < NB; b++)
            STOREV(out + q * C + b * VLEN, relu ? FN(relu)(acc[q][b]) : acc[q][b]);
}

/* Whether FN(dw_slide_row) takes these windows. */
static inline int FN(dw_slides)(const cyc_geom_t *g)
{
    return g->dw == 1 && g->kw <= CYC_DW_SLIDE_KW && (g->kw == 3 || g->kw == 5 || g->kw == 7) &&
           (g->sw == 1 || g->sw == 2);
}

/* Whether FN(dw_slide_row) takes the pixels whose window crosses the left or right side too, in
 * blocks that read only the columns inside: on AVX-512, where that took 0.61 of the time of
 * the lists of taps for 5x5 over 14x14x512 and 0.72 for 7x7.  With AVX2's 16 registers those
 * blocks spill and ran 3x3 layers 1.1x to 1.4x slower, so there they keep the lists of taps. */
#define CYC_DW_SLIDE_SIDES (MR >= 12)

/* Output pixels [p0, p1) of a row through FN(dw_slide), PX at a time, each block through
 * every vector block of channels [0, cfast) in turn; `row` is the first window row's column 0.
 * With CYC_DW_SLIDE_SIDES the whole row, borders too, the last block storing what is left;
 * else the pixels whose windows lie inside, then one at a time.  The channel blocks run inside
 * the pixel blocks, so that a block's pixels are read whole, in order, while in L1: a row of
 * blocks per channel block (the earlier order) read each pixel's cache lines in separate
 * strided sweeps of rows that L1 cannot hold, and from memory (batch 8 of 56x56x64) took
 * twice the time per image that the same pass took in the caches. */
static void FN(dw_slide_row)(const cyc_geom_t *g, const T *row, ptrdiff_t C, ptrdiff_t rs,
                             int rows, const T *w, const T *bias, int relu, T *out, int p0,
                             int p1, int cfast)
{
    enum { NB = CYC_DW_NB, BLK = CYC_DW_NB * VLEN };
    /* block [p, p + PX): x0 its first input column, columns [mlo, mhi) of its span inside;
     * the code that reads every column where all are (always so without CYC_DW_SLIDE_SIDES) */
#define CYC_SLIDE_BLOCK(KW, SW, PX, p, nout)                                                   \
    do {                                                                                       \
        const int x0 = (p) * (SW) - g->pad_left, span = ((PX) - 1) * (SW) + (KW);             \
        const int mlo = x0 < 0 ? -x0 : 0, mhi = g->w - x0 < span ? g->w - x0 : span;          \
        const int inside = !CYC_DW_SLIDE_SIDES || (mlo == 0 && mhi == span);                   \
        for (int c0 = 0; c0 < cfast; c0 += BLK) {                                              \
            V bv[NB];                                                                          \
            FN(dw_bias)(bias, c0, bv);                                                         \
            if (inside)                                                                        \
                FN(dw_slide)(KW, SW, PX, 0, row + c0, x0, mlo, mhi, C, rs, rows, w + c0, bv,   \
                             relu, out + (ptrdiff_t)(p) * C + c0, nout);                       \
            else                                                                               \
                FN(dw_slide)(KW, SW, PX, 1, row + c0, x0, mlo, mhi, C, rs, rows, w + c0, bv,   \
                             relu, out + (ptrdiff_t)(p) * C + c0, nout);                       \
        }                                                                                      \
    } while (0)
#if CYC_DW_SLIDE_SIDES
#define CYC_SLIDES(KW, SW, PX)                                                                 \
    case (KW) * 4 + (SW):                                                                      \
        for (int p = p0; p < p1; p += (PX)) CYC_SLIDE_BLOCK(KW, SW, PX, p, p1 - p);            \
        return;
#else
#define CYC_SLIDES(KW, SW, PX)                                                                 \
    case (KW) * 4 + (SW): {                                                                    \
        int p = p0;                                                                            \
        for (; p + (PX) <= p1; p += (PX)) CYC_SLIDE_BLOCK(KW, SW, PX, p, PX);                  \
        for (; p < p1; p++) CYC_SLIDE_BLOCK(KW, SW, 1, p, 1);                                  \
        return;                                                                                \
    }
#endif
    switch (g->kw * 4 + g->sw) {
        CYC_SLIDES(3, 1, CYC_DW_SLIDE_PX)
        CYC_SLIDES(3, 2, CYC_DW_SLIDE_PX)
        CYC_SLIDES(5, 1, CYC_DW_SLIDE_PX)
        CYC_SLIDES(5, 2, CYC_DW_SLIDE_PX)
        CYC_SLIDES(7, 1, CYC_DW_SLIDE_PX / 2)
        CYC_SLIDES(7, 2, CYC_DW_SLIDE_PX / 2)
    default: break;
    }
#undef CYC_SLIDES
#undef CYC_SLIDE_BLOCK
}

/* The output columns ox in [*lo, *hi) whose span of input columns, from first + ox * sw on,
 * lies inside the image (first: where column 0's span starts, in the padding if negative). */
static inline void FN(inside_columns)(const cyc_geom_t *g, int first, int span, int *lo, int *hi)
{
    int a = first >= 0 ? 0 : (-first + g->sw - 1) / g->sw;
    int b = g->w - span - first < 0 ? 0 : (g->w - span - first) / g->sw + 1;
    if (b > g->ow) b = g->ow;
    *lo = a < b ? a : b;
    *hi = b;
}

/* inner[i * kw + j]: tap (i, j)'s offset from its window's first pixel, in a row-major NHWC
 * image of C channels. */
static inline void FN(tap_offsets)(const cyc_geom_t *g, int C, ptrdiff_t *inner)
{
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++)
            inner[i * g->kw + j] = ((ptrdiff_t)i * g->dh * g->w + (ptrdiff_t)j * g->dw) * C;
}

/* Output rows [r0, r1) of the flattened (n, oh).  Pixels whose window lies inside the image
 * share one table of tap offsets and run FN(dw_pixels) on whole blocks of channels; border
 * pixels, and the channels past the blocks, list their valid taps for FN(dwc_pixel). */
void FN(cyc_depthwise_fwd)(const cyc_geom_t *g, const T *x, const T *w, const T *bias, int relu,
                           T *y, ptrdiff_t r0, ptrdiff_t r1)
{
    const int C = g->c, taps = g->kh * g->kw;
    ptrdiff_t inner[CYC_DEPTHWISE_MAX_TAPS], woff_all[CYC_DEPTHWISE_MAX_TAPS];
    ptrdiff_t off[CYC_DEPTHWISE_MAX_TAPS], woff[CYC_DEPTHWISE_MAX_TAPS];
    FN(tap_offsets)(g, C, inner);
    for (int t = 0; t < taps; t++) woff_all[t] = (ptrdiff_t)t * C;
    /* the pixels whose window lies inside across */
    int xlo, xhi;
    FN(inside_columns)(g, -g->pad_left, (g->kw - 1) * g->dw + 1, &xlo, &xhi);
    const int blk = CYC_DW_NB * VLEN, cfast = C / blk * blk, slides = FN(dw_slides)(g);
    for (ptrdiff_t row = r0; row < r1; row++) {
        const int n = (int)(row / g->oh), oy = (int)(row % g->oh);
        const int iy0 = oy * g->sh - g->pad_top;
        int ilo, ihi;
        FN(valid_taps)(iy0, g->dh, g->kh, g->h, &ilo, &ihi);
        const T *xn = x + (ptrdiff_t)n * g->h * g->w * C;
        /* FN(dw_slide_row) takes a top or bottom row's window rows inside the image too, and
         * with CYC_DW_SLIDE_SIDES the pixels at the sides: [s0, s1) */
        const int slide = cfast && slides && ihi > ilo && (CYC_DW_SLIDE_SIDES || xhi > xlo);
        const int s0 = CYC_DW_SLIDE_SIDES ? 0 : xlo, s1 = CYC_DW_SLIDE_SIDES ? g->ow : xhi;
        const int fast = cfast && !slides && xhi > xlo && ilo == 0 && ihi == g->kh;
        if (slide)
            FN(dw_slide_row)(g, xn + (ptrdiff_t)(iy0 + ilo * g->dh) * g->w * C, C,
                             (ptrdiff_t)g->dh * g->w * C, ihi - ilo,
                             w + (ptrdiff_t)ilo * g->kw * C, bias, relu, y + row * g->ow * C, s0,
                             s1, cfast);
        if (fast) {
            const ptrdiff_t first = ((ptrdiff_t)iy0 * g->w + xlo * g->sw - g->pad_left) * C;
            FN(dw_pixels)(xn + first, (ptrdiff_t)g->sw * C, inner, w, woff_all, taps, bias, relu,
                          y + (row * g->ow + xlo) * C, C, xhi - xlo, cfast);
        }
        for (int ox = 0; ox < g->ow; ox++) {
            const int c0 = (slide && ox >= s0 && ox < s1) || (fast && ox >= xlo && ox < xhi)
                               ? cfast : 0;
            if (c0 == C) continue;
            const int ix0 = ox * g->sw - g->pad_left;
            int jlo, jhi;
            FN(valid_taps)(ix0, g->dw, g->kw, g->w, &jlo, &jhi);
            /* channels [c0, C) (past the 3x3 blocks) */
            T *out = y + (row * g->ow + ox) * C + c0;
            const T *b0 = bias ? bias + c0 : NULL;
            /* the window's first pixel, which may lie in the padding */
            const ptrdiff_t origin = ((ptrdiff_t)iy0 * g->w + ix0) * C + c0;
            if (ilo == 0 && ihi == g->kh && jlo == 0 && jhi == g->kw) {
                FN(dwc_pixel)(C - c0, xn + origin, inner, w + c0, woff_all, taps, b0, relu, out);
                continue;
            }
            int nt = 0;
            for (int i = ilo; i < ihi; i++)
                for (int j = jlo; j < jhi; j++) {
                    off[nt] = origin + inner[i * g->kw + j];
                    woff[nt++] = woff_all[i * g->kw + j];
                }
            FN(dwc_pixel)(C - c0, xn, off, w + c0, woff, nt, b0, relu, out);
        }
    }
}

/* dx rows [r0, r1) of the flattened (n, h): dx[c] = sum over the taps that reach it of
 * dy[c] * w[c]. */
void FN(cyc_depthwise_bwd_data)(const cyc_geom_t *g, const T *dy, const T *w, T *dx,
                                ptrdiff_t r0, ptrdiff_t r1)
{
    const int C = g->c;
    ptrdiff_t off[CYC_DEPTHWISE_MAX_TAPS], woff[CYC_DEPTHWISE_MAX_TAPS];
    for (ptrdiff_t row = r0; row < r1; row++) {
        const int n = (int)(row / g->h), yy = (int)(row % g->h);
        const T *dn = dy + (ptrdiff_t)n * g->oh * g->ow * C;
        for (int xx = 0; xx < g->w; xx++) {
            int nt = 0;
            for (int i = 0; i < g->kh; i++) {
                const int t = yy + g->pad_top - i * g->dh;
                if (t < 0 || t % g->sh || t / g->sh >= g->oh) continue;
                for (int j = 0; j < g->kw; j++) {
                    const int u = xx + g->pad_left - j * g->dw;
                    if (u < 0 || u % g->sw || u / g->sw >= g->ow) continue;
                    off[nt] = ((ptrdiff_t)(t / g->sh) * g->ow + u / g->sw) * C;
                    woff[nt++] = (ptrdiff_t)(i * g->kw + j) * C;
                }
            }
            FN(dwc_pixel)(C, dn, off, w, woff, nt, NULL, 0, dx + (row * g->w + xx) * C);
        }
    }
}

/* acc[c] += sum over pixels ox in [lo, hi) of x[xrow + ox * xs + c] * d[ox * C + c], for nv
 * vectors of channels, the last nl wide. */
ALWAYS_INLINE void FN(dw_tap_sums)(const int nv, const int nl, const T *x, ptrdiff_t xrow,
                                   ptrdiff_t xs, const T *d, int C, int lo, int hi, T *acc)
{
    V a[4];
    for (int b = 0; b < nv; b++) a[b] = (V){0};
    for (int ox = lo; ox < hi; ox++) {
        /* xrow may point into the padding: offsets, not pointers, until inside */
        const T *xp = x + (xrow + ox * xs), *dp = d + (ptrdiff_t)ox * C;
        for (int b = 0; b < nv; b++) {
            const int n = b == nv - 1 ? nl : VLEN;
            a[b] += FN(load_n)(xp + b * VLEN, n) * FN(load_n)(dp + b * VLEN, n);
        }
    }
    for (int b = 0; b < nv; b++) {
        const int n = b == nv - 1 ? nl : VLEN;
        FN(store_n)(acc + b * VLEN, FN(load_n)(acc + b * VLEN, n) + a[b], n);
    }
}

/* A 3x3 window's sums over count pixels of a row, inside the image, for channels [0, cfast):
 * pixel p reads x at xo + p * xs + i * rstep + j * cstep (tap (i, j)) and dy at d + p * C.
 * CYC_DW_SLIDE_PX pixels at a time, each block of channels of those pixels in turn, its 9 x NB
 * vectors of sums in registers: a row per block of channels swept the row's x in strides
 * that L1 could not hold (summing one tap at a time re-read them for every tap).  Three row
 * pointers and two column steps, not a table of nine offsets: nine offsets in general
 * registers beside the loop's pointers spilled when the caller grew (gcc 12 loaded seven of
 * them from the stack on every pixel, 1.1x to 1.25x the time of this pass). */
static void FN(dw3x3_sums)(const T *x, ptrdiff_t xo, ptrdiff_t xs, ptrdiff_t rstep,
                           ptrdiff_t cstep, const T *d, int C, int count, int cfast, T *dw_acc)
{
    enum { NB = CYC_DW_NB, BLK = CYC_DW_NB * VLEN };
    const ptrdiff_t cstep2 = 2 * cstep;
    for (int p0 = 0; p0 < count; p0 += CYC_DW_SLIDE_PX) {
        const int np = count - p0 < CYC_DW_SLIDE_PX ? count - p0 : CYC_DW_SLIDE_PX;
        for (int c0 = 0; c0 < cfast; c0 += BLK) {
            V a[9][NB];
            for (int t = 0; t < 9; t++)
                for (int b = 0; b < NB; b++)
                    a[t][b] = LOADV(dw_acc + (ptrdiff_t)t * C + c0 + b * VLEN);
            const T *x0 = x + xo + p0 * xs + c0, *x1 = x0 + rstep, *x2 = x1 + rstep;
            const T *dp = d + (ptrdiff_t)p0 * C + c0;
            for (int p = 0; p < np; p++, x0 += xs, x1 += xs, x2 += xs, dp += C) {
                V dv[NB];
                for (int b = 0; b < NB; b++) dv[b] = LOADV(dp + b * VLEN);
                for (int b = 0; b < NB; b++) {
                    const int o = b * VLEN;
                    a[0][b] += LOADV(x0 + o) * dv[b];
                    a[1][b] += LOADV(x0 + cstep + o) * dv[b];
                    a[2][b] += LOADV(x0 + cstep2 + o) * dv[b];
                    a[3][b] += LOADV(x1 + o) * dv[b];
                    a[4][b] += LOADV(x1 + cstep + o) * dv[b];
                    a[5][b] += LOADV(x1 + cstep2 + o) * dv[b];
                    a[6][b] += LOADV(x2 + o) * dv[b];
                    a[7][b] += LOADV(x2 + cstep + o) * dv[b];
                    a[8][b] += LOADV(x2 + cstep2 + o) * dv[b];
                }
            }
            for (int t = 0; t < 9; t++)
                for (int b = 0; b < NB; b++)
                    STOREV(dw_acc + (ptrdiff_t)t * C + c0 + b * VLEN, a[t][b]);
        }
    }
}

/* FN(dw_tap_sums) over channels [c0, c1) (see CYC_CHANNEL_BLOCKS). */
static void FN(dw_tap_channels)(int c0, int c1, const T *x, ptrdiff_t xrow, ptrdiff_t xs,
                                const T *d, int C, int lo, int hi, T *acc)
{
    if (lo >= hi) return;
#define CYC_BLOCK(nv, nl, c)                                                                   \
    FN(dw_tap_sums)(nv, nl, x + (c), xrow, xs, d + (c), C, lo, hi, acc + (c))
    CYC_CHANNEL_BLOCKS(c0, c1, CYC_BLOCK);
#undef CYC_BLOCK
}

/* dw_acc [kh * kw][c] and db_acc [c] += the sums over output rows [r0, r1) of the flattened
 * (n, oh); relu_y, when not NULL, masks dy (a fused ReLU's output) through rowbuf (ow * c
 * values).  Per output row and tap, vectors of channels are summed in registers over the
 * row's pixels that the tap reaches. */
void FN(cyc_depthwise_bwd_filter)(const cyc_geom_t *g, const T *x, const T *dy, const T *relu_y,
                                  T *dw_acc, T *db_acc, ptrdiff_t r0, ptrdiff_t r1, T *rowbuf)
{
    const int C = g->c;
    const ptrdiff_t xs = (ptrdiff_t)g->sw * C;
    /* 3x3 windows inside the image across (pixels [xlo, xhi), as in the forward pass) sum whole
     * blocks of channels [0, cfast) in registers; the rest goes a tap at a time */
    int xlo, xhi;
    FN(inside_columns)(g, -g->pad_left, (g->kw - 1) * g->dw + 1, &xlo, &xhi);
    const int blk = CYC_DW_NB * VLEN;
    const int cfast = g->kh == 3 && g->kw == 3 && xhi > xlo ? C / blk * blk : 0;
    for (ptrdiff_t row = r0; row < r1; row++) {
        const int n = (int)(row / g->oh), oy = (int)(row % g->oh);
        const int iy0 = oy * g->sh - g->pad_top;
        const T *d = dy + row * g->ow * C;
        if (relu_y) {
            const T *ry = relu_y + row * g->ow * C;
            for (ptrdiff_t k = 0; k < (ptrdiff_t)g->ow * C; k++)
                rowbuf[k] = ry[k] > 0 ? d[k] : (T)0;
            d = rowbuf;
        }
        FN(sum_rows)(d, 1, g->ow, g->ow, C, C, db_acc);
        int ilo, ihi;
        FN(valid_taps)(iy0, g->dh, g->kh, g->h, &ilo, &ihi);
        const T *xn = x + (ptrdiff_t)n * g->h * g->w * C;
        const int fast = cfast && ilo == 0 && ihi == 3;
        if (fast) {
            const ptrdiff_t xo = ((ptrdiff_t)iy0 * g->w + xlo * g->sw - g->pad_left) * C;
            FN(dw3x3_sums)(xn, xo, xs, (ptrdiff_t)g->dh * g->w * C, (ptrdiff_t)g->dw * C,
                           d + (ptrdiff_t)xlo * C, C, xhi - xlo, cfast, dw_acc);
        }
        for (int i = ilo; i < ihi; i++)
            for (int j = 0; j < g->kw; j++) {
                /* the pixels whose tap (i, j) lies inside across */
                const int s0 = j * g->dw - g->pad_left;
                int lo, hi;
                FN(inside_columns)(g, s0, 1, &lo, &hi);
                if (lo >= hi) continue;
                /* xrow may point into the padding: offsets, not pointers, until inside */
                const ptrdiff_t xrow = ((ptrdiff_t)(iy0 + i * g->dh) * g->w + s0) * C;
                T *acc = dw_acc + (ptrdiff_t)(i * g->kw + j) * C;
                if (fast) {
                    /* the fast channels' border pixels, then the other channels' every pixel */
                    FN(dw_tap_channels)(0, cfast, xn, xrow, xs, d, C, lo, hi < xlo ? hi : xlo,
                                        acc);
                    FN(dw_tap_channels)(0, cfast, xn, xrow, xs, d, C, lo > xhi ? lo : xhi, hi,
                                        acc);
                    FN(dw_tap_channels)(cfast, C, xn, xrow, xs, d, C, lo, hi, acc);
                } else {
                    FN(dw_tap_channels)(0, C, xn, xrow, xs, d, C, lo, hi, acc);
                }
            }
    }
}

/* ---- NCHW convolution straight into planes, for few input channels ----
 * A first layer's NCHW input (grayscale or colour: 1 to CYC_PLANAR_MAX_C channels) leaves the
 * NHWC tiles' vectors along channels mostly empty, and its output, the layer's largest array,
 * would then be transposed into planes.  Here vectors run along an output row instead:
 * CYC_PLANAR_PK output channels x PV vectors of pixels stay in registers, each input vector
 * loaded serves every one of those channels, and the sums go straight into the output planes.
 * A unit of work is a band of output rows of one image; its thread first stages the input rows
 * the band reads, zero-padded and, for a column stride s, split into s phases (phase q holds
 * the padded row's columns q, q + s, q + 2s...), so that every tap reads a contiguous run of
 * its phase whatever the stride or dilation. */
#define CYC_PLANAR_PV (MR / 2)   /* AVX2, SSE2: 12 accumulators of 16 registers; AVX-512 24 */
#define CYC_PLANAR_L1_BYTES (16 * 1024)

/* Stage row r of channel c, phase q, holds padded input row r_lo + r at columns q + t * s. */
static void FN(planar_stage)(const cyc_geom_t *g, const T *xn, int r_lo, int rows, int len, T *st)
{
    const int s = g->sw;
    for (int c = 0; c < g->c; c++)
        for (int q = 0; q < s; q++) {
            /* the input's columns t * s + q - pad_left, for t in [t0, t1) */
            int t0, t1;
            FN(valid_taps)(q - g->pad_left, s, len, g->w, &t0, &t1);
            for (int r = 0; r < rows; r++) {
                T *d = st + (((ptrdiff_t)c * s + q) * rows + r) * len;
                const int iy = r_lo + r;
                if (iy < 0 || iy >= g->h) {
                    memset(d, 0, sizeof(T) * (size_t)len);
                    continue;
                }
                const T *sp = xn + ((ptrdiff_t)c * g->h + iy) * g->w + t0 * s + q - g->pad_left;
                memset(d, 0, sizeof(T) * (size_t)t0);
                if (s == 1)
                    memcpy(d + t0, sp, sizeof(T) * (size_t)(t1 - t0));
                else
                    for (int u = 0; u < t1 - t0; u++) d[t0 + u] = sp[(ptrdiff_t)u * s];
                memset(d + t1, 0, sizeof(T) * (size_t)(len - t1));
            }
        }
}

/* One block of NV vectors of pixels of an output row, CYC_PLANAR_PK channels: tap t reads
 * st + toff[t] (st at the block's first pixel in the stage row of its tap row 0), wp holds the
 * block of channels' packed weights, bp its bias; the first nk channels and m pixels are
 * stored, channel k's at yo + k * plane.  The sums in one flat array of constant stride NV: as
 * a 2-D array GCC kept them on the stack. */
ALWAYS_INLINE void FN(planar_block)(const T *st, const ptrdiff_t *toff, int taps,
                                    const T *restrict wp, const T *restrict bp, int relu, T *yo,
                                    ptrdiff_t plane, int nk, int m, const int NV)
{
    enum { PK = CYC_PLANAR_PK };
    V acc[PK * CYC_PLANAR_PV];
    for (int k = 0; k < PK; k++)
        for (int v = 0; v < NV; v++) acc[k * NV + v] = bp[k] - (V){0};   /* exact, even -0 */
    for (int t = 0; t < taps; t++, wp += PK) {
        const T *p = st + toff[t];
        V xv[CYC_PLANAR_PV];
        for (int v = 0; v < NV; v++) {
            xv[v] = LOADV(p + v * VLEN);
            CYC_IN_REGISTER(xv[v]);
        }
        for (int k = 0; k < PK; k++) {
            const T w = wp[k];
            for (int v = 0; v < NV; v++) acc[k * NV + v] += w * xv[v];
        }
    }
    for (int k = 0; k < nk; k++)
        for (int v = 0; v < NV; v++) {
            const V a = relu ? FN(relu)(acc[k * NV + v]) : acc[k * NV + v];
            const int left = m - v * VLEN;
            FN(store_n)(yo + k * plane + v * VLEN, a, left < VLEN ? left : VLEN);
        }
}

/* One output row of ow pixels, a block of channels (see FN(planar_block)); `after` pixels of
 * the plane follow the row that the caller writes later. */
static void FN(planar_row)(int ow, const T *st, const ptrdiff_t *toff, int taps, const T *wp,
                           const T *bp, int relu, T *yo, ptrdiff_t plane, int nk, ptrdiff_t after)
{
    enum { B = CYC_PLANAR_PV * VLEN };
    for (int ox0 = 0; ox0 < ow; ox0 += B) {
        int m = ow - ox0 < B ? ow - ox0 : B;
        const int nv = (m + VLEN - 1) / VLEN;
        /* a whole last vector may run on into the rows written afterwards: AVX2's masked
         * stores took a third of the seed's conv1's time (AMD) */
        if (after >= nv * VLEN - m) m = nv * VLEN;
        switch (nv) {
#define CYC_PLANAR_CASE(nv)                                                                    \
    case nv:                                                                                   \
        FN(planar_block)(st + ox0, toff, taps, wp, bp, relu, yo + ox0, plane, nk, m, nv);      \
        break;
            CYC_PLANAR_CASE(1)
            CYC_PLANAR_CASE(2)
            CYC_PLANAR_CASE(3)
#if CYC_PLANAR_PV > 3
            CYC_PLANAR_CASE(4)
            CYC_PLANAR_CASE(5)
            CYC_PLANAR_CASE(6)
#endif
#undef CYC_PLANAR_CASE
        }
    }
}

/* Output rows [oy0, oy1) of image n, every channel, from NCHW x into NCHW y; packed as
 * cyc_conv_planar_packed_len describes, stage of cyc_conv_planar_stage_bytes(g, oy1 - oy0). */
void FN(cyc_conv_planar)(const cyc_geom_t *g, const T *x, const T *packed, int relu, T *y,
                         ptrdiff_t n, int oy0, int oy1, T *stage)
{
    enum { PK = CYC_PLANAR_PK };
    const int rows = cyc_conv_planar_stage_rows(g, oy1 - oy0);
    const int len = cyc_conv_planar_stage_len(g, sizeof(T));
    const ptrdiff_t phase = (ptrdiff_t)rows * len, chan = phase * g->sw;
    const ptrdiff_t plane = (ptrdiff_t)g->oh * g->ow;
    const int nkb = (g->cout + PK - 1) / PK, taps = g->c * g->kh * g->kw;
    ptrdiff_t toff[CYC_PLANAR_MAX_TAPS];
    for (int c = 0, t = 0; c < g->c; c++)
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++, t++) {
                const int jd = j * g->dw;
                toff[t] = c * chan + (ptrdiff_t)i * g->dh * len + (jd % g->sw) * phase +
                          jd / g->sw;
            }
    FN(planar_stage)(g, x + n * g->c * g->h * g->w, oy0 * g->sh - g->pad_top, rows, len, stage);
    /* Rows in groups whose stage rows stay in L1 across the blocks of channels, and a block of
     * channels at a time down a group: PK output streams, not all cout (the seed's conv1 at
     * batch 256, one group of a whole image: 0.67 of the time of a row at a time). */
    int group = 1;
    while (group < oy1 - oy0 &&
           cyc_conv_planar_stage_bytes(g, group + 1, sizeof(T)) <= CYC_PLANAR_L1_BYTES)
        group++;
    for (int gy = oy0; gy < oy1; gy += group) {
        const int gend = gy + group < oy1 ? gy + group : oy1;
        for (int kb = 0; kb < nkb; kb++) {
            const T *wp = packed + (ptrdiff_t)kb * taps * PK;
            const T *bp = packed + (ptrdiff_t)nkb * taps * PK + kb * PK;
            const int nk = g->cout - kb * PK < PK ? g->cout - kb * PK : PK;
            T *yk = y + (n * g->cout + kb * PK) * plane;
            for (int oy = gy; oy < gend; oy++)
                FN(planar_row)(g->ow, stage + (ptrdiff_t)(oy - oy0) * g->sh * len, toff, taps, wp,
                               bp, relu, yk + (ptrdiff_t)oy * g->ow, plane, nk,
                               (ptrdiff_t)(oy1 - 1 - oy) * g->ow);
        }
    }
}
#undef CYC_PLANAR_PV
#undef CYC_PLANAR_L1_BYTES

/* dst[k] = src[k] transposed, for matrices k in [k0, k1), each rows x cols: the NCHW <-> NHWC
 * conversions.  Blocks of 16 x 16 keep both sides' cache lines in use (numpy's strided copy
 * of a (4, 112, 112, 64) image is 18x slower than a plain copy). */
/* A VLEN x VLEN block transposed in registers: each round swaps the off-diagonal h x h blocks
 * of every 2h x 2h block, for h = VLEN/2 ... 1.  Round h's row i (bit h clear) keeps its lanes
 * without bit h and takes row i+h's lanes c-h in the others; row i+h the converse.  On every
 * vector width: with AVX2 the scalar copy of 16 x 16 blocks was 4.7x a plain copy (the NCHW
 * output of the seed's conv1 at batch 32: 374 us against 79). */
#define CYC_TR_ROUND(h, LO, HI)                                                                \
    for (int i = 0; i < VLEN; i++)                                                             \
        if (!(i & (h))) {                                                                      \
            V a = r[i], b = r[i + (h)];                                                        \
            r[i] = __builtin_shufflevector(a, b, LO);                                          \
            r[i + (h)] = __builtin_shufflevector(a, b, HI);                                    \
        }
#if defined(CYC_T_IS_DOUBLE)
#define CYC_TR_LANES (CYC_VBYTES / 8)
#else
#define CYC_TR_LANES (CYC_VBYTES / 4)
#endif
#if CYC_TR_LANES == 16
#define CYC_TR_ROUNDS                                                                          \
    CYC_TR_ROUND(8, CYC_L(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),             \
                 CYC_L(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))          \
    CYC_TR_ROUND(4, CYC_L(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),           \
                 CYC_L(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))            \
    CYC_TR_ROUND(2, CYC_L(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),           \
                 CYC_L(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))            \
    CYC_TR_ROUND(1, CYC_L(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),          \
                 CYC_L(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))
#elif CYC_TR_LANES == 8
#define CYC_TR_ROUNDS                                                                          \
    CYC_TR_ROUND(4, CYC_L(0, 1, 2, 3, 8, 9, 10, 11),                                           \
                 CYC_L(4, 5, 6, 7, 12, 13, 14, 15))                                            \
    CYC_TR_ROUND(2, CYC_L(0, 1, 8, 9, 4, 5, 12, 13),                                           \
                 CYC_L(2, 3, 10, 11, 6, 7, 14, 15))                                            \
    CYC_TR_ROUND(1, CYC_L(0, 8, 2, 10, 4, 12, 6, 14),                                          \
                 CYC_L(1, 9, 3, 11, 5, 13, 7, 15))
#elif CYC_TR_LANES == 4
#define CYC_TR_ROUNDS                                                                          \
    CYC_TR_ROUND(2, CYC_L(0, 1, 4, 5),                                                         \
                 CYC_L(2, 3, 6, 7))                                                            \
    CYC_TR_ROUND(1, CYC_L(0, 4, 2, 6),                                                         \
                 CYC_L(1, 5, 3, 7))
#elif CYC_TR_LANES == 2
#define CYC_TR_ROUNDS                                                                          \
    CYC_TR_ROUND(1, CYC_L(0, 2),                                                               \
                 CYC_L(1, 3))
#endif
#define CYC_L(...) __VA_ARGS__

ALWAYS_INLINE void FN(transpose_block)(const T *s, ptrdiff_t ss, T *d, ptrdiff_t ds)
{
    V r[VLEN];
    for (int i = 0; i < VLEN; i++) r[i] = LOADV(s + i * ss);
    CYC_TR_ROUNDS
    for (int j = 0; j < VLEN; j++) STOREV(d + j * ds, r[j]);
}
#undef CYC_TR_ROUND
#undef CYC_TR_ROUNDS
#undef CYC_TR_LANES
#undef CYC_L

/* One B x B block (or the edge's part of one) of cyc_transpose. */
ALWAYS_INLINE void FN(transpose_tile)(const T *src, ptrdiff_t src_ld, T *dst, ptrdiff_t dst_ld,
                                      ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0, ptrdiff_t j1,
                                      const int B)
{
    if (i1 - i0 == B && j1 - j0 == B) {
        /* whole blocks in registers: VLEN x VLEN at a time */
        for (int bi = 0; bi < B; bi += VLEN)
            for (int bj = 0; bj < B; bj += VLEN)
                FN(transpose_block)(src + (i0 + bi) * src_ld + j0 + bj, src_ld,
                                    dst + (j0 + bj) * dst_ld + i0 + bi, dst_ld);
        return;
    }
    /* an edge: its whole VLEN x VLEN blocks in registers too, then the rest by element */
    const ptrdiff_t iv = i0 + (i1 - i0) / VLEN * VLEN, jv = j0 + (j1 - j0) / VLEN * VLEN;
    for (ptrdiff_t bi = i0; bi < iv; bi += VLEN)
        for (ptrdiff_t bj = j0; bj < jv; bj += VLEN)
            FN(transpose_block)(src + bi * src_ld + bj, src_ld, dst + bj * dst_ld + bi, dst_ld);
    for (ptrdiff_t i = i0; i < i1; i++)
        for (ptrdiff_t j = i < iv ? jv : j0; j < j1; j++) dst[j * dst_ld + i] = src[i * src_ld + j];
}

#define CYC_TR_BAND 256
void FN(cyc_transpose)(const T *src, ptrdiff_t src_ld, T *dst, ptrdiff_t dst_ld, ptrdiff_t rows,
                       ptrdiff_t cols)
{
    enum { B = 16 };
    if (dst_ld > src_ld) {
        /* dst's rows lie further apart (an NHWC block going out into NCHW planes): B of them at
         * a time, each written in one run, rather than a line of each of all of them in turn */
        for (ptrdiff_t ib = 0; ib < rows; ib += CYC_TR_BAND)
            for (ptrdiff_t j0 = 0; j0 < cols; j0 += B)
                for (ptrdiff_t i0 = ib; i0 < rows && i0 < ib + CYC_TR_BAND; i0 += B)
                    FN(transpose_tile)(src, src_ld, dst, dst_ld, i0,
                                       i0 + B < rows ? i0 + B : rows, j0,
                                       j0 + B < cols ? j0 + B : cols, B);
        return;
    }
    /* in bands of CYC_TR_BAND columns (above, rows): a band of B source rows went through all
     * of dst's rows, more pages than the TLB holds once dst passed about 8 MB (a 512 x 4608
     * float32 matrix, an OIHW 512 x 512 x 3 x 3 array's rows, took 4.8x a plain copy) */
    for (ptrdiff_t jb = 0; jb < cols; jb += CYC_TR_BAND)
        for (ptrdiff_t i0 = 0; i0 < rows; i0 += B)
            for (ptrdiff_t j0 = jb; j0 < cols && j0 < jb + CYC_TR_BAND; j0 += B)
                FN(transpose_tile)(src, src_ld, dst, dst_ld, i0, i0 + B < rows ? i0 + B : rows,
                                   j0, j0 + B < cols ? j0 + B : cols, B);
}

/* The panels of FN(cyc_gemm_planes_pack) for b = x's transpose, x being N x K (K apart), with
 * a column of ones after its N if ones: the weight gradient of an NCHW pointwise convolution,
 * sum over images of dy (cout x pixels) times x (cin x pixels) transposed, the ones giving
 * the bias's.  Each block's rows of x transposed into its panel in one pass, the columns past
 * N + ones zero. */
void FN(cyc_gemm_planes_pack_t)(const T *x, ptrdiff_t K, ptrdiff_t N, int ones, T *panels)
{
    const ptrdiff_t cols_all = N + !!ones;
    int nv;
    for (ptrdiff_t c0 = 0; c0 < cols_all; c0 += FN(PLANES_BLK)) {
        const int cols = FN(planes_block)(cols_all, c0, &nv), bw = nv * VLEN;
        const int from_x = N - c0 < cols ? (int)(N - c0) : cols;
        T *pn = panels + c0 * K;
        if (from_x > 0) FN(cyc_transpose)(x + c0 * K, K, pn, bw, from_x, K);
        for (ptrdiff_t k = 0; k < K; k++)
            for (int j = from_x > 0 ? from_x : 0; j < bw; j++)
                pn[k * bw + j] = c0 + j == N && ones ? (T)1 : (T)0;
    }
}

/* One Adam step over n weights, in one pass and in the order Keras computes it (so that the
 * result matches it to the last bit: no fused multiply-adds here):
 *   m += (g - m) * (1 - beta_1);  v += (g*g - v) * (1 - beta_2);
 *   var -= m * alpha / (sqrt(v) + epsilon)
 * where alpha already holds the bias correction. */
#ifdef CYC_T_IS_DOUBLE
#define CYC_SQRT_T sqrt
#else
#define CYC_SQRT_T sqrtf
#endif
/* With -fno-math-errno, sqrt is one vector instruction (correctly rounded, as numpy's) and the
 * loop vectorises.  clang ignores the optimize attribute and takes its own pragma instead. */
#if !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
void FN(cyc_adam)(T *var, const T *g, T *m, T *v, ptrdiff_t n, T alpha, T one_minus_b1,
                  T one_minus_b2, T eps)
{
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
    for (ptrdiff_t i = 0; i < n; i++) {
        T gi = g[i];
        T mi = m[i] + (gi - m[i]) * one_minus_b1;
        T vi = v[i] + (gi * gi - v[i]) * one_minus_b2;
        m[i] = mi;
        v[i] = vi;
        var[i] -= (mi * alpha) / (CYC_SQRT_T(vi) + eps);
    }
}
#undef CYC_SQRT_T

/* ReLU's gradient from its output: out = dy where y > 0, else 0 (also for NaN in y). */
void FN(cyc_relu_bwd)(const T *dy, const T *y, T *out, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + VLEN <= n; i += VLEN) {
        IV keep = LOADV(y + i) > (V){0};
        STOREV(out + i, (V)((IV)LOADV(dy + i) & keep));
    }
    for (; i < n; i++) out[i] = y[i] > 0 ? dy[i] : (T)0;
}

/* Inverted dropout of elements [i0, i1) (i0 even): element i's 32 random bits are the low
 * (i even) or high half of cyc_mix64(key, i / 2), so any split over threads draws the same
 * mask; keep[i] = bits >= threshold, y[i] = x[i] * (scale if kept else 0).  The hashes of a
 * block go through a small array first, so that both loops vectorise. */
void FN(cyc_dropout)(const T *x, uint64_t key, uint32_t threshold, T scale, T *y,
                     uint8_t *keep, ptrdiff_t i0, ptrdiff_t i1)
{
    enum { B = 256 };
    uint64_t h[B / 2];
    uint32_t bits[B];
    for (ptrdiff_t b = i0; b < i1; b += B) {
        const int m = i1 - b < B ? (int)(i1 - b) : B;
        const uint64_t p0 = (uint64_t)(b / 2);
        for (int p = 0; p < B / 2; p++) h[p] = cyc_mix64(key, p0 + (uint64_t)p);
        /* halves low first on any byte order */
        for (int p = 0; p < B / 2; p++) {
            bits[2 * p] = (uint32_t)h[p];
            bits[2 * p + 1] = (uint32_t)(h[p] >> 32);
        }
        for (int j = 0; j < m; j++) {
            const int k = bits[j] >= threshold;
            keep[b + j] = (uint8_t)k;
            /* x * 0, not 0: the sign of a zero and the NaN of an infinity, as numpy's mask */
            y[b + j] = x[b + j] * (k ? scale : (T)0);
        }
    }
}

/* Dropout's gradient: out[i] = dy[i] * (scale if keep[i] else 0); out may be dy. */
void FN(cyc_dropout_bwd)(const T *dy, const uint8_t *keep, T scale, T *out, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) out[i] = dy[i] * (keep[i] ? scale : (T)0);
}

/* ---------------------------------------------------------------- pooling ----
 * NHWC: the innermost loops run over channels, which the compiler vectorises. */

/* The kernel rows i in [*lo, *hi) whose input row start + i * step lies in [0, size). */
static inline void FN(valid_taps)(int start, int step, int k, int size, int *lo, int *hi)
{
    int a = 0, b = k;
    while (a < b && start + a * step < 0) a++;
    while (b > a && start + (b - 1) * step >= size) b--;
    *lo = a;
    *hi = b;
}

/* A max-pool records, per output, where its first maximum was: nothing, the flat position in
 * the image's H*W plane (int64, as PyTorch), or the cell's number in its window, i * kw + j
 * (uint8: an eighth of the bytes, which is what a layer keeps for its backward pass).  The record
 * rides in an IV (the values' lane width) and is converted at the store.  For float and int64
 * that is 16 lanes of int32 against 2 x 8 lanes of int64, converted in halves (a single vector of
 * 16 int64 is wider than any register and compiles to scalar code). */
typedef int64_t FN(l8) __attribute__((vector_size(CYC_VBYTES)));
typedef int64_t FN(ul8) __attribute__((vector_size(CYC_VBYTES), aligned(8), may_alias));

/* For float, IV's lanes are int32 and the int64 positions take two vectors of int64 (l8).  The
 * halves are taken and joined in registers: joined through memory (two 16-byte stores read
 * back as one 32-byte load), the store forwarding failed, and AVX2's backward pass by flat
 * indices spent nearly half its time on that load (perf). */
#define CYC_HALF (VLEN / 2)
#if !defined(CYC_T_IS_DOUBLE)
#if CYC_VBYTES == 64
#define CYC_LO_LANES 0, 1, 2, 3, 4, 5, 6, 7
#define CYC_HI_LANES 8, 9, 10, 11, 12, 13, 14, 15
#define CYC_ALL_LANES CYC_LO_LANES, CYC_HI_LANES
#elif CYC_VBYTES == 32
#define CYC_LO_LANES 0, 1, 2, 3
#define CYC_HI_LANES 4, 5, 6, 7
#define CYC_ALL_LANES CYC_LO_LANES, CYC_HI_LANES
#else
#define CYC_LO_LANES 0, 1
#define CYC_HI_LANES 2, 3
#define CYC_ALL_LANES CYC_LO_LANES, CYC_HI_LANES
#endif
typedef int32_t FN(ih) __attribute__((vector_size(CYC_VBYTES / 2)));
#endif

ALWAYS_INLINE void FN(store_pos)(int64_t *io, IV v)
{
#if defined(CYC_T_IS_DOUBLE)
    *(FN(ul8) *)io = v;
#else
    const FN(ih) lo = __builtin_shufflevector(v, v, CYC_LO_LANES);
    const FN(ih) hi = __builtin_shufflevector(v, v, CYC_HI_LANES);
    *(FN(ul8) *)io = __builtin_convertvector(lo, FN(l8));
    *(FN(ul8) *)(io + CYC_HALF) = __builtin_convertvector(hi, FN(l8));
#endif
}

ALWAYS_INLINE IV FN(load_pos)(const int64_t *io)
{
#if defined(CYC_T_IS_DOUBLE)
    return *(const FN(ul8) *)io;
#else
    typedef FN(ih) IH;
    const FN(l8) a = *(const FN(ul8) *)io, b = *(const FN(ul8) *)(io + CYC_HALF);
    IH lo = __builtin_convertvector(a, IH);
    IH hi = __builtin_convertvector(b, IH);
    /* A position that int32 cannot hold (a caller's bad index) becomes -2, which names no
     * cell, so the backward pass counts it as unplaced instead of placing it at its low bits. */
    const IH bad_lo = __builtin_convertvector(__builtin_convertvector(lo, FN(l8)) != a, IH);
    const IH bad_hi = __builtin_convertvector(__builtin_convertvector(hi, FN(l8)) != b, IH);
    lo = (lo & ~bad_lo) | (((IH){0} - 2) & bad_lo);
    hi = (hi & ~bad_hi) | (((IH){0} - 2) & bad_hi);
    return __builtin_shufflevector(lo, hi, CYC_ALL_LANES);
#endif
}
#undef CYC_LO_LANES
#undef CYC_HI_LANES
#undef CYC_ALL_LANES
#undef CYC_HALF

/* The records of VLEN channels: to positions io or cells ic (whichever is not NULL). */
ALWAYS_INLINE void FN(store_rec)(int64_t *io, uint8_t *ic, IV v)
{
    if (ic) FN(narrow_cells)(ic, v);
    else FN(store_pos)(io, v);
}

ALWAYS_INLINE IV FN(load_rec)(const int64_t *io, const uint8_t *ic)
{
    if (ic) return FN(widen_cells)(ic);
    return FN(load_pos)(io);
}

ALWAYS_INLINE V FN(blend)(IV m, V a, V b) { return (V)(((IV)a & m) | ((IV)b & ~m)); }

/* Windows of at most this many cells take the fast path (offsets in a table). */
#define CYC_POOL_CELLS 64

/* Max pooling over windows too large for the cell table (global pooling of big images). */
static void FN(max_pool_large)(const cyc_geom_t *g, const T *x, T *y, int64_t *idx,
                               uint8_t *cell, int relu_in, ptrdiff_t r0, ptrdiff_t r1)
{
    const int C = g->c;
    for (ptrdiff_t rr = r0; rr < r1; rr++) {
        int n = (int)(rr / g->oh), oy = (int)(rr % g->oh);
        int y0 = oy * g->sh - g->pad_top, ilo, ihi;
        FN(valid_taps)(y0, g->dh, g->kh, g->h, &ilo, &ihi);
        const T *xn = x + (ptrdiff_t)n * g->h * g->w * C;
        for (int ox = 0; ox < g->ow; ox++) {
            int x0 = ox * g->sw - g->pad_left, jlo, jhi;
            FN(valid_taps)(x0, g->dw, g->kw, g->w, &jlo, &jhi);
            const ptrdiff_t o = (rr * g->ow + ox) * C;
            T *yo = y + o;
            int64_t *io = idx ? idx + o : NULL;
            uint8_t *ic = cell ? cell + o : NULL;
            if (ilo >= ihi || jlo >= jhi) {
                for (int c = 0; c < C; c++) yo[c] = -(T)INFINITY;
                if (io) for (int c = 0; c < C; c++) io[c] = -1;
                if (ic) memset(ic, CYC_POOL_NO_CELL, (size_t)C);
                continue;
            }
            const int64_t pos0 = (int64_t)(y0 + ilo * g->dh) * g->w + x0 + jlo * g->dw;
            const int k0 = ilo * g->kw + jlo;
            for (int c = 0; c < C; c++) yo[c] = xn[pos0 * C + c];
            if (io) for (int c = 0; c < C; c++) io[c] = pos0;
            if (ic) memset(ic, k0, (size_t)C);
            for (int i = ilo; i < ihi; i++)
                for (int j = jlo; j < jhi; j++) {
                    const int64_t pos = (int64_t)(y0 + i * g->dh) * g->w + x0 + j * g->dw;
                    const T *xr = xn + pos * C;
                    for (int c = 0; c < C; c++) {
                        T v = xr[c], b = yo[c];
                        int take = !(v <= b) & (b == b);
                        yo[c] = take ? v : b;
                        if (io) io[c] = take ? pos : io[c];
                        if (ic) ic[c] = take ? (uint8_t)(i * g->kw + j) : ic[c];
                    }
                }
            if (relu_in)
                for (int c = 0; c < C; c++)
                    if (!(yo[c] > 0)) {
                        if (io) io[c] = -1;
                        if (ic) ic[c] = CYC_POOL_NO_CELL;
                    }
        }
    }
}

/* Cell v (record kv) into the running maximum b (record bi) of cells before it. */
ALWAYS_INLINE void FN(fold_cell)(V *b, IV *bi, V v, IV kv)
{
    IV m = ~(v <= *b) & (*b == *b);
    *b = FN(blend)(m, v, *b);
    *bi = (*bi & ~m) | (kv & m);
}

/* Fold `count` windows along an output row into y and their records for channels [0, C).
 * Window i's cells are at base + i * step + off[k] (a pixel's channels), in scan order; cell k
 * records key[k] + i * key_step (its flat position, or its number with key_step 0).  Strictly
 * greater keeps the first maximum; a NaN replaces a number and the first NaN stays (NaN
 * propagates).  With relu_in, a maximum that is not positive records `none`: its window then
 * passes no gradient, which is the gradient of a ReLU before the pool.
 * The cells are folded in two halves side by side, then the second half into the first (the fold
 * is associative: the later cells of the second half never win a tie), which halves the chain of
 * dependent compares; the cells' pointers and records are held across the row.  In perf, the
 * pointers and records reloaded per vector (stores through yo may alias them) and the per-window
 * set-up took as long as the folding.  With all three, the seed's pool1 (2x2, 32 channels) took
 * 0.66-0.68 of the time on one AVX2 thread (the kernel alone, best of many calls), 0.91-0.94 of
 * a whole max_pool2d call on 2 threads (in-process A/B). */
ALWAYS_INLINE void FN(max_windows)(const T *base, ptrdiff_t step, const ptrdiff_t *off,
                                   const int64_t *key, int64_t key_step, int ncell, int count,
                                   int C, T *yo, int64_t *io, uint8_t *ic, int relu_in,
                                   int64_t none)
{
    const int cv = C / VLEN * VLEN;
    const int half = (ncell + 1) / 2;
    const T *src[CYC_POOL_CELLS];
    IV kv[CYC_POOL_CELLS];
    for (int k = 0; k < ncell; k++) {
        src[k] = base + off[k];
        kv[k] = (IV){0} + (CYC_IT)key[k];
    }
    for (int i = 0; i < count; i++) {
        for (int c0 = 0; c0 < cv; c0 += VLEN) {
            V b = LOADV(src[0] + c0), b2 = b;
            IV bi = kv[0], bi2 = bi;
            if (ncell > 1) {
                b2 = LOADV(src[half] + c0);
                bi2 = kv[half];
            }
            for (int k = 1; k < half; k++) {
                FN(fold_cell)(&b, &bi, LOADV(src[k] + c0), kv[k]);
                if (half + k < ncell)
                    FN(fold_cell)(&b2, &bi2, LOADV(src[half + k] + c0), kv[half + k]);
            }
            if (ncell > 1) FN(fold_cell)(&b, &bi, b2, bi2);
            STOREV(yo + c0, b);
            if (relu_in) {
                IV pos = (IV)(b > (V){0});
                bi = (bi & pos) | (((IV){0} + (CYC_IT)none) & ~pos);
            }
            if (io || ic) FN(store_rec)(io ? io + c0 : NULL, ic ? ic + c0 : NULL, bi);
        }
        for (int c = cv; c < C; c++) {
            T b = src[0][c];
            int64_t bi = key[0];
            for (int k = 1; k < ncell; k++) {
                T v = src[k][c];
                if (!(v <= b) && b == b) { b = v; bi = key[k]; }
            }
            yo[c] = b;
            if (relu_in && !(b > 0)) bi = none;
            else bi += i * key_step;
            if (io) io[c] = bi;
            if (ic) ic[c] = (uint8_t)bi;
        }
        for (int k = 0; k < ncell; k++) src[k] += step;
        if (key_step)
            for (int k = 0; k < ncell; k++) kv[k] += (CYC_IT)key_step;
        yo += C;
        if (io) io += C;
        if (ic) ic += C;
    }
}

/* The real cells of output (oy, ox)'s window in scan order: flat positions, element offsets and
 * cell numbers; returns their number. */
static int FN(pool_cells)(const cyc_geom_t *g, int oy, int ox, int64_t *pos, ptrdiff_t *off,
                          int64_t *num)
{
    int y0 = oy * g->sh - g->pad_top, x0 = ox * g->sw - g->pad_left, nc = 0;
    for (int i = 0; i < g->kh; i++) {
        int iy = y0 + i * g->dh;
        if (iy < 0 || iy >= g->h) continue;
        for (int j = 0; j < g->kw; j++) {
            int ix = x0 + j * g->dw;
            if (ix < 0 || ix >= g->w) continue;
            pos[nc] = (int64_t)iy * g->w + ix;
            off[nc] = (ptrdiff_t)pos[nc] * g->c;
            num[nc] = i * g->kw + j;
            nc++;
        }
    }
    return nc;
}

/* A whole window's cells relative to its first: the table for windows inside the image. */
static void FN(window_table)(const cyc_geom_t *g, int64_t *dpos, ptrdiff_t *off)
{
    for (int i = 0, k = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++, k++) {
            dpos[k] = (int64_t)i * g->dh * g->w + (int64_t)j * g->dw;
            off[k] = (ptrdiff_t)dpos[k] * g->c;
        }
}

/* The output columns [*run0, *run1) of row oy whose windows lie wholly inside the image (an
 * empty run at ow if none), given the window's inside_columns [lo, hi); returns the flat
 * position of the run's first cell. */
static inline int64_t FN(inside_run)(const cyc_geom_t *g, int oy, int lo, int hi, int *run0,
                                     int *run1)
{
    const int y0 = oy * g->sh - g->pad_top;
    const int rows_inside = y0 >= 0 && y0 + (g->kh - 1) * g->dh < g->h;
    *run0 = rows_inside && lo < hi ? lo : g->ow;
    *run1 = *run0 < g->ow ? hi : g->ow;
    return (int64_t)y0 * g->w + (int64_t)*run0 * g->sw - g->pad_left;
}

/* Max pooling: for each window, the max and (if idx or cell) the record of its first maximum. */
void FN(cyc_max_pool)(const cyc_geom_t *g, const T *x, T *y, int64_t *idx, uint8_t *cell,
                      int relu_in, ptrdiff_t r0, ptrdiff_t r1)
{
    const int C = g->c;
    const int ncell = g->kh * g->kw;
    const int64_t none = cell ? CYC_POOL_NO_CELL : -1;
    if (ncell > CYC_POOL_CELLS) {
        FN(max_pool_large)(g, x, y, idx, cell, relu_in, r0, r1);
        return;
    }
    int64_t pos[CYC_POOL_CELLS], num[CYC_POOL_CELLS], tpos[CYC_POOL_CELLS], key[CYC_POOL_CELLS];
    ptrdiff_t off[CYC_POOL_CELLS], toff[CYC_POOL_CELLS];
    FN(window_table)(g, tpos, toff);
    int lo, hi;
    FN(inside_columns)(g, -g->pad_left, (g->kw - 1) * g->dw + 1, &lo, &hi);
    for (ptrdiff_t rr = r0; rr < r1; rr++) {
        int n = (int)(rr / g->oh), oy = (int)(rr % g->oh);
        const T *xn = x + (ptrdiff_t)n * g->h * g->w * C;
        int run0, run1;
        const int64_t p0 = FN(inside_run)(g, oy, lo, hi, &run0, &run1);
        if (run0 < run1) {
            const ptrdiff_t o = (rr * g->ow + run0) * C;
            const int64_t kstep = cell ? 0 : g->sw;
            for (int k = 0; k < ncell; k++) key[k] = cell ? k : p0 + tpos[k];
            const T *base = xn + p0 * C;
            const ptrdiff_t step = (ptrdiff_t)g->sw * C;
            T *yo = y + o;
            int64_t *io = idx ? idx + o : NULL;
            uint8_t *ic = cell ? cell + o : NULL;
            const int count = run1 - run0;
            /* 2x2, the usual pool: one copy per record kind, so that the vector loop tests
             * none (with io and ic tested per vector, the seed's pool1 took 1.2x to 1.9x as
             * long on one AVX2 thread, the kernel alone in a C loop) */
            if (ncell == 4 && ic)
                FN(max_windows)(base, step, toff, key, kstep, 4, count, C, yo, NULL, ic, relu_in,
                                none);
            else if (ncell == 4 && io)
                FN(max_windows)(base, step, toff, key, kstep, 4, count, C, yo, io, NULL, relu_in,
                                none);
            else if (ncell == 4)
                FN(max_windows)(base, step, toff, key, kstep, 4, count, C, yo, NULL, NULL,
                                relu_in, none);
            else if (ncell == 9)
                FN(max_windows)(base, step, toff, key, kstep, 9, count, C, yo, io, ic, relu_in,
                                none);
            else
                FN(max_windows)(base, step, toff, key, kstep, ncell, count, C, yo, io, ic,
                                relu_in, none);
        }
        for (int ox = 0; ox < g->ow; ox++) {
            if (ox == run0) ox = run1;
            if (ox >= g->ow) break;
            const ptrdiff_t o = (rr * g->ow + ox) * C;
            T *yo = y + o;
            int64_t *io = idx ? idx + o : NULL;
            uint8_t *ic = cell ? cell + o : NULL;
            int nc = FN(pool_cells)(g, oy, ox, pos, off, num);
            if (!nc) {
                /* a window entirely in the padding: max of nothing */
                for (int c = 0; c < C; c++) yo[c] = -(T)INFINITY;
                if (io) for (int c = 0; c < C; c++) io[c] = -1;
                if (ic) memset(ic, CYC_POOL_NO_CELL, (size_t)C);
                continue;
            }
            FN(max_windows)(xn, 0, off, cell ? num : pos, 0, nc, 1, C, yo, io, ic, relu_in,
                            none);
        }
    }
}

/* The flat position of cell k of output (oy, ox)'s window, or -2 where that cell is not a real
 * one (past the window, or in the padding). */
static inline int64_t FN(cell_position)(const cyc_geom_t *g, int oy, int ox, int k)
{
    if (k >= g->kh * g->kw) return -2;
    int iy = oy * g->sh - g->pad_top + k / g->kw * g->dh;
    int ix = ox * g->sw - g->pad_left + k % g->kw * g->dw;
    return (iy >= 0 && iy < g->h && ix >= 0 && ix < g->w) ? (int64_t)iy * g->w + ix : -2;
}

/* Whether the pool's windows (at most CYC_POOL_CELLS cells) tile the input from its top-left
 * corner: side by side, no gaps, no padding before them. */
static inline int FN(windows_tile)(const cyc_geom_t *g)
{
    return g->dh == 1 && g->dw == 1 && g->sh == g->kh && g->sw == g->kw && g->pad_top == 0 &&
           g->pad_left == 0 && g->kh * g->kw <= CYC_POOL_CELLS;
}

/* v stored at p past the caches (non-temporal), in 16-byte pieces: NumPy's arrays are only
 * sure to be 16-byte aligned.  The caller ends with FN(stream_fence). */
ALWAYS_INLINE void FN(store_stream)(T *p, V v)
{
#if defined(CYC_HAVE_X86_ISAS)
    for (int i = 0; i < CYC_VBYTES / 16; i++) {
#if defined(CYC_T_IS_DOUBLE)
        _mm_stream_pd(p + 2 * i, (__m128d){v[2 * i], v[2 * i + 1]});
#else
        _mm_stream_ps(p + 4 * i, (__m128){v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]});
#endif
    }
#else
    STOREV(p, v);
#endif
}

/* Non-temporal stores before it are seen before any store after it (by other threads too). */
ALWAYS_INLINE void FN(stream_fence)(void)
{
#if defined(CYC_HAVE_X86_ISAS)
    _mm_sfence();
#endif
}

/* The gradient of `count` disjoint windows along an output row: each window's d (C channels) to
 * the cell its record (io or ic) names, zeros to its other cells.  Window i's cells are at base +
 * i * step + off[k] and record key[k] + i * key_step (as in max_windows).  Returns the number of
 * records that name neither a cell of their window nor `none`.  by_cell: the records are cells
 * (ic); stream: stores past the caches (both compile-time constants). */
ALWAYS_INLINE ptrdiff_t FN(unpool_windows)(const T *d, const int64_t *io, const uint8_t *ic,
                                           T *base, ptrdiff_t step, const ptrdiff_t *off,
                                           const int64_t *key, int64_t key_step, int ncell,
                                           int count, int C, int64_t none, const int by_cell,
                                           const int stream)
{
    const int cv = C / VLEN * VLEN;
    ptrdiff_t stray = 0;
    IV unplaced = {0};   /* per lane */
    T *dst[CYC_POOL_CELLS];
    IV kv[CYC_POOL_CELLS];
    for (int k = 0; k < ncell; k++) {
        dst[k] = base + off[k];
        kv[k] = (IV){0} + (CYC_IT)key[k];
    }
    for (int i = 0; i < count; i++) {
        for (int c0 = 0; c0 < cv; c0 += VLEN) {
            V dv = LOADV(d + c0);
            IV iv = by_cell ? FN(load_rec)(NULL, ic + c0) : FN(load_rec)(io + c0, NULL);
            IV placed = iv == (CYC_IT)none;
            for (int k = 0; k < ncell; k++) {
                IV m = iv == kv[k];
                placed |= m;
                if (stream) FN(store_stream)(dst[k] + c0, (V)((IV)dv & m));
                else STOREV(dst[k] + c0, (V)((IV)dv & m));
            }
            unplaced += placed + 1;   /* placed lanes are -1 */
        }
        for (int c = cv; c < C; c++) {
            const int64_t r = by_cell ? ic[c] : io[c];
            int placed = r == none;
            for (int k = 0; k < ncell; k++) {
                const int hit = r == key[k] + i * key_step;
                placed |= hit;
                dst[k][c] = hit ? d[c] : (T)0;
            }
            stray += !placed;
        }
        for (int k = 0; k < ncell; k++) dst[k] += step;
        if (key_step)
            for (int k = 0; k < ncell; k++) kv[k] += (CYC_IT)key_step;
        d += C;
        if (by_cell) ic += C;
        else io += C;
    }
    for (int l = 0; l < VLEN; l++) stray += unplaced[l];
    return stray;
}

/* Max-pool gradient: each output's gradient goes to the input its record names.  Where windows
 * cannot overlap, every input cell belongs to at most one window and is written once, directly
 * (no accumulation), a row's windows inside the image in one run (as in the forward pass); where
 * they also tile the whole input, no zeroing pass is needed, and with `stream` the cells are
 * stored past the caches.  by_cell and stream are compile-time constants: the records are cell
 * (1) or idx (0). */
ALWAYS_INLINE ptrdiff_t FN(max_pool_bwd)(const cyc_geom_t *g, const T *dy, const int64_t *idx,
                                         const uint8_t *cell, T *dx, ptrdiff_t n0, ptrdiff_t n1,
                                         const int by_cell, const int stream)
{
    ptrdiff_t stray = 0;
    const int C = g->c;
    const int64_t none = by_cell ? CYC_POOL_NO_CELL : -1;
    const ptrdiff_t in_plane = (ptrdiff_t)g->h * g->w, out_plane = (ptrdiff_t)g->oh * g->ow;
    const int ncell = g->kh * g->kw;
    const int disjoint = g->sh >= (g->kh - 1) * g->dh + 1 && g->sw >= (g->kw - 1) * g->dw + 1 &&
                         ncell <= CYC_POOL_CELLS;
    /* Windows that tile the input from its top-left corner write every cell they cover, so
     * only the rows below them and the columns right of them need zeros: with a 2x2 pool of an
     * odd size a sixth of the input, where the whole input had been zeroed and then most of it
     * written again (in-process A/B: the backward pass of a 27x27x32 input at batch 32 took 0.83
     * of the time, the seed's 11x11x64 0.94). */
    const int tiled = FN(windows_tile)(g);
    const int th = !tiled ? 0 : (ptrdiff_t)g->oh * g->sh < g->h ? g->oh * g->sh : g->h;
    const int tw = !tiled ? 0 : (ptrdiff_t)g->ow * g->sw < g->w ? g->ow * g->sw : g->w;
    int64_t pos[CYC_POOL_CELLS], num[CYC_POOL_CELLS], tpos[CYC_POOL_CELLS], key[CYC_POOL_CELLS];
    ptrdiff_t off[CYC_POOL_CELLS], toff[CYC_POOL_CELLS];
    int lo = 0, hi = 0;
    if (disjoint) {
        FN(window_table)(g, tpos, toff);
        FN(inside_columns)(g, -g->pad_left, (g->kw - 1) * g->dw + 1, &lo, &hi);
    }
    for (ptrdiff_t n = n0; n < n1; n++) {
        T *dxn = dx + n * in_plane * C;
        const T *dyn = dy + n * out_plane * C;
        const ptrdiff_t r0 = n * out_plane * C;
        if (!tiled) {
            memset(dxn, 0, sizeof(T) * (size_t)(in_plane * C));
        } else {
            if (tw < g->w)
                for (int iy = 0; iy < th; iy++)
                    memset(dxn + ((ptrdiff_t)iy * g->w + tw) * C, 0,
                           sizeof(T) * (size_t)(g->w - tw) * (size_t)C);
            memset(dxn + (ptrdiff_t)th * g->w * C, 0,
                   sizeof(T) * (size_t)(g->h - th) * (size_t)g->w * (size_t)C);
        }
        for (int oy = 0; oy < g->oh; oy++) {
            const ptrdiff_t orow = (ptrdiff_t)oy * g->ow * C;
            int run0 = g->ow, run1 = g->ow;
            if (disjoint) {
                const int64_t p0 = FN(inside_run)(g, oy, lo, hi, &run0, &run1);
                if (run0 < run1) {
                    for (int k = 0; k < ncell; k++) key[k] = by_cell ? k : p0 + tpos[k];
                    const ptrdiff_t o = orow + (ptrdiff_t)run0 * C;
                    const T *d = dyn + o;
                    const int64_t *io = by_cell ? NULL : idx + r0 + o;
                    const uint8_t *ic = by_cell ? cell + r0 + o : NULL;
                    const ptrdiff_t step = (ptrdiff_t)g->sw * C;
                    const int64_t kstep = by_cell ? 0 : g->sw;
                    if (ncell == 4)
                        stray += FN(unpool_windows)(d, io, ic, dxn + p0 * C, step, toff, key,
                                                    kstep, 4, run1 - run0, C, none, by_cell,
                                                    stream);
                    else
                        stray += FN(unpool_windows)(d, io, ic, dxn + p0 * C, step, toff, key,
                                                    kstep, ncell, run1 - run0, C, none, by_cell,
                                                    stream);
                }
            }
            for (int ox = 0; ox < g->ow; ox++) {
                if (ox == run0) ox = run1;
                if (ox >= g->ow) break;
                const ptrdiff_t o = orow + (ptrdiff_t)ox * C;
                const T *d = dyn + o;
                const int64_t *io = by_cell ? NULL : idx + r0 + o;
                const uint8_t *ic = by_cell ? cell + r0 + o : NULL;
                if (!disjoint) {
                    for (int c = 0; c < C; c++) {
                        int64_t p = by_cell ? ic[c] : io[c];
                        if (p == none) continue;
                        if (by_cell) p = FN(cell_position)(g, oy, ox, (int)p);
                        if (p >= 0 && p < in_plane) dxn[p * C + c] += d[c];
                        else stray++;
                    }
                    continue;
                }
                /* a window reaching into the padding: its real cells, as in the forward pass */
                const int nc = FN(pool_cells)(g, oy, ox, pos, off, num);
                stray += FN(unpool_windows)(d, io, ic, dxn, 0, off, by_cell ? num : pos, 0, nc, 1,
                                            C, none, by_cell, 0);
            }
        }
    }
    if (stream) FN(stream_fence)();
    return stray;
}

/* stream: see max_pool_bwd; taken only where the windows tile the input and every store is a
 * whole vector at a 16-byte boundary. */
ptrdiff_t FN(cyc_max_pool_bwd)(const cyc_geom_t *g, const T *dy, const int64_t *idx,
                               const uint8_t *cell, T *dx, int stream, ptrdiff_t n0, ptrdiff_t n1)
{
    stream = stream && FN(windows_tile)(g) && g->c % VLEN == 0 &&
             (g->c * sizeof(T)) % 16 == 0 && (uintptr_t)dx % 16 == 0;
    if (cell)
        return stream ? FN(max_pool_bwd)(g, dy, NULL, cell, dx, n0, n1, 1, 1)
                      : FN(max_pool_bwd)(g, dy, NULL, cell, dx, n0, n1, 1, 0);
    return stream ? FN(max_pool_bwd)(g, dy, idx, NULL, dx, n0, n1, 0, 1)
                  : FN(max_pool_bwd)(g, dy, idx, NULL, dx, n0, n1, 0, 0);
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
#undef CYC_IT
#undef CYC_L64
#undef CYC_DOT_ACC
#undef CYC_ORIGIN
#undef CYC_CHANNEL_BLOCKS
#undef CYC_X86_512
#undef CYC_X86_256
