// Batched top-k similarity with the selection fused into the tiled GEMM (docs/GPU.md).
//
// For every row i of x [N, d]: the k largest s(i, j) = <x[i], y[j]> over the allowed columns j
// of y [M, d], sorted by (score desc, index asc); disallowed: j == i (exclude_self) and the
// columns listed in the row's CSR exclusion list. Rows with fewer than k allowed candidates are
// padded with (-1, -inf). Memory O(N * k + one tile per block): the N x M scores never leave
// shared memory.
//
// Needs only the CUDA runtime (extern "C" launcher with raw pointers and a stream as void*);
// topk_binding.cpp wraps it for the torch dispatcher.
//
// Design
// * A block owns BM = 64 query rows and sweeps the column tiles of y (BN = 64 columns), the
//   tile holding the block's diagonal first so that for kNN graphs (y = x) the thresholds start
//   high, then the other tiles in increasing order, so that the blocks resident at one time
//   sweep y together and share its tiles in L2 (a per-block rotation would make every block
//   stream all of y from device memory).
// * Two ways to bring the operands into shared memory (kResident):
//   - resident (padded row <= 512 bytes: fp32 d <= 128, fp64 d <= 64, and the device's
//     opt-in shared memory holds it): the block's 64 x rows are copied once, before the
//     sweep, and stay; the y tiles are double-buffered: tile t + 1 is copied with cp.async
//     (__pipeline_memcpy_async) while tile t is scored and selected, so the loads overlap the
//     GEMM and the selection instead of sitting between barriers. Tiles are row-major, depth
//     zero-padded to a multiple of 8, rows past N / M zero; 16-byte copies when every row
//     is 16-byte aligned, else one element per copy (still asynchronous). Dynamic shared
//     memory: 71 KB for fp32 d = 64, at most 119 KB (fp32) / 139 KB (fp64).
//   - sliced (larger d, or a device with less shared memory): every tile walks d in depth
//     slices (16 deep for fp32, 8 for fp64) of x and y, loaded with plain loads into k-major
//     (transposed) static shared memory between two barriers, x re-read for every tile; any
//     d works within 26 KB (fp32) / 43 KB (fp64) of shared memory.
// * The score tile comes from one of two GEMMs through shared memory:
//   - exact (kTf32 = false): CUDA-core FMAs in the input precision, each thread holding a
//     4 x 4 register block of scores, summed over the depth in order (the same bits on both
//     paths);
//   - TF32 tensor cores (kTf32 = true, float32 only): each warp a 16 x 32 block as two
//     m16n16k8 wmma accumulators. TF32 scores are approximate (|error| <= 2^-9 |x_i| |y_j|
//     plus the fp32 accumulation's), so this mode returns candidates, not the answer: the
//     caller (slifmr_kernels/topk/rerank.py) asks for more than k, re-scores them in fp32 and
//     proves per row that no other column can enter the top k.
// * Each warp owns eight rows for the whole sweep and keeps their thresholds (the k-th best
//   (score, index) so far) in shared memory. Per tile a lane compares its two scores per row
//   with the threshold: one compare per score. Only when a warp vote finds a hit does the warp
//   handle it: the warp checks the exclusion list cooperatively (32 entries per step), then
//   inserts into the row's sorted list, which lives in the output arrays (global memory, so k
//   is not limited by shared memory; the few hit rows stay in L1/L2). Expected inserts per row
//   ~ k (1 + ln(M / k)), so in the steady state a tile costs its GEMM plus one compare per
//   score.
// * Order is lexicographic on (score desc, index asc) everywhere, so ties break by the lower
//   index and the result does not depend on the tiling or on the visiting order.
#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include <mma.h>

#include <cmath>
#include <cstdint>

namespace {

constexpr int kBM = 64;       // query rows per block
constexpr int kBN = 64;       // columns per tile
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerWarp = kBM / kWarps;  // 8
constexpr int kMicro = 4;     // each thread computes a 4 x 4 block of scores
constexpr int64_t kEmpty = INT64_MAX;

// -inf without std::numeric_limits (a host constexpr function in device code).
template <typename T> __device__ __forceinline__ T neg_infinity();
template <> __device__ __forceinline__ float neg_infinity<float>() { return -CUDART_INF_F; }
template <> __device__ __forceinline__ double neg_infinity<double>() { return -CUDART_INF; }

template <typename T>
__device__ __forceinline__ bool better(T v1, int64_t j1, T v2, int64_t j2) {
  return v1 > v2 || (v1 == v2 && j1 < j2);
}

// Insert (v, j) into the row's list (sorted, `k` entries, in global memory), dropping the last
// entry. The warp finds the position with ballots and shifts the tail 32 entries at a time from
// the end (each step reads before it writes, so no entry is lost).
template <typename T>
__device__ void warp_insert(T* lv, int64_t* lj, int k, T v, int64_t j, int lane) {
  int pos = 0;  // number of entries better than the candidate
  for (int base = 0; base < k; base += 32) {
    const int q = base + lane;
    const bool b = q < k && better(lv[q], lj[q], v, j);
    const unsigned m = __ballot_sync(0xffffffffu, b);
    pos += __popc(m);
    if (m != 0xffffffffu) break;  // the list is sorted: nothing better beyond
  }
  for (int top = k - 1; top > pos; top -= 32) {
    const int q = top - lane;  // moves entry q - 1 -> q for q in (pos, top]
    T mv{};
    int64_t mj = 0;
    const bool act = q > pos;
    if (act) { mv = lv[q - 1]; mj = lj[q - 1]; }
    __syncwarp();
    if (act) { lv[q] = mv; lj[q] = mj; }
    __syncwarp();
  }
  if (lane == 0) { lv[pos] = v; lj[pos] = j; }
  __syncwarp();
}

// TF32 tiling, both paths: warp w computes rows 16 (w / 2) .. + 15 and columns 32 (w % 2) ..
// + 31 of the score tile as two m16n16k8 accumulators.
namespace wmma = nvcuda::wmma;
using Tf32Acc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

// One depth step of 8: acc[f] += A B_f with A (16 x 8) at a and B_f (8 x 16) at b + f * b_next,
// in the given layouts and leading dimensions, operands rounded to TF32.
template <typename LayoutA, typename LayoutB>
__device__ __forceinline__ void tf32_step(Tf32Acc (&acc)[2], const float* a, int lda,
                                          const float* b, int b_next, int ldb) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LayoutA> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LayoutB> fb;
  wmma::load_matrix_sync(fa, a, lda);
#pragma unroll
  for (int e = 0; e < fa.num_elements; ++e) fa.x[e] = wmma::__float_to_tf32(fa.x[e]);
#pragma unroll
  for (int f = 0; f < 2; ++f) {
    wmma::load_matrix_sync(fb, b + f * b_next, ldb);
#pragma unroll
    for (int e = 0; e < fb.num_elements; ++e) fb.x[e] = wmma::__float_to_tf32(fb.x[e]);
    wmma::mma_sync(acc[f], fa, fb, acc[f]);
  }
}

// The warp's two accumulators into the score tile (row stride lds) at (r0, c0).
__device__ __forceinline__ void tf32_store(float* ss, int lds, const Tf32Acc (&acc)[2], int r0,
                                           int c0) {
  wmma::store_matrix_sync(ss + r0 * lds + c0, acc[0], lds, wmma::mem_row_major);
  wmma::store_matrix_sync(ss + r0 * lds + c0 + 16, acc[1], lds, wmma::mem_row_major);
}

// ---------------------------------------------------------------------------------------------
// Sliced path (d too large for the resident tiles): k-major depth slices, static shared memory.
// ---------------------------------------------------------------------------------------------
constexpr int kPad = 4;  // slice row padding: keeps 16-byte alignment, spreads the transposed
                         // stores over the banks

// Depth of one shared-memory slice: 16 for fp32, 8 for fp64 (stays under 48 KB of smem).
template <typename T> struct Depth { static constexpr int value = 16; };
template <> struct Depth<double> { static constexpr int value = 8; };

// Row stride of the shared score tile: +1 spreads the FMA path's 4 x 4 stores over the banks;
// the wmma stores need a multiple of 4 floats.
template <bool kTf32> struct ScoreLd { static constexpr int value = kBN + 1; };
template <> struct ScoreLd<true> { static constexpr int value = kBN + 4; };

// Load one depth slice [k0, k0 + kBK) of the block's x rows and the tile's y rows into shared
// memory: coalesced along d in global memory, stored transposed (k-major), zero-padded.
template <typename T, int kBK>
__device__ __forceinline__ void load_slice(const T* __restrict__ x, const T* __restrict__ y,
                                           int64_t n, int64_t m, int64_t d, int64_t row0,
                                           int64_t col0, int64_t k0, T (*xs)[kBM + kPad],
                                           T (*ys)[kBN + kPad], int tid) {
  for (int e = tid; e < kBM * kBK; e += kThreads) {
    const int r = e / kBK, c = e % kBK;
    const int64_t gr = row0 + r, gc = k0 + c;
    xs[c][r] = (gr < n && gc < d) ? x[gr * d + gc] : T(0);
  }
  for (int e = tid; e < kBN * kBK; e += kThreads) {
    const int r = e / kBK, c = e % kBK;
    const int64_t gr = col0 + r, gc = k0 + c;
    ys[c][r] = (gr < m && gc < d) ? y[gr * d + gc] : T(0);
  }
}

// Exact score tile ss = x[row0 : row0 + kBM] . y[col0 : col0 + kBN]^T with CUDA-core FMAs.
// Thread layout 16 x 16: rows 4 tr .. 4 tr + 3, columns 4 tc .. 4 tc + 3; per depth step a
// thread loads 4 + 4 values for 16 FMAs; the 16 tc of a half-warp read 16 consecutive 4-vectors
// of ys (no bank conflict), its 2 tr read broadcasts of xs.
template <typename T, typename AccT, int kBK>
__device__ __forceinline__ void tile_scores_fma(const T* __restrict__ x, const T* __restrict__ y,
                                                int64_t n, int64_t m, int64_t d, int64_t row0,
                                                int64_t col0, T (*xs)[kBM + kPad],
                                                T (*ys)[kBN + kPad], AccT (*ss)[kBN + 1],
                                                int tid) {
  const int tr = tid / 16, tc = tid % 16;
  AccT acc[kMicro][kMicro];
#pragma unroll
  for (int a = 0; a < kMicro; ++a)
#pragma unroll
    for (int b = 0; b < kMicro; ++b) acc[a][b] = AccT(0);
  for (int64_t k0 = 0; k0 < d; k0 += kBK) {
    load_slice<T, kBK>(x, y, n, m, d, row0, col0, k0, xs, ys, tid);
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kBK; ++c) {
      AccT a[kMicro], b[kMicro];
#pragma unroll
      for (int u = 0; u < kMicro; ++u) {
        a[u] = static_cast<AccT>(xs[c][kMicro * tr + u]);
        b[u] = static_cast<AccT>(ys[c][kMicro * tc + u]);
      }
#pragma unroll
      for (int u = 0; u < kMicro; ++u)
#pragma unroll
        for (int v = 0; v < kMicro; ++v) acc[u][v] += a[u] * b[v];
    }
    __syncthreads();
  }
#pragma unroll
  for (int u = 0; u < kMicro; ++u)
#pragma unroll
    for (int v = 0; v < kMicro; ++v) ss[kMicro * tr + u][kMicro * tc + v] = acc[u][v];
}

// Approximate score tile with TF32 tensor cores (float32 only). In the k-major slices, A = x rows is column-major (element (r, c) at xs[c][r]) and B = y^T is
// row-major (element (c, j) at ys[c][j]), both with leading dimension kBM + kPad.
__device__ __forceinline__ void tile_scores_tf32(const float* __restrict__ x,
                                                 const float* __restrict__ y, int64_t n,
                                                 int64_t m, int64_t d, int64_t row0,
                                                 int64_t col0, float (*xs)[kBM + kPad],
                                                 float (*ys)[kBN + kPad],
                                                 float (*ss)[ScoreLd<true>::value], int tid,
                                                 int warp) {
  constexpr int kBK = Depth<float>::value;
  static_assert(kBK % 8 == 0 && kBM == 64 && kBN == 64 && kWarps == 8, "wmma tiling");
  const int r0 = 16 * (warp / 2), c0 = 32 * (warp % 2);
  Tf32Acc acc[2];
  wmma::fill_fragment(acc[0], 0.0f);
  wmma::fill_fragment(acc[1], 0.0f);
  for (int64_t k0 = 0; k0 < d; k0 += kBK) {
    load_slice<float, kBK>(x, y, n, m, d, row0, col0, k0, xs, ys, tid);
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kBK; c += 8)
      tf32_step<wmma::col_major, wmma::row_major>(acc, &xs[c][r0], kBM + kPad, &ys[c][c0], 16,
                                                  kBN + kPad);
    __syncthreads();
  }
  tf32_store(&ss[0][0], ScoreLd<true>::value, acc, r0, c0);
}

// ---------------------------------------------------------------------------------------------
// Resident path: x in shared memory for the whole sweep, y tiles double-buffered by cp.async.
// ---------------------------------------------------------------------------------------------
constexpr int kResidentRowBytes = 512;  // padded x / y row limit: fp32 d <= 128, fp64 d <= 64
constexpr int kLdR = kBN + 16;  // score tile row stride: the two rows a warp stores per
                                // instruction fall on opposite halves of the banks

// Depth padded to a multiple of 8 (one wmma k step; whole 16-byte vectors for the FMA path).
__host__ __device__ constexpr int padded_depth(int64_t d) {
  return static_cast<int>((d + 7) / 8 * 8);
}

// Row stride of the tiles, in elements: 16 bytes past the padded depth, so the stride is 16
// mod 32 bytes. The FMA path's 16-byte loads are served a quarter-warp (8 lanes) at a time, and
// 8 consecutive rows at such a stride start in 8 distinct 4-bank groups: no conflict. Every row
// stays 16-byte aligned (cp.async), every 16-row block 32-byte aligned (wmma).
template <typename T>
__host__ __device__ constexpr int row_stride(int64_t d) {
  return padded_depth(d) + static_cast<int>(16 / sizeof(T));
}

// Dynamic shared memory of the resident path: x, two y buffers, the score tile.
template <typename T, typename AccT>
constexpr size_t resident_smem_bytes(int64_t d) {
  return sizeof(T) * (kBM + 2 * kBN) * static_cast<size_t>(row_stride<T>(d)) +
         sizeof(AccT) * kBM * kLdR;
}

// Start copying the 64 rows g0 .. g0 + 63 of src [rows, d] into the row-major tile dst (row
// stride ld, depth padded to padded_depth(d)); rows past `rows` and the depth padding are
// written as zeros with plain stores. vec: 16-byte copies (the caller checked that every row
// is 16-byte aligned), else one element per copy. The copies complete at the caller's
// __pipeline_wait_prior; the zeros at its next barrier.
template <typename T>
__device__ __forceinline__ void copy_tile_async(T* dst, int ld, const T* __restrict__ src,
                                                int64_t rows, int64_t d, int64_t g0, bool vec,
                                                int tid) {
  static_assert(kBM == kBN, "x and y tiles share the copy");
  const int w = vec ? static_cast<int>(16 / sizeof(T)) : 1;  // elements per copy
  const int per_row = padded_depth(d) / w;
  for (int e = tid; e < kBN * per_row; e += kThreads) {
    const int r = e / per_row, c = (e - r * per_row) * w;
    T* s = dst + r * ld + c;
    const int64_t gr = g0 + r;
    if (gr < rows && c < d) {
      __pipeline_memcpy_async(s, src + gr * d + c, w * sizeof(T));
    } else {
      for (int i = 0; i < w; ++i) s[i] = T(0);
    }
  }
}

// 16 bytes of shared memory as one vector load (LDS.128).
__device__ __forceinline__ void load16(const float* p, float (&v)[4]) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
}
__device__ __forceinline__ void load16(const double* p, double (&v)[2]) {
  const double2 q = *reinterpret_cast<const double2*>(p);
  v[0] = q.x; v[1] = q.y;
}

// Exact score tile from the row-major tiles with CUDA-core FMAs. Thread (tr, tc) = (tid / 16,
// tid % 16) owns rows tr + 16 u and columns tc + 16 v (u, v < 4): strided, so that the 8 lanes
// of a quarter-warp read 8 consecutive y rows (distinct banks, see row_stride) and one x row
// (a broadcast). Per 16 bytes of depth a thread loads 4 + 4 vectors for 16 * 16 / sizeof(T)
// FMAs; each score is summed over the depth in order, as in the sliced path.
template <typename T, typename AccT>
__device__ __forceinline__ void tile_scores_fma_rows(const T* xs, const T* ys, int ld, int dpad,
                                                     AccT* ss, int tid) {
  constexpr int kVec = 16 / sizeof(T);
  const int tr = tid / 16, tc = tid % 16;
  AccT acc[kMicro][kMicro] = {};  // zeros
  for (int c = 0; c < dpad; c += kVec) {
    T a[kMicro][kVec], b[kMicro][kVec];
#pragma unroll
    for (int u = 0; u < kMicro; ++u) {
      load16(xs + (tr + 16 * u) * ld + c, a[u]);
      load16(ys + (tc + 16 * u) * ld + c, b[u]);
    }
#pragma unroll
    for (int e = 0; e < kVec; ++e)
#pragma unroll
      for (int u = 0; u < kMicro; ++u)
#pragma unroll
        for (int v = 0; v < kMicro; ++v)
          acc[u][v] += static_cast<AccT>(a[u][e]) * static_cast<AccT>(b[v][e]);
  }
#pragma unroll
  for (int u = 0; u < kMicro; ++u)
#pragma unroll
    for (int v = 0; v < kMicro; ++v) ss[(tr + 16 * u) * kLdR + tc + 16 * v] = acc[u][v];
}

// TF32 score tile from the row-major tiles: A = x rows is row-major (element (r, c) at xs[r ld + c]) and
// B = y^T is column-major over the y rows (element (c, j) at ys[j ld + c]).
__device__ __forceinline__ void tile_scores_tf32_rows(const float* xs, const float* ys, int ld,
                                                      int dpad, float* ss, int warp) {
  static_assert(kBM == 64 && kBN == 64 && kWarps == 8, "wmma tiling");
  const int r0 = 16 * (warp / 2), c0 = 32 * (warp % 2);
  Tf32Acc acc[2];
  wmma::fill_fragment(acc[0], 0.0f);
  wmma::fill_fragment(acc[1], 0.0f);
  for (int c = 0; c < dpad; c += 8)
    tf32_step<wmma::row_major, wmma::col_major>(acc, xs + r0 * ld + c, ld, ys + c0 * ld + c,
                                                16 * ld, ld);
  tf32_store(ss, kLdR, acc, r0, c0);
}

// ---------------------------------------------------------------------------------------------
// Selection (both paths)
// ---------------------------------------------------------------------------------------------
// Merge the score tile ss (row stride lds; columns col0 .. col0 + 63) into the block's lists.
// Warp `warp` owns rows warp * 8 + q; lane l looks at columns l and l + 32. The row loop stays
// rolled (the thresholds live in shared memory, not in a register array that a rolled loop
// would push to local memory): fewer registers, more blocks.
template <typename T, typename AccT, typename ExT>
__device__ __forceinline__ void select_tile(const AccT* ss, int lds, int64_t row0, int64_t col0,
                                            int64_t n, int64_t m, int k, bool exclude_self,
                                            const int64_t* __restrict__ ex_ptr,
                                            const ExT* __restrict__ ex_idx,
                                            int64_t* __restrict__ out_i, T* __restrict__ out_v,
                                            T* thr_v, int64_t* thr_j, int warp, int lane) {
#pragma unroll 1
  for (int q = 0; q < kRowsPerWarp; ++q) {
    const int lr = warp * kRowsPerWarp + q;
    const int64_t gi = row0 + lr;
    if (gi >= n) continue;  // warp-uniform
    T* lv = out_v + gi * k;
    int64_t* lj = out_i + gi * k;
    T tv = thr_v[lr];
    int64_t tj = thr_j[lr];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int lc = lane + 32 * half;
      const int64_t gj = col0 + lc;
      const T s = static_cast<T>(ss[lr * lds + lc]);
      bool hit = gj < m && !(exclude_self && gj == gi) && better(s, gj, tv, tj);
      unsigned mask = __ballot_sync(0xffffffffu, hit);
      while (mask) {
        const int src = __ffs(mask) - 1;
        mask &= mask - 1;
        const T cv = __shfl_sync(0xffffffffu, s, src);
        const int64_t cj = col0 + 32 * half + src;
        if (!better(cv, cj, tv, tj)) continue;  // the threshold rose meanwhile
        if (ex_ptr != nullptr) {
          const int64_t a = ex_ptr[gi], b = ex_ptr[gi + 1];
          bool found = false;
          for (int64_t p = a; p < b && !found; p += 32) {
            const bool eq = p + lane < b && static_cast<int64_t>(ex_idx[p + lane]) == cj;
            found = __any_sync(0xffffffffu, eq);
          }
          if (found) continue;
        }
        warp_insert<T>(lv, lj, k, cv, cj, lane);
        tv = lv[k - 1];
        tj = lj[k - 1];
      }
    }
    __syncwarp();  // every lane has read the old threshold before lane 0 replaces it
    if (lane == 0) { thr_v[lr] = tv; thr_j[lr] = tj; }
  }
}

// Visiting order of the column tiles: the diagonal tile, then 0, 1, ... (skipping it).
__device__ __forceinline__ int64_t tile_col0(int64_t t, int64_t diag) {
  return (t == 0 ? diag : (t <= diag ? t - 1 : t)) * kBN;
}

// One block: BM query rows against every column tile. vec (resident path only): every row of
// x and y is 16-byte aligned, so the tiles are copied 16 bytes at a time.
template <typename T, typename AccT, typename ExT, bool kTf32, bool kResident>
__global__ void __launch_bounds__(kThreads, 2)
topk_kernel(const T* __restrict__ x, const T* __restrict__ y, int64_t n, int64_t m, int64_t d,
            int k, bool exclude_self, const int64_t* __restrict__ ex_ptr,
            const ExT* __restrict__ ex_idx, int64_t* __restrict__ out_i, T* __restrict__ out_v,
            bool vec) {
  static_assert(!kTf32 || sizeof(T) == 4, "the TF32 path is for float32 inputs");
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const T neg_inf = neg_infinity<T>();

  // initialise the lists of this block's rows
  for (int64_t t = tid; t < static_cast<int64_t>(kBM) * k; t += kThreads) {
    const int64_t r = row0 + t / k;
    if (r < n) { out_v[r * k + t % k] = neg_inf; out_i[r * k + t % k] = kEmpty; }
  }
  // running threshold (k-th best so far) of each row; row lr is read and written only by
  // its warp
  __shared__ T thr_v[kBM];
  __shared__ int64_t thr_j[kBM];
  for (int r = tid; r < kBM; r += kThreads) { thr_v[r] = neg_inf; thr_j[r] = kEmpty; }

  const int64_t n_tiles = (m + kBN - 1) / kBN;
  const int64_t diag = min(row0 / kBN, n_tiles - 1);
  if constexpr (kResident) {
    // x | y buffer 0 | y buffer 1 | scores; each part a multiple of 1 KB, so 32-byte aligned
    extern __shared__ __align__(128) unsigned char smem[];
    const int ld = row_stride<T>(d), dpad = padded_depth(d);
    T* xs = reinterpret_cast<T*>(smem);
    T* const ys = xs + kBM * ld;  // buffer b at ys + b * kBN * ld (arithmetic: an array of
                                  // two pointers indexed by t would go to local memory)
    AccT* ss = reinterpret_cast<AccT*>(xs + (kBM + 2 * kBN) * ld);
    copy_tile_async(xs, ld, x, n, d, row0, vec, tid);
    copy_tile_async(ys, ld, y, m, d, tile_col0(0, diag), vec, tid);
    __pipeline_commit();
    for (int64_t t = 0; t < n_tiles; ++t) {
      // Refill the other buffer: its last reader was tile t - 1's GEMM, which every thread
      // finished before tile t - 1's second barrier.
      if (t + 1 < n_tiles)
        copy_tile_async(ys + ((t + 1) & 1) * kBN * ld, ld, y, m, d, tile_col0(t + 1, diag), vec, tid);
      __pipeline_commit();       // possibly empty, so that "all but the newest group" below
      __pipeline_wait_prior(1);  // is always tile t (and, at t = 0, x)
      // Every thread's copies of tile t have landed, and every thread has finished tile
      // t - 1's selection, so the GEMM may overwrite the score tile.
      __syncthreads();
      if constexpr (kTf32) {
        tile_scores_tf32_rows(xs, ys + (t & 1) * kBN * ld, ld, dpad, ss, warp);
      } else {
        tile_scores_fma_rows<T, AccT>(xs, ys + (t & 1) * kBN * ld, ld, dpad, ss, tid);
      }
      __syncthreads();  // the score tile is complete
      select_tile<T, AccT, ExT>(ss, kLdR, row0, tile_col0(t, diag), n, m, k, exclude_self,
                                ex_ptr, ex_idx, out_i, out_v, thr_v, thr_j, warp, lane);
    }
    __syncthreads();  // every warp's lists are final before the padding pass below
  } else {
    constexpr int kBK = Depth<T>::value;
    constexpr int kLdS = ScoreLd<kTf32>::value;
    // k-major slices: a thread reads its 4 rows (4 columns) as 4 consecutive elements; 32-byte
    // alignment is what wmma's loads and stores require of their base pointers
    __shared__ __align__(32) T xs[kBK][kBM + kPad];
    __shared__ __align__(32) T ys[kBK][kBN + kPad];
    __shared__ __align__(32) AccT ss[kBM][kLdS];
    __syncthreads();  // the thresholds are initialised
    for (int64_t t = 0; t < n_tiles; ++t) {
      const int64_t col0 = tile_col0(t, diag);
      if constexpr (kTf32) {
        tile_scores_tf32(x, y, n, m, d, row0, col0, xs, ys, ss, tid, warp);
      } else {
        tile_scores_fma<T, AccT, kBK>(x, y, n, m, d, row0, col0, xs, ys, ss, tid);
      }
      __syncthreads();
      select_tile<T, AccT, ExT>(&ss[0][0], kLdS, row0, col0, n, m, k, exclude_self, ex_ptr,
                                ex_idx, out_i, out_v, thr_v, thr_j, warp, lane);
      __syncthreads();  // ss is rewritten by the next tile
    }
  }
  // empty slots -> index -1 (their value is already -inf)
  for (int64_t t = tid; t < static_cast<int64_t>(kBM) * k; t += kThreads) {
    const int64_t r = row0 + t / k;
    if (r < n && out_i[r * k + t % k] == kEmpty) out_i[r * k + t % k] = -1;
  }
}

template <typename T, typename ExT>
using KernelFn = void (*)(const T*, const T*, int64_t, int64_t, int64_t, int, bool,
                          const int64_t*, const ExT*, int64_t*, T*, bool);

// Launch one instantiation; smem > 0: the resident path's dynamic shared memory, which above
// 48 KB must first be allowed for the kernel.
template <typename T, typename ExT>
cudaError_t launch_kernel(KernelFn<T, ExT> kernel, unsigned nb, size_t smem, cudaStream_t st,
                          const T* x, const T* y, int64_t n, int64_t m, int64_t d, int k,
                          bool exclude_self, const int64_t* ex_ptr, const void* ex_idx,
                          int64_t* out_i, T* out_v, bool vec) {
  if (smem > 0) {
    const cudaError_t e = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  kernel<<<nb, kThreads, smem, st>>>(x, y, n, m, d, k, exclude_self, ex_ptr,
                                     static_cast<const ExT*>(ex_idx), out_i, out_v, vec);
  return cudaGetLastError();
}

template <typename T, typename AccT, bool kTf32>
cudaError_t launch(const T* x, const T* y, int64_t n, int64_t m, int64_t d, int k,
                   bool exclude_self, const int64_t* ex_ptr, const void* ex_idx, int ex_idx64,
                   int64_t* out_i, T* out_v, cudaStream_t st) {
  const unsigned nb = static_cast<unsigned>((n + kBM - 1) / kBM);
  size_t smem = 0;
  bool resident = static_cast<int64_t>(sizeof(T)) * padded_depth(d) <= kResidentRowBytes;
  if (resident) {  // 71-139 KB: sm_80 and sm_90 hold it, devices with less shared memory not
    int dev = 0, optin = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess)
      e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e != cudaSuccess) return e;
    smem = resident_smem_bytes<T, AccT>(d);
    resident = smem <= static_cast<size_t>(optin);
  }
  // 16-byte copies need every row 16-byte aligned: the bases and the row length
  const bool vec = (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y)) % 16 == 0 &&
                   (d * static_cast<int64_t>(sizeof(T))) % 16 == 0;
  const auto go = [&](auto kernel, size_t bytes) {
    return launch_kernel(kernel, nb, bytes, st, x, y, n, m, d, k, exclude_self, ex_ptr, ex_idx,
                         out_i, out_v, vec);
  };
  if (resident)
    return ex_idx64 ? go(topk_kernel<T, AccT, int64_t, kTf32, true>, smem)
                    : go(topk_kernel<T, AccT, int32_t, kTf32, true>, smem);
  return ex_idx64 ? go(topk_kernel<T, AccT, int64_t, kTf32, false>, 0)
                  : go(topk_kernel<T, AccT, int32_t, kTf32, false>, 0);
}

}  // namespace

extern "C" {

// dtype: 0 = float32, 1 = float64. x [n, d], y [m, d] contiguous; out_i int64 [n, k], out_v
// [n, k] (dtype). ex_ptr int64 [n + 1] and ex_idx (int64 if ex_idx64 else int32) may be null.
// tf32 = 1 (float32 only) scores with TF32 tensor cores: approximate candidates, see above.
// Requires 1 <= k <= m, n >= 1 (the binding handles the degenerate cases). Returns a
// cudaError_t (0 = success; cudaErrorInvalidValue for tf32 with float64).
int slifmr_topk(int dtype, const void* x, const void* y, int64_t n, int64_t m, int64_t d, int k,
                int exclude_self, const int64_t* ex_ptr, const void* ex_idx, int ex_idx64,
                int tf32, int64_t* out_i, void* out_v, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (n <= 0 || k <= 0) return cudaSuccess;
  if (dtype == 0) {
    const float* xf = static_cast<const float*>(x);
    const float* yf = static_cast<const float*>(y);
    float* vf = static_cast<float*>(out_v);
    return tf32 ? launch<float, float, true>(xf, yf, n, m, d, k, exclude_self != 0, ex_ptr,
                                             ex_idx, ex_idx64, out_i, vf, st)
                : launch<float, float, false>(xf, yf, n, m, d, k, exclude_self != 0, ex_ptr,
                                              ex_idx, ex_idx64, out_i, vf, st);
  }
  if (tf32) return cudaErrorInvalidValue;
  return launch<double, double, false>(static_cast<const double*>(x),
                                       static_cast<const double*>(y), n, m, d, k,
                                       exclude_self != 0, ex_ptr, ex_idx, ex_idx64, out_i,
                                       static_cast<double*>(out_v), st);
}

}  // extern "C"
