"""CUDA C++ backend of the fused heterogeneous propagation (``csrc/propagate``).

Contract: docs/ARCHITECTURE.md, "propagate"; the kernels are described in
``csrc/propagate/propagate.cu`` and docs/GPU.md.  Importing this module raises ImportError
with build instructions when the extension ``slifmr_kernels._C`` is not built.

All three functions are deterministic (row split + fixed-order chunk reductions, no atomics)
and take CUDA tensors: indptr int64, indices int32/int64, values / table / x float32 or
float64 (one dtype), relation int32.
"""

from __future__ import annotations

from .._cuda import load_ops, stream_of

__all__ = ["spmm", "spmm_rel", "spmm_rel_backward", "sddmm"]

_ops = load_ops()


def spmm(indptr, indices, values, x, n_rows):
    """y [n_rows, d] with y[i] = sum_{e in row i} values[e] * x[indices[e]]."""
    return _ops.propagate(indptr, indices, values, None, None, x, int(n_rows), stream_of(x))


def spmm_rel(indptr, indices, values, relation, table, x, n_rows):
    """y [n_rows, d] with y[i] = sum_e values[e] * table[relation[e]] * x[indices[e]]."""
    return _ops.propagate(indptr, indices, values, relation, table, x, int(n_rows), stream_of(x))


def spmm_rel_backward(
    indptr_t, indices_t, values_t, relation_t, table, dy, x, num_relations, need_dx, need_g
):
    """(dx [x.shape[0], d] or None, g [num_relations, d] or None) over the transposed graph:
    dx[j] = sum_e values_t[e] * table[relation_t[e]] * dy[indices_t[e]],
    g[r] = sum_{e: relation_t[e] = r} values_t[e] * x[j(e)] * dy[indices_t[e]]."""
    if not need_dx and not need_g:
        return None, None
    dx, g = _ops.propagate_backward(
        indptr_t,
        indices_t,
        values_t,
        relation_t,
        table,
        dy,
        x,
        int(num_relations),
        bool(need_dx),
        bool(need_g),
        stream_of(x),
    )
    return (dx if need_dx else None), (g if need_g else None)


if hasattr(_ops, "propagate_sddmm"):

    def sddmm(indptr, indices, relation, table, dy, x, n_rows):
        """Gradient of the edge values, ``dv[e] = sum_d dy[row_e, d] * x[col_e, d]`` (times
        ``table[relation[e], d]`` with a table): one warp per edge, a fixed-order sum
        (deterministic). Returns (nnz,) of x's dtype."""
        if table is None:
            relation = None
        return _ops.propagate_sddmm(indptr, indices, relation, table, dy, x, stream_of(x))
else:  # an extension built before the kernel existed: the op layer falls back (see op.py)
    __all__.remove("sddmm")
