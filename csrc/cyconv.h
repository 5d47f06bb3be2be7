/* cyconv's C kernels: what Cython may call.
 *
 * Plain C, no Python.h.  Every array is C-contiguous NHWC (activations) and already validated by
 * cyconv/ops.py; every function here works on a range of independent work (a tile of output
 * pixels, a range of images) so that the caller can spread ranges over OpenMP threads.  Nothing
 * here allocates: scratch memory comes from the caller, sized by the *_scratch functions, who
 * may take it from cyc_scratch (scratch.c).
 *
 * Each kernel exists once per instruction set (portable C, AVX2+FMA, AVX-512) and per dtype
 * (f32, f64); dispatch.c picks the instruction set at run time and these entry points forward
 * to it.
 */
#ifndef CYCONV_H
#define CYCONV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One convolution or pooling call, in NHWC terms. */
typedef struct {
    int n, h, w, c;          /* input */
    int kh, kw;              /* window */
    int sh, sw, dh, dw;      /* stride, dilation */
    int pad_top, pad_left;   /* bottom/right padding is implied by oh/ow */
    int pad_bottom, pad_right;
    int oh, ow;              /* output */
    int cout, groups;        /* conv only: output channels, groups */
} cyc_geom_t;

/* ---- instruction-set dispatch ---- */
enum { CYC_ISA_PORTABLE = 0, CYC_ISA_AVX2 = 1, CYC_ISA_AVX512 = 2 };
/* The best instruction set this CPU and this build support. */
int cyc_isa_best(void);
/* Select an instruction set; returns the one in use (capped at cyc_isa_best()). */
int cyc_isa_set(int isa);
int cyc_isa_get(void);
const char *cyc_isa_name(int isa);
/* 1 in a test build whose AVX-512 path is compiled for AVX2 (CYCONV_EMULATE_AVX512=1 at build
 * time): cyc_isa_best() then offers that path on any AVX2 CPU, at a fraction of AVX2's speed. */
int cyc_avx512_emulated(void);

/* ---- working memory kept between calls (scratch.c) ----
 * cyc_scratch returns this thread's block for `slot`, at least `bytes` long (NULL if memory runs
 * out), and the block stays this thread's until cyc_scratch_done: a thread holds one block per
 * slot at a time.  A block is zero-filled when first made, so the zeros slot, which nothing
 * writes to, always reads as zeros; other blocks hold whatever the last call left. */
enum {
    CYC_SCRATCH_TILES = 0,    /* each thread's tile scratch */
    CYC_SCRATCH_PACKED = 1,   /* packed weights, shared by a call's threads */
    CYC_SCRATCH_ZEROS = 2,    /* the zero row that padded taps read */
    CYC_SCRATCH_PARTIAL = 3,  /* the weight gradient's partial sums */
    CYC_SCRATCH_STAGE = 4,    /* NHWC output pixels on their way into NCHW planes */
    CYC_SCRATCH_SLOTS = 5
};
void *cyc_scratch(int slot, size_t bytes);
void cyc_scratch_done(int slot, void *block);

/* ---- build facts ---- */
int cyc_openmp_enabled(void);      /* 1 if compiled with OpenMP */
int cyc_omp_max_threads(void);     /* omp_get_max_threads(), or 1 without OpenMP */
const char *cyc_compiler(void);    /* the compiler that built the kernels, with its version */
/* The level-2 (a core's) or level-3 (shared) cache as the C library reports it, else 0. */
size_t cyc_cache_bytes(int level);

/* ---- convolution ----
 * Weights are repacked once per call into the micro-kernel's order (cyc_conv_pack_*).
 * The forward and input-gradient kernels compute a range [m0, m1) of flattened output pixels
 * (n, row, col) and need a per-thread scratch of cyc_conv_scratch_bytes().
 */
size_t cyc_conv_packed_len(const cyc_geom_t *g, int transposed, int elem_size);
size_t cyc_conv_scratch_bytes(const cyc_geom_t *g, int transposed, int elem_size);
/* Length of the zero buffer (in elements) that padded taps read from. */
size_t cyc_conv_zeros_len(const cyc_geom_t *g);

/* Rows [k0, k1) of the cyc_conv_rows() reduction rows (the bias with row 0), so that threads
 * can share the packing. */
size_t cyc_conv_rows(const cyc_geom_t *g, int transposed);
void cyc_conv_pack_f32(const cyc_geom_t *g, const float *w_hwio, const float *bias,
                       int transposed, float *packed, ptrdiff_t k0, ptrdiff_t k1);
void cyc_conv_pack_f64(const cyc_geom_t *g, const double *w_hwio, const double *bias,
                       int transposed, double *packed, ptrdiff_t k0, ptrdiff_t k1);

/* y[m0:m1] (flattened n*oh*ow pixels) = conv(x) + bias, optional ReLU. */
void cyc_conv_fwd_f32(const cyc_geom_t *g, const float *x, const float *packed, int relu,
                      const float *zeros, float *y, ptrdiff_t m0, ptrdiff_t m1, void *scratch);
void cyc_conv_fwd_f64(const cyc_geom_t *g, const double *x, const double *packed, int relu,
                      const double *zeros, double *y, ptrdiff_t m0, ptrdiff_t m1, void *scratch);

/* dx[m0:m1] (flattened n*h*w input pixels) from dy and transposed-packed weights. */
void cyc_conv_bwd_data_f32(const cyc_geom_t *g, const float *dy, const float *packed_t,
                           const float *zeros, float *dx, ptrdiff_t m0, ptrdiff_t m1,
                           void *scratch);
void cyc_conv_bwd_data_f64(const cyc_geom_t *g, const double *dy, const double *packed_t,
                           const double *zeros, double *dx, ptrdiff_t m0, ptrdiff_t m1,
                           void *scratch);

/* The input gradient by scattering (see kernels_body.h), for whole images [n0, n1).
 * cyc_conv_bwd_data_scatters() says whether to gather (cyc_conv_bwd_data) or scatter, and with
 * which tiles: one tap's channels (weights packed with transposed = 1, rows = 0) or one kernel
 * row's pixels x channels (transposed = CYC_ROW_TAPS, rows = 1). */
enum { CYC_GATHER = 0, CYC_SCATTER_TAPS = 1, CYC_SCATTER_ROWS = 2 };
/* A Dense layer's input gradient (a 1x1 kernel, unit stride, no padding, one group, few
 * pixels, dy at most CYC_DENSE_DX_MAX_DY_BYTES): cyc_conv_dense_dx() says whether it applies;
 * then
 * cyc_conv_dense_dx_f32/f64 compute input channels [k0, k1) of dx (P pixels, cin channels)
 * from dy (P x cout) and the HWIO weights (cin x cout), read in place. */
#define CYC_DENSE_DX_MAX_DY_BYTES (256 * 1024)
/* A Dense layer's forward pass (the same kernels, at most 48 pixels, output channels a
 * multiple of 16):
 * cyc_conv_dense_fwd_applies() says whether it applies; then cyc_conv_dense_fwd_f32/f64 compute
 * output channels [c0, c1) (multiples of 16 apart) of y (P x cout) from x (P x cin), the HWIO
 * weights read in place, the bias (or NULL) and a ReLU if relu. */
int cyc_conv_dense_fwd_applies(const cyc_geom_t *g, int elem_size);
void cyc_conv_dense_fwd_f32(const float *x, const float *w, const float *bias, int relu,
                            float *y, ptrdiff_t P, ptrdiff_t cin, int cout, int c0, int c1);
void cyc_conv_dense_fwd_f64(const double *x, const double *w, const double *bias, int relu,
                            double *y, ptrdiff_t P, ptrdiff_t cin, int cout, int c0, int c1);
/* One NCHW image's pointwise convolution as a matrix product (see kernels_body.h): rows
 * [m0, m1) and columns [n0, n1) of y (M x N) = a (M x K, rows K apart) times b (K x N), the
 * sums over k in [k0, k1) of K, then a ReLU if relu is 1 (added to what y holds if it is 2);
 * b first into panels (cyc_gemm_planes_pack of columns [n0, n1); all of them take
 * cyc_gemm_planes_panel_len(K + ones, N, elem_size) values), with a row of ones after its K
 * rows if ones (a's last column is then a bias, and the product's K is one more).  n0 is a
 * multiple of cyc_gemm_planes_col_step(elem_size), and so is n1 unless it is N. */
ptrdiff_t cyc_gemm_planes_col_step(int elem_size);
size_t cyc_gemm_planes_panel_len(ptrdiff_t K, ptrdiff_t N, int elem_size);
void cyc_gemm_planes_pack_f32(const float *b, ptrdiff_t K, ptrdiff_t N, int ones, ptrdiff_t n0,
                              ptrdiff_t n1, float *panels);
void cyc_gemm_planes_pack_f64(const double *b, ptrdiff_t K, ptrdiff_t N, int ones, ptrdiff_t n0,
                              ptrdiff_t n1, double *panels);
/* The panels for b = x's transpose (x N x K), with a column of ones after its N if ones: the
 * weight gradient's (see kernels_body.h). */
void cyc_gemm_planes_pack_t_f32(const float *x, ptrdiff_t K, ptrdiff_t N, int ones,
                                float *panels);
void cyc_gemm_planes_pack_t_f64(const double *x, ptrdiff_t K, ptrdiff_t N, int ones,
                                double *panels);
void cyc_gemm_planes_f32(const float *a, const float *panels, int relu, float *y, ptrdiff_t K,
                         ptrdiff_t N, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1,
                         ptrdiff_t k0, ptrdiff_t k1);
void cyc_gemm_planes_f64(const double *a, const double *panels, int relu, double *y,
                         ptrdiff_t K, ptrdiff_t N, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0,
                         ptrdiff_t n1, ptrdiff_t k0, ptrdiff_t k1);
int cyc_conv_dense_dx(const cyc_geom_t *g, int elem_size);
void cyc_conv_dense_dx_f32(const float *dy, const float *w, float *dx, ptrdiff_t P,
                           ptrdiff_t cin, int cout, ptrdiff_t k0, ptrdiff_t k1);
void cyc_conv_dense_dx_f64(const double *dy, const double *w, double *dx, ptrdiff_t P,
                           ptrdiff_t cin, int cout, ptrdiff_t k0, ptrdiff_t k1);
/* `transposed` (packing, plans) for the scatter by kernel rows, beside 0 (forward) and 1 */
#define CYC_ROW_TAPS 2
int cyc_conv_bwd_data_scatters(const cyc_geom_t *g, int elem_size);
size_t cyc_conv_scatter_scratch_bytes(const cyc_geom_t *g, int rows, int elem_size);
void cyc_conv_bwd_data_scatter_f32(const cyc_geom_t *g, int rows, const float *dy,
                                   const float *packed_t, float *dx, ptrdiff_t n0, ptrdiff_t n1,
                                   void *scratch);
void cyc_conv_bwd_data_scatter_f64(const cyc_geom_t *g, int rows, const double *dy,
                                   const double *packed_t, double *dx, ptrdiff_t n0,
                                   ptrdiff_t n1, void *scratch);

/* Winograd F(2x2, 3x3) and F(4x4, 3x3): 3x3 convolutions with unit stride and dilation and one
 * group, computed in tiles of 2x2 output pixels with 16 products per channel pair where the
 * direct convolution takes 36, or of 4x4 pixels with 36 where it takes 144.  The input
 * gradient of such a convolution is one too, so the forward pass and the input gradient share
 * the kernel.  `transposed` values for cyc_conv_rows, cyc_conv_packed_len and cyc_conv_pack,
 * beside 0, 1 and CYC_ROW_TAPS: */
#define CYC_WINO_FWD 3
#define CYC_WINO_DX 4
/* 1 if the forward pass (what 0), the input gradient (1) or the weight gradient (2) of this
 * problem runs faster by Winograd (it depends on the problem only, and on
 * cyc_conv_winograd_set). */
int cyc_conv_winograd(const cyc_geom_t *g, int what, int elem_size);
/* Turn the Winograd path on (1, the default), on with F(2x2) tiles only (2, for F(2x2)'s
 * smaller rounding error) or off (0); returns the previous setting, which starts as
 * CYCONV_WINOGRAD says ("0", "2", else 1).  cyc_conv_winograd_enabled() is the setting,
 * cyc_conv_winograd_largest_tile() the tile side it allows.  The kernels read the tile side
 * as they run, so the setting must not change while a convolution runs in another thread
 * (its scratch was sized for the tiles of the setting before). */
int cyc_conv_winograd_set(int on);
int cyc_conv_winograd_enabled(void);
int cyc_conv_winograd_largest_tile(void);
/* Tiles of the computed tensor, the kernel's unit of work, and how many it transforms at a time
 * (callers' ranges of tiles should be multiples of that); scratch per thread.  A tile is m x m
 * computed pixels, m = cyc_conv_winograd_tile (2 or 4, by the computed tensor's width and the
 * channels read: see cyc_wino_m in kernels_common.h). */
ptrdiff_t cyc_conv_winograd_tiles(const cyc_geom_t *g, int mode);
int cyc_conv_winograd_tile(const cyc_geom_t *g, int mode);
int cyc_conv_winograd_block(const cyc_geom_t *g, int mode, int elem_size);
size_t cyc_conv_winograd_scratch_bytes(const cyc_geom_t *g, int mode, int elem_size);
/* Tiles [t0, t1) of the forward pass (mode CYC_WINO_FWD: x to y, with the bias and an optional
 * ReLU) or of the input gradient (CYC_WINO_DX: dy to dx), from weights packed in that mode. */
void cyc_conv_winograd_f32(const cyc_geom_t *g, int mode, const float *src, const float *packed,
                           int relu, float *dst, ptrdiff_t t0, ptrdiff_t t1, void *scratch);
void cyc_conv_winograd_f64(const cyc_geom_t *g, int mode, const double *src,
                           const double *packed, int relu, double *dst, ptrdiff_t t0,
                           ptrdiff_t t1, void *scratch);

/* The weight gradient by Winograd (where cyc_conv_winograd(g, 2, ...) says; no pool, see
 * kernels_body.h): tiles [t0, t1) of the forward pass (of cyc_conv_winograd_dw_tiles: the
 * forward pass's, or F(2x2)'s where F(4x4)'s sums would not stay in cache) accumulated into one
 * thread's du_acc, of cyc_conv_winograd_dw_acc_len() elements (zeroed by the caller), and
 * db_acc (cout); then rows [c0, c1) (input channels) of dw_hwio from the sum of n_acc
 * accumulators laid end to end. */
ptrdiff_t cyc_conv_winograd_dw_tiles(const cyc_geom_t *g, int elem_size);
int cyc_conv_winograd_dw_tile(const cyc_geom_t *g, int elem_size);
size_t cyc_conv_winograd_dw_acc_len(const cyc_geom_t *g, int elem_size);
size_t cyc_conv_winograd_dw_scratch_bytes(const cyc_geom_t *g, int elem_size);
void cyc_conv_bwd_filter_winograd_f32(const cyc_geom_t *g, const float *x, const float *dy,
                                      const float *relu_y, float *du_acc, float *db_acc,
                                      ptrdiff_t t0, ptrdiff_t t1, void *scratch);
void cyc_conv_bwd_filter_winograd_f64(const cyc_geom_t *g, const double *x, const double *dy,
                                      const double *relu_y, double *du_acc, double *db_acc,
                                      ptrdiff_t t0, ptrdiff_t t1, void *scratch);
void cyc_conv_dw_finish_winograd_f32(const cyc_geom_t *g, const float *accs, int n_acc,
                                     float *dw_hwio, ptrdiff_t c0, ptrdiff_t c1);
void cyc_conv_dw_finish_winograd_f64(const cyc_geom_t *g, const double *accs, int n_acc,
                                     double *dw_hwio, ptrdiff_t c0, ptrdiff_t c1);

/* Depthwise convolutions: groups == c == cout > 1 (a channel multiplier runs on x with its
 * channels repeated) and windows of at most CYC_DEPTHWISE_MAX_TAPS cells (their tap tables live
 * on the stack; larger windows take the tile kernels); the weights as given (HWIO,
 * (kh, kw, 1, c)), no packing.  The forward
 * pass computes output rows [r0, r1) of the flattened (n, oh), the input gradient dx rows
 * [r0, r1) of the flattened (n, h); the weight gradient adds the sums over output rows
 * [r0, r1) into dw_acc ([kh * kw][c], the HWIO layout) and db_acc, with a scratch row of
 * ow * c values. */
#define CYC_DEPTHWISE_MAX_TAPS 256
void cyc_depthwise_fwd_f32(const cyc_geom_t *g, const float *x, const float *w, const float *bias,
                           int relu, float *y, ptrdiff_t r0, ptrdiff_t r1);
void cyc_depthwise_fwd_f64(const cyc_geom_t *g, const double *x, const double *w,
                           const double *bias, int relu, double *y, ptrdiff_t r0, ptrdiff_t r1);
void cyc_depthwise_bwd_data_f32(const cyc_geom_t *g, const float *dy, const float *w, float *dx,
                                ptrdiff_t r0, ptrdiff_t r1);
void cyc_depthwise_bwd_data_f64(const cyc_geom_t *g, const double *dy, const double *w,
                                double *dx, ptrdiff_t r0, ptrdiff_t r1);
void cyc_depthwise_bwd_filter_f32(const cyc_geom_t *g, const float *x, const float *dy,
                                  const float *relu_y, float *dw_acc, float *db_acc, ptrdiff_t r0,
                                  ptrdiff_t r1, float *row);
void cyc_depthwise_bwd_filter_f64(const cyc_geom_t *g, const double *x, const double *dy,
                                  const double *relu_y, double *dw_acc, double *db_acc,
                                  ptrdiff_t r0, ptrdiff_t r1, double *row);

/* A max-pool after the convolution, whose input gradient the weight gradient reads in place
 * of dy: output pixel (n, y, x) has the gradient dy[n][wy][wx] where it is the recorded cell
 * (y % sh) * kw + x % sw of window (wy, wx) = (y / sh, x / sw), else 0.  The pool's windows
 * do not overlap and it has no padding; dy and cell are NHWC, (n, oh, ow, cout). */
typedef struct {
    const void *dy;          /* float or double, as the convolution */
    const uint8_t *cell;
    int oh, ow, kh, kw, sh, sw;
} cyc_unpool_t;

/* Accumulate dw and db over output pixels [m0, m1) into one thread's accumulators:
 * dw_acc has cyc_conv_dw_acc_len() elements (zeroed by the caller), db_acc has cout.
 * cyc_conv_bwd_filter computes rows [k0, k1) of dw (of kh * kw * cin / groups; the rest of
 * dw_acc is left as it is) and db only if db_acc is not NULL: threads may share one partial
 * sum by rows, each row's sum being the same whoever computes it.
 * relu_y, when not NULL, is the forward output of a fused ReLU: dy counts only where it is > 0.
 * pool, when not NULL, gives dy instead of the dy argument (see cyc_unpool_t). */
size_t cyc_conv_dw_acc_len(const cyc_geom_t *g, int elem_size);
/* The accumulators of one row of dw (kernel tap, input channel): groups x (cout / groups rounded
 * up to 64 bytes); row k starts k times this far in.  Equal to cout where dw's own rows have the
 * same layout (each group's output channels a multiple of 64 bytes). */
size_t cyc_conv_dw_acc_row(const cyc_geom_t *g, int elem_size);
/* Whether one partial sum (cyc_conv_dw_acc_len values) is past L2's size (1 MB): then it goes
 * through memory once per chunk of pixels and once more for each extra partial sum to zero and
 * add up, so such a gradient takes one partial sum, its rows shared out over the threads, and the
 * longest chunks of pixels. */
int cyc_conv_dw_big_sums(const cyc_geom_t *g, int elem_size);
/* Whether the weight gradient through a pool (without a ReLU mask) goes by the pool's windows,
 * cyc_conv_bwd_filter_by_windows: one group, a few weights per output channel (a first
 * layer).  That kernel takes windows [w0, w1) of the flattened (n, wy, wx) of the pool's
 * output, into the same accumulators as cyc_conv_bwd_filter. */
int cyc_conv_dw_by_windows(const cyc_geom_t *g);
void cyc_conv_bwd_filter_by_windows_f32(const cyc_geom_t *g, const float *x,
                                        const cyc_unpool_t *pool, float *dw_acc, float *db_acc,
                                        ptrdiff_t w0, ptrdiff_t w1);
void cyc_conv_bwd_filter_by_windows_f64(const cyc_geom_t *g, const double *x,
                                        const cyc_unpool_t *pool, double *dw_acc,
                                        double *db_acc, ptrdiff_t w0, ptrdiff_t w1);
size_t cyc_conv_dw_scratch_bytes(const cyc_geom_t *g, int elem_size);
void cyc_conv_bwd_filter_f32(const cyc_geom_t *g, const float *x, const float *dy,
                             const float *relu_y, const cyc_unpool_t *pool, float *dw_acc,
                             float *db_acc, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t k0,
                             ptrdiff_t k1, void *scratch);
void cyc_conv_bwd_filter_f64(const cyc_geom_t *g, const double *x, const double *dy,
                             const double *relu_y, const cyc_unpool_t *pool, double *dw_acc,
                             double *db_acc, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t k0,
                             ptrdiff_t k1, void *scratch);
/* Rows [k0, k1) of dw_hwio (kh*kw*cin/groups rows of cout) = sum of n_acc accumulators laid out
 * one after another. */
void cyc_conv_dw_finish_f32(const cyc_geom_t *g, const float *accs, int n_acc, float *dw_hwio,
                            ptrdiff_t k0, ptrdiff_t k1);
void cyc_conv_dw_finish_f64(const cyc_geom_t *g, const double *accs, int n_acc, double *dw_hwio,
                            ptrdiff_t k0, ptrdiff_t k1);

/* ---- pooling (NHWC) ----
 * Forward kernels compute output rows [r0, r1) of the flattened (n, oh) range.
 * Backward kernels compute whole images [n0, n1) of dx (they scatter, so images are the unit).
 */
/* The record of a max-pool window with no real cell, in cell records (in flat ones: -1). */
#define CYC_POOL_NO_CELL 255
/* Records the first maximum of each window in idx (its flat position in the H*W plane) or in
 * cell (its number in the window, i * kw + j; windows of at most 255 cells), or neither: at most
 * one of them is non-NULL.  relu_in: x is a ReLU's output, and a window whose maximum is not
 * positive records none, so that the backward pass also applies the ReLU's gradient. */
void cyc_max_pool_f32(const cyc_geom_t *g, const float *x, float *y, int64_t *idx,
                      uint8_t *cell, int relu_in, ptrdiff_t r0, ptrdiff_t r1);
void cyc_max_pool_f64(const cyc_geom_t *g, const double *x, double *y, int64_t *idx,
                      uint8_t *cell, int relu_in, ptrdiff_t r0, ptrdiff_t r1);
/* Reads the records from idx or from cell (exactly one non-NULL).  Returns how many records
 * (other than "none") it could not place: outside the image, not a real cell of their window,
 * or (flat positions, where windows cannot overlap) outside their own window.  stream: dx is
 * larger than the caches should keep, so where the windows tile the input, its values are
 * stored past them (a hint; the values are the same). */
ptrdiff_t cyc_max_pool_bwd_f32(const cyc_geom_t *g, const float *dy, const int64_t *idx,
                               const uint8_t *cell, float *dx, int stream, ptrdiff_t n0,
                               ptrdiff_t n1);
ptrdiff_t cyc_max_pool_bwd_f64(const cyc_geom_t *g, const double *dy, const int64_t *idx,
                               const uint8_t *cell, double *dx, int stream, ptrdiff_t n0,
                               ptrdiff_t n1);
void cyc_avg_pool_f32(const cyc_geom_t *g, const float *x, float *y, int count_include_pad,
                      ptrdiff_t r0, ptrdiff_t r1);
void cyc_avg_pool_f64(const cyc_geom_t *g, const double *x, double *y, int count_include_pad,
                      ptrdiff_t r0, ptrdiff_t r1);
void cyc_avg_pool_bwd_f32(const cyc_geom_t *g, const float *dy, float *dx, int count_include_pad,
                          ptrdiff_t n0, ptrdiff_t n1);
void cyc_avg_pool_bwd_f64(const cyc_geom_t *g, const double *dy, double *dx,
                          int count_include_pad, ptrdiff_t n0, ptrdiff_t n1);

/* ---- layout ---- */
/* NCHW convolution straight into planes for few input channels: groups 1, c at most
 * CYC_PLANAR_MAX_C, c * kh * kw at most CYC_PLANAR_MAX_TAPS.  x and y NCHW; output rows
 * [oy0, oy1) of image n.  The weights packed by blocks of CYC_PLANAR_PK output channels,
 * [cout / PK][c][kh][kw][PK] (zeros past cout), then the bias [cout / PK][PK] (zeros past cout
 * or without one), cyc_conv_planar_packed_len values in all; a stage of
 * cyc_conv_planar_stage_bytes(g, oy1 - oy0, elem) bytes, the thread's own. */
#define CYC_PLANAR_MAX_C 4
#define CYC_PLANAR_MAX_TAPS 1024
#define CYC_PLANAR_PK 4
size_t cyc_conv_planar_packed_len(const cyc_geom_t *g);
size_t cyc_conv_planar_stage_bytes(const cyc_geom_t *g, int band_rows, int elem_size);
int cyc_conv_planar_stage_rows(const cyc_geom_t *g, int band_rows);
int cyc_conv_planar_stage_len(const cyc_geom_t *g, int elem_size);
void cyc_conv_planar_f32(const cyc_geom_t *g, const float *x, const float *packed, int relu,
                         float *y, ptrdiff_t n, int oy0, int oy1, float *stage);
void cyc_conv_planar_f64(const cyc_geom_t *g, const double *x, const double *packed, int relu,
                         double *y, ptrdiff_t n, int oy0, int oy1, double *stage);

/* A rows x cols matrix (row i at src + i * src_ld) transposed into dst (row j at
 * dst + j * dst_ld): NCHW <-> NHWC per image, or a block of NHWC pixels into NCHW planes. */
void cyc_transpose_f32(const float *src, ptrdiff_t src_ld, float *dst, ptrdiff_t dst_ld,
                       ptrdiff_t rows, ptrdiff_t cols);
void cyc_transpose_f64(const double *src, ptrdiff_t src_ld, double *dst, ptrdiff_t dst_ld,
                       ptrdiff_t rows, ptrdiff_t cols);
/* The same for bytes: a max-pool's window cells. */
void cyc_transpose_u8(const uint8_t *src, ptrdiff_t src_ld, uint8_t *dst, ptrdiff_t dst_ld,
                      ptrdiff_t rows, ptrdiff_t cols);

/* ---- elementwise ---- */
/* One Adam step over n weights (Keras's formula; alpha includes the bias correction).  It runs
 * with subnormal numbers flushed to zero (x86 and ARM; the calling thread's modes come back
 * after), as TensorFlow's kernels do: a moment that would become subnormal becomes 0. */
void cyc_adam_f32(float *var, const float *g, float *m, float *v, ptrdiff_t n, float alpha,
                  float one_minus_b1, float one_minus_b2, float eps);
void cyc_adam_f64(double *var, const double *g, double *m, double *v, ptrdiff_t n, double alpha,
                  double one_minus_b1, double one_minus_b2, double eps);
/* ReLU's gradient from its output over n contiguous values: out = dy where y > 0, else 0. */
void cyc_relu_bwd_f32(const float *dy, const float *y, float *out, ptrdiff_t n);
void cyc_relu_bwd_f64(const double *dy, const double *y, double *out, ptrdiff_t n);
/* Inverted dropout of elements [i0, i1) of x (i0 even): element i draws the low (i even) or
 * high 32 bits of cyc_mix64(key, i / 2); keep[i] = those bits >= threshold; y[i] = x[i] *
 * (scale if kept else 0).  Its gradient: out = dy * (scale if keep else 0), out may be dy. */
void cyc_dropout_f32(const float *x, uint64_t key, uint32_t threshold, float scale, float *y,
                     uint8_t *keep, ptrdiff_t i0, ptrdiff_t i1);
void cyc_dropout_f64(const double *x, uint64_t key, uint32_t threshold, double scale, double *y,
                     uint8_t *keep, ptrdiff_t i0, ptrdiff_t i1);
void cyc_dropout_bwd_f32(const float *dy, const uint8_t *keep, float scale, float *out,
                         ptrdiff_t n);
void cyc_dropout_bwd_f64(const double *dy, const uint8_t *keep, double scale, double *out,
                         ptrdiff_t n);
/* SplitMix64's output function (Steele, Lea and Flood, 2014) of key + (p + 1) * golden: 64
 * random bits for counter p, whatever thread asks. */
static inline uint64_t cyc_mix64(uint64_t key, uint64_t p)
{
    uint64_t z = key + (p + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#ifdef __cplusplus
}
#endif
#endif /* CYCONV_H */
