// View-weighted fusion of L2-normalised rows, CUDA kernels (the fuse_views op).
//
//   den[i, k] = max(|v_ik|, eps)            out[i] = z[i] + sum_k alpha[k] * v_ik / den[i, k]
//   s_ik      = <v_ik, g_i> / den[i, k]      dalpha[k] = sum_i s_ik
//   dv_ik     = c g_i - (c s_ik / den[i, k]) v_ik,  c = alpha[k] / den[i, k]
//               (the second term dropped where den[i, k] <= eps: the norm was clamped)
//
// Needs only the CUDA runtime: every entry point is an extern "C" launcher taking raw pointers
// and a stream (as void*); fuse_binding.cpp wraps them for the torch dispatcher.
//
// Design
// * Row split: a group of G threads (G = 1..32, a power of two, from d alone) owns one row.
//   Lane l owns the runs of W columns starting at (l + j G) W, j = 0, 1, ...; W = 16 bytes of
//   the dtype (4 floats / 2 doubles) when d is a multiple of it, else 1. A run is one 16-byte
//   vector load when every row start is 16-byte aligned, else W scalar loads with the same
//   arithmetic: the bits do not depend on the alignment.
// * Register path (d <= G W NV with NV <= 8): the lane keeps its slice of z (or g) and of the
//   current view in registers, so z, g and every view are read once and out / dviews written
//   once. The row norm / dot is a butterfly over the group with warp shuffles (every lane ends
//   with the same bits). Wider rows take the streaming path, which re-reads each view slice
//   (from L1/L2) instead of holding it: forward accumulates into out view by view, each lane
//   touching only its own columns.
// * alpha's gradient: per view, each group's s goes to shared memory; warp 0 adds the block's
//   rows in a fixed order (double) into part[k, block]; a second kernel (one block per view)
//   adds the block partials with a fixed strided pattern and a fixed shared-memory tree. No
//   atomics: the same bits on every run. Block = 256 threads = 256 / G rows, a function of d.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>

namespace {

constexpr int kThreads = 256;
constexpr int kMinRowsPerBlock = kThreads / 32;  // the widest group is a warp
// Largest number of W-column runs per lane held in registers; wider rows stream. The CPU
// emulation build of the tests may lower it to reach the streaming path at small d.
#ifndef SLIFMR_FUSE_MAX_NV
#define SLIFMR_FUSE_MAX_NV 8
#endif

template <typename T, int W>
struct VecT;
template <> struct VecT<float, 4> { using type = float4; };
template <> struct VecT<double, 2> { using type = double2; };

template <typename T, int W, bool VLOAD>
__device__ __forceinline__ void load_run(const T* p, T (&out)[W]) {
  if constexpr (VLOAD) {
    using V = typename VecT<T, W>::type;
    const V v = *reinterpret_cast<const V*>(p);
    const T* s = reinterpret_cast<const T*>(&v);
#pragma unroll
    for (int q = 0; q < W; ++q) out[q] = s[q];
  } else {
#pragma unroll
    for (int q = 0; q < W; ++q) out[q] = p[q];
  }
}

template <typename T, int W, bool VLOAD>
__device__ __forceinline__ void store_run(T* p, const T (&in)[W]) {
  if constexpr (VLOAD) {
    using V = typename VecT<T, W>::type;
    V v;
    T* s = reinterpret_cast<T*>(&v);
#pragma unroll
    for (int q = 0; q < W; ++q) s[q] = in[q];
    *reinterpret_cast<V*>(p) = v;
  } else {
#pragma unroll
    for (int q = 0; q < W; ++q) p[q] = in[q];
  }
}

template <typename T, int W>
__device__ __forceinline__ void zero_run(T (&a)[W]) {
#pragma unroll
  for (int q = 0; q < W; ++q) a[q] = T(0);
}

__device__ __forceinline__ float root(float x) { return sqrtf(x); }
__device__ __forceinline__ double root(double x) { return sqrt(x); }

// max(sqrt(ss), eps) as clamp_min does it (a NaN norm stays NaN).
template <typename T>
__device__ __forceinline__ T clamped_norm(T ss, T eps) {
  const T nrm = root(ss);
  return nrm < eps ? eps : nrm;
}

// Sum over the aligned group of `group` lanes (a power of two <= 32) holding x. A butterfly:
// every lane of the group ends with the same bits (each step adds the same two numbers). All
// 32 lanes of the warp must call it (warp-uniform control flow).
template <typename T>
__device__ __forceinline__ T group_sum(T x, int group) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  for (int off = group >> 1; off > 0; off >>= 1) x += __shfl_sync(0xffffffffu, x, lane ^ off);
  return x;
}

// part[k * stride + blockIdx.x] = the sum of s over the block's rows, in row order (inactive
// rows pass 0). Called by every thread of the block for k = 0, 1, ... in turn; the two buffers
// alternate so that one barrier per view suffices (warp 0 has read buffer k & 1 before it
// reaches the barrier of view k + 1, after which buffer k & 1 is written again).
__device__ __forceinline__ void block_partial(double s, int64_t k, int group, int lane,
                                              double* __restrict__ part, int64_t stride) {
  __shared__ double sh[2][kThreads];
  double* buf = sh[k & 1];
  if (lane == 0) buf[threadIdx.x / group] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    double t = 0.0;
    for (int r = static_cast<int>(threadIdx.x); r < kThreads / group; r += 32) t += buf[r];
    t = group_sum(t, 32);
    if (threadIdx.x == 0) part[k * stride + blockIdx.x] = t;
  }
}

struct RowCtx {
  int64_t row;
  int lane;
  bool active;
  int64_t c0, step;
};

template <int W>
__device__ __forceinline__ RowCtx row_ctx(int64_t n, int group) {
  RowCtx r;
  r.row = static_cast<int64_t>(blockIdx.x) * (kThreads / group) + threadIdx.x / group;
  r.lane = static_cast<int>(threadIdx.x % group);
  r.active = r.row < n;
  r.c0 = static_cast<int64_t>(r.lane) * W;
  r.step = static_cast<int64_t>(group) * W;
  return r;
}

// The lane's runs j < NV of the row starting at p + off into a: zeros past d and on inactive
// rows, so that they add nothing to the reductions (p + off is formed only for active rows).
template <typename T, int W, bool VLOAD, int NV>
__device__ __forceinline__ void load_row(const T* p, int64_t off, const RowCtx& r, int64_t d,
                                         T (&a)[NV][W]) {
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int64_t c = r.c0 + j * r.step;
    if (r.active && c < d) load_run<T, W, VLOAD>(p + off + c, a[j]);
    else zero_run<T, W>(a[j]);
  }
}

// The lane's share of <v, w> over its runs, in run then element order (before group_sum).
template <typename T, int W, int NV>
__device__ __forceinline__ T lane_dot(const T (&v)[NV][W], const T (&w)[NV][W]) {
  T s = T(0);
#pragma unroll
  for (int j = 0; j < NV; ++j)
#pragma unroll
    for (int q = 0; q < W; ++q) s += v[j][q] * w[j][q];
  return s;
}

// ---- forward ---------------------------------------------------------------------------------

// Register path: the lane's runs j < NV of the row (d <= group * W * NV).
template <typename T, int W, bool VLOAD, int NV>
__global__ void __launch_bounds__(kThreads)
forward_regs(const T* __restrict__ z, const T* __restrict__ alpha, const T* __restrict__ views,
             T* __restrict__ out, T* __restrict__ den, int64_t n, int64_t d, int64_t V, T eps,
             int group) {
  const RowCtx r = row_ctx<W>(n, group);
  T acc[NV][W], v[NV][W];
  load_row<T, W, VLOAD, NV>(z, r.row * d, r, d, acc);
  for (int64_t k = 0; k < V; ++k) {
    load_row<T, W, VLOAD, NV>(views, (r.row * V + k) * d, r, d, v);
    const T ss = group_sum(lane_dot<T, W, NV>(v, v), group);
    const T dk = clamped_norm(ss, eps);
    if (r.active && r.lane == 0) den[r.row * V + k] = dk;
    const T a = alpha[k];
#pragma unroll
    for (int j = 0; j < NV; ++j)
#pragma unroll
      for (int q = 0; q < W; ++q) acc[j][q] += a * (v[j][q] / dk);
  }
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int64_t c = r.c0 + j * r.step;
    if (r.active && c < d) store_run<T, W, VLOAD>(out + r.row * d + c, acc[j]);
  }
}

// Streaming path (any d): per view, one sweep for the norm and one that adds the view into
// out (z for the first view). Same per-element arithmetic and order as the register path.
template <typename T, int W, bool VLOAD>
__global__ void __launch_bounds__(kThreads)
forward_stream(const T* __restrict__ z, const T* __restrict__ alpha,
               const T* __restrict__ views, T* __restrict__ out, T* __restrict__ den, int64_t n,
               int64_t d, int64_t V, T eps, int group) {
  const RowCtx r = row_ctx<W>(n, group);
  if (V == 0 && r.active) {
    for (int64_t c = r.c0; c < d; c += r.step) {
      T a[W];
      load_run<T, W, VLOAD>(z + r.row * d + c, a);
      store_run<T, W, VLOAD>(out + r.row * d + c, a);
    }
  }
  for (int64_t k = 0; k < V; ++k) {
    T ss = T(0);
    if (r.active) {
      for (int64_t c = r.c0; c < d; c += r.step) {
        T v[W];
        load_run<T, W, VLOAD>(views + (r.row * V + k) * d + c, v);
#pragma unroll
        for (int q = 0; q < W; ++q) ss += v[q] * v[q];
      }
    }
    ss = group_sum(ss, group);
    const T dk = clamped_norm(ss, eps);
    if (!r.active) continue;
    if (r.lane == 0) den[r.row * V + k] = dk;
    const T a = alpha[k];
    for (int64_t c = r.c0; c < d; c += r.step) {
      T v[W], acc[W];
      load_run<T, W, VLOAD>(views + (r.row * V + k) * d + c, v);
      // z for the first view, then out: each lane reads back only the columns it wrote
      if (k == 0) load_run<T, W, VLOAD>(z + r.row * d + c, acc);
      else load_run<T, W, VLOAD>(out + r.row * d + c, acc);
#pragma unroll
      for (int q = 0; q < W; ++q) acc[q] += a * (v[q] / dk);
      store_run<T, W, VLOAD>(out + r.row * d + c, acc);
    }
  }
}

// ---- backward --------------------------------------------------------------------------------

// dviews: null when not needed; part: null when alpha's gradient is not needed.
template <typename T, int W, bool VLOAD, int NV>
__global__ void __launch_bounds__(kThreads)
backward_regs(const T* __restrict__ g, const T* __restrict__ alpha, const T* __restrict__ views,
              const T* __restrict__ den, T* __restrict__ dviews, double* __restrict__ part,
              int64_t part_stride, int64_t n, int64_t d, int64_t V, T eps, int group) {
  const RowCtx r = row_ctx<W>(n, group);
  T gr[NV][W], v[NV][W];
  load_row<T, W, VLOAD, NV>(g, r.row * d, r, d, gr);
  for (int64_t k = 0; k < V; ++k) {
    load_row<T, W, VLOAD, NV>(views, (r.row * V + k) * d, r, d, v);
    const T dot = group_sum(lane_dot<T, W, NV>(v, gr), group);
    const T dk = r.active ? den[r.row * V + k] : T(1);
    const T s = dot / dk;  // <vhat, g>
    if (dviews != nullptr && r.active) {
      const T cg = alpha[k] / dk;
      const T cs = dk <= eps ? T(0) : cg * s / dk;  // no projection term where clamped
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int64_t c = r.c0 + j * r.step;
        if (c < d) {
          T o[W];
#pragma unroll
          for (int q = 0; q < W; ++q) o[q] = cg * gr[j][q] - cs * v[j][q];
          store_run<T, W, VLOAD>(dviews + (r.row * V + k) * d + c, o);
        }
      }
    }
    if (part != nullptr)
      block_partial(r.active ? static_cast<double>(s) : 0.0, k, group, r.lane, part,
                    part_stride);
  }
}

template <typename T, int W, bool VLOAD>
__global__ void __launch_bounds__(kThreads)
backward_stream(const T* __restrict__ g, const T* __restrict__ alpha,
                const T* __restrict__ views, const T* __restrict__ den,
                T* __restrict__ dviews, double* __restrict__ part, int64_t part_stride,
                int64_t n, int64_t d, int64_t V, T eps, int group) {
  const RowCtx r = row_ctx<W>(n, group);
  for (int64_t k = 0; k < V; ++k) {
    const T* vk = views + (r.active ? (r.row * V + k) * d : 0);
    const T* gi = g + (r.active ? r.row * d : 0);
    T dot = T(0);
    if (r.active) {
      for (int64_t c = r.c0; c < d; c += r.step) {
        T v[W], gv[W];
        load_run<T, W, VLOAD>(vk + c, v);
        load_run<T, W, VLOAD>(gi + c, gv);
#pragma unroll
        for (int q = 0; q < W; ++q) dot += v[q] * gv[q];
      }
    }
    dot = group_sum(dot, group);
    const T dk = r.active ? den[r.row * V + k] : T(1);
    const T s = dot / dk;
    if (dviews != nullptr && r.active) {
      const T cg = alpha[k] / dk;
      const T cs = dk <= eps ? T(0) : cg * s / dk;
      for (int64_t c = r.c0; c < d; c += r.step) {
        T v[W], gv[W], o[W];
        load_run<T, W, VLOAD>(vk + c, v);
        load_run<T, W, VLOAD>(gi + c, gv);
#pragma unroll
        for (int q = 0; q < W; ++q) o[q] = cg * gv[q] - cs * v[q];
        store_run<T, W, VLOAD>(dviews + (r.row * V + k) * d + c, o);
      }
    }
    if (part != nullptr)
      block_partial(r.active ? static_cast<double>(s) : 0.0, k, group, r.lane, part,
                    part_stride);
  }
}

// dalpha[k] = sum_b part[k * stride + b] over the n_blocks block partials: one block per view,
// thread t adds b = t, t + 256, ... in order, then a fixed shared-memory tree. Deterministic.
template <typename T>
__global__ void __launch_bounds__(kThreads)
dalpha_reduce(const double* __restrict__ part, int64_t n_blocks, int64_t stride,
              T* __restrict__ dalpha) {
  __shared__ double red[kThreads];
  const int64_t k = blockIdx.x;
  double t = 0.0;
  for (int64_t b = threadIdx.x; b < n_blocks; b += kThreads) t += part[k * stride + b];
  red[threadIdx.x] = t;
  __syncthreads();
  for (int h = kThreads / 2; h > 0; h >>= 1) {
    if (static_cast<int>(threadIdx.x) < h) red[threadIdx.x] += red[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) dalpha[k] = static_cast<T>(red[0]);
}

// ---- planning and launch -----------------------------------------------------------------------

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// The work split depends on d alone (w, group, nv); only vload looks at the pointers.
struct Plan {
  int w;       // columns per run: 16 bytes of the dtype when d allows it, else 1
  bool vload;  // runs as 16-byte vectors (every pointer aligned)
  int group;   // threads per row
  int nv;      // runs per lane held in registers; 0 = streaming
};

template <typename T>
Plan make_plan(int64_t d, std::initializer_list<const void*> ptrs) {
  constexpr int kWide = 16 / sizeof(T);
  Plan p;
  p.w = d % kWide == 0 ? kWide : 1;
  p.vload = p.w > 1;
  for (const void* q : ptrs)
    if (q != nullptr && !aligned16(q)) p.vload = false;
  const int64_t runs = d / p.w;
  p.group = 1;
  while (p.group < 32 && p.group < runs) p.group *= 2;
  const int64_t per_lane = (runs + p.group - 1) / p.group;
  int nv = 1;
  while (nv < per_lane && nv <= SLIFMR_FUSE_MAX_NV) nv *= 2;
  p.nv = nv > SLIFMR_FUSE_MAX_NV ? 0 : nv;
  return p;
}

unsigned blocks_for(int64_t n, int group) {
  const int64_t per_block = kThreads / group;
  return static_cast<unsigned>((n + per_block - 1) / per_block);
}

template <typename T, int W, bool VL>
cudaError_t launch_forward(const Plan& p, const T* z, const T* alpha, const T* views, T* out,
                           T* den, int64_t n, int64_t d, int64_t V, T eps, cudaStream_t st) {
  const unsigned nb = blocks_for(n, p.group);
  if (nb == 0) return cudaSuccess;
  switch (p.nv) {
    case 1: forward_regs<T, W, VL, 1><<<nb, kThreads, 0, st>>>(z, alpha, views, out, den, n, d, V, eps, p.group); break;
    case 2: forward_regs<T, W, VL, 2><<<nb, kThreads, 0, st>>>(z, alpha, views, out, den, n, d, V, eps, p.group); break;
    case 4: forward_regs<T, W, VL, 4><<<nb, kThreads, 0, st>>>(z, alpha, views, out, den, n, d, V, eps, p.group); break;
    case 8: forward_regs<T, W, VL, 8><<<nb, kThreads, 0, st>>>(z, alpha, views, out, den, n, d, V, eps, p.group); break;
    default: forward_stream<T, W, VL><<<nb, kThreads, 0, st>>>(z, alpha, views, out, den, n, d, V, eps, p.group); break;
  }
  return cudaGetLastError();
}

template <typename T, int W, bool VL>
cudaError_t launch_backward(const Plan& p, const T* g, const T* alpha, const T* views,
                            const T* den, T* dviews, double* part, int64_t stride, int64_t n,
                            int64_t d, int64_t V, T eps, cudaStream_t st) {
  const unsigned nb = blocks_for(n, p.group);
  if (nb == 0) return cudaSuccess;
  switch (p.nv) {
    case 1: backward_regs<T, W, VL, 1><<<nb, kThreads, 0, st>>>(g, alpha, views, den, dviews, part, stride, n, d, V, eps, p.group); break;
    case 2: backward_regs<T, W, VL, 2><<<nb, kThreads, 0, st>>>(g, alpha, views, den, dviews, part, stride, n, d, V, eps, p.group); break;
    case 4: backward_regs<T, W, VL, 4><<<nb, kThreads, 0, st>>>(g, alpha, views, den, dviews, part, stride, n, d, V, eps, p.group); break;
    case 8: backward_regs<T, W, VL, 8><<<nb, kThreads, 0, st>>>(g, alpha, views, den, dviews, part, stride, n, d, V, eps, p.group); break;
    default: backward_stream<T, W, VL><<<nb, kThreads, 0, st>>>(g, alpha, views, den, dviews, part, stride, n, d, V, eps, p.group); break;
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward(const void* z, const void* alpha, const void* views, void* out, void* den,
                    int64_t n, int64_t d, int64_t V, double eps, cudaStream_t st) {
  constexpr int kWide = 16 / sizeof(T);
  const Plan p = make_plan<T>(d, {z, views, out});
  const T* zt = static_cast<const T*>(z);
  const T* at = static_cast<const T*>(alpha);
  const T* vt = static_cast<const T*>(views);
  T* ot = static_cast<T*>(out);
  T* dt = static_cast<T*>(den);
  const T e = static_cast<T>(eps);
  if (p.w == 1) return launch_forward<T, 1, false>(p, zt, at, vt, ot, dt, n, d, V, e, st);
  if (p.vload) return launch_forward<T, kWide, true>(p, zt, at, vt, ot, dt, n, d, V, e, st);
  return launch_forward<T, kWide, false>(p, zt, at, vt, ot, dt, n, d, V, e, st);
}

template <typename T>
cudaError_t backward(const void* g, const void* alpha, const void* views, const void* den,
                     void* dviews, void* dalpha, double* part, int64_t stride, int64_t n,
                     int64_t d, int64_t V, double eps, cudaStream_t st) {
  constexpr int kWide = 16 / sizeof(T);
  const Plan p = make_plan<T>(d, {g, views, dviews});
  const T* gt = static_cast<const T*>(g);
  const T* at = static_cast<const T*>(alpha);
  const T* vt = static_cast<const T*>(views);
  const T* dt = static_cast<const T*>(den);
  T* dvt = static_cast<T*>(dviews);
  double* pt = dalpha != nullptr ? part : nullptr;
  const T e = static_cast<T>(eps);
  cudaError_t err;
  if (p.w == 1)
    err = launch_backward<T, 1, false>(p, gt, at, vt, dt, dvt, pt, stride, n, d, V, e, st);
  else if (p.vload)
    err = launch_backward<T, kWide, true>(p, gt, at, vt, dt, dvt, pt, stride, n, d, V, e, st);
  else
    err = launch_backward<T, kWide, false>(p, gt, at, vt, dt, dvt, pt, stride, n, d, V, e, st);
  if (err != cudaSuccess || dalpha == nullptr || V == 0) return err;
  // n = 0 gives zero blocks: dalpha = 0
  dalpha_reduce<T><<<static_cast<unsigned>(V), kThreads, 0, st>>>(
      part, static_cast<int64_t>(blocks_for(n, p.group)), stride, static_cast<T*>(dalpha));
  return cudaGetLastError();
}

}  // namespace

// Entry points. dtype: 0 = float32, 1 = float64; every array contiguous, row-major: z / out /
// g (n, d), views / dviews (n, V * d), den (n, V), alpha / dalpha (V). Each returns a
// cudaError_t (0 = success) from the launches.
extern "C" {

// out and den for every row (any n >= 0, d >= 0, V >= 0).
int slifmr_fuse_forward(int dtype, const void* z, const void* alpha, const void* views,
                        void* out, void* den, int64_t n, int64_t d, int64_t V, double eps,
                        void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (dtype == 0) return forward<float>(z, alpha, views, out, den, n, d, V, eps, st);
  return forward<double>(z, alpha, views, out, den, n, d, V, eps, st);
}

// Columns the block-partial buffer of slifmr_fuse_backward needs for n rows (an upper bound
// on the number of row blocks, whatever d).
int64_t slifmr_fuse_max_blocks(int64_t n) {
  return (n + kMinRowsPerBlock - 1) / kMinRowsPerBlock;
}

// dviews (null: not needed) and dalpha (null: not needed; then part is unused). part: a
// (V, part_stride) float64 scratch buffer, part_stride >= slifmr_fuse_max_blocks(n).
int slifmr_fuse_backward(int dtype, const void* g, const void* alpha, const void* views,
                         const void* den, void* dviews, void* dalpha, double* part,
                         int64_t part_stride, int64_t n, int64_t d, int64_t V, double eps,
                         void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (dviews == nullptr && dalpha == nullptr) return cudaSuccess;
  if (dalpha != nullptr && part_stride < slifmr_fuse_max_blocks(n)) return cudaErrorInvalidValue;
  if (dtype == 0)
    return backward<float>(g, alpha, views, den, dviews, dalpha, part, part_stride, n, d, V, eps,
                           st);
  return backward<double>(g, alpha, views, den, dviews, dalpha, part, part_stride, n, d, V, eps,
                          st);
}

}  // extern "C"
