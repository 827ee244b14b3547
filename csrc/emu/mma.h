// Stub of <mma.h> for the CPU emulation build of csrc/*.cu (tests only; see cuda_emu.h).
//
// The subset of nvcuda::wmma that topk.cu uses (m16n16k8 TF32). Every thread of the warp holds
// the whole fragment, row-major, and computes it redundantly: the operations are warp-collective
// on the GPU, and here each lane reaches the same values on its own. Stores are done by lane 0
// only (the kernel synchronises before anyone reads them). __float_to_tf32 rounds to 10
// mantissa bits, to nearest with ties away from zero (cvt.rna.tf32.f32), so the emulation sees
// TF32's rounding error.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda_emu.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision { struct tf32 {}; }
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K> struct Shape;
template <int M, int N, int K> struct Shape<matrix_a, M, N, K> { static constexpr int r = M, c = K; };
template <int M, int N, int K> struct Shape<matrix_b, M, N, K> { static constexpr int r = K, c = N; };
template <int M, int N, int K> struct Shape<accumulator, M, N, K> { static constexpr int r = M, c = N; };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = Shape<Use, M, N, K>::r, cols = Shape<Use, M, N, K>::c;
  static constexpr int num_elements = rows * cols;
  float x[num_elements];
  using layout = Layout;
};

inline float __float_to_tf32(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  b = (b + 0x1000u) & 0xffffe000u;  // ties away from zero: add half of the dropped 13 bits
  std::memcpy(&v, &b, 4);
  return v;
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  for (float& e : f.x) e = v;
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const float* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, L>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = std::is_same_v<L, col_major> ? p[c * ldm + r] : p[r * ldm + c];
}

template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d,
                     const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b,
                     const fragment<accumulator, M, N, K, float>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = c.x[i * N + j];
      for (int q = 0; q < K; ++q) s += a.x[i * K + q] * b.x[q * N + j];
      out[i * N + j] = s;
    }
  std::memcpy(d.x, out, sizeof(out));
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f,
                              unsigned ldm, layout_t layout) {
  if (emu::tl_lane == 0)
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j)
        (layout == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.x[i * N + j];
  emu::syncwarp();
}

}  // namespace wmma
}  // namespace nvcuda
