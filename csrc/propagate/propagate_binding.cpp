// Torch binding of the CUDA propagation kernels (propagate.cu): plans the work with ATen ops,
// launches through the extern "C" launchers, registers the ops with the dispatcher under the
// namespace `slifmr_cuda` (the Python ops of the package live in `slifmr`).
//
// Includes only torch headers (no ATen/cuda, no CUDA runtime): the stream arrives as an int64
// from Python (torch.cuda.current_stream().cuda_stream) and travels as void*.
//
//   slifmr_cuda::propagate(indptr, indices, values?, relation?, table?, x, n_rows, stream) -> y
//   slifmr_cuda::propagate_backward(indptr_t, indices_t, values_t?, relation_t, table, dy, x,
//                                   num_relations, need_dx, need_g, stream) -> (dx, g)
// (dx / g are empty [0, d] tensors when not requested.)
//   slifmr_cuda::propagate_sddmm(indptr, indices, relation?, table?, dy, x, stream) -> dv
//     dv[e] = sum_k dy[row_e, k] * x[col_e, k] (* table[relation[e], k]): the gradient of the
//     edge values.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "../binding_common.h"

#include <cstdint>
#include <optional>

extern "C" {
int slifmr_propagate_sddmm(int dtype, int idx64, const int64_t* rows, const void* col,
                           const int32_t* rel, const void* table, const void* dy, const void* x,
                           void* out, int64_t nnz, int64_t d, void* stream);
int slifmr_propagate_rows(int dtype, int idx64, const int64_t* indptr, const void* col,
                          const void* val, const int32_t* rel, const void* table, const void* x,
                          void* y, int64_t n_rows, int64_t d, int64_t chunk, void* stream);
int slifmr_propagate_chunks(int dtype, int idx64, const int64_t* indptr, const void* col,
                            const void* val, const int32_t* rel, const void* table,
                            const void* x, const int64_t* heavy_row, const int64_t* heavy_ptr,
                            int64_t n_heavy, int64_t n_chunks, void* part, int64_t d,
                            int64_t chunk, void* stream);
int slifmr_ordered_reduce(int dtype, const void* part, const int64_t* ptr,
                          const int64_t* seg_out, int64_t n_seg, int64_t d, void* out,
                          void* stream);
int slifmr_propagate_g_partials(int dtype, int idx64, const int64_t* perm, const int64_t* src,
                                const void* col, const void* val, const void* x,
                                const void* dy, const int64_t* rel_ptr, const int64_t* gptr,
                                int64_t n_rel, int64_t n_chunks, void* part, int64_t d,
                                int64_t chunk, void* stream);
}

namespace slifmr_cuda {
namespace {

// Rows with more edges than kRowChunk are split into chunks of kRowChunk edges (so one group
// of threads never walks a hub alone); g is reduced over chunks of kGChunk relation-sorted
// edges. Both only set the work granularity: results do not depend on them beyond rounding.
constexpr int64_t kRowChunk = 256;
constexpr int64_t kGChunk = 512;
// Partial rows reduced by one thread in one go; longer segments are summed level by level in
// groups of this many (a fixed tree: no long serial loop, still deterministic). The CPU
// emulation build of the tests lowers it to exercise several levels.
#ifndef SLIFMR_REDUCE_FAN_IN
#define SLIFMR_REDUCE_FAN_IN 64
#endif
constexpr int64_t kFanIn = SLIFMR_REDUCE_FAN_IN;

const void* opt_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr() : nullptr;
}

// out[seg_out[s] or s] = sum of the rows [ptr[s], ptr[s + 1]) of part [C, d], in a fixed order:
// while some segment is longer than kFanIn, every segment is cut into consecutive groups of
// kFanIn rows, each group summed in order into one row of the next level.
void ordered_segment_sum(int dt, at::Tensor part, at::Tensor ptr, const int64_t* seg_out,
                         int64_t n_seg, int64_t d, void* out, void* st, const char* what) {
  while (n_seg > 0) {
    const at::Tensor len = ptr.slice(0, 1, n_seg + 1) - ptr.slice(0, 0, n_seg);
    if (len.max().item<int64_t>() <= kFanIn) break;
    const at::Tensor n_sub = at::floor_divide(len + (kFanIn - 1), kFanIn);
    const at::Tensor sub_ptr = at::cat({at::zeros({1}, n_sub.options()), at::cumsum(n_sub, 0)});
    const int64_t total = sub_ptr[n_seg].item<int64_t>();
    const at::Tensor owner = at::repeat_interleave(n_sub);
    const at::Tensor k = at::arange(total, n_sub.options()) - sub_ptr.index_select(0, owner);
    // the groups tile [ptr[0], ptr[n_seg]) in order, so their starts plus the end are a ptr
    const at::Tensor group_ptr =
        at::cat({ptr.index_select(0, owner) + k * kFanIn, ptr.slice(0, n_seg, n_seg + 1)});
    at::Tensor next = at::empty({total, d}, part.options());
    check_launch(slifmr_ordered_reduce(dt, part.data_ptr(), group_ptr.data_ptr<int64_t>(),
                                       nullptr, total, d, next.data_ptr(), st),
                 what);
    part = next;
    ptr = sub_ptr;
  }
  check_launch(slifmr_ordered_reduce(dt, part.data_ptr(), ptr.data_ptr<int64_t>(), seg_out,
                                     n_seg, d, out, st),
               what);
}

// y = sum over each row's edges of values * table[relation] * x[indices] (table optional).
void spmm_into(const at::Tensor& indptr, const at::Tensor& indices,
               const std::optional<at::Tensor>& values, const std::optional<at::Tensor>& relation,
               const std::optional<at::Tensor>& table, const at::Tensor& x, at::Tensor& y,
               int64_t n_rows, void* st) {
  const int dt = dtype_code(x, "x");
  const int idx64 = indices.scalar_type() == at::kLong ? 1 : 0;
  const int64_t d = x.size(1);
  if (n_rows == 0 || d == 0) return;
  const int32_t* rel = relation.has_value() && relation->defined()
                           ? relation->data_ptr<int32_t>() : nullptr;
  check_launch(slifmr_propagate_rows(dt, idx64, indptr.data_ptr<int64_t>(), indices.data_ptr(),
                                     opt_ptr(values), rel, opt_ptr(table), x.data_ptr(),
                                     y.data_ptr(), n_rows, d, kRowChunk, st),
               "propagate rows");
  const at::Tensor deg = indptr.slice(0, 1, n_rows + 1) - indptr.slice(0, 0, n_rows);
  const at::Tensor heavy_row = at::nonzero(deg > kRowChunk).flatten();
  const int64_t n_heavy = heavy_row.numel();
  if (n_heavy == 0) return;
  const at::Tensor n_ch =
      at::floor_divide(deg.index_select(0, heavy_row) + (kRowChunk - 1), kRowChunk);
  const at::Tensor heavy_ptr = at::cat({at::zeros({1}, n_ch.options()), at::cumsum(n_ch, 0)});
  const int64_t n_chunks = heavy_ptr[n_heavy].item<int64_t>();
  at::Tensor part = at::empty({n_chunks, d}, x.options());
  check_launch(slifmr_propagate_chunks(dt, idx64, indptr.data_ptr<int64_t>(), indices.data_ptr(),
                                       opt_ptr(values), rel, opt_ptr(table), x.data_ptr(),
                                       heavy_row.data_ptr<int64_t>(),
                                       heavy_ptr.data_ptr<int64_t>(), n_heavy, n_chunks,
                                       part.data_ptr(), d, kRowChunk, st),
               "propagate heavy chunks");
  ordered_segment_sum(dt, part, heavy_ptr, heavy_row.data_ptr<int64_t>(), n_heavy, d,
                      y.data_ptr(), st, "propagate heavy reduce");
}

void check_graph(const at::Tensor& indptr, const at::Tensor& indices,
                 const std::optional<at::Tensor>& values, const at::Tensor& x) {
  check_cuda(indptr, x, "indptr");
  check_cuda(indices, x, "indices");
  TORCH_CHECK(indptr.scalar_type() == at::kLong, "indptr must be int64");
  TORCH_CHECK(indices.scalar_type() == at::kLong || indices.scalar_type() == at::kInt,
              "indices must be int32 or int64");
  if (values.has_value() && values->defined()) {
    check_cuda(*values, x, "values");
    TORCH_CHECK(values->scalar_type() == x.scalar_type(), "values must have the dtype of x");
  }
  check_cuda(x, x, "x");
  TORCH_CHECK(x.dim() == 2, "x must be 2-D");
}

at::Tensor propagate(const at::Tensor& indptr, const at::Tensor& indices,
                     const std::optional<at::Tensor>& values,
                     const std::optional<at::Tensor>& relation,
                     const std::optional<at::Tensor>& table, const at::Tensor& x, int64_t n_rows,
                     int64_t stream) {
  check_graph(indptr, indices, values, x);
  TORCH_CHECK(indptr.numel() == n_rows + 1, "indptr must have n_rows + 1 entries");
  const bool has_table = table.has_value() && table->defined();
  if (has_table) {
    check_cuda(*table, x, "table");
    TORCH_CHECK(table->scalar_type() == x.scalar_type() && table->dim() == 2 &&
                    table->size(1) == x.size(1), "table must be (R, d) with the dtype of x");
    TORCH_CHECK(relation.has_value() && relation->defined(), "relation is required with table");
    check_cuda(*relation, x, "relation");
    TORCH_CHECK(relation->scalar_type() == at::kInt, "relation must be int32");
  }
  c10::DeviceGuard guard(x.device());
  // Not zero-filled: the kernels write every row (empty rows too), and a row they missed
  // would show up as garbage in the checks instead of hiding behind zeros.
  at::Tensor y = at::empty({n_rows, x.size(1)}, x.options());
  spmm_into(indptr, indices, values, relation, table, x, y, n_rows, as_stream(stream));
  return y;
}

std::tuple<at::Tensor, at::Tensor> propagate_backward(
    const at::Tensor& indptr_t, const at::Tensor& indices_t,
    const std::optional<at::Tensor>& values_t, const at::Tensor& relation_t,
    const at::Tensor& table, const at::Tensor& dy, const at::Tensor& x, int64_t num_relations,
    bool need_dx, bool need_g, int64_t stream) {
  check_graph(indptr_t, indices_t, values_t, dy);
  check_cuda(relation_t, dy, "relation_t");
  check_cuda(table, dy, "table");
  check_cuda(x, dy, "x");
  TORCH_CHECK(relation_t.scalar_type() == at::kInt, "relation_t must be int32");
  TORCH_CHECK(x.scalar_type() == dy.scalar_type() && table.scalar_type() == dy.scalar_type(),
              "x, table and dy must share a dtype");
  const int64_t n_x = x.size(0), d = x.size(1);
  TORCH_CHECK(indptr_t.numel() == n_x + 1, "indptr_t must have x.shape[0] + 1 entries");
  c10::DeviceGuard guard(x.device());
  void* st = as_stream(stream);
  at::Tensor dx = at::empty({0, d}, x.options());
  at::Tensor g = at::empty({0, d}, x.options());
  if (need_dx) {
    dx = at::empty({n_x, d}, x.options());  // every row written (see propagate)
    spmm_into(indptr_t, indices_t, values_t, relation_t, table, dy, dx, n_x, st);
  }
  if (need_g) {
    g = at::zeros({num_relations, d}, x.options());
    const int64_t nnz = indices_t.numel();
    if (nnz == 0 || num_relations == 0 || d == 0) return {dx, g};
    const int dt = dtype_code(x, "x");
    const int idx64 = indices_t.scalar_type() == at::kLong ? 1 : 0;
    // src[e]: the transposed row (= forward column j) of edge e; perm: edges stably sorted by
    // relation, so each relation's edges are one contiguous run reduced in a fixed order.
    const at::Tensor deg = indptr_t.slice(0, 1, n_x + 1) - indptr_t.slice(0, 0, n_x);
    const at::Tensor src = at::repeat_interleave(deg);
    const at::Tensor perm = std::get<1>(at::sort(relation_t, /*stable=*/true, 0, false));
    const at::Tensor counts = at::bincount(relation_t.to(at::kLong), {}, num_relations);
    const at::Tensor zero = at::zeros({1}, counts.options());
    const at::Tensor rel_ptr = at::cat({zero, at::cumsum(counts, 0)});
    const at::Tensor gptr =
        at::cat({zero, at::cumsum(at::floor_divide(counts + (kGChunk - 1), kGChunk), 0)});
    const int64_t n_chunks = gptr[num_relations].item<int64_t>();
    at::Tensor part = at::empty({n_chunks, d}, x.options());
    check_launch(slifmr_propagate_g_partials(
                     dt, idx64, perm.data_ptr<int64_t>(), src.data_ptr<int64_t>(),
                     indices_t.data_ptr(), opt_ptr(values_t), x.data_ptr(), dy.data_ptr(),
                     rel_ptr.data_ptr<int64_t>(), gptr.data_ptr<int64_t>(), num_relations,
                     n_chunks, part.data_ptr(), d, kGChunk, st),
                 "propagate g partials");
    ordered_segment_sum(dt, part, gptr, nullptr, num_relations, d, g.data_ptr(), st,
                        "propagate g reduce");
  }
  return {dx, g};
}

at::Tensor propagate_sddmm(const at::Tensor& indptr, const at::Tensor& indices,
                           const std::optional<at::Tensor>& relation,
                           const std::optional<at::Tensor>& table, const at::Tensor& dy,
                           const at::Tensor& x, int64_t stream) {
  check_graph(indptr, indices, std::nullopt, x);
  check_cuda(dy, x, "dy");
  TORCH_CHECK(dy.dim() == 2 && x.dim() == 2 && dy.size(1) == x.size(1),
              "dy and x must be 2-D with the same number of columns");
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "dy and x must share a dtype");
  TORCH_CHECK(dy.size(0) == indptr.numel() - 1, "dy must have one row per graph row");
  TORCH_CHECK(table.has_value() == relation.has_value(),
              "relation and table come together (or neither)");
  const int32_t* rel = nullptr;
  if (table) {
    check_cuda(*table, x, "table");
    check_cuda(*relation, x, "relation");
    TORCH_CHECK(relation->scalar_type() == at::kInt, "relation must be int32");
    TORCH_CHECK(table->scalar_type() == x.scalar_type() && table->dim() == 2 &&
                    table->size(1) == x.size(1),
                "table must be (R, d) of x's dtype");
    TORCH_CHECK(relation->numel() == indices.numel(), "relation must have one id per edge");
    rel = relation->data_ptr<int32_t>();
  }
  c10::DeviceGuard guard(x.device());
  const int64_t nnz = indices.numel(), n_rows = indptr.numel() - 1, d = x.size(1);
  at::Tensor out = at::zeros({nnz}, x.options());
  if (nnz == 0 || d == 0) return out;
  const at::Tensor deg = indptr.slice(0, 1, n_rows + 1) - indptr.slice(0, 0, n_rows);
  const at::Tensor rows = at::repeat_interleave(deg);
  check_launch(slifmr_propagate_sddmm(dtype_code(x, "x"),
                                      indices.scalar_type() == at::kLong ? 1 : 0,
                                      rows.data_ptr<int64_t>(), indices.data_ptr(), rel,
                                      opt_ptr(table), dy.data_ptr(), x.data_ptr(),
                                      out.data_ptr(), nnz, d, as_stream(stream)),
               "propagate sddmm");
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(slifmr_cuda, m) {
  m.def("propagate(Tensor indptr, Tensor indices, Tensor? values, Tensor? relation, "
        "Tensor? table, Tensor x, int n_rows, int stream) -> Tensor");
  m.def("propagate_backward(Tensor indptr_t, Tensor indices_t, Tensor? values_t, "
        "Tensor relation_t, Tensor table, Tensor dy, Tensor x, int num_relations, "
        "bool need_dx, bool need_g, int stream) -> (Tensor, Tensor)");
  m.def("propagate_sddmm(Tensor indptr, Tensor indices, Tensor? relation, Tensor? table, "
        "Tensor dy, Tensor x, int stream) -> Tensor");
}

TORCH_LIBRARY_IMPL(slifmr_cuda, SLIFMR_DISPATCH_KEY, m) {
  m.impl("propagate", &propagate);
  m.impl("propagate_backward", &propagate_backward);
  m.impl("propagate_sddmm", &propagate_sddmm);
}

}  // namespace slifmr_cuda
