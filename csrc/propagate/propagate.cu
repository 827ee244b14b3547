// Fused heterogeneous propagation, CUDA kernels (docs/GPU.md).
//
//   y[i] = sum_{e in row i} v[e] * table[rel[e]] * x[col[e]]        (table optional)
//
// Needs only the CUDA runtime: every entry point is an extern "C" launcher taking raw pointers
// and a stream (as void*), so this file compiles without the ATen CUDA headers; the torch
// binding (propagate_binding.cpp) plans the work with ATen ops and calls these launchers.
//
// Design
// * Row split: a group of G threads (G = 1..32, a power of two) owns one output row; lane l of
//   the group owns the 16-byte vectors l, l + G, ... of the row (float4 for fp32 when d % 4 ==
//   0, double2 for fp64 when d % 2 == 0, scalars otherwise), so a d = 64 fp32 row is one
//   coalesced 256-byte load by 16 lanes and a warp serves two rows at once.
// * The edge loop is unrolled by four with all index / value / relation loads and the four row
//   gathers issued before the first use: a naive loop is latency-bound, not bandwidth-bound.
// * Rows with more than `chunk` edges are skipped by the row kernel and cut into fixed chunks
//   of `chunk` edges; each chunk writes a partial row and a reduce kernel adds a heavy row's
//   partials in chunk order (level by level in groups of 64 for hubs, a fixed tree). Nothing
//   uses atomics, so the result is bitwise reproducible.
// * Backward: dx is the row kernel on the transposed graph. g[r] = sum over edges of relation
//   r of v * x[j] * dy[i] is a segmented reduction over the edges sorted by relation (a stable
//   permutation built by the binding): fixed chunks of `chunk` edges write partials, and the
//   same fixed-tree reduce adds each relation's partials. Deterministic, any R.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>

namespace {

constexpr int kThreads = 256;

template <typename T, int VEC>
struct VecT;
template <> struct VecT<float, 1> { using type = float; };
template <> struct VecT<float, 4> { using type = float4; };
template <> struct VecT<double, 1> { using type = double; };
template <> struct VecT<double, 2> { using type = double2; };

// Accumulator of VEC lanes in the input precision (fp32 accumulation for fp32, as the CPU
// kernels do; fp64 for fp64).
template <typename T, int VEC>
struct Acc {
  T a[VEC];
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int q = 0; q < VEC; ++q) a[q] = T(0);
  }
};

template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* p, T (&out)[VEC]) {
  using V = typename VecT<T, VEC>::type;
  V v = *reinterpret_cast<const V*>(p);
  const T* s = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int q = 0; q < VEC; ++q) out[q] = s[q];
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* p, const T (&in)[VEC]) {
  using V = typename VecT<T, VEC>::type;
  V v;
  T* s = reinterpret_cast<T*>(&v);
#pragma unroll
  for (int q = 0; q < VEC; ++q) s[q] = in[q];
  *reinterpret_cast<V*>(p) = v;
}

// Sum of v[e] * table[rel[e]] * x[col[e]] over edges [e0, e1) for the VEC columns starting at
// column c, in increasing e (the order is fixed: deterministic).
template <typename T, typename IdxT, int VEC, bool HAS_VALUES, bool HAS_TABLE>
__device__ __forceinline__ void accumulate_edges(int64_t e0, int64_t e1, int64_t c, int64_t d,
                                                 const IdxT* __restrict__ col,
                                                 const T* __restrict__ val,
                                                 const int32_t* __restrict__ rel,
                                                 const T* __restrict__ table,
                                                 const T* __restrict__ x, Acc<T, VEC>& acc) {
  constexpr int U = 4;
  int64_t e = e0;
  for (; e + U <= e1; e += U) {
    int64_t j[U];
    T w[U];
    int32_t r[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      j[u] = static_cast<int64_t>(__ldg(col + e + u));
      w[u] = HAS_VALUES ? __ldg(val + e + u) : T(1);
      r[u] = HAS_TABLE ? __ldg(rel + e + u) : 0;
    }
    T xv[U][VEC];
#pragma unroll
    for (int u = 0; u < U; ++u) load_vec<T, VEC>(x + j[u] * d + c, xv[u]);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (HAS_TABLE) {
        T tv[VEC];
        load_vec<T, VEC>(table + static_cast<int64_t>(r[u]) * d + c, tv);
#pragma unroll
        for (int q = 0; q < VEC; ++q) acc.a[q] += w[u] * tv[q] * xv[u][q];
      } else {
#pragma unroll
        for (int q = 0; q < VEC; ++q) acc.a[q] += w[u] * xv[u][q];
      }
    }
  }
  for (; e < e1; ++e) {
    const int64_t j = static_cast<int64_t>(__ldg(col + e));
    const T w = HAS_VALUES ? __ldg(val + e) : T(1);
    T xv[VEC];
    load_vec<T, VEC>(x + j * d + c, xv);
    if (HAS_TABLE) {
      T tv[VEC];
      load_vec<T, VEC>(table + static_cast<int64_t>(__ldg(rel + e)) * d + c, tv);
#pragma unroll
      for (int q = 0; q < VEC; ++q) acc.a[q] += w * tv[q] * xv[q];
    } else {
#pragma unroll
      for (int q = 0; q < VEC; ++q) acc.a[q] += w * xv[q];
    }
  }
}

// One group of G threads per light row (degree <= chunk); heavy rows are left to the chunk
// kernels.
template <typename T, typename IdxT, int VEC, bool HAS_VALUES, bool HAS_TABLE>
__global__ void __launch_bounds__(kThreads)
row_kernel(const int64_t* __restrict__ indptr, const IdxT* __restrict__ col,
           const T* __restrict__ val, const int32_t* __restrict__ rel,
           const T* __restrict__ table, const T* __restrict__ x, T* __restrict__ y,
           int64_t n_rows, int64_t d, int64_t chunk, int group) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / group) +
                      threadIdx.x / group;
  const int lane = threadIdx.x % group;
  if (row >= n_rows) return;
  const int64_t e0 = indptr[row], e1 = indptr[row + 1];
  if (e1 - e0 > chunk) return;
  for (int64_t c = static_cast<int64_t>(lane) * VEC; c < d; c += static_cast<int64_t>(group) * VEC) {
    Acc<T, VEC> acc;
    acc.zero();
    accumulate_edges<T, IdxT, VEC, HAS_VALUES, HAS_TABLE>(e0, e1, c, d, col, val, rel, table, x,
                                                          acc);
    store_vec<T, VEC>(y + row * d + c, acc.a);
  }
}

// Group per chunk of a heavy row: chunk c belongs to heavy row h with
// heavy_ptr[h] <= c < heavy_ptr[h + 1]; it covers `chunk` edges of that row.
template <typename T, typename IdxT, int VEC, bool HAS_VALUES, bool HAS_TABLE>
__global__ void __launch_bounds__(kThreads)
chunk_kernel(const int64_t* __restrict__ indptr, const IdxT* __restrict__ col,
             const T* __restrict__ val, const int32_t* __restrict__ rel,
             const T* __restrict__ table, const T* __restrict__ x,
             const int64_t* __restrict__ heavy_row, const int64_t* __restrict__ heavy_ptr,
             int64_t n_heavy, int64_t n_chunks, T* __restrict__ part, int64_t d, int64_t chunk,
             int group) {
  const int64_t c_id = static_cast<int64_t>(blockIdx.x) * (kThreads / group) +
                       threadIdx.x / group;
  const int lane = threadIdx.x % group;
  if (c_id >= n_chunks) return;
  int64_t lo = 0, hi = n_heavy;  // last h with heavy_ptr[h] <= c_id
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (heavy_ptr[mid] <= c_id) lo = mid; else hi = mid;
  }
  const int64_t row = heavy_row[lo];
  const int64_t e0 = indptr[row] + (c_id - heavy_ptr[lo]) * chunk;
  const int64_t e1 = min(e0 + chunk, indptr[row + 1]);
  for (int64_t c = static_cast<int64_t>(lane) * VEC; c < d; c += static_cast<int64_t>(group) * VEC) {
    Acc<T, VEC> acc;
    acc.zero();
    accumulate_edges<T, IdxT, VEC, HAS_VALUES, HAS_TABLE>(e0, e1, c, d, col, val, rel, table, x,
                                                          acc);
    store_vec<T, VEC>(part + c_id * d + c, acc.a);
  }
}

// out[seg_out[s]] = sum_{c in [ptr[s], ptr[s + 1])} part[c], in increasing c. One thread per
// (segment, column): used for heavy rows (seg_out = the row) and for g (seg_out = relation).
template <typename T>
__global__ void __launch_bounds__(kThreads)
ordered_reduce_kernel(const T* __restrict__ part, const int64_t* __restrict__ ptr,
                      const int64_t* __restrict__ seg_out, int64_t n_seg, int64_t d,
                      T* __restrict__ out) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (t >= n_seg * d) return;
  const int64_t s = t / d, c = t % d;
  T acc = T(0);
  // segments are at most SLIFMR_REDUCE_FAN_IN (64) rows (the binding reduces longer ones
  // level by level); unrolled so several independent loads are in flight
#pragma unroll 4
  for (int64_t p = ptr[s]; p < ptr[s + 1]; ++p) acc += part[p * d + c];
  out[(seg_out ? seg_out[s] : s) * d + c] = acc;
}

// g partials over the relation-sorted edge order: chunk c of relation r (gptr[r] <= c <
// gptr[r + 1]) covers sorted positions [rel_ptr[r] + (c - gptr[r]) * chunk, ...) capped at
// rel_ptr[r + 1]; part[c] = sum over those positions p of v[e] * x[src[e]] * dy[col[e]] with
// e = perm[p] and src[e] = the transposed row of edge e.
template <typename T, typename IdxT, int VEC, bool HAS_VALUES>
__global__ void __launch_bounds__(kThreads)
g_partial_kernel(const int64_t* __restrict__ perm, const int64_t* __restrict__ src,
                 const IdxT* __restrict__ col, const T* __restrict__ val,
                 const T* __restrict__ x, const T* __restrict__ dy,
                 const int64_t* __restrict__ rel_ptr, const int64_t* __restrict__ gptr,
                 int64_t n_rel, int64_t n_chunks, T* __restrict__ part, int64_t d,
                 int64_t chunk, int group) {
  const int64_t c_id = static_cast<int64_t>(blockIdx.x) * (kThreads / group) +
                       threadIdx.x / group;
  const int lane = threadIdx.x % group;
  if (c_id >= n_chunks) return;
  int64_t lo = 0, hi = n_rel;  // last r with gptr[r] <= c_id (empty relations own no chunk)
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (gptr[mid] <= c_id) lo = mid; else hi = mid;
  }
  const int64_t p0 = rel_ptr[lo] + (c_id - gptr[lo]) * chunk;
  const int64_t p1 = min(p0 + chunk, rel_ptr[lo + 1]);
  for (int64_t c = static_cast<int64_t>(lane) * VEC; c < d; c += static_cast<int64_t>(group) * VEC) {
    T acc[VEC];
#pragma unroll
    for (int q = 0; q < VEC; ++q) acc[q] = T(0);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t e = perm[p];
      const T w = HAS_VALUES ? val[e] : T(1);
      T xv[VEC], gv[VEC];
      load_vec<T, VEC>(x + src[e] * d + c, xv);
      load_vec<T, VEC>(dy + static_cast<int64_t>(col[e]) * d + c, gv);
#pragma unroll
      for (int q = 0; q < VEC; ++q) acc[q] += w * xv[q] * gv[q];
    }
    store_vec<T, VEC>(part + c_id * d + c, acc);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Widest vector the row layout allows: every row start must be 16-byte aligned.
template <typename T>
int pick_vec(int64_t d, std::initializer_list<const void*> ptrs) {
  constexpr int kWide = 16 / sizeof(T);
  if (d % kWide != 0) return 1;
  for (const void* p : ptrs)
    if (p != nullptr && !aligned16(p)) return 1;
  return kWide;
}

int pick_group(int64_t d, int vec) {
  const int64_t nv = (d + vec - 1) / vec;
  int g = 1;
  while (g < 32 && g < nv) g *= 2;
  return g;
}

unsigned blocks_for(int64_t items, int group) {
  const int64_t per_block = kThreads / group;
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

template <typename T, typename IdxT, int VEC>
cudaError_t launch_rows(const int64_t* indptr, const IdxT* col, const T* val, const int32_t* rel,
                        const T* table, const T* x, T* y, int64_t n_rows, int64_t d,
                        int64_t chunk, cudaStream_t st) {
  const int group = pick_group(d, VEC);
  const unsigned nb = blocks_for(n_rows, group);
  if (nb == 0) return cudaSuccess;
  if (val && table)
    row_kernel<T, IdxT, VEC, true, true><<<nb, kThreads, 0, st>>>(indptr, col, val, rel, table, x, y, n_rows, d, chunk, group);
  else if (val)
    row_kernel<T, IdxT, VEC, true, false><<<nb, kThreads, 0, st>>>(indptr, col, val, rel, table, x, y, n_rows, d, chunk, group);
  else if (table)
    row_kernel<T, IdxT, VEC, false, true><<<nb, kThreads, 0, st>>>(indptr, col, val, rel, table, x, y, n_rows, d, chunk, group);
  else
    row_kernel<T, IdxT, VEC, false, false><<<nb, kThreads, 0, st>>>(indptr, col, val, rel, table, x, y, n_rows, d, chunk, group);
  return cudaGetLastError();
}

template <typename T, typename IdxT, int VEC>
cudaError_t launch_chunks(const int64_t* indptr, const IdxT* col, const T* val,
                          const int32_t* rel, const T* table, const T* x,
                          const int64_t* heavy_row, const int64_t* heavy_ptr, int64_t n_heavy,
                          int64_t n_chunks, T* part, int64_t d, int64_t chunk, cudaStream_t st) {
  const int group = pick_group(d, VEC);
  const unsigned nb = blocks_for(n_chunks, group);
  if (nb == 0) return cudaSuccess;
#define SLIFMR_CHUNK(HV, HT)                                                                   \
  chunk_kernel<T, IdxT, VEC, HV, HT><<<nb, kThreads, 0, st>>>(indptr, col, val, rel, table, x, \
      heavy_row, heavy_ptr, n_heavy, n_chunks, part, d, chunk, group)
  if (val && table) SLIFMR_CHUNK(true, true);
  else if (val) SLIFMR_CHUNK(true, false);
  else if (table) SLIFMR_CHUNK(false, true);
  else SLIFMR_CHUNK(false, false);
#undef SLIFMR_CHUNK
  return cudaGetLastError();
}

template <typename T, typename IdxT, int VEC>
cudaError_t launch_g(const int64_t* perm, const int64_t* src, const IdxT* col, const T* val,
                     const T* x, const T* dy, const int64_t* rel_ptr, const int64_t* gptr,
                     int64_t n_rel, int64_t n_chunks, T* part, int64_t d, int64_t chunk,
                     cudaStream_t st) {
  const int group = pick_group(d, VEC);
  const unsigned nb = blocks_for(n_chunks, group);
  if (nb == 0) return cudaSuccess;
  if (val)
    g_partial_kernel<T, IdxT, VEC, true><<<nb, kThreads, 0, st>>>(perm, src, col, val, x, dy, rel_ptr, gptr, n_rel, n_chunks, part, d, chunk, group);
  else
    g_partial_kernel<T, IdxT, VEC, false><<<nb, kThreads, 0, st>>>(perm, src, col, val, x, dy, rel_ptr, gptr, n_rel, n_chunks, part, d, chunk, group);
  return cudaGetLastError();
}

// Edge-value gradient (SDDMM over the graph's pattern): one warp per edge, lane l sums the
// features l, l + 32, ... in order, then a fixed xor-butterfly adds the 32 partials: every edge's
// sum has one order, no atomics (deterministic). out[e] = sum_k dy[row_e, k] * x[col_e, k]
// (* table[rel_e, k]). The whole warp takes the same edge, so no lane leaves early.
template <typename T, typename IdxT, bool HAS_TABLE>
__global__ void __launch_bounds__(kThreads)
    sddmm_kernel(const int64_t* __restrict__ rows, const IdxT* __restrict__ col,
                 const int32_t* __restrict__ rel, const T* __restrict__ table,
                 const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ out,
                 int64_t nnz, int64_t d) {
  const int lane = threadIdx.x & 31;
  const int64_t e = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const bool valid = e < nnz;
  T acc = T(0);
  if (valid) {
    const T* a = dy + rows[e] * d;
    const T* b = x + static_cast<int64_t>(col[e]) * d;
    const T* t = HAS_TABLE ? table + static_cast<int64_t>(rel[e]) * d : nullptr;
    for (int64_t k = lane; k < d; k += 32) {
      T p = a[k] * b[k];
      if (HAS_TABLE) p *= t[k];
      acc += p;
    }
  }
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_sync(0xffffffffu, acc, lane ^ off);
  if (valid && lane == 0) out[e] = acc;
}

template <typename T, typename IdxT>
cudaError_t launch_sddmm(const int64_t* rows, const IdxT* col, const int32_t* rel,
                         const T* table, const T* dy, const T* x, T* out, int64_t nnz,
                         int64_t d, cudaStream_t st) {
  constexpr int64_t kEdgesPerBlock = kThreads / 32;
  const int64_t nb = (nnz + kEdgesPerBlock - 1) / kEdgesPerBlock;
  if (nb == 0) return cudaSuccess;
  if (nb > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (table)
    sddmm_kernel<T, IdxT, true><<<static_cast<unsigned>(nb), kThreads, 0, st>>>(rows, col, rel, table, dy, x, out, nnz, d);
  else
    sddmm_kernel<T, IdxT, false><<<static_cast<unsigned>(nb), kThreads, 0, st>>>(rows, col, rel, table, dy, x, out, nnz, d);
  return cudaGetLastError();
}

}  // namespace

// Entry points. dtype: 0 = float32, 1 = float64; idx64: column indices are int64 (else int32).
// Each returns a cudaError_t (0 = success) from the launch.
extern "C" {

// y[row] for every light row (degree <= chunk). values / table may be null (all ones /
// plain SpMM); relation is read only with a table.
int slifmr_propagate_rows(int dtype, int idx64, const int64_t* indptr, const void* col,
                          const void* val, const int32_t* rel, const void* table, const void* x,
                          void* y, int64_t n_rows, int64_t d, int64_t chunk, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (dtype == 0) {
    const int vec = pick_vec<float>(d, {x, y, table});
#define SLIFMR_ROWS(I, V)                                                                       \
  launch_rows<float, I, V>(indptr, static_cast<const I*>(col), static_cast<const float*>(val),  \
      rel, static_cast<const float*>(table), static_cast<const float*>(x),                      \
      static_cast<float*>(y), n_rows, d, chunk, st)
    if (idx64) return vec == 4 ? SLIFMR_ROWS(int64_t, 4) : SLIFMR_ROWS(int64_t, 1);
    return vec == 4 ? SLIFMR_ROWS(int32_t, 4) : SLIFMR_ROWS(int32_t, 1);
#undef SLIFMR_ROWS
  }
  const int vec = pick_vec<double>(d, {x, y, table});
#define SLIFMR_ROWS(I, V)                                                                       \
  launch_rows<double, I, V>(indptr, static_cast<const I*>(col), static_cast<const double*>(val), \
      rel, static_cast<const double*>(table), static_cast<const double*>(x),                    \
      static_cast<double*>(y), n_rows, d, chunk, st)
  if (idx64) return vec == 2 ? SLIFMR_ROWS(int64_t, 2) : SLIFMR_ROWS(int64_t, 1);
  return vec == 2 ? SLIFMR_ROWS(int32_t, 2) : SLIFMR_ROWS(int32_t, 1);
#undef SLIFMR_ROWS
}

// part[c] for every chunk of every heavy row (see chunk_kernel).
int slifmr_propagate_chunks(int dtype, int idx64, const int64_t* indptr, const void* col,
                            const void* val, const int32_t* rel, const void* table,
                            const void* x, const int64_t* heavy_row, const int64_t* heavy_ptr,
                            int64_t n_heavy, int64_t n_chunks, void* part, int64_t d,
                            int64_t chunk, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (dtype == 0) {
    const int vec = pick_vec<float>(d, {x, part, table});
#define SLIFMR_CH(I, V)                                                                          \
  launch_chunks<float, I, V>(indptr, static_cast<const I*>(col), static_cast<const float*>(val), \
      rel, static_cast<const float*>(table), static_cast<const float*>(x), heavy_row, heavy_ptr,  \
      n_heavy, n_chunks, static_cast<float*>(part), d, chunk, st)
    if (idx64) return vec == 4 ? SLIFMR_CH(int64_t, 4) : SLIFMR_CH(int64_t, 1);
    return vec == 4 ? SLIFMR_CH(int32_t, 4) : SLIFMR_CH(int32_t, 1);
#undef SLIFMR_CH
  }
  const int vec = pick_vec<double>(d, {x, part, table});
#define SLIFMR_CH(I, V)                                                                            \
  launch_chunks<double, I, V>(indptr, static_cast<const I*>(col), static_cast<const double*>(val), \
      rel, static_cast<const double*>(table), static_cast<const double*>(x), heavy_row, heavy_ptr,  \
      n_heavy, n_chunks, static_cast<double*>(part), d, chunk, st)
  if (idx64) return vec == 2 ? SLIFMR_CH(int64_t, 2) : SLIFMR_CH(int64_t, 1);
  return vec == 2 ? SLIFMR_CH(int32_t, 2) : SLIFMR_CH(int32_t, 1);
#undef SLIFMR_CH
}

// out[seg_out[s] or s] = sum of part[ptr[s] .. ptr[s + 1]) in order (seg_out may be null).
int slifmr_ordered_reduce(int dtype, const void* part, const int64_t* ptr,
                          const int64_t* seg_out, int64_t n_seg, int64_t d, void* out,
                          void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t items = n_seg * d;
  if (items == 0) return cudaSuccess;
  const unsigned nb = static_cast<unsigned>((items + kThreads - 1) / kThreads);
  if (dtype == 0)
    ordered_reduce_kernel<float><<<nb, kThreads, 0, st>>>(
        static_cast<const float*>(part), ptr, seg_out, n_seg, d, static_cast<float*>(out));
  else
    ordered_reduce_kernel<double><<<nb, kThreads, 0, st>>>(
        static_cast<const double*>(part), ptr, seg_out, n_seg, d, static_cast<double*>(out));
  return cudaGetLastError();
}

// g partials over the relation-sorted edges (see g_partial_kernel).
int slifmr_propagate_g_partials(int dtype, int idx64, const int64_t* perm, const int64_t* src,
                                const void* col, const void* val, const void* x,
                                const void* dy, const int64_t* rel_ptr, const int64_t* gptr,
                                int64_t n_rel, int64_t n_chunks, void* part, int64_t d,
                                int64_t chunk, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (dtype == 0) {
    const int vec = pick_vec<float>(d, {x, dy, part});
#define SLIFMR_G(I, V)                                                                          \
  launch_g<float, I, V>(perm, src, static_cast<const I*>(col), static_cast<const float*>(val),  \
      static_cast<const float*>(x), static_cast<const float*>(dy), rel_ptr, gptr, n_rel,        \
      n_chunks, static_cast<float*>(part), d, chunk, st)
    if (idx64) return vec == 4 ? SLIFMR_G(int64_t, 4) : SLIFMR_G(int64_t, 1);
    return vec == 4 ? SLIFMR_G(int32_t, 4) : SLIFMR_G(int32_t, 1);
#undef SLIFMR_G
  }
  const int vec = pick_vec<double>(d, {x, dy, part});
#define SLIFMR_G(I, V)                                                                           \
  launch_g<double, I, V>(perm, src, static_cast<const I*>(col), static_cast<const double*>(val), \
      static_cast<const double*>(x), static_cast<const double*>(dy), rel_ptr, gptr, n_rel,       \
      n_chunks, static_cast<double*>(part), d, chunk, st)
  if (idx64) return vec == 2 ? SLIFMR_G(int64_t, 2) : SLIFMR_G(int64_t, 1);
  return vec == 2 ? SLIFMR_G(int32_t, 2) : SLIFMR_G(int32_t, 1);
#undef SLIFMR_G
}

// Edge-value gradient (see sddmm_kernel). rows: (nnz,) int64 row of each edge; table / rel may
// be null (no relation factor).
int slifmr_propagate_sddmm(int dtype, int idx64, const int64_t* rows, const void* col,
                           const int32_t* rel, const void* table, const void* dy, const void* x,
                           void* out, int64_t nnz, int64_t d, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (dtype == 0) {
    if (idx64)
      return launch_sddmm<float, int64_t>(rows, static_cast<const int64_t*>(col), rel,
          static_cast<const float*>(table), static_cast<const float*>(dy),
          static_cast<const float*>(x), static_cast<float*>(out), nnz, d, st);
    return launch_sddmm<float, int32_t>(rows, static_cast<const int32_t*>(col), rel,
        static_cast<const float*>(table), static_cast<const float*>(dy),
        static_cast<const float*>(x), static_cast<float*>(out), nnz, d, st);
  }
  if (idx64)
    return launch_sddmm<double, int64_t>(rows, static_cast<const int64_t*>(col), rel,
        static_cast<const double*>(table), static_cast<const double*>(dy),
        static_cast<const double*>(x), static_cast<double*>(out), nnz, d, st);
  return launch_sddmm<double, int32_t>(rows, static_cast<const int32_t*>(col), rel,
      static_cast<const double*>(table), static_cast<const double*>(dy),
      static_cast<const double*>(x), static_cast<double*>(out), nnz, d, st);
}

const char* slifmr_cuda_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // extern "C"
