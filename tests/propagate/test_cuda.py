"""The CUDA propagate kernels (csrc/propagate) run on the CPU through the emulator
(tests/cuda_emu.py), behind the real binding and slifmr_kernels/propagate/cuda.py, against
dense float64 math: forward, backward over the transpose, the edge-value gradient; vectorised
and scalar paths, > 32 lanes, heavy rows split into chunks, an empty relation, the same bits
every run."""

import pytest
import torch

from tests.helpers import csr_with_degrees, dense_relations, poison, transpose_csr


def _graph(gen, n_rows, n_cols, degrees, idx_dtype, R):
    indptr, indices, values, relation = csr_with_degrees(gen, n_rows, n_cols, degrees, idx_dtype, R)
    relation[relation == 2] = 1  # relation 2 has no edges: its g row must be zero
    return indptr, indices, values, relation


def _rel_err(got, ref):
    return float((got.double() - ref).norm() / ref.norm().clamp_min(1e-300))


# degrees: empty rows, light rows, a hub split into 256-edge row chunks (the last one partial)
# and a row just over one chunk; ~3000 edges, so each relation's run of the backward's g
# reduction spans several 512-edge chunks
_DEG = [0, 3, 2600, 0, 7, 1, 0, 2, 300, 5, 0, 9]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [8, 5, 132])  # vector path, scalar path, > 32 lanes of vectors
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
def test_emulated_cuda_propagate(emu_ops, dtype, d, idx_dtype):
    pc, _, _ = emu_ops
    gen = torch.Generator().manual_seed(d * 7 + (dtype == torch.float64) + 2 * (idx_dtype == torch.int64))
    n, m, R = len(_DEG), 23, 4
    indptr, indices, values, relation = _graph(gen, n, m, _DEG, idx_dtype, R)
    x = torch.randn(m, d, generator=gen, dtype=torch.float64)
    table = torch.randn(R, d, generator=gen, dtype=torch.float64)
    dy = torch.randn(n, d, generator=gen, dtype=torch.float64)
    a = dense_relations(indptr, indices, values, relation, n, m, R)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    cast = dict(dtype=dtype)
    poison((n, d), dtype=dtype)
    y = pc.spmm(indptr, indices, values.to(**cast), x.to(**cast), n)
    assert y.dtype == dtype and y.shape == (n, d)
    assert _rel_err(y, a.sum(0) @ x) < tol
    poison((n, d), dtype=dtype)
    y = pc.spmm_rel(indptr, indices, values.to(**cast), relation, table.to(**cast), x.to(**cast), n)
    assert _rel_err(y, torch.einsum("rij,jd,rd->id", a, x, table)) < tol
    assert bool((y[torch.tensor(_DEG) == 0] == 0).all())
    y2 = pc.spmm_rel(indptr, indices, values.to(**cast), relation, table.to(**cast), x.to(**cast), n)
    assert torch.equal(y, y2)  # no atomics: the same bits every run
    # backward over the transpose
    indptr_t, indices_t, values_t, relation_t = transpose_csr(indptr, indices, values, relation, n, m)
    t = (indptr_t, indices_t, values_t.to(**cast), relation_t)
    poison((m, d), dtype=dtype)
    dx, g = pc.spmm_rel_backward(*t, table.to(**cast), dy.to(**cast), x.to(**cast), R, True, True)
    assert _rel_err(dx, torch.einsum("rij,id,rd->jd", a, dy, table)) < tol
    g_ref = torch.einsum("rij,jd,id->rd", a, x, dy)
    assert g.shape == (R, d) and _rel_err(g, g_ref) < tol
    assert bool((g[2] == 0).all())
    dx2, g2 = pc.spmm_rel_backward(*t, table.to(**cast), dy.to(**cast), x.to(**cast), R, False, True)
    assert dx2 is None and torch.equal(g2, g)


def test_emulated_cuda_propagate_without_values(emu_ops):
    """values may be None at the C++ level (all ones)."""
    gen = torch.Generator().manual_seed(3)
    indptr, indices, values, relation = _graph(gen, 12, 9, _DEG, torch.int64, 3)
    x = torch.randn(9, 4, generator=gen)
    y = torch.ops.slifmr_cuda.propagate(indptr, indices, None, None, None, x, 12, 0)
    ones = torch.ones_like(values)
    ref = dense_relations(indptr, indices, ones, relation, 12, 9, 3).sum(0) @ x.double()
    assert _rel_err(y, ref) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [5, 40])  # fewer features than lanes, more than one pass
def test_emulated_cuda_propagate_sddmm(emu_ops, dtype, d):
    """The edge-value gradient: one warp per edge, a fixed-order sum."""
    pc, _, _ = emu_ops
    assert hasattr(pc, "sddmm")
    gen = torch.Generator().manual_seed(d)
    degrees = [0, 3, 40, 0, 7, 1]
    n, m, R = len(degrees), 11, 3
    indptr, indices, _, relation = _graph(gen, n, m, degrees, torch.int32, R)
    x = torch.randn(m, d, generator=gen, dtype=torch.float64)
    dy = torch.randn(n, d, generator=gen, dtype=torch.float64)
    table = torch.randn(R, d, generator=gen, dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(n), indptr[1:] - indptr[:-1])
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    prod = dy[rows] * x[indices.long()]
    got = pc.sddmm(indptr, indices, None, None, dy.to(dtype), x.to(dtype), n)
    assert got.dtype == dtype and got.shape == (indices.numel(),)
    assert _rel_err(got, prod.sum(1)) < tol
    got = pc.sddmm(indptr, indices.long(), relation, table.to(dtype), dy.to(dtype), x.to(dtype), n)
    assert _rel_err(got, (prod * table[relation.long()]).sum(1)) < tol
    again = pc.sddmm(indptr, indices.long(), relation, table.to(dtype), dy.to(dtype), x.to(dtype), n)
    assert torch.equal(got, again)
