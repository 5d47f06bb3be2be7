# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled kernels: the parallel loops over independent work, calling the C inner loops.

Private.  Callers (cyconv.ops) pass validated, C-contiguous NHWC arrays of one dtype, a Geometry
from cyconv._args, preallocated outputs and a thread count; nothing here checks arguments again.
Every loop runs with the GIL released; per-thread scratch is allocated once per thread inside
the parallel region, never inside the loops.
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport exp, expf, log, logf
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

import numpy as np

cnp.import_array()

cdef extern from "cyconv.h" nogil:
    ctypedef struct cyc_geom_t:
        int n, h, w, c
        int kh, kw
        int sh, sw, dh, dw
        int pad_top, pad_left
        int pad_bottom, pad_right
        int oh, ow
        int cout, groups

    int cyc_isa_best()
    int cyc_isa_set(int isa)
    int cyc_isa_get()
    const char *cyc_isa_name(int isa)
    int cyc_avx512_emulated()
    int cyc_openmp_enabled()
    int cyc_omp_max_threads()
    const char *cyc_compiler()
    size_t cyc_cache_bytes(int level)

    enum:
        CYC_SCRATCH_TILES
        CYC_SCRATCH_PACKED
        CYC_SCRATCH_ZEROS
        CYC_SCRATCH_PARTIAL
        CYC_SCRATCH_STAGE
    void *cyc_scratch(int slot, size_t nbytes)
    void cyc_scratch_done(int slot, void *block)

    size_t cyc_conv_packed_len(const cyc_geom_t *g, int transposed, int elem_size)
    size_t cyc_conv_scratch_bytes(const cyc_geom_t *g, int transposed, int elem_size)
    size_t cyc_conv_zeros_len(const cyc_geom_t *g)
    size_t cyc_conv_dw_acc_len(const cyc_geom_t *g, int elem_size)
    size_t cyc_conv_dw_scratch_bytes(const cyc_geom_t *g, int elem_size)

    size_t cyc_conv_rows(const cyc_geom_t *g, int transposed)
    void cyc_conv_pack_f32(const cyc_geom_t *g, const float *w, const float *b, int tr, float *out,
                           ptrdiff_t k0, ptrdiff_t k1)
    void cyc_conv_pack_f64(const cyc_geom_t *g, const double *w, const double *b, int tr,
                           double *out, ptrdiff_t k0, ptrdiff_t k1)
    void cyc_conv_fwd_f32(const cyc_geom_t *g, const float *x, const float *p, int relu,
                          const float *z, float *y, ptrdiff_t m0, ptrdiff_t m1, void *s)
    void cyc_conv_fwd_f64(const cyc_geom_t *g, const double *x, const double *p, int relu,
                          const double *z, double *y, ptrdiff_t m0, ptrdiff_t m1, void *s)
    void cyc_conv_bwd_data_f32(const cyc_geom_t *g, const float *dy, const float *p,
                               const float *z, float *dx, ptrdiff_t m0, ptrdiff_t m1, void *s)
    void cyc_conv_bwd_data_f64(const cyc_geom_t *g, const double *dy, const double *p,
                               const double *z, double *dx, ptrdiff_t m0, ptrdiff_t m1, void *s)
    enum:
        CYC_GATHER
        CYC_SCATTER_TAPS
        CYC_SCATTER_ROWS
        CYC_ROW_TAPS
    int cyc_conv_bwd_data_scatters(const cyc_geom_t *g, int elem_size)
    int cyc_conv_dense_dx(const cyc_geom_t *g, int elem_size)
    int cyc_conv_dense_fwd_applies(const cyc_geom_t *g, int elem_size)
    void cyc_conv_dense_fwd_f32(const float *x, const float *w, const float *bias, int relu,
                                float *y, ptrdiff_t P, ptrdiff_t cin, int cout, int c0, int c1)
    void cyc_conv_dense_fwd_f64(const double *x, const double *w, const double *bias, int relu,
                                double *y, ptrdiff_t P, ptrdiff_t cin, int cout, int c0, int c1)
    ptrdiff_t cyc_gemm_planes_col_step(int elem_size)
    size_t cyc_gemm_planes_panel_len(ptrdiff_t K, ptrdiff_t N, int elem_size)
    void cyc_gemm_planes_pack_f32(const float *b, ptrdiff_t K, ptrdiff_t N, int ones,
                                  ptrdiff_t n0, ptrdiff_t n1, float *panels)
    void cyc_gemm_planes_pack_f64(const double *b, ptrdiff_t K, ptrdiff_t N, int ones,
                                  ptrdiff_t n0, ptrdiff_t n1, double *panels)
    void cyc_gemm_planes_pack_t_f32(const float *x, ptrdiff_t K, ptrdiff_t N, int ones,
                                    float *panels)
    void cyc_gemm_planes_pack_t_f64(const double *x, ptrdiff_t K, ptrdiff_t N, int ones,
                                    double *panels)
    void cyc_gemm_planes_f32(const float *a, const float *panels, int relu, float *y,
                             ptrdiff_t K, ptrdiff_t N, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0,
                             ptrdiff_t n1, ptrdiff_t k0, ptrdiff_t k1)
    void cyc_gemm_planes_f64(const double *a, const double *panels, int relu, double *y,
                             ptrdiff_t K, ptrdiff_t N, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0,
                             ptrdiff_t n1, ptrdiff_t k0, ptrdiff_t k1)
    void cyc_conv_dense_dx_f32(const float *dy, const float *w, float *dx, ptrdiff_t P,
                               ptrdiff_t cin, int cout, ptrdiff_t k0, ptrdiff_t k1)
    void cyc_conv_dense_dx_f64(const double *dy, const double *w, double *dx, ptrdiff_t P,
                               ptrdiff_t cin, int cout, ptrdiff_t k0, ptrdiff_t k1)
    size_t cyc_conv_scatter_scratch_bytes(const cyc_geom_t *g, int rows, int elem_size)
    void cyc_conv_bwd_data_scatter_f32(const cyc_geom_t *g, int rows, const float *dy,
                                       const float *p, float *dx, ptrdiff_t n0, ptrdiff_t n1,
                                       void *s)
    void cyc_conv_bwd_data_scatter_f64(const cyc_geom_t *g, int rows, const double *dy,
                                       const double *p, double *dx, ptrdiff_t n0, ptrdiff_t n1,
                                       void *s)
    enum:
        CYC_WINO_FWD
        CYC_WINO_DX
        CYC_DEPTHWISE_MAX_TAPS
    int cyc_conv_winograd(const cyc_geom_t *g, int what, int elem_size)
    int cyc_conv_winograd_set(int on)
    int cyc_conv_winograd_enabled()
    int cyc_conv_winograd_largest_tile()
    ptrdiff_t cyc_conv_winograd_tiles(const cyc_geom_t *g, int mode)
    int cyc_conv_winograd_tile(const cyc_geom_t *g, int mode)
    int cyc_conv_winograd_block(const cyc_geom_t *g, int mode, int elem_size)
    size_t cyc_conv_winograd_scratch_bytes(const cyc_geom_t *g, int mode, int elem_size)
    void cyc_conv_winograd_f32(const cyc_geom_t *g, int mode, const float *src, const float *p,
                               int relu, float *dst, ptrdiff_t t0, ptrdiff_t t1, void *s)
    void cyc_conv_winograd_f64(const cyc_geom_t *g, int mode, const double *src,
                               const double *p, int relu, double *dst, ptrdiff_t t0,
                               ptrdiff_t t1, void *s)
    ptrdiff_t cyc_conv_winograd_dw_tiles(const cyc_geom_t *g, int elem_size)
    int cyc_conv_winograd_dw_tile(const cyc_geom_t *g, int elem_size)
    size_t cyc_conv_winograd_dw_acc_len(const cyc_geom_t *g, int elem_size)
    size_t cyc_conv_winograd_dw_scratch_bytes(const cyc_geom_t *g, int elem_size)
    void cyc_conv_bwd_filter_winograd_f32(const cyc_geom_t *g, const float *x, const float *dy,
                                          const float *ry, float *du, float *db, ptrdiff_t t0,
                                          ptrdiff_t t1, void *s)
    void cyc_conv_bwd_filter_winograd_f64(const cyc_geom_t *g, const double *x, const double *dy,
                                          const double *ry, double *du, double *db,
                                          ptrdiff_t t0, ptrdiff_t t1, void *s)
    void cyc_conv_dw_finish_winograd_f32(const cyc_geom_t *g, const float *accs, int n,
                                         float *dw, ptrdiff_t c0, ptrdiff_t c1)
    void cyc_conv_dw_finish_winograd_f64(const cyc_geom_t *g, const double *accs, int n,
                                         double *dw, ptrdiff_t c0, ptrdiff_t c1)
    void cyc_depthwise_fwd_f32(const cyc_geom_t *g, const float *x, const float *w,
                               const float *b, int relu, float *y, ptrdiff_t r0, ptrdiff_t r1)
    void cyc_depthwise_fwd_f64(const cyc_geom_t *g, const double *x, const double *w,
                               const double *b, int relu, double *y, ptrdiff_t r0, ptrdiff_t r1)
    void cyc_depthwise_bwd_data_f32(const cyc_geom_t *g, const float *dy, const float *w,
                                    float *dx, ptrdiff_t r0, ptrdiff_t r1)
    void cyc_depthwise_bwd_data_f64(const cyc_geom_t *g, const double *dy, const double *w,
                                    double *dx, ptrdiff_t r0, ptrdiff_t r1)
    void cyc_depthwise_bwd_filter_f32(const cyc_geom_t *g, const float *x, const float *dy,
                                      const float *ry, float *dw, float *db, ptrdiff_t r0,
                                      ptrdiff_t r1, float *row)
    void cyc_depthwise_bwd_filter_f64(const cyc_geom_t *g, const double *x, const double *dy,
                                      const double *ry, double *dw, double *db, ptrdiff_t r0,
                                      ptrdiff_t r1, double *row)
    ctypedef struct cyc_unpool_t:
        const void *dy
        const uint8_t *cell
        int oh, ow, kh, kw, sh, sw
    void cyc_conv_bwd_filter_f32(const cyc_geom_t *g, const float *x, const float *dy,
                                 const float *ry, const cyc_unpool_t *up, float *dw, float *db,
                                 ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t k0, ptrdiff_t k1, void *s)
    void cyc_conv_bwd_filter_f64(const cyc_geom_t *g, const double *x, const double *dy,
                                 const double *ry, const cyc_unpool_t *up, double *dw,
                                 double *db, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t k0, ptrdiff_t k1,
                                 void *s)
    size_t cyc_conv_dw_acc_row(const cyc_geom_t *g, int elem_size)
    int cyc_conv_dw_big_sums(const cyc_geom_t *g, int elem_size)
    int cyc_conv_dw_by_windows(const cyc_geom_t *g)
    void cyc_conv_bwd_filter_by_windows_f32(const cyc_geom_t *g, const float *x,
                                            const cyc_unpool_t *up, float *dw, float *db,
                                            ptrdiff_t w0, ptrdiff_t w1)
    void cyc_conv_bwd_filter_by_windows_f64(const cyc_geom_t *g, const double *x,
                                            const cyc_unpool_t *up, double *dw, double *db,
                                            ptrdiff_t w0, ptrdiff_t w1)
    void cyc_conv_dw_finish_f32(const cyc_geom_t *g, const float *accs, int n, float *dw,
                                ptrdiff_t k0, ptrdiff_t k1)
    void cyc_conv_dw_finish_f64(const cyc_geom_t *g, const double *accs, int n, double *dw,
                                ptrdiff_t k0, ptrdiff_t k1)

    void cyc_max_pool_f32(const cyc_geom_t *g, const float *x, float *y, int64_t *idx,
                          uint8_t *cell, int relu_in, ptrdiff_t r0, ptrdiff_t r1)
    void cyc_max_pool_f64(const cyc_geom_t *g, const double *x, double *y, int64_t *idx,
                          uint8_t *cell, int relu_in, ptrdiff_t r0, ptrdiff_t r1)
    ptrdiff_t cyc_max_pool_bwd_f32(const cyc_geom_t *g, const float *dy, const int64_t *idx,
                                   const uint8_t *cell, float *dx, int stream, ptrdiff_t n0,
                                   ptrdiff_t n1)
    ptrdiff_t cyc_max_pool_bwd_f64(const cyc_geom_t *g, const double *dy, const int64_t *idx,
                                   const uint8_t *cell, double *dx, int stream, ptrdiff_t n0,
                                   ptrdiff_t n1)
    void cyc_transpose_f32(const float *src, ptrdiff_t src_ld, float *dst, ptrdiff_t dst_ld,
                           ptrdiff_t rows, ptrdiff_t cols)
    void cyc_transpose_f64(const double *src, ptrdiff_t src_ld, double *dst, ptrdiff_t dst_ld,
                           ptrdiff_t rows, ptrdiff_t cols)
    void cyc_transpose_u8(const uint8_t *src, ptrdiff_t src_ld, uint8_t *dst, ptrdiff_t dst_ld,
                          ptrdiff_t rows, ptrdiff_t cols)
    int CYC_PLANAR_MAX_C
    int CYC_PLANAR_MAX_TAPS
    int CYC_PLANAR_PK
    size_t cyc_conv_planar_packed_len(const cyc_geom_t *g)
    size_t cyc_conv_planar_stage_bytes(const cyc_geom_t *g, int band_rows, int elem_size)
    void cyc_conv_planar_f32(const cyc_geom_t *g, const float *x, const float *packed, int relu,
                             float *y, ptrdiff_t n, int oy0, int oy1, float *stage)
    void cyc_conv_planar_f64(const cyc_geom_t *g, const double *x, const double *packed,
                             int relu, double *y, ptrdiff_t n, int oy0, int oy1, double *stage)
    void cyc_adam_f32(float *var, const float *g, float *m, float *v, ptrdiff_t n, float alpha,
                      float c1, float c2, float eps)
    void cyc_adam_f64(double *var, const double *g, double *m, double *v, ptrdiff_t n,
                      double alpha, double c1, double c2, double eps)
    void cyc_relu_bwd_f32(const float *dy, const float *y, float *out, ptrdiff_t n)
    void cyc_relu_bwd_f64(const double *dy, const double *y, double *out, ptrdiff_t n)
    void cyc_dropout_f32(const float *x, uint64_t key, uint32_t threshold, float scale,
                         float *y, uint8_t *keep, ptrdiff_t i0, ptrdiff_t i1)
    void cyc_dropout_f64(const double *x, uint64_t key, uint32_t threshold, double scale,
                         double *y, uint8_t *keep, ptrdiff_t i0, ptrdiff_t i1)
    void cyc_dropout_bwd_f32(const float *dy, const uint8_t *keep, float scale, float *out,
                             ptrdiff_t n)
    void cyc_dropout_bwd_f64(const double *dy, const uint8_t *keep, double scale, double *out,
                             ptrdiff_t n)
    void cyc_avg_pool_f32(const cyc_geom_t *g, const float *x, float *y, int cip,
                          ptrdiff_t r0, ptrdiff_t r1)
    void cyc_avg_pool_f64(const cyc_geom_t *g, const double *x, double *y, int cip,
                          ptrdiff_t r0, ptrdiff_t r1)
    void cyc_avg_pool_bwd_f32(const cyc_geom_t *g, const float *dy, float *dx, int cip,
                              ptrdiff_t n0, ptrdiff_t n1)
    void cyc_avg_pool_bwd_f64(const cyc_geom_t *g, const double *dy, double *dx, int cip,
                              ptrdiff_t n0, ptrdiff_t n1)


# Resolve the instruction set once, while single-threaded.
cyc_isa_get()

ISA_NAMES = ("portable", "avx2", "avx512")


def openmp_enabled():
    return bool(cyc_openmp_enabled())


def omp_max_threads():
    return cyc_omp_max_threads()


def compiler():
    return cyc_compiler().decode()


def cache_bytes(int level):
    """The L2 (a core's, level 2) or L3 (shared, level 3) cache in bytes as the C library
    reports it; 0 where it cannot say."""
    return cyc_cache_bytes(level)


def isa_best():
    return ISA_NAMES[cyc_isa_best()]


def isa_get():
    return ISA_NAMES[cyc_isa_get()]


def avx512_emulated():
    """Whether this is a test build whose AVX-512 path runs on AVX2 (see cyconv.h)."""
    return bool(cyc_avx512_emulated())


def isa_set(name):
    """Select an instruction set by name; returns the one now in use (capped by the CPU)."""
    return ISA_NAMES[cyc_isa_set(ISA_NAMES.index(name))]


cdef cyc_geom_t _geom(object g):
    cdef cyc_geom_t s
    s.n, s.h, s.w, s.c = g.n, g.h, g.w, g.c
    s.kh, s.kw, s.sh, s.sw, s.dh, s.dw = g.kh, g.kw, g.sh, g.sw, g.dh, g.dw
    s.pad_top, s.pad_bottom, s.pad_left, s.pad_right = (
        g.pad_top, g.pad_bottom, g.pad_left, g.pad_right)
    s.oh, s.ow = g.oh, g.ow
    s.cout, s.groups = g.cout, g.groups
    return s


cdef inline Py_ssize_t _chunk(Py_ssize_t total, int n_threads, Py_ssize_t align) noexcept nogil:
    """Work per prange iteration: several chunks per thread (the machine is shared, so threads
    finish unevenly: 8 per thread instead of 4 made layers 2.5-4% faster, alternating in one
    process), each a multiple of `align` so that register tiles stay whole."""
    cdef Py_ssize_t pieces = 8 * n_threads if n_threads > 1 else 1
    cdef Py_ssize_t c = (total + pieces - 1) // pieces
    c = (c + align - 1) // align * align
    return c if c > 0 else align


cdef inline Py_ssize_t _tile_chunk(Py_ssize_t total, int n_threads) noexcept nogil:
    """Pixels per prange iteration of the direct tiles: whole tiles of every instruction set's
    height (48 pixels), or of 12 where that would leave a thread without work (a Dense
    layer's batch of 32 went to one thread)."""
    return _chunk(total, n_threads, 48 if total >= 48 * n_threads else 12)


cdef inline Py_ssize_t _n_chunks(Py_ssize_t total, Py_ssize_t chunk) noexcept nogil:
    return (total + chunk - 1) // chunk


cdef inline Py_ssize_t _pack_chunk(Py_ssize_t K, int n_threads) noexcept nogil:
    """Rows of packed weights per prange iteration: whole blocks of 16, which the input
    gradient's packing transposes in registers (a Dense layer's 64 rows went 4 at a time, each
    transposed element by element)."""
    return _chunk(K, n_threads, 16)


# What _run_tiles runs: the forward pass, or the input gradient gathered or scattered by kernel
# taps or kernel rows; or either by Winograd.
cdef enum:
    FORWARD = 0
    GATHER_DX = 1
    SCATTER_DX = 2
    SCATTER_ROWS_DX = 3
    WINOGRAD = 4
    WINOGRAD_DX = 5
    # the depthwise kernels (any pass), and the direct weight gradient
    DEPTHWISE = 6
    DIRECT_DW = 7
    # the weight gradient through a max-pool, by the pool's windows
    POOL_WINDOWS_DW = 8
    # a Dense layer's input gradient (cyc_conv_dense_dx) and forward pass (cyc_conv_dense_fwd)
    DENSE_DX = 9
    DENSE_FWD = 10

ROUTE_NAMES = {FORWARD: "direct", DIRECT_DW: "direct", WINOGRAD: "winograd",
               WINOGRAD_DX: "winograd", DEPTHWISE: "depthwise", GATHER_DX: "gather",
               SCATTER_DX: "scatter taps", SCATTER_ROWS_DX: "scatter rows",
               POOL_WINDOWS_DW: "pool windows", DENSE_DX: "dense", DENSE_FWD: "dense"}


cdef inline int _packing(int kind) noexcept nogil:
    """cyc_conv_pack's `transposed` for the weights that kind of run reads."""
    if kind == FORWARD:
        return 0
    if kind == WINOGRAD:
        return CYC_WINO_FWD
    if kind == WINOGRAD_DX:
        return CYC_WINO_DX
    return CYC_ROW_TAPS if kind == SCATTER_ROWS_DX else 1


cdef inline void _tiles(int kind, const cyc_geom_t *g, const floating *src,
                        const floating *packed, bint relu, const floating *zeros, floating *dst,
                        Py_ssize_t m0, Py_ssize_t m1, void *scratch) noexcept nogil:
    if kind == WINOGRAD or kind == WINOGRAD_DX:
        if floating is float:
            cyc_conv_winograd_f32(g, _packing(kind), src, packed, relu, dst, m0, m1, scratch)
        else:
            cyc_conv_winograd_f64(g, _packing(kind), src, packed, relu, dst, m0, m1, scratch)
        return
    if floating is float:
        if kind == FORWARD:
            cyc_conv_fwd_f32(g, src, packed, relu, zeros, dst, m0, m1, scratch)
        elif kind == GATHER_DX:
            cyc_conv_bwd_data_f32(g, src, packed, zeros, dst, m0, m1, scratch)
        else:
            cyc_conv_bwd_data_scatter_f32(g, kind == SCATTER_ROWS_DX, src, packed, dst, m0, m1,
                                          scratch)
    else:
        if kind == FORWARD:
            cyc_conv_fwd_f64(g, src, packed, relu, zeros, dst, m0, m1, scratch)
        elif kind == GATHER_DX:
            cyc_conv_bwd_data_f64(g, src, packed, zeros, dst, m0, m1, scratch)
        else:
            cyc_conv_bwd_data_scatter_f64(g, kind == SCATTER_ROWS_DX, src, packed, dst, m0, m1,
                                          scratch)


cdef inline void _pack(const cyc_geom_t *g, const floating *w, const floating *bias,
                       int transposed, floating *packed, Py_ssize_t k0,
                       Py_ssize_t k1) noexcept nogil:
    """Rows [k0, k1) of the packed weights (see cyc_conv_pack), so that threads share it."""
    if floating is float:
        cyc_conv_pack_f32(g, w, bias, transposed, packed, k0, k1)
    else:
        cyc_conv_pack_f64(g, w, bias, transposed, packed, k0, k1)


# Output pixels a thread stages at a time on their way into NCHW planes, in bytes (rounded to
# whole register tiles: a multiple of every instruction set's tile height, at least one).
# Against 128 KB, 32 KB stages took 1.04x to 1.09x as long (each plane's run is shorter), and
# 512 KB the same (in-process A/B: the seed conv1 at batch 32 and 256, the ImageNet first layer).
cdef Py_ssize_t _STAGE_BYTES = 128 * 1024


cdef void _tiles_into_planes(const cyc_geom_t *g, const floating *src, const floating *packed,
                             bint relu, const floating *zeros, floating *stage,
                             Py_ssize_t stage_px, floating *planes, Py_ssize_t m0, Py_ssize_t m1,
                             void *scratch) noexcept nogil:
    """The forward tiles of output pixels [m0, m1), written into NCHW planes: stage_px pixels
    at a time into this thread's stage block (NHWC rows, as the tiles write them), then
    transposed out while the block is in cache, instead of a second pass over the whole
    output.  The forward pass's pixels run in row-major order, and the tiles write pixel m at
    dst + m * cout: given the stage's address less a * cout, they write pixel m of [a, b) at
    stage[(m - a) * cout].  (That base lies outside the block and is never read or written
    itself, so it is computed as an integer.)"""
    cdef Py_ssize_t ch = g.cout, plane = <Py_ssize_t>g.oh * g.ow, a = m0, b, p, e, n
    cdef floating *base
    while a < m1:
        b = min(m1, a + stage_px)
        base = <floating *>(<uintptr_t>stage - <uintptr_t>(a * ch) * sizeof(floating))
        _tiles(FORWARD, g, src, packed, relu, zeros, base, a, b, scratch)
        p = a
        while p < b:
            # the stage's pixels of one image: a run of each of its channel planes
            n = p // plane
            e = min(b, (n + 1) * plane)
            _transpose(stage + (p - a) * ch, ch, planes + n * ch * plane + (p - n * plane),
                       plane, e - p, ch)
            p = e
        a = b


# Where _run_tiles's chunks put their output: NHWC dst; NCHW planes of dst through a stage of
# output pixels (_tiles_into_planes); or NCHW images, a chunk being images of NCHW src and dst
# through a stage (_forward_image_unit, the forward pass only).
cdef enum:
    OUT_NHWC = 0
    OUT_PLANES = 1
    OUT_IMAGES = 2


cdef int _run_tiles(int kind, const cyc_geom_t *g, const floating *w, const floating *bias,
                    floating *packed, const floating *src, bint relu, const floating *zeros,
                    floating *dst, int out, Py_ssize_t total, Py_ssize_t chunk, size_t sbytes,
                    int n_threads) noexcept nogil:
    """Pack the weights, then run chunks of [0, total), both spread over the threads (each
    thread with its own scratch, and a stage where out is not OUT_NHWC).  Returns 1 if a
    thread could not allocate its memory (the results are then incomplete)."""
    cdef int transposed = _packing(kind)
    cdef Py_ssize_t K = cyc_conv_rows(g, transposed)
    cdef Py_ssize_t kchunk = _pack_chunk(K, n_threads)
    cdef Py_ssize_t nch = _n_chunks(total, chunk), t, m0, m1
    cdef Py_ssize_t stage_px = max(
        48, _STAGE_BYTES // (g.cout * <Py_ssize_t>sizeof(floating)) // 48 * 48)
    cdef size_t stage_bytes = (stage_px * g.cout * sizeof(floating) if out == OUT_PLANES
                               else _image_stage_bytes(g, chunk, sizeof(floating), False))
    cdef void *scratch = NULL   # each thread sets its own (firstprivate: a defined value to copy)
    cdef void *stage = NULL
    cdef int failed = 0
    cdef int *failp = &failed   # written inside the parallel block, so shared through a pointer
    # a thread without a chunk would only share the packing: not worth waking it
    n_threads = <int>min(n_threads, nch)
    with parallel(num_threads=n_threads):
        for t in prange(_n_chunks(K, kchunk), schedule="static"):
            m0 = t * kchunk
            _pack(g, w, bias, transposed, packed, m0, min(K, m0 + kchunk))
        scratch = cyc_scratch(CYC_SCRATCH_TILES, sbytes)
        stage = NULL
        if out != OUT_NHWC:
            stage = cyc_scratch(CYC_SCRATCH_STAGE, stage_bytes)
        # every thread takes part in the worksharing loop, with or without its memory
        for t in prange(nch, schedule="dynamic"):
            if scratch == NULL or (out != OUT_NHWC and stage == NULL):
                failp[0] = 1
                continue
            m0 = t * chunk
            m1 = min(total, m0 + chunk)
            if out == OUT_PLANES:
                _tiles_into_planes(g, src, packed, relu, zeros, <floating *>stage, stage_px,
                                   dst, m0, m1, scratch)
            elif out == OUT_IMAGES:
                _forward_image_unit(kind, g, t, chunk, src, packed, relu, zeros, dst,
                                    <char *>stage, scratch)
            else:
                _tiles(kind, g, src, packed, relu, zeros, dst, m0, m1, scratch)
        cyc_scratch_done(CYC_SCRATCH_TILES, scratch)
        if out != OUT_NHWC:
            cyc_scratch_done(CYC_SCRATCH_STAGE, stage)
    return failed


cdef inline int _take_blocks(const cyc_geom_t *g, int transposed, size_t elem, void **packed,
                             void **zeros) noexcept nogil:
    """The packed weights' block and the zero row, in this thread's kept memory (give them
    back with _give_blocks).  Returns 1 if memory ran out."""
    packed[0] = cyc_scratch(CYC_SCRATCH_PACKED, cyc_conv_packed_len(g, transposed, elem) * elem)
    zeros[0] = cyc_scratch(CYC_SCRATCH_ZEROS, cyc_conv_zeros_len(g) * elem)
    return packed[0] == NULL or zeros[0] == NULL


cdef inline void _give_blocks(void *packed, void *zeros) noexcept nogil:
    cyc_scratch_done(CYC_SCRATCH_PACKED, packed)
    cyc_scratch_done(CYC_SCRATCH_ZEROS, zeros)


cdef int _run_conv(int kind, const cyc_geom_t *g, const floating *w, const floating *bias,
                   const floating *src, bint relu, floating *dst, int out, Py_ssize_t total,
                   Py_ssize_t chunk, size_t sbytes, int n_threads) noexcept nogil:
    """_run_tiles with the packed weights and the zero row in this thread's kept blocks.
    Returns 1 if memory ran out."""
    cdef void *packed
    cdef void *zeros
    cdef int failed = _take_blocks(g, _packing(kind), sizeof(floating), &packed, &zeros)
    if not failed:
        failed = _run_tiles(kind, g, w, bias, <floating *>packed, src, relu,
                            <const floating *>zeros, dst, out, total, chunk, sbytes, n_threads)
    _give_blocks(packed, zeros)
    return failed


cdef inline bint _depthwise(const cyc_geom_t *g) noexcept nogil:
    """One input channel per group, a window of at most CYC_DEPTHWISE_MAX_TAPS cells: the
    depthwise kernels (cyconv.h)."""
    return g.groups > 1 and g.groups == g.c and g.kh * g.kw <= CYC_DEPTHWISE_MAX_TAPS


cdef inline int _forward_kind(const cyc_geom_t *g, int elem_size,
                              bint dense=False) noexcept nogil:
    """The forward pass's route: the one place it is decided (dense: whether the whole NHWC
    arrays may take cyc_conv_dense_fwd, which the bands and stages of images do not)."""
    if _depthwise(g):
        return DEPTHWISE
    if cyc_conv_winograd(g, 0, elem_size):
        return WINOGRAD
    return DENSE_FWD if dense and cyc_conv_dense_fwd_applies(g, elem_size) else FORWARD


cdef inline int _input_grad_kind(const cyc_geom_t *g, int elem_size,
                                 bint dense=True) noexcept nogil:
    """The input gradient's route (cyc_conv_winograd, cyc_conv_dense_dx unless not dense, then
    cyc_conv_bwd_data_scatters): dense is for whole NHWC arrays only, not the tiles of a few
    NCHW images at a time."""
    if _depthwise(g):
        return DEPTHWISE
    if cyc_conv_winograd(g, 1, elem_size):
        return WINOGRAD_DX
    if dense and cyc_conv_dense_dx(g, elem_size):
        return DENSE_DX
    cdef int route = cyc_conv_bwd_data_scatters(g, elem_size)
    return (GATHER_DX if route == CYC_GATHER else
            SCATTER_ROWS_DX if route == CYC_SCATTER_ROWS else SCATTER_DX)


cdef inline int _weight_grad_kind(const cyc_geom_t *g, int elem_size, bint through_pool,
                                  bint relu_mask) noexcept nogil:
    """The weight gradient's route; through a pool, by its windows where they apply (see
    cyc_conv_dw_by_windows; not with a ReLU's mask), else the direct kernel."""
    if through_pool:
        return POOL_WINDOWS_DW if not relu_mask and cyc_conv_dw_by_windows(g) else DIRECT_DW
    if _depthwise(g):
        return DEPTHWISE
    return WINOGRAD if cyc_conv_winograd(g, 2, elem_size) else DIRECT_DW


cdef inline void _multiplied_channels(cyc_geom_t *g) noexcept nogil:
    """A depthwise convolution with a channel multiplier m as one with m times the channels:
    output channel co reads input channel co // m (Keras's and PyTorch's order)."""
    g.c = g.groups = g.cout


cdef object _repeat_channels(object x, cyc_geom_t *g):
    """x for the depthwise kernels: with a channel multiplier, each channel repeated m times
    (and g changed to match)."""
    cdef int m = g.cout // g.c
    _multiplied_channels(g)
    return x if m == 1 else np.repeat(np.asarray(x), m, axis=3)


cdef void _run_depthwise(int kind, const cyc_geom_t *g, const floating *src, const floating *w,
                         const floating *bias, bint relu, floating *dst, Py_ssize_t rows,
                         int n_threads) noexcept nogil:
    """The depthwise forward pass (kind FORWARD) or input gradient over rows [0, rows) of the
    computed tensor, in chunks spread over the threads."""
    cdef Py_ssize_t chunk = _chunk(rows, n_threads, 1), t, r0, r1
    cdef Py_ssize_t nch = _n_chunks(rows, chunk)
    n_threads = <int>min(n_threads, nch)
    for t in prange(nch, num_threads=n_threads, schedule="dynamic"):
        r0 = t * chunk
        r1 = min(rows, r0 + chunk)
        if floating is float:
            if kind == FORWARD:
                cyc_depthwise_fwd_f32(g, src, w, bias, relu, dst, r0, r1)
            else:
                cyc_depthwise_bwd_data_f32(g, src, w, dst, r0, r1)
        else:
            if kind == FORWARD:
                cyc_depthwise_fwd_f64(g, src, w, bias, relu, dst, r0, r1)
            else:
                cyc_depthwise_bwd_data_f64(g, src, w, dst, r0, r1)


cdef inline cyc_geom_t _channel_block(const cyc_geom_t *g, int block, Py_ssize_t u,
                                      Py_ssize_t *major, int *c0) noexcept nogil:
    """Unit u of a pass over NCHW arrays in blocks of `block` channels (pools, depthwise
    convolutions): its major index u // blocks (an image, or a group of images), its first
    channel, and g for one image of the block's channels (as channels, outputs and groups:
    the pools read the first only)."""
    cdef int blocks = (g.c + block - 1) // block
    major[0] = u // blocks
    c0[0] = <int>(u % blocks) * block
    cdef cyc_geom_t s = g[0]
    s.n = 1
    s.c = s.cout = s.groups = min(block, g.c - c0[0])
    return s


cdef void _depthwise_plane_unit(bint input_grad, const cyc_geom_t *g, int block, Py_ssize_t u,
                                const floating *src, const floating *wblocks,
                                const floating *bias, bint relu, floating *dst,
                                char *stage) noexcept nogil:
    """Unit u of _depthwise_planes: channels [c0, c0 + block) of one image, transposed into
    this thread's stage as NHWC, convolved there by the depthwise kernel and transposed back
    (as _pool_plane_unit does for the pools): the forward pass (src x, dst y) or, with
    input_grad, the input gradient gathered per dx row (src dy, dst dx).  wblocks: each
    block's weights as (kh * kw, its channels), one block after another."""
    cdef Py_ssize_t n
    cdef int c0
    cdef cyc_geom_t s = _channel_block(g, block, u, &n, &c0)
    cdef Py_ssize_t hw = <Py_ssize_t>g.h * g.w, ohw = <Py_ssize_t>g.oh * g.ow
    cdef Py_ssize_t src_len = ohw if input_grad else hw, dst_len = hw if input_grad else ohw
    cdef floating *a = <floating *>stage
    cdef floating *b = <floating *>(stage + _line_up(max(hw, ohw) * block * sizeof(floating)))
    cdef const floating *w = wblocks + <Py_ssize_t>c0 * g.kh * g.kw
    cdef const floating *bb = bias + c0 if bias != NULL else NULL
    cdef Py_ssize_t first = n * g.c + c0   # the unit's first plane
    _transpose(src + first * src_len, src_len, a, s.c, s.c, src_len)
    if floating is float:
        if input_grad:
            cyc_depthwise_bwd_data_f32(&s, a, w, b, 0, s.h)
        else:
            cyc_depthwise_fwd_f32(&s, a, w, bb, relu, b, 0, s.oh)
    else:
        if input_grad:
            cyc_depthwise_bwd_data_f64(&s, a, w, b, 0, s.h)
        else:
            cyc_depthwise_fwd_f64(&s, a, w, bb, relu, b, 0, s.oh)
    _transpose(b, s.c, dst + first * dst_len, dst_len, dst_len, s.c)


def depthwise_planes(const floating[:, :, :, ::1] src, const floating[::1] wblocks,
                     const floating[::1] b, object geom, bint relu, floating[:, :, :, ::1] dst,
                     int n_threads, int block, bint input_grad):
    """A depthwise convolution (one channel per group, no multiplier) over NCHW arrays in
    units of `block` channels of one image (see _depthwise_plane_unit), spread over the
    threads: the forward pass (src x, dst y, bias b or None), or with input_grad dx from dy
    (b None).  A forward pass with the flipped weights and the geometry of dy's padding is
    the input gradient of a unit-stride convolution, as in conv2d_backward_data."""
    cdef cyc_geom_t g = _geom(geom)
    cdef cyc_geom_t gf
    if input_grad and g.sh == 1 and g.sw == 1:
        gf = g
        gf.h, gf.w, gf.oh, gf.ow = g.oh, g.ow, g.h, g.w
        gf.pad_top = (g.kh - 1) * g.dh - g.pad_top
        gf.pad_left = (g.kw - 1) * g.dw - g.pad_left
        g = gf
        input_grad = False
    cdef Py_ssize_t units = <Py_ssize_t>g.n * ((g.c + block - 1) // block), u
    cdef size_t sbytes = _plane_stage_bytes(&g, block, sizeof(floating), 0)
    cdef const floating *bp = &b[0] if b is not None else NULL
    cdef void *stage = NULL
    cdef int failed = 0
    cdef int *failp = &failed   # written inside the loop, so shared through a pointer
    if units == 0:
        return
    for u in prange(units, nogil=True, num_threads=n_threads, schedule="dynamic"):
        stage = cyc_scratch(CYC_SCRATCH_STAGE, sbytes)
        if stage == NULL:
            failp[0] = 1
        else:
            _depthwise_plane_unit(input_grad, &g, block, u, &src[0, 0, 0, 0], &wblocks[0], bp,
                                  relu, &dst[0, 0, 0, 0], <char *>stage)
        cyc_scratch_done(CYC_SCRATCH_STAGE, stage)
    if failed:
        raise MemoryError("conv2d: could not allocate scratch memory")


cdef void _depthwise_dw_item(const cyc_geom_t *g, int block, int n_acc, Py_ssize_t item,
                             const floating *x, const floating *dy, floating *acc,
                             char *stage) noexcept nogil:
    """Item (group, block) of depthwise_weight_grads_planes: the weight and bias gradients of
    channels [c0, c0 + block) summed over the images of one group into acc ((kh * kw, its
    channels) then its channels), each image's planes of x and dy transposed into this
    thread's stage as NHWC for the depthwise kernel."""
    cdef Py_ssize_t gi, n
    cdef int c0
    cdef cyc_geom_t s = _channel_block(g, block, item, &gi, &c0)
    cdef Py_ssize_t hw = <Py_ssize_t>g.h * g.w, ohw = <Py_ssize_t>g.oh * g.ow, first
    cdef Py_ssize_t taps = <Py_ssize_t>g.kh * g.kw
    cdef floating *xa = <floating *>stage
    cdef floating *da = <floating *>(stage + _line_up(max(hw, ohw) * block * sizeof(floating)))
    memset(acc, 0, (taps + 1) * s.c * sizeof(floating))
    for n in range(g.n * gi // n_acc, g.n * (gi + 1) // n_acc):
        first = n * g.c + c0
        _transpose(x + first * hw, hw, xa, s.c, s.c, hw)
        _transpose(dy + first * ohw, ohw, da, s.c, s.c, ohw)
        if floating is float:
            cyc_depthwise_bwd_filter_f32(&s, xa, da, NULL, acc, acc + taps * s.c, 0, s.oh, NULL)
        else:
            cyc_depthwise_bwd_filter_f64(&s, xa, da, NULL, acc, acc + taps * s.c, 0, s.oh, NULL)


def depthwise_weight_grads_planes(const floating[:, :, :, ::1] x,
                                  const floating[:, :, :, ::1] dy, object geom,
                                  floating[::1] dw, floating[::1] db, int n_threads, int block):
    """dw ((kh * kw, c), the HWIO layout) and db of a depthwise convolution (no multiplier)
    from NCHW x and dy (a fused ReLU's mask already applied), in units of `block` channels of
    the images of a group (see _depthwise_dw_item).  The images fall into groups that depend
    on the problem only, whose partial sums are added in a fixed order: the same bits on any
    thread count, and on any block that is a multiple of the kernels' channel block (the 3x3
    kernel sums whole blocks of channels and the rest apart) or all the channels, as
    ops._depthwise_block gives."""
    cdef cyc_geom_t g = _geom(geom)
    cdef int blocks = (g.c + block - 1) // block
    cdef int n_acc = <int>min(8, g.n)
    cdef Py_ssize_t taps = <Py_ssize_t>g.kh * g.kw, item_len = (taps + 1) * block
    cdef Py_ssize_t items = <Py_ssize_t>n_acc * blocks, item, k, t, c, cb
    cdef size_t sbytes = _plane_stage_bytes(&g, block, sizeof(floating), 0)
    cdef floating *accs = <floating *>cyc_scratch(CYC_SCRATCH_PARTIAL,
                                                  items * item_len * sizeof(floating))
    cdef floating *a
    cdef floating v
    cdef void *stage = NULL
    cdef int failed = 0
    cdef int *failp = &failed   # written inside the loop, so shared through a pointer
    if accs == NULL:
        raise MemoryError("conv2d_backward: could not allocate the partial sums")
    with nogil:
        for item in prange(items, num_threads=min(n_threads, items), schedule="dynamic"):
            stage = cyc_scratch(CYC_SCRATCH_STAGE, sbytes)
            if stage == NULL:
                failp[0] = 1
            else:
                _depthwise_dw_item(&g, block, n_acc, item, &x[0, 0, 0, 0], &dy[0, 0, 0, 0],
                                   accs + item * item_len, <char *>stage)
            cyc_scratch_done(CYC_SCRATCH_STAGE, stage)
        if not failed:
            for k in range(blocks):
                cb = min(block, g.c - k * block)
                # item (group t, block k) holds (taps + 1) rows of cb values: dw's taps, then db
                for c in range((taps + 1) * cb):
                    a = accs + k * item_len + c
                    v = a[0]
                    for t in range(1, n_acc):
                        v = v + a[t * blocks * item_len]
                    if c < taps * cb:
                        dw[(c // cb) * g.c + k * block + c % cb] = v
                    else:
                        db[k * block + c - taps * cb] = v
    cyc_scratch_done(CYC_SCRATCH_PARTIAL, accs)
    if failed:
        raise MemoryError("conv2d_backward: could not allocate per-thread scratch memory")


cdef inline void _winograd_work(const cyc_geom_t *g, int mode, int elem_size, int n_threads,
                                Py_ssize_t *M, size_t *sbytes, Py_ssize_t *chunk) noexcept nogil:
    """A Winograd run's work: its tiles, each thread's scratch, and chunks of whole blocks."""
    M[0] = cyc_conv_winograd_tiles(g, mode)
    sbytes[0] = cyc_conv_winograd_scratch_bytes(g, mode, elem_size)
    chunk[0] = _chunk(M[0], n_threads, cyc_conv_winograd_block(g, mode, elem_size))


cdef void _dense_fwd(const floating *x, const floating *w, const floating *b, bint relu,
                     floating *y, Py_ssize_t P, Py_ssize_t cin, int cout,
                     int n_threads) noexcept:
    """cyc_conv_dense_fwd over blocks of 16 output channels shared out among the threads
    (each output one thread's, in one order: the same bits on any thread count)."""
    cdef Py_ssize_t chunk = _chunk(cout, n_threads, 16), t, c0
    with nogil:
        for t in prange(_n_chunks(cout, chunk), num_threads=n_threads, schedule="dynamic"):
            c0 = t * chunk
            if floating is float:
                cyc_conv_dense_fwd_f32(x, w, b, relu, y, P, cin, cout, <int>c0,
                                       <int>min(cout, c0 + chunk))
            else:
                cyc_conv_dense_fwd_f64(x, w, b, relu, y, P, cin, cout, <int>c0,
                                       <int>min(cout, c0 + chunk))


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, object geom, bint relu,
                   floating[:, :, :, ::1] y, int n_threads, bint planes=False):
    """y = conv(x, w) + b (+ ReLU), all NHWC / HWIO, y preallocated; by the depthwise kernels,
    by Winograd or by the direct tiles (conv2d_forward_route says which).  planes: y is NCHW,
    written so by the direct tiles (the other routes do not take it)."""
    cdef cyc_geom_t g = _geom(geom)
    cdef int kind = _forward_kind(&g, sizeof(floating), True)
    if planes and kind != FORWARD:
        raise ValueError("conv2d_forward writes NCHW planes on the direct route only")
    if kind == DENSE_FWD:
        _dense_fwd(&x[0, 0, 0, 0], &w[0, 0, 0, 0], &b[0] if b is not None else NULL, relu,
                   &y[0, 0, 0, 0], <Py_ssize_t>g.n * g.oh * g.ow, g.c, g.cout, n_threads)
        return
    cdef const floating[:, :, :, ::1] xe
    if kind == DEPTHWISE:
        xe = _repeat_channels(x, &g)
        with nogil:
            _run_depthwise(FORWARD, &g, &xe[0, 0, 0, 0], &w[0, 0, 0, 0],
                           &b[0] if b is not None else NULL, relu, &y[0, 0, 0, 0],
                           <Py_ssize_t>g.n * g.oh, n_threads)
        return
    cdef Py_ssize_t M
    cdef size_t sbytes
    cdef Py_ssize_t chunk
    if kind == WINOGRAD:
        _winograd_work(&g, CYC_WINO_FWD, sizeof(floating), n_threads, &M, &sbytes, &chunk)
    else:
        M = <Py_ssize_t>g.n * g.oh * g.ow
        sbytes = cyc_conv_scratch_bytes(&g, 0, sizeof(floating))
        chunk = _tile_chunk(M, n_threads)
    cdef const floating *bp = &b[0] if b is not None else NULL
    cdef int failed
    with nogil:
        failed = _run_conv(kind, &g, &w[0, 0, 0, 0], bp, &x[0, 0, 0, 0], relu,
                           &y[0, 0, 0, 0], OUT_PLANES if planes else OUT_NHWC, M, chunk, sbytes,
                           n_threads)
    if failed:
        raise MemoryError("conv2d: could not allocate scratch memory")


cdef inline int _band_first_row(const cyc_geom_t *g, int r0) noexcept nogil:
    """The first input row that output row r0 reads (0 when it starts in the padding)."""
    cdef int first = r0 * g.sh - g.pad_top
    return first if first > 0 else 0


cdef inline cyc_geom_t _conv_band(const cyc_geom_t *g, int r0, int r1) noexcept nogil:
    """Output rows [r0, r1) of one image as a convolution of their own: one image, the input
    rows from _band_first_row(g, r0) that they read, and the padding above and below that
    they see.  The kernels' plans, packing and scratch depend on the columns and channels
    only, which a band keeps."""
    cdef cyc_geom_t b = g[0]
    cdef int first = r0 * g.sh - g.pad_top
    cdef int last = (r1 - 1) * g.sh - g.pad_top + (g.kh - 1) * g.dh
    cdef int lo = _band_first_row(g, r0)
    cdef int hi = last if last < g.h - 1 else g.h - 1
    b.n = 1
    b.h = hi - lo + 1
    b.oh = r1 - r0
    b.pad_top = lo - first
    b.pad_bottom = last - hi
    return b


def conv2d_forward_max_pool(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                            const floating[::1] b, object geom, object pool_geom,
                            int rows_per_band, int images_per_band, floating[:, :, :, ::1] y,
                            uint8_t[:, :, :, ::1] cell, int n_threads):
    """y = max_pool(relu(conv(x, w) + b)), NHWC, and with cell (not None) each window's cell
    record as max_pool(..., relu_in=True) writes it, without the convolution's output: bands
    of rows_per_band pool rows are convolved into a block of each thread's scratch (sized to
    stay in L2, see ops._BAND_BYTES) and pooled from there.  What ops checks: the route is the
    forward pass's, not the depthwise one; no band lies wholly in the padding; pool windows
    have no padding or dilation; and with Winograd, bands start on rows of the convolution's
    output where its tiles start over the whole output (multiples of winograd_tile).  A band
    then runs to the end of its last tile (or of the output): F(4x4)'s transforms mix input
    rows of a tile beyond an output's own window into it (row 0 reads rows 0 to 4), so the
    rows past the band must be the image's, not the band's padding, for the same bits.  With
    images_per_band > 1 (and rows_per_band the pool's whole height), a band is that many whole
    images: a Winograd tile kernel given the 9 tiles of one small image ran 1.2x slower than
    on a block of them."""
    cdef cyc_geom_t g = _geom(geom)
    cdef cyc_geom_t pg = _geom(pool_geom)
    cdef int kind = _forward_kind(&g, sizeof(floating))
    cdef size_t sbytes = (cyc_conv_winograd_scratch_bytes(&g, CYC_WINO_FWD, sizeof(floating))
                          if kind == WINOGRAD else
                          cyc_conv_scratch_bytes(&g, 0, sizeof(floating)))
    sbytes = (sbytes + 63) // 64 * 64   # the band after the tiles' scratch, on a cache line
    cdef int bands_per_image = (pg.oh + rows_per_band - 1) // rows_per_band
    cdef bint whole = images_per_band > 1
    cdef Py_ssize_t units = (<Py_ssize_t>g.n * bands_per_image if not whole
                             else (g.n + images_per_band - 1) // images_per_band)
    cdef int tile = cyc_conv_winograd_tile(&g, CYC_WINO_FWD) if kind == WINOGRAD else 1
    cdef Py_ssize_t band_len = ((<Py_ssize_t>(rows_per_band - 1) * pg.sh + pg.kh + tile - 1)
                                * g.ow * g.cout)
    if whole:
        band_len = <Py_ssize_t>images_per_band * g.oh * g.ow * g.cout
    cdef int transposed = _packing(kind)
    cdef void *packed
    cdef void *zeros
    cdef int failed = _take_blocks(&g, transposed, sizeof(floating), &packed, &zeros)
    cdef const floating *bp = &b[0] if b is not None else NULL
    cdef uint8_t *cp = &cell[0, 0, 0, 0] if cell is not None else NULL
    cdef Py_ssize_t K = cyc_conv_rows(&g, transposed)
    cdef Py_ssize_t kchunk = _pack_chunk(K, n_threads)
    cdef Py_ssize_t t, u, m0, x_off, out_off, band_work
    cdef int n, p0, p1, r0, r1
    cdef cyc_geom_t cb, pb
    cdef void *scratch = NULL
    cdef floating *band = NULL
    cdef int *failp = &failed
    n_threads = <int>min(<Py_ssize_t>n_threads, units)
    if not failed:
        with nogil, parallel(num_threads=n_threads):
            for t in prange(_n_chunks(K, kchunk), schedule="static"):
                m0 = t * kchunk
                _pack(&g, &w[0, 0, 0, 0], bp, transposed, <floating *>packed, m0,
                      min(K, m0 + kchunk))
            scratch = cyc_scratch(CYC_SCRATCH_TILES, sbytes + sizeof(floating) * band_len)
            band = <floating *>(<char *>scratch + sbytes)
            for u in prange(units, schedule="dynamic"):
                if scratch == NULL:
                    failp[0] = 1
                    continue
                if whole:
                    # images [n, n + cb.n), all of their rows
                    n = <int>(u * images_per_band)
                    p0 = 0
                    p1 = pg.oh
                    cb = g
                    cb.n = min(images_per_band, g.n - n)
                else:
                    n = <int>(u // bands_per_image)
                    p0 = <int>(u % bands_per_image) * rows_per_band
                    p1 = min(pg.oh, p0 + rows_per_band)
                    r0 = p0 * pg.sh
                    r1 = (p1 - 1) * pg.sh + pg.kh
                    cb = _conv_band(&g, r0, min(g.oh, r0 + (r1 - r0 + tile - 1) // tile * tile))
                x_off = ((<Py_ssize_t>n * g.h + _band_first_row(&g, p0 * pg.sh))
                         * g.w * g.c)
                band_work = <Py_ssize_t>cb.n * cb.oh * cb.ow
                if kind == WINOGRAD:
                    band_work = cyc_conv_winograd_tiles(&cb, CYC_WINO_FWD)
                _tiles(kind, &cb, &x[0, 0, 0, 0] + x_off, <floating *>packed, 1,
                       <const floating *>zeros, band, 0, band_work, scratch)
                # the band is an image of its own to the pool (or whole images), whose rows
                # [p0, p1) it gives
                pb = pg
                pb.n = cb.n
                pb.h = cb.oh
                pb.oh = p1 - p0
                out_off = (<Py_ssize_t>n * pg.oh + p0) * pg.ow * pg.c
                _max_pool_rows(&pb, band, &y[0, 0, 0, 0] + out_off, NULL,
                               cp + out_off if cp != NULL else NULL, 1, 0, pb.n * pb.oh,
                               pb.n * pb.oh)
            cyc_scratch_done(CYC_SCRATCH_TILES, scratch)
    _give_blocks(packed, zeros)
    if failed:
        raise MemoryError("conv2d with max_pool2d: could not allocate scratch memory")


def winograd_set(int on):
    """Turn the Winograd path on (1), on with F(2x2) tiles only (2) or off (0) (see
    cyc_conv_winograd_set); returns the previous setting."""
    if on not in (0, 1, 2):
        raise ValueError(f"on must be 0, 1 or 2, got {on}")
    return cyc_conv_winograd_set(on)


def winograd_setting():
    """0: Winograd off; 1: F(2x2) and F(4x4) tiles; 2: F(2x2) only."""
    return cyc_conv_winograd_enabled()


def conv2d_forward_route(object geom, object dtype):
    """How conv2d_forward computes y for this problem: 'depthwise', 'winograd', 'dense' or
    'direct'."""
    cdef cyc_geom_t g = _geom(geom)
    return ROUTE_NAMES[_forward_kind(&g, np.dtype(dtype).itemsize, True)]


def winograd_tile(object geom, object dtype):
    """The side of the output tiles (2 or 4) of this problem's forward pass by Winograd, 1 if
    it does not take Winograd."""
    cdef cyc_geom_t g = _geom(geom)
    if _forward_kind(&g, np.dtype(dtype).itemsize) != WINOGRAD:
        return 1
    return cyc_conv_winograd_tile(&g, CYC_WINO_FWD)


def winograd_weight_grad_tile(object geom, object dtype):
    """The side of the tiles (2 or 4) of this problem's weight gradient by Winograd (F(2x2)'s
    where F(4x4)'s sums would not stay in cache), 1 if it does not take Winograd."""
    cdef cyc_geom_t g = _geom(geom)
    cdef int elem = np.dtype(dtype).itemsize
    if _weight_grad_kind(&g, elem, False, False) != WINOGRAD:
        return 1
    return cyc_conv_winograd_dw_tile(&g, elem)


def conv2d_backward_filter_route(object geom, object dtype, bint through_pool=False,
                                 bint relu_mask=False):
    """How conv2d_backward_filter computes dw: 'depthwise' or 'winograd' (never through a pool),
    'pool windows' (only through a pool, without relu_mask), or 'direct'."""
    cdef cyc_geom_t g = _geom(geom)
    return ROUTE_NAMES[_weight_grad_kind(&g, np.dtype(dtype).itemsize, through_pool,
                                         relu_mask)]


def conv2d_backward_data_route(object geom, object dtype):
    """How conv2d_backward_data computes dx for this problem: 'depthwise', 'winograd',
    'dense', 'gather', 'scatter taps' or 'scatter rows'."""
    cdef cyc_geom_t g = _geom(geom)
    return ROUTE_NAMES[_input_grad_kind(&g, np.dtype(dtype).itemsize)]


cdef void _dense_dx(const floating *dy, const floating *w, floating *dx, Py_ssize_t P,
                    Py_ssize_t cin, int cout, int n_threads) noexcept:
    """cyc_conv_dense_dx over rows of w shared out among the threads (each dx value one
    thread's, in one order: the same bits on any thread count)."""
    cdef Py_ssize_t chunk = _chunk(cin, n_threads, 4), t, k0
    with nogil:
        for t in prange(_n_chunks(cin, chunk), num_threads=n_threads, schedule="dynamic"):
            k0 = t * chunk
            if floating is float:
                cyc_conv_dense_dx_f32(dy, w, dx, P, cin, cout, k0, min(cin, k0 + chunk))
            else:
                cyc_conv_dense_dx_f64(dy, w, dx, P, cin, cout, k0, min(cin, k0 + chunk))


def conv2d_backward_data(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                         object geom, floating[:, :, :, ::1] dx, int n_threads):
    """dx from dy and the HWIO weights: a convolution with the transposed weights, by the
    depthwise kernels, by Winograd, or gathered per dx pixel or scattered per dy pixel
    (conv2d_backward_data_route says which)."""
    cdef cyc_geom_t g = _geom(geom)
    cdef int kind = _input_grad_kind(&g, sizeof(floating))
    cdef int m = g.cout // g.c
    cdef floating[:, :, :, ::1] dxe = dx
    cdef const floating[:, :, :, ::1] wf
    cdef cyc_geom_t gf
    if kind == DEPTHWISE:
        if m > 1:
            dxe = np.empty((g.n, g.h, g.w, g.cout), dtype=np.asarray(dx).dtype)
        _multiplied_channels(&g)
        if g.sh == 1 and g.sw == 1:
            # with unit stride, dx is the forward convolution of dy (padded by the window's
            # span less the padding) with the flipped weights: its faster kernel
            wf = np.ascontiguousarray(np.asarray(w)[::-1, ::-1])
            gf = g
            gf.h, gf.w, gf.oh, gf.ow = g.oh, g.ow, g.h, g.w
            gf.pad_top = (g.kh - 1) * g.dh - g.pad_top
            gf.pad_left = (g.kw - 1) * g.dw - g.pad_left
            with nogil:
                _run_depthwise(FORWARD, &gf, &dy[0, 0, 0, 0], &wf[0, 0, 0, 0], NULL, False,
                               &dxe[0, 0, 0, 0], <Py_ssize_t>g.n * g.h, n_threads)
        else:
            with nogil:
                _run_depthwise(GATHER_DX, &g, &dy[0, 0, 0, 0], &w[0, 0, 0, 0], NULL, False,
                               &dxe[0, 0, 0, 0], <Py_ssize_t>g.n * g.h, n_threads)
        if m > 1:
            # each input channel's m copies, added in a fixed order (numpy's reduction over a
            # last axis of 2 or 3 is slow: strided adds instead)
            parts = np.asarray(dxe).reshape(g.n, g.h, g.w, g.cout // m, m)
            out = np.asarray(dx)
            np.copyto(out, parts[..., 0])
            for q in range(1, m):
                out += parts[..., q]
        return
    cdef Py_ssize_t M
    cdef size_t sbytes
    cdef Py_ssize_t chunk
    if kind == DENSE_DX:
        _dense_dx(&dy[0, 0, 0, 0], &w[0, 0, 0, 0], &dx[0, 0, 0, 0],
                  <Py_ssize_t>g.n * g.h * g.w, g.c, g.cout, n_threads)
        return
    if kind == WINOGRAD_DX:
        # every dx tile is computed whole by one thread: any chunks give the same bits
        _winograd_work(&g, CYC_WINO_DX, sizeof(floating), n_threads, &M, &sbytes, &chunk)
    elif kind == SCATTER_DX or kind == SCATTER_ROWS_DX:
        # Scattered tiles run across images, so how images are grouped changes the order in
        # which dx adds up: the groups depend on the problem only, never on the thread count.
        M = g.n
        sbytes = cyc_conv_scatter_scratch_bytes(&g, kind == SCATTER_ROWS_DX, sizeof(floating))
        chunk = (M + 7) // 8
    else:
        M = <Py_ssize_t>g.n * g.h * g.w
        sbytes = cyc_conv_scratch_bytes(&g, 1, sizeof(floating))
        chunk = _tile_chunk(M, n_threads)
    cdef int failed
    with nogil:
        failed = _run_conv(kind, &g, &w[0, 0, 0, 0], NULL, &dy[0, 0, 0, 0], False,
                           &dx[0, 0, 0, 0], OUT_NHWC, M, chunk, sbytes, n_threads)
    if failed:
        raise MemoryError("conv2d_backward: could not allocate scratch memory")


cdef inline void _dw_partial(int kind, const cyc_geom_t *g, const floating *x,
                             const floating *dy, const floating *ry, const cyc_unpool_t *up,
                             floating *acc, floating *db, Py_ssize_t m0, Py_ssize_t m1,
                             void *scratch, Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """One partial sum of the weight gradient: pixels [m0, m1), Winograd tiles or the pool's
    windows, by kind; by the direct kernel, only rows [k0, k1) of dw, and db only if db is not
    NULL."""
    cdef bint wino = kind == WINOGRAD
    if kind == POOL_WINDOWS_DW:
        if floating is float:
            cyc_conv_bwd_filter_by_windows_f32(g, x, up, acc, db, m0, m1)
        else:
            cyc_conv_bwd_filter_by_windows_f64(g, x, up, acc, db, m0, m1)
        return
    if floating is float:
        if wino:
            cyc_conv_bwd_filter_winograd_f32(g, x, dy, ry, acc, db, m0, m1, scratch)
        else:
            cyc_conv_bwd_filter_f32(g, x, dy, ry, up, acc, db, m0, m1, k0, k1, scratch)
    else:
        if wino:
            cyc_conv_bwd_filter_winograd_f64(g, x, dy, ry, acc, db, m0, m1, scratch)
        else:
            cyc_conv_bwd_filter_f64(g, x, dy, ry, up, acc, db, m0, m1, k0, k1, scratch)


cdef inline Py_ssize_t _dw_rows(const cyc_geom_t *g, bint wino) noexcept nogil:
    """Rows of the weight gradient's final pass: dw's (kernel taps x input channels per group),
    or by Winograd its input channels."""
    return g.c if wino else <Py_ssize_t>g.kh * g.kw * (g.c // g.groups)


cdef inline void _dw_finish(bint wino, const cyc_geom_t *g, const floating *accs, int n_acc,
                            floating *dw, Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """Rows [k0, k1) of dw from the partial sums (by Winograd: its input channels)."""
    if floating is float:
        if wino:
            cyc_conv_dw_finish_winograd_f32(g, accs, n_acc, dw, k0, k1)
        else:
            cyc_conv_dw_finish_f32(g, accs, n_acc, dw, k0, k1)
    else:
        if wino:
            cyc_conv_dw_finish_winograd_f64(g, accs, n_acc, dw, k0, k1)
        else:
            cyc_conv_dw_finish_f64(g, accs, n_acc, dw, k0, k1)


cdef void _depthwise_weight_grads(const cyc_geom_t *g, const floating *x, const floating *dy,
                                  const floating *ry, floating *dw, floating *db,
                                  int n_threads) except *:
    """dw ([kh * kw][cout]) and db of a depthwise convolution, in a number of partial sums (over
    output rows) that depends on the problem only, added in a fixed order."""
    cdef Py_ssize_t rows = <Py_ssize_t>g.n * g.oh
    cdef Py_ssize_t ndw = <Py_ssize_t>g.kh * g.kw * g.cout
    cdef Py_ssize_t acc_len = ndw + g.cout + <Py_ssize_t>g.ow * g.cout   # dw, db, masked dy
    cdef int n_acc = <int>min(8, max(1, rows * g.ow // 128))
    cdef Py_ssize_t t, k, r0, r1
    cdef floating *accs = <floating *>cyc_scratch(CYC_SCRATCH_PARTIAL,
                                                  n_acc * acc_len * sizeof(floating))
    cdef floating *a
    if accs == NULL:
        raise MemoryError("conv2d_backward: could not allocate the partial sums")
    n_threads = min(n_threads, n_acc)
    with nogil:
        for t in prange(n_acc, num_threads=n_threads, schedule="dynamic"):
            a = accs + t * acc_len
            memset(a, 0, (ndw + g.cout) * sizeof(floating))
            r0 = rows * t // n_acc
            r1 = rows * (t + 1) // n_acc
            if floating is float:
                cyc_depthwise_bwd_filter_f32(g, x, dy, ry, a, a + ndw, r0, r1, a + ndw + g.cout)
            else:
                cyc_depthwise_bwd_filter_f64(g, x, dy, ry, a, a + ndw, r0, r1, a + ndw + g.cout)
        for k in range(ndw):
            dw[k] = accs[k]
            for t in range(1, n_acc):
                dw[k] += accs[t * acc_len + k]
        for k in range(g.cout):
            db[k] = accs[ndw + k]
            for t in range(1, n_acc):
                db[k] += accs[t * acc_len + ndw + k]
    cyc_scratch_done(CYC_SCRATCH_PARTIAL, accs)


cdef inline void _add_up(floating *out, const floating *parts, Py_ssize_t count, int n_parts,
                         Py_ssize_t stride) noexcept nogil:
    """out[k] = the sum of parts[t * stride + k] over t in order (partial sums to one)."""
    cdef Py_ssize_t k
    cdef int t
    for k in range(count):
        out[k] = 0
        for t in range(n_parts):
            out[k] += parts[t * stride + k]


def conv2d_backward_filter(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                           object geom, floating[:, :, :, ::1] dw, floating[::1] db,
                           int n_threads, const floating[:, :, :, ::1] relu_y=None,
                           const uint8_t[:, :, :, ::1] pool_cell=None, object pool_geom=None):
    """dw (HWIO) and db, reduced over batch and pixels in a fixed number of partial sums;
    relu_y: the output of a fused ReLU, whose gradient masks dy.  With pool_cell (window
    records) and pool_geom (NHWC), dy is the gradient of the max-pool after the convolution
    (see cyc_unpool_t)."""
    cdef cyc_geom_t g = _geom(geom)
    cdef const floating *ry = &relu_y[0, 0, 0, 0] if relu_y is not None else NULL
    cdef cyc_unpool_t unpool
    cdef const cyc_unpool_t *up = NULL
    if pool_cell is not None:
        unpool.dy = &dy[0, 0, 0, 0]
        unpool.cell = &pool_cell[0, 0, 0, 0]
        unpool.oh, unpool.ow = pool_geom.oh, pool_geom.ow
        unpool.kh, unpool.kw = pool_geom.kh, pool_geom.kw
        unpool.sh, unpool.sw = pool_geom.sh, pool_geom.sw
        up = &unpool
    cdef int kind = _weight_grad_kind(&g, sizeof(floating), up != NULL, ry != NULL)
    # By Winograd, the partial sums run over tiles of 2x2 or 4x4 pixels and hold the 16 or 36
    # products' gradients, which the final pass turns into dw.
    cdef bint wino = kind == WINOGRAD
    cdef const floating[:, :, :, ::1] xe
    if kind == DEPTHWISE:
        xe = _repeat_channels(x, &g)
        _depthwise_weight_grads(&g, &xe[0, 0, 0, 0], &dy[0, 0, 0, 0], ry, &dw[0, 0, 0, 0],
                                &db[0], n_threads)
        return
    cdef Py_ssize_t M = (cyc_conv_winograd_dw_tiles(&g, sizeof(floating)) if wino
                         else <Py_ssize_t>g.n * g.oh * g.ow)
    # the pool's windows: as many partial sums as over the pixels, each over whole windows
    cdef Py_ssize_t units = (<Py_ssize_t>g.n * unpool.oh * unpool.ow if kind == POOL_WINDOWS_DW
                             else M)
    cdef Py_ssize_t acc_len = (cyc_conv_winograd_dw_acc_len(&g, sizeof(floating)) if wino
                               else cyc_conv_dw_acc_len(&g, sizeof(floating)))
    cdef Py_ssize_t db_len = (g.cout + 15) // 16 * 16
    # The pixels are split into a number of partial sums that depends on the problem only, never
    # on the thread count, so that dw is bit-for-bit the same with 1 thread or many.
    # (Each partial sum is zeroed and added up once, 16 or 36 x C x K values by Winograd: at
    # least 64 tiles per partial sum keep that a few percent of its work, and 4 partial sums
    # rather than 8 made the seed conv2's weight gradient at batch 32 9% faster, in alternating
    # processes.  F(4x4)'s 36 x C x K sums take 128 tiles: the seed conv2's at batch 32, 288
    # tiles, in 2 partial sums rather than 4 took 0.85 of the time, in one process.)
    cdef Py_ssize_t per_acc = 128
    if wino and cyc_conv_winograd_dw_tile(&g, sizeof(floating)) == 2:
        per_acc = 64
    cdef int n_acc = <int>min(4 if wino else 8, max(1, M // per_acc))
    # partial sums past L2 cost a pass through memory each to zero and another to add up: one
    # sum instead, its rows shared out over the threads (below)
    if kind == DIRECT_DW and cyc_conv_dw_big_sums(&g, sizeof(floating)):
        n_acc = 1
    cdef Py_ssize_t K = _dw_rows(&g, wino)
    # One partial sum over few pixels (a Dense layer's batch) would keep one thread busy and the
    # others waiting: the direct kernel shares its rows of dw out over the threads instead, each
    # over all the pixels, and each thread finishes its own rows (a row's sum is the same
    # whoever computes it: dw keeps its bits).  At least 16 rows a thread.
    cdef bint by_rows = (kind == DIRECT_DW and n_acc == 1 and n_threads > 1
                         and K >= 16 * n_threads)
    # a thread without a partial sum would only share the final copy: not worth waking it
    if not by_rows:
        n_threads = min(n_threads, n_acc)
    # each partial sum (accs[t], then dbs[t]) is zeroed by the thread that fills it, and the rows
    # of dw are summed in parallel: for small batches these passes are a tenth of the work
    cdef floating *accs = <floating *>cyc_scratch(
        CYC_SCRATCH_PARTIAL, n_acc * (acc_len + db_len) * sizeof(floating))
    if accs == NULL:
        raise MemoryError("conv2d_backward: could not allocate the partial sums")
    cdef floating *dbs = accs + n_acc * acc_len
    cdef size_t sbytes = (cyc_conv_winograd_dw_scratch_bytes(&g, sizeof(floating)) if wino
                          else 0 if kind == POOL_WINDOWS_DW
                          else cyc_conv_dw_scratch_bytes(&g, sizeof(floating)))
    cdef Py_ssize_t kchunk = _chunk(K, n_threads, 1)
    cdef Py_ssize_t astride = cyc_conv_dw_acc_row(&g, sizeof(floating))
    # A single partial sum goes straight into dw where its rows are laid out as the sums' (each
    # group's channels in whole cache lines): a Dense layer's 9216 x 128 weights were zeroed,
    # summed, read back and written again, four passes over 4.7 MB where two do (on one thread,
    # the copy was a sixth of a 1040 -> 128 layer's weight gradient).  The same bits: the final
    # pass copies a single partial sum as it is.
    cdef bint into_dw = n_acc == 1 and not wino and astride == g.cout
    cdef floating *sums = &dw[0, 0, 0, 0] if into_dw else accs
    cdef Py_ssize_t sums_len = K * astride if into_dw else acc_len
    cdef Py_ssize_t t, m0, m1
    cdef int failed = 0
    cdef int *failp = &failed   # written inside the parallel block, so shared through a pointer
    cdef void *scratch = NULL
    with nogil:
        with parallel(num_threads=n_threads):
            scratch = cyc_scratch(CYC_SCRATCH_TILES, sbytes)
            # every thread takes part in every worksharing loop, with or without its scratch
            for t in prange(n_threads if by_rows else 0, schedule="static"):
                if scratch == NULL:
                    failp[0] = 1
                    continue
                m0 = K * t // n_threads
                m1 = K * (t + 1) // n_threads
                memset(sums + m0 * astride, 0, (m1 - m0) * astride * sizeof(floating))
                if t == 0:
                    memset(dbs, 0, db_len * sizeof(floating))
                _dw_partial(kind, &g, &x[0, 0, 0, 0], &dy[0, 0, 0, 0], ry, up, sums,
                            dbs if t == 0 else NULL, 0, units, scratch, m0, m1)
                if not into_dw:
                    _dw_finish(wino, &g, accs, 1, &dw[0, 0, 0, 0], m0, m1)
            for t in prange(0 if by_rows else n_acc, schedule="dynamic"):
                if scratch == NULL:
                    failp[0] = 1
                    continue
                m0 = units * t // n_acc
                m1 = units * (t + 1) // n_acc
                memset(sums + t * acc_len, 0, sums_len * sizeof(floating))
                memset(dbs + t * db_len, 0, db_len * sizeof(floating))
                _dw_partial(kind, &g, &x[0, 0, 0, 0], &dy[0, 0, 0, 0], ry, up,
                            sums + t * acc_len, dbs + t * db_len, m0, m1, scratch, 0, K)
            cyc_scratch_done(CYC_SCRATCH_TILES, scratch)
            for t in prange(0 if by_rows or into_dw else _n_chunks(K, kchunk),
                            schedule="static"):
                m0 = t * kchunk
                m1 = min(K, m0 + kchunk)
                _dw_finish(wino, &g, accs, n_acc, &dw[0, 0, 0, 0], m0, m1)
        if not failed:
            _add_up(&db[0], dbs, g.cout, n_acc, db_len)
    cyc_scratch_done(CYC_SCRATCH_PARTIAL, accs)
    if failed:
        raise MemoryError("conv2d_backward: could not allocate per-thread scratch memory")


cdef inline Py_ssize_t _dx_units(int kind, const cyc_geom_t *g) noexcept nogil:
    """The units [0, units) an input-gradient kernel of kind covers for all of g's images:
    images (scatter), Winograd tiles, or dx pixels (gather)."""
    if kind == SCATTER_DX or kind == SCATTER_ROWS_DX:
        return g.n
    if kind == WINOGRAD_DX:
        return cyc_conv_winograd_tiles(g, CYC_WINO_DX)
    return <Py_ssize_t>g.n * g.h * g.w


cdef inline size_t _dx_scratch_bytes(int kind, const cyc_geom_t *g, size_t elem) noexcept nogil:
    if kind == SCATTER_DX or kind == SCATTER_ROWS_DX:
        return cyc_conv_scatter_scratch_bytes(g, kind == SCATTER_ROWS_DX, elem)
    if kind == WINOGRAD_DX:
        return cyc_conv_winograd_scratch_bytes(g, CYC_WINO_DX, elem)
    return cyc_conv_scratch_bytes(g, 1, elem)


cdef inline size_t _image_stage_bytes(const cyc_geom_t *g, Py_ssize_t images, size_t elem,
                                      bint backward) noexcept nogil:
    """A thread's stage for this many images, NHWC: x and y (conv2d_forward_images), or x, dx
    and dy (conv2d_backward_images)."""
    return ((2 if backward else 1) * _line_up(<size_t>images * g.h * g.w * g.c * elem) +
            _line_up(<size_t>images * g.oh * g.ow * g.cout * elem))


def image_stage_bytes(object geom, int images, int itemsize, bint backward):
    cdef cyc_geom_t g = _geom(geom)
    return _image_stage_bytes(&g, images, itemsize, backward)


def direct_weight_grad_sums_big(object geom, int itemsize):
    """Whether the direct weight gradient's sums pass 1 MB (cyc_conv_dw_big_sums): it then
    keeps one partial sum, its rows shared out over the threads."""
    cdef cyc_geom_t g = _geom(geom)
    return bool(cyc_conv_dw_big_sums(&g, itemsize))


cdef void _forward_image_unit(int kind, const cyc_geom_t *g, Py_ssize_t u, Py_ssize_t per_unit,
                              const floating *x, const floating *packed, bint relu,
                              const floating *zeros, floating *y, char *stage,
                              void *scratch) noexcept nogil:
    """Unit u of conv2d_forward_images: images [u * per_unit, ...) transposed from NCHW into
    this thread's stage, convolved there by the direct tiles or Winograd (kind), and their
    output transposed out into its planes."""
    cdef cyc_geom_t s = g[0]
    cdef Py_ssize_t hw = <Py_ssize_t>g.h * g.w, ohw = <Py_ssize_t>g.oh * g.ow, n
    cdef Py_ssize_t n0 = u * per_unit, n1 = min(g.n, n0 + per_unit)
    cdef floating *xa = <floating *>stage
    cdef floating *ya = <floating *>(stage + _line_up(per_unit * hw * g.c * sizeof(floating)))
    s.n = <int>(n1 - n0)
    for n in range(n0, n1):
        _transpose(x + n * hw * g.c, hw, xa + (n - n0) * hw * g.c, g.c, g.c, hw)
    _tiles(kind, &s, xa, packed, relu, zeros, ya, 0,
           cyc_conv_winograd_tiles(&s, CYC_WINO_FWD) if kind == WINOGRAD else s.n * ohw, scratch)
    for n in range(n0, n1):
        _transpose(ya + (n - n0) * ohw * g.cout, g.cout, y + n * ohw * g.cout, ohw, ohw, g.cout)


def gemm_planes(const floating[:, ::1] a, const floating[:, :, ::1] b, bint relu,
                floating[:, :, ::1] y, int n_threads, Py_ssize_t group=0):
    """y[n] = a b[n], then a ReLU if relu, for each n: an NCHW pointwise convolution's images
    (a: the (cout, cin) weights, b and y: images as (channels, pixels)).  a may have one column
    more than b has rows: a bias, met by a row of ones.  `group` images at a time (0: all)
    go into panels, then units of GEMM_PLANES_ROWS rows of one image of the group are shared
    out over the threads; where those would be fewer than 2 a thread (a batch of one image),
    each image's pixels go in parts too, packed and multiplied a part at a time (every output
    is one tile's sum all the same).  In-process A/B, batch 1, 2 threads: 256x256x32 -> 1
    forward 0.45 of the time, 112x112x32 -> 16 0.55, 56x56x64 -> 128 0.86 (backward passes
    0.78-0.86); 4 units a thread took 1.03-1.06 of the time where there were 4 to 6 already."""
    cdef Py_ssize_t n = b.shape[0], K = b.shape[1], P = b.shape[2], M = a.shape[0]
    cdef Py_ssize_t Ka = a.shape[1]
    cdef int ones = Ka == K + 1
    if not (Ka == K or ones) or y.shape[0] != n or y.shape[1] != M or y.shape[2] != P:
        raise ValueError(f"gemm_planes: a {(M, Ka)}, b {(n, K, P)} and y "
                         f"{(y.shape[0], y.shape[1], y.shape[2])} do not fit")
    if Ka == 0:
        raise ValueError("gemm_planes: no input channels")
    if n == 0 or M == 0 or P == 0:
        return
    group = n if group <= 0 else min(group, n)
    cdef Py_ssize_t plen = cyc_gemm_planes_panel_len(Ka, P, sizeof(floating))
    cdef floating[::1] panels = np.empty(group * plen, dtype=np.asarray(y).dtype)
    cdef Py_ssize_t per = _n_chunks(M, GEMM_PLANES_ROWS), t, i, u, m0, c0, i0, k, parts, width
    cdef Py_ssize_t step = cyc_gemm_planes_col_step(sizeof(floating))
    for i0 in range(0, n, group):
        k = min(group, n - i0)
        parts = min(_n_chunks(P, step), _n_chunks(2 * max(1, n_threads), k * per))
        width = _n_chunks(_n_chunks(P, parts), step) * step
        parts = _n_chunks(P, width)
        # two parallel regions: every panel is written before any product reads it
        for t in prange(k * parts, nogil=True, num_threads=n_threads, schedule="dynamic"):
            i = t // parts
            c0 = t % parts * width
            if floating is float:
                cyc_gemm_planes_pack_f32(&b[i0 + i, 0, 0], K, P, ones, c0, min(P, c0 + width),
                                         &panels[i * plen])
            else:
                cyc_gemm_planes_pack_f64(&b[i0 + i, 0, 0], K, P, ones, c0, min(P, c0 + width),
                                         &panels[i * plen])
        with nogil, parallel(num_threads=n_threads):
            for t in prange(k * per * parts, schedule="dynamic"):
                i = t // (per * parts)
                u = t % (per * parts)
                m0 = u // parts * GEMM_PLANES_ROWS
                c0 = u % parts * width
                if floating is float:
                    cyc_gemm_planes_f32(&a[0, 0], &panels[i * plen], relu, &y[i0 + i, 0, 0], Ka,
                                        P, m0, min(M, m0 + GEMM_PLANES_ROWS), c0,
                                        min(P, c0 + width), 0, Ka)
                else:
                    cyc_gemm_planes_f64(&a[0, 0], &panels[i * plen], relu, &y[i0 + i, 0, 0], Ka,
                                        P, m0, min(M, m0 + GEMM_PLANES_ROWS), c0,
                                        min(P, c0 + width), 0, Ka)


def gemm_planes_weight_grad(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
                            floating[:, ::1] dwb, int n_threads, Py_ssize_t group=0):
    """dwb = sum over n of dy[n] [x[n].T | 1]: an NCHW pointwise convolution's weight gradient
    (cout, cin) with the bias's as a last column, dy[n] (cout, pixels) and x[n] (cin, pixels)
    as they lie.  `group` x[n] at a time (0: all) transposed into panels first; units of rows of
    dwb, each through the group's images in turn.  With few rows (at most
    GEMM_PLANES_SPLIT_ROWS: a unit or two, which would leave threads idle) the sum goes in
    slices, each image's pixels in `pieces` (enough for 4 slices in all), dealt into up to 8
    parts (slice j to part j % parts, so that every group of images feeds several), each
    summed into a dwb of its own, and the parts added in order at the end.  Each sum goes in an
    order fixed by the shapes: the same bits on any thread count and any group."""
    cdef Py_ssize_t n = dy.shape[0], M = dy.shape[1], P = dy.shape[2], I = x.shape[1]
    if x.shape[0] != n or x.shape[2] != P or dwb.shape[0] != M or dwb.shape[1] != I + 1:
        raise ValueError(f"gemm_planes_weight_grad: dy {(n, M, P)}, x "
                         f"{(x.shape[0], I, x.shape[2])} and dwb {(dwb.shape[0], dwb.shape[1])} "
                         f"do not fit")
    if n == 0 or P == 0:
        raise ValueError("gemm_planes_weight_grad: no pixels")
    if M == 0:
        return
    group = n if group <= 0 else min(group, n)
    cdef Py_ssize_t plen = cyc_gemm_planes_panel_len(P, I + 1, sizeof(floating))
    cdef floating[::1] panels = np.empty(group * plen, dtype=np.asarray(dwb).dtype)
    cdef bint split = M <= GEMM_PLANES_SPLIT_ROWS
    # pieces of an image's pixels: at least GEMM_PLANES_PIECE_PIXELS each
    cdef Py_ssize_t pieces = max(1, min(_n_chunks(4, n), P // GEMM_PLANES_PIECE_PIXELS)) \
        if split else 1
    cdef Py_ssize_t parts = min(n * pieces, 8) if split else 1
    # parts past the first sum into these
    cdef floating[:, :, ::1] more = np.empty((parts - 1, M, I + 1), dtype=np.asarray(dwb).dtype)
    # the rows in 4 units a thread at least (these are all the units there are), whole tiles
    # of every instruction set (12 rows), at most GEMM_PLANES_ROWS
    cdef Py_ssize_t rows = min(GEMM_PLANES_ROWS,
                               (_n_chunks(M, 4 * max(1, n_threads)) + 11) // 12 * 12)
    cdef Py_ssize_t per = _n_chunks(M, rows), t, i, j, m0, m1, i0, k, part, p0, p1
    cdef floating *out
    for i0 in range(0, n, group):
        k = min(group, n - i0)
        # two parallel regions: every panel is written before any product reads it
        for t in prange(k, nogil=True, num_threads=n_threads, schedule="dynamic"):
            if floating is float:
                cyc_gemm_planes_pack_t_f32(&x[i0 + t, 0, 0], P, I, 1, &panels[t * plen])
            else:
                cyc_gemm_planes_pack_t_f64(&x[i0 + t, 0, 0], P, I, 1, &panels[t * plen])
        with nogil, parallel(num_threads=n_threads):
            for t in prange(parts * per, schedule="dynamic"):
                part = t // per
                m0 = t % per * rows
                m1 = min(M, m0 + rows)
                out = &dwb[0, 0] if part == 0 else &more[part - 1, 0, 0]
                # the group's slices of this part, from the first at or after the group's
                j = i0 * pieces + (part - i0 * pieces % parts + parts) % parts
                while j < (i0 + k) * pieces:
                    i = j // pieces
                    p0 = P * (j % pieces) // pieces
                    p1 = P * (j % pieces + 1) // pieces
                    if floating is float:
                        cyc_gemm_planes_f32(&dy[i, 0, 0], &panels[(i - i0) * plen],
                                            GEMM_ADD if j >= parts else 0, out, P, I + 1, m0, m1,
                                            0, I + 1, p0, p1)
                    else:
                        cyc_gemm_planes_f64(&dy[i, 0, 0], &panels[(i - i0) * plen],
                                            GEMM_ADD if j >= parts else 0, out, P, I + 1, m0, m1,
                                            0, I + 1, p0, p1)
                    j = j + parts
    sums, rest = np.asarray(dwb), np.asarray(more)
    for part in range(1, parts):
        np.add(sums, rest[part - 1], out=sums)


cdef enum:
    # gemm_planes's units: a multiple of every instruction set's tile height
    GEMM_PLANES_ROWS = 48
    # cyc_gemm_planes's relu value that adds the products to y
    GEMM_ADD = 2
    # gemm_planes_weight_grad's rows up to which its sum goes in parts
    GEMM_PLANES_SPLIT_ROWS = 24
    # and the fewest pixels of a piece of an image there
    GEMM_PLANES_PIECE_PIXELS = 1024


def conv2d_forward_images(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                          const floating[::1] b, object geom, bint relu,
                          floating[:, :, :, ::1] y, int n_threads, Py_ssize_t per_unit):
    """y = conv(x, w) + b (+ ReLU) for NCHW x and y and HWIO weights (not depthwise), per_unit
    images at a time transposed into a thread's stage for the direct tiles or Winograd, and
    their output transposed out while in cache: no whole-array transposes.  Each output pixel
    (or Winograd tile) is computed whole by one tile: the NHWC pass's bits, on any grouping."""
    cdef cyc_geom_t g = _geom(geom)
    cdef int kind = _forward_kind(&g, sizeof(floating))
    if kind == DEPTHWISE:
        raise ValueError("conv2d_forward_images: not for depthwise convolutions")
    per_unit = max(1, min(per_unit, g.n))
    cdef cyc_geom_t s = g
    s.n = <int>per_unit
    cdef size_t sbytes = (cyc_conv_winograd_scratch_bytes(&s, CYC_WINO_FWD, sizeof(floating))
                          if kind == WINOGRAD else cyc_conv_scratch_bytes(&s, 0, sizeof(floating)))
    cdef const floating *bp = &b[0] if b is not None else NULL
    cdef int failed
    with nogil:
        failed = _run_conv(kind, &g, &w[0, 0, 0, 0], bp, &x[0, 0, 0, 0], relu, &y[0, 0, 0, 0],
                           OUT_IMAGES, g.n, per_unit, sbytes, n_threads)
    if failed:
        raise MemoryError("conv2d: could not allocate scratch memory")


PLANAR_MAX_CHANNELS = CYC_PLANAR_MAX_C
PLANAR_MAX_TAPS = CYC_PLANAR_MAX_TAPS


def planar_stage_bytes(object geom, int band_rows, int itemsize):
    """A thread's stage for a band of band_rows output rows of conv2d_forward_planar."""
    cdef cyc_geom_t g = _geom(geom)
    return cyc_conv_planar_stage_bytes(&g, band_rows, itemsize)


cdef void _planar_pack(const cyc_geom_t *g, const floating *w, const floating *b,
                       floating *packed) noexcept nogil:
    """HWIO weights and the bias (or NULL) in the planar kernel's order (cyconv.h)."""
    cdef int PK = CYC_PLANAR_PK, nkb = (g.cout + CYC_PLANAR_PK - 1) // CYC_PLANAR_PK
    cdef int kb, c, i, j, k, o
    cdef floating *p = packed
    for kb in range(nkb):
        for c in range(g.c):
            for i in range(g.kh):
                for j in range(g.kw):
                    for k in range(PK):
                        o = kb * PK + k
                        p[0] = w[((i * g.kw + j) * g.c + c) * g.cout + o] if o < g.cout else 0
                        p += 1
    for o in range(nkb * PK):
        p[o] = b[o] if b != NULL and o < g.cout else 0


def conv2d_forward_planar(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                          const floating[::1] b, object geom, bint relu,
                          floating[:, :, :, ::1] y, int n_threads, int band_rows):
    """y = conv(x, w) + b (+ ReLU) for NCHW x and y, HWIO weights, one group of at most
    PLANAR_MAX_CHANNELS input channels: vectors along the output rows, the sums stored straight
    into the planes (cyc_conv_planar), in units of band_rows output rows of one image."""
    cdef cyc_geom_t g = _geom(geom)
    if g.groups != 1 or g.c > CYC_PLANAR_MAX_C or g.c * g.kh * g.kw > CYC_PLANAR_MAX_TAPS:
        raise ValueError(f"conv2d_forward_planar: one group of at most {CYC_PLANAR_MAX_C} "
                         f"input channels and {CYC_PLANAR_MAX_TAPS} taps, not {g.c} channels "
                         f"in {g.groups} groups, {g.kh}x{g.kw} windows")
    band_rows = max(1, min(band_rows, g.oh))
    cdef Py_ssize_t bands = (g.oh + band_rows - 1) // band_rows
    cdef Py_ssize_t units = <Py_ssize_t>g.n * bands, u
    cdef size_t sbytes = cyc_conv_planar_stage_bytes(&g, band_rows, sizeof(floating))
    cdef const floating *bp = &b[0] if b is not None else NULL
    cdef void *packed
    cdef void *stage = NULL
    cdef int oy0
    cdef int failed = 0
    cdef int *failp = &failed   # written inside the loop, so shared through a pointer
    if units == 0:
        return
    with nogil:
        packed = cyc_scratch(CYC_SCRATCH_PACKED,
                             cyc_conv_planar_packed_len(&g) * sizeof(floating))
        if packed == NULL:
            failed = 1
        else:
            _planar_pack(&g, &w[0, 0, 0, 0], bp, <floating *>packed)
            for u in prange(units, num_threads=n_threads, schedule="dynamic"):
                stage = cyc_scratch(CYC_SCRATCH_STAGE, sbytes)
                if stage == NULL:
                    failp[0] = 1
                else:
                    oy0 = <int>(u % bands * band_rows)
                    if floating is float:
                        cyc_conv_planar_f32(&g, &x[0, 0, 0, 0], <const float *>packed, relu,
                                            &y[0, 0, 0, 0], u // bands, oy0,
                                            min(g.oh, oy0 + band_rows), <float *>stage)
                    else:
                        cyc_conv_planar_f64(&g, &x[0, 0, 0, 0], <const double *>packed, relu,
                                            &y[0, 0, 0, 0], u // bands, oy0,
                                            min(g.oh, oy0 + band_rows), <double *>stage)
                cyc_scratch_done(CYC_SCRATCH_STAGE, stage)
        cyc_scratch_done(CYC_SCRATCH_PACKED, packed)
    if failed:
        raise MemoryError("conv2d: could not allocate scratch memory")


cdef void _backward_image_group(int dx_kind, int dw_kind, const cyc_geom_t *g, int n_acc,
                                Py_ssize_t t, Py_ssize_t per_unit, const floating *dy,
                                const floating *x, const floating *packed,
                                const floating *zeros, floating *dx, floating *acc,
                                floating *dbacc, char *stage, void *scratch) noexcept nogil:
    """Group t of conv2d_backward_images, per_unit images at a time: their x and dy
    transposed from NCHW into this thread's stage, dx computed there (dx_kind, if dx is not
    NULL) and transposed out into its planes, and the weight gradient (dw_kind) added into the
    group's partial sums acc and dbacc (zeroed here)."""
    cdef cyc_geom_t s = g[0]
    cdef Py_ssize_t hw = <Py_ssize_t>g.h * g.w, ohw = <Py_ssize_t>g.oh * g.ow, n, n0, n1, i
    cdef size_t xb = _line_up(per_unit * hw * g.c * sizeof(floating))
    cdef floating *xa = <floating *>stage
    cdef floating *dxa = <floating *>(stage + xb)
    cdef floating *da = <floating *>(stage + 2 * xb)
    cdef bint wino = dw_kind == WINOGRAD
    cdef Py_ssize_t end = g.n * (t + 1) // n_acc
    memset(acc, 0, (cyc_conv_winograd_dw_acc_len(g, sizeof(floating)) if wino
                    else cyc_conv_dw_acc_len(g, sizeof(floating))) * sizeof(floating))
    memset(dbacc, 0, g.cout * sizeof(floating))
    n0 = g.n * t // n_acc
    while n0 < end:
        n1 = min(end, n0 + per_unit)
        s.n = <int>(n1 - n0)
        for n in range(n0, n1):
            i = n - n0
            _transpose(dy + n * ohw * g.cout, ohw, da + i * ohw * g.cout, g.cout, g.cout, ohw)
            _transpose(x + n * hw * g.c, hw, xa + i * hw * g.c, g.c, g.c, hw)
        if dx != NULL:
            _tiles(dx_kind, &s, da, packed, False, zeros, dxa, 0, _dx_units(dx_kind, &s),
                   scratch)
            for n in range(n0, n1):
                _transpose(dxa + (n - n0) * hw * g.c, g.c, dx + n * hw * g.c, hw, hw, g.c)
        _dw_partial(dw_kind, &s, xa, da, NULL, NULL, acc, dbacc, 0,
                    cyc_conv_winograd_dw_tiles(&s, sizeof(floating)) if wino else s.n * ohw,
                    scratch, 0, _dw_rows(&s, wino))
        n0 = n1


def conv2d_backward_images(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                           const floating[:, :, :, ::1] w, object geom, floating[:, :, :, ::1] dx,
                           floating[:, :, :, ::1] dw, floating[::1] db, int n_threads,
                           Py_ssize_t per_unit):
    """The backward pass of an NCHW convolution (not depthwise) a few images at a time: dx
    (NCHW, or None), dw (HWIO) and db from NCHW dy (any fused ReLU's mask applied) and x and
    the HWIO weights, per_unit images' arrays at a time transposed into a thread's stage for
    the NHWC kernels of conv2d_backward_data and conv2d_backward_filter, instead of whole-array
    transposes.  The weight gradient's partial sums go over groups of images that depend on
    the problem only, each group per_unit images at a time, as is dx: the same bits on any
    thread count (and on any machine, for a per_unit that depends on the problem only)."""
    cdef cyc_geom_t g = _geom(geom)
    cdef int dx_kind = _input_grad_kind(&g, sizeof(floating), False)
    cdef int dw_kind = _weight_grad_kind(&g, sizeof(floating), False, False)
    if dx_kind == DEPTHWISE or dw_kind == DEPTHWISE:
        raise ValueError("conv2d_backward_images: not for depthwise convolutions")
    cdef bint wino = dw_kind == WINOGRAD
    cdef int n_acc = <int>min(4 if wino else 8, g.n)
    per_unit = max(1, min(per_unit, (g.n + n_acc - 1) // n_acc))
    cdef cyc_geom_t s = g
    s.n = <int>per_unit
    cdef Py_ssize_t acc_len = (cyc_conv_winograd_dw_acc_len(&g, sizeof(floating)) if wino
                               else cyc_conv_dw_acc_len(&g, sizeof(floating)))
    cdef Py_ssize_t db_len = (g.cout + 15) // 16 * 16
    cdef size_t sbytes = (cyc_conv_winograd_dw_scratch_bytes(&s, sizeof(floating)) if wino
                          else cyc_conv_dw_scratch_bytes(&s, sizeof(floating)))
    cdef size_t stage_bytes = _image_stage_bytes(&g, per_unit, sizeof(floating), True)
    cdef int transposed = _packing(dx_kind)
    cdef Py_ssize_t K = cyc_conv_rows(&g, transposed), kchunk, fchunk, t, m0
    cdef Py_ssize_t KW = _dw_rows(&g, wino)
    cdef void *packed = NULL
    cdef void *zeros = NULL
    cdef void *scratch = NULL
    cdef void *stage = NULL
    cdef floating *dxp = &dx[0, 0, 0, 0] if dx is not None else NULL
    cdef int failed = 0
    cdef int *failp = &failed   # written inside the parallel block, so shared through a pointer
    if dx is not None:
        sbytes = max(sbytes, _dx_scratch_bytes(dx_kind, &s, sizeof(floating)))
        if _take_blocks(&g, transposed, sizeof(floating), &packed, &zeros):
            _give_blocks(packed, zeros)
            raise MemoryError("conv2d_backward: could not allocate scratch memory")
    cdef floating *accs = <floating *>cyc_scratch(
        CYC_SCRATCH_PARTIAL, n_acc * (acc_len + db_len) * sizeof(floating))
    if accs == NULL:
        _give_blocks(packed, zeros)
        raise MemoryError("conv2d_backward: could not allocate the partial sums")
    cdef floating *dbs = accs + n_acc * acc_len
    n_threads = min(n_threads, n_acc)
    kchunk = _pack_chunk(K, n_threads)
    fchunk = _chunk(KW, n_threads, 1)
    with nogil:
        with parallel(num_threads=n_threads):
            if dxp != NULL:
                for t in prange(_n_chunks(K, kchunk), schedule="static"):
                    m0 = t * kchunk
                    _pack(&g, &w[0, 0, 0, 0], NULL, transposed, <floating *>packed, m0,
                          min(K, m0 + kchunk))
            scratch = cyc_scratch(CYC_SCRATCH_TILES, sbytes)
            stage = cyc_scratch(CYC_SCRATCH_STAGE, stage_bytes)
            # every thread takes part in every worksharing loop, with or without its memory
            for t in prange(n_acc, schedule="dynamic"):
                if scratch == NULL or stage == NULL:
                    failp[0] = 1
                    continue
                _backward_image_group(dx_kind, dw_kind, &g, n_acc, t, per_unit,
                                      &dy[0, 0, 0, 0], &x[0, 0, 0, 0], <const floating *>packed,
                                      <const floating *>zeros, dxp, accs + t * acc_len,
                                      dbs + t * db_len, <char *>stage, scratch)
            cyc_scratch_done(CYC_SCRATCH_TILES, scratch)
            cyc_scratch_done(CYC_SCRATCH_STAGE, stage)
            for t in prange(_n_chunks(KW, fchunk), schedule="static"):
                m0 = t * fchunk
                _dw_finish(wino, &g, accs, n_acc, &dw[0, 0, 0, 0], m0, min(KW, m0 + fchunk))
        if not failed:
            _add_up(&db[0], dbs, g.cout, n_acc, db_len)
    cyc_scratch_done(CYC_SCRATCH_PARTIAL, accs)
    _give_blocks(packed, zeros)
    if failed:
        raise MemoryError("conv2d_backward: could not allocate per-thread scratch memory")


# The passes of a pool over NCHW arrays (see _pool_planes).
cdef enum:
    MAX_POOL = 0
    MAX_POOL_BWD = 1
    AVG_POOL = 2
    AVG_POOL_BWD = 3


cdef inline size_t _line_up(size_t n) noexcept nogil:
    """n bytes rounded up to whole cache lines (the kernels' vectors are a line wide)."""
    return (n + 63) // 64 * 64


cdef inline size_t _plane_stage_bytes(const cyc_geom_t *g, int block, size_t elem,
                                      size_t rec) noexcept nogil:
    """One thread's stage for a unit of _pool_planes: the unit's input and output (each as
    long as the longer of the image's input and output planes) and its records (rec bytes
    each)."""
    cdef size_t longer = max(<size_t>g.h * g.w, <size_t>g.oh * g.ow) * block
    return 2 * _line_up(longer * elem) + _line_up(<size_t>g.oh * g.ow * block * rec)


cdef ptrdiff_t _pool_plane_unit(int pass_, const cyc_geom_t *g, int block, Py_ssize_t u,
                                const floating *src, floating *dst, int64_t *ip, uint8_t *cp,
                                bint flag, char *stage) noexcept nogil:
    """Unit u of _pool_planes: channels [c0, c0 + block) of one image, transposed into this
    thread's stage as NHWC, pooled there by the NHWC kernel and transposed back, so that the
    arrays are read and written once (with a whole-array transpose each way, the NCHW pools had
    taken 3x to 8x the time of NHWC).  src is the pass's input (x, or dy), dst its output (y, or
    dx); the records ip or cp (either may be NULL) are the forward's output, the backward's
    input.  flag: relu_in (max) or count_include_pad (avg).  Returns the records the backward
    pass could not place."""
    cdef Py_ssize_t n
    cdef int c0
    cdef cyc_geom_t s = _channel_block(g, block, u, &n, &c0)
    cdef Py_ssize_t hw = <Py_ssize_t>g.h * g.w, ohw = <Py_ssize_t>g.oh * g.ow
    cdef bint forward = pass_ == MAX_POOL or pass_ == AVG_POOL
    cdef Py_ssize_t src_len = hw if forward else ohw, dst_len = ohw if forward else hw
    cdef size_t half = _line_up(max(hw, ohw) * block * sizeof(floating))
    cdef floating *a = <floating *>stage
    cdef floating *b = <floating *>(stage + half)
    cdef int64_t *si = <int64_t *>(stage + 2 * half) if ip != NULL else NULL
    cdef uint8_t *sc = <uint8_t *>(stage + 2 * half) if cp != NULL else NULL
    cdef Py_ssize_t first = n * g.c + c0   # the unit's first plane
    cdef ptrdiff_t stray = 0
    _transpose(src + first * src_len, src_len, a, s.c, s.c, src_len)
    if pass_ == MAX_POOL_BWD:
        if ip != NULL:
            cyc_transpose_f64(<double *>(ip + first * ohw), ohw, <double *>si, s.c, s.c, ohw)
        else:
            cyc_transpose_u8(cp + first * ohw, ohw, sc, s.c, s.c, ohw)
    if pass_ == MAX_POOL:
        _max_pool_rows(&s, a, b, si, sc, flag, 0, s.oh, s.oh)
    elif pass_ == MAX_POOL_BWD:
        stray = _max_pool_bwd_images(&s, a, si, sc, b, False, 0, 1)
    elif pass_ == AVG_POOL:
        _avg_pool_rows(&s, a, b, flag, 0, s.oh, s.oh)
    else:
        _avg_pool_bwd_images(&s, a, b, flag, 0, 1)
    _transpose(b, s.c, dst + first * dst_len, dst_len, dst_len, s.c)
    if pass_ == MAX_POOL:
        if ip != NULL:
            cyc_transpose_f64(<double *>si, s.c, <double *>(ip + first * ohw), ohw, ohw, s.c)
        elif cp != NULL:
            cyc_transpose_u8(sc, s.c, cp + first * ohw, ohw, ohw, s.c)
    return stray


cdef inline ptrdiff_t _pool_plane_staged(int pass_, const cyc_geom_t *g, int block, Py_ssize_t u,
                                         const floating *src, floating *dst, int64_t *ip,
                                         uint8_t *cp, bint flag, size_t sbytes,
                                         int *failed) noexcept nogil:
    """_pool_plane_unit in this thread's stage, taken per unit (a thread-local lookup, against
    at least a plane's work); sets failed[0] if there is no memory for it."""
    cdef void *stage = cyc_scratch(CYC_SCRATCH_STAGE, sbytes)
    cdef ptrdiff_t stray = 0
    if stage == NULL:
        failed[0] = 1
    else:
        stray = _pool_plane_unit(pass_, g, block, u, src, dst, ip, cp, flag, <char *>stage)
    cyc_scratch_done(CYC_SCRATCH_STAGE, stage)
    return stray


cdef ptrdiff_t _pool_planes(int pass_, const cyc_geom_t *g, int block, const floating *src,
                            floating *dst, int64_t *ip, uint8_t *cp, bint flag, int n_threads,
                            bint keep_shares) except -1:
    """A pool pass over NCHW arrays in units of `block` channels of one image (see
    _pool_plane_unit), spread over the threads as the NHWC pools spread their rows.  Returns
    the records the backward pass could not place."""
    cdef Py_ssize_t units = <Py_ssize_t>g.n * ((g.c + block - 1) // block), u
    cdef size_t sbytes = _plane_stage_bytes(g, block, sizeof(floating),
                                            8 if ip != NULL else 1 if cp != NULL else 0)
    cdef ptrdiff_t stray = 0
    cdef int failed = 0
    cdef int *failp = &failed   # written inside the loop, so shared through a pointer
    if keep_shares:
        for u in prange(units, nogil=True, num_threads=n_threads, schedule="static"):
            stray += _pool_plane_staged(pass_, g, block, u, src, dst, ip, cp, flag, sbytes,
                                        failp)
    else:
        for u in prange(units, nogil=True, num_threads=n_threads, schedule="dynamic"):
            stray += _pool_plane_staged(pass_, g, block, u, src, dst, ip, cp, flag, sbytes,
                                        failp)
    if failed:
        raise MemoryError("pooling: could not allocate scratch memory")
    return stray


def plane_stage_bytes(object geom, int block, int itemsize, int record_bytes):
    """The stage _pool_planes takes per thread for units of `block` channels."""
    cdef cyc_geom_t g = _geom(geom)
    return _plane_stage_bytes(&g, block, itemsize, record_bytes)


cdef inline void _max_pool_rows(const cyc_geom_t *g, const floating *x, floating *y,
                                int64_t *ip, uint8_t *cp, bint relu_in, Py_ssize_t t,
                                Py_ssize_t chunk, Py_ssize_t rows) noexcept nogil:
    cdef Py_ssize_t r0 = t * chunk
    if floating is float:
        cyc_max_pool_f32(g, x, y, ip, cp, relu_in, r0, min(rows, r0 + chunk))
    else:
        cyc_max_pool_f64(g, x, y, ip, cp, relu_in, r0, min(rows, r0 + chunk))


def max_pool(const floating[:, :, :, ::1] x, object geom, floating[:, :, :, ::1] y,
             int64_t[:, :, :, ::1] idx, uint8_t[:, :, :, ::1] cell, int n_threads,
             bint keep_shares, bint relu_in=False, int planes=0):
    """y and the record of every window's first maximum: its flat index in the H*W plane
    (idx) or its cell in the window (cell); both may be None, at most one is not.  relu_in:
    windows whose maximum is not positive record none (see cyconv.h).  keep_shares: each
    thread takes the same contiguous share of the rows in every call (a static schedule), else
    chunks as threads free up; as in the other pool kernels.  planes: the arrays are NCHW,
    pooled in units of that many channels (see _pool_planes); 0: NHWC."""
    cdef cyc_geom_t g = _geom(geom)
    cdef Py_ssize_t rows = <Py_ssize_t>g.n * g.oh
    cdef Py_ssize_t chunk = _chunk(rows, n_threads, 1)
    cdef Py_ssize_t nch = _n_chunks(rows, chunk), t
    cdef const floating *xp = &x[0, 0, 0, 0]
    cdef floating *yp = &y[0, 0, 0, 0]
    cdef int64_t *ip = &idx[0, 0, 0, 0] if idx is not None else NULL
    cdef uint8_t *cp = &cell[0, 0, 0, 0] if cell is not None else NULL
    if planes:
        _pool_planes(MAX_POOL, &g, planes, xp, yp, ip, cp, relu_in, n_threads, keep_shares)
        return
    if keep_shares:
        for t in prange(nch, nogil=True, num_threads=n_threads, schedule="static"):
            _max_pool_rows(&g, xp, yp, ip, cp, relu_in, t, chunk, rows)
    else:
        for t in prange(nch, nogil=True, num_threads=n_threads, schedule="dynamic"):
            _max_pool_rows(&g, xp, yp, ip, cp, relu_in, t, chunk, rows)


cdef inline ptrdiff_t _max_pool_bwd_images(const cyc_geom_t *g, const floating *dy,
                                           const int64_t *ip, const uint8_t *cp, floating *dx,
                                           bint stream, Py_ssize_t t,
                                           Py_ssize_t chunk) noexcept nogil:
    cdef Py_ssize_t n0 = t * chunk
    if floating is float:
        return cyc_max_pool_bwd_f32(g, dy, ip, cp, dx, stream, n0,
                                    min(<Py_ssize_t>g.n, n0 + chunk))
    else:
        return cyc_max_pool_bwd_f64(g, dy, ip, cp, dx, stream, n0,
                                    min(<Py_ssize_t>g.n, n0 + chunk))


def max_pool_backward(const floating[:, :, :, ::1] dy, const int64_t[:, :, :, ::1] idx,
                      const uint8_t[:, :, :, ::1] cell, object geom, floating[:, :, :, ::1] dx,
                      int n_threads, bint keep_shares, int planes=0, bint stream=False):
    """dx: each output's gradient placed where its record (idx or cell: exactly one is not
    None) says (images are independent).  Returns the number of records that could not be
    placed (see cyconv.h).  planes: as in max_pool.  stream: dx is too large for the caches to
    keep (NHWC only; see cyconv.h)."""
    cdef cyc_geom_t g = _geom(geom)
    cdef Py_ssize_t chunk = _chunk(g.n, n_threads, 1)
    cdef Py_ssize_t nch = _n_chunks(g.n, chunk), t
    cdef Py_ssize_t stray = 0
    cdef const floating *dyp = &dy[0, 0, 0, 0]
    cdef floating *dxp = &dx[0, 0, 0, 0]
    cdef const int64_t *ip = &idx[0, 0, 0, 0] if idx is not None else NULL
    cdef const uint8_t *cp = &cell[0, 0, 0, 0] if cell is not None else NULL
    if (ip == NULL) == (cp == NULL):
        raise ValueError("max_pool_backward takes exactly one of idx and cell")
    if planes:
        return _pool_planes(MAX_POOL_BWD, &g, planes, dyp, dxp, <int64_t *>ip, <uint8_t *>cp,
                            False, n_threads, keep_shares)
    if keep_shares:
        for t in prange(nch, nogil=True, num_threads=n_threads, schedule="static"):
            stray += _max_pool_bwd_images(&g, dyp, ip, cp, dxp, stream, t, chunk)
    else:
        for t in prange(nch, nogil=True, num_threads=n_threads, schedule="dynamic"):
            stray += _max_pool_bwd_images(&g, dyp, ip, cp, dxp, stream, t, chunk)
    return stray


cdef inline void _transpose(const floating *src, Py_ssize_t src_ld, floating *dst,
                            Py_ssize_t dst_ld, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    if floating is float:
        cyc_transpose_f32(src, src_ld, dst, dst_ld, rows, cols)
    else:
        cyc_transpose_f64(src, src_ld, dst, dst_ld, rows, cols)


def transpose(const floating[:, :, ::1] src, floating[:, :, ::1] dst, int n_threads):
    """dst[k] = src[k].T for each matrix k (dst has shape (n, cols, rows))."""
    cdef Py_ssize_t n = src.shape[0], rows = src.shape[1], cols = src.shape[2], t, k
    cdef Py_ssize_t per = max(1, n // (4 * n_threads)) if n_threads > 1 else n
    cdef Py_ssize_t nch = _n_chunks(n, per)
    cdef Py_ssize_t piece, pieces, r0
    if n == 0 or rows == 0 or cols == 0:
        return
    if n_threads > 1 and n < 2 * n_threads and rows >= 64:
        # too few matrices to share out (a layer's weights, a small batch): pieces of rows,
        # whole tiles of 16, 4 per thread; each piece's source rows are its own columns of dst
        piece = ((rows + 4 * n_threads - 1) // (4 * n_threads) + 15) // 16 * 16
        pieces = (rows + piece - 1) // piece
        for t in prange(n * pieces, nogil=True, num_threads=n_threads, schedule="dynamic"):
            k = t // pieces
            r0 = t % pieces * piece
            _transpose(&src[k, r0, 0], cols, &dst[k, 0, r0], rows, min(piece, rows - r0), cols)
        return
    for t in prange(nch, nogil=True, num_threads=n_threads, schedule="dynamic"):
        for k in range(t * per, min(n, t * per + per)):
            _transpose(&src[k, 0, 0], cols, &dst[k, 0, 0], rows, rows, cols)


cdef void _adam_pieces(floating **ptr, const Py_ssize_t *piece, Py_ssize_t n_pieces,
                       floating alpha, floating one_minus_b1, floating one_minus_b2, floating eps,
                       int n_threads) noexcept nogil:
    """cyc_adam over pieces (array k, start, end): ptr holds var, g, m and v of each array."""
    cdef Py_ssize_t t, k, i0
    for t in prange(n_pieces, num_threads=n_threads, schedule="dynamic"):
        k = piece[3 * t]
        i0 = piece[3 * t + 1]
        if floating is float:
            cyc_adam_f32(ptr[4 * k] + i0, ptr[4 * k + 1] + i0, ptr[4 * k + 2] + i0,
                         ptr[4 * k + 3] + i0, piece[3 * t + 2] - i0, alpha, one_minus_b1,
                         one_minus_b2, eps)
        else:
            cyc_adam_f64(ptr[4 * k] + i0, ptr[4 * k + 1] + i0, ptr[4 * k + 2] + i0,
                         ptr[4 * k + 3] + i0, piece[3 * t + 2] - i0, alpha, one_minus_b1,
                         one_minus_b2, eps)


# An Adam piece: elements one thread updates at a time (64 KB of float32 weights).
ADAM_PIECE = 16384


cdef enum:
    # swap_outer_axes's blocks: 4 transpose tiles wide, 8 pieces for 512 output channels
    SWAP_BLOCK = 64


def swap_outer_axes(const floating[:, :, ::1] src, floating[:, :, ::1] dst, int n_threads):
    """dst[c, b, a] = src[a, b, c]: OIHW weights (O, I, kh * kw) into HWIO and back, in one pass.

    Blocks of SWAP_BLOCK values of a and of c, each through all of b: SWAP_BLOCK source rows
    read as runs, SWAP_BLOCK-value pieces of destination rows written, a page apart at most
    (an (O, I) matrix per tap, transposed one at a time, took a row piece from every page of
    the source per tap)."""
    cdef Py_ssize_t A = src.shape[0], B = src.shape[1], C = src.shape[2]
    cdef Py_ssize_t na = _n_chunks(A, SWAP_BLOCK), nc = _n_chunks(C, SWAP_BLOCK)
    cdef Py_ssize_t t, a0, c0, b
    if dst.shape[0] != C or dst.shape[1] != B or dst.shape[2] != A:
        raise ValueError(f"dst: expected shape {(C, B, A)}, "
                         f"got {(dst.shape[0], dst.shape[1], dst.shape[2])}")
    if A == 0 or B == 0 or C == 0:
        return
    for t in prange(na * nc, nogil=True, num_threads=n_threads, schedule="dynamic"):
        a0 = t // nc * SWAP_BLOCK
        c0 = t % nc * SWAP_BLOCK
        for b in range(B):
            _transpose(&src[a0, b, c0], B * C, &dst[c0, b, a0], B * A,
                       min(SWAP_BLOCK, A - a0), min(SWAP_BLOCK, C - c0))


cdef floating *_flat_data(object a, bint write, floating kind, Py_ssize_t *size) except NULL:
    """The data of a C-contiguous 1-D ndarray of floating's dtype (writeable if write), read
    through numpy's C API: a typed memoryview per array cost 20 us of a model's 10 weights'
    update (4 arrays each), more than a small model's arithmetic."""
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"adam_update: arrays expected, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int typenum = cnp.NPY_FLOAT32 if floating is float else cnp.NPY_FLOAT64
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_NDIM(arr) != 1
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or (write and not cnp.PyArray_ISWRITEABLE(arr))):
        raise ValueError("adam_update: contiguous 1-D arrays of the weights' float dtype "
                         "expected (the weights, m and v writeable)")
    size[0] = cnp.PyArray_SIZE(arr)
    return <floating *>cnp.PyArray_DATA(arr)


cdef _adam_many(list var, list g, list m, list v, floating alpha, floating one_minus_b1,
                floating one_minus_b2, floating eps, int n_threads):
    cdef Py_ssize_t n = len(var), k, i0, n_pieces = 0, size, other
    cdef floating **ptr
    cdef Py_ssize_t *piece
    cdef Py_ssize_t *sizes
    if not len(g) == len(m) == len(v) == n:
        raise ValueError("adam_update: one g, m and v per weight")
    if n == 0:
        return
    ptr = <floating **>malloc(4 * n * sizeof(floating *))
    sizes = <Py_ssize_t *>malloc(n * sizeof(Py_ssize_t))
    piece = NULL
    try:
        if ptr == NULL or sizes == NULL:
            raise MemoryError("adam_update: could not allocate its work list")
        # the arrays stay alive in the caller's lists while the pointers are used
        for k in range(n):
            ptr[4 * k] = _flat_data(var[k], True, alpha, &size)
            ptr[4 * k + 1] = _flat_data(g[k], False, alpha, &other)
            if other != size:
                raise ValueError("adam_update: each weight's g, m and v must have its size")
            ptr[4 * k + 2] = _flat_data(m[k], True, alpha, &other)
            if other != size:
                raise ValueError("adam_update: each weight's g, m and v must have its size")
            ptr[4 * k + 3] = _flat_data(v[k], True, alpha, &other)
            if other != size:
                raise ValueError("adam_update: each weight's g, m and v must have its size")
            sizes[k] = size
            n_pieces += (size + ADAM_PIECE - 1) // ADAM_PIECE
        if n_pieces == 0:
            return
        piece = <Py_ssize_t *>malloc(3 * n_pieces * sizeof(Py_ssize_t))
        if piece == NULL:
            raise MemoryError("adam_update: could not allocate its work list")
        n_pieces = 0
        for k in range(n):
            for i0 in range(0, sizes[k], ADAM_PIECE):
                piece[3 * n_pieces] = k
                piece[3 * n_pieces + 1] = i0
                piece[3 * n_pieces + 2] = min(sizes[k], i0 + ADAM_PIECE)
                n_pieces += 1
        with nogil:
            _adam_pieces(ptr, piece, n_pieces, alpha, one_minus_b1, one_minus_b2, eps,
                         <int>min(n_threads, n_pieces))
    finally:
        free(ptr)
        free(sizes)
        free(piece)


def adam_update(list var, list g, list m, list v, double alpha, double one_minus_b1,
                double one_minus_b2, double eps, int n_threads):
    """One Adam step in place (see cyc_adam) over several contiguous 1-D arrays of one dtype,
    each with its g, m and v of its size: all of a model's weights in one call, in pieces
    spread over the threads.  Each element's arithmetic is the same however the pieces fall."""
    if var[0].dtype == np.float32:
        _adam_many(var, g, m, v, <float>alpha, <float>one_minus_b1, <float>one_minus_b2,
                   <float>eps, n_threads)
    else:
        _adam_many(var, g, m, v, alpha, one_minus_b1, one_minus_b2, eps, n_threads)


cdef Py_ssize_t _softmax_xent_rows(const floating *z, const Py_ssize_t *labels, Py_ssize_t n,
                                   Py_ssize_t k, floating *grad, floating scale,
                                   double *total) noexcept nogil:
    """See sparse_softmax_xent; returns -1, or the first row whose label is out of range."""
    cdef Py_ssize_t r, j, lab
    cdef const floating *zr
    cdef floating *gr
    cdef floating m, s, e
    cdef double acc = 0
    for r in range(n):
        lab = labels[r]
        if lab < 0 or lab >= k:
            return r
        zr = z + r * k
        # a NaN anywhere makes every exponential and so the row's loss and gradient NaN, as
        # numpy's max (which returns the NaN) does
        m = zr[0]
        for j in range(1, k):
            if zr[j] > m:
                m = zr[j]
        s = 0
        for j in range(k):
            if floating is float:
                e = expf(zr[j] - m)
            else:
                e = exp(zr[j] - m)
            if grad != NULL:
                grad[r * k + j] = e
            s = s + e
        if floating is float:
            acc += <double>((m + logf(s)) - zr[lab])
        else:
            acc += (m + log(s)) - zr[lab]
        if grad != NULL:
            gr = grad + r * k
            for j in range(k):
                gr[j] = gr[j] / s
            gr[lab] = gr[lab] - 1
            for j in range(k):
                gr[j] = gr[j] / scale
    total[0] = acc
    return -1


def sparse_softmax_xent(const floating[:, ::1] z, const Py_ssize_t[::1] labels,
                        floating[:, ::1] grad, double scale):
    """The softmax cross-entropy of logits z (rows) with integer labels in one pass: returns
    (the sum over rows of log(sum(exp(z))) - z[label], each row's in z's dtype and the sum in
    float64, -1), with grad (or None) set to (softmax(z) - one_hot(label)) / scale; or (0, r)
    for the first row r whose label lies outside [0, K), grad then incomplete.  The
    arithmetic of keras.losses' numpy path (_sparse_xent_from_logits), one row at a time: that
    path's fifteen numpy calls took 150 us of a training step at batch 32."""
    cdef double total = 0
    cdef Py_ssize_t bad
    cdef floating *gp = &grad[0, 0] if grad is not None else NULL
    with nogil:
        bad = _softmax_xent_rows(&z[0, 0], &labels[0], z.shape[0], z.shape[1], gp,
                                 <floating>scale, &total)
    if bad >= 0:
        return 0.0, bad
    return total, -1


def argmax_hits(const floating[:, ::1] scores, const Py_ssize_t[::1] labels):
    """How many rows' first largest score (a NaN counts as largest, as numpy's argmax has it)
    sits at the row's label."""
    cdef Py_ssize_t r, j, best, hits = 0, k = scores.shape[1]
    cdef floating m, v
    if k == 0:
        return 0
    with nogil:
        for r in range(scores.shape[0]):
            best = 0
            m = scores[r, 0]
            if m == m:
                for j in range(1, k):
                    v = scores[r, j]
                    if v != v:
                        best = j
                        break
                    if v > m:
                        m = v
                        best = j
            hits += best == labels[r]
    return hits


# Elements a thread takes at a time in dropout_forward (even: each starts a pair of draws).
cdef enum:
    DROPOUT_CHUNK = 32768


cdef inline void _dropout(const floating *x, uint64_t key, uint32_t threshold, floating scale,
                          floating *y, uint8_t *keep, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    if floating is float:
        cyc_dropout_f32(x, key, threshold, scale, y, keep, i0, i1)
    else:
        cyc_dropout_f64(x, key, threshold, scale, y, keep, i0, i1)


def dropout_forward(const floating[::1] x, uint64_t key, uint32_t threshold, double scale,
                    floating[::1] y, uint8_t[::1] keep, int n_threads):
    """Inverted dropout over flat arrays of one size (cyc_dropout): each element's 32 random
    bits are a hash of key and its place, so the threads draw the mask one thread would."""
    cdef Py_ssize_t n = x.shape[0], t
    cdef floating s = <floating>scale
    if n == 0:
        return
    with nogil:
        if n_threads <= 1:
            _dropout(&x[0], key, threshold, s, &y[0], &keep[0], 0, n)
        else:
            for t in prange((n + DROPOUT_CHUNK - 1) // DROPOUT_CHUNK, num_threads=n_threads,
                            schedule="static"):
                _dropout(&x[0], key, threshold, s, &y[0], &keep[0], t * DROPOUT_CHUNK,
                         min(n, (t + 1) * DROPOUT_CHUNK))


def dropout_backward(const floating[::1] dy, const uint8_t[::1] keep, double scale,
                     floating[::1] out):
    """out = dy * (scale where kept, else 0); out may be dy."""
    if dy.shape[0] == 0:
        return
    with nogil:
        if floating is float:
            cyc_dropout_bwd_f32(&dy[0], &keep[0], <float>scale, &out[0], dy.shape[0])
        else:
            cyc_dropout_bwd_f64(&dy[0], &keep[0], scale, &out[0], dy.shape[0])


cdef inline void _relu_bwd(const floating *dy, const floating *y, floating *out,
                           Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    if floating is float:
        cyc_relu_bwd_f32(&dy[i0], &y[i0], &out[i0], i1 - i0)
    else:
        cyc_relu_bwd_f64(&dy[i0], &y[i0], &out[i0], i1 - i0)


def relu_backward(const floating[::1] dy, const floating[::1] y, floating[::1] out,
                  int n_threads):
    """out = dy where y > 0, else 0 (flat, contiguous arrays).  One thread goes without an
    OpenMP region: opening one for a single thread cost a few microseconds, about what a
    Dense layer's 2,048 values take (the small masks of a training step at batch 32: 0.85 of
    the time, in-process A/B)."""
    cdef Py_ssize_t n = dy.shape[0]
    if n_threads <= 1:
        with nogil:
            _relu_bwd(&dy[0], &y[0], &out[0], 0, n)
        return
    cdef Py_ssize_t chunk = _chunk(n, n_threads, 64)
    cdef Py_ssize_t nch = _n_chunks(n, chunk), t, i0
    for t in prange(nch, nogil=True, num_threads=n_threads, schedule="static"):
        i0 = t * chunk
        _relu_bwd(&dy[0], &y[0], &out[0], i0, min(n, i0 + chunk))


cdef inline void _avg_pool_rows(const cyc_geom_t *g, const floating *x, floating *y, bint cip,
                                Py_ssize_t t, Py_ssize_t chunk, Py_ssize_t rows) noexcept nogil:
    cdef Py_ssize_t r0 = t * chunk
    if floating is float:
        cyc_avg_pool_f32(g, x, y, cip, r0, min(rows, r0 + chunk))
    else:
        cyc_avg_pool_f64(g, x, y, cip, r0, min(rows, r0 + chunk))


def avg_pool(const floating[:, :, :, ::1] x, object geom, floating[:, :, :, ::1] y,
             bint count_include_pad, int n_threads, bint keep_shares, int planes=0):
    """planes: as in max_pool."""
    cdef cyc_geom_t g = _geom(geom)
    cdef Py_ssize_t rows = <Py_ssize_t>g.n * g.oh
    cdef Py_ssize_t chunk = _chunk(rows, n_threads, 1)
    cdef Py_ssize_t nch = _n_chunks(rows, chunk), t
    cdef const floating *xp = &x[0, 0, 0, 0]
    cdef floating *yp = &y[0, 0, 0, 0]
    if planes:
        _pool_planes(AVG_POOL, &g, planes, xp, yp, NULL, NULL, count_include_pad, n_threads,
                     keep_shares)
        return
    if keep_shares:
        for t in prange(nch, nogil=True, num_threads=n_threads, schedule="static"):
            _avg_pool_rows(&g, xp, yp, count_include_pad, t, chunk, rows)
    else:
        for t in prange(nch, nogil=True, num_threads=n_threads, schedule="dynamic"):
            _avg_pool_rows(&g, xp, yp, count_include_pad, t, chunk, rows)


cdef inline void _avg_pool_bwd_images(const cyc_geom_t *g, const floating *dy, floating *dx,
                                      bint cip, Py_ssize_t t, Py_ssize_t chunk) noexcept nogil:
    cdef Py_ssize_t n0 = t * chunk
    if floating is float:
        cyc_avg_pool_bwd_f32(g, dy, dx, cip, n0, min(<Py_ssize_t>g.n, n0 + chunk))
    else:
        cyc_avg_pool_bwd_f64(g, dy, dx, cip, n0, min(<Py_ssize_t>g.n, n0 + chunk))


def avg_pool_backward(const floating[:, :, :, ::1] dy, object geom, floating[:, :, :, ::1] dx,
                      bint count_include_pad, int n_threads, bint keep_shares, int planes=0):
    """planes: as in max_pool."""
    cdef cyc_geom_t g = _geom(geom)
    cdef Py_ssize_t chunk = _chunk(g.n, n_threads, 1)
    cdef Py_ssize_t nch = _n_chunks(g.n, chunk), t
    cdef const floating *dyp = &dy[0, 0, 0, 0]
    cdef floating *dxp = &dx[0, 0, 0, 0]
    if planes:
        _pool_planes(AVG_POOL_BWD, &g, planes, dyp, dxp, NULL, NULL, count_include_pad,
                     n_threads, keep_shares)
        return
    if keep_shares:
        for t in prange(nch, nogil=True, num_threads=n_threads, schedule="static"):
            _avg_pool_bwd_images(&g, dyp, dxp, count_include_pad, t, chunk)
    else:
        for t in prange(nch, nogil=True, num_threads=n_threads, schedule="dynamic"):
            _avg_pool_bwd_images(&g, dyp, dxp, count_include_pad, t, chunk)
