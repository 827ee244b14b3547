"""Pure-torch reference of the propagate kernels: the definition of correct.

Memory stays O(n_rows * d + chunk * d): edges are processed in fixed chunks, so even the
reference never materialises an (nnz, d) gather. Bytes moved per call (the model the fast
kernels are measured against): indptr 8·n_rows + indices 4·nnz + values 4·nnz (+ relation
4·nnz) + one gathered x row 4·d per edge + y written once 4·n_rows·d.
"""

from __future__ import annotations

import torch

_CHUNK_ELEMS = 1 << 22  # gathered elements per chunk (16 MiB in fp32)


def _chunks(nnz: int, d: int):
    step = max(1, _CHUNK_ELEMS // max(d, 1))
    for start in range(0, nnz, step):
        yield start, min(nnz, start + step)


def _rows(indptr: torch.Tensor, n_rows: int) -> torch.Tensor:
    return torch.repeat_interleave(
        torch.arange(n_rows, device=indptr.device), indptr[1:] - indptr[:-1], output_size=int(indptr[-1])
    )


def spmm(indptr, indices, values, x, n_rows):
    """y[i] = sum_{e in row i} values[e] * x[indices[e]]  -> (n_rows, d), dtype of x."""
    y = x.new_zeros(n_rows, x.shape[1])
    rows = _rows(indptr, n_rows)
    for a, b in _chunks(indices.numel(), x.shape[1]):
        y.index_add_(0, rows[a:b], x[indices[a:b].long()] * values[a:b, None])
    return y


def spmm_rel(indptr, indices, values, relation, table, x, n_rows):
    """y[i] = sum_e values[e] * table[relation[e]] * x[indices[e]]  -> (n_rows, d)."""
    y = x.new_zeros(n_rows, x.shape[1])
    rows = _rows(indptr, n_rows)
    for a, b in _chunks(indices.numel(), x.shape[1]):
        msg = x[indices[a:b].long()] * table[relation[a:b].long()] * values[a:b, None]
        y.index_add_(0, rows[a:b], msg)
    return y


def spmm_rel_backward(
    indptr_t, indices_t, values_t, relation_t, table, dy, x, num_relations, need_dx, need_g
):
    """Over the transposed graph: dx = spmm_rel(A^T, dy) and g[r] = sum_{e in r} v x[j] * dy[i]."""
    n_t = indptr_t.numel() - 1
    dx = spmm_rel(indptr_t, indices_t, values_t, relation_t, table, dy, n_t) if need_dx else None
    g = None
    if need_g:
        g = x.new_zeros(num_relations, x.shape[1])
        rows = _rows(indptr_t, n_t)
        for a, b in _chunks(indices_t.numel(), x.shape[1]):
            msg = x[rows[a:b]] * dy[indices_t[a:b].long()] * values_t[a:b, None]
            g.index_add_(0, relation_t[a:b].long(), msg)
    return dx, g


def sddmm(indptr, indices, relation, table, dy, x, n_rows):
    """Gradient of the edge values (a sampled dense-dense product over the graph's pattern):
    dv[e] = sum_d dy[row_e, d] * x[col_e, d] (* table[relation[e], d] when table is given)
    -> (nnz,), dtype of x."""
    nnz = indices.numel()
    out = x.new_empty(nnz)
    rows = _rows(indptr, n_rows)
    for a, b in _chunks(nnz, x.shape[1]):
        prod = dy[rows[a:b]] * x[indices[a:b].long()]
        if table is not None:
            prod = prod * table[relation[a:b].long()]
        out[a:b] = prod.sum(1)
    return out
